// Chunk form of the dn engine: delta_rule, gated_delta_rule and kda (OPS.md 2.6-2.8;
// ALGORITHMS.md 3.3-3.5), forward and chunkwise backward, on the effective inputs of delta.h:
//
//   P = D_t S_{t-1} ;  u_t = beta_t (v_t - P^T k_t) ;  S_t = P + k_t u_t^T ;  o_t = s S_t^T q_t
//   D_t = I | e^{g_t} I | Diag(e^{g_t})                         (gate NONE | SCALAR | CHANNEL)
//
// One code path serves the three gates: they enter only through the intra-chunk module
// (intra.h), whose row factors are ones (NONE) or rows broadcast over K (SCALAR).
//
// Forward, per chunk of L <= C tokens with b the in-chunk cumulative gate (L, K), E = e^{b},
// F = e^{b_{L-1} - b}, gamma = e^{b_{L-1}} (K), S = S_[n] (ALGORITHMS.md 3.4, 3.5):
//   Akk_rc = sum_d k_rd k_cd e^{b_rd - b_cd}                 (r > c)
//   Tm     = (I + Diag(beta) Akk)^{-1}                       (unit lower triangular)
//   Khat   = Diag(beta) (K o E) ;  Vhat = Diag(beta) V
//   Vn     = Tm (Vhat - Khat S)        = U - W S with W = Tm Khat, U = Tm Vhat (W is never formed)
//   Aqk_rc = s sum_d q_rd k_cd e^{b_rd - b_cd}               (r >= c; s folded in)
//   O      = s (Q o E) S + Aqk Vn
//   S_next = Diag(gamma) S + (K o F)^T Vn
//
// Backward, chunks in reverse, S_[n] from la_ckpt, dS = dL/dS_[n+1] (dfinal or 0 at the end).
// With Y = Vhat - Khat S (so Vn = Tm Y) and Z = Tm^T dVn the WY terms collapse: dTm = dVn Y^T,
// so no dW, dU products are formed, and dLm = -Tm^T dTm Tm^T = -Z Vn^T (Lm = Diag(beta) Akk).
//   Qg = Q o E ;  Kd = K o F
//   dVn     = Aqk^T dO + Kd dS
//   Z       = Tm^T dVn ;   dVhat = Z ;   dKhat = -Z S^T
//   dS_[n]  = Diag(gamma) dS + s Qg^T dO - Khat^T Z
//   dQg     = s dO S^T           ->  dq += dQg o E ;            dbz[r+1] += dQg o Qg
//   dAqk    = dO Vn^T (r >= c)   ->  la_intra_bwd (X = Q, Y = K, alpha = s) into dq, dk, dbz
//   dKd     = Vn dS^T            ->  dk += dKd o F ;            dbz[r+1] -= dKd o Kd,
//                                                               dbz[L]   += sum_r dKd_r o Kd_r
//   gamma S ->                       dbz[L] += rowsum_V (dS o gamma S)
//   dLm     = -StrictTril(Z Vn^T):
//                                    dbeta_r += sum_c dLm_rc Akk_rc ;  dAkk_rc = beta_r dLm_rc
//                                    -> la_intra_bwd (X = Y = K) into dk, dbz
//   Khat    ->                       dk += beta dKhat o E ;  dbeta_r += dKhat_r . (K o E)_r ;
//                                    dbz[r+1] += dKhat o Khat
//   Vhat    ->                       dv = beta Z ;  dbeta_r += Z_r . v_r
//   dg      = la_intra_dgate(dbz)    (reverse in-chunk cumulative sum; summed over K for SCALAR)
// dbz is dL/db in double (intra.h: row j is b_{j-1}); every gate dependency sits inside the
// chunk, so across chunks only dS travels. dinit = dS after chunk 0.
//
// Saved by the forward: nothing. The backward runs the state pass once (la_ckpt: every
// chunk-boundary state up to LA_CKPT_ALL chunks, sqrt-spaced checkpoints beyond), keeping each
// chunk's Vn, Akk and Tm in a chunk cache of la_ckpt_group slots, and recomputes the rest of a
// chunk from its boundary state (Vn, Akk, Tm too for the one chunk per replayed group whose
// slot was overwritten). Backward scratch per thread: la_ckpt's states plus M (C V + 2 C^2)
// floats of chunk cache, M = la_ckpt_group (at K = V = 128, C = 64: 1.5x the states alone).
//
// Cost: the products with a triangular factor (Tm, Aqk, and the backward's dO Vn^T, Z Vn^T)
// skip the blocks above the diagonal. Memory: one head's rows sit H*K or HV*V floats apart in
// the (B*T, H, D) layouts; at 4 KiB strides (H*K = 1024) all rows of a chunk map to the same
// few cache sets and the hardware prefetcher does not follow them (measured on Zen 4: computing
// from the rows in place, with or without a prefetch of the whole next chunk, ran 15-20% slower
// than on cached rows). So each chunk's input rows are staged into contiguous buffers while the
// previous chunk computes: a few rows are prefetched (into L2) between two of its products and
// copied at the next (double-buffered, dn_stage); outputs are formed contiguously and stored
// once per chunk.
//
// Dimensions: B, T, H, HV, K, V, N, C as in OPS.md. A task is one (sequence n, value head hv);
// value head hv reads q/k head hv / (HV / H). q, k rows are H*K floats apart; v, o, dq, dk, dv
// rows HV*V or HV*K apart.
#include "delta.h"
#include "intra.h"

#include <string.h>

#define DN_TRI 16  // row block of the triangular products: blocks above the diagonal are skipped
#define DN_PF  4   // rows ahead that the synchronous copy loops prefetch

// ---------------------------------------------------------------------------------------------
// Per-task buffers (carved once per task, reused by every chunk)

// One chunk's input rows, staged contiguously.
typedef struct dn_in {
    float * q, * k;         // (C, K)
    float * v;              // (C, V)
    float * dout;           // (C, V) backward only
    float * g;              // (C, K) CHANNEL only: the log gates
    int64_t t0, L;          // the staged chunk (t0 < 0: none)
    bool    has_q, has_do;  // q, dout staged too
} dn_in;

typedef struct dn_buf {
    la_intra it;     // the loaded chunk's gates and the intra module's scratch
    int64_t  lc;     // row stride of the (C, C) blocks: C rounded up to 16
    dn_in    in[2];  // staged inputs: the current chunk's and the next one's
    // views of the current chunk's staged rows
    const float * Q, * Kc, * Vc, * dO;  // (C, K), (C, K), (C, V), (C, V)
    float *  E;      // (C, K) e^{b}
    float *  F;      // (C, K) e^{b_{L-1} - b}
    float *  gam;    // (K)    e^{b_{L-1}}
    float *  bt;     // (C)    beta of the chunk's rows
    float *  Akk;    // (C, lc) Akk, strictly lower triangular (zero elsewhere)
    float *  Tm;     // (C, lc) (I + Diag(beta) Akk)^{-1}, zero above the diagonal
    float *  Akk_own, * Tm_own;  // Akk, Tm point here, or into the backward's chunk cache
    float *  Aqk;    // (C, lc) s Aqk, zero above the diagonal
    float *  Qg;     // (C, K) Q o E
    float *  Kh;     // (C, K) Khat = Diag(beta) (K o E)
    float *  Kd;     // (C, K) K o F
    float *  Y;      // (C, V) Vhat, then Vhat - Khat S; in the backward then Z = Tm^T dVn
    float *  Vn;     // (C, V) pseudo-values: Vn_own, or the backward's cached copy
    float *  Vn_own; // (C, V)
    float *  O;      // (C, V) forward: the chunk's output rows before they are stored
    // backward only
    float *  dQ;     // (C, K) the chunk's dq rows before they are stored
    float *  dK;     // (C, K) dk rows, likewise
    float *  dV;     // (C, V) dv rows, likewise
    float *  dVn;    // (C, V) dL/dVn
    float *  dKh;    // (C, K) dL/dKhat
    float *  dA;     // (C, lc) dO Vn^T, then beta_r dLm_rc
    float *  tmp;    // (K)    one row of dKhat o E
    float *  dbt;    // (C)    dL/dbeta of the chunk's rows
    double * dbz;    // (C+1, K) dL/db (intra.h)
    double * zL;     // (K)    sum_r dKd_r o Kd_r, added to dbz[L]
} dn_buf;

static void dn_layout(dn_buf * B, la_carver * cv, int mode, int64_t C, int64_t K, int64_t V,
                      bool backward) {
    const int64_t lc = (C + 15) / 16 * 16;
    const size_t ck = (size_t)(C * K) * 4, cv4 = (size_t)(C * V) * 4, cc = (size_t)(C * lc) * 4;
    void * iws = la_carve(cv, la_intra_bytes(mode, C, K, backward));
    if (iws) la_intra_init(&B->it, mode, C, K, backward, iws);
    B->lc = lc;
    for (int i = 0; i < 2; i++) {
        dn_in * in = &B->in[i];
        in->q = la_carve(cv, ck);
        in->k = la_carve(cv, ck);
        in->v = la_carve(cv, cv4);
        in->dout = backward ? la_carve(cv, cv4) : NULL;
        in->g = mode == LA_DN_GATE_CHANNEL ? la_carve(cv, ck) : NULL;
        in->t0 = -1;
        in->L = 0;
        in->has_q = in->has_do = false;
    }
    B->E = la_carve(cv, ck);
    B->F = la_carve(cv, ck);
    B->gam = la_carve(cv, (size_t)K * 4);
    B->bt = la_carve(cv, (size_t)C * 4);
    B->Akk = B->Akk_own = la_carve(cv, cc);
    B->Tm = B->Tm_own = la_carve(cv, cc);
    B->Aqk = la_carve(cv, cc);
    B->Qg = la_carve(cv, ck);
    B->Kh = la_carve(cv, ck);
    B->Kd = la_carve(cv, ck);
    B->Y = la_carve(cv, cv4);
    B->Vn = B->Vn_own = la_carve(cv, cv4);
    B->O = backward ? NULL : la_carve(cv, cv4);
    B->dQ = backward ? la_carve(cv, ck) : NULL;
    B->dK = backward ? la_carve(cv, ck) : NULL;
    B->dV = backward ? la_carve(cv, cv4) : NULL;
    B->dVn = backward ? la_carve(cv, cv4) : NULL;
    B->dKh = backward ? la_carve(cv, ck) : NULL;
    B->dA = backward ? la_carve(cv, cc) : NULL;
    B->tmp = backward ? la_carve(cv, (size_t)K * 4) : NULL;
    B->dbt = backward ? la_carve(cv, (size_t)C * 4) : NULL;
    B->dbz = backward ? la_carve(cv, (size_t)((C + 1) * K) * 8) : NULL;
    B->zL = backward ? la_carve(cv, (size_t)K * 8) : NULL;
}

// Offset and row stride of token t0, value head hv in a gate-shaped tensor (g, dg): (B*T, HV, K)
// for CHANNEL, (B*T, HV) for SCALAR. NONE has no gate tensor.
static int64_t gate_off(const la_dn_args * x, int64_t t0, int64_t hv, int64_t * ld) {
    const int64_t HV = x->sh.HV, K = x->sh.K;
    if (x->gate == LA_DN_GATE_CHANNEL) {
        *ld = HV * K;
        return (t0 * HV + hv) * K;
    }
    *ld = HV;
    return t0 * HV + hv;
}

// ---------------------------------------------------------------------------------------------
// Staging: a chunk's rows copied into a dn_in while the previous chunk computes

typedef struct dn_stage {
    dn_in *       dst;
    const float * q, * k, * v, * dout, * g;  // source row 0 (q, dout, g may be NULL)
    int64_t       ldk, ldv, ldg, K, V;
    int64_t       t0, L;                     // the chunk (L = 0: nothing to stage)
    int64_t       pf, cp, batch;             // rows prefetched, rows copied, rows per step
} dn_stage;

// Prefetches the cache lines of one row: for reading into L2 only (locality 2: staged rows are
// copied a product later, and brought into L1 they would only evict the products' operands
// from the few L1 sets that 4 KiB-strided rows share), for writing into L1.
static inline void prefetch_row(const float * p, int64_t n, bool write) {
    for (int64_t j = 0; j < n; j += 16) {
        if (write) __builtin_prefetch(p + j, 1, 3);
        else __builtin_prefetch(p + j, 0, 2);
    }
}

// Starts staging chunk (t0, L) of value head hv into dst (t0 < 0: nothing), in about `steps`
// calls of dn_stage_step before dn_stage_finish.
static dn_stage dn_stage_begin(const la_dn_args * x, dn_in * dst, int64_t t0, int64_t L,
                               int64_t hv, bool with_q, bool with_do, int64_t steps) {
    const int64_t H = x->sh.H, HV = x->sh.HV, K = x->sh.K, V = x->sh.V, hq = hv / (HV / H);
    dn_stage st = { dst, NULL, NULL, NULL, NULL, NULL, H * K, HV * V, 0, K, V, t0, 0, 0, 0, 1 };
    if (t0 < 0 || L <= 0) return st;
    st.L = L;
    st.batch = (L + steps - 1) / steps;
    st.q = with_q ? x->q + (t0 * H + hq) * K : NULL;
    st.k = x->k + (t0 * H + hq) * K;
    st.v = x->v + (t0 * HV + hv) * V;
    st.dout = with_do ? x->dout + (t0 * HV + hv) * V : NULL;
    if (x->gate == LA_DN_GATE_CHANNEL) st.g = x->g + gate_off(x, t0, hv, &st.ldg);
    dst->t0 = -1;  // invalid until finished
    return st;
}

static void dn_stage_prefetch(const dn_stage * st, int64_t r) {
    if (st->q) prefetch_row(st->q + r * st->ldk, st->K, false);
    prefetch_row(st->k + r * st->ldk, st->K, false);
    prefetch_row(st->v + r * st->ldv, st->V, false);
    if (st->dout) prefetch_row(st->dout + r * st->ldv, st->V, false);
    if (st->g) prefetch_row(st->g + r * st->ldg, st->K, false);
}

static void dn_stage_copy(const dn_stage * st, int64_t r) {
    dn_in * d = st->dst;
    const size_t kb = (size_t)st->K * sizeof(float), vb = (size_t)st->V * sizeof(float);
    if (st->q) memcpy(d->q + r * st->K, st->q + r * st->ldk, kb);
    memcpy(d->k + r * st->K, st->k + r * st->ldk, kb);
    memcpy(d->v + r * st->V, st->v + r * st->ldv, vb);
    if (st->dout) memcpy(d->dout + r * st->V, st->dout + r * st->ldv, vb);
    if (st->g) memcpy(d->g + r * st->K, st->g + r * st->ldg, kb);
}

// Copies the rows the previous step prefetched (their misses overlapped with the product in
// between), then prefetches the next batch.
static void dn_stage_step(dn_stage * st) {
    for (; st->cp < st->pf; st->cp++) dn_stage_copy(st, st->cp);
    const int64_t r1 = LA_MIN(st->L, st->pf + st->batch);
    for (; st->pf < r1; st->pf++) dn_stage_prefetch(st, st->pf);
}

// Copies what is left (prefetching DN_PF rows ahead) and marks the chunk staged.
static void dn_stage_finish(dn_stage * st) {
    if (st->L == 0) return;
    for (; st->cp < st->L; st->cp++) {
        const int64_t ra = st->cp + DN_PF;
        if (ra >= st->pf && ra < st->L) dn_stage_prefetch(st, ra);
        dn_stage_copy(st, st->cp);
    }
    dn_in * d = st->dst;
    d->t0 = st->t0;
    d->L = st->L;
    d->has_q = st->q != NULL;
    d->has_do = st->dout != NULL;
}

// The buffer holding chunk (t0, L) with what the caller needs, staging it now if neither does;
// *other gets the other buffer, free for the next chunk.
static dn_in * dn_current(const la_dn_args * x, dn_buf * B, int64_t t0, int64_t L, int64_t hv,
                          bool with_q, bool with_do, dn_in ** other) {
    for (int i = 0; i < 2; i++) {
        dn_in * in = &B->in[i];
        if (in->t0 == t0 && in->L == L && (in->has_q || !with_q) && (in->has_do || !with_do)) {
            *other = &B->in[1 - i];
            return in;
        }
    }
    dn_stage st = dn_stage_begin(x, &B->in[0], t0, L, hv, with_q, with_do, 1);
    dn_stage_finish(&st);
    *other = &B->in[1];
    return &B->in[0];
}

// Stores packed rows src (L, n) to rows ld floats apart, prefetching DN_PF rows ahead.
static void dn_store_rows(float * dst, int64_t ld, const float * src, int64_t L, int64_t n) {
    for (int64_t r = 0; r < L; r++) {
        if (r + DN_PF < L) prefetch_row(dst + (r + DN_PF) * ld, n, true);
        memcpy(dst + r * ld, src + r * n, (size_t)n * sizeof(float));
    }
}

// ---------------------------------------------------------------------------------------------
// Triangular products by row blocks of DN_TRI, skipping the blocks above the diagonal

// C (L, N) = alpha A B + beta C, A (L, L) lower triangular: row block [r0, r1) reads A's
// columns [0, r1).
static void tri_nn(int64_t L, int64_t N, float alpha, const float * A, int64_t lda,
                   const float * Bm, int64_t ldb, float beta, float * Cm, int64_t ldc) {
    la_gemm_fn gemm = la_kern()->gemm;
    for (int64_t r0 = 0; r0 < L; r0 += DN_TRI) {
        const int64_t r1 = LA_MIN(r0 + DN_TRI, L);
        gemm(false, false, r1 - r0, N, r1, alpha, A + r0 * lda, lda, Bm, ldb, beta,
             Cm + r0 * ldc, ldc);
    }
}

// C (L, N) = alpha A^T B + beta C, A (L, L) lower triangular: row c of A^T B sums rows r >= c,
// so row block [c0, c1) reads rows [c0, L) of A and B.
static void tri_tn(int64_t L, int64_t N, float alpha, const float * A, int64_t lda,
                   const float * Bm, int64_t ldb, float beta, float * Cm, int64_t ldc) {
    la_gemm_fn gemm = la_kern()->gemm;
    for (int64_t c0 = 0; c0 < L; c0 += DN_TRI) {
        const int64_t c1 = LA_MIN(c0 + DN_TRI, L);
        gemm(true, false, c1 - c0, N, L - c0, alpha, A + c0 * lda + c0, lda, Bm + c0 * ldb, ldb,
             beta, Cm + c0 * ldc, ldc);
    }
}

// The lower triangle of C (L, L) = alpha X Y^T, X, Y (L, n); entries above the diagonal are
// left undefined (the diagonal blocks compute some of them).
static void tri_nt(int64_t L, int64_t n, float alpha, const float * X, int64_t ldx,
                   const float * Y, int64_t ldy, float * Cm, int64_t ldc) {
    la_gemm_fn gemm = la_kern()->gemm;
    for (int64_t r0 = 0; r0 < L; r0 += DN_TRI) {
        const int64_t r1 = LA_MIN(r0 + DN_TRI, L);
        gemm(false, true, r1 - r0, r1, n, alpha, X + r0 * ldx, ldx, Y, ldy, 0.0f,
             Cm + r0 * ldc, ldc);
    }
}

// ---------------------------------------------------------------------------------------------
// Forward pieces

// Tm = (I + Lm)^{-1}, Lm = Diag(beta) Akk (strictly lower), by forward substitution
// (ALGORITHMS.md 3.3): row i of Tm is e_i - sum_{m<i} Lm_im Tm_m. Row m is zero past column m,
// so the 16-column block at j0 only takes rows m >= j0; each block's sum stays in registers.
// About L^3/6 multiply-adds: under 1% of a chunk's products at C = 64.
LA_CLONES
static void dn_tri_inv(const float * restrict Akk, const float * restrict bt,
                       float * restrict Tm, int64_t L, int64_t lc) {
    for (int64_t i = 0; i < L; i++) {
        float * restrict ti = Tm + i * lc;
        const float * restrict ai = Akk + i * lc;
        const float nb = -bt[i];
        for (int64_t j0 = 0; j0 < i; j0 += 16) {
            float acc[16] = { 0 };
            for (int64_t m = j0; m < i; m++) {
                const float l = nb * ai[m];
                const float * restrict tm = Tm + m * lc + j0;
                for (int l16 = 0; l16 < 16; l16++) acc[l16] += l * tm[l16];
            }
            for (int l16 = 0; l16 < 16; l16++) ti[j0 + l16] = acc[l16];
        }
        for (int64_t j = (i + 15) / 16 * 16; j < lc; j++) ti[j] = 0.0f;
        ti[i] = 1.0f;
    }
}

// Row kernels of the scaling pass. Separate functions so that `restrict` on their parameters
// lets the compiler vectorise them without run-time alias checks.
static inline void row_mul(int64_t n, const float * restrict a, const float * restrict b,
                           float * restrict y) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

static inline void row_k(int64_t K, float br, const float * restrict k, const float * restrict e,
                         const float * restrict f, float * restrict kh, float * restrict kd) {
    for (int64_t i = 0; i < K; i++) {
        kh[i] = br * k[i] * e[i];
        kd[i] = k[i] * f[i];
    }
}

static inline void row_scale(int64_t n, float a, const float * restrict x, float * restrict y) {
    for (int64_t i = 0; i < n; i++) y[i] = a * x[i];
}

// The row scalings of the staged chunk: Qg = Q o E (with_q), Khat = Diag(beta)(K o E),
// Kd = K o F, Y = Vhat = Diag(beta) V.
LA_CLONES
static void dn_scale(const la_dn_args * x, dn_buf * B, int64_t L, bool with_q) {
    const int64_t K = x->sh.K, V = x->sh.V;
    for (int64_t r = 0; r < L; r++) {
        const int64_t o = r * K;
        if (with_q) row_mul(K, B->Q + o, B->E + o, B->Qg + o);
        row_k(K, B->bt[r], B->Kc + o, B->E + o, B->F + o, B->Kh + o, B->Kd + o);
        row_scale(V, B->bt[r], B->Vc + r * V, B->Y + r * V);
    }
}

// Everything of chunk (t0, L) that does not depend on the state: staged rows (cur), gates,
// E, F, gamma, beta, the row-scaled operands (Y = Vhat), and (with_tm) Akk and Tm.
// st: the next chunk's staging.
static void dn_prep(const la_dn_args * x, dn_buf * B, const dn_in * cur, int64_t hv, bool with_q,
                    bool with_tm, dn_stage * st) {
    const int64_t HV = x->sh.HV, K = x->sh.K, t0 = cur->t0, L = cur->L;
    B->Q = cur->q;
    B->Kc = cur->k;
    B->Vc = cur->v;
    B->dO = cur->dout;
    if (x->gate == LA_DN_GATE_CHANNEL) {
        la_intra_load(&B->it, cur->g, K, L);
    } else if (x->gate == LA_DN_GATE_SCALAR) {
        la_intra_load(&B->it, x->g + t0 * HV + hv, HV, L);
    } else {
        la_intra_load(&B->it, NULL, 0, L);
    }
    la_intra_ebx(&B->it, 0, B->E);
    la_intra_etail(&B->it, B->F);
    la_intra_elast(&B->it, B->gam);
    for (int64_t r = 0; r < L; r++) B->bt[r] = x->beta[(t0 + r) * HV + hv];
    dn_scale(x, B, L, with_q);
    dn_stage_step(st);
    if (with_tm) {
        la_intra_fwd(&B->it, 0, true, 1.0f, B->Kc, K, B->Kc, K, B->Akk, B->lc);
        dn_tri_inv(B->Akk, B->bt, B->Tm, L, B->lc);
    }
    dn_stage_step(st);
}

// Vn = Tm (Vhat - Khat S): Y holds Vhat on entry and Vhat - Khat S on return.
static void dn_vnew(const la_dn_args * x, dn_buf * B, const float * S, int64_t L,
                    dn_stage * st) {
    const int64_t K = x->sh.K, V = x->sh.V;
    la_kern()->gemm(false, false, L, V, K, -1.0f, B->Kh, K, S, V, 1.0f, B->Y, V);
    dn_stage_step(st);
    tri_nn(L, V, 1.0f, B->Tm, B->lc, B->Y, V, 0.0f, B->Vn, V);
    dn_stage_step(st);
}

// S <- Diag(gamma) S + Kd^T Vn.
LA_CLONES
static void dn_state(const la_dn_args * x, const dn_buf * B, float * restrict S, int64_t L) {
    const int64_t K = x->sh.K, V = x->sh.V;
    for (int64_t i = 0; i < K; i++) {
        const float gi = B->gam[i];
        float * restrict Si = S + i * V;
        for (int64_t j = 0; j < V; j++) Si[j] *= gi;
    }
    la_kern()->gemm(true, false, K, V, L, 1.0f, B->Kd, K, B->Vn, V, 1.0f, S, V);
}

// la_ckpt's step: S <- the state after chunk `chunk` of the task's sequence.
typedef struct dn_step_ctx {
    const la_dn_args * x;
    dn_buf *           B;
    int64_t            bos, eos, hv;
    // Chunk cache: what pass 1 computed for chunk c, in slot c % M, for pass 2.
    float *            vc;    // (M, C, V)  Vn
    float *            ac;    // (M, C, lc) Akk
    float *            tc;    // (M, C, lc) Tm
    int64_t *          tag;   // (M) the chunk each slot holds, -1: none
    int64_t            M;
} dn_step_ctx;

// Points B's Vn, Akk, Tm at slot `slot` of the chunk cache.
static void dn_use_slot(const dn_step_ctx * s, int64_t slot) {
    const int64_t C = s->x->C, lc = s->B->lc;
    s->B->Vn = s->vc + slot * C * s->x->sh.V;
    s->B->Akk = s->ac + slot * C * lc;
    s->B->Tm = s->tc + slot * C * lc;
}

static void dn_step(const void * ctx, int64_t chunk, float * S) {
    const dn_step_ctx * s = ctx;
    const la_dn_args * x = s->x;
    const int64_t C = x->C, t0 = s->bos + chunk * C, L = LA_MIN(C, s->eos - t0), t1 = t0 + L;
    dn_in * nxt;
    const dn_in * cur = dn_current(x, s->B, t0, L, s->hv, false, false, &nxt);
    dn_stage st = dn_stage_begin(x, nxt, t1 < s->eos ? t1 : -1, LA_MIN(C, s->eos - t1), s->hv,
                                 false, false, 4);
    dn_use_slot(s, chunk % s->M);
    s->tag[chunk % s->M] = chunk;
    dn_prep(x, s->B, cur, s->hv, false, true, &st);
    dn_vnew(x, s->B, S, L, &st);
    dn_state(x, s->B, S, L);
    dn_stage_finish(&st);
}

static void dn_fwd_task(const la_dn_args * x, int64_t n, int64_t hv, void * ws) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t HV = x->sh.HV, K = x->sh.K, V = x->sh.V, C = x->C, KV = K * V;
    la_carver cv = { (char *)ws, 0 };
    float * S = la_carve(&cv, (size_t)KV * 4);  // (K, V) unless final holds it
    dn_buf B;
    dn_layout(&B, &cv, x->gate, C, K, V, false);
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    S = la_state_begin(S, x->final, x->init, n * HV + hv, KV);
    for (int64_t t0 = bos; t0 < eos; t0 += C) {
        const int64_t L = LA_MIN(C, eos - t0), t1 = t0 + L;
        dn_in * nxt;
        const dn_in * cur = dn_current(x, &B, t0, L, hv, true, false, &nxt);
        dn_stage st = dn_stage_begin(x, nxt, t1 < eos ? t1 : -1, LA_MIN(C, eos - t1), hv, true,
                                     false, 7);
        dn_prep(x, &B, cur, hv, true, true, &st);
        gemm(false, false, L, V, K, x->scale, B.Qg, K, S, V, 0.0f, B.O, V);  // O = s Qg S
        dn_stage_step(&st);
        dn_vnew(x, &B, S, L, &st);
        la_intra_fwd(&B.it, 0, false, x->scale, B.Q, K, B.Kc, K, B.Aqk, B.lc);
        dn_stage_step(&st);
        tri_nn(L, V, 1.0f, B.Aqk, B.lc, B.Vn, V, 1.0f, B.O, V);              // O += Aqk Vn
        dn_stage_step(&st);
        dn_state(x, &B, S, L);
        dn_store_rows(x->o + (t0 * HV + hv) * V, HV * V, B.O, L, V);
        dn_stage_finish(&st);
    }
}

// ---------------------------------------------------------------------------------------------
// Backward pieces

// Gate terms of one row: dz += dQg o Qg - dKd o Kd + dKhat o Khat ; zL += dKd o Kd.
static inline void row_bwd_gate(int64_t K, const float * restrict dq, const float * restrict dk,
                                const float * restrict dkh, const float * restrict qg,
                                const float * restrict kd, const float * restrict kh,
                                double * restrict dz, double * restrict zL) {
    for (int64_t i = 0; i < K; i++) {
        const float dkd = dk[i] * kd[i];
        dz[i] += (double)(dq[i] * qg[i]) - (double)dkd + (double)(dkh[i] * kh[i]);
        zL[i] += (double)dkd;
    }
}

// dq *= e ; tmp = dKhat o e ; dk = dKd o f + beta tmp.
static inline void row_bwd(int64_t K, float br, const float * restrict e, const float * restrict f,
                           const float * restrict dkh, float * restrict dq, float * restrict dk,
                           float * restrict tmp) {
    for (int64_t i = 0; i < K; i++) {
        tmp[i] = dkh[i] * e[i];
        dq[i] *= e[i];
        dk[i] = dk[i] * f[i] + br * tmp[i];
    }
}

// The row-scaling terms, in place: dQ holds dQg = s dO S^T, dK holds dKd = Vn dS^T, dKh holds
// dKhat. Out: dQ = dQg o E; dK = dKd o F + beta dKhat o E; dbeta = dKhat . (K o E)
// (overwritten); with gates, dbz[r+1] += dQg o Qg - dKd o Kd + dKhat o Khat and
// dbz[L] += sum_r dKd_r o Kd_r.
LA_CLONES
static void dn_bwd_rows(const la_dn_args * x, dn_buf * B, int64_t L, bool gated) {
    const int64_t K = x->sh.K;
    for (int64_t i = 0; i < K; i++) B->zL[i] = 0;
    for (int64_t r = 0; r < L; r++) {
        const int64_t o = r * K;
        if (gated)
            row_bwd_gate(K, B->dQ + o, B->dK + o, B->dKh + o, B->Qg + o, B->Kd + o, B->Kh + o,
                         B->dbz + (r + 1) * K, B->zL);
        row_bwd(K, B->bt[r], B->E + o, B->F + o, B->dKh + o, B->dQ + o, B->dK + o, B->tmp);
        B->dbt[r] = la_dot_lanes(B->tmp, B->Kc + o, K);
    }
    if (gated)
        for (int64_t i = 0; i < K; i++) B->dbz[L * K + i] += B->zL[i];
}

// dv = Diag(beta) Z ; dbeta_r += Z_r . v_r.
LA_CLONES
static void dn_bwd_v(const la_dn_args * x, dn_buf * B, int64_t L) {
    const int64_t V = x->sh.V;
    for (int64_t r = 0; r < L; r++) {
        row_scale(V, B->bt[r], B->Y + r * V, B->dV + r * V);
        B->dbt[r] += la_dot_lanes(B->Y + r * V, B->Vc + r * V, V);
    }
}

// dA holds dLm = -Z Vn^T (strictly lower part used). Lm_rc = beta_r Akk_rc:
// dbeta_r += sum_{c<r} dLm_rc Akk_rc, and dA_rc <- beta_r dLm_rc = dL/dAkk_rc.
LA_CLONES
static void dn_bwd_lm(dn_buf * B, int64_t L) {
    const int64_t lc = B->lc;
    for (int64_t r = 1; r < L; r++) {
        float * restrict d = B->dA + r * lc;
        const float * restrict a = B->Akk + r * lc;
        B->dbt[r] += la_dot_lanes(d, a, r);
        const float br = B->bt[r];
        for (int64_t cc = 0; cc < r; cc++) d[cc] *= br;
    }
}

// dbz[L] += gamma o rowsum_V(dS o S): the gradient of the decay gamma S in S_next.
static void dn_bwd_gamma(const la_dn_args * x, dn_buf * B, const float * S, const float * dS,
                         int64_t L) {
    const int64_t K = x->sh.K, V = x->sh.V;
    double * dz = B->dbz + L * K;
    for (int64_t i = 0; i < K; i++)
        dz[i] += (double)B->gam[i] * (double)la_dot_lanes(dS + i * V, S + i * V, V);
}

// dS <- Diag(gamma) dS.
LA_CLONES
static void dn_decay_ds(const dn_buf * B, float * restrict dS, int64_t K, int64_t V) {
    for (int64_t i = 0; i < K; i++) {
        const float gi = B->gam[i];
        float * restrict d = dS + i * V;
        for (int64_t j = 0; j < V; j++) d[j] *= gi;
    }
}

static void dn_bwd_task(const la_dn_args * x, int64_t n, int64_t hv, void * ws) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t HV = x->sh.HV, K = x->sh.K, V = x->sh.V, C = x->C, KV = K * V;
    const float s = x->scale;
    const bool gated = x->gate != LA_DN_GATE_NONE;
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    const int64_t nch = (eos - bos + C - 1) / C, nch_max = (x->maxlen + C - 1) / C;
    const int64_t M = la_ckpt_group(nch_max);
    la_carver cv = { (char *)ws, 0 };
    float * ckpt = la_carve(&cv, (size_t)(la_ckpt_count(nch_max, M) * KV) * 4);
    float * grp = la_carve(&cv, (size_t)(M * KV) * 4);  // (M, K, V) boundary states S_[c]
    float * dS = la_carve(&cv, (size_t)KV * 4);         // (K, V) pass 1: S; pass 2: dL/dS_[c+1]
    dn_buf B;
    dn_layout(&B, &cv, x->gate, C, K, V, true);
    const int64_t lc = B.lc;
    dn_step_ctx sc = { x, &B, bos, eos, hv, NULL, NULL, NULL, NULL, M };
    sc.vc = la_carve(&cv, (size_t)(M * C * V) * 4);
    sc.ac = la_carve(&cv, (size_t)(M * C * lc) * 4);
    sc.tc = la_carve(&cv, (size_t)(M * C * lc) * 4);
    sc.tag = la_carve(&cv, (size_t)M * sizeof(int64_t));
    for (int64_t i = 0; i < M; i++) sc.tag[i] = -1;

    // Pass 1: the boundary states (dS serves as the running state), and each chunk's Vn, Akk,
    // Tm for pass 2 (which recomputes them only for the last chunk of a replayed group).
    la_ckpt ck = { ckpt, grp, M, nch, KV };
    la_state_load(dS, x->init, n * HV + hv, KV);
    la_ckpt_run(&ck, dS, dn_step, &sc);

    // Pass 2: reverse over chunks.
    if (x->dfinal) memcpy(dS, x->dfinal + (n * HV + hv) * KV, (size_t)KV * sizeof(float));
    else memset(dS, 0, (size_t)KV * sizeof(float));
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t t0 = bos + ci * C, L = LA_MIN(C, eos - t0);
        const float * Sc = la_ckpt_state(&ck, ci, dn_step, &sc);  // may replay: before staging
        const bool cached = sc.tag[ci % M] == ci;
        dn_in * nxt;
        const dn_in * cur = dn_current(x, &B, t0, L, hv, true, true, &nxt);
        dn_stage st = dn_stage_begin(x, nxt, ci > 0 ? t0 - C : -1, C, hv, true, true,
                                     cached ? 8 : 10);
        // The chunk's forward quantities: from the cache, or recomputed from S_[c].
        if (cached) {
            dn_use_slot(&sc, ci % M);
        } else {
            B.Vn = B.Vn_own;
            B.Akk = B.Akk_own;
            B.Tm = B.Tm_own;
        }
        dn_prep(x, &B, cur, hv, true, !cached, &st);
        if (!cached) dn_vnew(x, &B, Sc, L, &st);
        la_intra_fwd(&B.it, 0, false, s, B.Q, K, B.Kc, K, B.Aqk, lc);
        if (gated) memset(B.dbz, 0, (size_t)((L + 1) * K) * sizeof(double));
        // dVn = Aqk^T dO + Kd dS ;  dKd = Vn dS^T ;  the gamma term -- all before dS moves on.
        tri_tn(L, V, 1.0f, B.Aqk, lc, B.dO, V, 0.0f, B.dVn, V);
        gemm(false, false, L, V, K, 1.0f, B.Kd, K, dS, V, 1.0f, B.dVn, V);
        dn_stage_step(&st);
        gemm(false, true, L, K, V, 1.0f, B.Vn, V, dS, V, 0.0f, B.dK, K);
        if (gated) dn_bwd_gamma(x, &B, Sc, dS, L);
        // Z = Tm^T dVn (into Y) ;  dS_[c] = Diag(gamma) dS + s Qg^T dO - Khat^T Z
        tri_tn(L, V, 1.0f, B.Tm, lc, B.dVn, V, 0.0f, B.Y, V);
        dn_stage_step(&st);
        dn_decay_ds(&B, dS, K, V);
        gemm(true, false, K, V, L, s, B.Qg, K, B.dO, V, 1.0f, dS, V);
        dn_stage_step(&st);
        gemm(true, false, K, V, L, -1.0f, B.Kh, K, B.Y, V, 1.0f, dS, V);
        // dQg = s dO S^T ;  dKhat = -Z S^T ;  then the row-scaling terms.
        gemm(false, true, L, K, V, s, B.dO, V, Sc, V, 0.0f, B.dQ, K);
        dn_stage_step(&st);
        gemm(false, true, L, K, V, -1.0f, B.Y, V, Sc, V, 0.0f, B.dKh, K);
        dn_bwd_rows(x, &B, L, gated);
        dn_bwd_v(x, &B, L);
        dn_stage_step(&st);
        // Aqk: dA = dO Vn^T on r >= c (A carries s, hence alpha = s).
        tri_nt(L, V, 1.0f, B.dO, V, B.Vn, V, B.dA, lc);
        la_intra_bwd(&B.it, 0, false, s, B.dA, lc, B.Q, K, B.Kc, K, B.dQ, K, B.dK, K,
                     gated ? B.dbz : NULL);
        dn_stage_step(&st);
        // Akk: dLm = -Z Vn^T on r > c.
        tri_nt(L, V, -1.0f, B.Y, V, B.Vn, V, B.dA, lc);
        dn_bwd_lm(&B, L);
        la_intra_bwd(&B.it, 0, true, 1.0f, B.dA, lc, B.Kc, K, B.Kc, K, B.dK, K, B.dK, K,
                     gated ? B.dbz : NULL);
        dn_store_rows(x->dq + (t0 * HV + hv) * K, HV * K, B.dQ, L, K);
        dn_store_rows(x->dk + (t0 * HV + hv) * K, HV * K, B.dK, L, K);
        dn_store_rows(x->dv + (t0 * HV + hv) * V, HV * V, B.dV, L, V);
        for (int64_t r = 0; r < L; r++) x->dbeta[(t0 + r) * HV + hv] = B.dbt[r];
        if (gated) {
            int64_t ldg;
            const int64_t off = gate_off(x, t0, hv, &ldg);
            la_intra_dgate(&B.it, B.dbz, x->dg + off, ldg);
        }
        dn_stage_finish(&st);
    }
    if (x->dinit) memcpy(x->dinit + (n * HV + hv) * KV, dS, (size_t)KV * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Entry points (delta.h)

size_t la_dn_chunk_bytes(const la_dn_args * x, bool backward) {
    const int64_t K = x->sh.K, V = x->sh.V, C = x->C, KV = K * V;
    const int64_t nch_max = (x->maxlen + C - 1) / C, M = la_ckpt_group(nch_max);
    la_carver cv = { NULL, 0 };
    if (backward) {  // as dn_bwd_task carves: checkpoints, one group of states, dS, ...
        la_carve(&cv, (size_t)(la_ckpt_count(nch_max, M) * KV) * 4);
        la_carve(&cv, (size_t)(M * KV) * 4);
    }
    la_carve(&cv, (size_t)KV * 4);  // dS (backward) or S (forward)
    dn_buf B;
    dn_layout(&B, &cv, x->gate, C, K, V, backward);
    if (backward) {  // ... the chunk buffers, the chunk cache
        la_carve(&cv, (size_t)(M * C * V) * 4);
        la_carve(&cv, (size_t)(M * C * B.lc) * 4);
        la_carve(&cv, (size_t)(M * C * B.lc) * 4);
        la_carve(&cv, (size_t)M * sizeof(int64_t));
    }
    return cv.used;
}

void la_dn_chunk_task(const la_dn_args * x, int64_t n, int64_t hv, void * ws, bool backward) {
    if (backward) dn_bwd_task(x, n, hv, ws);
    else dn_fwd_task(x, n, hv, ws);
}
