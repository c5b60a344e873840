// What the user's loss closures return, checked: a finite floating scalar,
// and its gradient with respect to lambda (as Python's evograd/closures.py).
#pragma once

#include <vector>

#include "evograd/evograd.hpp"

namespace evograd {
namespace detail {

// The loss as a double; a c10::ValueError or TypeError naming `which`
// ("training", "validation") for anything but a finite floating scalar.
double checked_loss(const torch::Tensor& loss, const char* which, bool allow_nonfinite = false);

// d loss / d lambda (the parameters do not require grad meanwhile); an
// undefined tensor for a hyperparameter it does not use, with allow_unused.
std::vector<torch::Tensor> hyper_gradient(const torch::Tensor& loss,
                                          const std::vector<torch::Tensor>& hyper,
                                          bool allow_unused);

// .grad += part, as backward() accumulates; an undefined part leaves it.
void accumulate(const std::vector<torch::Tensor>& hyper, const std::vector<torch::Tensor>& parts);

}  // namespace detail
}  // namespace evograd
