/*
 * The CPU kernels' inner loops on one segment (a run of consecutive global
 * indices inside one span), written once as plain C over tile-sized arrays.
 * Each file of csrc/cpu/isa/ includes this with EVOGRAD_ISA set and is
 * compiled for one instruction set (baseline x86-64, AVX2, AVX-512, or
 * whatever the target's compiler defaults to); dispatch.c picks one at run
 * time. Every step is one IEEE operation in a fixed order and the build
 * forbids contracting a multiply and an add, so all builds give the same
 * bits: the SIMD ones only do more lanes at once.
 */
#ifndef EVOGRAD_ISA
#error "define EVOGRAD_ISA (the name of this build's kernel table) before including"
#endif

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "half_bits.h"
#include "isa.h"
#include "lane_vectors.h"
#include "noise_tile.h"
#include "signed_rows.h"

#define EVOGRAD_JOIN2(a, b) a##b
#define EVOGRAD_JOIN(a, b) EVOGRAD_JOIN2(a, b)
#define EVOGRAD_LOCAL(name) EVOGRAD_JOIN(name##_, EVOGRAD_ISA)

/* Per storage type: its element type, its noise type (float32 noise for
 * every type but float64), element to double, double to element. float32
 * perturb adds in float: (float)((double)a + (double)e) is a + e for floats
 * (double has more than 2 * 24 + 2 bits, so the double rounding is exact). */
typedef float evograd_elem_f32;
typedef double evograd_elem_f64;
typedef uint16_t evograd_elem_f16;
typedef uint16_t evograd_elem_bf16;
typedef float evograd_eps_f32;
typedef double evograd_eps_f64;
typedef float evograd_eps_f16;
typedef float evograd_eps_bf16;
#define EVOGRAD_TO_D_f32(x) ((double)(x))
#define EVOGRAD_TO_D_f64(x) (x)
#define EVOGRAD_TO_D_f16(x) evograd_decode_bits((x), 10, 5)
#define EVOGRAD_TO_D_bf16(x) evograd_decode_bits((x), 7, 8)
#define EVOGRAD_FROM_D_f32(v) ((float)(v))
#define EVOGRAD_FROM_D_f64(v) (v)
#define EVOGRAD_FROM_D_f16(v) ((uint16_t)evograd_encode_bits((v), 10, 5))
#define EVOGRAD_FROM_D_bf16(v) ((uint16_t)evograd_encode_bits((v), 7, 8))
#define EVOGRAD_PLUS_EPS_f32(x, e) ((x) + (e))
#define EVOGRAD_PLUS_EPS_f64(x, e) ((x) + (e))
#define EVOGRAD_PLUS_EPS_f16(x, e) EVOGRAD_FROM_D_f16(EVOGRAD_TO_D_f16(x) + (double)(e))
#define EVOGRAD_PLUS_EPS_bf16(x, e) EVOGRAD_FROM_D_bf16(EVOGRAD_TO_D_bf16(x) + (double)(e))
#define EVOGRAD_IS_F32_f32 1
#define EVOGRAD_IS_F32_f64 0
#define EVOGRAD_IS_F32_f16 0
#define EVOGRAD_IS_F32_bf16 0
#define EVOGRAD_FILL_f32(s, t, b0, b1, eps) EVOGRAD_FILL_FLOAT(s, t, b0, b1, eps)
#define EVOGRAD_FILL_f16(s, t, b0, b1, eps) EVOGRAD_FILL_FLOAT(s, t, b0, b1, eps)
#define EVOGRAD_FILL_bf16(s, t, b0, b1, eps) EVOGRAD_FILL_FLOAT(s, t, b0, b1, eps)
#define EVOGRAD_FILL_FLOAT(s, t, b0, b1, eps) evograd_fill_tile_f(s, t, b0, b1, eps)
#define EVOGRAD_FILL_f64(s, t, b0, b1, eps) evograd_fill_tile_d(s, t, b0, b1, eps)

/* A tile of noise, by kind (the one place the CPU kernels dispatch on it). */
static inline void evograd_fill_tile_f(const evograd_noise_stream *s, uint64_t t, int b0, int b1,
                                       float *eps) {
  switch (s->kind) {
    case EVOGRAD_NOISE_GAUSS: evograd_gauss_tile_f(s, t, b0, b1, eps); break;
    case EVOGRAD_NOISE_SIGN:
    default: evograd_sign_tile_f(s, t, b0, b1, eps); break;
  }
}
static inline void evograd_fill_tile_d(const evograd_noise_stream *s, uint64_t t, int b0, int b1,
                                       double *eps) {
  switch (s->kind) {
    case EVOGRAD_NOISE_GAUSS: evograd_gauss_tile_d(s, t, b0, b1, eps); break;
    case EVOGRAD_NOISE_SIGN:
    default: evograd_sign_tile_d(s, t, b0, b1, eps); break;
  }
}

/* A segment in tile-sized pieces: piece [g, g + n) lies in tile t, at
 * offset `at` of it, and its noise batches are [b0, b1). */
typedef struct evograd_tile_piece {
  uint64_t tile;
  int at, n, b0, b1;
} evograd_tile_piece;

static inline evograd_tile_piece evograd_piece_at(int64_t g, int64_t left) {
  evograd_tile_piece p;
  const int64_t in_tile = EVOGRAD_TILE - g % EVOGRAD_TILE;
  p.tile = (uint64_t)(g / EVOGRAD_TILE);
  p.at = (int)(g % EVOGRAD_TILE);
  p.n = (int)(in_tile < left ? in_tile : left);
  p.b0 = p.at / EVOGRAD_BATCH;
  p.b1 = (p.at + p.n + EVOGRAD_BATCH - 1) / EVOGRAD_BATCH;
  return p;
}

/* The kernels compute on a tile, then stream it: without help the memory
 * system idles during the compute. So each piece asks for the lines of the
 * tile after next while it computes, a few between rows (a burst of a
 * tile's 128 lines fills the core's miss queue and stalls it); the first
 * piece of a segment asks for the next tile at once. */
static inline void evograd_prefetch(const char *p, int for_write) {
  if (for_write) __builtin_prefetch(p, 1);
  else __builtin_prefetch(p, 0);
}

typedef struct evograd_trickle {
  const char *next, *end;
  int for_write;
} evograd_trickle;

/* Asks for up to `lines` more lines. */
static inline void evograd_trickle_lines(evograd_trickle *t, int lines) {
  for (; lines > 0 && t->next < t->end; --lines, t->next += 64) evograd_prefetch(t->next, t->for_write);
}

/* Asks for all the lines still to come at once. */
static inline void evograd_trickle_rest(evograd_trickle *t) {
  for (; t->next < t->end; t->next += 64) evograd_prefetch(t->next, t->for_write);
}

/* Elements [from, n) of `base` are still to come (from: where the next
 * piece starts): the tile-sized stretch one tile on, to trickle. */
static inline evograd_trickle evograd_trickle_ahead(const void *base, int64_t from, int64_t n,
                                                    int64_t esize, int for_write, int first_piece) {
  const char *b = (const char *)base;
  const int64_t near_stop = from + EVOGRAD_TILE < n ? from + EVOGRAD_TILE : n;
  const int64_t far_stop = from + 2 * EVOGRAD_TILE < n ? from + 2 * EVOGRAD_TILE : n;
  evograd_trickle t;
  t.for_write = for_write;
  if (first_piece) {
    t.next = b + from * esize;
    t.end = from < near_stop ? b + near_stop * esize : t.next;
    evograd_trickle_rest(&t);
  }
  t.next = b + near_stop * esize;
  t.end = near_stop < far_stop ? b + far_stop * esize : t.next;
  return t;
}

/* The double with bits c, its sign flipped where index g's bit is set in
 * the tile's sign rows. */
static inline double evograd_signed_at(uint64_t c, const uint32_t *rows, int g) {
  return evograd_double_of(c ^ ((uint64_t)((rows[g / 32] >> (g % 32)) & 1u) << 63));
}

/* Sign noise, several candidates at once: candidate k's term at an index
 * is +-c_k (c_k a double); the sign bits of the tile's 64 rows of 32
 * indices for candidates k0 .. k0+kc-1 land in bits[k][row]. */
#define EVOGRAD_SIGN_CHUNK 16
#define EVOGRAD_ROWS (EVOGRAD_TILE / 32)
static inline void evograd_sign_rows(const evograd_noise *noise, int64_t k0, int kc,
                                     uint64_t tile, uint32_t bits[][EVOGRAD_ROWS]) {
  int k, row;
  for (k = 0; k < kc; ++k) {
    const evograd_noise_stream s =
        evograd_make_stream(noise->seed, noise->sigma, 0, noise->antithetic, k0 + k);
    uint32_t w[4][EVOGRAD_PHILOX_LANES];
    evograd_philox_lanes(&s, tile * EVOGRAD_PHILOX_LANES, w);
#if defined(__SSE2__)
    /* row 4l + i is w[i][l]: a 4 x 4 transpose per four lanes */
    for (row = 0; row < EVOGRAD_ROWS; row += 16) {
      const int l = row / 4;
      const __m128i w0 = _mm_loadu_si128((const __m128i *)&w[0][l]);
      const __m128i w1 = _mm_loadu_si128((const __m128i *)&w[1][l]);
      const __m128i w2 = _mm_loadu_si128((const __m128i *)&w[2][l]);
      const __m128i w3 = _mm_loadu_si128((const __m128i *)&w[3][l]);
      const __m128i t0 = _mm_unpacklo_epi32(w0, w1), t1 = _mm_unpackhi_epi32(w0, w1);
      const __m128i t2 = _mm_unpacklo_epi32(w2, w3), t3 = _mm_unpackhi_epi32(w2, w3);
      _mm_storeu_si128((__m128i *)&bits[k][row], _mm_unpacklo_epi64(t0, t2));
      _mm_storeu_si128((__m128i *)&bits[k][row + 4], _mm_unpackhi_epi64(t0, t2));
      _mm_storeu_si128((__m128i *)&bits[k][row + 8], _mm_unpacklo_epi64(t1, t3));
      _mm_storeu_si128((__m128i *)&bits[k][row + 12], _mm_unpackhi_epi64(t1, t3));
    }
#else
    for (row = 0; row < EVOGRAD_ROWS; ++row) bits[k][row] = w[row % 4][row / 4];
#endif
  }
}

/* acc[i] += sum over k < kc, in k order, of +-c[k] (sign bit of index
 * at + i), for i < n, the indices inside one tile. Whole rows keep 32
 * sums in registers across the candidates. */
static inline void evograd_add_signed(double *acc, int at, int n, int kc, const uint64_t *c,
                                      uint32_t bits[][EVOGRAD_ROWS]) {
  int i = 0, k;
  for (; i < n && (at + i) % 32; ++i)
    for (k = 0; k < kc; ++k)
      acc[i] += evograd_signed_at(c[k], bits[k], at + i);
  for (; i + 32 <= n; i += 32) {
    const int row = (at + i) / 32;
    evograd_f64x8 a0 = evograd_load8(acc + i), a1 = evograd_load8(acc + i + 8);
    evograd_f64x8 a2 = evograd_load8(acc + i + 16), a3 = evograd_load8(acc + i + 24);
    for (k = 0; k < kc; ++k) {
      const uint32_t word = bits[k][row];
      const evograd_f64x8 ck = (evograd_f64x8){0, 0, 0, 0, 0, 0, 0, 0} + evograd_double_of(c[k]);
      a0 += evograd_flip8(ck, word, 0);
      a1 += evograd_flip8(ck, word, 1);
      a2 += evograd_flip8(ck, word, 2);
      a3 += evograd_flip8(ck, word, 3);
    }
    evograd_store8(acc + i, a0);
    evograd_store8(acc + i + 8, a1);
    evograd_store8(acc + i + 16, a2);
    evograd_store8(acc + i + 24, a3);
  }
  for (; i < n; ++i)
    for (k = 0; k < kc; ++k)
      acc[i] += evograd_signed_at(c[k], bits[k], at + i);
}

/* Project's lanes for one candidate with sign noise: lane (at + i) % 32 of
 * `lane` gains +-pv[i] (the sign from the index's bit, flipped by `neg`,
 * the sign bit of an antithetic partner's negative sigma), i < n. */
static inline void evograd_lanes_add_signed(double *lane, int at, int n, const double *pv,
                                            const uint32_t *rowbits, uint64_t neg,
                                            evograd_trickle *ahead, int lines_per_row) {
  int i = 0;
  _Static_assert(EVOGRAD_PROJECT_LANES == 32, "a row of sign bits is a row of lanes");
  for (; i < n && (at + i) % EVOGRAD_PROJECT_LANES; ++i)
    lane[(at + i) % EVOGRAD_PROJECT_LANES] += evograd_signed_at(evograd_bits_of(pv[i]) ^ neg, rowbits, at + i);
  while (i + EVOGRAD_PROJECT_LANES <= n) {
    const int left = (n - i) / EVOGRAD_PROJECT_LANES, rows = left < 8 ? left : 8;
    evograd_row_lanes(lane, pv + i, rowbits + (at + i) / 32, rows, neg ? 0xFFFFFFFFu : 0u);
    evograd_trickle_lines(ahead, rows * lines_per_row);
    i += rows * EVOGRAD_PROJECT_LANES;
  }
  for (; i < n; ++i)
    lane[(at + i) % EVOGRAD_PROJECT_LANES] += evograd_signed_at(evograd_bits_of(pv[i]) ^ neg, rowbits, at + i);
}

/* float32 project with sign noise, candidates in pairs: lane0 and lane1
 * (candidates whose sign rows are bits0, bits1 and antithetic sign bits
 * neg0, neg1) gain +-(src[i] * mag) for the indices at .. at+n-1 of a tile.
 * For a lone candidate the caller passes a scratch lane1. */
static inline void evograd_project_pair_f32(double *lane0, double *lane1, const float *src, int at, int n,
                                            const uint32_t *bits0, const uint32_t *bits1, uint64_t neg0,
                                            uint64_t neg1, double mag, evograd_trickle *ahead) {
  int i = 0;
  for (;;) {
    /* a head up to the first whole row, then (second pass) the tail */
    for (; i < n && ((at + i) % EVOGRAD_PROJECT_LANES || i + EVOGRAD_PROJECT_LANES > n); ++i) {
      const uint64_t v = evograd_bits_of((double)src[i] * mag);
      lane0[(at + i) % EVOGRAD_PROJECT_LANES] += evograd_signed_at(v ^ neg0, bits0, at + i);
      lane1[(at + i) % EVOGRAD_PROJECT_LANES] += evograd_signed_at(v ^ neg1, bits1, at + i);
    }
    if (i >= n) return;
    while (i + EVOGRAD_PROJECT_LANES <= n) {
      const int left = (n - i) / EVOGRAD_PROJECT_LANES, rows = left < 8 ? left : 8;
      const int row = (at + i) / 32;
      evograd_row_lanes_f32(lane0, lane1, src + i, bits0 + row, bits1 + row, rows, neg0 ? 0xFFFFFFFFu : 0u,
                            neg1 ? 0xFFFFFFFFu : 0u, mag);
      evograd_trickle_lines(ahead, 2 * rows);
      i += rows * EVOGRAD_PROJECT_LANES;
    }
  }
}

/* dst[i] = src[i] + sum_k +-c[k] for the indices at .. at+n-1 of a tile,
 * one chunk of candidates: the sums stay in registers and go straight to
 * the output, with no buffer pass. */

#undef EVOGRAD_DEFINE_COMBINE_ROWS


/* Each storage type's kernels (segment_kernels_typed.h). */
#define EVOGRAD_T f32
#include "segment_kernels_typed.h"
#undef EVOGRAD_T
#define EVOGRAD_T f64
#include "segment_kernels_typed.h"
#undef EVOGRAD_T
#define EVOGRAD_T f16
#include "segment_kernels_typed.h"
#undef EVOGRAD_T
#define EVOGRAD_T bf16
#include "segment_kernels_typed.h"
#undef EVOGRAD_T

static void EVOGRAD_LOCAL(perturb)(evograd_dtype dtype, const void *src, void *dst,
                                   int64_t global, int64_t n, const evograd_noise_stream *s) {
  switch (dtype) {
    case EVOGRAD_FLOAT32: EVOGRAD_LOCAL(perturb_f32)(src, dst, global, n, s); break;
    case EVOGRAD_FLOAT64: EVOGRAD_LOCAL(perturb_f64)(src, dst, global, n, s); break;
    case EVOGRAD_FLOAT16: EVOGRAD_LOCAL(perturb_f16)(src, dst, global, n, s); break;
    case EVOGRAD_BFLOAT16: EVOGRAD_LOCAL(perturb_bf16)(src, dst, global, n, s); break;
  }
}

static void EVOGRAD_LOCAL(combine)(evograd_dtype dtype, const void *src, void *dst,
                                   int64_t global, int64_t n, const evograd_noise *noise,
                                   const double *weights, int64_t population) {
  switch (dtype) {
    case EVOGRAD_FLOAT32: EVOGRAD_LOCAL(combine_f32)(src, dst, global, n, noise, weights, population); break;
    case EVOGRAD_FLOAT64: EVOGRAD_LOCAL(combine_f64)(src, dst, global, n, noise, weights, population); break;
    case EVOGRAD_FLOAT16: EVOGRAD_LOCAL(combine_f16)(src, dst, global, n, noise, weights, population); break;
    case EVOGRAD_BFLOAT16: EVOGRAD_LOCAL(combine_bf16)(src, dst, global, n, noise, weights, population); break;
  }
}

static void EVOGRAD_LOCAL(project)(evograd_dtype dtype, const void *src, int64_t global,
                                   int64_t n, int64_t readable, int fresh, const evograd_noise *noise,
                                   int64_t k0, int64_t kn,
                                   double *lanes) {
  switch (dtype) {
    case EVOGRAD_FLOAT32: EVOGRAD_LOCAL(project_f32)(src, global, n, readable, fresh, noise, k0, kn,
                                                       lanes); break;
    case EVOGRAD_FLOAT64: EVOGRAD_LOCAL(project_f64)(src, global, n, readable, fresh, noise, k0, kn,
                                                       lanes); break;
    case EVOGRAD_FLOAT16: EVOGRAD_LOCAL(project_f16)(src, global, n, readable, fresh, noise, k0, kn,
                                                       lanes); break;
    case EVOGRAD_BFLOAT16: EVOGRAD_LOCAL(project_bf16)(src, global, n, readable, fresh, noise, k0, kn,
                                                       lanes); break;
  }
}

const evograd_cpu_kernels EVOGRAD_JOIN(evograd_cpu_kernels_, EVOGRAD_ISA) = {
    EVOGRAD_ISA_NAME, EVOGRAD_LOCAL(perturb), EVOGRAD_LOCAL(combine), EVOGRAD_LOCAL(project)};
