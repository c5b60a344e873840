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
 * Accuracy against a long double reference (tests/c/test_noise.cpp): both
 * within a few units in the last place of the double result; the test
 * states the bound it checks.
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

/* A Philox word as the open-interval uniform (w + 1/2) / 2^32. The unsigned
 * word goes through a signed one so that SIMD code needs only the signed
 * integer-to-double conversion; both steps are exact. */
EVOGRAD_HD double evograd_unit_open(uint32_t w) {
  const double centred = (double)(int32_t)(w ^ 0x80000000u); /* w - 2^31 */
  return (centred + 2147483648.5) * (1.0 / 4294967296.0);
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
  double p = 1.0 / 21;
  p = EVOGRAD_ADD(EVOGRAD_MUL(p, z), 1.0 / 19);
  p = EVOGRAD_ADD(EVOGRAD_MUL(p, z), 1.0 / 17);
  p = EVOGRAD_ADD(EVOGRAD_MUL(p, z), 1.0 / 15);
  p = EVOGRAD_ADD(EVOGRAD_MUL(p, z), 1.0 / 13);
  p = EVOGRAD_ADD(EVOGRAD_MUL(p, z), 1.0 / 11);
  p = EVOGRAD_ADD(EVOGRAD_MUL(p, z), 1.0 / 9);
  p = EVOGRAD_ADD(EVOGRAD_MUL(p, z), 1.0 / 7);
  p = EVOGRAD_ADD(EVOGRAD_MUL(p, z), 1.0 / 5);
  p = EVOGRAD_ADD(EVOGRAD_MUL(p, z), 1.0 / 3);
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
  double pc = 1.0 / 6402373705728000.0; /* 1/18! */
  double ps = 1.0 / 355687428096000.0;  /* 1/17! */
  double cx, sx;
  pc = EVOGRAD_ADD(EVOGRAD_MUL(pc, -z), 1.0 / 20922789888000.0);
  pc = EVOGRAD_ADD(EVOGRAD_MUL(pc, -z), 1.0 / 87178291200.0);
  pc = EVOGRAD_ADD(EVOGRAD_MUL(pc, -z), 1.0 / 479001600.0);
  pc = EVOGRAD_ADD(EVOGRAD_MUL(pc, -z), 1.0 / 3628800.0);
  pc = EVOGRAD_ADD(EVOGRAD_MUL(pc, -z), 1.0 / 40320.0);
  pc = EVOGRAD_ADD(EVOGRAD_MUL(pc, -z), 1.0 / 720.0);
  pc = EVOGRAD_ADD(EVOGRAD_MUL(pc, -z), 1.0 / 24.0);
  pc = EVOGRAD_ADD(EVOGRAD_MUL(pc, -z), 1.0 / 2.0);
  cx = EVOGRAD_ADD(EVOGRAD_MUL(pc, -z), 1.0);
  ps = EVOGRAD_ADD(EVOGRAD_MUL(ps, -z), 1.0 / 1307674368000.0);
  ps = EVOGRAD_ADD(EVOGRAD_MUL(ps, -z), 1.0 / 6227020800.0);
  ps = EVOGRAD_ADD(EVOGRAD_MUL(ps, -z), 1.0 / 39916800.0);
  ps = EVOGRAD_ADD(EVOGRAD_MUL(ps, -z), 1.0 / 362880.0);
  ps = EVOGRAD_ADD(EVOGRAD_MUL(ps, -z), 1.0 / 5040.0);
  ps = EVOGRAD_ADD(EVOGRAD_MUL(ps, -z), 1.0 / 120.0);
  ps = EVOGRAD_ADD(EVOGRAD_MUL(ps, -z), 1.0 / 6.0);
  sx = EVOGRAD_ADD(x, EVOGRAD_MUL(EVOGRAD_MUL(ps, -z), x));
  /* quadrant 0: (c, s); 1: (-s, c); 2: (-c, -s); 3: (s, -c) */
  {
    const double a = (quadrant & 1) ? sx : cx;
    const double b = (quadrant & 1) ? cx : sx;
    *c = (quadrant == 1 || quadrant == 2) ? -a : a;
    *s = (quadrant >= 2) ? -b : b;
  }
}

#endif /* EVOGRAD_GAUSS_MATH_H */
