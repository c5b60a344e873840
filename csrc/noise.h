/*
 * z(seed, k, i): the noise of candidate k at global index i, built on
 * Philox. One Philox call yields the noise of four consecutive indices
 * (a "quad": i >> 2), with counter (quad lo, quad hi, stream, 0) and key
 * (seed lo, seed hi). With antithetic noise, candidates 2j and 2j+1 share
 * stream j and the odd one takes the negation.
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

/* The Philox words behind quad q: counter (q lo, q hi, stream, 0). */
EVOGRAD_HD evograd_u32x4 evograd_quad_words(const evograd_noise_stream *s, uint64_t q) {
  evograd_u32x4 c;
  c.v[0] = (uint32_t)q;
  c.v[1] = (uint32_t)(q >> 32);
  c.v[2] = s->stream;
  c.v[3] = 0u;
  return evograd_philox4x32_10(c, s->key0, s->key1);
}

/* z for the four indices 4q .. 4q+3 (unscaled; the antithetic sign is in
 * s.scale). Sign noise is the top bit of each word. Gaussian noise is
 * Box-Muller on word pairs with u in (0, 1) at 2^-32 resolution, so |z| is
 * at most about 6.7. */
EVOGRAD_HD void evograd_noise_quad(const evograd_noise_stream *s, uint64_t q,
                                   double z[4]) {
  const evograd_u32x4 c = evograd_quad_words(s, q);
  if (!s->gauss) {
    int j;
    for (j = 0; j < 4; ++j) z[j] = (c.v[j] & 0x80000000u) ? -1.0 : 1.0;
  } else {
    evograd_box_muller(c.v[0], c.v[1], &z[0], &z[1]);
    evograd_box_muller(c.v[2], c.v[3], &z[2], &z[3]);
  }
}

/* z for the 32 indices 32b .. 32b+31: eight quads whose Philox calls run in
 * lockstep, so the CPU overlaps (or vectorises) eight independent chains
 * instead of waiting on one. Same values as eight evograd_noise_quad calls. */
#define EVOGRAD_BATCH 32
EVOGRAD_HD void evograd_noise_batch(const evograd_noise_stream *s, uint64_t b,
                                    double z[EVOGRAD_BATCH]) {
  uint32_t c[8][4];
  uint32_t k0 = s->key0, k1 = s->key1;
  int l, r;
  for (l = 0; l < 8; ++l) {
    const uint64_t q = 8 * b + (uint64_t)l;
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
  if (!s->gauss) {
    for (l = 0; l < 8; ++l) {
      int j;
      for (j = 0; j < 4; ++j) z[4 * l + j] = (c[l][j] & 0x80000000u) ? -1.0 : 1.0;
    }
  } else {
    for (l = 0; l < 8; ++l) {
      evograd_box_muller(c[l][0], c[l][1], &z[4 * l], &z[4 * l + 1]);
      evograd_box_muller(c[l][2], c[l][3], &z[4 * l + 2], &z[4 * l + 3]);
    }
  }
}

#endif /* EVOGRAD_NOISE_H */
