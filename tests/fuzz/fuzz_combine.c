/* evograd_combine: a status or dst = src + sum_k w_k eps_k inside the range,
 * nothing written outside it, nothing at all on error; the same bytes from
 * every build of the CPU kernels. */
#include "check.h"

typedef struct {
  evograd_dtype d;
  const evograd_noise *noise;
  const double *w;
  int64_t K;
} combine_ctx;

/* sum_c w_c eps_c[g], in candidate order as the library sums it. */
static double combine_term(int64_t g, const void *p) {
  const combine_ctx *c = (const combine_ctx *)p;
  double acc = 0.0;
  for (int64_t k = 0; k < c->K; ++k)
    acc += c->w[k] * fz_noise_round(c->d, c->noise->sigma * fz_z(c->noise, k, g));
  return acc;
}

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
    const combine_ctx ctx = {d, &noise, w, K};
    fz_check_written(d, &l, &snap, b, e, combine_term, &ctx);
    FZ_SAME_ON_EVERY_BUILD(d, &l, &snap, st, evograd_combine(d, l.spans, l.n, &noise, w, K, range));
  }
  fz_snap_free(&l, &snap);
  fz_list_free(&l);
  return 0;
}
