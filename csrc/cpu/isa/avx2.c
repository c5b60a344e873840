/* The segment kernels built for avx2 (flags in cmake/EvogradKernelSources.cmake). */
#define EVOGRAD_ISA avx2
#define EVOGRAD_ISA_NAME "avx2"
#include "../segment_kernels.h"
