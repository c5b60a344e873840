// The CUDA launches of csrc/cuda/kernels.cu replayed on the host: the same
// per-thread code (csrc/cuda/quad_work.cuh) run thread after thread, with
// project's per-block reduction tree in the launch's order. Host memory in,
// host memory out; arguments are assumed valid (the entry points check them).
// Without a GPU this tests the kernels' indexing, vector paths and
// arithmetic against the CPU kernels; with one, the device must equal it.
#ifndef EVOGRAD_TESTS_CUDA_REPLAY_H
#define EVOGRAD_TESTS_CUDA_REPLAY_H

#include <cstdint>

extern "C" {
#include "evograd/evograd.h"
}

namespace cuda_replay {

void perturb(evograd_dtype dtype, const evograd_span* spans, size_t n_spans,
             const evograd_noise& noise, int64_t k);
void combine(evograd_dtype dtype, const evograd_span* spans, size_t n_spans,
             const evograd_noise& noise, const double* weights, int64_t population);
void project(evograd_dtype dtype, const evograd_span* spans, size_t n_spans,
             const evograd_noise& noise, int64_t population, double* out);

// How many quads of the list the vector (16-byte) path serves.
int64_t vector_quads(evograd_dtype dtype, const evograd_span* spans, size_t n_spans, bool writes);

}  // namespace cuda_replay

#endif
