// Which tensors the C++ step perturbs and which it restores, as Python's
// evograd/tensors.py decides them.
#pragma once

#include <vector>

#include "evograd/evograd.hpp"

namespace evograd {
namespace detail {

inline bool same_tensor(const torch::Tensor& a, const torch::Tensor& b) {
  return a.defined() && b.defined() && a.is_same(b);
}

inline bool contains(const std::vector<torch::Tensor>& list, const torch::Tensor& t) {
  for (const auto& x : list)
    if (same_tensor(t, x)) return true;
  return false;
}

// Buffers to restore, each once, less those that share storage with a
// perturbed tensor (restored as such) or a hyperparameter.
inline std::vector<torch::Tensor> restored_buffers(const std::vector<torch::Tensor>& buffers,
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

inline ModuleTensors split_module(const std::vector<torch::Tensor>& params,
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

inline std::vector<torch::Tensor> jit_tensors(const torch::jit::Module& m, bool params) {
  std::vector<torch::Tensor> out;
  if (params) {
    for (const auto& p : m.parameters()) out.push_back(p);
  } else {
    for (const auto& b : m.buffers()) out.push_back(b);
  }
  return out;
}

}  // namespace detail
}  // namespace evograd
