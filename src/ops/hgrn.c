// hgrn: HGRN v1 elementwise gated recurrence (OPS.md 2.13), in three forms.
//
//   h_t = exp(g_t) o h_{t-1} + x_t ;   o_t = h_t
//
// Backward (ALGORITHMS.md 2.3), reverse time with dh_t = dL/dh_t:
//   dh_t = do_t + exp(g_{t+1}) o dh_{t+1}   (dh_T starts from dfinal_state)
//   dx_t = dh_t ;  dg_t = dh_t o exp(g_t) o h_{t-1} ;  dinitial_state = exp(g_1) o dh_1
//
// Forms
//   ref        plain recurrence in src/ops/hgrn_ref.c (single-threaded oracle).
//   recurrent  token loop vectorised over a block of channels; one task per (sequence, block).
//              The backward stores h_t in dg (same shape) on a forward pass, then runs the
//              adjoint in reverse, overwriting dg_t once h_t is no longer needed.
//   chunk      chunkwise parallel scan (ALGORITHMS.md 1: the transition of a chunk is the
//              diagonal Diag(prod exp(g))). Time is split into chunks of C tokens:
//                pass 1  (chunks x blocks)   scan each chunk from a zero state into o, and
//                                            record its decay product P_c = prod exp(g_t)
//                pass 2  (sequences x blocks) carries in order: S_[c+1] = P_c S_[c] + o_last
//                pass 3  (chunks x blocks)   o_t += a_t S_[c], a_t = prod_{chunk start..t} exp(g)
//              The backward is the same scan run twice: the forward's three passes rebuild h
//              (into dg), then in reverse time a local scan from zero (into dx), a carry pass
//              R_{c-1} = exp(g_{t0}) dh^loc_{t0} + P_c R_c, and a fix-up
//              dh_t = dh^loc_t + b_t R_c with b_t = prod_{s=t+1}^{t1-1} exp(g_s), after which
//              dg_t = dh_t exp(g_t) h_{t-1} (h_{t0-1} = S_[c]).
// Every product of decays is a product of factors in (0, 1] for g <= 0: nothing is divided by
// a decay, and the chunk summaries are chunk-local, so gates of -20 per step and sequences of
// any length are safe.
//
// Dimensions: B, T, N as in OPS.md, D channels (no heads); x, g, o (B,T,D); states (N,D).
// Work is split into fixed blocks of channels and fixed chunks of tokens, each computed by one
// thread in a fixed order, so results do not depend on the thread count.
#include "internal.h"
#include "ref.h"
#include "vexp.h"

#include <string.h>

#define HG_CB 128  // channels per task (a multiple of the vector width)

typedef struct hg_args {
    const float * x, * g;       // (B,T,D)
    const float * init;         // (N,D) or NULL
    float *       o, * final;   // (B,T,D), (N,D) or NULL
    const float * dout;         // (B,T,D)
    const float * dfinal;       // (N,D) or NULL
    float *       dx, * dg;     // (B,T,D)
    float *       dinit;        // (N,D) or NULL
    la_shape      sh;           // { B, T, D, 1, 1 }
    int64_t       D, N, C, nblk;
    const la_opts * opts;
    // Chunk form: chunk table and per-chunk channel vectors.
    int64_t       nchk;
    int64_t *     ck_t0, * ck_n;  // (nchk) first token and sequence of each chunk
    int64_t *     coff;           // (N+1) first chunk of each sequence
    float *       P;              // (nchk, D) decay product of each chunk
    float *       S;              // (nchk, D) state before each chunk
    float *       X;              // (nchk, D) backward: exp(g_t0) dh^loc_t0, then R_c
    float *       E;              // (nthreads, C, HG_CB) backward: exp(g) of one chunk
} hg_args;

static inline void blk_range(const hg_args * a, int64_t blk, int64_t * c0, int64_t * w) {
    *c0 = blk * HG_CB;
    *w = LA_MIN(HG_CB, a->D - *c0);
}

static void load_state(float * h, const float * init, int64_t n, int64_t D, int64_t c0,
                       int64_t w) {
    if (init) memcpy(h, init + n * D + c0, (size_t)w * sizeof(float));
    else memset(h, 0, (size_t)w * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Recurrent form

LA_CLONES
static void rec_fwd_task(const hg_args * a, int64_t n, int64_t blk) {
    const int64_t D = a->D;
    int64_t c0, w, bos, eos;
    blk_range(a, blk, &c0, &w);
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    float h[HG_CB];
    load_state(h, a->init, n, D, c0, w);
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict xt = a->x + t * D + c0;
        const float * restrict gt = a->g + t * D + c0;
        float * restrict ot = a->o + t * D + c0;
        for (int64_t c = 0; c < w; c++) {
            h[c] = la_expf(gt[c]) * h[c] + xt[c];
            ot[c] = h[c];
        }
    }
    if (a->final) memcpy(a->final + n * D + c0, h, (size_t)w * sizeof(float));
}

LA_CLONES
static void rec_bwd_task(const hg_args * a, int64_t n, int64_t blk) {
    const int64_t D = a->D;
    int64_t c0, w, bos, eos;
    blk_range(a, blk, &c0, &w);
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    float h0[HG_CB], dh[HG_CB];
    load_state(h0, a->init, n, D, c0, w);
    // Forward: h_t into dg.
    const float * hp = h0;
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict xt = a->x + t * D + c0;
        const float * restrict gt = a->g + t * D + c0;
        float * restrict ht = a->dg + t * D + c0;
        for (int64_t c = 0; c < w; c++) ht[c] = la_expf(gt[c]) * hp[c] + xt[c];
        hp = ht;
    }
    // Reverse: dh += do_t ; dx_t = dh ; dg_t = dh exp(g_t) h_{t-1} ; dh *= exp(g_t).
    load_state(dh, a->dfinal, n, D, c0, w);
    for (int64_t t = eos - 1; t >= bos; t--) {
        const float * restrict gt = a->g + t * D + c0;
        const float * restrict dot = a->dout + t * D + c0;
        const float * restrict hprev = t > bos ? a->dg + (t - 1) * D + c0 : h0;
        float * restrict dxt = a->dx + t * D + c0;
        float * restrict dgt = a->dg + t * D + c0;
        for (int64_t c = 0; c < w; c++) {
            const float e = la_expf(gt[c]);
            const float d = dh[c] + dot[c];
            dxt[c] = d;
            dgt[c] = d * e * hprev[c];
            dh[c] = d * e;
        }
    }
    if (a->dinit) memcpy(a->dinit + n * D + c0, dh, (size_t)w * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Chunk form

static inline void chunk_range(const hg_args * a, int64_t ck, int64_t * t0, int64_t * t1,
                               bool * first) {
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, a->ck_n[ck], &bos, &eos);
    *t0 = a->ck_t0[ck];
    *t1 = LA_MIN(*t0 + a->C, eos);
    *first = *t0 == bos;
}

// Pass 1: h (B,T,D) <- the chunk scanned from a zero state; P_c <- prod exp(g).
LA_CLONES
static void chunk_local_fwd(const hg_args * a, float * h, int64_t ck, int64_t blk) {
    const int64_t D = a->D;
    int64_t c0, w, t0, t1;
    bool first;
    blk_range(a, blk, &c0, &w);
    chunk_range(a, ck, &t0, &t1, &first);
    float p[HG_CB];
    for (int64_t c = 0; c < w; c++) p[c] = 1.0f;
    for (int64_t t = t0; t < t1; t++) {
        const float * restrict xt = a->x + t * D + c0;
        const float * restrict gt = a->g + t * D + c0;
        float * restrict ht = h + t * D + c0;
        if (t == t0) {
            for (int64_t c = 0; c < w; c++) {
                ht[c] = xt[c];
                p[c] = la_expf(gt[c]);
            }
        } else {
            const float * restrict hp = h + (t - 1) * D + c0;
            for (int64_t c = 0; c < w; c++) {
                const float e = la_expf(gt[c]);
                ht[c] = e * hp[c] + xt[c];
                p[c] *= e;
            }
        }
    }
    memcpy(a->P + ck * D + c0, p, (size_t)w * sizeof(float));
}

// Pass 2: S_[c] for every chunk of sequence n, in order; returns the final state in fin.
static void chunk_carry_fwd(const hg_args * a, const float * h, int64_t n, int64_t blk,
                            float * fin) {
    const int64_t D = a->D;
    int64_t c0, w, bos, eos;
    blk_range(a, blk, &c0, &w);
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    float s[HG_CB];
    load_state(s, a->init, n, D, c0, w);
    for (int64_t ck = a->coff[n]; ck < a->coff[n + 1]; ck++) {
        const int64_t t1 = LA_MIN(a->ck_t0[ck] + a->C, eos);
        const float * restrict pc = a->P + ck * D + c0;
        const float * restrict hl = h + (t1 - 1) * D + c0;
        float * restrict Sc = a->S + ck * D + c0;
        for (int64_t c = 0; c < w; c++) {
            Sc[c] = s[c];
            s[c] = pc[c] * s[c] + hl[c];
        }
    }
    if (fin) memcpy(fin + n * D + c0, s, (size_t)w * sizeof(float));
}

// Pass 3: h_t += a_t S_[c], a_t = prod_{s=t0}^{t} exp(g_s). A sequence's first chunk without an
// initial state has S_[c] = 0 and is left as it is.
LA_CLONES
static void chunk_fix_fwd(const hg_args * a, float * h, int64_t ck, int64_t blk) {
    const int64_t D = a->D;
    int64_t c0, w, t0, t1;
    bool first;
    blk_range(a, blk, &c0, &w);
    chunk_range(a, ck, &t0, &t1, &first);
    if (first && !a->init) return;
    float p[HG_CB];
    const float * restrict Sc = a->S + ck * D + c0;
    for (int64_t c = 0; c < w; c++) p[c] = Sc[c];
    for (int64_t t = t0; t < t1; t++) {
        const float * restrict gt = a->g + t * D + c0;
        float * restrict ht = h + t * D + c0;
        for (int64_t c = 0; c < w; c++) {
            p[c] *= la_expf(gt[c]);  // a_t S_[c], formed as a running product
            ht[c] += p[c];
        }
    }
}

// Backward pass 3 of the forward fused with the local reverse scan of the chunk:
// h (in dg) gets its carry, dx <- dh^loc (the chunk's adjoint from a zero right carry),
// X_c <- exp(g_t0) dh^loc_t0. E (C, HG_CB) thread scratch holds the chunk's exp(g).
LA_CLONES
static void chunk_fix_local_bwd(const hg_args * a, int64_t ck, int64_t blk, float * E) {
    const int64_t D = a->D;
    int64_t c0, w, t0, t1;
    bool first;
    blk_range(a, blk, &c0, &w);
    chunk_range(a, ck, &t0, &t1, &first);
    for (int64_t t = t0; t < t1; t++) {
        const float * restrict gt = a->g + t * D + c0;
        float * restrict Et = E + (t - t0) * HG_CB;
        for (int64_t c = 0; c < w; c++) Et[c] = la_expf(gt[c]);
    }
    float p[HG_CB];
    if (!first || a->init) {
        const float * restrict Sc = a->S + ck * D + c0;
        for (int64_t c = 0; c < w; c++) p[c] = Sc[c];
        for (int64_t t = t0; t < t1; t++) {
            const float * restrict Et = E + (t - t0) * HG_CB;
            float * restrict ht = a->dg + t * D + c0;
            for (int64_t c = 0; c < w; c++) {
                p[c] *= Et[c];
                ht[c] += p[c];
            }
        }
    }
    // r = dL/dh_t from this chunk's outputs only: r += do_t ; dx_t = r ; r *= exp(g_t).
    for (int64_t c = 0; c < w; c++) p[c] = 0.0f;
    for (int64_t t = t1 - 1; t >= t0; t--) {
        const float * restrict Et = E + (t - t0) * HG_CB;
        const float * restrict dot = a->dout + t * D + c0;
        float * restrict dxt = a->dx + t * D + c0;
        for (int64_t c = 0; c < w; c++) {
            const float r = p[c] + dot[c];
            dxt[c] = r;
            p[c] = r * Et[c];
        }
    }
    memcpy(a->X + ck * D + c0, p, (size_t)w * sizeof(float));
}

// Backward carries of sequence n, in reverse: X_c <- R_c (the adjoint arriving at the chunk's
// last state from later tokens), R_{c-1} = exp(g_t0) dh^loc_t0 + P_c R_c.
static void chunk_carry_bwd(const hg_args * a, int64_t n, int64_t blk) {
    const int64_t D = a->D;
    int64_t c0, w;
    blk_range(a, blk, &c0, &w);
    float r[HG_CB];
    load_state(r, a->dfinal, n, D, c0, w);
    for (int64_t ck = a->coff[n + 1] - 1; ck >= a->coff[n]; ck--) {
        const float * restrict pc = a->P + ck * D + c0;
        float * restrict Xc = a->X + ck * D + c0;
        for (int64_t c = 0; c < w; c++) {
            const float e0 = Xc[c];
            Xc[c] = r[c];
            r[c] = e0 + pc[c] * r[c];
        }
    }
    if (a->dinit) memcpy(a->dinit + n * D + c0, r, (size_t)w * sizeof(float));
}

// Backward fix-up: dh_t = dh^loc_t + b_t R_c, b_t = prod_{s=t+1}^{t1-1} exp(g_s); dx_t = dh_t;
// dg_t = dh_t exp(g_t) h_{t-1}, in reverse so that h_{t-1} (in dg) is still there.
LA_CLONES
static void chunk_fix_bwd(const hg_args * a, int64_t ck, int64_t blk) {
    const int64_t D = a->D;
    int64_t c0, w, t0, t1;
    bool first;
    blk_range(a, blk, &c0, &w);
    chunk_range(a, ck, &t0, &t1, &first);
    float r[HG_CB];
    memcpy(r, a->X + ck * D + c0, (size_t)w * sizeof(float));
    for (int64_t t = t1 - 1; t >= t0; t--) {
        const float * restrict gt = a->g + t * D + c0;
        const float * restrict hprev = t > t0 ? a->dg + (t - 1) * D + c0 : a->S + ck * D + c0;
        float * restrict dxt = a->dx + t * D + c0;
        float * restrict dgt = a->dg + t * D + c0;
        for (int64_t c = 0; c < w; c++) {
            const float e = la_expf(gt[c]);
            const float d = dxt[c] + r[c];  // r = b_t R_c
            dxt[c] = d;
            dgt[c] = d * e * hprev[c];
            r[c] *= e;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Drivers

static int64_t count_chunks(la_shape sh, const la_opts * opts, int64_t N, int64_t C) {
    int64_t nchk = 0;
    for (int64_t n = 0; n < N; n++) {
        int64_t bos, eos;
        la_seq_bounds(opts, sh, n, &bos, &eos);
        nchk += (eos - bos + C - 1) / C;
    }
    return nchk;
}

// Chunk-form workspace, carved in this order: ck_t0, ck_n (nchk), coff (N+1), P, S (nchk, D),
// and for the backward X (nchk, D) and E (nthreads, C, HG_CB).
static size_t chunk_layout(hg_args * a, void * base, bool backward) {
    const int64_t nchk = a->nchk, D = a->D;
    la_carver cv = { base, 0 };
    a->ck_t0 = la_carve(&cv, (size_t)nchk * sizeof(int64_t));
    a->ck_n = la_carve(&cv, (size_t)nchk * sizeof(int64_t));
    a->coff = la_carve(&cv, (size_t)(a->N + 1) * sizeof(int64_t));
    a->P = la_carve(&cv, (size_t)(nchk * D) * sizeof(float));
    a->S = la_carve(&cv, (size_t)(nchk * D) * sizeof(float));
    a->X = backward ? la_carve(&cv, (size_t)(nchk * D) * sizeof(float)) : NULL;
    a->E = backward ? la_carve(&cv, (size_t)(la_nthreads() * a->C * HG_CB) * sizeof(float))
                    : NULL;
    return cv.used;
}

static la_status hg_setup(hg_args * a, int64_t B, int64_t T, int64_t D, const la_opts * opts) {
    a->sh = (la_shape){ B, T, D, 1, 1 };
    a->opts = opts;
    la_status st = la_check_common(a->sh, opts, &a->N);
    if (st != LA_STATUS_OK) return st;
    if (opts->scale != 0.0f) return LA_STATUS_INVALID_ARG;
    a->D = D;
    a->C = la_opts_chunk(opts);
    a->nblk = (D + HG_CB - 1) / HG_CB;
    a->nchk = count_chunks(a->sh, opts, a->N, a->C);
    return LA_STATUS_OK;
}

size_t la_hgrn_workspace_size(bool backward, int64_t B, int64_t T, int64_t D,
                              const la_opts * opts) {
    hg_args a = { 0 };
    if (hg_setup(&a, B, T, D, opts) != LA_STATUS_OK) return 0;
    if (opts->form == LA_FORM_REF) {
        la_ref_dims d = { a.sh, a.N, opts->cu_seqlens, 0 };
        return (size_t)la_hgrn_ref_ws_elems(d) * sizeof(float);
    }
    if (opts->form == LA_FORM_RECURRENT) return 0;
    return chunk_layout(&a, NULL, backward);
}

static void chunk_table(hg_args * a) {
    int64_t ck = 0;
    for (int64_t n = 0; n < a->N; n++) {
        int64_t bos, eos;
        la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
        a->coff[n] = ck;
        for (int64_t t0 = bos; t0 < eos; t0 += a->C, ck++) {
            a->ck_t0[ck] = t0;
            a->ck_n[ck] = n;
        }
    }
    a->coff[a->N] = ck;
}

// The three forward passes of the chunk form, writing h into h (o, or dg for the backward).
static void chunk_forward(const hg_args * a, float * h, float * fin) {
    const int64_t nb = a->nblk, nct = a->nchk * nb, nst = a->N * nb;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nct; i++) chunk_local_fwd(a, h, i / nb, i % nb);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nst; i++) chunk_carry_fwd(a, h, i / nb, i % nb, fin);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nct; i++) chunk_fix_fwd(a, h, i / nb, i % nb);
    }
}

static void chunk_backward(const hg_args * a) {
    const int64_t nb = a->nblk, nct = a->nchk * nb, nst = a->N * nb;
#pragma omp parallel
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float * E = a->E + (size_t)tid * (size_t)(a->C * HG_CB);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nct; i++) chunk_local_fwd(a, a->dg, i / nb, i % nb);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nst; i++) chunk_carry_fwd(a, a->dg, i / nb, i % nb, NULL);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nct; i++) chunk_fix_local_bwd(a, i / nb, i % nb, E);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nst; i++) chunk_carry_bwd(a, i / nb, i % nb);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nct; i++) chunk_fix_bwd(a, i / nb, i % nb);
    }
}

static la_status hg_run(hg_args * a, bool backward) {
    const la_opts * opts = a->opts;
    const size_t need = la_hgrn_workspace_size(backward, a->sh.B, a->sh.T, a->D, opts);
    void * ws;
    bool owned;
    la_status st = la_ws_acquire(opts, need, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    if (opts->form == LA_FORM_REF) {
        la_ref_dims d = { a->sh, a->N, opts->cu_seqlens, 0 };
        if (backward)
            la_hgrn_bwd_ref(a->dx, a->dg, a->dinit, a->dout, a->dfinal, a->x, a->g, a->init, d,
                            ws);
        else
            la_hgrn_fwd_ref(a->o, a->final, a->x, a->g, a->init, d, ws);
    } else if (opts->form == LA_FORM_RECURRENT) {
        const int64_t ntask = a->N * a->nblk;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < ntask; i++) {
            if (backward) rec_bwd_task(a, i / a->nblk, i % a->nblk);
            else rec_fwd_task(a, i / a->nblk, i % a->nblk);
        }
    } else {
        chunk_layout(a, ws, backward);
        chunk_table(a);
        if (backward) chunk_backward(a);
        else chunk_forward(a, a->o, a->final);
    }
    la_ws_release(ws, owned);
    return LA_STATUS_OK;
}

la_status la_hgrn_forward(float * o, float * final_state, const float * x, const float * g,
                          const float * initial_state, int64_t B, int64_t T, int64_t D,
                          const la_opts * opts) {
    hg_args a = { .x = x, .g = g, .init = initial_state, .o = o, .final = final_state };
    la_status st = hg_setup(&a, B, T, D, opts);
    if (st != LA_STATUS_OK) return st;
    if (!o || !x || !g) return LA_STATUS_INVALID_ARG;
    return hg_run(&a, false);
}

la_status la_hgrn_backward(float * dx, float * dg, float * dinitial_state,
                           const float * dout, const float * dfinal_state,
                           const float * x, const float * g, const float * initial_state,
                           int64_t B, int64_t T, int64_t D, const la_opts * opts) {
    hg_args a = { .x = x, .g = g, .init = initial_state, .dout = dout, .dfinal = dfinal_state,
                  .dx = dx, .dg = dg, .dinit = dinitial_state };
    la_status st = hg_setup(&a, B, T, D, opts);
    if (st != LA_STATUS_OK) return st;
    if (!dx || !dg || !dout || !x || !g) return LA_STATUS_INVALID_ARG;
    return hg_run(&a, true);
}
