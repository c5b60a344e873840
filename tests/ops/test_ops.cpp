// The operators from C++: through the dispatcher, inside a TorchScript file
// saved by Python, and driven by the C++ EvoGrad API, checked against numbers
// Python computed (make_fixtures.py) and against plain references.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>

#include "evograd/evograd.hpp"

namespace {

std::string g_dir = ".";

std::map<std::string, torch::Tensor> expected() {
  auto holder = torch::jit::load(g_dir + "/expected.pt");
  std::map<std::string, torch::Tensor> out;
  for (const auto& b : holder.named_buffers()) out[b.name] = b.value;
  return out;
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, double tol) {
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_LE((a - b).abs().max().item<double>(), tol) << a << "\nvs\n" << b;
}

using CombineSig = std::vector<at::Tensor>(at::TensorList, const at::Tensor&, double, int64_t,
                                           double, c10::string_view, bool, int64_t);

TEST(CppOps, DispatcherCallMatchesReference) {
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow("evograd::combine", "").typed<CombineSig>();
  auto a = torch::randn({10}, torch::kFloat64);
  auto zeros = torch::zeros({10}, torch::kFloat64);
  auto losses = torch::tensor({0.2, 0.4}, torch::kFloat64);
  auto out = op.call({a}, losses, 0.3, 1, 0.5, "sign", false, 0);
  // Reference: candidates from perturb on zeros are eps_k; softmax by hand.
  auto perturb = c10::Dispatcher::singleton()
                     .findSchemaOrThrow("evograd::perturb", "")
                     .typed<std::vector<at::Tensor>(at::TensorList, int64_t, int64_t, double,
                                                    c10::string_view, bool, int64_t)>();
  auto e0 = perturb.call({zeros}, 1, 0, 0.5, "sign", false, 0)[0];
  auto e1 = perturb.call({zeros}, 1, 1, 0.5, "sign", false, 0)[0];
  auto w = torch::softmax(-losses / 0.3, 0);
  expect_close(out[0], a + w[0] * e0 + w[1] * e1, 1e-15);
}

TEST(CppOps, TorchScriptFileSavedInPython) {
  auto e = expected();
  auto module = torch::jit::load(g_dir + "/combine.pt");
  auto losses = e["losses"].detach().clone().requires_grad_(true);
  auto out = module.forward({e["a"], e["b"], losses}).toTensorVector();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(torch::equal(out[0], e["theta_a"]));
  EXPECT_TRUE(torch::equal(out[1], e["theta_b"]));
  // The C++ autograd of combine runs in a process with no Python.
  (out[0].pow(2).sum() + out[1].pow(2).sum()).backward();
  expect_close(losses.grad(), e["dlosses"], 1e-14);
}

TEST(CppApi, StepOnScriptedModelMatchesPython) {
  auto e = expected();
  auto model = torch::jit::load(g_dir + "/meta_mlp.pt");
  model.train();
  auto logits = e["logits"].clone().requires_grad_(true);
  torch::Tensor decay;
  std::vector<torch::Tensor> params;
  for (const auto& p : model.named_parameters()) {
    if (p.name == "log_decay") decay = p.value; else params.push_back(p.value);
  }
  std::vector<torch::Tensor> buffers;
  for (const auto& b : model.buffers()) buffers.push_back(b);
  evograd::Options opt;
  opt.population = 4;
  opt.sigma = 0.01;
  opt.temperature = 0.1;
  opt.noise = "gauss";
  opt.seed = 5;
  evograd::EvoGrad meta(params, {decay, logits}, opt, buffers);
  auto train = [&] {
    return model.run_method("train_loss", e["x"], e["y"], logits).toTensor();
  };
  auto val = [&] { return model.run_method("val_loss", e["xv"], e["yv"]).toTensor(); };
  meta.step(train, val);
  auto r = meta.step(train, val);
  EXPECT_EQ(r.seed, e["seed_step1"].item<int64_t>());
  EXPECT_EQ(r.seed, evograd::step_seed(5, 1));
  expect_close(r.losses, e["losses_step1"], 1e-12);
  EXPECT_NEAR(r.val_loss, e["val_step1"].item<double>(), 1e-12);
  expect_close(decay.grad(), e["grad_decay"], 1e-10);
  expect_close(logits.grad(), e["grad_logits"], 1e-10);
}

TEST(CppApi, TiedWeightsOfAScriptedModelArePerturbedOnceAsInPython) {
  auto e = expected();
  auto model = torch::jit::load(g_dir + "/tied.pt");
  size_t listed = 0;
  for (const auto& p : model.parameters()) listed += p.defined();
  ASSERT_EQ(listed, 4u);  // enc.weight, enc.bias, dec.weight (= enc.weight), dec.bias
  auto before = model.attr("enc").toModule().attr("weight").toTensor().clone();
  auto logits = e["tied_logits"].clone().requires_grad_(true);
  evograd::Options opt;
  opt.population = 3;
  opt.sigma = 0.01;
  opt.temperature = 0.1;
  opt.seed = 9;
  evograd::EvoGrad meta(model, {logits}, opt);
  EXPECT_EQ(meta.params().size(), 3u);
  const auto x = e["tied_x"];
  auto forward = [&](const torch::Tensor& in) { return model.forward({in}).toTensor(); };
  auto r = meta.step(
      [&] { return (torch::sigmoid(logits) * (forward(x) - x).pow(2).sum(1)).mean(); },
      [&] {
        auto xv = x.slice(0, 0, 6);
        return (forward(xv) - xv).pow(2).mean();
      });
  expect_close(r.losses, e["tied_losses"], 1e-12);
  expect_close(logits.grad(), e["tied_grad_logits"], 1e-10);
  EXPECT_TRUE(torch::equal(model.attr("enc").toModule().attr("weight").toTensor(), before));
}

// A C++ module, and the same step written out with the ops' autograd (the
// differentiable-combine route) as the reference.
struct Net : torch::nn::Module {
  Net() {
    fc = register_module("fc", torch::nn::Linear(3, 2));
    bn = register_module("bn", torch::nn::BatchNorm1d(2));
    to(torch::kFloat64);
  }
  torch::Tensor forward(const torch::Tensor& x) { return bn(fc(x)); }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};

TEST(CppApi, StepOnNnModuleMatchesCombineRouteAndRestoresModel) {
  torch::manual_seed(3);
  auto net = std::make_shared<Net>();
  auto lam = torch::tensor({0.3}, torch::kFloat64).requires_grad_(true);
  auto x = torch::randn({6, 3}, torch::kFloat64), y = torch::randn({6, 2}, torch::kFloat64);
  auto train_of = [&](const torch::Tensor& out) { return (out - y).pow(2).mean() * torch::exp(lam).sum(); };
  auto val_of = [&](const torch::Tensor& out) { return (out - 1.0).pow(2).mean(); };

  std::vector<torch::Tensor> before;
  for (const auto& p : net->parameters()) before.push_back(p.detach().clone());
  auto stats = net->bn->running_mean.clone();
  net->fc->weight.mutable_grad() = torch::full_like(net->fc->weight, 7.0);

  evograd::Options opt;
  opt.population = 3;
  opt.sigma = 0.05;
  opt.temperature = 0.2;
  opt.seed = 11;
  evograd::EvoGrad meta(*net, {lam}, opt);
  meta.step([&] { return train_of(net->forward(x)); }, [&] { return val_of(net->forward(x)); });
  auto got = lam.grad().clone();

  for (size_t i = 0; i < before.size(); ++i)
    EXPECT_TRUE(torch::equal(net->parameters()[i], before[i]));
  EXPECT_TRUE(torch::equal(net->bn->running_mean, stats));
  EXPECT_TRUE(torch::equal(net->fc->weight.grad(), torch::full_like(net->fc->weight, 7.0)));

  // Reference: candidates via perturb, losses stacked, theta* by combine,
  // one backward; the network run functionally (fc, then batch-statistics bn).
  lam.mutable_grad() = torch::Tensor();
  auto forward_at = [&](const std::vector<torch::Tensor>& P) {
    auto h = torch::linear(x, P[0], P[1]);
    return torch::batch_norm(h, P[2], P[3], torch::Tensor(), torch::Tensor(), true, 0.1, 1e-5,
                             false);
  };
  auto perturb = c10::Dispatcher::singleton()
                     .findSchemaOrThrow("evograd::perturb", "")
                     .typed<std::vector<at::Tensor>(at::TensorList, int64_t, int64_t, double,
                                                    c10::string_view, bool, int64_t)>();
  const int64_t seed = evograd::step_seed(11, 0);
  std::vector<torch::Tensor> losses;
  for (int64_t k = 0; k < 3; ++k)
    losses.push_back(train_of(forward_at(perturb.call(before, seed, k, 0.05, "sign", false, 0))));
  auto theta = c10::Dispatcher::singleton()
                   .findSchemaOrThrow("evograd::combine", "")
                   .typed<CombineSig>()
                   .call(before, torch::stack(losses), 0.2, seed, 0.05, "sign", false, 0);
  val_of(forward_at(theta)).backward();
  expect_close(got, lam.grad(), 1e-12);
}

// A MetaModule-style network: its weights are buffers that require grad (as
// the official Meta-Weight-Net code builds models), plus a plain buffer.
struct BufferNet : torch::nn::Module {
  BufferNet() {
    w = register_buffer("w", torch::randn({2, 3}, torch::kFloat64).requires_grad_(true));
    b = register_buffer("b", torch::zeros({2}, torch::kFloat64).requires_grad_(true));
    count = register_buffer("count", torch::zeros({1}, torch::kFloat64));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    count.add_(1);  // state a forward changes, which the step must put back
    return torch::linear(x, w, b);
  }
  torch::Tensor w, b, count;
};

TEST(CppApi, BufferWeightsArePerturbedOtherBuffersRestored) {
  torch::manual_seed(4);
  auto net = std::make_shared<BufferNet>();
  ASSERT_TRUE(net->parameters().empty());
  auto lam = torch::tensor({0.2}, torch::kFloat64).requires_grad_(true);
  auto x = torch::randn({5, 3}, torch::kFloat64);
  evograd::Options opt;
  opt.seed = 2;
  evograd::EvoGrad meta(*net, {lam}, opt);
  ASSERT_EQ(meta.params().size(), 2u);
  ASSERT_EQ(meta.buffers().size(), 1u);
  EXPECT_TRUE(meta.buffers()[0].is_same(net->count));
  auto w = net->w.clone();
  meta.step([&] { return net->forward(x).pow(2).mean() * lam.sum(); },
            [&] { return net->forward(x).sum(); });
  EXPECT_TRUE(torch::equal(net->w, w));
  EXPECT_EQ(net->count.item<double>(), 0.0);
  ASSERT_TRUE(lam.grad().defined());
  EXPECT_TRUE(std::isfinite(lam.grad().item<double>()));
  EXPECT_NE(lam.grad().item<double>(), 0.0);
}

TEST(CppApi, SeedsScaleAndDefaultSeedMatchPython) {
  // SplitMix64's published first outputs for state 0, as signed integers.
  EXPECT_EQ(static_cast<uint64_t>(evograd::step_seed(0, 1)), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(static_cast<uint64_t>(evograd::step_seed(0, 2)), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(evograd::step_seed(5, 3, "consecutive"), 8);
  EXPECT_THROW(evograd::step_seed(5, 3, "random"), c10::ValueError);
  auto p = torch::zeros({3}, torch::kFloat64).requires_grad_(true);
  auto lam = torch::zeros({1}, torch::kFloat64).requires_grad_(true);
  evograd::Options opt;
  opt.population = 4;
  opt.sigma = 1e-2;
  opt.temperature = 0.5;
  opt.scale = "t1t2";
  opt.inner_lr = 0.1;
  EXPECT_NEAR(evograd::EvoGrad({p}, {lam}, opt).hypergradient_scale(),
              0.5 * 0.1 / (1e-4 * 0.75), 1e-9);
  opt.antithetic = true;
  EXPECT_NEAR(evograd::EvoGrad({p}, {lam}, opt).hypergradient_scale(), 0.5 * 0.1 / 1e-4, 1e-9);
  opt.inner_lr.reset();
  EXPECT_THROW(evograd::EvoGrad({p}, {lam}, opt), c10::ValueError);
  // seed unset: torch's generator is read, not drawn from.
  torch::manual_seed(9);
  auto state = at::detail::getDefaultCPUGenerator().get_state();
  evograd::EvoGrad a({p}, {lam}), b({p}, {lam});
  EXPECT_TRUE(torch::equal(at::detail::getDefaultCPUGenerator().get_state(), state));
  EXPECT_NE(a.seed(), b.seed());
}

// The options' checks come from options.def's rules, with Python's messages.
TEST(CppApi, OptionsAreCheckedByTheirRows) {
  auto p = torch::zeros({3}, torch::kFloat64).requires_grad_(true);
  auto lam = torch::zeros({1}, torch::kFloat64).requires_grad_(true);
  auto message = [&](const evograd::Options& o) -> std::string {
    try {
      evograd::EvoGrad({p}, {lam}, o);
    } catch (const c10::ValueError& e) {
      return e.what_without_backtrace();
    }
    return "";
  };
  evograd::Options o;
  o.noise = "uniform";
  EXPECT_NE(message(o).find("noise must be one of ('sign', 'gauss'), got 'uniform'"), std::string::npos);
  o = evograd::Options();
  o.population = 1;
  EXPECT_NE(message(o).find("population must be >= 2"), std::string::npos);
  o = evograd::Options();
  o.parallel = "pipeline";
  EXPECT_NE(message(o).find("parallel must be one of (None, 'data', 'candidates')"), std::string::npos);
  o = evograd::Options();
  o.scale = "t1t2";
  o.inner_lr = -1.0;
  EXPECT_NE(message(o).find("inner_lr must be finite and >= 0"), std::string::npos);
  o.inner_lr = 0.0;  // a warm-up's first step, as in Python
  EXPECT_EQ(message(o), "");
  EXPECT_EQ(evograd::EvoGrad({p}, {lam}, o).hypergradient_scale(), 0.0);
}

// The inner learning rate follows a schedule: a checkpoint restores it.
TEST(CppApi, CheckpointRestoresTheInnerLearningRate) {
  auto p = torch::zeros({3}, torch::kFloat64).requires_grad_(true);
  auto lam = torch::zeros({1}, torch::kFloat64).requires_grad_(true);
  evograd::Options o;
  o.scale = "t1t2";
  o.inner_lr = 0.1;
  evograd::EvoGrad saved({p}, {lam}, o);
  std::stringstream buffer;
  torch::serialize::OutputArchive out;
  saved.save(out);
  out.save_to(buffer);
  o.inner_lr = 0.4;
  evograd::EvoGrad resumed({p}, {lam}, o);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  resumed.load(in);
  EXPECT_EQ(*resumed.options().inner_lr, 0.1);
  EXPECT_EQ(resumed.hypergradient_scale(), saved.hypergradient_scale());
}

TEST(CppApi, BadInputRaisesAndLeavesModelUntouched) {
  auto net = std::make_shared<Net>();
  auto lam = torch::tensor({0.3}, torch::kFloat64).requires_grad_(true);
  evograd::Options bad;
  bad.population = 1;
  EXPECT_THROW(evograd::EvoGrad(*net, {lam}, bad), c10::Error);
  bad = evograd::Options();
  bad.sigma = -1;
  EXPECT_THROW(evograd::EvoGrad(*net, {lam}, bad), c10::Error);
  bad = evograd::Options();
  bad.temperature = 0;
  EXPECT_THROW(evograd::EvoGrad(*net, {lam}, bad), c10::Error);
  bad = evograd::Options();
  bad.population = 3;
  bad.antithetic = true;
  EXPECT_THROW(evograd::EvoGrad(*net, {lam}, bad), c10::Error);
  EXPECT_THROW(evograd::EvoGrad(net->parameters(), {net->fc->weight}), c10::Error);

  auto before = net->fc->weight.detach().clone();
  evograd::EvoGrad meta(*net, {lam});
  auto x = torch::randn({4, 3}, torch::kFloat64);
  auto ok = [&] { return net->forward(x).sum() * lam.sum(); };
  EXPECT_THROW(meta.step([&] { return net->forward(x) * lam; }, ok), c10::Error);     // not scalar
  EXPECT_THROW(meta.step([&] { return net->forward(x).sum(); }, ok), c10::Error);     // no lambda
  EXPECT_THROW(meta.step([&] { return ok() * std::nan(""); }, ok), c10::Error);      // NaN
  EXPECT_THROW(meta.step(ok, [&]() -> torch::Tensor { throw std::runtime_error("boom"); }),
               std::runtime_error);
  EXPECT_TRUE(torch::equal(net->fc->weight, before));
  EXPECT_FALSE(lam.grad().defined());
}

}  // namespace

// The scenario table of scenarios.py, replayed through the C++ EvoGrad: the
// same outcome as Python's, and on success the same numbers, bit for bit.
// Each line is `name key=value ... expect=...`; the option columns are read
// by expanding options.def's rows, so every option is a column here too.
struct Scenario {
  std::string name, expect;
  std::map<std::string, std::string> fields;
  evograd::Options options;
  bool flag(const char* key) const { return fields.at(key) == "1"; }
};

void read_into(const std::string& v, int64_t& out) { out = std::stoll(v); }
void read_into(const std::string& v, double& out) { out = std::stod(v); }
void read_into(const std::string& v, bool& out) { out = v == "1"; }
void read_into(const std::string& v, std::string& out) { out = v == "none" ? "" : v; }
template <typename T>
void read_into(const std::string& v, c10::optional<T>& out) {
  if (v == "none") {
    out.reset();
  } else {
    T value;
    read_into(v, value);
    out = value;
  }
}

// The rows C++ has (BOTH); PYTHON rows are the scenario table's columns only
// where both languages have them.
#define SCENARIO_ROW_BOTH(...) __VA_ARGS__
#define SCENARIO_ROW_PYTHON(...)

// Sets every option from its column; the number of rows set is returned.
size_t read_options(const std::map<std::string, std::string>& fields, evograd::Options& o) {
  size_t set = 0;
#define EVOGRAD_OPTION(name, type, value, rule, where, flags) \
  SCENARIO_ROW_##where(if (fields.count(#name)) {             \
    read_into(fields.at(#name), o.name);                      \
    ++set;                                                    \
  })
#include "evograd/options.def"
#undef EVOGRAD_OPTION
  return set;
}

size_t option_rows() {
  size_t rows = 0;
#define EVOGRAD_OPTION(name, type, value, rule, where, flags) SCENARIO_ROW_##where(++rows;)
#include "evograd/options.def"
#undef EVOGRAD_OPTION
  return rows;
}

std::vector<Scenario> scenario_table() {
  std::ifstream in(g_dir + "/scenarios.txt");
  std::vector<Scenario> table;
  std::string line;
  while (std::getline(in, line)) {
    Scenario s;
    const auto at = line.find(" expect=");
    s.expect = line.substr(at + 8);
    std::istringstream f(line.substr(0, at));
    f >> s.name;
    for (std::string kv; f >> kv;) {
      const auto eq = kv.find('=');
      s.fields[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    EXPECT_EQ(read_options(s.fields, s.options), option_rows()) << s.name << ": a row with no column";
    table.push_back(s);
  }
  return table;
}

torch::Dtype dtype_named(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  return torch::kFloat64;
}

// Equal values, NaN where the other has NaN.
void expect_identical(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  auto x = a.to(torch::kFloat64), y = b.to(torch::kFloat64);
  EXPECT_TRUE(torch::equal(x.isnan(), y.isnan()) &&
              torch::equal(x.nan_to_num(0.0), y.nan_to_num(0.0)))
      << what << ": " << a << "\nvs Python\n" << b;
}

TEST(CppApi, ScenarioTableMatchesPython) {
  auto e = expected();
  auto table = scenario_table();
  ASSERT_GE(table.size(), 23u);
  for (const auto& s : table) {
    SCOPED_TRACE(s.name);
    const auto dtype = dtype_named(s.fields.at("dtype"));
    auto model = torch::jit::load(g_dir + "/scenario_net.pt");
    model.to(dtype);
    model.train();
    auto data = [&](const char* k) { return e[std::string("scenario__") + k].to(dtype); };
    auto x = data("x"), y = data("y"), xv = data("xv"), yv = data("yv");
    auto logits = data("logits").clone().requires_grad_(true);
    torch::Tensor decay;
    std::vector<torch::Tensor> params, buffers, before;
    for (const auto& p : model.named_parameters()) {
      if (p.name == "log_decay") {
        decay = p.value;
      } else {
        params.push_back(p.value);
      }
    }
    for (const auto& b : model.named_buffers()) {
      if (b.name == "w00") continue;  // the poison threshold, never written
      buffers.push_back(b.value);
      before.push_back(b.value.clone());
    }
    std::vector<torch::Tensor> hyper = {decay, logits};
    if (s.flag("unused")) hyper.push_back(torch::zeros({2}, dtype).requires_grad_(true));

    const bool poison = s.flag("poison"), dropout = s.flag("dropout");
    auto run = [&](evograd::EvoGrad& meta) {
      torch::manual_seed(1234);  // scenarios.RNG_SEED
      return meta.step(
          [&] { return model.run_method("train_loss", x, y, logits, poison, dropout).toTensor(); },
          [&] { return model.run_method("val_loss", xv, yv, dropout).toTensor(); });
    };
    auto step = [&] {
      evograd::EvoGrad meta(params, hyper, s.options, buffers);
      if (!s.flag("resume")) return run(meta);
      // A step, then a checkpoint loaded into a learner built with another
      // seed (scenarios.RESUMED_SEED_SHIFT): the resumed step is compared.
      run(meta);
      torch::serialize::OutputArchive saved;
      meta.save(saved);
      std::ostringstream bytes;
      saved.save_to(bytes);
      evograd::Options other = s.options;
      other.seed = *s.options.seed + 1000;
      evograd::EvoGrad resumed(params, hyper, other, buffers);
      std::istringstream from(bytes.str());
      torch::serialize::InputArchive loaded;
      loaded.load_from(from);
      resumed.load(loaded);
      for (auto& h : hyper) h.mutable_grad() = torch::Tensor();
      return run(resumed);
    };
    if (s.expect != "ok") {
      const auto colon = s.expect.find(':');
      const auto kind = s.expect.substr(0, colon), fragment = s.expect.substr(colon + 1);
      try {
        step();
        ADD_FAILURE() << "expected " << s.expect;
      } catch (const c10::ValueError& err) {
        EXPECT_EQ(kind, "ValueError");
        EXPECT_NE(std::string(err.what()).find(fragment), std::string::npos) << err.what();
      } catch (const c10::TypeError& err) {
        EXPECT_EQ(kind, "TypeError");
        EXPECT_NE(std::string(err.what()).find(fragment), std::string::npos) << err.what();
      }
      for (size_t i = 0; i < buffers.size(); ++i) EXPECT_TRUE(torch::equal(buffers[i], before[i]));
    } else {
      auto r = step();
      const auto key = [&](const char* k) { return e[s.name + "__" + k]; };
      expect_identical(r.losses, key("losses"), "losses");
      expect_identical(r.weights, key("weights"), "weights");
      expect_identical(decay.grad(), key("grad_decay"), "grad of log_decay");
      expect_identical(logits.grad(), key("grad_logits"), "grad of logits");
      EXPECT_EQ(r.val_loss, key("val").item<double>());
      expect_identical(r.val_loss_tensor, key("val_tensor"), "val_loss_tensor");
      EXPECT_EQ(r.dropped, key("dropped").item<int64_t>());
      expect_identical(torch::tensor({r.ess}, torch::kDouble), key("ess"), "ess");
      EXPECT_EQ(int64_t{r.collapsed}, key("collapsed").item<int64_t>());
      EXPECT_EQ(r.seed, key("seed").item<int64_t>());
      std::vector<torch::Tensor> kept;
      for (const auto& p : params)
        if (p.grad().defined()) kept.push_back(p.grad().reshape({-1}));
      expect_identical(kept.empty() ? torch::zeros({0}, dtype) : torch::cat(kept),
                       key("grad_params"), "the parameters' .grad");
      if (s.flag("unused"))
        EXPECT_EQ(int64_t{hyper[2].grad().defined()}, key("unused_has_grad").item<int64_t>());
      // restored, or with keep_train_grad as the training forward left them
      std::vector<torch::Tensor> values;
      for (const auto& b : buffers) values.push_back(b.reshape({-1}).to(torch::kDouble));
      expect_identical(torch::cat(values), key("buffers"), "the buffers");
    }
  }
}

// A checkpoint taken after two steps and loaded into a fresh meta-learner:
// its next step is the uninterrupted run's third, bit for bit.
TEST(CppApi, CheckpointResumesTheSeedSequence) {
  auto make = [](torch::nn::Linear& fc, torch::Tensor& lam, int64_t seed) {
    torch::manual_seed(1);
    fc = torch::nn::Linear(4, 2);
    fc->to(torch::kFloat64);
    lam = torch::tensor({0.1}, torch::kFloat64).requires_grad_(true);
    evograd::Options opt;
    opt.population = 3;
    opt.seed = seed;
    return evograd::EvoGrad(*fc, {lam}, opt);
  };
  auto x = torch::randn({5, 4}, torch::kFloat64);
  torch::nn::Linear fc{nullptr}, fc2{nullptr};
  torch::Tensor lam, lam2;
  auto meta = make(fc, lam, 21);
  auto step = [&](evograd::EvoGrad& m, torch::nn::Linear& f, torch::Tensor& l) {
    return m.step([&] { return (f->forward(x).pow(2) * torch::exp(l)).mean(); },
                  [&] { return f->forward(x).mean(); });
  };
  step(meta, fc, lam);
  step(meta, fc, lam);
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive out;
    meta.save(out);
    out.save_to(buffer);
  }
  auto third = step(meta, fc, lam);

  auto resumed = make(fc2, lam2, 999);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  resumed.load(in);
  EXPECT_EQ(resumed.seed(), 21);
  EXPECT_EQ(resumed.steps_taken(), 2);
  auto again = step(resumed, fc2, lam2);
  EXPECT_EQ(again.seed, third.seed);
  EXPECT_TRUE(torch::equal(again.losses, third.losses));

  // Other options: refused, naming the difference.
  torch::nn::Linear fc3{nullptr};
  torch::Tensor lam3;
  auto other = make(fc3, lam3, 21);
  evograd::Options o = other.options();
  o.sigma = 2e-3;
  evograd::EvoGrad changed(*fc3, {lam3}, o);
  buffer.seekg(0);
  torch::serialize::InputArchive in2;
  in2.load_from(buffer);
  try {
    changed.load(in2);
    ADD_FAILURE() << "expected an error";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("sigma: saved 0.001, here 0.002"), std::string::npos)
        << e.what();
  }
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1) g_dir = argv[1];
  return RUN_ALL_TESTS();
}

namespace {

// Two threads running meta-steps on separate models give the numbers each
// gives alone: the operators keep no global mutable state.
TEST(CppApi, ThreadsDoNotInterfere) {
  auto run = [](int64_t seed) {
    torch::manual_seed(seed);  // only used while building, before threads race
    auto fc = torch::nn::Linear(5, 3);
    fc->to(torch::kFloat64);
    auto lam = torch::tensor({0.2}, torch::kFloat64).requires_grad_(true);
    auto x = torch::linspace(-1, 1, 40, torch::kFloat64).reshape({8, 5}) * double(seed);
    evograd::Options opt;
    opt.population = 4;
    opt.sigma = 0.01;
    opt.temperature = 0.1;
    opt.seed = seed;
    return std::make_tuple(fc, lam, x, opt);
  };
  auto steps = [](std::tuple<torch::nn::Linear, torch::Tensor, torch::Tensor, evograd::Options> s) {
    auto [fc, lam, x, opt] = s;
    evograd::EvoGrad meta(*fc, {lam}, opt);
    for (int i = 0; i < 20; ++i)
      meta.step([&] { return fc->forward(x).pow(2).mean() * torch::exp(lam).sum(); },
                [&] { return (fc->forward(x) - 1).pow(2).mean(); });
    return lam.grad().clone();
  };
  auto a1 = steps(run(1)), a2 = steps(run(2));
  auto s1 = run(1), s2 = run(2);
  torch::Tensor t1, t2;
  std::thread th1([&] { t1 = steps(s1); }), th2([&] { t2 = steps(s2); });
  th1.join();
  th2.join();
  EXPECT_TRUE(torch::equal(a1, t1));
  EXPECT_TRUE(torch::equal(a2, t2));
}

}  // namespace
