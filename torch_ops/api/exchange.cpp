#include "exchange.h"

#include <cmath>
#include <sstream>

#include "options.h"

namespace evograd {
namespace detail {

std::vector<double> Exchange::losses(std::vector<double> values, std::exception_ptr own) {
  if (own) std::rethrow_exception(own);
  return values;
}

std::pair<torch::Tensor, double> Exchange::projections(torch::Tensor c, double val,
                                                       std::exception_ptr own) {
  if (own) std::rethrow_exception(own);
  return {std::move(c), val};
}

std::vector<torch::Tensor> Exchange::hypergradient(std::vector<torch::Tensor> parts,
                                                   std::exception_ptr own) {
  if (own) std::rethrow_exception(own);
  return parts;
}

std::vector<torch::Tensor> Exchange::mean_gradient(std::vector<torch::Tensor> grads,
                                                   const std::vector<torch::Tensor>&,
                                                   std::exception_ptr own, const char*) {
  if (own) std::rethrow_exception(own);
  return grads;
}

std::pair<std::vector<torch::Tensor>, std::vector<double>> Exchange::mean_parts(
    std::vector<torch::Tensor> parts, const std::vector<torch::Tensor>&,
    std::vector<double> scalars, std::exception_ptr own) {
  if (own) std::rethrow_exception(own);
  return {std::move(parts), std::move(scalars)};
}

void Exchange::agree(const std::vector<std::pair<std::string, double>>&, std::exception_ptr own) {
  if (own) std::rethrow_exception(own);
}

#if EVOGRAD_HAS_C10D
namespace {

// Two int64 numbers that change when any element's bits do: the sum of the
// elements' bit patterns and their sum weighted by 2i + 1, both wrapping
// mod 2^64 (the numbers Python's evograd.parallel.fingerprint gives).
torch::Tensor fingerprint(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  auto sum = torch::zeros({2}, torch::kLong);
  int64_t offset = 0;
  for (const auto& t : tensors) {
    auto v = t.detach().contiguous().reshape({-1}).cpu();
    const auto size = v.element_size();
    TORCH_CHECK(size == 2 || size == 4 || size == 8, "evograd: no fingerprint for ",
                v.scalar_type());
    auto bits = v.view(size == 8 ? torch::kLong : size == 4 ? torch::kInt : torch::kShort)
                    .to(torch::kLong);
    auto weight = torch::arange(offset, offset + v.numel(), torch::kLong) * 2 + 1;
    sum += torch::stack({bits.sum(), (bits * weight).sum()});
    offset += v.numel();
  }
  return sum;
}

[[noreturn]] void peers_failed(double failed, const char* phase) {
  TORCH_CHECK(false, "evograd: ", static_cast<int64_t>(std::llround(failed)),
              " other rank(s) failed in ", phase,
              "; their own error says why (this rank's step is abandoned and its model "
              "restored)");
}

// The collectives a step calls, on float64 payloads on the backend's device
// (CUDA for NCCL, the CPU otherwise).
class Collective : public Exchange {
 public:
  explicit Collective(c10::intrusive_ptr<c10d::ProcessGroup> group)
      : group_(std::move(group)),
        device_(group_->getBackendName() == "nccl" ? torch::Device(torch::kCUDA)
                                                   : torch::Device(torch::kCPU)) {}
  int64_t rank() const override { return group_->getRank(); }
  int64_t world() const override { return group_->getSize(); }
  bool local() const override { return false; }

  void agree(const std::vector<std::pair<std::string, double>>& fields,
             std::exception_ptr own) override {
    std::vector<double> local;
    for (const auto& f : fields) local.push_back(own ? 0.0 : f.second);
    local.push_back(own ? 1.0 : 0.0);
    auto table = all_gather(torch::tensor(local, torch::kDouble));  // [world, n + 1]
    auto t = table.accessor<double, 2>();
    std::vector<int64_t> failed;
    for (int64_t r = 0; r < world(); ++r)
      if (t[r][fields.size()] != 0) failed.push_back(r);
    if (own) std::rethrow_exception(own);
    if (!failed.empty()) {
      std::ostringstream s;
      for (size_t i = 0; i < failed.size(); ++i) s << (i ? ", " : "") << failed[i];
      TORCH_CHECK(false, "evograd: EvoGrad could not be built on rank(s) ", s.str(),
                  "; their own error says why");
    }
    for (size_t i = 0; i < fields.size(); ++i) {
      bool same = true;
      for (int64_t r = 1; r < world(); ++r)
        same = same && (t[r][i] == t[0][i] || (std::isnan(t[r][i]) && std::isnan(t[0][i])));
      if (same) continue;
      std::ostringstream s;
      for (int64_t r = 0; r < world(); ++r) s << (r ? ", " : "") << "rank " << r << ": " << t[r][i];
      TORCH_CHECK_VALUE(false, "evograd: ", fields[i].first, " differs across ranks (", s.str(),
                        "); every rank must build EvoGrad with the same options and tensors");
    }
  }

  void check_replicas(const std::vector<torch::Tensor>& params,
                      const std::vector<torch::Tensor>& hyper) override {
    auto local = torch::cat({fingerprint(params), fingerprint(hyper)});
    auto table = all_gather(local);  // [world, 4]
    if (torch::equal(table, local.unsqueeze(0).expand_as(table))) return;
    std::ostringstream s;
    auto t = table.accessor<int64_t, 2>();
    for (int64_t r = 0; r < world(); ++r) {
      s << (r ? ", " : "") << "[";
      for (int64_t i = 0; i < 4; ++i) s << (i ? ", " : "") << t[r][i];
      s << "]";
    }
    TORCH_CHECK(false, "evograd: the replicas have drifted apart: parameter or hyperparameter "
                "fingerprints differ across ranks (per rank: [", s.str(), "]); every rank must "
                "start from the same weights and apply the same updates");
  }

  int64_t broadcast_seed(int64_t seed) override {
    std::vector<torch::Tensor> v{torch::tensor({seed}, torch::kLong).to(device_)};
    count(v[0]);
    c10d::BroadcastOptions opts;
    opts.rootRank = 0;
    group_->broadcast(v, opts)->wait();
    return v[0].cpu().item<int64_t>();
  }

 protected:
  // Sums values (float64) and the failure count over ranks; throws this
  // rank's own error, or that others failed.
  torch::Tensor reduce(const torch::Tensor& values, std::exception_ptr own, const char* phase) {
    auto payload = torch::cat({values.reshape({-1}).to(torch::kDouble).cpu(),
                               torch::tensor({own ? 1.0 : 0.0}, torch::kDouble)});
    std::vector<torch::Tensor> v{payload.to(device_)};
    count(v[0]);
    group_->allreduce(v)->wait();
    auto total = v[0].cpu();
    const int64_t n = total.numel() - 1;
    const double failed = total[n].item<double>() - (own ? 1.0 : 0.0);
    if (own) std::rethrow_exception(own);
    if (failed > 0) peers_failed(failed, phase);
    return total.narrow(0, 0, n);
  }

  std::vector<torch::Tensor> reduce_parts(const std::vector<torch::Tensor>& parts,
                                          std::exception_ptr own, double divisor) {
    std::vector<torch::Tensor> flat;
    for (const auto& p : parts)
      flat.push_back(own ? torch::zeros({p.numel()}, torch::kDouble)
                         : p.detach().reshape({-1}).to(torch::kDouble).cpu());
    auto total = reduce(flat.empty() ? torch::zeros({0}, torch::kDouble) : torch::cat(flat),
                        own, "the lambda-gradient") / divisor;
    std::vector<torch::Tensor> out;
    int64_t at = 0;
    for (const auto& p : parts) {
      out.push_back(total.narrow(0, at, p.numel()).reshape(p.sizes()).to(p.options()));
      at += p.numel();
    }
    return out;
  }

  torch::Tensor all_gather(const torch::Tensor& values) {
    std::vector<torch::Tensor> in{values.to(device_).contiguous()};
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int64_t r = 0; r < world(); ++r) out[0].push_back(torch::empty_like(in[0]));
    count(in[0]);
    group_->allgather(out, in)->wait();
    std::vector<torch::Tensor> rows;
    for (const auto& t : out[0]) rows.push_back(t.cpu());
    return torch::stack(rows);
  }

  void count(const torch::Tensor& t) { bytes_ += t.numel() * t.element_size(); }

  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  torch::Device device_;
};

class DataParallel : public Collective {
 public:
  using Collective::Collective;

  std::vector<double> losses(std::vector<double> values, std::exception_ptr own) override {
    auto local = own ? torch::zeros({static_cast<int64_t>(values.size())}, torch::kDouble)
                     : torch::tensor(values, torch::kDouble);
    auto mean = reduce(local, own, "the candidates' training losses") / world();
    return std::vector<double>(mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel());
  }

  std::pair<torch::Tensor, double> projections(torch::Tensor c, double val,
                                               std::exception_ptr own) override {
    auto local = own ? torch::zeros({c.numel() + 1}, torch::kDouble)
                     : torch::cat({c.detach().to(torch::kDouble).cpu(),
                                   torch::tensor({val}, torch::kDouble)});
    auto mean = reduce(local, own, "the validation gradient") / world();
    const int64_t k = c.numel();
    return {mean.narrow(0, 0, k).to(c.options()), mean[k].item<double>()};
  }

  std::vector<torch::Tensor> hypergradient(std::vector<torch::Tensor> parts,
                                           std::exception_ptr own) override {
    return reduce_parts(parts, own, static_cast<double>(world()));
  }

  std::vector<torch::Tensor> mean_gradient(std::vector<torch::Tensor> grads,
                                           const std::vector<torch::Tensor>& like,
                                           std::exception_ptr own, const char* phase) override {
    torch::NoGradGuard no_grad;
    if (own) {
      grads.clear();
      for (const auto& p : like) grads.push_back(torch::zeros_like(p));
    }
    bool first = true;
    size_t begin = 0;
    while (begin < grads.size()) {
      // One bucket: consecutive tensors of one dtype and device, at most
      // kBucketBytes together (a larger tensor alone).
      size_t end = begin + 1;
      int64_t size = grads[begin].numel() * grads[begin].element_size();
      while (end < grads.size() && grads[end].scalar_type() == grads[begin].scalar_type() &&
             grads[end].device() == grads[begin].device() &&
             size + grads[end].numel() * grads[end].element_size() <= kBucketBytes) {
        size += grads[end].numel() * grads[end].element_size();
        ++end;
      }
      std::vector<torch::Tensor> pieces;
      for (size_t i = begin; i < end; ++i) pieces.push_back(grads[i].reshape({-1}));
      if (first) pieces.push_back(torch::full({1}, own ? 1.0 : 0.0, grads[begin].options()));
      std::vector<torch::Tensor> flat{torch::cat(pieces).to(device_)};
      pieces.clear();
      count(flat[0]);
      group_->allreduce(flat)->wait();
      auto total = flat[0].to(grads[begin].device());
      if (first) {
        const int64_t n = total.numel() - 1;
        const double failed = total[n].item<double>() - (own ? 1.0 : 0.0);
        if (own) std::rethrow_exception(own);
        if (failed > 0) peers_failed(failed, phase);
        first = false;
      }
      total.div_(static_cast<double>(world()));
      // Views of the reduced bucket, not writes into the gradients: autograd
      // may return one expanded (stride 0), which cannot be written in place.
      int64_t at = 0;
      for (size_t i = begin; i < end; ++i) {
        const int64_t n = grads[i].numel();
        grads[i] = total.narrow(0, at, n).view(grads[i].sizes());
        at += n;
      }
      begin = end;
    }
    return grads;
  }

  std::pair<std::vector<torch::Tensor>, std::vector<double>> mean_parts(
      std::vector<torch::Tensor> parts, const std::vector<torch::Tensor>& like,
      std::vector<double> scalars, std::exception_ptr own) override {
    std::vector<torch::Tensor> flat;
    std::vector<double> tail;
    for (size_t j = 0; j < like.size(); ++j) {
      const bool defined = !own && parts[j].defined();
      flat.push_back(defined ? parts[j].detach().reshape({-1}).to(torch::kDouble).cpu()
                             : torch::zeros({like[j].numel()}, torch::kDouble));
      tail.push_back(defined ? 1.0 : 0.0);
    }
    for (double v : scalars) tail.push_back(own ? 0.0 : v);
    flat.push_back(torch::tensor(tail, torch::kDouble));
    auto total = reduce(torch::cat(flat), own, "the lambda-gradient") / world();
    const auto sum = total.accessor<double, 1>();
    int64_t at = 0;
    const int64_t counts = total.numel() - static_cast<int64_t>(like.size() + scalars.size());
    std::vector<torch::Tensor> out;
    for (size_t j = 0; j < like.size(); ++j) {
      out.push_back(sum[counts + static_cast<int64_t>(j)] == 0
                        ? torch::Tensor()
                        : total.narrow(0, at, like[j].numel()).reshape(like[j].sizes())
                              .to(like[j].options()));
      at += like[j].numel();
    }
    std::vector<double> mean(scalars.size());
    for (size_t i = 0; i < scalars.size(); ++i)
      mean[i] = sum[counts + static_cast<int64_t>(like.size() + i)];
    return {std::move(out), std::move(mean)};
  }
};

class CandidateParallel : public Collective {
 public:
  using Collective::Collective;

  bool owns(int64_t k) const override { return k % world() == rank(); }
  // The validation term is the same on every rank: added once.
  bool adds_direct_term() const override { return rank() == 0; }

  std::vector<double> losses(std::vector<double> values, std::exception_ptr own) override {
    auto local = torch::zeros({static_cast<int64_t>(values.size())}, torch::kDouble);
    if (!own)
      for (size_t k = 0; k < values.size(); ++k)
        if (owns(static_cast<int64_t>(k))) local[k] = values[k];
    auto sum = reduce(local, own, "the candidates' training losses");
    return std::vector<double>(sum.data_ptr<double>(), sum.data_ptr<double>() + sum.numel());
  }

  // Every rank computed the same theta* and validation gradient: only a
  // failure needs telling, and the lambda-gradient exchange tells it.
  std::pair<torch::Tensor, double> projections(torch::Tensor c, double val,
                                               std::exception_ptr own) override {
    failed_before_ = own;
    return {std::move(c), val};
  }

  std::vector<torch::Tensor> hypergradient(std::vector<torch::Tensor> parts,
                                           std::exception_ptr own) override {
    // A validation failure comes first: what followed it failed because of it.
    auto first = failed_before_ ? failed_before_ : own;
    failed_before_ = nullptr;
    return reduce_parts(parts, first, 1.0);
  }

 private:
  std::exception_ptr failed_before_;
};

}  // namespace
#endif  // EVOGRAD_HAS_C10D

std::shared_ptr<Exchange> make_exchange(const Options& options) {
  const int64_t kind = choice_index("parallel", options.parallel);  // 0: one process
#if EVOGRAD_HAS_C10D
  if (kind == 0) {
    TORCH_CHECK_VALUE(!options.process_group, "evograd: process_group is used only with "
                      "parallel \"data\" or \"candidates\"");
    return std::make_shared<Exchange>();
  }
  TORCH_CHECK_VALUE(options.process_group, "evograd: parallel \"", options.parallel,
                    "\" needs a process group: set options.process_group (a c10d::ProcessGroup "
                    "every rank shares)");
  if (kind == 1) return std::make_shared<DataParallel>(options.process_group);
  return std::make_shared<CandidateParallel>(options.process_group);
#else
  TORCH_CHECK_VALUE(kind == 0,
                    "evograd: parallel needs a process group, and this LibTorch lacks c10d");
  return std::make_shared<Exchange>();
#endif
}

}  // namespace detail
}  // namespace evograd
