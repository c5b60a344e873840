// The C++ meta-step, thin over the evograd operators (called through the
// dispatcher, so CPU and CUDA tensors both work and no kernel is named here).
#include "evograd/evograd.hpp"
#include "evograd/operators.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include "closures.h"
#include "collapse.h"
#include "exchange.h"
#include "lookahead.h"
#include "options.h"
#include "restorer.h"
#include "seeds.h"
#include "tensors.h"

namespace evograd {

namespace {

using detail::checked_loss;
using detail::Restorer;
using detail::RngSnapshot;
using detail::jit_tensors;
using detail::restored_buffers;
using detail::split_module;

// Raises when sigma is below the storage resolution of every perturbed
// element (all candidates would equal theta: a zero hypergradient), warns
// when that holds for most of them.
void check_sigma_resolution(const std::vector<torch::Tensor>& params, double sigma) {
  torch::NoGradGuard no_grad;
  int64_t unchanged = 0, total = 0;
  for (const auto& p : params) {
    if (p.numel() == 0) continue;
    unchanged += (p + sigma).to(p.scalar_type()).eq(p).sum().item<int64_t>();
    total += p.numel();
  }
  TORCH_CHECK_VALUE(!(total && unchanged == total), "evograd: sigma=", sigma, " is below the ",
                    params[0].scalar_type(), " resolution of every perturbed parameter: all "
                    "candidates would equal theta; increase sigma");
  if (total && unchanged > total / 2)
    TORCH_WARN("evograd: sigma=", sigma, " vanishes in ", unchanged, " of ", total,
               " perturbed parameters (", params[0].scalar_type(),
               " resolution); the hypergradient sees only the rest");
}

constexpr double kDropGap = constants::drop_gap;

}  // namespace

// A call into the operator library: linking this API therefore keeps that
// library, and with it the operators' registrations, loaded.
const char* built_for_torch() { return operators::built_for_torch(); }

namespace {

// What every rank's EvoGrad must agree on (parallel), by name: the AGREED
// rows of options.def, then what the tensors and scale come to.
std::vector<std::pair<std::string, double>> agreed_fields(const EvoGrad& e) {
  int64_t params = 0, hyper = 0;
  for (const auto& p : e.params()) params += p.numel();
  for (const auto& h : e.hyperparams()) hyper += h.numel();
  auto out = detail::agreed_options(e.options());
  out.insert(out.end(), {{"hypergradient scale", e.hypergradient_scale()},
                         {"number of parameter tensors", static_cast<double>(e.params().size())},
                         {"number of parameter elements", static_cast<double>(params)},
                         {"number of hyperparameter tensors", static_cast<double>(e.hyperparams().size())},
                         {"number of hyperparameter elements", static_cast<double>(hyper)}});
  return out;
}

}  // namespace

EvoGrad::EvoGrad(std::vector<torch::Tensor> params, std::vector<torch::Tensor> hyperparams,
                 Options options, std::vector<torch::Tensor> buffers)
    : params_(std::move(params)), hyper_(std::move(hyperparams)), options_(std::move(options)) {
  try {
    exchange_ = detail::make_exchange(options_);
  } catch (...) {
    detail::check_options(options_);  // an option's own error says more (lookahead + parallel)
    throw;
  }
  // With parallel, an error here (the options' own checks included) still
  // takes part in the construction-time exchange, so that the other ranks
  // raise too instead of waiting.
  std::exception_ptr own;
  try {
    build(std::move(buffers));
  } catch (...) {
    own = std::current_exception();
  }
  exchange_->agree(agreed_fields(*this), own);  // values ignored where own is set
  seed_ = exchange_->broadcast_seed(seed_);  // every rank draws rank 0's noise
}

namespace {

// tau * inner_lr / (sigma^2 * c) with scale "t1t2" (and the paper's
// estimator), c = 1 - 1/K (1 with antithetic noise).
double t1t2_scale(const Options& o) {
  if (o.scale != "t1t2" || o.estimator != "evograd") return 1.0;
  const double c = o.antithetic ? 1.0 : 1.0 - 1.0 / o.population;
  return o.temperature * *o.inner_lr / (o.sigma * o.sigma * c);
}

// Whether the options use inner_lr, and that it is given where they do.
void check_inner_lr(const Options& o) {
  const char* needed_by = o.estimator == "lookahead" ? "estimator 'lookahead'"
                          : o.estimator == "jvp"     ? "estimator 'jvp'"
                          : o.scale == "t1t2"        ? "scale 't1t2'"
                                                     : nullptr;
  TORCH_CHECK_VALUE(needed_by || !o.inner_lr.has_value(),
                    "evograd: inner_lr is used only with scale 't1t2' or estimator 'lookahead'");
  TORCH_CHECK_VALUE(!needed_by || o.inner_lr.has_value(), "evograd: ", needed_by,
                    " needs inner_lr, the model's learning rate");
}

}  // namespace

void EvoGrad::build(std::vector<torch::Tensor> buffers) {
  buffers_ = restored_buffers(buffers, params_, hyper_);
  validate();
  scale_ = t1t2_scale(options_);
  seed_ = options_.seed.has_value() ? *options_.seed : detail::default_base_seed();
}

int64_t EvoGrad::bytes_sent() const { return exchange_->bytes_sent(); }

EvoGrad::EvoGrad(std::vector<torch::Tensor> params, std::vector<torch::Tensor> hyperparams,
                 Options options, const torch::nn::Module& module)
    : EvoGrad(std::move(params), std::move(hyperparams), std::move(options), module.buffers()) {
  // The module's other tensors that require grad (an encoder below a
  // perturbed head) are frozen during a step, as in Python.
  auto owned = module.parameters();
  for (const auto& b : module.buffers()) owned.push_back(b);
  for (const auto& t : owned)
    if (t.requires_grad() && t.is_leaf() && !detail::contains(params_, t) &&
        !detail::contains(hyper_, t) && !detail::contains(bystanders_, t))
      bystanders_.push_back(t);
}

EvoGrad::EvoGrad(torch::nn::Module& model, std::vector<torch::Tensor> hyperparams,
                 Options options)
    : EvoGrad(split_module(model.parameters(), model.buffers(), hyperparams).perturbed,
              hyperparams, std::move(options),
              split_module(model.parameters(), model.buffers(), hyperparams).restored) {}

EvoGrad::EvoGrad(const torch::jit::Module& model, std::vector<torch::Tensor> hyperparams,
                 Options options)
    : EvoGrad(split_module(jit_tensors(model, true), jit_tensors(model, false), hyperparams)
                  .perturbed,
              hyperparams, std::move(options),
              split_module(jit_tensors(model, true), jit_tensors(model, false), hyperparams)
                  .restored) {}

void EvoGrad::validate() const {
  const auto& o = options_;
  detail::check_options(o);  // each option's rule, from options.def
  check_inner_lr(o);
  TORCH_CHECK_VALUE(!params_.empty(), "evograd: no tensor to perturb (a module's parameters, "
                    "or buffers with requires_grad, other than the hyperparameters)");
  TORCH_CHECK_VALUE(!hyper_.empty(), "evograd: no hyperparameters");
  for (size_t i = 0; i < params_.size(); ++i) {
    TORCH_CHECK_VALUE(!params_[i].defined() || params_[i].is_leaf(), "evograd: parameter ", i,
                      " is not a leaf tensor");
  }
  for (size_t j = 0; j < hyper_.size(); ++j) {
    const auto& h = hyper_[j];
    TORCH_CHECK_TYPE(h.defined() && h.is_floating_point(), "evograd: hyperparameter ", j,
                     " must be a floating-point tensor");
    TORCH_CHECK_VALUE(h.is_leaf() && h.requires_grad(), "evograd: hyperparameter ", j,
                      " must be a leaf tensor that requires grad");
  }
  // dtypes, one device, and no memory shared among the parameters or with the
  // hyperparameters: the operator layer's one check.
  operators::check_perturbable().call(params_, hyper_);
}

EvoGrad::Candidates EvoGrad::evaluate_candidates(detail::Restorer& restore, const LossFn& train_loss,
                                                 int64_t seed) const {
  const auto& o = options_;
  Candidates c;
  std::vector<double> losses(o.population, 0.0);
  c.dloss_dhyper.resize(o.population);
  std::exception_ptr own;  // rethrown here by the exchange, after the other ranks heard of it
  try {
    c10::optional<RngSnapshot> rng;
    if (o.common_random_numbers) rng.emplace(params_);
    restore.set_requires_grad(false);  // only lambda is differentiated
    for (int64_t k = 0; k < o.population; ++k) {
      if (!exchange_->owns(k)) continue;
      if (k > 0) restore.restore_buffers();
      if (rng) rng->replay();
      {
        torch::NoGradGuard no_grad;
        operators::perturb_into()
            .call(restore.saved(), restore.targets(), seed, k, o.sigma, o.noise, o.antithetic, 0);
      }
      auto loss = train_loss();
      losses[k] = checked_loss(loss, "training", o.nonfinite == "drop");
      if (!std::isfinite(losses[k])) continue;
      c.dloss_dhyper[k] = detail::hyper_gradient(loss, hyper_, o.allow_unused);
    }
  } catch (...) {
    own = std::current_exception();
  }
  losses = exchange_->losses(std::move(losses), own);
  double best = std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < o.population; ++k) {
    if (std::isfinite(losses[k])) {
      best = std::min(best, losses[k]);
    } else {
      ++c.dropped;
      c.dloss_dhyper[k].clear();
    }
  }
  // Only where a rank's mean took in another rank's non-finite loss.
  TORCH_CHECK_VALUE(c.dropped == 0 || o.nonfinite == "drop",
                    "evograd: a candidate's training loss is not finite on another rank; "
                    "option nonfinite = \"drop\" skips such candidates");
  TORCH_CHECK_VALUE(c.dropped < o.population,
                    "evograd: every candidate's training loss is non-finite");
  c.reported = torch::tensor(losses, torch::kDouble);
  // A dropped candidate takes a loss so far above the best that its weight
  // and cotangent are exactly zero.
  for (auto& v : losses)
    if (!std::isfinite(v)) v = best + kDropGap * o.temperature;
  c.losses = torch::tensor(losses, torch::kDouble);
  return c;
}

EvoGrad::Validation EvoGrad::validation_gradient(detail::Restorer& restore, const LossFn& val_loss,
                                                 const torch::Tensor& losses,
                                                 int64_t seed) const {
  const auto& o = options_;
  Validation v;
  v.loss = 0.0;
  std::exception_ptr own;
  try {
    restore.restore_buffers();
    {
      torch::NoGradGuard no_grad;  // theta* into the parameters' storage
      operators::combine_into()
          .call(restore.saved(), losses, restore.targets(), o.temperature, seed, o.sigma,
                o.noise, o.antithetic, 0);
    }
    restore.set_requires_grad(true);
    auto val = val_loss();
    v.loss = checked_loss(val, "validation");
    v.tensor = val.detach();
    TORCH_CHECK_VALUE(val.requires_grad(),
                      "evograd: the validation loss does not depend on the parameters");
    std::vector<torch::Tensor> inputs = params_;
    inputs.insert(inputs.end(), hyper_.begin(), hyper_.end());
    auto grads = torch::autograd::grad({val.reshape({})}, inputs, {}, false, false, true);
    std::vector<torch::Tensor> g;
    for (size_t i = 0; i < params_.size(); ++i)
      g.push_back(grads[i].defined() ? grads[i] : torch::zeros_like(params_[i]));
    v.hyper.assign(grads.begin() + params_.size(), grads.end());
    v.projections = operators::project().call(g, seed, o.population, o.sigma, o.noise,
                                                         o.antithetic, 0);
  } catch (...) {
    own = std::current_exception();
  }
  if (!v.projections.defined()) v.projections = torch::zeros({o.population}, torch::kDouble);
  std::tie(v.projections, v.loss) = exchange_->projections(v.projections, v.loss, own);
  if (v.tensor.defined() && !o.parallel.empty())  // the ranks' mean
    v.tensor = torch::full({}, v.loss, v.tensor.options());
  return v;
}

void EvoGrad::accumulate_hypergradient(const Candidates& candidates,
                                       const Validation& validation) {
  const auto& o = options_;
  std::vector<torch::Tensor> parts;
  std::vector<bool> used;
  std::exception_ptr own;
  try {
    auto cot = operators::loss_cotangent().call(candidates.losses,
                                                           validation.projections, o.temperature);
    torch::NoGradGuard no_grad;
    auto cot_host = cot.to(torch::kDouble).cpu();
    const double* cv = cot_host.data_ptr<double>();
    for (size_t j = 0; j < hyper_.size(); ++j) {
      auto total = torch::zeros_like(hyper_[j]);
      bool touched = false;
      for (int64_t k = 0; k < o.population; ++k) {
        const auto& dloss = candidates.dloss_dhyper[k];
        if (dloss.empty() || !dloss[j].defined()) continue;
        total.add_(dloss[j], cv[k] * scale_);
        touched = true;
      }
      if (validation.hyper[j].defined() && exchange_->adds_direct_term()) {
        total.add_(validation.hyper[j]);
        touched = true;
      }
      parts.push_back(total);
      used.push_back(touched);
    }
  } catch (...) {
    own = std::current_exception();
    parts.clear();
    for (const auto& h : hyper_) parts.push_back(torch::zeros_like(h));
    used.assign(hyper_.size(), true);
  }
  parts = exchange_->hypergradient(std::move(parts), own);
  // In one process, a hyperparameter nothing used (allow_unused) keeps its .grad.
  if (o.parallel.empty())
    for (size_t j = 0; j < parts.size(); ++j)
      if (!used[j]) parts[j] = torch::Tensor();
  detail::accumulate(hyper_, parts);
}


std::vector<std::string> estimators() { return detail::choices_of("estimator"); }

void EvoGrad::set_inner_lr(double inner_lr) {
  Options o = options_;
  o.inner_lr = inner_lr;
  detail::check_options(o);
  check_inner_lr(o);
  options_ = std::move(o);
  scale_ = t1t2_scale(options_);
}

StepResult EvoGrad::step(const LossFn& train_loss, const LossFn& val_loss,
                         c10::optional<double> inner_lr) {
  TORCH_CHECK_VALUE(train_loss && val_loss, "evograd: step needs two loss closures");
  if (inner_lr.has_value()) set_inner_lr(*inner_lr);
  const int64_t seed = step_seed(seed_, step_, options_.seed_schedule);
  if (options_.check_replicas) exchange_->check_replicas(params_, hyper_);
  torch::AutoGradMode grad_on(true);
  const auto& table = units();
  const auto unit = std::find_if(table.begin(), table.end(),
                                 [&](const auto& u) { return u.first == options_.estimator; });
  TORCH_CHECK_VALUE(unit != table.end(), "evograd: no C++ unit for estimator '",
                    options_.estimator, "'");
  return (this->*unit->second)(train_loss, val_loss, seed);
}

// The C++ step's estimators (lookahead.cpp holds the two T1-T2 units).
const std::vector<std::pair<std::string, EvoGrad::Unit>>& EvoGrad::units() {
  static const std::vector<std::pair<std::string, Unit>> table = {
      {"evograd", &EvoGrad::paper_step},
      {"lookahead", &EvoGrad::lookahead_step},
      {"jvp", &EvoGrad::jvp_step}};
  return table;
}

StepResult EvoGrad::paper_step(const LossFn& train_loss, const LossFn& val_loss, int64_t seed) {
  check_sigma_resolution(params_, options_.sigma);
  Candidates candidates;
  Validation validation;
  torch::Tensor weights;
  {
    Restorer restore(params_, buffers_, bystanders_);
    candidates = evaluate_candidates(restore, train_loss, seed);
    weights = operators::weights().call(candidates.losses, options_.temperature);
    validation = validation_gradient(restore, val_loss, candidates.losses, seed);
    accumulate_hypergradient(candidates, validation);
  }
  ++step_;
  weights = weights.detach();
  const auto ess = detail::collapse(candidates.reported, candidates.losses, weights, step_ - 1);
  return {validation.loss, candidates.reported, weights, seed, candidates.dropped,
          validation.tensor, ess.first, ess.second};
}

}  // namespace evograd
