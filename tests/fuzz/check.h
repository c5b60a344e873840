/* Reference values the harnesses compare accepted results with. */
#ifndef EVOGRAD_FUZZ_CHECK_H
#define EVOGRAD_FUZZ_CHECK_H

#include <math.h>
#include <stdio.h>

#include "cpu/isa.h"
#include "storage.h"
#include "input.h"

#define FZ_REQUIRE(cond)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      abort();                                                             \
    }                                                                      \
  } while (0)

static inline double fz_load(evograd_dtype d, const void *p, int64_t i) {
  switch (d) {
    case EVOGRAD_FLOAT32: return evograd_load_f32(p, i);
    case EVOGRAD_FLOAT16: return evograd_load_f16(p, i);
    case EVOGRAD_BFLOAT16: return evograd_load_bf16(p, i);
    default: return evograd_load_f64(p, i);
  }
}

static inline double fz_noise_round(evograd_dtype d, double v) {
  return d == EVOGRAD_FLOAT64 ? v : (double)(float)v;
}

/* The value storing v in dtype d gives, read back. */
static inline double fz_stored(evograd_dtype d, double v) {
  uint64_t buf = 0;
  switch (d) {
    case EVOGRAD_FLOAT32: evograd_store_f32(&buf, 0, v); return evograd_load_f32(&buf, 0);
    case EVOGRAD_FLOAT16: evograd_store_f16(&buf, 0, v); return evograd_load_f16(&buf, 0);
    case EVOGRAD_BFLOAT16: evograd_store_bf16(&buf, 0, v); return evograd_load_bf16(&buf, 0);
    default: return v;
  }
}


/* The list's buffers equal `s`'s copies value for value as dtype d: the same
 * bits, except that any NaN equals any NaN (which NaN an operation with two
 * NaN operands returns depends on their order, which compilers may swap). */
static inline int fz_same_values(evograd_dtype d, const fz_list *l, const fz_snapshot *s) {
  const size_t esize = fz_esize(d);
  size_t i, j;
  for (i = 0; i < l->n_owned; ++i)
    for (j = 0; j + esize <= l->owned_bytes[i]; j += esize) {
      const double a = fz_load(d, (const char *)l->owned[i] + j, 0);
      const double b = fz_load(d, (const char *)s->copy[i] + j, 0);
      if (!(isnan(a) && isnan(b)) && memcmp((const char *)l->owned[i] + j,
                                            (const char *)s->copy[i] + j, esize) != 0)
        return 0;
    }
  return 1;
}

/* After an accepted in-place call: every other build of the CPU kernels
 * this machine runs, started from the same inputs (`before`), must return
 * the same status and leave the same values (fz_same_values). CALL is the
 * call expression. */
#define FZ_SAME_ON_EVERY_BUILD(d, l, before, status, CALL)                      \
  do {                                                                          \
    static const char *const names_[] = {"portable", "avx2", "avx512"};         \
    fz_snapshot after_;                                                         \
    size_t b_;                                                                  \
    fz_snap(l, &after_);                                                        \
    for (b_ = 0; b_ < sizeof names_ / sizeof names_[0]; ++b_) {                 \
      if (eg_cpu_kernels_use(names_[b_]) != EVOGRAD_OK) continue;               \
      fz_restore(l, before);                                                    \
      FZ_REQUIRE((CALL) == (status));                                           \
      FZ_REQUIRE(fz_same_values(d, l, &after_));                                \
    }                                                                           \
    FZ_REQUIRE(eg_cpu_kernels_use(NULL) == EVOGRAD_OK);                         \
    fz_snap_free(l, &after_);                                                   \
  } while (0)

static inline int fz_same(double a, double b) {
  return (isnan(a) && isnan(b)) || a == b;
}

static inline int fz_valid_dtype(evograd_dtype d) {
  return d == EVOGRAD_FLOAT32 || d == EVOGRAD_FLOAT64 || d == EVOGRAD_FLOAT16 ||
         d == EVOGRAD_BFLOAT16;
}

/* The noise term one element receives: eps_k[g] for perturb, the weighted
 * sum for combine (`ctx` carries what it needs). */
typedef double (*fz_term_fn)(int64_t g, const void *ctx);

/* After an accepted perturb or combine over [b, e): each element in the range
 * is stored(src before the call + term(g)), each other one is unchanged. */
static inline void fz_check_written(evograd_dtype d, const fz_list *l, const fz_snapshot *snap,
                                    int64_t b, int64_t e, fz_term_fn term, const void *ctx) {
  int64_t g = 0;
  for (size_t i = 0; i < l->n; ++i) {
    for (int64_t j = 0; j < l->spans[i].numel; ++j, ++g) {
      const double got = fz_load(d, l->spans[i].dst, j);
      if (g >= b && g < e) {
        const void *src0 = snap->copy[l->src_owned[i]];
        FZ_REQUIRE(fz_same(got, fz_stored(d, fz_load(d, src0, j) + term(g, ctx))));
      } else {
        FZ_REQUIRE(fz_same(got, fz_load(d, snap->copy[l->dst_owned[i]], j)));
      }
    }
  }
}

/* z of candidate k at g, read one element at a time through
 * evograd_noise_values (the unit tests hold it to an independent Philox). */
static inline double fz_z(const evograd_noise *noise, int64_t k, int64_t g) {
  evograd_noise unit = *noise;
  double z;
  unit.sigma = 1.0;
  FZ_REQUIRE(evograd_noise_values(&unit, k, g, 1, &z) == EVOGRAD_OK);
  return z;
}

#endif
