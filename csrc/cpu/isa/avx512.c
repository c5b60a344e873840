/* The segment kernels built for avx512 (flags in cmake/EvogradKernelSources.cmake). */
#define EVOGRAD_ISA avx512
#define EVOGRAD_ISA_NAME "avx512"
#include "../segment_kernels.h"
