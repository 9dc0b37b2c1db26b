// dplr_delta_rule, iplr_delta_rule and rwkv7: the recurrent form of the dp engine (OPS.md
// 2.9-2.12, ALGORITHMS.md 2.1, 2.4, 2.5), on the effective inputs of delta.h:
//
//   S_t = Diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T ;  o_t = s S_t^T q_t
//   (gk NULL: no decay, iplr)
//
// The low-rank term reads the undecayed S_{t-1}. The organisation follows delta_rec.c.
//
// Column tiling (ALGORITHMS.md 2.5): every value column of S evolves on its own (a^T S, both
// rank-one updates and S^T q touch only their column), in the forward and in the adjoint, so
// the state is processed in tiles of DP_W value columns, each kept in L1 while it runs a
// stretch of tokens; quantities that sum over V (dq, dk, da, db, dgk) add up across tiles.
//
// Forward: blocks of DP_TB tokens, tiles inside (exp(gk) once per block for all tiles, input
// rows in L2 while the tiles pass over them). A full tile (K rows of DP_W = 2 x 16 floats) is
// copied to a contiguous buffer for the block and runs one fused sweep over its rows per token:
// S_t = D S_{t-1} + b y^T + k v^T, o_t = s S_t^T q_t and the next token's y' = a'^T S_t from the
// same fresh rows, so each row is loaded and stored once per token, with the 16-lane
// accumulators in registers and no horizontal sum. Short calls (a decode step) work in place, in
// the final_state slot when the caller wants it, so the state passes through memory once.
//
// Backward: the reverse-time adjoint of ALGORITHMS.md 2.1, G = dL/dS_t:
//
//   G += s q_t do_t^T ;  dq_t = s S_t do_t ;  dk_t = G v_t ;  dv_t = G^T k_t
//   db_t = G (S_{t-1}^T a_t) ;  da_t = S_{t-1} (G^T b_t)
//   dgk_t = rowsum(G o Diag(e^{gk_t}) S_{t-1})
//   G <- Diag(e^{gk_t}) G + a_t (b_t^T G)
//
// Its state is column-major, (V, Kp) with Kp = K rounded up to 16 and zero padding rows: the
// reductions over K (dv, G^T b, and the replayed a^T S) are then two or three per column, while
// dq, dk, da, db and dgk, which reduce over V, are K-vector accumulations. S_{t-1} comes from
// la_ckpt checkpoints at the boundaries of segments of DP_SEG tokens (sqrt-spaced for long
// sequences: O(sqrt(T)) states per task) and, segment by segment from the last and tile by
// tile, a replay that keeps the state before every token (ALGORITHMS.md 2.4); never from
// inverting a transition.
//
// Dimensions: B, T, H, K, V, N as in OPS.md; Kp = K rounded up to 16; w <= DP_W the columns of
// one tile.
#include "delta.h"
#include "vexp.h"

#include <string.h>

#define DP_W   32  // value columns per tile: 128 x 32 floats = 16 KiB, half a 32 KiB L1
#define DP_SEG 16  // tokens per backward segment, the unit of la_ckpt
#define DP_TB  64  // tokens per forward block (see dp_fwd_task)
#define DP_PF  8   // prefetch distance in tokens (dp_fwd_coef)
#define DP_COPY_MIN 4  // tokens from which a forward block works on a contiguous tile copy

#define DP_INLINE static inline __attribute__((always_inline))

static inline int64_t dp_pad16(int64_t n) { return (n + 15) & ~(int64_t)15; }

// a[0] + ... + a[15], folded pairwise: a fixed order that compiles to a few vector adds.
DP_INLINE float dp_fold16(const float * a) {
    float b[8], c[4];
    for (int l = 0; l < 8; l++) b[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++) c[l] = b[l] + b[l + 4];
    return (c[0] + c[2]) + (c[1] + c[3]);
}

// sum_i x_i y_i for n a multiple of 16, in 16 lanes.
DP_INLINE float dp_dot16(const float * restrict x, const float * restrict y, int64_t n) {
    float acc[16] = { 0 };
    for (int64_t i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[i + l] * y[i + l];
    return dp_fold16(acc);
}

// ---------------------------------------------------------------------------------------------
// Forward

// Decays exp(gk_t) of tokens [t0, t1) (rows of db, (K) each; with gk). Also prefetches the
// rows of q, k, a, b, v and gk DP_PF tokens ahead (one head's rows are H*K floats apart, a page
// or so: beyond the hardware prefetcher), so the block's first tile finds them in cache.
LA_CLONES
static void dp_fwd_coef(const la_dp_args * x, int64_t t0, int64_t t1, int64_t eos, int64_t h,
                        float * restrict db) {
    const int64_t K = x->sh.K, H = x->sh.H;
    for (int64_t t = t0; t < t1; t++) {
        if (t + DP_PF < eos) {
            const int64_t r = (t + DP_PF) * H + h;
            const float * rows[] = { x->q, x->k, x->a, x->b, x->gk };
            for (int m = 0; m < (x->gk ? 5 : 4); m++) la_prefetch_rows(rows[m] + r * K, 0, 1, K);
            la_prefetch_rows(x->v + r * x->sh.V, 0, 1, x->sh.V);
        }
        if (x->gk) la_expf_vec(db + (t - t0) * K, x->gk + (t * H + h) * K, K);
    }
}

// y (w) = sum_i a_i S[i, :] over the K rows of a tile (row stride ld). Four rows per step: the
// accumulator lives in memory here, and this spaces out its round trips.
DP_INLINE void dp_rows_dot(int64_t K, int64_t ld, const int64_t w, const float * restrict S,
                           const float * restrict a, float * restrict y) {
    for (int64_t j = 0; j < w; j++) y[j] = 0.0f;
    int64_t i = 0;
    for (; i + 4 <= K; i += 4) {
        const float * restrict S0 = S + i * ld, * restrict S1 = S0 + ld, * restrict S2 = S1 + ld;
        const float * restrict S3 = S2 + ld;
        for (int64_t j = 0; j < w; j++)
            y[j] += (a[i] * S0[j] + a[i + 1] * S1[j]) + (a[i + 2] * S2[j] + a[i + 3] * S3[j]);
    }
    for (; i < K; i++)
        for (int64_t j = 0; j < w; j++) y[j] += a[i] * S[i * ld + j];
}

// Tokens [t0, t1) of one full tile of DP_W = 2 x 16 columns (from j0 of head h): S (K, DP_W)
// with row stride ld, updated in place; db from dp_fwd_coef (gated); y (DP_W) holds
// a_{t0}^T S_{t0-1} on entry and a_{t1}^T S_{t1-1} on exit; zero (K) zeros. One sweep over the
// rows per token updates S_t = D S_{t-1} + b y^T + k v^T, accumulates o_t = s S_t^T q_t and,
// from the same fresh rows, the next token's a^T S_t: each row is loaded and stored once per
// token and the 16-lane accumulators stay in registers.
DP_INLINE void dp_fwd_fast(const la_dp_args * x, int64_t t0, int64_t t1, int64_t eos,
                           int64_t h, float * restrict S, int64_t ld, int64_t j0, const bool gated,
                           const float * restrict db, const float * restrict zero,
                           float * restrict y) {
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V;
    const float s = x->scale;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t r = t * H + h;
        const float * restrict qt = x->q + r * K, * restrict kt = x->k + r * K;
        const float * restrict bt = x->b + r * K, * restrict vt = x->v + r * V + j0;
        const float * restrict an = t + 1 < eos ? x->a + (r + H) * K : zero;  // a_{t+1}
        const float * restrict dc = db + (t - t0) * K;
        float * restrict ot = x->o + r * V + j0;
        float y0[16], y1[16], v0[16], v1[16], o0[16], o1[16], n0[16], n1[16];
        for (int l = 0; l < 16; l++) {
            y0[l] = y[l];
            y1[l] = y[16 + l];
            v0[l] = vt[l];
            v1[l] = vt[16 + l];
            o0[l] = o1[l] = n0[l] = n1[l] = 0.0f;
        }
        for (int64_t i = 0; i < K; i++) {
            const float di = gated ? dc[i] : 1.0f, bi = bt[i], ki = kt[i], qi = s * qt[i];
            const float ci = an[i];
            float * restrict Si = S + i * ld;
            for (int l = 0; l < 16; l++) {
                const float p = (gated ? di * Si[l] : Si[l]) + (bi * y0[l] + ki * v0[l]);
                const float e = (gated ? di * Si[16 + l] : Si[16 + l]) + (bi * y1[l] + ki * v1[l]);
                Si[l] = p;
                Si[16 + l] = e;
                o0[l] += qi * p;
                o1[l] += qi * e;
                n0[l] += ci * p;
                n1[l] += ci * e;
            }
        }
        for (int l = 0; l < 16; l++) {
            ot[l] = o0[l];
            ot[16 + l] = o1[l];
            y[l] = n0[l];
            y[16 + l] = n1[l];
        }
    }
}

// The same for a narrower last tile (w < DP_W columns): two sweeps per token, a^T S first.
DP_INLINE void dp_fwd_narrow(const la_dp_args * x, int64_t t0, int64_t t1, int64_t h,
                             float * restrict S, int64_t j0, int64_t w,
                             const float * restrict db) {
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V;
    const bool gated = x->gk != NULL;
    const float s = x->scale;
    float y[DP_W], o[DP_W];  // (w) a^T S_{t-1}, o_t
    for (int64_t t = t0; t < t1; t++) {
        const int64_t r = t * H + h;
        const float * restrict qt = x->q + r * K, * restrict kt = x->k + r * K;
        const float * restrict bt = x->b + r * K, * restrict vt = x->v + r * V + j0;
        const float * restrict d = db + (t - t0) * K;
        float * restrict ot = x->o + r * V + j0;
        dp_rows_dot(K, V, w, S, x->a + r * K, y);
        for (int64_t j = 0; j < w; j++) o[j] = 0.0f;
        for (int64_t i = 0; i < K; i++) {
            const float di = gated ? d[i] : 1.0f, bi = bt[i], ki = kt[i], qi = s * qt[i];
            float * restrict Si = S + i * V;
            for (int64_t j = 0; j < w; j++) {
                const float sij = di * Si[j] + (bi * y[j] + ki * vt[j]);
                Si[j] = sij;
                o[j] += qi * sij;
            }
        }
        for (int64_t j = 0; j < w; j++) ot[j] = o[j];
    }
}

// Tokens [t0, t1) of the tile at column j0 of the state S (K, V) (see dp_fwd_fast); first: t0
// is the sequence's first token, whose a^T S no earlier sweep accumulated. For a block of
// several tokens the tile is copied to tb (K, DP_W), contiguous: in place, its rows sit V floats
// apart and, for V a multiple of 128, fall into a fraction of L1's sets (a 128 x 32 tile at
// V = 128 uses 16 of 64), so it would not stay in L1.
LA_CLONES
static void dp_fwd_tile(const la_dp_args * x, int64_t t0, int64_t t1, int64_t eos, int64_t h,
                        float * S, int64_t j0, int64_t w, const float * db, const float * zero,
                        float * y, float * tb, bool first) {
    const int64_t K = x->sh.K, V = x->sh.V;
    if (w < DP_W) {
        dp_fwd_narrow(x, t0, t1, h, S, j0, w, db);
        return;
    }
    const bool copy = t1 - t0 >= DP_COPY_MIN;
    if (copy)
        for (int64_t i = 0; i < K; i++) memcpy(tb + i * DP_W, S + i * V, DP_W * sizeof(float));
    float * St = copy ? tb : S;
    const int64_t ld = copy ? DP_W : V;
    if (first) dp_rows_dot(K, ld, DP_W, St, x->a + (t0 * x->sh.H + h) * K, y);
    if (x->gk) dp_fwd_fast(x, t0, t1, eos, h, St, ld, j0, true, db, zero, y);
    else dp_fwd_fast(x, t0, t1, eos, h, St, ld, j0, false, db, zero, y);
    if (copy)
        for (int64_t i = 0; i < K; i++) memcpy(S + i * V, tb + i * DP_W, DP_W * sizeof(float));
}

// Forward scratch: S (K, V) when final_state is not wanted; db (DP_TB, K) decays; zero (K);
// y (V) each tile's a^T S carried across blocks; tb (K, DP_W) the tile in hand.
typedef struct dp_fbufs {
    float * S, * db, * zero, * y, * tb;
} dp_fbufs;

static void dp_flayout(const la_dp_args * x, la_carver * cv, dp_fbufs * B) {
    const int64_t K = x->sh.K;
    B->S = la_carve(cv, (size_t)(K * x->sh.V) * 4);
    B->db = la_carve(cv, (size_t)(DP_TB * K) * 4);
    B->zero = la_carve(cv, (size_t)K * 4);
    B->y = la_carve(cv, (size_t)x->sh.V * 4);
    B->tb = la_carve(cv, (size_t)(K * DP_W) * 4);
}

// Blocks of DP_TB tokens, tiles inside: a block's rows and decays are fetched or computed once
// and reused by every tile from L2, while each tile still runs all of the block's tokens in L1.
static void dp_fwd_task(const la_dp_args * x, int64_t n, int64_t h, void * ws) {
    const int64_t K = x->sh.K, V = x->sh.V, KV = K * V;
    la_carver cv = { (char *)ws, 0 };
    dp_fbufs B;
    dp_flayout(x, &cv, &B);
    memset(B.zero, 0, (size_t)K * sizeof(float));
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    float * S = la_state_begin(B.S, x->final, x->init, n * x->sh.H + h, KV);
    for (int64_t t0 = bos; t0 < eos; t0 += DP_TB) {
        const int64_t t1 = LA_MIN(t0 + DP_TB, eos);
        dp_fwd_coef(x, t0, t1, eos, h, B.db);
        for (int64_t j0 = 0; j0 < V; j0 += DP_W)
            dp_fwd_tile(x, t0, t1, eos, h, S + j0, j0, LA_MIN(DP_W, V - j0), B.db, B.zero,
                        B.y + j0, B.tb, t0 == bos);
    }
}

// ---------------------------------------------------------------------------------------------
// Backward

// Per-task scratch of the backward (one layout for la_dp_rec_bytes and the task). The state of
// the backward is column-major, (V, Kp): tile j0 is the contiguous slice of w columns at j0 Kp.
typedef struct dp_bufs {
    float * ckpt;          // (la_ckpt_count, V, Kp) segment-boundary checkpoints
    float * grp;           // (M, V, Kp) boundary states of the segment group in hand
    float * S, * G;        // (V, Kp) running state; dL/dS_t
    float * Ss;            // (DP_SEG + 1, DP_W, Kp) one tile's states before each token of a
                           //   segment
    float * tmp;           // (DP_W, Kp) ping-pong partner of a tile advanced in place
    float * dseg, * kseg, * aseg, * bseg;  // (DP_SEG, Kp) the segment's exp(gk_t), k, a, b
    float * yseg;          // (DP_SEG, DP_W) one tile's a^T S_{t-1} over the segment
    float * q;             // (Kp) q_t, padded
    float * dqa, * dka, * daa, * dba, * dga;  // (Kp) one token's dq, dk, da, db, dgk
    int64_t Kp, M, segmax;
} dp_bufs;

static void dp_layout(const la_dp_args * x, la_carver * cv, dp_bufs * B) {
    const int64_t Kp = dp_pad16(x->sh.K), TS = DP_W * Kp, SV = x->sh.V * Kp;
    B->Kp = Kp;
    B->segmax = (x->maxlen + DP_SEG - 1) / DP_SEG;
    B->M = la_ckpt_group(B->segmax);
    B->ckpt = la_carve(cv, (size_t)(la_ckpt_count(B->segmax, B->M) * SV) * 4);
    B->grp = la_carve(cv, (size_t)(B->M * SV) * 4);
    B->S = la_carve(cv, (size_t)SV * 4);
    B->G = la_carve(cv, (size_t)SV * 4);
    B->Ss = la_carve(cv, (size_t)((DP_SEG + 1) * TS) * 4);
    B->tmp = la_carve(cv, (size_t)TS * 4);
    float ** seg[] = { &B->dseg, &B->kseg, &B->aseg, &B->bseg };
    for (size_t i = 0; i < sizeof seg / sizeof seg[0]; i++)
        *seg[i] = la_carve(cv, (size_t)(DP_SEG * Kp) * 4);
    B->yseg = la_carve(cv, (size_t)(DP_SEG * DP_W) * 4);
    float ** vec[] = { &B->q, &B->dqa, &B->dka, &B->daa, &B->dba, &B->dga };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) *vec[i] = la_carve(cv, (size_t)Kp * 4);
}

// The backward of (sequence [bos, eos), head h); j0, w: the tile in hand.
typedef struct dp_tile {
    const la_dp_args * x;
    const dp_bufs *    B;
    int64_t            bos, eos, h, j0, w;
} dp_tile;

// T (V, Kp) <- the row-major (K, V) matrix M transposed and zero-padded; zeros when M is NULL.
static void dp_cm_load(float * restrict T, const float * restrict M, int64_t K, int64_t V,
                       int64_t Kp) {
    memset(T, 0, (size_t)(V * Kp) * sizeof(float));
    if (M)
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) T[j * Kp + i] = M[i * V + j];
}

static void dp_cm_store(float * restrict M, const float * restrict T, int64_t K, int64_t V,
                        int64_t Kp) {
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) M[i * V + j] = T[j * Kp + i];
}

// Row (K) of token t, head h, zero-padded to Kp.
DP_INLINE void dp_pad_row(float * restrict dst, const float * restrict src, int64_t K,
                          int64_t Kp) {
    for (int64_t i = 0; i < K; i++) dst[i] = src[i];
    for (int64_t i = K; i < Kp; i++) dst[i] = 0.0f;
}

// The operands of segment `seg` for every tile, zero-padded to Kp: dseg = exp(gk_t) (ones
// without gk), kseg, aseg, bseg.
LA_CLONES
static void dp_seg_load(const dp_tile * c, int64_t seg) {
    const la_dp_args * x = c->x;
    const dp_bufs * B = c->B;
    const int64_t K = x->sh.K, Kp = B->Kp, t0 = c->bos + seg * DP_SEG;
    const int64_t L = LA_MIN(DP_SEG, c->eos - t0);
    for (int64_t r = 0; r < L; r++) {
        const int64_t row = ((t0 + r) * x->sh.H + c->h) * K;
        float * restrict d = B->dseg + r * Kp;
        dp_pad_row(B->kseg + r * Kp, x->k + row, K, Kp);
        dp_pad_row(B->aseg + r * Kp, x->a + row, K, Kp);
        dp_pad_row(B->bseg + r * Kp, x->b + row, K, Kp);
        if (x->gk) la_expf_vec(d, x->gk + row, K);
        else
            for (int64_t i = 0; i < K; i++) d[i] = 1.0f;
        for (int64_t i = K; i < Kp; i++) d[i] = 0.0f;
    }
}

// One token on a column-major tile, src -> dst (distinct): with y = a^T S_{t-1} (w) on entry,
// S_t = D S_{t-1} + b y^T + k v^T; with `next`, the same sweep leaves the next token's
// a'^T S_t in y, so each column is read and written once.
DP_INLINE void dp_step(int64_t w, int64_t Kp, const float * restrict src, float * restrict dst,
                       const float * restrict d, const float * restrict k,
                       const float * restrict b, const float * restrict an,
                       const float * restrict v, float * restrict y, const bool gated,
                       const bool next) {
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
        if (next) y[j] = dp_fold16(acc);
    }
}

// Advances the tile in hand, S (w, Kp), over segment `seg` (operands from dp_seg_load). keep: S
// is B->Ss, whose slot r receives the state before token r (slot 0 holds the segment's start),
// and the tile's a^T S_{t-1} go to yseg; otherwise S is advanced in place (ping-ponging with
// tmp).
LA_CLONES
static void dp_seg_fwd(const dp_tile * c, int64_t seg, float * S, bool keep) {
    const la_dp_args * x = c->x;
    const dp_bufs * B = c->B;
    const int64_t Kp = B->Kp, w = c->w, TS = w * Kp, V = x->sh.V, H = x->sh.H;
    const int64_t t0 = c->bos + seg * DP_SEG, L = LA_MIN(DP_SEG, c->eos - t0);
    const bool gated = x->gk != NULL;
    float y[DP_W];  // (w) a^T S_{t-1} of the token in hand
    for (int64_t j = 0; j < w; j++) y[j] = dp_dot16(B->aseg, S + j * Kp, Kp);
    float * src = S;
    for (int64_t r = 0; r < L; r++) {
        const int64_t t = t0 + r;
        const float * d = B->dseg + r * Kp, * k = B->kseg + r * Kp, * b = B->bseg + r * Kp;
        const float * an = B->aseg + (r + 1) * Kp;
        float * dst = keep ? S + (r + 1) * TS : src == S ? B->tmp : S;
        const float * v = x->v + (t * H + c->h) * V + c->j0;
        const bool next = r + 1 < L;
        if (keep) memcpy(B->yseg + r * DP_W, y, (size_t)w * sizeof(float));
        if (gated && next) dp_step(w, Kp, src, dst, d, k, b, an, v, y, true, true);
        else if (gated) dp_step(w, Kp, src, dst, d, k, b, an, v, y, true, false);
        else if (next) dp_step(w, Kp, src, dst, d, k, b, an, v, y, false, true);
        else dp_step(w, Kp, src, dst, d, k, b, an, v, y, false, false);
        src = dst;
    }
    if (!keep && src != S) memcpy(S, src, (size_t)TS * sizeof(float));
}

// la_ckpt's step: the state S (V, Kp) after segment `seg`, tile by tile (each tile stays in
// L1 for the segment's tokens).
static void dp_ckpt_step(const void * ctx, int64_t seg, float * S) {
    dp_tile c = *(const dp_tile *)ctx;
    const int64_t V = c.x->sh.V;
    dp_seg_load(&c, seg);
    for (c.j0 = 0; c.j0 < V; c.j0 += DP_W) {
        c.w = LA_MIN(DP_W, V - c.j0);
        dp_seg_fwd(&c, seg, S + c.j0 * c.B->Kp, false);
    }
}

// Reverse step (ALGORITHMS.md 2.1) of NC = 1 or 2 adjacent columns (0 and 1) at one token:
// S0, S1 = S_{t-1} columns (Kp); G0, G1 = dL/dS_t columns in, dL/dS_{t-1} out; c = s do_t,
// y = (a^T S_{t-1}), v = v_t of the columns. Adds their terms of dq, dk, da, db, dgk to the
// (Kp) accumulators in one pass for both columns; dv receives dv_t of the columns. With NC = 1
// column 1 is not touched. Every pointer is a parameter so that restrict reaches the
// vectoriser.
DP_INLINE void dp_rev_cols(int64_t Kp, const int NC, const float * restrict S0,
                           const float * restrict S1, float * restrict G0, float * restrict G1,
                           const float * restrict d, const float * restrict k,
                           const float * restrict a, const float * restrict b,
                           const float * restrict q, float * restrict dqa, float * restrict dka,
                           float * restrict daa, float * restrict dba, float * restrict dga,
                           float c0, float c1, float y0, float y1, float v0, float v1,
                           float * restrict dv, const bool gated) {
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
    const float z0 = dp_fold16(az0), z1 = NC == 2 ? dp_fold16(az1) : 0.0f;
    dv[0] = dp_fold16(av0);
    if (NC == 2) dv[1] = dp_fold16(av1);
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

// The reverse sweep over segment `seg` for the tile in hand, whose states and a^T S_{t-1}
// dp_seg_fwd kept; G (w, Kp) enters as dL/dS after the segment and leaves as dL/dS before it.
LA_CLONES
static void dp_seg_bwd(const dp_tile * c, int64_t seg, float * restrict G) {
    const la_dp_args * x = c->x;
    const dp_bufs * B = c->B;
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, Kp = B->Kp, w = c->w;
    const int64_t t0 = c->bos + seg * DP_SEG, L = LA_MIN(DP_SEG, c->eos - t0);
    const bool gated = x->gk != NULL;
    const float s = x->scale;
    for (int64_t r = L - 1; r >= 0; r--) {
        const int64_t t = t0 + r, row = t * H + c->h;
        const float * Sp = B->Ss + r * w * Kp, * y = B->yseg + r * DP_W;
        const float * dot = x->dout + row * V + c->j0, * vt = x->v + row * V + c->j0;
        float * dvt = x->dv + row * V + c->j0;
        dp_pad_row(B->q, x->q + row * K, K, Kp);
        for (int64_t i = 0; i < Kp; i++)
            B->dqa[i] = B->dka[i] = B->daa[i] = B->dba[i] = B->dga[i] = 0.0f;
        const float * d = B->dseg + r * Kp, * k = B->kseg + r * Kp, * a = B->aseg + r * Kp;
        const float * b = B->bseg + r * Kp;
        for (int64_t j = 0; j < w; j += 2) {
            const float * S0 = Sp + j * Kp;
            float * G0 = G + j * Kp;
            const float c0 = s * dot[j];
            if (j + 1 < w) {  // two columns
                const float c1 = s * dot[j + 1];
#define DP_REV2(GATED)                                                                         \
    dp_rev_cols(Kp, 2, S0, S0 + Kp, G0, G0 + Kp, d, k, a, b, B->q, B->dqa, B->dka, B->daa,     \
                B->dba, B->dga, c0, c1, y[j], y[j + 1], vt[j], vt[j + 1], dvt + j, GATED)
                if (gated) DP_REV2(true);
                else DP_REV2(false);
#undef DP_REV2
            } else {
#define DP_REV1(GATED)                                                                         \
    dp_rev_cols(Kp, 1, S0, NULL, G0, NULL, d, k, a, b, B->q, B->dqa, B->dka, B->daa, B->dba,   \
                B->dga, c0, 0.0f, y[j], 0.0f, vt[j], 0.0f, dvt + j, GATED)
                if (gated) DP_REV1(true);
                else DP_REV1(false);
#undef DP_REV1
            }
        }
        // Tiles add into the token's rows (zeroed by the task).
        float * outs[] = { x->dq, x->dk, x->da, x->db, x->dgk };
        const float * accs[] = { B->dqa, B->dka, B->daa, B->dba, B->dga };
        for (int m = 0; m < (gated ? 5 : 4); m++) {
            float * dst = outs[m] + row * K;
            for (int64_t i = 0; i < K; i++) dst[i] += accs[m][i];
        }
    }
}

// Segments in reverse, tiles inside: a segment's input rows and the output rows the tiles add
// into stay in cache while every tile passes over them.
static void dp_bwd_task(const la_dp_args * x, int64_t n, int64_t h, void * ws) {
    const int64_t H = x->sh.H, K = x->sh.K, V = x->sh.V, KV = K * V;
    la_carver cv = { (char *)ws, 0 };
    dp_bufs B;
    dp_layout(x, &cv, &B);
    const int64_t Kp = B.Kp;
    int64_t bos, eos;
    la_seq_bounds(x->opts, x->sh, n, &bos, &eos);
    const int64_t nseg = (eos - bos + DP_SEG - 1) / DP_SEG, idx = n * H + h;
    dp_tile c = { x, &B, bos, eos, h, 0, 0 };
    la_ckpt ck = { B.ckpt, B.grp, B.M, nseg, V * Kp };
    dp_cm_load(B.S, x->init ? x->init + idx * KV : NULL, K, V, Kp);
    dp_cm_load(B.G, x->dfinal ? x->dfinal + idx * KV : NULL, K, V, Kp);
    la_ckpt_run(&ck, B.S, dp_ckpt_step, &c);  // the forward sweep: segment checkpoints
    float * outs[] = { x->dq, x->dk, x->da, x->db, x->dgk };
    for (int64_t seg = nseg - 1; seg >= 0; seg--) {
        const float * S0 = la_ckpt_state(&ck, seg, dp_ckpt_step, &c);
        const int64_t t0 = bos + seg * DP_SEG, t1 = LA_MIN(t0 + DP_SEG, eos);
        // Outputs that sum over value columns: zeroed here, then every tile adds.
        for (int64_t t = t0; t < t1; t++)
            for (int m = 0; m < (x->gk ? 5 : 4); m++)
                memset(outs[m] + (t * H + h) * K, 0, (size_t)K * sizeof(float));
        dp_seg_load(&c, seg);
        for (c.j0 = 0; c.j0 < V; c.j0 += DP_W) {
            c.w = LA_MIN(DP_W, V - c.j0);
            memcpy(B.Ss, S0 + c.j0 * Kp, (size_t)(c.w * Kp) * sizeof(float));
            dp_seg_fwd(&c, seg, B.Ss, true);
            dp_seg_bwd(&c, seg, B.G + c.j0 * Kp);
        }
    }
    if (x->dinit) dp_cm_store(x->dinit + idx * KV, B.G, K, V, Kp);
}

// ---------------------------------------------------------------------------------------------
// Form entry points (delta.h)

size_t la_dp_rec_bytes(const la_dp_args * x, bool backward) {
    la_carver cv = { NULL, 0 };
    if (backward) {
        dp_bufs B;
        dp_layout(x, &cv, &B);
    } else {
        dp_fbufs F;
        dp_flayout(x, &cv, &F);
    }
    return cv.used;
}

void la_dp_rec_task(const la_dp_args * x, int64_t n, int64_t h, void * ws, bool backward) {
    if (backward) dp_bwd_task(x, n, h, ws);
    else dp_fwd_task(x, n, h, ws);
}
