// sgemm through CBLAS, with OpenBLAS loaded at run time.
//
// Why dlopen: OpenBLAS 0.3.21 (Debian 12) picks its kernels in a load-time constructor from
// the CPU model, and on AVX-512 CPUs it does not know it falls back to a generic kernel several
// times slower than its SKYLAKEX kernel. The choice can only be overridden
// through OPENBLAS_CORETYPE before the library is loaded, so linattn loads it itself: when the
// CPU has the AVX-512 subsets the SKYLAKEX kernels use (F, CD, BW, DQ, VL) and the user has not
// set OPENBLAS_CORETYPE, it sets SKYLAKEX first. Other CPUs keep OpenBLAS's own detection.
// Without OpenBLAS the library's own GEMM serves (same contract, fewer FLOP/s on big shapes).
#include "internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha,
                               const float * A, int lda, const float * B, int ldb, float beta,
                               float * C, int ldc);
typedef void (*set_threads_fn)(int n);

static cblas_sgemm_fn g_sgemm;
static const char * g_backend = "linattn";
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void blas_load(void) {
    if (getenv("LA_NO_BLAS")) return;
    const char * names[] = { "libopenblas.so.0", "libopenblas.so" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        // A host that already loaded OpenBLAS keeps it as it is: no environment change and no
        // change of its thread count behind its back.
        void * h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
        const bool ours = h == NULL;
        if (ours) {
#if defined(__x86_64__)
            __builtin_cpu_init();
            const bool skx = __builtin_cpu_supports("avx512f") &&
                             __builtin_cpu_supports("avx512cd") &&
                             __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512dq") &&
                             __builtin_cpu_supports("avx512vl");
            if (skx && !getenv("OPENBLAS_CORETYPE")) setenv("OPENBLAS_CORETYPE", "SKYLAKEX", 0);
#endif
            h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        }
        if (!h) continue;
        cblas_sgemm_fn f = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
        if (!f) { dlclose(h); continue; }
        // linattn threads over heads and rows itself; the OpenBLAS it loads runs in one thread.
        set_threads_fn st = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
        if (st && ours) st(1);
        g_sgemm = f;
        g_backend = "openblas";
        return;
    }
}

const char * la_blas_backend(void) {
    pthread_once(&g_once, blas_load);
    return g_backend;
}

void la_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
              const float * A, int64_t lda, const float * B, int64_t ldb, float beta,
              float * C, int64_t ldc) {
    pthread_once(&g_once, blas_load);
    if (M <= 0 || N <= 0) return;
    if (g_sgemm && M <= INT32_MAX && N <= INT32_MAX && Kd <= INT32_MAX && lda <= INT32_MAX &&
        ldb <= INT32_MAX && ldc <= INT32_MAX && Kd > 0) {
        g_sgemm(CBLAS_ROW_MAJOR, trans_a ? CBLAS_TRANS : CBLAS_NO_TRANS,
                trans_b ? CBLAS_TRANS : CBLAS_NO_TRANS, (int)M, (int)N, (int)Kd, alpha, A,
                (int)lda, B, (int)ldb, beta, C, (int)ldc);
        return;
    }
    la_kern()->gemm(trans_a, trans_b, M, N, Kd, alpha, A, lda, B, ldb, beta, C, ldc);
}
