// The passes of T1-T2's estimators. With g' the validation gradient at
// theta' = theta - alpha grad l_T(theta), T1-T2's hypergradient is
// -alpha (d/dlambda grad_theta l_T)^T g' (plus l_V's direct part):
//  * lookahead: -alpha |g'| / (2 s) times grad_lambda l_T(theta + s u) -
//    grad_lambda l_T(theta - s u), u = g'/|g'|, up to O(s^2);
//  * jvp: -alpha grad_lambda (g' . grad_theta l_T(theta)) by double backward,
//    exactly (Python takes the same derivative by forward mode).
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

// -alpha grad_lambda (g . grad_theta l_T(theta)): the training pass at theta
// again (theta put back, the first pass's detached values and random draws
// replayed), its parameter gradient kept differentiable, one more backward.
std::vector<torch::Tensor> double_backward(const std::vector<torch::Tensor>& params,
                                           const std::vector<torch::Tensor>& hyper,
                                           Restorer& restore, RngSnapshot& rng,
                                           const LossFn& train_loss, BaseValues& values,
                                           const std::vector<torch::Tensor>& g, double alpha,
                                           bool allow_unused, std::vector<double>& losses) {
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) restore.targets()[i].copy_(restore.saved()[i]);
  }
  restore.restore_buffers();
  restore.set_requires_grad(true);
  values.replay();
  rng.replay();
  auto loss = training_pass(train_loss, values);
  losses.push_back(checked_loss(loss, "training"));
  auto inner = torch::autograd::grad({loss.reshape({})}, params, {}, true, true, true);
  loss = torch::Tensor();
  restore.set_requires_grad(false);
  torch::Tensor along;  // g . grad_theta l_T, a function of lambda
  for (size_t i = 0; i < params.size(); ++i) {
    if (!inner[i].defined() || !inner[i].requires_grad()) continue;
    auto term = (inner[i] * g[i]).sum();
    along = along.defined() ? along + term : term;
  }
  inner.clear();
  if (!along.defined()) return {};  // the loss does not move with theta here
  auto parts = hyper_gradient(along, hyper, allow_unused);
  torch::NoGradGuard no_grad;
  for (auto& t : parts)
    if (t.defined()) t = t * -alpha;
  return parts;
}

// The part through theta' of each hyperparameter plus the direct part. A
// step that did not differentiate in lambda (alpha = 0, g' = 0) gives exact
// zeros to what the loss uses, as T1-T2 does; a g' that overflowed (a
// float16 loss scale) gives NaN, as T1-T2's gradient would, so that a loss
// scaler skips the step (Python's unrolled.combine does the same).
std::vector<torch::Tensor> combine(const std::vector<torch::Tensor>& hyper,
                                   std::vector<torch::Tensor> parts, bool ran,
                                   const std::vector<torch::Tensor>& direct,
                                   const std::vector<bool>& used, double length, double alpha) {
  torch::NoGradGuard no_grad;
  const bool overflow = !std::isfinite(length) && alpha > 0;
  for (size_t j = 0; j < hyper.size(); ++j) {
    torch::Tensor total = parts[j];
    if (overflow && used[j]) total = torch::full_like(hyper[j], std::nan(""));
    if (direct[j].defined()) total = total.defined() ? total + direct[j] : direct[j];
    if (!total.defined() && !ran && used[j]) total = torch::zeros_like(hyper[j]);
    parts[j] = total;
  }
  return parts;
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

Lookahead unrolled(Through through, const std::vector<torch::Tensor>& params,
                   const std::vector<torch::Tensor>& hyper, Restorer& restore,
                   RngSnapshot& rng, const LossFn& train_loss, const LossFn& val_loss,
                   double alpha, double step, bool allow_unused, Exchange& exchange,
                   bool keep_inner) {
  Lookahead r;
  BaseValues values;
  std::exception_ptr own;

  // 1. The inner gradient at theta; evograd::detached records its values.
  // With allow_unused, lambda's gradient comes from the same backward, so
  // that a step that never differentiates in lambda (alpha = 0) still knows
  // which hyperparameters the loss uses (they get zeros, as in T1-T2).
  std::vector<bool> used(hyper.size(), true), unused(params.size(), false);
  std::vector<torch::Tensor> inner;
  try {
    restore.set_requires_grad(true);
    rng.replay();
    auto loss = training_pass(train_loss, values);
    r.losses.push_back(checked_loss(loss, "training"));
    TORCH_CHECK_VALUE(loss.requires_grad(), "evograd: the training loss does not depend on the "
                      "parameters or hyperparameters");
    // The difference's rounding error is ~u / s relative: float32's sqrt(eps)
    // step keeps it ~1e-4; half precision's u (autocast) loses the difference.
    if (through == Through::kDifference) {
      const auto narrowest = narrowest_float(loss);
      TORCH_CHECK_VALUE(!narrowest, "evograd: estimator 'lookahead' differences two training "
                        "gradients ", step, " apart, and the training closure computes in ",
                        narrowest == c10::ScalarType::BFloat16 ? "bfloat16" : "float16",
                        " (autocast): its rounding (~", unit_roundoff(*narrowest), " relative) "
                        "divided by the step swamps the difference. Use estimator 'jvp', which "
                        "takes no difference, or run the closures without autocast");
    }
    std::vector<torch::Tensor> wrt = params;
    if (allow_unused) wrt.insert(wrt.end(), hyper.begin(), hyper.end());
    auto first = torch::autograd::grad({loss.reshape({})}, wrt, {}, false, false, true);
    for (size_t j = 0; allow_unused && j < hyper.size(); ++j)
      used[j] = first[params.size() + j].defined();
    for (size_t i = 0; i < params.size(); ++i) unused[i] = !first[i].defined();
    inner = zeros_for_undefined({first.begin(), first.begin() + params.size()}, params);
  } catch (...) {
    own = std::current_exception();
  }
  inner = exchange.mean_gradient(std::move(inner), params, own, "the inner gradient");

  // 2. theta' = theta - alpha * inner; the validation gradient there.
  std::vector<torch::Tensor> g, direct(hyper.size());
  try {
    write(restore.targets(), restore.saved(), inner, -alpha);
    if (keep_inner) {
      // a parameter the loss does not use keeps its .grad, as after backward()
      // (in one process; with ranks the mean is everyone's)
      r.inner = inner;
      for (size_t i = 0; i < params.size(); ++i)
        if (unused[i] && exchange.local()) r.inner[i] = torch::Tensor();
      // as the loop's skipped forward would leave them (BatchNorm's statistics)
      r.buffers = restore.buffer_values();
    }
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
    g = zeros_for_undefined({grads.begin(), grads.begin() + params.size()}, params);
    direct.assign(grads.begin() + params.size(), grads.end());
  } catch (...) {
    own = std::current_exception();
  }
  g = exchange.mean_gradient(std::move(g), params, own, "the validation gradient");
  const double length = norm(g);

  // 3. The part through theta' (its extra passes), then the ranks' mean.
  const bool differenced = length > 0 && alpha > 0 && std::isfinite(length);
  std::vector<torch::Tensor> parts(hyper.size());  // through theta' (undefined: none)
  bool ran = differenced;
  try {
    restore.set_requires_grad(false);
    if (through == Through::kDoubleBackward) {
      ran = false;
      if (differenced) {
        auto got = double_backward(params, hyper, restore, rng, train_loss, values, g, alpha,
                                   allow_unused, r.losses);
        ran = !got.empty();
        if (ran) parts = std::move(got);
      }
      g.clear();
    } else {
      // The central difference of grad_lambda l_T along u = g / |g|, written
      // as theta + s u at once (g freed) and then reflected through theta, so
      // that the passes run beside one saved copy of theta.
      if (differenced) write(restore.targets(), restore.saved(), g, step / length);
      g.clear();
      std::vector<std::vector<torch::Tensor>> sides;
      for (const double sign : {1.0, -1.0}) {
        if (!differenced) break;
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
        auto loss = training_pass(train_loss, values);
        r.losses.push_back(checked_loss(loss, "training"));
        sides.push_back(hyper_gradient(loss, hyper, allow_unused));
      }
      const double factor = -alpha * length / (2.0 * step);
      torch::NoGradGuard no_grad;
      for (size_t j = 0; differenced && j < hyper.size(); ++j) {
        const auto &plus = sides[0][j], &minus = sides[1][j];
        if (plus.defined() && minus.defined()) {
          parts[j] = (plus - minus) * factor;
        } else if (plus.defined() || minus.defined()) {
          parts[j] = (plus.defined() ? plus : -minus) * factor;
        }
      }
    }
    if (!own) {
      parts = combine(hyper, std::move(parts), ran, direct, used, length, alpha);
    }
  } catch (...) {
    own = std::current_exception();
  }
  // Every rank reports as many losses (the count depends on g', the ranks' mean).
  const size_t count = differenced ? (through == Through::kDoubleBackward ? 2 : 3) : 1;
  std::vector<double> scalars = r.losses;
  if (own || scalars.size() != count) scalars.assign(count, 0.0);
  scalars.push_back(r.val_loss);
  auto mean = exchange.mean_parts(std::move(parts), hyper, std::move(scalars), own);
  r.parts = std::move(mean.first);
  r.val_loss = mean.second.back();
  mean.second.pop_back();
  r.losses = std::move(mean.second);
  if (r.val_tensor.defined() && !exchange.local())  // the ranks' mean
    r.val_tensor = torch::full({}, r.val_loss, r.val_tensor.options());
  return r;
}

}  // namespace detail

// The EvoGrad units of T1-T2's two estimators (units() names them).
StepResult EvoGrad::lookahead_step(const LossFn& train_loss, const LossFn& val_loss,
                                   int64_t seed) {
  const double step = options_.fd_step.has_value() ? *options_.fd_step
                                                   : detail::default_fd_step(params_);
  return unrolled_step(false, train_loss, val_loss, seed, step);
}

StepResult EvoGrad::jvp_step(const LossFn& train_loss, const LossFn& val_loss, int64_t seed) {
  return unrolled_step(true, train_loss, val_loss, seed, 0.0);
}

StepResult EvoGrad::unrolled_step(bool exact, const LossFn& train_loss, const LossFn& val_loss,
                                  int64_t seed, double fd_step) {
  const double alpha = *options_.inner_lr;
  const auto through = exact ? detail::Through::kDoubleBackward : detail::Through::kDifference;
  detail::Lookahead r;
  {
    detail::Restorer restore(params_, buffers_, bystanders_);
    detail::RngSnapshot rng(params_);
    r = detail::unrolled(through, params_, hyper_, restore, rng, train_loss, val_loss, alpha,
                         fd_step, options_.allow_unused, *exchange_, options_.keep_train_grad);
  }
  // keep_train_grad: the inner pass's gradient (the ranks' mean) goes to the
  // parameters' .grad, accumulated as backward() does, for the model's
  // optimiser; the buffers as that training forward left them (the skipped
  // forward would have updated BatchNorm's statistics so). Only after the
  // step succeeded: a failed one leaves the model as it was.
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < r.buffers.size(); ++i) buffers_[i].variable_data().copy_(r.buffers[i]);
  }
  for (size_t i = 0; i < r.inner.size(); ++i) {
    if (!r.inner[i].defined()) continue;
    if (r.inner[i].strides() != params_[i].strides())  // e.g. expanded: the parameter's layout
      r.inner[i] = torch::empty_like(params_[i]).copy_(r.inner[i]);
    auto& grad = params_[i].mutable_grad();
    if (grad.defined()) {
      torch::NoGradGuard no_grad;
      grad.add_(r.inner[i]);
    } else {
      grad = r.inner[i];
    }
  }
  detail::accumulate(hyper_, r.parts);
  ++step_;
  return {r.val_loss, torch::tensor(r.losses, torch::kDouble), torch::zeros({0}, torch::kDouble),
          seed, 0, r.val_tensor};
}

}  // namespace evograd
