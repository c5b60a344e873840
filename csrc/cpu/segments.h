/* Walks a global element range [begin, end) of a span list as contiguous
 * pieces, one per span it touches; zero-size spans are skipped. */
#ifndef EVOGRAD_CPU_SEGMENTS_H
#define EVOGRAD_CPU_SEGMENTS_H

#include "evograd/evograd.h"

typedef struct evograd_segment {
  size_t span;    /* which span */
  int64_t local;  /* first element within the span */
  int64_t global; /* its global index */
  int64_t count;  /* elements in this piece */
} evograd_segment;

typedef struct evograd_segment_walk {
  const evograd_span *spans;
  size_t n_spans;
  size_t span;
  int64_t span_start; /* global index of spans[span][0] */
  int64_t next;       /* next global index to visit */
  int64_t end;
} evograd_segment_walk;

static inline void evograd_walk_init(evograd_segment_walk *w, const evograd_span *spans,
                                     size_t n_spans, int64_t begin, int64_t end) {
  w->spans = spans;
  w->n_spans = n_spans;
  w->span = 0;
  w->span_start = 0;
  w->next = begin;
  w->end = end;
}

static inline int evograd_walk_next(evograd_segment_walk *w, evograd_segment *seg) {
  while (w->next < w->end && w->span < w->n_spans) {
    const int64_t n = w->spans[w->span].numel;
    const int64_t stop = w->span_start + n;
    if (w->next < stop) {
      const int64_t last = stop < w->end ? stop : w->end;
      seg->span = w->span;
      seg->local = w->next - w->span_start;
      seg->global = w->next;
      seg->count = last - w->next;
      w->next = last;
      return 1;
    }
    w->span_start = stop;
    ++w->span;
  }
  return 0;
}

/* Where a segment's elements start in its span's memory. */
static inline const void *evograd_segment_src(const evograd_span *spans, const evograd_segment *seg,
                                              size_t esize) {
  return (const char *)spans[seg->span].src + (size_t)seg->local * esize;
}
static inline void *evograd_segment_dst(const evograd_span *spans, const evograd_segment *seg,
                                        size_t esize) {
  return (char *)spans[seg->span].dst + (size_t)seg->local * esize;
}

#endif
