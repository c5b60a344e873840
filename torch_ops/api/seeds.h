#pragma once

#include <cstdint>

namespace evograd {
namespace detail {

// A base seed from the default CPU generator's seed and how many
// meta-learners this process made before, without drawing from it.
int64_t default_base_seed();

}  // namespace detail
}  // namespace evograd
