// The problem the C++ parallel tests step on: a small classifier, two
// hyperparameters and batches, all formulas (no draws), shared by the gloo
// suite (test_parallel.cpp) and the probe operator Python drives
// (parallel_probe.cpp).
#pragma once

#include <torch/torch.h>

#include <vector>

namespace evograd_test {

constexpr int64_t kFeatures = 6, kClasses = 3;

inline torch::Tensor wave(std::vector<int64_t> shape, double phase, double scale) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  auto i = torch::arange(n, torch::kDouble);
  return (scale * torch::sin(1.7 * i + phase)).reshape(shape);
}

// A small classifier with no batch statistics (a data-parallel mean then
// equals the whole batch's mean) and two hyperparameters: a log weight decay
// (training loss only) and a per-class weighting (also read by the
// validation loss, so the direct term is exercised).
struct Problem {
  torch::nn::Sequential model;
  torch::Tensor log_decay, class_logits;

  explicit Problem(int64_t hidden)
      : model(torch::nn::Linear(kFeatures, hidden), torch::nn::Tanh(),
              torch::nn::Linear(hidden, kClasses)) {
    model->to(torch::kDouble);
    torch::NoGradGuard no_grad;
    double phase = 0.1;
    for (auto& p : model->parameters()) {
      p.copy_(wave(p.sizes().vec(), phase, 0.4));
      phase += 0.9;
    }
    log_decay = torch::full({1}, -3.0, torch::kDouble).requires_grad_();
    class_logits = torch::tensor({0.1, -0.2, 0.3}, torch::kDouble).requires_grad_();
  }
  std::vector<torch::Tensor> hyper() const { return {log_decay, class_logits}; }

  torch::Tensor train_loss(const torch::Tensor& x, const torch::Tensor& y) {
    auto w = torch::softmax(class_logits, 0).index_select(0, y) * kClasses;
    auto per_sample = torch::nll_loss(torch::log_softmax(model->forward(x), 1), y, {},
                                      at::Reduction::None);
    auto decay = torch::zeros({}, torch::kDouble);
    for (const auto& p : model->parameters()) decay = decay + p.pow(2).sum();
    return (w * per_sample).mean() + torch::exp(log_decay).sum() * decay;
  }
  torch::Tensor val_loss(const torch::Tensor& x, const torch::Tensor& y) {
    return torch::nll_loss(torch::log_softmax(model->forward(x), 1), y) +
           0.01 * class_logits.pow(2).sum();
  }
  torch::Tensor hypergradient() const {
    return torch::cat({log_decay.grad().reshape({-1}), class_logits.grad().reshape({-1})});
  }
};

struct Batch {
  torch::Tensor x, y;
  Batch rows(int64_t rank, int64_t world) const {
    const int64_t n = x.size(0) / world;
    return {x.narrow(0, rank * n, n), y.narrow(0, rank * n, n)};
  }
};

inline Batch batch(int64_t n, double phase) {
  return {wave({n, kFeatures}, phase, 1.0),
          torch::remainder(torch::arange(n, torch::kLong) * 7 + 2, kClasses)};
}

inline const Batch kTrain = batch(12, 0.3), kVal = batch(12, 2.1);

}  // namespace evograd_test
