// Seeds: the base seed of a meta-learner and the seed of each step, the same
// numbers as Python's evograd.seeds.
#include <atomic>

#include "evograd/evograd.hpp"
#include "options.h"
#include "seeds.h"

namespace evograd {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

// SplitMix64's finaliser: a bijection of the 64-bit integers.
uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

namespace detail {

// As Python's evograd.seeds.default_base_seed: the generator's seed, not a draw.
int64_t default_base_seed() {
  static std::atomic<uint64_t> instances{0};
  const uint64_t seed = at::detail::getDefaultCPUGenerator().current_seed();
  return static_cast<int64_t>(mix64(seed ^ mix64(instances.fetch_add(1) * kGolden)));
}

}  // namespace detail

int64_t step_seed(int64_t base, int64_t step, const std::string& schedule) {
  const uint64_t b = static_cast<uint64_t>(base), t = static_cast<uint64_t>(step);
  detail::choice_index("seed_schedule", schedule);  // one of options.def's choices, or throws
  if (schedule == "consecutive") return static_cast<int64_t>((b + t) & 0x7fffffffffffffffULL);
  TORCH_CHECK(schedule == "mixed", "evograd: seed schedule '", schedule,
              "' is a choice of options.def with no rule here");
  return static_cast<int64_t>(mix64(b + t * kGolden));
}

}  // namespace evograd
