// float16 / bfloat16 storage: the encoder against every bit pattern and every
// rounding midpoint, and the kernels on half-precision lists.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <vector>

extern "C" {
#include "cpu/half_bits.h"
#include "common/float_codec.h"
#include "evograd/evograd.h"
}

namespace {

struct Format {
  int mbits, ebits;
  const char* name;
};
const Format kFormats[] = {{10, 5, "float16"}, {7, 8, "bfloat16"}};

TEST(HalfStorage, KnownValues) {
  EXPECT_EQ(evograd_encode_float(1.0, 10, 5), 0x3C00u);
  EXPECT_EQ(evograd_encode_float(-2.0, 10, 5), 0xC000u);
  EXPECT_EQ(evograd_encode_float(65504.0, 10, 5), 0x7BFFu);   // largest finite
  EXPECT_EQ(evograd_encode_float(65519.99, 10, 5), 0x7BFFu);
  EXPECT_EQ(evograd_encode_float(65520.0, 10, 5), 0x7C00u);   // ties to even: overflow
  EXPECT_EQ(evograd_encode_float(std::ldexp(1.0, -24), 10, 5), 0x0001u);  // smallest subnormal
  EXPECT_EQ(evograd_encode_float(std::ldexp(1.0, -25), 10, 5), 0x0000u);  // tie to even zero
  EXPECT_EQ(evograd_encode_float(std::ldexp(3.0, -26), 10, 5), 0x0001u);
  EXPECT_EQ(evograd_encode_float(-0.0, 10, 5), 0x8000u);
  EXPECT_EQ(evograd_encode_float(INFINITY, 10, 5), 0x7C00u);
  EXPECT_EQ(evograd_encode_float(1.0, 7, 8), 0x3F80u);
  EXPECT_EQ(evograd_encode_float(3.0e38, 7, 8), 0x7F62u);
  EXPECT_EQ(evograd_encode_float(1e39, 7, 8), 0x7F80u);
  EXPECT_TRUE(std::isnan(evograd_decode_float(evograd_encode_float(NAN, 10, 5), 10, 5)));
  EXPECT_TRUE(std::isnan(evograd_decode_float(evograd_encode_float(NAN, 7, 8), 7, 8)));
}

// Every finite pattern survives decode -> encode, and the exact midpoint of
// two neighbours rounds to the one with an even last bit.
TEST(HalfStorage, EveryPatternAndMidpoint) {
  for (const auto& f : kFormats) {
    const uint32_t inf = ((1u << f.ebits) - 1) << f.mbits;
    for (uint32_t sign : {0u, 1u << (f.mbits + f.ebits)}) {
      for (uint32_t b = 0; b < inf; ++b) {
        const uint32_t bits = sign | b;
        const double v = evograd_decode_float(bits, f.mbits, f.ebits);
        ASSERT_EQ(evograd_encode_float(v, f.mbits, f.ebits), bits) << f.name << " " << bits;
        const double next = evograd_decode_float(bits + 1, f.mbits, f.ebits);  // may be inf
        if (std::isinf(next)) continue;
        const uint32_t even = (b & 1u) ? bits + 1 : bits;
        ASSERT_EQ(evograd_encode_float(0.5 * (v + next), f.mbits, f.ebits), even) << f.name << " " << bits;
      }
    }
  }
}

// The kernels' branch-free codec (cpu/half_bits.h) is the shared one
// (common/float_codec.h) bit for bit: decoding every pattern, NaNs included;
// encoding every value, every midpoint and its two double neighbours, values
// beyond the range and below the smallest subnormal, and random doubles.
TEST(HalfStorage, BranchFreeCodecIsTheSharedOne) {
  std::mt19937_64 rng(5);
  for (const auto& f : kFormats) {
    auto same = [&](double x) {
      ASSERT_EQ(evograd_encode_bits(x, f.mbits, f.ebits), evograd_encode_float(x, f.mbits, f.ebits))
          << f.name << " " << std::hexfloat << x;
    };
    for (uint32_t bits = 0; bits < (1u << (1 + f.mbits + f.ebits)); ++bits) {
      const double a = evograd_decode_bits(bits, f.mbits, f.ebits);
      const double b = evograd_decode_float(bits, f.mbits, f.ebits);
      ASSERT_EQ(std::memcmp(&a, &b, sizeof a), 0) << f.name << " " << bits;
      const double next = evograd_decode_float(bits + 1, f.mbits, f.ebits);
      same(a);
      if (std::isfinite(a) && std::isfinite(next) && ((bits + 1) & ((1u << (f.mbits + f.ebits)) - 1))) {
        const double mid = 0.5 * (a + next);
        same(mid);
        same(std::nextafter(mid, 0.0));
        same(std::nextafter(mid, INFINITY));
        same(-mid);
      }
    }
    for (double x : std::initializer_list<double>{0.0, -0.0, INFINITY, -INFINITY, NAN, -NAN, 1e300, -1e300, 1e-300,
                     std::numeric_limits<double>::denorm_min(), DBL_MAX, 65520.0, 65519.999,
                     std::ldexp(1.0, 128), std::ldexp(1.0, -134), std::ldexp(1.0, -133)})
      same(x);
    for (int i = 0; i < 200000; ++i) {
      const uint64_t r = rng();
      double x;
      std::memcpy(&x, &r, sizeof x);  // every exponent, NaNs and infinities included
      same(x);
      same(std::ldexp(double(r >> 11) * 0x1p-53, int(r % 80) - 60));  // the formats' range
    }
  }
}

std::vector<uint16_t> encode(const std::vector<double>& v, int mbits, int ebits) {
  std::vector<uint16_t> out;
  for (double x : v) out.push_back(uint16_t(evograd_encode_float(x, mbits, ebits)));
  return out;
}

TEST(HalfKernels, PerturbCombineProjectMatchFloat64WithinStoragePrecision) {
  const int64_t n = 5000, K = 3;
  std::vector<double> base(n), grad(n);
  for (int64_t i = 0; i < n; ++i) {
    base[i] = std::sin(0.37 * i);
    grad[i] = std::cos(0.11 * i);
  }
  evograd_noise noise{42, 0.01, EVOGRAD_NOISE_GAUSS, 0};
  std::vector<std::vector<double>> z(K, std::vector<double>(n));
  for (int64_t k = 0; k < K; ++k) {
    evograd_noise unit = noise;
    unit.sigma = 1.0;
    ASSERT_EQ(evograd_noise_values(&unit, k, 0, n, z[k].data()), EVOGRAD_OK);
  }
  const double w[K] = {0.5, 0.3, 0.2};
  for (const auto& f : kFormats) {
    const evograd_dtype dt = f.mbits == 10 ? EVOGRAD_FLOAT16 : EVOGRAD_BFLOAT16;
    const double half_ulp = std::ldexp(1.0, -f.mbits - 1);  // relative rounding bound
    auto src = encode(base, f.mbits, f.ebits);
    auto g = encode(grad, f.mbits, f.ebits);
    std::vector<uint16_t> out(n);
    evograd_span span{src.data(), out.data(), n};
    ASSERT_EQ(evograd_perturb(dt, &span, 1, &noise, 1, {0, -1}), EVOGRAD_OK);
    for (int64_t i = 0; i < n; ++i) {
      const double ref = evograd_decode_float(src[i], f.mbits, f.ebits) + 0.01 * z[1][i];
      const double got = evograd_decode_float(out[i], f.mbits, f.ebits);
      // One rounding to storage, plus float32 noise (2^-24 relative of 0.01).
      ASSERT_LE(std::abs(got - ref), half_ulp * std::abs(ref) + 1e-9 + std::ldexp(1.0, -25)) << f.name << i;
    }
    ASSERT_EQ(evograd_combine(dt, &span, 1, &noise, w, K, {0, -1}), EVOGRAD_OK);
    for (int64_t i = 0; i < n; ++i) {
      double ref = evograd_decode_float(src[i], f.mbits, f.ebits);
      for (int k = 0; k < K; ++k) ref += w[k] * 0.01 * z[k][i];
      const double got = evograd_decode_float(out[i], f.mbits, f.ebits);
      ASSERT_LE(std::abs(got - ref), half_ulp * std::abs(ref) + 1e-9 + std::ldexp(1.0, -25)) << f.name << i;
    }
    double c[K];
    evograd_span gs{g.data(), nullptr, n};
    ASSERT_EQ(evograd_project(dt, &gs, 1, &noise, K, c), EVOGRAD_OK);
    for (int k = 0; k < K; ++k) {
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double gi = evograd_decode_float(g[i], f.mbits, f.ebits);
        ref += gi * 0.01 * z[k][i];
        mag += std::abs(gi * 0.01 * z[k][i]);
      }
      // Products of exact storage values with float32 noise, summed in double.
      EXPECT_NEAR(c[k], ref, mag * 1e-7) << f.name;
    }
  }
}

}  // namespace
