/*
 * EVOGRAD_HD marks a function that C, C++ and CUDA device code all compile:
 * the noise, the 16-bit float codec and a CUDA thread's work are one source
 * for CPU and GPU, which is what makes their results the same bits (and lets
 * a host replay a launch). C needs `static inline` for a header definition;
 * C++ `inline` also serves member functions.
 */
#ifndef EVOGRAD_PORTABLE_H
#define EVOGRAD_PORTABLE_H

#if defined(__CUDACC__)
#define EVOGRAD_HD __host__ __device__ __forceinline__
#elif defined(__cplusplus)
#define EVOGRAD_HD inline
#else
#define EVOGRAD_HD static inline
#endif

#endif /* EVOGRAD_PORTABLE_H */
