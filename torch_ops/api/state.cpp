// Checkpoints of the C++ meta-step, as torch::optim's save/load: the base
// seed, the steps taken, the SAVED options (compared on load) and the inner
// learning rate (restored: it follows a schedule). The field names are
// Python's state_dict's.
#include <sstream>

#include "evograd/evograd.hpp"
#include "options.h"

namespace evograd {

namespace {

// What a checkpoint records and compares: the SAVED rows of options.def and
// the tensors' sizes, in Python's state_dict spelling.
std::vector<std::pair<std::string, c10::IValue>> option_values(const EvoGrad& e) {
  int64_t params = 0, hyper = 0;
  for (const auto& p : e.params()) params += p.numel();
  for (const auto& h : e.hyperparams()) hyper += h.numel();
  auto out = detail::saved_options(e.options());
  out.emplace_back("parameter_elements", params);
  out.emplace_back("hyperparameter_elements", hyper);
  return out;
}

// Checkpoints of evograd 0.2.x wrote "" where an option was unset.
c10::IValue normalised(c10::IValue v) {
  return v.isString() && v.toStringRef().empty() ? c10::IValue() : v;
}

}  // namespace

void EvoGrad::save(torch::serialize::OutputArchive& archive) const {
  archive.write("format", c10::IValue(int64_t{1}));
  archive.write("seed", c10::IValue(seed_));
  archive.write("steps_taken", c10::IValue(step_));
  // As in Python: the inner learning rate follows a schedule, so it is
  // restored on load, not compared.
  if (options_.inner_lr.has_value()) archive.write("inner_lr", c10::IValue(*options_.inner_lr));
  for (const auto& kv : option_values(*this)) archive.write("option_" + kv.first, kv.second);
}

void EvoGrad::load(torch::serialize::InputArchive& archive) {
  c10::IValue format, seed, steps, lr;
  TORCH_CHECK_VALUE(archive.try_read("format", format) && format.isInt() && format.toInt() == 1,
                    "evograd: not an EvoGrad checkpoint (no format 1)");
  std::string diff;
  for (const auto& kv : option_values(*this)) {
    c10::IValue saved;
    const bool found = archive.try_read("option_" + kv.first, saved);
    const bool size = kv.first == "parameter_elements" || kv.first == "hyperparameter_elements";
    TORCH_CHECK_VALUE(found || !size, "evograd: the checkpoint has no ", kv.first);
    saved = found ? normalised(saved) : detail::default_option(kv.first);  // a row it predates
    if (!(saved == kv.second)) {
      std::ostringstream s;
      s << (diff.empty() ? "" : "; ") << kv.first << ": saved " << saved << ", here "
        << kv.second;
      diff += s.str();
    }
  }
  TORCH_CHECK_VALUE(diff.empty(), "evograd: the saved EvoGrad had other options: ", diff);
  archive.read("seed", seed);
  archive.read("steps_taken", steps);
  TORCH_CHECK_VALUE(seed.isInt() && steps.isInt() && steps.toInt() >= 0,
                    "evograd: a checkpoint needs an int seed and a non-negative steps_taken");
  // evograd 0.2.x recorded the rate among the options.
  const bool has_lr = archive.try_read("inner_lr", lr) || archive.try_read("option_inner_lr", lr);
  if (has_lr && lr.isDouble() && options_.inner_lr.has_value()) set_inner_lr(lr.toDouble());
  seed_ = seed.toInt();
  step_ = steps.toInt();
}

}  // namespace evograd
