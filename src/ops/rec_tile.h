// Column-tiled recurrent forms: the machinery shared by the delta-rule family's recurrent form
// (delta_rec.c, ALGORITHMS.md 2.2) and dplr/iplr/rwkv7's (dplr_rec.c, ALGORITHMS.md 2.1).
//
// Both recurrences read the old state through one reduction per token before they write it,
//
//   r_t = S_{t-1}^T c_t        dn: c_t = exp(g_t) o k_t, so r_t = P^T k_t ;  dp: c_t = a_t
//
// and every value column of S evolves on its own (ALGORITHMS.md 2.5): r_t, the rank-one
// updates and S^T q touch only their column, in the forward and in the adjoint. So the state is
// processed in tiles of LA_REC_W value columns, each kept in L1 while it runs a stretch of
// tokens, and quantities that sum over V (dq, dk, dg, ...) add up across tiles. This file holds
// everything but the ops' own steps: the tile loops, scratch layouts, the column-major backward
// state and its la_ckpt segment plumbing, per-token gradient rows. An op supplies a la_rec_op
// of hooks (below), which contain its math.
//
// Forward: blocks of LA_REC_TB tokens, tiles inside. The op's coef hook prepares the block's
// per-token rows once for all tiles (decays, c_t), whose input rows then stay in L2 while the
// tiles pass over them. A full tile (K rows of LA_REC_W = 2 x 16 floats) is copied to a
// contiguous buffer for a block of LA_REC_COPY_MIN tokens or more (in place its rows sit V
// floats apart and, for V a multiple of 128, fall into a fraction of L1's sets: a 128 x 32 tile
// at V = 128 uses 16 of 64, so it would not stay in L1). The op's tile hook runs one fused
// sweep over the tile's rows per token: the update, o_t = s S_t^T q_t and the next token's
// r_{t+1} from the same fresh rows, so each row is loaded and stored once per token with the
// accumulators in registers. The first token's r comes from one pass over the whole state
// (rows in memory order).
//
// Decode (a sequence shorter than LA_REC_COPY_MIN, e.g. T = 1 with final_state ==
// initial_state): no copies; the state is updated in place, in the final_state slot when the
// caller wants it. The reduction must see every row of the old state before the first row is
// written, so a token passes over its state twice but moves it through memory once: the first
// pass streams it in address order (which the hardware prefetcher follows), the tile sweeps
// then find it in L2 and write each element once. The last token's sweeps also prefetch into
// L2 the state LA_REC_PF_SLOTS slots ahead (a later task's: la_run_tasks runs a thread's tasks
// in slot order), so memory keeps streaming while the core computes on cached lines. One
// thread, N = 64, H = 8, K = V = 128 (32 MiB of state): 19-25 GB/s with a tile-by-tile first
// pass (strided: 128 bytes of every 4 V), 16-17 GB/s with the whole-state pass but no prefetch,
// 38-41 GB/s with both (gla's single pass: 46-48 GB/s).
//
// Backward: the op's reverse-time adjoint, G = dL/dS_t, on a column-major state (V, Kp), Kp =
// K rounded up to 16 with zero padding rows: the reductions over K (r_t, and the adjoints' G^T
// k, G^T b) are then one per column, while the gradients that reduce over V are K-vector
// accumulations. S_{t-1} is never obtained by inverting a transition (ALGORITHMS.md 2.4): a
// forward sweep keeps la_ckpt checkpoints at the boundaries of segments of LA_REC_SEG tokens
// (sqrt-spaced for long sequences: O(sqrt(T)) states per task), and the reverse sweep takes the
// segments last to first; for each, tile by tile, it replays the segment from its boundary
// state keeping the state before every token, then runs the adjoint over the segment's tokens
// in reverse. Forward work in the backward: two tile steps per token, three for sequences of
// more than LA_CKPT_ALL segments.
//
// Dimensions: B, T, H, HV, K, V, N as in OPS.md; Kp = K rounded up to 16; w <= LA_REC_W the
// columns of one tile; nh the heads of a token row (HV for dn, H for dp).
#ifndef LA_REC_TILE_H
#define LA_REC_TILE_H

#include "internal.h"

#define LA_REC_W        32  // value columns per tile: 128 x 32 floats = 16 KiB, half a 32 KiB L1
#define LA_REC_SEG      16  // tokens per backward segment, the unit of la_ckpt
#define LA_REC_TB       64  // tokens per forward block
#define LA_REC_PF       8   // prefetch distance in tokens of the ops' coef hooks
#define LA_REC_COPY_MIN 4   // tokens from which a forward block works on a contiguous tile copy
#define LA_REC_PF_SLOTS 2   // decode: the state LA_REC_PF_SLOTS slots ahead is prefetched
#define LA_REC_NSEG     4   // most per-token operand rows an op keeps for a backward segment
#define LA_REC_NACC     5   // most K-vector gradient accumulators of an op
#define LA_REC_NOUT     5   // most per-token gradient outputs of an op

#define LA_REC_INLINE static inline __attribute__((always_inline))

// Rows of the backward segment operands every op has (la_rec_bufs.seg); an op numbers its
// others from LA_REC_SEG_OP.
enum { LA_REC_SEG_D = 0,   // exp(g_t): the decays, ones without a gate, zero padding
       LA_REC_SEG_C = 1,   // c_t of r_t = S_{t-1}^T c_t, zero padding
       LA_REC_SEG_OP = 2 };

static inline int64_t la_rec_pad16(int64_t n) { return (n + 15) & ~(int64_t)15; }

// a[0] + ... + a[15], folded pairwise: a fixed order that compiles to a few vector adds.
LA_REC_INLINE float la_rec_fold16(const float * a) {
    float b[8], c[4];
    for (int l = 0; l < 8; l++) b[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++) c[l] = b[l] + b[l + 4];
    return (c[0] + c[2]) + (c[1] + c[3]);
}

// sum_i x_i y_i for n a multiple of 16, in 16 lanes.
LA_REC_INLINE float la_rec_dot16(const float * restrict x, const float * restrict y, int64_t n) {
    float acc[16] = { 0 };
    for (int64_t i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[i + l] * y[i + l];
    return la_rec_fold16(acc);
}

// Prefetches the w columns of row i of a later state (row stride V) into L2: called by the
// tile hooks once per row of a decode step's last sweep. L2, not L1: the
// sweeps' own rows live in L1 (a prefetch into L1 halves the decode rate).
LA_REC_INLINE void la_rec_prefetch_row(const float * pf, int64_t i, int64_t V, int64_t w) {
    for (int64_t j = 0; j < w; j += 16) __builtin_prefetch(pf + i * V + j, 0, 1);
}

// dst (Kp) <- src (K) followed by zeros.
LA_REC_INLINE void la_rec_pad_row(float * restrict dst, const float * restrict src, int64_t K,
                                  int64_t Kp) {
    for (int64_t i = 0; i < K; i++) dst[i] = src[i];
    for (int64_t i = K; i < Kp; i++) dst[i] = 0.0f;
}

// ---------------------------------------------------------------------------------------------
// Scratch

// Forward scratch of one task. Row t - t0 of db, cb, ds belongs to token t of the block
// [t0, t1); row t1 - t0 to the next block's first token, whose c_t the block's last token needs.
typedef struct la_rec_fbufs {
    float * S;   // (K, V) the state when final_state is not wanted
    float * db;  // (LA_REC_TB + 1, K) exp(g_t) per channel (the coef hook fills what it uses)
    float * cb;  // (LA_REC_TB + 1, K) c_t
    float * ds;  // (LA_REC_TB + 1) one decay per token (scalar gates)
    float * r;   // (V) r of each tile's next token, carried across blocks
    float * tb;  // (K, LA_REC_W) the tile in hand
} la_rec_fbufs;

// Backward scratch of one task. The state of the backward is column-major, (V, Kp): tile j0 is
// the contiguous slice of w columns at j0 Kp.
typedef struct la_rec_bufs {
    float * ckpt;                 // (la_ckpt_count, V, Kp) segment-boundary checkpoints
    float * grp;                  // (M, V, Kp) boundary states of the segment group in hand
    float * S, * G;               // (V, Kp) running state; dL/dS_t
    float * Ss;                   // (LA_REC_SEG + 1, LA_REC_W, Kp) one tile's states before each
                                  //   token of a segment
    float * tmp;                  // (LA_REC_W, Kp) ping-pong partner of a tile advanced in place
    float * seg[LA_REC_NSEG];     // (LA_REC_SEG, Kp) per-token operand rows of the segment
                                  //   (LA_REC_SEG_D, LA_REC_SEG_C, then the op's)
    float * rseg;                 // (LA_REC_SEG, LA_REC_W) one tile's r_t over the segment
    float * q;                    // (Kp) q_t, padded
    float * acc[LA_REC_NACC];     // (Kp) one token's K-vector gradients over a tile's columns,
                                  //   consecutive: (nacc, Kp) at acc[0]
    int64_t Kp, M, segmax;
} la_rec_bufs;

// ---------------------------------------------------------------------------------------------
// Tasks and the ops' hooks

typedef struct la_rec_op la_rec_op;

// A per-token gradient output whose rows sum over value columns: (B*T, nh, width) at p, token
// t's row at p + (t nh + h) width. width K: accumulator m adds its vector; width 1: the sum of
// its entries (a scalar gate's gradient); width 0 or p NULL: not an output of this call.
typedef struct la_rec_out {
    float * p;
    int64_t width;
} la_rec_out;

// One task: sequence [bos, eos) of head h, and the tile in hand (j0, w).
typedef struct la_rec_task {
    const la_rec_op *    op;
    const void *         x;        // the op's arguments (la_dn_args, la_dp_args)
    int64_t              K, V, nh;
    int64_t              h, hq;    // value head (state, v, o rows), q/k head
    int64_t              bos, eos;
    int64_t              idx, nslots;  // state slot n nh + h of the (N, nh, K, V) states; N nh
    int64_t              maxlen;   // longest sequence of the call (backward scratch)
    int64_t              tb;       // forward: first token of the block in hand
    int64_t              j0, w;
    const la_rec_fbufs * F;        // forward scratch
    const la_rec_bufs *  B;        // backward scratch
    la_rec_out           out[LA_REC_NOUT];  // backward: out[m] receives acc[m] (m < nacc)
    int                  nout;
} la_rec_task;

// The hooks hold the op's math; everything else is here. A hook that computes is LA_CLONES.
struct la_rec_op {
    int nseg;  // operand rows of a backward segment (<= LA_REC_NSEG)
    int nacc;  // K-vector gradient accumulators (<= LA_REC_NACC)

    // Forward. coef: rows t - t0 of c->F for tokens t in [t0, t1) (t1 <= eos): db, ds as the
    // op's tile hook reads them, and cb (c_t); prefetches input rows ahead.
    void (*coef)(const la_rec_task * c, int64_t t0, int64_t t1);
    // tile: tokens [t0, t1) of the block at c->tb (rows t - c->tb of c->F) on tile (c->j0,
    // c->w), copied or in place: S (K, w) with row stride ld, updated in place; r (w) holds
    // r_{t0} on entry and r_{t1} on exit; writes o of the tile's columns. Either every
    // token has a successor (t1 < eos) or the call is the sequence's last token alone (r
    // undefined on exit), so the op picks a sweep with or without the next token's reduction
    // once per call. pf, NULL unless that last token ends a decode step: a later slot's state
    // at column j0 (row stride V), for la_rec_prefetch_row during its sweep (the prefill's
    // sweeps carry no test).
    void (*tile)(const la_rec_task * c, int64_t t0, int64_t t1, float * S, int64_t ld,
                 float * r, const float * pf);

    // Backward. load: token t's operand rows of c->B->seg[] (row la_rec_seg_row(c, t)).
    void (*load)(const la_rec_task * c, int64_t t);
    // replay: advances the tile in hand over segment `seg`: la_rec_replay with the op's step.
    void (*replay)(const la_rec_task * c, int64_t seg, float * S, bool keep);
    // seg_bwd: the reverse sweep over segment `seg` on the tile in hand, from the states c->B->Ss
    // and the r_t c->B->rseg that the segment's replay kept; G (w, Kp) enters as dL/dS after the
    // segment and leaves as dL/dS before it. Adds into the token rows of c->out through
    // la_rec_tok_begin / la_rec_tok_end, and writes the tile's columns of per-column gradients.
    void (*seg_bwd)(const la_rec_task * c, int64_t seg, float * G);
};

// Fills a task's geometry for sequence n, head h (q/k head hq) of a call over N sequences;
// op, x, out, nout are the caller's to set.
void la_rec_task_init(la_rec_task * c, const la_rec_op * op, const void * x, la_shape sh,
                      const la_opts * opts, int64_t N, int64_t nh, int64_t n, int64_t h,
                      int64_t hq, int64_t maxlen);

// Scratch bytes of one task (64-byte aligned pieces).
size_t la_rec_bytes(const la_rec_op * op, int64_t K, int64_t V, int64_t maxlen, bool backward);

// The forward of a task: o of its tokens and head; the state goes to final's slot when final
// is not NULL (which may equal init: in place).
void la_rec_fwd(const la_rec_task * c, const float * init, float * final, void * ws);

// The backward of a task: the gradients through the op's hooks and c->out, and dinit's slot
// when dinit is not NULL; init, dfinal may be NULL (zeros).
void la_rec_bwd(const la_rec_task * c, const float * init, const float * dfinal, float * dinit,
                void * ws);

// ---------------------------------------------------------------------------------------------
// For the ops' backward hooks

// Token t's row in its segment's operand rows c->B->seg[] and c->B->rseg.
static inline int64_t la_rec_seg_row(const la_rec_task * c, int64_t t) {
    return (t - c->bos) % LA_REC_SEG;
}

// A step: token t (operand rows la_rec_seg_row(c, t)) on the tile in hand, column-major
// (w, Kp): src -> dst (distinct), r (w) = r_t on entry; with `next`, the same sweep leaves
// r_{t+1} = dst^T c_{t+1} in r, so each column is read and written once.
typedef void (*la_rec_step_fn)(const la_rec_task * c, int64_t t, const float * src, float * dst,
                               float * r, bool next);

// Advances the tile in hand, S (w, Kp), over segment `seg` (operands from the load hook) by the
// op's step, which the op's replay hook passes as a constant so that it is inlined here. keep:
// S is c->B->Ss, whose slot k receives the state before the segment's token k (slot 0 holds
// the segment's start), and rseg row k that token's r; otherwise S is advanced in place
// (ping-ponging with tmp).
LA_REC_INLINE void la_rec_replay(const la_rec_task * c, int64_t seg, float * S, bool keep,
                                 la_rec_step_fn step) {
    const la_rec_bufs * B = c->B;
    const int64_t Kp = B->Kp, w = c->w, TS = w * Kp;
    const int64_t t0 = c->bos + seg * LA_REC_SEG, L = LA_MIN(LA_REC_SEG, c->eos - t0);
    float r[LA_REC_W];  // (w) r of the token in hand
    for (int64_t j = 0; j < w; j++) r[j] = la_rec_dot16(B->seg[LA_REC_SEG_C], S + j * Kp, Kp);
    float * src = S;
    for (int64_t k = 0; k < L; k++) {
        float * dst = keep ? S + (k + 1) * TS : src == S ? B->tmp : S;
        if (keep) memcpy(B->rseg + k * LA_REC_W, r, (size_t)w * sizeof(float));
        step(c, t0 + k, src, dst, r, k + 1 < L);
        src = dst;
    }
    if (!keep && src != S) memcpy(S, src, (size_t)TS * sizeof(float));
}

// Token t's row: q (K of the q/k head) padded into c->B->q, accumulators zeroed.
LA_REC_INLINE void la_rec_tok_begin(const la_rec_task * c, const float * q_row) {
    const la_rec_bufs * B = c->B;
    la_rec_pad_row(B->q, q_row, c->K, B->Kp);
    memset(B->acc[0], 0, (size_t)(c->op->nacc * B->Kp) * sizeof(float));
}

// Token t's accumulators added into its rows of c->out (zeroed by la_rec_bwd; tiles add).
LA_REC_INLINE void la_rec_tok_end(const la_rec_task * c, int64_t t) {
    const la_rec_bufs * B = c->B;
    const int64_t row = t * c->nh + c->h;
    for (int m = 0; m < c->op->nacc; m++) {
        const la_rec_out * o = &c->out[m];
        const float * a = B->acc[m];
        if (!o->p || o->width == 0) continue;
        if (o->width == 1) {
            float lanes[16] = { 0 };
            for (int64_t i0 = 0; i0 < B->Kp; i0 += 16)
                for (int l = 0; l < 16; l++) lanes[l] += a[i0 + l];
            o->p[row] += la_rec_fold16(lanes);
        } else {
            float * dst = o->p + row * o->width;
            for (int64_t i = 0; i < o->width; i++) dst[i] += a[i];
        }
    }
}

#endif  // LA_REC_TILE_H
