// CUDA twins of the C kernels. One launch covers a whole parameter list
// (multi-tensor apply, as apex does): a table of spans with the global index
// where each starts, and a grid-stride loop over quads of global indices,
// one thread per quad. What a thread does with its quad is in quad_work.cuh,
// shared with the host replay that tests these launches without a GPU.
//
// The table and the weights ride in the kernel's parameters when they fit
// (up to kInlineSpans tensors and kInlineWeights candidates): no copy, and
// no wait on the stream, which a copy from pageable host memory may impose.
// Longer lists are copied into the caller's workspace.
#include <cuda_runtime.h>

#include "evograd/evograd.h"
#include "quad_work.cuh"

extern "C" {
#include "common/validate.h"
}

namespace {

using evograd_cuda::DeviceSpan;
using evograd_cuda::kProjectChunk;
using evograd_cuda::QuadNoise;

constexpr int kThreads = evograd_cuda::kBlockThreads;
static_assert(EVOGRAD_PROJECT_BLOCK == 16 * kThreads, "project: four quads per thread");

size_t align_up(size_t n) { return (n + 255) / 256 * 256; }

constexpr int kInlineSpans = 96;
constexpr int kInlineWeights = 64;

struct LaunchArgs {
  DeviceSpan spans[kInlineSpans];
  double weights[kInlineWeights];
  const DeviceSpan* span_table;  // in the workspace; null: `spans` above
  const double* weight_table;    // in the workspace; null: `weights` above
  int n_spans;
};
static_assert(sizeof(LaunchArgs) + 128 <= 4096, "kernel parameters are limited to 4 KiB");

// __grid_constant__: read in place from parameter space, never copied per
// thread, so its arrays can be indexed through a pointer.
__device__ __forceinline__ const DeviceSpan* spans_of(const LaunchArgs& a) {
  return a.span_table ? a.span_table : a.spans;
}
__device__ __forceinline__ const double* weights_of(const LaunchArgs& a) {
  return a.weight_table ? a.weight_table : a.weights;
}

template <typename T>
__global__ void perturb_kernel(const __grid_constant__ LaunchArgs a, int64_t total,
                               evograd_noise_stream s, int64_t first) {
  const QuadNoise<T> noise(s, first);
  const DeviceSpan* spans = spans_of(a);
  const int64_t quads = (total + 3) / 4;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < quads;
       q += (int64_t)gridDim.x * blockDim.x)
    evograd_cuda::perturb_quad<T>(spans, a.n_spans, total, noise, (uint64_t)q);
}

template <typename T>
__global__ void combine_kernel(const __grid_constant__ LaunchArgs a, int64_t total,
                               int64_t population, uint64_t seed, double sigma,
                               evograd_noise_kind kind, int antithetic, int64_t first) {
  const DeviceSpan* spans = spans_of(a);
  const double* weights = weights_of(a);
  const int64_t quads = (total + 3) / 4;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < quads;
       q += (int64_t)gridDim.x * blockDim.x)
    evograd_cuda::combine_quad<T>(spans, a.n_spans, total, weights, population, seed, sigma,
                                  kind, antithetic, first, (uint64_t)q);
}

// One CUDA block per EVOGRAD_PROJECT_BLOCK elements, kProjectChunk candidates
// at a time: each thread sums its quads (q = first + t, + kThreads, ...) in
// order, then a fixed shared-memory tree (strides 128, 64, ..., 1) adds the
// threads' partials. No atomics: the same bits on every run.
template <typename T>
__global__ void project_blocks_kernel(const __grid_constant__ LaunchArgs a, int64_t total,
                                      int64_t population, uint64_t seed, double sigma,
                                      evograd_noise_kind kind, int antithetic, int64_t first,
                                      double* block_sums) {
  __shared__ double partial[kProjectChunk][kThreads];
  const DeviceSpan* spans = spans_of(a);
  const int n_spans = a.n_spans;
  const int64_t begin = (int64_t)blockIdx.x * EVOGRAD_PROJECT_BLOCK;
  const int64_t end = begin + EVOGRAD_PROJECT_BLOCK < total ? begin + EVOGRAD_PROJECT_BLOCK : total;
  const int t = threadIdx.x;
  for (int64_t k0 = 0; k0 < population; k0 += kProjectChunk) {
    const int kn = population - k0 < kProjectChunk ? (int)(population - k0) : kProjectChunk;
    double sums[kProjectChunk] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t q = begin / 4 + t; 4 * q < end; q += kThreads)
      evograd_cuda::project_quad<T>(spans, n_spans, end, seed, sigma, kind, antithetic, first,
                                    k0, kn, (uint64_t)q, sums);
    for (int c = 0; c < kProjectChunk; ++c) partial[c][t] = sums[c];
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride /= 2) {
      if (t < stride)
        for (int c = 0; c < kProjectChunk; ++c) partial[c][t] += partial[c][t + stride];
      __syncthreads();
    }
    if (t < kn) block_sums[blockIdx.x * population + k0 + t] = partial[t][0];
    __syncthreads();
  }
}

__global__ void project_finish_kernel(const double* block_sums, int64_t nblocks,
                                      int64_t population, double* out) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < population;
       k += (int64_t)gridDim.x * blockDim.x) {
    double sum = 0.0;
    for (int64_t b = 0; b < nblocks; ++b) sum += block_sums[b * population + k];
    out[k] = sum;
  }
}


evograd_status device_ready() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return EVOGRAD_ERR_NO_DEVICE;
  }
  return EVOGRAD_OK;
}

// Fills the launch's table and weights (`weights` may be null), inline or
// in the workspace, laid out as evograd_cuda_workspace_bytes() counts it:
// [span table][weights][rest_doubles doubles, returned in *rest].
evograd_status prepare(const evograd_span* spans, size_t n_spans, const double* weights,
                       int64_t population, size_t rest_doubles, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream, LaunchArgs* a,
                       double** rest) {
  const size_t table = align_up(n_spans * sizeof(DeviceSpan));
  const size_t weight_bytes = align_up((size_t)population * sizeof(double));
  if (workspace == nullptr) return EVOGRAD_ERR_NULL_POINTER;
  if (workspace_bytes < table + weight_bytes + rest_doubles * sizeof(double))
    return EVOGRAD_ERR_INVALID_COUNT;
  char* base = static_cast<char*>(workspace);
  a->n_spans = (int)n_spans;
  a->span_table = nullptr;
  a->weight_table = nullptr;
  int64_t start = 0;
  if (n_spans <= (size_t)kInlineSpans) {
    for (size_t i = 0; i < n_spans; ++i) {
      a->spans[i] = {spans[i].src, spans[i].dst, start, spans[i].numel};
      start += spans[i].numel;
    }
  } else {
    // Staged through `a->spans` in chunks. The source is pageable, so the
    // driver has copied it out before cudaMemcpyAsync returns.
    for (size_t i0 = 0; i0 < n_spans; i0 += kInlineSpans) {
      const size_t n = n_spans - i0 < (size_t)kInlineSpans ? n_spans - i0 : kInlineSpans;
      for (size_t i = 0; i < n; ++i) {
        a->spans[i] = {spans[i0 + i].src, spans[i0 + i].dst, start, spans[i0 + i].numel};
        start += spans[i0 + i].numel;
      }
      if (cudaMemcpyAsync(base + i0 * sizeof(DeviceSpan), a->spans, n * sizeof(DeviceSpan),
                          cudaMemcpyHostToDevice, stream) != cudaSuccess)
        return EVOGRAD_ERR_DEVICE;
    }
    a->span_table = reinterpret_cast<const DeviceSpan*>(base);
  }
  if (weights != nullptr) {
    if (population <= kInlineWeights) {
      for (int64_t k = 0; k < population; ++k) a->weights[k] = weights[k];
    } else {
      if (cudaMemcpyAsync(base + table, weights, (size_t)population * sizeof(double),
                          cudaMemcpyHostToDevice, stream) != cudaSuccess)
        return EVOGRAD_ERR_DEVICE;
      a->weight_table = reinterpret_cast<const double*>(base + table);
    }
  }
  *rest = reinterpret_cast<double*>(base + table + weight_bytes);
  return EVOGRAD_OK;
}

int grid_for(int64_t quads) {
  int64_t blocks = (quads + kThreads - 1) / kThreads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;  // grid-stride covers the rest
  return blocks < 1 ? 1 : (int)blocks;
}

}  // namespace

extern "C" {

size_t evograd_cuda_workspace_bytes(size_t n_spans, int64_t total, int64_t population) {
  const int64_t nblocks = (total + EVOGRAD_PROJECT_BLOCK - 1) / EVOGRAD_PROJECT_BLOCK;
  return align_up(n_spans * sizeof(DeviceSpan)) + align_up((size_t)population * sizeof(double)) +
         (size_t)(nblocks * population) * sizeof(double);
}

evograd_status evograd_cuda_device_count(int* count) {
  if (count == nullptr) return EVOGRAD_ERR_NULL_POINTER;
  *count = 0;
  if (cudaGetDeviceCount(count) != cudaSuccess) {
    *count = 0;
    cudaGetLastError();
  }
  return EVOGRAD_OK;
}

evograd_status evograd_cuda_perturb(evograd_dtype dtype, const evograd_span* spans,
                                    size_t n_spans, const evograd_noise* noise, int64_t k,
                                    void* workspace, size_t workspace_bytes, void* stream) {
  int64_t total = 0;
  evograd_status st;
  if ((st = eg_check_perturb(dtype, spans, n_spans, noise, k, &total)) != EVOGRAD_OK) return st;
  if ((st = device_ready()) != EVOGRAD_OK) return st;
  if (total == 0) return EVOGRAD_OK;
  auto s = static_cast<cudaStream_t>(stream);
  LaunchArgs a;
  double* rest;
  if ((st = prepare(spans, n_spans, nullptr, 0, 0, workspace, workspace_bytes, s, &a, &rest)) !=
      EVOGRAD_OK)
    return st;
  const auto ns = evograd_make_stream(noise->seed, noise->sigma, noise->kind, noise->antithetic, k);
  const int grid = grid_for((total + 3) / 4);
  evograd_cuda::with_storage_type(dtype, [&](auto tag) {
    perturb_kernel<decltype(tag)><<<grid, kThreads, 0, s>>>(a, total, ns, noise->first);
  });
  return cudaGetLastError() == cudaSuccess ? EVOGRAD_OK : EVOGRAD_ERR_DEVICE;
}

evograd_status evograd_cuda_combine(evograd_dtype dtype, const evograd_span* spans,
                                    size_t n_spans, const evograd_noise* noise,
                                    const double* weights, int64_t population,
                                    void* workspace, size_t workspace_bytes, void* stream) {
  int64_t total = 0;
  evograd_status st;
  if ((st = eg_check_combine(dtype, spans, n_spans, noise, weights, population, &total)) !=
      EVOGRAD_OK)
    return st;
  if ((st = device_ready()) != EVOGRAD_OK) return st;
  if (total == 0) return EVOGRAD_OK;
  auto s = static_cast<cudaStream_t>(stream);
  LaunchArgs a;
  double* rest;
  if ((st = prepare(spans, n_spans, weights, population, 0, workspace, workspace_bytes, s, &a,
                    &rest)) != EVOGRAD_OK)
    return st;
  const int grid = grid_for((total + 3) / 4);
  evograd_cuda::with_storage_type(dtype, [&](auto tag) {
    combine_kernel<decltype(tag)><<<grid, kThreads, 0, s>>>(
        a, total, population, noise->seed, noise->sigma, noise->kind, noise->antithetic, noise->first);
  });
  return cudaGetLastError() == cudaSuccess ? EVOGRAD_OK : EVOGRAD_ERR_DEVICE;
}

evograd_status evograd_cuda_project(evograd_dtype dtype, const evograd_span* spans,
                                    size_t n_spans, const evograd_noise* noise,
                                    int64_t population, double* out, void* workspace,
                                    size_t workspace_bytes, void* stream) {
  int64_t total = 0;
  evograd_status st;
  if ((st = eg_check_project(dtype, spans, n_spans, noise, population, &total)) != EVOGRAD_OK)
    return st;
  if (out == nullptr) return EVOGRAD_ERR_NULL_POINTER;
  if ((st = device_ready()) != EVOGRAD_OK) return st;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t nblocks = (total + EVOGRAD_PROJECT_BLOCK - 1) / EVOGRAD_PROJECT_BLOCK;
  LaunchArgs a;
  double* d_sums;
  if ((st = prepare(spans, n_spans, nullptr, population, (size_t)(nblocks * population),
                    workspace, workspace_bytes, s, &a, &d_sums)) != EVOGRAD_OK)
    return st;
  if (nblocks > 0) {
    evograd_cuda::with_storage_type(dtype, [&](auto tag) {
      project_blocks_kernel<decltype(tag)><<<(unsigned)nblocks, kThreads, 0, s>>>(
          a, total, population, noise->seed, noise->sigma, noise->kind, noise->antithetic,
          noise->first, d_sums);
    });
  }
  project_finish_kernel<<<grid_for(population), kThreads, 0, s>>>(d_sums, nblocks, population,
                                                                  out);
  return cudaGetLastError() == cudaSuccess ? EVOGRAD_OK : EVOGRAD_ERR_DEVICE;
}

}  // extern "C"
