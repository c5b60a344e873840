// What precision a loss was computed in, read from its autograd graph (as
// Python's evograd/precision.py reads it from the calls): under autocast
// the parameters stay float32 while matmuls and convolutions give half
// precision, and a C++ closure may switch autocast on inside itself.
#pragma once

#include "evograd/evograd.hpp"

namespace evograd {
namespace detail {

// The narrowest floating type (BFloat16 before Half: the coarser rounding)
// any operation recorded in loss's graph produced; nullopt: none narrower
// than float32.
c10::optional<c10::ScalarType> narrowest_float(const torch::Tensor& loss);

// Half an ulp at 1 of BFloat16 or Half.
double unit_roundoff(c10::ScalarType type);

}  // namespace detail
}  // namespace evograd
