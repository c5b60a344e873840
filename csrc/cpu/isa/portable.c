/* The segment kernels built for portable (the compiler's default target). */
#define EVOGRAD_ISA portable
#define EVOGRAD_ISA_NAME "portable"
#include "../segment_kernels.h"
