// A step whose weights are (numerically) one-hot, or whose candidate losses
// are all equal, has a hypergradient of ~0: it is reported and warned about
// (Python: evograd/phases.py, collapse).
#pragma once

#include <torch/torch.h>

#include <utility>

namespace evograd {
namespace detail {

// (effective sample size 1 / sum(w^2), collapsed); warns (TORCH_WARN) when
// collapsed. `reported`: the losses as the closure returned them (dropped
// ones non-finite); `losses`: as weighted.
std::pair<double, bool> collapse(const torch::Tensor& reported, const torch::Tensor& losses,
                                 const torch::Tensor& weights, int64_t step);

}  // namespace detail
}  // namespace evograd
