// What the C++ step changes about the model, put back on scope exit, and the
// torch RNG states replayed per candidate (common random numbers).
#pragma once

#include <mutex>
#include <vector>

#include "evograd/evograd.hpp"

namespace evograd {
namespace detail {

// Everything step() changes about the model, put back on scope exit.
//
// The step writes values through variable_data() aliases (Python's .data),
// which share the storage but not the autograd version counter: every value
// is put back bit for bit before step() returns, so a graph the caller
// recorded before the step (LFT's auxiliary loss) stays valid and exact.
class Restorer {
 public:
  Restorer(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& buffers,
           const std::vector<torch::Tensor>& bystanders = {})
      : params_(params), buffers_(buffers) {
    torch::NoGradGuard no_grad;
    for (const auto& p : params_) {
      targets_.push_back(p.variable_data());
      saved_.push_back(p.detach().clone());
      grads_.push_back(p.grad());
      flags_.push_back(p.requires_grad());
    }
    for (const auto& b : buffers_) {
      buffer_targets_.push_back(b.variable_data());
      saved_buffers_.push_back(b.detach().clone());
    }
    // Closures that call backward() must not touch the caller's gradients.
    for (auto& p : params_) p.mutable_grad() = torch::Tensor();
    // Tensors neither perturbed nor hyperparameters (an encoder below a
    // perturbed head) record nothing during the step.
    for (const auto& t : bystanders)
      if (t.requires_grad()) frozen_.push_back(t);
    for (auto& t : frozen_) t.requires_grad_(false);
  }
  Restorer(const Restorer&) = delete;
  Restorer& operator=(const Restorer&) = delete;

  const std::vector<torch::Tensor>& saved() const { return saved_; }
  // Where the step writes the parameters' values.
  const std::vector<torch::Tensor>& targets() const { return targets_; }
  // The buffers' values now, copied (keep_train_grad leaves those of the
  // training forward at theta).
  std::vector<torch::Tensor> buffer_values() const {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> out;
    for (const auto& b : buffer_targets_) out.push_back(b.clone());
    return out;
  }
  void restore_buffers() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < buffers_.size(); ++i) buffer_targets_[i].copy_(saved_buffers_[i]);
  }
  void set_requires_grad(bool on) {
    for (auto& p : params_) p.requires_grad_(on);
  }
  ~Restorer() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      params_[i].requires_grad_(flags_[i]);
      targets_[i].copy_(saved_[i]);
      params_[i].mutable_grad() = grads_[i];
    }
    for (auto& t : frozen_) t.requires_grad_(true);
    restore_buffers();
  }

 private:
  std::vector<torch::Tensor> params_, buffers_, frozen_;
  std::vector<torch::Tensor> targets_, buffer_targets_;
  std::vector<torch::Tensor> saved_, grads_, saved_buffers_;
  std::vector<bool> flags_;
};


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

}  // namespace detail
}  // namespace evograd
