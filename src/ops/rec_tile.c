// The drivers of the column-tiled recurrent forms (see rec_tile.h): task geometry, scratch
// layouts, the forward's blocks and tiles, the backward's segments, checkpoints and tiles. The
// ops' math runs in their hooks (delta_rec.c, dplr_rec.c).
#include "rec_tile.h"

#include <string.h>

void la_rec_task_init(la_rec_task * c, const la_rec_op * op, const void * x, la_shape sh,
                      const la_opts * opts, int64_t N, int64_t nh, int64_t n, int64_t h,
                      int64_t hq, int64_t maxlen) {
    memset(c, 0, sizeof *c);
    c->op = op;
    c->x = x;
    c->K = sh.K;
    c->V = sh.V;
    c->nh = nh;
    c->h = h;
    c->hq = hq;
    la_seq_bounds(opts, sh, n, &c->bos, &c->eos);
    c->idx = n * nh + h;
    c->nslots = N * nh;
    c->maxlen = maxlen;
}

// ---------------------------------------------------------------------------------------------
// Scratch layouts (one for la_rec_bytes and the task)

static void fwd_layout(int64_t K, int64_t V, la_carver * cv, la_rec_fbufs * F) {
    F->S = la_carve(cv, (size_t)(K * V) * 4);
    F->db = la_carve(cv, (size_t)((LA_REC_TB + 1) * K) * 4);
    F->cb = la_carve(cv, (size_t)((LA_REC_TB + 1) * K) * 4);
    F->ds = la_carve(cv, (size_t)(LA_REC_TB + 1) * 4);
    F->r = la_carve(cv, (size_t)V * 4);
    F->tb = la_carve(cv, (size_t)(K * LA_REC_W) * 4);
}

static void bwd_layout(const la_rec_op * op, int64_t K, int64_t V, int64_t maxlen,
                       la_carver * cv, la_rec_bufs * B) {
    const int64_t Kp = la_rec_pad16(K), TS = LA_REC_W * Kp, SV = V * Kp;
    memset(B, 0, sizeof *B);
    B->Kp = Kp;
    B->segmax = (maxlen + LA_REC_SEG - 1) / LA_REC_SEG;
    B->M = la_ckpt_group(B->segmax);
    B->ckpt = la_carve(cv, (size_t)(la_ckpt_count(B->segmax, B->M) * SV) * 4);
    B->grp = la_carve(cv, (size_t)(B->M * SV) * 4);
    B->S = la_carve(cv, (size_t)SV * 4);
    B->G = la_carve(cv, (size_t)SV * 4);
    B->Ss = la_carve(cv, (size_t)((LA_REC_SEG + 1) * TS) * 4);
    B->tmp = la_carve(cv, (size_t)TS * 4);
    for (int m = 0; m < op->nseg; m++) B->seg[m] = la_carve(cv, (size_t)(LA_REC_SEG * Kp) * 4);
    B->rseg = la_carve(cv, (size_t)(LA_REC_SEG * LA_REC_W) * 4);
    B->q = la_carve(cv, (size_t)Kp * 4);
    float * acc = la_carve(cv, (size_t)(op->nacc * Kp) * 4);  // one block: zeroed at once
    for (int m = 0; m < op->nacc; m++) B->acc[m] = acc ? acc + m * Kp : NULL;
}

size_t la_rec_bytes(const la_rec_op * op, int64_t K, int64_t V, int64_t maxlen, bool backward) {
    la_carver cv = { NULL, 0 };
    if (backward) {
        la_rec_bufs B;
        bwd_layout(op, K, V, maxlen, &cv, &B);
    } else {
        la_rec_fbufs F;
        fwd_layout(K, V, &cv, &F);
    }
    return cv.used;
}

// ---------------------------------------------------------------------------------------------
// Forward

// r (V) = S^T c = sum_i c_i S[i, :] over the whole state S (K, V), rows in memory order, which
// the hardware prefetcher follows. Four rows per step: the accumulator lives in memory, and
// this spaces out its round trips.
LA_CLONES
static void rows_all(int64_t K, int64_t V, const float * restrict S, const float * restrict c,
                     float * restrict r) {
    for (int64_t j = 0; j < V; j++) r[j] = 0.0f;
    int64_t i = 0;
    for (; i + 4 <= K; i += 4) {
        const float * restrict S0 = S + i * V, * restrict S1 = S0 + V, * restrict S2 = S1 + V;
        const float * restrict S3 = S2 + V;
        const float c0 = c[i], c1 = c[i + 1], c2 = c[i + 2], c3 = c[i + 3];
        for (int64_t j = 0; j < V; j++) {
            float a = r[j];
            a += c0 * S0[j];
            a += c1 * S1[j];
            a += c2 * S2[j];
            a += c3 * S3[j];
            r[j] = a;
        }
    }
    for (; i < K; i++)
        for (int64_t j = 0; j < V; j++) r[j] += c[i] * S[i * V + j];
}

// K rows of LA_REC_W floats from src (row stride lds) to dst (row stride ldd).
LA_CLONES
static void tile_copy(float * restrict dst, int64_t ldd, const float * restrict src,
                      int64_t lds, int64_t K) {
    for (int64_t i = 0; i < K; i++)
        for (int l = 0; l < LA_REC_W; l++) dst[i * ldd + l] = src[i * lds + l];
}

// Blocks of LA_REC_TB tokens, tiles inside: a block's per-token rows are fetched or computed
// once and reused by every tile from L2, while each tile still runs all of the block's tokens
// in L1. The sequence's first r is one pass over the whole state in address order; a decode
// step works in place and prefetches a later slot's state during its last token's sweep
// (rec_tile.h).
void la_rec_fwd(const la_rec_task * c0, const float * init, float * final, void * ws) {
    la_rec_task c = *c0;
    const int64_t K = c.K, V = c.V, KV = K * V;
    la_carver cv = { (char *)ws, 0 };
    la_rec_fbufs F;
    fwd_layout(K, V, &cv, &F);
    c.F = &F;
    float * S = la_state_begin(F.S, final, init, c.idx, KV);
    const bool decode = c.eos - c.bos < LA_REC_COPY_MIN;
    const int64_t pslot = c.idx + LA_REC_PF_SLOTS;
    const float * pf = decode && init && pslot < c.nslots ? init + pslot * KV : NULL;
    for (int64_t t0 = c.bos; t0 < c.eos; t0 += LA_REC_TB) {
        const int64_t t1 = LA_MIN(t0 + LA_REC_TB, c.eos);
        c.op->coef(&c, t0, LA_MIN(t1 + 1, c.eos));
        if (t0 == c.bos) rows_all(K, V, S, F.cb, F.r);
        const int64_t tn = LA_MIN(t1, c.eos - 1);  // [t0, tn): the tokens with a successor
        c.tb = t0;
        for (c.j0 = 0; c.j0 < V; c.j0 += LA_REC_W) {
            c.w = LA_MIN(LA_REC_W, V - c.j0);
            const bool copy = c.w == LA_REC_W && t1 - t0 >= LA_REC_COPY_MIN;
            float * St = copy ? F.tb : S + c.j0;
            const int64_t ld = copy ? LA_REC_W : V;
            if (copy) tile_copy(F.tb, LA_REC_W, S + c.j0, V, K);
            if (t0 < tn) c.op->tile(&c, t0, tn, St, ld, F.r + c.j0, NULL);
            if (tn < t1) c.op->tile(&c, tn, t1, St, ld, F.r + c.j0, pf ? pf + c.j0 : NULL);
            if (copy) tile_copy(S + c.j0, V, F.tb, LA_REC_W, K);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward

// T (V, Kp) <- the row-major (K, V) matrix M transposed and zero-padded; zeros when M is NULL.
static void cm_load(float * restrict T, const float * restrict M, int64_t K, int64_t V,
                    int64_t Kp) {
    memset(T, 0, (size_t)(V * Kp) * sizeof(float));
    if (M)
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) T[j * Kp + i] = M[i * V + j];
}

static void cm_store(float * restrict M, const float * restrict T, int64_t K, int64_t V,
                     int64_t Kp) {
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) M[i * V + j] = T[j * Kp + i];
}

// The operand rows of segment `seg` for every tile.
static void seg_load(const la_rec_task * c, int64_t seg) {
    const int64_t t0 = c->bos + seg * LA_REC_SEG, t1 = LA_MIN(t0 + LA_REC_SEG, c->eos);
    for (int64_t t = t0; t < t1; t++) c->op->load(c, t);
}

// la_ckpt's step: the state S (V, Kp) after segment `seg`, tile by tile (each tile stays in
// L1 for the segment's tokens).
static void ckpt_step(const void * ctx, int64_t seg, float * S) {
    la_rec_task c = *(const la_rec_task *)ctx;
    seg_load(&c, seg);
    for (c.j0 = 0; c.j0 < c.V; c.j0 += LA_REC_W) {
        c.w = LA_MIN(LA_REC_W, c.V - c.j0);
        c.op->replay(&c, seg, S + c.j0 * c.B->Kp, false);
    }
}

// Rows [t0, t1) of the outputs that sum over value columns: zeroed, then every tile adds.
static void zero_rows(const la_rec_task * c, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++)
        for (int m = 0; m < c->nout; m++) {
            const la_rec_out * o = &c->out[m];
            if (o->p && o->width)
                memset(o->p + (t * c->nh + c->h) * o->width, 0, (size_t)o->width * sizeof(float));
        }
}

// Segments in reverse, tiles inside: a segment's input rows and the output rows the tiles add
// into stay in cache while every tile passes over them.
void la_rec_bwd(const la_rec_task * c0, const float * init, const float * dfinal, float * dinit,
                void * ws) {
    la_rec_task c = *c0;
    const int64_t K = c.K, V = c.V, KV = K * V;
    la_carver cv = { (char *)ws, 0 };
    la_rec_bufs B;
    bwd_layout(c.op, K, V, c.maxlen, &cv, &B);
    c.B = &B;
    const int64_t Kp = B.Kp, nseg = (c.eos - c.bos + LA_REC_SEG - 1) / LA_REC_SEG;
    la_ckpt ck = { B.ckpt, B.grp, B.M, nseg, V * Kp };
    cm_load(B.S, init ? init + c.idx * KV : NULL, K, V, Kp);
    cm_load(B.G, dfinal ? dfinal + c.idx * KV : NULL, K, V, Kp);
    la_ckpt_run(&ck, B.S, ckpt_step, &c);  // the forward sweep: segment checkpoints
    for (int64_t seg = nseg - 1; seg >= 0; seg--) {
        const float * S0 = la_ckpt_state(&ck, seg, ckpt_step, &c);
        const int64_t t0 = c.bos + seg * LA_REC_SEG;
        zero_rows(&c, t0, LA_MIN(t0 + LA_REC_SEG, c.eos));
        seg_load(&c, seg);
        for (c.j0 = 0; c.j0 < V; c.j0 += LA_REC_W) {
            c.w = LA_MIN(LA_REC_W, V - c.j0);
            memcpy(B.Ss, S0 + c.j0 * Kp, (size_t)(c.w * Kp) * sizeof(float));
            c.op->replay(&c, seg, B.Ss, true);
            c.op->seg_bwd(&c, seg, B.G + c.j0 * Kp);
        }
    }
    if (dinit) cm_store(dinit + c.idx * KV, B.G, K, V, Kp);
}
