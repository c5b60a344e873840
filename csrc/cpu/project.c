/* c_k = <g, eps_k>, regenerating the noise instead of storing it. Sums run in
 * double over fixed blocks of global indices, then over blocks in order, so
 * the result is the same bits however the work is split. */
#include <string.h>

#include "evograd/evograd.h"
#include "common/noise.h"
#include "segments.h"
#include "storage.h"
#include "common/validate.h"

#define EVOGRAD_DEFINE_PROJECT(T)                                               \
  static void project_##T(const evograd_span *spans, const evograd_segment *seg, \
                          const evograd_noise *noise, int64_t k0, int64_t kn,   \
                          int64_t begin, double *block_sums) {                  \
    const void *src = spans[seg->span].src;                                     \
    const int gauss = noise->kind == EVOGRAD_NOISE_GAUSS;                       \
    int64_t done = 0;                                                           \
    evograd_piece p;                                                            \
    while (evograd_next_piece(seg, &done, &p)) {                                \
      /* Batches never straddle blocks (asserted below). */                     \
      double *sums = block_sums + ((p.global - begin) / EVOGRAD_PROJECT_BLOCK) * kn; \
      double v[EVOGRAD_BATCH];                                                  \
      int64_t k, l;                                                             \
      for (l = 0; l < p.n; ++l) v[l] = evograd_load_##T(src, p.local + l);      \
      for (k = 0; k < kn; ++k) {                                                \
        const evograd_noise_stream s = evograd_make_stream(                     \
            noise->seed, noise->sigma, gauss, noise->antithetic, k0 + k);       \
        double z[EVOGRAD_BATCH];                                                \
        evograd_noise_batch(&s, (uint64_t)p.global / EVOGRAD_BATCH, z);         \
        for (l = 0; l < p.n; ++l)                                               \
          sums[k] += v[l] * evograd_noise_##T(s.scale * z[p.lane + l]);         \
      }                                                                         \
    }                                                                           \
  }
_Static_assert(EVOGRAD_PROJECT_BLOCK % EVOGRAD_BATCH == 0, "a batch lies in one block");
EVOGRAD_FOR_EACH_STORAGE(EVOGRAD_DEFINE_PROJECT)

/* Adds the products for candidates k0 .. k0+kn-1 over [begin, end) into
 * block_sums, kn per block. Candidates are independent sums, so splitting
 * them into chunks changes no result. */
static void project_range(evograd_dtype dtype, const evograd_span *spans, size_t n_spans,
                          const evograd_noise *noise, int64_t k0, int64_t kn,
                          int64_t begin, int64_t end, double *block_sums) {
  evograd_segment seg;
#define EVOGRAD_CALL(T) project_##T(spans, &seg, noise, k0, kn, begin, block_sums)
  EVOGRAD_FOR_EACH_SEGMENT(dtype, spans, n_spans, begin, end, seg, EVOGRAD_CALL);
#undef EVOGRAD_CALL
}

evograd_status evograd_project_blocks(evograd_dtype dtype, const evograd_span *spans,
                                      size_t n_spans, const evograd_noise *noise,
                                      int64_t population, evograd_range range,
                                      double *block_sums) {
  int64_t total = 0, begin = 0, end = 0, nblocks;
  evograd_status st;
  if ((st = eg_check_project(dtype, spans, n_spans, noise, population, &total)) != EVOGRAD_OK)
    return st;
  if ((st = eg_check_range(range, total, 1, &begin, &end)) != EVOGRAD_OK) return st;
  if (block_sums == NULL) return EVOGRAD_ERR_NULL_POINTER;
  nblocks = (end - begin + EVOGRAD_PROJECT_BLOCK - 1) / EVOGRAD_PROJECT_BLOCK;
  if (nblocks > 0) memset(block_sums, 0, (size_t)nblocks * (size_t)population * sizeof(double));
  project_range(dtype, spans, n_spans, noise, 0, population, begin, end, block_sums);
  return EVOGRAD_OK;
}

evograd_status evograd_project_finish(const double *block_sums, int64_t nblocks,
                                      int64_t population, double *out) {
  int64_t b, k;
  if (nblocks < 0) return EVOGRAD_ERR_INVALID_COUNT;
  if (population < 1 || population > (int64_t)UINT32_MAX) return EVOGRAD_ERR_INVALID_POPULATION;
  if (out == NULL || (nblocks > 0 && block_sums == NULL)) return EVOGRAD_ERR_NULL_POINTER;
  for (k = 0; k < population; ++k) out[k] = 0.0;
  for (b = 0; b < nblocks; ++b)
    for (k = 0; k < population; ++k) out[k] += block_sums[b * population + k];
  return EVOGRAD_OK;
}

evograd_status evograd_project(evograd_dtype dtype, const evograd_span *spans,
                               size_t n_spans, const evograd_noise *noise,
                               int64_t population, double *out) {
  /* One block at a time, its sums kept in a stack buffer of up to 64
   * candidates per pass; larger populations take several passes. */
  enum { CHUNK = 64 };
  double block[CHUNK];
  int64_t total = 0, b, k0, k;
  evograd_status st;
  if ((st = eg_check_project(dtype, spans, n_spans, noise, population, &total)) != EVOGRAD_OK)
    return st;
  if (out == NULL) return EVOGRAD_ERR_NULL_POINTER;
  for (k = 0; k < population; ++k) out[k] = 0.0;
  for (b = 0; b < total; b += EVOGRAD_PROJECT_BLOCK) {
    const int64_t e = b + EVOGRAD_PROJECT_BLOCK < total ? b + EVOGRAD_PROJECT_BLOCK : total;
    for (k0 = 0; k0 < population; k0 += CHUNK) {
      const int64_t kn = population - k0 < CHUNK ? population - k0 : CHUNK;
      for (k = 0; k < kn; ++k) block[k] = 0.0;
      project_range(dtype, spans, n_spans, noise, k0, kn, b, e, block);
      for (k = 0; k < kn; ++k) out[k0 + k] += block[k];
    }
  }
  return EVOGRAD_OK;
}
