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
    int64_t j = 0;                                                              \
    while (j < seg->count) {                                                    \
      const int64_t g = seg->global + j;                                        \
      int64_t lane = g % EVOGRAD_BATCH;                                         \
      double z[EVOGRAD_BATCH];                                                  \
      evograd_noise_batch(s, (uint64_t)g / EVOGRAD_BATCH, z);                   \
      for (; lane < EVOGRAD_BATCH && j < seg->count; ++lane, ++j) {             \
        const int64_t i = seg->local + j;                                       \
        evograd_store_##T(dst, i,                                               \
                          evograd_load_##T(src, i) + evograd_noise_##T(s->scale * z[lane])); \
      }                                                                         \
    }                                                                           \
  }
EVOGRAD_DEFINE_PERTURB(f32)
EVOGRAD_DEFINE_PERTURB(f64)
EVOGRAD_DEFINE_PERTURB(f16)
EVOGRAD_DEFINE_PERTURB(bf16)

evograd_status evograd_perturb(evograd_dtype dtype, const evograd_span *spans,
                               size_t n_spans, const evograd_noise *noise,
                               int64_t k, evograd_range range) {
  int64_t total = 0, begin = 0, end = 0;
  evograd_status st;
  evograd_segment_walk walk;
  evograd_segment seg;
  evograd_noise_stream s;
  if ((st = eg_check_spans(dtype, spans, n_spans, 1, &total)) != EVOGRAD_OK) return st;
  if ((st = eg_check_noise(noise)) != EVOGRAD_OK) return st;
  if (k < 0 || k > (int64_t)UINT32_MAX) return EVOGRAD_ERR_INVALID_CANDIDATE;
  if ((st = eg_check_range(range, total, 0, &begin, &end)) != EVOGRAD_OK) return st;

  s = evograd_make_stream(noise->seed, noise->sigma, noise->kind == EVOGRAD_NOISE_GAUSS,
                          noise->antithetic, k);
  evograd_walk_init(&walk, spans, n_spans, begin, end);
  while (evograd_walk_next(&walk, &seg)) {
#define EVOGRAD_CALL(T) perturb_##T(spans, &seg, &s)
    EVOGRAD_DTYPE_SWITCH(dtype, EVOGRAD_CALL)
#undef EVOGRAD_CALL
  }
  return EVOGRAD_OK;
}
