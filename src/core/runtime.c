// Threads, CPU detection and the kernel dispatch table.
//
// The table starts with the portable reference kernels and is overridden by the widest ISA the
// CPU supports (AVX-512F/BW/DQ/VL, else AVX2+FMA), so a pointer is always valid. LA_FORCE_REF=1
// or la_set_use_ref(true) keeps the references. LA_ISA=avx2|portable caps the ISA (testing).
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static la_kernels g_ref = { la_gemm_ref, "portable" };
static la_kernels g_avx2 = { la_gemm_avx2, "avx2" };
static la_kernels g_avx512 = { la_gemm_avx512, "avx512" };

static const la_kernels * g_active;
static bool g_force_ref;  // read and written with __atomic builtins

static bool cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    return false;
#endif
}

static bool cpu_has_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

static const la_kernels * select_kernels(void) {
    const char * env = getenv("LA_FORCE_REF");
    if (__atomic_load_n(&g_force_ref, __ATOMIC_ACQUIRE) || (env && env[0] && strcmp(env, "0") != 0))
        return &g_ref;
    const char * cap = getenv("LA_ISA");
    bool allow512 = !cap || strcmp(cap, "avx512") == 0;
    bool allow2 = !cap || strcmp(cap, "avx512") == 0 || strcmp(cap, "avx2") == 0;
    if (allow512 && cpu_has_avx512()) return &g_avx512;
    if (allow2 && cpu_has_avx2()) return &g_avx2;
    return &g_ref;
}

const la_kernels * la_kern(void) {
    // Selection is idempotent, so a benign race on first use only repeats the same answer.
    const la_kernels * k = __atomic_load_n(&g_active, __ATOMIC_ACQUIRE);
    if (!k) {
        k = select_kernels();
        __atomic_store_n(&g_active, k, __ATOMIC_RELEASE);
    }
    return k;
}

void la_set_use_ref(bool use_ref) {
    __atomic_store_n(&g_force_ref, use_ref, __ATOMIC_RELEASE);
    __atomic_store_n(&g_active, select_kernels(), __ATOMIC_RELEASE);
}

const char * la_cpu_isa(void) { return la_kern()->isa; }

void la_set_num_threads(int32_t n) {
#ifdef _OPENMP
    omp_set_num_threads(n > 0 ? n : omp_get_num_procs());
#else
    (void)n;
#endif
}

int32_t la_get_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int32_t la_nthreads(void) { return la_get_num_threads(); }

void la_run_tasks(int64_t ntask, void * ws, size_t per, la_task_fn fn, const void * ctx) {
#pragma omp parallel for schedule(static) num_threads(la_slots(ntask))
    for (int64_t task = 0; task < ntask; task++) {
        const int tid = la_thread_index();
        fn(ctx, task, (char *)ws + (size_t)tid * per);
    }
}
