#include "precision.h"

#include <unordered_set>
#include <vector>

#include <torch/csrc/autograd/function.h>

namespace evograd {
namespace detail {

c10::optional<c10::ScalarType> narrowest_float(const torch::Tensor& loss) {
  c10::optional<c10::ScalarType> out;
  if (!loss.defined() || !loss.grad_fn()) return out;
  // A node's input metadata is what its forward operation returned.
  std::vector<torch::autograd::Node*> stack{loss.grad_fn().get()};
  std::unordered_set<torch::autograd::Node*> seen{stack.back()};
  while (!stack.empty() && out != c10::ScalarType::BFloat16) {
    auto* node = stack.back();
    stack.pop_back();
    for (uint32_t i = 0; i < node->num_inputs(); ++i) {
      const auto type = c10::typeMetaToScalarType(node->input_metadata(i).dtype());
      if (type == c10::ScalarType::BFloat16 || (type == c10::ScalarType::Half && !out)) out = type;
    }
    for (const auto& edge : node->next_edges()) {
      auto* next = edge.function.get();
      if (next && seen.insert(next).second) stack.push_back(next);
    }
  }
  return out;
}

double unit_roundoff(c10::ScalarType type) {
  return type == c10::ScalarType::BFloat16 ? 1.0 / 512 : 1.0 / 4096;
}

}  // namespace detail
}  // namespace evograd
