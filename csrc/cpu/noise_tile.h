/*
 * The CPU kernels' unit of noise: a tile of EVOGRAD_TILE consecutive global
 * indices (tile t covers t * EVOGRAD_TILE ...). Its Philox calls run
 * EVOGRAD_PHILOX_LANES at a time in lockstep over arrays, a loop the
 * compiler turns into SIMD multiplies (sixteen sign batches, or sixteen
 * Gaussian quads, per pass). Values are those of common/noise.h's
 * evograd_noise_quad, bit for bit: the same counters, words and Box-Muller,
 * only evaluated many at a time.
 *
 * The fill functions write sigma * z rounded as the list's storage type
 * wants its noise (float32 for float32, float16 and bfloat16 lists; double
 * for float64 ones), for the batches [b0, b1) of the tile.
 */
#ifndef EVOGRAD_CPU_NOISE_TILE_H
#define EVOGRAD_CPU_NOISE_TILE_H

#include <string.h>
#if defined(__AVX2__) && !defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "common/noise.h"

#define EVOGRAD_BATCH 128 /* indices per sign Philox call */
#define EVOGRAD_PHILOX_LANES 16
#define EVOGRAD_TILE (EVOGRAD_BATCH * EVOGRAD_PHILOX_LANES)

/* Philox4x32-10 on counters (first + l, stream, 0), l < 16: word w of
 * counter l lands in out[w][l]. */
static inline void evograd_philox_lanes(const evograd_noise_stream *s, uint64_t first,
                                        uint32_t out[4][EVOGRAD_PHILOX_LANES]) {
  /* 32-bit words held in 64-bit lanes: the products are then the SIMD
   * 32 x 32 -> 64 multiply, with no widening or packing between rounds */
  const uint64_t m32 = 0xFFFFFFFFu;
  uint64_t c0[EVOGRAD_PHILOX_LANES], c1[EVOGRAD_PHILOX_LANES];
  uint64_t c2[EVOGRAD_PHILOX_LANES], c3[EVOGRAD_PHILOX_LANES];
  uint32_t k0 = s->key0, k1 = s->key1;
  int l, r;
  for (l = 0; l < EVOGRAD_PHILOX_LANES; ++l) {
    const uint64_t q = first + (uint64_t)l;
    c0[l] = q & m32;
    c1[l] = q >> 32;
    c2[l] = s->stream;
    c3[l] = 0u;
  }
#if defined(__AVX2__) && !defined(__AVX512F__)
  /* Without AVX-512's 64-bit multiply GCC emulates the whole 64 x 64 product
   * (three multiplies and shifts, or a shift-and-add chain for a constant);
   * _mm256_mul_epu32 is the 32 x 32 -> 64 product itself. Only each lane's
   * low 32 bits are read (by the multiply, the xors' low halves, and the
   * final truncation), so the high halves need no masking. */
  {
    __m256i v0[EVOGRAD_PHILOX_LANES / 4], v1[EVOGRAD_PHILOX_LANES / 4];
    __m256i v2[EVOGRAD_PHILOX_LANES / 4], v3[EVOGRAD_PHILOX_LANES / 4];
    const __m256i m0 = _mm256_set1_epi64x(0xD2511F53), m1 = _mm256_set1_epi64x(0xCD9E8D57);
    int g;
    for (g = 0; g < EVOGRAD_PHILOX_LANES / 4; ++g) {
      v0[g] = _mm256_loadu_si256((const __m256i *)(c0 + 4 * g));
      v1[g] = _mm256_loadu_si256((const __m256i *)(c1 + 4 * g));
      v2[g] = _mm256_loadu_si256((const __m256i *)(c2 + 4 * g));
      v3[g] = _mm256_setzero_si256();
    }
    for (r = 0; r < 10; ++r) {
      const __m256i key0 = _mm256_set1_epi64x(k0), key1 = _mm256_set1_epi64x(k1);
      for (g = 0; g < EVOGRAD_PHILOX_LANES / 4; ++g) {
        const __m256i p0 = _mm256_mul_epu32(v0[g], m0);
        const __m256i p1 = _mm256_mul_epu32(v2[g], m1);
        v0[g] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), v1[g]), key0);
        v1[g] = p1;
        v2[g] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), v3[g]), key1);
        v3[g] = p0;
      }
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    for (g = 0; g < EVOGRAD_PHILOX_LANES / 4; ++g) {
      _mm256_storeu_si256((__m256i *)(c0 + 4 * g), v0[g]);
      _mm256_storeu_si256((__m256i *)(c1 + 4 * g), v1[g]);
      _mm256_storeu_si256((__m256i *)(c2 + 4 * g), v2[g]);
      _mm256_storeu_si256((__m256i *)(c3 + 4 * g), v3[g]);
    }
  }
#else
  for (r = 0; r < 10; ++r) {
    /* kept a loop (not unrolled into sixteen copies) so that it vectorises */
#pragma GCC unroll 1
    for (l = 0; l < EVOGRAD_PHILOX_LANES; ++l) {
      const uint64_t p0 = (c0[l] & m32) * 0xD2511F53u;
      const uint64_t p1 = (c2[l] & m32) * 0xCD9E8D57u;
      c0[l] = (p1 >> 32) ^ c1[l] ^ k0;
      c1[l] = p1 & m32;
      c2[l] = (p0 >> 32) ^ c3[l] ^ k1;
      c3[l] = p0 & m32;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
#endif
  for (l = 0; l < EVOGRAD_PHILOX_LANES; ++l) {
    out[0][l] = (uint32_t)c0[l];
    out[1][l] = (uint32_t)c1[l];
    out[2][l] = (uint32_t)c2[l];
    out[3][l] = (uint32_t)c3[l];
  }
}

/* Sign noise is +-sigma rounded once, so every element is one of two
 * values: the bit picks the sign of the rounded sigma (negation is exact). */
static inline void evograd_sign_tile_f(const evograd_noise_stream *s, uint64_t tile, int b0,
                                       int b1, float *eps) {
  uint32_t w[4][EVOGRAD_PHILOX_LANES];
  float base = (float)s->scale;
  uint32_t base_bits;
  int b, i, j;
  memcpy(&base_bits, &base, sizeof base_bits);
  evograd_philox_lanes(s, tile * EVOGRAD_PHILOX_LANES, w);
  for (b = b0; b < b1; ++b)
    for (i = 0; i < 4; ++i) {
      const uint32_t word = w[i][b];
      uint32_t out[32];
      for (j = 0; j < 32; ++j) out[j] = base_bits ^ (((word >> j) & 1u) << 31);
      memcpy(eps + EVOGRAD_BATCH * b + 32 * i, out, sizeof out);
    }
}

static inline void evograd_sign_tile_d(const evograd_noise_stream *s, uint64_t tile, int b0,
                                       int b1, double *eps) {
  uint32_t w[4][EVOGRAD_PHILOX_LANES];
  const uint64_t base_bits = evograd_bits_of(s->scale);
  int b, i, j;
  evograd_philox_lanes(s, tile * EVOGRAD_PHILOX_LANES, w);
  for (b = b0; b < b1; ++b)
    for (i = 0; i < 4; ++i) {
      const uint32_t word = w[i][b];
      uint64_t out[32];
      for (j = 0; j < 32; ++j) out[j] = base_bits ^ ((uint64_t)((word >> j) & 1u) << 63);
      memcpy(eps + EVOGRAD_BATCH * b + 32 * i, out, sizeof out);
    }
}

/* sigma * z for the 64 indices of 16 Gaussian quads starting at quad q0:
 * words (0, 1) of each quad give indices 4l, 4l+1, words (2, 3) 4l+2, 4l+3. */
static inline void evograd_gauss_quads(const evograd_noise_stream *s, uint64_t q0,
                                       double out[4 * EVOGRAD_PHILOX_LANES]) {
  enum { PAIRS = 2 * EVOGRAD_PHILOX_LANES };
  uint32_t w[4][EVOGRAD_PHILOX_LANES];
  uint32_t a[PAIRS], b[PAIRS]; /* pair j: lane j % 16, words (0, 1) or (2, 3) */
  double r[PAIRS], c[PAIRS], sn[PAIRS];
  int l, p;
  evograd_philox_lanes(s, q0, w);
  for (l = 0; l < EVOGRAD_PHILOX_LANES; ++l) {
    a[l] = w[0][l];
    b[l] = w[1][l];
    a[EVOGRAD_PHILOX_LANES + l] = w[2][l];
    b[EVOGRAD_PHILOX_LANES + l] = w[3][l];
  }
  /* one stage per loop: short independent iterations that the processor
   * overlaps, rather than one long chain per pair */
  for (p = 0; p < PAIRS; ++p) r[p] = evograd_minus_two_log(evograd_unit_open(a[p]));
  for (p = 0; p < PAIRS; ++p) r[p] = sqrt(r[p]);
  for (p = 0; p < PAIRS; ++p) evograd_cos_sin_turns(evograd_unit_open(b[p]), &c[p], &sn[p]);
  for (l = 0; l < EVOGRAD_PHILOX_LANES; ++l) {
    for (p = 0; p < 2; ++p) {
      const int j = p * EVOGRAD_PHILOX_LANES + l;
      out[4 * l + 2 * p] = s->scale * (r[j] * c[j]);
      out[4 * l + 2 * p + 1] = s->scale * (r[j] * sn[j]);
    }
  }
}

#define EVOGRAD_QUADS_PER_PASS (4 * EVOGRAD_PHILOX_LANES) /* indices per evograd_gauss_quads */

static inline void evograd_gauss_tile_f(const evograd_noise_stream *s, uint64_t tile, int b0,
                                        int b1, float *eps) {
  int i0, j;
  for (i0 = EVOGRAD_BATCH * b0; i0 < EVOGRAD_BATCH * b1; i0 += EVOGRAD_QUADS_PER_PASS) {
    double v[EVOGRAD_QUADS_PER_PASS];
    evograd_gauss_quads(s, (tile * EVOGRAD_TILE + (uint64_t)i0) / 4, v);
    for (j = 0; j < EVOGRAD_QUADS_PER_PASS; ++j) eps[i0 + j] = (float)v[j];
  }
}

static inline void evograd_gauss_tile_d(const evograd_noise_stream *s, uint64_t tile, int b0,
                                        int b1, double *eps) {
  int i0;
  for (i0 = EVOGRAD_BATCH * b0; i0 < EVOGRAD_BATCH * b1; i0 += EVOGRAD_QUADS_PER_PASS)
    evograd_gauss_quads(s, (tile * EVOGRAD_TILE + (uint64_t)i0) / 4, eps + i0);
}

#endif
