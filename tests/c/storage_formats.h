// The four storage formats as test parameters: element type, dtype,
// rounding from double, and the noise precision the contract gives each
// (float32, or float64 for float64 lists).
#ifndef EVOGRAD_TESTS_STORAGE_FORMATS_H
#define EVOGRAD_TESTS_STORAGE_FORMATS_H

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

extern "C" {
#include "evograd/evograd.h"
}
#include "common/float_codec.h"

struct F32 {
  using S = float;
  static constexpr evograd_dtype dtype = EVOGRAD_FLOAT32;
  static S enc(double x) { return (float)x; }
  static double dec(S v) { return v; }
  static double noise(double v) { return (float)v; }
};
struct F64 {
  using S = double;
  static constexpr evograd_dtype dtype = EVOGRAD_FLOAT64;
  static S enc(double x) { return x; }
  static double dec(S v) { return v; }
  static double noise(double v) { return v; }
};
template <int MBITS, int EBITS, evograd_dtype D>
struct Bits16 {
  using S = uint16_t;
  static constexpr evograd_dtype dtype = D;
  static S enc(double x) { return (S)evograd_encode_float(x, MBITS, EBITS); }
  static double dec(S v) { return evograd_decode_float(v, MBITS, EBITS); }
  static double noise(double v) { return (float)v; }
};
using F16 = Bits16<10, 5, EVOGRAD_FLOAT16>;
using BF16 = Bits16<7, 8, EVOGRAD_BFLOAT16>;

// Calls f(noise, Format{}) for sign and Gaussian noise, plain and antithetic,
// and each of the four formats.
template <typename Fn>
void for_each_noise_and_format(uint64_t seed, double sigma, Fn&& f) {
  for (int kind : {EVOGRAD_NOISE_SIGN, EVOGRAD_NOISE_GAUSS})
    for (int anti : {0, 1}) {
      SCOPED_TRACE("noise kind " + std::to_string(kind) + ", antithetic " + std::to_string(anti));
      const evograd_noise noise{seed, sigma, (evograd_noise_kind)kind, anti};
      f(noise, F32{});
      f(noise, F64{});
      f(noise, F16{});
      f(noise, BF16{});
    }
}

#endif
