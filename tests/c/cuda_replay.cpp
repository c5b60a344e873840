#include "cuda_replay.h"

#include <vector>

#include "cuda/quad_work.cuh"

namespace cuda_replay {
namespace {

using evograd_cuda::DeviceSpan;
using evograd_cuda::kBlockThreads;
using evograd_cuda::kProjectChunk;

// The device span table, as the entry points upload it.
std::vector<DeviceSpan> table(const evograd_span* spans, size_t n_spans, int64_t* total) {
  std::vector<DeviceSpan> t;
  int64_t start = 0;
  for (size_t i = 0; i < n_spans; ++i) {
    t.push_back({spans[i].src, spans[i].dst, start, spans[i].numel});
    start += spans[i].numel;
  }
  *total = start;
  return t;
}

evograd_noise_stream stream(const evograd_noise& n, int64_t k) {
  return evograd_make_stream(n.seed, n.sigma, n.kind, n.antithetic, k);
}

template <typename T>
void perturb_t(const std::vector<DeviceSpan>& t, int64_t total, const evograd_noise& n,
               int64_t k) {
  const evograd_cuda::QuadNoise<T> noise(stream(n, k), n.first);
  for (int64_t q = 0; q < (total + 3) / 4; ++q)
    evograd_cuda::perturb_quad<T>(t.data(), (int)t.size(), total, noise, (uint64_t)q);
}

template <typename T>
void combine_t(const std::vector<DeviceSpan>& t, int64_t total, const evograd_noise& n,
               const double* w, int64_t population) {
  for (int64_t q = 0; q < (total + 3) / 4; ++q)
    evograd_cuda::combine_quad<T>(t.data(), (int)t.size(), total, w, population, n.seed, n.sigma,
                                  n.kind, n.antithetic, n.first, (uint64_t)q);
}

// project_blocks_kernel, one block after another, its threads in turn, then
// the tree with strides kBlockThreads/2 .. 1; then project_finish_kernel.
template <typename T>
void project_t(const std::vector<DeviceSpan>& t, int64_t total, const evograd_noise& n,
               int64_t population, double* out) {
  const int64_t nblocks = (total + EVOGRAD_PROJECT_BLOCK - 1) / EVOGRAD_PROJECT_BLOCK;
  std::vector<double> block_sums(nblocks * population);
  std::vector<double> partial(kProjectChunk * kBlockThreads);
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t begin = b * EVOGRAD_PROJECT_BLOCK;
    const int64_t end = begin + EVOGRAD_PROJECT_BLOCK < total ? begin + EVOGRAD_PROJECT_BLOCK
                                                              : total;
    for (int64_t k0 = 0; k0 < population; k0 += kProjectChunk) {
      const int kn = population - k0 < kProjectChunk ? (int)(population - k0) : kProjectChunk;
      for (int th = 0; th < kBlockThreads; ++th) {
        double sums[kProjectChunk] = {0.0, 0.0, 0.0, 0.0};
        for (int64_t q = begin / 4 + th; 4 * q < end; q += kBlockThreads)
          evograd_cuda::project_quad<T>(t.data(), (int)t.size(), end, n.seed, n.sigma, n.kind,
                                        n.antithetic, n.first, k0, kn, (uint64_t)q, sums);
        for (int c = 0; c < kProjectChunk; ++c) partial[c * kBlockThreads + th] = sums[c];
      }
      for (int stride = kBlockThreads / 2; stride > 0; stride /= 2)
        for (int th = 0; th < stride; ++th)
          for (int c = 0; c < kProjectChunk; ++c)
            partial[c * kBlockThreads + th] += partial[c * kBlockThreads + th + stride];
      for (int c = 0; c < kn; ++c) block_sums[b * population + k0 + c] = partial[c * kBlockThreads];
    }
  }
  for (int64_t k = 0; k < population; ++k) {
    double sum = 0.0;
    for (int64_t b = 0; b < nblocks; ++b) sum += block_sums[b * population + k];
    out[k] = sum;
  }
}

}  // namespace

void perturb(evograd_dtype dtype, const evograd_span* spans, size_t n_spans,
             const evograd_noise& noise, int64_t k) {
  int64_t total;
  const auto t = table(spans, n_spans, &total);
  evograd_cuda::with_storage_type(
      dtype, [&](auto tag) { perturb_t<decltype(tag)>(t, total, noise, k); });
}

void combine(evograd_dtype dtype, const evograd_span* spans, size_t n_spans,
             const evograd_noise& noise, const double* weights, int64_t population) {
  int64_t total;
  const auto t = table(spans, n_spans, &total);
  evograd_cuda::with_storage_type(dtype, [&](auto tag) {
    combine_t<decltype(tag)>(t, total, noise, weights, population);
  });
}

void project(evograd_dtype dtype, const evograd_span* spans, size_t n_spans,
             const evograd_noise& noise, int64_t population, double* out) {
  int64_t total;
  const auto t = table(spans, n_spans, &total);
  evograd_cuda::with_storage_type(dtype, [&](auto tag) {
    project_t<decltype(tag)>(t, total, noise, population, out);
  });
}

int64_t vector_quads(evograd_dtype dtype, const evograd_span* spans, size_t n_spans,
                     bool writes) {
  int64_t total, count = 0;
  const auto t = table(spans, n_spans, &total);
  evograd_cuda::with_storage_type(dtype, [&](auto tag) {
    for (int64_t q = 0; q < (total + 3) / 4; ++q)
      count += evograd_cuda::place_quad<decltype(tag)>(t.data(), (int)t.size(), total, q, writes)
                   .vector;
  });
  return count;
}

}  // namespace cuda_replay
