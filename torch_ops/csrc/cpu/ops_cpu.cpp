// CPU kernels of the list ops: arguments checked once, then the element range
// split across at::parallel_for threads. The C kernels make every split give
// the same bits, so thread count never changes a result.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../list_ops.h"

namespace evograd_ops {
namespace cpu {

constexpr int64_t kGrain = 1 << 15;  // elements per task: ~tens of microseconds

// `op` names the user-facing op in error messages.
void perturb(const char* op, at::TensorList params, at::TensorList out, int64_t seed, int64_t k,
             double sigma, c10::string_view noise_name, bool antithetic) {
  check_float_list(op, "params", params);
  const auto noise = checked_perturb_args(op, params, out, seed, k, sigma, noise_name, antithetic);
  auto w = make_writable(params, out);
  const auto dtype = dtype_of(params[0]);
  const auto* spans = w.spans.data();
  const size_t n = w.spans.size();
  check_status(op, evograd_perturb(dtype, spans, n, &noise, k, {0, 0}));  // validate only
  at::parallel_for(0, total_numel(params), kGrain, [&](int64_t b, int64_t e) {
    evograd_perturb(dtype, spans, n, &noise, k, {b, e});
  });
  w.finish();
}



void combine(const char* op, at::TensorList params, const at::Tensor& losses,
             at::TensorList out, double temperature, int64_t seed, double sigma,
             c10::string_view noise_name, bool antithetic) {
  check_float_list(op, "params", params);
  const auto args = checked_combine_args(op, params, losses, out, temperature, seed, sigma,
                                         noise_name, antithetic);
  const auto& noise = args.noise;
  const auto& w = args.weights;
  const auto population = static_cast<int64_t>(w.size());
  auto wr = make_writable(params, out);
  const auto dtype = dtype_of(params[0]);
  const auto* spans = wr.spans.data();
  const size_t n = wr.spans.size();
  check_status(op, evograd_combine(dtype, spans, n, &noise, w.data(), population, {0, 0}));
  // Each element costs K Philox calls: smaller tasks for larger populations.
  const int64_t grain = std::max<int64_t>(kGrain / population, 1024);
  at::parallel_for(0, total_numel(params), grain, [&](int64_t b, int64_t e) {
    evograd_combine(dtype, spans, n, &noise, w.data(), population, {b, e});
  });
  wr.finish();
}



at::Tensor project(at::TensorList grads, int64_t seed, int64_t population, double sigma,
                   c10::string_view noise_name, bool antithetic) {
  const char* op = "project";
  check_float_list(op, "grads", grads);
  const auto noise = make_noise(op, seed, sigma, noise_name, antithetic);
  check_population(op, population, antithetic);
  const auto src = contiguous_list(grads);
  const auto spans = read_spans(src);
  const auto dtype = dtype_of(grads[0]);
  const int64_t total = total_numel(grads);
  const int64_t B = EVOGRAD_PROJECT_BLOCK;
  const int64_t nblocks = (total + B - 1) / B;
  std::vector<double> sums(static_cast<size_t>(std::max<int64_t>(nblocks, 1) * population));
  check_status(op, evograd_project_blocks(dtype, spans.data(), spans.size(), &noise,
                                          population, {0, 0}, sums.data()));
  const int64_t grain = std::max<int64_t>(kGrain / (B * population), 1);
  at::parallel_for(0, nblocks, grain, [&](int64_t b, int64_t e) {
    evograd_project_blocks(dtype, spans.data(), spans.size(), &noise, population,
                           {b * B, std::min(e * B, total)}, sums.data() + b * population);
  });
  auto result = at::empty({population}, at::dtype(at::kDouble));
  check_status(op, evograd_project_finish(sums.data(), nblocks, population,
                                          result.data_ptr<double>()));
  return result.to(projection_dtype(grads[0].scalar_type()));
}

}  // namespace cpu
}  // namespace evograd_ops

TORCH_LIBRARY_IMPL(evograd, CPU, m) {
  namespace ops = evograd_ops;
  ops::ListOps<ops::cpu::perturb, ops::cpu::combine, ops::cpu::project>::define(m);
}
