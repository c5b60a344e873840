// Turning torch arguments into C-ABI arguments: tensor lists into spans,
// strings into noise kinds, and every check whose message should name a
// torch-level problem (dtype, device, shape) rather than a C status.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <string>
#include <vector>

#include "evograd/evograd.h"

namespace evograd_ops {

// Checks a non-empty list of defined, dense float32/float64/float16/bfloat16
// tensors sharing dtype and device; `what` names the argument in messages.
void check_float_list(const char* op, const char* what, at::TensorList list);
// out[i] must match in[i] in shape, dtype and device: what a meta (fake)
// tensor can tell, with symbolic shapes compared symbolically.
void check_out_metadata(const char* op, at::TensorList in, at::TensorList out);
// check_out_metadata, and no output shares memory with another output or
// with an input other than its own params[i].
void check_out_list(const char* op, at::TensorList in, at::TensorList out);
// The op evograd::check_perturbable: params can be written in place by the
// _into ops (check_float_list, and no memory shared within params or with
// hyperparams). It reads pointers only, on any device but Meta.
void check_perturbable(at::TensorList params, at::TensorList hyperparams);
bool same_sizes(const at::Tensor& a, const at::Tensor& b);
std::string shape_of(const at::Tensor& t);
// offset: the global index of the list's element 0 (>= 0).
evograd_noise make_noise(const char* op, int64_t seed, double sigma,
                         c10::string_view noise, bool antithetic, int64_t offset);
void check_population(const char* op, int64_t population, bool antithetic);
void check_temperature(const char* op, double temperature);
// A non-empty 1-D floating tensor (its values not looked at).
void check_vector(const char* op, const char* what, const at::Tensor& t);
// A 1-D floating tensor of finite values (when `finite`), copied to host doubles.
std::vector<double> host_vector(const char* op, const char* what,
                                const at::Tensor& t, bool finite);
evograd_dtype dtype_of(const at::Tensor& t);
int64_t total_numel(at::TensorList list);

// The dtype project returns for grads of dtype `grads`: their own, but
// float32 for float16/bfloat16 (c_k feeds a difference of nearby values).
at::ScalarType projection_dtype(at::ScalarType grads);
// Raises a ValueError carrying the C status text when st is not OK.
void check_status(const char* op, evograd_status st);

// The checks every device's perturb/combine shares after its own list check:
// outputs, noise, candidate index or softmax weights (host doubles).
// check_out: check_out_list, or check_out_metadata where tensors hold no data.
using OutCheck = void (*)(const char* op, at::TensorList in, at::TensorList out);
evograd_noise checked_perturb_args(const char* op, at::TensorList params, at::TensorList out,
                                   int64_t seed, int64_t k, double sigma,
                                   c10::string_view noise, bool antithetic, int64_t offset,
                                   OutCheck check_out = check_out_list);
struct CombineArgs {
  evograd_noise noise;
  std::vector<double> weights;
};
CombineArgs checked_combine_args(const char* op, at::TensorList params, const at::Tensor& losses,
                                 at::TensorList out, double temperature, int64_t seed,
                                 double sigma, c10::string_view noise, bool antithetic,
                                 int64_t offset);

// Contiguous views of the inputs, and outputs to write into: the caller's own
// tensors where they are contiguous, temporaries copied back by finish().
struct Writable {
  std::vector<at::Tensor> src;
  std::vector<at::Tensor> dst;
  std::vector<at::Tensor> targets;  // where dst must end up
  std::vector<evograd_span> spans;
  void finish();
};
Writable make_writable(at::TensorList in, at::TensorList out);
std::vector<evograd_span> read_spans(const std::vector<at::Tensor>& contiguous);
std::vector<at::Tensor> contiguous_list(at::TensorList list);
// Fresh contiguous tensors shaped like each of `like` (outputs of the
// out-of-place ops, which then run their *_into form).
std::vector<at::Tensor> empty_outputs(at::TensorList like);

}  // namespace evograd_ops
