// The list ops' registration, the same for every device. A device supplies
// three kernels (perturb and combine are told the user-facing op name for
// their messages), and ListOps<perturb, combine, project>::define(m) turns
// them into the five operators: the _into forms write into `out`, the others
// into fresh contiguous tensors shaped like params.
#pragma once

#include <torch/library.h>

#include <vector>

#include "lists.h"

namespace evograd_ops {

using PerturbKernel = void (*)(const char* op, at::TensorList params, at::TensorList out,
                               int64_t seed, int64_t k, double sigma, c10::string_view noise,
                               bool antithetic);
using CombineKernel = void (*)(const char* op, at::TensorList params, const at::Tensor& losses,
                               at::TensorList out, double temperature, int64_t seed,
                               double sigma, c10::string_view noise, bool antithetic);
using ProjectKernel = at::Tensor (*)(at::TensorList grads, int64_t seed, int64_t population,
                                     double sigma, c10::string_view noise, bool antithetic);

template <PerturbKernel Perturb, CombineKernel Combine, ProjectKernel Project>
struct ListOps {
  static void perturb_into(at::TensorList params, at::TensorList out, int64_t seed, int64_t k,
                           double sigma, c10::string_view noise, bool antithetic) {
    Perturb("perturb_into", params, out, seed, k, sigma, noise, antithetic);
  }
  static std::vector<at::Tensor> perturb(at::TensorList params, int64_t seed, int64_t k,
                                         double sigma, c10::string_view noise, bool antithetic) {
    check_float_list("perturb", "params", params);
    auto out = empty_outputs(params);
    Perturb("perturb", params, out, seed, k, sigma, noise, antithetic);
    return out;
  }
  static void combine_into(at::TensorList params, const at::Tensor& losses, at::TensorList out,
                           double temperature, int64_t seed, double sigma,
                           c10::string_view noise, bool antithetic) {
    Combine("combine_into", params, losses, out, temperature, seed, sigma, noise,
                    antithetic);
  }
  static std::vector<at::Tensor> combine(at::TensorList params, const at::Tensor& losses,
                                         double temperature, int64_t seed, double sigma,
                                         c10::string_view noise, bool antithetic) {
    check_float_list("combine", "params", params);
    auto out = empty_outputs(params);
    Combine("combine", params, losses, out, temperature, seed, sigma, noise, antithetic);
    return out;
  }
  static void define(torch::Library& m) {
    m.impl("perturb", perturb);
    m.impl("perturb_into", perturb_into);
    m.impl("combine", combine);
    m.impl("combine_into", combine_into);
    m.impl("project", Project);
  }
};

}  // namespace evograd_ops
