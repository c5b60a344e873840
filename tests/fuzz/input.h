/* Decoding fuzzer bytes into C-ABI arguments: span lists backed by exactly
 * sized heap buffers (so AddressSanitizer sees any stray access), sizes that
 * the library must reject, ranges, noise settings and raw doubles (NaN, inf,
 * denormals included). Harness-side invariant failures call abort(). */
#ifndef EVOGRAD_FUZZ_INPUT_H
#define EVOGRAD_FUZZ_INPUT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "evograd/evograd.h"

typedef struct {
  const uint8_t *p;
  size_t n;
} fz_reader;

static inline uint8_t fz_u8(fz_reader *r) {
  if (r->n == 0) return 0;
  r->n--;
  return *r->p++;
}
static inline uint64_t fz_u64(fz_reader *r) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | fz_u8(r);
  return v;
}
static inline double fz_f64(fz_reader *r) {
  uint64_t bits = fz_u64(r);
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}
/* Mostly ordinary values, sometimes any bit pattern at all. */
static inline double fz_value(fz_reader *r) {
  const uint8_t tag = fz_u8(r);
  if (tag < 200) return ((double)tag - 100.0) / 16.0;
  return fz_f64(r);
}

static inline size_t fz_esize(evograd_dtype d) {
  switch (d) {
    case EVOGRAD_FLOAT32: return 4;
    case EVOGRAD_FLOAT64: return 8;
    case EVOGRAD_FLOAT16:
    case EVOGRAD_BFLOAT16: return 2;
  }
  return 8; /* invalid dtypes: any buffer size, the call must fail anyway */
}

/* A list of spans. `bogus` is set when a size is one the library must
 * reject (negative, or overflowing bytes / the total). */
typedef struct {
  evograd_span spans[8];
  size_t n;
  void *owned[16];
  size_t owned_bytes[16];
  size_t n_owned;
  int src_owned[8]; /* index into owned[] of each span's src, or -1 */
  int dst_owned[8]; /* index of a dst that is a whole buffer (own or in place), or -1 */
  int bogus;
  int overlapping; /* a dst overlaps some src other than exactly its own */
} fz_list;

static inline void *fz_alloc(fz_list *l, size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  l->owned_bytes[l->n_owned] = bytes;
  l->owned[l->n_owned++] = p;
  return p;
}

static inline void fz_list_free(fz_list *l) {
  for (size_t i = 0; i < l->n_owned; ++i) free(l->owned[i]);
}

static inline void fz_fill(fz_reader *r, evograd_dtype d, void *p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = fz_value(r);
    switch (d) {
      case EVOGRAD_FLOAT32: ((float *)p)[i] = (float)v; break;
      case EVOGRAD_FLOAT16:
      case EVOGRAD_BFLOAT16: ((uint16_t *)p)[i] = (uint16_t)fz_u64(r); break;
      default: memcpy((char *)p + 8 * i, &v, 8); break;
    }
  }
}

static inline void fz_make_list(fz_reader *r, evograd_dtype d, int writable, fz_list *l) {
  const size_t es = fz_esize(d);
  memset(l, 0, sizeof *l);
  l->n = fz_u8(r) % 9;
  for (size_t i = 0; i < l->n; ++i) {
    const uint8_t cls = fz_u8(r);
    int64_t numel = cls % 40;
    if (cls >= 248) {
      numel = -(int64_t)(1 + fz_u8(r)); /* negative */
      l->bogus = 1;
    } else if (cls >= 240) {
      numel = INT64_MAX / (int64_t)es + 1 + fz_u8(r); /* bytes overflow */
      l->bogus = 1;
    }
    l->src_owned[i] = l->dst_owned[i] = -1;
    if (numel >= 0 && numel < 40) {
      void *src = fz_alloc(l, (size_t)numel * es);
      l->src_owned[i] = (int)l->n_owned - 1;
      fz_fill(r, d, src, numel);
      void *dst = NULL;
      if (writable) {
        const uint8_t how = fz_u8(r) % 8;
        if (how == 0) {
          dst = src; /* in place */
          l->dst_owned[i] = l->src_owned[i];
        } else if (how == 1 && numel > 1) {
          dst = (char *)src + es; /* shifted onto its own input: must fail */
          l->overlapping = 1;
        } else if (how == 2 && i > 0 && l->spans[i - 1].numel > 0 && numel > 0) {
          dst = (void *)l->spans[i - 1].src; /* another span's input: must fail */
          l->overlapping = 1;
        } else {
          dst = fz_alloc(l, (size_t)numel * es);
          l->dst_owned[i] = (int)l->n_owned - 1;
          memset(dst, 0xA5, (size_t)numel * es);
        }
      }
      l->spans[i].src = src;
      l->spans[i].dst = dst;
      l->spans[i].numel = numel;
    } else {
      l->spans[i].src = fz_alloc(l, 16); /* never valid for numel */
      l->spans[i].dst = writable ? fz_alloc(l, 16) : NULL;
      l->spans[i].numel = numel;
    }
  }
}

static inline int64_t fz_total(const fz_list *l) {
  int64_t t = 0;
  for (size_t i = 0; i < l->n; ++i) t += l->spans[i].numel;
  return t;
}

static inline evograd_range fz_range(fz_reader *r, int64_t total, int block_aligned) {
  const uint8_t how = fz_u8(r) % 4;
  evograd_range all = {0, -1};
  if (how == 0) return all;
  int64_t b = (int64_t)(fz_u8(r) % 48) - 4, e = b + (int64_t)(fz_u8(r) % 48) - 4;
  if (block_aligned && how == 1) {
    b = 0;
    e = total;
  }
  evograd_range out = {b, e};
  return out;
}

static inline evograd_noise fz_noise(fz_reader *r) {
  evograd_noise n;
  const uint8_t s = fz_u8(r);
  n.seed = fz_u64(r);
  n.sigma = s < 128 ? 1e-3 * (1 + s) : (s < 192 ? fz_value(r) : fz_f64(r));
  n.kind = (evograd_noise_kind)(fz_u8(r) % 3); /* 2 is invalid */
  n.antithetic = fz_u8(r) & 1;
  return n;
}

/* Snapshot of every buffer the list owns, to prove that failed calls wrote
 * nothing and that accepted ones wrote only inside their range. */
typedef struct {
  void *copy[16];
} fz_snapshot;

static inline void fz_snap(const fz_list *l, fz_snapshot *s) {
  for (size_t i = 0; i < l->n_owned; ++i) {
    s->copy[i] = malloc(l->owned_bytes[i] ? l->owned_bytes[i] : 1);
    memcpy(s->copy[i], l->owned[i], l->owned_bytes[i]);
  }
}

static inline int fz_unchanged(const fz_list *l, const fz_snapshot *s) {
  for (size_t i = 0; i < l->n_owned; ++i)
    if (memcmp(s->copy[i], l->owned[i], l->owned_bytes[i]) != 0) return 0;
  return 1;
}

static inline void fz_restore(fz_list *l, const fz_snapshot *s) {
  for (size_t i = 0; i < l->n_owned; ++i) memcpy(l->owned[i], s->copy[i], l->owned_bytes[i]);
}

static inline void fz_snap_free(const fz_list *l, fz_snapshot *s) {
  for (size_t i = 0; i < l->n_owned; ++i) free(s->copy[i]);
}

#endif
