/* z(seed, k, i) for a run of global indices: the noise itself, for
 * inspection and tests; the kernels draw it the same way. */
#include <stdint.h>

#include "evograd/evograd.h"
#include "common/noise.h"
#include "common/validate.h"

evograd_status evograd_noise_values(const evograd_noise *noise, int64_t k,
                                    int64_t first, int64_t n, double *out) {
  evograd_status st;
  evograd_noise_stream s;
  int64_t j = 0;
  if ((st = eg_check_noise(noise)) != EVOGRAD_OK) return st;
  if (out == NULL) return EVOGRAD_ERR_NULL_POINTER;
  if (k < 0 || k > (int64_t)UINT32_MAX) return EVOGRAD_ERR_INVALID_CANDIDATE;
  if (first < 0 || n < 0) return EVOGRAD_ERR_INVALID_RANGE;
  if (n > INT64_MAX - first || first + n > INT64_MAX - noise->first) return EVOGRAD_ERR_SIZE_OVERFLOW;
  first += noise->first; /* a list index, now global */
  /* z only: sigma scales nothing here, but the antithetic sign applies. */
  s = evograd_make_stream(noise->seed, 1.0, noise->kind,
                          noise->antithetic, k);
  while (j < n) {
    const int64_t g = first + j;
    int64_t lane = g & 3;
    double z[4];
    evograd_noise_quad(&s, (uint64_t)g >> 2, z);
    for (; lane < 4 && j < n; ++lane, ++j) out[j] = s.scale * z[lane];
  }
  return EVOGRAD_OK;
}
