/*
 * Sign noise, one row of 32 consecutive indices at a time: bit j of a
 * 32-bit word flips the sign of index 32 * row + j's term. The two row
 * operations the kernels spend their time in:
 *   evograd_row_sums:  sum[j] = 0 + (+-c_0) + (+-c_1) + ... (combine)
 *   evograd_row_lanes: lane[j] += +-v[j]                    (project)
 * Each is one IEEE operation per term in a fixed order, so every build gives
 * the same bits. The AVX2 build has its own body: there, GNU C's eight-wide
 * vectors spill, and turning a word into lane masks with shifts costs five
 * operations per four lanes; a table of the sixteen nibbles' four sign masks
 * makes it one load.
 */
#ifndef EVOGRAD_CPU_SIGNED_ROWS_H
#define EVOGRAD_CPU_SIGNED_ROWS_H

#include <stdint.h>

#include "common/gauss_math.h"
#include "lane_vectors.h"

#if defined(__AVX2__) && !defined(__AVX512F__)
#include <immintrin.h>

#define EVOGRAD_NIBBLE_SIGN(m, j) ((uint64_t)(((m) >> (j)) & 1) << 63)
#define EVOGRAD_NIBBLE_SIGNS(m) \
  { EVOGRAD_NIBBLE_SIGN(m, 0), EVOGRAD_NIBBLE_SIGN(m, 1), EVOGRAD_NIBBLE_SIGN(m, 2), EVOGRAD_NIBBLE_SIGN(m, 3) }
/* evograd_nibble_signs[m][j]: the sign bit where bit j of m is set */
static const uint64_t evograd_nibble_signs[16][4] __attribute__((aligned(32))) = {
    EVOGRAD_NIBBLE_SIGNS(0),  EVOGRAD_NIBBLE_SIGNS(1),  EVOGRAD_NIBBLE_SIGNS(2),  EVOGRAD_NIBBLE_SIGNS(3),
    EVOGRAD_NIBBLE_SIGNS(4),  EVOGRAD_NIBBLE_SIGNS(5),  EVOGRAD_NIBBLE_SIGNS(6),  EVOGRAD_NIBBLE_SIGNS(7),
    EVOGRAD_NIBBLE_SIGNS(8),  EVOGRAD_NIBBLE_SIGNS(9),  EVOGRAD_NIBBLE_SIGNS(10), EVOGRAD_NIBBLE_SIGNS(11),
    EVOGRAD_NIBBLE_SIGNS(12), EVOGRAD_NIBBLE_SIGNS(13), EVOGRAD_NIBBLE_SIGNS(14), EVOGRAD_NIBBLE_SIGNS(15)};
#undef EVOGRAD_NIBBLE_SIGNS
#undef EVOGRAD_NIBBLE_SIGN

/* The sign masks of indices 4q .. 4q+3 of the row whose bits are `word`. */
static inline __m256d evograd_signs4(uint32_t word, int q) {
  return _mm256_load_pd((const double *)evograd_nibble_signs[(word >> (4 * q)) & 15u]);
}

/* sum[j] = 0 + sum over k < kc, in k order, of c[k] with bit j of words[k]
 * as its sign. */
static inline void evograd_row_sums(double sum[32], int kc, const uint64_t *c, const uint32_t *words,
                                    int stride) {
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  int k;
  for (k = 0; k < kc; ++k) {
    const uint32_t w = words[k * stride];
    const __m256d ck = _mm256_set1_pd(evograd_double_of(c[k]));
    a0 = _mm256_add_pd(a0, _mm256_xor_pd(ck, evograd_signs4(w, 0)));
    a1 = _mm256_add_pd(a1, _mm256_xor_pd(ck, evograd_signs4(w, 1)));
    a2 = _mm256_add_pd(a2, _mm256_xor_pd(ck, evograd_signs4(w, 2)));
    a3 = _mm256_add_pd(a3, _mm256_xor_pd(ck, evograd_signs4(w, 3)));
    a4 = _mm256_add_pd(a4, _mm256_xor_pd(ck, evograd_signs4(w, 4)));
    a5 = _mm256_add_pd(a5, _mm256_xor_pd(ck, evograd_signs4(w, 5)));
    a6 = _mm256_add_pd(a6, _mm256_xor_pd(ck, evograd_signs4(w, 6)));
    a7 = _mm256_add_pd(a7, _mm256_xor_pd(ck, evograd_signs4(w, 7)));
  }
  _mm256_storeu_pd(sum, a0);
  _mm256_storeu_pd(sum + 4, a1);
  _mm256_storeu_pd(sum + 8, a2);
  _mm256_storeu_pd(sum + 12, a3);
  _mm256_storeu_pd(sum + 16, a4);
  _mm256_storeu_pd(sum + 20, a5);
  _mm256_storeu_pd(sum + 24, a6);
  _mm256_storeu_pd(sum + 28, a7);
}

/* lane[j] += v[j] with bit j of words[r] as its sign, for rows r < rows
 * (v advancing by 32 per row). */
static inline void evograd_row_lanes(double lane[32], const double *v, const uint32_t *words, int rows,
                                     uint32_t flip) {
  __m256d a0 = _mm256_loadu_pd(lane), a1 = _mm256_loadu_pd(lane + 4);
  __m256d a2 = _mm256_loadu_pd(lane + 8), a3 = _mm256_loadu_pd(lane + 12);
  __m256d a4 = _mm256_loadu_pd(lane + 16), a5 = _mm256_loadu_pd(lane + 20);
  __m256d a6 = _mm256_loadu_pd(lane + 24), a7 = _mm256_loadu_pd(lane + 28);
  int r;
  for (r = 0; r < rows; ++r, v += 32) {
    const uint32_t w = words[r] ^ flip;
    a0 = _mm256_add_pd(a0, _mm256_xor_pd(_mm256_loadu_pd(v), evograd_signs4(w, 0)));
    a1 = _mm256_add_pd(a1, _mm256_xor_pd(_mm256_loadu_pd(v + 4), evograd_signs4(w, 1)));
    a2 = _mm256_add_pd(a2, _mm256_xor_pd(_mm256_loadu_pd(v + 8), evograd_signs4(w, 2)));
    a3 = _mm256_add_pd(a3, _mm256_xor_pd(_mm256_loadu_pd(v + 12), evograd_signs4(w, 3)));
    a4 = _mm256_add_pd(a4, _mm256_xor_pd(_mm256_loadu_pd(v + 16), evograd_signs4(w, 4)));
    a5 = _mm256_add_pd(a5, _mm256_xor_pd(_mm256_loadu_pd(v + 20), evograd_signs4(w, 5)));
    a6 = _mm256_add_pd(a6, _mm256_xor_pd(_mm256_loadu_pd(v + 24), evograd_signs4(w, 6)));
    a7 = _mm256_add_pd(a7, _mm256_xor_pd(_mm256_loadu_pd(v + 28), evograd_signs4(w, 7)));
  }
  _mm256_storeu_pd(lane, a0);
  _mm256_storeu_pd(lane + 4, a1);
  _mm256_storeu_pd(lane + 8, a2);
  _mm256_storeu_pd(lane + 12, a3);
  _mm256_storeu_pd(lane + 16, a4);
  _mm256_storeu_pd(lane + 20, a5);
  _mm256_storeu_pd(lane + 24, a6);
  _mm256_storeu_pd(lane + 28, a7);
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

#endif

#endif
