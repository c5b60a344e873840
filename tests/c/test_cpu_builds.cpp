// Every build of the CPU kernels' inner loops this machine can run
// (portable, AVX2, AVX-512) against one reference written out here from the
// contract, bit for bit: the noise from evograd_noise_values, storage
// through float_codec.h, sums in the documented order (combine in k order;
// project in 32 lanes per block, each in index order, then a pairwise tree).
// The sanitized suite runs this file too, so every build also runs under
// ASan and UBSan.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "storage_formats.h"

extern "C" {
#include "cpu/isa.h"
}

namespace {

// The builds this CPU runs; selecting one that it cannot must fail cleanly.
std::vector<std::string> runnable_builds() {
  std::vector<std::string> names;
  for (const char* n : {"portable", "avx2", "avx512"}) {
    if (eg_cpu_kernels_use(n) == EVOGRAD_OK) names.push_back(n);
  }
  EXPECT_EQ(eg_cpu_kernels_use("sse9"), EVOGRAD_ERR_NO_DEVICE);
  EXPECT_EQ(eg_cpu_kernels_use(nullptr), EVOGRAD_OK);
  return names;
}

std::vector<double> noise_of(const evograd_noise& noise, int64_t k, int64_t n) {
  evograd_noise unit = noise;
  unit.sigma = 1.0;
  std::vector<double> z(n);
  EXPECT_EQ(evograd_noise_values(&unit, k, 0, n, z.data()), EVOGRAD_OK);
  for (auto& v : z) v = noise.sigma * v;
  return z;
}

template <typename F>
std::vector<typename F::S> values(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, 2.0);
  std::vector<typename F::S> v(n);
  for (auto& x : v) x = F::enc(d(rng));
  return v;
}

// Tensors of awkward sizes: empty, shorter than a lane row, across tile
// (2048) and block (4096) boundaries.
const std::vector<int64_t> kSizes = {5, 0, 1, 127, 2049, 31, 4096, 3, 9000, 64};

template <typename F>
std::vector<evograd_span> spans_of(std::vector<typename F::S>& src, std::vector<typename F::S>* dst) {
  std::vector<evograd_span> spans;
  int64_t at = 0;
  for (int64_t s : kSizes) {
    spans.push_back({src.data() + at, dst ? dst->data() + at : nullptr, s});
    at += s;
  }
  return spans;
}

template <typename F>
void check_build(const evograd_noise& noise, F) {
  using S = typename F::S;
  int64_t n = 0;
  for (int64_t s : kSizes) n += s;
  const auto src = values<F>(n, 11);
  for (int64_t K : {1, 3, 17, 70}) {  // 17: past one sign chunk; 70: past one project pass
    if (noise.antithetic && K % 2) continue;
    SCOPED_TRACE("K=" + std::to_string(K));
    std::vector<std::vector<double>> eps(K);
    std::vector<double> w(K);
    for (int64_t k = 0; k < K; ++k) {
      eps[k] = noise_of(noise, k, n);
      for (auto& e : eps[k]) e = F::noise(e);
      w[k] = 1.0 / double(k + 3) - (k % 3 == 1 ? 0.2 : 0.0);
    }
    std::vector<S> want_perturb(n), want_combine(n);
    for (int64_t i = 0; i < n; ++i) {
      want_perturb[i] = F::enc(F::dec(src[i]) + eps[K - 1][i]);
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k) acc += w[k] * eps[k][i];
      want_combine[i] = F::enc(F::dec(src[i]) + acc);
    }
    std::vector<double> want_project(K, 0.0);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t b = 0; b < n; b += EVOGRAD_PROJECT_BLOCK) {
        double lane[EVOGRAD_PROJECT_LANES] = {};
        for (int64_t i = b; i < std::min(n, b + EVOGRAD_PROJECT_BLOCK); ++i)
          lane[i % EVOGRAD_PROJECT_LANES] += F::dec(src[i]) * eps[k][i];
        for (int width = EVOGRAD_PROJECT_LANES / 2; width >= 1; width /= 2)
          for (int j = 0; j < width; ++j) lane[j] += lane[j + width];
        want_project[k] += lane[0];
      }

    for (const auto& build : runnable_builds()) {
      SCOPED_TRACE("build " + build);
      ASSERT_EQ(eg_cpu_kernels_use(build.c_str()), EVOGRAD_OK);
      auto in = src;
      std::vector<S> out(n);
      auto spans = spans_of<F>(in, &out);
      // perturb and combine over three ranges, as threads would split them
      const int64_t cuts[] = {0, 1000, 7001, n};
      for (int c = 0; c < 3; ++c)
        ASSERT_EQ(evograd_perturb(F::dtype, spans.data(), spans.size(), &noise, K - 1,
                                  {cuts[c], cuts[c + 1]}),
                  EVOGRAD_OK);
      EXPECT_EQ(std::memcmp(out.data(), want_perturb.data(), n * sizeof(S)), 0) << "perturb";
      for (int c = 0; c < 3; ++c)
        ASSERT_EQ(evograd_combine(F::dtype, spans.data(), spans.size(), &noise, w.data(), K,
                                  {cuts[c], cuts[c + 1]}),
                  EVOGRAD_OK);
      EXPECT_EQ(std::memcmp(out.data(), want_combine.data(), n * sizeof(S)), 0) << "combine";
      std::vector<double> got(K);
      ASSERT_EQ(evograd_project(F::dtype, spans.data(), spans.size(), &noise, K, got.data()),
                EVOGRAD_OK);
      EXPECT_EQ(std::memcmp(got.data(), want_project.data(), K * sizeof(double)), 0) << "project";
    }
  }
  ASSERT_EQ(eg_cpu_kernels_use(nullptr), EVOGRAD_OK);
}

TEST(CpuBuilds, TheAutomaticChoiceIsTheWidestRunnable) {
  const auto builds = runnable_builds();
  ASSERT_FALSE(builds.empty());
  EXPECT_EQ(builds.front(), "portable");
  const char* forced = std::getenv("EVOGRAD_CPU_KERNELS");
  EXPECT_EQ(std::string(evograd_cpu_kernels_name()), forced ? std::string(forced) : builds.back());
}

TEST(CpuBuilds, EveryBuildMatchesTheReferenceBitForBit) {
  for_each_noise_and_format(2024, 0.3, [](const evograd_noise& noise, auto format) {
    check_build(noise, format);
  });
}

// A list cut into shards held by different processes, each passing where
// its shard starts (noise.first): every shard's candidates are the whole
// list's, bit for bit, on every build, and the shards' projections add up to
// the whole list's (to float64 rounding: the sums are grouped differently).
TEST(CpuBuilds, ShardsGetTheWholeListsNoise) {
  for_each_noise_and_format(99, 0.2, [](const evograd_noise& noise, auto format) {
    using F = decltype(format);
    using S = typename F::S;
    int64_t n = 0;
    for (int64_t s : kSizes) n += s;
    auto src = values<F>(n, 5);
    const int64_t K = 4;
    std::vector<S> whole(n);
    auto spans = spans_of<F>(src, &whole);
    ASSERT_EQ(evograd_perturb(F::dtype, spans.data(), spans.size(), &noise, 3, {0, -1}), EVOGRAD_OK);
    std::vector<double> c_whole(K);
    ASSERT_EQ(evograd_project(F::dtype, spans.data(), spans.size(), &noise, K, c_whole.data()),
              EVOGRAD_OK);
    for (const auto& build : runnable_builds()) {
      SCOPED_TRACE("build " + build);
      ASSERT_EQ(eg_cpu_kernels_use(build.c_str()), EVOGRAD_OK);
      const int64_t cuts[] = {0, 3, 4100, 9001, n};  // uneven, off every tile and lane row
      std::vector<S> out(n);
      std::vector<double> c_sum(K, 0.0), scale(K, 0.0);
      for (int r = 0; r < 4; ++r) {
        evograd_noise shard = noise;
        shard.first = cuts[r];
        evograd_span span{src.data() + cuts[r], out.data() + cuts[r], cuts[r + 1] - cuts[r]};
        ASSERT_EQ(evograd_perturb(F::dtype, &span, 1, &shard, 3, {0, -1}), EVOGRAD_OK);
        std::vector<double> c(K);
        ASSERT_EQ(evograd_project(F::dtype, &span, 1, &shard, K, c.data()), EVOGRAD_OK);
        for (int64_t k = 0; k < K; ++k) c_sum[k] += c[k];
      }
      EXPECT_EQ(std::memcmp(out.data(), whole.data(), n * sizeof(S)), 0);
      for (int64_t k = 0; k < K; ++k) {
        double mag = 0.0;  // sum |g eps| bounds the rounding of either grouping
        for (int64_t i = 0; i < n; ++i) mag += std::fabs(F::dec(src[i])) * noise.sigma * 7;  // |z| < 7
        EXPECT_NEAR(c_sum[k], c_whole[k], 2.0 * n * 1.2e-16 * mag) << "k=" << k;
      }
    }
    ASSERT_EQ(eg_cpu_kernels_use(nullptr), EVOGRAD_OK);
  });
}

TEST(CpuBuilds, ShardPlacementIsChecked) {
  float x[4] = {1, 2, 3, 4};
  evograd_span span{x, x, 4};
  evograd_noise noise{1, 0.1, EVOGRAD_NOISE_SIGN, 0, -1};
  double c[1], z[1];
  EXPECT_EQ(evograd_perturb(EVOGRAD_FLOAT32, &span, 1, &noise, 0, {0, -1}), EVOGRAD_ERR_INVALID_RANGE);
  EXPECT_EQ(evograd_project(EVOGRAD_FLOAT32, &span, 1, &noise, 1, c), EVOGRAD_ERR_INVALID_RANGE);
  EXPECT_EQ(evograd_noise_values(&noise, 0, 0, 1, z), EVOGRAD_ERR_INVALID_RANGE);
  noise.first = INT64_MAX - 2;  // the list's last index would overflow
  EXPECT_EQ(evograd_perturb(EVOGRAD_FLOAT32, &span, 1, &noise, 0, {0, -1}), EVOGRAD_ERR_SIZE_OVERFLOW);
  const double w[1] = {1.0};
  EXPECT_EQ(evograd_combine(EVOGRAD_FLOAT32, &span, 1, &noise, w, 1, {0, -1}), EVOGRAD_ERR_SIZE_OVERFLOW);
  EXPECT_EQ(x[0], 1.0f);  // nothing written
}

}  // namespace
