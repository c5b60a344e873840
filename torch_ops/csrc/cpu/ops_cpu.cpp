// CPU kernel calls of the list ops: the element range split across
// at::parallel_for threads. The C kernels make every split give the same
// bits, so the thread count never changes a result.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../list_ops.h"

namespace evograd_ops {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per task: ~tens of microseconds

struct Cpu {
  static constexpr bool kHoldsData = true;
  static constexpr c10::DeviceType kType = c10::DeviceType::CPU;

  static void perturb(const Launch& l, int64_t k) {
    const auto* spans = l.spans.data();
    const size_t n = l.spans.size();
    // The empty range validates everything before any thread writes.
    check_status(l.op, evograd_perturb(l.dtype, spans, n, &l.noise, k, {0, 0}));
    at::parallel_for(0, l.total, kGrain, [&](int64_t b, int64_t e) {
      evograd_perturb(l.dtype, spans, n, &l.noise, k, {b, e});
    });
  }

  static void combine(const Launch& l, const std::vector<double>& w) {
    const auto* spans = l.spans.data();
    const size_t n = l.spans.size();
    const auto population = static_cast<int64_t>(w.size());
    check_status(l.op, evograd_combine(l.dtype, spans, n, &l.noise, w.data(), population, {0, 0}));
    // Each element costs K Philox calls: smaller tasks for larger populations.
    const int64_t grain = std::max<int64_t>(kGrain / population, 1024);
    at::parallel_for(0, l.total, grain, [&](int64_t b, int64_t e) {
      evograd_combine(l.dtype, spans, n, &l.noise, w.data(), population, {b, e});
    });
  }

  // Per-block sums in parallel, then the blocks in order: a fixed reduction
  // order whatever the thread count.
  static void project(const Launch& l, int64_t population, at::Tensor& result) {
    const int64_t B = EVOGRAD_PROJECT_BLOCK;
    const int64_t nblocks = (l.total + B - 1) / B;
    std::vector<double> sums(static_cast<size_t>(std::max<int64_t>(nblocks, 1) * population));
    const auto* spans = l.spans.data();
    const size_t n = l.spans.size();
    check_status(l.op, evograd_project_blocks(l.dtype, spans, n, &l.noise, population, {0, 0},
                                              sums.data()));
    const int64_t grain = std::max<int64_t>(kGrain / (B * population), 1);
    at::parallel_for(0, nblocks, grain, [&](int64_t b, int64_t e) {
      evograd_project_blocks(l.dtype, spans, n, &l.noise, population,
                             {b * B, std::min(e * B, l.total)}, sums.data() + b * population);
    });
    check_status(l.op, evograd_project_finish(sums.data(), nblocks, population,
                                              result.data_ptr<double>()));
  }
};

}  // namespace
}  // namespace evograd_ops

TORCH_LIBRARY_IMPL(evograd, CPU, m) {
  evograd_ops::ListOps<evograd_ops::Cpu>::define(m);
}
