#include "lists.h"

#include "formulas.h"

#include <ATen/MemoryOverlap.h>
#include <torch/version.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace evograd_ops {

namespace {

// The bytes a tensor's elements can touch: [first, last] of its storage.
// `list` says which argument the tensor came from (an index into the names
// the check reports with); list 0 is the one written to.
struct Extent {
  uintptr_t first, last;
  int list;
  size_t index;
};

bool extent_of(const at::Tensor& t, int list, size_t index, Extent* e) {
  if (t.numel() == 0) return false;
  int64_t reach = 0;  // torch strides are never negative
  for (int64_t d = 0; d < t.dim(); ++d) reach += (t.size(d) - 1) * t.stride(d);
  e->first = reinterpret_cast<uintptr_t>(t.data_ptr());
  e->last = e->first + static_cast<uintptr_t>((reach + 1) * t.element_size()) - 1;
  e->list = list;
  e->index = index;
  return true;
}

// The one check that written tensors share no memory, for every writer in
// the torch layer (the _into ops, the meta-steps through check_perturbable).
// lists[0] is written; lists[1], if given, is the input read at the same
// index (writing over exactly one's own input, in place, is fine); any later
// list is only read. A sweep over extents sorted by address: parameter lists
// are disjoint, so this costs a sort, not a comparison per pair. Extents that
// touch count as shared even when strided views interleave without a common
// element (conservative).
void check_unshared(const char* op, const std::vector<at::TensorList>& lists,
                    const std::vector<const char*>& names) {
  std::vector<Extent> extents;
  Extent e;
  for (size_t l = 0; l < lists.size(); ++l)
    for (size_t i = 0; i < lists[l].size(); ++i)
      if (extent_of(lists[l][i], static_cast<int>(l), i, &e)) extents.push_back(e);
  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.first < b.first; });
  std::vector<Extent> open;  // extents still reaching the sweep position
  for (const auto& cur : extents) {
    open.erase(std::remove_if(open.begin(), open.end(),
                              [&](const Extent& o) { return o.last < cur.first; }),
               open.end());
    for (const auto& o : open) {
      if (o.list != 0 && cur.list != 0) continue;  // reading shared memory is fine
      const auto& w = o.list == 0 ? o : cur;       // a written tensor
      const auto& x = o.list == 0 ? cur : o;       // the other
      const auto& out = lists[0][w.index];
      // In place: its own input itself, or another handle to exactly its elements.
      if (x.list == 1 && x.index == w.index &&
          at::get_overlap_status(out, lists[1][x.index]) == at::MemOverlapStatus::Full &&
          out.strides() == lists[1][x.index].strides())
        continue;
      const bool both_written = x.list == 0;
      const size_t first = both_written ? std::max(w.index, x.index) : w.index;
      const size_t second = both_written ? std::min(w.index, x.index) : x.index;
      TORCH_CHECK_VALUE(false, "evograd.", op, ": ", names[0], "[", first, "] and ",
                        names[x.list], "[", second, "] share memory");
    }
    open.push_back(cur);
  }
}

void check_no_internal_overlap(const char* op, const char* what, at::TensorList list) {
  for (size_t i = 0; i < list.size(); ++i)
    TORCH_CHECK_VALUE(at::has_internal_overlap(list[i]) != at::MemOverlap::Yes, "evograd.", op,
                      ": ", what, "[", i, "] has elements that overlap each other (e.g. expand())");
}

}  // namespace

bool same_sizes(const at::Tensor& a, const at::Tensor& b) {
#if TORCH_VERSION_MAJOR >= 2
  return a.sym_sizes() == b.sym_sizes();  // symbolic under torch.compile(dynamic=True)
#else
  return a.sizes() == b.sizes();
#endif
}

std::string shape_of(const at::Tensor& t) {
  std::ostringstream s;
#if TORCH_VERSION_MAJOR >= 2
  s << t.sym_sizes();
#else
  s << t.sizes();
#endif
  return s.str();
}

void check_float_list(const char* op, const char* what, at::TensorList list) {
  TORCH_CHECK_VALUE(!list.empty(), "evograd.", op, ": ", what, " is an empty list");
  const auto& first = list[0];
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& t = list[i];
    TORCH_CHECK_VALUE(t.defined(), "evograd.", op, ": ", what, "[", i, "] is undefined");
    const auto st = t.scalar_type();
    TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf ||
                         st == at::kBFloat16,
                     "evograd.", op, ": ", what, "[", i, "] has dtype ", st,
                     "; supported: float32, float64, float16, bfloat16");
    TORCH_CHECK_TYPE(t.scalar_type() == first.scalar_type(), "evograd.", op, ": ", what,
                     "[", i, "] is ", t.scalar_type(), " but ", what, "[0] is ",
                     first.scalar_type(), "; all tensors must share one dtype");
    TORCH_CHECK_VALUE(t.device() == first.device(), "evograd.", op, ": ", what, "[", i,
                      "] is on ", t.device(), " but ", what, "[0] is on ", first.device(),
                      "; all tensors must be on one device");
    TORCH_CHECK_VALUE(t.layout() == at::kStrided, "evograd.", op, ": ", what, "[", i,
                      "] is not a dense (strided) tensor");
  }
}

void check_out_metadata(const char* op, at::TensorList in, at::TensorList out) {
  TORCH_CHECK_VALUE(in.size() == out.size(), "evograd.", op, ": out has ", out.size(),
                    " tensors but params has ", in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    TORCH_CHECK_VALUE(out[i].defined(), "evograd.", op, ": out[", i, "] is undefined");
    TORCH_CHECK_VALUE(same_sizes(out[i], in[i]), "evograd.", op, ": out[", i,
                      "] has shape ", shape_of(out[i]), " but params[", i, "] has shape ",
                      shape_of(in[i]));
    TORCH_CHECK_TYPE(out[i].scalar_type() == in[i].scalar_type(), "evograd.", op, ": out[",
                     i, "] is ", out[i].scalar_type(), " but params[", i, "] is ",
                     in[i].scalar_type());
    TORCH_CHECK_VALUE(out[i].device() == in[i].device(), "evograd.", op, ": out[", i,
                      "] is on ", out[i].device(), " but params[", i, "] is on ",
                      in[i].device());
    TORCH_CHECK_VALUE(!(at::GradMode::is_enabled() && out[i].requires_grad()), "evograd.",
                      op, ": out[", i,
                      "] requires grad; write into parameters under torch.no_grad()");
  }
}

void check_out_list(const char* op, at::TensorList in, at::TensorList out) {
  check_out_metadata(op, in, out);
  check_no_internal_overlap(op, "out", out);
  check_unshared(op, {out, in}, {"out", "params"});
}

void check_perturbable(at::TensorList params, at::TensorList hyperparams) {
  const char* op = "check_perturbable";
  check_float_list(op, "params", params);
  check_no_internal_overlap(op, "params", params);
  for (size_t j = 0; j < hyperparams.size(); ++j)
    TORCH_CHECK_VALUE(hyperparams[j].defined(), "evograd.", op, ": hyperparams[", j,
                      "] is undefined");
  if (params[0].is_meta()) return;  // no addresses to compare
  check_unshared(op, {params, {}, hyperparams}, {"params", "", "hyperparams"});
}

evograd_noise make_noise(const char* op, int64_t seed, double sigma,
                         c10::string_view noise, bool antithetic, int64_t offset) {
  TORCH_CHECK_VALUE(std::isfinite(sigma) && sigma > 0.0, "evograd.", op,
                    ": sigma must be finite and > 0, got ", sigma);
  TORCH_CHECK_VALUE(offset >= 0, "evograd.", op,
                    ": offset (the global index of the list's first element) must be >= 0, got ",
                    offset);
  // The kinds' names, in the order of options.def's CHOICES for noise.
  static const std::pair<const char*, evograd_noise_kind> kinds[] = {
      {"sign", EVOGRAD_NOISE_SIGN}, {"gauss", EVOGRAD_NOISE_GAUSS}};
  evograd_noise n{};
  bool known = false;
  for (const auto& kind : kinds) {
    if (noise == kind.first) {
      n.kind = kind.second;
      known = true;
    }
  }
  TORCH_CHECK_VALUE(known, "evograd.", op, ": unknown noise '", std::string(noise),
                    "'; expected 'sign' or 'gauss'");
  n.seed = static_cast<uint64_t>(seed);
  n.sigma = sigma;
  n.antithetic = antithetic ? 1 : 0;
  n.first = offset;
  return n;
}

void check_population(const char* op, int64_t population, bool antithetic) {
  TORCH_CHECK_VALUE(population >= 1 && population <= static_cast<int64_t>(UINT32_MAX),
                    "evograd.", op, ": population must be >= 1, got ", population);
  TORCH_CHECK_VALUE(!antithetic || population % 2 == 0, "evograd.", op,
                    ": antithetic noise needs an even population, got ", population);
}

void check_temperature(const char* op, double temperature) {
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature > 0.0, "evograd.", op,
                    ": temperature must be finite and > 0, got ", temperature);
}

void check_vector(const char* op, const char* what, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.defined(), "evograd.", op, ": ", what, " is undefined");
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "evograd.", op, ": ", what,
                   " must be a floating tensor, got ", t.scalar_type());
#if TORCH_VERSION_MAJOR >= 2
  const bool nonempty = t.dim() == 1 && t.sym_numel() >= 1;
#else
  const bool nonempty = t.dim() == 1 && t.numel() >= 1;
#endif
  TORCH_CHECK_VALUE(nonempty, "evograd.", op, ": ", what,
                    " must be a non-empty 1-D tensor, got shape ", shape_of(t));
}

std::vector<double> host_vector(const char* op, const char* what, const at::Tensor& t,
                                bool finite) {
  check_vector(op, what, t);
  auto host = t.detach().to(at::kCPU, at::kDouble).contiguous();
  const double* p = host.data_ptr<double>();
  std::vector<double> v(p, p + host.numel());
  if (finite) {
    for (size_t i = 0; i < v.size(); ++i)
      TORCH_CHECK_VALUE(std::isfinite(v[i]), "evograd.", op, ": ", what, "[", i,
                        "] is not finite (", v[i], ")");
  }
  return v;
}

evograd_dtype dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kDouble: return EVOGRAD_FLOAT64;
    case at::kHalf: return EVOGRAD_FLOAT16;
    case at::kBFloat16: return EVOGRAD_BFLOAT16;
    default: return EVOGRAD_FLOAT32;
  }
}

int64_t total_numel(at::TensorList list) {
  int64_t n = 0;
  for (const auto& t : list) n += t.numel();
  return n;
}

at::ScalarType projection_dtype(at::ScalarType grads) {
  return grads == at::kHalf || grads == at::kBFloat16 ? at::kFloat : grads;
}

evograd_noise checked_perturb_args(const char* op, at::TensorList params, at::TensorList out,
                                   int64_t seed, int64_t k, double sigma,
                                   c10::string_view noise, bool antithetic, int64_t offset,
                                   OutCheck check_out) {
  check_out(op, params, out);
  const auto n = make_noise(op, seed, sigma, noise, antithetic, offset);
  TORCH_CHECK_VALUE(k >= 0 && k <= static_cast<int64_t>(UINT32_MAX), "evograd.", op,
                    ": candidate index k must be >= 0, got ", k);
  return n;
}

CombineArgs checked_combine_args(const char* op, at::TensorList params, const at::Tensor& losses,
                                 at::TensorList out, double temperature, int64_t seed,
                                 double sigma, c10::string_view noise, bool antithetic,
                                 int64_t offset) {
  check_out_list(op, params, out);
  CombineArgs a{make_noise(op, seed, sigma, noise, antithetic, offset),
                softmax_weights(op, losses, temperature)};
  check_population(op, static_cast<int64_t>(a.weights.size()), antithetic);
  return a;
}

void check_status(const char* op, evograd_status st) {
  TORCH_CHECK_VALUE(st == EVOGRAD_OK, "evograd.", op, ": ", evograd_status_string(st));
}

std::vector<at::Tensor> contiguous_list(at::TensorList list) {
  std::vector<at::Tensor> out;
  out.reserve(list.size());
  for (const auto& t : list) out.push_back(t.contiguous());
  return out;
}

std::vector<at::Tensor> empty_outputs(at::TensorList like) {
  std::vector<at::Tensor> out;
  out.reserve(like.size());
  for (const auto& t : like) out.push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
  return out;
}

std::vector<evograd_span> read_spans(const std::vector<at::Tensor>& contiguous) {
  std::vector<evograd_span> spans;
  spans.reserve(contiguous.size());
  for (const auto& t : contiguous) spans.push_back({t.data_ptr(), nullptr, t.numel()});
  return spans;
}

Writable make_writable(at::TensorList in, at::TensorList out) {
  Writable w;
  w.src = contiguous_list(in);
  w.targets = out.vec();
  for (size_t i = 0; i < out.size(); ++i) {
    const auto& o = out[i];
    w.dst.push_back(o.is_contiguous() ? o : at::empty_like(w.src[i]));
    // An input that is exactly the output (in place, non-contiguous) must be
    // read from its contiguous copy, which it already is.
    w.spans.push_back({w.src[i].data_ptr(), w.dst[i].data_ptr(), w.src[i].numel()});
  }
  return w;
}

void Writable::finish() {
  for (size_t i = 0; i < dst.size(); ++i)
    if (!dst[i].is_same(targets[i])) targets[i].copy_(dst[i]);
}

}  // namespace evograd_ops
