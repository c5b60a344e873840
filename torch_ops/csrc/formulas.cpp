// weights and loss_cotangent: K numbers, computed on the host whatever device
// the losses live on (K is tiny; one small copy is cheaper than a launch).
#include <torch/library.h>

#include "kernels.h"
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

static at::Tensor like_losses(const std::vector<double>& v, const at::Tensor& losses) {
  auto t = at::empty({static_cast<int64_t>(v.size())}, at::dtype(at::kDouble));
  std::copy(v.begin(), v.end(), t.data_ptr<double>());
  return t.to(losses.device(), losses.scalar_type());
}

at::Tensor weights_any(const at::Tensor& losses, double temperature) {
  return like_losses(softmax_weights("weights", losses, temperature), losses);
}

at::Tensor loss_cotangent_any(const at::Tensor& losses, const at::Tensor& projections,
                              double temperature) {
  const char* op = "loss_cotangent";
  check_temperature(op, temperature);
  auto l = host_vector(op, "losses", losses, true);
  auto c = host_vector(op, "projections", projections, true);
  TORCH_CHECK_VALUE(l.size() == c.size(), "evograd.", op, ": losses has ", l.size(),
                    " entries but projections has ", c.size());
  std::vector<double> out(l.size());
  check_status(op, evograd_loss_cotangent(l.data(), c.data(), static_cast<int64_t>(l.size()),
                                          temperature, out.data()));
  return like_losses(out, losses);
}

}  // namespace evograd_ops

// K-sized results follow the losses' device; the arithmetic is on the host.
TORCH_LIBRARY_IMPL(evograd, CompositeExplicitAutograd, m) {
  m.impl("weights", evograd_ops::weights_any);
  m.impl("loss_cotangent", evograd_ops::loss_cotangent_any);
}
