/*
 * z(seed, k, i): the noise of candidate k at global index i, built on
 * Philox4x32-10 with key (seed lo, seed hi) and counter (c lo, c hi,
 * stream, 0):
 *   sign:  one call gives 128 signs, one per bit. Index i uses c = i >> 7,
 *          word (i >> 5) & 3, bit i & 31; a set bit is -1.
 *   gauss: one call gives four normals. Index i uses c = i >> 2 (its
 *          "quad"), Box-Muller on words (0, 1) and (2, 3).
 * With antithetic noise, candidates 2j and 2j+1 share stream j and the odd
 * one takes the negation.
 */
#ifndef EVOGRAD_NOISE_H
#define EVOGRAD_NOISE_H

#include "philox.h"

#if defined(__CUDACC__)
#include <math.h>
#else
#include <math.h>
#endif

#define EVOGRAD_TWO_PI 6.283185307179586476925286766559

typedef struct evograd_noise_stream {
  uint32_t key0, key1;   /* seed */
  uint32_t stream;       /* candidate (or antithetic pair) index */
  double scale;          /* +sigma or -sigma (antithetic partner) */
  int gauss;
} evograd_noise_stream;

EVOGRAD_HD evograd_noise_stream evograd_make_stream(uint64_t seed, double sigma,
                                                    int gauss, int antithetic,
                                                    int64_t k) {
  evograd_noise_stream s;
  s.key0 = (uint32_t)seed;
  s.key1 = (uint32_t)(seed >> 32);
  s.stream = (uint32_t)(antithetic ? (k >> 1) : k);
  s.scale = (antithetic && (k & 1)) ? -sigma : sigma;
  s.gauss = gauss;
  return s;
}

/* Two standard normals from two Philox words (Box-Muller, u in (0, 1)). */
EVOGRAD_HD void evograd_box_muller(uint32_t w0, uint32_t w1, double *z0, double *z1) {
  const double u1 = ((double)w0 + 0.5) * (1.0 / 4294967296.0);
  const double u2 = ((double)w1 + 0.5) * (1.0 / 4294967296.0);
  const double r = sqrt(-2.0 * log(u1));
  *z0 = r * cos(EVOGRAD_TWO_PI * u2);
  *z1 = r * sin(EVOGRAD_TWO_PI * u2);
}

/* The four Philox words at counter c of the stream. */
EVOGRAD_HD evograd_u32x4 evograd_noise_words(const evograd_noise_stream *s, uint64_t c) {
  evograd_u32x4 x;
  x.v[0] = (uint32_t)c;
  x.v[1] = (uint32_t)(c >> 32);
  x.v[2] = s->stream;
  x.v[3] = 0u;
  return evograd_philox4x32_10(x, s->key0, s->key1);
}

/* +1 for bit 0, -1 for bit 1, without a branch: random bits would make a
 * branch mispredict half the time. */
EVOGRAD_HD double evograd_sign_of_bit(uint32_t bit) { return 1.0 - 2.0 * (double)bit; }

/* The 32 sign bits of indices 32w .. 32w+31 (bit j for index 32w + j). */
EVOGRAD_HD uint32_t evograd_sign_word(const evograd_noise_stream *s, uint64_t w) {
  return evograd_noise_words(s, w >> 2).v[w & 3];
}

/* z for the four indices 4q .. 4q+3, unscaled (the antithetic sign is in
 * s.scale). Gaussian |z| is at most about 6.7 (u in (0, 1) at 2^-32). */
EVOGRAD_HD void evograd_noise_quad(const evograd_noise_stream *s, uint64_t q,
                                   double z[4]) {
  if (!s->gauss) {
    const uint32_t bits = evograd_sign_word(s, q >> 3) >> (4 * (q & 7));
    int j;
    for (j = 0; j < 4; ++j) z[j] = evograd_sign_of_bit((bits >> j) & 1u);
  } else {
    const evograd_u32x4 c = evograd_noise_words(s, q);
    evograd_box_muller(c.v[0], c.v[1], &z[0], &z[1]);
    evograd_box_muller(c.v[2], c.v[3], &z[2], &z[3]);
  }
}

/* z for the 128 indices 128b .. 128b+127, the CPU kernels' unit: sign noise
 * is one Philox call; Gaussian noise is 32 quads whose Philox calls run
 * eight in lockstep, so the CPU overlaps (or vectorises) eight independent
 * chains instead of waiting on one. Same values as evograd_noise_quad. */
#define EVOGRAD_BATCH 128
EVOGRAD_HD void evograd_noise_batch(const evograd_noise_stream *s, uint64_t b,
                                    double z[EVOGRAD_BATCH]) {
  int g, l, r;
  if (!s->gauss) {
    const evograd_u32x4 w = evograd_noise_words(s, b);
    for (l = 0; l < EVOGRAD_BATCH; ++l) z[l] = evograd_sign_of_bit((w.v[l >> 5] >> (l & 31)) & 1u);
    return;
  }
  for (g = 0; g < 4; ++g) {
    uint32_t c[8][4];
    uint32_t k0 = s->key0, k1 = s->key1;
    double *zg = z + 32 * g;
    for (l = 0; l < 8; ++l) {
      const uint64_t q = 32 * b + 8 * (uint64_t)g + (uint64_t)l;
      c[l][0] = (uint32_t)q;
      c[l][1] = (uint32_t)(q >> 32);
      c[l][2] = s->stream;
      c[l][3] = 0u;
    }
    for (r = 0; r < 10; ++r) {
      for (l = 0; l < 8; ++l) evograd_philox_round(c[l], k0, k1);
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    for (l = 0; l < 8; ++l) {
      evograd_box_muller(c[l][0], c[l][1], &zg[4 * l], &zg[4 * l + 1]);
      evograd_box_muller(c[l][2], c[l][3], &zg[4 * l + 2], &zg[4 * l + 3]);
    }
  }
}

#endif /* EVOGRAD_NOISE_H */
