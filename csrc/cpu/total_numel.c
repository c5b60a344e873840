/* The element count of a span list, with overflow checking. */
#include <stdint.h>

#include "evograd/evograd.h"

evograd_status evograd_total_numel(const evograd_span *spans, size_t n_spans,
                                   int64_t *total) {
  int64_t sum = 0;
  size_t i;
  if (total == NULL || (n_spans > 0 && spans == NULL)) return EVOGRAD_ERR_NULL_POINTER;
  for (i = 0; i < n_spans; ++i) {
    if (spans[i].numel < 0) return EVOGRAD_ERR_INVALID_COUNT;
    if (spans[i].numel > INT64_MAX - sum) return EVOGRAD_ERR_SIZE_OVERFLOW;
    sum += spans[i].numel;
  }
  *total = sum;
  return EVOGRAD_OK;
}
