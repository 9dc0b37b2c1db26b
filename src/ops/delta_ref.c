// Reference recurrences of the delta-rule family, per (sequence, value head), in la_real, with
// their reverse-time adjoints (ALGORITHMS.md 2.1, 2.2). Two engines:
//
//   dn (delta_rule, gated_delta_rule, kda; OPS.md 2.6-2.8), on effective inputs:
//     P = D_t S_{t-1},  D_t = I | exp(g_t) I | Diag(exp(g_t))        (gate NONE | SCALAR | CHANNEL)
//     u_t = beta_t (v_t - P^T k_t) ;  S_t = P + k_t u_t^T ;  o_t = s S_t^T q_t
//   value head hv reads q/k head hv / (HV/H) (OPS.md 1.8).
//
//   dplr (dplr_delta_rule, iplr_delta_rule, rwkv7; OPS.md 2.9-2.12):
//     S_t = Diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T ;  o_t = s S_t^T q_t
//   gk NULL: no decay (iplr).
//
// Backward, reverse time with G = dL/dS_t, starting from dS_T (dfinal_state or 0):
//   dn (ALGORITHMS.md 2.2):
//     G += s q do^T ; dq = s S_t do ; du = G^T k
//     dk = G u - beta P du ; dv = beta du ; dbeta = du . (v - P^T k)
//     dP = G - beta k du^T ; dg = sum_j dP o P (rows for CHANNEL, total for SCALAR) ; G <- D dP
//   dplr (ALGORITHMS.md 2.1):
//     G += s q do^T ; dq = s S_t do ; dk = G v ; dv = G^T k
//     db = G (S_{t-1}^T a) ; da = S_{t-1} (G^T b) ; dgk_i = exp(gk_i) sum_j G_ij S_{t-1,ij}
//     G <- Diag(exp(gk)) G + a (b^T G)
// dgk uses G after the read term is added and before it is carried back: S_t depends on gk_t
// only through the decay of S_{t-1}, and G at that point is the whole dL/dS_t.
// S_{t-1} is never obtained by inverting a transition (I - beta k k^T is singular at beta = 1):
// the forward is replayed from checkpoints saved every LA_REF_SEG tokens (ALGORITHMS.md 2.4).
//
// Dimensions: B, T, H, HV, K, V, N as in OPS.md. dn: q, k (B,T,H,K); v, o (B,T,HV,V);
// beta (B,T,HV); g (B,T,HV) or (B,T,HV,K); dq, dk per value head (B,T,HV,K); states
// (N,HV,K,V). dplr: q, k, a, b, gk (B,T,H,K); v, o (B,T,H,V); states (N,H,K,V).
// Every gradient row of every token is overwritten (varlen sequences cover [0, T)).
#include "ref.h"

#include "delta.h"

#include <math.h>
#include <string.h>

#define LA_MIN_REF(a, b) ((a) < (b) ? (a) : (b))

typedef struct dargs {
    la_ref_dims     d;
    int64_t         HV;     // value heads (dplr: H)
    int64_t         grp;    // HV / H: value heads per q/k head
    bool            dplr;   // dplr engine (else dn)
    int             gate;   // dn: LA_DN_GATE_*; dplr: CHANNEL with gk, NONE without
    const la_real * q, * k, * v, * beta, * g, * a, * b, * init;
    la_real *       o, * final;
    const la_real * dout, * dfinal;
    la_real *       dq, * dk, * dv, * dbeta, * dg, * da, * db, * dinit;
} dargs;

// Scratch of one (sequence, head): the states and per-token vectors.
typedef struct dbuf {
    la_real * S;     // (K, V) forward state
    la_real * ckpt;  // (nseg + 1, K, V) states at segment starts (backward)
    la_real * seg;   // (LA_REF_SEG + 1, K, V) replayed states: seg[i] = S_{t0 + i - 1}
    la_real * G;     // (K, V) adjoint dL/dS_t
    la_real * P;     // (K, V) the decayed state D_t S_{t-1} (dn backward)
    la_real * dd;    // (K) decays exp(g_t) of the current token
    la_real * w;     // (V) P^T k, then u (dn forward); v - P^T k (dn backward); S_{t-1}^T a (dplr)
    la_real * u;     // (V) dn pseudo-value u_t
    la_real * du;    // (V) dL/du (dn) or G^T b (dplr)
} dbuf;

static int64_t nseg_max(la_ref_dims d) { return (la_ref_max_len(d) + LA_REF_SEG - 1) / LA_REF_SEG; }

static int64_t ws_elems(la_ref_dims d) {
    const int64_t KV = d.sh.K * d.sh.V;
    // checkpoints, one replayed segment, G and P, then dd (K) and w, u, du (V).
    return (nseg_max(d) + 1) * KV + (LA_REF_SEG + 1) * KV + 2 * KV + d.sh.K + 3 * d.sh.V;
}

static dbuf carve(la_ref_dims d, la_real * ws) {
    const int64_t KV = d.sh.K * d.sh.V;
    dbuf b;
    b.ckpt = ws;
    b.S = ws;  // the forward uses the first state slot only
    b.seg = b.ckpt + (nseg_max(d) + 1) * KV;
    b.G = b.seg + (LA_REF_SEG + 1) * KV;
    b.P = b.G + KV;
    b.dd = b.P + KV;
    b.w = b.dd + d.sh.K;
    b.u = b.w + d.sh.V;
    b.du = b.u + d.sh.V;
    return b;
}

// Decays of token t, value head hv: exp(g) per key channel (ones without a gate).
static void decays(const dargs * x, int64_t t, int64_t hv, la_real * dd) {
    const int64_t K = x->d.sh.K;
    if (x->gate == LA_DN_GATE_SCALAR) {
        const la_real e = la_rexp(x->g[t * x->HV + hv]);
        for (int64_t i = 0; i < K; i++) dd[i] = e;
    } else if (x->gate == LA_DN_GATE_CHANNEL) {
        const la_real * gt = x->g + (t * x->HV + hv) * K;
        for (int64_t i = 0; i < K; i++) dd[i] = la_rexp(gt[i]);
    } else {
        for (int64_t i = 0; i < K; i++) dd[i] = 1;
    }
}

// Row offsets of token t for value head hv: q/k rows (head hv / grp) and v/o rows.
static int64_t qk_row(const dargs * x, int64_t t, int64_t hv) {
    return (t * x->d.sh.H + hv / x->grp) * x->d.sh.K;
}
static int64_t v_row(const dargs * x, int64_t t, int64_t hv) { return (t * x->HV + hv) * x->d.sh.V; }

// S_{t-1} -> S_t in place (dd, w: scratch).
static void step(const dargs * x, la_real * S, int64_t t, int64_t hv, la_real * dd, la_real * w) {
    const int64_t K = x->d.sh.K, V = x->d.sh.V;
    const la_real * kt = x->k + qk_row(x, t, hv), * vt = x->v + v_row(x, t, hv);
    decays(x, t, hv, dd);
    for (int64_t j = 0; j < V; j++) w[j] = 0;
    if (x->dplr) {
        // w = S_{t-1}^T a (the low-rank term reads the undecayed state), then
        // S = Diag(dd) S + b w^T + k v^T.
        const la_real * at = x->a + qk_row(x, t, hv), * bt = x->b + qk_row(x, t, hv);
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) w[j] += at[i] * S[i * V + j];
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++)
                S[i * V + j] = dd[i] * S[i * V + j] + bt[i] * w[j] + kt[i] * vt[j];
    } else {
        // P = D S ; u = beta (v - P^T k) ; S = P + k u^T   (w holds P^T k, then u)
        const la_real bt = x->beta[t * x->HV + hv];
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) {
                S[i * V + j] *= dd[i];
                w[j] += S[i * V + j] * kt[i];
            }
        for (int64_t j = 0; j < V; j++) w[j] = bt * (vt[j] - w[j]);
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) S[i * V + j] += kt[i] * w[j];
    }
}

static void load_state(la_real * S, const la_real * src, int64_t idx, int64_t KV) {
    if (src) memcpy(S, src + idx * KV, (size_t)KV * sizeof(la_real));
    else memset(S, 0, (size_t)KV * sizeof(la_real));
}

static void fwd(const dargs * x, la_real * ws) {
    const int64_t K = x->d.sh.K, V = x->d.sh.V, KV = K * V, HV = x->HV;
    const la_real s = (la_real)x->d.scale;
    dbuf b = carve(x->d, ws);
    for (int64_t n = 0; n < x->d.N; n++) {
        int64_t bos, eos;
        la_ref_bounds(x->d, n, &bos, &eos);
        for (int64_t hv = 0; hv < HV; hv++) {
            load_state(b.S, x->init, n * HV + hv, KV);
            for (int64_t t = bos; t < eos; t++) {
                step(x, b.S, t, hv, b.dd, b.w);
                // o_t = s S_t^T q_t
                const la_real * qt = x->q + qk_row(x, t, hv);
                la_real * ot = x->o + v_row(x, t, hv);
                for (int64_t j = 0; j < V; j++) ot[j] = 0;
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) ot[j] += s * qt[i] * b.S[i * V + j];
            }
            if (x->final) memcpy(x->final + (n * HV + hv) * KV, b.S, (size_t)KV * sizeof(la_real));
        }
    }
}

// One reverse step of the dn engine at token t (ALGORITHMS.md 2.2). sb->G holds dL/dS_t
// (including the read of o_t) on entry and dL/dS_{t-1} on exit; Sp = S_{t-1}.
static void dn_back_step(const dargs * x, const dbuf * sb, const la_real * Sp, int64_t t,
                         int64_t hv) {
    const int64_t K = x->d.sh.K, V = x->d.sh.V, HV = x->HV;
    const la_real * kt = x->k + qk_row(x, t, hv), * vt = x->v + v_row(x, t, hv);
    const la_real bt = x->beta[t * HV + hv];
    la_real * dkt = x->dk + (t * HV + hv) * K, * dvt = x->dv + v_row(x, t, hv);
    la_real * G = sb->G, * P = sb->P, * e = sb->w, * u = sb->u, * du = sb->du, * dd = sb->dd;
    decays(x, t, hv, dd);
    // Forward quantities: P = D S_{t-1}, e = v - P^T k, u = beta e.
    for (int64_t j = 0; j < V; j++) e[j] = 0;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) {
            P[i * V + j] = dd[i] * Sp[i * V + j];
            e[j] += P[i * V + j] * kt[i];
        }
    for (int64_t j = 0; j < V; j++) {
        e[j] = vt[j] - e[j];
        u[j] = bt * e[j];
    }
    // S_t = P + k u^T:  du = G^T k
    for (int64_t j = 0; j < V; j++) du[j] = 0;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) du[j] += G[i * V + j] * kt[i];
    // dk = G u - beta P du  (the second term through u = beta (v - P^T k))
    for (int64_t i = 0; i < K; i++) {
        la_real acc = 0;
        for (int64_t j = 0; j < V; j++) acc += G[i * V + j] * u[j] - bt * P[i * V + j] * du[j];
        dkt[i] = acc;
    }
    la_real dbt = 0;
    for (int64_t j = 0; j < V; j++) {
        dvt[j] = bt * du[j];
        dbt += du[j] * e[j];
    }
    x->dbeta[t * HV + hv] = dbt;
    // dP = G - beta k du^T, in place in G; the gate sees dP o P.
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) G[i * V + j] -= bt * kt[i] * du[j];
    if (x->gate == LA_DN_GATE_SCALAR) {
        la_real acc = 0;
        for (int64_t i = 0; i < K * V; i++) acc += G[i] * P[i];
        x->dg[t * HV + hv] = acc;
    } else if (x->gate == LA_DN_GATE_CHANNEL) {
        la_real * dgt = x->dg + (t * HV + hv) * K;
        for (int64_t i = 0; i < K; i++) {
            la_real acc = 0;
            for (int64_t j = 0; j < V; j++) acc += G[i * V + j] * P[i * V + j];
            dgt[i] = acc;
        }
    }
    // P = D S_{t-1}:  G <- D dP
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) G[i * V + j] *= dd[i];
}

// One reverse step of the dplr engine at token t (ALGORITHMS.md 2.1); G as in dn_back_step.
static void dp_back_step(const dargs * x, const dbuf * sb, const la_real * Sp, int64_t t,
                         int64_t h) {
    const int64_t K = x->d.sh.K, V = x->d.sh.V, H = x->HV;
    const int64_t rk = (t * H + h) * K, rv = (t * H + h) * V;
    const la_real * kt = x->k + rk, * vt = x->v + rv, * at = x->a + rk, * bt = x->b + rk;
    la_real * dkt = x->dk + rk, * dvt = x->dv + rv, * dat = x->da + rk, * dbt = x->db + rk;
    la_real * G = sb->G, * w = sb->w, * c = sb->du, * dd = sb->dd;
    decays(x, t, h, dd);
    // w = S_{t-1}^T a ; c = G^T b ; dv = G^T k
    for (int64_t j = 0; j < V; j++) w[j] = c[j] = dvt[j] = 0;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) {
            w[j] += at[i] * Sp[i * V + j];
            c[j] += bt[i] * G[i * V + j];
            dvt[j] += kt[i] * G[i * V + j];
        }
    for (int64_t i = 0; i < K; i++) {
        la_real ak = 0, ab = 0, aa = 0, ag = 0;
        for (int64_t j = 0; j < V; j++) {
            ak += G[i * V + j] * vt[j];        // dk = G v
            ab += G[i * V + j] * w[j];         // db = G (S_{t-1}^T a)
            aa += Sp[i * V + j] * c[j];        // da = S_{t-1} (G^T b)
            ag += G[i * V + j] * Sp[i * V + j];
        }
        dkt[i] = ak;
        dbt[i] = ab;
        dat[i] = aa;
        if (x->dg) x->dg[rk + i] = dd[i] * ag;  // dgk_i = e^{gk_i} sum_j G_ij S_{t-1,ij}
    }
    // G <- Diag(e^{gk}) G + a (b^T G)
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) G[i * V + j] = dd[i] * G[i * V + j] + at[i] * c[j];
}

static void bwd(const dargs * x, la_real * ws) {
    const int64_t K = x->d.sh.K, V = x->d.sh.V, KV = K * V, HV = x->HV;
    const la_real s = (la_real)x->d.scale;
    dbuf b = carve(x->d, ws);
    for (int64_t n = 0; n < x->d.N; n++) {
        int64_t bos, eos;
        la_ref_bounds(x->d, n, &bos, &eos);
        const int64_t nseg = (eos - bos + LA_REF_SEG - 1) / LA_REF_SEG;
        for (int64_t hv = 0; hv < HV; hv++) {
            // Forward replay, keeping the state at the start of every segment.
            load_state(b.ckpt, x->init, n * HV + hv, KV);
            for (int64_t sg = 0; sg < nseg; sg++) {
                la_real * S = b.ckpt + (sg + 1) * KV;
                memcpy(S, b.ckpt + sg * KV, (size_t)KV * sizeof(la_real));
                const int64_t t1 = LA_MIN_REF(bos + (sg + 1) * LA_REF_SEG, eos);
                for (int64_t t = bos + sg * LA_REF_SEG; t < t1; t++) step(x, S, t, hv, b.dd, b.w);
            }
            load_state(b.G, x->dfinal, n * HV + hv, KV);
            for (int64_t sg = nseg - 1; sg >= 0; sg--) {
                const int64_t t0 = bos + sg * LA_REF_SEG, t1 = LA_MIN_REF(t0 + LA_REF_SEG, eos);
                memcpy(b.seg, b.ckpt + sg * KV, (size_t)KV * sizeof(la_real));
                for (int64_t t = t0; t < t1; t++) {
                    la_real * S = b.seg + (t - t0 + 1) * KV;
                    memcpy(S, S - KV, (size_t)KV * sizeof(la_real));
                    step(x, S, t, hv, b.dd, b.w);
                }
                for (int64_t t = t1 - 1; t >= t0; t--) {
                    const la_real * St = b.seg + (t - t0 + 1) * KV, * Sp = St - KV;
                    const la_real * qt = x->q + qk_row(x, t, hv);
                    const la_real * dot = x->dout + v_row(x, t, hv);
                    la_real * dqt = x->dq + (t * HV + hv) * K;
                    // o_t = s S_t^T q_t:  G += s q do^T ; dq = s S_t do
                    for (int64_t i = 0; i < K; i++) {
                        la_real acc = 0;
                        for (int64_t j = 0; j < V; j++) {
                            b.G[i * V + j] += s * qt[i] * dot[j];
                            acc += St[i * V + j] * dot[j];
                        }
                        dqt[i] = s * acc;
                    }
                    if (x->dplr) dp_back_step(x, &b, Sp, t, hv);
                    else dn_back_step(x, &b, Sp, t, hv);
                }
            }
            if (x->dinit) memcpy(x->dinit + (n * HV + hv) * KV, b.G, (size_t)KV * sizeof(la_real));
        }
    }
}

static int64_t value_heads(la_ref_dims d) { return d.sh.HV > 0 ? d.sh.HV : d.sh.H; }

// --- dn: delta_rule, gated_delta_rule, kda ---------------------------------------------------

int64_t LA_REF(la_delta_ref_ws_elems)(la_ref_dims d) { return ws_elems(d); }

void LA_REF(la_delta_fwd_ref)(la_real * o, la_real * final_state, const la_real * q,
                              const la_real * k, const la_real * v, const la_real * beta,
                              const la_real * g, int gate, const la_real * initial_state,
                              la_ref_dims d, la_real * ws) {
    const int64_t HV = value_heads(d);
    dargs x = { .d = d, .HV = HV, .grp = HV / d.sh.H, .gate = g ? gate : LA_DN_GATE_NONE,
                .q = q, .k = k, .v = v, .beta = beta, .g = g, .init = initial_state, .o = o,
                .final = final_state };
    fwd(&x, ws);
}

void LA_REF(la_delta_bwd_ref)(la_real * dq, la_real * dk, la_real * dv, la_real * dbeta,
                              la_real * dg, la_real * dinitial_state, const la_real * dout,
                              const la_real * dfinal_state, const la_real * q, const la_real * k,
                              const la_real * v, const la_real * beta, const la_real * g,
                              int gate, const la_real * initial_state, la_ref_dims d,
                              la_real * ws) {
    const int64_t HV = value_heads(d);
    dargs x = { .d = d, .HV = HV, .grp = HV / d.sh.H, .gate = g ? gate : LA_DN_GATE_NONE,
                .q = q, .k = k, .v = v, .beta = beta, .g = g, .init = initial_state,
                .dout = dout, .dfinal = dfinal_state, .dq = dq, .dk = dk, .dv = dv,
                .dbeta = dbeta, .dg = g ? dg : NULL, .dinit = dinitial_state };
    bwd(&x, ws);
}

// --- dplr: dplr_delta_rule, iplr_delta_rule (gk NULL), rwkv7 ---------------------------------

int64_t LA_REF(la_dplr_ref_ws_elems)(la_ref_dims d) { return ws_elems(d); }

void LA_REF(la_dplr_fwd_ref)(la_real * o, la_real * final_state, const la_real * q,
                             const la_real * k, const la_real * v, const la_real * a,
                             const la_real * b, const la_real * gk,
                             const la_real * initial_state, la_ref_dims d, la_real * ws) {
    dargs x = { .d = d, .HV = d.sh.H, .grp = 1, .dplr = true,
                .gate = gk ? LA_DN_GATE_CHANNEL : LA_DN_GATE_NONE, .q = q, .k = k, .v = v,
                .g = gk, .a = a, .b = b, .init = initial_state, .o = o, .final = final_state };
    fwd(&x, ws);
}

void LA_REF(la_dplr_bwd_ref)(la_real * dq, la_real * dk, la_real * dv, la_real * da,
                             la_real * db, la_real * dgk, la_real * dinitial_state,
                             const la_real * dout, const la_real * dfinal_state,
                             const la_real * q, const la_real * k, const la_real * v,
                             const la_real * a, const la_real * b, const la_real * gk,
                             const la_real * initial_state, la_ref_dims d, la_real * ws) {
    dargs x = { .d = d, .HV = d.sh.H, .grp = 1, .dplr = true,
                .gate = gk ? LA_DN_GATE_CHANNEL : LA_DN_GATE_NONE, .q = q, .k = k, .v = v,
                .g = gk, .a = a, .b = b, .init = initial_state, .dout = dout,
                .dfinal = dfinal_state, .dq = dq, .dk = dk, .dv = dv, .da = da, .db = db,
                .dg = gk ? dgk : NULL, .dinit = dinitial_state };
    bwd(&x, ws);
}
