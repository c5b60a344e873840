/*
 * evograd.h - the C ABI of the EvoGrad kernels (C99, no torch).
 *
 * A parameter list is a sequence of spans; element i of the list is its
 * global index, counting across spans in order. Noise is a pure function of
 * (seed, candidate, global index), so nothing here depends on how the list
 * is split into spans, on element ranges, on threads or on the device.
 *
 * Every function validates all of its arguments before writing anything and
 * reports problems through evograd_status; nothing aborts, prints or
 * allocates.
 */
#ifndef EVOGRAD_EVOGRAD_H
#define EVOGRAD_EVOGRAD_H

#include <stddef.h>
#include <stdint.h>

/* EVOGRAD_API marks the library's exported functions: the ones declared
 * here. Everything else in it is built with hidden visibility. */
#if defined(__GNUC__) || defined(__clang__)
#define EVOGRAD_API __attribute__((visibility("default")))
#else
#define EVOGRAD_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version, "MAJOR.MINOR.PATCH" (evograd/version.h has the
 * numbers the headers were installed with). */
EVOGRAD_API const char *evograd_version(void);

typedef enum evograd_status {
  EVOGRAD_OK = 0,
  EVOGRAD_ERR_NULL_POINTER = 1,
  EVOGRAD_ERR_INVALID_COUNT = 2,
  EVOGRAD_ERR_INVALID_SIGMA = 3,
  EVOGRAD_ERR_INVALID_TEMPERATURE = 4,
  EVOGRAD_ERR_INVALID_POPULATION = 5,
  EVOGRAD_ERR_ODD_ANTITHETIC = 6,
  EVOGRAD_ERR_NONFINITE_LOSS = 7,
  EVOGRAD_ERR_INVALID_NOISE = 8,
  EVOGRAD_ERR_INVALID_RANGE = 9,
  EVOGRAD_ERR_SIZE_OVERFLOW = 10,
  EVOGRAD_ERR_INVALID_DTYPE = 11,
  EVOGRAD_ERR_INVALID_CANDIDATE = 12,
  EVOGRAD_ERR_NONFINITE_VALUE = 13,
  EVOGRAD_ERR_NO_DEVICE = 14,
  EVOGRAD_ERR_DEVICE = 15,
  EVOGRAD_ERR_OVERLAP = 16
} evograd_status;

/* A static, human-readable description; never NULL. */
EVOGRAD_API const char *evograd_status_string(evograd_status status);

/* float16 and bfloat16 storage use float32 noise and at least float32
 * arithmetic (sums in float64), rounded once to the storage type. */
typedef enum evograd_dtype {
  EVOGRAD_FLOAT32 = 0,
  EVOGRAD_FLOAT64 = 1,
  EVOGRAD_FLOAT16 = 2, /* IEEE binary16 */
  EVOGRAD_BFLOAT16 = 3
} evograd_dtype;

typedef enum evograd_noise_kind {
  EVOGRAD_NOISE_SIGN = 0,  /* Rademacher: z = +1 or -1 */
  EVOGRAD_NOISE_GAUSS = 1  /* standard normal, Box-Muller on Philox output */
} evograd_noise_kind;

/* eps_k[i] = sigma * z(seed, k, first + i), computed in double and rounded
 * once to the storage type. With antithetic != 0 (population even),
 * candidate 2j+1 uses exactly -z of candidate 2j.
 * `first` is the global index of the list's element 0: 0 for a whole
 * parameter list; a process holding only a shard of it (FSDP, ZeRO) passes
 * where its shard starts and gets exactly the noise the whole list has
 * there. Zero-initialising the struct gives first = 0. */
typedef struct evograd_noise {
  uint64_t seed;
  double sigma;
  evograd_noise_kind kind;
  int antithetic;
  int64_t first;
} evograd_noise;

/* One tensor of the list: dst[j] is written from src[j], j < numel.
 * src == dst (in place) is allowed; partial overlap is not. Readers
 * (project) ignore dst. */
typedef struct evograd_span {
  const void *src;
  void *dst;
  int64_t numel;
} evograd_span;

/* Element range [begin, end) of global indices; {0, -1} means "all". */
typedef struct evograd_range {
  int64_t begin;
  int64_t end;
} evograd_range;

/* Project reduces in fixed blocks of global indices: inside a block, index i
 * adds to partial sum i % 32 (each in double, in index order) and the 32
 * partial sums meet in a fixed pairwise tree; then the block sums add in
 * block order. Bit-identical results for any split into spans, ranges or
 * threads, and on every CPU (see evograd_cpu_kernels_name). */
#define EVOGRAD_PROJECT_BLOCK 4096

/* Total number of elements of a span list, with overflow checking. */
EVOGRAD_API evograd_status evograd_total_numel(const evograd_span *spans, size_t n_spans,
                                               int64_t *total);

/* z(seed, k, i) for n consecutive list indices starting at first (global
 * indices noise->first + first ...), as double. For inspection and tests;
 * the kernels use the same function. */
EVOGRAD_API evograd_status evograd_noise_values(const evograd_noise *noise, int64_t k,
                                                int64_t first, int64_t n, double *out);

/* dst = src + eps_k over the range. */
EVOGRAD_API evograd_status evograd_perturb(evograd_dtype dtype, const evograd_span *spans,
                                           size_t n_spans, const evograd_noise *noise,
                                           int64_t k, evograd_range range);

/* dst = src + sum_k weights[k] * eps_k over the range (population terms). */
EVOGRAD_API evograd_status evograd_combine(evograd_dtype dtype, const evograd_span *spans,
                                           size_t n_spans, const evograd_noise *noise,
                                           const double *weights, int64_t population,
                                           evograd_range range);

/* Block sums of <src, eps_k> for the blocks covering the range, which must
 * start on a block boundary and end on one or at the end of the list.
 * block_sums has room for nblocks * population doubles, block-major, where
 * nblocks = ceil((end - begin) / EVOGRAD_PROJECT_BLOCK). */
EVOGRAD_API evograd_status evograd_project_blocks(evograd_dtype dtype,
                                                  const evograd_span *spans, size_t n_spans,
                                                  const evograd_noise *noise,
                                                  int64_t population, evograd_range range,
                                                  double *block_sums);

/* out[k] = sum over blocks, in block order, of block_sums[b * population + k]. */
EVOGRAD_API evograd_status evograd_project_finish(const double *block_sums, int64_t nblocks,
                                                  int64_t population, double *out);

/* c_k = <src, eps_k> for all k over the whole list, single-threaded. Equal
 * bit for bit to project_blocks over any block-aligned split + finish. */
EVOGRAD_API evograd_status evograd_project(evograd_dtype dtype, const evograd_span *spans,
                                           size_t n_spans, const evograd_noise *noise,
                                           int64_t population, double *out);

/* w = softmax(-losses / temperature), max-shifted. */
EVOGRAD_API evograd_status evograd_weights(const double *losses, int64_t population,
                                           double temperature, double *weights);

/* dL/dl_j = -(w_j / tau) * (c_j - sum_k w_k c_k); out must not overlap the
 * inputs. weights may be computed in place over losses. */
EVOGRAD_API evograd_status evograd_loss_cotangent(const double *losses,
                                                  const double *projections,
                                                  int64_t population, double temperature,
                                                  double *out);

/* Which build of the CPU kernels' inner loops this process runs: "avx512",
 * "avx2" or "portable" (chosen from the CPU's features at first use; the
 * environment variable EVOGRAD_CPU_KERNELS, read then, may name a narrower
 * one; naming one this CPU cannot run prints one warning on stderr and runs
 * the widest it can). All give the same bits; only the speed differs. */
EVOGRAD_API const char *evograd_cpu_kernels_name(void);

/* ---- CUDA twins (csrc/cuda), present when built with nvcc ----------------
 * Spans hold device pointers; the span array itself, weights and losses are
 * host memory. All four dtypes, with the CPU kernels' arithmetic. Each call
 * is one launch over the whole list (two for project) on `stream` (a
 * cudaStream_t; NULL is the legacy default stream). Lists of up to 96
 * tensors and up to 64 weights travel in the launch's parameters; longer
 * ones are first copied into `workspace`, which project also uses for its
 * block sums: a device buffer of at least evograd_cuda_workspace_bytes()
 * bytes that must stay untouched until the stream has run the kernels.
 * Without a usable device the calls return EVOGRAD_ERR_NO_DEVICE; argument
 * errors are reported before any launch. */
EVOGRAD_API size_t evograd_cuda_workspace_bytes(size_t n_spans, int64_t total, int64_t population);
EVOGRAD_API evograd_status evograd_cuda_device_count(int *count);
EVOGRAD_API evograd_status evograd_cuda_perturb(evograd_dtype dtype, const evograd_span *spans,
                                                size_t n_spans, const evograd_noise *noise, int64_t k,
                                                void *workspace, size_t workspace_bytes, void *stream);
EVOGRAD_API evograd_status evograd_cuda_combine(evograd_dtype dtype, const evograd_span *spans,
                                                size_t n_spans, const evograd_noise *noise,
                                                const double *weights, int64_t population,
                                                void *workspace, size_t workspace_bytes, void *stream);
/* out: device memory for population doubles. Block sums follow the CPU
 * blocking (EVOGRAD_PROJECT_BLOCK) but are reduced as a fixed tree inside each
 * block, so results are run-to-run identical but may differ from the CPU
 * in the last bits. */
EVOGRAD_API evograd_status evograd_cuda_project(evograd_dtype dtype, const evograd_span *spans,
                                                size_t n_spans, const evograd_noise *noise,
                                                int64_t population, double *out, void *workspace,
                                                size_t workspace_bytes, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* EVOGRAD_EVOGRAD_H */
