// The C++ meta-step's behaviours that need no Python fixtures: the lookahead
// estimator against an exact float64 T1-T2 by double backward, graphs that
// span a step, frozen bystanders, a per-step inner learning rate and the
// collapse report.
#include <gtest/gtest.h>

#include "evograd/evograd.hpp"

namespace {

namespace F = torch::nn::functional;

double relative_error(const std::vector<torch::Tensor>& got, const std::vector<torch::Tensor>& want) {
  double diff = 0, size = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff = std::max(diff, (got[i] - want[i]).abs().max().item<double>());
    size = std::max(size, want[i].abs().max().item<double>());
  }
  return diff / size;
}

// A Meta-Weight-Net step in miniature: a linear classifier whose per-example
// costs are weighted by a weighting net fed the cost detached at theta.
struct MiniMwn {
  torch::nn::Linear net{5, 3}, vnet{1, 1};
  torch::Tensor x, y, xv, yv;
  MiniMwn() {
    torch::manual_seed(3);
    net = torch::nn::Linear(5, 3);
    vnet = torch::nn::Linear(1, 1);
    net->to(torch::kFloat64);
    vnet->to(torch::kFloat64);
    x = torch::randn({20, 5}, torch::kFloat64);
    y = torch::randint(0, 3, {20});
    xv = torch::randn({12, 5}, torch::kFloat64);
    yv = torch::randint(0, 3, {12});
  }
  torch::Tensor weighted(const torch::Tensor& logits, bool use_detached) {
    auto cost = F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().reduction(torch::kNone));
    auto input = use_detached ? evograd::detached(cost) : cost.detach();
    return (torch::sigmoid(vnet->forward(input.unsqueeze(1))).squeeze(1) * cost).mean();
  }
  // d L_val(theta - alpha grad_theta L_train(theta, lambda)) / d lambda, the
  // graph of the inner gradient kept (double backward).
  std::vector<torch::Tensor> t1t2(double alpha) {
    auto theta = net->parameters();
    auto g = torch::autograd::grad({weighted(net->forward(x), false)}, theta, {}, true, true);
    auto out = F::linear(xv, theta[0] - alpha * g[0], theta[1] - alpha * g[1]);
    return torch::autograd::grad({F::cross_entropy(out, yv)}, vnet->parameters());
  }
  std::vector<torch::Tensor> lookahead(double alpha, bool use_detached) {
    return unrolled("lookahead", alpha, use_detached);
  }
  std::vector<torch::Tensor> unrolled(const std::string& estimator, double alpha,
                                      bool use_detached) {
    evograd::Options o;
    o.estimator = estimator;
    o.inner_lr = alpha;
    evograd::EvoGrad meta(*net, vnet->parameters(), o);
    for (auto& p : vnet->parameters()) p.mutable_grad() = torch::Tensor();
    meta.step([&] { return weighted(net->forward(x), use_detached); },
              [&] { return F::cross_entropy(net->forward(xv), yv); });
    std::vector<torch::Tensor> out;
    for (const auto& p : vnet->parameters()) out.push_back(p.grad().clone());
    return out;
  }
};

}  // namespace

TEST(CppStep, EstimatorsAreTheRowsChoices) {
  EXPECT_EQ(evograd::estimators(), (std::vector<std::string>{"evograd", "lookahead", "jvp"}));
}

// The central difference's error is O(s^2) (third derivatives along u) plus
// rounding ~eps/s relative to the gradient difference; with the default
// s = sqrt(eps) * max(1, |theta|) ~ 1e-8 in float64 both are far below 1e-5.
TEST(CppStep, LookaheadMatchesExactT1T2) {
  MiniMwn m;
  const auto before = m.net->weight.clone();
  for (const double alpha : {0.1, 1.0}) {
    const auto want = m.t1t2(alpha);
    EXPECT_LT(relative_error(m.lookahead(alpha, true), want), 1e-5) << "alpha " << alpha;
    // A plain detach() at the perturbed weights estimates another objective:
    // the check above can fail.
    EXPECT_GT(relative_error(m.lookahead(alpha, false), want), 1e-3) << "alpha " << alpha;
  }
  EXPECT_TRUE(torch::equal(m.net->weight, before));
}

TEST(CppStep, LookaheadWithZeroInnerRateGivesZero) {
  MiniMwn m;
  for (const auto& g : m.lookahead(0.0, true)) EXPECT_EQ(g.abs().max().item<double>(), 0.0);
}

// A training closure whose logits pass through bfloat16 or float16, as
// under autocast: lookahead's difference would be rounding, so it refuses,
// naming the precision, and leaves the model and lambda's .grad as they were.
TEST(CppStep, LookaheadRefusesHalfPrecision) {
  for (const auto type : {torch::kBFloat16, torch::kHalf}) {
    MiniMwn m;
    const auto before = m.net->weight.clone();
    evograd::Options o;
    o.estimator = "lookahead";
    o.inner_lr = 0.1;
    evograd::EvoGrad meta(*m.net, m.vnet->parameters(), o);
    for (auto& p : m.vnet->parameters()) p.mutable_grad() = torch::Tensor();
    auto half = [&] {
      // rounded through the narrow type (torch 1.13 has no CPU float16 matmul)
      return m.weighted(m.net->forward(m.x).to(type).to(torch::kFloat64), true);
    };
    std::string error;
    try {
      meta.step(half, [&] { return F::cross_entropy(m.net->forward(m.xv), m.yv); });
    } catch (const c10::ValueError& e) {
      error = e.what();
    }
    const std::string name = type == torch::kBFloat16 ? "bfloat16" : "float16";
    EXPECT_NE(error.find("computes in " + name), std::string::npos) << error;
    EXPECT_TRUE(torch::equal(m.net->weight, before));
    for (const auto& p : m.vnet->parameters()) EXPECT_FALSE(p.grad().defined());
  }
}

// What constructing an EvoGrad with these options raises ("" if nothing).
static std::string construction_error(const evograd::Options& o) {
  auto p = torch::zeros({3}, torch::kFloat64).requires_grad_(true);
  auto lam = torch::zeros({1}, torch::kFloat64).requires_grad_(true);
  try {
    evograd::EvoGrad({p}, {lam}, o);
  } catch (const c10::ValueError& e) {
    return e.what();
  }
  return "";
}

// T1-T2's estimators run data-parallel (tests/ops/test_parallel.cpp and
// tests/python/test_cpp_parallel.py), but have no candidates to share out.
TEST(CppStep, UnrolledEstimatorsRefuseCandidateParallel) {
  for (const char* estimator : {"lookahead", "jvp"}) {
    evograd::Options o;
    o.estimator = estimator;
    o.inner_lr = 0.1;
    o.parallel = "candidates";
    EXPECT_NE(construction_error(o).find("has no candidates to share out among ranks"),
              std::string::npos) << construction_error(o);
    o.parallel = "data";  // accepted; a process group is what is missing here
    EXPECT_NE(construction_error(o).find("needs a process group"), std::string::npos)
        << construction_error(o);
  }
}

// jvp takes T1-T2's derivative itself (double backward at theta, no step):
// equal to float64 rounding, with the closure's plain detach() a constant as
// in T1-T2 (evograd::detached gives the same values at theta); alpha = 0
// gives exact zeros; the model is left as it was.
TEST(CppStep, JvpEqualsExactT1T2) {
  MiniMwn m;
  const auto before = m.net->weight.clone();
  for (const double alpha : {0.1, 1.0}) {
    const auto want = m.t1t2(alpha);
    for (const bool use_detached : {false, true})
      EXPECT_LT(relative_error(m.unrolled("jvp", alpha, use_detached), want), 1e-12)
          << "alpha " << alpha << (use_detached ? " detached" : " detach()");
  }
  for (const auto& g : m.unrolled("jvp", 0.0, false)) EXPECT_EQ(g.abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(m.net->weight, before));
  evograd::Options o;
  o.estimator = "jvp";
  EXPECT_NE(construction_error(o).find("estimator 'jvp' needs inner_lr"), std::string::npos)
      << construction_error(o);
}

// keep_train_grad: the parameters' .grad is the training loss's gradient at
// theta, bit for bit as autograd gives it; a parameter that enters the loss
// only through its sum (autograd returns its gradient expanded, stride 0)
// gets it in the parameter's own layout; lambda's gradient does not change.
TEST(CppStep, KeepTrainGradLeavesTheInnerGradient) {
  torch::manual_seed(3);
  auto w = torch::randn({3, 2}, torch::kFloat64).requires_grad_(true);
  auto shift = torch::zeros({4}, torch::kFloat64).requires_grad_(true);
  auto lam = torch::tensor({0.3}, torch::kFloat64).requires_grad_(true);
  auto x = torch::randn({5, 2}, torch::kFloat64);
  auto out = [&] { return torch::tanh(x.matmul(w.t()) + shift.sum()); };
  auto train = [&] { return out().pow(2).mean() * torch::exp(lam).sum(); };
  auto val = [&] { return (out() - 0.5).pow(2).mean(); };
  const auto want = torch::autograd::grad({train()}, {w, shift});
  ASSERT_EQ(want[1].stride(0), 0);  // the case this test is about
  std::vector<torch::Tensor> hyper_grads;
  for (const bool keep : {false, true}) {
    evograd::Options o;
    o.estimator = "jvp";
    o.inner_lr = 0.1;
    o.keep_train_grad = keep;
    evograd::EvoGrad meta({w, shift}, {lam}, o, std::vector<torch::Tensor>{});
    lam.mutable_grad() = torch::Tensor();
    meta.step(train, val);
    hyper_grads.push_back(lam.grad().clone());
    if (!keep) {
      EXPECT_FALSE(w.grad().defined() || shift.grad().defined());  // off: as it was
      continue;
    }
    EXPECT_TRUE(torch::equal(w.grad(), want[0]));
    EXPECT_TRUE(torch::equal(shift.grad(), want[1]));
    EXPECT_EQ(shift.grad().strides(), shift.strides());
  }
  EXPECT_TRUE(torch::equal(hyper_grads[0], hyper_grads[1]));
}

// The loop that skips its own forward still gets BatchNorm's running
// statistics updated once, as that forward at theta would; without the
// option, or when the step fails, they stay as they were.
TEST(CppStep, KeepTrainGradLeavesTheBuffersOfTheSkippedForward) {
  torch::manual_seed(4);
  torch::nn::Sequential net(torch::nn::Linear(4, 6), torch::nn::BatchNorm1d(6),
                            torch::nn::Functional(torch::relu), torch::nn::Linear(6, 3));
  net->to(torch::kFloat64);
  auto x = torch::randn({10, 4}, torch::kFloat64);
  auto y = torch::randint(3, {10}, torch::kLong);
  auto lam = torch::tensor({0.3}, torch::kFloat64).requires_grad_(true);
  bool bad = false;
  auto train = [&] {
    net->train();
    return torch::nn::functional::cross_entropy(net->forward(x * (1 + lam)), y);
  };
  auto val = [&] {
    net->eval();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x.slice(0, 0, 5)), y.slice(0, 0, 5));
    return bad ? loss * std::nan("") : loss;
  };
  auto values = [&] {
    std::vector<torch::Tensor> out;
    for (const auto& b : net->buffers()) out.push_back(b.clone());
    return out;
  };
  auto same = [](const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    for (size_t i = 0; i < a.size(); ++i)
      if (!torch::equal(a[i], b[i])) return false;
    return true;
  };
  auto put = [&](const std::vector<torch::Tensor>& v) {
    torch::NoGradGuard no_grad;
    auto buffers = net->buffers();
    for (size_t i = 0; i < v.size(); ++i) buffers[i].copy_(v[i]);
  };
  const auto found = values();
  train();  // the forward the one-pass loop skips
  const auto after = values();
  put(found);
  ASSERT_FALSE(same(found, after));  // there is an update to lose
  for (const std::string estimator : {"jvp", "lookahead"}) {
    for (const bool keep : {false, true}) {
      evograd::Options o;
      o.estimator = estimator;
      o.inner_lr = 0.1;
      o.keep_train_grad = keep;
      evograd::EvoGrad meta(*net, {lam}, o);
      meta.step(train, val);
      EXPECT_TRUE(same(values(), keep ? after : found)) << estimator << " " << keep;
      put(found);
      for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
    }
    evograd::Options o;
    o.estimator = estimator;
    o.inner_lr = 0.1;
    o.keep_train_grad = true;
    evograd::EvoGrad meta(*net, {lam}, o);
    bad = true;
    EXPECT_ANY_THROW(meta.step(train, val));
    bad = false;
    EXPECT_TRUE(same(values(), found)) << estimator << ": a failed step changed the buffers";
    for (const auto& p : net->parameters()) EXPECT_FALSE(p.grad().defined());
  }
}

// LFT records its auxiliary loss before the meta block and backpropagates it
// after: the step writes without bumping version counters and restores every
// value, so that graph is valid and gives the gradient it would have without
// the step.
TEST(CppStep, AGraphRecordedBeforeTheStepStaysValid) {
  torch::manual_seed(5);
  torch::nn::Linear net(4, 2);
  net->to(torch::kFloat64);
  auto x = torch::randn({6, 4}, torch::kFloat64);
  auto lam = torch::zeros({6}, torch::kFloat64).requires_grad_(true);
  auto aux_loss = [&] { return torch::tanh(net->forward(x)).pow(3).sum(); };
  aux_loss().backward();
  const auto want = net->weight.grad().clone();
  net->zero_grad();
  auto aux = aux_loss();  // recorded before the step
  const auto version = net->weight._version();
  evograd::Options o;
  o.seed = 1;
  evograd::EvoGrad meta(*net, {lam}, o);
  meta.step([&] { return (torch::sigmoid(lam) * net->forward(x).pow(2).sum(1)).mean(); },
            [&] { return net->forward(x).pow(2).mean(); });
  EXPECT_EQ(net->weight._version(), version);
  aux.backward();
  EXPECT_TRUE(torch::equal(net->weight.grad(), want));
}

// A head perturbed alone: the encoder below it records nothing during the
// step, and requires grad again afterwards.
TEST(CppStep, TensorsNeitherPerturbedNorHyperparametersAreFrozen) {
  torch::manual_seed(6);
  torch::nn::Sequential model(torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 2));
  model->to(torch::kFloat64);
  auto encoder = model[0]->as<torch::nn::Linear>()->weight;
  auto head = model[2]->as<torch::nn::Linear>()->parameters();
  auto x = torch::randn({6, 4}, torch::kFloat64);
  auto lam = torch::zeros({6}, torch::kFloat64).requires_grad_(true);
  std::vector<bool> seen;
  evograd::EvoGrad meta(head, {lam}, evograd::Options(), *model);
  meta.step(
      [&] {
        seen.push_back(encoder.requires_grad());
        return (torch::sigmoid(lam) * model->forward(x).pow(2).sum(1)).mean();
      },
      [&] {
        seen.push_back(encoder.requires_grad());
        return model->forward(x).pow(2).mean();
      });
  EXPECT_EQ(seen, std::vector<bool>({false, false, false}));
  EXPECT_TRUE(encoder.requires_grad());
  EXPECT_FALSE(encoder.grad().defined());
  EXPECT_TRUE(lam.grad().defined());
}

// inner_lr follows a schedule: a rate passed to step() is the one a fresh
// meta-learner built with it would use, and stays for the next steps.
TEST(CppStep, InnerLearningRatePerStep) {
  torch::manual_seed(7);
  auto w = torch::randn({5}, torch::kFloat64).requires_grad_(true);
  auto lam = torch::zeros({5}, torch::kFloat64).requires_grad_(true);
  auto train = [&] { return (torch::exp(lam) * w.pow(2)).sum(); };
  auto val = [&] { return (w - 1).pow(2).sum(); };
  evograd::Options o;
  o.scale = "t1t2";
  o.seed = 3;
  o.inner_lr = 0.1;
  evograd::EvoGrad scheduled({w}, {lam}, o);
  scheduled.step(train, val, 0.3);
  const auto got = lam.grad().clone();
  EXPECT_EQ(*scheduled.options().inner_lr, 0.3);
  o.inner_lr = 0.3;
  lam.mutable_grad() = torch::Tensor();
  evograd::EvoGrad fresh({w}, {lam}, o);
  fresh.step(train, val);
  EXPECT_TRUE(torch::equal(lam.grad(), got));
  EXPECT_EQ(scheduled.hypergradient_scale(), fresh.hypergradient_scale());
  EXPECT_THROW(scheduled.set_inner_lr(-1.0), c10::ValueError);
  EXPECT_EQ(*scheduled.options().inner_lr, 0.3);  // a refused rate changes nothing
  o = evograd::Options();
  evograd::EvoGrad plain({w}, {lam}, o);
  EXPECT_THROW(plain.set_inner_lr(0.1), c10::ValueError);  // nothing uses it
}

// One-hot weights estimate ~0: the step says so in its result (and warns).
TEST(CppStep, CollapsedWeightsAreReported) {
  torch::manual_seed(8);
  auto w = torch::randn({16}, torch::kFloat64).requires_grad_(true);
  auto lam = torch::zeros({16}, torch::kFloat64).requires_grad_(true);
  evograd::Options o;
  o.sigma = 0.1;
  o.seed = 2;
  auto train = [&] { return (torch::exp(lam) * w.pow(2)).sum() * 100; };
  auto val = [&] { return w.sum(); };
  o.temperature = 1e-4;
  auto collapsed = evograd::EvoGrad({w}, {lam}, o).step(train, val);
  EXPECT_TRUE(collapsed.collapsed);
  EXPECT_LT(collapsed.ess, evograd::kCollapseEss);
  o.temperature = 1e6;
  auto healthy = evograd::EvoGrad({w}, {lam}, o).step(train, val);
  EXPECT_FALSE(healthy.collapsed);
  EXPECT_GT(healthy.ess, 1.99);
  EXPECT_LE(healthy.ess, 2.0);
}
