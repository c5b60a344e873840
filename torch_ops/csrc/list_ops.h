// The list ops' registration, the same for every device. A device supplies
// three kernels, each told the user-facing op name for its messages:
//   static void perturb(const char* op, TensorList params, TensorList out, seed, k, sigma,
//                       noise, antithetic);
//   static void combine(const char* op, TensorList params, const Tensor& losses,
//                       TensorList out, temperature, seed, sigma, noise, antithetic);
//   static at::Tensor project(TensorList grads, seed, population, sigma, noise, antithetic);
// and this file turns them into the five operators: the _into forms write
// into `out`, the others into fresh contiguous tensors shaped like params.
#pragma once

#include <torch/library.h>

#include <vector>

#include "lists.h"

namespace evograd_ops {

template <typename Device>
struct ListOps {
  static void perturb_into(at::TensorList params, at::TensorList out, int64_t seed, int64_t k,
                           double sigma, c10::string_view noise, bool antithetic) {
    Device::perturb("perturb_into", params, out, seed, k, sigma, noise, antithetic);
  }
  static std::vector<at::Tensor> perturb(at::TensorList params, int64_t seed, int64_t k,
                                         double sigma, c10::string_view noise, bool antithetic) {
    check_float_list("perturb", "params", params);
    auto out = empty_outputs(params);
    Device::perturb("perturb", params, out, seed, k, sigma, noise, antithetic);
    return out;
  }
  static void combine_into(at::TensorList params, const at::Tensor& losses, at::TensorList out,
                           double temperature, int64_t seed, double sigma,
                           c10::string_view noise, bool antithetic) {
    Device::combine("combine_into", params, losses, out, temperature, seed, sigma, noise,
                    antithetic);
  }
  static std::vector<at::Tensor> combine(at::TensorList params, const at::Tensor& losses,
                                         double temperature, int64_t seed, double sigma,
                                         c10::string_view noise, bool antithetic) {
    check_float_list("combine", "params", params);
    auto out = empty_outputs(params);
    Device::combine("combine", params, losses, out, temperature, seed, sigma, noise, antithetic);
    return out;
  }
  static void define(torch::Library& m) {
    m.impl("perturb", perturb);
    m.impl("perturb_into", perturb_into);
    m.impl("combine", combine);
    m.impl("combine_into", combine_into);
    m.impl("project", Device::project);
  }
};

}  // namespace evograd_ops
