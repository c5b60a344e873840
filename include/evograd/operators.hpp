// The evograd operators as C++ calls them: typed handles, each looked up in
// the dispatcher once (on first use). The operators' own autograd and the
// C++ meta-step both call through these, so the meta-step depends on the
// operators' schemas only, not on their sources. The C++ signature of each
// schema in torch_ops/csrc/schemas.cpp is written here and nowhere else;
// a program linked with evograd::ops may call them too.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/string_view.h>

#include <vector>

namespace evograd {
namespace operators {

// The torch version the operator library was compiled against ("2.13.0+cpu").
// The C++ API calls it, which also makes linking the API keep the operator
// library (and its static operator registrations) loaded.
const char* built_for_torch();

// The last int64_t of the list ops is `offset`: the global index of the
// list's element 0 (0 unless the list is a shard of a longer one).
using PerturbSig = std::vector<at::Tensor>(at::TensorList, int64_t, int64_t, double,
                                           c10::string_view, bool, int64_t);
using PerturbIntoSig = void(at::TensorList, at::TensorList, int64_t, int64_t, double,
                            c10::string_view, bool, int64_t);
using CombineSig = std::vector<at::Tensor>(at::TensorList, const at::Tensor&, double, int64_t,
                                           double, c10::string_view, bool, int64_t);
using CombineIntoSig = void(at::TensorList, const at::Tensor&, at::TensorList, double, int64_t,
                            double, c10::string_view, bool, int64_t);
using WeightsSig = at::Tensor(const at::Tensor&, double);
using ProjectSig = at::Tensor(at::TensorList, int64_t, int64_t, double, c10::string_view, bool,
                              int64_t);
using CotangentSig = at::Tensor(const at::Tensor&, const at::Tensor&, double);
using CheckPerturbableSig = void(at::TensorList, at::TensorList);

template <typename Sig>
c10::TypedOperatorHandle<Sig> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Sig>();
}

// NAME() returns the handle of evograd::NAME, found on the first call.
#define EVOGRAD_OPERATOR_HANDLE(NAME, SIG)                      \
  inline const c10::TypedOperatorHandle<SIG>& NAME() {          \
    static const auto handle = find<SIG>("evograd::" #NAME);    \
    return handle;                                              \
  }

EVOGRAD_OPERATOR_HANDLE(perturb, PerturbSig)
EVOGRAD_OPERATOR_HANDLE(perturb_into, PerturbIntoSig)
EVOGRAD_OPERATOR_HANDLE(combine, CombineSig)
EVOGRAD_OPERATOR_HANDLE(combine_into, CombineIntoSig)
EVOGRAD_OPERATOR_HANDLE(weights, WeightsSig)
EVOGRAD_OPERATOR_HANDLE(project, ProjectSig)
EVOGRAD_OPERATOR_HANDLE(loss_cotangent, CotangentSig)
EVOGRAD_OPERATOR_HANDLE(check_perturbable, CheckPerturbableSig)

#undef EVOGRAD_OPERATOR_HANDLE

}  // namespace operators
}  // namespace evograd
