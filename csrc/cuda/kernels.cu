// CUDA twins of the C kernels. One launch covers a whole parameter list
// (multi-tensor apply, as apex does): a device table of spans with the global
// index where each starts, and a grid-stride loop over quads of global
// indices, one thread per quad and one Philox call each, as on the CPU. What
// a thread does with its quad is in quad_work.cuh, shared with the host
// replay that tests these launches without a GPU.
#include <cuda_runtime.h>

#include "evograd/evograd.h"
#include "quad_work.cuh"

extern "C" {
#include "../cpu/validate.h"
}

namespace {

using evograd_cuda::DeviceSpan;
using evograd_cuda::kProjectChunk;
using evograd_cuda::QuadNoise;

constexpr int kThreads = evograd_cuda::kBlockThreads;
static_assert(EVOGRAD_PROJECT_BLOCK == 16 * kThreads, "project: four quads per thread");

size_t align_up(size_t n) { return (n + 255) / 256 * 256; }

template <typename T>
__global__ void perturb_kernel(const DeviceSpan* spans, int n_spans, int64_t total,
                               evograd_noise_stream s) {
  const QuadNoise<T> noise(s);
  const int64_t quads = (total + 3) / 4;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < quads;
       q += (int64_t)gridDim.x * blockDim.x)
    evograd_cuda::perturb_quad<T>(spans, n_spans, total, noise, (uint64_t)q);
}

template <typename T>
__global__ void combine_kernel(const DeviceSpan* spans, int n_spans, int64_t total,
                               const double* weights, int64_t population, uint64_t seed,
                               double sigma, int gauss, int antithetic) {
  const int64_t quads = (total + 3) / 4;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < quads;
       q += (int64_t)gridDim.x * blockDim.x)
    evograd_cuda::combine_quad<T>(spans, n_spans, total, weights, population, seed, sigma,
                                  gauss, antithetic, (uint64_t)q);
}

// One CUDA block per EVOGRAD_PROJECT_BLOCK elements, kProjectChunk candidates
// at a time: each thread sums its quads (q = first + t, + kThreads, ...) in
// order, then a fixed shared-memory tree (strides 128, 64, ..., 1) adds the
// threads' partials. No atomics: the same bits on every run.
template <typename T>
__global__ void project_blocks_kernel(const DeviceSpan* spans, int n_spans, int64_t total,
                                      int64_t population, uint64_t seed, double sigma,
                                      int gauss, int antithetic, double* block_sums) {
  __shared__ double partial[kProjectChunk][kThreads];
  const int64_t begin = (int64_t)blockIdx.x * EVOGRAD_PROJECT_BLOCK;
  const int64_t end = begin + EVOGRAD_PROJECT_BLOCK < total ? begin + EVOGRAD_PROJECT_BLOCK : total;
  const int t = threadIdx.x;
  for (int64_t k0 = 0; k0 < population; k0 += kProjectChunk) {
    const int kn = population - k0 < kProjectChunk ? (int)(population - k0) : kProjectChunk;
    double sums[kProjectChunk] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t q = begin / 4 + t; 4 * q < end; q += kThreads)
      evograd_cuda::project_quad<T>(spans, n_spans, end, seed, sigma, gauss, antithetic, k0, kn,
                                    (uint64_t)q, sums);
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

// Copies the span table (and optionally K doubles) into the workspace.
evograd_status upload(const evograd_span* spans, size_t n_spans, const double* extra,
                      int64_t n_extra, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream, DeviceSpan** d_spans, double** d_extra,
                      double** d_rest, size_t rest_doubles) {
  const size_t table = align_up(n_spans * sizeof(DeviceSpan));
  const size_t extra_bytes = align_up((size_t)n_extra * sizeof(double));
  if (workspace == nullptr) return EVOGRAD_ERR_NULL_POINTER;
  if (workspace_bytes < table + extra_bytes + rest_doubles * sizeof(double))
    return EVOGRAD_ERR_INVALID_COUNT;
  // Host staging: small, lives until the copies below have been issued.
  DeviceSpan local[64];
  char* base = static_cast<char*>(workspace);
  int64_t start = 0;
  for (size_t i0 = 0; i0 < n_spans; i0 += 64) {
    const size_t n = n_spans - i0 < 64 ? n_spans - i0 : 64;
    for (size_t i = 0; i < n; ++i) {
      local[i] = {spans[i0 + i].src, spans[i0 + i].dst, start, spans[i0 + i].numel};
      start += spans[i0 + i].numel;
    }
    // Pageable source: the driver stages it before returning, so reusing
    // `local` for the next chunk is safe.
    if (cudaMemcpyAsync(base + i0 * sizeof(DeviceSpan), local, n * sizeof(DeviceSpan),
                        cudaMemcpyHostToDevice, stream) != cudaSuccess)
      return EVOGRAD_ERR_DEVICE;
  }
  *d_spans = reinterpret_cast<DeviceSpan*>(base);
  *d_extra = reinterpret_cast<double*>(base + table);
  if (n_extra > 0 && cudaMemcpyAsync(*d_extra, extra, (size_t)n_extra * sizeof(double),
                                     cudaMemcpyHostToDevice, stream) != cudaSuccess)
    return EVOGRAD_ERR_DEVICE;
  *d_rest = reinterpret_cast<double*>(base + table + extra_bytes);
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
  if ((st = evograd_check_spans(dtype, spans, n_spans, 1, &total)) != EVOGRAD_OK) return st;
  if ((st = evograd_check_noise(noise)) != EVOGRAD_OK) return st;
  if (k < 0 || k > (int64_t)UINT32_MAX) return EVOGRAD_ERR_INVALID_CANDIDATE;
  if ((st = device_ready()) != EVOGRAD_OK) return st;
  if (total == 0) return EVOGRAD_OK;
  auto s = static_cast<cudaStream_t>(stream);
  DeviceSpan* d_spans;
  double *unused, *rest;
  if ((st = upload(spans, n_spans, nullptr, 0, workspace, workspace_bytes, s, &d_spans,
                   &unused, &rest, 0)) != EVOGRAD_OK)
    return st;
  const auto ns = evograd_make_stream(noise->seed, noise->sigma,
                                      noise->kind == EVOGRAD_NOISE_GAUSS, noise->antithetic, k);
  const int grid = grid_for((total + 3) / 4);
  evograd_cuda::with_storage_type(dtype, [&](auto tag) {
    perturb_kernel<decltype(tag)><<<grid, kThreads, 0, s>>>(d_spans, (int)n_spans, total, ns);
  });
  return cudaGetLastError() == cudaSuccess ? EVOGRAD_OK : EVOGRAD_ERR_DEVICE;
}

evograd_status evograd_cuda_combine(evograd_dtype dtype, const evograd_span* spans,
                                    size_t n_spans, const evograd_noise* noise,
                                    const double* weights, int64_t population,
                                    void* workspace, size_t workspace_bytes, void* stream) {
  int64_t total = 0;
  evograd_status st;
  if ((st = evograd_check_spans(dtype, spans, n_spans, 1, &total)) != EVOGRAD_OK) return st;
  if ((st = evograd_check_noise(noise)) != EVOGRAD_OK) return st;
  if ((st = evograd_check_population(population, noise->antithetic)) != EVOGRAD_OK) return st;
  if ((st = evograd_check_finite(weights, population, EVOGRAD_ERR_NONFINITE_VALUE)) != EVOGRAD_OK)
    return st;
  if ((st = device_ready()) != EVOGRAD_OK) return st;
  if (total == 0) return EVOGRAD_OK;
  auto s = static_cast<cudaStream_t>(stream);
  DeviceSpan* d_spans;
  double *d_weights, *rest;
  if ((st = upload(spans, n_spans, weights, population, workspace, workspace_bytes, s, &d_spans,
                   &d_weights, &rest, 0)) != EVOGRAD_OK)
    return st;
  const int gauss = noise->kind == EVOGRAD_NOISE_GAUSS;
  const int grid = grid_for((total + 3) / 4);
  evograd_cuda::with_storage_type(dtype, [&](auto tag) {
    combine_kernel<decltype(tag)><<<grid, kThreads, 0, s>>>(
        d_spans, (int)n_spans, total, d_weights, population, noise->seed, noise->sigma, gauss,
        noise->antithetic);
  });
  return cudaGetLastError() == cudaSuccess ? EVOGRAD_OK : EVOGRAD_ERR_DEVICE;
}

evograd_status evograd_cuda_project(evograd_dtype dtype, const evograd_span* spans,
                                    size_t n_spans, const evograd_noise* noise,
                                    int64_t population, double* out, void* workspace,
                                    size_t workspace_bytes, void* stream) {
  int64_t total = 0;
  evograd_status st;
  if ((st = evograd_check_spans(dtype, spans, n_spans, 0, &total)) != EVOGRAD_OK) return st;
  if ((st = evograd_check_noise(noise)) != EVOGRAD_OK) return st;
  if ((st = evograd_check_population(population, noise->antithetic)) != EVOGRAD_OK) return st;
  if (out == nullptr) return EVOGRAD_ERR_NULL_POINTER;
  if ((st = device_ready()) != EVOGRAD_OK) return st;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t nblocks = (total + EVOGRAD_PROJECT_BLOCK - 1) / EVOGRAD_PROJECT_BLOCK;
  DeviceSpan* d_spans;
  double *unused, *d_sums;
  if ((st = upload(spans, n_spans, nullptr, population, workspace, workspace_bytes, s, &d_spans,
                   &unused, &d_sums, (size_t)(nblocks * population))) != EVOGRAD_OK)
    return st;
  const int gauss = noise->kind == EVOGRAD_NOISE_GAUSS;
  if (nblocks > 0) {
    evograd_cuda::with_storage_type(dtype, [&](auto tag) {
      project_blocks_kernel<decltype(tag)><<<(unsigned)nblocks, kThreads, 0, s>>>(
          d_spans, (int)n_spans, total, population, noise->seed, noise->sigma, gauss,
          noise->antithetic, d_sums);
    });
  }
  project_finish_kernel<<<grid_for(population), kThreads, 0, s>>>(d_sums, nblocks, population,
                                                                  out);
  return cudaGetLastError() == cudaSuccess ? EVOGRAD_OK : EVOGRAD_ERR_DEVICE;
}

}  // extern "C"
