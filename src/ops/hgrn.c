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
// Cost: exp(g) is recomputed by every pass that needs it rather than kept in a (B,T,D) buffer,
// so the recurrent form evaluates 1 exponential per element forward and 2 backward, the chunk
// form 2 and 4. One thread, T = 8192, D = 1024 (AVX-512): recurrent 0.8 / 1.9 ns per element
// forward / backward, chunk 1.4 / 3.7; both near 0.7 / 1.7 with two threads, where the
// machine's memory bandwidth bounds them. The chunk form is the one that parallelises a single
// long sequence of few channels.
//
// Dimensions: B, T, N as in OPS.md, D channels (no heads); x, g, o (B,T,D); states (N,D).
// Threads: every pass is elementwise over channels, so each channel's result is the same however
// the channels are split. Each pass therefore splits its units (sequences or chunks) into just
// enough blocks of channels to feed the threads and otherwise keeps whole rows: a task that reads
// a few hundred bytes of each D-float row pays a TLB walk per row (measured 3x slower at
// D = 1024 with 128-channel blocks). Chunks are fixed by C, so results do not depend on the
// thread count.
#include "internal.h"
#include "ref.h"
#include "vexp.h"

#include <string.h>

#define HG_PAR_MIN (1 << 14)  // elements (B*T*D) below which a call runs on one thread

typedef struct hg_args {
    const float * x, * g;       // (B,T,D)
    const float * init;         // (N,D) or NULL
    float *       o, * final;   // (B,T,D), (N,D) or NULL
    const float * dout;         // (B,T,D)
    const float * dfinal;       // (N,D) or NULL
    float *       dx, * dg;     // (B,T,D)
    float *       dinit;        // (N,D) or NULL
    la_shape      sh;           // { B, T, D, 1, 1 }
    int64_t       D, N, C;
    int64_t       Dpad;         // D rounded up to 16: the per-thread scratch row length
    const la_opts * opts;
    // Chunk form: chunk table and per-chunk channel vectors.
    int64_t       nchk;
    int64_t *     ck_t0, * ck_n;  // (nchk) first token and sequence of each chunk
    int64_t *     coff;           // (N+1) first chunk of each sequence
    float *       P;              // (nchk, D) decay product of each chunk
    float *       S;              // (nchk, D) state before each chunk
    float *       X;              // (nchk, D) backward: exp(g_t0) dh^loc_t0, then R_c
    float *       scratch;        // (nthreads, 2, Dpad) running vectors of one task
} hg_args;

// A split of the channels into nb blocks of cw (a multiple of 16) for `units` outer units.
typedef struct hg_split {
    int64_t nb, cw;
} hg_split;

static hg_split split_for(int64_t D, int64_t units) {
    const int64_t nt = la_nthreads();
    int64_t nb = units >= nt ? 1 : (nt + LA_MAX(units, 1) - 1) / LA_MAX(units, 1);
    nb = LA_MIN(nb, (D + 15) / 16);
    const int64_t cw = ((D + nb - 1) / nb + 15) / 16 * 16;
    return (hg_split){ (D + cw - 1) / cw, cw };
}

static void load_state(float * h, const float * init, int64_t n, int64_t D, int64_t c0,
                       int64_t w) {
    if (init) memcpy(h, init + n * D + c0, (size_t)w * sizeof(float));
    else memset(h, 0, (size_t)w * sizeof(float));
}

static inline float * thread_scratch(const hg_args * a) {
    const int tid = la_thread_index();
    return a->scratch + (size_t)tid * (size_t)(2 * a->Dpad);
}

// ---------------------------------------------------------------------------------------------
// Recurrent form (channels c0 .. c0 + w of sequence n)

LA_CLONES
static void rec_fwd_task(const hg_args * a, int64_t n, int64_t c0, int64_t w) {
    const int64_t D = a->D;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    float * h0 = thread_scratch(a);
    load_state(h0, a->init, n, D, c0, w);
    const float * hp = h0;  // h_{t-1}: the previous output row
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict xt = a->x + t * D + c0;
        const float * restrict gt = a->g + t * D + c0;
        float * restrict ot = a->o + t * D + c0;
        for (int64_t c = 0; c < w; c++) ot[c] = la_expf(gt[c]) * hp[c] + xt[c];
        hp = ot;
    }
    if (a->final) memcpy(a->final + n * D + c0, hp, (size_t)w * sizeof(float));
}

// One reverse step over w channels: dh += do_t ; dx_t = dh ; dg_t = dh exp(g_t) h_{t-1} ;
// dh *= exp(g_t). (A kernel with restrict parameters, so that it vectorises without alias
// checks.)
static inline void rev_step(int64_t w, const float * restrict gt, const float * restrict dot,
                            const float * restrict hprev, float * restrict dxt,
                            float * restrict dgt, float * restrict dh) {
    for (int64_t c = 0; c < w; c++) {
        const float e = la_expf(gt[c]);
        const float d = dh[c] + dot[c];
        dxt[c] = d;
        dgt[c] = d * e * hprev[c];
        dh[c] = d * e;
    }
}

LA_CLONES
static void rec_bwd_task(const hg_args * a, int64_t n, int64_t c0, int64_t w) {
    const int64_t D = a->D;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    float * h0 = thread_scratch(a), * dh = h0 + a->Dpad;
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
    load_state(dh, a->dfinal, n, D, c0, w);
    for (int64_t t = eos - 1; t >= bos; t--)
        rev_step(w, a->g + t * D + c0, a->dout + t * D + c0,
                 t > bos ? a->dg + (t - 1) * D + c0 : h0, a->dx + t * D + c0,
                 a->dg + t * D + c0, dh);
    if (a->dinit) memcpy(a->dinit + n * D + c0, dh, (size_t)w * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Chunk form (channels c0 .. c0 + w of chunk ck, or of every chunk of sequence n)

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
static void chunk_local_fwd(const hg_args * a, float * h, int64_t ck, int64_t c0, int64_t w) {
    const int64_t D = a->D;
    int64_t t0, t1;
    bool first;
    chunk_range(a, ck, &t0, &t1, &first);
    float * restrict p = a->P + ck * D + c0;
    {
        const float * restrict xt = a->x + t0 * D + c0;
        const float * restrict gt = a->g + t0 * D + c0;
        float * restrict ht = h + t0 * D + c0;
        for (int64_t c = 0; c < w; c++) {
            ht[c] = xt[c];
            p[c] = la_expf(gt[c]);
        }
    }
    for (int64_t t = t0 + 1; t < t1; t++) {
        const float * restrict xt = a->x + t * D + c0;
        const float * restrict gt = a->g + t * D + c0;
        const float * restrict hp = h + (t - 1) * D + c0;
        float * restrict ht = h + t * D + c0;
        for (int64_t c = 0; c < w; c++) {
            const float e = la_expf(gt[c]);
            ht[c] = e * hp[c] + xt[c];
            p[c] *= e;
        }
    }
}

// Pass 2: S_[c] for every chunk of sequence n, in order; the final state into fin.
LA_CLONES
static void chunk_carry_fwd(const hg_args * a, const float * h, int64_t n, int64_t c0,
                            int64_t w, float * fin) {
    const int64_t D = a->D;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    float * restrict s = thread_scratch(a);
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

// Pass 3: h_t += a_t S_[c], a_t = prod_{s=t0}^{t} exp(g_s), formed as a running product
// q_t = exp(g_t) q_{t-1}, q_{t0-1} = S_[c]. A sequence's first chunk without an initial state
// has S_[c] = 0 and is left as it is.
LA_CLONES
static void chunk_fix_fwd(const hg_args * a, float * h, int64_t ck, int64_t c0, int64_t w) {
    const int64_t D = a->D;
    int64_t t0, t1;
    bool first;
    chunk_range(a, ck, &t0, &t1, &first);
    if (first && !a->init) return;
    float * restrict q = thread_scratch(a);
    memcpy(q, a->S + ck * D + c0, (size_t)w * sizeof(float));
    for (int64_t t = t0; t < t1; t++) {
        const float * restrict gt = a->g + t * D + c0;
        float * restrict ht = h + t * D + c0;
        for (int64_t c = 0; c < w; c++) {
            q[c] *= la_expf(gt[c]);
            ht[c] += q[c];
        }
    }
}

// Backward, local pass: dx <- dh^loc (the chunk's adjoint from a zero right carry),
// X_c <- exp(g_t0) dh^loc_t0.
LA_CLONES
static void chunk_local_bwd(const hg_args * a, int64_t ck, int64_t c0, int64_t w) {
    const int64_t D = a->D;
    int64_t t0, t1;
    bool first;
    chunk_range(a, ck, &t0, &t1, &first);
    // r = dL/dh_t from this chunk's outputs only: r += do_t ; dx_t = r ; r *= exp(g_t).
    float * restrict r = a->X + ck * D + c0;
    for (int64_t c = 0; c < w; c++) r[c] = 0.0f;
    for (int64_t t = t1 - 1; t >= t0; t--) {
        const float * restrict gt = a->g + t * D + c0;
        const float * restrict dot = a->dout + t * D + c0;
        float * restrict dxt = a->dx + t * D + c0;
        for (int64_t c = 0; c < w; c++) {
            const float d = r[c] + dot[c];
            dxt[c] = d;
            r[c] = d * la_expf(gt[c]);
        }
    }
}

// Backward carries of sequence n, in reverse: X_c <- R_c (the adjoint arriving at the chunk's
// last state from later tokens), R_{c-1} = exp(g_t0) dh^loc_t0 + P_c R_c.
LA_CLONES
static void chunk_carry_bwd(const hg_args * a, int64_t n, int64_t c0, int64_t w) {
    const int64_t D = a->D;
    float * restrict r = thread_scratch(a);
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
static void chunk_fix_bwd(const hg_args * a, int64_t ck, int64_t c0, int64_t w) {
    const int64_t D = a->D;
    int64_t t0, t1;
    bool first;
    chunk_range(a, ck, &t0, &t1, &first);
    float * restrict r = thread_scratch(a);
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

// Workspace, carved in this order: the per-thread scratch (nthreads, 2, Dpad), and for the
// chunk form ck_t0, ck_n (nchk), coff (N+1), P, S (nchk, D), and for its backward X (nchk, D).
static size_t ws_layout(hg_args * a, void * base, bool backward) {
    const int64_t nchk = a->nchk, D = a->D;
    la_carver cv = { base, 0 };
    a->scratch = la_carve(&cv, (size_t)(la_nthreads() * 2 * a->Dpad) * sizeof(float));
    if (a->opts->form != LA_FORM_CHUNK) return cv.used;
    a->ck_t0 = la_carve(&cv, (size_t)nchk * sizeof(int64_t));
    a->ck_n = la_carve(&cv, (size_t)nchk * sizeof(int64_t));
    a->coff = la_carve(&cv, (size_t)(a->N + 1) * sizeof(int64_t));
    a->P = la_carve(&cv, (size_t)(nchk * D) * sizeof(float));
    a->S = la_carve(&cv, (size_t)(nchk * D) * sizeof(float));
    a->X = backward ? la_carve(&cv, (size_t)(nchk * D) * sizeof(float)) : NULL;
    return cv.used;
}

static la_status hg_setup(hg_args * a, int64_t B, int64_t T, int64_t D, const la_opts * opts) {
    a->sh = (la_shape){ B, T, D, 1, 1 };
    a->opts = opts;
    la_status st = la_check_common(a->sh, opts, &a->N);
    if (st != LA_STATUS_OK) return st;
    if (opts->scale != 0.0f) return LA_STATUS_INVALID_ARG;
    a->D = D;
    a->Dpad = (D + 15) / 16 * 16;
    a->C = la_opts_chunk(opts);
    a->nchk = count_chunks(a->sh, opts, a->N, a->C);
    return LA_STATUS_OK;
}

size_t la_hgrn_workspace_size(bool backward, int64_t B, int64_t T, int64_t D,
                              const la_opts * opts) {
    hg_args a = { 0 };
    if (hg_setup(&a, B, T, D, opts) != LA_STATUS_OK) return 0;
    if (opts->form == LA_FORM_REF) {
        la_ref_dims d = { a.sh, a.N, opts->cu_seqlens, 0 };
        return (size_t)la_hgrn_ref_ws_elems(d) * sizeof(float) + LA_ALIGN;
    }
    return ws_layout(&a, NULL, backward) + LA_ALIGN;
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

// Runs f over units x channel blocks, in parallel.
typedef enum {
    P_REC_FWD, P_REC_BWD, P_LOCAL_FWD, P_CARRY_FWD, P_FIX_FWD, P_LOCAL_BWD, P_CARRY_BWD,
    P_FIX_BWD
} hg_pass;

static void run_pass(const hg_args * a, hg_pass pass, int64_t units, float * h, float * fin) {
    const hg_split sp = split_for(a->D, units);
    const int64_t ntask = units * sp.nb;
    // Below HG_PAR_MIN elements a pass costs less than waking the threads (and far less than a
    // barrier on a busy machine); the results are the same either way.
    const bool par = a->sh.B * a->sh.T * a->D >= HG_PAR_MIN;
    (void)par;  // read by the pragma only
#pragma omp parallel for schedule(static) if (par)
    for (int64_t i = 0; i < ntask; i++) {
        const int64_t u = i / sp.nb, c0 = (i % sp.nb) * sp.cw, w = LA_MIN(sp.cw, a->D - c0);
        switch (pass) {
        case P_REC_FWD:   rec_fwd_task(a, u, c0, w); break;
        case P_REC_BWD:   rec_bwd_task(a, u, c0, w); break;
        case P_LOCAL_FWD: chunk_local_fwd(a, h, u, c0, w); break;
        case P_CARRY_FWD: chunk_carry_fwd(a, h, u, c0, w, fin); break;
        case P_FIX_FWD:   chunk_fix_fwd(a, h, u, c0, w); break;
        case P_LOCAL_BWD: chunk_local_bwd(a, u, c0, w); break;
        case P_CARRY_BWD: chunk_carry_bwd(a, u, c0, w); break;
        case P_FIX_BWD:   chunk_fix_bwd(a, u, c0, w); break;
        }
    }
}

// The three forward passes of the chunk form, writing h into h (o, or dg for the backward).
static void chunk_forward(const hg_args * a, float * h, float * fin) {
    run_pass(a, P_LOCAL_FWD, a->nchk, h, NULL);
    run_pass(a, P_CARRY_FWD, a->N, h, fin);
    run_pass(a, P_FIX_FWD, a->nchk, h, NULL);
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
    } else {
        ws_layout(a, ws, backward);
        if (opts->form == LA_FORM_RECURRENT) {
            run_pass(a, backward ? P_REC_BWD : P_REC_FWD, a->N, NULL, NULL);
        } else {
            chunk_table(a);
            if (backward) {
                chunk_forward(a, a->dg, NULL);
                run_pass(a, P_LOCAL_BWD, a->nchk, NULL, NULL);
                run_pass(a, P_CARRY_BWD, a->N, NULL, NULL);
                run_pass(a, P_FIX_BWD, a->nchk, NULL, NULL);
            } else {
                chunk_forward(a, a->o, a->final);
            }
        }
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
