// The C++ meta-step, thin over the evograd operators (called through the
// dispatcher, so CPU and CUDA tensors both work and no kernel is named here).
#include "evograd/evograd.hpp"

#include <atomic>
#include <cmath>
#include <limits>
#include <sstream>
#include <tuple>
#include <utility>

#include "exchange.h"
#include "handles.h"
#include "library.h"

namespace evograd {
namespace detail {

// Everything step() changes about the model, put back on scope exit.
class Restorer {
 public:
  Restorer(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& buffers)
      : params_(params), buffers_(buffers) {
    torch::NoGradGuard no_grad;
    for (const auto& p : params_) {
      saved_.push_back(p.detach().clone());
      grads_.push_back(p.grad());
      flags_.push_back(p.requires_grad());
    }
    for (const auto& b : buffers_) saved_buffers_.push_back(b.detach().clone());
    // Closures that call backward() must not touch the caller's gradients.
    for (auto& p : params_) p.mutable_grad() = torch::Tensor();
  }
  const std::vector<torch::Tensor>& saved() const { return saved_; }
  void restore_buffers() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < buffers_.size(); ++i) buffers_[i].copy_(saved_buffers_[i]);
  }
  void set_requires_grad(bool on) {
    for (auto& p : params_) p.requires_grad_(on);
  }
  ~Restorer() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      params_[i].requires_grad_(flags_[i]);
      params_[i].copy_(saved_[i]);
      params_[i].mutable_grad() = grads_[i];
    }
    restore_buffers();
  }

 private:
  std::vector<torch::Tensor> params_, buffers_;
  std::vector<torch::Tensor> saved_, grads_, saved_buffers_;
  std::vector<bool> flags_;
};

}  // namespace detail

namespace {

using detail::Restorer;

bool same_tensor(const torch::Tensor& a, const torch::Tensor& b) {
  return a.defined() && b.defined() && a.is_same(b);
}

// Torch RNG states (CPU, and each CUDA device the parameters use), so every
// candidate can replay the same random numbers.
class RngSnapshot {
 public:
  explicit RngSnapshot(const std::vector<torch::Tensor>& params) {
    gens_.push_back(at::detail::getDefaultCPUGenerator());
    for (const auto& p : params) {
      if (!p.is_cuda()) continue;
      auto g = at::globalContext().defaultGenerator(p.device());
      bool seen = false;
      for (const auto& h : gens_) seen = seen || h == g;
      if (!seen) gens_.push_back(g);
    }
    for (auto& g : gens_) {
      std::lock_guard<std::mutex> lock(g.mutex());
      states_.push_back(g.get_state());
    }
  }
  void replay() {
    for (size_t i = 0; i < gens_.size(); ++i) {
      std::lock_guard<std::mutex> lock(gens_[i].mutex());
      gens_[i].set_state(states_[i]);
    }
  }

 private:
  std::vector<at::Generator> gens_;
  std::vector<torch::Tensor> states_;
};

double checked_loss(const torch::Tensor& loss, const char* which, bool allow_nonfinite = false) {
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

// exp(-x) is exactly 0 in float64 beyond x ~ 745: a loss this many
// temperatures above the best gets weight 0 and cotangent 0, bit for bit.
constexpr double kDropGap = 800.0;

bool contains(const std::vector<torch::Tensor>& list, const torch::Tensor& t) {
  for (const auto& x : list)
    if (same_tensor(t, x)) return true;
  return false;
}

// Buffers to restore, each once, less those that share storage with a
// perturbed tensor (restored as such) or a hyperparameter.
std::vector<torch::Tensor> restored_buffers(const std::vector<torch::Tensor>& buffers,
                                            const std::vector<torch::Tensor>& perturbed,
                                            const std::vector<torch::Tensor>& hyper) {
  std::vector<torch::Tensor> kept;
  for (const auto& b : buffers) {
    bool skip = !b.defined() || contains(kept, b);
    for (const auto* list : {&perturbed, &hyper})
      for (const auto& t : *list) skip = skip || (t.defined() && b.numel() && b.is_alias_of(t));
    if (!skip) kept.push_back(b);
  }
  return kept;
}

// What a step perturbs in a module and what it restores, as Python's
// EvoGrad does: each floating tensor that requires grad, parameter or buffer
// (MetaModule weights), once (tied weights are listed once per use), except
// the hyperparameters; the other buffers, each once, are restored.
struct ModuleTensors {
  std::vector<torch::Tensor> perturbed, restored;
};

ModuleTensors split_module(const std::vector<torch::Tensor>& params,
                           const std::vector<torch::Tensor>& buffers,
                           const std::vector<torch::Tensor>& hyper) {
  ModuleTensors out;
  for (const auto* list : {&params, &buffers})
    for (const auto& t : *list)
      if (t.defined() && t.is_floating_point() && t.requires_grad() && !contains(hyper, t) &&
          !contains(out.perturbed, t))
        out.perturbed.push_back(t);
  out.restored = restored_buffers(buffers, out.perturbed, hyper);
  return out;
}

std::vector<torch::Tensor> jit_tensors(const torch::jit::Module& m, bool params) {
  std::vector<torch::Tensor> out;
  if (params) {
    for (const auto& p : m.parameters()) out.push_back(p);
  } else {
    for (const auto& b : m.buffers()) out.push_back(b);
  }
  return out;
}

}  // namespace

// A call into the operator library: linking this API therefore keeps that
// library, and with it the operators' registrations, loaded.
const char* built_for_torch() { return evograd_ops::built_for_torch(); }

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

// SplitMix64's finaliser: a bijection of the 64-bit integers.
uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// As Python's evograd.seeds.default_base_seed: the generator's seed, not a draw.
int64_t default_base_seed() {
  static std::atomic<uint64_t> instances{0};
  const uint64_t seed = at::detail::getDefaultCPUGenerator().current_seed();
  return static_cast<int64_t>(mix64(seed ^ mix64(instances.fetch_add(1) * kGolden)));
}

}  // namespace

int64_t step_seed(int64_t base, int64_t step, const std::string& schedule) {
  const uint64_t b = static_cast<uint64_t>(base), t = static_cast<uint64_t>(step);
  if (schedule == "consecutive") return static_cast<int64_t>((b + t) & 0x7fffffffffffffffULL);
  TORCH_CHECK_VALUE(schedule == "mixed", "evograd: seed schedule must be 'mixed' or ",
                    "'consecutive', got '", schedule, "'");
  return static_cast<int64_t>(mix64(b + t * kGolden));
}

namespace {

// What every rank's EvoGrad must agree on (parallel), by name.
std::vector<std::pair<std::string, double>> agreed_fields(const EvoGrad& e) {
  const auto& o = e.options();
  int64_t params = 0, hyper = 0;
  for (const auto& p : e.params()) params += p.numel();
  for (const auto& h : e.hyperparams()) hyper += h.numel();
  return {{"population", static_cast<double>(o.population)},
          {"sigma", o.sigma},
          {"temperature", o.temperature},
          {"noise", o.noise == "gauss" ? 1.0 : 0.0},
          {"antithetic", o.antithetic ? 1.0 : 0.0},
          {"nonfinite", o.nonfinite == "drop" ? 1.0 : 0.0},
          {"seed_schedule", o.seed_schedule == "consecutive" ? 1.0 : 0.0},
          {"hypergradient scale", e.hypergradient_scale()},
          {"common_random_numbers", o.common_random_numbers ? 1.0 : 0.0},
          {"parallel", static_cast<double>(detail::parallel_index(o.parallel))},
          {"number of parameter tensors", static_cast<double>(e.params().size())},
          {"number of parameter elements", static_cast<double>(params)},
          {"number of hyperparameter tensors", static_cast<double>(e.hyperparams().size())},
          {"number of hyperparameter elements", static_cast<double>(hyper)}};
}

}  // namespace

EvoGrad::EvoGrad(std::vector<torch::Tensor> params, std::vector<torch::Tensor> hyperparams,
                 Options options, std::vector<torch::Tensor> buffers)
    : params_(std::move(params)), hyper_(std::move(hyperparams)), options_(std::move(options)) {
  exchange_ = detail::make_exchange(options_);
  // With parallel, an error here still takes part in the construction-time
  // exchange, so that the other ranks raise too instead of waiting.
  std::exception_ptr own;
  try {
    build(std::move(buffers));
  } catch (...) {
    own = std::current_exception();
  }
  exchange_->agree(agreed_fields(*this), own);  // values ignored where own is set
  seed_ = exchange_->broadcast_seed(seed_);  // every rank draws rank 0's noise
}

void EvoGrad::build(std::vector<torch::Tensor> buffers) {
  buffers_ = restored_buffers(buffers, params_, hyper_);
  validate();
  if (options_.scale == "t1t2") {
    const double c = options_.antithetic ? 1.0 : 1.0 - 1.0 / options_.population;
    scale_ = options_.temperature * *options_.inner_lr / (options_.sigma * options_.sigma * c);
  }
  seed_ = options_.seed.has_value() ? *options_.seed : default_base_seed();
}

int64_t EvoGrad::bytes_sent() const { return exchange_->bytes_sent(); }

EvoGrad::EvoGrad(std::vector<torch::Tensor> params, std::vector<torch::Tensor> hyperparams,
                 Options options, const torch::nn::Module& module)
    : EvoGrad(std::move(params), std::move(hyperparams), std::move(options), module.buffers()) {}

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
  TORCH_CHECK_VALUE(o.population >= 2, "evograd: population must be >= 2, got ", o.population);
  TORCH_CHECK_VALUE(!o.antithetic || o.population % 2 == 0,
                    "evograd: antithetic noise needs an even population, got ", o.population);
  TORCH_CHECK_VALUE(std::isfinite(o.sigma) && o.sigma > 0, "evograd: sigma must be > 0, got ",
                    o.sigma);
  TORCH_CHECK_VALUE(std::isfinite(o.temperature) && o.temperature > 0,
                    "evograd: temperature must be > 0, got ", o.temperature);
  TORCH_CHECK_VALUE(o.noise == "sign" || o.noise == "gauss", "evograd: unknown noise '",
                    o.noise, "'; expected 'sign' or 'gauss'");
  TORCH_CHECK_VALUE(o.seed_schedule == "mixed" || o.seed_schedule == "consecutive",
                    "evograd: seed_schedule must be 'mixed' or 'consecutive', got '",
                    o.seed_schedule, "'");
  TORCH_CHECK_VALUE(o.nonfinite == "raise" || o.nonfinite == "drop",
                    "evograd: nonfinite must be 'raise' or 'drop', got '", o.nonfinite, "'");
  TORCH_CHECK_VALUE(o.scale.empty() || o.scale == "t1t2",
                    "evograd: scale must be empty or 't1t2', got '", o.scale, "'");
  TORCH_CHECK_VALUE(o.scale == "t1t2" || !o.inner_lr.has_value(),
                    "evograd: inner_lr is used only with scale 't1t2'");
  TORCH_CHECK_VALUE(o.scale.empty() ||
                        (o.inner_lr.has_value() && std::isfinite(*o.inner_lr) && *o.inner_lr > 0),
                    "evograd: scale 't1t2' needs inner_lr, the model's learning rate (> 0)");
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
  evograd_ops::handles::check_perturbable().call(params_, hyper_);
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
        evograd_ops::handles::perturb_into()
            .call(restore.saved(), params_, seed, k, o.sigma, o.noise, o.antithetic, 0);
      }
      auto loss = train_loss();
      losses[k] = checked_loss(loss, "training", o.nonfinite == "drop");
      if (!std::isfinite(losses[k])) continue;
      TORCH_CHECK_VALUE(loss.requires_grad(),
                        "evograd: the training loss does not depend on the hyperparameters");
      auto g = torch::autograd::grad({loss.reshape({})}, hyper_, {}, false, false, true);
      for (size_t j = 0; j < g.size(); ++j)
        TORCH_CHECK_VALUE(g[j].defined(), "evograd: the training loss does not depend on "
                          "hyperparameter ", j);
      c.dloss_dhyper[k] = std::move(g);
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
      evograd_ops::handles::combine_into()
          .call(restore.saved(), losses, params_, o.temperature, seed, o.sigma, o.noise,
                o.antithetic, 0);
    }
    restore.set_requires_grad(true);
    auto val = val_loss();
    v.loss = checked_loss(val, "validation");
    TORCH_CHECK_VALUE(val.requires_grad(),
                      "evograd: the validation loss does not depend on the parameters");
    std::vector<torch::Tensor> inputs = params_;
    inputs.insert(inputs.end(), hyper_.begin(), hyper_.end());
    auto grads = torch::autograd::grad({val.reshape({})}, inputs, {}, false, false, true);
    std::vector<torch::Tensor> g;
    for (size_t i = 0; i < params_.size(); ++i)
      g.push_back(grads[i].defined() ? grads[i] : torch::zeros_like(params_[i]));
    v.hyper.assign(grads.begin() + params_.size(), grads.end());
    v.projections = evograd_ops::handles::project().call(g, seed, o.population, o.sigma, o.noise,
                                                         o.antithetic, 0);
  } catch (...) {
    own = std::current_exception();
  }
  if (!v.projections.defined()) v.projections = torch::zeros({o.population}, torch::kDouble);
  std::tie(v.projections, v.loss) = exchange_->projections(v.projections, v.loss, own);
  return v;
}

void EvoGrad::accumulate_hypergradient(const Candidates& candidates,
                                       const Validation& validation, int64_t seed) {
  const auto& o = options_;
  std::vector<torch::Tensor> parts;
  std::exception_ptr own;
  try {
    auto cot = evograd_ops::handles::loss_cotangent().call(candidates.losses,
                                                           validation.projections, o.temperature);
    torch::NoGradGuard no_grad;
    auto cot_host = cot.to(torch::kDouble).cpu();
    const double* cv = cot_host.data_ptr<double>();
    for (size_t j = 0; j < hyper_.size(); ++j) {
      auto total = torch::zeros_like(hyper_[j]);
      for (int64_t k = 0; k < o.population; ++k)
        if (!candidates.dloss_dhyper[k].empty())
          total.add_(candidates.dloss_dhyper[k][j], cv[k] * scale_);
      if (validation.hyper[j].defined() && exchange_->adds_direct_term())
        total.add_(validation.hyper[j]);
      parts.push_back(total);
    }
  } catch (...) {
    own = std::current_exception();
    parts.clear();
    for (const auto& h : hyper_) parts.push_back(torch::zeros_like(h));
  }
  parts = exchange_->hypergradient(std::move(parts), own);
  torch::NoGradGuard no_grad;
  for (size_t j = 0; j < hyper_.size(); ++j) {
    auto& hg = hyper_[j].mutable_grad();
    if (hg.defined()) {
      hg.add_(parts[j]);
    } else {
      hg = parts[j];
    }
  }
}

namespace {

// The options a checkpoint records, by name, in Python's state_dict spelling.
std::vector<std::pair<std::string, c10::IValue>> option_values(const EvoGrad& e) {
  const auto& o = e.options();
  int64_t params = 0, hyper = 0;
  for (const auto& p : e.params()) params += p.numel();
  for (const auto& h : e.hyperparams()) hyper += h.numel();
  return {{"population", o.population},
          {"sigma", o.sigma},
          {"temperature", o.temperature},
          {"noise", o.noise},
          {"antithetic", o.antithetic},
          {"seed_schedule", o.seed_schedule},
          {"scale", o.scale},
          {"inner_lr", o.inner_lr.has_value() ? c10::IValue(*o.inner_lr) : c10::IValue()},
          {"nonfinite", o.nonfinite},
          {"common_random_numbers", o.common_random_numbers},
          {"parallel", o.parallel.empty() ? c10::IValue() : c10::IValue(o.parallel)},
          {"parameter_elements", params},
          {"hyperparameter_elements", hyper}};
}

}  // namespace

void EvoGrad::save(torch::serialize::OutputArchive& archive) const {
  archive.write("format", c10::IValue(int64_t{1}));
  archive.write("seed", c10::IValue(seed_));
  archive.write("steps_taken", c10::IValue(step_));
  for (const auto& kv : option_values(*this)) archive.write("option_" + kv.first, kv.second);
}

void EvoGrad::load(torch::serialize::InputArchive& archive) {
  c10::IValue format, seed, steps;
  TORCH_CHECK_VALUE(archive.try_read("format", format) && format.isInt() && format.toInt() == 1,
                    "evograd: not an EvoGrad checkpoint (no format 1)");
  std::string diff;
  for (const auto& kv : option_values(*this)) {
    c10::IValue saved;
    // Checkpoints of evograd 0.2.0 (one process only) record no "parallel".
    const bool found = archive.try_read("option_" + kv.first, saved);
    TORCH_CHECK_VALUE(found || kv.first == "parallel", "evograd: the checkpoint has no option ",
                      kv.first);
    if (!(saved == kv.second)) {
      std::ostringstream s;
      s << (diff.empty() ? "" : "; ") << kv.first << ": saved " << saved << ", here "
        << kv.second;
      diff += s.str();
    }
  }
  TORCH_CHECK_VALUE(diff.empty(), "evograd: the saved EvoGrad had other options: ", diff);
  archive.read("seed", seed);
  archive.read("steps_taken", steps);
  TORCH_CHECK_VALUE(seed.isInt() && steps.isInt() && steps.toInt() >= 0,
                    "evograd: a checkpoint needs an int seed and a non-negative steps_taken");
  seed_ = seed.toInt();
  step_ = steps.toInt();
}

StepResult EvoGrad::step(const LossFn& train_loss, const LossFn& val_loss) {
  TORCH_CHECK_VALUE(train_loss && val_loss, "evograd: step needs two loss closures");
  const int64_t seed = step_seed(seed_, step_, options_.seed_schedule);
  check_sigma_resolution(params_, options_.sigma);
  torch::AutoGradMode grad_on(true);
  Restorer restore(params_, buffers_);
  auto candidates = evaluate_candidates(restore, train_loss, seed);
  auto weights = evograd_ops::handles::weights().call(candidates.losses, options_.temperature);
  auto validation = validation_gradient(restore, val_loss, candidates.losses, seed);
  accumulate_hypergradient(candidates, validation, seed);
  ++step_;
  return {validation.loss, candidates.reported, weights.detach(), seed, candidates.dropped};
}

}  // namespace evograd
