// simple_gla reference: the plain recurrence and its reverse-time adjoint (OPS.md 2.2,
// ALGORITHMS.md 2.3), per (sequence, head), in la_real.
//
//   S_t = exp(g_t) S_{t-1} + k_t v_t^T          o_t = s S_t^T q_t
//
// Backward, reverse time with G = dL/dS_t (starting from dS_T = dfinal_state or 0):
//   G += s q_t do_t^T ;  dq_t = s S_t do_t ;  dk_t = G v_t ;  dv_t = G^T k_t
//   dg_t = exp(g_t) sum(G * S_{t-1}) ;  G <- exp(g_t) G          ;  dS_0 = G
// S_{t-1} is never obtained by inverting a decay: the forward is replayed from checkpoints
// saved every LA_REF_SEG tokens (ALGORITHMS.md 2.4).
//
// Dimensions: B, T, H, K, V, N as in OPS.md; q, k (B,T,H,K); v, o (B,T,H,V); g (B,T,H);
// g_gamma (H); states (N,H,K,V).
#include "ref.h"

#include <math.h>
#include <string.h>

#define LA_MIN_REF(a, b) ((a) < (b) ? (a) : (b))

#define LA_REF_SEG 64

static int64_t max_len(la_ref_dims d) {
    if (!d.cu) return d.sh.T;
    int64_t m = 0;
    for (int64_t n = 0; n < d.N; n++) {
        int64_t l = d.cu[n + 1] - d.cu[n];
        if (l > m) m = l;
    }
    return m;
}

int64_t LA_REF(la_simple_gla_ref_ws_elems)(la_ref_dims d) {
    int64_t KV = d.sh.K * d.sh.V;
    int64_t nseg = (max_len(d) + LA_REF_SEG - 1) / LA_REF_SEG;
    // checkpoints (nseg + 1) states, one segment of LA_REF_SEG + 1 states, the adjoint G.
    return (nseg + 1) * KV + (LA_REF_SEG + 1) * KV + KV;
}

static void bounds(la_ref_dims d, int64_t n, int64_t * bos, int64_t * eos) {
    *bos = d.cu ? d.cu[n] : n * d.sh.T;
    *eos = d.cu ? d.cu[n + 1] : (n + 1) * d.sh.T;
}

static la_real gate(const la_real * g, const la_real * g_gamma, int64_t t, int64_t h, int64_t H) {
    if (g) return g[t * H + h];
    if (g_gamma) return g_gamma[h];
    return 0;
}

// One forward step on state S (K,V): decay, write, and optionally read into o_t (V).
static void step(la_real * S, const la_real * qt, const la_real * kt, const la_real * vt,
                 la_real decay, la_real scale, la_real * ot, int64_t K, int64_t V) {
    for (int64_t j = 0; j < V && ot; j++) ot[j] = 0;
    for (int64_t i = 0; i < K; i++) {
        la_real * Si = S + i * V;
        for (int64_t j = 0; j < V; j++) {
            Si[j] = decay * Si[j] + kt[i] * vt[j];
            if (ot) ot[j] += scale * qt[i] * Si[j];
        }
    }
}

void LA_REF(la_simple_gla_fwd_ref)(la_real * o, la_real * final_state,
                                   const la_real * q, const la_real * k, const la_real * v,
                                   const la_real * g, const la_real * g_gamma,
                                   const la_real * initial_state, la_ref_dims d, la_real * ws) {
    const int64_t H = d.sh.H, K = d.sh.K, V = d.sh.V, KV = K * V;
    la_real * S = ws;  // (K, V)
    for (int64_t n = 0; n < d.N; n++) {
        int64_t bos, eos;
        bounds(d, n, &bos, &eos);
        for (int64_t h = 0; h < H; h++) {
            if (initial_state) memcpy(S, initial_state + (n * H + h) * KV, KV * sizeof(la_real));
            else memset(S, 0, KV * sizeof(la_real));
            for (int64_t t = bos; t < eos; t++) {
                step(S, q + (t * H + h) * K, k + (t * H + h) * K, v + (t * H + h) * V,
                     la_rexp(gate(g, g_gamma, t, h, H)), (la_real)d.scale, o + (t * H + h) * V, K, V);
            }
            if (final_state) memcpy(final_state + (n * H + h) * KV, S, KV * sizeof(la_real));
        }
    }
}

void LA_REF(la_simple_gla_bwd_ref)(la_real * dq, la_real * dk, la_real * dv, la_real * dg,
                                   la_real * dinitial_state,
                                   const la_real * dout, const la_real * dfinal_state,
                                   const la_real * q, const la_real * k, const la_real * v,
                                   const la_real * g, const la_real * g_gamma,
                                   const la_real * initial_state, la_ref_dims d, la_real * ws) {
    const int64_t H = d.sh.H, K = d.sh.K, V = d.sh.V, KV = K * V;
    const int64_t nseg_max = (max_len(d) + LA_REF_SEG - 1) / LA_REF_SEG;
    la_real * ckpt = ws;                          // (nseg + 1, K, V) states at segment starts
    la_real * seg = ckpt + (nseg_max + 1) * KV;   // (LA_REF_SEG + 1, K, V) replayed states
    la_real * G = seg + (LA_REF_SEG + 1) * KV;    // (K, V) adjoint dL/dS_t
    for (int64_t n = 0; n < d.N; n++) {
        int64_t bos, eos;
        bounds(d, n, &bos, &eos);
        const int64_t len = eos - bos, nseg = (len + LA_REF_SEG - 1) / LA_REF_SEG;
        for (int64_t h = 0; h < H; h++) {
            // Forward replay, keeping the state at the start of every segment.
            la_real * S = ckpt;
            if (initial_state) memcpy(S, initial_state + (n * H + h) * KV, KV * sizeof(la_real));
            else memset(S, 0, KV * sizeof(la_real));
            for (int64_t s = 0; s < nseg; s++) {
                memcpy(ckpt + (s + 1) * KV, ckpt + s * KV, KV * sizeof(la_real));
                int64_t t1 = LA_MIN_REF(bos + (s + 1) * LA_REF_SEG, eos);
                for (int64_t t = bos + s * LA_REF_SEG; t < t1; t++)
                    step(ckpt + (s + 1) * KV, NULL, k + (t * H + h) * K, v + (t * H + h) * V,
                         la_rexp(gate(g, g_gamma, t, h, H)), 0, NULL, K, V);
            }
            if (dfinal_state) memcpy(G, dfinal_state + (n * H + h) * KV, KV * sizeof(la_real));
            else memset(G, 0, KV * sizeof(la_real));
            for (int64_t s = nseg - 1; s >= 0; s--) {
                const int64_t t0 = bos + s * LA_REF_SEG, t1 = LA_MIN_REF(t0 + LA_REF_SEG, eos);
                // seg[i] = S_{t0 + i - 1}, i.e. seg[0] is the state before token t0.
                memcpy(seg, ckpt + s * KV, KV * sizeof(la_real));
                for (int64_t t = t0; t < t1; t++) {
                    memcpy(seg + (t - t0 + 1) * KV, seg + (t - t0) * KV, KV * sizeof(la_real));
                    step(seg + (t - t0 + 1) * KV, NULL, k + (t * H + h) * K,
                         v + (t * H + h) * V, la_rexp(gate(g, g_gamma, t, h, H)), 0, NULL, K, V);
                }
                for (int64_t t = t1 - 1; t >= t0; t--) {
                    const la_real * St = seg + (t - t0 + 1) * KV;   // S_t
                    const la_real * Sp = seg + (t - t0) * KV;       // S_{t-1}
                    const la_real * qt = q + (t * H + h) * K, * kt = k + (t * H + h) * K;
                    const la_real * vt = v + (t * H + h) * V, * dot = dout + (t * H + h) * V;
                    la_real * dqt = dq + (t * H + h) * K, * dkt = dk + (t * H + h) * K;
                    la_real * dvt = dv + (t * H + h) * V;
                    const la_real decay = la_rexp(gate(g, g_gamma, t, h, H));
                    for (int64_t j = 0; j < V; j++) dvt[j] = 0;
                    la_real dgt = 0;
                    for (int64_t i = 0; i < K; i++) {
                        la_real * Gi = G + i * V;
                        la_real aq = 0, ak = 0;
                        for (int64_t j = 0; j < V; j++) {
                            Gi[j] += (la_real)d.scale * qt[i] * dot[j];      // o_t reads S_t
                            aq += St[i * V + j] * dot[j];
                            ak += Gi[j] * vt[j];
                            dvt[j] += Gi[j] * kt[i];
                            dgt += Gi[j] * Sp[i * V + j];
                        }
                        dqt[i] = (la_real)d.scale * aq;
                        dkt[i] = ak;
                    }
                    if (dg) dg[t * H + h] = decay * dgt;
                    for (int64_t e = 0; e < KV; e++) G[e] *= decay;  // G becomes dL/dS_{t-1}
                }
            }
            if (dinitial_state) memcpy(dinitial_state + (n * H + h) * KV, G, KV * sizeof(la_real));
        }
    }
}
