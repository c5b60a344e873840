// weights and loss_cotangent: the two K-sized formulas.
//
// CPU tensors go through the C ABI on host doubles, where a non-finite input
// is an error. Every other device (CUDA, and meta/fake tensors while
// torch.compile traces) gets the same formula in ATen on the tensors' own
// device, so no value crosses to the host and nothing waits for the stream.
// There a non-finite input cannot be reported without that wait; it makes
// every output NaN instead, never a plausible number.
#include <torch/library.h>

#include "formulas.h"
#include "lists.h"

namespace evograd_ops {

std::vector<double> softmax_weights(const char* op, const at::Tensor& losses,
                                    double temperature) {
  check_temperature(op, temperature);
  auto l = host_vector(op, "losses", losses, /*finite=*/true);
  std::vector<double> w(l.size());
  check_status(op, evograd_weights(l.data(), static_cast<int64_t>(l.size()), temperature,
                                   w.data()));
  return w;
}

namespace {

at::Tensor like_losses(const std::vector<double>& v, const at::Tensor& losses) {
  auto t = at::empty({static_cast<int64_t>(v.size())}, at::dtype(at::kDouble));
  std::copy(v.begin(), v.end(), t.data_ptr<double>());
  return t.to(losses.scalar_type());
}

at::Tensor weights_cpu(const at::Tensor& losses, double temperature) {
  return like_losses(softmax_weights("weights", losses, temperature), losses);
}

at::Tensor loss_cotangent_cpu(const at::Tensor& losses, const at::Tensor& projections,
                              double temperature) {
  const char* op = "loss_cotangent";
  check_temperature(op, temperature);
  check_vector(op, "projections", projections);
  TORCH_CHECK_VALUE(projections.device() == losses.device(), "evograd.", op,
                    ": projections are on ", projections.device(), " but losses on ",
                    losses.device());
  auto l = host_vector(op, "losses", losses, true);
  auto c = host_vector(op, "projections", projections, true);
  TORCH_CHECK_VALUE(l.size() == c.size(), "evograd.", op, ": losses has ", l.size(),
                    " entries but projections has ", c.size());
  std::vector<double> out(l.size());
  check_status(op, evograd_loss_cotangent(l.data(), c.data(), static_cast<int64_t>(l.size()),
                                          temperature, out.data()));
  return like_losses(out, losses);
}

// 0 when every value is finite, NaN otherwise (0 * inf and 0 * NaN are NaN).
at::Tensor nan_unless_finite(const at::Tensor& t) { return t.sum() * 0.0; }

// softmax(-l / tau) shifted by the smallest loss, as the C kernel computes it.
at::Tensor softmax_neg(const at::Tensor& l, double temperature) {
  auto e = at::exp(-(l - l.min()) / temperature);
  return e / e.sum();
}

at::Tensor weights_on_device(const at::Tensor& losses, double temperature) {
  const char* op = "weights";
  check_temperature(op, temperature);
  check_vector(op, "losses", losses);
  const auto l = losses.to(at::kDouble);
  return (softmax_neg(l, temperature) + nan_unless_finite(l)).to(losses.scalar_type());
}

at::Tensor loss_cotangent_on_device(const at::Tensor& losses, const at::Tensor& projections,
                                    double temperature) {
  const char* op = "loss_cotangent";
  check_temperature(op, temperature);
  check_vector(op, "losses", losses);
  check_vector(op, "projections", projections);
  TORCH_CHECK_VALUE(projections.device() == losses.device(), "evograd.", op,
                    ": projections are on ", projections.device(), " but losses on ",
                    losses.device());
  TORCH_CHECK_VALUE(same_sizes(losses, projections), "evograd.", op, ": losses has shape ",
                    shape_of(losses), " but projections has shape ", shape_of(projections));
  const auto l = losses.to(at::kDouble);
  const auto c = projections.to(at::kDouble);
  const auto w = softmax_neg(l, temperature);
  const auto out = -(w / temperature) * (c - (w * c).sum());
  return (out + nan_unless_finite(l) + nan_unless_finite(c)).to(losses.scalar_type());
}

}  // namespace
}  // namespace evograd_ops

TORCH_LIBRARY_IMPL(evograd, CPU, m) {
  m.impl("weights", evograd_ops::weights_cpu);
  m.impl("loss_cotangent", evograd_ops::loss_cotangent_cpu);
}

// Every other backend, Meta included: shapes and dtypes for fake tensors too.
TORCH_LIBRARY_IMPL(evograd, CompositeExplicitAutograd, m) {
  m.impl("weights", evograd_ops::weights_on_device);
  m.impl("loss_cotangent", evograd_ops::loss_cotangent_on_device);
}
