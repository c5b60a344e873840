// Autograd for the evograd ops, registered in C++ under the Autograd key so it
// works the same from Python, TorchScript and C++-only processes.
//
//   perturb:  d(theta + eps_k)/d theta = I.
//   combine:  d theta*/d theta = I; d theta*/d l_j through the softmax weights,
//             contracted with the incoming gradient g: -(w_j/tau)(c_j - sum w c)
//             with c_k = <g, eps_k>. The noise is regenerated, never saved.
//   weights:  the softmax(-l/tau) Jacobian-vector product.
// The other ops are not differentiable: their outputs never require grad.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/version.h>

#include "evograd/operators.hpp"

namespace evograd_ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// How many non-tensor arguments an op takes after its tensors, read from its
// schema (schemas.cpp): each gets an (undefined) gradient.
size_t scalars_of(const char* op) {
  const auto& schema = c10::Dispatcher::singleton().findSchemaOrThrow(op, "").schema();
  size_t n = 0;
  for (const auto& a : schema.arguments()) {
    const auto kind = a.type()->kind();
    n += kind != c10::TypeKind::TensorType && kind != c10::TypeKind::ListType;
  }
  return n;
}

// K, the number of candidate losses. Under torch.compile(dynamic=True) the
// losses' size is symbolic; project needs a concrete K, so this specialises
// the compiled graph on it (a guard), as any Python int argument would.
int64_t population(const at::Tensor& losses) {
#if TORCH_VERSION_MAJOR >= 2
  return losses.sym_numel().guard_int(__FILE__, __LINE__);
#else
  return losses.numel();
#endif
}

class PerturbFunction : public torch::autograd::Function<PerturbFunction> {
 public:
  static variable_list forward(AutogradContext*, at::TensorList params,
                               int64_t seed, int64_t k, double sigma, std::string noise,
                               bool antithetic, int64_t offset) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return evograd::operators::perturb()
        .call(params, seed, k, sigma, noise, antithetic, offset);
  }
  static variable_list backward(AutogradContext*, variable_list grads) {
    static const size_t scalars = scalars_of("evograd::perturb");
    grads.resize(grads.size() + scalars);
    return grads;
  }
};

class CombineFunction : public torch::autograd::Function<CombineFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList params,
                               at::Tensor losses, double temperature, int64_t seed,
                               double sigma, std::string noise, bool antithetic,
                               int64_t offset) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto out = evograd::operators::combine()
                   .call(params, losses, temperature, seed, sigma, noise, antithetic, offset);
    ctx->save_for_backward({losses});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["sigma"] = sigma;
    ctx->saved_data["noise"] = noise;
    ctx->saved_data["antithetic"] = antithetic;
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["losses_need_grad"] = losses.requires_grad();
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto losses = ctx->get_saved_variables()[0];
    at::Tensor d_losses;
    if (ctx->saved_data["losses_need_grad"].toBool()) {
      const double temperature = ctx->saved_data["temperature"].toDouble();
      auto c = evograd::operators::project()
                   .call(grads, ctx->saved_data["seed"].toInt(), population(losses),
                         ctx->saved_data["sigma"].toDouble(),
                         ctx->saved_data["noise"].toStringRef(),
                         ctx->saved_data["antithetic"].toBool(),
                         ctx->saved_data["offset"].toInt());
      d_losses = evograd::operators::loss_cotangent()
                     .call(losses, c, temperature);
    }
    variable_list result = grads;  // identity for params
    result.push_back(d_losses);
    static const size_t scalars = scalars_of("evograd::combine");
    result.resize(result.size() + scalars);
    return result;
  }
};

class WeightsFunction : public torch::autograd::Function<WeightsFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::Tensor losses, double temperature) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto w = evograd::operators::weights().call(losses, temperature);
    ctx->save_for_backward({w});
    ctx->saved_data["temperature"] = temperature;
    return {w};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto w = ctx->get_saved_variables()[0];
    const double tau = ctx->saved_data["temperature"].toDouble();
    const auto& gw = grads[0];
    auto d = -(w / tau) * (gw - (w * gw).sum());
    return {d, at::Tensor()};
  }
};

std::vector<at::Tensor> perturb_autograd(at::TensorList params, int64_t seed, int64_t k,
                                         double sigma, c10::string_view noise,
                                         bool antithetic, int64_t offset) {
  return PerturbFunction::apply(params, seed, k, sigma, std::string(noise), antithetic, offset);
}

std::vector<at::Tensor> combine_autograd(at::TensorList params, const at::Tensor& losses,
                                         double temperature, int64_t seed, double sigma,
                                         c10::string_view noise, bool antithetic,
                                         int64_t offset) {
  return CombineFunction::apply(params, losses, temperature, seed, sigma,
                                std::string(noise), antithetic, offset);
}

at::Tensor weights_autograd(const at::Tensor& losses, double temperature) {
  return WeightsFunction::apply(losses, temperature)[0];
}

at::Tensor project_autograd(at::TensorList grads, int64_t seed, int64_t population,
                            double sigma, c10::string_view noise, bool antithetic,
                            int64_t offset) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return evograd::operators::project()
      .call(grads, seed, population, sigma, noise, antithetic, offset);
}

at::Tensor loss_cotangent_autograd(const at::Tensor& losses, const at::Tensor& projections,
                                   double temperature) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return evograd::operators::loss_cotangent()
      .call(losses, projections, temperature);
}

void bump_versions(at::TensorList out) {
  for (const auto& t : out) torch::autograd::impl::bump_version(t);
}

void perturb_into_autograd(at::TensorList params, at::TensorList out, int64_t seed, int64_t k,
                           double sigma, c10::string_view noise, bool antithetic,
                           int64_t offset) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    evograd::operators::perturb_into()
        .call(params, out, seed, k, sigma, noise, antithetic, offset);
  }
  bump_versions(out);  // graphs that saved the old values now fail loudly
}

void combine_into_autograd(at::TensorList params, const at::Tensor& losses,
                           at::TensorList out, double temperature, int64_t seed,
                           double sigma, c10::string_view noise, bool antithetic,
                           int64_t offset) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    evograd::operators::combine_into()
        .call(params, losses, out, temperature, seed, sigma, noise, antithetic, offset);
  }
  bump_versions(out);
}

}  // namespace
}  // namespace evograd_ops

TORCH_LIBRARY_IMPL(evograd, Autograd, m) {
  m.impl("perturb", evograd_ops::perturb_autograd);
  m.impl("combine", evograd_ops::combine_autograd);
  m.impl("weights", evograd_ops::weights_autograd);
  m.impl("project", evograd_ops::project_autograd);
  m.impl("loss_cotangent", evograd_ops::loss_cotangent_autograd);
  m.impl("perturb_into", evograd_ops::perturb_into_autograd);
  m.impl("combine_into", evograd_ops::combine_into_autograd);
}
