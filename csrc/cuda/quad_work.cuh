// What one CUDA thread does with one quad: the four global indices 4q..4q+3
// that share a Philox call. Host-and-device code, so that a machine without a
// GPU can replay a launch thread by thread (tests/c/cuda_replay.cpp), under
// the sanitizers too, and a GPU can be checked bit for bit against the replay.
//
// Arithmetic matches the CPU kernels (csrc/cpu/segment_kernels.h) exactly: noise
// rounded to float32 (float64 for float64 lists); float32 and float64 sums in
// their own type (the correctly rounded sum, as the CPU's double-then-round
// gives); float16 and bfloat16 through double and rounded once when stored,
// by the same codec as the CPU; combine accumulating in double in candidate
// order. Project's sums follow the launch's own fixed order (per thread,
// then a tree per block).
#ifndef EVOGRAD_CUDA_QUAD_WORK_CUH
#define EVOGRAD_CUDA_QUAD_WORK_CUH

#include <cuda_runtime.h>  // float4, double2 (also on the host)
#include <stdint.h>

#include "evograd/evograd.h"
#include "common/float_codec.h"
#include "common/noise.h"

namespace evograd_cuda {

// One tensor of the list, with the global index of its element 0.
struct DeviceSpan {
  const void* src;
  void* dst;
  int64_t start;
  int64_t numel;
};

// Threads per block. Project's reduction tree, hence its bits, depends on it.
constexpr int kBlockThreads = 256;

// Candidates whose project sums one thread carries at once: the gradient is
// read once per chunk rather than once per candidate.
constexpr int kProjectChunk = 4;

// The span holding global index g: the last one starting at or before g,
// stepping over zero-size spans that share its start.
EVOGRAD_HD int find_span(const DeviceSpan* spans, int n, int64_t g) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (spans[mid].start <= g) lo = mid; else hi = mid - 1;
  }
  while (spans[lo].numel == 0 || g >= spans[lo].start + spans[lo].numel) ++lo;
  return lo;
}

// 16-bit storage: the bit pattern, converted by float_codec.h.
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

// What each storage type needs: the precision of its noise, widening to
// double, rounding back once, and the sum of an element and its noise.
template <typename S> struct Elem;
template <> struct Elem<float> {
  using Noise = float;
  static EVOGRAD_HD double wide(float v) { return v; }
  static EVOGRAD_HD float narrow(double v) { return (float)v; }
  static EVOGRAD_HD float add(float v, float eps) { return v + eps; }
};
template <> struct Elem<double> {
  using Noise = double;
  static EVOGRAD_HD double wide(double v) { return v; }
  static EVOGRAD_HD double narrow(double v) { return v; }
  static EVOGRAD_HD double add(double v, double eps) { return v + eps; }
};
template <int MBITS, int EBITS, typename S>
struct Elem16 {
  using Noise = float;
  static EVOGRAD_HD double wide(S v) { return evograd_decode_float(v.bits, MBITS, EBITS); }
  static EVOGRAD_HD S narrow(double v) { return S{(uint16_t)evograd_encode_float(v, MBITS, EBITS)}; }
  static EVOGRAD_HD S add(S v, float eps) { return narrow(wide(v) + (double)eps); }
};
template <> struct Elem<Half> : Elem16<10, 5, Half> {};
template <> struct Elem<BFloat16> : Elem16<7, 8, BFloat16> {};

// Four elements in one access: 8 bytes (16-bit types), 16 (float4), or two
// 16-byte halves (double2). It needs that many bytes of alignment, up to 16.
template <typename S>
EVOGRAD_HD constexpr uintptr_t vector_alignment() {
  return 4 * sizeof(S) < 16 ? 4 * sizeof(S) : 16;
}

template <typename S>
EVOGRAD_HD bool vector_aligned(const S* p) {
  return (reinterpret_cast<uintptr_t>(p) & (vector_alignment<S>() - 1)) == 0;
}

EVOGRAD_HD void load4(const float* p, float v[4]) {
  const float4 x = *reinterpret_cast<const float4*>(p);
  v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
}
EVOGRAD_HD void store4(float* p, const float v[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
EVOGRAD_HD void load4(const double* p, double v[4]) {
  const double2 a = reinterpret_cast<const double2*>(p)[0];
  const double2 b = reinterpret_cast<const double2*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
}
EVOGRAD_HD void store4(double* p, const double v[4]) {
  reinterpret_cast<double2*>(p)[0] = make_double2(v[0], v[1]);
  reinterpret_cast<double2*>(p)[1] = make_double2(v[2], v[3]);
}
template <typename S>  // Half, BFloat16: four 16-bit patterns in one uint2
EVOGRAD_HD void load4(const S* p, S v[4]) {
  const uint2 x = *reinterpret_cast<const uint2*>(p);
  v[0].bits = (uint16_t)x.x; v[1].bits = (uint16_t)(x.x >> 16);
  v[2].bits = (uint16_t)x.y; v[3].bits = (uint16_t)(x.y >> 16);
}
template <typename S>
EVOGRAD_HD void store4(S* p, const S v[4]) {
  *reinterpret_cast<uint2*>(p) = make_uint2(v[0].bits | ((uint32_t)v[1].bits << 16),
                                            v[2].bits | ((uint32_t)v[3].bits << 16));
}

// Where a quad's elements live. `vector`: all four in one span, at aligned
// addresses (in dst too, when the op writes), so one wide access serves
// them; otherwise element by element, across span boundaries.
struct QuadPlace {
  int64_t first;  // global index 4q
  int count;      // 4, or fewer at the end of the list
  int span;       // span of the first element
  bool vector;
};

template <typename T>
EVOGRAD_HD QuadPlace place_quad(const DeviceSpan* spans, int n_spans, int64_t total,
                                     uint64_t q, bool writes) {
  QuadPlace p;
  p.first = 4 * (int64_t)q;
  p.count = total - p.first < 4 ? (int)(total - p.first) : 4;
  p.span = find_span(spans, n_spans, p.first);
  const DeviceSpan& s = spans[p.span];
  const int64_t i = p.first - s.start;
  p.vector = p.count == 4 && i + 4 <= s.numel &&
             vector_aligned(static_cast<const T*>(s.src) + i) &&
             (!writes || vector_aligned(static_cast<const T*>(s.dst) + i));
  return p;
}

template <typename T>
EVOGRAD_HD void gather(const DeviceSpan* spans, const QuadPlace& p, T v[4]) {
  int sp = p.span;
  if (p.vector) {
    load4(static_cast<const T*>(spans[sp].src) + (p.first - spans[sp].start), v);
    return;
  }
  for (int l = 0; l < 4; ++l) {  // fixed bound: v stays in registers
    if (l >= p.count) break;
    const int64_t g = p.first + l;
    while (g >= spans[sp].start + spans[sp].numel) ++sp;
    v[l] = static_cast<const T*>(spans[sp].src)[g - spans[sp].start];
  }
}

template <typename T>
EVOGRAD_HD void scatter(const DeviceSpan* spans, const QuadPlace& p, const T v[4]) {
  int sp = p.span;
  if (p.vector) {
    store4(static_cast<T*>(spans[sp].dst) + (p.first - spans[sp].start), v);
    return;
  }
  for (int l = 0; l < 4; ++l) {  // fixed bound: v stays in registers
    if (l >= p.count) break;
    const int64_t g = p.first + l;
    while (g >= spans[sp].start + spans[sp].numel) ++sp;
    static_cast<T*>(spans[sp].dst)[g - spans[sp].start] = v[l];
  }
}

// A candidate's noise for a quad of the list, rounded as the CPU rounds it
// (to float32, or float64 for float64 lists). Sign noise is +-(N)scale
// exactly: no multiply and no conversion per element. List index i is
// global index first + i: a list quad is noise quad base + q when first is a
// multiple of 4, else it takes the last lanes of that quad and the first of
// the next.
template <typename T>
struct QuadNoise {
  using N = typename Elem<T>::Noise;
  evograd_noise_stream s;
  N step;         // (N)scale, the sign-noise magnitude
  double step_d;  // the same, widened once
  uint64_t base;  // first / 4
  int shift;      // first % 4

  EVOGRAD_HD QuadNoise(const evograd_noise_stream& stream, int64_t first)
      : s(stream), step((N)stream.scale), step_d((double)(N)stream.scale),
        base((uint64_t)first >> 2), shift((int)(first & 3)) {}

  // Noise quad g's four sign bits, in bits 0..3. A warp's 32 quads are the
  // 128 signs of one Philox call: its lanes compute the same words, one
  // call's instructions per 128 elements.
  EVOGRAD_HD uint32_t noise_quad_bits(uint64_t g) const {
    return (evograd_sign_word(&s, g >> 3) >> (4 * (g & 7))) & 0xFu;
  }

  // List quad q's four sign bits, in bits 0..3.
  EVOGRAD_HD uint32_t sign_bits(uint64_t q) const {
    const uint32_t lo = noise_quad_bits(base + q);
    if (!shift) return lo;
    return ((lo | (noise_quad_bits(base + q + 1) << 4)) >> shift) & 0xFu;
  }

  EVOGRAD_HD void values(uint64_t q, N eps[4]) const {
    if (s.kind == EVOGRAD_NOISE_SIGN) {
      const uint32_t bits = sign_bits(q);
      for (int l = 0; l < 4; ++l) eps[l] = ((bits >> l) & 1u) ? -step : step;
    } else {
      double z[8];
      evograd_noise_quad(&s, base + q, z);
      if (shift) evograd_noise_quad(&s, base + q + 1, z + 4);
      for (int l = 0; l < 4; ++l) eps[l] = (N)(s.scale * z[shift + l]);
    }
  }

  // out[l] = f[l] * (double)eps[l], bit for bit (f * -x is -(f * x)).
  EVOGRAD_HD void scaled(uint64_t q, const double f[4], double out[4]) const {
    if (s.kind == EVOGRAD_NOISE_SIGN) {
      const uint32_t bits = sign_bits(q);
      for (int l = 0; l < 4; ++l) {
        const double m = f[l] * step_d;
        out[l] = ((bits >> l) & 1u) ? -m : m;
      }
    } else {
      N eps[4];
      values(q, eps);
      for (int l = 0; l < 4; ++l) out[l] = f[l] * (double)eps[l];
    }
  }
};

// dst = src + eps_k on one quad.
template <typename T>
EVOGRAD_HD void perturb_quad(const DeviceSpan* spans, int n_spans, int64_t total,
                                  const QuadNoise<T>& noise, uint64_t q) {
  const QuadPlace p = place_quad<T>(spans, n_spans, total, q, true);
  T v[4] = {};
  typename Elem<T>::Noise eps[4];
  gather(spans, p, v);
  noise.values(q, eps);
  for (int l = 0; l < 4; ++l) v[l] = Elem<T>::add(v[l], eps[l]);
  scatter(spans, p, v);
}

// dst = src + sum_k w_k eps_k on one quad, the sum in double in k order.
template <typename T>
EVOGRAD_HD void combine_quad(const DeviceSpan* spans, int n_spans, int64_t total,
                                  const double* weights, int64_t population, uint64_t seed,
                                  double sigma, evograd_noise_kind kind, int antithetic,
                                  int64_t first, uint64_t q) {
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t k = 0; k < population; ++k) {
    const QuadNoise<T> noise(evograd_make_stream(seed, sigma, kind, antithetic, k), first);
    const double w[4] = {weights[k], weights[k], weights[k], weights[k]};
    double term[4];
    noise.scaled(q, w, term);
    for (int l = 0; l < 4; ++l) acc[l] += term[l];
  }
  const QuadPlace p = place_quad<T>(spans, n_spans, total, q, true);
  T v[4] = {};
  gather(spans, p, v);
  for (int l = 0; l < 4; ++l) v[l] = Elem<T>::narrow(Elem<T>::wide(v[l]) + acc[l]);
  scatter(spans, p, v);
}

// Adds <g, eps_k> over one quad (its elements below `end`) to sums[c] for
// the candidates k0 .. k0+kn-1, products in double, in element order.
template <typename T>
EVOGRAD_HD void project_quad(const DeviceSpan* spans, int n_spans, int64_t end,
                                  uint64_t seed, double sigma, evograd_noise_kind kind, int antithetic,
                                  int64_t first, int64_t k0, int kn, uint64_t q,
                                  double sums[kProjectChunk]) {
  const QuadPlace p = place_quad<T>(spans, n_spans, end, q, false);
  T v[4] = {};
  gather(spans, p, v);
  double g[4];
  for (int l = 0; l < 4; ++l) g[l] = l < p.count ? Elem<T>::wide(v[l]) : 0.0;
  for (int c = 0; c < kn; ++c) {
    const QuadNoise<T> noise(evograd_make_stream(seed, sigma, kind, antithetic, k0 + c), first);
    double term[4];
    noise.scaled(q, g, term);
    for (int l = 0; l < 4; ++l)
      if (l < p.count) sums[c] += term[l];
  }
}

// Calls f(T{}) with the storage type of a list's dtype.
template <typename F>
void with_storage_type(evograd_dtype dtype, F&& f) {
  switch (dtype) {
    case EVOGRAD_FLOAT32: f(float{}); break;
    case EVOGRAD_FLOAT64: f(double{}); break;
    case EVOGRAD_FLOAT16: f(Half{}); break;
    case EVOGRAD_BFLOAT16: f(BFloat16{}); break;
  }
}

}  // namespace evograd_cuda

#endif  // EVOGRAD_CUDA_QUAD_WORK_CUH
