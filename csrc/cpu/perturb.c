/* out = base + eps_k: writes one candidate. */
#include "evograd/evograd.h"
#include "common/noise.h"
#include "segments.h"
#include "storage.h"
#include "common/validate.h"

#define EVOGRAD_DEFINE_PERTURB(T)                                               \
  static void perturb_##T(const evograd_span *spans, const evograd_segment *seg, \
                          const evograd_noise_stream *s) {                      \
    const void *src = spans[seg->span].src;                                     \
    void *dst = spans[seg->span].dst;                                           \
    int64_t done = 0, l;                                                        \
    evograd_piece p;                                                            \
    while (evograd_next_piece(seg, &done, &p)) {                                \
      double z[EVOGRAD_BATCH];                                                  \
      evograd_noise_batch(s, (uint64_t)p.global / EVOGRAD_BATCH, z);            \
      for (l = 0; l < p.n; ++l)                                                 \
        evograd_store_##T(dst, p.local + l, evograd_load_##T(src, p.local + l) + \
                                                evograd_noise_##T(s->scale * z[p.lane + l])); \
    }                                                                           \
  }
EVOGRAD_FOR_EACH_STORAGE(EVOGRAD_DEFINE_PERTURB)

evograd_status evograd_perturb(evograd_dtype dtype, const evograd_span *spans,
                               size_t n_spans, const evograd_noise *noise,
                               int64_t k, evograd_range range) {
  int64_t total = 0, begin = 0, end = 0;
  evograd_status st;
  evograd_segment seg;
  evograd_noise_stream s;
  if ((st = eg_check_perturb(dtype, spans, n_spans, noise, k, &total)) != EVOGRAD_OK) return st;
  if ((st = eg_check_range(range, total, 0, &begin, &end)) != EVOGRAD_OK) return st;

  s = evograd_make_stream(noise->seed, noise->sigma, noise->kind == EVOGRAD_NOISE_GAUSS,
                          noise->antithetic, k);
#define EVOGRAD_CALL(T) perturb_##T(spans, &seg, &s)
  EVOGRAD_FOR_EACH_SEGMENT(dtype, spans, n_spans, begin, end, seg, EVOGRAD_CALL);
#undef EVOGRAD_CALL
  return EVOGRAD_OK;
}
