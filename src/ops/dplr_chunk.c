// Chunk form of the dp engine (dplr_delta_rule, iplr_delta_rule, rwkv7: OPS.md 2.9, 2.10, 2.12),
// forward and chunkwise backward. The contract is delta.h (la_dp_args).
//
//   S_t = Diag(e^{gk_t}) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T ;  o_t = s S_t^T q_t
//
// Chunk form (ALGORITHMS.md 3.6), per chunk of L <= C tokens with the in-chunk cumulative gate
// l_r = sum_{m<=r} gk_m (a K-vector; l_{-1} = 0; all zeros without gk) and S = S_[n]:
//   Aab_rc = sum_d a_rd b_cd e^{l_{r-1,d} - l_cd}  (r > c)     Aak_rc: the same with k_c
//   Aqb_rc = s sum_d q_rd b_cd e^{l_rd - l_cd}     (r >= c)    Aqk_rc: the same with k_c
//   M = (I - Aab)^{-1} ;  At = A o e^{l_{r-1}} ;  W = M At ;  Y = Aak V ;  Z = M Y
//   U = W S + Z                                  (row r of U = a_r^T S_{r-1}, the low-rank read)
//   O = s (Q o e^{l}) S + Aqb U + Aqk V
//   S_[n+1] = Diag(e^{l_{L-1}}) S + (B o F)^T U + (K o F)^T V,   F = e^{l_{L-1} - l}
// The four score matrices come from the shared gated intra-chunk module (intra.h), which keeps
// every exponent <= 0 (ALGORITHMS.md 4.1); so do the row factors e^{l}, e^{l_{r-1}} and F.
//
// Backward (derived from the lines above, in reverse; dS' = dL/dS_[n+1], starting at dfinal):
//   dU = Aqb^T dO + Bd dS'                           (Bd = B o F, Kd = K o F, Qg = Q o e^{l})
//   dV = Aqk^T dO + Kd dS' + Aak^T dY
//   dQg = s dO S^T ;  dBd = U dS'^T ;  dKd = V dS'^T ;  dAqb = dO U^T ;  dAqk = dO V^T
//   dW = dU S^T ;  [dAt | dY] = M^T [dW | dU]       (Z = M Y and W = M At, dZ = dU)
//   dAab = M^T dM M^T = dAt W^T + dY Z^T             (dM = dU Y^T + dW At^T; no C^3 product)
//   dAak = dY V^T                                    (both on the strictly lower triangle)
//   dS_[n] = Diag(e^{l_{L-1}}) dS' + s Qg^T dO + W^T dU
// and the gate gradient by the identity of intra.h: every factor e^{+-l_j} in a product adds
// (value o its gradient) to dL/dl_j with that sign, collected in dbz (row j+1 = dL/dl_j) and
// turned into dgk by the in-chunk reverse cumulative sum (la_intra_dgate). The score matrices'
// own terms come from la_intra_bwd; this file adds those of Qg, At, Bd, Kd and e^{l_{L-1}} S.
//
// Saved by the forward: nothing beyond the final state. The backward keeps the chunk-boundary
// states (la_ckpt: all of them, or sqrt-spaced checkpoints with group replay) and recomputes
// each chunk's score matrices, M, W, Z and U from its boundary state.
//
// Dimensions: B, T, H, K, V, N, C as in OPS.md; L = rows of the current chunk. One task is one
// (sequence n, head h) pair and writes only that pair's rows of o, dq, dk, da, db, dv, dgk
// (overwritten) and its slots of final and dinit.
#include "delta.h"
#include "intra.h"

#include <string.h>

// ---------------------------------------------------------------------------------------------
// Per-task buffers

typedef struct dp_buf {
    la_intra it;     // gates of the chunk and the score module's scratch
    float *  Aab;    // (C, C) the strict scores of a against b; backward: reused as dA scratch
    float *  Aak;    // (C, C) the strict scores of a against k
    float *  Aqb;    // (C, C) s x the scores of q against b (diagonal included)
    float *  Aqk;    // (C, C) s x the scores of q against k
    float *  M;      // (C, C) (I - Aab)^{-1}, unit lower triangular
    float *  AY;     // (C, K+V) [At | Y]: one product with M gives [W | Z]
    float *  WZ;     // (C, K+V) [W | Z]
    float *  U;      // (C, V)   W S + Z
    float *  Ez;     // (C+1, K) row 0 ones, row r+1 = e^{l_r} (gated): E1 = Ez, E0 = Ez + K
    float *  E0;     // (C, K)   e^{l_r}, a view of Ez
    float *  E1;     // (C, K)   e^{l_{r-1}}, a view of Ez (the same values one row down)
    float *  F;      // (C, K)   e^{l_{L-1} - l_r} (gated)
    float *  Qg;     // (C, K)   Q o e^{l}     (gated)
    float *  Bd;     // (C, K)   B o F         (gated)
    float *  Kd;     // (C, K)   K o F         (gated)
    float *  gL;     // (K)      e^{l_{L-1}}   (gated)
    float *  dWU;    // (C, K+V) [dW | dU]     (backward)
    float *  dAY;    // (C, K+V) [dAt | dY]    (backward)
    double * dbz;    // (C+1, K) dL/dl_{j-1} in row j (backward, gated)
    bool     gated;  // gk given (LA_INTRA_CHANNEL), else iplr (LA_INTRA_NONE)
} dp_buf;

// Carves the buffers from cv (sizes only when cv->base is NULL); returns the bytes used.
static size_t dp_layout(dp_buf * B, la_carver * cv, int64_t C, int64_t K, int64_t V, bool gated,
                        bool backward) {
    const size_t cc = (size_t)(C * C) * 4, ck = (size_t)(C * K) * 4;
    const size_t ckv = (size_t)(C * (K + V)) * 4;
    const int mode = gated ? LA_INTRA_CHANNEL : LA_INTRA_NONE;
    const size_t start = cv->used;
    void * iws = la_carve(cv, la_intra_bytes(mode, C, K, backward));
    if (iws) la_intra_init(&B->it, mode, C, K, backward, iws);
    B->gated = gated;
    B->Aab = la_carve(cv, cc);
    B->Aak = la_carve(cv, cc);
    B->Aqb = la_carve(cv, cc);
    B->Aqk = la_carve(cv, cc);
    B->M = la_carve(cv, cc);
    B->AY = la_carve(cv, ckv);
    B->WZ = la_carve(cv, ckv);
    B->U = la_carve(cv, (size_t)(C * V) * 4);
    B->Ez = gated ? la_carve(cv, (size_t)((C + 1) * K) * 4) : NULL;
    if (B->Ez)
        for (int64_t i = 0; i < K; i++) B->Ez[i] = 1.0f;  // e^{l_{-1}}; la_intra_ebx fills the rest
    B->E0 = B->Ez ? B->Ez + K : NULL;
    B->E1 = B->Ez;
    B->F = gated ? la_carve(cv, ck) : NULL;
    B->Qg = gated ? la_carve(cv, ck) : NULL;
    B->Bd = gated ? la_carve(cv, ck) : NULL;
    B->Kd = gated ? la_carve(cv, ck) : NULL;
    B->gL = gated ? la_carve(cv, (size_t)K * 4) : NULL;
    B->dWU = backward ? la_carve(cv, ckv) : NULL;
    B->dAY = backward ? la_carve(cv, ckv) : NULL;
    B->dbz = backward && gated ? la_carve(cv, (size_t)((C + 1) * K) * 8) : NULL;
    return cv->used - start;
}

// Row operands of one chunk as (pointer, row stride): the gated products live in the buffers,
// the ungated ones are the inputs themselves (every row factor is 1).
typedef struct dp_rows {
    const float * Q, * Kc, * A, * Bv, * Vc;  // inputs (row strides ldk, ldk, ldk, ldk, ldv)
    const float * Qg, * Bd, * Kd;            // Q o e^{l}, B o F, K o F
    int64_t       ldk, ldv, ldg;             // ldg: row stride of Qg, Bd, Kd (K or ldk)
} dp_rows;

static dp_rows dp_chunk_rows(const la_dp_args * x, const dp_buf * B, int64_t t0, int64_t h) {
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, ok = (t0 * H + h) * K;
    dp_rows R = { x->q + ok, x->k + ok, x->a + ok, x->b + ok, x->v + (t0 * H + h) * V,
                  NULL, NULL, NULL, H * K, H * V, H * K };
    if (B->gated) {
        R.Qg = B->Qg, R.Bd = B->Bd, R.Kd = B->Kd, R.ldg = K;
    } else {
        R.Qg = R.Q, R.Bd = R.Bv, R.Kd = R.Kc;
    }
    return R;
}

// ---------------------------------------------------------------------------------------------
// Forward pieces

// o = x o e over n floats (one loop per output stream, so it vectorises without alias checks).
static inline void dp_mul_row(float * restrict o, const float * restrict xr,
                              const float * restrict e, int64_t n) {
    for (int64_t i = 0; i < n; i++) o[i] = xr[i] * e[i];
}

// Row-scaled operands of the gated chunk, row by row: At = A o E1 (into [At | Y], row stride
// ld), Bd = B o F, Kd = K o F, and with `out` Qg = Q o E0.
LA_CLONES
static void dp_operands(const dp_buf * B, const dp_rows * R, int64_t L, int64_t K, int64_t ld,
                        bool out) {
    for (int64_t r = 0; r < L; r++) {
        const int64_t o = r * R->ldk;
        dp_mul_row(B->AY + r * ld, R->A + o, B->E1 + r * K, K);
        dp_mul_row(B->Bd + r * K, R->Bv + o, B->F + r * K, K);
        dp_mul_row(B->Kd + r * K, R->Kc + o, B->F + r * K, K);
        if (out) dp_mul_row(B->Qg + r * K, R->Q + o, B->E0 + r * K, K);
    }
}

// Gates and row-scaled operands of the chunk: Ez (e^{l_r} and e^{l_{r-1}}), F, gL, then
// dp_operands; ungated, only At = A (every row factor is 1).
static void dp_gates(const la_dp_args * x, dp_buf * B, const dp_rows * R, int64_t t0, int64_t h,
                     int64_t L, bool out) {
    const int64_t K = x->sh.K, H = x->sh.H, ld = K + x->sh.V;
    if (!B->gated) {
        la_intra_load(&B->it, NULL, 0, L);
        for (int64_t r = 0; r < L; r++)
            memcpy(B->AY + r * ld, R->A + r * R->ldk, (size_t)K * sizeof(float));
        return;
    }
    la_intra_load(&B->it, x->gk + (t0 * H + h) * K, H * K, L);
    la_intra_ebx(&B->it, 0, B->E0);
    la_intra_etail(&B->it, B->F);
    la_intra_elast(&B->it, B->gL);
    dp_operands(B, R, L, K, ld, out);
}

// M = (I - Aab)^{-1} (L x L, row stride C), by forward substitution on M = I + Aab M, one row
// at a time and vectorised over the columns: M_r = e_r + sum_{j<r} Aab_rj M_j, where row j of
// M is zero beyond column j. L^3/6 multiply-adds, small next to the chunk's products.
LA_CLONES
static void dp_inverse(const float * restrict Aab, float * restrict M, int64_t L, int64_t C) {
    for (int64_t r = 0; r < L; r++) {
        float * restrict m = M + r * C;
        for (int64_t c = 0; c < L; c++) m[c] = 0.0f;
        for (int64_t j = 0; j < r; j++) {
            const float a = Aab[r * C + j];
            const float * restrict mj = M + j * C;
            for (int64_t c = 0; c < j; c++) m[c] += a * mj[c];
            m[j] += a;
        }
        m[r] = 1.0f;
    }
}

// Products with a triangular L x L factor T (row stride ldt), in row blocks so the zero
// triangle is mostly skipped: two blocks do 3/4 of the dense work. Blocks of 32 rows (16 for
// L <= 32) keep the GEMM near its large-block rate. T's zero triangle may be read (it is 0).
static int64_t dp_tri_block(int64_t L) { return L > 32 ? 32 : 16; }

// C = alpha T B + beta C, T lower triangular: rows [r0, r1) of C read T's columns [0, r1).
static void dp_gemm_lower(int64_t L, int64_t N, float alpha, const float * T, int64_t ldt,
                          const float * Bm, int64_t ldb, float beta, float * Cm, int64_t ldc) {
    const int64_t tb = dp_tri_block(L);
    for (int64_t r0 = 0; r0 < L; r0 += tb) {
        const int64_t r1 = LA_MIN(r0 + tb, L);
        la_kern()->gemm(false, false, r1 - r0, N, r1, alpha, T + r0 * ldt, ldt, Bm, ldb, beta,
                        Cm + r0 * ldc, ldc);
    }
}

// C = alpha T^T B + beta C, T lower triangular: rows [r0, r1) of C (columns of T) read T's
// rows [r0, L).
static void dp_gemm_upper(int64_t L, int64_t N, float alpha, const float * T, int64_t ldt,
                          const float * Bm, int64_t ldb, float beta, float * Cm, int64_t ldc) {
    const int64_t tb = dp_tri_block(L);
    for (int64_t r0 = 0; r0 < L; r0 += tb) {
        const int64_t r1 = LA_MIN(r0 + tb, L);
        la_kern()->gemm(true, false, r1 - r0, N, L - r0, alpha, T + r0 * ldt + r0, ldt,
                        Bm + r0 * ldb, ldb, beta, Cm + r0 * ldc, ldc);
    }
}

// C = X Y^T (L x L) on the lower triangle, diagonal included; the entries above the diagonal
// blocks are left undefined (la_intra_bwd reads only its pattern).
static void dp_gemm_lower_out(int64_t L, int64_t Kd, const float * X, int64_t ldx,
                              const float * Y, int64_t ldy, float * Cm, int64_t ldc) {
    const int64_t tb = dp_tri_block(L);
    for (int64_t r0 = 0; r0 < L; r0 += tb) {
        const int64_t r1 = LA_MIN(r0 + tb, L);
        la_kern()->gemm(false, true, r1 - r0, r1, Kd, 1.0f, X + r0 * ldx, ldx, Y, ldy, 0.0f,
                        Cm + r0 * ldc, ldc);
    }
}

// The chunk's low-rank reads: Aab, Aak, M, W, Z and U = W S + Z (ALGORITHMS.md 3.6).
static void dp_reads(const la_dp_args * x, dp_buf * B, const dp_rows * R, const float * S,
                     int64_t L) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t K = x->sh.K, V = x->sh.V, C = x->C, ld = K + V;
    la_intra_fwd(&B->it, 1, true, 1.0f, R->A, R->ldk, R->Bv, R->ldk, B->Aab, C);
    la_intra_fwd(&B->it, 1, true, 1.0f, R->A, R->ldk, R->Kc, R->ldk, B->Aak, C);
    dp_inverse(B->Aab, B->M, L, C);
    dp_gemm_lower(L, V, 1.0f, B->Aak, C, R->Vc, R->ldv, 0.0f, B->AY + K, ld);  // Y = Aak V
    dp_gemm_lower(L, ld, 1.0f, B->M, C, B->AY, ld, 0.0f, B->WZ, ld);          // [W|Z]
    for (int64_t r = 0; r < L; r++)
        memcpy(B->U + r * V, B->WZ + r * ld + K, (size_t)V * sizeof(float));
    gemm(false, false, L, V, K, 1.0f, B->WZ, ld, S, V, 1.0f, B->U, V);                // U
}

// S <- Diag(e^{l_{L-1}}) S + Bd^T U + Kd^T V.
LA_CLONES
static void dp_decay_rows(float * restrict S, const float * restrict g, int64_t K, int64_t V) {
    for (int64_t i = 0; i < K; i++) {
        const float gi = g[i];
        float * restrict Si = S + i * V;
        for (int64_t j = 0; j < V; j++) Si[j] *= gi;
    }
}

static void dp_state(const la_dp_args * x, const dp_buf * B, const dp_rows * R, float * S,
                     int64_t L) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t K = x->sh.K, V = x->sh.V;
    if (B->gated) dp_decay_rows(S, B->gL, K, V);
    gemm(true, false, K, V, L, 1.0f, R->Bd, R->ldg, B->U, V, 1.0f, S, V);
    gemm(true, false, K, V, L, 1.0f, R->Kd, R->ldg, R->Vc, R->ldv, 1.0f, S, V);
}

// Prefetch the next chunk's rows of every input (see la_prefetch_rows).
static void dp_prefetch_next(const la_dp_args * x, int64_t t1, int64_t eos, int64_t h) {
    if (t1 >= eos) return;
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, L = LA_MIN(x->C, eos - t1);
    const int64_t ok = (t1 * H + h) * K;
    la_prefetch_rows(x->q + ok, H * K, L, K);
    la_prefetch_rows(x->k + ok, H * K, L, K);
    la_prefetch_rows(x->a + ok, H * K, L, K);
    la_prefetch_rows(x->b + ok, H * K, L, K);
    la_prefetch_rows(x->v + (t1 * H + h) * V, H * V, L, V);
    if (x->gk) la_prefetch_rows(x->gk + ok, H * K, L, K);
}

static void dp_fwd_task(const la_dp_args * x, int64_t n, int64_t h, void * ws) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, C = x->C, ldv = H * V;
    la_carver cv = { (char *)ws, 0 };
    float * S = la_carve(&cv, (size_t)(K * V) * 4);  // (K, V) unless final holds the state
    dp_buf B;
    dp_layout(&B, &cv, C, K, V, x->gk != NULL, false);
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    S = la_state_begin(S, x->final, x->init, n * H + h, K * V);
    for (int64_t t0 = bos; t0 < eos; t0 += C) {
        const int64_t L = LA_MIN(C, eos - t0);
        const dp_rows R = dp_chunk_rows(x, &B, t0, h);
        float * Oc = x->o + (t0 * H + h) * V;  // (L, V), row stride ldv
        dp_prefetch_next(x, t0 + C, eos, h);
        dp_gates(x, &B, &R, t0, h, L, true);
        dp_reads(x, &B, &R, S, L);
        la_intra_fwd(&B.it, 0, false, x->scale, R.Q, R.ldk, R.Bv, R.ldk, B.Aqb, C);
        la_intra_fwd(&B.it, 0, false, x->scale, R.Q, R.ldk, R.Kc, R.ldk, B.Aqk, C);
        // O = s Qg S + Aqb U + Aqk V
        gemm(false, false, L, V, K, x->scale, R.Qg, R.ldg, S, V, 0.0f, Oc, ldv);
        dp_gemm_lower(L, V, 1.0f, B.Aqb, C, B.U, V, 1.0f, Oc, ldv);
        dp_gemm_lower(L, V, 1.0f, B.Aqk, C, R.Vc, ldv, 1.0f, Oc, ldv);
        dp_state(x, &B, &R, S, L);
    }
}

// ---------------------------------------------------------------------------------------------
// Backward

// la_ckpt's step: S <- the state after chunk `chunk` of the task's sequence.
typedef struct dp_step_ctx {
    const la_dp_args * x;
    dp_buf *           B;
    int64_t            bos, eos, h;
} dp_step_ctx;

static void dp_chunk_step(const void * ctx, int64_t chunk, float * S) {
    const dp_step_ctx * s = ctx;
    const la_dp_args * x = s->x;
    const int64_t t0 = s->bos + chunk * x->C, L = LA_MIN(x->C, s->eos - t0);
    const dp_rows R = dp_chunk_rows(x, s->B, t0, s->h);
    dp_gates(x, s->B, &R, t0, s->h, L, false);
    dp_reads(x, s->B, &R, S, L);
    dp_state(x, s->B, &R, S, L);
}

// Gate terms of a row-scaled operand P = X o E with gradient dP, where E = e^{+l_r}
// (sign +1, row r+1 of dbz) or F = e^{l_{L-1} - l_r} (sign -1 into row r+1, +1 into row L):
// dbz += (dP o P) at those rows; then dX = dP o E in place (dP is overwritten, row stride ld).
LA_CLONES
static void dp_scaled_bwd(int64_t L, int64_t K, float * restrict dP, int64_t ld,
                          const float * restrict P, const float * restrict E,
                          double * restrict dbz, bool tail) {
    double * restrict last = dbz + L * K;
    for (int64_t r = 0; r < L; r++) {
        float * restrict d = dP + r * ld;
        const float * restrict p = P + r * K, * restrict e = E + r * K;
        double * restrict z = dbz + (r + 1) * K;
        if (tail) {
            for (int64_t i = 0; i < K; i++) {
                const double t = (double)(d[i] * p[i]);
                z[i] -= t;
                last[i] += t;
            }
        } else {
            for (int64_t i = 0; i < K; i++) z[i] += (double)(d[i] * p[i]);
        }
        for (int64_t i = 0; i < K; i++) d[i] *= e[i];
    }
}

// At = A o e^{l_{r-1}}: da = dAt o e^{l_{r-1}} (overwrites da) and dbz[r] += dAt o At.
LA_CLONES
static void dp_at_bwd(int64_t L, int64_t K, const float * restrict dAt, const float * restrict At,
                      int64_t ld, const float * restrict E1, double * restrict dbz,
                      float * restrict da, int64_t ldk) {
    for (int64_t r = 0; r < L; r++) {
        const float * restrict d = dAt + r * ld, * restrict p = At + r * ld;
        const float * restrict e = E1 + r * K;
        double * restrict z = dbz + r * K;
        float * restrict o = da + r * ldk;
        for (int64_t i = 0; i < K; i++) {
            z[i] += (double)(d[i] * p[i]);
            o[i] = d[i] * e[i];
        }
    }
}

// dL/dl_{L-1} from Diag(e^{l_{L-1}}) S: dbz[L] += e^{l_{L-1}} o rowsum(dS' o S).
LA_CLONES
static void dp_decay_bwd(int64_t K, int64_t V, const float * restrict dS,
                         const float * restrict S, const float * restrict gL,
                         double * restrict last) {
    for (int64_t i = 0; i < K; i++)
        last[i] += (double)gL[i] * (double)la_dot_lanes(dS + i * V, S + i * V, V);
}

static void dp_bwd_task(const la_dp_args * x, int64_t n, int64_t h, void * ws) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, C = x->C, KV = K * V, ld = K + V;
    const int64_t ldk = H * K, ldv = H * V;
    const float s = x->scale;
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    const int64_t nch = (eos - bos + C - 1) / C, nch_max = (x->maxlen + C - 1) / C;
    const int64_t Mg = la_ckpt_group(nch_max);
    la_carver cv = { (char *)ws, 0 };
    float * ckpt = la_carve(&cv, (size_t)(la_ckpt_count(nch_max, Mg) * KV) * 4);
    float * grp = la_carve(&cv, (size_t)(Mg * KV) * 4);  // (Mg, K, V) boundary states S_[c]
    float * ST = la_carve(&cv, (size_t)KV * 4);          // (K, V) pass 1's running state
    float * dS = la_carve(&cv, (size_t)KV * 4);          // (K, V) dL/dS_[c+1], then dL/dS_[c]
    dp_buf B;
    dp_layout(&B, &cv, C, K, V, x->gk != NULL, true);
    float * dA = B.Aab;  // (C, C) Aab is dead once M is formed

    // Pass 1: the boundary states S_[c] (or their checkpoints).
    dp_step_ctx sc = { x, &B, bos, eos, h };
    la_ckpt ck = { ckpt, grp, Mg, nch, KV };
    la_state_load(ST, x->init, n * H + h, KV);
    la_ckpt_run(&ck, ST, dp_chunk_step, &sc);
    // Pass 2: chunks in reverse, dS = dL/dS_[c+1] on entry to chunk c.
    if (x->dfinal) memcpy(dS, x->dfinal + (n * H + h) * KV, (size_t)KV * sizeof(float));
    else memset(dS, 0, (size_t)KV * sizeof(float));
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t t0 = bos + ci * C, L = LA_MIN(C, eos - t0), ok = (t0 * H + h) * K;
        const float * Sc = la_ckpt_state(&ck, ci, dp_chunk_step, &sc);  // (K, V) S_[c]
        const dp_rows R = dp_chunk_rows(x, &B, t0, h);
        const float * dOc = x->dout + (t0 * H + h) * V;  // (L, V), row stride ldv
        float * dQc = x->dq + ok, * dKc = x->dk + ok, * dAc = x->da + ok, * dBc = x->db + ok;
        float * dVc = x->dv + (t0 * H + h) * V;
        double * dbz = B.dbz;
        float * dW = B.dWU, * dU = B.dWU + K, * dAt = B.dAY, * dY = B.dAY + K;  // row stride ld
        // Recompute the chunk's forward quantities from S_[c].
        dp_gates(x, &B, &R, t0, h, L, true);
        dp_reads(x, &B, &R, Sc, L);
        la_intra_fwd(&B.it, 0, false, s, R.Q, ldk, R.Bv, ldk, B.Aqb, C);
        la_intra_fwd(&B.it, 0, false, s, R.Q, ldk, R.Kc, ldk, B.Aqk, C);
        if (dbz) memset(dbz, 0, (size_t)((L + 1) * K) * sizeof(double));

        // O = s Qg S + Aqb U + Aqk V ;  S' = Diag(gL) S + Bd^T U + Kd^T V:
        //   dU = Aqb^T dO + Bd dS' ;  dV = Aqk^T dO + Kd dS' (+ Aak^T dY below)
        dp_gemm_upper(L, V, 1.0f, B.Aqb, C, dOc, ldv, 0.0f, dU, ld);
        gemm(false, false, L, V, K, 1.0f, R.Bd, R.ldg, dS, V, 1.0f, dU, ld);
        dp_gemm_upper(L, V, 1.0f, B.Aqk, C, dOc, ldv, 0.0f, dVc, ldv);
        gemm(false, false, L, V, K, 1.0f, R.Kd, R.ldg, dS, V, 1.0f, dVc, ldv);
        //   dQg = s dO S^T ;  dBd = U dS'^T ;  dKd = V dS'^T, then through the row factors
        gemm(false, true, L, K, V, s, dOc, ldv, Sc, V, 0.0f, dQc, ldk);
        gemm(false, true, L, K, V, 1.0f, B.U, V, dS, V, 0.0f, dBc, ldk);
        gemm(false, true, L, K, V, 1.0f, R.Vc, ldv, dS, V, 0.0f, dKc, ldk);
        if (B.gated) {
            dp_scaled_bwd(L, K, dQc, ldk, B.Qg, B.E0, dbz, false);
            dp_scaled_bwd(L, K, dBc, ldk, B.Bd, B.F, dbz, true);
            dp_scaled_bwd(L, K, dKc, ldk, B.Kd, B.F, dbz, true);
            dp_decay_bwd(K, V, dS, Sc, B.gL, dbz + L * K);
        }
        //   dAqb = dO U^T ;  dAqk = dO V^T  (Aqb, Aqk carry the factor s)
        dp_gemm_lower_out(L, V, dOc, ldv, B.U, V, dA, C);
        la_intra_bwd(&B.it, 0, false, s, dA, C, R.Q, ldk, R.Bv, ldk, dQc, ldk, dBc, ldk, dbz);
        dp_gemm_lower_out(L, V, dOc, ldv, R.Vc, ldv, dA, C);
        la_intra_bwd(&B.it, 0, false, s, dA, C, R.Q, ldk, R.Kc, ldk, dQc, ldk, dKc, ldk, dbz);

        // U = W S + Z, [W | Z] = M [At | Y]:  dW = dU S^T ;  [dAt | dY] = M^T [dW | dU]
        gemm(false, true, L, K, V, 1.0f, dU, ld, Sc, V, 0.0f, dW, ld);
        dp_gemm_upper(L, ld, 1.0f, B.M, C, B.dWU, ld, 0.0f, B.dAY, ld);
        //   Y = Aak V:  dV += Aak^T dY ;  dAak = dY V^T
        dp_gemm_upper(L, V, 1.0f, B.Aak, C, dY, ld, 1.0f, dVc, ldv);
        //   At = A o e^{l_{r-1}}
        if (B.gated) dp_at_bwd(L, K, dAt, B.AY, ld, B.E1, dbz, dAc, ldk);
        else
            for (int64_t r = 0; r < L; r++)
                memcpy(dAc + r * ldk, dAt + r * ld, (size_t)K * sizeof(float));
        //   M = (I - Aab)^{-1}:  dAab = M^T dM M^T = dAt W^T + dY Z^T = [dAt | dY] [W | Z]^T
        dp_gemm_lower_out(L, ld, B.dAY, ld, B.WZ, ld, dA, C);
        la_intra_bwd(&B.it, 1, true, 1.0f, dA, C, R.A, ldk, R.Bv, ldk, dAc, ldk, dBc, ldk, dbz);
        dp_gemm_lower_out(L, V, dY, ld, R.Vc, ldv, dA, C);
        la_intra_bwd(&B.it, 1, true, 1.0f, dA, C, R.A, ldk, R.Kc, ldk, dAc, ldk, dKc, ldk, dbz);

        // dS_[c] = Diag(gL) dS' + s Qg^T dO + W^T dU  (last: every line above reads dS')
        if (B.gated) dp_decay_rows(dS, B.gL, K, V);
        gemm(true, false, K, V, L, s, R.Qg, R.ldg, dOc, ldv, 1.0f, dS, V);
        gemm(true, false, K, V, L, 1.0f, B.WZ, ld, dU, ld, 1.0f, dS, V);
        if (B.gated) la_intra_dgate(&B.it, dbz, x->dgk + ok, ldk);
    }
    if (x->dinit) memcpy(x->dinit + (n * H + h) * KV, dS, (size_t)KV * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Entry points (delta.h)

// The public workspace query does not see gk, so the size covers both layouts (with and
// without the gate buffers); the task carves the one it uses.
size_t la_dp_chunk_bytes(const la_dp_args * x, bool backward) {
    const int64_t C = x->C, K = x->sh.K, V = x->sh.V, KV = K * V;
    la_carver cv = { NULL, 0 };
    dp_buf B;
    if (backward) {  // checkpoints, one group of states, the running state and dS
        const int64_t nch = (x->maxlen + C - 1) / C, Mg = la_ckpt_group(nch);
        la_carve(&cv, (size_t)(la_ckpt_count(nch, Mg) * KV) * 4);
        la_carve(&cv, (size_t)(Mg * KV) * 4);
        la_carve(&cv, (size_t)KV * 4);
        la_carve(&cv, (size_t)KV * 4);
    } else {
        la_carve(&cv, (size_t)KV * 4);
    }
    const size_t states = cv.used;
    const size_t gated = dp_layout(&B, &cv, C, K, V, true, backward);
    const size_t plain = dp_layout(&B, &cv, C, K, V, false, backward);
    return states + LA_MAX(gated, plain);
}

void la_dp_chunk_task(const la_dp_args * x, int64_t n, int64_t h, void * ws, bool backward) {
    if (backward) dp_bwd_task(x, n, h, ws);
    else dp_fwd_task(x, n, h, ws);
}
