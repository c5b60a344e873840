/* Argument checks shared by the C entry points. Each returns EVOGRAD_OK or
 * the first problem found; none writes anything the caller owns. */
#ifndef EVOGRAD_COMMON_VALIDATE_H
#define EVOGRAD_COMMON_VALIDATE_H

#include "evograd/evograd.h"

size_t eg_dtype_size(evograd_dtype dtype); /* 0 when unknown */

/* Spans readable (and writable when need_dst), sizes in range, outputs not
 * overlapping each other or other spans' inputs. *total gets the element count. */
evograd_status eg_check_spans(evograd_dtype dtype, const evograd_span *spans,
                                   size_t n_spans, int need_dst, int64_t *total);
evograd_status eg_check_noise(const evograd_noise *noise);
evograd_status eg_check_population(int64_t population, int antithetic);
/* Resolves {0, -1} to the whole list; block_aligned for project. */
evograd_status eg_check_range(evograd_range range, int64_t total,
                                   int block_aligned, int64_t *begin,
                                   int64_t *end);
evograd_status eg_check_finite(const double *values, int64_t n,
                                    evograd_status if_not);

/* Everything but the range, per entry point, for the CPU and CUDA twins. */
evograd_status eg_check_perturb(evograd_dtype dtype, const evograd_span *spans, size_t n_spans,
                                const evograd_noise *noise, int64_t k, int64_t *total);
evograd_status eg_check_combine(evograd_dtype dtype, const evograd_span *spans, size_t n_spans,
                                const evograd_noise *noise, const double *weights,
                                int64_t population, int64_t *total);
evograd_status eg_check_project(evograd_dtype dtype, const evograd_span *spans, size_t n_spans,
                                const evograd_noise *noise, int64_t population, int64_t *total);

#endif
