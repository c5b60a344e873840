/*
 * Eight doubles (or 64-bit words) as one value, GNU C's vector extension
 * (GCC and clang): the kernels' running sums live in these so that the
 * compiler keeps them in registers across a loop, which it does not do for
 * an array it has vectorised. Operations are element-wise IEEE, so every
 * build (SSE2 pairs, AVX2 quads, AVX-512) gives the same bits; where a
 * bit pattern becomes a lane mask, the AVX-512 build says so with an
 * intrinsic, which the compiler would not find by itself.
 */
#ifndef EVOGRAD_CPU_LANE_VECTORS_H
#define EVOGRAD_CPU_LANE_VECTORS_H

#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef double evograd_f64x8 __attribute__((vector_size(64)));
typedef uint64_t evograd_u64x8 __attribute__((vector_size(64)));

static inline evograd_f64x8 evograd_load8(const double *p) {
  evograd_f64x8 v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline void evograd_store8(double *p, evograd_f64x8 v) { memcpy(p, &v, sizeof v); }

/* v with the sign of lane j flipped where bit 8q + j of `word` is set. */
static inline evograd_f64x8 evograd_flip8(evograd_f64x8 v, uint32_t word, int q) {
#if defined(__AVX512F__)
  /* the eight bits are a lane mask as they stand */
  const __m512i sign = _mm512_set1_epi64((long long)0x8000000000000000ull);
  return (evograd_f64x8)_mm512_mask_xor_epi64((__m512i)v, (__mmask8)(word >> (8 * q)), (__m512i)v, sign);
#else
  const evograd_u64x8 shift = {0, 1, 2, 3, 4, 5, 6, 7};
  const evograd_u64x8 w = (evograd_u64x8){0, 0, 0, 0, 0, 0, 0, 0} + (uint64_t)(word >> (8 * q));
  evograd_u64x8 u;
  memcpy(&u, &v, sizeof u);
  u ^= ((w >> shift) & 1u) << 63;
  memcpy(&v, &u, sizeof v);
  return v;
#endif
}

#endif
