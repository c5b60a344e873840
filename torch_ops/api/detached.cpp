// evograd::detached: T1-T2's detach() at theta for closures that a step
// evaluates elsewhere (the same rule as Python's evograd.detached).
#include "detached.h"

namespace evograd {
namespace detail {
namespace {

thread_local BaseValues* active = nullptr;

}  // namespace

torch::Tensor BaseValues::take(const torch::Tensor& t) {
  if (!replaying_) {
    values_.push_back(t.detach());
    return values_.back();
  }
  TORCH_CHECK(next_ < values_.size(), "evograd: evograd::detached was called more times in a "
              "perturbed evaluation of the training closure than at the base parameters (",
              values_.size(), "): the closure must make the same calls");
  const auto& value = values_[next_++];
  TORCH_CHECK(value.sizes() == t.sizes(), "evograd: evograd::detached: call ", next_ - 1,
              " had shape ", value.sizes(), " at the base parameters and ", t.sizes(), " now");
  return value;
}

ActiveValues::ActiveValues(BaseValues* values) : saved_(active) { active = values; }
ActiveValues::~ActiveValues() { active = saved_; }

}  // namespace detail

torch::Tensor detached(const torch::Tensor& t) {
  return detail::active == nullptr ? t.detach() : detail::active->take(t);
}

}  // namespace evograd
