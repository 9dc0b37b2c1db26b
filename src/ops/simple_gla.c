// simple_gla: linear attention with a scalar per-head decay (OPS.md 2.2), in three forms.
//
//   S_t = exp(g_t) S_{t-1} + k_t v_t^T ;   o_t = s S_t^T q_t
//
// with g from a data-dependent gate g (B,T,H), a constant g_gamma (H), or no gate at all
// (plain linear attention). retention, linear_attn and mamba2 are built on these kernels.
//
// Forms
//   ref        plain recurrence in src/ops/diag_ref.c (single-threaded oracle).
//   recurrent  token loop, one pass over the K x V state per token (ALGORITHMS.md 2.5);
//              backward: a forward pass gives S_t and dq_t = s S_t do_t, a reverse pass carries
//              the adjoint G = dL/dS_t and gives dk_t = G v_t, dv_t = G^T k_t.
//   chunk      chunkwise parallel (ALGORITHMS.md 3.1), per chunk of C tokens with in-chunk
//              cumulative gate b_r = sum_{i<=r} g_i:
//                A       = s (Q K^T) o D,  D_rc = exp(b_r - b_c) for r >= c, else 0
//                O       = s (Q S) o exp(b) + A V
//                S_next  = exp(b_L) S + (K o exp(b_L - b))^T V
//              backward reverse over chunks with dS = dL/dS_[n+1]:
//                dV = A^T dO + (K o Gam) dS             Gam_r = exp(b_L - b_r)
//                dP = s (dO V^T) o D
//                dQ = s (dO S^T) o exp(b) + dP K
//                dK = (V dS^T) o Gam + dP^T Q
//                dS <- exp(b_L) dS + s (Q o exp(b))^T dO
//              The backward saves nothing from the forward: it recomputes the chunk-boundary
//              states in a first pass (K*V floats per chunk per thread).
// Every exponent formed is <= 0 for gates <= 0 (the mask is applied before the exp, and
// b is chunk-local), so gates down to -20 per token and sequences of any length are safe.
//
// Gate gradient (all fast forms; ALGORITHMS.md 3.1, exact): every dependence on the cumulative
// gate B_t goes through q_t e^{B_t} and k_t e^{-B_t}, plus the final state e^{B_T} S_0 + ...,
// so dL/dB_t = q_t . dq_t - k_t . dk_t (+ <S_T, dS_T> at t = T), and dg_t is its suffix sum
// over the sequence, accumulated in double.
//
// Dimensions: B, T, H, K, V, N, C as in OPS.md. Threads split (sequence, head) pairs; each
// pair is computed by one thread in a fixed order, so results do not depend on the thread count.
#include "internal.h"
#include "ref.h"
#include "vexp.h"

#include <stdlib.h>
#include <string.h>

typedef struct sg_args {
    const float * q, * k, * v;          // (B,T,H,K), (B,T,H,K), (B,T,H,V)
    const float * g, * g_gamma;         // (B,T,H) or NULL, (H) or NULL
    const float * init;                 // (N,H,K,V) or NULL
    float *       o, * final;           // (B,T,H,V), (N,H,K,V) or NULL
    const float * dout, * dfinal;       // (B,T,H,V), (N,H,K,V) or NULL
    float *       dq, * dk, * dv, * dg; // as q, k, v, g
    float *       dinit;                // (N,H,K,V) or NULL
    la_shape      sh;
    const la_opts * opts;
    float         scale;
    int64_t       C;
    int64_t       maxlen;               // longest sequence (sizes the boundary-state buffer)
    bool          backward;             // direction of the call
    size_t        per;                  // floats of scratch per thread
} sg_args;

static inline float sg_gate(const sg_args * a, int64_t t, int64_t h) {
    if (a->g) return a->g[t * a->sh.H + h];
    if (a->g_gamma) return a->g_gamma[h];
    return 0.0f;
}

static double dot_f64(const float * x, const float * y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)y[i];
    return s;
}

// ---------------------------------------------------------------------------------------------
// Recurrent form

// One (sequence, head): S (K,V) scratch. Reads and writes the state once per token.
LA_CLONES
static void rec_fwd_task(const sg_args * a, int64_t n, int64_t h, float * restrict S) {
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    S = la_state_begin(S, a->final, a->init, n * H + h, K * V);
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict qt = a->q + (t * H + h) * K;
        const float * restrict kt = a->k + (t * H + h) * K;
        const float * restrict vt = a->v + (t * H + h) * V;
        float * restrict ot = a->o + (t * H + h) * V;
        const float decay = expf(sg_gate(a, t, h));
        for (int64_t j = 0; j < V; j++) ot[j] = 0.0f;
        for (int64_t i = 0; i < K; i++) {
            float * restrict Si = S + i * V;
            const float ki = kt[i], qi = a->scale * qt[i];
            for (int64_t j = 0; j < V; j++) {
                const float s = decay * Si[j] + ki * vt[j];
                Si[j] = s;
                ot[j] += qi * s;
            }
        }
    }
}

// Backward for one (sequence, head): S, G (K,V) scratch.
LA_CLONES
static void rec_bwd_task(const sg_args * a, int64_t n, int64_t h, float * restrict S,
                         float * restrict G) {
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V, KV = K * V;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    // Forward: S_t, and dq_t = s S_t do_t (o_t reads S_t).
    la_state_load(S, a->init, n * H + h, KV);
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict kt = a->k + (t * H + h) * K;
        const float * restrict vt = a->v + (t * H + h) * V;
        const float * restrict dot = a->dout + (t * H + h) * V;
        float * restrict dqt = a->dq + (t * H + h) * K;
        const float decay = expf(sg_gate(a, t, h));
        for (int64_t i = 0; i < K; i++) {
            float * restrict Si = S + i * V;
            const float ki = kt[i];
            for (int64_t j = 0; j < V; j++) Si[j] = decay * Si[j] + ki * vt[j];
            dqt[i] = a->scale * la_dot_lanes(Si, dot, V);
        }
    }
    // Reverse: G = dL/dS_t. G += s q_t do_t^T; dk_t = G v_t; dv_t = G^T k_t; G *= exp(g_t).
    if (a->dfinal) memcpy(G, a->dfinal + (n * H + h) * KV, (size_t)KV * sizeof(float));
    else memset(G, 0, (size_t)KV * sizeof(float));
    double suffix = a->g ? dot_f64(S, G, KV) : 0.0;  // <S_T, dS_T>
    for (int64_t t = eos - 1; t >= bos; t--) {
        const float * restrict qt = a->q + (t * H + h) * K;
        const float * restrict kt = a->k + (t * H + h) * K;
        const float * restrict vt = a->v + (t * H + h) * V;
        const float * restrict dot = a->dout + (t * H + h) * V;
        float * restrict dkt = a->dk + (t * H + h) * K;
        float * restrict dvt = a->dv + (t * H + h) * V;
        const float decay = expf(sg_gate(a, t, h));
        for (int64_t j = 0; j < V; j++) dvt[j] = 0.0f;
        for (int64_t i = 0; i < K; i++) {
            float * restrict Gi = G + i * V;
            const float qi = a->scale * qt[i], ki = kt[i];
            for (int64_t j = 0; j < V; j++) {
                const float gij = Gi[j] + qi * dot[j];
                dvt[j] += gij * ki;
                Gi[j] = gij;
            }
            dkt[i] = la_dot_lanes(Gi, vt, V);
            for (int64_t j = 0; j < V; j++) Gi[j] *= decay;
        }
        if (a->g) {
            suffix += dot_f64(qt, a->dq + (t * H + h) * K, K) - dot_f64(kt, dkt, K);
            a->dg[t * H + h] = (float)suffix;
        }
    }
    if (a->dinit) memcpy(a->dinit + (n * H + h) * KV, G, (size_t)KV * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Chunk form

// b[r] = sum_{i <= r} g_{t0 + i}: the chunk-local cumulative log gate, kept in double so that
// differences b_r - b_c of large cumulative decays (|b| ~ 1000) stay accurate; only the
// differences are rounded to float before the exponential.
static void chunk_cumgate(const sg_args * a, int64_t t0, int64_t L, int64_t h, double * b) {
    double acc = 0;
    for (int64_t r = 0; r < L; r++) {
        const double g = (double)sg_gate(a, t0 + r, h);
        acc += g < LA_GATE_FLOOR ? LA_GATE_FLOOR : g;
        b[r] = acc;
    }
}

// A (L,L) with row stride C <- A o D: D_rc = exp(b_r - b_c) for r >= c, else 0. The mask is
// applied before the exp, so the exponent is always b_r - b_c <= 0.
LA_CLONES
static void mask_decay(float * restrict A, int64_t L, int64_t C, const double * restrict b,
                       bool gated) {
    for (int64_t r = 0; r < L; r++) {
        float * restrict Ar = A + r * C;
        if (gated) {
            const double br = b[r];
            for (int64_t c = 0; c <= r; c++) Ar[c] *= la_expf((float)(br - b[c]));
        }
        for (int64_t c = r + 1; c < L; c++) Ar[c] = 0.0f;
    }
}

// Y (L rows of n, stride ldy) row r *= w[r].
static void scale_rows(float * Y, int64_t ldy, int64_t L, int64_t ncol, const float * w) {
    for (int64_t r = 0; r < L; r++) {
        float * Yr = Y + r * ldy;
        const float s = w[r];
        for (int64_t j = 0; j < ncol; j++) Yr[j] *= s;
    }
}

// X (L,K) dense <- Xsrc (L rows, stride ld) with row r scaled by w[r].
static void copy_scaled(float * X, const float * Xsrc, int64_t ld, int64_t L, int64_t ncol,
                        const float * w) {
    for (int64_t r = 0; r < L; r++)
        for (int64_t j = 0; j < ncol; j++) X[r * ncol + j] = Xsrc[r * ld + j] * w[r];
}

// One chunk's state update: S <- exp(b_L) S + (K o exp(b_L - b))^T V. Kd (C,K), w (C) scratch.
static void chunk_state_step(la_gemm_fn gemm, float * S, const float * Kc, const float * Vc,
                             int64_t ldk, int64_t ldv, int64_t L, int64_t K, int64_t V,
                             const double * b, bool gated, float * Kd, float * w) {
    if (!gated) {
        gemm(true, false, K, V, L, 1.0f, Kc, ldk, Vc, ldv, 1.0f, S, V);
        return;
    }
    const double bL = b[L - 1];
    const float gL = expf((float)bL);
    for (int64_t e = 0; e < K * V; e++) S[e] *= gL;
    for (int64_t r = 0; r < L; r++) w[r] = expf((float)(bL - b[r]));
    copy_scaled(Kd, Kc, ldk, L, K, w);
    gemm(true, false, K, V, L, 1.0f, Kd, K, Vc, ldv, 1.0f, S, V);
}

// Per-thread scratch of the chunk forward, carved in this order (sizes with base == NULL).
typedef struct sg_fwd_buf {
    float *  S;   // (K, V) state S_[n]
    float *  A;   // (C, C) masked, decayed s Q K^T
    float *  Kd;  // (C, K) K o exp(b_L - b)
    double * b;   // (C) cumulative gate
    float *  w;   // (C) row weights
} sg_fwd_buf;

static size_t sg_fwd_layout(sg_fwd_buf * B, void * base, la_shape sh, int64_t C) {
    la_carver cv = { (char *)base, 0 };
    B->S = la_carve(&cv, (size_t)(sh.K * sh.V) * 4);
    B->A = la_carve(&cv, (size_t)(C * C) * 4);
    B->Kd = la_carve(&cv, (size_t)(C * sh.K) * 4);
    B->b = la_carve(&cv, (size_t)C * 8);
    B->w = la_carve(&cv, (size_t)C * 4);
    return cv.used;
}

static void chunk_fwd_task(const sg_args * a, int64_t n, int64_t h, float * ws) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V, C = a->C;
    const int64_t ldk = H * K, ldv = H * V;
    const bool gated = a->g || a->g_gamma;
    sg_fwd_buf bf;
    sg_fwd_layout(&bf, ws, a->sh, C);
    float * S = bf.S, * A = bf.A, * Kd = bf.Kd, * w = bf.w;
    double * b = bf.b;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    S = la_state_begin(S, a->final, a->init, n * H + h, K * V);
    for (int64_t t0 = bos; t0 < eos; t0 += C) {
        const int64_t L = LA_MIN(C, eos - t0);
        const float * Qc = a->q + (t0 * H + h) * K;
        const float * Kc = a->k + (t0 * H + h) * K;
        const float * Vc = a->v + (t0 * H + h) * V;
        float * Oc = a->o + (t0 * H + h) * V;
        if (gated) chunk_cumgate(a, t0, L, h, b);
        // Intra-chunk scores: A = s Q K^T o D.
        gemm(false, true, L, L, K, a->scale, Qc, ldk, Kc, ldk, 0.0f, A, C);
        mask_decay(A, L, C, b, gated);
        // Inter-chunk read O = s (Q S) o exp(b), then the intra-chunk part O += A V.
        gemm(false, false, L, V, K, a->scale, Qc, ldk, S, V, 0.0f, Oc, ldv);
        if (gated) {
            for (int64_t r = 0; r < L; r++) w[r] = expf((float)b[r]);
            scale_rows(Oc, ldv, L, V, w);
        }
        gemm(false, false, L, V, L, 1.0f, A, C, Vc, ldv, 1.0f, Oc, ldv);
        chunk_state_step(gemm, S, Kc, Vc, ldk, ldv, L, K, V, b, gated, Kd, w);
    }
}

// Per-thread scratch of the chunk backward, carved in this order (sizes with base == NULL).
typedef struct sg_bwd_buf {
    float *  ckpt;  // (la_ckpt_count, K, V) checkpoints S_[gM] (la_ckpt_group)
    float *  grp;   // (M, K, V) the boundary states S_[c] of one group of M chunks
    float *  ST;    // (K, V) the final state S_T
    float *  dS;    // (K, V) dL/dS_[c+1]
    float *  A;     // (C, C) s Q K^T o D
    float *  dP;    // (C, C) s dO V^T o D
    float *  Kd;    // (C, K) K o Gam
    float *  Qg;    // (C, K) Q o exp(b)
    double * b;     // (C) cumulative gate
    float *  w;     // (C) Gam = exp(b_L - b)
    float *  e;     // (C) exp(b)
} sg_bwd_buf;

static size_t sg_bwd_layout(sg_bwd_buf * B, void * base, la_shape sh, int64_t C, int64_t maxlen) {
    const int64_t KV = sh.K * sh.V;
    la_carver cv = { (char *)base, 0 };
    const int64_t nch = (maxlen + C - 1) / C, M = la_ckpt_group(nch);
    B->ckpt = la_carve(&cv, (size_t)(la_ckpt_count(nch, M) * KV) * 4);
    B->grp = la_carve(&cv, (size_t)(M * KV) * 4);
    B->ST = la_carve(&cv, (size_t)KV * 4);
    B->dS = la_carve(&cv, (size_t)KV * 4);
    B->A = la_carve(&cv, (size_t)(C * C) * 4);
    B->dP = la_carve(&cv, (size_t)(C * C) * 4);
    B->Kd = la_carve(&cv, (size_t)(C * sh.K) * 4);
    B->Qg = la_carve(&cv, (size_t)(C * sh.K) * 4);
    B->b = la_carve(&cv, (size_t)C * 8);
    B->w = la_carve(&cv, (size_t)C * 4);
    B->e = la_carve(&cv, (size_t)C * 4);
    return cv.used;
}

// la_ckpt's step: S <- the state after chunk `chunk` of the task's sequence.
typedef struct sg_step_ctx {
    const sg_args * a;
    int64_t         bos, eos, h;
    sg_bwd_buf *    bf;
} sg_step_ctx;

static void sg_chunk_step(const void * ctx, int64_t chunk, float * S) {
    const sg_step_ctx * s = ctx;
    const sg_args * a = s->a;
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V;
    const int64_t t0 = s->bos + chunk * a->C, L = LA_MIN(a->C, s->eos - t0);
    const bool gated = a->g || a->g_gamma;
    if (gated) chunk_cumgate(a, t0, L, s->h, s->bf->b);
    chunk_state_step(la_kern()->gemm, S, a->k + (t0 * H + s->h) * K, a->v + (t0 * H + s->h) * V,
                     H * K, H * V, L, K, V, s->bf->b, gated, s->bf->Kd, s->bf->w);
}

static void chunk_bwd_task(const sg_args * a, int64_t n, int64_t h, float * ws) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V, C = a->C, KV = K * V;
    const int64_t ldk = H * K, ldv = H * V;
    const bool gated = a->g || a->g_gamma;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    const int64_t nch = (eos - bos + C - 1) / C;
    sg_bwd_buf bf;
    sg_bwd_layout(&bf, ws, a->sh, C, a->maxlen);
    float * dS = bf.dS, * A = bf.A, * dP = bf.dP, * Kd = bf.Kd, * Qg = bf.Qg;
    float * w = bf.w, * e = bf.e;
    double * b = bf.b;
    // Pass 1: S_T, and what pass 2 needs of the boundary states S_[c].
    sg_step_ctx sc = { a, bos, eos, h, &bf };
    la_ckpt ck = { bf.ckpt, bf.grp, la_ckpt_group((a->maxlen + C - 1) / C), nch, KV };
    la_state_load(bf.ST, a->init, n * H + h, KV);
    la_ckpt_run(&ck, bf.ST, sg_chunk_step, &sc);
    // Pass 2: reverse over chunks.
    if (a->dfinal) memcpy(dS, a->dfinal + (n * H + h) * KV, (size_t)KV * sizeof(float));
    else memset(dS, 0, (size_t)KV * sizeof(float));
    double suffix = a->g ? dot_f64(bf.ST, dS, KV) : 0.0;  // <S_T, dS_T>
    for (int64_t c = nch - 1; c >= 0; c--) {
        const int64_t t0 = bos + c * C, L = LA_MIN(C, eos - t0);
        const float * Qc = a->q + (t0 * H + h) * K;
        const float * Kc = a->k + (t0 * H + h) * K;
        const float * Vc = a->v + (t0 * H + h) * V;
        const float * dOc = a->dout + (t0 * H + h) * V;
        const float * Sc = la_ckpt_state(&ck, c, sg_chunk_step, &sc);
        float * dQc = a->dq + (t0 * H + h) * K;
        float * dKc = a->dk + (t0 * H + h) * K;
        float * dVc = a->dv + (t0 * H + h) * V;
        if (gated) {
            chunk_cumgate(a, t0, L, h, b);
            for (int64_t r = 0; r < L; r++) {
                w[r] = expf((float)(b[L - 1] - b[r]));
                e[r] = expf((float)b[r]);
            }
        }
        gemm(false, true, L, L, K, a->scale, Qc, ldk, Kc, ldk, 0.0f, A, C);
        mask_decay(A, L, C, b, gated);
        gemm(false, true, L, L, V, a->scale, dOc, ldv, Vc, ldv, 0.0f, dP, C);
        mask_decay(dP, L, C, b, gated);
        // dV = A^T dO + (K o Gam) dS
        gemm(true, false, L, V, L, 1.0f, A, C, dOc, ldv, 0.0f, dVc, ldv);
        const float * Kdc = Kc;
        int64_t ldkd = ldk;
        if (gated) {
            copy_scaled(Kd, Kc, ldk, L, K, w);
            Kdc = Kd;
            ldkd = K;
        }
        gemm(false, false, L, V, K, 1.0f, Kdc, ldkd, dS, V, 1.0f, dVc, ldv);
        // dQ = s (dO S^T) o exp(b) + dP K
        gemm(false, true, L, K, V, a->scale, dOc, ldv, Sc, V, 0.0f, dQc, ldk);
        if (gated) scale_rows(dQc, ldk, L, K, e);
        gemm(false, false, L, K, L, 1.0f, dP, C, Kc, ldk, 1.0f, dQc, ldk);
        // dK = (V dS^T) o Gam + dP^T Q
        gemm(false, true, L, K, V, 1.0f, Vc, ldv, dS, V, 0.0f, dKc, ldk);
        if (gated) scale_rows(dKc, ldk, L, K, w);
        gemm(true, false, L, K, L, 1.0f, dP, C, Qc, ldk, 1.0f, dKc, ldk);
        // dS_[c] = exp(b_L) dS + s (Q o exp(b))^T dO
        const float * Qgc = Qc;
        int64_t ldqg = ldk;
        if (gated) {
            const float gL = expf((float)b[L - 1]);
            for (int64_t i = 0; i < KV; i++) dS[i] *= gL;
            copy_scaled(Qg, Qc, ldk, L, K, e);
            Qgc = Qg;
            ldqg = K;
        }
        gemm(true, false, K, V, L, a->scale, Qgc, ldqg, dOc, ldv, 1.0f, dS, V);
        // dg_t = suffix sum of q_t . dq_t - k_t . dk_t (+ <S_T, dS_T>).
        if (a->g) {
            for (int64_t r = L - 1; r >= 0; r--) {
                suffix += dot_f64(Qc + r * ldk, dQc + r * ldk, K) -
                          dot_f64(Kc + r * ldk, dKc + r * ldk, K);
                a->dg[(t0 + r) * H + h] = (float)suffix;
            }
        }
    }
    if (a->dinit) memcpy(a->dinit + (n * H + h) * KV, dS, (size_t)KV * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Drivers

// Elements of per-thread scratch for one form and direction.
static size_t per_thread_elems(bool backward, la_shape sh, const la_opts * opts) {
    const int64_t KV = sh.K * sh.V;
    if (opts->form == LA_FORM_RECURRENT) return 2 * (la_align_up((size_t)KV * 4) / 4);
    const int64_t C = la_opts_chunk(opts);
    sg_fwd_buf f;
    sg_bwd_buf b;
    const size_t bytes = backward ? sg_bwd_layout(&b, NULL, sh, C, la_max_seq_len(sh, opts))
                                  : sg_fwd_layout(&f, NULL, sh, C);
    return la_align_up(bytes) / 4;
}

static size_t ref_ws_bytes(la_shape sh, const la_opts * opts, int64_t N) {
    la_ref_dims d = { sh, N, opts->cu_seqlens, 0 };
    return (size_t)la_simple_gla_ref_ws_elems(d) * sizeof(float);
}

size_t la_simple_gla_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    int64_t N;
    if (la_check_common(sh, opts, &N) != LA_STATUS_OK) return 0;
    if (opts->form == LA_FORM_REF) return ref_ws_bytes(sh, opts, N) + LA_ALIGN;
    return (size_t)la_slots(N * sh.H) * per_thread_elems(backward, sh, opts) * sizeof(float) +
           LA_ALIGN;
}

// One (sequence, head) task of la_run_tasks in the form and direction of the call.
static void sg_task(const void * ctx, int64_t task, void * scratch) {
    const sg_args * a = ctx;
    float * w = scratch;
    const int64_t n = task / a->sh.H, h = task % a->sh.H;
    if (a->opts->form == LA_FORM_RECURRENT) {
        if (a->backward) rec_bwd_task(a, n, h, w, w + a->per / 2);
        else rec_fwd_task(a, n, h, w);
    } else {
        if (a->backward) chunk_bwd_task(a, n, h, w);
        else chunk_fwd_task(a, n, h, w);
    }
}

static la_status sg_run(sg_args * a, bool backward) {
    int64_t N;
    la_status st = la_check_common(a->sh, a->opts, &N);
    if (st != LA_STATUS_OK) return st;
    if (a->g && a->g_gamma) return LA_STATUS_INVALID_ARG;
    if (!a->q || !a->k || !a->v) return LA_STATUS_INVALID_ARG;
    if (!backward && !a->o) return LA_STATUS_INVALID_ARG;
    if (backward && (!a->dout || !a->dq || !a->dk || !a->dv)) return LA_STATUS_INVALID_ARG;
    if (backward && (a->g != NULL) != (a->dg != NULL)) return LA_STATUS_INVALID_ARG;
    a->scale = la_opts_scale(a->opts, a->sh.K);
    a->C = la_opts_chunk(a->opts);
    a->maxlen = la_max_seq_len(a->sh, a->opts);

    const size_t need = la_simple_gla_workspace_size(backward, a->sh, a->opts);
    void * ws;
    bool owned;
    st = la_ws_acquire(a->opts, need, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    if (a->opts->form == LA_FORM_REF) {
        la_ref_dims d = { a->sh, N, a->opts->cu_seqlens, (double)a->scale };
        if (backward)
            la_simple_gla_bwd_ref(a->dq, a->dk, a->dv, a->dg, a->dinit, a->dout, a->dfinal, a->q,
                                  a->k, a->v, a->g, a->g_gamma, a->init, d, ws);
        else
            la_simple_gla_fwd_ref(a->o, a->final, a->q, a->k, a->v, a->g, a->g_gamma, a->init, d,
                                  ws);
    } else {
        a->backward = backward;
        a->per = per_thread_elems(backward, a->sh, a->opts);
        la_run_tasks(N * a->sh.H, ws, a->per * sizeof(float), sg_task, a);
    }
    la_ws_release(ws, owned);
    return LA_STATUS_OK;
}

la_status la_simple_gla_forward(float * o, float * final_state,
                                const float * q, const float * k, const float * v,
                                const float * g, const float * g_gamma,
                                const float * initial_state,
                                la_shape sh, const la_opts * opts) {
    sg_args a = { .q = q, .k = k, .v = v, .g = g, .g_gamma = g_gamma, .init = initial_state,
                  .o = o, .final = final_state, .sh = sh, .opts = opts };
    return sg_run(&a, false);
}

la_status la_simple_gla_backward(float * dq, float * dk, float * dv, float * dg,
                                 float * dinitial_state,
                                 const float * dout, const float * dfinal_state,
                                 const float * q, const float * k, const float * v,
                                 const float * g, const float * g_gamma,
                                 const float * initial_state,
                                 la_shape sh, const la_opts * opts) {
    sg_args a = { .q = q, .k = k, .v = v, .g = g, .g_gamma = g_gamma, .init = initial_state,
                  .dout = dout, .dfinal = dfinal_state, .dq = dq, .dk = dk, .dv = dv, .dg = dg,
                  .dinit = dinitial_state, .sh = sh, .opts = opts };
    return sg_run(&a, true);
}

// ---------------------------------------------------------------------------------------------
// retention: g_gamma[h] = log(1 - 2^(-5-h)) (OPS.md 2.3). The gamma table lives at the front of
// the workspace; simple_gla's scratch follows it.

void la_retention_gamma(float * g_gamma, int64_t H) {
    for (int64_t h = 0; h < H; h++) g_gamma[h] = (float)log1p(-exp2(-5.0 - (double)h));
}

size_t la_retention_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return la_align_up((size_t)sh.H * sizeof(float)) +
           la_simple_gla_workspace_size(backward, sh, opts) + LA_ALIGN;
}

static la_status retention_run(bool backward, float * dq, float * dk, float * dv,
                               float * dinit, const float * dout, const float * dfinal,
                               float * o, float * final, const float * q, const float * k,
                               const float * v, const float * init, la_shape sh,
                               const la_opts * opts) {
    int64_t N;
    la_status st = la_check_common(sh, opts, &N);
    if (st != LA_STATUS_OK) return st;
    const size_t need = la_retention_workspace_size(backward, sh, opts);
    void * ws;
    bool owned;
    st = la_ws_acquire(opts, need, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    float * gamma = ws;
    la_retention_gamma(gamma, sh.H);
    la_opts inner = *opts;
    inner.work = (char *)ws + la_align_up((size_t)sh.H * sizeof(float));
    inner.work_size = need - la_align_up((size_t)sh.H * sizeof(float));
    if (backward)
        st = la_simple_gla_backward(dq, dk, dv, NULL, dinit, dout, dfinal, q, k, v, NULL, gamma,
                                    init, sh, &inner);
    else
        st = la_simple_gla_forward(o, final, q, k, v, NULL, gamma, init, sh, &inner);
    la_ws_release(ws, owned);
    return st;
}

la_status la_retention_forward(float * o, float * final_state,
                               const float * q, const float * k, const float * v,
                               const float * initial_state, la_shape sh, const la_opts * opts) {
    return retention_run(false, NULL, NULL, NULL, NULL, NULL, NULL, o, final_state, q, k, v,
                         initial_state, sh, opts);
}

la_status la_retention_backward(float * dq, float * dk, float * dv, float * dinitial_state,
                                const float * dout, const float * dfinal_state,
                                const float * q, const float * k, const float * v,
                                const float * initial_state, la_shape sh, const la_opts * opts) {
    return retention_run(true, dq, dk, dv, dinitial_state, dout, dfinal_state, NULL, NULL, q, k,
                         v, initial_state, sh, opts);
}
