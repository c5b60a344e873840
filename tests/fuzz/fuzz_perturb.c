/* evograd_perturb: a status or exactly dst = src + eps_k inside the range,
 * nothing written outside it, nothing at all on error; the same bytes from
 * every build of the CPU kernels. */
#include "check.h"

typedef struct {
  evograd_dtype d;
  const evograd_noise *noise;
  int64_t k;
} perturb_ctx;

static double perturb_term(int64_t g, const void *p) {
  const perturb_ctx *c = (const perturb_ctx *)p;
  return fz_noise_round(c->d, c->noise->sigma * fz_z(c->noise, c->k, g));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_reader r = {data, size};
  const evograd_dtype d = (evograd_dtype)(fz_u8(&r) % 5);
  fz_list l;
  fz_make_list(&r, d, 1, &l);
  const evograd_noise noise = fz_noise(&r);
  const int64_t k = (int64_t)(fz_u8(&r)) - 2;
  const int64_t total = l.bogus ? 0 : fz_total(&l);
  const evograd_range range = fz_range(&r, total, 0);
  fz_snapshot snap;
  fz_snap(&l, &snap);

  const evograd_status st = evograd_perturb(d, l.n ? l.spans : NULL, l.n, &noise, k, range);
  if (st != EVOGRAD_OK) {
    FZ_REQUIRE(fz_unchanged(&l, &snap));
  } else {
    FZ_REQUIRE(!l.bogus && !l.overlapping && fz_valid_dtype(d));
    const int64_t b = range.begin, e = (range.begin == 0 && range.end == -1) ? total : range.end;
    const perturb_ctx ctx = {d, &noise, k};
    fz_check_written(d, &l, &snap, b, e, perturb_term, &ctx);
    FZ_SAME_ON_EVERY_BUILD(d, &l, &snap, st, evograd_perturb(d, l.spans, l.n, &noise, k, range));
  }
  fz_snap_free(&l, &snap);
  fz_list_free(&l);
  return 0;
}
