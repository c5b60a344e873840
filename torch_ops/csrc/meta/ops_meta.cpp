// Meta kernels of the list ops: output shapes, dtypes and strides without
// data, for FakeTensor (torch.compile, torch.export, opcheck) and for meta
// tensors from C++ and TorchScript. The checks are the ones that need no
// values; sizes may be symbolic (torch.compile(dynamic=True)).
#include <torch/library.h>

#include "../list_ops.h"

namespace evograd_ops {
namespace meta {

void perturb(const char* op, at::TensorList params, at::TensorList out, int64_t seed, int64_t k,
             double sigma, c10::string_view noise, bool antithetic) {
  check_float_list(op, "params", params);
  checked_perturb_args(op, params, out, seed, k, sigma, noise, antithetic, check_out_metadata);
}

void combine(const char* op, at::TensorList params, const at::Tensor& losses,
             at::TensorList out, double temperature, int64_t seed, double sigma,
             c10::string_view noise, bool antithetic) {
  check_float_list(op, "params", params);
  check_out_metadata(op, params, out);
  make_noise(op, seed, sigma, noise, antithetic);
  check_temperature(op, temperature);
  check_vector(op, "losses", losses);
}

at::Tensor project(at::TensorList grads, int64_t seed, int64_t population, double sigma,
                   c10::string_view noise, bool antithetic) {
  const char* op = "project";
  check_float_list(op, "grads", grads);
  make_noise(op, seed, sigma, noise, antithetic);
  check_population(op, population, antithetic);
  return at::empty({population},
                   grads[0].options().dtype(projection_dtype(grads[0].scalar_type())));
}

}  // namespace meta
}  // namespace evograd_ops

TORCH_LIBRARY_IMPL(evograd, Meta, m) {
  namespace ops = evograd_ops;
  ops::ListOps<ops::meta::perturb, ops::meta::combine, ops::meta::project>::define(m);
}
