// The K-sized formulas shared by the per-device kernels (formulas.cpp).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <vector>

namespace evograd_ops {

// Device-independent pieces of the K-sized formulas, on host doubles.
std::vector<double> softmax_weights(const char* op, const at::Tensor& losses,
                                    double temperature);

}  // namespace evograd_ops
