// The evograd operator schemas: the one place that says what each op takes.
// Kernels per device live in cpu/, cuda/ and meta/, autograd in autograd.cpp.
#include <torch/library.h>
#include <torch/version.h>

#include <vector>

#include "evograd/operators.hpp"
#include "lists.h"

const char* evograd::operators::built_for_torch() { return EVOGRAD_BUILT_FOR_TORCH; }

namespace {

// Every op has a meta kernel, no data-dependent output shape and no hidden
// host reads under FakeTensor: torch.compile and torch.export may trace them.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
const std::vector<at::Tag> kTags = {at::Tag::pt2_compliant_tag};
#define EVOGRAD_DEF(m, schema) m.def(schema, kTags)
#else
#define EVOGRAD_DEF(m, schema) m.def(schema)
#endif

}  // namespace

TORCH_LIBRARY(evograd, m) {
  EVOGRAD_DEF(m, "perturb(Tensor[] params, int seed, int k, float sigma, str noise=\"sign\", "
                 "bool antithetic=False, int offset=0) -> Tensor[]");
  EVOGRAD_DEF(m, "perturb_into(Tensor[] params, Tensor(a! -> *)[] out, int seed, int k, float sigma, "
                 "str noise=\"sign\", bool antithetic=False, int offset=0) -> ()");
  EVOGRAD_DEF(m, "combine(Tensor[] params, Tensor losses, float temperature, int seed, "
                 "float sigma, str noise=\"sign\", bool antithetic=False, int offset=0) -> Tensor[]");
  EVOGRAD_DEF(m, "combine_into(Tensor[] params, Tensor losses, Tensor(a! -> *)[] out, "
                 "float temperature, int seed, float sigma, str noise=\"sign\", "
                 "bool antithetic=False, int offset=0) -> ()");
  EVOGRAD_DEF(m, "weights(Tensor losses, float temperature) -> Tensor");
  EVOGRAD_DEF(m, "project(Tensor[] grads, int seed, int population, float sigma, "
                 "str noise=\"sign\", bool antithetic=False, int offset=0) -> Tensor");
  EVOGRAD_DEF(m, "loss_cotangent(Tensor losses, Tensor projections, float temperature) -> Tensor");
  // What a meta-step checks once, before its first write: compares storage
  // addresses, so it runs eagerly on real tensors and is not pt2-traceable.
  m.def("check_perturbable(Tensor[] params, Tensor[] hyperparams) -> ()",
        TORCH_FN(evograd_ops::check_perturbable));
}
