// T1-T2's estimators in C++: the one-step unrolled hypergradient by a central
// finite difference along the validation gradient after the inner step
// ("lookahead": the same passes and numbers as Python's evograd/lookahead.py)
// or exactly, by double backward at theta ("jvp": the derivative Python's
// evograd/jvp.py takes by forward mode). docs/design.md derives both.
#pragma once

#include <vector>

#include "evograd/evograd.hpp"
#include "exchange.h"
#include "restorer.h"

namespace evograd {
namespace detail {

struct Lookahead {
  std::vector<torch::Tensor> parts;  // to add to each lambda's .grad (undefined: leave it)
  std::vector<double> losses;        // training losses at theta, theta + s u, theta - s u
  double val_loss = 0.0;             // at theta'
  torch::Tensor val_tensor;          // the same, as the closure's tensor, detached
  std::vector<torch::Tensor> inner;  // grad_theta l_T(theta), when kept (keep_train_grad)
  std::vector<torch::Tensor> buffers;  // the buffers after the pass at theta, when kept
};

// The 2-norm of a list of tensors, summed in float64 a million elements at a
// time (a float64 copy of a whole large tensor would be the step's peak).
double norm(const std::vector<torch::Tensor>& tensors);

// sqrt(eps) * max(1, |theta|) for the parameters' dtype.
double default_fd_step(const std::vector<torch::Tensor>& params);

enum class Through { kDifference, kDoubleBackward };

// Runs the estimator's passes on the restorer's parameters; `rng` is replayed
// before each training pass, so that every pass sees one draw of dropout.
// `step` is lookahead's difference length (unused by kDoubleBackward). With
// parallel "data" the exchange makes the inner and the validation gradient
// and then the parts and losses the ranks' means; an error on one rank is
// one on all (every rank reaches the same exchanges).
Lookahead unrolled(Through through, const std::vector<torch::Tensor>& params,
                   const std::vector<torch::Tensor>& hyper, Restorer& restore,
                   RngSnapshot& rng, const LossFn& train_loss, const LossFn& val_loss,
                   double alpha, double step, bool allow_unused, Exchange& exchange,
                   bool keep_inner);

}  // namespace detail
}  // namespace evograd
