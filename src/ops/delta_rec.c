// delta_rule, gated_delta_rule and kda: the recurrent form of the dn engine (OPS.md 2.6-2.8,
// ALGORITHMS.md 2.2, 2.4, 2.5), on the effective inputs of delta.h:
//
//   P = D_t S_{t-1},  D_t = I | exp(g_t) I | Diag(exp(g_t))      (gate NONE | SCALAR | CHANNEL)
//   u_t = beta_t (v_t - P^T k_t) ;  S_t = P + k_t u_t^T ;  o_t = s S_t^T q_t
//
// The tiles, blocks, segments and checkpoints are rec_tile.h's (column tiling, ALGORITHMS.md
// 2.5); this file holds the hooks with the dn math. The reduction each token needs before it
// writes the state is r_t = P^T k_t = S_{t-1}^T c_t with c_t = exp(g_t) o k_t: the forward's
// fused sweep accumulates the next token's from the same fresh rows of S_t.
//
// Backward: the reverse-time adjoint of ALGORITHMS.md 2.2, G = dL/dS_t:
//
//   G += s q_t do_t^T ;  dq_t = s S_t do_t ;  du = G^T k_t ;  dv_t = beta_t du
//   dk_t = G u_t - beta_t P du ;  dbeta_t = du . (v_t - P^T k_t) ;  dP = G - beta_t k_t du^T
//   dg_t = sum_j dP o P (row sums -> (K) for CHANNEL, total for SCALAR) ;  G <- D_t dP
//
// on rec_tile.h's column-major state: du (and the replayed P^T k) is one reduction per column,
// while dq, dk and dg, which reduce over V, are K-vector accumulations.
//
// Dimensions: B, T, H, HV, K, V, N as in OPS.md; Kp = K rounded up to 16; w <= LA_REC_W the
// columns of one tile. Value head hv reads q/k head hv / (HV/H); dq, dk are per value head.
#include "delta.h"
#include "rec_tile.h"
#include "vexp.h"

enum { DN_SEG_K = LA_REC_SEG_OP, DN_NSEG };  // segment operand rows: k_t besides exp(g_t), c_t
enum { DN_DQ, DN_DK, DN_DG, DN_NACC };       // accumulators = outputs 0-2; output 3 is dbeta

// ---------------------------------------------------------------------------------------------
// Forward

// The coef hook (rec_tile.h): for tokens [t0, t1), rows t - t0 of the block scratch c->F: the
// decays exp(g_t) (rows of db for CHANNEL, entries of ds, ones without a gate) and c_t =
// exp(g_t) o k_t (rows of cb). Also prefetches the rows of q, k, v and g LA_REC_PF tokens
// ahead, so the block's first tile finds them in cache.
LA_CLONES
static void dn_coef(const la_rec_task * c, int64_t t0, int64_t t1) {
    const la_dn_args * x = c->x;
    const la_rec_fbufs * F = c->F;
    const int64_t K = c->K, V = c->V, H = x->sh.H, HV = c->nh, hv = c->h, hq = c->hq;
    for (int64_t t = t0; t < t1; t++) {
        float * restrict d = F->db + (t - t0) * K, * restrict cr = F->cb + (t - t0) * K;
        const int64_t rv = t * HV + hv;
        if (t + LA_REC_PF < c->eos) {  // rows H*K floats apart, a page or so: beyond the prefetcher
            const int64_t tp = t + LA_REC_PF;
            la_prefetch_rows(x->q + (tp * H + hq) * K, 0, 1, K);
            la_prefetch_rows(x->k + (tp * H + hq) * K, 0, 1, K);
            la_prefetch_rows(x->v + (tp * HV + hv) * V, 0, 1, V);
            if (x->gate == LA_DN_GATE_CHANNEL) la_prefetch_rows(x->g + (tp * HV + hv) * K, 0, 1, K);
        }
        const float * restrict kt = x->k + (t * H + hq) * K;
        float ds = 1.0f;
        if (x->gate == LA_DN_GATE_SCALAR) ds = la_expf(x->g[rv]);
        F->ds[t - t0] = ds;
        if (x->gate == LA_DN_GATE_CHANNEL) {
            la_expf_vec(d, x->g + rv * K, K);
            for (int64_t i = 0; i < K; i++) cr[i] = d[i] * kt[i];
        } else {
            for (int64_t i = 0; i < K; i++) cr[i] = ds * kt[i];
        }
    }
}

// Tokens [t0, t1) of a full tile of LA_REC_W = 2 x 16 columns of value head hv: S (K, LA_REC_W)
// with row stride ld, updated in place; db, cb, ds the block scratch, whose rows start at token
// tb; r holds P^T k_{t0} on entry and, with `next`, P^T k_{t1} on exit. One sweep over the rows
// per token updates S_t = P + k u^T, accumulates o_t = s S_t^T q_t and, from the same fresh rows,
// the next token's P^T k = sum_i c'_i S_t[i, :]: each row is loaded and stored once per token and
// the 16-lane accumulators stay in registers. Without `next` (the sequence's last token, which
// has no successor) the sweep skips that accumulation: a decode step's sweep then costs three
// operations an element, not four. `gate` and `next` are constants at every call site.
LA_REC_INLINE void dn_fast(const la_dn_args * x, int64_t t0, int64_t t1, int64_t tb, int64_t hv,
                           float * restrict S, int64_t ld, int64_t j0, const int gate,
                           const bool next, const float * restrict db,
                           const float * restrict cb, const float * restrict ds,
                           float * restrict r, const float * pf) {
    const int64_t H = x->sh.H, HV = x->sh.HV, K = x->sh.K, V = x->sh.V, hq = hv / (HV / H);
    const float s = x->scale;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t rq = t * H + hq, rv = t * HV + hv;
        const float * restrict qt = x->q + rq * K, * restrict kt = x->k + rq * K;
        const float * restrict vt = x->v + rv * V + j0;
        const float * restrict dc = db + (t - tb) * K, * restrict cn = cb + (t + 1 - tb) * K;
        float * restrict ot = x->o + rv * V + j0;
        const float bt = x->beta[rv], dec = ds[t - tb];
        float u0[16], u1[16], o0[16], o1[16], n0[16], n1[16];
        for (int l = 0; l < 16; l++) {
            u0[l] = bt * (vt[l] - r[l]);
            u1[l] = bt * (vt[16 + l] - r[16 + l]);
            o0[l] = o1[l] = n0[l] = n1[l] = 0.0f;
        }
        for (int64_t i = 0; i < K; i++) {
            const float di = gate == LA_DN_GATE_CHANNEL ? dc[i] : dec;
            const float ki = kt[i], qi = s * qt[i], ci = next ? cn[i] : 0.0f;
            float * restrict Si = S + i * ld;
            if (pf) la_rec_prefetch_row(pf, i, V, LA_REC_W);
            for (int l = 0; l < 16; l++) {
                const float pa = gate == LA_DN_GATE_NONE ? Si[l] : di * Si[l];
                const float pb = gate == LA_DN_GATE_NONE ? Si[16 + l] : di * Si[16 + l];
                const float a = pa + ki * u0[l], b = pb + ki * u1[l];
                Si[l] = a;
                Si[16 + l] = b;
                o0[l] += qi * a;
                o1[l] += qi * b;
                if (next) {
                    n0[l] += ci * a;
                    n1[l] += ci * b;
                }
            }
        }
        for (int l = 0; l < 16; l++) {
            ot[l] = o0[l];
            ot[16 + l] = o1[l];
            if (next) {
                r[l] = n0[l];
                r[16 + l] = n1[l];
            }
        }
    }
}

// The same for a narrower last tile (w < LA_REC_W columns), accumulators in memory.
LA_REC_INLINE void dn_narrow(const la_rec_task * c, int64_t t0, int64_t t1, float * restrict S,
                             int64_t ld, float * restrict r) {
    const la_dn_args * x = c->x;
    const la_rec_fbufs * F = c->F;
    const int64_t K = c->K, V = c->V, w = c->w;
    const float s = x->scale;
    float u[LA_REC_W], o[LA_REC_W], nx[LA_REC_W];  // (w) u_t, o_t, the next P^T k
    for (int64_t t = t0; t < t1; t++) {
        const int64_t rq = t * x->sh.H + c->hq, rv = t * c->nh + c->h;
        const bool next = t + 1 < c->eos;
        const float * restrict qt = x->q + rq * K, * restrict kt = x->k + rq * K;
        const float * restrict vt = x->v + rv * V + c->j0;
        const float * restrict d = F->db + (t - c->tb) * K;
        const float * restrict cn = F->cb + (t + 1 - c->tb) * K;
        float * restrict ot = x->o + rv * V + c->j0;
        const float bt = x->beta[rv], dec = F->ds[t - c->tb];
        for (int64_t j = 0; j < w; j++) {
            u[j] = bt * (vt[j] - r[j]);
            o[j] = nx[j] = 0.0f;
        }
        for (int64_t i = 0; i < K; i++) {
            const float di = x->gate == LA_DN_GATE_CHANNEL ? d[i] : dec, ki = kt[i], qi = s * qt[i];
            const float ci = next ? cn[i] : 0.0f;
            float * restrict Si = S + i * ld;
            for (int64_t j = 0; j < w; j++) {
                const float sij = di * Si[j] + ki * u[j];
                Si[j] = sij;
                o[j] += qi * sij;
                nx[j] += ci * sij;
            }
        }
        for (int64_t j = 0; j < w; j++) {
            ot[j] = o[j];
            r[j] = nx[j];
        }
    }
}

// The sweeps of tokens with a successor, and of a sequence's last token, in separate functions:
// with the last token's variants beside them the prefill's sweeps compiled 5-9 % slower (kda,
// gated_delta_rule at T = 8192, one thread).
#define DN_FAST(GATE, NEXT, PF)                                                                \
    dn_fast(c->x, t0, t1, c->tb, c->h, S, ld, c->j0, GATE, NEXT, F->db, F->cb, F->ds, r, PF)
LA_CLONES __attribute__((noinline))
static void dn_tile_next(const la_rec_task * c, int64_t t0, int64_t t1, float * S, int64_t ld,
                         float * r) {
    const la_rec_fbufs * F = c->F;
    const int gate = ((const la_dn_args *)c->x)->gate;
    if (gate == LA_DN_GATE_NONE) DN_FAST(LA_DN_GATE_NONE, true, NULL);
    else if (gate == LA_DN_GATE_SCALAR) DN_FAST(LA_DN_GATE_SCALAR, true, NULL);
    else DN_FAST(LA_DN_GATE_CHANNEL, true, NULL);
}

LA_CLONES __attribute__((noinline))
static void dn_tile_last(const la_rec_task * c, int64_t t0, int64_t t1, float * S, int64_t ld,
                         float * r, const float * pf) {
    const la_rec_fbufs * F = c->F;
    const int gate = ((const la_dn_args *)c->x)->gate;
    if (gate == LA_DN_GATE_NONE) DN_FAST(LA_DN_GATE_NONE, false, pf);
    else if (gate == LA_DN_GATE_SCALAR) DN_FAST(LA_DN_GATE_SCALAR, false, pf);
    else DN_FAST(LA_DN_GATE_CHANNEL, false, pf);
}
#undef DN_FAST

// The tile hook (rec_tile.h).
LA_CLONES
static void dn_tile(const la_rec_task * c, int64_t t0, int64_t t1, float * S, int64_t ld,
                    float * r, const float * pf) {
    if (c->w < LA_REC_W) dn_narrow(c, t0, t1, S, ld, r);
    else if (t1 < c->eos) dn_tile_next(c, t0, t1, S, ld, r);
    else dn_tile_last(c, t0, t1, S, ld, r, pf);
}

// ---------------------------------------------------------------------------------------------
// Backward

// The load hook (rec_tile.h): token t's rows, zero-padded to Kp: d = exp(g_t) (ones without a
// gate), k_t and c_t = d o k_t.
LA_CLONES
static void dn_load(const la_rec_task * c, int64_t t) {
    const la_dn_args * x = c->x;
    const la_rec_bufs * B = c->B;
    const int64_t K = c->K, Kp = B->Kp, rv = t * c->nh + c->h, o = la_rec_seg_row(c, t) * Kp;
    float * restrict d = B->seg[LA_REC_SEG_D] + o, * restrict kk = B->seg[DN_SEG_K] + o;
    float * restrict ck = B->seg[LA_REC_SEG_C] + o;
    la_rec_pad_row(kk, x->k + (t * x->sh.H + c->hq) * K, K, Kp);
    if (x->gate == LA_DN_GATE_CHANNEL) la_expf_vec(d, x->g + rv * K, K);
    else {
        const float e = x->gate == LA_DN_GATE_SCALAR ? la_expf(x->g[rv]) : 1.0f;
        for (int64_t i = 0; i < K; i++) d[i] = e;
    }
    for (int64_t i = K; i < Kp; i++) d[i] = 0.0f;
    for (int64_t i = 0; i < Kp; i++) ck[i] = d[i] * kk[i];
}

// One token on a column-major tile, src -> dst: with pk = P^T k (w) on entry, S_t = P + k u^T
// with u = beta (v - P^T k); with `next`, the next token's P^T k = S_t^T c' in pk.
LA_REC_INLINE void dn_step_cols(int64_t w, int64_t Kp, const float * restrict src,
                                float * restrict dst, const float * restrict d,
                                const float * restrict k, const float * restrict cn,
                                const float * restrict v, float bt, float * restrict pk,
                                const bool gated, const bool next) {
    for (int64_t j = 0; j < w; j++) {
        const float * restrict Sj = src + j * Kp;
        float * restrict Dj = dst + j * Kp;
        const float uj = bt * (v[j] - pk[j]);
        float acc[16] = { 0 };
        for (int64_t i0 = 0; i0 < Kp; i0 += 16)
            for (int l = 0; l < 16; l++) {
                const int64_t i = i0 + l;
                const float s = (gated ? d[i] * Sj[i] : Sj[i]) + uj * k[i];
                Dj[i] = s;
                if (next) acc[l] += cn[i] * s;
            }
        if (next) pk[j] = la_rec_fold16(acc);
    }
}

// The step of la_rec_replay (rec_tile.h).
LA_REC_INLINE void dn_step(const la_rec_task * c, int64_t t, const float * src, float * dst,
                           float * r, bool next) {
    const la_dn_args * x = c->x;
    const la_rec_bufs * B = c->B;
    const int64_t Kp = B->Kp, k = la_rec_seg_row(c, t), rv = t * c->nh + c->h, w = c->w;
    const float * d = B->seg[LA_REC_SEG_D] + k * Kp, * kk = B->seg[DN_SEG_K] + k * Kp;
    const float * cn = B->seg[LA_REC_SEG_C] + (k + 1) * Kp;
    const float * v = x->v + rv * c->V + c->j0;
    const float bt = x->beta[rv];
    const bool gated = x->gate != LA_DN_GATE_NONE;
    if (gated && next) dn_step_cols(w, Kp, src, dst, d, kk, cn, v, bt, r, true, true);
    else if (gated) dn_step_cols(w, Kp, src, dst, d, kk, cn, v, bt, r, true, false);
    else if (next) dn_step_cols(w, Kp, src, dst, d, kk, cn, v, bt, r, false, true);
    else dn_step_cols(w, Kp, src, dst, d, kk, cn, v, bt, r, false, false);
}

// The replay hook (rec_tile.h).
LA_CLONES
static void dn_replay(const la_rec_task * c, int64_t seg, float * S, bool keep) {
    la_rec_replay(c, seg, S, keep, dn_step);
}

// Reverse step of one column j (ALGORITHMS.md 2.2) at one token: Sp = S_{t-1}[:, j] (Kp),
// G = dL/dS_t[:, j] in, dL/dS_{t-1}[:, j] out; cq = s do_t[j], u = u_t[j]. Adds the column's
// terms of dq, dk, dg to dqa, dka, dga; returns du[j].
LA_REC_INLINE float dn_rev_col(int64_t Kp, const float * restrict Sp, float * restrict G,
                               const float * restrict d, const float * restrict k,
                               const float * restrict q, float * restrict dqa,
                               float * restrict dka, float * restrict dga, float cq, float u,
                               float bt, const bool gated) {
    // G += s q do^T ; dq += s S_t do (S_t = P + k u^T) ; du = G^T k
    float acc[16] = { 0 };
    for (int64_t i0 = 0; i0 < Kp; i0 += 16)
        for (int l = 0; l < 16; l++) {
            const int64_t i = i0 + l;
            const float p = gated ? d[i] * Sp[i] : Sp[i];
            const float g = G[i] + cq * q[i];
            G[i] = g;
            dqa[i] += cq * (p + u * k[i]);
            acc[l] += g * k[i];
        }
    const float du = la_rec_fold16(acc), bdu = bt * du;
    // dk += G u - beta P du ; dP = G - beta k du^T ; dg += dP o P ; G <- D dP
    for (int64_t i = 0; i < Kp; i++) {
        const float p = gated ? d[i] * Sp[i] : Sp[i], g = G[i];
        const float dp = g - bdu * k[i];
        dka[i] += u * g - bdu * p;
        if (gated) {
            dga[i] += dp * p;
            G[i] = d[i] * dp;
        } else {
            G[i] = dp;
        }
    }
    return du;
}

// dn_rev_col for two columns at once (a = column j, b = column j + 1): one pass over the
// per-token vectors and the dq, dk, dg accumulators serves both. du (2) receives du[j], du[j+1].
LA_REC_INLINE void dn_rev_col2(int64_t Kp, const float * restrict Sa, const float * restrict Sb,
                               float * restrict Ga, float * restrict Gb,
                               const float * restrict d, const float * restrict k,
                               const float * restrict q, float * restrict dqa,
                               float * restrict dka, float * restrict dga, float cqa, float cqb,
                               float ua, float ub, float bt, float * restrict du,
                               const bool gated) {
    float acca[16] = { 0 }, accb[16] = { 0 };
    for (int64_t i0 = 0; i0 < Kp; i0 += 16)
        for (int l = 0; l < 16; l++) {
            const int64_t i = i0 + l;
            const float pa = gated ? d[i] * Sa[i] : Sa[i], pb = gated ? d[i] * Sb[i] : Sb[i];
            const float ga = Ga[i] + cqa * q[i], gb = Gb[i] + cqb * q[i];
            Ga[i] = ga;
            Gb[i] = gb;
            dqa[i] += cqa * (pa + ua * k[i]) + cqb * (pb + ub * k[i]);
            acca[l] += ga * k[i];
            accb[l] += gb * k[i];
        }
    du[0] = la_rec_fold16(acca);
    du[1] = la_rec_fold16(accb);
    const float bda = bt * du[0], bdb = bt * du[1];
    for (int64_t i = 0; i < Kp; i++) {
        const float pa = gated ? d[i] * Sa[i] : Sa[i], pb = gated ? d[i] * Sb[i] : Sb[i];
        const float ga = Ga[i], gb = Gb[i];
        const float dpa = ga - bda * k[i], dpb = gb - bdb * k[i];
        dka[i] += (ua * ga - bda * pa) + (ub * gb - bdb * pb);
        if (gated) {
            dga[i] += dpa * pa + dpb * pb;
            Ga[i] = d[i] * dpa;
            Gb[i] = d[i] * dpb;
        } else {
            Ga[i] = dpa;
            Gb[i] = dpb;
        }
    }
}

// The seg_bwd hook (rec_tile.h): v - P^T k from the kept r_t = P^T k_t.
LA_CLONES
static void dn_seg_bwd(const la_rec_task * c, int64_t seg, float * restrict G) {
    const la_dn_args * x = c->x;
    const la_rec_bufs * B = c->B;
    const int64_t H = x->sh.H, K = c->K, V = c->V, Kp = B->Kp, w = c->w;
    const int64_t t0 = c->bos + seg * LA_REC_SEG, L = LA_MIN(LA_REC_SEG, c->eos - t0);
    const bool gated = x->gate != LA_DN_GATE_NONE;
    const float s = x->scale;
    const float * restrict q = B->q;
    float * restrict dqa = B->acc[DN_DQ], * restrict dka = B->acc[DN_DK];
    float * restrict dga = B->acc[DN_DG];
    for (int64_t k = L - 1; k >= 0; k--) {
        const int64_t t = t0 + k, rv = t * c->nh + c->h;
        const float * Sp = B->Ss + k * w * Kp, * d = B->seg[LA_REC_SEG_D] + k * Kp;
        const float * kk = B->seg[DN_SEG_K] + k * Kp, * pk = B->rseg + k * LA_REC_W;
        const float * dot = x->dout + rv * V + c->j0, * vt = x->v + rv * V + c->j0;
        float * dvt = x->dv + rv * V + c->j0;
        const float bt = x->beta[rv];
        la_rec_tok_begin(c, x->q + (t * H + c->hq) * K);
        float dbeta = 0.0f;
        int64_t j = 0;
        for (; j + 2 <= w; j += 2) {
            float du[2];
            const float * Sa = Sp + j * Kp;
            float * Ga = G + j * Kp;
            const float ea = vt[j] - pk[j], eb = vt[j + 1] - pk[j + 1];
            const float cqa = s * dot[j], cqb = s * dot[j + 1], ua = bt * ea, ub = bt * eb;
#define DN_REV2(GATED)                                                                         \
    dn_rev_col2(Kp, Sa, Sa + Kp, Ga, Ga + Kp, d, kk, q, dqa, dka, dga, cqa, cqb, ua, ub, bt,   \
                du, GATED)
            if (gated) DN_REV2(true);
            else DN_REV2(false);
#undef DN_REV2
            dvt[j] = bt * du[0];
            dvt[j + 1] = bt * du[1];
            dbeta += du[0] * ea + du[1] * eb;
        }
        for (; j < w; j++) {
            const float e = vt[j] - pk[j], cq = s * dot[j], u = bt * e;
            const float * Sj = Sp + j * Kp;
            float * Gj = G + j * Kp;
            const float du =
                gated ? dn_rev_col(Kp, Sj, Gj, d, kk, q, dqa, dka, dga, cq, u, bt, true)
                      : dn_rev_col(Kp, Sj, Gj, d, kk, q, dqa, dka, dga, cq, u, bt, false);
            dvt[j] = bt * du;  // u = beta (v - P^T k)
            dbeta += du * e;
        }
        la_rec_tok_end(c, t);
        x->dbeta[rv] += dbeta;
    }
}

// ---------------------------------------------------------------------------------------------
// Form entry points (delta.h)

static const la_rec_op dn_op = {
    .nseg = DN_NSEG, .nacc = DN_NACC,
    .coef = dn_coef, .tile = dn_tile,                         // forward
    .load = dn_load, .replay = dn_replay, .seg_bwd = dn_seg_bwd,  // backward
};

size_t la_dn_rec_bytes(const la_dn_args * x, bool backward) {
    return la_rec_bytes(&dn_op, x->sh.K, x->sh.V, x->maxlen, backward);
}

void la_dn_rec_task(const la_dn_args * x, int64_t n, int64_t hv, void * ws, bool backward) {
    const int64_t HV = x->sh.HV, K = x->sh.K;
    la_rec_task c;
    la_rec_task_init(&c, &dn_op, x, x->sh, x->opts, x->N, HV, n, hv, hv / (HV / x->sh.H),
                     x->maxlen);
    if (!backward) {
        la_rec_fwd(&c, x->init, x->final, ws);
        return;
    }
    const int64_t gw = x->gate == LA_DN_GATE_CHANNEL ? K : x->gate == LA_DN_GATE_SCALAR ? 1 : 0;
    c.out[DN_DQ] = (la_rec_out){ x->dq, K };
    c.out[DN_DK] = (la_rec_out){ x->dk, K };
    c.out[DN_DG] = (la_rec_out){ x->dg, gw };
    c.out[DN_NACC] = (la_rec_out){ x->dbeta, 1 };
    c.nout = DN_NACC + 1;
    la_rec_bwd(&c, x->init, x->dfinal, x->dinit, ws);
}
