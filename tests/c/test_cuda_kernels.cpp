// The CUDA C library links and behaves everywhere nvcc is: without a device
// every entry point validates its arguments, then reports NO_DEVICE; with one
// it must equal the host replay of its launches (cuda_replay.h), which
// test_cuda_replay holds equal to the CPU kernels: sign noise bit for bit.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda_replay.h"
#include "storage_formats.h"

extern "C" {
#include "evograd/evograd.h"
}

namespace {

int devices() {
  int n = 0;
  EXPECT_EQ(evograd_cuda_device_count(&n), EVOGRAD_OK);
  return n;
}

TEST(CudaKernels, ArgumentErrorsComeBeforeDeviceErrors) {
  evograd_noise bad{1, -1.0, EVOGRAD_NOISE_SIGN, 0};
  float x = 0;
  evograd_span span{&x, &x, 1};
  char ws[512];
  EXPECT_EQ(evograd_cuda_perturb(EVOGRAD_FLOAT32, &span, 1, &bad, 0, ws, sizeof ws, nullptr),
            EVOGRAD_ERR_INVALID_SIGMA);
  evograd_noise ok{1, 1.0, EVOGRAD_NOISE_SIGN, 1};
  double w[3] = {0.3, 0.3, 0.4};
  EXPECT_EQ(evograd_cuda_combine(EVOGRAD_FLOAT32, &span, 1, &ok, w, 3, ws, sizeof ws, nullptr),
            EVOGRAD_ERR_ODD_ANTITHETIC);
  EXPECT_EQ(evograd_cuda_project(EVOGRAD_FLOAT32, &span, 1, &ok, 2, nullptr, ws, sizeof ws,
                                 nullptr),
            EVOGRAD_ERR_NULL_POINTER);
  EXPECT_EQ(evograd_cuda_device_count(nullptr), EVOGRAD_ERR_NULL_POINTER);
  EXPECT_GT(evograd_cuda_workspace_bytes(3, 10000, 4), 3 * 4 * sizeof(double));
}

TEST(CudaKernels, NoDeviceIsACleanStatus) {
  if (devices() > 0) GTEST_SKIP() << "a CUDA device is present; covered by DeviceEqualsHostReplay";
  float x[4] = {0, 0, 0, 0};
  evograd_span span{x, x, 4};
  evograd_noise ok{1, 1.0, EVOGRAD_NOISE_SIGN, 0};
  char ws[512];
  EXPECT_EQ(evograd_cuda_perturb(EVOGRAD_FLOAT32, &span, 1, &ok, 0, ws, sizeof ws, nullptr),
            EVOGRAD_ERR_NO_DEVICE);
  for (float v : x) EXPECT_EQ(v, 0.0f);
}

// A list laid out back to back in device memory (odd starts: element and
// vector paths both run), the same list on the host for the replay.
template <typename F>
struct DeviceList {
  using T = typename F::S;
  std::vector<int64_t> sizes;
  int64_t n = 0;
  std::vector<T> host_src, host_dst;
  T *d_src = nullptr, *d_dst = nullptr;
  std::vector<evograd_span> dspans, hspans;

  explicit DeviceList(std::vector<int64_t> sizes_) : sizes(std::move(sizes_)) {
    for (auto s : sizes) n += s;
    host_src.resize(n);
    host_dst.assign(n, F::enc(0.0));
    for (int64_t i = 0; i < n; ++i) host_src[i] = F::enc(std::sin(0.01 * i));
    EXPECT_EQ(cudaMalloc(&d_src, n * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&d_dst, n * sizeof(T)), cudaSuccess);
    cudaMemcpy(d_src, host_src.data(), n * sizeof(T), cudaMemcpyHostToDevice);
    int64_t at = 0;
    for (auto s : sizes) {
      dspans.push_back({d_src + at, d_dst + at, s});
      hspans.push_back({host_src.data() + at, host_dst.data() + at, s});
      at += s;
    }
  }
  ~DeviceList() {
    cudaFree(d_src);
    cudaFree(d_dst);
  }
  std::vector<T> result() const {
    std::vector<T> out(n);
    cudaMemcpy(out.data(), d_dst, n * sizeof(T), cudaMemcpyDeviceToHost);
    return out;
  }
};

// Sign noise: bit for bit. Gaussian noise: the device's log/sin/cos may
// differ from the host's by a few ulps of double, which can move the noise's
// rounding to float32 by one ulp: values agree to a few ulps of the storage.
template <typename F>
void expect_same(const std::vector<typename F::S>& got, const std::vector<typename F::S>& want,
                 bool exact) {
  ASSERT_EQ(got.size(), want.size());
  if (exact) {
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(got[0])));
    return;
  }
  const double ulp = F::dtype == EVOGRAD_FLOAT64 ? 2.3e-16
                     : F::dtype == EVOGRAD_FLOAT32 ? 1.2e-7
                     : F::dtype == EVOGRAD_FLOAT16 ? 9.8e-4 : 7.9e-3;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(F::dec(got[i]), F::dec(want[i]), 8 * ulp * (1.0 + std::fabs(F::dec(want[i])))) << i;
}

const std::vector<int64_t> kFewTensors = {5, 0, 70000, 3, 4099, 1, 262147};

// Up to 96 tensors and 64 candidates travel in the kernel's parameters; more
// go through the workspace. K = 6: project has one chunk of four and a part.
template <typename F>
void expect_device_equals_replay(evograd_noise noise, const std::vector<int64_t>& sizes = kFewTensors,
                                 int64_t K = 6) {
  const evograd_dtype dtype = F::dtype;
  DeviceList<F> list(sizes);
  std::vector<double> w(K);
  for (int64_t k = 0; k < K; ++k) w[k] = (k % 5 + 1.0) / (3.0 * K);
  const bool exact = noise.kind == EVOGRAD_NOISE_SIGN;
  const size_t bytes = evograd_cuda_workspace_bytes(list.dspans.size(), list.n, K);
  void* ws;
  double* d_out;
  ASSERT_EQ(cudaMalloc(&ws, bytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_out, K * sizeof(double)), cudaSuccess);
  const auto* ds = list.dspans.data();
  const size_t ns = list.dspans.size();

  ASSERT_EQ(evograd_cuda_perturb(dtype, ds, ns, &noise, 3, ws, bytes, nullptr), EVOGRAD_OK);
  cuda_replay::perturb(dtype, list.hspans.data(), ns, noise, 3);
  expect_same<F>(list.result(), list.host_dst, exact);

  ASSERT_EQ(evograd_cuda_combine(dtype, ds, ns, &noise, w.data(), K, ws, bytes, nullptr),
            EVOGRAD_OK);
  cuda_replay::combine(dtype, list.hspans.data(), ns, noise, w.data(), K);
  expect_same<F>(list.result(), list.host_dst, exact);

  std::vector<double> dev(K), again(K), replay(K);
  ASSERT_EQ(evograd_cuda_project(dtype, ds, ns, &noise, K, d_out, ws, bytes, nullptr), EVOGRAD_OK);
  cudaMemcpy(dev.data(), d_out, K * sizeof(double), cudaMemcpyDeviceToHost);
  ASSERT_EQ(evograd_cuda_project(dtype, ds, ns, &noise, K, d_out, ws, bytes, nullptr), EVOGRAD_OK);
  cudaMemcpy(again.data(), d_out, K * sizeof(double), cudaMemcpyDeviceToHost);
  cuda_replay::project(dtype, list.hspans.data(), ns, noise, K, replay.data());
  for (int k = 0; k < K; ++k) {
    EXPECT_EQ(dev[k], again[k]);  // run to run: the same bits
    if (exact) EXPECT_EQ(dev[k], replay[k]);  // same products, same order
    else EXPECT_NEAR(dev[k], replay[k], 1e-9 * list.n * noise.sigma);
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(d_out);
  cudaFree(ws);
}

TEST(CudaKernels, DeviceEqualsHostReplay) {
  if (devices() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  for_each_noise_and_format(2024, 0.01, [](const evograd_noise& noise, auto format) {
    expect_device_equals_replay<decltype(format)>(noise);
  });
}

TEST(CudaKernels, LongListsAndPopulationsGoThroughTheWorkspace) {
  if (devices() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  std::vector<int64_t> sizes;
  for (int i = 0; i < 230; ++i) sizes.push_back(i % 9 == 0 ? 0 : 37 * (i % 13) + i % 4);
  const evograd_noise noise{31, 0.05, EVOGRAD_NOISE_SIGN, 0};
  expect_device_equals_replay<F32>(noise, sizes, 70);
  expect_device_equals_replay<F16>(noise, sizes, 3);
}

}  // namespace
