// evograd C++ API: one EvoGrad meta-step for LibTorch users.
//
//   evograd::Options opt;
//   opt.population = 2;
//   evograd::EvoGrad meta(*model, vnet->parameters(), opt);
//   auto r = meta.step([&] { return weighted_train_loss(); },
//                      [&] { return clean_val_loss(); });
//   // hyperparameters now hold their gradient in .grad(); step your optimiser.
//
// The routine mirrors the Python evograd.EvoGrad: candidates are written into
// the parameters' own storage one at a time, each candidate's loss is
// differentiated only with respect to the hyperparameters, theta* is written
// in for one first-order validation backward, and everything (parameters,
// their .grad, buffers) is restored exactly afterwards, also on error.
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

// c10d, the C++ core of torch.distributed, for Options::process_group (a
// LibTorch built without distributed support has no such header).
#if defined(__has_include)
#if __has_include(<torch/csrc/distributed/c10d/ProcessGroup.hpp>)
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#define EVOGRAD_HAS_C10D 1
#endif
#endif
#ifndef EVOGRAD_HAS_C10D
#define EVOGRAD_HAS_C10D 0
#endif

#include "evograd/evograd.h"
#include "evograd/version.h"

namespace evograd {

// The options, declared once in options.def (installed beside this header and
// read by Python too): population, sigma, temperature, noise ("sign" or
// "gauss"), antithetic, seed (unset: derived from the default CPU generator's
// seed without drawing from it), seed_schedule ("mixed" or "consecutive"),
// scale ("" or "t1t2": the part through the candidates times tau * inner_lr /
// (sigma^2 * c), c = 1 - 1/K or 1 with antithetic noise), inner_lr (>= 0;
// may change between steps), common_random_numbers (one torch RNG state
// replayed for every candidate), nonfinite ("raise" or "drop"), parallel
// ("", "data" or "candidates": every rank builds alike, checked at
// construction, and steps together; a step sends O(K + N) float64 values
// whatever the model's size, each exchange listed in docs/api.md), estimator ("evograd", the paper's;
// "lookahead": T1-T2's hypergradient by a central finite difference of
// length fd_step, unset: sqrt(eps) * max(1, |theta|), along the validation
// gradient after the inner step; "jvp": the same exactly, by double
// backward; both need inner_lr and take parallel "data" only, reducing the
// inner and the validation gradient), allow_unused (a hyperparameter no
// loss uses keeps its .grad instead of raising), check_replicas (with
// parallel: each step first compares the exact bits of the parameters and
// lambda across ranks, 4 int64 gathered, and throws if they differ),
// keep_train_grad ("lookahead", "jvp": the inner gradient, the ranks' mean,
// is accumulated into the parameters' .grad for the model's optimiser, and
// the buffers are left as that training forward left them). Their meaning is documented once, in Python's
// evograd.EvoGrad; a row marked PYTHON there would be an option this API
// does not offer (there is none).
#define EVOGRAD_MEMBER_BOTH(type, name, value) type name = value;
#define EVOGRAD_MEMBER_PYTHON(type, name, value)
#define EVOGRAD_OPTION(name, type, value, rule, where, flags) EVOGRAD_MEMBER_##where(type, name, value)
struct Options {
#include "evograd/options.def"
#if EVOGRAD_HAS_C10D
  c10::intrusive_ptr<c10d::ProcessGroup> process_group;  // needed with parallel
#endif
};
#undef EVOGRAD_OPTION
#undef EVOGRAD_MEMBER_BOTH
#undef EVOGRAD_MEMBER_PYTHON

// The estimators, as options.def's estimator row lists them ("evograd" first).
std::vector<std::string> estimators();

// The numbers both languages' steps use, from options.def's EVOGRAD_CONSTANT
// rows (collapse_ess, drop_gap; their reasons are written there).
namespace constants {
#define EVOGRAD_CONSTANT(name, type, value) constexpr type name = value;
#include "evograd/options.def"
#undef EVOGRAD_CONSTANT
}  // namespace constants

// Below this effective sample size the weights are (numerically) one-hot and
// the step's hypergradient is ~0: such a step is reported and warned about.
constexpr double kCollapseEss = constants::collapse_ess;

struct StepResult {
  double val_loss;        // validation loss at theta* (lookahead: at theta')
  // [K] candidate training losses (float64; dropped ones NaN/inf); lookahead:
  // the training loss at theta, theta + s u and theta - s u (at theta alone
  // when inner_lr or the validation gradient is 0).
  torch::Tensor losses;
  torch::Tensor weights;  // [K] softmax(-losses / temperature); 0 for dropped candidates
  int64_t seed;           // the noise seed this step used
  int64_t dropped = 0;    // candidates with a non-finite loss (nonfinite = "drop")
  torch::Tensor val_loss_tensor;  // val_loss as the closure's tensor, detached
  // Effective sample size of the weights, 1 / sum(w_k^2), in [1, K] (NaN for
  // lookahead); collapsed: ess < kCollapseEss or all candidate losses equal,
  // so the estimate is ~0 (the step warns).
  double ess = std::numeric_limits<double>::quiet_NaN();
  bool collapsed = false;
};

// T1-T2's detach() for closures: t.detach(), except inside a lookahead
// step's evaluations away from theta, where the n-th call returns what the
// n-th call returned at theta (MWN detaches the per-example cost it feeds
// its weighting net: a value at theta, as the official step means it).
torch::Tensor detached(const torch::Tensor& t);

namespace detail {
class Restorer;
class Exchange;
}

using LossFn = std::function<torch::Tensor()>;

class EvoGrad {
 public:
  // Explicit tensors to perturb and hyperparameters; buffers are restored
  // after each step (pass a model's BatchNorm statistics here).
  EvoGrad(std::vector<torch::Tensor> params, std::vector<torch::Tensor> hyperparams,
          Options options = Options(), std::vector<torch::Tensor> buffers = {});
  // Some of a model's tensors (LFT, MetaXL's head); the model's buffers are
  // restored after each step.
  EvoGrad(std::vector<torch::Tensor> params, std::vector<torch::Tensor> hyperparams,
          Options options, const torch::nn::Module& module);
  // Each floating tensor of the module that requires grad, parameter or
  // buffer (MetaModule-style weights), is perturbed once (tied weights
  // included), hyperparameters excepted; the other buffers are restored.
  EvoGrad(torch::nn::Module& model, std::vector<torch::Tensor> hyperparams,
          Options options = Options());
  EvoGrad(const torch::jit::Module& model, std::vector<torch::Tensor> hyperparams,
          Options options = Options());

  // One meta-step: accumulates d val_loss / d lambda into each
  // hyperparameter's .grad() and leaves the model as it found it. inner_lr,
  // if given, becomes options().inner_lr from this step on (a schedule).
  StepResult step(const LossFn& train_loss, const LossFn& val_loss,
                  c10::optional<double> inner_lr = c10::nullopt);

  // The inner learning rate of the next steps (scale "t1t2" or estimator
  // "lookahead"; a c10::ValueError otherwise or for a value < 0).
  void set_inner_lr(double inner_lr);

  // Checkpoints, as torch::optim's save/load: the base seed, the steps
  // taken and the options. load() continues from the saved run's next step
  // and raises c10::ValueError if the saved options differ from these.
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

  int64_t steps_taken() const { return step_; }
  // Payload bytes this process has handed to collectives (0 in one process).
  int64_t bytes_sent() const;
  int64_t seed() const { return seed_; }
  // 1, or the "t1t2" factor tau * inner_lr / (sigma^2 * c) (evograd estimator).
  double hypergradient_scale() const { return scale_; }
  const std::vector<torch::Tensor>& buffers() const { return buffers_; }
  const Options& options() const { return options_; }
  const std::vector<torch::Tensor>& params() const { return params_; }
  const std::vector<torch::Tensor>& hyperparams() const { return hyper_; }

 private:
  // The three phases of a step.
  struct Candidates {
    torch::Tensor reported;  // [K] as the closures returned them
    torch::Tensor losses;    // [K] with dropped candidates far above the best
    std::vector<std::vector<torch::Tensor>> dloss_dhyper;  // empty for dropped ones
    int64_t dropped = 0;
  };
  struct Validation {
    double loss;
    torch::Tensor projections;          // [K] c_k = <d val / d theta at theta*, eps_k>
    std::vector<torch::Tensor> hyper;   // the direct term d val / d lambda (may be undefined)
    torch::Tensor tensor;               // the loss, detached (the ranks' mean with parallel)
  };
  Candidates evaluate_candidates(detail::Restorer& restore, const LossFn& train_loss,
                                 int64_t seed) const;
  Validation validation_gradient(detail::Restorer& restore, const LossFn& val_loss,
                                 const torch::Tensor& losses, int64_t seed) const;
  // The estimators' units, looked up once per step by name (units()).
  StepResult paper_step(const LossFn& train_loss, const LossFn& val_loss, int64_t seed);
  StepResult lookahead_step(const LossFn& train_loss, const LossFn& val_loss, int64_t seed);
  StepResult jvp_step(const LossFn& train_loss, const LossFn& val_loss, int64_t seed);
  // T1-T2's estimators' shared passes: exact (double backward) or differenced.
  StepResult unrolled_step(bool exact, const LossFn& train_loss, const LossFn& val_loss,
                           int64_t seed, double fd_step);
  using Unit = StepResult (EvoGrad::*)(const LossFn&, const LossFn&, int64_t);
  static const std::vector<std::pair<std::string, Unit>>& units();
  void build(std::vector<torch::Tensor> buffers);
  void accumulate_hypergradient(const Candidates& candidates, const Validation& validation);
  void validate() const;

  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> hyper_;
  std::vector<torch::Tensor> buffers_;
  std::vector<torch::Tensor> bystanders_;  // a module's other tensors, frozen during a step
  Options options_;
  int64_t seed_ = 0;
  int64_t step_ = 0;
  double scale_ = 1.0;
  std::shared_ptr<detail::Exchange> exchange_;
};

// The version these headers belong to ("MAJOR.MINOR.PATCH").
inline const char* version() { return EVOGRAD_VERSION_STRING; }

// The torch version the evograd operators were built against.
const char* built_for_torch();

// Seed of step t for base seed s, the same numbers as Python's
// evograd.step_seed: "mixed": SplitMix64's finaliser of s + t * 0x9E3779B97F4A7C15
// (as a signed 64-bit integer); "consecutive": (s + t) mod 2^63.
int64_t step_seed(int64_t base, int64_t step, const std::string& schedule = "mixed");

}  // namespace evograd
