// Small GEMM benchmark: la_gemm_avx512 / la_gemm_avx2 / la_gemm_ref on the chunkwise shapes,
// next to OpenBLAS cblas_sgemm on the same shapes and on 1024^3 (its large-matrix speed, the
// yardstick of the performance goal). Single thread; operands stay cache-resident across calls,
// as they do inside a chunk loop.
//
//   bench_gemm [reps]      reps = timed samples per configuration (median reported, default 21)
//
// Every kernel is first checked against la_gemm_ref on the shape it is timed on; a wrong kernel
// is reported and not timed. FLOPs = 2 M N Kd. Output: a table, then one CSV line per
// configuration (prefix "csv,").
//
// OpenBLAS is loaded with dlopen: 0.3.21 picks its kernel in a load-time constructor and
// misdetects AVX-512 CPUs it does not know (AMD Zen 4) as generic, so OPENBLAS_CORETYPE=SKYLAKEX
// is set first when the CPU has the subsets that kernel uses and the variable is unset.
#include "internal.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha,
                               const float * A, int lda, const float * B, int ldb, float beta,
                               float * C, int ldc);
typedef void (*set_threads_fn)(int n);
typedef char * (*corename_fn)(void);

static cblas_sgemm_fn g_cblas;

// The bench's view of every candidate: the la_gemm_fn signature.
static void cblas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t Kd, float alpha,
                       const float * restrict A, int64_t lda, const float * restrict B,
                       int64_t ldb, float beta, float * restrict C, int64_t ldc) {
    g_cblas(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
            (int)M, (int)N, (int)Kd, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

static const char * load_openblas(void) {
    static char name[96];
    bool skx = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512cd");
    if (skx && !getenv("OPENBLAS_CORETYPE")) setenv("OPENBLAS_CORETYPE", "SKYLAKEX", 0);
    void * h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h) return NULL;
    g_cblas = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
    if (!g_cblas) return NULL;
    set_threads_fn st = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
    if (st) st(1);
    corename_fn cn = (corename_fn)dlsym(h, "openblas_get_corename");
    snprintf(name, sizeof(name), "openblas(%s)", cn ? cn() : "?");
    return name;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void * a, const void * b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void cpu_model(char * out, size_t n) {
    snprintf(out, n, "unknown");
    FILE * f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char * p = strchr(line, ':');
            if (p) {
                snprintf(out, n, "%s", p + 2);
                out[strcspn(out, "\n")] = 0;
            }
            break;
        }
    }
    fclose(f);
}

typedef struct shape {
    bool         ta, tb;
    int64_t      M, N, Kd;
    const char * what;
    bool         big;  // timed for OpenBLAS and la_gemm_avx512 only (the others would take long)
} shape;

// The chunkwise products (C = 64, K = V = 128) and two square yardsticks.
static const shape g_shapes[] = {
    { false, true, 64, 64, 128, "Q K^T", false },
    { false, false, 64, 128, 64, "A V", false },
    { false, false, 64, 128, 128, "Q S", false },
    { true, false, 128, 128, 64, "K^T V", false },
    { false, false, 256, 256, 256, "square", false },
    { false, false, 1024, 1024, 1024, "square (large)", true },
};
enum { NSHAPE = sizeof(g_shapes) / sizeof(g_shapes[0]), NCAND = 4 };

typedef struct cand {
    const char * name;
    la_gemm_fn   fn;
    bool         ok;  // the CPU runs it
} cand;

static void fill_uniform(float * x, int64_t n, uint64_t * state) {  // [-0.5, 0.5), xorshift64
    for (int64_t i = 0; i < n; i++) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        x[i] = (float)((double)(*state >> 11) * 0x1p-53 - 0.5);
    }
}

// Median seconds per call: reps batches of calls lasting ~2 ms each, after one warm-up batch.
static double time_call(la_gemm_fn fn, const shape * s, const float * A, int64_t lda,
                        const float * B, int64_t ldb, float * C, int64_t ldc, int reps) {
    const double flops = 2.0 * (double)s->M * (double)s->N * (double)s->Kd;
    const int64_t calls = (int64_t)LA_MAX(1.0, 2e-3 * 50e9 / flops);  // ~2 ms at 50 GFLOP/s
    double * t = malloc((size_t)reps * sizeof(double));
    for (int r = -1; r < reps; r++) {
        const double t0 = now_s();
        for (int64_t c = 0; c < calls; c++) {
            fn(s->ta, s->tb, s->M, s->N, s->Kd, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
        }
        if (r >= 0) t[r] = (now_s() - t0) / (double)calls;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    const double med = t[reps / 2];
    free(t);
    return med;
}

int main(int argc, char ** argv) {
    const int reps = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 21;
    __builtin_cpu_init();
    const char * blas = load_openblas();
    const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool has_avx512 =
        has_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    const cand cands[NCAND] = {
        { "la_gemm_avx512", la_gemm_avx512, has_avx512 },
        { "la_gemm_avx2", la_gemm_avx2, has_avx2 },
        { "la_gemm_ref", la_gemm_ref, true },
        { blas ? blas : "openblas", cblas_gemm, blas != NULL },  // last: the yardstick
    };

    char cpu[128];
    cpu_model(cpu, sizeof(cpu));
    printf("bench_gemm: cpu %s | compiler gcc %s | 1 thread | median of %d | %s\n", cpu,
           __VERSION__, reps, blas ? blas : "openblas not found");
    printf("%-16s %-5s %-16s", "shape", "op", "M x N x Kd");
    for (int c = 0; c < NCAND; c++) printf(" %18s", cands[c].name);
    printf("   (GFLOP/s)\n");

    double gflops[NSHAPE][NCAND];
    for (int si = 0; si < NSHAPE; si++) {
        const shape * s = &g_shapes[si];
        const int64_t lda = s->ta ? s->M : s->Kd, ldb = s->tb ? s->Kd : s->N, ldc = s->N;
        const int64_t na = s->M * s->Kd, nb = s->Kd * s->N, nc = s->M * s->N;
        float * A    = malloc((size_t)na * sizeof(float));  // op(A) (M, Kd), tight
        float * B    = malloc((size_t)nb * sizeof(float));  // op(B) (Kd, N), tight
        float * C    = malloc((size_t)nc * sizeof(float));  // (M, N)
        float * Cref = malloc((size_t)nc * sizeof(float));  // (M, N)
        uint64_t seed = 88172645463325252ull;
        fill_uniform(A, na, &seed);
        fill_uniform(B, nb, &seed);
        la_gemm_ref(s->ta, s->tb, s->M, s->N, s->Kd, 1.0f, A, lda, B, ldb, 0.0f, Cref, ldc);

        char dims[48];
        snprintf(dims, sizeof(dims), "%lldx%lldx%lld", (long long)s->M, (long long)s->N,
                 (long long)s->Kd);
        printf("%-16s %-5s %-16s", s->what, s->ta ? (s->tb ? "TT" : "TN") : (s->tb ? "NT" : "NN"),
               dims);
        for (int c = 0; c < NCAND; c++) {
            gflops[si][c] = (double)NAN;
            const bool timed = cands[c].fn == la_gemm_avx512 || cands[c].fn == cblas_gemm;
            if (!cands[c].ok || (s->big && !timed)) {
                printf(" %18s", "-");
                continue;
            }
            // Check before timing. With inputs in [-0.5, 0.5) the float32 rounding differences
            // stay far below 1e-6 Kd; a wrong kernel does not.
            cands[c].fn(s->ta, s->tb, s->M, s->N, s->Kd, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
            double maxerr = 0.0;
            for (int64_t i = 0; i < nc; i++) {
                maxerr = fmax(maxerr, fabs((double)C[i] - (double)Cref[i]));
            }
            if (!(maxerr <= 1e-6 * (double)s->Kd)) {
                printf(" %18s", "WRONG");
                continue;
            }
            const double t = time_call(cands[c].fn, s, A, lda, B, ldb, C, ldc, reps);
            gflops[si][c] = 2.0 * (double)s->M * (double)s->N * (double)s->Kd / t * 1e-9;
            printf(" %18.1f", gflops[si][c]);
            fflush(stdout);
        }
        printf("\n");
        free(A);
        free(B);
        free(C);
        free(Cref);
    }

    // Each kernel against OpenBLAS's large-matrix speed (the performance goal: >= 70%).
    const double yard = gflops[NSHAPE - 1][NCAND - 1];
    if (isfinite(yard)) {
        printf("%% of %s at 1024^3 (%.1f GFLOP/s):\n", cands[NCAND - 1].name, yard);
        for (int si = 0; si < NSHAPE - 1; si++) {
            printf("%-16s", g_shapes[si].what);
            for (int c = 0; c < NCAND; c++) {
                if (!isfinite(gflops[si][c])) continue;
                printf(" %s %.0f%%", cands[c].name, 100.0 * gflops[si][c] / yard);
            }
            printf("\n");
        }
    }
    // csv,kernel,trans_a,trans_b,M,N,Kd,GFLOP/s
    for (int si = 0; si < NSHAPE; si++) {
        for (int c = 0; c < NCAND; c++) {
            if (!isfinite(gflops[si][c])) continue;
            const shape * s = &g_shapes[si];
            printf("csv,%s,%d,%d,%lld,%lld,%lld,%.2f\n", cands[c].name, s->ta, s->tb,
                   (long long)s->M, (long long)s->N, (long long)s->Kd, gflops[si][c]);
        }
    }
    return 0;
}
