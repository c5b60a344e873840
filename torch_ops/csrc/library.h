// What the operator library says about itself.
#pragma once

namespace evograd_ops {

// The torch version this library was compiled against ("2.13.0+cpu").
// The C++ API calls it, which also makes linking the API keep the operator
// library (and its static operator registrations) loaded.
const char* built_for_torch();

}  // namespace evograd_ops
