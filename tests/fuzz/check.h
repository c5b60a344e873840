/* Reference values the harnesses compare accepted results with. */
#ifndef EVOGRAD_FUZZ_CHECK_H
#define EVOGRAD_FUZZ_CHECK_H

#include <math.h>
#include <stdio.h>

#include "cpu/storage.h"
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

static inline int fz_same(double a, double b) {
  return (isnan(a) && isnan(b)) || a == b;
}

static inline int fz_valid_dtype(evograd_dtype d) {
  return d == EVOGRAD_FLOAT32 || d == EVOGRAD_FLOAT64 || d == EVOGRAD_FLOAT16 ||
         d == EVOGRAD_BFLOAT16;
}

#endif
