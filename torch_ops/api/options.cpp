// options.def's rows expanded into checks, agreement and checkpoint fields.
// Rows marked PYTHON expand to nothing here: they are the options C++ does
// not offer.
#include "options.h"

#include <cmath>
#include <sstream>

namespace evograd {
namespace detail {
namespace {

enum Flags { NONE = 0, AGREED = 1, SAVED = 2 };

struct Rule {
  enum Kind { kAny, kAtLeast2, kPositive, kNonnegative, kChoices } kind;
  std::vector<std::string> choices;
};

// options.def spells a rule as ANY, POSITIVE, CHOICES("a", "b"), ...
#define EVOGRAD_RULE_ANY Rule{Rule::kAny, {}}
#define EVOGRAD_RULE_AT_LEAST_2 Rule{Rule::kAtLeast2, {}}
#define EVOGRAD_RULE_POSITIVE Rule{Rule::kPositive, {}}
#define EVOGRAD_RULE_NONNEGATIVE Rule{Rule::kNonnegative, {}}
#define EVOGRAD_RULE_CHOICES(...) Rule{Rule::kChoices, {__VA_ARGS__}}

std::string choices_text(const Rule& rule) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < rule.choices.size(); ++i)
    s << (i ? ", " : "") << (rule.choices[i].empty() ? "None" : "'" + rule.choices[i] + "'");
  s << ")";
  return s.str();
}

void check(const char* name, double v, const Rule& rule) {
  switch (rule.kind) {
    case Rule::kAtLeast2:
      TORCH_CHECK_VALUE(v >= 2, "evograd: ", name, " must be >= 2, got ", v);
      break;
    case Rule::kPositive:
      TORCH_CHECK_VALUE(std::isfinite(v) && v > 0, "evograd: ", name,
                        " must be finite and > 0, got ", v);
      break;
    case Rule::kNonnegative:
      TORCH_CHECK_VALUE(std::isfinite(v) && v >= 0, "evograd: ", name,
                        " must be finite and >= 0, got ", v);
      break;
    default:
      break;
  }
}
void check(const char* name, int64_t v, const Rule& rule) {
  check(name, static_cast<double>(v), rule);
}
void check(const char*, bool, const Rule&) {}
void check(const char* name, const std::string& v, const Rule& rule) {
  if (rule.kind != Rule::kChoices) return;
  for (const auto& c : rule.choices)
    if (c == v) return;
  TORCH_CHECK_VALUE(false, "evograd: ", name, " must be one of ", choices_text(rule), ", got '",
                    v, "'");
}
template <typename T>
void check(const char* name, const c10::optional<T>& v, const Rule& rule) {
  if (v.has_value()) check(name, *v, rule);
}

double agreed_value(int64_t v, const Rule&) { return static_cast<double>(v); }
double agreed_value(double v, const Rule&) { return v; }
double agreed_value(bool v, const Rule&) { return v ? 1.0 : 0.0; }
double agreed_value(const std::string& v, const Rule& rule) {
  for (size_t i = 0; i < rule.choices.size(); ++i)
    if (rule.choices[i] == v) return static_cast<double>(i);
  return -1.0;  // unreachable after check_options
}
template <typename T>
double agreed_value(const c10::optional<T>& v, const Rule& rule) {
  return v.has_value() ? agreed_value(*v, rule) : std::nan("");
}

c10::IValue saved_value(int64_t v) { return v; }
c10::IValue saved_value(double v) { return v; }
c10::IValue saved_value(bool v) { return v; }
c10::IValue saved_value(const std::string& v) { return v.empty() ? c10::IValue() : c10::IValue(v); }
template <typename T>
c10::IValue saved_value(const c10::optional<T>& v) {
  return v.has_value() ? saved_value(*v) : c10::IValue();
}

}  // namespace

// One expansion per use: EVOGRAD_IN_<languages> keeps the BOTH rows.
#define EVOGRAD_IN_BOTH(...) __VA_ARGS__
#define EVOGRAD_IN_PYTHON(...)

namespace {

// An EVOGRAD_ESTIMATOR row's list of the options that estimator uses.
std::string uses_of(const std::string& estimator) {
#define EVOGRAD_ESTIMATOR(name, uses) if (estimator == #name) return uses;
#include "evograd/options.def"
#undef EVOGRAD_ESTIMATOR
  return "";
}

bool listed(const std::string& uses, const char* name) {
  std::istringstream words(uses);
  std::string w;
  while (words >> w)
    if (w == name) return true;
  return false;
}

}  // namespace

void check_options(const Options& o) {
#define EVOGRAD_OPTION(name, type, value, rule, where, flags) EVOGRAD_IN_##where(check(#name, o.name, EVOGRAD_RULE_##rule);)
#include "evograd/options.def"
#undef EVOGRAD_OPTION
  TORCH_CHECK_VALUE(!o.antithetic || o.population % 2 == 0,
                    "evograd: antithetic noise needs an even population, got ", o.population);
  // An option the chosen estimator would ignore is a mistake, not a no-op.
  const Options defaults;
  const std::string uses = uses_of(o.estimator);
#define EVOGRAD_OPTION(name, type, value, rule, where, flags)                            \
  EVOGRAD_IN_##where(TORCH_CHECK_VALUE(std::string(#name) == "estimator" ||               \
                                           listed(uses, #name) || o.name == defaults.name, \
                                       "evograd: estimator '", o.estimator,               \
                                       "' does not use " #name "; it uses: ", uses);)
#include "evograd/options.def"
#undef EVOGRAD_OPTION
  TORCH_CHECK_VALUE(o.estimator == "evograd" || o.parallel != "candidates", "evograd: estimator '",
                    o.estimator, "' has no candidates to share out among ranks: use parallel "
                    "\"data\"");
}

namespace {

Rule rule_of(const std::string& name) {
#define EVOGRAD_OPTION(option, type, value, rule, where, flags) if (name == #option) return EVOGRAD_RULE_##rule;
#include "evograd/options.def"
#undef EVOGRAD_OPTION
  TORCH_CHECK(false, "evograd: no option ", name);
}

}  // namespace

std::vector<std::pair<std::string, double>> agreed_options(const Options& o) {
  std::vector<std::pair<std::string, double>> out;
#define EVOGRAD_OPTION(name, type, value, rule, where, flags) EVOGRAD_IN_##where(if ((flags) & AGREED) out.emplace_back(#name, agreed_value(o.name, rule_of(#name)));)
#include "evograd/options.def"
#undef EVOGRAD_OPTION
  return out;
}

std::vector<std::pair<std::string, c10::IValue>> saved_options(const Options& o) {
  std::vector<std::pair<std::string, c10::IValue>> out;
#define EVOGRAD_OPTION(name, type, value, rule, where, flags) EVOGRAD_IN_##where(if ((flags) & SAVED) out.emplace_back(#name, saved_value(o.name));)
#include "evograd/options.def"
#undef EVOGRAD_OPTION
  return out;
}

c10::IValue default_option(const std::string& name) {
  for (const auto& kv : saved_options(Options()))
    if (kv.first == name) return kv.second;
  return c10::IValue();
}

std::vector<std::string> choices_of(const std::string& name) { return rule_of(name).choices; }

int64_t choice_index(const std::string& name, const std::string& value) {
  const Rule rule = rule_of(name);
  check(name.c_str(), value, rule);
  return static_cast<int64_t>(agreed_value(value, rule));
}

}  // namespace detail
}  // namespace evograd
