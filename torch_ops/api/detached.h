// evograd::detached's memory: the values a lookahead step's first training
// pass (at theta) detached, replayed in call order by the passes after it.
#pragma once

#include <vector>

#include "evograd/evograd.hpp"

namespace evograd {
namespace detail {

class BaseValues {
 public:
  torch::Tensor take(const torch::Tensor& t);
  void replay() { replaying_ = true, next_ = 0; }

 private:
  std::vector<torch::Tensor> values_;
  bool replaying_ = false;
  size_t next_ = 0;
};

// While alive, evograd::detached on this thread goes through `values`
// (nullptr: plain detach, as in the validation closure).
class ActiveValues {
 public:
  explicit ActiveValues(BaseValues* values);
  ~ActiveValues();
  ActiveValues(const ActiveValues&) = delete;
  ActiveValues& operator=(const ActiveValues&) = delete;

 private:
  BaseValues* saved_;
};

}  // namespace detail
}  // namespace evograd
