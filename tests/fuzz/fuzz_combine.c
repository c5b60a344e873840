/* evograd_combine: a status or dst = src + sum_k w_k eps_k inside the range,
 * nothing written outside it, nothing at all on error. */
#include "check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_reader r = {data, size};
  const evograd_dtype d = (evograd_dtype)(fz_u8(&r) % 5);
  fz_list l;
  fz_make_list(&r, d, 1, &l);
  const evograd_noise noise = fz_noise(&r);
  const int64_t K = (int64_t)(fz_u8(&r) % 10) - 1;
  double w[8] = {0};
  for (int i = 0; i < 8; ++i) w[i] = fz_value(&r);
  const int null_weights = fz_u8(&r) == 7;
  const int64_t total = l.bogus ? 0 : fz_total(&l);
  const evograd_range range = fz_range(&r, total, 0);
  fz_snapshot snap;
  fz_snap(&l, &snap);

  const evograd_status st = evograd_combine(d, l.n ? l.spans : NULL, l.n, &noise,
                                            null_weights ? NULL : w, K, range);
  if (st != EVOGRAD_OK) {
    FZ_REQUIRE(fz_unchanged(&l, &snap));
  } else {
    FZ_REQUIRE(!l.bogus && !l.overlapping && fz_valid_dtype(d) && K >= 1 && K <= 8);
    const int64_t b = range.begin, e = (range.begin == 0 && range.end == -1) ? total : range.end;
    evograd_noise unit = noise;
    unit.sigma = 1.0;
    int64_t g = 0;
    for (size_t i = 0; i < l.n; ++i) {
      for (int64_t j = 0; j < l.spans[i].numel; ++j, ++g) {
        const double got = fz_load(d, l.spans[i].dst, j);
        const void *src0 = snap.copy[l.src_owned[i]]; /* src before the call */
        if (g >= b && g < e) {
          double acc = 0.0;
          for (int64_t c = 0; c < K; ++c) {
            double z;
            FZ_REQUIRE(evograd_noise_values(&unit, c, g, 1, &z) == EVOGRAD_OK);
            acc += w[c] * fz_noise_round(d, noise.sigma * z);
          }
          FZ_REQUIRE(fz_same(got, fz_stored(d, fz_load(d, src0, j) + acc)));
        } else {
          FZ_REQUIRE(fz_same(got, fz_load(d, snap.copy[l.dst_owned[i]], j)));
        }
      }
    }
  }
  fz_snap_free(&l, &snap);
  fz_list_free(&l);
  return 0;
}
