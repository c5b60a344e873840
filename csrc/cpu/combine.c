/* out = base + sum_k w_k eps_k: the weighted combination without any
 * candidate ever existing in memory. The sum runs in double, in k order. */
#include "evograd/evograd.h"
#include "common/validate.h"
#include "isa.h"
#include "segments.h"

evograd_status evograd_combine(evograd_dtype dtype, const evograd_span *spans,
                               size_t n_spans, const evograd_noise *noise,
                               const double *weights, int64_t population,
                               evograd_range range) {
  int64_t total = 0, begin = 0, end = 0;
  evograd_status st;
  evograd_segment seg;
  evograd_segment_walk walk;
  const evograd_cpu_kernels *kernels = eg_cpu_kernels();
  const size_t esize = eg_dtype_size(dtype);
  if ((st = eg_check_combine(dtype, spans, n_spans, noise, weights, population, &total)) !=
      EVOGRAD_OK)
    return st;
  if ((st = eg_check_range(range, total, 0, &begin, &end)) != EVOGRAD_OK) return st;

  evograd_walk_init(&walk, spans, n_spans, begin, end);
  while (evograd_walk_next(&walk, &seg))
    kernels->combine(dtype, evograd_segment_src(spans, &seg, esize),
                     evograd_segment_dst(spans, &seg, esize), noise->first + seg.global, seg.count, noise,
                     weights, population);
  return EVOGRAD_OK;
}
