// CUDA kernel calls of the list ops: one launch over the whole list on
// torch's current stream, under a device guard. Long span tables and
// project's block sums live in a workspace from torch's caching allocator,
// which keeps it alive for the stream's later work even after the tensor is
// released here.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../list_ops.h"

namespace evograd_ops {
namespace {

at::Tensor workspace(const Launch& l, int64_t population) {
  const auto bytes = evograd_cuda_workspace_bytes(l.spans.size(), l.total, population);
  return at::empty({static_cast<int64_t>(bytes)}, l.like.options().dtype(at::kByte));
}

struct Cuda {
  static constexpr bool kHoldsData = true;
  static constexpr c10::DeviceType kType = c10::DeviceType::CUDA;

  static void perturb(const Launch& l, int64_t k) {
    c10::cuda::CUDAGuard guard(l.like.device());
    auto ws = workspace(l, 1);
    check_status(l.op, evograd_cuda_perturb(l.dtype, l.spans.data(), l.spans.size(), &l.noise,
                                            k, ws.data_ptr(), ws.numel(),
                                            at::cuda::getCurrentCUDAStream().stream()));
  }

  static void combine(const Launch& l, const std::vector<double>& w) {  // w: host doubles
    c10::cuda::CUDAGuard guard(l.like.device());
    const auto population = static_cast<int64_t>(w.size());
    auto ws = workspace(l, population);
    check_status(l.op, evograd_cuda_combine(l.dtype, l.spans.data(), l.spans.size(), &l.noise,
                                            w.data(), population, ws.data_ptr(), ws.numel(),
                                            at::cuda::getCurrentCUDAStream().stream()));
  }

  static void project(const Launch& l, int64_t population, at::Tensor& result) {
    c10::cuda::CUDAGuard guard(l.like.device());
    auto ws = workspace(l, population);
    check_status(l.op, evograd_cuda_project(l.dtype, l.spans.data(), l.spans.size(), &l.noise,
                                            population, result.data_ptr<double>(),
                                            ws.data_ptr(), ws.numel(),
                                            at::cuda::getCurrentCUDAStream().stream()));
  }
};

}  // namespace
}  // namespace evograd_ops

TORCH_LIBRARY_IMPL(evograd, CUDA, m) {
  evograd_ops::ListOps<evograd_ops::Cuda>::define(m);
}
