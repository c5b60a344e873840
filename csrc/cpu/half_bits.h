/*
 * float16 and bfloat16 to and from double with integer and exact double
 * operations only, no calls and no branches, so that loops over them
 * vectorise. They give the same bits as common/float_codec.h (which stays
 * the shared CPU/CUDA definition; tests/c/test_half.cpp compares the two on
 * every 16-bit pattern and on rounding boundaries).
 */
#ifndef EVOGRAD_CPU_HALF_BITS_H
#define EVOGRAD_CPU_HALF_BITS_H

#include <stdint.h>

#include "common/gauss_math.h" /* evograd_bits_of, evograd_double_of */

/* `bits` of a format with `mbits` mantissa and `ebits` exponent bits as a
 * double; a NaN becomes the default quiet NaN, as float_codec.h's decoder. */
static inline double evograd_decode_bits(uint32_t bits, int mbits, int ebits) {
  const int bias = (1 << (ebits - 1)) - 1;
  const uint32_t emask = (1u << ebits) - 1;
  const uint32_t e = (bits >> mbits) & emask;
  const uint32_t m = bits & ((1u << mbits) - 1);
  const uint64_t sign = (uint64_t)((bits >> (mbits + ebits)) & 1u) << 63;
  const uint64_t normal = ((uint64_t)(e + 1023 - bias) << 52) | ((uint64_t)m << (52 - mbits));
  const uint64_t inf = (uint64_t)0x7FF << 52;
  /* subnormal: m units of 2^(1 - bias - mbits), exactly */
  const double tiny = (double)(int32_t)m * evograd_double_of((uint64_t)(1023 + 1 - bias - mbits) << 52);
  const uint64_t special = m ? 0x7FF8000000000000ull : inf | sign; /* NaN, inf */
  const uint64_t finite = (e == 0 ? evograd_bits_of(tiny) : normal) | sign;
  return evograd_double_of(e == emask ? special : finite);
}

/* x rounded to nearest even into the format, as its bit pattern: adding
 * and subtracting c = 2^(q + 52), where 2^q is the format's spacing at |x|,
 * rounds |x| to a multiple of 2^q in one IEEE addition. */
static inline uint32_t evograd_encode_bits(double x, int mbits, int ebits) {
  const int bias = (1 << (ebits - 1)) - 1;
  const uint64_t b = evograd_bits_of(x);
  const uint32_t sign = (uint32_t)(b >> 63) << (mbits + ebits);
  const uint32_t inf = ((1u << ebits) - 1) << mbits;
  const uint64_t abits = b & 0x7FFFFFFFFFFFFFFFull;
  const double a = evograd_double_of(abits);
  int32_t e = (int32_t)(abits >> 52) - 1023;
  int32_t q;
  double y;
  uint64_t yb;
  uint32_t field;
  e = e > bias + 1 ? bias + 1 : e; /* beyond the format's range: overflows below */
  q = e - mbits;
  q = q < 1 - bias - mbits ? 1 - bias - mbits : q; /* subnormal spacing */
  {
    const double c = evograd_double_of((uint64_t)(q + 52 + 1023) << 52);
    y = (a + c) - c;
  }
  yb = evograd_bits_of(y);
  /* below the smallest normal: y / 2^(1 - bias - mbits) units (a carry
   * into 2^mbits is the smallest normal's pattern); otherwise the fields */
  field = y < evograd_double_of((uint64_t)(1023 + 1 - bias) << 52)
              ? (uint32_t)(int32_t)(y * evograd_double_of((uint64_t)(1023 + bias - 1 + mbits) << 52))
              : ((uint32_t)((int32_t)(yb >> 52) - 1023 + bias) << mbits) |
                    (uint32_t)((yb >> (52 - mbits)) & ((1u << mbits) - 1));
  field = y >= evograd_double_of((uint64_t)(1023 + bias + 1) << 52) ? inf : field;
  field = a != a ? inf | (1u << (mbits - 1)) : field; /* NaN: quiet, sign kept */
  return sign | field;
}

#endif
