// CUDA kernels of the list ops: one launch over the whole list on torch's
// current stream, under a device guard. Long span tables and project's block
// sums live in a workspace from torch's caching allocator, which keeps it
// alive for the stream's later work even after the tensor is released here.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../list_ops.h"

namespace evograd_ops {
namespace cuda {

void check_cuda_list(const char* op, const char* what, at::TensorList list) {
  check_float_list(op, what, list);
  TORCH_CHECK_VALUE(list[0].is_cuda(), "evograd.", op, ": ", what, " must be CUDA tensors");
}

at::Tensor workspace(const at::Tensor& like, size_t n_spans, int64_t total, int64_t population) {
  const auto bytes = evograd_cuda_workspace_bytes(n_spans, total, population);
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

// `op` names the user-facing op in error messages.
void perturb(const char* op, at::TensorList params, at::TensorList out, int64_t seed, int64_t k,
             double sigma, c10::string_view noise_name, bool antithetic) {
  check_cuda_list(op, "params", params);
  const auto noise = checked_perturb_args(op, params, out, seed, k, sigma, noise_name, antithetic);
  c10::cuda::CUDAGuard guard(params[0].device());
  auto w = make_writable(params, out);
  auto ws = workspace(params[0], w.spans.size(), total_numel(params), 1);
  check_status(op, evograd_cuda_perturb(dtype_of(params[0]), w.spans.data(), w.spans.size(), &noise,
                                        k, ws.data_ptr(), ws.numel(),
                                        at::cuda::getCurrentCUDAStream().stream()));
  w.finish();
}



void combine(const char* op, at::TensorList params, const at::Tensor& losses,
             at::TensorList out, double temperature, int64_t seed, double sigma,
             c10::string_view noise_name, bool antithetic) {
  check_cuda_list(op, "params", params);
  const auto args = checked_combine_args(op, params, losses, out, temperature, seed, sigma,
                                         noise_name, antithetic);
  const auto& w = args.weights;  // host doubles
  const auto population = static_cast<int64_t>(w.size());
  const auto& noise = args.noise;
  c10::cuda::CUDAGuard guard(params[0].device());
  auto wr = make_writable(params, out);
  auto ws = workspace(params[0], wr.spans.size(), total_numel(params), population);
  check_status(op, evograd_cuda_combine(dtype_of(params[0]), wr.spans.data(), wr.spans.size(),
                                        &noise, w.data(), population, ws.data_ptr(), ws.numel(),
                                        at::cuda::getCurrentCUDAStream().stream()));
  wr.finish();
}



at::Tensor project(at::TensorList grads, int64_t seed, int64_t population, double sigma,
                   c10::string_view noise_name, bool antithetic) {
  const char* op = "project";
  check_cuda_list(op, "grads", grads);
  const auto noise = make_noise(op, seed, sigma, noise_name, antithetic);
  check_population(op, population, antithetic);
  c10::cuda::CUDAGuard guard(grads[0].device());
  const auto src = contiguous_list(grads);
  const auto spans = read_spans(src);
  auto ws = workspace(grads[0], spans.size(), total_numel(grads), population);
  auto result = at::empty({population}, grads[0].options().dtype(at::kDouble));
  check_status(op, evograd_cuda_project(dtype_of(grads[0]), spans.data(), spans.size(), &noise,
                                        population, result.data_ptr<double>(), ws.data_ptr(),
                                        ws.numel(), at::cuda::getCurrentCUDAStream().stream()));
  return result.to(projection_dtype(grads[0].scalar_type()));
}

}  // namespace cuda
}  // namespace evograd_ops

TORCH_LIBRARY_IMPL(evograd, CUDA, m) {
  namespace ops = evograd_ops;
  ops::ListOps<ops::cuda::perturb, ops::cuda::combine, ops::cuda::project>::define(m);
}
