// The CUDA C library links and behaves everywhere nvcc is: without a device
// every entry point validates its arguments, then reports NO_DEVICE; with one
// it must agree with the CPU kernels (sign noise bit for bit).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

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
  if (devices() > 0) GTEST_SKIP() << "a CUDA device is present; covered by DeviceMatchesCpu";
  float x[4] = {0, 0, 0, 0};
  evograd_span span{x, x, 4};
  evograd_noise ok{1, 1.0, EVOGRAD_NOISE_SIGN, 0};
  char ws[512];
  EXPECT_EQ(evograd_cuda_perturb(EVOGRAD_FLOAT32, &span, 1, &ok, 0, ws, sizeof ws, nullptr),
            EVOGRAD_ERR_NO_DEVICE);
  for (float v : x) EXPECT_EQ(v, 0.0f);
}

TEST(CudaKernels, DeviceMatchesCpu) {
  if (devices() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  const std::vector<int64_t> sizes = {5, 0, 70000, 3, 4099};
  int64_t n = 0;
  for (auto s : sizes) n += s;
  const int64_t K = 3;
  std::vector<float> host(n);
  for (int64_t i = 0; i < n; ++i) host[i] = std::sin(0.01 * i);
  float *d_src, *d_dst;
  double* d_out;
  ASSERT_EQ(cudaMalloc(&d_src, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_dst, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_out, K * sizeof(double)), cudaSuccess);
  cudaMemcpy(d_src, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  std::vector<evograd_span> dspans, hspans;
  std::vector<float> cpu(n), gpu(n);
  int64_t at = 0;
  for (auto s : sizes) {
    dspans.push_back({d_src + at, d_dst + at, s});
    hspans.push_back({host.data() + at, cpu.data() + at, s});
    at += s;
  }
  const size_t bytes = evograd_cuda_workspace_bytes(dspans.size(), n, K);
  void* ws;
  ASSERT_EQ(cudaMalloc(&ws, bytes), cudaSuccess);
  evograd_noise noise{2024, 0.01, EVOGRAD_NOISE_SIGN, 0};
  const double w[K] = {0.2, 0.5, 0.3};

  ASSERT_EQ(evograd_cuda_perturb(EVOGRAD_FLOAT32, dspans.data(), dspans.size(), &noise, 1, ws,
                                 bytes, nullptr), EVOGRAD_OK);
  cudaMemcpy(gpu.data(), d_dst, n * sizeof(float), cudaMemcpyDeviceToHost);
  ASSERT_EQ(evograd_perturb(EVOGRAD_FLOAT32, hspans.data(), hspans.size(), &noise, 1, {0, -1}),
            EVOGRAD_OK);
  EXPECT_EQ(gpu, cpu);  // sign noise: bit-identical

  ASSERT_EQ(evograd_cuda_combine(EVOGRAD_FLOAT32, dspans.data(), dspans.size(), &noise, w, K, ws,
                                 bytes, nullptr), EVOGRAD_OK);
  cudaMemcpy(gpu.data(), d_dst, n * sizeof(float), cudaMemcpyDeviceToHost);
  ASSERT_EQ(evograd_combine(EVOGRAD_FLOAT32, hspans.data(), hspans.size(), &noise, w, K, {0, -1}),
            EVOGRAD_OK);
  EXPECT_EQ(gpu, cpu);  // same double sums in the same candidate order

  double c_gpu[K], c_gpu2[K], c_cpu[K];
  ASSERT_EQ(evograd_cuda_project(EVOGRAD_FLOAT32, dspans.data(), dspans.size(), &noise, K, d_out,
                                 ws, bytes, nullptr), EVOGRAD_OK);
  cudaMemcpy(c_gpu, d_out, sizeof c_gpu, cudaMemcpyDeviceToHost);
  ASSERT_EQ(evograd_cuda_project(EVOGRAD_FLOAT32, dspans.data(), dspans.size(), &noise, K, d_out,
                                 ws, bytes, nullptr), EVOGRAD_OK);
  cudaMemcpy(c_gpu2, d_out, sizeof c_gpu2, cudaMemcpyDeviceToHost);
  ASSERT_EQ(evograd_project(EVOGRAD_FLOAT32, hspans.data(), hspans.size(), &noise, K, c_cpu),
            EVOGRAD_OK);
  for (int k = 0; k < K; ++k) {
    EXPECT_EQ(c_gpu[k], c_gpu2[k]);  // run to run: bit-identical
    EXPECT_NEAR(c_gpu[k], c_cpu[k], 1e-12 * n);
  }
  cudaFree(ws);
  cudaFree(d_out);
  cudaFree(d_dst);
  cudaFree(d_src);
}

}  // namespace
