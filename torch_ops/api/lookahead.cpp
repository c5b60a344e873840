// The lookahead estimator's passes. With u = g'/|g'| and g' the validation
// gradient at theta' = theta - alpha grad l_T(theta), T1-T2's hypergradient
// -alpha (d/dlambda grad_theta l_T)^T g' is -alpha |g'| / (2 s) times
// grad_lambda l_T(theta + s u) - grad_lambda l_T(theta - s u), up to O(s^2).
#include "lookahead.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "closures.h"
#include "detached.h"
#include "precision.h"

namespace evograd {
namespace detail {
namespace {

std::vector<torch::Tensor> zeros_for_undefined(std::vector<torch::Tensor> grads,
                                               const std::vector<torch::Tensor>& like) {
  for (size_t i = 0; i < grads.size(); ++i)
    if (!grads[i].defined()) grads[i] = torch::zeros_like(like[i]);
  return grads;
}

// targets <- base + scale * direction.
void write(const std::vector<torch::Tensor>& targets, const std::vector<torch::Tensor>& base,
           const std::vector<torch::Tensor>& direction, double scale) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < targets.size(); ++i) {
    auto t = targets[i];
    at::add_out(t, base[i], direction[i], scale);
  }
}

// A training pass with evograd::detached recording (first pass) or replaying.
torch::Tensor training_pass(const LossFn& train_loss, BaseValues& values) {
  ActiveValues on(&values);
  return train_loss();
}

}  // namespace

double norm(const std::vector<torch::Tensor>& tensors) {
  double total = 0.0;
  for (const auto& t : tensors)
    for (const auto& piece : t.detach().reshape(-1).split(int64_t{1} << 20))
      total += piece.to(torch::kDouble).pow(2).sum().item<double>();
  return std::sqrt(total);
}

double default_fd_step(const std::vector<torch::Tensor>& params) {
  double eps = 0.0;
  switch (params.at(0).scalar_type()) {
    case torch::kDouble: eps = std::numeric_limits<double>::epsilon(); break;
    case torch::kFloat: eps = std::numeric_limits<float>::epsilon(); break;
    case torch::kHalf: eps = static_cast<double>(std::numeric_limits<c10::Half>::epsilon()); break;
    case torch::kBFloat16: eps = static_cast<double>(std::numeric_limits<c10::BFloat16>::epsilon()); break;
    default: TORCH_CHECK_TYPE(false, "evograd: no default fd_step for ", params[0].scalar_type());
  }
  return std::sqrt(eps) * std::max(1.0, norm(params));
}

Lookahead lookahead(const std::vector<torch::Tensor>& params,
                    const std::vector<torch::Tensor>& hyper, Restorer& restore,
                    RngSnapshot& rng, const LossFn& train_loss, const LossFn& val_loss,
                    double alpha, double step, bool allow_unused) {
  Lookahead r;
  BaseValues values;

  // 1. The inner gradient at theta; evograd::detached records its values.
  restore.set_requires_grad(true);
  rng.replay();
  auto loss = training_pass(train_loss, values);
  r.losses.push_back(checked_loss(loss, "training"));
  TORCH_CHECK_VALUE(loss.requires_grad(), "evograd: the training loss does not depend on the "
                    "parameters or hyperparameters");
  // The difference's rounding error is ~u / s relative: float32's sqrt(eps)
  // step keeps it ~1e-4; half precision's u (autocast) loses the difference.
  const auto narrowest = narrowest_float(loss);
  TORCH_CHECK_VALUE(!narrowest, "evograd: estimator 'lookahead' differences two training "
                    "gradients ", step, " apart, and the training closure computes in ",
                    *narrowest == c10::ScalarType::BFloat16 ? "bfloat16" : "float16",
                    " (autocast): its rounding (~", unit_roundoff(*narrowest), " relative) divided "
                    "by the step swamps the difference. Run the closures without autocast (the "
                    "Python step's estimator 'jvp' takes no difference)");
  // With allow_unused, lambda's gradient comes from the same backward, so
  // that a step that never differentiates in lambda (alpha = 0) still knows
  // which hyperparameters the loss uses (they get zeros, as in T1-T2).
  std::vector<torch::Tensor> wrt = params;
  if (allow_unused) wrt.insert(wrt.end(), hyper.begin(), hyper.end());
  auto first = torch::autograd::grad({loss.reshape({})}, wrt, {}, false, false, true);
  std::vector<bool> used(hyper.size(), true);
  for (size_t j = 0; allow_unused && j < hyper.size(); ++j)
    used[j] = first[params.size() + j].defined();
  auto inner = zeros_for_undefined({first.begin(), first.begin() + params.size()}, params);
  first.clear();
  loss = torch::Tensor();

  // 2. theta' = theta - alpha * inner; the validation gradient there.
  write(restore.targets(), restore.saved(), inner, -alpha);
  inner.clear();
  restore.restore_buffers();
  torch::Tensor val;
  {
    ActiveValues paused(nullptr);
    val = val_loss();
  }
  r.val_loss = checked_loss(val, "validation");
  TORCH_CHECK_VALUE(val.requires_grad(),
                    "evograd: the validation loss does not depend on the parameters");
  std::vector<torch::Tensor> inputs = params;
  inputs.insert(inputs.end(), hyper.begin(), hyper.end());
  auto grads = torch::autograd::grad({val.reshape({})}, inputs, {}, false, false, true);
  r.val_tensor = val.detach();
  val = torch::Tensor();
  auto g = zeros_for_undefined({grads.begin(), grads.begin() + params.size()}, params);
  const std::vector<torch::Tensor> direct(grads.begin() + params.size(), grads.end());
  grads.clear();
  const double length = norm(g);

  // 3. The central difference of grad_lambda l_T along u = g / |g|, written
  // as theta + s u at once (g freed) and then reflected through theta, so
  // that the passes run beside one saved copy of theta.
  restore.set_requires_grad(false);
  const bool differenced = length > 0 && alpha > 0 && std::isfinite(length);
  if (differenced) write(restore.targets(), restore.saved(), g, step / length);
  g.clear();
  std::vector<std::vector<torch::Tensor>> sides;
  if (differenced) {
    for (const double sign : {1.0, -1.0}) {
      restore.restore_buffers();
      if (sign < 0) {
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < params.size(); ++i) {
          auto t = restore.targets()[i];
          t.sub_(restore.saved()[i]).neg_().add_(restore.saved()[i]);
        }
      }
      values.replay();
      rng.replay();
      loss = training_pass(train_loss, values);
      r.losses.push_back(checked_loss(loss, "training"));
      sides.push_back(hyper_gradient(loss, hyper, allow_unused));
      loss = torch::Tensor();
    }
  }
  const double factor = -alpha * length / (2.0 * step);
  torch::NoGradGuard no_grad;
  // g' overflowed (a float16 loss scale): not finite, as T1-T2's gradient
  // is, so that a loss scaler skips the step (Python's combine does the same).
  const bool overflow = !std::isfinite(length) && alpha > 0;
  for (size_t j = 0; j < hyper.size(); ++j) {
    torch::Tensor total;
    if (overflow && used[j]) total = torch::full_like(hyper[j], std::nan(""));
    if (!sides.empty()) {
      const auto &plus = sides[0][j], &minus = sides[1][j];
      if (plus.defined() && minus.defined()) {
        total = (plus - minus) * factor;
      } else if (plus.defined() || minus.defined()) {
        total = (plus.defined() ? plus : -minus) * factor;
      }
    }
    if (direct[j].defined()) total = total.defined() ? total + direct[j] : direct[j];
    // alpha = 0 or g' = 0: T1-T2 gives exactly 0 too, to what the loss uses.
    if (!total.defined() && sides.empty() && used[j]) total = torch::zeros_like(hyper[j]);
    r.parts.push_back(total);
  }
  return r;
}

}  // namespace detail
}  // namespace evograd
