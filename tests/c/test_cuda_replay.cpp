// The CUDA kernels' per-thread code, replayed on the host (cuda_replay.h),
// against the CPU kernels: perturb and combine bit for bit for every layout
// (vector and element paths, quads straddling spans, zero-size spans, tails),
// project against a float64 sum of the regenerated noise. Runs wherever nvcc
// is, also under ASan + UBSan, which check the vector accesses' bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cuda_replay.h"
#include "storage_formats.h"

namespace {


// A list of spans, either back to back in one buffer per side (like views
// of one flat tensor: starts at any alignment) or each in its own allocation
// (so that ASan sees any access past a span's end). Guard zones surround the
// buffers; `shift` moves dst off 16-byte alignment.
template <typename F>
struct Layout {
  using T = typename F::S;
  static constexpr int kGuard = 8;
  std::vector<std::vector<T>> src, dst, ref;  // one buffer, or one per span
  std::vector<evograd_span> spans, ref_spans;
  int64_t total = 0;

  Layout(const std::vector<int64_t>& sizes, int shift, bool separate) {
    for (auto s : sizes) total += s;
    const size_t buffers = separate ? sizes.size() : 1;
    int64_t at = 0;
    for (size_t b = 0; b < buffers; ++b) {
      const int64_t n = separate ? sizes[b] : total;
      src.emplace_back(n + 2 * kGuard, F::enc(0.0));
      for (int64_t i = 0; i < n; ++i) {
        const int64_t g = at + i;
        src.back()[kGuard + i] = F::enc(std::sin(0.37 * g) + 0.01 * (g % 13));
      }
      dst.emplace_back(n + 2 * kGuard + shift, F::enc(-7.0));
      ref.push_back(dst.back());
      at += separate ? n : 0;
    }
    at = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const size_t b = separate ? i : 0;
      const int64_t off = separate ? 0 : at;
      spans.push_back({src[b].data() + kGuard + off, dst[b].data() + kGuard + shift + off, sizes[i]});
      ref_spans.push_back({src[b].data() + kGuard + off, ref[b].data() + kGuard + shift + off,
                           sizes[i]});
      at += sizes[i];
    }
  }

  double source(int64_t g) const {  // global element g of the list
    size_t i = 0;
    while (g >= spans[i].numel) g -= spans[i++].numel;
    return F::dec(static_cast<const T*>(spans[i].src)[g]);
  }
  bool same_outputs() const {  // guards included
    for (size_t b = 0; b < dst.size(); ++b)
      if (std::memcmp(dst[b].data(), ref[b].data(), dst[b].size() * sizeof(T)) != 0) return false;
    return true;
  }
};

struct Case {
  std::string name;
  std::vector<int64_t> sizes;
  int shift;
  bool separate;
};

const std::vector<Case> kLayouts = {
    {"one_aligned_span", {70001}, 0, false},
    {"mixed_spans", {5, 0, 1031, 3, 4099, 0, 16, 2}, 0, false},
    {"dst_misaligned", {1030, 7, 5000}, 1, false},
    {"separate_allocations", {6, 10, 3, 0, 4101, 8}, 0, true},
    {"tiny", {1}, 0, false},
};

template <typename F>
void expect_perturb_matches_cpu(evograd_noise noise) {
  for (const auto& c : kLayouts) {
    SCOPED_TRACE(c.name);
    Layout<F> l(c.sizes, c.shift, c.separate);
    for (int64_t k : {0, 3}) {
      cuda_replay::perturb(F::dtype, l.spans.data(), l.spans.size(), noise, k);
      ASSERT_EQ(evograd_perturb(F::dtype, l.ref_spans.data(), l.ref_spans.size(), &noise, k,
                                {0, -1}),
                EVOGRAD_OK);
      ASSERT_TRUE(l.same_outputs());
    }
  }
}

template <typename F>
void expect_combine_matches_cpu(evograd_noise noise) {
  const std::vector<double> w = {0.125, 0.5, 0.0625, 0.3125};
  for (const auto& c : kLayouts) {
    SCOPED_TRACE(c.name);
    Layout<F> l(c.sizes, c.shift, c.separate);
    for (int64_t population : {1, 2, 4}) {
      if (noise.antithetic && population % 2) continue;
      cuda_replay::combine(F::dtype, l.spans.data(), l.spans.size(), noise, w.data(),
                           population);
      ASSERT_EQ(evograd_combine(F::dtype, l.ref_spans.data(), l.ref_spans.size(), &noise,
                                w.data(), population, {0, -1}),
                EVOGRAD_OK);
      ASSERT_TRUE(l.same_outputs());
    }
  }
}

// c_k = sum_i g_i * eps_k[i] in float64 from evograd_noise_values, with the
// bound on rounding: each product and the two summations lose at most
// ~n ulps of sum |g_i eps_k[i]| (plus float32 rounding of eps for float32).
template <typename F>
void expect_project_matches_reference(evograd_noise noise, int64_t population = 0,
                                      const std::vector<Case>& layouts = kLayouts) {
  if (population == 0) population = noise.antithetic ? 6 : 7;  // past one chunk of four
  for (const auto& c : layouts) {
    SCOPED_TRACE(c.name);
    Layout<F> l(c.sizes, c.shift, c.separate);
    std::vector<double> got(population);
    cuda_replay::project(F::dtype, l.spans.data(), l.spans.size(), noise, population,
                         got.data());
    std::vector<double> z(l.total);
    for (int64_t k = 0; k < population; ++k) {
      ASSERT_EQ(evograd_noise_values(&noise, k, 0, l.total, z.data()), EVOGRAD_OK);
      double want = 0.0, scale = 0.0;
      for (int64_t i = 0; i < l.total; ++i) {
        const double eps = F::noise(noise.sigma * z[i]);
        want += l.source(i) * eps;
        scale += std::fabs(l.source(i) * eps);
      }
      EXPECT_NEAR(got[k], want, 4.0 * l.total * 1.2e-16 * scale + 1e-300) << "k=" << k;
    }
  }
}

TEST(CudaReplay, PerturbEqualsCpuBitForBit) {
  for_each_noise_and_format(77, 0.03, [](const evograd_noise& noise, auto format) {
    expect_perturb_matches_cpu<decltype(format)>(noise);
  });
}

TEST(CudaReplay, CombineEqualsCpuBitForBit) {
  for_each_noise_and_format(5, 0.2, [](const evograd_noise& noise, auto format) {
    expect_combine_matches_cpu<decltype(format)>(noise);
  });
}

TEST(CudaReplay, ProjectEqualsFloat64Reference) {
  for_each_noise_and_format(11, 0.5, [](const evograd_noise& noise, auto format) {
    expect_project_matches_reference<decltype(format)>(noise);
  });
}

TEST(CudaReplay, ProjectOverManyCandidateChunks) {
  const evograd_noise noise{8, 0.1, EVOGRAD_NOISE_SIGN, 1};
  expect_project_matches_reference<F32>(noise, 70, {kLayouts[1]});
  expect_project_matches_reference<BF16>(noise, 70, {kLayouts[1]});
}

// A shard of a longer list (noise.first > 0), aligned to a quad or not: the
// thread code takes its lanes from one or two noise quads, as the CPU does.
TEST(CudaReplay, ShardsAtAnyOffsetEqualCpu) {
  for (int64_t first : {1, 2, 3, 4, 517}) {
    SCOPED_TRACE("first " + std::to_string(first));
    for_each_noise_and_format(31, 0.1, [first](evograd_noise noise, auto format) {
      noise.first = first;
      expect_perturb_matches_cpu<decltype(format)>(noise);
      expect_combine_matches_cpu<decltype(format)>(noise);
      expect_project_matches_reference<decltype(format)>(noise, 0, {kLayouts[1]});
    });
  }
}

// Quads: 0..3 (span 0, aligned), 4..7 (span 1 at 0, aligned), 8..11 (spans 1
// and 2), 12..15 (span 2 at element 2: 8 bytes off), 16..17 (a tail of two).
TEST(CudaReplay, VectorPathTakesWholeAlignedQuadsOnly) {
  alignas(16) float a[4] = {}, b[8] = {}, c[8] = {};
  const evograd_span spans[] = {{a, a, 4}, {b, b, 6}, {c, c, 8}};
  EXPECT_EQ(cuda_replay::vector_quads(EVOGRAD_FLOAT32, spans, 3, true), 2);
  alignas(16) double d[12] = {};
  const evograd_span shifted[] = {{d, d + 1, 8}};  // dst off alignment, src on it
  EXPECT_EQ(cuda_replay::vector_quads(EVOGRAD_FLOAT64, shifted, 1, true), 0);
  EXPECT_EQ(cuda_replay::vector_quads(EVOGRAD_FLOAT64, shifted, 1, false), 2);
  Layout<F32> big({70001}, 0, false);
  EXPECT_EQ(cuda_replay::vector_quads(EVOGRAD_FLOAT32, big.spans.data(), 1, true), 70000 / 4);
  alignas(16) uint16_t h[12] = {};  // 16-bit: four elements need 8-byte alignment
  const evograd_span half_spans[] = {{h, h, 4}, {h + 6, h + 6, 4}};  // 2nd at 12 bytes
  EXPECT_EQ(cuda_replay::vector_quads(EVOGRAD_FLOAT16, half_spans, 2, true), 1);
  const evograd_span half_shifted[] = {{h + 4, h + 4, 8}};  // 8 bytes: aligned enough
  EXPECT_EQ(cuda_replay::vector_quads(EVOGRAD_BFLOAT16, half_shifted, 1, true), 2);
}

}  // namespace
