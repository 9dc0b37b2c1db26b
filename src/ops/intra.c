// Gated intra-chunk score matrices (intra.h; ALGORITHMS.md 3.2, 3.5, 3.6).
//
// Per-channel gates (secondary chunking, sub-chunks of c = LA_INTRA_SUB rows):
//   * anchors: a_I = bx at the first row of sub-chunk I, which is at or before every row of I;
//     the row operand of sub-chunk I is Xh_r = X_r o e^{bx_r - a_I} and the column operand of
//     sub-chunk J is Yh_c = Y_c o e^{a_{J+1} - b_c} (a_{J+1}: bx at the first row after J, at
//     or after every row of J: b_{c1} <= b_c for shift 0, b_{c1-1} <= b_c for shift 1);
//   * off-diagonal blocks (I > J): A_IJ = alpha (Xh_I o f_IJ) Yh_J^T with f_IJ = e^{a_I - a_{J+1}},
//     one matrix product per column block J over all the rows below it;
//   * diagonal blocks: e^{bx_r - b_c} is the product of the per-token decays al_m over
//     m in (c, r - shift], built up as a running product, so no exponential of a difference is
//     formed and decays that underflow stay exact.
// Scalar gates and no gate: A = alpha (X Y^T) o D with D_rc = e^{bx_r - b_c} on the pattern,
// masked before the exponential (ALGORITHMS.md 0).
#include "intra.h"

#include "vexp.h"

// Carves every buffer (ws NULL: only counts); la_intra_bytes and la_intra_init share it.
static size_t carve_all(la_intra * it, int mode, int64_t C, int64_t K, bool backward,
                        void * ws) {
    la_carver cv = { (char *)ws, 0 };
    const size_t ck = (size_t)(C * K) * 4, cc = (size_t)(C * C) * 4, k4 = (size_t)K * 4;
    memset(it, 0, sizeof *it);
    it->mode = mode;
    it->C = C;
    it->K = K;
    it->bz = la_carve(&cv, (size_t)((C + 1) * K) * 8);
    if (mode == LA_INTRA_CHANNEL) {
        it->al = la_carve(&cv, ck);
        it->ex = la_carve(&cv, ck);
        it->ey = la_carve(&cv, ck);
        it->Xh = la_carve(&cv, ck);
        it->Yh = la_carve(&cv, ck);
        it->Xs = la_carve(&cv, ck);
        it->f = la_carve(&cv, k4);
        it->w = la_carve(&cv, k4);
    } else {
        it->D = la_carve(&cv, cc);
    }
    it->dXs = la_carve(&cv, ck);
    it->dYs = la_carve(&cv, ck);
    if (backward) {
        if (mode == LA_INTRA_CHANNEL) {
            it->dXh = la_carve(&cv, ck);
            it->dYh = la_carve(&cv, ck);
        } else {
            it->dAm = la_carve(&cv, cc);
        }
    }
    return cv.used;
}

size_t la_intra_bytes(int mode, int64_t C, int64_t K, bool backward) {
    la_intra it;
    return carve_all(&it, mode, C, K, backward, NULL);
}

void la_intra_init(la_intra * it, int mode, int64_t C, int64_t K, bool backward, void * ws) {
    carve_all(it, mode, C, K, backward, ws);
}

LA_CLONES
void la_intra_load(la_intra * it, const float * g, int64_t ldg, int64_t L) {
    const int64_t K = it->K;
    it->L = L;
    it->cx = it->cy = NULL;  // new gates: the cached anchored operands are stale
    it->exs = it->eys = -1;
    double * restrict bz = it->bz;
    if (it->mode == LA_INTRA_CHANNEL) {
        for (int64_t i = 0; i < K; i++) bz[i] = 0;
        for (int64_t r = 0; r < L; r++) {
            const float * gr = g + r * ldg;
            const double * prev = bz + r * K;
            double * cur = bz + (r + 1) * K;
            for (int64_t i = 0; i < K; i++) {
                const double gi = (double)gr[i];
                cur[i] = prev[i] + (gi < LA_GATE_FLOOR ? LA_GATE_FLOOR : gi);
            }
        }
        it->g = g;  // the decays exp(g) are formed when a diagonal block first needs them
        it->ldg = ldg;
        it->al_ok = false;
    } else if (it->mode == LA_INTRA_SCALAR) {
        bz[0] = 0;
        for (int64_t r = 0; r < L; r++) {
            const double gr = (double)g[r * ldg];
            bz[r + 1] = bz[r] + (gr < LA_GATE_FLOOR ? LA_GATE_FLOOR : gr);
        }
    }
}

// e^{bz[row j] - ref} for j = j0 + r into E (L, K); ref = NULL means 0.
LA_CLONES
static void exp_rows(const la_intra * it, int64_t j0, const double * ref, float * E) {
    const int64_t K = it->K, L = it->L;
    if (it->mode == LA_INTRA_NONE) {
        for (int64_t e = 0; e < L * K; e++) E[e] = 1.0f;
        return;
    }
    if (it->mode == LA_INTRA_SCALAR) {
        const double r0 = ref ? ref[0] : 0.0;
        for (int64_t r = 0; r < L; r++) {
            const float e = la_expf((float)(it->bz[j0 + r] - r0));
            for (int64_t i = 0; i < K; i++) E[r * K + i] = e;
        }
        return;
    }
    for (int64_t r = 0; r < L; r++) {
        const double * b = it->bz + (j0 + r) * K;
        for (int64_t i = 0; i < K; i++) E[r * K + i] = (float)(b[i] - (ref ? ref[i] : 0.0));
    }
    la_expf_vec(E, E, L * K);
}

void la_intra_ebx(const la_intra * it, int shift, float * E) { exp_rows(it, 1 - shift, NULL, E); }

LA_CLONES
void la_intra_etail(const la_intra * it, float * F) {
    // e^{b_{L-1} - b_r}: the reference row is bz[L]; flip the sign by computing
    // e^{-(b_r - b_{L-1})} through exp_rows on negated differences.
    const int64_t K = it->K, L = it->L;
    if (it->mode == LA_INTRA_NONE) {
        for (int64_t e = 0; e < L * K; e++) F[e] = 1.0f;
        return;
    }
    if (it->mode == LA_INTRA_SCALAR) {
        const double bl = it->bz[L];
        for (int64_t r = 0; r < L; r++) {
            const float e = la_expf((float)(bl - it->bz[r + 1]));
            for (int64_t i = 0; i < K; i++) F[r * K + i] = e;
        }
        return;
    }
    const double * bl = it->bz + L * K;
    for (int64_t r = 0; r < L; r++) {
        const double * b = it->bz + (r + 1) * K;
        for (int64_t i = 0; i < K; i++) F[r * K + i] = (float)(bl[i] - b[i]);
    }
    la_expf_vec(F, F, L * K);
}

LA_CLONES
void la_intra_elast(const la_intra * it, float * gL) {
    const int64_t K = it->K, L = it->L;
    if (it->mode == LA_INTRA_NONE) {
        for (int64_t i = 0; i < K; i++) gL[i] = 1.0f;
    } else if (it->mode == LA_INTRA_SCALAR) {
        const float e = la_expf((float)it->bz[L]);
        for (int64_t i = 0; i < K; i++) gL[i] = e;
    } else {
        for (int64_t i = 0; i < K; i++) gL[i] = (float)it->bz[L * K + i];
        la_expf_vec(gL, gL, K);
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar gate / no gate: D_rc = e^{bx_r - b_c} on the pattern, 0 elsewhere (masked first).

LA_CLONES
static void scalar_mask(const la_intra * it, int shift, bool strict, float * D) {
    const int64_t L = it->L, C = it->C;
    for (int64_t r = 0; r < L; r++) {
        float * Dr = D + r * C;
        const int64_t cend = strict ? r : r + 1;
        if (it->mode == LA_INTRA_NONE) {
            for (int64_t c = 0; c < cend; c++) Dr[c] = 1.0f;
        } else {
            const double bx = it->bz[r + 1 - shift];
            for (int64_t c = 0; c < cend; c++) Dr[c] = (float)(bx - it->bz[c + 1]);
            la_expf_vec(Dr, Dr, cend);
        }
        for (int64_t c = cend; c < L; c++) Dr[c] = 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------
// Per-channel gates: anchors and operands.

// ex, Xh for every row (anchor a_I of its sub-chunk); ey, Yh for rows of sub-chunks that have
// a successor. Each side is kept until the next la_intra_load and reused when the same operand
// (address, stride, shift) comes again: dplr's Aab/Aak share X = a, Aqb/Aqk share X = q.
LA_CLONES
static void chan_operands(la_intra * it, int shift, const float * X, int64_t ldx, const float * Y,
                          int64_t ldy) {
    const int64_t K = it->K, L = it->L, c = LA_INTRA_SUB;
    const double * bx = it->bz + (1 - shift) * K;  // bx row r
    const double * b = it->bz + K;                 // b row r
    const bool do_x = !(it->cx == X && it->cldx == ldx && it->cxs == shift);
    const bool do_y = !(it->cy == Y && it->cldy == ldy && it->cys == shift);
    for (int64_t r0 = 0; r0 < L; r0 += c) {
        const int64_t r1 = LA_MIN(r0 + c, L);
        const double * aI = bx + r0 * K;
        if (do_x) {
            if (it->exs != shift) {
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t i = 0; i < K; i++)
                        it->ex[r * K + i] = (float)(bx[r * K + i] - aI[i]);
                la_expf_vec(it->ex + r0 * K, it->ex + r0 * K, (r1 - r0) * K);
            }
            for (int64_t r = r0; r < r1; r++)
                for (int64_t i = 0; i < K; i++)
                    it->Xh[r * K + i] = X[r * ldx + i] * it->ex[r * K + i];
        }
        if (do_y && r1 < L) {
            const double * an = bx + r1 * K;
            if (it->eys != shift) {
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t i = 0; i < K; i++)
                        it->ey[r * K + i] = (float)(an[i] - b[r * K + i]);
                la_expf_vec(it->ey + r0 * K, it->ey + r0 * K, (r1 - r0) * K);
            }
            for (int64_t r = r0; r < r1; r++)
                for (int64_t i = 0; i < K; i++)
                    it->Yh[r * K + i] = Y[r * ldy + i] * it->ey[r * K + i];
        }
    }
    it->cx = X, it->cldx = ldx, it->cxs = shift;
    it->cy = Y, it->cldy = ldy, it->cys = shift;
    if (do_x) it->exs = shift;  // the factors depend on the gates and the shift only
    if (do_y) it->eys = shift;
}

// f <- e^{a_I - a_{J+1}} for the sub-chunk starting at row q0, column block J.
LA_CLONES
static void chan_f(la_intra * it, int shift, int64_t q0, int64_t J) {
    const int64_t K = it->K;
    const double * bx = it->bz + (1 - shift) * K;
    const double * aI = bx + q0 * K, * aJ1 = bx + (J + 1) * LA_INTRA_SUB * K;
    for (int64_t i = 0; i < K; i++) it->f[i] = (float)(aI[i] - aJ1[i]);
    la_expf_vec(it->f, it->f, K);
}

// Xs rows [(J+1)c, L) <- Xh_I o f_IJ.
LA_CLONES
static void chan_stack(la_intra * it, int shift, int64_t J) {
    const int64_t K = it->K, L = it->L, c = LA_INTRA_SUB;
    for (int64_t q0 = (J + 1) * c; q0 < L; q0 += c) {
        const int64_t q1 = LA_MIN(q0 + c, L);
        chan_f(it, shift, q0, J);
        for (int64_t r = q0; r < q1; r++)
            for (int64_t i = 0; i < K; i++) it->Xs[r * K + i] = it->Xh[r * K + i] * it->f[i];
    }
}

// The per-token decays al = exp(g) of the loaded chunk.
LA_CLONES
static void ensure_decays(la_intra * it) {
    if (it->al_ok) return;
    for (int64_t r = 0; r < it->L; r++) la_expf_vec(it->al + r * it->K, it->g + r * it->ldg, it->K);
    it->al_ok = true;
}

// Diagonal sub-chunk blocks by running decay products.
LA_CLONES
static void chan_diag_fwd(la_intra * it, int shift, bool strict, float alpha, const float * X,
                          int64_t ldx, const float * Y, int64_t ldy, float * A, int64_t lda) {
    const int64_t K = it->K, L = it->L, c = LA_INTRA_SUB;
    float * restrict w = it->w;
    for (int64_t r0 = 0; r0 < L; r0 += c) {
        const int64_t r1 = LA_MIN(r0 + c, L);
        for (int64_t cc = r0; cc < r1; cc++) {
            memcpy(w, Y + cc * ldy, (size_t)K * sizeof(float));
            if (!strict) A[cc * lda + cc] = alpha * la_dot_lanes(X + cc * ldx, w, K);
            for (int64_t r = cc + 1; r < r1; r++) {
                const int64_t m = r - shift;  // e^{bx_r - b_c} = prod al over (c, r - shift]
                if (m >= cc + 1) {
                    const float * restrict am = it->al + m * K;
                    for (int64_t i = 0; i < K; i++) w[i] *= am[i];
                }
                A[r * lda + cc] = alpha * la_dot_lanes(X + r * ldx, w, K);
            }
        }
    }
}

void la_intra_fwd(la_intra * it, int shift, bool strict, float alpha, const float * X,
                  int64_t ldx, const float * Y, int64_t ldy, float * A, int64_t lda) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t K = it->K, L = it->L, C = it->C, c = LA_INTRA_SUB;
    if (L == 0) return;
    if (it->mode != LA_INTRA_CHANNEL) {
        gemm(false, true, L, L, K, alpha, X, ldx, Y, ldy, 0.0f, A, lda);
        scalar_mask(it, shift, strict, it->D);
        for (int64_t r = 0; r < L; r++) {
            const int64_t cend = strict ? r : r + 1;
            for (int64_t cc = 0; cc < cend; cc++) A[r * lda + cc] *= it->D[r * C + cc];
            for (int64_t cc = cend; cc < L; cc++) A[r * lda + cc] = 0.0f;
        }
        return;
    }
    for (int64_t r = 0; r < L; r++) memset(A + r * lda, 0, (size_t)L * sizeof(float));
    chan_operands(it, shift, X, ldx, Y, ldy);
    for (int64_t J = 0; (J + 1) * c < L; J++) {
        chan_stack(it, shift, J);
        const int64_t r0 = (J + 1) * c;
        gemm(false, true, L - r0, c, K, alpha, it->Xs + r0 * K, K, it->Yh + J * c * K, K, 0.0f,
             A + r0 * lda + J * c, lda);
    }
    ensure_decays(it);
    chan_diag_fwd(it, shift, strict, alpha, X, ldx, Y, ldy, A, lda);
}

// Adds the per-term gradients tX, tY (L, K) to dX, dY and their gate terms to dbz.
LA_CLONES
static void fold_terms(const la_intra * it, int shift, const float * X, int64_t ldx,
                       const float * Y, int64_t ldy, float * dX, int64_t lddx, float * dY,
                       int64_t lddy, double * dbz) {
    const int64_t K = it->K, L = it->L;
    const float * tX = it->dXs, * tY = it->dYs;
    if (dbz && it->mode != LA_INTRA_NONE)
        for (int64_t r = 0; r < L; r++) {
            double * dx = dbz + (r + 1 - shift) * K, * dy = dbz + (r + 1) * K;
            const float * xr = X + r * ldx, * yr = Y + r * ldy;
            for (int64_t i = 0; i < K; i++) {
                dx[i] += (double)(xr[i] * tX[r * K + i]);
                dy[i] -= (double)(yr[i] * tY[r * K + i]);
            }
        }
    for (int64_t r = 0; r < L; r++) {
        float * dxr = dX + r * lddx;
        for (int64_t i = 0; i < K; i++) dxr[i] += tX[r * K + i];
    }
    for (int64_t r = 0; r < L; r++) {
        float * dyr = dY + r * lddy;
        for (int64_t i = 0; i < K; i++) dyr[i] += tY[r * K + i];
    }
}

// Backward of the diagonal blocks into tX, tY: the running product p of chan_diag_fwd.
LA_CLONES
static void chan_diag_bwd(la_intra * it, int shift, bool strict, float alpha, const float * dA,
                          int64_t lda, const float * X, int64_t ldx, const float * Y,
                          int64_t ldy) {
    const int64_t K = it->K, L = it->L, c = LA_INTRA_SUB;
    float * restrict p = it->w, * restrict tX = it->dXs, * restrict tY = it->dYs;
    for (int64_t r0 = 0; r0 < L; r0 += c) {
        const int64_t r1 = LA_MIN(r0 + c, L);
        for (int64_t cc = r0; cc < r1; cc++) {
            const float * restrict yc = Y + cc * ldy;
            float * restrict tyc = tY + cc * K;
            for (int64_t i = 0; i < K; i++) p[i] = 1.0f;
            if (!strict) {
                const float gd = alpha * dA[cc * lda + cc];
                const float * restrict xc = X + cc * ldx;
                float * restrict txc = tX + cc * K;
                for (int64_t i = 0; i < K; i++) {
                    txc[i] += gd * yc[i];
                    tyc[i] += gd * xc[i];
                }
            }
            for (int64_t r = cc + 1; r < r1; r++) {
                const int64_t m = r - shift;
                if (m >= cc + 1) {
                    const float * restrict am = it->al + m * K;
                    for (int64_t i = 0; i < K; i++) p[i] *= am[i];
                }
                const float gd = alpha * dA[r * lda + cc];
                const float * restrict xr = X + r * ldx;
                float * restrict txr = tX + r * K;
                for (int64_t i = 0; i < K; i++) {
                    txr[i] += gd * yc[i] * p[i];
                    tyc[i] += gd * xr[i] * p[i];
                }
            }
        }
    }
}

void la_intra_bwd(la_intra * it, int shift, bool strict, float alpha, const float * dA,
                  int64_t lda, const float * X, int64_t ldx, const float * Y, int64_t ldy,
                  float * dX, int64_t lddx, float * dY, int64_t lddy, double * dbz) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t K = it->K, L = it->L, C = it->C, c = LA_INTRA_SUB;
    if (L == 0) return;
    float * tX = it->dXs, * tY = it->dYs;
    if (it->mode != LA_INTRA_CHANNEL) {
        // dAm = alpha dA o D ; tX = dAm Y ; tY = dAm^T X
        float * dAm = it->dAm;
        scalar_mask(it, shift, strict, it->D);
        for (int64_t r = 0; r < L; r++) {
            const int64_t cend = strict ? r : r + 1;
            for (int64_t cc = 0; cc < cend; cc++)
                dAm[r * C + cc] = alpha * dA[r * lda + cc] * it->D[r * C + cc];
            for (int64_t cc = cend; cc < L; cc++) dAm[r * C + cc] = 0.0f;
        }
        gemm(false, false, L, K, L, 1.0f, dAm, C, Y, ldy, 0.0f, tX, K);
        gemm(true, false, L, K, L, 1.0f, dAm, C, X, ldx, 0.0f, tY, K);
        fold_terms(it, shift, X, ldx, Y, ldy, dX, lddx, dY, lddy, dbz);
        return;
    }
    chan_operands(it, shift, X, ldx, Y, ldy);
    memset(it->dXh, 0, (size_t)(L * K) * sizeof(float));
    memset(tY, 0, (size_t)(L * K) * sizeof(float));
    for (int64_t J = 0; (J + 1) * c < L; J++) {
        const int64_t r0 = (J + 1) * c;
        chan_stack(it, shift, J);
        const float * dAJ = dA + r0 * lda + J * c;
        // dXs_I = alpha dA_IJ Yh_J -> dXh_I += dXs_I o f_IJ ; dYh_J = alpha dA_J^T Xs
        gemm(false, false, L - r0, K, c, alpha, dAJ, lda, it->Yh + J * c * K, K, 0.0f,
             tX + r0 * K, K);
        for (int64_t q0 = r0; q0 < L; q0 += c) {
            const int64_t q1 = LA_MIN(q0 + c, L);
            chan_f(it, shift, q0, J);
            for (int64_t r = q0; r < q1; r++)
                for (int64_t i = 0; i < K; i++) it->dXh[r * K + i] += tX[r * K + i] * it->f[i];
        }
        gemm(true, false, c, K, L - r0, alpha, dAJ, lda, it->Xs + r0 * K, K, 0.0f,
             it->dYh + J * c * K, K);
    }
    // Terms of the off-diagonal blocks through the anchored operands.
    const int64_t with_succ = ((L - 1) / c) * c;  // rows of sub-chunks followed by another
    for (int64_t r = 0; r < L; r++)
        for (int64_t i = 0; i < K; i++) {
            tX[r * K + i] = it->dXh[r * K + i] * it->ex[r * K + i];
            tY[r * K + i] = r < with_succ ? it->dYh[r * K + i] * it->ey[r * K + i] : 0.0f;
        }
    ensure_decays(it);
    chan_diag_bwd(it, shift, strict, alpha, dA, lda, X, ldx, Y, ldy);
    fold_terms(it, shift, X, ldx, Y, ldy, dX, lddx, dY, lddy, dbz);
}

LA_CLONES
void la_intra_dgate(const la_intra * it, const double * dbz, float * dg, int64_t ldg) {
    const int64_t K = it->K, L = it->L;
    if (it->mode == LA_INTRA_CHANNEL) {
        double acc[512];
        for (int64_t i0 = 0; i0 < K; i0 += 512) {
            const int64_t n = LA_MIN(512, K - i0);
            for (int64_t i = 0; i < n; i++) acc[i] = 0;
            for (int64_t m = L - 1; m >= 0; m--) {
                const double * d = dbz + (m + 1) * K + i0;
                float * o = dg + m * ldg + i0;
                for (int64_t i = 0; i < n; i++) {
                    acc[i] += d[i];
                    o[i] = (float)acc[i];
                }
            }
        }
    } else if (it->mode == LA_INTRA_SCALAR) {
        double acc = 0;
        for (int64_t m = L - 1; m >= 0; m--) {
            const double * d = dbz + (m + 1) * K;
            for (int64_t i = 0; i < K; i++) acc += d[i];
            dg[m * ldg] = (float)acc;
        }
    }
}
