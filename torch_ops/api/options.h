// What the C++ meta-step derives from options.def's rows (shared with Python):
// each value's check, what ranks agree on, what a checkpoint records.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "evograd/evograd.hpp"

namespace evograd {
namespace detail {

// Each row's rule, and that antithetic noise has an even population.
void check_options(const Options& options);

// The AGREED rows, as float64 (a choice as its index among the choices).
std::vector<std::pair<std::string, double>> agreed_options(const Options& options);

// The SAVED rows, in Python's state_dict spelling ("" is None).
std::vector<std::pair<std::string, c10::IValue>> saved_options(const Options& options);

// A SAVED row's value in a checkpoint that predates it.
c10::IValue default_option(const std::string& name);

// Option `name`'s choices, in options.def's order.
std::vector<std::string> choices_of(const std::string& name);

// Where `value` sits among option `name`'s choices (a c10::ValueError if not).
int64_t choice_index(const std::string& name, const std::string& value);

}  // namespace detail
}  // namespace evograd
