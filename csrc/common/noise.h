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

#include <math.h>

#include "evograd/evograd.h" /* evograd_noise_kind: the registry of kinds */
#include "gauss_math.h"
#include "philox.h"

typedef struct evograd_noise_stream {
  uint32_t key0, key1;   /* seed */
  uint32_t stream;       /* candidate (or antithetic pair) index */
  double scale;          /* +sigma or -sigma (antithetic partner) */
  evograd_noise_kind kind;
} evograd_noise_stream;

EVOGRAD_HD evograd_noise_stream evograd_make_stream(uint64_t seed, double sigma,
                                                    evograd_noise_kind kind, int antithetic,
                                                    int64_t k) {
  evograd_noise_stream s;
  s.key0 = (uint32_t)seed;
  s.key1 = (uint32_t)(seed >> 32);
  s.stream = (uint32_t)(antithetic ? (k >> 1) : k);
  s.scale = (antithetic && (k & 1)) ? -sigma : sigma;
  s.kind = kind;
  return s;
}

/* Two standard normals from two Philox words (Box-Muller, u in (0, 1)),
 * with gauss_math.h's functions rather than libm's: the same bits in every
 * CPU build and SIMD lane. */
EVOGRAD_HD void evograd_box_muller(uint32_t w0, uint32_t w1, double *z0, double *z1) {
  const double r = sqrt(evograd_minus_two_log(evograd_unit_open(w0)));
  double c, s;
  evograd_cos_sin_turns(evograd_unit_open(w1), &c, &s);
  *z0 = EVOGRAD_MUL(r, c);
  *z1 = EVOGRAD_MUL(r, s);
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
  switch (s->kind) {
    case EVOGRAD_NOISE_GAUSS: {
      const evograd_u32x4 c = evograd_noise_words(s, q);
      evograd_box_muller(c.v[0], c.v[1], &z[0], &z[1]);
      evograd_box_muller(c.v[2], c.v[3], &z[2], &z[3]);
      break;
    }
    case EVOGRAD_NOISE_SIGN:
    default: { /* the C ABI's checks admit only registered kinds */
      const uint32_t bits = evograd_sign_word(s, q >> 3) >> (4 * (q & 7));
      int j;
      for (j = 0; j < 4; ++j) z[j] = evograd_sign_of_bit((bits >> j) & 1u);
      break;
    }
  }
}

#endif /* EVOGRAD_NOISE_H */
