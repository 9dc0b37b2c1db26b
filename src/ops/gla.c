// gla and rwkv6: linear attention with a per-key-channel decay (OPS.md 2.5, 2.11).
//
//   gla   (write, then read):  S_t = Diag(a_t) S_{t-1} [Diag(c_t)] + k_t v_t^T ; o_t = s S_t^T q_t
//   rwkv6 (read, then write):  o_t = s (S_{t-1}^T q_t + (q_t . (u o k_t)) v_t)
//                              S_t = Diag(a_t) S_{t-1} + k_t v_t^T
// with a_t = exp(gk_t) (rwkv6: exp(w_t)) per key channel and the optional value-side decay
// c_t = exp(gv_t) (gla's recurrent form only, as fla). One engine serves both ops.
//
// Chunk form (ALGORITHMS.md 3.2), per chunk of L <= C tokens with the in-chunk cumulative gate
// b_r = sum_{m<=r} g_m (a K-vector) and the gate the read sees, bq_r = b_r (gla) or b_{r-1}
// (rwkv6, b_{-1} = 0):
//   O       = s (Q o e^{bq}) S + A V
//   S_next  = Diag(e^{b_L}) S + (K o e^{b_L - b})^T V
//   A_rc    = s sum_d q_rd k_cd e^{bq_rd - b_cd}   for r >= c (gla) / r > c (rwkv6),
//   A_rr    = s q_r . (u o k_r)                    (rwkv6's bonus)
// A needs care: the factorised form (Q o e^{b})(K o e^{-b})^T overflows once the in-chunk decay
// passes -88. Secondary chunking (intra.h, shared with kda and dplr) splits the chunk into
// sub-chunks:
//   * off-diagonal blocks (sub-chunk I > J) are matrix products of
//       Qh_I = Q_I o e^{bq_I - a_I}   (a_I = bq at the first row of I: at or before every row of I)
//       Kh_J = K_J o e^{a_{J+1} - b_J} (a_{J+1} is at or after every row of J)
//     joined by f_IJ = e^{a_I - a_{J+1}}, so A_IJ = s (Qh_I o f_IJ) Kh_J^T; every exponent <= 0;
//   * diagonal blocks use running products of the per-token decays (w <- w o a_r), so they need
//     no exponential at all and stay exact when decays underflow.
// The backward mirrors each product; the gate gradient is exact and global (ALGORITHMS.md 3.1):
//   dL/dB_t = q_t o dq_t - k_t o dk_t (+ S_T o dS_T summed over V at the end), dg = suffix sum,
// where for rwkv6 the q term belongs to the next token (q_{t+1} reads e^{B_t}) and the bonus
// parts of dq, dk are left out. The recurrent form uses the same identity (and its value-side
// twin dL/dBv_t = do_t o o_t - v_t o dv_t for gv).
//
// Dimensions: B, T, H, K, V, N, C as in OPS.md. Threads split (sequence, head) pairs.
#include "internal.h"
#include "intra.h"
#include "ref.h"
#include "vexp.h"

#include <stdlib.h>
#include <string.h>

typedef struct dg_args {
    bool          rwkv;                 // read-then-write with bonus u (rwkv6)
    const float * q, * k, * v;          // (B,T,H,K), (B,T,H,K), (B,T,H,V)
    const float * gk, * gv;             // (B,T,H,K) or NULL, (B,T,H,V) or NULL
    const float * u;                    // (H,K) rwkv6 bonus
    const float * init;                 // (N,H,K,V) or NULL
    float *       o, * final;
    const float * dout, * dfinal;
    float *       dq, * dk, * dv, * dgk, * dgv, * dinit;
    float *       du;                   // (H,K) rwkv6
    float *       du_part;              // (N,H,K) per-task partial du, reduced in order
    la_shape      sh;
    const la_opts * opts;
    float         scale;
    int64_t       C, maxlen;
    bool          backward;             // direction of the call
} dg_args;

// Per-token decays exp(g) of one (token, head), or ones without a gate.
static inline void token_decay(float * restrict a, const float * g, int64_t t, int64_t h,
                               int64_t H, int64_t n) {
    if (g) la_expf_vec(a, g + (t * H + h) * n, n);
    else
        for (int64_t i = 0; i < n; i++) a[i] = 1.0f;
}

// ---------------------------------------------------------------------------------------------
// Recurrent form

// ws: S (K,V), a (K), c (V).
LA_CLONES
static void rec_fwd_task(const dg_args * x, int64_t n, int64_t h, float * ws) {
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V;
    float * restrict S = ws, * restrict a = S + K * V, * restrict c = a + K;
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    S = la_state_begin(S, x->final, x->init, n * H + h, K * V);
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict qt = x->q + (t * H + h) * K, * restrict kt = x->k + (t * H + h) * K;
        const float * restrict vt = x->v + (t * H + h) * V;
        float * restrict ot = x->o + (t * H + h) * V;
        token_decay(a, x->gk, t, h, H, K);
        token_decay(c, x->gv, t, h, H, V);
        for (int64_t j = 0; j < V; j++) ot[j] = 0.0f;
        if (x->rwkv) {  // o_t reads S_{t-1}, then the write; plus the bonus term
            const float * restrict u = x->u + h * K;
            float qu = 0.0f;
            for (int64_t i = 0; i < K; i++) qu += qt[i] * u[i] * kt[i];
            for (int64_t i = 0; i < K; i++) {
                float * restrict Si = S + i * V;
                const float qi = x->scale * qt[i], ai = a[i], ki = kt[i];
                for (int64_t j = 0; j < V; j++) {
                    ot[j] += qi * Si[j];
                    Si[j] = ai * Si[j] + ki * vt[j];
                }
            }
            for (int64_t j = 0; j < V; j++) ot[j] += x->scale * qu * vt[j];
        } else {
            for (int64_t i = 0; i < K; i++) {
                float * restrict Si = S + i * V;
                const float qi = x->scale * qt[i], ai = a[i], ki = kt[i];
                for (int64_t j = 0; j < V; j++) {
                    const float s = ai * Si[j] * c[j] + ki * vt[j];
                    Si[j] = s;
                    ot[j] += qi * s;
                }
            }
        }
    }
}

// ws: S, G (K,V), a (K), c (V), acc_k (K doubles), acc_v (V doubles), nq (K).
LA_CLONES
static void rec_bwd_task(const dg_args * x, int64_t n, int64_t h, float * ws) {
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, KV = K * V;
    const float s = x->scale;
    la_carver cv = { (char *)ws, 0 };
    float * restrict S = la_carve(&cv, (size_t)KV * 4);      // (K, V) S_t
    float * restrict G = la_carve(&cv, (size_t)KV * 4);      // (K, V) dL/dS_t
    float * restrict a = la_carve(&cv, (size_t)K * 4);       // (K) exp(gk_t)
    float * restrict c = la_carve(&cv, (size_t)V * 4);       // (V) exp(gv_t)
    double * restrict acck = la_carve(&cv, (size_t)K * 8);   // (K) suffix sum of dL/dB
    double * restrict accv = la_carve(&cv, (size_t)V * 8);   // (V) same, value side
    float * restrict nq = la_carve(&cv, (size_t)K * 4);      // (K) q_{t+1} o dq_{t+1} (rwkv6)
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    // Pass 1, forward: dq from the state the output reads (gated part only for rwkv6);
    // with gv, dgv_t <- do_t o o_t (the first term of the value-side identity).
    la_state_load(S, x->init, n * H + h, KV);
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict qt = x->q + (t * H + h) * K, * restrict kt = x->k + (t * H + h) * K;
        const float * restrict vt = x->v + (t * H + h) * V;
        const float * restrict dot = x->dout + (t * H + h) * V;
        float * restrict dqt = x->dq + (t * H + h) * K;
        token_decay(a, x->gk, t, h, H, K);
        token_decay(c, x->gv, t, h, H, V);
        float * restrict og = x->dgv ? x->dgv + (t * H + h) * V : NULL;
        if (og)
            for (int64_t j = 0; j < V; j++) og[j] = 0.0f;
        for (int64_t i = 0; i < K; i++) {
            float * restrict Si = S + i * V;
            const float ai = a[i], ki = kt[i];
            if (x->rwkv) {
                dqt[i] = s * la_dot_lanes(Si, dot, V);
                for (int64_t j = 0; j < V; j++) Si[j] = ai * Si[j] + ki * vt[j];
            } else {
                for (int64_t j = 0; j < V; j++) Si[j] = ai * Si[j] * c[j] + ki * vt[j];
                dqt[i] = s * la_dot_lanes(Si, dot, V);
                if (og) {
                    const float qi = s * qt[i];
                    for (int64_t j = 0; j < V; j++) og[j] += qi * Si[j];
                }
            }
        }
        if (og)
            for (int64_t j = 0; j < V; j++) og[j] *= dot[j];
    }
    // Pass 2, reverse: G = dL/dS_t; dk, dv; gate gradients by suffix sums.
    if (x->dfinal) memcpy(G, x->dfinal + (n * H + h) * KV, (size_t)KV * sizeof(float));
    else memset(G, 0, (size_t)KV * sizeof(float));
    for (int64_t i = 0; i < K; i++) {  // the final-state term sum_j S_T G_T
        acck[i] = 0;
        for (int64_t j = 0; j < V; j++) acck[i] += (double)S[i * V + j] * (double)G[i * V + j];
        nq[i] = 0.0f;
    }
    for (int64_t j = 0; j < V; j++) {
        accv[j] = 0;
        for (int64_t i = 0; i < K; i++) accv[j] += (double)S[i * V + j] * (double)G[i * V + j];
    }
    float * du = x->du_part ? x->du_part + (n * H + h) * K : NULL;
    if (du)
        for (int64_t i = 0; i < K; i++) du[i] = 0.0f;
    for (int64_t t = eos - 1; t >= bos; t--) {
        const float * restrict qt = x->q + (t * H + h) * K, * restrict kt = x->k + (t * H + h) * K;
        const float * restrict vt = x->v + (t * H + h) * V;
        const float * restrict dot = x->dout + (t * H + h) * V;
        float * restrict dqt = x->dq + (t * H + h) * K, * restrict dkt = x->dk + (t * H + h) * K;
        float * restrict dvt = x->dv + (t * H + h) * V;
        token_decay(a, x->gk, t, h, H, K);
        token_decay(c, x->gv, t, h, H, V);
        if (!x->rwkv)  // o_t reads S_t
            for (int64_t i = 0; i < K; i++) {
                float * restrict Gi = G + i * V;
                const float qi = s * qt[i];
                for (int64_t j = 0; j < V; j++) Gi[j] += qi * dot[j];
            }
        for (int64_t j = 0; j < V; j++) dvt[j] = 0.0f;
        for (int64_t i = 0; i < K; i++) {
            float * restrict Gi = G + i * V;
            const float ki = kt[i];
            dkt[i] = la_dot_lanes(Gi, vt, V);
            for (int64_t j = 0; j < V; j++) dvt[j] += Gi[j] * ki;
        }
        if (x->gk) {
            float * restrict dg = x->dgk + (t * H + h) * K;
            for (int64_t i = 0; i < K; i++) {
                acck[i] += (double)nq[i] - (double)kt[i] * (double)dkt[i];
                dg[i] = (float)acck[i];
                nq[i] = x->rwkv ? qt[i] * dqt[i] : 0.0f;
            }
            if (!x->rwkv)
                for (int64_t i = 0; i < K; i++) {
                    acck[i] += (double)qt[i] * (double)dqt[i];
                    dg[i] = (float)acck[i];
                }
        }
        if (x->rwkv) {  // bonus: s (q . (u o k)) v
            const float * restrict u = x->u + h * K;
            const float dd = la_dot_lanes(dot, vt, V);
            float qu = 0.0f;
            for (int64_t i = 0; i < K; i++) {
                qu += qt[i] * u[i] * kt[i];
                dqt[i] += s * dd * u[i] * kt[i];
                dkt[i] += s * dd * u[i] * qt[i];
                du[i] += s * dd * qt[i] * kt[i];
            }
            for (int64_t j = 0; j < V; j++) dvt[j] += s * qu * dot[j];
        }
        if (x->gv) {  // dL/dBv_t = do_t o o_t - v_t o dv_t (+ final term), suffix sum
            float * restrict dg = x->dgv + (t * H + h) * V;
            for (int64_t j = 0; j < V; j++) {
                accv[j] += (double)dg[j] - (double)vt[j] * (double)dvt[j];
                dg[j] = (float)accv[j];
            }
        }
        for (int64_t i = 0; i < K; i++) {  // G becomes dL/dS_{t-1}
            float * restrict Gi = G + i * V;
            const float ai = a[i];
            for (int64_t j = 0; j < V; j++) Gi[j] *= ai * c[j];
            if (x->rwkv) {
                const float qi = s * qt[i];
                for (int64_t j = 0; j < V; j++) Gi[j] += qi * dot[j];
            }
        }
    }
    if (x->dinit) memcpy(x->dinit + (n * H + h) * KV, G, (size_t)KV * sizeof(float));
}

static size_t rec_bytes(la_shape sh) {
    return 2 * la_align_up((size_t)(sh.K * sh.V) * 4) + 2 * la_align_up((size_t)sh.K * 4) +
           la_align_up((size_t)sh.V * 4) + la_align_up((size_t)sh.K * 8) +
           la_align_up((size_t)sh.V * 8);
}

// ---------------------------------------------------------------------------------------------
// Chunk form

typedef struct ck_buf {
    la_intra it;     // the chunk's cumulative gates and intra-chunk scores (intra.h)
    float *  ebq;    // (C, K) e^{bq}: e^{b_r} (gla) or e^{b_{r-1}} (rwkv6)
    float *  eg;     // (C, K) e^{b_L - b}
    float *  Qg;     // (C, K) Q o e^{bq}
    float *  Kd;     // (C, K) K o e^{b_L - b}
    float *  gL;     // (K) e^{b_L}
    float *  A;      // (C, C) intra-chunk scores
    double * acc;    // (K) suffix sum of dL/dB (backward)
    float *  nq;     // (K) q_{t+1} o dq_{t+1} (rwkv6 backward)
    float *  dA;     // (C, C) dO V^T (backward)
} ck_buf;

static size_t ck_layout(ck_buf * B, la_carver * cv, int64_t C, int64_t K, bool backward) {
    const size_t ck = (size_t)(C * K) * 4, cc = (size_t)(C * C) * 4, k4 = (size_t)K * 4;
    size_t start = cv->used;
    void * iw = la_carve(cv, la_intra_bytes(LA_INTRA_CHANNEL, C, K, backward));
    if (iw) la_intra_init(&B->it, LA_INTRA_CHANNEL, C, K, backward, iw);
    B->ebq = la_carve(cv, ck);
    B->eg = la_carve(cv, ck);
    B->Qg = la_carve(cv, ck);
    B->Kd = la_carve(cv, ck);
    B->gL = la_carve(cv, k4);
    B->A = la_carve(cv, cc);
    B->acc = backward ? la_carve(cv, (size_t)K * 8) : NULL;
    B->nq = backward ? la_carve(cv, k4) : NULL;
    B->dA = backward ? la_carve(cv, cc) : NULL;
    return cv->used - start;
}

// Gates of one chunk (tokens t0 .. t0+L-1 of head h): e^{bq}, e^{b_L - b}, e^{b_L}, and the
// scaled operands Qg = Q o e^{bq}, Kd = K o e^{b_L - b}.
LA_CLONES
static void ck_gates(const dg_args * x, ck_buf * B, int64_t t0, int64_t L, int64_t h,
                     const float * Qc, const float * Kc) {
    const int64_t H = x->sh.H, K = x->sh.K, ldk = H * K;
    la_intra_load(&B->it, x->gk + (t0 * H + h) * K, ldk, L);
    la_intra_ebx(&B->it, x->rwkv ? 1 : 0, B->ebq);
    la_intra_etail(&B->it, B->eg);
    la_intra_elast(&B->it, B->gL);
    for (int64_t r = 0; r < L; r++)
        for (int64_t i = 0; i < K; i++) {
            B->Qg[r * K + i] = Qc[r * ldk + i] * B->ebq[r * K + i];
            B->Kd[r * K + i] = Kc[r * ldk + i] * B->eg[r * K + i];
        }
}

// A (L, L; row stride C): the intra-chunk scores s q_r . (k_c o e^{bq_r - b_c}) for r >= c
// (gla) or r > c (rwkv6, whose read sees b_{r-1}), plus rwkv6's bonus s q_r . (u o k_r) on the
// diagonal.
static void ck_intra(const dg_args * x, ck_buf * B, int64_t L, int64_t h, const float * Qc,
                     const float * Kc) {
    const int64_t K = x->sh.K, ldk = x->sh.H * K, C = x->C;
    la_intra_fwd(&B->it, x->rwkv ? 1 : 0, x->rwkv, x->scale, Qc, ldk, Kc, ldk, B->A, C);
    if (x->rwkv) {
        const float * u = x->u + h * K;
        for (int64_t r = 0; r < L; r++) {
            const float * qr = Qc + r * ldk, * kr = Kc + r * ldk;
            float d = 0.0f;
            for (int64_t i = 0; i < K; i++) d += qr[i] * u[i] * kr[i];
            B->A[r * C + r] = x->scale * d;
        }
    }
}

// S <- Diag(e^{b_L}) S + Kd^T V.
static void ck_state(const dg_args * x, const ck_buf * B, float * S, const float * Vc,
                     int64_t L) {
    const int64_t K = x->sh.K, V = x->sh.V;
    for (int64_t i = 0; i < K; i++) {
        const float gi = B->gL[i];
        for (int64_t j = 0; j < V; j++) S[i * V + j] *= gi;
    }
    la_kern()->gemm(true, false, K, V, L, 1.0f, B->Kd, K, Vc, x->sh.H * V, 1.0f, S, V);
}

// Prefetch the next chunk's q, k, v and gate rows (see la_prefetch_rows).
static void ck_prefetch_next(const dg_args * x, int64_t t1, int64_t eos, int64_t h) {
    if (t1 >= eos) return;
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, L = LA_MIN(x->C, eos - t1);
    la_prefetch_rows(x->q + (t1 * H + h) * K, H * K, L, K);
    la_prefetch_rows(x->k + (t1 * H + h) * K, H * K, L, K);
    la_prefetch_rows(x->v + (t1 * H + h) * V, H * V, L, V);
    la_prefetch_rows(x->gk + (t1 * H + h) * K, H * K, L, K);
}

static void ck_fwd_task(const dg_args * x, int64_t n, int64_t h, float * ws) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, C = x->C, ldv = H * V;
    la_carver cv = { (char *)ws, 0 };
    float * S = la_carve(&cv, (size_t)(K * V) * 4);  // (K, V)
    ck_buf B;
    ck_layout(&B, &cv, C, K, false);
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    S = la_state_begin(S, x->final, x->init, n * H + h, K * V);
    for (int64_t t0 = bos; t0 < eos; t0 += C) {
        const int64_t L = LA_MIN(C, eos - t0);
        const float * Qc = x->q + (t0 * H + h) * K, * Kc = x->k + (t0 * H + h) * K;
        const float * Vc = x->v + (t0 * H + h) * V;
        float * Oc = x->o + (t0 * H + h) * V;
        ck_prefetch_next(x, t0 + C, eos, h);
        ck_gates(x, &B, t0, L, h, Qc, Kc);
        gemm(false, false, L, V, K, x->scale, B.Qg, K, S, V, 0.0f, Oc, ldv);  // s Qg S
        ck_intra(x, &B, L, h, Qc, Kc);
        gemm(false, false, L, V, L, 1.0f, B.A, C, Vc, ldv, 1.0f, Oc, ldv);    // + A V
        ck_state(x, &B, S, Vc, L);
    }
}

// la_ckpt's step: S <- the state after chunk `chunk` of the task's sequence.
typedef struct ck_step_ctx {
    const dg_args * x;
    ck_buf *        B;
    int64_t         bos, eos, h;
} ck_step_ctx;

static void ck_chunk_step(const void * ctx, int64_t chunk, float * S) {
    const ck_step_ctx * s = ctx;
    const dg_args * x = s->x;
    const int64_t H = x->sh.H, K = x->sh.K;
    const int64_t t0 = s->bos + chunk * x->C, L = LA_MIN(x->C, s->eos - t0);
    ck_gates(x, s->B, t0, L, s->h, x->q + (t0 * H + s->h) * K, x->k + (t0 * H + s->h) * K);
    ck_state(x, s->B, S, x->v + (t0 * H + s->h) * x->sh.V, L);
}

static void ck_bwd_task(const dg_args * x, int64_t n, int64_t h, float * ws) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, C = x->C, KV = K * V;
    const int64_t ldk = H * K, ldv = H * V;
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    const int64_t nch = (eos - bos + C - 1) / C;
    const int64_t M = la_ckpt_group((x->maxlen + C - 1) / C);
    la_carver cv = { (char *)ws, 0 };
    float * ckpt = la_carve(&cv, (size_t)(la_ckpt_count((x->maxlen + C - 1) / C, M) * KV) * 4);
    float * grp = la_carve(&cv, (size_t)(M * KV) * 4);  // (M, K, V) boundary states S_[c]
    float * ST = la_carve(&cv, (size_t)KV * 4);         // (K, V) the final state S_T
    float * dS = la_carve(&cv, (size_t)KV * 4);         // (K, V) dL/dS_[c+1]
    ck_buf B;
    ck_layout(&B, &cv, C, K, true);

    // Pass 1: S_T, and what pass 2 needs of the boundary states S_[c].
    ck_step_ctx sc = { x, &B, bos, eos, h };
    la_ckpt ck = { ckpt, grp, M, nch, KV };
    la_state_load(ST, x->init, n * H + h, KV);
    la_ckpt_run(&ck, ST, ck_chunk_step, &sc);
    // Pass 2: reverse over chunks.
    if (x->dfinal) memcpy(dS, x->dfinal + (n * H + h) * KV, (size_t)KV * sizeof(float));
    else memset(dS, 0, (size_t)KV * sizeof(float));
    for (int64_t i = 0; i < K; i++) {  // dL/dB_T gets sum_j S_T dS_T
        B.acc[i] = 0;
        for (int64_t j = 0; j < V; j++) B.acc[i] += (double)ST[i * V + j] * (double)dS[i * V + j];
        B.nq[i] = 0.0f;
    }
    float * du = x->du_part ? x->du_part + (n * H + h) * K : NULL;
    if (du) memset(du, 0, (size_t)K * sizeof(float));
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t t0 = bos + ci * C, L = LA_MIN(C, eos - t0);
        const float * Qc = x->q + (t0 * H + h) * K, * Kc = x->k + (t0 * H + h) * K;
        const float * Vc = x->v + (t0 * H + h) * V, * dOc = x->dout + (t0 * H + h) * V;
        float * dQc = x->dq + (t0 * H + h) * K, * dKc = x->dk + (t0 * H + h) * K;
        float * dVc = x->dv + (t0 * H + h) * V;
        const float * Sc = la_ckpt_state(&ck, ci, ck_chunk_step, &sc);
        ck_gates(x, &B, t0, L, h, Qc, Kc);
        ck_intra(x, &B, L, h, Qc, Kc);
        // dV = A^T dO + Kd dS ;  dA = dO V^T
        gemm(true, false, L, V, L, 1.0f, B.A, C, dOc, ldv, 0.0f, dVc, ldv);
        gemm(false, false, L, V, K, 1.0f, B.Kd, K, dS, V, 1.0f, dVc, ldv);
        gemm(false, true, L, L, V, 1.0f, dOc, ldv, Vc, ldv, 0.0f, B.dA, C);
        // Inter-chunk parts: dQ = s (dO S^T) o e^{bq} ;  dK = (V dS^T) o e^{b_L - b}
        gemm(false, true, L, K, V, x->scale, dOc, ldv, Sc, V, 0.0f, dQc, ldk);
        gemm(false, true, L, K, V, 1.0f, Vc, ldv, dS, V, 0.0f, dKc, ldk);
        for (int64_t r = 0; r < L; r++)
            for (int64_t i = 0; i < K; i++) {
                dQc[r * ldk + i] *= B.ebq[r * K + i];
                dKc[r * ldk + i] *= B.eg[r * K + i];
            }
        // dS_[c] = Diag(e^{b_L}) dS + s Qg^T dO
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) dS[i * V + j] *= B.gL[i];
        gemm(true, false, K, V, L, x->scale, B.Qg, K, dOc, ldv, 1.0f, dS, V);
        // Intra-chunk scores (rwkv6's bonus diagonal is handled below, outside the gate sum).
        la_intra_bwd(&B.it, x->rwkv ? 1 : 0, x->rwkv, x->scale, B.dA, C, Qc, ldk, Kc, ldk, dQc,
                     ldk, dKc, ldk, NULL);
        // Gate gradient: suffix sums of dL/dB over the sequence (gated parts of dq, dk).
        float * dgc = x->dgk + (t0 * H + h) * K;
        for (int64_t r = L - 1; r >= 0; r--) {
            const float * qr = Qc + r * ldk, * kr = Kc + r * ldk;
            const float * dqr = dQc + r * ldk, * dkr = dKc + r * ldk;
            float * dgr = dgc + r * ldk;
            if (x->rwkv) {
                for (int64_t i = 0; i < K; i++) {
                    B.acc[i] += (double)B.nq[i] - (double)kr[i] * (double)dkr[i];
                    dgr[i] = (float)B.acc[i];
                    B.nq[i] = qr[i] * dqr[i];
                }
            } else {
                for (int64_t i = 0; i < K; i++) {
                    B.acc[i] += (double)qr[i] * (double)dqr[i] - (double)kr[i] * (double)dkr[i];
                    dgr[i] = (float)B.acc[i];
                }
            }
        }
        if (x->rwkv) {  // bonus: A_rr = s q_r . (u o k_r), dA_rr = do_r . v_r
            const float * u = x->u + h * K;
            for (int64_t r = 0; r < L; r++) {
                const float g = x->scale * B.dA[r * C + r];
                const float * qr = Qc + r * ldk, * kr = Kc + r * ldk;
                float * dqr = dQc + r * ldk, * dkr = dKc + r * ldk;
                for (int64_t i = 0; i < K; i++) {
                    dqr[i] += g * u[i] * kr[i];
                    dkr[i] += g * u[i] * qr[i];
                    du[i] += g * qr[i] * kr[i];
                }
            }
        }
    }
    if (x->dinit) memcpy(x->dinit + (n * H + h) * KV, dS, (size_t)KV * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Drivers

static size_t per_thread_bytes(bool backward, bool rwkv, la_shape sh, const la_opts * opts) {
    if (opts->form == LA_FORM_RECURRENT) return la_align_up(rec_bytes(sh));
    const int64_t C = la_opts_chunk(opts), KV = sh.K * sh.V;
    la_carver cv = { NULL, 0 };
    ck_buf B;
    size_t s = la_align_up((size_t)KV * 4);
    if (backward) {  // checkpoints, one group of states, S_T and dS (as ck_bwd_task carves)
        const int64_t nch = (la_max_seq_len(sh, opts) + C - 1) / C, M = la_ckpt_group(nch);
        s = la_align_up((size_t)(la_ckpt_count(nch, M) * KV) * 4) +
            la_align_up((size_t)(M * KV) * 4) + 2 * la_align_up((size_t)KV * 4);
    }
    return s + la_align_up(ck_layout(&B, &cv, C, sh.K, backward));
}

static size_t dg_workspace(bool backward, bool rwkv, la_shape sh, const la_opts * opts) {
    int64_t N;
    if (la_check_common(sh, opts, &N) != LA_STATUS_OK) return 0;
    if (opts->form == LA_FORM_REF) {
        la_ref_dims d = { sh, N, opts->cu_seqlens, 0 };
        return (size_t)(rwkv ? la_rwkv6_ref_ws_elems(d) : la_gla_ref_ws_elems(d)) * sizeof(float) +
               LA_ALIGN;
    }
    size_t s = (size_t)la_slots(N * sh.H) * per_thread_bytes(backward, rwkv, sh, opts);
    if (rwkv && backward) s += la_align_up((size_t)(N * sh.H * sh.K) * 4);  // du partials
    return s + LA_ALIGN;
}

size_t la_gla_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return dg_workspace(backward, false, sh, opts);
}

size_t la_rwkv6_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return dg_workspace(backward, true, sh, opts);
}

// One (sequence, head) task of la_run_tasks in the form and direction of the call.
static void dg_task(const void * ctx, int64_t task, void * scratch) {
    const dg_args * x = ctx;
    float * w = scratch;
    const int64_t n = task / x->sh.H, h = task % x->sh.H;
    if (x->opts->form == LA_FORM_RECURRENT) {
        if (x->backward) rec_bwd_task(x, n, h, w);
        else rec_fwd_task(x, n, h, w);
    } else {
        if (x->backward) ck_bwd_task(x, n, h, w);
        else ck_fwd_task(x, n, h, w);
    }
}

static la_status dg_run(dg_args * x, bool backward) {
    int64_t N;
    la_status st = la_check_common(x->sh, x->opts, &N);
    if (st != LA_STATUS_OK) return st;
    if (!x->q || !x->k || !x->v) return LA_STATUS_INVALID_ARG;
    if (!backward && !x->o) return LA_STATUS_INVALID_ARG;
    if (backward && (!x->dout || !x->dq || !x->dk || !x->dv)) return LA_STATUS_INVALID_ARG;
    if (backward && ((x->gk != NULL) != (x->dgk != NULL) || (x->gv != NULL) != (x->dgv != NULL)))
        return LA_STATUS_INVALID_ARG;
    if (x->rwkv && (!x->gk || !x->u || (backward && !x->du))) return LA_STATUS_INVALID_ARG;
    if (x->opts->form == LA_FORM_CHUNK) {
        if (x->gv) return LA_STATUS_UNSUPPORTED;  // as fla's chunk_gla
        if (!x->gk) return LA_STATUS_INVALID_ARG;
    }
    x->scale = la_opts_scale(x->opts, x->sh.K);
    x->C = la_opts_chunk(x->opts);
    x->maxlen = la_max_seq_len(x->sh, x->opts);
    const size_t need = dg_workspace(backward, x->rwkv, x->sh, x->opts);
    void * ws;
    bool owned;
    st = la_ws_acquire(x->opts, need, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    if (x->opts->form == LA_FORM_REF) {
        la_ref_dims d = { x->sh, N, x->opts->cu_seqlens, (double)x->scale };
        if (x->rwkv && backward)
            la_rwkv6_bwd_ref(x->dq, x->dk, x->dv, x->dgk, x->du, x->dinit, x->dout, x->dfinal, x->q,
                             x->k, x->v, x->gk, x->u, x->init, d, ws);
        else if (x->rwkv)
            la_rwkv6_fwd_ref(x->o, x->final, x->q, x->k, x->v, x->gk, x->u, x->init, d, ws);
        else if (backward)
            la_gla_bwd_ref(x->dq, x->dk, x->dv, x->dgk, x->dgv, x->dinit, x->dout, x->dfinal, x->q,
                           x->k, x->v, x->gk, x->gv, x->init, d, ws);
        else
            la_gla_fwd_ref(x->o, x->final, x->q, x->k, x->v, x->gk, x->gv, x->init, d, ws);
        la_ws_release(ws, owned);
        return LA_STATUS_OK;
    }
    const size_t per = per_thread_bytes(backward, x->rwkv, x->sh, x->opts);
    const int64_t ntask = N * x->sh.H;
    if (x->rwkv && backward)
        x->du_part = (float *)((char *)ws + (size_t)la_slots(ntask) * per);
    x->backward = backward;
    la_run_tasks(ntask, ws, per, dg_task, x);
    if (x->rwkv && backward) {  // du = sum over sequences, in order
        const int64_t H = x->sh.H, K = x->sh.K;
        for (int64_t e = 0; e < H * K; e++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) s += (double)x->du_part[n * H * K + e];
            x->du[e] = (float)s;
        }
    }
    la_ws_release(ws, owned);
    return LA_STATUS_OK;
}

la_status la_gla_forward(float * o, float * final_state, const float * q, const float * k,
                         const float * v, const float * gk, const float * gv,
                         const float * initial_state, la_shape sh, const la_opts * opts) {
    dg_args x = { .q = q, .k = k, .v = v, .gk = gk, .gv = gv, .init = initial_state, .o = o,
                  .final = final_state, .sh = sh, .opts = opts };
    return dg_run(&x, false);
}

la_status la_gla_backward(float * dq, float * dk, float * dv, float * dgk, float * dgv,
                          float * dinitial_state, const float * dout,
                          const float * dfinal_state, const float * q, const float * k,
                          const float * v, const float * gk, const float * gv,
                          const float * initial_state, la_shape sh, const la_opts * opts) {
    dg_args x = { .q = q, .k = k, .v = v, .gk = gk, .gv = gv, .init = initial_state,
                  .dout = dout, .dfinal = dfinal_state, .dq = dq, .dk = dk, .dv = dv,
                  .dgk = dgk, .dgv = dgv, .dinit = dinitial_state, .sh = sh, .opts = opts };
    return dg_run(&x, true);
}

la_status la_rwkv6_forward(float * o, float * final_state, const float * r, const float * k,
                           const float * v, const float * w, const float * u,
                           const float * initial_state, la_shape sh, const la_opts * opts) {
    dg_args x = { .rwkv = true, .q = r, .k = k, .v = v, .gk = w, .u = u, .init = initial_state,
                  .o = o, .final = final_state, .sh = sh, .opts = opts };
    return dg_run(&x, false);
}

la_status la_rwkv6_backward(float * dr, float * dk, float * dv, float * dw, float * du,
                            float * dinitial_state, const float * dout,
                            const float * dfinal_state, const float * r, const float * k,
                            const float * v, const float * w, const float * u,
                            const float * initial_state, la_shape sh, const la_opts * opts) {
    dg_args x = { .rwkv = true, .q = r, .k = k, .v = v, .gk = w, .u = u, .init = initial_state,
                  .dout = dout, .dfinal = dfinal_state, .dq = dr, .dk = dk, .dv = dv, .dgk = dw,
                  .du = du, .dinit = dinitial_state, .sh = sh, .opts = opts };
    return dg_run(&x, true);
}
