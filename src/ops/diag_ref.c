// Reference recurrences of the diagonal-decay family: simple_gla, gla and rwkv6 (OPS.md 2.2,
// 2.5, 2.11), with their reverse-time adjoints (ALGORITHMS.md 2.3), per (sequence, head), in
// la_real. One engine serves all three; a gate is read through strides, so a scalar gate per
// head (simple_gla's g), a constant per head (g_gamma) and a per-channel gate (gla's gk, gv,
// rwkv6's w) are the same code.
//
//   write-then-read (simple_gla, gla):
//     S_t = Diag(a_t) S_{t-1} Diag(c_t) + k_t v_t^T ;  o_t = s S_t^T q_t
//     a_t = exp(gk_t) (K), c_t = exp(gv_t) (V)
//   read-then-write (rwkv6):
//     o_t = s (S_{t-1}^T q_t + (q_t . (u o k_t)) v_t) ;  S_t = Diag(a_t) S_{t-1} + k_t v_t^T
//
// Backward, reverse time with G = dL/dS_t, starting from dS_T (dfinal_state or 0):
//   write-then-read:  G += s q do^T ; dq = s S_t do ; dk = G v ; dv = G^T k ;
//                     P = Diag(a) S_{t-1} Diag(c): dgk_i += sum_j G_ij P_ij, dgv_j += sum_i G_ij P_ij
//                     G <- Diag(a) G Diag(c)
//   read-then-write:  d = do . v ; dq = s (S_{t-1} do + d (u o k)) ; dk = G v + s d (u o q) ;
//                     dv = G^T k + s (q . (u o k)) do ; du += s d (q o k) ;
//                     dw_i = a_i sum_j G_ij S_{t-1,ij} ; G <- Diag(a) G + s q do^T
// S_{t-1} is never obtained by inverting a decay: the forward is replayed from checkpoints saved
// every LA_REF_SEG tokens (ALGORITHMS.md 2.4).
//
// Dimensions: B, T, H, K, V, N as in OPS.md; q, k (B,T,H,K); v, o (B,T,H,V); states (N,H,K,V).
#include "ref.h"

#include <math.h>
#include <string.h>

#define LA_MIN_REF(a, b) ((a) < (b) ? (a) : (b))

// A gate value at (token t, head h, channel i) is p[t*st_tok + h*st_head + i*st_ch].
typedef struct rgate {
    const la_real * p;
    int64_t         st_tok, st_head, st_ch;
    la_real *       grad;  // same indexing; accumulated (+=), may be NULL
} rgate;

static la_real gate_at(const rgate * g, int64_t t, int64_t h, int64_t i) {
    return g->p ? g->p[t * g->st_tok + h * g->st_head + i * g->st_ch] : 0;
}

typedef struct rargs {
    la_ref_dims     d;
    bool            read_first;  // rwkv6: o_t reads S_{t-1}, plus the bonus u
    const la_real * q, * k, * v, * u, * init;
    rgate           gk, gv;
    la_real *       o, * final;
    const la_real * dout, * dfinal;
    la_real *       dq, * dk, * dv, * du, * dinit;
} rargs;

static int64_t ws_elems(la_ref_dims d) {
    const int64_t KV = d.sh.K * d.sh.V;
    const int64_t nseg = (la_ref_max_len(d) + LA_REF_SEG - 1) / LA_REF_SEG;
    // checkpoints (nseg + 1) states, one segment of LA_REF_SEG + 1 states, the adjoint G,
    // and the per-token decays a (K) and c (V).
    return (nseg + 1) * KV + (LA_REF_SEG + 1) * KV + KV + d.sh.K + d.sh.V;
}

static void decays(const rargs * a, int64_t t, int64_t h, la_real * dk_, la_real * dv_) {
    for (int64_t i = 0; i < a->d.sh.K; i++) dk_[i] = la_rexp(gate_at(&a->gk, t, h, i));
    for (int64_t j = 0; j < a->d.sh.V; j++) dv_[j] = la_rexp(gate_at(&a->gv, t, h, j));
}

// Read S (before or after the write, by mode) into o_t (V).
static void read_out(const rargs * a, const la_real * S, int64_t t, int64_t h, la_real * ot) {
    const int64_t H = a->d.sh.H, K = a->d.sh.K, V = a->d.sh.V;
    const la_real * qt = a->q + (t * H + h) * K;
    const la_real s = (la_real)a->d.scale;
    for (int64_t j = 0; j < V; j++) ot[j] = 0;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) ot[j] += s * qt[i] * S[i * V + j];
    if (a->read_first) {
        const la_real * kt = a->k + (t * H + h) * K, * vt = a->v + (t * H + h) * V;
        la_real qu = 0;
        for (int64_t i = 0; i < K; i++) qu += qt[i] * a->u[h * K + i] * kt[i];
        for (int64_t j = 0; j < V; j++) ot[j] += s * qu * vt[j];
    }
}

// S <- Diag(ad) S Diag(cd) + k_t v_t^T.
static void write_state(const rargs * a, la_real * S, int64_t t, int64_t h, const la_real * ad,
                        const la_real * cd) {
    const int64_t H = a->d.sh.H, K = a->d.sh.K, V = a->d.sh.V;
    const la_real * kt = a->k + (t * H + h) * K, * vt = a->v + (t * H + h) * V;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) S[i * V + j] = ad[i] * S[i * V + j] * cd[j] + kt[i] * vt[j];
}

static void fwd(const rargs * a, la_real * ws) {
    const int64_t H = a->d.sh.H, K = a->d.sh.K, V = a->d.sh.V, KV = K * V;
    la_real * S = ws, * ad = ws + KV, * cd = ad + K;  // (K,V), (K), (V)
    for (int64_t n = 0; n < a->d.N; n++) {
        int64_t bos, eos;
        la_ref_bounds(a->d, n, &bos, &eos);
        for (int64_t h = 0; h < H; h++) {
            if (a->init) memcpy(S, a->init + (n * H + h) * KV, (size_t)KV * sizeof(la_real));
            else memset(S, 0, (size_t)KV * sizeof(la_real));
            for (int64_t t = bos; t < eos; t++) {
                decays(a, t, h, ad, cd);
                if (a->read_first) read_out(a, S, t, h, a->o + (t * H + h) * V);
                write_state(a, S, t, h, ad, cd);
                if (!a->read_first) read_out(a, S, t, h, a->o + (t * H + h) * V);
            }
            if (a->final) memcpy(a->final + (n * H + h) * KV, S, (size_t)KV * sizeof(la_real));
        }
    }
}

static void zero_grad(rgate * g, int64_t ntok, int64_t H, int64_t nch) {
    if (!g->grad) return;
    // The gate array spans (ntok-1)*st_tok + (H-1)*st_head + (nch-1)*st_ch + 1 entries.
    int64_t n = 1;
    if (g->st_tok) n += (ntok - 1) * g->st_tok;
    n += (H - 1) * g->st_head + (nch - 1) * g->st_ch;
    memset(g->grad, 0, (size_t)n * sizeof(la_real));
}

static void bwd(rargs * a, la_real * ws) {
    const int64_t H = a->d.sh.H, K = a->d.sh.K, V = a->d.sh.V, KV = K * V;
    const int64_t nseg_max = (la_ref_max_len(a->d) + LA_REF_SEG - 1) / LA_REF_SEG;
    const la_real s = (la_real)a->d.scale;
    la_real * ckpt = ws;                          // (nseg + 1, K, V) states at segment starts
    la_real * seg = ckpt + (nseg_max + 1) * KV;   // (LA_REF_SEG + 1, K, V) replayed states
    la_real * G = seg + (LA_REF_SEG + 1) * KV;    // (K, V) adjoint dL/dS_t
    la_real * ad = G + KV, * cd = ad + K;         // (K), (V) decays of the current token
    const int64_t ntok = a->d.sh.B * a->d.sh.T;
    zero_grad(&a->gk, ntok, H, K);
    zero_grad(&a->gv, ntok, H, V);
    if (a->du) memset(a->du, 0, (size_t)(H * K) * sizeof(la_real));
    for (int64_t n = 0; n < a->d.N; n++) {
        int64_t bos, eos;
        la_ref_bounds(a->d, n, &bos, &eos);
        const int64_t len = eos - bos, nseg = (len + LA_REF_SEG - 1) / LA_REF_SEG;
        for (int64_t h = 0; h < H; h++) {
            // Forward replay, keeping the state at the start of every segment.
            if (a->init) memcpy(ckpt, a->init + (n * H + h) * KV, (size_t)KV * sizeof(la_real));
            else memset(ckpt, 0, (size_t)KV * sizeof(la_real));
            for (int64_t sg = 0; sg < nseg; sg++) {
                memcpy(ckpt + (sg + 1) * KV, ckpt + sg * KV, (size_t)KV * sizeof(la_real));
                const int64_t t1 = LA_MIN_REF(bos + (sg + 1) * LA_REF_SEG, eos);
                for (int64_t t = bos + sg * LA_REF_SEG; t < t1; t++) {
                    decays(a, t, h, ad, cd);
                    write_state(a, ckpt + (sg + 1) * KV, t, h, ad, cd);
                }
            }
            if (a->dfinal) memcpy(G, a->dfinal + (n * H + h) * KV, (size_t)KV * sizeof(la_real));
            else memset(G, 0, (size_t)KV * sizeof(la_real));
            for (int64_t sg = nseg - 1; sg >= 0; sg--) {
                const int64_t t0 = bos + sg * LA_REF_SEG, t1 = LA_MIN_REF(t0 + LA_REF_SEG, eos);
                // seg[i] = S_{t0 + i - 1}: seg[0] is the state before token t0.
                memcpy(seg, ckpt + sg * KV, (size_t)KV * sizeof(la_real));
                for (int64_t t = t0; t < t1; t++) {
                    memcpy(seg + (t - t0 + 1) * KV, seg + (t - t0) * KV, (size_t)KV * sizeof(la_real));
                    decays(a, t, h, ad, cd);
                    write_state(a, seg + (t - t0 + 1) * KV, t, h, ad, cd);
                }
                for (int64_t t = t1 - 1; t >= t0; t--) {
                    const la_real * St = seg + (t - t0 + 1) * KV, * Sp = seg + (t - t0) * KV;
                    const la_real * qt = a->q + (t * H + h) * K, * kt = a->k + (t * H + h) * K;
                    const la_real * vt = a->v + (t * H + h) * V, * dot = a->dout + (t * H + h) * V;
                    la_real * dqt = a->dq + (t * H + h) * K, * dkt = a->dk + (t * H + h) * K;
                    la_real * dvt = a->dv + (t * H + h) * V;
                    decays(a, t, h, ad, cd);
                    if (!a->read_first) {
                        for (int64_t i = 0; i < K; i++)
                            for (int64_t j = 0; j < V; j++) G[i * V + j] += s * qt[i] * dot[j];
                    }
                    // dq from the state the output reads; dk, dv from the write k v^T.
                    const la_real * Sr = a->read_first ? Sp : St;
                    for (int64_t j = 0; j < V; j++) dvt[j] = 0;
                    for (int64_t i = 0; i < K; i++) {
                        la_real aq = 0, ak = 0;
                        for (int64_t j = 0; j < V; j++) {
                            aq += Sr[i * V + j] * dot[j];
                            ak += G[i * V + j] * vt[j];
                            dvt[j] += G[i * V + j] * kt[i];
                        }
                        dqt[i] = s * aq;
                        dkt[i] = ak;
                    }
                    if (a->read_first) {  // the bonus term s (q . (u o k)) v
                        const la_real * u = a->u + h * K;
                        la_real dd = 0, qu = 0;
                        for (int64_t j = 0; j < V; j++) dd += dot[j] * vt[j];
                        for (int64_t i = 0; i < K; i++) {
                            qu += qt[i] * u[i] * kt[i];
                            dqt[i] += s * dd * u[i] * kt[i];
                            dkt[i] += s * dd * u[i] * qt[i];
                            if (a->du) a->du[h * K + i] += s * dd * qt[i] * kt[i];
                        }
                        for (int64_t j = 0; j < V; j++) dvt[j] += s * qu * dot[j];
                    }
                    // Gate gradients: P = Diag(a) S_{t-1} Diag(c) is the decayed state.
                    for (int64_t i = 0; i < K; i++)
                        for (int64_t j = 0; j < V; j++) {
                            const la_real gp = G[i * V + j] * ad[i] * Sp[i * V + j] * cd[j];
                            if (a->gk.grad)
                                a->gk.grad[t * a->gk.st_tok + h * a->gk.st_head + i * a->gk.st_ch] += gp;
                            if (a->gv.grad)
                                a->gv.grad[t * a->gv.st_tok + h * a->gv.st_head + j * a->gv.st_ch] += gp;
                        }
                    // G becomes dL/dS_{t-1}.
                    for (int64_t i = 0; i < K; i++)
                        for (int64_t j = 0; j < V; j++) G[i * V + j] *= ad[i] * cd[j];
                    if (a->read_first) {
                        for (int64_t i = 0; i < K; i++)
                            for (int64_t j = 0; j < V; j++) G[i * V + j] += s * qt[i] * dot[j];
                    }
                }
            }
            if (a->dinit) memcpy(a->dinit + (n * H + h) * KV, G, (size_t)KV * sizeof(la_real));
        }
    }
}

// --- simple_gla: g (B,T,H) per head, broadcast over K; or g_gamma (H), constant in time ------

static rgate scalar_gate(const la_real * g, const la_real * g_gamma, la_real * dg, int64_t H) {
    if (g) return (rgate){ g, H, 1, 0, dg };
    if (g_gamma) return (rgate){ g_gamma, 0, 1, 0, NULL };
    return (rgate){ 0 };
}

int64_t LA_REF(la_simple_gla_ref_ws_elems)(la_ref_dims d) { return ws_elems(d); }

void LA_REF(la_simple_gla_fwd_ref)(la_real * o, la_real * final_state,
                                   const la_real * q, const la_real * k, const la_real * v,
                                   const la_real * g, const la_real * g_gamma,
                                   const la_real * initial_state, la_ref_dims d, la_real * ws) {
    rargs a = { .d = d, .q = q, .k = k, .v = v, .init = initial_state, .o = o,
                .final = final_state, .gk = scalar_gate(g, g_gamma, NULL, d.sh.H) };
    fwd(&a, ws);
}

void LA_REF(la_simple_gla_bwd_ref)(la_real * dq, la_real * dk, la_real * dv, la_real * dg,
                                   la_real * dinitial_state,
                                   const la_real * dout, const la_real * dfinal_state,
                                   const la_real * q, const la_real * k, const la_real * v,
                                   const la_real * g, const la_real * g_gamma,
                                   const la_real * initial_state, la_ref_dims d, la_real * ws) {
    rargs a = { .d = d, .q = q, .k = k, .v = v, .init = initial_state, .dout = dout,
                .dfinal = dfinal_state, .dq = dq, .dk = dk, .dv = dv, .dinit = dinitial_state,
                .gk = scalar_gate(g, g_gamma, dg, d.sh.H) };
    bwd(&a, ws);
}

// --- gla: gk (B,T,H,K), gv (B,T,H,V), each optional -----------------------------------------

static rgate channel_gate(const la_real * g, la_real * dg, int64_t H, int64_t C) {
    return g ? (rgate){ g, H * C, C, 1, dg } : (rgate){ 0 };
}

int64_t LA_REF(la_gla_ref_ws_elems)(la_ref_dims d) { return ws_elems(d); }

void LA_REF(la_gla_fwd_ref)(la_real * o, la_real * final_state, const la_real * q,
                            const la_real * k, const la_real * v, const la_real * gk,
                            const la_real * gv, const la_real * initial_state, la_ref_dims d,
                            la_real * ws) {
    rargs a = { .d = d, .q = q, .k = k, .v = v, .init = initial_state, .o = o,
                .final = final_state, .gk = channel_gate(gk, NULL, d.sh.H, d.sh.K),
                .gv = channel_gate(gv, NULL, d.sh.H, d.sh.V) };
    fwd(&a, ws);
}

void LA_REF(la_gla_bwd_ref)(la_real * dq, la_real * dk, la_real * dv, la_real * dgk,
                            la_real * dgv, la_real * dinitial_state, const la_real * dout,
                            const la_real * dfinal_state, const la_real * q, const la_real * k,
                            const la_real * v, const la_real * gk, const la_real * gv,
                            const la_real * initial_state, la_ref_dims d, la_real * ws) {
    rargs a = { .d = d, .q = q, .k = k, .v = v, .init = initial_state, .dout = dout,
                .dfinal = dfinal_state, .dq = dq, .dk = dk, .dv = dv, .dinit = dinitial_state,
                .gk = channel_gate(gk, dgk, d.sh.H, d.sh.K),
                .gv = channel_gate(gv, dgv, d.sh.H, d.sh.V) };
    bwd(&a, ws);
}

// --- rwkv6: w (B,T,H,K), bonus u (H,K) -------------------------------------------------------

int64_t LA_REF(la_rwkv6_ref_ws_elems)(la_ref_dims d) { return ws_elems(d); }

void LA_REF(la_rwkv6_fwd_ref)(la_real * o, la_real * final_state, const la_real * r,
                              const la_real * k, const la_real * v, const la_real * w,
                              const la_real * u, const la_real * initial_state, la_ref_dims d,
                              la_real * ws) {
    rargs a = { .d = d, .read_first = true, .q = r, .k = k, .v = v, .u = u,
                .init = initial_state, .o = o, .final = final_state,
                .gk = channel_gate(w, NULL, d.sh.H, d.sh.K) };
    fwd(&a, ws);
}

void LA_REF(la_rwkv6_bwd_ref)(la_real * dr, la_real * dk, la_real * dv, la_real * dw,
                              la_real * du, la_real * dinitial_state, const la_real * dout,
                              const la_real * dfinal_state, const la_real * r,
                              const la_real * k, const la_real * v, const la_real * w,
                              const la_real * u, const la_real * initial_state, la_ref_dims d,
                              la_real * ws) {
    rargs a = { .d = d, .read_first = true, .q = r, .k = k, .v = v, .u = u,
                .init = initial_state, .dout = dout, .dfinal = dfinal_state, .dq = dr,
                .dk = dk, .dv = dv, .du = du, .dinit = dinitial_state,
                .gk = channel_gate(w, dw, d.sh.H, d.sh.K) };
    bwd(&a, ws);
}
