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

/* z for the four indices 4q .. 4q+3 (unscaled; the antithetic sign is in
 * s.scale). Sign noise is the top bit of each word. Gaussian noise is
 * Box-Muller on word pairs with u in (0, 1) at 2^-32 resolution, so |z| is
 * at most about 6.7. */
EVOGRAD_HD void evograd_noise_quad(const evograd_noise_stream *s, uint64_t q,
                                   double z[4]) {
  evograd_u32x4 c;
  c.v[0] = (uint32_t)q;
  c.v[1] = (uint32_t)(q >> 32);
  c.v[2] = s->stream;
  c.v[3] = 0u;
  c = evograd_philox4x32_10(c, s->key0, s->key1);
  if (!s->gauss) {
    int j;
    for (j = 0; j < 4; ++j) z[j] = (c.v[j] & 0x80000000u) ? -1.0 : 1.0;
  } else {
    int j;
    for (j = 0; j < 4; j += 2) {
      const double u1 = ((double)c.v[j] + 0.5) * (1.0 / 4294967296.0);
      const double u2 = ((double)c.v[j + 1] + 0.5) * (1.0 / 4294967296.0);
      const double r = sqrt(-2.0 * log(u1));
      z[j] = r * cos(EVOGRAD_TWO_PI * u2);
      z[j + 1] = r * sin(EVOGRAD_TWO_PI * u2);
    }
  }
}

#endif /* EVOGRAD_NOISE_H */
