/* evograd_project and its blocked form: a status, or the same bits from the
 * one-pass call, from blocks over a split + finish and from every build of
 * the CPU kernels; the block buffer is
 * exactly sized, so a write past it is caught. */
#include "check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_reader r = {data, size};
  const evograd_dtype d = (evograd_dtype)(fz_u8(&r) % 5);
  fz_list l;
  fz_make_list(&r, d, 0, &l);
  const evograd_noise noise = fz_noise(&r);
  const int64_t K = (int64_t)(fz_u8(&r) % 10) - 1;
  const int64_t total = l.bogus ? 0 : fz_total(&l);
  double out[8] = {0}, again[8] = {0};

  const evograd_status st = evograd_project(d, l.n ? l.spans : NULL, l.n, &noise, K, out);
  if (st == EVOGRAD_OK) {
    FZ_REQUIRE(!l.bogus && fz_valid_dtype(d) && K >= 1 && K <= 8);
    /* Lists here are shorter than one block: one block, then finish. */
    const int64_t nblocks = (total + EVOGRAD_PROJECT_BLOCK - 1) / EVOGRAD_PROJECT_BLOCK;
    double *sums = malloc(sizeof(double) * (size_t)(nblocks * K + 1));
    FZ_REQUIRE(evograd_project_blocks(d, l.spans, l.n, &noise, K, (evograd_range){0, -1}, sums) ==
               EVOGRAD_OK);
    FZ_REQUIRE(evograd_project_finish(sums, nblocks, K, again) == EVOGRAD_OK);
    for (int64_t c = 0; c < K; ++c) FZ_REQUIRE(fz_same(out[c], again[c]));
    free(sums);
    /* every build of the CPU kernels: the same bits */
    static const char *const builds[] = {"portable", "avx2", "avx512"};
    for (size_t b = 0; b < sizeof builds / sizeof builds[0]; ++b) {
      double other[8] = {0};
      if (eg_cpu_kernels_use(builds[b]) != EVOGRAD_OK) continue;
      FZ_REQUIRE(evograd_project(d, l.spans, l.n, &noise, K, other) == EVOGRAD_OK);
      for (int64_t c = 0; c < K; ++c)
        FZ_REQUIRE(fz_same(out[c], other[c]) && (isnan(out[c]) || memcmp(&out[c], &other[c], sizeof(double)) == 0));
    }
    FZ_REQUIRE(eg_cpu_kernels_use(NULL) == EVOGRAD_OK);
  } else {
    /* The blocked entry point must refuse the same arguments. */
    double sink[1];
    FZ_REQUIRE(evograd_project_blocks(d, l.n ? l.spans : NULL, l.n, &noise, K,
                                      (evograd_range){0, 0}, sink) != EVOGRAD_OK);
  }
  /* An arbitrary range on the blocked entry point: either rejected or within
   * one block, whose sums fit in K doubles. */
  if (!l.bogus && K >= 1 && K <= 8) {
    const evograd_range range = fz_range(&r, total, 1);
    double *sums = malloc(sizeof(double) * (size_t)K);
    const evograd_status s2 = evograd_project_blocks(d, l.n ? l.spans : NULL, l.n, &noise, K,
                                                     range, sums);
    (void)s2;
    free(sums);
  }
  fz_list_free(&l);
  return 0;
}
