/* The CPU kernels' inner loops exist in several builds of one source
 * (segment_kernels.h), one per instruction set; each is a table of three
 * segment functions. The entry points validate, walk the spans, and call
 * the table eg_cpu_kernels() picks: the widest the CPU runs, unless the
 * environment variable EVOGRAD_CPU_KERNELS names another (portable, avx2,
 * avx512). All tables give the same bits. */
#ifndef EVOGRAD_CPU_ISA_H
#define EVOGRAD_CPU_ISA_H

#include "evograd/evograd.h"
#include "common/noise.h"

/* Project's partial sums inside a block: global index g goes to lane
 * g % EVOGRAD_PROJECT_LANES; each lane sums in index order. */
#define EVOGRAD_PROJECT_LANES 32

typedef struct evograd_cpu_kernels {
  const char *name;
  /* dst[i] = src[i] + eps_s[global + i], i < n */
  void (*perturb)(evograd_dtype dtype, const void *src, void *dst, int64_t global, int64_t n,
                  const evograd_noise_stream *s);
  /* dst[i] = src[i] + sum_k weights[k] eps_k[global + i] */
  void (*combine)(evograd_dtype dtype, const void *src, void *dst, int64_t global, int64_t n,
                  const evograd_noise *noise, const double *weights, int64_t population);
  /* adds src[i] * eps_{k0+k}[global + i] to lanes[k * LANES + (global + i) % LANES], k < kn;
   * src[i] may be read up to i < readable (>= n): the caller works block by
   * block through a longer run, whose next block the kernel asks the memory
   * for while it computes; `fresh`: the run starts here, nothing asked yet */
  void (*project)(evograd_dtype dtype, const void *src, int64_t global, int64_t n, int64_t readable,
                  int fresh, const evograd_noise *noise, int64_t k0, int64_t kn, double *lanes);
} evograd_cpu_kernels;

extern const evograd_cpu_kernels evograd_cpu_kernels_portable;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EVOGRAD_HAVE_X86_KERNELS 1
extern const evograd_cpu_kernels evograd_cpu_kernels_avx2;
extern const evograd_cpu_kernels evograd_cpu_kernels_avx512;
#endif

const evograd_cpu_kernels *eg_cpu_kernels(void);
/* For tests: use the named table from now on (NULL: the automatic choice
 * again). EVOGRAD_ERR_NO_DEVICE when the name is unknown or this CPU cannot
 * run that table; nothing changes then. */
evograd_status eg_cpu_kernels_use(const char *name);

#endif
