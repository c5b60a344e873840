/* Reading and writing the supported storage types as double, and rounding
 * noise to the precision the contract gives it: float32 and float64 lists use
 * noise rounded to their own type; float16 and bfloat16 lists use float32
 * noise and float32-or-better arithmetic, rounded once when stored. */
#ifndef EVOGRAD_CPU_STORAGE_H
#define EVOGRAD_CPU_STORAGE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Round-to-nearest-even of a double into a binary format with `mbits`
 * explicit mantissa bits and exponent bias `bias` (all-ones exponent is
 * inf/NaN), returned as the format's bit pattern (sign in the top bit of a
 * 1 + ebits + mbits word). Exact operations only: frexp, ldexp, nearbyint. */
static inline uint32_t evograd_encode_float(double x, int mbits, int ebits) {
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

static inline double evograd_decode_float(uint32_t bits, int mbits, int ebits) {
  const int bias = (1 << (ebits - 1)) - 1;
  const uint32_t emask = ((uint32_t)1 << ebits) - 1;
  const uint32_t exp = (bits >> mbits) & emask;
  const uint32_t man = bits & (((uint32_t)1 << mbits) - 1);
  const double s = (bits >> (mbits + ebits)) & 1u ? -1.0 : 1.0;
  if (exp == emask) return man ? NAN : s * INFINITY;
  if (exp == 0) return s * ldexp((double)man, 1 - bias - mbits);
  return s * ldexp((double)(man | ((uint32_t)1 << mbits)), (int)exp - bias - mbits);
}

static inline double evograd_load_f16(const void *p, int64_t i) {
  return evograd_decode_float(((const uint16_t *)p)[i], 10, 5);
}
static inline void evograd_store_f16(void *p, int64_t i, double v) {
  ((uint16_t *)p)[i] = (uint16_t)evograd_encode_float(v, 10, 5);
}
static inline double evograd_load_bf16(const void *p, int64_t i) {
  return evograd_decode_float(((const uint16_t *)p)[i], 7, 8);
}
static inline void evograd_store_bf16(void *p, int64_t i, double v) {
  ((uint16_t *)p)[i] = (uint16_t)evograd_encode_float(v, 7, 8);
}
static inline double evograd_load_f32(const void *p, int64_t i) {
  return (double)((const float *)p)[i];
}
static inline void evograd_store_f32(void *p, int64_t i, double v) {
  ((float *)p)[i] = (float)v;
}
static inline double evograd_load_f64(const void *p, int64_t i) {
  return ((const double *)p)[i];
}
static inline void evograd_store_f64(void *p, int64_t i, double v) {
  ((double *)p)[i] = v;
}
/* The noise value a list of each type uses: sigma * z rounded to float32 for
 * float32, float16 and bfloat16 storage, kept in float64 for float64. */
static inline double evograd_noise_f32(double v) { return (double)(float)v; }
static inline double evograd_noise_f64(double v) { return v; }
static inline double evograd_noise_f16(double v) { return (double)(float)v; }
static inline double evograd_noise_bf16(double v) { return (double)(float)v; }

/* Calls CALL(suffix) for the storage type's helper suffix. */
#define EVOGRAD_DTYPE_SWITCH(dtype, CALL)                                     \
  switch (dtype) {                                                           \
    case EVOGRAD_FLOAT32: CALL(f32); break;                                  \
    case EVOGRAD_FLOAT64: CALL(f64); break;                                  \
    case EVOGRAD_FLOAT16: CALL(f16); break;                                  \
    case EVOGRAD_BFLOAT16: CALL(bf16); break;                                \
  }

#endif
