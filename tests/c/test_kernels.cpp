// The C kernels against plain float64 references written out here, their
// independence from how the work is split, and their handling of bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

extern "C" {
#include "evograd/evograd.h"
#include "evograd/version.h"
}

namespace {

constexpr evograd_range kAll{0, -1};

template <typename T>
constexpr evograd_dtype dtype_v = std::is_same<T, float>::value ? EVOGRAD_FLOAT32 : EVOGRAD_FLOAT64;

std::vector<double> zs(const evograd_noise& n, int64_t k, int64_t count) {
  evograd_noise unit = n;
  unit.sigma = 1.0;
  std::vector<double> z(count);
  EXPECT_EQ(evograd_noise_values(&unit, k, 0, count, z.data()), EVOGRAD_OK);
  return z;
}

// eps as the contract defines it: sigma * z in double, rounded once to T.
template <typename T>
std::vector<double> eps(const evograd_noise& n, int64_t k, int64_t count) {
  auto z = zs(n, k, count);
  std::vector<double> e(count);
  for (int64_t i = 0; i < count; ++i) e[i] = double(T(n.sigma * z[i]));
  return e;
}

template <typename T>
std::vector<T> random_values(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = T(d(rng));
  return v;
}

// A list of tensors cut out of one flat buffer at the given sizes.
template <typename T>
std::vector<evograd_span> cut(std::vector<T>& src, std::vector<T>& dst,
                              const std::vector<int64_t>& sizes) {
  std::vector<evograd_span> spans;
  int64_t at = 0;
  for (int64_t s : sizes) {
    spans.push_back({src.data() + at, dst.empty() ? nullptr : dst.data() + at, s});
    at += s;
  }
  return spans;
}

const std::vector<int64_t> kSizes = {7, 0, 4096, 1, 333, 5000};  // 9437 elements

template <typename T>
void check_perturb(evograd_noise_kind kind, int antithetic) {
  const int64_t n = std::accumulate(kSizes.begin(), kSizes.end(), int64_t(0));
  evograd_noise noise{0xfeedULL, 0.03, kind, antithetic};
  auto base = random_values<T>(n, 1);
  for (int64_t k : {0, 1, 5}) {
    std::vector<T> out(n, T(-99));
    auto spans = cut(base, out, kSizes);
    ASSERT_EQ(evograd_perturb(dtype_v<T>, spans.data(), spans.size(), &noise, k, kAll),
              EVOGRAD_OK);
    auto e = eps<T>(noise, k, n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], T(base[i] + T(e[i]))) << i;
  }
}

TEST(Library, VersionComesFromTheGeneratedHeader) {
  EXPECT_STREQ(evograd_version(), EVOGRAD_VERSION_STRING);
  char expected[32];
  std::snprintf(expected, sizeof expected, "%d.%d.%d", EVOGRAD_VERSION_MAJOR,
                EVOGRAD_VERSION_MINOR, EVOGRAD_VERSION_PATCH);
  EXPECT_STREQ(evograd_version(), expected);
}

TEST(Perturb, MatchesReference) {
  check_perturb<float>(EVOGRAD_NOISE_SIGN, 0);
  check_perturb<double>(EVOGRAD_NOISE_SIGN, 0);
  check_perturb<float>(EVOGRAD_NOISE_GAUSS, 0);
  check_perturb<double>(EVOGRAD_NOISE_GAUSS, 1);
}

TEST(Perturb, InPlace) {
  const int64_t n = 1000;
  evograd_noise noise{3, 0.5, EVOGRAD_NOISE_GAUSS, 0};
  auto v = random_values<double>(n, 2), copy = v;
  evograd_span span{v.data(), v.data(), n};
  ASSERT_EQ(evograd_perturb(EVOGRAD_FLOAT64, &span, 1, &noise, 2, kAll), EVOGRAD_OK);
  auto e = eps<double>(noise, 2, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(v[i], copy[i] + e[i]);
}

TEST(Perturb, IndependentOfListSplitAndRangeSplit) {
  const int64_t n = 9437;
  evograd_noise noise{11, 0.1, EVOGRAD_NOISE_GAUSS, 0};
  auto base = random_values<float>(n, 3);
  std::vector<float> whole(n), split(n), ranged(n);
  evograd_span one{base.data(), whole.data(), n};
  ASSERT_EQ(evograd_perturb(EVOGRAD_FLOAT32, &one, 1, &noise, 1, kAll), EVOGRAD_OK);
  auto spans = cut(base, split, kSizes);
  ASSERT_EQ(evograd_perturb(EVOGRAD_FLOAT32, spans.data(), spans.size(), &noise, 1, kAll),
            EVOGRAD_OK);
  auto spans2 = cut(base, ranged, kSizes);
  const int64_t cuts[] = {0, 3, 4098, 4100, 7001, n};
  for (int c = 0; c + 1 < 6; ++c)
    ASSERT_EQ(evograd_perturb(EVOGRAD_FLOAT32, spans2.data(), spans2.size(), &noise, 1,
                              {cuts[c], cuts[c + 1]}),
              EVOGRAD_OK);
  EXPECT_EQ(std::memcmp(whole.data(), split.data(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(whole.data(), ranged.data(), n * sizeof(float)), 0);
}

template <typename T>
void check_combine(evograd_noise_kind kind, int antithetic) {
  const int64_t n = 9437, K = 4;
  evograd_noise noise{77, 0.2, kind, antithetic};
  const double w[K] = {0.1, 0.2, 0.3, 0.4};
  auto base = random_values<T>(n, 4);
  std::vector<T> out(n);
  auto spans = cut(base, out, kSizes);
  ASSERT_EQ(evograd_combine(dtype_v<T>, spans.data(), spans.size(), &noise, w, K, kAll),
            EVOGRAD_OK);
  std::vector<std::vector<double>> e;
  for (int64_t k = 0; k < K; ++k) e.push_back(eps<T>(noise, k, n));
  for (int64_t i = 0; i < n; ++i) {
    double acc = 0;
    for (int64_t k = 0; k < K; ++k) acc += w[k] * e[k][i];
    ASSERT_EQ(out[i], T(double(base[i]) + acc)) << i;
  }
}

TEST(Combine, MatchesReference) {
  check_combine<float>(EVOGRAD_NOISE_SIGN, 0);
  check_combine<double>(EVOGRAD_NOISE_GAUSS, 0);
  check_combine<double>(EVOGRAD_NOISE_SIGN, 1);
}

TEST(Combine, OneHotWeightsGiveThatCandidate) {
  const int64_t n = 500;
  evograd_noise noise{5, 0.25, EVOGRAD_NOISE_SIGN, 0};
  auto base = random_values<double>(n, 5);
  std::vector<double> comb(n), cand(n);
  const double w[3] = {0.0, 1.0, 0.0};
  evograd_span a{base.data(), comb.data(), n}, b{base.data(), cand.data(), n};
  ASSERT_EQ(evograd_combine(EVOGRAD_FLOAT64, &a, 1, &noise, w, 3, kAll), EVOGRAD_OK);
  ASSERT_EQ(evograd_perturb(EVOGRAD_FLOAT64, &b, 1, &noise, 1, kAll), EVOGRAD_OK);
  EXPECT_EQ(comb, cand);
}

template <typename T>
void check_project(evograd_noise_kind kind) {
  const int64_t n = 3 * EVOGRAD_PROJECT_BLOCK + 1234, K = 3;
  evograd_noise noise{99, 0.01, kind, 0};
  auto g = random_values<T>(n, 6);
  std::vector<T> none;
  double got[K];
  evograd_span one{g.data(), nullptr, n};
  ASSERT_EQ(evograd_project(dtype_v<T>, &one, 1, &noise, K, got), EVOGRAD_OK);
  for (int64_t k = 0; k < K; ++k) {
    auto e = eps<T>(noise, k, n);
    long double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref += (long double)g[i] * e[i];
      mag += std::abs((long double)g[i] * e[i]);
    }
    // Double accumulation: error below n * 2^-53 of the sum of magnitudes.
    EXPECT_NEAR(got[k], double(ref), double(mag) * n * 1.2e-16) << "k=" << k;
  }
}

TEST(Project, MatchesReference) {
  check_project<float>(EVOGRAD_NOISE_SIGN);
  check_project<double>(EVOGRAD_NOISE_GAUSS);
}

TEST(Project, BitIdenticalForAnySplit) {
  const int64_t B = EVOGRAD_PROJECT_BLOCK, n = 5 * B + 17, K = 70;  // K > one stack chunk
  evograd_noise noise{123, 0.5, EVOGRAD_NOISE_GAUSS, 0};
  auto g = random_values<float>(n, 7);
  std::vector<float> none;
  std::vector<double> whole(K), split(K), blocked(K);
  evograd_span one{g.data(), nullptr, n};
  ASSERT_EQ(evograd_project(EVOGRAD_FLOAT32, &one, 1, &noise, K, whole.data()), EVOGRAD_OK);
  auto spans = cut(g, none, {1, 4095, 3, 0, B + 2, n - (1 + 4095 + 3 + B + 2)});
  int64_t total = 0;
  ASSERT_EQ(evograd_total_numel(spans.data(), spans.size(), &total), EVOGRAD_OK);
  ASSERT_EQ(total, n);
  ASSERT_EQ(evograd_project(EVOGRAD_FLOAT32, spans.data(), spans.size(), &noise, K,
                            split.data()),
            EVOGRAD_OK);
  // Three "threads" over block-aligned ranges of different lengths.
  std::vector<double> sums(6 * K);
  const int64_t cuts[] = {0, B, 4 * B, n};
  for (int c = 0; c < 3; ++c)
    ASSERT_EQ(evograd_project_blocks(EVOGRAD_FLOAT32, spans.data(), spans.size(), &noise, K,
                                     {cuts[c], cuts[c + 1]}, sums.data() + (cuts[c] / B) * K),
              EVOGRAD_OK);
  ASSERT_EQ(evograd_project_finish(sums.data(), 6, K, blocked.data()), EVOGRAD_OK);
  EXPECT_EQ(std::memcmp(whole.data(), split.data(), K * sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(whole.data(), blocked.data(), K * sizeof(double)), 0);
}

TEST(Project, RejectsUnalignedRanges) {
  std::vector<double> g(10000, 1.0), sums(10);
  evograd_span s{g.data(), nullptr, 10000};
  evograd_noise noise{1, 1.0, EVOGRAD_NOISE_SIGN, 0};
  EXPECT_EQ(evograd_project_blocks(EVOGRAD_FLOAT64, &s, 1, &noise, 2, {1, 4096}, sums.data()),
            EVOGRAD_ERR_INVALID_RANGE);
  EXPECT_EQ(evograd_project_blocks(EVOGRAD_FLOAT64, &s, 1, &noise, 2, {0, 5000}, sums.data()),
            EVOGRAD_ERR_INVALID_RANGE);
  EXPECT_EQ(evograd_project_blocks(EVOGRAD_FLOAT64, &s, 1, &noise, 2, {4096, 10000},
                                   sums.data()),
            EVOGRAD_OK);
}

std::vector<double> softmax_ref(const std::vector<double>& l, double tau) {
  long double m = *std::min_element(l.begin(), l.end()), s = 0;
  std::vector<double> w(l.size());
  for (double x : l) s += std::exp(-(x - m) / (long double)tau);
  for (size_t i = 0; i < l.size(); ++i) w[i] = double(std::exp(-(l[i] - m) / (long double)tau) / s);
  return w;
}

TEST(Weights, MatchesReferenceAndExtremes) {
  std::vector<double> l = {0.3, 0.1, 0.25, 2.0}, w(4);
  ASSERT_EQ(evograd_weights(l.data(), 4, 0.05, w.data()), EVOGRAD_OK);
  auto ref = softmax_ref(l, 0.05);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(w[i], ref[i], 1e-15);
  // Losses 1e4 * tau apart: one weight is exactly 1, the rest 0, no NaN.
  std::vector<double> far = {0.0, 500.0, 1000.0};
  ASSERT_EQ(evograd_weights(far.data(), 3, 0.05, w.data()), EVOGRAD_OK);
  EXPECT_EQ(w[0], 1.0);
  EXPECT_EQ(w[1], 0.0);
  EXPECT_EQ(w[2], 0.0);
  std::vector<double> same = {7.0, 7.0, 7.0, 7.0};
  ASSERT_EQ(evograd_weights(same.data(), 4, 1e-9, w.data()), EVOGRAD_OK);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(w[i], 0.25);
  ASSERT_EQ(evograd_weights(l.data(), 4, 0.05, l.data()), EVOGRAD_OK);  // in place
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(l[i], ref[i], 1e-15);
}

TEST(LossCotangent, MatchesFormulaAndFiniteDifferences) {
  const double tau = 0.7;
  std::vector<double> l = {0.4, 0.1, 0.9}, c = {1.5, -2.0, 0.25}, out(3);
  ASSERT_EQ(evograd_loss_cotangent(l.data(), c.data(), 3, tau, out.data()), EVOGRAD_OK);
  auto w = softmax_ref(l, tau);
  const double wc = w[0] * c[0] + w[1] * c[1] + w[2] * c[2];
  // f(l) = sum_k w_k(l) c_k is what the cotangent differentiates.
  auto f = [&](std::vector<double> x) {
    auto wx = softmax_ref(x, tau);
    return wx[0] * c[0] + wx[1] * c[1] + wx[2] * c[2];
  };
  for (int j = 0; j < 3; ++j) {
    EXPECT_NEAR(out[j], -(w[j] / tau) * (c[j] - wc), 1e-15);
    auto up = l, down = l;
    up[j] += 1e-6;
    down[j] -= 1e-6;
    EXPECT_NEAR(out[j], (f(up) - f(down)) / 2e-6, 1e-8);
  }
}

// ---- bad input: a status, and nothing written ------------------------------

struct BadInput : ::testing::Test {
  std::vector<double> src = std::vector<double>(64, 1.0);
  std::vector<double> dst = std::vector<double>(64, -7.0);
  evograd_span span{src.data(), dst.data(), 64};
  evograd_noise noise{1, 0.1, EVOGRAD_NOISE_SIGN, 0};
  double w[4] = {0.25, 0.25, 0.25, 0.25};
  void expect_untouched() {
    for (double v : dst) ASSERT_EQ(v, -7.0);
  }
  evograd_status perturb(const evograd_span* s, size_t n, const evograd_noise* nz, int64_t k = 0,
                         evograd_range r = kAll, evograd_dtype d = EVOGRAD_FLOAT64) {
    return evograd_perturb(d, s, n, nz, k, r);
  }
  evograd_status combine(const evograd_span* s, size_t n, const evograd_noise* nz,
                         const double* ww, int64_t K) {
    return evograd_combine(EVOGRAD_FLOAT64, s, n, nz, ww, K, kAll);
  }
};

TEST_F(BadInput, NullPointers) {
  EXPECT_EQ(perturb(nullptr, 1, &noise), EVOGRAD_ERR_NULL_POINTER);
  EXPECT_EQ(perturb(&span, 1, nullptr), EVOGRAD_ERR_NULL_POINTER);
  evograd_span no_dst{src.data(), nullptr, 64}, no_src{nullptr, dst.data(), 64};
  EXPECT_EQ(perturb(&no_dst, 1, &noise), EVOGRAD_ERR_NULL_POINTER);
  EXPECT_EQ(perturb(&no_src, 1, &noise), EVOGRAD_ERR_NULL_POINTER);
  EXPECT_EQ(combine(&span, 1, &noise, nullptr, 4), EVOGRAD_ERR_NULL_POINTER);
  double out[2];
  EXPECT_EQ(evograd_project(EVOGRAD_FLOAT64, &span, 1, &noise, 2, nullptr),
            EVOGRAD_ERR_NULL_POINTER);
  EXPECT_EQ(evograd_weights(nullptr, 2, 1.0, out), EVOGRAD_ERR_NULL_POINTER);
  EXPECT_EQ(evograd_loss_cotangent(w, nullptr, 2, 1.0, out), EVOGRAD_ERR_NULL_POINTER);
  expect_untouched();
}

TEST_F(BadInput, Counts) {
  EXPECT_EQ(perturb(&span, 0, &noise), EVOGRAD_ERR_INVALID_COUNT);
  evograd_span neg{src.data(), dst.data(), -1};
  EXPECT_EQ(perturb(&neg, 1, &noise), EVOGRAD_ERR_INVALID_COUNT);
  EXPECT_EQ(combine(&span, 1, &noise, w, 0), EVOGRAD_ERR_INVALID_POPULATION);
  EXPECT_EQ(combine(&span, 1, &noise, w, -3), EVOGRAD_ERR_INVALID_POPULATION);
  EXPECT_EQ(perturb(&span, 1, &noise, -1), EVOGRAD_ERR_INVALID_CANDIDATE);
  expect_untouched();
}

TEST_F(BadInput, SizeOverflow) {
  evograd_span huge[2] = {{src.data(), dst.data(), INT64_MAX / 4},
                          {src.data(), dst.data(), INT64_MAX / 8}};
  EXPECT_EQ(perturb(huge, 1, &noise), EVOGRAD_ERR_SIZE_OVERFLOW);  // bytes overflow
  evograd_span big[2] = {{src.data(), dst.data(), INT64_MAX / 2},
                         {src.data() + 1, dst.data() + 1, INT64_MAX / 2 + 10}};
  int64_t total;
  EXPECT_EQ(evograd_total_numel(big, 2, &total), EVOGRAD_ERR_SIZE_OVERFLOW);
  expect_untouched();
}

TEST_F(BadInput, SigmaTemperatureNoise) {
  for (double s : {0.0, -1.0, double(NAN), double(INFINITY)}) {
    evograd_noise bad = noise;
    bad.sigma = s;
    EXPECT_EQ(perturb(&span, 1, &bad), EVOGRAD_ERR_INVALID_SIGMA) << s;
  }
  evograd_noise bad = noise;
  bad.kind = static_cast<evograd_noise_kind>(2);
  EXPECT_EQ(perturb(&span, 1, &bad), EVOGRAD_ERR_INVALID_NOISE);
  double out[4], l[4] = {1, 2, 3, 4};
  for (double t : {0.0, -0.5, double(NAN), double(INFINITY)}) {
    EXPECT_EQ(evograd_weights(l, 4, t, out), EVOGRAD_ERR_INVALID_TEMPERATURE);
    EXPECT_EQ(evograd_loss_cotangent(l, l, 4, t, out), EVOGRAD_ERR_INVALID_TEMPERATURE);
  }
  EXPECT_EQ(perturb(&span, 1, &noise, 0, kAll, static_cast<evograd_dtype>(5)),
            EVOGRAD_ERR_INVALID_DTYPE);
  expect_untouched();
}

TEST_F(BadInput, OddPopulationWithAntithetic) {
  evograd_noise anti = noise;
  anti.antithetic = 1;
  EXPECT_EQ(combine(&span, 1, &anti, w, 3), EVOGRAD_ERR_ODD_ANTITHETIC);
  double out[3];
  EXPECT_EQ(evograd_project(EVOGRAD_FLOAT64, &span, 1, &anti, 3, out), EVOGRAD_ERR_ODD_ANTITHETIC);
  expect_untouched();
}

TEST_F(BadInput, NonFiniteLossesAndWeights) {
  double out[3];
  for (double bad : {double(NAN), double(INFINITY), -double(INFINITY)}) {
    double l[3] = {0.1, bad, 0.3};
    EXPECT_EQ(evograd_weights(l, 3, 1.0, out), EVOGRAD_ERR_NONFINITE_LOSS);
    EXPECT_EQ(evograd_loss_cotangent(l, w, 3, 1.0, out), EVOGRAD_ERR_NONFINITE_LOSS);
    double ww[3] = {0.5, bad, 0.5};
    EXPECT_EQ(combine(&span, 1, &noise, ww, 3), EVOGRAD_ERR_NONFINITE_VALUE);
  }
  expect_untouched();
}

TEST_F(BadInput, Ranges) {
  EXPECT_EQ(perturb(&span, 1, &noise, 0, {-1, 4}), EVOGRAD_ERR_INVALID_RANGE);
  EXPECT_EQ(perturb(&span, 1, &noise, 0, {5, 4}), EVOGRAD_ERR_INVALID_RANGE);
  EXPECT_EQ(perturb(&span, 1, &noise, 0, {0, 65}), EVOGRAD_ERR_INVALID_RANGE);
  expect_untouched();
}

TEST_F(BadInput, OverlappingOutputs) {
  // Output shifted by one element over its own input, and two outputs sharing memory.
  evograd_span shifted{src.data(), src.data() + 1, 32};
  EXPECT_EQ(perturb(&shifted, 1, &noise), EVOGRAD_ERR_OVERLAP);
  evograd_span twice[2] = {{src.data(), dst.data(), 32}, {src.data() + 32, dst.data() + 16, 32}};
  EXPECT_EQ(perturb(twice, 2, &noise), EVOGRAD_ERR_OVERLAP);
  evograd_span into_other[2] = {{src.data(), src.data() + 32, 32}, {src.data() + 32, dst.data(), 32}};
  EXPECT_EQ(perturb(into_other, 2, &noise), EVOGRAD_ERR_OVERLAP);
  for (double v : src) ASSERT_EQ(v, 1.0);
  double c[4] = {1, 2, 3, 4};
  EXPECT_EQ(evograd_loss_cotangent(w, c, 4, 1.0, c), EVOGRAD_ERR_OVERLAP);
  expect_untouched();
}

TEST(Status, EveryCodeHasItsOwnString) {
  std::vector<std::string> seen;
  for (int s = 0; s <= EVOGRAD_ERR_OVERLAP; ++s) {
    const char* text = evograd_status_string(static_cast<evograd_status>(s));
    ASSERT_NE(text, nullptr);
    for (const auto& t : seen) EXPECT_NE(t, text);
    seen.push_back(text);
  }
  EXPECT_STREQ(evograd_status_string(static_cast<evograd_status>(999)), "unknown status code");
}

TEST(ZeroSize, EmptySpansAreFine) {
  std::vector<double> a(3, 2.0), b(3);
  evograd_span spans[3] = {{nullptr, nullptr, 0}, {a.data(), b.data(), 3}, {nullptr, nullptr, 0}};
  evograd_noise noise{1, 1.0, EVOGRAD_NOISE_SIGN, 0};
  ASSERT_EQ(evograd_perturb(EVOGRAD_FLOAT64, spans, 3, &noise, 0, kAll), EVOGRAD_OK);
  auto z = zs(noise, 0, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b[i], 2.0 + z[i]);
  double c[2];
  evograd_span empty{nullptr, nullptr, 0};
  ASSERT_EQ(evograd_project(EVOGRAD_FLOAT64, &empty, 1, &noise, 2, c), EVOGRAD_OK);
  EXPECT_EQ(c[0], 0.0);
  EXPECT_EQ(c[1], 0.0);
}

}  // namespace

namespace {

// Global indices past 2^31 (and 2^32): the first span is never touched by the
// range, so it can stand at an address that is never dereferenced.
TEST(LargeIndices, NoiseAndBlocksUse64BitGlobalIndices) {
  for (int64_t big : {(int64_t(1) << 31) + 4096, (int64_t(1) << 33) + 8192}) {
    std::vector<double> a(10), out(10);
    for (int i = 0; i < 10; ++i) a[i] = i;
    void* far = reinterpret_cast<void*>(uintptr_t(1) << 40);
    evograd_span spans[2] = {{far, far, big}, {a.data(), out.data(), 10}};
    evograd_noise noise{77, 0.5, EVOGRAD_NOISE_SIGN, 0};
    ASSERT_EQ(evograd_perturb(EVOGRAD_FLOAT64, spans, 2, &noise, 3, {big, big + 10}), EVOGRAD_OK);
    evograd_noise unit = noise;
    unit.sigma = 1.0;
    std::vector<double> z(10);
    ASSERT_EQ(evograd_noise_values(&unit, 3, big, 10, z.data()), EVOGRAD_OK);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(out[i], a[i] + 0.5 * z[i]);
    double sums[2] = {-1, -1};
    evograd_span readers[2] = {{far, nullptr, big}, {a.data(), nullptr, 10}};
    ASSERT_EQ(evograd_project_blocks(EVOGRAD_FLOAT64, readers, 2, &noise, 1, {big, big + 10}, sums),
              EVOGRAD_OK);
    std::vector<double> z0(10);  // project with one candidate uses k = 0
    ASSERT_EQ(evograd_noise_values(&unit, 0, big, 10, z0.data()), EVOGRAD_OK);
    double ref = 0;
    for (int i = 0; i < 10; ++i) ref += a[i] * 0.5 * z0[i];
    EXPECT_EQ(sums[0], ref);
    EXPECT_EQ(sums[1], -1);  // one block, one candidate: nothing written past it
  }
}

}  // namespace
