/*
 * EVOGRAD_HD marks a function that C, C++ and CUDA device code all compile:
 * the noise and the 16-bit float codec are one source for CPU and GPU, which
 * is what makes their results the same bits.
 */
#ifndef EVOGRAD_PORTABLE_H
#define EVOGRAD_PORTABLE_H

#if defined(__CUDACC__)
#define EVOGRAD_HD __host__ __device__ __forceinline__
#else
#define EVOGRAD_HD static inline
#endif

#endif /* EVOGRAD_PORTABLE_H */
