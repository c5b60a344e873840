// Philox known-answer vectors and the statistics of z(seed, k, i).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

extern "C" {
#include "evograd/evograd.h"
#include "common/gauss_math.h"
#include "common/philox.h"
}

namespace {

evograd_u32x4 philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                     uint32_t k1) {
  evograd_u32x4 c{{c0, c1, c2, c3}};
  return evograd_philox4x32_10(c, k0, k1);
}

void expect_words(evograd_u32x4 got, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  EXPECT_EQ(got.v[0], a);
  EXPECT_EQ(got.v[1], b);
  EXPECT_EQ(got.v[2], c);
  EXPECT_EQ(got.v[3], d);
}

TEST(Philox, Random123KnownAnswers) {
  expect_words(philox(0, 0, 0, 0, 0, 0), 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u);
  const uint32_t f = 0xffffffffu;
  expect_words(philox(f, f, f, f, f, f), 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu);
  expect_words(philox(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u,
                      0x299f31d0u),
               0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u);
}

std::vector<double> z(uint64_t seed, int64_t k, int64_t first, int64_t n,
                      evograd_noise_kind kind, int antithetic = 0) {
  evograd_noise noise{seed, 1.0, kind, antithetic};
  std::vector<double> out(n);
  EXPECT_EQ(evograd_noise_values(&noise, k, first, n, out.data()), EVOGRAD_OK);
  return out;
}

// The documented layout: counter c = i >> 7, (c lo, c hi, k, 0), key = seed;
// index i is bit i & 31 of word (i >> 5) & 3, a set bit meaning -1.
TEST(Noise, SignFollowsTheDocumentedCounterLayout) {
  const uint64_t seed = 0x0123456789abcdefULL;
  const int64_t first = (int64_t(1) << 40) + 75;  // exercises the high counter word
  auto got = z(seed, 7, first, 300, EVOGRAD_NOISE_SIGN);
  for (int64_t j = 0; j < 300; ++j) {
    const uint64_t i = first + j, c = i >> 7;
    auto w = philox(uint32_t(c), uint32_t(c >> 32), 7, 0, uint32_t(seed), uint32_t(seed >> 32));
    EXPECT_EQ(got[j], ((w.v[(i >> 5) & 3] >> (i & 31)) & 1u) ? -1.0 : 1.0) << "index " << i;
  }
}

// Box-Muller on each quad's word pairs, against the formula evaluated in
// long double. The bound follows from the parts' accuracy (gauss_math.h):
// -2 log u within 2 units of 2^-53 relative, so r = sqrt(.) within 1.5;
// cos and sin within 2 * 2^-53 absolute; one rounding of r * c (half a unit
// of r): |z - z_exact| <= (1.5 + 2 + 0.5) * 2^-53 * max(r, 1).
TEST(Noise, GaussIsBoxMullerOnWordPairs) {
  const long double two_pi = 6.283185307179586476925286766559005768L;
  const int64_t n = 1 << 16;
  for (uint64_t seed : {42ull, 0ull, 0xFFFFFFFFFFFFFFFFull}) {
    auto got = z(seed, 3, 0, n, EVOGRAD_NOISE_GAUSS);
    for (int64_t q = 0; q < n / 4; ++q) {
      auto w = philox(uint32_t(q), 0, 3, 0, uint32_t(seed), uint32_t(seed >> 32));
      for (int pair = 0; pair < 2; ++pair) {
        const long double u1 = ((long double)w.v[2 * pair] + 0.5L) / 4294967296.0L;
        const long double u2 = ((long double)w.v[2 * pair + 1] + 0.5L) / 4294967296.0L;
        const long double r = std::sqrt(-2.0L * std::log(u1));
        const double bound = 4 * std::ldexp(1.0, -53) * std::max(1.0, (double)r);
        ASSERT_NEAR(got[4 * q + 2 * pair], (double)(r * std::cos(two_pi * u2)), bound) << q;
        ASSERT_NEAR(got[4 * q + 2 * pair + 1], (double)(r * std::sin(two_pi * u2)), bound) << q;
      }
    }
  }
}

// The extreme words: u = 2^-33 (the largest |z|, about 6.66) and u next to
// 1 (r about 2^-16), and the quarter turns where cos or sin is exactly 0.
TEST(Noise, GaussMathAtTheEnds) {
  const long double two_pi = 6.283185307179586476925286766559005768L;
  for (uint32_t w : {0u, 1u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFEu, 0xFFFFFFFFu}) {
    const double u = evograd_unit_open(w);
    const long double lu = ((long double)w + 0.5L) / 4294967296.0L;
    const long double m2l = -2.0L * std::log(lu);
    EXPECT_NEAR(evograd_minus_two_log(u), (double)m2l, 2 * std::ldexp((double)m2l, -53)) << w;
    double c, s;
    evograd_cos_sin_turns(u, &c, &s);
    EXPECT_NEAR(c, (double)std::cos(two_pi * lu), 2 * std::ldexp(1.0, -53)) << w;
    EXPECT_NEAR(s, (double)std::sin(two_pi * lu), 2 * std::ldexp(1.0, -53)) << w;
  }
  for (double u : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    double c, s;
    evograd_cos_sin_turns(u, &c, &s);
    EXPECT_EQ(c, std::round(std::cos(2 * M_PI * u))) << u;
    EXPECT_EQ(s, std::round(std::sin(2 * M_PI * u))) << u;
  }
}

// Tolerances: five standard errors of each statistic for n samples.
TEST(Noise, SignIsBalanced) {
  const int64_t n = 1 << 20;
  for (int64_t k = 0; k < 3; ++k) {
    auto v = z(2021, k, 0, n, EVOGRAD_NOISE_SIGN);
    double mean = 0;
    for (double x : v) {
      ASSERT_TRUE(x == 1.0 || x == -1.0);
      mean += x;
    }
    mean /= n;
    EXPECT_LT(std::abs(mean), 5.0 / std::sqrt(double(n))) << "candidate " << k;
  }
}

// Neighbouring bits of one word, and the same bit of neighbouring words,
// must be uncorrelated: for independent signs each lag's mean product has
// standard deviation 1/sqrt(n), so 5 of them bound it.
TEST(Noise, SignHasNoCorrelationAtWordLags) {
  const int64_t n = 1 << 20;
  auto v = z(99, 2, 0, n + 128, EVOGRAD_NOISE_SIGN);
  for (int lag : {1, 2, 31, 32, 64, 96, 127, 128}) {
    double c = 0;
    for (int64_t i = 0; i < n; ++i) c += v[i] * v[i + lag];
    EXPECT_LT(std::abs(c / n), 5.0 / std::sqrt(double(n))) << "lag " << lag;
  }
}

TEST(Noise, GaussMomentsAndShape) {
  const int64_t n = 1 << 20;
  auto v = z(7, 1, 0, n, EVOGRAD_NOISE_GAUSS);
  double m1 = 0, m2 = 0, m4 = 0;
  for (double x : v) {
    m1 += x;
    m2 += x * x;
    m4 += x * x * x * x;
  }
  m1 /= n;
  m2 /= n;
  m4 /= n;
  const double se = 1.0 / std::sqrt(double(n));
  EXPECT_LT(std::abs(m1), 5 * se);                      // Var z = 1
  EXPECT_LT(std::abs(m2 - 1.0), 5 * std::sqrt(2.0) * se);   // Var z^2 = 2
  EXPECT_LT(std::abs(m4 - 3.0), 5 * std::sqrt(96.0) * se);  // Var z^4 = 105 - 9
  // Kolmogorov-Smirnov against the normal CDF; 1.95/sqrt(n) is the 0.1% point.
  std::sort(v.begin(), v.end());
  double d = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double cdf = 0.5 * std::erfc(-v[i] / std::sqrt(2.0));
    d = std::max({d, std::abs(cdf - double(i) / n), std::abs(cdf - double(i + 1) / n)});
  }
  EXPECT_LT(d, 1.95 * se);
}

TEST(Noise, CandidatesAndSeedsAreDistinctStreams) {
  auto a = z(1, 0, 0, 4096, EVOGRAD_NOISE_SIGN), b = z(1, 1, 0, 4096, EVOGRAD_NOISE_SIGN),
       c = z(2, 0, 0, 4096, EVOGRAD_NOISE_SIGN);
  double ab = 0, ac = 0;
  for (int i = 0; i < 4096; ++i) {
    ab += a[i] * b[i];
    ac += a[i] * c[i];
  }
  // Independent +-1 streams: correlation ~ N(0, 1/n); 5 sigma = 5/64.
  EXPECT_LT(std::abs(ab / 4096), 5.0 / 64);
  EXPECT_LT(std::abs(ac / 4096), 5.0 / 64);
}

TEST(Noise, AntitheticPairsAreExactlyOpposite) {
  for (auto kind : {EVOGRAD_NOISE_SIGN, EVOGRAD_NOISE_GAUSS}) {
    for (int64_t j = 0; j < 3; ++j) {
      auto even = z(9, 2 * j, 3, 1001, kind, 1), odd = z(9, 2 * j + 1, 3, 1001, kind, 1);
      auto plain = z(9, j, 3, 1001, kind, 0);
      for (int i = 0; i < 1001; ++i) {
        EXPECT_EQ(odd[i], -even[i]);
        EXPECT_EQ(even[i], plain[i]);  // pair j uses stream j
      }
    }
  }
}

TEST(Noise, ValuesDoNotDependOnWhereAReadStarts) {
  auto whole = z(5, 2, 0, 1000, EVOGRAD_NOISE_GAUSS);
  for (int64_t start : {1, 2, 3, 17, 998}) {
    auto part = z(5, 2, start, 1000 - start, EVOGRAD_NOISE_GAUSS);
    for (int64_t i = start; i < 1000; ++i) ASSERT_EQ(part[i - start], whole[i]);
  }
}

TEST(Noise, RejectsBadArguments) {
  double out[4];
  evograd_noise ok{1, 1.0, EVOGRAD_NOISE_SIGN, 0};
  EXPECT_EQ(evograd_noise_values(nullptr, 0, 0, 4, out), EVOGRAD_ERR_NULL_POINTER);
  EXPECT_EQ(evograd_noise_values(&ok, 0, 0, 4, nullptr), EVOGRAD_ERR_NULL_POINTER);
  EXPECT_EQ(evograd_noise_values(&ok, -1, 0, 4, out), EVOGRAD_ERR_INVALID_CANDIDATE);
  EXPECT_EQ(evograd_noise_values(&ok, 0, -1, 4, out), EVOGRAD_ERR_INVALID_RANGE);
  evograd_noise bad = ok;
  bad.kind = static_cast<evograd_noise_kind>(7);
  EXPECT_EQ(evograd_noise_values(&bad, 0, 0, 4, out), EVOGRAD_ERR_INVALID_NOISE);
  bad = ok;
  bad.sigma = NAN;
  EXPECT_EQ(evograd_noise_values(&bad, 0, 0, 4, out), EVOGRAD_ERR_INVALID_SIGMA);
}

}  // namespace
