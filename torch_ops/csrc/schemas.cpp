// The evograd operator schemas: the one place that says what each op takes.
// Kernels per device live in cpu/ and cuda/, autograd in autograd.cpp.
#include <torch/library.h>

TORCH_LIBRARY(evograd, m) {
  m.def("perturb(Tensor[] params, int seed, int k, float sigma, str noise=\"sign\", "
        "bool antithetic=False) -> Tensor[]");
  m.def("perturb_into(Tensor[] params, Tensor(a!)[] out, int seed, int k, float sigma, "
        "str noise=\"sign\", bool antithetic=False) -> ()");
  m.def("combine(Tensor[] params, Tensor losses, float temperature, int seed, float sigma, "
        "str noise=\"sign\", bool antithetic=False) -> Tensor[]");
  m.def("combine_into(Tensor[] params, Tensor losses, Tensor(a!)[] out, float temperature, "
        "int seed, float sigma, str noise=\"sign\", bool antithetic=False) -> ()");
  m.def("weights(Tensor losses, float temperature) -> Tensor");
  m.def("project(Tensor[] grads, int seed, int population, float sigma, "
        "str noise=\"sign\", bool antithetic=False) -> Tensor");
  m.def("loss_cotangent(Tensor losses, Tensor projections, float temperature) -> Tensor");
}
