// The list ops on Meta tensors: output shapes, dtypes and strides without
// data, for FakeTensor (torch.compile, torch.export, opcheck) and for meta
// tensors from C++ and TorchScript. ListOps runs every check that needs no
// values (sizes may be symbolic under torch.compile(dynamic=True)) and
// launches nothing.
#include <torch/library.h>

#include "../list_ops.h"

namespace evograd_ops {
namespace {

struct Meta {
  static constexpr bool kHoldsData = false;
  static constexpr c10::DeviceType kType = c10::DeviceType::Meta;
};

}  // namespace
}  // namespace evograd_ops

TORCH_LIBRARY_IMPL(evograd, Meta, m) {
  evograd_ops::ListOps<evograd_ops::Meta>::define(m);
}
