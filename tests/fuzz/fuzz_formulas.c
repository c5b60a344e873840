/* evograd_weights and evograd_loss_cotangent: a status, or weights that are
 * a probability vector and cotangents that sum to zero. */
#include "check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_reader r = {data, size};
  const int64_t K = (int64_t)(fz_u8(&r) % 10) - 1;
  double l[8], c[8], w[8], cot[8];
  for (int i = 0; i < 8; ++i) l[i] = fz_value(&r);
  for (int i = 0; i < 8; ++i) c[i] = fz_value(&r);
  const uint8_t t = fz_u8(&r);
  const double tau = t < 128 ? 1e-3 * (1 + t) : fz_f64(&r);
  int all_finite = 1;
  for (int64_t i = 0; i < K && i < 8; ++i) all_finite = all_finite && isfinite(l[i]);

  const evograd_status st = evograd_weights(l, K, tau, w);
  if (st == EVOGRAD_OK) {
    FZ_REQUIRE(K >= 1 && all_finite && isfinite(tau) && tau > 0);
    double sum = 0;
    for (int64_t i = 0; i < K; ++i) {
      FZ_REQUIRE(w[i] >= 0.0 && w[i] <= 1.0);
      sum += w[i];
    }
    FZ_REQUIRE(fabs(sum - 1.0) < 1e-12);
  } else {
    FZ_REQUIRE(K < 1 || !all_finite || !(isfinite(tau) && tau > 0));
  }
  const evograd_status s2 = evograd_loss_cotangent(l, c, K, tau, cot);
  if (s2 == EVOGRAD_OK) {
    FZ_REQUIRE(st == EVOGRAD_OK);
    double sum = 0, scale = 0;
    for (int64_t i = 0; i < K; ++i) {
      sum += cot[i];
      scale += w[i] * fabs(c[i]) / tau;
    }
    /* sum_j w_j (c_j - cbar) / tau = 0 exactly; in floating point its error is
     * a few roundings of the terms w_j |c_j| / tau. */
    if (isfinite(scale) && isfinite(sum)) FZ_REQUIRE(fabs(sum) <= 64 * K * 1.2e-16 * scale + 1e-300);
  }
  /* Aliasing the output with an input is refused. */
  if (K >= 1) FZ_REQUIRE(evograd_loss_cotangent(l, c, K, tau, c) != EVOGRAD_OK);
  return 0;
}
