// CUDA twins of the C kernels. One launch covers a whole parameter list
// (multi-tensor apply, as apex does): a device table of spans with the global
// index where each starts, a grid-stride loop over quads of global indices
// (one Philox call each, as on the CPU), and a binary search for the span of
// each element. The noise code is the shared header, so sign noise is
// bit-identical to the CPU.
#include <cuda_runtime.h>

#include "evograd/evograd.h"
#include "../noise.h"

extern "C" {
#include "../cpu/validate.h"
}

namespace {

struct DeviceSpan {
  const void* src;
  void* dst;
  int64_t start;  // global index of element 0
  int64_t numel;
};

constexpr int kThreads = 256;

size_t align_up(size_t n) { return (n + 255) / 256 * 256; }

__device__ __forceinline__ int find_span(const DeviceSpan* spans, int n, int64_t g) {
  int lo = 0, hi = n - 1;  // last span with start <= g (zero-size ones never hold g)
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (spans[mid].start <= g) lo = mid; else hi = mid - 1;
  }
  while (spans[lo].numel == 0 || g >= spans[lo].start + spans[lo].numel) ++lo;
  return lo;
}

template <typename T>
__global__ void perturb_kernel(const DeviceSpan* spans, int n_spans, int64_t total,
                               evograd_noise_stream s) {
  const int64_t quads = (total + 3) / 4;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < quads;
       q += (int64_t)gridDim.x * blockDim.x) {
    double z[4];
    evograd_noise_quad(&s, (uint64_t)q, z);
    int sp = find_span(spans, n_spans, 4 * q);
    for (int l = 0; l < 4 && 4 * q + l < total; ++l) {
      const int64_t g = 4 * q + l;
      while (g >= spans[sp].start + spans[sp].numel) ++sp;
      const int64_t i = g - spans[sp].start;
      static_cast<T*>(spans[sp].dst)[i] =
          static_cast<const T*>(spans[sp].src)[i] + (T)(s.scale * z[l]);
    }
  }
}

template <typename T>
__global__ void combine_kernel(const DeviceSpan* spans, int n_spans, int64_t total,
                               const double* weights, int64_t population, uint64_t seed,
                               double sigma, int gauss, int antithetic) {
  const int64_t quads = (total + 3) / 4;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < quads;
       q += (int64_t)gridDim.x * blockDim.x) {
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t k = 0; k < population; ++k) {
      const evograd_noise_stream s = evograd_make_stream(seed, sigma, gauss, antithetic, k);
      double z[4];
      evograd_noise_quad(&s, (uint64_t)q, z);
      for (int l = 0; l < 4; ++l) acc[l] += weights[k] * (double)(T)(s.scale * z[l]);
    }
    int sp = find_span(spans, n_spans, 4 * q);
    for (int l = 0; l < 4 && 4 * q + l < total; ++l) {
      const int64_t g = 4 * q + l;
      while (g >= spans[sp].start + spans[sp].numel) ++sp;
      const int64_t i = g - spans[sp].start;
      static_cast<T*>(spans[sp].dst)[i] =
          (T)((double)static_cast<const T*>(spans[sp].src)[i] + acc[l]);
    }
  }
}

// One CUDA block per EVOGRAD_PROJECT_BLOCK elements; per candidate, each
// thread sums its elements in order, then a fixed shared-memory tree.
template <typename T>
__global__ void project_blocks_kernel(const DeviceSpan* spans, int n_spans, int64_t total,
                                      int64_t population, uint64_t seed, double sigma,
                                      int gauss, int antithetic, double* block_sums) {
  __shared__ double partial[kThreads];
  const int64_t block_begin = (int64_t)blockIdx.x * EVOGRAD_PROJECT_BLOCK;
  const int64_t block_end = block_begin + EVOGRAD_PROJECT_BLOCK < total
                                ? block_begin + EVOGRAD_PROJECT_BLOCK : total;
  for (int64_t k = 0; k < population; ++k) {
    const evograd_noise_stream s = evograd_make_stream(seed, sigma, gauss, antithetic, k);
    double sum = 0.0;
    for (int64_t q = block_begin / 4 + threadIdx.x; 4 * q < block_end; q += blockDim.x) {
      double z[4];
      evograd_noise_quad(&s, (uint64_t)q, z);
      int sp = find_span(spans, n_spans, 4 * q);
      for (int l = 0; l < 4 && 4 * q + l < block_end; ++l) {
        const int64_t g = 4 * q + l;
        while (g >= spans[sp].start + spans[sp].numel) ++sp;
        const double v = (double)static_cast<const T*>(spans[sp].src)[g - spans[sp].start];
        sum += v * (double)(T)(s.scale * z[l]);
      }
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) block_sums[blockIdx.x * population + k] = partial[0];
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

// Half-precision storage is CPU-only for now.
bool cuda_dtype(evograd_dtype d) { return d == EVOGRAD_FLOAT32 || d == EVOGRAD_FLOAT64; }

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
  if (!cuda_dtype(dtype)) return EVOGRAD_ERR_INVALID_DTYPE;
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
  if (dtype == EVOGRAD_FLOAT32)
    perturb_kernel<float><<<grid, kThreads, 0, s>>>(d_spans, (int)n_spans, total, ns);
  else
    perturb_kernel<double><<<grid, kThreads, 0, s>>>(d_spans, (int)n_spans, total, ns);
  return cudaGetLastError() == cudaSuccess ? EVOGRAD_OK : EVOGRAD_ERR_DEVICE;
}

evograd_status evograd_cuda_combine(evograd_dtype dtype, const evograd_span* spans,
                                    size_t n_spans, const evograd_noise* noise,
                                    const double* weights, int64_t population,
                                    void* workspace, size_t workspace_bytes, void* stream) {
  int64_t total = 0;
  evograd_status st;
  if ((st = evograd_check_spans(dtype, spans, n_spans, 1, &total)) != EVOGRAD_OK) return st;
  if (!cuda_dtype(dtype)) return EVOGRAD_ERR_INVALID_DTYPE;
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
  if (dtype == EVOGRAD_FLOAT32)
    combine_kernel<float><<<grid, kThreads, 0, s>>>(d_spans, (int)n_spans, total, d_weights,
                                                    population, noise->seed, noise->sigma,
                                                    gauss, noise->antithetic);
  else
    combine_kernel<double><<<grid, kThreads, 0, s>>>(d_spans, (int)n_spans, total, d_weights,
                                                     population, noise->seed, noise->sigma,
                                                     gauss, noise->antithetic);
  return cudaGetLastError() == cudaSuccess ? EVOGRAD_OK : EVOGRAD_ERR_DEVICE;
}

evograd_status evograd_cuda_project(evograd_dtype dtype, const evograd_span* spans,
                                    size_t n_spans, const evograd_noise* noise,
                                    int64_t population, double* out, void* workspace,
                                    size_t workspace_bytes, void* stream) {
  int64_t total = 0;
  evograd_status st;
  if ((st = evograd_check_spans(dtype, spans, n_spans, 0, &total)) != EVOGRAD_OK) return st;
  if (!cuda_dtype(dtype)) return EVOGRAD_ERR_INVALID_DTYPE;
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
    if (dtype == EVOGRAD_FLOAT32)
      project_blocks_kernel<float><<<(unsigned)nblocks, kThreads, 0, s>>>(
          d_spans, (int)n_spans, total, population, noise->seed, noise->sigma, gauss,
          noise->antithetic, d_sums);
    else
      project_blocks_kernel<double><<<(unsigned)nblocks, kThreads, 0, s>>>(
          d_spans, (int)n_spans, total, population, noise->seed, noise->sigma, gauss,
          noise->antithetic, d_sums);
  }
  project_finish_kernel<<<grid_for(population), kThreads, 0, s>>>(d_sums, nblocks, population,
                                                                  out);
  return cudaGetLastError() == cudaSuccess ? EVOGRAD_OK : EVOGRAD_ERR_DEVICE;
}

}  // extern "C"
