/*
 * Runs one C kernel of libevograd_kernels on one list of n elements, split
 * over T threads the way the operator layer splits it (block-aligned ranges),
 * next to a copy of the same bytes on the same threads. Built and run by
 * examples/kernels/table.py, which also runs it under callgrind ("once").
 *
 *   kernel_driver time|once KERNEL DTYPE NOISE K LOG2N THREADS
 *     KERNEL perturb|combine|project, DTYPE f32|f64|f16|bf16, NOISE sign|gauss
 *   time: prints "kernel_s copy_s" (medians over runs of at least 0.2 s)
 *   once: one call on one thread, for counting instructions
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evograd/evograd.h"

typedef struct job {
  const char *kernel;
  evograd_dtype dtype;
  evograd_noise noise;
  int64_t population, n, begin, end;
  const void *src;
  void *dst;
  size_t elem;
  double weights[64];
  double *sums;
  int copy;
} job;

static evograd_status run(job *j) {
  evograd_span span = {j->src, j->dst, j->n};
  evograd_range r = {j->begin, j->end};
  if (j->copy) {
    memcpy((char *)j->dst + j->begin * j->elem, (const char *)j->src + j->begin * j->elem,
           (size_t)(j->end - j->begin) * j->elem);
    return EVOGRAD_OK;
  }
  if (!strcmp(j->kernel, "perturb")) return evograd_perturb(j->dtype, &span, 1, &j->noise, 1, r);
  if (!strcmp(j->kernel, "combine"))
    return evograd_combine(j->dtype, &span, 1, &j->noise, j->weights, j->population, r);
  return evograd_project_blocks(j->dtype, &span, 1, &j->noise, j->population, r, j->sums);
}

static void *thread_main(void *arg) { return (void *)(size_t)run((job *)arg); }

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Seconds for one pass of all threads. */
static double pass(job *jobs, int threads) {
  pthread_t tid[64];
  double t0 = now();
  int i;
  for (i = 0; i < threads; ++i) pthread_create(&tid[i], NULL, thread_main, &jobs[i]);
  for (i = 0; i < threads; ++i) {
    void *rc;
    pthread_join(tid[i], &rc);
    if (rc) {
      fprintf(stderr, "kernel failed: %s\n", evograd_status_string((evograd_status)(size_t)rc));
      exit(1);
    }
  }
  return now() - t0;
}

static int cmp(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median_time(job *jobs, int threads) {
  double t[64], spent = 0.0;
  int runs = 0;
  pass(jobs, threads); /* warm: pages touched, caches and frequency settled */
  while (runs < 64 && (runs < 5 || spent < 0.2)) {
    t[runs] = pass(jobs, threads);
    spent += t[runs++];
  }
  qsort(t, (size_t)runs, sizeof(double), cmp);
  return t[runs / 2];
}

int main(int argc, char **argv) {
  job jobs[64];
  int threads, i;
  int64_t n, k, per;
  size_t elem;
  char *src, *dst;
  double *sums;
  evograd_dtype dtype;
  if (argc != 8) {
    fprintf(stderr, "usage: %s time|once perturb|combine|project f32|f64|f16|bf16 sign|gauss K LOG2N THREADS\n",
            argv[0]);
    return 2;
  }
  dtype = !strcmp(argv[3], "f64")    ? EVOGRAD_FLOAT64
          : !strcmp(argv[3], "f16")  ? EVOGRAD_FLOAT16
          : !strcmp(argv[3], "bf16") ? EVOGRAD_BFLOAT16
                                     : EVOGRAD_FLOAT32;
  elem = dtype == EVOGRAD_FLOAT64 ? 8 : dtype == EVOGRAD_FLOAT32 ? 4 : 2;
  k = atoll(argv[5]);
  n = (int64_t)1 << atoi(argv[6]);
  threads = atoi(argv[7]);
  if (k < 1 || k > 64 || threads < 1 || threads > 64) return 2;
  src = malloc((size_t)n * elem);
  dst = malloc((size_t)n * elem);
  sums = calloc((size_t)(n / EVOGRAD_PROJECT_BLOCK + threads) * (size_t)k, sizeof(double));
  /* Small finite values in every format: 16-bit patterns of numbers in
   * (-2, 2), float32/float64 from a simple generator. */
  for (i = 0; i < n; ++i) {
    const uint32_t h = (uint32_t)i * 2654435761u;
    const double v = ((double)(h >> 8) / 16777216.0 - 0.5) * 3.0;
    if (elem == 8) ((double *)src)[i] = v;
    else if (elem == 4) ((float *)src)[i] = (float)v;
    else ((uint16_t *)src)[i] = (uint16_t)((dtype == EVOGRAD_FLOAT16 ? 0x3800u : 0x3f00u) ^ (h >> 22));
  }
  memset(dst, 0, (size_t)n * elem);
  per = (n / threads + EVOGRAD_PROJECT_BLOCK - 1) / EVOGRAD_PROJECT_BLOCK * EVOGRAD_PROJECT_BLOCK;
  for (i = 0; i < threads; ++i) {
    job *j = &jobs[i];
    int64_t w;
    memset(j, 0, sizeof *j);
    j->kernel = argv[2];
    j->dtype = dtype;
    j->noise.seed = 12345;
    j->noise.sigma = 1e-3;
    j->noise.kind = !strcmp(argv[4], "gauss") ? EVOGRAD_NOISE_GAUSS : EVOGRAD_NOISE_SIGN;
    j->population = k;
    for (w = 0; w < k; ++w) j->weights[w] = 1.0 / (double)(w + 2);
    j->n = n;
    j->begin = i * per < n ? i * per : n;
    j->end = (i + 1) * per < n ? (i + 1) * per : n;
    j->src = src;
    j->dst = dst;
    j->elem = elem;
    j->sums = sums + (j->begin / EVOGRAD_PROJECT_BLOCK) * k;
  }
  if (!strcmp(argv[1], "once")) {
    jobs[0].begin = 0;
    jobs[0].end = n;
    jobs[0].sums = sums;
    return run(&jobs[0]) != EVOGRAD_OK;
  } else {
    const double t_kernel = median_time(jobs, threads);
    double t_copy;
    for (i = 0; i < threads; ++i) jobs[i].copy = 1;
    t_copy = median_time(jobs, threads);
    printf("%.9g %.9g\n", t_kernel, t_copy);
  }
  free(src);
  free(dst);
  free(sums);
  return 0;
}
