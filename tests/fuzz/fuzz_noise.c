/* evograd_noise_values: any (seed, k, first, n); values agree however the
 * read is split, sign noise is +-1, gauss noise finite and within the
 * Box-Muller bound. */
#include "check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_reader r = {data, size};
  evograd_noise noise = fz_noise(&r);
  const int64_t k = (int64_t)fz_u64(&r) >> (fz_u8(&r) % 64);
  const int64_t first = (int64_t)((fz_u64(&r) >> (fz_u8(&r) % 64)) - 8u);
  const int64_t n = fz_u8(&r) % 64;
  const int64_t cut = n ? fz_u8(&r) % n : 0;
  double whole[64], parts[64];
  const evograd_status st = evograd_noise_values(&noise, k, first, n, whole);
  if (st != EVOGRAD_OK) return 0;
  FZ_REQUIRE(k >= 0 && k <= (int64_t)UINT32_MAX && first >= 0);
  FZ_REQUIRE(evograd_noise_values(&noise, k, first, cut, parts) == EVOGRAD_OK);
  FZ_REQUIRE(evograd_noise_values(&noise, k, first + cut, n - cut, parts + cut) == EVOGRAD_OK);
  for (int64_t i = 0; i < n; ++i) {
    FZ_REQUIRE(whole[i] == parts[i]);
    if (noise.kind == EVOGRAD_NOISE_SIGN)
      FZ_REQUIRE(whole[i] == 1.0 || whole[i] == -1.0);
    else
      FZ_REQUIRE(isfinite(whole[i]) && fabs(whole[i]) < 6.7);
  }
  return 0;
}
