/* Which build of the segment kernels runs: chosen once per process from
 * what the CPU supports (or EVOGRAD_CPU_KERNELS), then read lock-free. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "isa.h"

static _Atomic(const evograd_cpu_kernels *) chosen;

/* The table called `name` if this CPU can run it, else NULL. */
static const evograd_cpu_kernels *runnable(const char *name) {
  if (!strcmp(name, "portable")) return &evograd_cpu_kernels_portable;
#ifdef EVOGRAD_HAVE_X86_KERNELS
  __builtin_cpu_init();
  if (!strcmp(name, "avx2") && __builtin_cpu_supports("avx2")) return &evograd_cpu_kernels_avx2;
  if (!strcmp(name, "avx512") && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return &evograd_cpu_kernels_avx512;
#endif
  return NULL;
}

static const evograd_cpu_kernels *widest(void) {
  const evograd_cpu_kernels *t;
  if ((t = runnable("avx512")) != NULL) return t;
  if ((t = runnable("avx2")) != NULL) return t;
  return &evograd_cpu_kernels_portable;
}

/* A build the user named but this CPU cannot run (or no build at all) is
 * not silently replaced: one line on stderr, once per process, names the
 * build that runs instead (the same bits; only the speed differs). */
static atomic_int warned;

static const evograd_cpu_kernels *automatic(void) {
  const char *forced = getenv("EVOGRAD_CPU_KERNELS");
  const evograd_cpu_kernels *t;
  if (forced && *forced && (t = runnable(forced)) != NULL) return t;
  t = widest();
  if (forced && *forced && !atomic_exchange(&warned, 1))
    fprintf(stderr,
            "evograd: EVOGRAD_CPU_KERNELS=%s names CPU kernels this machine cannot run "
            "(the builds are portable, avx2, avx512); running the %s kernels\n",
            forced, t->name);
  return t;
}

const evograd_cpu_kernels *eg_cpu_kernels(void) {
  const evograd_cpu_kernels *t = atomic_load_explicit(&chosen, memory_order_acquire);
  if (t == NULL) {
    t = automatic(); /* racing threads compute the same table */
    atomic_store_explicit(&chosen, t, memory_order_release);
  }
  return t;
}

evograd_status eg_cpu_kernels_use(const char *name) {
  const evograd_cpu_kernels *t = name ? runnable(name) : automatic();
  if (t == NULL) return EVOGRAD_ERR_NO_DEVICE;
  atomic_store_explicit(&chosen, t, memory_order_release);
  return EVOGRAD_OK;
}

const char *evograd_cpu_kernels_name(void) { return eg_cpu_kernels()->name; }
