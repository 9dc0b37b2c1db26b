// Small GEMM: la_gemm_ref, la_gemm_avx2 and la_gemm_avx512 (those the CPU runs) against a float64
// triple loop, over a sampled sweep of shapes, transposes, strides, alpha and beta.
//
// Checked per case: C[M,N] = alpha op(A) op(B) + beta C within the tolerance below; beta == 0
// overwrites a C pre-filled with NaN; the padding columns [N, ldc) of C are never written; A and
// B are allocated to their exact extent, so the sanitizer build catches reads past them.
//
// Tolerance: the float32 error bound of a length-Kd dot product plus the alpha and beta roundings,
// (Kd + 3) u with u = 2^-24, doubled, times the magnitude of the terms; per case
//   |got - ref| <= atol = (Kd + 3) * 2^-23 * mag,
//   mag = max_ij ( |alpha| sum_k |op(A)[i,k]| |op(B)[k,j]| + |beta C0[i,j]| ).
// With N(0, 1) inputs a wrong or missing term is of order 1, far above atol for every Kd here
// (atol = 5e-3 at Kd = 257, where mag ~ 160); the sweep reports the worst |err| / atol.
#include "internal.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct impl {
    const char * name;
    la_gemm_fn   fn;
    bool         ok;       // the CPU runs it
    int64_t      ncases;   // cases run
    int64_t      nbad;     // cases failed
    double       worst;    // max over cases of max|err| / atol
} impl;

static const int64_t g_sizes[] = { 0, 1, 3, 7, 15, 16, 17, 31, 33, 64, 65, 128, 130, 257 };
#define NSIZES ((int)(sizeof(g_sizes) / sizeof(g_sizes[0])))
static const float g_alphas[] = { 1.0f, -0.7f };
static const float g_betas[]  = { 0.0f, 1.0f, 0.5f };

static const float SENTINEL = 12345.0f;

// A leading dimension (at least 1): tight 30% of the time, a large multiple of 256 floats 10% of
// the time (a [T, H, D] view, whose rows share cache sets), otherwise padded by 1 .. 17.
static int64_t pick_ld(la_rng * r, int64_t cols) {
    const double u = la_rng_uniform(r);
    if (u < 0.3) return LA_MAX(cols, 1);
    if (u < 0.4) return (cols / 256 + 2) * 256;
    return cols + 1 + (int64_t)(la_rng_uniform(r) * 17);
}

// Element count of a row-major [rows, cols] matrix with leading dimension ld, to its last element.
static int64_t extent(int64_t rows, int64_t cols, int64_t ld) {
    return rows > 0 && cols > 0 ? (rows - 1) * ld + cols : 0;
}

// Runs one case on every implementation; returns false when any failed.
static bool run_case(impl * impls, int nimpl, la_rng * r, bool ta, bool tb, int64_t M, int64_t N,
                     int64_t Kd, float alpha, float beta) {
    // op(A) is [M, Kd]: A stored [M, Kd] or [Kd, M]; op(B) is [Kd, N]: B stored [Kd, N] or [N, Kd].
    const int64_t a_rows = ta ? Kd : M, a_cols = ta ? M : Kd;
    const int64_t b_rows = tb ? N : Kd, b_cols = tb ? Kd : N;
    const int64_t lda = pick_ld(r, a_cols), ldb = pick_ld(r, b_cols), ldc = pick_ld(r, N);
    const int64_t na = extent(a_rows, a_cols, lda), nb = extent(b_rows, b_cols, ldb);

    float * A  = la_test_alloc((size_t)na * sizeof(float));           // exact extent
    float * B  = la_test_alloc((size_t)nb * sizeof(float));           // exact extent
    float * C0 = la_test_alloc((size_t)(M * ldc) * sizeof(float));    // initial C, with padding
    float * C  = la_test_alloc((size_t)(M * ldc) * sizeof(float));    // the output under test
    double * ref = la_test_alloc((size_t)(M * N) * sizeof(double));   // (M, N) dense
    float *  got = la_test_alloc((size_t)(M * N) * sizeof(float));    // (M, N) dense
    la_fill_normal(r, A, na, 1.0);
    la_fill_normal(r, B, nb, 1.0);
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < ldc; j++) {
            float v = j < N ? (beta == 0.0f ? NAN : (float)la_rng_normal(r)) : SENTINEL;
            C0[i * ldc + j] = v;
        }
    }

    // float64 oracle and the magnitude sum |alpha| |a| |b| + |beta C0| for the tolerance.
    double maxmag = 0.0;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0, mag = 0.0;
            for (int64_t k = 0; k < Kd; k++) {
                double a = (double)(ta ? A[k * lda + i] : A[i * lda + k]);
                double b = (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
                s += a * b;
                mag += fabs(a * b);
            }
            double c0 = beta == 0.0f ? 0.0 : (double)C0[i * ldc + j];
            ref[i * N + j] = (double)alpha * s + (double)beta * c0;
            mag = fabs((double)alpha) * mag + fabs((double)beta * c0);
            maxmag = LA_MAX(maxmag, mag);
        }
    }
    const double atol = (double)(Kd + 3) * 0x1p-23 * LA_MAX(maxmag, 1e-30);

    bool all_ok = true;
    for (int t = 0; t < nimpl; t++) {
        impl * im = &impls[t];
        if (!im->ok) continue;
        memcpy(C, C0, (size_t)(M * ldc) * sizeof(float));
        im->fn(ta, tb, M, N, Kd, alpha, A, lda, B, ldb, beta, C, ldc);
        bool   ok = true, pad_ok = true;
        double worst = 0.0;
        for (int64_t i = 0; i < M; i++) {
            for (int64_t j = 0; j < ldc; j++) {
                float v = C[i * ldc + j];
                if (j >= N) {
                    pad_ok = pad_ok && v == SENTINEL;  // padding must be untouched
                    continue;
                }
                got[i * N + j] = v;
                double e = fabs((double)v - ref[i * N + j]) / atol;
                if (!(e <= 1.0)) ok = false;  // NaN fails too
                worst = isfinite(e) ? LA_MAX(worst, e) : HUGE_VAL;
            }
        }
        im->ncases++;
        im->worst = LA_MAX(im->worst, worst);
        ok = ok && pad_ok;
        if (!ok) {
            if (im->nbad++ < 3) {
                char name[160];
                snprintf(name, sizeof(name),
                         "%s ta=%d tb=%d M=%lld N=%lld Kd=%lld a=%g b=%g ld=%lld,%lld,%lld",
                         im->name, ta, tb, (long long)M, (long long)N, (long long)Kd,
                         (double)alpha, (double)beta, (long long)lda, (long long)ldb,
                         (long long)ldc);
                la_check_close_d(name, got, ref, M * N, atol, 0.0);  // prints the mismatches
                if (!pad_ok) printf("  %s: a padding column of C was written\n", im->name);
            }
            all_ok = false;
        }
    }
    free(A); free(B); free(C0); free(C); free(ref); free(got);
    return all_ok;
}

int main(void) {
    __builtin_cpu_init();
    const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool has_avx512 =
        has_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    impl impls[] = {
        { .name = "ref", .fn = la_gemm_ref, .ok = true },
        { .name = "avx2", .fn = la_gemm_avx2, .ok = has_avx2 },
        { .name = "avx512", .fn = la_gemm_avx512, .ok = has_avx512 },
    };
    const int nimpl = (int)(sizeof(impls) / sizeof(impls[0]));
    for (int t = 0; t < nimpl; t++) {
        if (!impls[t].ok) printf("SKIP %s (not supported by this CPU)\n", impls[t].name);
    }

    la_rng r;
    la_rng_seed(&r, 20240611);

    // Sweep: every (M, N, Kd) in the size grid whose volume is small, and a random sample of the
    // big ones (probability 2^16 / volume), so the run stays a few seconds. alpha and beta cycle
    // through all 6 pairs across cases.
    int64_t ncase = 0;
    for (int combo = 0; combo < 4; combo++) {
        const bool ta = combo & 1, tb = combo & 2;
        for (int im = 0; im < NSIZES; im++) {
            for (int in = 0; in < NSIZES; in++) {
                for (int ik = 0; ik < NSIZES; ik++) {
                    const int64_t M = g_sizes[im], N = g_sizes[in], Kd = g_sizes[ik];
                    const double vol = (double)LA_MAX(M, 1) * LA_MAX(N, 1) * LA_MAX(Kd, 1);
                    if (vol > 65536.0 && la_rng_uniform(&r) > 65536.0 / vol) continue;
                    const float alpha = g_alphas[ncase % 2], beta = g_betas[(ncase / 2) % 3];
                    run_case(impls, nimpl, &r, ta, tb, M, N, Kd, alpha, beta);
                    ncase++;
                }
            }
        }
    }

    // The chunkwise shapes, always, with every alpha and beta: Q K^T, A V, Q S, K^T V, dS.
    static const struct { bool ta, tb; int64_t M, N, Kd; } chunk[] = {
        { false, true, 64, 64, 128 },    { false, false, 64, 128, 64 },
        { false, false, 64, 128, 128 },  { true, false, 128, 128, 64 },
        { false, true, 32, 32, 128 },    { false, false, 32, 128, 32 },
        { true, false, 128, 128, 32 },   { false, true, 128, 128, 128 },
        { true, true, 64, 128, 64 },     { false, false, 256, 256, 256 },
    };
    for (size_t s = 0; s < sizeof(chunk) / sizeof(chunk[0]); s++) {
        for (int p = 0; p < 6; p++) {
            run_case(impls, nimpl, &r, chunk[s].ta, chunk[s].tb, chunk[s].M, chunk[s].N,
                     chunk[s].Kd, g_alphas[p % 2], g_betas[p / 2]);
        }
    }

    // alpha == 0: C = beta C without reading A or B (which hold NaN here), as in BLAS.
    {
        const int64_t M = 5, N = 37, Kd = 9;
        float A[5 * 9], B[9 * 37], C[5 * 37], want[5 * 37];
        for (int i = 0; i < 5 * 9; i++) A[i] = NAN;
        for (int i = 0; i < 9 * 37; i++) B[i] = NAN;
        for (int t = 0; t < nimpl; t++) {
            if (!impls[t].ok) continue;
            for (int i = 0; i < M * N; i++) { C[i] = (float)i; want[i] = 0.5f * (float)i; }
            impls[t].fn(false, false, M, N, Kd, 0.0f, A, Kd, B, N, 0.5f, C, N);
            char name[64];
            snprintf(name, sizeof(name), "%s alpha=0 beta=0.5", impls[t].name);
            la_check_close(name, C, want, M * N, 0.0, 0.0);
        }
    }

    for (int t = 0; t < nimpl; t++) {
        const impl * im = &impls[t];
        if (!im->ok) continue;
        la_check(im->nbad == 0, "%-7s sweep: %lld cases, %lld failed, worst |err|/atol = %.3g",
                 im->name, (long long)im->ncases, (long long)im->nbad, im->worst);
    }
    return la_test_summary();
}
