// The paper's 1-D problem from C++: EvoGrad hypergradients of
//   f_V(x) = (x - 0.5)^2,  f_T(x) = (x - 1)^2 + lam * x^2
// against the true (lam - 1) / (lam + 1)^3, using only the C++ API.
//
//   build/evograd_1d [--population K] [--repetitions R] [--sigma S] [--temperature T]
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "evograd/evograd.hpp"

namespace {

void usage() {
  std::puts(
      "usage: evograd_1d [--population K=100] [--repetitions R=100] [--sigma S=1.0]\n"
      "                  [--temperature T=0.5] [--seed N=0]\n"
      "Mean EvoGrad hypergradient over R random starts x ~ N(0,1) at lambda = 0.2..2.0,\n"
      "next to the true hypergradient (lambda-1)/(lambda+1)^3 (EvoGrad paper, section 4.1).");
}

}  // namespace

int main(int argc, char** argv) {
  evograd::Options opt;
  opt.population = 100;
  opt.sigma = 1.0;
  opt.temperature = 0.5;
  opt.noise = "gauss";
  int64_t repetitions = 100, seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else if (a == "--population" && has_value) {
      opt.population = std::stoll(argv[++i]);
    } else if (a == "--repetitions" && has_value) {
      repetitions = std::stoll(argv[++i]);
    } else if (a == "--sigma" && has_value) {
      opt.sigma = std::stod(argv[++i]);
    } else if (a == "--temperature" && has_value) {
      opt.temperature = std::stod(argv[++i]);
    } else if (a == "--seed" && has_value) {
      seed = std::stoll(argv[++i]);
    } else {
      usage();
      return 2;
    }
  }
  torch::manual_seed(seed);
  std::printf("K=%lld sigma=%g tau=%g, %lld random x per lambda\n", (long long)opt.population,
              opt.sigma, opt.temperature, (long long)repetitions);
  std::printf("%8s %12s %12s %12s\n", "lambda", "EvoGrad", "std", "true");
  try {
    for (int j = 2; j <= 20; j += 2) {
      const double lam_value = 0.1 * j;
      auto x = torch::zeros({1}, torch::kFloat64).requires_grad_(true);
      auto lam = torch::full({1}, lam_value, torch::kFloat64).requires_grad_(true);
      opt.seed = seed * 1000003 + j * repetitions;
      evograd::EvoGrad meta({x}, {lam}, opt);
      std::vector<double> est;
      for (int64_t r = 0; r < repetitions; ++r) {
        {
          torch::NoGradGuard no_grad;
          x.normal_();
        }
        meta.step([&] { return ((x - 1).pow(2) + lam * x.pow(2)).sum(); },
                  [&] { return (x - 0.5).pow(2).sum(); });
        est.push_back(lam.grad().item<double>());
        lam.mutable_grad() = torch::Tensor();
      }
      double mean = 0, var = 0;
      for (double e : est) mean += e;
      mean /= est.size();
      for (double e : est) var += (e - mean) * (e - mean);
      const double sd = std::sqrt(var / (est.size() - 1));
      std::printf("%8.2f %12.5f %12.5f %12.5f\n", lam_value, mean, sd,
                  (lam_value - 1) / std::pow(lam_value + 1, 3));
    }
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "evograd error: %s\n", e.what_without_backtrace());
    return 1;
  }
  return 0;
}
