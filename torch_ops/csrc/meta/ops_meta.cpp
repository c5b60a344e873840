// Meta kernels of the list ops: output shapes, dtypes and strides without
// data, for FakeTensor (torch.compile, torch.export, opcheck) and for meta
// tensors from C++ and TorchScript. The checks are the ones that need no
// values; sizes may be symbolic (torch.compile(dynamic=True)).
#include <torch/library.h>

#include "../lists.h"

namespace evograd_ops {
namespace {

void check_perturb_args(const char* op, at::TensorList params, at::TensorList out,
                        int64_t seed, int64_t k, double sigma, c10::string_view noise,
                        bool antithetic) {
  check_float_list(op, "params", params);
  checked_perturb_args(op, params, out, seed, k, sigma, noise, antithetic, check_out_metadata);
}

void check_combine_args(const char* op, at::TensorList params, const at::Tensor& losses,
                        at::TensorList out, double temperature, int64_t seed, double sigma,
                        c10::string_view noise, bool antithetic) {
  check_float_list(op, "params", params);
  check_out_metadata(op, params, out);
  make_noise(op, seed, sigma, noise, antithetic);
  check_temperature(op, temperature);
  check_vector(op, "losses", losses);
}

void perturb_into_meta(at::TensorList params, at::TensorList out, int64_t seed, int64_t k,
                       double sigma, c10::string_view noise, bool antithetic) {
  check_perturb_args("perturb_into", params, out, seed, k, sigma, noise, antithetic);
}

std::vector<at::Tensor> perturb_meta(at::TensorList params, int64_t seed, int64_t k,
                                     double sigma, c10::string_view noise, bool antithetic) {
  check_float_list("perturb", "params", params);
  auto out = empty_outputs(params);
  check_perturb_args("perturb", params, out, seed, k, sigma, noise, antithetic);
  return out;
}

void combine_into_meta(at::TensorList params, const at::Tensor& losses, at::TensorList out,
                       double temperature, int64_t seed, double sigma, c10::string_view noise,
                       bool antithetic) {
  check_combine_args("combine_into", params, losses, out, temperature, seed, sigma, noise,
                     antithetic);
}

std::vector<at::Tensor> combine_meta(at::TensorList params, const at::Tensor& losses,
                                     double temperature, int64_t seed, double sigma,
                                     c10::string_view noise, bool antithetic) {
  check_float_list("combine", "params", params);
  auto out = empty_outputs(params);
  check_combine_args("combine", params, losses, out, temperature, seed, sigma, noise,
                     antithetic);
  return out;
}

at::Tensor project_meta(at::TensorList grads, int64_t seed, int64_t population, double sigma,
                        c10::string_view noise, bool antithetic) {
  const char* op = "project";
  check_float_list(op, "grads", grads);
  make_noise(op, seed, sigma, noise, antithetic);
  check_population(op, population, antithetic);
  return at::empty({population},
                   grads[0].options().dtype(projection_dtype(grads[0].scalar_type())));
}

}  // namespace
}  // namespace evograd_ops

TORCH_LIBRARY_IMPL(evograd, Meta, m) {
  m.impl("perturb", evograd_ops::perturb_meta);
  m.impl("perturb_into", evograd_ops::perturb_into_meta);
  m.impl("combine", evograd_ops::combine_meta);
  m.impl("combine_into", evograd_ops::combine_into_meta);
  m.impl("project", evograd_ops::project_meta);
}
