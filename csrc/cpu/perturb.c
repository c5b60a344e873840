/* out = base + eps_k: writes one candidate. */
#include "evograd/evograd.h"
#include "common/validate.h"
#include "isa.h"
#include "segments.h"

evograd_status evograd_perturb(evograd_dtype dtype, const evograd_span *spans,
                               size_t n_spans, const evograd_noise *noise,
                               int64_t k, evograd_range range) {
  int64_t total = 0, begin = 0, end = 0;
  evograd_status st;
  evograd_segment seg;
  evograd_segment_walk walk;
  evograd_noise_stream s;
  const evograd_cpu_kernels *kernels = eg_cpu_kernels();
  const size_t esize = eg_dtype_size(dtype);
  if ((st = eg_check_perturb(dtype, spans, n_spans, noise, k, &total)) != EVOGRAD_OK) return st;
  if ((st = eg_check_range(range, total, 0, &begin, &end)) != EVOGRAD_OK) return st;

  s = evograd_make_stream(noise->seed, noise->sigma, noise->kind,
                          noise->antithetic, k);
  evograd_walk_init(&walk, spans, n_spans, begin, end);
  while (evograd_walk_next(&walk, &seg))
    kernels->perturb(dtype, evograd_segment_src(spans, &seg, esize),
                     evograd_segment_dst(spans, &seg, esize), noise->first + seg.global, seg.count, &s);
  return EVOGRAD_OK;
}
