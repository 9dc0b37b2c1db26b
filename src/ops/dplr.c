// dplr_delta_rule, iplr_delta_rule and rwkv7: the public drivers of the dp engine
// (OPS.md 2.9, 2.10, 2.12; forms in delta.h).
//
//   S_t = Diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T ;   o_t = s S_t^T q_t
//
//   dplr   as written; gk may be NULL (then iplr semantics); s defaults to K^-1/2
//   iplr   gk = 0 (no decay); s defaults to K^-1/2
//   rwkv7  fla's argument order (r, w, k, v, a, b): q = r, gk = w (a log decay); s defaults
//          to 1.0 (OPS.md 1.6: every form, unlike fla's fused_recurrent_rwkv7)
//
// None of the delta family's in-kernel flags applies, and there are no grouped value heads
// (la_check_common rejects both). The backward saves nothing from the forward: the engine
// recomputes its states.
//
// Dimensions: B, T, H, K, V, N as in OPS.md. q, k, a, b, gk (B,T,H,K); v, o (B,T,H,V);
// states (N,H,K,V). Threads split the N*H (sequence, head) pairs, task = n * H + h.
#include "delta.h"

#include "ref.h"

#include <string.h>

// Resolves the engine arguments that do not point at tensors; rwkv selects rwkv7's scale.
static la_status dp_config(la_dp_args * x, la_shape sh, const la_opts * opts, bool rwkv) {
    memset(x, 0, sizeof *x);
    la_status st = la_check_common(sh, opts, &x->N);
    if (st != LA_STATUS_OK) return st;
    x->sh = sh;
    x->sh.HV = sh.H;
    x->opts = opts;
    x->scale = rwkv && opts->scale == 0.0f ? 1.0f : la_opts_scale(opts, sh.K);
    // Default chunk 32, not 64: with four intra-chunk score matrices and the solve, the C-terms
    // of the cost (2C(5K+4V) + C^2/3 per token) outweigh the shorter state chain at C = 64
    // (T = 8192, K = V = 128: forward 288 ms at C = 32 vs 341 ms at C = 64; fla uses 16).
    x->C = opts->chunk_size > 0 ? opts->chunk_size : 32;
    x->maxlen = la_max_seq_len(sh, opts);
    return LA_STATUS_OK;
}

static la_ref_dims dp_ref_dims(const la_dp_args * x) {
    return (la_ref_dims){ x->sh, x->N, x->opts->cu_seqlens, (double)x->scale };
}

// Per-thread engine bytes (recurrent, chunk), 64-byte aligned.
static size_t dp_per(const la_dp_args * x, bool backward) {
    return la_align_up(x->opts->form == LA_FORM_RECURRENT ? la_dp_rec_bytes(x, backward)
                                                          : la_dp_chunk_bytes(x, backward));
}

// The bytes a call carves: the ref workspace, or one engine scratch per thread.
static size_t dp_carved(const la_dp_args * x, bool backward) {
    if (x->opts->form == LA_FORM_REF)
        return la_align_up((size_t)la_dplr_ref_ws_elems(dp_ref_dims(x)) * sizeof(float));
    return (size_t)la_slots(x->N * x->sh.H) * dp_per(x, backward);
}

static size_t dp_workspace(bool backward, la_shape sh, const la_opts * opts, bool rwkv) {
    la_dp_args x;
    if (dp_config(&x, sh, opts, rwkv) != LA_STATUS_OK) return 0;
    return dp_carved(&x, backward) + LA_ALIGN;
}

typedef struct dp_task_ctx {
    const la_dp_args * x;
    bool               backward;
} dp_task_ctx;

// One (sequence n, head h) task: task = n * H + h.
static void dp_task(const void * ctx, int64_t task, void * scratch) {
    const dp_task_ctx * c = ctx;
    const int64_t H = c->x->sh.H, n = task / H, h = task % H;
    if (c->x->opts->form == LA_FORM_RECURRENT) la_dp_rec_task(c->x, n, h, scratch, c->backward);
    else la_dp_chunk_task(c->x, n, h, scratch, c->backward);
}

// x carries the tensors of the call (set by the entry points); its other fields are resolved
// here.
static la_status dp_run(la_dp_args * x, la_shape sh, const la_opts * opts, bool rwkv,
                        bool backward) {
    la_dp_args r;
    la_status st = dp_config(&r, sh, opts, rwkv);
    if (st != LA_STATUS_OK) return st;
    x->sh = r.sh;
    x->N = r.N;
    x->opts = r.opts;
    x->scale = r.scale;
    x->C = r.C;
    x->maxlen = r.maxlen;
    if (!x->q || !x->k || !x->v || !x->a || !x->b) return LA_STATUS_INVALID_ARG;
    if (rwkv && !x->gk) return LA_STATUS_INVALID_ARG;  // rwkv7's decay w is not optional
    if (!backward && !x->o) return LA_STATUS_INVALID_ARG;
    if (backward && (!x->dout || !x->dq || !x->dk || !x->dv || !x->da || !x->db ||
                     (x->gk != NULL) != (x->dgk != NULL)))
        return LA_STATUS_INVALID_ARG;
    void * ws;
    bool owned;
    st = la_ws_acquire(opts, dp_carved(x, backward) + LA_ALIGN, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    if (opts->form == LA_FORM_REF) {
        const la_ref_dims d = dp_ref_dims(x);
        if (backward)
            la_dplr_bwd_ref(x->dq, x->dk, x->dv, x->da, x->db, x->dgk, x->dinit, x->dout,
                            x->dfinal, x->q, x->k, x->v, x->a, x->b, x->gk, x->init, d, ws);
        else
            la_dplr_fwd_ref(x->o, x->final, x->q, x->k, x->v, x->a, x->b, x->gk, x->init, d, ws);
    } else {
        const dp_task_ctx ctx = { x, backward };
        la_run_tasks(x->N * x->sh.H, ws, dp_per(x, backward), dp_task, &ctx);
    }
    la_ws_release(ws, owned);
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// dplr_delta_rule

size_t la_dplr_delta_rule_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return dp_workspace(backward, sh, opts, false);
}

la_status la_dplr_delta_rule_forward(float * o, float * final_state, const float * q,
                                     const float * k, const float * v, const float * a,
                                     const float * b, const float * gk,
                                     const float * initial_state, la_shape sh,
                                     const la_opts * opts) {
    la_dp_args x = { .q = q, .k = k, .a = a, .b = b, .v = v, .gk = gk, .init = initial_state,
                     .o = o, .final = final_state };
    return dp_run(&x, sh, opts, false, false);
}

la_status la_dplr_delta_rule_backward(float * dq, float * dk, float * dv, float * da,
                                      float * db, float * dgk, float * dinitial_state,
                                      const float * dout, const float * dfinal_state,
                                      const float * q, const float * k, const float * v,
                                      const float * a, const float * b, const float * gk,
                                      const float * initial_state, la_shape sh,
                                      const la_opts * opts) {
    la_dp_args x = { .q = q, .k = k, .a = a, .b = b, .v = v, .gk = gk, .init = initial_state,
                     .dout = dout, .dfinal = dfinal_state, .dq = dq, .dk = dk, .da = da,
                     .db = db, .dv = dv, .dgk = dgk, .dinit = dinitial_state };
    return dp_run(&x, sh, opts, false, true);
}

// ---------------------------------------------------------------------------------------------
// iplr_delta_rule: dplr with gk = 0, i.e. no decay (gk NULL)

size_t la_iplr_delta_rule_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return dp_workspace(backward, sh, opts, false);
}

la_status la_iplr_delta_rule_forward(float * o, float * final_state, const float * q,
                                     const float * k, const float * v, const float * a,
                                     const float * b, const float * initial_state, la_shape sh,
                                     const la_opts * opts) {
    la_dp_args x = { .q = q, .k = k, .a = a, .b = b, .v = v, .init = initial_state, .o = o,
                     .final = final_state };
    return dp_run(&x, sh, opts, false, false);
}

la_status la_iplr_delta_rule_backward(float * dq, float * dk, float * dv, float * da,
                                      float * db, float * dinitial_state, const float * dout,
                                      const float * dfinal_state, const float * q,
                                      const float * k, const float * v, const float * a,
                                      const float * b, const float * initial_state,
                                      la_shape sh, const la_opts * opts) {
    la_dp_args x = { .q = q, .k = k, .a = a, .b = b, .v = v, .init = initial_state,
                     .dout = dout, .dfinal = dfinal_state, .dq = dq, .dk = dk, .da = da,
                     .db = db, .dv = dv, .dinit = dinitial_state };
    return dp_run(&x, sh, opts, false, true);
}

// ---------------------------------------------------------------------------------------------
// rwkv7(r, w, k, v, a, b) = dplr(q = r, k, v, a, b, gk = w), default scale 1.0 (OPS.md 2.12)

size_t la_rwkv7_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return dp_workspace(backward, sh, opts, true);
}

la_status la_rwkv7_forward(float * o, float * final_state, const float * r, const float * w,
                           const float * k, const float * v, const float * a, const float * b,
                           const float * initial_state, la_shape sh, const la_opts * opts) {
    la_dp_args x = { .q = r, .k = k, .a = a, .b = b, .v = v, .gk = w, .init = initial_state,
                     .o = o, .final = final_state };
    return dp_run(&x, sh, opts, true, false);
}

la_status la_rwkv7_backward(float * dr, float * dw, float * dk, float * dv, float * da,
                            float * db, float * dinitial_state, const float * dout,
                            const float * dfinal_state, const float * r, const float * w,
                            const float * k, const float * v, const float * a, const float * b,
                            const float * initial_state, la_shape sh, const la_opts * opts) {
    la_dp_args x = { .q = r, .k = k, .a = a, .b = b, .v = v, .gk = w, .init = initial_state,
                     .dout = dout, .dfinal = dfinal_state, .dq = dr, .dk = dk, .da = da,
                     .db = db, .dv = dv, .dgk = dw, .dinit = dinitial_state };
    return dp_run(&x, sh, opts, true, true);
}
