// Non-causal (bidirectional) linear attention for encoders: linear_attn and simple_gla with
// global sums over each sequence instead of prefix sums (OPS.md 2.1-2.2 without the causal
// mask; vision RetNets' bidirectional decay gamma^|t-j| when the gate is constant).
//
//   linear_attn:  o_t = s q_t^T S,  S = sum_j k_j v_j^T
//                 normalize: o_t <- o_t / (s q_t . z + 1e-10),  z = sum_j k_j
//   simple_gla:   o_t = s sum_j D_tj (q_t . k_j) v_j,  D_tj = exp(-|G_t - G_j|)
//                 (= exp(G_t - G_j) for j <= t, exp(G_j - G_t) for j > t; G = cumsum(g) per
//                 sequence, or g_gamma[h] per token; no gate: D = 1)
//
// Both are a causal pass (j <= t) plus an anti-causal one (j > t):
//   forward   S_t = e^{g_t} S_{t-1} + k_t v_t^T             o_t  = s S_t^T q_t
//   reverse   R_{t-1} = e^{g_t} (R_t + k_t v_t^T), R_end = 0  o_t += s R_t^T q_t
// with R_t = sum_{j>t} e^{G_j - G_t} k_j v_j^T.
//
// Gate gradient (exact, global form, as ALGORITHMS.md 3.1): the output depends on G only through
// q_t e^{G_t}, k_j e^{-G_j} (causal part) and q_t e^{-G_t}, k_j e^{G_j} (anti-causal part), so
//   dL/dG_t = q_t . (dq^c_t - dq^a_t) - k_t . (dk^c_t - dk^a_t)
// with dq^c, dk^c the gradients through the causal part (the diagonal j = t included; it
// cancels) and dq^a, dk^a those through the anti-causal part; dg_t = sum_{t' >= t} dL/dG_t'
// (a suffix sum in double). The first token's gate never enters D: its dg is set to exactly 0.
//
// Forms, one (sequence, head) per task:
//   REF        the quadratic definition in double: row pass (dq) and column pass (dk, dv).
//   RECURRENT  the two token loops above. Backward: the forward loop carries S and the adjoint
//              E_t = dL/dR_t = s q_t dn_t^T + e^{g_t} E_{t-1} (dq^c = s S_t dn_t,
//              dk^a_t = e^{g_t} E_{t-1} v_t, dv^a_t = e^{g_t} E_{t-1}^T k_t); the reverse loop
//              carries R and G_t = dL/dS_t = s q_t dn_t^T + e^{g_{t+1}} G_{t+1}
//              (dq^a = s R_t dn_t, dk^c = G_t v_t, dv^c = G_t^T k_t).
//   CHUNK      simple_gla: per chunk of C tokens with chunk-local cumulative gates b (double),
//              e_r = e^{b_r}, w_r = e^{b_L - b_r}, every exponent <= 0:
//                intra   A = s (Q K^T) o D,  D_rc = e^{-|b_r - b_c|} (both triangles)
//                forward pass   O  = A V + s (Q o e) S_c ;   S_{c+1} = e^{b_L} S_c + (K o w)^T V
//                reverse pass   O += s (Q o w) R_{c+1} ;     R_c = e^{b_L} R_{c+1} + (K o e)^T V
//              backward: the forward pass carries S_c and dR_c (dR_{c+1} = e^{b_L} dR_c +
//              s (Q o w)^T dO), the reverse pass R_{c+1} and dS_{c+1} (dS_c = e^{b_L} dS_{c+1} +
//              s (Q o e)^T dO):
//                dV = A^T dO + (K o e) dR_c + (K o w) dS_{c+1}
//                dQ = dP K + s (dO S_c^T) o e + s (dO R_{c+1}^T) o w,   dP = s (dO V^T) o D
//                dK = dP^T Q + (V dR_c^T) o e + (V dS_{c+1}^T) o w
//              so neither pass stores states: memory O(K V + C^2) per thread.
//              linear_attn: the global sums directly, S = K^T V and o = s Q S by blocks of C
//              rows (la_kern()->gemm); backward dS = s Q^T dN, dQ = s dN S^T, dK = V dS^T,
//              dV = K dS.
// The normaliser (linear_attn, every form), with d_t = s q_t . z + 1e-10 and n_t the numerator:
//   dn_t = do_t / d_t,  dd_t = -(do_t . n_t) / d_t^2,  dq_t += s dd_t z,  dk_j += s sum_t dd_t q_t
// The backward of REF and RECURRENT computes n into dv first (dv is overwritten at the end).
//
// No state: the forward saves nothing and the backward recomputes what it needs; gradients are
// overwritten. Log gates are floored at LA_GATE_FLOOR inside cumulative sums (REF, CHUNK), as in
// simple_gla.c, so a gate of -inf is a hard reset rather than a NaN.
//
// Dimensions: B, T, H, K, V, N, C as in OPS.md. Results do not depend on the thread count.
#include "internal.h"
#include "vexp.h"

#include <stdlib.h>
#include <string.h>

#define NC_NORM_EPS 1e-10f

typedef struct nc_args {
    const float * q, * k, * v;        // (B,T,H,K), (B,T,H,K), (B,T,H,V)
    const float * g, * g_gamma;       // (B,T,H) or NULL, (H) or NULL
    const float * dout;               // (B,T,H,V) backward only
    float *       o;                  // (B,T,H,V) forward only
    float *       dq, * dk, * dv, * dg;
    la_shape      sh;
    const la_opts * opts;
    float         scale;
    int64_t       C, maxlen;
    bool          linear;             // linear_attn (else simple_gla)
    bool          normalize;          // linear_attn with normalize
    bool          global;             // linear_attn's CHUNK form: the global sums
    bool          backward;
    size_t        per;                // bytes of scratch per thread
} nc_args;

static inline float nc_gate(const nc_args * a, int64_t t, int64_t h) {
    if (a->g) return a->g[t * a->sh.H + h];
    if (a->g_gamma) return a->g_gamma[h];
    return 0.0f;
}
static inline bool nc_gated(const nc_args * a) { return a->g || a->g_gamma; }

static double dot_d(const float * x, const float * y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)y[i];
    return s;
}

// ---------------------------------------------------------------------------------------------
// Per-thread scratch, carved in this order (sizes with base NULL). The workspace queries have no
// normalize flag or gate pointer, so they size the superset: the normaliser's buffers for
// linear_attn and the gate-gradient buffer for simple_gla.

typedef struct nc_buf {
    double * z;                // (K) key sum
    float *  zf;               // (K)
    float *  den, * dd;        // (maxlen) d_t and dd_t (REF, RECURRENT backward); den is (C)
                               // in the global form
    float *  dn;               // (V) one row of do / d (REF, RECURRENT backward)
    double * G, * gG;          // (maxlen) cumulative gate (REF), dL/dG (backward)
    double * acc;              // (2K + 2V) REF accumulators; (K) dz in the global form
    float *  S, * S2;          // (K, V) states: S and dR / E (forward pass), R and dS / G
    float *  X, * Y;           // (C, C) A and dP
    float *  Qx, * Kx;         // (C, K) weighted Q, K
    float *  Tq, * Tk;         // (C, K) inter-chunk dq, dk terms
    float *  dN;               // (C, V) global form: a block of do / d
    double * b;                // (C) chunk-local cumulative gate
    float *  e, * w;           // (C) e^{b}, e^{b_L - b}
    float *  Dr;               // (C) one row of the intra-chunk decay
} nc_buf;

static size_t nc_layout(nc_buf * B, void * base, la_shape sh, const la_opts * opts, bool linear,
                        bool backward, int64_t maxlen) {
    la_carver cv = { (char *)base, 0 };
    memset(B, 0, sizeof(*B));
    const int64_t K = sh.K, V = sh.V, C = la_opts_chunk(opts), KV = K * V;
    if (linear) {
        B->z = la_carve(&cv, (size_t)K * 8);
        B->zf = la_carve(&cv, (size_t)K * 4);
    }
    const bool global = linear && opts->form == LA_FORM_CHUNK;
    if (global) {
        B->S = la_carve(&cv, (size_t)KV * 4);
        if (backward) {
            B->S2 = la_carve(&cv, (size_t)KV * 4);
            B->dN = la_carve(&cv, (size_t)(C * V) * 4);
            B->acc = la_carve(&cv, (size_t)K * 8);
            B->den = la_carve(&cv, (size_t)C * 4);
        }
        return cv.used;
    }
    if (linear && backward) {
        B->den = la_carve(&cv, (size_t)maxlen * 4);
        B->dd = la_carve(&cv, (size_t)maxlen * 4);
    }
    if (backward && opts->form != LA_FORM_CHUNK) B->dn = la_carve(&cv, (size_t)V * 4);
    if (!linear && backward) B->gG = la_carve(&cv, (size_t)maxlen * 8);
    if (opts->form == LA_FORM_REF) {
        if (!linear) B->G = la_carve(&cv, (size_t)maxlen * 8);
        B->acc = la_carve(&cv, (size_t)(2 * K + 2 * V) * 8);
    } else if (opts->form == LA_FORM_RECURRENT) {
        B->S = la_carve(&cv, (size_t)KV * 4);
        if (backward) B->S2 = la_carve(&cv, (size_t)KV * 4);
    } else {
        B->S = la_carve(&cv, (size_t)KV * 4);
        B->X = la_carve(&cv, (size_t)(C * C) * 4);
        B->Qx = la_carve(&cv, (size_t)(C * K) * 4);
        B->Kx = la_carve(&cv, (size_t)(C * K) * 4);
        B->b = la_carve(&cv, (size_t)C * 8);
        B->e = la_carve(&cv, (size_t)C * 4);
        B->w = la_carve(&cv, (size_t)C * 4);
        if (backward) {
            B->S2 = la_carve(&cv, (size_t)KV * 4);
            B->Y = la_carve(&cv, (size_t)(C * C) * 4);
            B->Tq = la_carve(&cv, (size_t)(C * K) * 4);
            B->Tk = la_carve(&cv, (size_t)(C * K) * 4);
            B->Dr = la_carve(&cv, (size_t)C * 4);
        }
    }
    return cv.used;
}

// ---------------------------------------------------------------------------------------------
// Normaliser (linear_attn)

// z = sum_t k_t over the sequence (double), zf its float copy.
static void key_sum(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    const int64_t H = a->sh.H, K = a->sh.K;
    for (int64_t i = 0; i < K; i++) B->z[i] = 0;
    for (int64_t t = bos; t < eos; t++) {
        const float * kt = a->k + (t * H + h) * K;
        for (int64_t i = 0; i < K; i++) B->z[i] += (double)kt[i];
    }
    for (int64_t i = 0; i < K; i++) B->zf[i] = (float)B->z[i];
}

static inline float norm_den(const nc_args * a, const float * qt, const float * zf) {
    return a->scale * la_dot_lanes(qt, zf, a->sh.K) + NC_NORM_EPS;
}

// o_t <- n_t / d_t for the rows of the sequence (n_t in o).
static void norm_fwd(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V;
    key_sum(a, bos, eos, h, B);
    for (int64_t t = bos; t < eos; t++) {
        const float inv = 1.0f / norm_den(a, a->q + (t * H + h) * K, B->zf);
        float * ot = a->o + (t * H + h) * V;
        for (int64_t j = 0; j < V; j++) ot[j] *= inv;
    }
}

// Before the numerator backward (n_t in dv): den_t = d_t, dd_t = -(do_t . n_t) / d_t^2.
static void norm_bwd_pre(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V;
    key_sum(a, bos, eos, h, B);
    for (int64_t t = bos; t < eos; t++) {
        const int64_t r = t * H + h;
        const float d = norm_den(a, a->q + r * K, B->zf);
        B->den[t - bos] = d;
        B->dd[t - bos] = (float)(-dot_d(a->dout + r * V, a->dv + r * V, V) /
                                 ((double)d * (double)d));
    }
}

// After it: dq_t += s dd_t z ;  dk_j += s sum_t dd_t q_t.
static void norm_bwd_post(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    const int64_t H = a->sh.H, K = a->sh.K;
    double * dz = B->z;  // z is no longer needed: reuse it for dz
    for (int64_t i = 0; i < K; i++) dz[i] = 0;
    for (int64_t t = bos; t < eos; t++) {
        const float dds = a->scale * B->dd[t - bos];
        const float * qt = a->q + (t * H + h) * K;
        float * dqt = a->dq + (t * H + h) * K;
        for (int64_t i = 0; i < K; i++) {
            dqt[i] += dds * B->zf[i];
            dz[i] += (double)dds * (double)qt[i];
        }
    }
    for (int64_t t = bos; t < eos; t++) {
        float * dkt = a->dk + (t * H + h) * K;
        for (int64_t i = 0; i < K; i++) dkt[i] += (float)dz[i];
    }
}

// The output gradient the numerator sees at row t: do_t, or do_t / d_t with normalize.
static inline const float * dn_row(const nc_args * a, int64_t bos, int64_t t, int64_t h,
                                   nc_buf * B) {
    const int64_t V = a->sh.V;
    const float * dot = a->dout + (t * a->sh.H + h) * V;
    if (!a->normalize) return dot;
    const float d = B->den[t - bos];
    for (int64_t j = 0; j < V; j++) B->dn[j] = dot[j] / d;
    return B->dn;
}

// The first token's gate never enters D (every D_tj spans the gates of (min, max] of t, j), so
// its gradient is exactly 0; the suffix sum over the whole sequence reaches 0 only up to rounding.
static void first_dg_zero(const nc_args * a, int64_t bos, int64_t eos, int64_t h) {
    if (eos > bos) a->dg[bos * a->sh.H + h] = 0.0f;
}

// dg_t = suffix sum of gG over the sequence.
static void suffix_dg(const nc_args * a, int64_t bos, int64_t eos, int64_t h, const double * gG) {
    double acc = 0;
    for (int64_t t = eos - 1; t >= bos; t--) {
        acc += gG[t - bos];
        a->dg[t * a->sh.H + h] = (float)acc;
    }
    first_dg_zero(a, bos, eos, h);
}

// ---------------------------------------------------------------------------------------------
// REF: the quadratic definition in double.

static void ref_gates(const nc_args * a, int64_t bos, int64_t eos, int64_t h, double * G) {
    double acc = 0;
    for (int64_t t = bos; t < eos; t++) {
        const double g = (double)nc_gate(a, t, h);
        acc += g < LA_GATE_FLOOR ? LA_GATE_FLOOR : g;
        G[t - bos] = acc;
    }
}

static inline double ref_decay(const nc_args * a, const nc_buf * B, int64_t t, int64_t j) {
    return nc_gated(a) ? exp(-fabs(B->G[t] - B->G[j])) : 1.0;
}

static void ref_fwd_num(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B,
                        float * out) {
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V;
    if (nc_gated(a)) ref_gates(a, bos, eos, h, B->G);
    double * num = B->acc;
    for (int64_t t = bos; t < eos; t++) {
        const float * qt = a->q + (t * H + h) * K;
        for (int64_t j = 0; j < V; j++) num[j] = 0;
        for (int64_t c = bos; c < eos; c++) {
            const double wgt = (double)a->scale * ref_decay(a, B, t - bos, c - bos) *
                               dot_d(qt, a->k + (c * H + h) * K, K);
            const float * vc = a->v + (c * H + h) * V;
            for (int64_t j = 0; j < V; j++) num[j] += wgt * (double)vc[j];
        }
        float * ot = out + (t * H + h) * V;
        for (int64_t j = 0; j < V; j++) ot[j] = (float)num[j];
    }
}

// With P_tc = s D_tc (q_t . k_c)(dn_t . v_c): row pass dq_t = sum_c s D_tc (dn_t . v_c) k_c and
// gG_t += sum_{c<t} P_tc - sum_{c>t} P_tc; column pass dk_c = sum_t s D_tc (dn_t . v_c) q_t,
// dv_c = sum_t s D_tc (q_t . k_c) dn_t and gG_c += sum_{t<c} P_tc - sum_{t>c} P_tc.
static void ref_bwd_num(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V, L = eos - bos;
    const double s = (double)a->scale;
    if (nc_gated(a)) ref_gates(a, bos, eos, h, B->G);
    double * aq = B->acc, * ak = B->acc + K, * av = B->acc + 2 * K;
    if (a->g)
        for (int64_t t = 0; t < L; t++) B->gG[t] = 0;
    for (int64_t t = bos; t < eos; t++) {
        const float * qt = a->q + (t * H + h) * K;
        const float * dnt = dn_row(a, bos, t, h, B);
        for (int64_t i = 0; i < K; i++) aq[i] = 0;
        double gacc = 0;
        for (int64_t c = bos; c < eos; c++) {
            const float * kc = a->k + (c * H + h) * K;
            const double dP = s * ref_decay(a, B, t - bos, c - bos) *
                              dot_d(dnt, a->v + (c * H + h) * V, V);
            for (int64_t i = 0; i < K; i++) aq[i] += dP * (double)kc[i];
            if (a->g && c != t) gacc += (c < t ? 1.0 : -1.0) * dP * dot_d(qt, kc, K);
        }
        float * dqt = a->dq + (t * H + h) * K;
        for (int64_t i = 0; i < K; i++) dqt[i] = (float)aq[i];
        if (a->g) B->gG[t - bos] += gacc;
    }
    for (int64_t c = bos; c < eos; c++) {
        const float * kc = a->k + (c * H + h) * K, * vc = a->v + (c * H + h) * V;
        for (int64_t i = 0; i < K; i++) ak[i] = 0;
        for (int64_t j = 0; j < V; j++) av[j] = 0;
        double gacc = 0;
        for (int64_t t = bos; t < eos; t++) {
            const float * qt = a->q + (t * H + h) * K;
            const float * dnt = dn_row(a, bos, t, h, B);
            const double D = s * ref_decay(a, B, t - bos, c - bos);
            const double qk = dot_d(qt, kc, K), dP = D * dot_d(dnt, vc, V), A = D * qk;
            for (int64_t i = 0; i < K; i++) ak[i] += dP * (double)qt[i];
            for (int64_t j = 0; j < V; j++) av[j] += A * (double)dnt[j];
            if (a->g && c != t) gacc += (t < c ? 1.0 : -1.0) * dP * qk;
        }
        float * dkc = a->dk + (c * H + h) * K, * dvc = a->dv + (c * H + h) * V;
        for (int64_t i = 0; i < K; i++) dkc[i] = (float)ak[i];
        for (int64_t j = 0; j < V; j++) dvc[j] = (float)av[j];
        if (a->g) B->gG[c - bos] += gacc;
    }
    if (a->g) suffix_dg(a, bos, eos, h, B->gG);
}

// ---------------------------------------------------------------------------------------------
// RECURRENT: a forward and a reverse token loop.

LA_CLONES
static void rec_fwd_num(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B,
                        float * out) {
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V;
    float * restrict S = B->S;
    memset(S, 0, (size_t)(K * V) * sizeof(float));
    for (int64_t t = bos; t < eos; t++) {  // S_t = e^{g_t} S_{t-1} + k v^T ;  o_t = s S_t^T q_t
        const float * restrict qt = a->q + (t * H + h) * K, * restrict kt = a->k + (t * H + h) * K;
        const float * restrict vt = a->v + (t * H + h) * V;
        float * restrict ot = out + (t * H + h) * V;
        const float dec = expf(nc_gate(a, t, h));
        for (int64_t j = 0; j < V; j++) ot[j] = 0.0f;
        for (int64_t i = 0; i < K; i++) {
            float * restrict Si = S + i * V;
            const float ki = kt[i], qi = a->scale * qt[i];
            for (int64_t j = 0; j < V; j++) {
                const float s = dec * Si[j] + ki * vt[j];
                Si[j] = s;
                ot[j] += qi * s;
            }
        }
    }
    memset(S, 0, (size_t)(K * V) * sizeof(float));  // now R
    // o_t += s R_t^T q_t ;  R_{t-1} = e^{g_t} (R_t + k_t v_t^T)
    for (int64_t t = eos - 1; t >= bos; t--) {
        const float * restrict qt = a->q + (t * H + h) * K, * restrict kt = a->k + (t * H + h) * K;
        const float * restrict vt = a->v + (t * H + h) * V;
        float * restrict ot = out + (t * H + h) * V;
        const float dec = expf(nc_gate(a, t, h));
        for (int64_t i = 0; i < K; i++) {
            float * restrict Ri = S + i * V;
            const float ki = kt[i], qi = a->scale * qt[i];
            for (int64_t j = 0; j < V; j++) {
                ot[j] += qi * Ri[j];
                Ri[j] = dec * (Ri[j] + ki * vt[j]);
            }
        }
    }
}

LA_CLONES
static void rec_bwd_num(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V;
    float * restrict S = B->S, * restrict E = B->S2;
    const float s = a->scale;
    memset(S, 0, (size_t)(K * V) * sizeof(float));
    memset(E, 0, (size_t)(K * V) * sizeof(float));
    // Forward loop: dq^c_t = s S_t dn_t ;  dk^a_t = e^{g_t} E_{t-1} v_t ;
    //               dv^a_t = e^{g_t} E_{t-1}^T k_t
    for (int64_t t = bos; t < eos; t++) {
        const int64_t r = t * H + h;
        const float * restrict qt = a->q + r * K, * restrict kt = a->k + r * K;
        const float * restrict vt = a->v + r * V;
        const float * restrict dn = dn_row(a, bos, t, h, B);
        float * restrict dqt = a->dq + r * K, * restrict dkt = a->dk + r * K;
        float * restrict dvt = a->dv + r * V;
        const float dec = expf(nc_gate(a, t, h));
        for (int64_t j = 0; j < V; j++) dvt[j] = 0.0f;
        for (int64_t i = 0; i < K; i++) {
            float * restrict Si = S + i * V, * restrict Ei = E + i * V;
            const float ki = kt[i], qi = s * qt[i];
            for (int64_t j = 0; j < V; j++) Si[j] = dec * Si[j] + ki * vt[j];
            dqt[i] = s * la_dot_lanes(Si, dn, V);
            dkt[i] = dec * la_dot_lanes(Ei, vt, V);
            for (int64_t j = 0; j < V; j++) {
                dvt[j] += dec * ki * Ei[j];
                Ei[j] = dec * Ei[j] + qi * dn[j];
            }
        }
        if (a->g) B->gG[t - bos] = dot_d(qt, dqt, K) + dot_d(kt, dkt, K);
    }
    // Reverse loop (S is R, E is G): dq^a_t = s R_t dn_t ; dk^c_t = G_t v_t ; dv^c_t = G_t^T k_t
    memset(S, 0, (size_t)(K * V) * sizeof(float));
    memset(E, 0, (size_t)(K * V) * sizeof(float));
    double acc = 0;
    for (int64_t t = eos - 1; t >= bos; t--) {
        const int64_t r = t * H + h;
        const float * restrict qt = a->q + r * K, * restrict kt = a->k + r * K;
        const float * restrict vt = a->v + r * V;
        const float * restrict dn = dn_row(a, bos, t, h, B);
        float * restrict dqt = a->dq + r * K, * restrict dkt = a->dk + r * K;
        float * restrict dvt = a->dv + r * V;
        const float dec = expf(nc_gate(a, t, h));
        double gq = 0, gk = 0;
        for (int64_t i = 0; i < K; i++) {
            float * restrict Ri = S + i * V, * restrict Gi = E + i * V;
            const float ki = kt[i], qi = s * qt[i];
            const float dqa = s * la_dot_lanes(Ri, dn, V);
            for (int64_t j = 0; j < V; j++) {
                Ri[j] = dec * (Ri[j] + ki * vt[j]);
                Gi[j] += qi * dn[j];
            }
            const float dkc = la_dot_lanes(Gi, vt, V);
            for (int64_t j = 0; j < V; j++) {
                dvt[j] += ki * Gi[j];
                Gi[j] *= dec;
            }
            gq += (double)qt[i] * (double)dqa;
            gk += (double)kt[i] * (double)dkc;
            dqt[i] += dqa;
            dkt[i] += dkc;
        }
        if (a->g) {
            acc += B->gG[t - bos] - gq - gk;
            a->dg[r] = (float)acc;
        }
    }
    if (a->g) first_dg_zero(a, bos, eos, h);
}

// ---------------------------------------------------------------------------------------------
// CHUNK, simple_gla: a forward and a reverse chunked pass.

// b[r] = sum_{i <= r} g_{t0+i} in double (floored as simple_gla's chunk form, so a gate of -inf
// gives no inf - inf); e[r] = e^{b_r}, w[r] = e^{b_L - b_r}: both exponents <= 0.
static void chunk_gates(const nc_args * a, int64_t t0, int64_t L, int64_t h, nc_buf * B) {
    double acc = 0;
    for (int64_t r = 0; r < L; r++) {
        const double g = (double)nc_gate(a, t0 + r, h);
        acc += g < LA_GATE_FLOOR ? LA_GATE_FLOOR : g;
        B->b[r] = acc;
    }
    for (int64_t r = 0; r < L; r++) {
        B->e[r] = expf((float)B->b[r]);
        B->w[r] = expf((float)(B->b[L - 1] - B->b[r]));
    }
}

// X (L rows of n, stride ld) dense copy of Xsrc with row r scaled by f[r] (f NULL: 1).
static void copy_rows(float * X, const float * Xsrc, int64_t ld, int64_t L, int64_t n,
                      const float * f) {
    for (int64_t r = 0; r < L; r++)
        for (int64_t j = 0; j < n; j++)
            X[r * n + j] = f ? Xsrc[r * ld + j] * f[r] : Xsrc[r * ld + j];
}

// Y (L rows of n, stride ldy) row r *= f[r].
static void scale_rows(float * Y, int64_t ldy, int64_t L, int64_t n, const float * f) {
    for (int64_t r = 0; r < L; r++)
        for (int64_t j = 0; j < n; j++) Y[r * ldy + j] *= f[r];
}

// A (L, L) row stride C *= D_rc = e^{-|b_r - b_c|}.
LA_CLONES
static void decay_full(float * restrict A, int64_t L, int64_t C, const double * restrict b) {
    for (int64_t r = 0; r < L; r++) {
        float * restrict Ar = A + r * C;
        const double br = b[r];
        for (int64_t c = 0; c < L; c++) Ar[c] *= la_expf(-(float)fabs(br - b[c]));
    }
}

// State step M <- e^{b_L} M + (X o f)^T Y over the chunk; Xw (C, n) scratch; f NULL: no gate.
static void state_step(la_gemm_fn gemm, float * M, const float * X, int64_t ldx, const float * Y,
                       int64_t ldy, int64_t L, int64_t n, int64_t m, float alpha, const float * f,
                       float gL, float * Xw) {
    if (!f) {
        gemm(true, false, n, m, L, alpha, X, ldx, Y, ldy, 1.0f, M, m);
        return;
    }
    for (int64_t e = 0; e < n * m; e++) M[e] *= gL;
    copy_rows(Xw, X, ldx, L, n, f);
    gemm(true, false, n, m, L, alpha, Xw, n, Y, ldy, 1.0f, M, m);
}

static void chunk_fwd_num(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V, C = a->C;
    const int64_t ldk = H * K, ldv = H * V, nch = (eos - bos + C - 1) / C;
    const bool gated = nc_gated(a);
    float * S = B->S;
    memset(S, 0, (size_t)(K * V) * sizeof(float));
    // Forward pass: O = A V + s (Q o e) S_c ;  S_{c+1} = e^{b_L} S_c + (K o w)^T V
    for (int64_t c = 0; c < nch; c++) {
        const int64_t t0 = bos + c * C, L = LA_MIN(C, eos - t0);
        const float * Qc = a->q + (t0 * H + h) * K, * Kc = a->k + (t0 * H + h) * K;
        const float * Vc = a->v + (t0 * H + h) * V;
        float * Oc = a->o + (t0 * H + h) * V;
        if (gated) chunk_gates(a, t0, L, h, B);
        gemm(false, true, L, L, K, a->scale, Qc, ldk, Kc, ldk, 0.0f, B->X, C);
        if (gated) decay_full(B->X, L, C, B->b);
        gemm(false, false, L, V, L, 1.0f, B->X, C, Vc, ldv, 0.0f, Oc, ldv);
        if (c > 0) {
            const float * Qe = Qc;
            int64_t ldq = ldk;
            if (gated) {
                copy_rows(B->Qx, Qc, ldk, L, K, B->e);
                Qe = B->Qx;
                ldq = K;
            }
            gemm(false, false, L, V, K, a->scale, Qe, ldq, S, V, 1.0f, Oc, ldv);
        }
        if (c + 1 < nch)
            state_step(gemm, S, Kc, ldk, Vc, ldv, L, K, V, 1.0f, gated ? B->w : NULL,
                       gated ? expf((float)B->b[L - 1]) : 1.0f, B->Kx);
    }
    // Reverse pass: O += s (Q o w) R_{c+1} ;  R_c = e^{b_L} R_{c+1} + (K o e)^T V
    memset(S, 0, (size_t)(K * V) * sizeof(float));
    for (int64_t c = nch - 1; c >= 0; c--) {
        const int64_t t0 = bos + c * C, L = LA_MIN(C, eos - t0);
        const float * Qc = a->q + (t0 * H + h) * K, * Kc = a->k + (t0 * H + h) * K;
        const float * Vc = a->v + (t0 * H + h) * V;
        float * Oc = a->o + (t0 * H + h) * V;
        if (gated) chunk_gates(a, t0, L, h, B);
        if (c + 1 < nch) {
            const float * Qw = Qc;
            int64_t ldq = ldk;
            if (gated) {
                copy_rows(B->Qx, Qc, ldk, L, K, B->w);
                Qw = B->Qx;
                ldq = K;
            }
            gemm(false, false, L, V, K, a->scale, Qw, ldq, S, V, 1.0f, Oc, ldv);
        }
        if (c > 0)
            state_step(gemm, S, Kc, ldk, Vc, ldv, L, K, V, 1.0f, gated ? B->e : NULL,
                       gated ? expf((float)B->b[L - 1]) : 1.0f, B->Kx);
    }
}

// X holds Q K^T, Y holds s dO V^T (L, L, stride C). Leaves X = A = s X o D and Y = dP = Y o D,
// and adds to gG (when non-NULL) the intra-chunk dL/dG terms of P_rc = dP_rc (q_r . k_c):
// c < r: gG_r += P, gG_c -= P ;  c > r: gG_r -= P, gG_c += P (the diagonal cancels).
// Dr (C) scratch: one row of D.
LA_CLONES
static void intra_block(float * restrict X, float * restrict Y, int64_t L, int64_t C,
                        const double * restrict b, float scale, double * restrict gG,
                        float * restrict Dr) {
    for (int64_t r = 0; r < L; r++) {
        float * restrict Xr = X + r * C, * restrict Yr = Y + r * C;
        for (int64_t c = 0; c < L; c++) Dr[c] = b ? la_expf(-(float)fabs(b[r] - b[c])) : 1.0f;
        if (gG) {
            double acc = 0;
            for (int64_t c = 0; c < L; c++) {
                if (c == r) continue;
                const double P = (double)(Yr[c] * Dr[c]) * (double)Xr[c];
                const double sp = c < r ? P : -P;
                acc += sp;
                gG[c] -= sp;
            }
            gG[r] += acc;
        }
        for (int64_t c = 0; c < L; c++) {
            Xr[c] = scale * Xr[c] * Dr[c];
            Yr[c] *= Dr[c];
        }
    }
}

static void chunk_bwd_num(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V, C = a->C;
    const int64_t ldk = H * K, ldv = H * V, nch = (eos - bos + C - 1) / C;
    const bool gated = nc_gated(a);
    const float s = a->scale;
    float * S = B->S, * M = B->S2;  // forward pass: S_c and dR_c ; reverse: R_{c+1} and dS_{c+1}
    double * gG = a->g ? B->gG : NULL;
    memset(S, 0, (size_t)(K * V) * sizeof(float));
    memset(M, 0, (size_t)(K * V) * sizeof(float));
    if (gG)
        for (int64_t t = 0; t < eos - bos; t++) gG[t] = 0;
    for (int64_t c = 0; c < nch; c++) {
        const int64_t t0 = bos + c * C, L = LA_MIN(C, eos - t0);
        const float * Qc = a->q + (t0 * H + h) * K, * Kc = a->k + (t0 * H + h) * K;
        const float * Vc = a->v + (t0 * H + h) * V, * dOc = a->dout + (t0 * H + h) * V;
        float * dQc = a->dq + (t0 * H + h) * K, * dKc = a->dk + (t0 * H + h) * K;
        float * dVc = a->dv + (t0 * H + h) * V;
        if (gated) chunk_gates(a, t0, L, h, B);
        gemm(false, true, L, L, K, 1.0f, Qc, ldk, Kc, ldk, 0.0f, B->X, C);
        gemm(false, true, L, L, V, s, dOc, ldv, Vc, ldv, 0.0f, B->Y, C);
        intra_block(B->X, B->Y, L, C, gated ? B->b : NULL, s, gG ? gG + (t0 - bos) : NULL,
                    B->Dr);
        // dV = A^T dO ;  dQ = dP K ;  dK = dP^T Q
        gemm(true, false, L, V, L, 1.0f, B->X, C, dOc, ldv, 0.0f, dVc, ldv);
        gemm(false, false, L, K, L, 1.0f, B->Y, C, Kc, ldk, 0.0f, dQc, ldk);
        gemm(true, false, L, K, L, 1.0f, B->Y, C, Qc, ldk, 0.0f, dKc, ldk);
        if (c > 0) {
            // dV += (K o e) dR_c ;  Tq = s (dO S_c^T) o e ;  Tk = (V dR_c^T) o e
            const float * Ke = Kc;
            int64_t ldke = ldk;
            if (gated) {
                copy_rows(B->Kx, Kc, ldk, L, K, B->e);
                Ke = B->Kx;
                ldke = K;
            }
            gemm(false, false, L, V, K, 1.0f, Ke, ldke, M, V, 1.0f, dVc, ldv);
            gemm(false, true, L, K, V, s, dOc, ldv, S, V, 0.0f, B->Tq, K);
            gemm(false, true, L, K, V, 1.0f, Vc, ldv, M, V, 0.0f, B->Tk, K);
            if (gated) {
                scale_rows(B->Tq, K, L, K, B->e);
                scale_rows(B->Tk, K, L, K, B->e);
            }
            for (int64_t r = 0; r < L; r++) {
                const float * Tq = B->Tq + r * K, * Tk = B->Tk + r * K;
                if (gG)  // causal dq (+), anti-causal dk (+)
                    gG[t0 - bos + r] += dot_d(Qc + r * ldk, Tq, K) + dot_d(Kc + r * ldk, Tk, K);
                for (int64_t i = 0; i < K; i++) {
                    dQc[r * ldk + i] += Tq[i];
                    dKc[r * ldk + i] += Tk[i];
                }
            }
        }
        if (c + 1 < nch) {
            const float gL = gated ? expf((float)B->b[L - 1]) : 1.0f;
            state_step(gemm, S, Kc, ldk, Vc, ldv, L, K, V, 1.0f, gated ? B->w : NULL, gL, B->Kx);
            state_step(gemm, M, Qc, ldk, dOc, ldv, L, K, V, s, gated ? B->w : NULL, gL, B->Qx);
        }
    }
    memset(S, 0, (size_t)(K * V) * sizeof(float));
    memset(M, 0, (size_t)(K * V) * sizeof(float));
    double acc = 0;
    for (int64_t c = nch - 1; c >= 0; c--) {
        const int64_t t0 = bos + c * C, L = LA_MIN(C, eos - t0);
        const float * Qc = a->q + (t0 * H + h) * K, * Kc = a->k + (t0 * H + h) * K;
        const float * Vc = a->v + (t0 * H + h) * V, * dOc = a->dout + (t0 * H + h) * V;
        float * dQc = a->dq + (t0 * H + h) * K, * dKc = a->dk + (t0 * H + h) * K;
        float * dVc = a->dv + (t0 * H + h) * V;
        if (gated) chunk_gates(a, t0, L, h, B);
        if (c + 1 < nch) {
            // dV += (K o w) dS_{c+1} ;  Tq = s (dO R_{c+1}^T) o w ;  Tk = (V dS_{c+1}^T) o w
            const float * Kw = Kc;
            int64_t ldkw = ldk;
            if (gated) {
                copy_rows(B->Kx, Kc, ldk, L, K, B->w);
                Kw = B->Kx;
                ldkw = K;
            }
            gemm(false, false, L, V, K, 1.0f, Kw, ldkw, M, V, 1.0f, dVc, ldv);
            gemm(false, true, L, K, V, s, dOc, ldv, S, V, 0.0f, B->Tq, K);
            gemm(false, true, L, K, V, 1.0f, Vc, ldv, M, V, 0.0f, B->Tk, K);
            if (gated) {
                scale_rows(B->Tq, K, L, K, B->w);
                scale_rows(B->Tk, K, L, K, B->w);
            }
            for (int64_t r = 0; r < L; r++) {
                const float * Tq = B->Tq + r * K, * Tk = B->Tk + r * K;
                if (gG)  // anti-causal dq (-), causal dk (-)
                    gG[t0 - bos + r] -= dot_d(Qc + r * ldk, Tq, K) + dot_d(Kc + r * ldk, Tk, K);
                for (int64_t i = 0; i < K; i++) {
                    dQc[r * ldk + i] += Tq[i];
                    dKc[r * ldk + i] += Tk[i];
                }
            }
        }
        if (c > 0) {
            const float gL = gated ? expf((float)B->b[L - 1]) : 1.0f;
            state_step(gemm, S, Kc, ldk, Vc, ldv, L, K, V, 1.0f, gated ? B->e : NULL, gL, B->Kx);
            state_step(gemm, M, Qc, ldk, dOc, ldv, L, K, V, s, gated ? B->e : NULL, gL, B->Qx);
        }
        if (gG)
            for (int64_t r = L - 1; r >= 0; r--) {
                acc += gG[t0 - bos + r];
                a->dg[(t0 + r) * H + h] = (float)acc;
            }
    }
    if (gG) first_dg_zero(a, bos, eos, h);
}

// ---------------------------------------------------------------------------------------------
// CHUNK, linear_attn: the global sums.

// S = sum_t k_t v_t^T over the sequence, by blocks of C tokens.
static void global_state(const nc_args * a, int64_t bos, int64_t eos, int64_t h, float * S) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V, C = a->C;
    memset(S, 0, (size_t)(K * V) * sizeof(float));
    for (int64_t t0 = bos; t0 < eos; t0 += C)
        gemm(true, false, K, V, LA_MIN(C, eos - t0), 1.0f, a->k + (t0 * H + h) * K, H * K,
             a->v + (t0 * H + h) * V, H * V, 1.0f, S, V);
}

static void global_fwd(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V, C = a->C;
    global_state(a, bos, eos, h, B->S);
    for (int64_t t0 = bos; t0 < eos; t0 += C)  // O = s Q S
        gemm(false, false, LA_MIN(C, eos - t0), V, K, a->scale, a->q + (t0 * H + h) * K, H * K,
             B->S, V, 0.0f, a->o + (t0 * H + h) * V, H * V);
    if (a->normalize) norm_fwd(a, bos, eos, h, B);
}

static void global_bwd(const nc_args * a, int64_t bos, int64_t eos, int64_t h, nc_buf * B) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = a->sh.H, K = a->sh.K, V = a->sh.V, C = a->C;
    const int64_t ldk = H * K, ldv = H * V;
    const float s = a->scale;
    float * S = B->S, * dS = B->S2;
    double * dz = B->acc;
    global_state(a, bos, eos, h, S);
    if (a->normalize) key_sum(a, bos, eos, h, B);
    memset(dS, 0, (size_t)(K * V) * sizeof(float));
    for (int64_t i = 0; i < K; i++) dz[i] = 0;
    for (int64_t t0 = bos; t0 < eos; t0 += C) {
        const int64_t L = LA_MIN(C, eos - t0);
        const float * Qc = a->q + (t0 * H + h) * K;
        float * dQc = a->dq + (t0 * H + h) * K;
        const float * dN = a->dout + (t0 * H + h) * V;
        int64_t ldn = ldv;
        if (a->normalize) {  // dN = do / d
            for (int64_t r = 0; r < L; r++) {
                const float d = norm_den(a, Qc + r * ldk, B->zf);
                B->den[r] = d;
                for (int64_t j = 0; j < V; j++) B->dN[r * V + j] = dN[r * ldv + j] / d;
            }
            dN = B->dN;
            ldn = V;
        }
        // dQ = s dN S^T ;  dS += s Q^T dN
        gemm(false, true, L, K, V, s, dN, ldn, S, V, 0.0f, dQc, ldk);
        gemm(true, false, K, V, L, s, Qc, ldk, dN, ldn, 1.0f, dS, V);
        if (a->normalize) {
            // do . n = d (q . dq_n), so dd = -(do . n)/d^2 = -(q . dq_n)/d ; dq += s dd z ;
            // dz += s dd q
            for (int64_t r = 0; r < L; r++) {
                const float * qr = Qc + r * ldk;
                float * dqr = dQc + r * ldk;
                const float dds = s * (float)(-dot_d(qr, dqr, K) / (double)B->den[r]);
                for (int64_t i = 0; i < K; i++) {
                    dqr[i] += dds * B->zf[i];
                    dz[i] += (double)dds * (double)qr[i];
                }
            }
        }
    }
    for (int64_t t0 = bos; t0 < eos; t0 += C) {
        const int64_t L = LA_MIN(C, eos - t0);
        float * dKc = a->dk + (t0 * H + h) * K;
        // dK = V dS^T (+ dz) ;  dV = K dS
        gemm(false, true, L, K, V, 1.0f, a->v + (t0 * H + h) * V, ldv, dS, V, 0.0f, dKc, ldk);
        gemm(false, false, L, V, K, 1.0f, a->k + (t0 * H + h) * K, ldk, dS, V, 0.0f,
             a->dv + (t0 * H + h) * V, ldv);
        if (a->normalize)
            for (int64_t r = 0; r < L; r++)
                for (int64_t i = 0; i < K; i++) dKc[r * ldk + i] += (float)dz[i];
    }
}

// ---------------------------------------------------------------------------------------------
// Drivers

static void nc_task(const void * ctx, int64_t task, void * scratch) {
    const nc_args * a = ctx;
    const int64_t n = task / a->sh.H, h = task % a->sh.H;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    nc_buf B;
    nc_layout(&B, scratch, a->sh, a->opts, a->linear, a->backward, a->maxlen);
    const la_form form = a->opts->form;
    if (!a->backward) {
        if (a->global) {
            global_fwd(a, bos, eos, h, &B);
            return;
        }
        if (form == LA_FORM_REF) ref_fwd_num(a, bos, eos, h, &B, a->o);
        else if (form == LA_FORM_RECURRENT) rec_fwd_num(a, bos, eos, h, &B, a->o);
        else chunk_fwd_num(a, bos, eos, h, &B);
        if (a->normalize) norm_fwd(a, bos, eos, h, &B);
        return;
    }
    if (a->global) {
        global_bwd(a, bos, eos, h, &B);
        return;
    }
    if (a->normalize) {  // the numerator into dv (overwritten below), then d_t and dd_t
        if (form == LA_FORM_REF) ref_fwd_num(a, bos, eos, h, &B, a->dv);
        else rec_fwd_num(a, bos, eos, h, &B, a->dv);
        norm_bwd_pre(a, bos, eos, h, &B);
    }
    if (form == LA_FORM_REF) ref_bwd_num(a, bos, eos, h, &B);
    else if (form == LA_FORM_RECURRENT) rec_bwd_num(a, bos, eos, h, &B);
    else chunk_bwd_num(a, bos, eos, h, &B);
    if (a->normalize) norm_bwd_post(a, bos, eos, h, &B);
}

static size_t nc_per_thread(la_shape sh, const la_opts * opts, bool linear, bool backward) {
    nc_buf B;
    return la_align_up(nc_layout(&B, NULL, sh, opts, linear, backward, la_max_seq_len(sh, opts)));
}

static size_t nc_workspace(bool backward, bool linear, la_shape sh, const la_opts * opts) {
    int64_t N;
    if (la_check_common(sh, opts, &N) != LA_STATUS_OK) return 0;
    return (size_t)la_slots(N * sh.H) * nc_per_thread(sh, opts, linear, backward) + LA_ALIGN;
}

size_t la_linear_attn_noncausal_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return nc_workspace(backward, true, sh, opts);
}

size_t la_simple_gla_noncausal_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return nc_workspace(backward, false, sh, opts);
}

static la_status nc_run(nc_args * a) {
    int64_t N;
    la_status st = la_check_common(a->sh, a->opts, &N);
    if (st != LA_STATUS_OK) return st;
    if (!a->q || !a->k || !a->v) return LA_STATUS_INVALID_ARG;
    if (!a->backward && !a->o) return LA_STATUS_INVALID_ARG;
    if (a->backward && (!a->dout || !a->dq || !a->dk || !a->dv)) return LA_STATUS_INVALID_ARG;
    if (a->g && a->g_gamma) return LA_STATUS_INVALID_ARG;
    if (a->backward && (a->g != NULL) != (a->dg != NULL)) return LA_STATUS_INVALID_ARG;
    a->scale = la_opts_scale(a->opts, a->sh.K);
    a->C = la_opts_chunk(a->opts);
    a->maxlen = la_max_seq_len(a->sh, a->opts);
    a->global = a->linear && a->opts->form == LA_FORM_CHUNK;
    a->per = nc_per_thread(a->sh, a->opts, a->linear, a->backward);
    void * ws;
    bool owned;
    st = la_ws_acquire(a->opts, nc_workspace(a->backward, a->linear, a->sh, a->opts), &ws,
                       &owned);
    if (st != LA_STATUS_OK) return st;
    la_run_tasks(N * a->sh.H, ws, a->per, nc_task, a);
    la_ws_release(ws, owned);
    return LA_STATUS_OK;
}

la_status la_linear_attn_noncausal_forward(float * o, const float * q, const float * k,
                                           const float * v, bool normalize, la_shape sh,
                                           const la_opts * opts) {
    nc_args a = { .q = q, .k = k, .v = v, .o = o, .sh = sh, .opts = opts,
                  .normalize = normalize, .linear = true };
    return nc_run(&a);
}

la_status la_linear_attn_noncausal_backward(float * dq, float * dk, float * dv,
                                            const float * dout, const float * q,
                                            const float * k, const float * v, bool normalize,
                                            la_shape sh, const la_opts * opts) {
    nc_args a = { .q = q, .k = k, .v = v, .dout = dout, .dq = dq, .dk = dk, .dv = dv,
                  .sh = sh, .opts = opts, .normalize = normalize, .linear = true,
                  .backward = true };
    return nc_run(&a);
}

la_status la_simple_gla_noncausal_forward(float * o, const float * q, const float * k,
                                          const float * v, const float * g,
                                          const float * g_gamma, la_shape sh,
                                          const la_opts * opts) {
    nc_args a = { .q = q, .k = k, .v = v, .g = g, .g_gamma = g_gamma, .o = o, .sh = sh,
                  .opts = opts };
    return nc_run(&a);
}

la_status la_simple_gla_noncausal_backward(float * dq, float * dk, float * dv, float * dg,
                                           const float * dout, const float * q,
                                           const float * k, const float * v, const float * g,
                                           const float * g_gamma, la_shape sh,
                                           const la_opts * opts) {
    nc_args a = { .q = q, .k = k, .v = v, .g = g, .g_gamma = g_gamma, .dout = dout, .dq = dq,
                  .dk = dk, .dv = dv, .dg = dg, .sh = sh, .opts = opts, .backward = true };
    return nc_run(&a);
}
