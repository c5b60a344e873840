// The list ops, the same for every device: argument checks, contiguous
// spans, temporaries for non-contiguous outputs, the result's dtype. A device
// supplies only its kernel calls, as a struct `Device` with
//
//   static constexpr bool kHoldsData;   // false: Meta (checks and shapes only)
//   static constexpr c10::DeviceType kType;
//   static void perturb(const Launch&, int64_t k);
//   static void combine(const Launch&, const std::vector<double>& weights);
//   static void project(const Launch&, int64_t population, at::Tensor& sums);
//
// and registers ListOps<Device>::define(m) under its dispatch key.
#pragma once

#include <torch/library.h>

#include <vector>

#include "lists.h"

namespace evograd_ops {

// What a device kernel is handed: every argument already checked.
struct Launch {
  const char* op;                          // the user-facing op, for messages
  evograd_dtype dtype;
  const std::vector<evograd_span>& spans;  // contiguous, in list order
  int64_t total;                           // elements across the list
  const at::Tensor& like;                  // the list's first tensor (device, options)
  evograd_noise noise;
};

template <typename Device>
struct ListOps {
  static void perturb_into(at::TensorList params, at::TensorList out, int64_t seed, int64_t k,
                           double sigma, c10::string_view noise, bool antithetic, int64_t offset) {
    perturb_impl("perturb_into", params, out, seed, k, sigma, noise, antithetic, offset);
  }
  static std::vector<at::Tensor> perturb(at::TensorList params, int64_t seed, int64_t k,
                                         double sigma, c10::string_view noise, bool antithetic,
                                         int64_t offset) {
    check_list("perturb", "params", params);
    auto out = empty_outputs(params);
    perturb_impl("perturb", params, out, seed, k, sigma, noise, antithetic, offset);
    return out;
  }
  static void combine_into(at::TensorList params, const at::Tensor& losses, at::TensorList out,
                           double temperature, int64_t seed, double sigma,
                           c10::string_view noise, bool antithetic, int64_t offset) {
    combine_impl("combine_into", params, losses, out, temperature, seed, sigma, noise,
                 antithetic, offset);
  }
  static std::vector<at::Tensor> combine(at::TensorList params, const at::Tensor& losses,
                                         double temperature, int64_t seed, double sigma,
                                         c10::string_view noise, bool antithetic, int64_t offset) {
    check_list("combine", "params", params);
    auto out = empty_outputs(params);
    combine_impl("combine", params, losses, out, temperature, seed, sigma, noise, antithetic,
                 offset);
    return out;
  }
  static at::Tensor project(at::TensorList grads, int64_t seed, int64_t population, double sigma,
                            c10::string_view noise_name, bool antithetic, int64_t offset) {
    const char* op = "project";
    check_list(op, "grads", grads);
    const auto noise = make_noise(op, seed, sigma, noise_name, antithetic, offset);
    check_population(op, population, antithetic);
    const auto dtype = projection_dtype(grads[0].scalar_type());
    if constexpr (!Device::kHoldsData) {
      return at::empty({population}, grads[0].options().dtype(dtype));
    } else {
      const auto src = contiguous_list(grads);
      const auto spans = read_spans(src);
      auto sums = at::empty({population}, grads[0].options().dtype(at::kDouble));
      Device::project({op, dtype_of(grads[0]), spans, total_numel(grads), grads[0], noise},
                      population, sums);
      return sums.to(dtype);
    }
  }
  static void define(torch::Library& m) {
    m.impl("perturb", perturb);
    m.impl("perturb_into", perturb_into);
    m.impl("combine", combine);
    m.impl("combine_into", combine_into);
    m.impl("project", project);
  }

 private:
  // The list's own checks, and that it lives on this kernel's device: a CPU
  // list with CUDA losses dispatches here to CUDA.
  static void check_list(const char* op, const char* what, at::TensorList list) {
    check_float_list(op, what, list);
    if constexpr (Device::kHoldsData)
      TORCH_CHECK_VALUE(list[0].device().type() == Device::kType, "evograd.", op, ": ", what,
                        " are on ", list[0].device(), " but another argument is a ",
                        c10::DeviceTypeName(Device::kType), " tensor");
  }
  static void perturb_impl(const char* op, at::TensorList params, at::TensorList out,
                           int64_t seed, int64_t k, double sigma, c10::string_view noise_name,
                           bool antithetic, int64_t offset) {
    check_list(op, "params", params);
    if constexpr (!Device::kHoldsData) {
      checked_perturb_args(op, params, out, seed, k, sigma, noise_name, antithetic, offset,
                           check_out_metadata);
    } else {
      const auto noise =
          checked_perturb_args(op, params, out, seed, k, sigma, noise_name, antithetic, offset);
      auto w = make_writable(params, out);
      Device::perturb({op, dtype_of(params[0]), w.spans, total_numel(params), params[0], noise},
                      k);
      w.finish();
    }
  }
  static void combine_impl(const char* op, at::TensorList params, const at::Tensor& losses,
                           at::TensorList out, double temperature, int64_t seed, double sigma,
                           c10::string_view noise_name, bool antithetic, int64_t offset) {
    check_list(op, "params", params);
    if constexpr (!Device::kHoldsData) {
      check_out_metadata(op, params, out);  // the losses' values are not there to check
      make_noise(op, seed, sigma, noise_name, antithetic, offset);
      check_temperature(op, temperature);
      check_vector(op, "losses", losses);
    } else {
      const auto args = checked_combine_args(op, params, losses, out, temperature, seed, sigma,
                                             noise_name, antithetic, offset);
      auto w = make_writable(params, out);
      Device::combine(
          {op, dtype_of(params[0]), w.spans, total_numel(params), params[0], args.noise},
          args.weights);
      w.finish();
    }
  }
};

}  // namespace evograd_ops
