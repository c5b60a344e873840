/*
 * Sign noise, one row of 32 consecutive indices at a time: bit j of a
 * 32-bit word flips the sign of index 32 * row + j's term. The row
 * operations the kernels spend their time in:
 *   evograd_row_sums:  sum[j] = 0 + (+-c_0) + (+-c_1) + ... (combine)
 *   evograd_row_lanes: lane[j] += +-v[j]                    (project)
 *   evograd_row_lanes_f32: the same for two candidates, from float32
 *   evograd_row_plus_signed_f32: dst[j] = src[j] + (+-e)   (float32 perturb)
 * Each is one IEEE operation per term in a fixed order, so every build gives
 * the same bits. The AVX2 build has its own body: there, GNU C's eight-wide
 * vectors spill, and turning a word into lane masks costs five operations
 * per four lanes; AVX2's blend reads only each lane's top bit, so one
 * variable shift that puts the index's bit on top picks +x or -x.
 */
#ifndef EVOGRAD_CPU_SIGNED_ROWS_H
#define EVOGRAD_CPU_SIGNED_ROWS_H

#include <stdint.h>
#include <string.h>

#include "common/gauss_math.h"
#include "lane_vectors.h"

#if defined(__AVX2__) && !defined(__AVX512F__)
#include <immintrin.h>

/* Lane j's top bit is bit 4q + j of the row's word (broadcast to every
 * 64-bit lane); the lower bits are junk, which blendv ignores. */
static inline __m256d evograd_bits_on_top(__m256i word, int q) {
  static const int64_t shifts[8][4] __attribute__((aligned(32))) = {
      {63, 62, 61, 60}, {59, 58, 57, 56}, {55, 54, 53, 52}, {51, 50, 49, 48},
      {47, 46, 45, 44}, {43, 42, 41, 40}, {39, 38, 37, 36}, {35, 34, 33, 32}};
  return _mm256_castsi256_pd(_mm256_sllv_epi64(word, _mm256_load_si256((const __m256i *)shifts[q])));
}

/* x where the index's bit is clear, -x (given) where it is set */
#define EVOGRAD_SIGNED4(x, minus_x, word, q) _mm256_blendv_pd((x), (minus_x), evograd_bits_on_top((word), (q)))

/* sum[j] = 0 + sum over k < kc, in k order, of c[k] with bit j of words[k]
 * as its sign. */
static inline void evograd_row_sums(double sum[32], int kc, const uint64_t *c, const uint32_t *words,
                                    int stride) {
  __m256d a[8];
  int k, q;
  for (q = 0; q < 8; ++q) a[q] = _mm256_setzero_pd();
  for (k = 0; k < kc; ++k) {
    const __m256i w = _mm256_set1_epi64x(words[k * stride]);
    const __m256d ck = _mm256_set1_pd(evograd_double_of(c[k]));
    const __m256d minus_ck = _mm256_set1_pd(evograd_double_of(c[k] ^ 0x8000000000000000ull));
    for (q = 0; q < 8; ++q) a[q] = _mm256_add_pd(a[q], EVOGRAD_SIGNED4(ck, minus_ck, w, q));
  }
  for (q = 0; q < 8; ++q) _mm256_storeu_pd(sum + 4 * q, a[q]);
}

/* lane[j] += v[j] with bit j of words[r] ^ flip as its sign, for rows
 * r < rows (v advancing by 32 per row). */
static inline void evograd_row_lanes(double lane[32], const double *v, const uint32_t *words, int rows,
                                     uint32_t flip) {
  const __m256d top = _mm256_set1_pd(-0.0);
  __m256d a[8];
  int r, q;
  for (q = 0; q < 8; ++q) a[q] = _mm256_loadu_pd(lane + 4 * q);
  for (r = 0; r < rows; ++r, v += 32) {
    const __m256i w = _mm256_set1_epi64x(words[r] ^ flip);
    for (q = 0; q < 8; ++q) {
      const __m256d x = _mm256_loadu_pd(v + 4 * q);
      a[q] = _mm256_add_pd(a[q], EVOGRAD_SIGNED4(x, _mm256_xor_pd(x, top), w, q));
    }
  }
  for (q = 0; q < 8; ++q) _mm256_storeu_pd(lane + 4 * q, a[q]);
}
#undef EVOGRAD_SIGNED4

/* float32 project's rows for two candidates at once (each element read and
 * scaled once): lane0[j] += +-x[j] with bit j of words0[r] ^ flip0 as the
 * sign, lane1 likewise with words1 and flip1, x = (double)src[j] * mag, for
 * rows r < rows (src advancing by 32 per row). Half a row's lanes at a time,
 * so both candidates' sums stay in registers. */
static inline void evograd_row_lanes_f32(double lane0[32], double lane1[32], const float *src,
                                         const uint32_t *words0, const uint32_t *words1, int rows,
                                         uint32_t flip0, uint32_t flip1, double mag) {
  const __m256d scale = _mm256_set1_pd(mag), top = _mm256_set1_pd(-0.0);
  int half, r, q;
  for (half = 0; half < 2; ++half) {
    __m256d a[4], b[4];
    for (q = 0; q < 4; ++q) {
      a[q] = _mm256_loadu_pd(lane0 + 16 * half + 4 * q);
      b[q] = _mm256_loadu_pd(lane1 + 16 * half + 4 * q);
    }
    for (r = 0; r < rows; ++r) {
      const float *x = src + 32 * r + 16 * half;
      const __m256i w0 = _mm256_set1_epi64x(words0[r] ^ flip0), w1 = _mm256_set1_epi64x(words1[r] ^ flip1);
      for (q = 0; q < 4; ++q) {
        const __m256d v = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + 4 * q)), scale);
        const __m256d minus_v = _mm256_xor_pd(v, top);
        a[q] = _mm256_add_pd(a[q], _mm256_blendv_pd(v, minus_v, evograd_bits_on_top(w0, 4 * half + q)));
        b[q] = _mm256_add_pd(b[q], _mm256_blendv_pd(v, minus_v, evograd_bits_on_top(w1, 4 * half + q)));
      }
    }
    for (q = 0; q < 4; ++q) {
      _mm256_storeu_pd(lane0 + 16 * half + 4 * q, a[q]);
      _mm256_storeu_pd(lane1 + 16 * half + 4 * q, b[q]);
    }
  }
}

/* float32 perturb's row: dst[j] = src[j] + (+-e), bit j of `word` the sign. */
static inline void evograd_row_plus_signed_f32(const float *src, float *dst, uint32_t word, float e) {
  static const int32_t shifts[4][8] __attribute__((aligned(32))) = {
      {31, 30, 29, 28, 27, 26, 25, 24}, {23, 22, 21, 20, 19, 18, 17, 16},
      {15, 14, 13, 12, 11, 10, 9, 8},   {7, 6, 5, 4, 3, 2, 1, 0}};
  const __m256i w = _mm256_set1_epi32((int)word);
  const __m256 plus = _mm256_set1_ps(e), minus = _mm256_set1_ps(-e);
  int q;
  for (q = 0; q < 4; ++q) {
    const __m256 top = _mm256_castsi256_ps(_mm256_sllv_epi32(w, _mm256_load_si256((const __m256i *)shifts[q])));
    _mm256_storeu_ps(dst + 8 * q, _mm256_add_ps(_mm256_loadu_ps(src + 8 * q), _mm256_blendv_ps(plus, minus, top)));
  }
}

#else /* eight-wide GNU C vectors: SSE2 pairs, or AVX-512 with lane masks */

static inline void evograd_row_sums(double sum[32], int kc, const uint64_t *c, const uint32_t *words,
                                    int stride) {
  const evograd_f64x8 zero = {0, 0, 0, 0, 0, 0, 0, 0};
  evograd_f64x8 a0 = zero, a1 = zero, a2 = zero, a3 = zero;
  int k;
  for (k = 0; k < kc; ++k) {
    const uint32_t w = words[k * stride];
    const evograd_f64x8 ck = zero + evograd_double_of(c[k]);
    a0 += evograd_flip8(ck, w, 0);
    a1 += evograd_flip8(ck, w, 1);
    a2 += evograd_flip8(ck, w, 2);
    a3 += evograd_flip8(ck, w, 3);
  }
  evograd_store8(sum, a0);
  evograd_store8(sum + 8, a1);
  evograd_store8(sum + 16, a2);
  evograd_store8(sum + 24, a3);
}

static inline void evograd_row_lanes(double lane[32], const double *v, const uint32_t *words, int rows,
                                     uint32_t flip) {
  evograd_f64x8 a0 = evograd_load8(lane), a1 = evograd_load8(lane + 8);
  evograd_f64x8 a2 = evograd_load8(lane + 16), a3 = evograd_load8(lane + 24);
  int r;
  for (r = 0; r < rows; ++r, v += 32) {
    const uint32_t w = words[r] ^ flip;
    a0 += evograd_flip8(evograd_load8(v), w, 0);
    a1 += evograd_flip8(evograd_load8(v + 8), w, 1);
    a2 += evograd_flip8(evograd_load8(v + 16), w, 2);
    a3 += evograd_flip8(evograd_load8(v + 24), w, 3);
  }
  evograd_store8(lane, a0);
  evograd_store8(lane + 8, a1);
  evograd_store8(lane + 16, a2);
  evograd_store8(lane + 24, a3);
}

static inline void evograd_row_plus_signed_f32(const float *src, float *dst, uint32_t word, float e) {
  uint32_t bits;
  int j;
  memcpy(&bits, &e, sizeof bits);
  for (j = 0; j < 32; ++j) {
    const uint32_t b = bits ^ (((word >> j) & 1u) << 31);
    float x;
    memcpy(&x, &b, sizeof x);
    dst[j] = src[j] + x;
  }
}

static inline void evograd_row_lanes_f32(double lane0[32], double lane1[32], const float *src,
                                         const uint32_t *words0, const uint32_t *words1, int rows,
                                         uint32_t flip0, uint32_t flip1, double mag) {
  int r, j;
  for (r = 0; r < rows; ++r, src += 32) {
    const uint32_t w0 = words0[r] ^ flip0, w1 = words1[r] ^ flip1;
    for (j = 0; j < 32; ++j) {
      const uint64_t v = evograd_bits_of((double)src[j] * mag);
      lane0[j] += evograd_double_of(v ^ ((uint64_t)((w0 >> j) & 1u) << 63));
      lane1[j] += evograd_double_of(v ^ ((uint64_t)((w1 >> j) & 1u) << 63));
    }
  }
}

#endif

#endif
