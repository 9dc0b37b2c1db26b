// The gated intra-chunk score module (src/ops/intra.h) against its definition evaluated in
// float64 by brute force:
//   A_rc = alpha sum_d X_rd Y_cd exp(bx_rd - b_cd)  on r > c (strict) or r >= c,
//   bx_r = b_{r - shift}, b_r = sum_{m <= r} g_m, b_{-1} = 0,
// and its gradients for the loss sum(A o dA): dX, dY and dg (closed form in float64, the gate
// term as the sum over every pair that row m's gate enters). Covers per-channel, scalar and no
// gates; shift 0/1; chunk rows 1, 5, 16, 17, 40, 64 (sub-chunk boundaries and a short last
// sub-chunk); K = 24 and 128; gates from -1e-6 to -20 per token (in-chunk sums far below -88,
// where a factorised exp(b) exp(-b) form would overflow).
// Tolerance: 2e-5 relative to the tensor's max-abs (float32 products of length K and exps).
#include "intra.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const double TOL = 2e-5;

// The log gate of row r, channel i (0 without a gate).
static double gate_at(int mode, const float * g, int64_t r, int64_t i, int64_t K) {
    if (mode == LA_INTRA_CHANNEL) return (double)g[r * K + i];
    if (mode == LA_INTRA_SCALAR) return (double)g[r];
    return 0.0;
}

typedef struct ref_out {
    double * A, * dX, * dY, * dg;
} ref_out;

// Brute force, float64. g: (L, K) channel or (L) scalar or NULL.
static void brute(int mode, int shift, bool strict, double alpha, const float * X,
                  const float * Y, const float * g, const float * dA, int64_t L, int64_t K,
                  ref_out * o) {
    double * b = calloc((size_t)((L + 1) * K), sizeof(double));  // row j = b_{j-1}
    for (int64_t r = 0; r < L; r++)
        for (int64_t i = 0; i < K; i++) {
            const double gi = gate_at(mode, g, r, i, K);
            b[(r + 1) * K + i] = b[r * K + i] + gi;
        }
    double * db = calloc((size_t)((L + 1) * K), sizeof(double));
    for (int64_t r = 0; r < L; r++)
        for (int64_t c = 0; c < L; c++) {
            const bool on = strict ? c < r : c <= r;
            double a = 0;
            if (on)
                for (int64_t i = 0; i < K; i++) {
                    const double e = exp(b[(r + 1 - shift) * K + i] - b[(c + 1) * K + i]);
                    const double t = alpha * (double)X[r * K + i] * (double)Y[c * K + i] * e;
                    a += t;
                    const double w = (double)dA[r * L + c];
                    o->dX[r * K + i] += w * alpha * (double)Y[c * K + i] * e;
                    o->dY[c * K + i] += w * alpha * (double)X[r * K + i] * e;
                    db[(r + 1 - shift) * K + i] += w * t;
                    db[(c + 1) * K + i] -= w * t;
                }
            o->A[r * L + c] = a;
        }
    // dg_m = sum_{j >= m} db[j + 1] (row 0 of db is the constant b_{-1}).
    for (int64_t m = 0; m < L; m++)
        for (int64_t i = 0; i < K; i++) {
            double s = 0;
            for (int64_t j = m; j < L; j++) s += db[(j + 1) * K + i];
            if (mode == LA_INTRA_CHANNEL) o->dg[m * K + i] = s;
            else o->dg[m] += s;
        }
    free(b);
    free(db);
}

static void run_case(la_rng * rng, int mode, int shift, bool strict, int64_t L, int64_t K,
                     double glo, double ghi) {
    const int64_t C = 64;
    const float alpha = 0.7f;
    float * X = la_new_normal(rng, L * K, 1.0);
    float * Y = la_new_normal(rng, L * K, 1.0);
    float * dA = la_new_normal(rng, L * L, 1.0);
    const int64_t ng = mode == LA_INTRA_CHANNEL ? L * K : L;
    float * g = la_new_uniform(rng, ng, glo, ghi);
    ref_out ro = { la_test_alloc((size_t)(L * L) * 8), la_test_alloc((size_t)(L * K) * 8),
                   la_test_alloc((size_t)(L * K) * 8), la_test_alloc((size_t)ng * 8) };
    brute(mode, shift, strict, alpha, X, Y, g, dA, L, K, &ro);

    void * ws = la_test_alloc(la_intra_bytes(mode, C, K, true) + 64);
    void * wsa = (void *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    la_intra it;
    la_intra_init(&it, mode, C, K, true, wsa);
    la_intra_load(&it, g, mode == LA_INTRA_CHANNEL ? K : 1, L);
    const int64_t lda = C + 3;  // a row stride that is not L
    float * A = la_test_alloc((size_t)(L * lda) * 4);
    for (int64_t e = 0; e < L * lda; e++) A[e] = NAN;  // every entry of the block is written
    la_intra_fwd(&it, shift, strict, alpha, X, K, Y, K, A, lda);
    float * Ac = la_test_alloc((size_t)(L * L) * 4);
    for (int64_t r = 0; r < L; r++)
        for (int64_t c = 0; c < L; c++) Ac[r * L + c] = A[r * lda + c];
    char name[160];
    snprintf(name, sizeof name, "A mode=%d shift=%d strict=%d L=%ld K=%ld g=[%g,%g]", mode, shift,
             strict, (long)L, (long)K, glo, ghi);
    la_check_rel(name, Ac, ro.A, L * L, TOL);

    // Backward: dA with NaN outside the pattern (must be ignored); dX, dY start from 1 (+=).
    float * dAp = la_test_alloc((size_t)(L * lda) * 4);
    for (int64_t r = 0; r < L; r++)
        for (int64_t c = 0; c < L; c++) {
            const bool on = strict ? c < r : c <= r;
            dAp[r * lda + c] = on ? dA[r * L + c] : NAN;
        }
    float * dX = la_test_alloc((size_t)(L * K) * 4), * dY = la_test_alloc((size_t)(L * K) * 4);
    for (int64_t e = 0; e < L * K; e++) dX[e] = dY[e] = 1.0f;
    double * dbz = la_test_alloc((size_t)((C + 1) * K) * 8);
    la_intra_bwd(&it, shift, strict, alpha, dAp, lda, X, K, Y, K, dX, K, dY, K, dbz);
    for (int64_t e = 0; e < L * K; e++) {
        dX[e] -= 1.0f;
        dY[e] -= 1.0f;
    }
    snprintf(name, sizeof name, "dX mode=%d shift=%d strict=%d L=%ld K=%ld", mode, shift, strict,
             (long)L, (long)K);
    la_check_rel(name, dX, ro.dX, L * K, TOL);
    snprintf(name, sizeof name, "dY mode=%d shift=%d strict=%d L=%ld K=%ld", mode, shift, strict,
             (long)L, (long)K);
    la_check_rel(name, dY, ro.dY, L * K, TOL);
    if (mode != LA_INTRA_NONE) {
        const int64_t ldg = mode == LA_INTRA_CHANNEL ? K : 1;
        float * dg = la_test_alloc((size_t)ng * 4);
        la_intra_dgate(&it, dbz, dg, ldg);
        snprintf(name, sizeof name, "dg mode=%d shift=%d strict=%d L=%ld K=%ld", mode, shift,
                 strict, (long)L, (long)K);
        // The gate gradient is a difference of terms of size ~|A|; where they cancel exactly
        // (L = 1: only the diagonal, whose exponent is 0) the reference is 0, so the tolerance
        // has an absolute floor at the terms' scale.
        la_check_close_d(name, dg, ro.dg, ng, 5 * TOL * (la_maxabs_d(ro.dg, ng) + K), 5 * TOL);
        free(dg);
    }
    // Row factors: e^{bx}, e^{b_{L-1} - b}, e^{b_{L-1}} (float64 from the same gates).
    float * E = la_test_alloc((size_t)(L * K) * 4), * F = la_test_alloc((size_t)(L * K) * 4);
    float * gL = la_test_alloc((size_t)K * 4);
    double * Er = la_test_alloc((size_t)(L * K) * 8), * Fr = la_test_alloc((size_t)(L * K) * 8);
    double * gLr = la_test_alloc((size_t)K * 8);
    la_intra_ebx(&it, shift, E);
    la_intra_etail(&it, F);
    la_intra_elast(&it, gL);
    for (int64_t i = 0; i < K; i++) {
        double b = 0, bl = 0;
        for (int64_t m = 0; m < L; m++)
            bl += gate_at(mode, g, m, i, K);
        gLr[i] = exp(bl);
        for (int64_t r = 0; r < L; r++) {
            const double gr = gate_at(mode, g, r, i, K);
            const double bprev = b;
            b += gr;
            Er[r * K + i] = exp(shift ? bprev : b);
            Fr[r * K + i] = exp(bl - b);
        }
    }
    la_check_rel("ebx", E, Er, L * K, TOL);
    la_check_rel("etail", F, Fr, L * K, TOL);
    la_check_rel("elast", gL, gLr, K, TOL);
    free(E), free(F), free(gL), free(Er), free(Fr), free(gLr);
    free(X), free(Y), free(dA), free(g), free(ro.A), free(ro.dX), free(ro.dY), free(ro.dg);
    free(ws), free(A), free(Ac), free(dAp), free(dX), free(dY), free(dbz);
}

int main(void) {
    la_rng rng;
    la_rng_seed(&rng, 7);
    const int64_t Ls[] = { 1, 5, 16, 17, 40, 64 };
    const int64_t Ks[] = { 24, 128 };
    for (int mode = 0; mode < 3; mode++)
        for (int shift = 0; shift < 2; shift++)
            for (int strict = shift; strict < 2; strict++)
                for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++)
                    for (size_t ki = 0; ki < 2; ki++) {
                        run_case(&rng, mode, shift, strict, Ls[li], Ks[ki], -1.0, -1e-6);
                        if (mode != LA_INTRA_NONE && Ls[li] == 64)
                            run_case(&rng, mode, shift, strict, Ls[li], Ks[ki], -20.0, -1e-6);
                    }
    return la_test_summary();
}
