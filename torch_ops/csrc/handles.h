// Typed handles of the evograd operators, each looked up in the dispatcher
// once (on first use), shared by the C++ autograd and the C++ meta-step. The
// C++ signature of each schema in schemas.cpp is written here and nowhere else.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/string_view.h>

#include <vector>

namespace evograd_ops {
namespace handles {

using PerturbSig = std::vector<at::Tensor>(at::TensorList, int64_t, int64_t, double,
                                           c10::string_view, bool);
using PerturbIntoSig = void(at::TensorList, at::TensorList, int64_t, int64_t, double,
                            c10::string_view, bool);
using CombineSig = std::vector<at::Tensor>(at::TensorList, const at::Tensor&, double, int64_t,
                                           double, c10::string_view, bool);
using CombineIntoSig = void(at::TensorList, const at::Tensor&, at::TensorList, double, int64_t,
                            double, c10::string_view, bool);
using WeightsSig = at::Tensor(const at::Tensor&, double);
using ProjectSig = at::Tensor(at::TensorList, int64_t, int64_t, double, c10::string_view, bool);
using CotangentSig = at::Tensor(const at::Tensor&, const at::Tensor&, double);

template <typename Sig>
c10::TypedOperatorHandle<Sig> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Sig>();
}

inline const c10::TypedOperatorHandle<PerturbSig>& perturb() {
  static const auto h = find<PerturbSig>("evograd::perturb");
  return h;
}
inline const c10::TypedOperatorHandle<PerturbIntoSig>& perturb_into() {
  static const auto h = find<PerturbIntoSig>("evograd::perturb_into");
  return h;
}
inline const c10::TypedOperatorHandle<CombineSig>& combine() {
  static const auto h = find<CombineSig>("evograd::combine");
  return h;
}
inline const c10::TypedOperatorHandle<CombineIntoSig>& combine_into() {
  static const auto h = find<CombineIntoSig>("evograd::combine_into");
  return h;
}
inline const c10::TypedOperatorHandle<WeightsSig>& weights() {
  static const auto h = find<WeightsSig>("evograd::weights");
  return h;
}
inline const c10::TypedOperatorHandle<ProjectSig>& project() {
  static const auto h = find<ProjectSig>("evograd::project");
  return h;
}
inline const c10::TypedOperatorHandle<CotangentSig>& loss_cotangent() {
  static const auto h = find<CotangentSig>("evograd::loss_cotangent");
  return h;
}

}  // namespace handles
}  // namespace evograd_ops
