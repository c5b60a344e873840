// What the C++ meta-step exchanges between processes, on c10d (the C++ core
// of torch.distributed), as Python's evograd/parallel.py does:
//
//   Local              one process: every exchange is the identity.
//   DataParallel       "data": each rank's closures see its shard of the
//                      batch; losses, projections and the lambda-gradient
//                      are averaged over ranks.
//   CandidateParallel  "candidates": the same batches everywhere; rank r
//                      evaluates candidates k = r, r + world, ...; losses and
//                      lambda-gradient parts are summed.
//
// Every exchange carries one more value, how many ranks failed before it,
// so that an error on one rank (a closure throwing, a non-finite loss) is
// an error on every rank instead of a hang: the failing rank rethrows its
// own exception, the others throw "evograd: N other rank(s) failed in ...".
#pragma once

#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "evograd/evograd.hpp"

namespace evograd {
namespace detail {

class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual int64_t rank() const { return 0; }
  virtual int64_t world() const { return 1; }
  // Whether this is one process (no collectives).
  virtual bool local() const { return true; }
  // Whether this rank evaluates candidate k.
  virtual bool owns(int64_t k) const { return true; }
  // Whether this rank adds the validation loss's direct lambda-gradient.
  virtual bool adds_direct_term() const { return true; }

  // Each takes this rank's values and its own error (null if none) and
  // returns the combined values, or throws.
  virtual std::vector<double> losses(std::vector<double> values, std::exception_ptr own);
  virtual std::pair<torch::Tensor, double> projections(torch::Tensor c, double val,
                                                       std::exception_ptr own);
  virtual std::vector<torch::Tensor> hypergradient(std::vector<torch::Tensor> parts,
                                                   std::exception_ptr own);

  // T1-T2's estimators ("data" only): the ranks' mean of a parameter-sized
  // gradient, in its own dtype, in buckets of at most kBucketBytes (DDP's
  // default), the first carrying the failure count; a failed rank sends
  // zeros shaped like `like`. Returns views of the reduced buckets.
  virtual std::vector<torch::Tensor> mean_gradient(std::vector<torch::Tensor> grads,
                                                   const std::vector<torch::Tensor>& like,
                                                   std::exception_ptr own, const char* phase);
  // The ranks' mean of the lambda-gradient parts (undefined: no part on any
  // rank) and of a few scalars, in one float64 exchange.
  virtual std::pair<std::vector<torch::Tensor>, std::vector<double>> mean_parts(
      std::vector<torch::Tensor> parts, const std::vector<torch::Tensor>& like,
      std::vector<double> scalars, std::exception_ptr own);

  // Construction: every rank's fields must be equal (a ValueError naming the
  // field and each rank's value otherwise); rank 0's seed is everyone's.
  virtual void agree(const std::vector<std::pair<std::string, double>>& fields,
                     std::exception_ptr own);
  virtual int64_t broadcast_seed(int64_t seed) { return seed; }

  // Before a step (option check_replicas): the exact bits of the parameters
  // and lambda are the same on every rank, or every rank throws.
  virtual void check_replicas(const std::vector<torch::Tensor>& params,
                              const std::vector<torch::Tensor>& hyper) {}

  // Payload bytes this process has handed to collectives.
  int64_t bytes_sent() const { return bytes_; }

 protected:
  int64_t bytes_ = 0;
};

constexpr int64_t kBucketBytes = int64_t{25} << 20;

// The exchange options.parallel names ("" for one process); a ValueError for
// an unknown name or a missing process group.
std::shared_ptr<Exchange> make_exchange(const Options& options);


}  // namespace detail
}  // namespace evograd
