/* out = base + sum_k w_k eps_k: the weighted combination without any
 * candidate ever existing in memory. The sum runs in double. */
#include "evograd/evograd.h"
#include "../noise.h"
#include "segments.h"
#include "validate.h"

#define EVOGRAD_COMBINE_LOOP(T)                                                \
  {                                                                            \
    const T *src = (const T *)spans[seg.span].src + seg.local;                 \
    T *dst = (T *)spans[seg.span].dst + seg.local;                             \
    int64_t j = 0;                                                             \
    while (j < seg.count) {                                                    \
      const int64_t g = seg.global + j;                                        \
      const int64_t lane0 = g & 3;                                             \
      const int64_t n = (4 - lane0) < (seg.count - j) ? (4 - lane0)            \
                                                      : (seg.count - j);       \
      double acc[4] = {0.0, 0.0, 0.0, 0.0};                                    \
      int64_t k, l;                                                            \
      for (k = 0; k < population; ++k) {                                       \
        const evograd_noise_stream s = evograd_make_stream(                    \
            noise->seed, noise->sigma, gauss, noise->antithetic, k);           \
        double z[4];                                                           \
        evograd_noise_quad(&s, (uint64_t)g >> 2, z);                           \
        for (l = 0; l < n; ++l)                                                \
          acc[l] += weights[k] * (double)(T)(s.scale * z[lane0 + l]);          \
      }                                                                        \
      for (l = 0; l < n; ++l) dst[j + l] = (T)((double)src[j + l] + acc[l]);   \
      j += n;                                                                  \
    }                                                                          \
  }

evograd_status evograd_combine(evograd_dtype dtype, const evograd_span *spans,
                               size_t n_spans, const evograd_noise *noise,
                               const double *weights, int64_t population,
                               evograd_range range) {
  int64_t total = 0, begin = 0, end = 0;
  evograd_status st;
  evograd_segment_walk walk;
  evograd_segment seg;
  int gauss;
  if ((st = evograd_check_spans(dtype, spans, n_spans, 1, &total)) != EVOGRAD_OK) return st;
  if ((st = evograd_check_noise(noise)) != EVOGRAD_OK) return st;
  if ((st = evograd_check_population(population, noise->antithetic)) != EVOGRAD_OK) return st;
  if ((st = evograd_check_finite(weights, population, EVOGRAD_ERR_NONFINITE_VALUE)) != EVOGRAD_OK)
    return st;
  if ((st = evograd_check_range(range, total, 0, &begin, &end)) != EVOGRAD_OK) return st;

  gauss = noise->kind == EVOGRAD_NOISE_GAUSS;
  evograd_walk_init(&walk, spans, n_spans, begin, end);
  while (evograd_walk_next(&walk, &seg)) {
    if (dtype == EVOGRAD_FLOAT32)
      EVOGRAD_COMBINE_LOOP(float)
    else
      EVOGRAD_COMBINE_LOOP(double)
  }
  return EVOGRAD_OK;
}
