// The closures' losses checked, and lambda's gradients taken and accumulated.
#include "closures.h"

#include <cmath>

namespace evograd {
namespace detail {

double checked_loss(const torch::Tensor& loss, const char* which, bool allow_nonfinite) {
  TORCH_CHECK_TYPE(loss.defined(), "evograd: the ", which, " loss closure returned an undefined tensor");
  TORCH_CHECK_VALUE(loss.numel() == 1, "evograd: the ", which,
                    " loss must be a scalar, got shape ", loss.sizes());
  TORCH_CHECK_TYPE(loss.is_floating_point(), "evograd: the ", which,
                   " loss must be floating point, got ", loss.scalar_type());
  const double v = loss.detach().to(torch::kCPU, torch::kDouble).item<double>();
  TORCH_CHECK_VALUE(allow_nonfinite || std::isfinite(v), "evograd: the ", which,
                    " loss is not finite (", v, "); option nonfinite = \"drop\" skips such "
                    "candidates");
  return v;
}

std::vector<torch::Tensor> hyper_gradient(const torch::Tensor& loss,
                                          const std::vector<torch::Tensor>& hyper,
                                          bool allow_unused) {
  static const char* hint = "; option allow_unused = true lets such hyperparameters get no gradient";
  if (!loss.requires_grad()) {
    TORCH_CHECK_VALUE(allow_unused, "evograd: the training loss does not depend on the "
                      "hyperparameters", hint);
    return std::vector<torch::Tensor>(hyper.size());
  }
  auto g = torch::autograd::grad({loss.reshape({})}, hyper, {}, false, false, true);
  for (size_t j = 0; j < g.size(); ++j)
    TORCH_CHECK_VALUE(g[j].defined() || allow_unused, "evograd: the training loss does not "
                      "depend on hyperparameter ", j, hint);
  return g;
}

void accumulate(const std::vector<torch::Tensor>& hyper, const std::vector<torch::Tensor>& parts) {
  torch::NoGradGuard no_grad;
  for (size_t j = 0; j < hyper.size(); ++j) {
    if (!parts[j].defined()) continue;
    auto& grad = hyper[j].mutable_grad();
    if (grad.defined()) {
      grad.add_(parts[j]);
    } else {
      grad = parts[j];
    }
  }
}

}  // namespace detail
}  // namespace evograd
