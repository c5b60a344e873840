/*
 * The two transcendental functions of Box-Muller, -2 log(u) and the cosine
 * and sine of 2 pi u, for u in (0, 1), written as straight-line double
 * arithmetic: no table, no branch, no libm. The CPU kernels evaluate them
 * many lanes at a time (the compiler vectorises the loops that call them)
 * and every build (portable or SIMD, any thread count) gets the same bits,
 * because each step is one IEEE operation in a fixed order. CUDA device code
 * compiles the same source; EVOGRAD_ADD/EVOGRAD_MUL keep nvcc from fusing a
 * multiply and an add into an FMA, which would change the last bit.
 *
 * Accuracy against a long double reference over 2^22 words: -2 log(u)
 * within 2 units of 2^-53 relative, cos and sin within 2 * 2^-53 absolute;
 * a Box-Muller value z = r cos within 4 * 2^-53 * max(r, 1) of the exact one
 * (tests/c/test_noise.cpp checks these bounds). libm's results differ from
 * these by about as much, so float32 noise is almost always the same float
 * either way.
 */
#ifndef EVOGRAD_GAUSS_MATH_H
#define EVOGRAD_GAUSS_MATH_H

#include <stdint.h>
#include <string.h>

#include "portable.h"

#if defined(__CUDA_ARCH__)
#define EVOGRAD_ADD(a, b) __dadd_rn((a), (b))
#define EVOGRAD_MUL(a, b) __dmul_rn((a), (b))
#else
#define EVOGRAD_ADD(a, b) ((a) + (b))
#define EVOGRAD_MUL(a, b) ((a) * (b))
#endif

EVOGRAD_HD uint64_t evograd_bits_of(double x) {
  uint64_t b;
  memcpy(&b, &x, sizeof b);
  return b;
}
EVOGRAD_HD double evograd_double_of(uint64_t b) {
  double x;
  memcpy(&x, &b, sizeof x);
  return x;
}

/* A Philox word as the open-interval uniform (w + 1/2) / 2^32: every step
 * is exact. */
EVOGRAD_HD double evograd_unit_open(uint32_t w) {
  return ((double)w + 0.5) * (1.0 / 4294967296.0);
}

/* -2 log(u) for u in [2^-33, 1): u = 2^e m with m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.1716, by its Taylor
 * series to s^21 (the first term left out is below 2^-59 of the sum); e log 2 in two parts
 * (the high part has 32 bits, so e * hi is exact). */
EVOGRAD_HD double evograd_minus_two_log(double u) {
  const uint64_t b = evograd_bits_of(u);
  const int64_t e0 = (int64_t)(b >> 52) - 1023;
  const double m0 = evograd_double_of((b & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
  const int up = m0 > 1.4142135623730951; /* m0 in [1, 2): halve the large ones */
  const double m = up ? EVOGRAD_MUL(m0, 0.5) : m0;
  const double e = (double)(int32_t)(e0 + up);
  const double f = EVOGRAD_ADD(m, -1.0); /* exact (Sterbenz) */
  const double s = f / EVOGRAD_ADD(f, 2.0);
  const double z = EVOGRAD_MUL(s, s);
  /* p = sum_j z^j / (2j + 3), j < 10, by Estrin's scheme: a shallow tree
   * of independent multiply-adds instead of one long Horner chain */
  const double z2 = EVOGRAD_MUL(z, z), z4 = EVOGRAD_MUL(z2, z2), z8 = EVOGRAD_MUL(z4, z4);
  const double q0 = EVOGRAD_ADD(1.0 / 3, EVOGRAD_MUL(1.0 / 5, z));
  const double q1 = EVOGRAD_ADD(1.0 / 7, EVOGRAD_MUL(1.0 / 9, z));
  const double q2 = EVOGRAD_ADD(1.0 / 11, EVOGRAD_MUL(1.0 / 13, z));
  const double q3 = EVOGRAD_ADD(1.0 / 15, EVOGRAD_MUL(1.0 / 17, z));
  const double q4 = EVOGRAD_ADD(1.0 / 19, EVOGRAD_MUL(1.0 / 21, z));
  const double r0 = EVOGRAD_ADD(q0, EVOGRAD_MUL(q1, z2));
  const double r1 = EVOGRAD_ADD(q2, EVOGRAD_MUL(q3, z2));
  const double p = EVOGRAD_ADD(EVOGRAD_ADD(r0, EVOGRAD_MUL(r1, z4)), EVOGRAD_MUL(q4, z8));
  {
    /* log u = e hi + (e lo + 2 s + 2 s z p'), p' = p without its 1 */
    const double ln2_hi = 0.6931471803691238, ln2_lo = 1.9082149292705877e-10;
    const double two_s = EVOGRAD_ADD(s, s);
    const double tail = EVOGRAD_ADD(EVOGRAD_MUL(e, ln2_lo), EVOGRAD_MUL(EVOGRAD_MUL(two_s, z), p));
    const double log_u = EVOGRAD_ADD(EVOGRAD_MUL(e, ln2_hi), EVOGRAD_ADD(two_s, tail));
    return EVOGRAD_MUL(-2.0, log_u);
  }
}

/* cos(2 pi u) and sin(2 pi u) for u in [0, 1], u a multiple of 2^-33 (as
 * evograd_unit_open gives): u = n/4 + r exactly, |r| <= 1/8; x = 2 pi r in
 * two parts (the high part has 20 bits, so r * hi is exact); Taylor series
 * to x^18 / x^17 on |x| <= pi/4 (the first terms left out are below 2^-63
 * of the result); then the quadrant
 * n turns (cos x, sin x) by n quarter turns. */
EVOGRAD_HD void evograd_cos_sin_turns(double u, double *c, double *s) {
  const double n = (double)(int32_t)EVOGRAD_ADD(EVOGRAD_MUL(u, 4.0), 0.5); /* round half up */
  const double r = EVOGRAD_ADD(u, EVOGRAD_MUL(n, -0.25));                /* exact */
  const double x = EVOGRAD_ADD(EVOGRAD_MUL(r, 6.283180236816406), EVOGRAD_MUL(r, 5.070363180226926e-06));
  const double z = EVOGRAD_MUL(x, x);
  const int quadrant = (int)(int32_t)n & 3;
  /* in y = -x^2, Estrin's scheme as for the logarithm:
   * cos x = 1 + y (1/2! + y/4! + ... + y^8/18!), sin x = x + x y (1/3! + ... + y^7/17!) */
  const double y = -z, y2 = EVOGRAD_MUL(y, y), y4 = EVOGRAD_MUL(y2, y2), y8 = EVOGRAD_MUL(y4, y4);
  const double c0 = EVOGRAD_ADD(1.0 / 2.0, EVOGRAD_MUL(1.0 / 24.0, y));
  const double c1 = EVOGRAD_ADD(1.0 / 720.0, EVOGRAD_MUL(1.0 / 40320.0, y));
  const double c2 = EVOGRAD_ADD(1.0 / 3628800.0, EVOGRAD_MUL(1.0 / 479001600.0, y));
  const double c3 = EVOGRAD_ADD(1.0 / 87178291200.0, EVOGRAD_MUL(1.0 / 20922789888000.0, y));
  const double pc = EVOGRAD_ADD(EVOGRAD_ADD(EVOGRAD_ADD(c0, EVOGRAD_MUL(c1, y2)),
                                            EVOGRAD_MUL(EVOGRAD_ADD(c2, EVOGRAD_MUL(c3, y2)), y4)),
                                EVOGRAD_MUL(1.0 / 6402373705728000.0, y8));
  const double s0 = EVOGRAD_ADD(1.0 / 6.0, EVOGRAD_MUL(1.0 / 120.0, y));
  const double s1 = EVOGRAD_ADD(1.0 / 5040.0, EVOGRAD_MUL(1.0 / 362880.0, y));
  const double s2 = EVOGRAD_ADD(1.0 / 39916800.0, EVOGRAD_MUL(1.0 / 6227020800.0, y));
  const double s3 = EVOGRAD_ADD(1.0 / 1307674368000.0, EVOGRAD_MUL(1.0 / 355687428096000.0, y));
  const double ps = EVOGRAD_ADD(EVOGRAD_ADD(s0, EVOGRAD_MUL(s1, y2)),
                                EVOGRAD_MUL(EVOGRAD_ADD(s2, EVOGRAD_MUL(s3, y2)), y4));
  const double cx = EVOGRAD_ADD(1.0, EVOGRAD_MUL(y, pc));
  const double sx = EVOGRAD_ADD(x, EVOGRAD_MUL(EVOGRAD_MUL(x, y), ps));
  /* quadrant 0: (c, s); 1: (-s, c); 2: (-c, -s); 3: (s, -c) */
  {
    const double a = (quadrant & 1) ? sx : cx;
    const double b = (quadrant & 1) ? cx : sx;
    *c = (quadrant == 1 || quadrant == 2) ? -a : a;
    *s = (quadrant >= 2) ? -b : b;
  }
}

#endif /* EVOGRAD_GAUSS_MATH_H */
