/* Walks a global element range [begin, end) of a span list as contiguous
 * pieces, one per span it touches; zero-size spans are skipped. */
#ifndef EVOGRAD_CPU_SEGMENTS_H
#define EVOGRAD_CPU_SEGMENTS_H

#include "evograd/evograd.h"
#include "common/noise.h"
#include "storage.h"

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

/* Runs CALL(T) once per segment of [begin, end) with `seg` set, T the
 * storage tag of dtype (see storage.h's EVOGRAD_DTYPE_SWITCH). */
#define EVOGRAD_FOR_EACH_SEGMENT(dtype, spans, n_spans, begin, end, seg, CALL) \
  do {                                                                         \
    evograd_segment_walk walk_;                                                \
    evograd_walk_init(&walk_, spans, n_spans, begin, end);                     \
    while (evograd_walk_next(&walk_, &seg)) {                                  \
      EVOGRAD_DTYPE_SWITCH(dtype, CALL)                                        \
    }                                                                          \
  } while (0)

/* A segment walked in pieces that stay inside one noise batch
 * (EVOGRAD_BATCH elements from one evograd_noise_batch call): n elements
 * from global index `global` (batch lane `lane`), `local` within the span. */
typedef struct evograd_piece {
  int64_t global, local, lane, n;
} evograd_piece;

/* The next piece of seg after `*done` of its elements; 0 at its end. */
static inline int evograd_next_piece(const evograd_segment *seg, int64_t *done,
                                     evograd_piece *p) {
  const int64_t left = seg->count - *done;
  int64_t in_batch;
  if (left <= 0) return 0;
  p->global = seg->global + *done;
  p->local = seg->local + *done;
  p->lane = p->global % EVOGRAD_BATCH;
  in_batch = EVOGRAD_BATCH - p->lane;
  p->n = in_batch < left ? in_batch : left;
  *done += p->n;
  return 1;
}

#endif
