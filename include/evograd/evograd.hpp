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
// (sigma^2 * c), c = 1 - 1/K or 1 with antithetic noise), inner_lr (>= 0),
// common_random_numbers (one torch RNG state replayed for every candidate),
// nonfinite ("raise" or "drop"), parallel ("", "data" or "candidates": every
// rank builds alike, checked at construction, and steps together; a step
// sends K + K + N float64 values plus three failure counts). Their meaning is
// documented once, in Python's evograd.EvoGrad. Rows marked PYTHON there
// (estimator, fd_step, allow_unused, check_replicas) are the options this API
// does not offer.
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

struct StepResult {
  double val_loss;        // validation loss at theta*
  torch::Tensor losses;   // [K] candidate training losses (float64; dropped ones NaN/inf)
  torch::Tensor weights;  // [K] softmax(-losses / temperature); 0 for dropped candidates
  int64_t seed;           // the noise seed this step used
  int64_t dropped = 0;    // candidates with a non-finite loss (nonfinite = "drop")
};

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
  // hyperparameter's .grad() and leaves the model as it found it.
  StepResult step(const LossFn& train_loss, const LossFn& val_loss);

  // Checkpoints, as torch::optim's save/load: the base seed, the steps
  // taken and the options. load() continues from the saved run's next step
  // and raises c10::ValueError if the saved options differ from these.
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

  int64_t steps_taken() const { return step_; }
  // Payload bytes this process has handed to collectives (0 in one process).
  int64_t bytes_sent() const;
  int64_t seed() const { return seed_; }
  // 1, or the "t1t2" factor tau * inner_lr / (sigma^2 * c).
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
  };
  Candidates evaluate_candidates(detail::Restorer& restore, const LossFn& train_loss,
                                 int64_t seed) const;
  Validation validation_gradient(detail::Restorer& restore, const LossFn& val_loss,
                                 const torch::Tensor& losses, int64_t seed) const;
  void build(std::vector<torch::Tensor> buffers);
  void accumulate_hypergradient(const Candidates& candidates, const Validation& validation,
                                int64_t seed);
  void validate() const;

  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> hyper_;
  std::vector<torch::Tensor> buffers_;
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
