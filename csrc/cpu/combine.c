/* out = base + sum_k w_k eps_k: the weighted combination without any
 * candidate ever existing in memory. The sum runs in double. */
#include "evograd/evograd.h"
#include "common/noise.h"
#include "segments.h"
#include "storage.h"
#include "common/validate.h"

#define EVOGRAD_DEFINE_COMBINE(T)                                               \
  static void combine_##T(const evograd_span *spans, const evograd_segment *seg, \
                          const evograd_noise *noise, const double *weights,    \
                          int64_t population) {                                 \
    const void *src = spans[seg->span].src;                                     \
    void *dst = spans[seg->span].dst;                                           \
    const int gauss = noise->kind == EVOGRAD_NOISE_GAUSS;                       \
    int64_t done = 0;                                                           \
    evograd_piece p;                                                            \
    while (evograd_next_piece(seg, &done, &p)) {                                \
      double acc[EVOGRAD_BATCH];                                                \
      int64_t k, l;                                                             \
      for (l = 0; l < p.n; ++l) acc[l] = 0.0;                                   \
      for (k = 0; k < population; ++k) {                                        \
        const evograd_noise_stream s = evograd_make_stream(                     \
            noise->seed, noise->sigma, gauss, noise->antithetic, k);            \
        double z[EVOGRAD_BATCH];                                                \
        evograd_noise_batch(&s, (uint64_t)p.global / EVOGRAD_BATCH, z);         \
        for (l = 0; l < p.n; ++l)                                               \
          acc[l] += weights[k] * evograd_noise_##T(s.scale * z[p.lane + l]);    \
      }                                                                         \
      for (l = 0; l < p.n; ++l)                                                 \
        evograd_store_##T(dst, p.local + l, evograd_load_##T(src, p.local + l) + acc[l]); \
    }                                                                           \
  }
EVOGRAD_FOR_EACH_STORAGE(EVOGRAD_DEFINE_COMBINE)

evograd_status evograd_combine(evograd_dtype dtype, const evograd_span *spans,
                               size_t n_spans, const evograd_noise *noise,
                               const double *weights, int64_t population,
                               evograd_range range) {
  int64_t total = 0, begin = 0, end = 0;
  evograd_status st;
  evograd_segment seg;
  if ((st = eg_check_combine(dtype, spans, n_spans, noise, weights, population, &total)) !=
      EVOGRAD_OK)
    return st;
  if ((st = eg_check_range(range, total, 0, &begin, &end)) != EVOGRAD_OK) return st;

#define EVOGRAD_CALL(T) combine_##T(spans, &seg, noise, weights, population)
  EVOGRAD_FOR_EACH_SEGMENT(dtype, spans, n_spans, begin, end, seg, EVOGRAD_CALL);
#undef EVOGRAD_CALL
  return EVOGRAD_OK;
}
