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
    int64_t j = 0;                                                              \
    while (j < seg->count) {                                                    \
      const int64_t g = seg->global + j;                                        \
      const int64_t lane0 = g % EVOGRAD_BATCH;                                  \
      const int64_t n = evograd_batch_piece(g, seg->count - j);                 \
      double acc[EVOGRAD_BATCH];                                                \
      int64_t k, l;                                                             \
      for (l = 0; l < n; ++l) acc[l] = 0.0;                                     \
      for (k = 0; k < population; ++k) {                                        \
        const evograd_noise_stream s = evograd_make_stream(                     \
            noise->seed, noise->sigma, gauss, noise->antithetic, k);            \
        double z[EVOGRAD_BATCH];                                                \
        evograd_noise_batch(&s, (uint64_t)g / EVOGRAD_BATCH, z);                \
        for (l = 0; l < n; ++l) acc[l] += weights[k] * evograd_noise_##T(s.scale * z[lane0 + l]); \
      }                                                                         \
      for (l = 0; l < n; ++l) {                                                 \
        const int64_t i = seg->local + j + l;                                   \
        evograd_store_##T(dst, i, evograd_load_##T(src, i) + acc[l]);           \
      }                                                                         \
      j += n;                                                                   \
    }                                                                           \
  }
EVOGRAD_DEFINE_COMBINE(f32)
EVOGRAD_DEFINE_COMBINE(f64)
EVOGRAD_DEFINE_COMBINE(f16)
EVOGRAD_DEFINE_COMBINE(bf16)

evograd_status evograd_combine(evograd_dtype dtype, const evograd_span *spans,
                               size_t n_spans, const evograd_noise *noise,
                               const double *weights, int64_t population,
                               evograd_range range) {
  int64_t total = 0, begin = 0, end = 0;
  evograd_status st;
  evograd_segment_walk walk;
  evograd_segment seg;
  if ((st = eg_check_spans(dtype, spans, n_spans, 1, &total)) != EVOGRAD_OK) return st;
  if ((st = eg_check_noise(noise)) != EVOGRAD_OK) return st;
  if ((st = eg_check_population(population, noise->antithetic)) != EVOGRAD_OK) return st;
  if ((st = eg_check_finite(weights, population, EVOGRAD_ERR_NONFINITE_VALUE)) != EVOGRAD_OK)
    return st;
  if ((st = eg_check_range(range, total, 0, &begin, &end)) != EVOGRAD_OK) return st;

  evograd_walk_init(&walk, spans, n_spans, begin, end);
  while (evograd_walk_next(&walk, &seg)) {
#define EVOGRAD_CALL(T) combine_##T(spans, &seg, noise, weights, population)
    EVOGRAD_DTYPE_SWITCH(dtype, EVOGRAD_CALL)
#undef EVOGRAD_CALL
  }
  return EVOGRAD_OK;
}
