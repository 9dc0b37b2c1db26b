// delta_rule, gated_delta_rule and kda: the recurrent form of the dn engine (OPS.md 2.6-2.8,
// ALGORITHMS.md 2.2, 2.4, 2.5), on the effective inputs of delta.h:
//
//   P = D_t S_{t-1},  D_t = I | exp(g_t) I | Diag(exp(g_t))      (gate NONE | SCALAR | CHANNEL)
//   u_t = beta_t (v_t - P^T k_t) ;  S_t = P + k_t u_t^T ;  o_t = s S_t^T q_t
//
// Column tiling (ALGORITHMS.md 2.5): every value column of S evolves on its own (P^T k, the
// rank-one update and S^T q each touch only their column), in the forward and in the adjoint,
// so the state is processed in tiles of DN_W value columns, each kept in L1 while it runs a
// stretch of tokens; quantities that sum over V (dq, dk, dg, dbeta) add up across tiles.
//
// Forward: blocks of DN_TB tokens, tiles inside. The block's gate exponentials and row
// coefficients exp(g) o k are computed once for all tiles, and its input rows stay in L2 while
// the tiles pass over them. A full tile (K rows of DN_W = 2 x 16 floats) is copied to a
// contiguous buffer for the block (in place its rows sit V floats apart and share a few L1
// sets) and runs one fused sweep over its rows per token: S_t = P + k u^T, o_t = s S_t^T q_t and
// the next token's P^T k = sum_i exp(g'_i) k'_i S_t[i, :] from the same fresh rows, so each row
// is loaded and stored once per token, with the 16-lane accumulators in registers and no
// horizontal sum. Short calls (a decode step) work in place, in the final_state slot when the
// caller wants it, so the state passes through memory once.
//
// Backward: the reverse-time adjoint of ALGORITHMS.md 2.2, G = dL/dS_t:
//
//   G += s q_t do_t^T ;  dq_t = s S_t do_t ;  du = G^T k_t ;  dv_t = beta_t du
//   dk_t = G u_t - beta_t P du ;  dbeta_t = du . (v_t - P^T k_t) ;  dP = G - beta_t k_t du^T
//   dg_t = sum_j dP o P (row sums -> (K) for CHANNEL, total for SCALAR) ;  G <- D_t dP
//
// Its state is column-major, (V, Kp) with Kp = K rounded up to 16 and zero padding rows: the
// reductions over K (du, and the replayed P^T k) are then one per column, while dq, dk and dg,
// which reduce over V, are K-vector accumulations. S_{t-1} is never obtained by inverting a
// transition (ALGORITHMS.md 2.4): a forward sweep keeps la_ckpt checkpoints at the boundaries
// of segments of DN_SEG tokens (sqrt-spaced for long sequences: O(sqrt(T)) states per task),
// and the reverse sweep takes the segments last to first; for each, tile by tile, it replays
// the segment from its boundary state keeping the state before every token, then runs the
// adjoint over the segment's tokens in reverse. Forward work in the backward: two tile steps
// per token, three for sequences of more than LA_CKPT_ALL segments.
//
// Dimensions: B, T, H, HV, K, V, N as in OPS.md; Kp = K rounded up to 16; w <= DN_W the columns
// of one tile. Value head hv reads q/k head hv / (HV/H); dq, dk are per value head.
#include "delta.h"
#include "vexp.h"

#include <string.h>

#define DN_W   32  // value columns per tile: 128 x 32 floats = 16 KiB, half a 32 KiB L1
#define DN_SEG 16  // tokens per backward segment, the unit of la_ckpt
#define DN_TB  64  // tokens per forward block (see dn_fwd_task)
#define DN_PF  8   // prefetch distance in tokens (dn_fwd_coef)
#define DN_COPY_MIN 4  // tokens from which a forward block works on a contiguous tile copy

#define DN_INLINE static inline __attribute__((always_inline))

static inline int64_t dn_pad16(int64_t n) { return (n + 15) & ~(int64_t)15; }

// a[0] + ... + a[15], folded pairwise: a fixed order that compiles to a few vector adds.
DN_INLINE float dn_fold16(const float * a) {
    float b[8], c[4];
    for (int l = 0; l < 8; l++) b[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++) c[l] = b[l] + b[l + 4];
    return (c[0] + c[2]) + (c[1] + c[3]);
}

// sum_i x_i y_i for n a multiple of 16, in 16 lanes.
DN_INLINE float dn_dot16(const float * restrict x, const float * restrict y, int64_t n) {
    float acc[16] = { 0 };
    for (int64_t i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[i + l] * y[i + l];
    return dn_fold16(acc);
}

// ---------------------------------------------------------------------------------------------
// Forward

// Row coefficients of tokens [t0, t1) for P^T k = sum_i c_i S_{t-1}[i, :]: c = exp(g_t) o k_t
// (rows of cb, (K) each), the decays exp(g_t) (rows of db for CHANNEL, entries of dsb for
// SCALAR, ones otherwise). A row at t = eos (past the sequence) is zero: the last token has no
// successor whose P^T k the fused sweep could accumulate. Also prefetches the rows of q, k, v
// and g DN_PF tokens ahead, so the block's first tile finds them in cache.
LA_CLONES
static void dn_fwd_coef(const la_dn_args * x, int64_t t0, int64_t t1, int64_t eos, int64_t hv,
                        float * restrict db, float * restrict cb, float * restrict dsb) {
    const int64_t K = x->sh.K, HV = x->sh.HV, H = x->sh.H, hq = hv / (HV / H);
    for (int64_t t = t0; t < t1; t++) {
        float * restrict d = db + (t - t0) * K, * restrict c = cb + (t - t0) * K;
        const int64_t rv = t * HV + hv;
        if (t + DN_PF < eos) {  // rows H*K floats apart, a page or so: beyond the prefetcher
            const int64_t tp = t + DN_PF;
            la_prefetch_rows(x->q + (tp * H + hq) * K, 0, 1, K);
            la_prefetch_rows(x->k + (tp * H + hq) * K, 0, 1, K);
            la_prefetch_rows(x->v + (tp * HV + hv) * x->sh.V, 0, 1, x->sh.V);
            if (x->gate == LA_DN_GATE_CHANNEL) la_prefetch_rows(x->g + (tp * HV + hv) * K, 0, 1, K);
        }
        if (t == eos) {
            for (int64_t i = 0; i < K; i++) c[i] = 0.0f;
            dsb[t - t0] = 1.0f;
            continue;
        }
        const float * restrict kt = x->k + (t * H + hq) * K;
        float ds = 1.0f;
        if (x->gate == LA_DN_GATE_SCALAR) ds = la_expf(x->g[rv]);
        dsb[t - t0] = ds;
        if (x->gate == LA_DN_GATE_CHANNEL) {
            la_expf_vec(d, x->g + rv * K, K);
            for (int64_t i = 0; i < K; i++) c[i] = d[i] * kt[i];
        } else {
            for (int64_t i = 0; i < K; i++) c[i] = ds * kt[i];
        }
    }
}

// pk (w) = sum_i c_i S[i, :] over the K rows of a tile (row stride ld). Four rows per step:
// the accumulator lives in memory here, and this spaces out its round trips.
DN_INLINE void dn_rows_dot(int64_t K, int64_t ld, const int64_t w, const float * restrict S,
                           const float * restrict c, float * restrict pk) {
    for (int64_t j = 0; j < w; j++) pk[j] = 0.0f;
    int64_t i = 0;
    for (; i + 4 <= K; i += 4) {
        const float * restrict S0 = S + i * ld, * restrict S1 = S0 + ld, * restrict S2 = S1 + ld;
        const float * restrict S3 = S2 + ld;
        for (int64_t j = 0; j < w; j++)
            pk[j] += (c[i] * S0[j] + c[i + 1] * S1[j]) + (c[i + 2] * S2[j] + c[i + 3] * S3[j]);
    }
    for (; i < K; i++)
        for (int64_t j = 0; j < w; j++) pk[j] += c[i] * S[i * ld + j];
}

// Tokens [t0, t1) of one full tile of DN_W = 2 x 16 columns (from j0 of value head hv):
// S (K, DN_W) with row stride ld, updated in place; db, cb, dsb from dn_fwd_coef for tokens
// [t0, t1 + 1); pk (DN_W) holds P_{t0}^T k_{t0} on entry and P_{t1}^T k_{t1} on exit. One sweep
// over the rows per token updates S_t = P + k u^T, accumulates o_t = s S_t^T q_t and, from
// the same fresh rows, the next token's P^T k = sum_i c'_i S_t[i, :]: each row is loaded and
// stored once per token and the 16-lane accumulators stay in registers. `gate` is a constant
// at every call site.
DN_INLINE void dn_fwd_fast(const la_dn_args * x, int64_t t0, int64_t t1, int64_t hv,
                           float * restrict S, int64_t ld, int64_t j0, const int gate,
                           const float * restrict db, const float * restrict cb,
                           const float * restrict dsb, float * restrict pk) {
    const int64_t H = x->sh.H, HV = x->sh.HV, K = x->sh.K, V = x->sh.V, hq = hv / (HV / H);
    const float s = x->scale;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t rq = t * H + hq, rv = t * HV + hv;
        const float * restrict qt = x->q + rq * K, * restrict kt = x->k + rq * K;
        const float * restrict vt = x->v + rv * V + j0;
        const float * restrict dc = db + (t - t0) * K, * restrict cn = cb + (t + 1 - t0) * K;
        float * restrict ot = x->o + rv * V + j0;
        const float bt = x->beta[rv], ds = dsb[t - t0];
        float u0[16], u1[16], o0[16], o1[16], n0[16], n1[16];
        for (int l = 0; l < 16; l++) {
            u0[l] = bt * (vt[l] - pk[l]);
            u1[l] = bt * (vt[16 + l] - pk[16 + l]);
            o0[l] = o1[l] = n0[l] = n1[l] = 0.0f;
        }
        for (int64_t i = 0; i < K; i++) {
            const float di = gate == LA_DN_GATE_CHANNEL ? dc[i] : ds;
            const float ki = kt[i], qi = s * qt[i], ci = cn[i];
            float * restrict Si = S + i * ld;
            for (int l = 0; l < 16; l++) {
                const float pa = gate == LA_DN_GATE_NONE ? Si[l] : di * Si[l];
                const float pb = gate == LA_DN_GATE_NONE ? Si[16 + l] : di * Si[16 + l];
                const float a = pa + ki * u0[l], b = pb + ki * u1[l];
                Si[l] = a;
                Si[16 + l] = b;
                o0[l] += qi * a;
                o1[l] += qi * b;
                n0[l] += ci * a;
                n1[l] += ci * b;
            }
        }
        for (int l = 0; l < 16; l++) {
            ot[l] = o0[l];
            ot[16 + l] = o1[l];
            pk[l] = n0[l];
            pk[16 + l] = n1[l];
        }
    }
}

// The same for a narrower last tile (w < DN_W columns): two sweeps per token, P^T k first.
DN_INLINE void dn_fwd_narrow(const la_dn_args * x, int64_t t0, int64_t t1, int64_t hv,
                             float * restrict S, int64_t j0, int64_t w, const float * restrict db,
                             const float * restrict cb, const float * restrict dsb) {
    const int64_t H = x->sh.H, HV = x->sh.HV, K = x->sh.K, V = x->sh.V, hq = hv / (HV / H);
    const float s = x->scale;
    float pk[DN_W], u[DN_W], o[DN_W];  // (w) P^T k_t, u_t, o_t
    for (int64_t t = t0; t < t1; t++) {
        const int64_t rq = t * H + hq, rv = t * HV + hv;
        const float * restrict qt = x->q + rq * K, * restrict kt = x->k + rq * K;
        const float * restrict vt = x->v + rv * V + j0;
        const float * restrict d = db + (t - t0) * K;
        float * restrict ot = x->o + rv * V + j0;
        const float bt = x->beta[rv], ds = dsb[t - t0];
        dn_rows_dot(K, V, w, S, cb + (t - t0) * K, pk);
        for (int64_t j = 0; j < w; j++) {
            u[j] = bt * (vt[j] - pk[j]);
            o[j] = 0.0f;
        }
        for (int64_t i = 0; i < K; i++) {
            const float di = x->gate == LA_DN_GATE_CHANNEL ? d[i] : ds, ki = kt[i], qi = s * qt[i];
            float * restrict Si = S + i * V;
            for (int64_t j = 0; j < w; j++) {
                const float sij = di * Si[j] + ki * u[j];
                Si[j] = sij;
                o[j] += qi * sij;
            }
        }
        for (int64_t j = 0; j < w; j++) ot[j] = o[j];
    }
}

// Tokens [t0, t1) of the tile at column j0 of the state S (K, V) (see dn_fwd_fast); first: t0
// is the sequence's first token, whose P^T k no earlier sweep accumulated. For a block of
// several tokens the tile is copied to tb (K, DN_W), contiguous: in place, its rows sit V floats
// apart and, for V a multiple of 128, fall into a fraction of L1's sets (a 128 x 32 tile at
// V = 128 uses 16 of 64), so it would not stay in L1.
LA_CLONES
static void dn_fwd_tile(const la_dn_args * x, int64_t t0, int64_t t1, int64_t hv, float * S,
                        int64_t j0, int64_t w, const float * db, const float * cb,
                        const float * dsb, float * pk, float * tb, bool first) {
    const int64_t K = x->sh.K, V = x->sh.V;
    if (w < DN_W) {
        dn_fwd_narrow(x, t0, t1, hv, S, j0, w, db, cb, dsb);
        return;
    }
    const bool copy = t1 - t0 >= DN_COPY_MIN;
    if (copy)
        for (int64_t i = 0; i < K; i++) memcpy(tb + i * DN_W, S + i * V, DN_W * sizeof(float));
    float * St = copy ? tb : S;
    const int64_t ld = copy ? DN_W : V;
    if (first) dn_rows_dot(K, ld, DN_W, St, cb, pk);
    if (x->gate == LA_DN_GATE_NONE)
        dn_fwd_fast(x, t0, t1, hv, St, ld, j0, LA_DN_GATE_NONE, db, cb, dsb, pk);
    else if (x->gate == LA_DN_GATE_SCALAR)
        dn_fwd_fast(x, t0, t1, hv, St, ld, j0, LA_DN_GATE_SCALAR, db, cb, dsb, pk);
    else
        dn_fwd_fast(x, t0, t1, hv, St, ld, j0, LA_DN_GATE_CHANNEL, db, cb, dsb, pk);
    if (copy)
        for (int64_t i = 0; i < K; i++) memcpy(S + i * V, tb + i * DN_W, DN_W * sizeof(float));
}

// Forward scratch: S (K, V) when final_state is not wanted; db, cb (DN_TB + 1, K); dsb
// (DN_TB + 1); pk (V) each tile's P^T k carried across blocks; tb (K, DN_W) the tile in hand.
typedef struct dn_fbufs {
    float * S, * db, * cb, * dsb, * pk, * tb;
} dn_fbufs;

static void dn_flayout(const la_dn_args * x, la_carver * cv, dn_fbufs * B) {
    const int64_t K = x->sh.K;
    B->S = la_carve(cv, (size_t)(K * x->sh.V) * 4);
    B->db = la_carve(cv, (size_t)((DN_TB + 1) * K) * 4);
    B->cb = la_carve(cv, (size_t)((DN_TB + 1) * K) * 4);
    B->dsb = la_carve(cv, (size_t)(DN_TB + 1) * 4);
    B->pk = la_carve(cv, (size_t)x->sh.V * 4);
    B->tb = la_carve(cv, (size_t)(K * DN_W) * 4);
}

// Blocks of DN_TB tokens, tiles inside: a block's q, k, v rows and gate coefficients are
// computed or fetched once and reused by every tile from L2, while each tile still runs all
// of the block's tokens in L1.
static void dn_fwd_task(const la_dn_args * x, int64_t n, int64_t hv, void * ws) {
    const int64_t K = x->sh.K, V = x->sh.V, KV = K * V;
    la_carver cv = { (char *)ws, 0 };
    dn_fbufs B;
    dn_flayout(x, &cv, &B);
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    float * S = la_state_begin(B.S, x->final, x->init, n * x->sh.HV + hv, KV);
    for (int64_t t0 = bos; t0 < eos; t0 += DN_TB) {
        const int64_t t1 = LA_MIN(t0 + DN_TB, eos);
        dn_fwd_coef(x, t0, t1 + 1, eos, hv, B.db, B.cb, B.dsb);
        for (int64_t j0 = 0; j0 < V; j0 += DN_W)
            dn_fwd_tile(x, t0, t1, hv, S + j0, j0, LA_MIN(DN_W, V - j0), B.db, B.cb, B.dsb,
                        B.pk + j0, B.tb, t0 == bos);
    }
}

// ---------------------------------------------------------------------------------------------
// Backward

// Per-task scratch of the backward (one layout for la_dn_rec_bytes and the task). The state of
// the backward is column-major, (V, Kp): tile j0 is the contiguous slice of w columns at j0 Kp.
typedef struct dn_bufs {
    float * ckpt;          // (la_ckpt_count, V, Kp) segment-boundary checkpoints
    float * grp;           // (M, V, Kp) boundary states of the segment group in hand
    float * S, * G;        // (V, Kp) running state; dL/dS_t
    float * Ss;            // (DN_SEG + 1, DN_W, Kp) one tile's states before each token of a
                           //   segment
    float * tmp;           // (DN_W, Kp) ping-pong partner of a tile advanced in place
    float * dseg, * kseg, * cseg;  // (DN_SEG, Kp) the segment's exp(g_t), k_t, exp(g_t) o k_t
    float * eseg;          // (DN_SEG, DN_W) one tile's v_t - P^T k_t over the segment
    float * q;             // (Kp) q_t, padded
    float * dqa, * dka, * dga;  // (Kp) one token's dq, dk, dg over a tile's columns
    int64_t Kp, M, segmax;
} dn_bufs;

static void dn_layout(const la_dn_args * x, la_carver * cv, dn_bufs * B) {
    const int64_t Kp = dn_pad16(x->sh.K), TS = DN_W * Kp, SV = x->sh.V * Kp;
    B->Kp = Kp;
    B->segmax = (x->maxlen + DN_SEG - 1) / DN_SEG;
    B->M = la_ckpt_group(B->segmax);
    B->ckpt = la_carve(cv, (size_t)(la_ckpt_count(B->segmax, B->M) * SV) * 4);
    B->grp = la_carve(cv, (size_t)(B->M * SV) * 4);
    B->S = la_carve(cv, (size_t)SV * 4);
    B->G = la_carve(cv, (size_t)SV * 4);
    B->Ss = la_carve(cv, (size_t)((DN_SEG + 1) * TS) * 4);
    B->tmp = la_carve(cv, (size_t)TS * 4);
    B->dseg = la_carve(cv, (size_t)(DN_SEG * Kp) * 4);
    B->kseg = la_carve(cv, (size_t)(DN_SEG * Kp) * 4);
    B->cseg = la_carve(cv, (size_t)(DN_SEG * Kp) * 4);
    B->eseg = la_carve(cv, (size_t)(DN_SEG * DN_W) * 4);
    float ** vec[] = { &B->q, &B->dqa, &B->dka, &B->dga };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) *vec[i] = la_carve(cv, (size_t)Kp * 4);
}

// The backward of (sequence [bos, eos), value head hv); j0, w: the tile in hand.
typedef struct dn_tile {
    const la_dn_args * x;
    const dn_bufs *    B;
    int64_t            bos, eos, hv, hq, j0, w;
} dn_tile;

// T (V, Kp) <- the row-major (K, V) matrix M transposed and zero-padded; zeros when M is NULL.
static void dn_cm_load(float * restrict T, const float * restrict M, int64_t K, int64_t V,
                       int64_t Kp) {
    memset(T, 0, (size_t)(V * Kp) * sizeof(float));
    if (M)
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) T[j * Kp + i] = M[i * V + j];
}

static void dn_cm_store(float * restrict M, const float * restrict T, int64_t K, int64_t V,
                        int64_t Kp) {
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) M[i * V + j] = T[j * Kp + i];
}

// Token t's decays d = exp(g_t) (ones without a gate) and key, zero-padded to Kp, and
// c = d o k.
DN_INLINE void dn_load_tok(const dn_tile * c, int64_t t, float * restrict d,
                           float * restrict k, float * restrict ck) {
    const la_dn_args * x = c->x;
    const int64_t K = x->sh.K, Kp = c->B->Kp, rv = t * x->sh.HV + c->hv;
    const float * kt = x->k + (t * x->sh.H + c->hq) * K;
    for (int64_t i = 0; i < K; i++) k[i] = kt[i];
    if (x->gate == LA_DN_GATE_CHANNEL) la_expf_vec(d, x->g + rv * K, K);
    else {
        const float e = x->gate == LA_DN_GATE_SCALAR ? la_expf(x->g[rv]) : 1.0f;
        for (int64_t i = 0; i < K; i++) d[i] = e;
    }
    for (int64_t i = K; i < Kp; i++) k[i] = d[i] = 0.0f;
    for (int64_t i = 0; i < Kp; i++) ck[i] = d[i] * k[i];
}

// One token on a column-major tile, src -> dst (distinct): with pk = P^T k (w) on entry,
// e = v - P^T k, S_t = P + beta k e^T; with `next`, the same sweep leaves the next token's
// P^T k = S_t^T c' in pk (c' = its exp(g) o k), so each column is read and written once.
DN_INLINE void dn_step(int64_t w, int64_t Kp, const float * restrict src, float * restrict dst,
                       const float * restrict d, const float * restrict k,
                       const float * restrict cn, const float * restrict v, float bt,
                       float * restrict pk, float * restrict e, const bool gated,
                       const bool next) {
    for (int64_t j = 0; j < w; j++) {
        const float * restrict Sj = src + j * Kp;
        float * restrict Dj = dst + j * Kp;
        const float ej = v[j] - pk[j], uj = bt * ej;
        float acc[16] = { 0 };
        e[j] = ej;
        for (int64_t i0 = 0; i0 < Kp; i0 += 16)
            for (int l = 0; l < 16; l++) {
                const int64_t i = i0 + l;
                const float s = (gated ? d[i] * Sj[i] : Sj[i]) + uj * k[i];
                Dj[i] = s;
                if (next) acc[l] += cn[i] * s;
            }
        if (next) pk[j] = dn_fold16(acc);
    }
}

// The operands of segment `seg` for every tile: dseg, kseg, cseg.
LA_CLONES
static void dn_seg_load(const dn_tile * c, int64_t seg) {
    const dn_bufs * B = c->B;
    const int64_t Kp = B->Kp, t0 = c->bos + seg * DN_SEG, L = LA_MIN(DN_SEG, c->eos - t0);
    for (int64_t r = 0; r < L; r++)
        dn_load_tok(c, t0 + r, B->dseg + r * Kp, B->kseg + r * Kp, B->cseg + r * Kp);
}

// Advances the tile in hand, S (w, Kp), over segment `seg` (operands from dn_seg_load). keep: S
// is B->Ss, whose slot r receives the state before token r (slot 0 holds the segment's start),
// and the tile's v - P^T k go to eseg; otherwise S is advanced in place (ping-ponging with tmp).
LA_CLONES
static void dn_seg_fwd(const dn_tile * c, int64_t seg, float * S, bool keep) {
    const la_dn_args * x = c->x;
    const dn_bufs * B = c->B;
    const int64_t Kp = B->Kp, w = c->w, TS = w * Kp, V = x->sh.V, HV = x->sh.HV;
    const int64_t t0 = c->bos + seg * DN_SEG, L = LA_MIN(DN_SEG, c->eos - t0);
    const bool gated = x->gate != LA_DN_GATE_NONE;
    float pk[DN_W], e[DN_W];  // (w) P^T k of the token in hand; v - P^T k when not kept
    for (int64_t j = 0; j < w; j++) pk[j] = dn_dot16(B->cseg, S + j * Kp, Kp);
    float * src = S;
    for (int64_t r = 0; r < L; r++) {
        const int64_t t = t0 + r, rv = t * HV + c->hv;
        const float * d = B->dseg + r * Kp, * k = B->kseg + r * Kp, * cn = B->cseg + (r + 1) * Kp;
        float * er = keep ? B->eseg + r * DN_W : e;
        float * dst = keep ? S + (r + 1) * TS : src == S ? B->tmp : S;
        const float * v = x->v + rv * V + c->j0;
        const float bt = x->beta[rv];
        const bool next = r + 1 < L;
        if (gated && next) dn_step(w, Kp, src, dst, d, k, cn, v, bt, pk, er, true, true);
        else if (gated) dn_step(w, Kp, src, dst, d, k, cn, v, bt, pk, er, true, false);
        else if (next) dn_step(w, Kp, src, dst, d, k, cn, v, bt, pk, er, false, true);
        else dn_step(w, Kp, src, dst, d, k, cn, v, bt, pk, er, false, false);
        src = dst;
    }
    if (!keep && src != S) memcpy(S, src, (size_t)TS * sizeof(float));
}

// la_ckpt's step: the state S (V, Kp) after segment `seg`, tile by tile (each tile stays in
// L1 for the segment's tokens).
static void dn_ckpt_step(const void * ctx, int64_t seg, float * S) {
    dn_tile c = *(const dn_tile *)ctx;
    const int64_t V = c.x->sh.V;
    dn_seg_load(&c, seg);
    for (c.j0 = 0; c.j0 < V; c.j0 += DN_W) {
        c.w = LA_MIN(DN_W, V - c.j0);
        dn_seg_fwd(&c, seg, S + c.j0 * c.B->Kp, false);
    }
}

// Reverse step of one column j (ALGORITHMS.md 2.2) at one token: Sp = S_{t-1}[:, j] (Kp),
// G = dL/dS_t[:, j] in, dL/dS_{t-1}[:, j] out; cq = s do_t[j], u = u_t[j]. Adds the column's
// terms of dq, dk, dg to dqa, dka, dga; returns du[j].
DN_INLINE float dn_rev_col(int64_t Kp, const float * restrict Sp, float * restrict G,
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
    const float du = dn_fold16(acc), bdu = bt * du;
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
DN_INLINE void dn_rev_col2(int64_t Kp, const float * restrict Sa, const float * restrict Sb,
                           float * restrict Ga, float * restrict Gb, const float * restrict d,
                           const float * restrict k, const float * restrict q,
                           float * restrict dqa, float * restrict dka, float * restrict dga,
                           float cqa, float cqb, float ua, float ub, float bt,
                           float * restrict du, const bool gated) {
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
    du[0] = dn_fold16(acca);
    du[1] = dn_fold16(accb);
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

// The reverse sweep over segment `seg`, whose states, decays, keys and v - P^T k dn_seg_fwd
// kept; G (w, Kp) enters as dL/dS after the segment and leaves as dL/dS before it.
LA_CLONES
static void dn_seg_bwd(const dn_tile * c, int64_t seg, float * restrict G) {
    const la_dn_args * x = c->x;
    const dn_bufs * B = c->B;
    const int64_t H = x->sh.H, HV = x->sh.HV, K = x->sh.K, V = x->sh.V, Kp = B->Kp, w = c->w;
    const int64_t t0 = c->bos + seg * DN_SEG, L = LA_MIN(DN_SEG, c->eos - t0);
    const bool gated = x->gate != LA_DN_GATE_NONE;
    const float s = x->scale;
    float * restrict q = B->q, * restrict dqa = B->dqa, * restrict dka = B->dka;
    float * restrict dga = B->dga;
    for (int64_t r = L - 1; r >= 0; r--) {
        const int64_t t = t0 + r, rq = t * H + c->hq, rv = t * HV + c->hv;
        const float * Sp = B->Ss + r * w * Kp, * d = B->dseg + r * Kp, * k = B->kseg + r * Kp;
        const float * e = B->eseg + r * DN_W;
        const float * dot = x->dout + rv * V + c->j0;
        float * dvt = x->dv + rv * V + c->j0;
        const float * qt = x->q + rq * K;
        const float bt = x->beta[rv];
        for (int64_t i = 0; i < K; i++) q[i] = qt[i];
        for (int64_t i = K; i < Kp; i++) q[i] = 0.0f;
        for (int64_t i = 0; i < Kp; i++) dqa[i] = dka[i] = dga[i] = 0.0f;
        float dbeta = 0.0f;
        int64_t j = 0;
        for (; j + 2 <= w; j += 2) {
            float du[2];
            const float * Sa = Sp + j * Kp;
            float * Ga = G + j * Kp;
            const float cqa = s * dot[j], cqb = s * dot[j + 1], ua = bt * e[j], ub = bt * e[j + 1];
#define DN_REV2(GATED)                                                                         \
    dn_rev_col2(Kp, Sa, Sa + Kp, Ga, Ga + Kp, d, k, q, dqa, dka, dga, cqa, cqb, ua, ub, bt, du, \
                GATED)
            if (gated) DN_REV2(true);
            else DN_REV2(false);
#undef DN_REV2
            dvt[j] = bt * du[0];
            dvt[j + 1] = bt * du[1];
            dbeta += du[0] * e[j] + du[1] * e[j + 1];
        }
        for (; j < w; j++) {
            const float cq = s * dot[j], u = bt * e[j];
            const float * Sj = Sp + j * Kp;
            float * Gj = G + j * Kp;
            const float du = gated
                                 ? dn_rev_col(Kp, Sj, Gj, d, k, q, dqa, dka, dga, cq, u, bt, true)
                                 : dn_rev_col(Kp, Sj, Gj, d, k, q, dqa, dka, dga, cq, u, bt, false);
            dvt[j] = bt * du;  // u = beta (v - P^T k)
            dbeta += du * e[j];
        }
        // Tiles add into the token's rows (zeroed by the task).
        float * dqt = x->dq + rv * K, * dkt = x->dk + rv * K;
        for (int64_t i = 0; i < K; i++) {
            dqt[i] += dqa[i];
            dkt[i] += dka[i];
        }
        x->dbeta[rv] += dbeta;
        if (x->gate == LA_DN_GATE_CHANNEL) {
            float * dgt = x->dg + rv * K;
            for (int64_t i = 0; i < K; i++) dgt[i] += dga[i];
        } else if (x->gate == LA_DN_GATE_SCALAR) {
            float lanes[16] = { 0 };
            for (int64_t i0 = 0; i0 < Kp; i0 += 16)
                for (int l = 0; l < 16; l++) lanes[l] += dga[i0 + l];
            x->dg[rv] += dn_fold16(lanes);
        }
    }
}

// Segments in reverse, tiles inside: a segment's input rows and the output rows the tiles add
// into stay in cache while every tile passes over them.
static void dn_bwd_task(const la_dn_args * x, int64_t n, int64_t hv, void * ws) {
    const int64_t H = x->sh.H, HV = x->sh.HV, K = x->sh.K, V = x->sh.V, KV = K * V;
    la_carver cv = { (char *)ws, 0 };
    dn_bufs B;
    dn_layout(x, &cv, &B);
    const int64_t Kp = B.Kp;
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    const int64_t nseg = (eos - bos + DN_SEG - 1) / DN_SEG, idx = n * HV + hv;
    dn_tile c = { x, &B, bos, eos, hv, hv / (HV / H), 0, 0 };
    la_ckpt ck = { B.ckpt, B.grp, B.M, nseg, V * Kp };
    dn_cm_load(B.S, x->init ? x->init + idx * KV : NULL, K, V, Kp);
    dn_cm_load(B.G, x->dfinal ? x->dfinal + idx * KV : NULL, K, V, Kp);
    la_ckpt_run(&ck, B.S, dn_ckpt_step, &c);  // the forward sweep: segment checkpoints
    for (int64_t seg = nseg - 1; seg >= 0; seg--) {
        const float * S0 = la_ckpt_state(&ck, seg, dn_ckpt_step, &c);
        const int64_t t0 = bos + seg * DN_SEG, t1 = LA_MIN(t0 + DN_SEG, eos);
        // Outputs that sum over value columns: zeroed here, then every tile adds.
        for (int64_t t = t0; t < t1; t++) {
            const int64_t rv = t * HV + hv;
            memset(x->dq + rv * K, 0, (size_t)K * sizeof(float));
            memset(x->dk + rv * K, 0, (size_t)K * sizeof(float));
            x->dbeta[rv] = 0.0f;
            if (x->gate == LA_DN_GATE_CHANNEL) memset(x->dg + rv * K, 0, (size_t)K * sizeof(float));
            else if (x->gate == LA_DN_GATE_SCALAR) x->dg[rv] = 0.0f;
        }
        dn_seg_load(&c, seg);
        for (c.j0 = 0; c.j0 < V; c.j0 += DN_W) {
            c.w = LA_MIN(DN_W, V - c.j0);
            memcpy(B.Ss, S0 + c.j0 * Kp, (size_t)(c.w * Kp) * sizeof(float));
            dn_seg_fwd(&c, seg, B.Ss, true);
            dn_seg_bwd(&c, seg, B.G + c.j0 * Kp);
        }
    }
    if (x->dinit) dn_cm_store(x->dinit + idx * KV, B.G, K, V, Kp);
}

// ---------------------------------------------------------------------------------------------
// Form entry points (delta.h)

size_t la_dn_rec_bytes(const la_dn_args * x, bool backward) {
    la_carver cv = { NULL, 0 };
    if (backward) {
        dn_bufs B;
        dn_layout(x, &cv, &B);
    } else {
        dn_fbufs F;
        dn_flayout(x, &cv, &F);
    }
    return cv.used;
}

void la_dn_rec_task(const la_dn_args * x, int64_t n, int64_t h, void * ws, bool backward) {
    if (backward) dn_bwd_task(x, n, h, ws);
    else dn_fwd_task(x, n, h, ws);
}
