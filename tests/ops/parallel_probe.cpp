// An operator that takes one C++ EvoGrad step on a process group Python
// made, found by its name in c10d's registry: the C++ parallel path under
// pip's torch, whose LibTorch cannot build a gloo group in C++ itself.
// Loaded by tests/python/test_cpp_parallel.py with torch.ops.load_library.
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/library.h>

#include <string>

#include "evograd/evograd.hpp"
#include "parallel_problem.h"

namespace {

// The lambda-gradient, the parameters' .grad (T1-T2's estimators, which
// keep the inner gradient there), then the bytes this rank sent
// (construction and step). drift is added to the first weight on rank 1
// after construction (a replica that drifted apart, for check_replicas).
torch::Tensor step(const std::string& parallel, const std::string& group, int64_t population,
                   const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& xv,
                   const torch::Tensor& yv, bool check_replicas, double drift,
                   const std::string& estimator) {
  evograd_test::Problem p(16);
  evograd::Options o;
  o.estimator = estimator;
  if (estimator == "evograd") {
    o.population = population;
  } else {
    o.inner_lr = 0.1;
    o.keep_train_grad = true;
  }
  o.seed = 11;
  o.parallel = parallel;
  o.check_replicas = check_replicas;
  if (!group.empty()) o.process_group = c10d::resolve_process_group(group);
  evograd::EvoGrad meta(*p.model, p.hyper(), o);
  if (drift != 0.0 && o.process_group && o.process_group->getRank() == 1) {
    torch::NoGradGuard no_grad;
    p.model->parameters()[0].view({-1})[0] += drift;
  }
  meta.step([&] { return p.train_loss(x, y); }, [&] { return p.val_loss(xv, yv); });
  std::vector<torch::Tensor> out{p.hypergradient()};
  for (const auto& t : p.model->parameters())
    if (t.grad().defined()) out.push_back(t.grad().reshape({-1}));
  out.push_back(torch::tensor({static_cast<double>(meta.bytes_sent())}, torch::kDouble));
  return torch::cat(out);
}

}  // namespace

TORCH_LIBRARY(evograd_probe, m) {
  m.def("step(str parallel, str group, int population, Tensor x, Tensor y, Tensor xv, "
        "Tensor yv, bool check_replicas=False, float drift=0.0, str estimator=\"evograd\") -> Tensor",
        &step);
}
