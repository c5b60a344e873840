// The C++ EvoGrad on several ranks: c10d's gloo process groups, one thread
// per rank in this process, sharing an in-memory store. Built where gloo's
// headers sit beside torch's (Debian's libtorch-dev with libgloo-dev): a
// LibTorch from pip ships c10d's headers but not gloo's.
//
// Models and data are formulas, not draws (parallel_problem.h): the ranks'
// threads share torch's default generator, and nothing here may depend on
// which thread draws first.
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "evograd/evograd.hpp"
#include "parallel_problem.h"

namespace {

using evograd_test::Batch;
using evograd_test::kTrain;
using evograd_test::kVal;
using evograd_test::Problem;

// Runs fn(rank, group) on `world` threads, each with its own gloo process
// group over one store; returns each rank's error message ("" if none).
std::vector<std::string> on_ranks(
    int64_t world,
    const std::function<void(int64_t, c10::intrusive_ptr<c10d::ProcessGroup>)>& fn) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(60));
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, r, world, options);
        fn(r, group);
      } catch (const std::exception& e) {
        errors[r] = e.what();
        if (errors[r].empty()) errors[r] = "(an exception with no message)";
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

evograd::Options options(int64_t population, const std::string& parallel = "") {
  evograd::Options o;
  o.population = population;
  o.sigma = 1e-3;
  o.temperature = 0.05;
  o.seed = 11;
  o.parallel = parallel;
  return o;
}

// One step on the whole batches in one process: the reference.
torch::Tensor single_process(int64_t population, int64_t hidden = 16) {
  Problem p(hidden);
  evograd::EvoGrad meta(*p.model, p.hyper(), options(population));
  meta.step([&] { return p.train_loss(kTrain.x, kTrain.y); },
            [&] { return p.val_loss(kVal.x, kVal.y); });
  return p.hypergradient();
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, double atol) {
  ASSERT_EQ(a.sizes(), b.sizes());
  const double gap = (a - b).abs().max().item<double>();
  EXPECT_LE(gap, atol) << "got " << a << "\nwant " << b;
}

class DataParallel : public ::testing::TestWithParam<int64_t> {};

TEST_P(DataParallel, StepEqualsOneStepOnTheWholeBatch) {
  const int64_t world = GetParam(), population = 3;
  const auto want = single_process(population);
  std::vector<torch::Tensor> got(world);
  std::vector<int64_t> step_bytes(world);
  auto errors = on_ranks(world, [&](int64_t r, c10::intrusive_ptr<c10d::ProcessGroup> group) {
    Problem p(16);
    auto o = options(population, "data");
    o.process_group = group;
    evograd::EvoGrad meta(*p.model, p.hyper(), o);
    const auto train = kTrain.rows(r, world), val = kVal.rows(r, world);
    const int64_t before = meta.bytes_sent();
    meta.step([&] { return p.train_loss(train.x, train.y); },
              [&] { return p.val_loss(val.x, val.y); });
    step_bytes[r] = meta.bytes_sent() - before;
    got[r] = p.hypergradient();
  });
  for (int64_t r = 0; r < world; ++r) {
    ASSERT_EQ(errors[r], "") << "rank " << r;
    // The mean over ranks of each rank's mean loss is the whole batch's mean:
    // the lambda-gradients agree to float64 rounding.
    expect_close(got[r], want, 1e-10);
    EXPECT_TRUE(torch::equal(got[r], got[0])) << "rank " << r << " differs from rank 0";
    // K losses, K projections + the validation loss, N = 4 lambda elements,
    // each exchange with one failure count: nothing the size of the model.
    EXPECT_EQ(step_bytes[r], 8 * ((population + 1) + (population + 2) + (4 + 1)));
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, DataParallel, ::testing::Values(2, 3));

// T1-T2's exact estimator on the ranks' shards: lambda's gradient and the
// inner gradient it leaves in .grad (keep_train_grad) equal the one-process
// step on the whole batch.
class JvpDataParallel : public ::testing::TestWithParam<int64_t> {};

evograd::Options jvp_options(const std::string& parallel = "") {
  evograd::Options o;
  o.estimator = "jvp";
  o.inner_lr = 0.1;
  o.keep_train_grad = true;
  o.parallel = parallel;
  return o;
}

torch::Tensor kept(const Problem& p) {
  std::vector<torch::Tensor> grads;
  for (const auto& t : p.model->parameters()) grads.push_back(t.grad().reshape({-1}));
  return torch::cat(grads);
}

double relative(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).norm().item<double>() / b.norm().item<double>();
}

TEST_P(JvpDataParallel, StepEqualsOneStepOnTheWholeBatch) {
  const int64_t world = GetParam();
  Problem whole(16);
  evograd::EvoGrad reference(*whole.model, whole.hyper(), jvp_options());
  reference.step([&] { return whole.train_loss(kTrain.x, kTrain.y); },
                 [&] { return whole.val_loss(kVal.x, kVal.y); });
  std::vector<torch::Tensor> got(world), grads(world);
  auto errors = on_ranks(world, [&](int64_t r, c10::intrusive_ptr<c10d::ProcessGroup> group) {
    Problem p(16);
    auto o = jvp_options("data");
    o.process_group = group;
    evograd::EvoGrad meta(*p.model, p.hyper(), o);
    const auto train = kTrain.rows(r, world), val = kVal.rows(r, world);
    meta.step([&] { return p.train_loss(train.x, train.y); },
              [&] { return p.val_loss(val.x, val.y); });
    got[r] = p.hypergradient();
    grads[r] = kept(p);
  });
  for (int64_t r = 0; r < world; ++r) {
    ASSERT_EQ(errors[r], "") << "rank " << r;
    EXPECT_LT(relative(got[r], whole.hypergradient()), 1e-6) << got[r];
    EXPECT_LT(relative(grads[r], kept(whole)), 1e-6);
    EXPECT_TRUE(torch::equal(got[r], got[0]));
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, JvpDataParallel, ::testing::Values(2, 4));

TEST(CandidateParallel, EqualsTheSingleProcessStep) {
  const int64_t world = 2, population = 4;
  const auto want = single_process(population);
  std::vector<torch::Tensor> got(world);
  auto errors = on_ranks(world, [&](int64_t r, c10::intrusive_ptr<c10d::ProcessGroup> group) {
    Problem p(16);
    auto o = options(population, "candidates");
    o.process_group = group;
    evograd::EvoGrad meta(*p.model, p.hyper(), o);
    meta.step([&] { return p.train_loss(kTrain.x, kTrain.y); },
              [&] { return p.val_loss(kVal.x, kVal.y); });
    got[r] = p.hypergradient();
  });
  for (int64_t r = 0; r < world; ++r) {
    ASSERT_EQ(errors[r], "") << "rank " << r;
    // The same terms, added in another order.
    expect_close(got[r], want, 1e-12 * (1.0 + want.abs().max().item<double>()));
  }
}

TEST(Parallel, AClosureThrowingOnOneRankIsAnErrorOnEveryRank) {
  const int64_t world = 2;
  std::vector<bool> restored(world, false);
  auto errors = on_ranks(world, [&](int64_t r, c10::intrusive_ptr<c10d::ProcessGroup> group) {
    Problem p(16);
    auto o = options(2, "data");
    o.process_group = group;
    evograd::EvoGrad meta(*p.model, p.hyper(), o);
    std::vector<torch::Tensor> before;
    for (const auto& t : p.model->parameters()) before.push_back(t.detach().clone());
    int calls = 0;
    try {
      meta.step(
          [&] {
            if (r == 1 && ++calls == 2) throw std::runtime_error("rank 1's closure failed");
            return p.train_loss(kTrain.x, kTrain.y);
          },
          [&] { return p.val_loss(kVal.x, kVal.y); });
    } catch (...) {
      bool same = true;
      auto params = p.model->parameters();
      for (size_t i = 0; i < params.size(); ++i) same = same && torch::equal(params[i], before[i]);
      restored[r] = same;
      throw;
    }
  });
  EXPECT_EQ(errors[1], "rank 1's closure failed");
  EXPECT_NE(errors[0].find("1 other rank(s) failed in the candidates' training losses"),
            std::string::npos) << errors[0];
  EXPECT_TRUE(restored[0] && restored[1]);
}

TEST(Parallel, MismatchedOptionsAreAnErrorOnEveryRank) {
  auto errors = on_ranks(2, [&](int64_t r, c10::intrusive_ptr<c10d::ProcessGroup> group) {
    Problem p(16);
    auto o = options(r == 0 ? 2 : 3, "data");
    o.process_group = group;
    evograd::EvoGrad meta(*p.model, p.hyper(), o);
  });
  for (const auto& e : errors)
    EXPECT_NE(e.find("population differs across ranks (rank 0: 2, rank 1: 3)"), std::string::npos)
        << e;
  // A construction error on one rank (sigma <= 0) reaches the other.
  errors = on_ranks(2, [&](int64_t r, c10::intrusive_ptr<c10d::ProcessGroup> group) {
    Problem p(16);
    auto o = options(2, "data");
    o.process_group = group;
    if (r == 1) o.sigma = -1.0;
    evograd::EvoGrad meta(*p.model, p.hyper(), o);
  });
  EXPECT_NE(errors[1].find("sigma must be finite and > 0"), std::string::npos) << errors[1];
  EXPECT_NE(errors[0].find("could not be built on rank(s) 1"), std::string::npos) << errors[0];
}

// check_replicas: one weight one ulp apart on rank 1 is an error on every
// rank before the step writes anything; equal replicas step as usual.
TEST(Parallel, DriftedReplicasAreAnErrorWithCheckReplicas) {
  for (const bool drift : {false, true}) {
    auto errors = on_ranks(2, [&](int64_t r, c10::intrusive_ptr<c10d::ProcessGroup> group) {
      Problem p(16);
      auto o = options(2, "data");
      o.process_group = group;
      o.check_replicas = true;
      evograd::EvoGrad meta(*p.model, p.hyper(), o);
      auto w = p.model->parameters()[0];
      if (drift && r == 1) {
        torch::NoGradGuard no_grad;
        w[0][0] = std::nextafter(w[0][0].item<double>(), 2.0);
      }
      const auto before = w.clone();
      try {
        meta.step([&] { return p.train_loss(kTrain.x, kTrain.y); },
                  [&] { return p.val_loss(kVal.x, kVal.y); });
      } catch (...) {
        EXPECT_TRUE(torch::equal(w, before));
        throw;
      }
    });
    for (const auto& e : errors) {
      if (drift) {
        EXPECT_NE(e.find("the replicas have drifted apart"), std::string::npos) << e;
      } else {
        EXPECT_EQ(e, "");
      }
    }
  }
}

TEST(Parallel, NeedsAProcessGroupAndAKnownName) {
  Problem p(16);
  auto o = options(2, "data");
  EXPECT_THROW(evograd::EvoGrad(*p.model, p.hyper(), o), c10::ValueError);
  o.parallel = "pipeline";
  EXPECT_THROW(evograd::EvoGrad(*p.model, p.hyper(), o), c10::ValueError);
}

}  // namespace
