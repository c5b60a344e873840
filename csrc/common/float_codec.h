/*
 * float16 and bfloat16 as bit patterns, to and from double, with exact
 * operations only (frexp, ldexp, nearbyint): the same code and bits on the
 * CPU and in CUDA device code.
 */
#ifndef EVOGRAD_FLOAT_CODEC_H
#define EVOGRAD_FLOAT_CODEC_H

#include <math.h>
#include <stdint.h>

#include "portable.h"

/* Round-to-nearest-even of a double into a binary format with `mbits`
 * explicit mantissa bits and `ebits` exponent bits (bias 2^(ebits-1) - 1;
 * the all-ones exponent is inf/NaN), returned as the format's bit pattern
 * (sign in the top bit of a 1 + ebits + mbits word): float16 is (10, 5),
 * bfloat16 (7, 8). Exact operations only: frexp, ldexp, nearbyint. */
EVOGRAD_HD uint32_t evograd_encode_float(double x, int mbits, int ebits) {
  const int bias = (1 << (ebits - 1)) - 1;
  const uint32_t sign = signbit(x) ? (uint32_t)1 << (mbits + ebits) : 0u;
  const uint32_t inf = (((uint32_t)1 << ebits) - 1) << mbits;
  double a = fabs(x), q;
  int e;
  if (isnan(x)) return sign | inf | ((uint32_t)1 << (mbits - 1));
  if (isinf(x)) return sign | inf;
  if (a == 0.0) return sign;
  (void)frexp(a, &e); /* a = f * 2^e, f in [0.5, 1) */
  e -= 1;             /* a = m * 2^e, m in [1, 2) */
  if (e < 1 - bias) { /* subnormal: units of 2^(1 - bias - mbits) */
    q = nearbyint(ldexp(a, bias - 1 + mbits));
    return sign | (uint32_t)q; /* q == 2^mbits lands on the smallest normal */
  }
  q = nearbyint(ldexp(a, mbits - e)); /* in [2^mbits, 2^(mbits+1)] */
  if (q >= ldexp(1.0, mbits + 1)) {
    q = ldexp(1.0, mbits);
    ++e;
  }
  if (e > bias) return sign | inf;
  return sign | ((uint32_t)(e + bias) << mbits) | ((uint32_t)q - ((uint32_t)1 << mbits));
}

EVOGRAD_HD double evograd_decode_float(uint32_t bits, int mbits, int ebits) {
  const int bias = (1 << (ebits - 1)) - 1;
  const uint32_t emask = ((uint32_t)1 << ebits) - 1;
  const uint32_t exp = (bits >> mbits) & emask;
  const uint32_t man = bits & (((uint32_t)1 << mbits) - 1);
  const double s = (bits >> (mbits + ebits)) & 1u ? -1.0 : 1.0;
  if (exp == emask) return man ? NAN : s * INFINITY;
  if (exp == 0) return s * ldexp((double)man, 1 - bias - mbits);
  return s * ldexp((double)(man | ((uint32_t)1 << mbits)), (int)exp - bias - mbits);
}

#endif /* EVOGRAD_FLOAT_CODEC_H */
