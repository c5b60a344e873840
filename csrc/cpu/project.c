/* c_k = <g, eps_k>, regenerating the noise instead of storing it. Sums run in
 * double over fixed blocks of global indices, then over blocks in order, so
 * the result is the same bits however the work is split. */
#include <string.h>

#include "evograd/evograd.h"
#include "common/validate.h"
#include "isa.h"
#include "segments.h"

_Static_assert(EVOGRAD_PROJECT_BLOCK % EVOGRAD_PROJECT_LANES == 0, "lanes tile a block");

/* A block's sum from its lanes: a fixed pairwise tree. */
static double lanes_sum(double *lane) {
  int w, j;
  for (w = EVOGRAD_PROJECT_LANES / 2; w >= 1; w /= 2)
    for (j = 0; j < w; ++j) lane[j] += lane[j + w];
  return lane[0];
}

/* The sums for candidates k0 .. k0+kn-1 (kn <= EVOGRAD_PROJECT_CHUNK) over
 * [begin, end), begin block-aligned: block b's at block_sums[b * stride + k].
 * Candidates are independent sums, so splitting them into chunks changes
 * no result. */
#define EVOGRAD_PROJECT_CHUNK 64
static void project_range(evograd_dtype dtype, const evograd_span *spans, size_t n_spans,
                          const evograd_noise *noise, int64_t k0, int64_t kn,
                          int64_t begin, int64_t end, double *block_sums, int64_t stride) {
  double lanes[EVOGRAD_PROJECT_CHUNK * EVOGRAD_PROJECT_LANES];
  const evograd_cpu_kernels *kernels = eg_cpu_kernels();
  const size_t esize = eg_dtype_size(dtype);
  const size_t lanes_bytes = (size_t)kn * EVOGRAD_PROJECT_LANES * sizeof(double);
  evograd_segment seg;
  evograd_segment_walk walk;
  int64_t block = 0, k; /* the block whose lanes are open, counted from begin */
  memset(lanes, 0, lanes_bytes);
  evograd_walk_init(&walk, spans, n_spans, begin, end);
  while (evograd_walk_next(&walk, &seg)) {
    int64_t done = 0;
    while (done < seg.count) {
      const int64_t g = seg.global + done;
      const int64_t b = (g - begin) / EVOGRAD_PROJECT_BLOCK;
      const int64_t block_end = begin + (b + 1) * EVOGRAD_PROJECT_BLOCK;
      const int64_t n = block_end - g < seg.count - done ? block_end - g : seg.count - done;
      if (b != block) {
        for (k = 0; k < kn; ++k) block_sums[block * stride + k] = lanes_sum(lanes + k * EVOGRAD_PROJECT_LANES);
        memset(lanes, 0, lanes_bytes);
        block = b;
      }
      kernels->project(dtype, (const char *)evograd_segment_src(spans, &seg, esize) + done * (int64_t)esize,
                       noise->first + g, n, seg.count - done, done == 0, noise, k0, kn, lanes);
      done += n;
    }
  }
  if (end > begin)
    for (k = 0; k < kn; ++k) block_sums[block * stride + k] = lanes_sum(lanes + k * EVOGRAD_PROJECT_LANES);
}

evograd_status evograd_project_blocks(evograd_dtype dtype, const evograd_span *spans,
                                      size_t n_spans, const evograd_noise *noise,
                                      int64_t population, evograd_range range,
                                      double *block_sums) {
  int64_t total = 0, begin = 0, end = 0, nblocks, k0;
  evograd_status st;
  if ((st = eg_check_project(dtype, spans, n_spans, noise, population, &total)) != EVOGRAD_OK)
    return st;
  if ((st = eg_check_range(range, total, 1, &begin, &end)) != EVOGRAD_OK) return st;
  if (block_sums == NULL) return EVOGRAD_ERR_NULL_POINTER;
  nblocks = (end - begin + EVOGRAD_PROJECT_BLOCK - 1) / EVOGRAD_PROJECT_BLOCK;
  if (nblocks > 0) memset(block_sums, 0, (size_t)nblocks * (size_t)population * sizeof(double));
  for (k0 = 0; k0 < population; k0 += EVOGRAD_PROJECT_CHUNK) {
    const int64_t kn = population - k0 < EVOGRAD_PROJECT_CHUNK ? population - k0 : EVOGRAD_PROJECT_CHUNK;
    project_range(dtype, spans, n_spans, noise, k0, kn, begin, end, block_sums + k0, population);
  }
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
  /* One block at a time, up to EVOGRAD_PROJECT_CHUNK candidates per pass. */
  enum { CHUNK = EVOGRAD_PROJECT_CHUNK };
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
      project_range(dtype, spans, n_spans, noise, k0, kn, b, e, block, kn);
      for (k = 0; k < kn; ++k) out[k0 + k] += block[k];
    }
  }
  return EVOGRAD_OK;
}
