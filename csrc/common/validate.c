#include "validate.h"

#include <math.h>
#include <stdint.h>

size_t eg_dtype_size(evograd_dtype dtype) {
  switch (dtype) {
    case EVOGRAD_FLOAT32: return 4;
    case EVOGRAD_FLOAT64: return 8;
    case EVOGRAD_FLOAT16: return 2;
    case EVOGRAD_BFLOAT16: return 2;
  }
  return 0;
}

static int bytes_overlap(const void *a, int64_t na, const void *b, int64_t nb) {
  const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
  if (na == 0 || nb == 0) return 0;
  return pa < pb + (uintptr_t)nb && pb < pa + (uintptr_t)na;
}

evograd_status eg_check_spans(evograd_dtype dtype, const evograd_span *spans,
                                   size_t n_spans, int need_dst, int64_t *total) {
  const size_t esize = eg_dtype_size(dtype);
  int64_t sum = 0;
  size_t i, j;
  if (esize == 0) return EVOGRAD_ERR_INVALID_DTYPE;
  if (total == NULL) return EVOGRAD_ERR_NULL_POINTER;
  if (n_spans == 0) return EVOGRAD_ERR_INVALID_COUNT;
  if (spans == NULL) return EVOGRAD_ERR_NULL_POINTER;
  for (i = 0; i < n_spans; ++i) {
    const int64_t n = spans[i].numel;
    if (n < 0) return EVOGRAD_ERR_INVALID_COUNT;
    if (n > INT64_MAX / (int64_t)esize) return EVOGRAD_ERR_SIZE_OVERFLOW;
    if (n > INT64_MAX - sum) return EVOGRAD_ERR_SIZE_OVERFLOW;
    if (n > 0 && spans[i].src == NULL) return EVOGRAD_ERR_NULL_POINTER;
    if (need_dst && n > 0 && spans[i].dst == NULL) return EVOGRAD_ERR_NULL_POINTER;
    if (n > 0 && (uintptr_t)spans[i].src > UINTPTR_MAX - (uintptr_t)(n * (int64_t)esize))
      return EVOGRAD_ERR_SIZE_OVERFLOW;
    if (need_dst && n > 0 &&
        (uintptr_t)spans[i].dst > UINTPTR_MAX - (uintptr_t)(n * (int64_t)esize))
      return EVOGRAD_ERR_SIZE_OVERFLOW;
    sum += n;
  }
  if (need_dst) {
    /* A write may alias its own input exactly (in place) and nothing else:
     * any other overlap would make results depend on the order of writes. */
    for (i = 0; i < n_spans; ++i) {
      const int64_t bi = spans[i].numel * (int64_t)esize;
      for (j = 0; j < n_spans; ++j) {
        const int64_t bj = spans[j].numel * (int64_t)esize;
        if (i == j) {
          if (spans[i].dst != spans[i].src &&
              bytes_overlap(spans[i].dst, bi, spans[j].src, bj))
            return EVOGRAD_ERR_OVERLAP;
          continue;
        }
        if (bytes_overlap(spans[i].dst, bi, spans[j].src, bj)) return EVOGRAD_ERR_OVERLAP;
        if (j > i && bytes_overlap(spans[i].dst, bi, spans[j].dst, bj))
          return EVOGRAD_ERR_OVERLAP;
      }
    }
  }
  *total = sum;
  return EVOGRAD_OK;
}

evograd_status eg_check_noise(const evograd_noise *noise) {
  if (noise == NULL) return EVOGRAD_ERR_NULL_POINTER;
  if (!(isfinite(noise->sigma) && noise->sigma > 0.0)) return EVOGRAD_ERR_INVALID_SIGMA;
  if (noise->kind != EVOGRAD_NOISE_SIGN && noise->kind != EVOGRAD_NOISE_GAUSS)
    return EVOGRAD_ERR_INVALID_NOISE;
  if (noise->first < 0) return EVOGRAD_ERR_INVALID_RANGE;
  return EVOGRAD_OK;
}

/* The list's global indices first .. first + total - 1 must fit in int64. */
static evograd_status check_placement(const evograd_noise *noise, int64_t total) {
  return total > INT64_MAX - noise->first ? EVOGRAD_ERR_SIZE_OVERFLOW : EVOGRAD_OK;
}

evograd_status eg_check_population(int64_t population, int antithetic) {
  if (population < 1 || population > (int64_t)UINT32_MAX) return EVOGRAD_ERR_INVALID_POPULATION;
  if (antithetic && (population & 1)) return EVOGRAD_ERR_ODD_ANTITHETIC;
  return EVOGRAD_OK;
}

evograd_status eg_check_range(evograd_range range, int64_t total,
                                   int block_aligned, int64_t *begin,
                                   int64_t *end) {
  int64_t b = range.begin, e = range.end;
  if (b == 0 && e == -1) e = total;
  if (b < 0 || e < b || e > total) return EVOGRAD_ERR_INVALID_RANGE;
  if (block_aligned &&
      (b % EVOGRAD_PROJECT_BLOCK != 0 || (e % EVOGRAD_PROJECT_BLOCK != 0 && e != total)))
    return EVOGRAD_ERR_INVALID_RANGE;
  *begin = b;
  *end = e;
  return EVOGRAD_OK;
}

evograd_status eg_check_finite(const double *values, int64_t n,
                                    evograd_status if_not) {
  int64_t i;
  if (values == NULL) return EVOGRAD_ERR_NULL_POINTER;
  for (i = 0; i < n; ++i)
    if (!isfinite(values[i])) return if_not;
  return EVOGRAD_OK;
}

/* What every list kernel checks first: the spans, the noise, and that the
 * list's global indices (from noise->first) fit in int64. */
static evograd_status check_list_and_noise(evograd_dtype dtype, const evograd_span *spans,
                                           size_t n_spans, int need_dst,
                                           const evograd_noise *noise, int64_t *total) {
  evograd_status st;
  if ((st = eg_check_spans(dtype, spans, n_spans, need_dst, total)) != EVOGRAD_OK) return st;
  if ((st = eg_check_noise(noise)) != EVOGRAD_OK) return st;
  return check_placement(noise, *total);
}

evograd_status eg_check_perturb(evograd_dtype dtype, const evograd_span *spans, size_t n_spans,
                                const evograd_noise *noise, int64_t k, int64_t *total) {
  evograd_status st;
  if ((st = check_list_and_noise(dtype, spans, n_spans, 1, noise, total)) != EVOGRAD_OK) return st;
  if (k < 0 || k > (int64_t)UINT32_MAX) return EVOGRAD_ERR_INVALID_CANDIDATE;
  return EVOGRAD_OK;
}

evograd_status eg_check_combine(evograd_dtype dtype, const evograd_span *spans, size_t n_spans,
                                const evograd_noise *noise, const double *weights,
                                int64_t population, int64_t *total) {
  evograd_status st;
  if ((st = check_list_and_noise(dtype, spans, n_spans, 1, noise, total)) != EVOGRAD_OK) return st;
  if ((st = eg_check_population(population, noise->antithetic)) != EVOGRAD_OK) return st;
  return eg_check_finite(weights, population, EVOGRAD_ERR_NONFINITE_VALUE);
}

evograd_status eg_check_project(evograd_dtype dtype, const evograd_span *spans, size_t n_spans,
                                const evograd_noise *noise, int64_t population, int64_t *total) {
  evograd_status st;
  if ((st = check_list_and_noise(dtype, spans, n_spans, 0, noise, total)) != EVOGRAD_OK) return st;
  return eg_check_population(population, noise->antithetic);
}
