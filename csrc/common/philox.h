/*
 * Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC 2011): a pure function of a 128-bit counter and a 64-bit key. The
 * same code compiles as C99 and as CUDA device code, which is what makes the
 * noise bit-identical on CPU and GPU.
 */
#ifndef EVOGRAD_PHILOX_H
#define EVOGRAD_PHILOX_H

#include <stdint.h>

#include "portable.h"

typedef struct evograd_u32x4 {
  uint32_t v[4];
} evograd_u32x4;

EVOGRAD_HD void evograd_philox_round(uint32_t c[4], uint32_t k0, uint32_t k1) {
  const uint64_t p0 = (uint64_t)0xD2511F53u * c[0];
  const uint64_t p1 = (uint64_t)0xCD9E8D57u * c[2];
  const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
  const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
  const uint32_t n0 = hi1 ^ c[1] ^ k0;
  const uint32_t n2 = hi0 ^ c[3] ^ k1;
  c[0] = n0;
  c[1] = lo1;
  c[2] = n2;
  c[3] = lo0;
}

EVOGRAD_HD evograd_u32x4 evograd_philox4x32_10(evograd_u32x4 ctr, uint32_t k0,
                                               uint32_t k1) {
  int r;
  for (r = 0; r < 10; ++r) {
    evograd_philox_round(ctr.v, k0, k1);
    k0 += 0x9E3779B9u; /* Weyl sequence bumps: golden ratio, sqrt(3)-1 */
    k1 += 0xBB67AE85u;
  }
  return ctr;
}

#endif /* EVOGRAD_PHILOX_H */
