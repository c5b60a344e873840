/* The two K-sized formulas: softmax(-l / tau) and the loss cotangent
 * dL/dl_j = -(w_j / tau) (c_j - sum_k w_k c_k). */
#include <math.h>
#include <stdint.h>

#include "evograd/evograd.h"
#include "common/validate.h"

static evograd_status check_common(const double *losses, int64_t population,
                                   double temperature, const double *out) {
  evograd_status st;
  if (losses == NULL || out == NULL) return EVOGRAD_ERR_NULL_POINTER;
  if (population < 1 || population > (int64_t)UINT32_MAX) return EVOGRAD_ERR_INVALID_POPULATION;
  if (!(isfinite(temperature) && temperature > 0.0)) return EVOGRAD_ERR_INVALID_TEMPERATURE;
  if ((st = eg_check_finite(losses, population, EVOGRAD_ERR_NONFINITE_LOSS)) != EVOGRAD_OK)
    return st;
  return EVOGRAD_OK;
}

static int overlaps(const double *a, const double *b, int64_t n) {
  return (uintptr_t)a < (uintptr_t)(b + n) && (uintptr_t)b < (uintptr_t)(a + n);
}

/* Shifting by the smallest loss makes the largest exponent exp(0) = 1, so the
 * sum is >= 1 and no weight is NaN however far apart the losses are. */
static void softmax_neg(const double *losses, int64_t n, double tau, double *w) {
  double lo = losses[0], sum = 0.0;
  int64_t i;
  for (i = 1; i < n; ++i)
    if (losses[i] < lo) lo = losses[i];
  for (i = 0; i < n; ++i) {
    w[i] = exp(-(losses[i] - lo) / tau);
    sum += w[i];
  }
  for (i = 0; i < n; ++i) w[i] /= sum;
}

evograd_status evograd_weights(const double *losses, int64_t population,
                               double temperature, double *weights) {
  evograd_status st = check_common(losses, population, temperature, weights);
  if (st != EVOGRAD_OK) return st;
  softmax_neg(losses, population, temperature, weights);
  return EVOGRAD_OK;
}

evograd_status evograd_loss_cotangent(const double *losses, const double *projections,
                                      int64_t population, double temperature,
                                      double *out) {
  double mean = 0.0;
  int64_t i;
  evograd_status st = check_common(losses, population, temperature, out);
  if (st != EVOGRAD_OK) return st;
  if ((st = eg_check_finite(projections, population, EVOGRAD_ERR_NONFINITE_VALUE)) !=
      EVOGRAD_OK)
    return st;
  if (overlaps(out, projections, population) || overlaps(out, losses, population))
    return EVOGRAD_ERR_OVERLAP;
  softmax_neg(losses, population, temperature, out);
  for (i = 0; i < population; ++i) mean += out[i] * projections[i];
  for (i = 0; i < population; ++i) out[i] = -(out[i] / temperature) * (projections[i] - mean);
  return EVOGRAD_OK;
}
