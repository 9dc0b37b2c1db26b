// dplr_delta_rule, iplr_delta_rule and rwkv7: the recurrent form of the dp engine (OPS.md
// 2.9-2.12, ALGORITHMS.md 2.1, 2.4, 2.5), on the effective inputs of delta.h:
//
//   S_t = Diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T ;  o_t = s S_t^T q_t
//   (gk NULL: no decay, iplr)
//
// The low-rank term reads the undecayed S_{t-1}. The tiles, blocks, segments and checkpoints
// are rec_tile.h's (column tiling, ALGORITHMS.md 2.5); this file holds the hooks with the dp
// math. The reduction each token needs before it writes the state is r_t = y_t = a_t^T S_{t-1}
// (c_t = a_t): the forward's fused sweep accumulates the next token's from the same fresh rows
// of S_t.
//
// Backward: the reverse-time adjoint of ALGORITHMS.md 2.1, G = dL/dS_t:
//
//   G += s q_t do_t^T ;  dq_t = s S_t do_t ;  dk_t = G v_t ;  dv_t = G^T k_t
//   db_t = G (S_{t-1}^T a_t) ;  da_t = S_{t-1} (G^T b_t)
//   dgk_t = rowsum(G o Diag(e^{gk_t}) S_{t-1})
//   G <- Diag(e^{gk_t}) G + a_t (b_t^T G)
//
// on rec_tile.h's column-major state: dv, G^T b (and the replayed a^T S) are reductions per
// column, while dq, dk, da, db and dgk, which reduce over V, are K-vector accumulations.
//
// Dimensions: B, T, H, K, V, N as in OPS.md; Kp = K rounded up to 16; w <= LA_REC_W the columns
// of one tile.
#include "delta.h"
#include "rec_tile.h"
#include "vexp.h"

// Segment operand rows besides exp(gk_t) and c_t = a_t: k_t, b_t.
enum { DP_SEG_K = LA_REC_SEG_OP, DP_SEG_B, DP_NSEG };
enum { DP_DQ, DP_DK, DP_DA, DP_DB, DP_DG, DP_NACC };  // accumulators = outputs

// ---------------------------------------------------------------------------------------------
// Forward

// The coef hook (rec_tile.h): for tokens [t0, t1), rows t - t0 of the block scratch c->F: the
// decays exp(gk_t) (rows of db; with gk) and c_t = a_t (rows of cb). Also prefetches the rows
// of q, k, a, b, v and gk LA_REC_PF tokens ahead (one head's rows are H*K floats apart, a page
// or so: beyond the hardware prefetcher), so the block's first tile finds them in cache.
LA_CLONES
static void dp_coef(const la_rec_task * c, int64_t t0, int64_t t1) {
    const la_dp_args * x = c->x;
    const la_rec_fbufs * F = c->F;
    const int64_t K = c->K, H = c->nh, h = c->h;
    for (int64_t t = t0; t < t1; t++) {
        if (t + LA_REC_PF < c->eos) {
            const int64_t r = (t + LA_REC_PF) * H + h;
            const float * rows[] = { x->q, x->k, x->a, x->b, x->gk };
            for (int m = 0; m < (x->gk ? 5 : 4); m++) la_prefetch_rows(rows[m] + r * K, 0, 1, K);
            la_prefetch_rows(x->v + r * c->V, 0, 1, c->V);
        }
        const int64_t row = (t * H + h) * K;
        memcpy(F->cb + (t - t0) * K, x->a + row, (size_t)K * sizeof(float));
        if (x->gk) la_expf_vec(F->db + (t - t0) * K, x->gk + row, K);
    }
}

// Tokens [t0, t1) of a full tile of LA_REC_W = 2 x 16 columns of head h: S (K, LA_REC_W) with
// row stride ld, updated in place; db, cb the block scratch, whose rows start at token tb; y
// holds a_{t0}^T S_{t0-1} on entry and, with `next`, a_{t1}^T S_{t1-1} on exit. One sweep over
// the rows per token updates S_t = D S_{t-1} + b y^T + k v^T, accumulates o_t = s S_t^T q_t and,
// from the same fresh rows, the next token's a^T S_t: each row is loaded and stored once per
// token and the 16-lane accumulators stay in registers. Without `next` (the sequence's last
// token) the sweep skips that accumulation. `gated` and `next` are constants at every call site.
LA_REC_INLINE void dp_fast(const la_dp_args * x, int64_t t0, int64_t t1, int64_t tb, int64_t h,
                           float * restrict S, int64_t ld, int64_t j0, const bool gated,
                           const bool next, const float * restrict db,
                           const float * restrict cb, float * restrict y, const float * pf) {
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V;
    const float s = x->scale;
    float y0[16], y1[16];  // a^T S of the token in hand, kept in registers from token to token
    for (int l = 0; l < 16; l++) {
        y0[l] = y[l];
        y1[l] = y[16 + l];
    }
    for (int64_t t = t0; t < t1; t++) {
        const int64_t r = t * H + h;
        const float * restrict qt = x->q + r * K, * restrict kt = x->k + r * K;
        const float * restrict bt = x->b + r * K, * restrict vt = x->v + r * V + j0;
        const float * restrict an = cb + (t + 1 - tb) * K;  // a_{t+1}
        const float * restrict dc = db + (t - tb) * K;
        float * restrict ot = x->o + r * V + j0;
        float v0[16], v1[16], o0[16], o1[16], n0[16], n1[16];
        for (int l = 0; l < 16; l++) {
            v0[l] = vt[l];
            v1[l] = vt[16 + l];
            o0[l] = o1[l] = n0[l] = n1[l] = 0.0f;
        }
        for (int64_t i = 0; i < K; i++) {
            const float di = gated ? dc[i] : 1.0f, bi = bt[i], ki = kt[i], qi = s * qt[i];
            const float ci = next ? an[i] : 0.0f;
            float * restrict Si = S + i * ld;
            if (pf) la_rec_prefetch_row(pf, i, V, LA_REC_W);
            for (int l = 0; l < 16; l++) {
                const float p = (gated ? di * Si[l] : Si[l]) + (bi * y0[l] + ki * v0[l]);
                const float e = (gated ? di * Si[16 + l] : Si[16 + l]) + (bi * y1[l] + ki * v1[l]);
                Si[l] = p;
                Si[16 + l] = e;
                o0[l] += qi * p;
                o1[l] += qi * e;
                if (next) {
                    n0[l] += ci * p;
                    n1[l] += ci * e;
                }
            }
        }
        for (int l = 0; l < 16; l++) {
            ot[l] = o0[l];
            ot[16 + l] = o1[l];
            if (next) {
                y0[l] = n0[l];
                y1[l] = n1[l];
            }
        }
    }
    for (int l = 0; l < 16; l++) {
        y[l] = y0[l];
        y[16 + l] = y1[l];
    }
}

// The same for a narrower last tile (w < LA_REC_W columns), accumulators in memory.
LA_REC_INLINE void dp_narrow(const la_rec_task * c, int64_t t0, int64_t t1, float * restrict S,
                             int64_t ld, float * restrict y) {
    const la_dp_args * x = c->x;
    const la_rec_fbufs * F = c->F;
    const int64_t K = c->K, V = c->V, w = c->w;
    const bool gated = x->gk != NULL;
    const float s = x->scale;
    float o[LA_REC_W], nx[LA_REC_W];  // (w) o_t, the next a^T S
    for (int64_t t = t0; t < t1; t++) {
        const int64_t r = t * c->nh + c->h;
        const bool next = t + 1 < c->eos;
        const float * restrict qt = x->q + r * K, * restrict kt = x->k + r * K;
        const float * restrict bt = x->b + r * K, * restrict vt = x->v + r * V + c->j0;
        const float * restrict d = F->db + (t - c->tb) * K;
        const float * restrict an = F->cb + (t + 1 - c->tb) * K;
        float * restrict ot = x->o + r * V + c->j0;
        for (int64_t j = 0; j < w; j++) o[j] = nx[j] = 0.0f;
        for (int64_t i = 0; i < K; i++) {
            const float di = gated ? d[i] : 1.0f, bi = bt[i], ki = kt[i], qi = s * qt[i];
            const float ci = next ? an[i] : 0.0f;
            float * restrict Si = S + i * ld;
            for (int64_t j = 0; j < w; j++) {
                const float sij = di * Si[j] + (bi * y[j] + ki * vt[j]);
                Si[j] = sij;
                o[j] += qi * sij;
                nx[j] += ci * sij;
            }
        }
        for (int64_t j = 0; j < w; j++) {
            ot[j] = o[j];
            y[j] = nx[j];
        }
    }
}

// The tile hook (rec_tile.h).
LA_CLONES
static void dp_tile(const la_rec_task * c, int64_t t0, int64_t t1, float * S, int64_t ld,
                    float * r, const float * pf) {
    const la_dp_args * x = c->x;
    const la_rec_fbufs * F = c->F;
    if (c->w < LA_REC_W) {
        dp_narrow(c, t0, t1, S, ld, r);
        return;
    }
#define DP_FAST(GATED, NEXT, PF)                                                               \
    dp_fast(x, t0, t1, c->tb, c->h, S, ld, c->j0, GATED, NEXT, F->db, F->cb, r, PF)
    const bool next = t1 < c->eos;
    if (x->gk && next) DP_FAST(true, true, NULL);
    else if (x->gk) DP_FAST(true, false, pf);
    else if (next) DP_FAST(false, true, NULL);
    else DP_FAST(false, false, pf);
#undef DP_FAST
}

// ---------------------------------------------------------------------------------------------
// Backward

// The load hook (rec_tile.h): token t's rows, zero-padded to Kp: exp(gk_t) (ones without gk),
// a_t (as c_t), k_t, b_t.
LA_CLONES
static void dp_load(const la_rec_task * c, int64_t t) {
    const la_dp_args * x = c->x;
    const la_rec_bufs * B = c->B;
    const int64_t K = c->K, Kp = B->Kp, row = (t * c->nh + c->h) * K;
    const int64_t o = la_rec_seg_row(c, t) * Kp;
    float * restrict d = B->seg[LA_REC_SEG_D] + o;
    la_rec_pad_row(B->seg[DP_SEG_K] + o, x->k + row, K, Kp);
    la_rec_pad_row(B->seg[LA_REC_SEG_C] + o, x->a + row, K, Kp);
    la_rec_pad_row(B->seg[DP_SEG_B] + o, x->b + row, K, Kp);
    if (x->gk) la_expf_vec(d, x->gk + row, K);
    else
        for (int64_t i = 0; i < K; i++) d[i] = 1.0f;
    for (int64_t i = K; i < Kp; i++) d[i] = 0.0f;
}

// One token on a column-major tile, src -> dst: with y = a^T S_{t-1} (w) on entry,
// S_t = D S_{t-1} + b y^T + k v^T; with `next`, the next token's a'^T S_t in y.
LA_REC_INLINE void dp_step_cols(int64_t w, int64_t Kp, const float * restrict src,
                                float * restrict dst, const float * restrict d,
                                const float * restrict k, const float * restrict b,
                                const float * restrict an, const float * restrict v,
                                float * restrict y, const bool gated, const bool next) {
    for (int64_t j = 0; j < w; j++) {
        const float * restrict Sj = src + j * Kp;
        float * restrict Dj = dst + j * Kp;
        const float yj = y[j], vj = v[j];
        float acc[16] = { 0 };
        for (int64_t i0 = 0; i0 < Kp; i0 += 16)
            for (int l = 0; l < 16; l++) {
                const int64_t i = i0 + l;
                const float s = (gated ? d[i] * Sj[i] : Sj[i]) + (yj * b[i] + vj * k[i]);
                Dj[i] = s;
                if (next) acc[l] += an[i] * s;
            }
        if (next) y[j] = la_rec_fold16(acc);
    }
}

// The step of la_rec_replay (rec_tile.h).
LA_REC_INLINE void dp_step(const la_rec_task * c, int64_t t, const float * src, float * dst,
                           float * r, bool next) {
    const la_dp_args * x = c->x;
    const la_rec_bufs * B = c->B;
    const int64_t Kp = B->Kp, k = la_rec_seg_row(c, t), w = c->w;
    const float * d = B->seg[LA_REC_SEG_D] + k * Kp, * kk = B->seg[DP_SEG_K] + k * Kp;
    const float * b = B->seg[DP_SEG_B] + k * Kp, * an = B->seg[LA_REC_SEG_C] + (k + 1) * Kp;
    const float * v = x->v + (t * c->nh + c->h) * c->V + c->j0;
    const bool gated = x->gk != NULL;
    if (gated && next) dp_step_cols(w, Kp, src, dst, d, kk, b, an, v, r, true, true);
    else if (gated) dp_step_cols(w, Kp, src, dst, d, kk, b, an, v, r, true, false);
    else if (next) dp_step_cols(w, Kp, src, dst, d, kk, b, an, v, r, false, true);
    else dp_step_cols(w, Kp, src, dst, d, kk, b, an, v, r, false, false);
}

// The replay hook (rec_tile.h).
LA_CLONES
static void dp_replay(const la_rec_task * c, int64_t seg, float * S, bool keep) {
    la_rec_replay(c, seg, S, keep, dp_step);
}

// Reverse step (ALGORITHMS.md 2.1) of NC = 1 or 2 adjacent columns (0 and 1) at one token:
// S0, S1 = S_{t-1} columns (Kp); G0, G1 = dL/dS_t columns in, dL/dS_{t-1} out; c = s do_t,
// y = (a^T S_{t-1}), v = v_t of the columns. Adds their terms of dq, dk, da, db, dgk to the
// (Kp) accumulators in one pass for both columns; dv receives dv_t of the columns. With NC = 1
// column 1 is not touched. Every pointer is a parameter so that restrict reaches the
// vectoriser.
LA_REC_INLINE void dp_rev_cols(int64_t Kp, const int NC, const float * restrict S0,
                               const float * restrict S1, float * restrict G0,
                               float * restrict G1, const float * restrict d,
                               const float * restrict k, const float * restrict a,
                               const float * restrict b, const float * restrict q,
                               float * restrict dqa, float * restrict dka, float * restrict daa,
                               float * restrict dba, float * restrict dga, float c0, float c1,
                               float y0, float y1, float v0, float v1, float * restrict dv,
                               const bool gated) {
    // G += s q do^T ; dq += s S_t do ; dk += G v ; db += G y ; dgk += G o D S_{t-1} ;
    // dv = G^T k ; z = G^T b
    float av0[16] = { 0 }, az0[16] = { 0 }, av1[16] = { 0 }, az1[16] = { 0 };
    for (int64_t i0 = 0; i0 < Kp; i0 += 16)
        for (int l = 0; l < 16; l++) {
            const int64_t i = i0 + l;
            const float p0 = gated ? d[i] * S0[i] : S0[i];
            const float g0 = G0[i] + c0 * q[i];
            G0[i] = g0;
            float dq = c0 * (p0 + y0 * b[i] + v0 * k[i]), dk = v0 * g0, db = y0 * g0;
            float dg = g0 * p0;
            av0[l] += g0 * k[i];
            az0[l] += g0 * b[i];
            if (NC == 2) {
                const float p1 = gated ? d[i] * S1[i] : S1[i];
                const float g1 = G1[i] + c1 * q[i];
                G1[i] = g1;
                dq += c1 * (p1 + y1 * b[i] + v1 * k[i]);
                dk += v1 * g1;
                db += y1 * g1;
                dg += g1 * p1;
                av1[l] += g1 * k[i];
                az1[l] += g1 * b[i];
            }
            dqa[i] += dq;
            dka[i] += dk;
            dba[i] += db;
            if (gated) dga[i] += dg;
        }
    const float z0 = la_rec_fold16(az0), z1 = NC == 2 ? la_rec_fold16(az1) : 0.0f;
    dv[0] = la_rec_fold16(av0);
    if (NC == 2) dv[1] = la_rec_fold16(av1);
    // da += S_{t-1} z ; G <- D G + a z
    for (int64_t i = 0; i < Kp; i++) {
        float da = z0 * S0[i];
        G0[i] = (gated ? d[i] * G0[i] : G0[i]) + z0 * a[i];
        if (NC == 2) {
            da += z1 * S1[i];
            G1[i] = (gated ? d[i] * G1[i] : G1[i]) + z1 * a[i];
        }
        daa[i] += da;
    }
}

// The seg_bwd hook (rec_tile.h).
LA_CLONES
static void dp_seg_bwd(const la_rec_task * c, int64_t seg, float * restrict G) {
    const la_dp_args * x = c->x;
    const la_rec_bufs * B = c->B;
    const int64_t K = c->K, V = c->V, Kp = B->Kp, w = c->w;
    const int64_t t0 = c->bos + seg * LA_REC_SEG, L = LA_MIN(LA_REC_SEG, c->eos - t0);
    const bool gated = x->gk != NULL;
    const float s = x->scale;
    float * const * acc = B->acc;
    for (int64_t k = L - 1; k >= 0; k--) {
        const int64_t t = t0 + k, row = t * c->nh + c->h;
        const float * Sp = B->Ss + k * w * Kp, * y = B->rseg + k * LA_REC_W;
        const float * dot = x->dout + row * V + c->j0, * vt = x->v + row * V + c->j0;
        float * dvt = x->dv + row * V + c->j0;
        la_rec_tok_begin(c, x->q + row * K);
        const float * d = B->seg[LA_REC_SEG_D] + k * Kp, * kk = B->seg[DP_SEG_K] + k * Kp;
        const float * a = B->seg[LA_REC_SEG_C] + k * Kp, * b = B->seg[DP_SEG_B] + k * Kp;
        for (int64_t j = 0; j < w; j += 2) {
            const float * S0 = Sp + j * Kp;
            float * G0 = G + j * Kp;
            const float c0 = s * dot[j];
            if (j + 1 < w) {  // two columns
                const float c1 = s * dot[j + 1];
#define DP_REV2(GATED)                                                                         \
    dp_rev_cols(Kp, 2, S0, S0 + Kp, G0, G0 + Kp, d, kk, a, b, B->q, acc[DP_DQ], acc[DP_DK],   \
                acc[DP_DA], acc[DP_DB], acc[DP_DG], c0, c1, y[j], y[j + 1], vt[j], vt[j + 1],  \
                dvt + j, GATED)
                if (gated) DP_REV2(true);
                else DP_REV2(false);
#undef DP_REV2
            } else {
#define DP_REV1(GATED)                                                                         \
    dp_rev_cols(Kp, 1, S0, NULL, G0, NULL, d, kk, a, b, B->q, acc[DP_DQ], acc[DP_DK],         \
                acc[DP_DA], acc[DP_DB], acc[DP_DG], c0, 0.0f, y[j], 0.0f, vt[j], 0.0f,         \
                dvt + j, GATED)
                if (gated) DP_REV1(true);
                else DP_REV1(false);
#undef DP_REV1
            }
        }
        la_rec_tok_end(c, t);
    }
}

// ---------------------------------------------------------------------------------------------
// Form entry points (delta.h)

static const la_rec_op dp_op = {
    .nseg = DP_NSEG, .nacc = DP_NACC,
    .coef = dp_coef, .tile = dp_tile,                         // forward
    .load = dp_load, .replay = dp_replay, .seg_bwd = dp_seg_bwd,  // backward
};

size_t la_dp_rec_bytes(const la_dp_args * x, bool backward) {
    return la_rec_bytes(&dp_op, x->sh.K, x->sh.V, x->maxlen, backward);
}

void la_dp_rec_task(const la_dp_args * x, int64_t n, int64_t h, void * ws, bool backward) {
    const int64_t K = x->sh.K;
    la_rec_task c;
    la_rec_task_init(&c, &dp_op, x, x->sh, x->opts, x->N, x->sh.H, n, h, h, x->maxlen);
    if (!backward) {
        la_rec_fwd(&c, x->init, x->final, ws);
        return;
    }
    c.out[DP_DQ] = (la_rec_out){ x->dq, K };
    c.out[DP_DK] = (la_rec_out){ x->dk, K };
    c.out[DP_DA] = (la_rec_out){ x->da, K };
    c.out[DP_DB] = (la_rec_out){ x->db, K };
    c.out[DP_DG] = (la_rec_out){ x->dgk, x->gk ? K : 0 };
    c.nout = DP_NACC;
    la_rec_bwd(&c, x->init, x->dfinal, x->dinit, ws);
}
