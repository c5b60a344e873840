// Whether a step's weights collapsed, and its warning.
#include "collapse.h"

#include <sstream>

#include "evograd/evograd.hpp"

namespace evograd {
namespace detail {

std::pair<double, bool> collapse(const torch::Tensor& reported, const torch::Tensor& losses,
                                 const torch::Tensor& weights, int64_t step) {
  const double ess = (weights * weights).sum().reciprocal().item<double>();
  const auto kept = losses.masked_select(torch::isfinite(reported));
  const bool equal = kept.numel() > 1 && kept.eq(kept[0]).all().item<bool>();
  const bool collapsed = ess < kCollapseEss || equal;
  if (collapsed) {
    std::ostringstream why;
    if (equal) {
      why << "all candidate losses are equal: sigma is below the loss's resolution, e.g. in "
             "bfloat16";
    } else {
      const auto w = weights.to(torch::kCPU, torch::kDouble);
      why << "weights [";
      for (int64_t k = 0; k < w.numel(); ++k) why << (k ? ", " : "") << w[k].item<double>();
      why << "], effective sample size " << ess << " < "
          << kCollapseEss << ": the loss spread is far above temperature";
    }
    TORCH_WARN("evograd: step ", step, " collapsed (", why.str(), "); its hypergradient is ~0. "
               "Raise temperature or lower sigma (or raise sigma for equal losses)");
  }
  return {ess, collapsed};
}

}  // namespace detail
}  // namespace evograd
