/* The fuzzers' view of the storage types: each element read and written as
 * double, one at a time (through float_codec.h for the 16-bit ones), apart
 * from the kernels' own vectorised types (csrc/cpu/segment_kernels.h). */
#ifndef EVOGRAD_FUZZ_STORAGE_H
#define EVOGRAD_FUZZ_STORAGE_H

#include <stdint.h>
#include <string.h>

#include "common/float_codec.h"

static inline double evograd_load_f16(const void *p, int64_t i) {
  return evograd_decode_float(((const uint16_t *)p)[i], 10, 5);
}
static inline void evograd_store_f16(void *p, int64_t i, double v) {
  ((uint16_t *)p)[i] = (uint16_t)evograd_encode_float(v, 10, 5);
}
static inline double evograd_load_bf16(const void *p, int64_t i) {
  return evograd_decode_float(((const uint16_t *)p)[i], 7, 8);
}
static inline void evograd_store_bf16(void *p, int64_t i, double v) {
  ((uint16_t *)p)[i] = (uint16_t)evograd_encode_float(v, 7, 8);
}
static inline double evograd_load_f32(const void *p, int64_t i) {
  return (double)((const float *)p)[i];
}
static inline void evograd_store_f32(void *p, int64_t i, double v) {
  ((float *)p)[i] = (float)v;
}
static inline double evograd_load_f64(const void *p, int64_t i) {
  return ((const double *)p)[i];
}
static inline void evograd_store_f64(void *p, int64_t i, double v) {
  ((double *)p)[i] = v;
}
#endif
