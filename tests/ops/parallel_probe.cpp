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

// The lambda-gradient, then the bytes this rank sent (construction and step).
torch::Tensor step(const std::string& parallel, const std::string& group, int64_t population,
                   const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& xv,
                   const torch::Tensor& yv) {
  evograd_test::Problem p(16);
  evograd::Options o;
  o.population = population;
  o.seed = 11;
  o.parallel = parallel;
  if (!group.empty()) o.process_group = c10d::resolve_process_group(group);
  evograd::EvoGrad meta(*p.model, p.hyper(), o);
  meta.step([&] { return p.train_loss(x, y); }, [&] { return p.val_loss(xv, yv); });
  return torch::cat({p.hypergradient(),
                     torch::tensor({static_cast<double>(meta.bytes_sent())}, torch::kDouble)});
}

}  // namespace

TORCH_LIBRARY(evograd_probe, m) {
  m.def("step(str parallel, str group, int population, Tensor x, Tensor y, Tensor xv, "
        "Tensor yv) -> Tensor", &step);
}
