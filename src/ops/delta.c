// delta_rule, gated_delta_rule and kda: the public drivers of the dn engine (OPS.md 2.6-2.8).
//
//   P = D_t S_{t-1} ;  u_t = beta_t (v_t - P^T k_t) ;  S_t = P + k_t u_t^T ;  o_t = s S_t^T q_t
//   D_t = I (delta_rule), exp(g_t) I (gated_delta_rule), Diag(exp(g_t)) (kda)
//
// The engine forms (delta.h: ref, recurrent, chunk) work on effective inputs. This file owns
// what lies around them (OPS.md 1.7, 1.8):
//   * validation of shapes, flags and pointers;
//   * the in-kernel conveniences, applied before the engine into workspace buffers:
//       q, k <- l2norm(q), l2norm(k)       y = x r,  r = (sum_i x_i^2 + 1e-6)^{-1/2}
//       beta <- m sigma(beta_raw)           m = 2 with allow_neg_eigval, else 1; NULL beta = 1
//       g    <- -exp(A_log) softplus(x)     x = g_raw + dt_bias          (use_gate_in_kernel)
//       g    <- lb sigma(z)                 z = exp(A_log) x, or x without A_log (lower_bound)
//     (the scale is the engine's: o = s S^T q with the normalised q);
//   * grouped value heads: the engine returns dq, dk per value head (B,T,HV,K); each q/k head's
//     gradient is the sum over its HV/H value heads, taken in head order;
//   * the chain rule back to the raw inputs, after the engine's backward:
//       l2norm   dx = r (dy - y (y . dy))
//       beta     dbeta_raw = dbeta m sigma (1 - sigma)
//       softplus dg_raw = dg (-exp(A_log)) sigma(x)  (exactly -exp(A_log) dg where x > 20);
//                dA_log = sum dg g ;  ddt_bias = sum dg_raw
//       lb gate  dg_raw = dg lb sigma(z)(1 - sigma(z)) exp(A_log) ;
//                dA_log = sum dg lb sigma(z)(1 - sigma(z)) z ;  ddt_bias = sum dg_raw
//     Parameter sums run over (B, T) (and K for A_log in kda) in token order in double, one
//     value head per thread, so they do not depend on the thread count.
// The backward saves nothing from the forward: it redoes the prep, and the engine recomputes
// its states.
//
// Dimensions: B, T, H, HV, K, V, N as in OPS.md. q, k (B,T,H,K); v, o (B,T,HV,V);
// beta (B,T,HV); g (B,T,HV) gated_delta_rule, (B,T,HV,K) kda; A_log (HV); dt_bias (HV)
// gated_delta_rule, (HV*K) kda; states (N,HV,K,V).
#include "delta.h"

#include "ref.h"

#include <string.h>

typedef enum dn_op { DN_DELTA_RULE, DN_GDN, DN_KDA } dn_op;

// One public call, as the caller gave it.
typedef struct dn_call {
    dn_op           op;
    const float *   q, * k;          // (B,T,H,K) raw
    const float *   v;               // (B,T,HV,V)
    const float *   g;               // (B,T,HV) or (B,T,HV,K): log gate, or raw gate input
    const float *   beta;            // (B,T,HV) or NULL (delta_rule: beta = 1)
    const float *   A_log;           // (HV) or NULL
    const float *   dt_bias;         // (HV) or (HV*K) or NULL
    const float *   init;            // (N,HV,K,V) or NULL
    float *         o, * final;      // (B,T,HV,V); (N,HV,K,V) or NULL
    const float *   dout, * dfinal;  // (B,T,HV,V); (N,HV,K,V) or NULL
    float *         dq, * dk;        // (B,T,H,K)
    float *         dv;              // (B,T,HV,V)
    float *         dg, * dbeta;     // as g, beta
    float *         dA_log;          // (HV) or NULL
    float *         ddt_bias;        // as dt_bias
    float *         dinit;           // (N,HV,K,V) or NULL
    la_shape        sh;
    const la_opts * opts;
} dn_call;

// What the shape and options resolve to.
typedef struct dn_cfg {
    int64_t N, HV;
    int64_t GK;        // gate entries per (token, value head): 0, 1 or K
    int     gate;      // LA_DN_GATE_*
    bool    l2;        // use_qk_l2norm_in_kernel
    bool    bsig;      // use_beta_sigmoid_in_kernel
    float   bmul;      // 2 with allow_neg_eigval (and the sigmoid), else 1
    bool    gin;       // use_gate_in_kernel
    float   lb;        // lower bound (< 0) or 0
} dn_cfg;

// Workspace carved by a call (dn_layout), in this order.
typedef struct dn_buf {
    float *  qn, * kn;     // (B*T, H, K)  l2-normalised q, k (l2)
    float *  rq, * rk;     // (B*T, H)     their 1/norm factors r (l2)
    float *  beta;         // (B*T, HV)    effective beta (sigmoid flag; delta_rule's ones)
    float *  g;            // (B*T, HV, GK) effective log gate (gate flag)
    float *  dq, * dk;     // (B*T, HV, K) per value head (backward, HV != H)
    float *  dbeta;        // (B*T, HV)    engine dbeta for a NULL beta (backward, delta_rule)
    double * dbias;        // (HV, GK)     ddt_bias accumulators (backward, gate flag)
    void *   eng;          // engine scratch: the ref workspace, or la_slots(N*HV) * per
    size_t   per;          // per-thread engine bytes (recurrent, chunk)
} dn_buf;

// ---------------------------------------------------------------------------------------------
// Validation

static la_status dn_config(dn_op op, la_shape sh, const la_opts * opts, dn_cfg * c) {
    la_status st = la_check_base(sh, opts, &c->N);
    if (st != LA_STATUS_OK) return st;
    if (sh.HV < 0) return LA_STATUS_SHAPE;
    c->HV = sh.HV ? sh.HV : sh.H;
    if (c->HV % sh.H != 0) return LA_STATUS_SHAPE;
    if (op == DN_DELTA_RULE && c->HV != sh.H) return LA_STATUS_SHAPE;  // no GVA (OPS.md 1.8)
    c->l2 = opts->use_qk_l2norm_in_kernel;
    c->bsig = opts->use_beta_sigmoid_in_kernel;
    c->bmul = c->bsig && opts->allow_neg_eigval ? 2.0f : 1.0f;  // no effect without the sigmoid
    c->gin = opts->use_gate_in_kernel;
    c->lb = opts->lower_bound;
    if (op == DN_DELTA_RULE && (c->bsig || opts->allow_neg_eigval || c->gin || c->lb != 0.0f))
        return LA_STATUS_INVALID_ARG;
    if (op == DN_GDN && c->lb != 0.0f) return LA_STATUS_INVALID_ARG;
    if (!isfinite(c->lb) || c->lb > 0.0f) return LA_STATUS_INVALID_ARG;  // a finite bound < 0
    if (c->lb < 0.0f && !c->gin) return LA_STATUS_INVALID_ARG;
    c->gate = op == DN_DELTA_RULE ? LA_DN_GATE_NONE
            : op == DN_GDN        ? LA_DN_GATE_SCALAR
                                  : LA_DN_GATE_CHANNEL;
    c->GK = op == DN_DELTA_RULE ? 0 : op == DN_GDN ? 1 : sh.K;
    return LA_STATUS_OK;
}

static la_status dn_check_ptrs(const dn_call * c, const dn_cfg * cfg, bool backward) {
    if (!c->q || !c->k || !c->v) return LA_STATUS_INVALID_ARG;
    if (c->op != DN_DELTA_RULE && (!c->g || !c->beta)) return LA_STATUS_INVALID_ARG;
    if (cfg->gin) {
        if (!c->A_log && !(cfg->lb < 0.0f)) return LA_STATUS_INVALID_ARG;
    } else if (c->A_log || c->dt_bias) {
        return LA_STATUS_INVALID_ARG;
    }
    if (!backward) return c->o ? LA_STATUS_OK : LA_STATUS_INVALID_ARG;
    if (!c->dout || !c->dq || !c->dk || !c->dv) return LA_STATUS_INVALID_ARG;
    if ((c->g != NULL) != (c->dg != NULL) || (c->beta != NULL) != (c->dbeta != NULL) ||
        (c->A_log != NULL) != (c->dA_log != NULL) || (c->dt_bias != NULL) != (c->ddt_bias != NULL))
        return LA_STATUS_INVALID_ARG;
    return LA_STATUS_OK;
}

// The engine arguments that do not point at tensors (the form's scratch size depends on them).
static void dn_args_base(la_dn_args * x, const dn_cfg * c, la_shape sh, const la_opts * opts) {
    memset(x, 0, sizeof *x);
    x->gate = c->gate;
    x->sh = sh;
    x->sh.HV = c->HV;
    x->N = c->N;
    x->opts = opts;
    x->scale = la_opts_scale(opts, sh.K);
    x->C = la_opts_chunk(opts);
    x->maxlen = la_max_seq_len(sh, opts);
}

static la_ref_dims dn_ref_dims(const la_dn_args * x) {
    return (la_ref_dims){ x->sh, x->N, x->opts->cu_seqlens, (double)x->scale };
}

// Carves the workspace from base (NULL: sizes only) and returns the bytes carved. The layout
// depends only on the op, direction, shape and options, so the size query is exact.
static size_t dn_layout(dn_buf * b, void * base, dn_op op, bool backward, const dn_cfg * c,
                        const la_dn_args * x) {
    const la_shape sh = x->sh;
    const size_t ntok = (size_t)(sh.B * sh.T), H = (size_t)sh.H, HV = (size_t)c->HV;
    const size_t K = (size_t)sh.K, GK = (size_t)c->GK;
    la_carver cv = { base, 0 };
    memset(b, 0, sizeof *b);
    if (c->l2) {
        b->qn = la_carve(&cv, ntok * H * K * 4);
        b->kn = la_carve(&cv, ntok * H * K * 4);
        b->rq = la_carve(&cv, ntok * H * 4);
        b->rk = la_carve(&cv, ntok * H * 4);
    }
    // delta_rule always has the ones buffer: the size query cannot know whether beta is NULL.
    if (c->bsig || op == DN_DELTA_RULE) b->beta = la_carve(&cv, ntok * HV * 4);
    if (c->gin) b->g = la_carve(&cv, ntok * HV * GK * 4);
    if (backward) {
        if (HV != H) {
            b->dq = la_carve(&cv, ntok * HV * K * 4);
            b->dk = la_carve(&cv, ntok * HV * K * 4);
        }
        if (op == DN_DELTA_RULE) b->dbeta = la_carve(&cv, ntok * HV * 4);
        if (c->gin) b->dbias = la_carve(&cv, HV * GK * 8);
    }
    if (x->opts->form == LA_FORM_REF) {
        b->eng = la_carve(&cv, (size_t)la_delta_ref_ws_elems(dn_ref_dims(x)) * sizeof(float));
    } else {
        b->per = la_align_up(x->opts->form == LA_FORM_RECURRENT ? la_dn_rec_bytes(x, backward)
                                                                : la_dn_chunk_bytes(x, backward));
        b->eng = la_carve(&cv, (size_t)la_slots(c->N * c->HV) * b->per);
    }
    return cv.used;
}

static size_t dn_workspace(dn_op op, bool backward, la_shape sh, const la_opts * opts) {
    dn_cfg c;
    if (!opts || dn_config(op, sh, opts, &c) != LA_STATUS_OK) return 0;
    la_dn_args x;
    dn_args_base(&x, &c, sh, opts);
    dn_buf b;
    return dn_layout(&b, NULL, op, backward, &c, &x) + LA_ALIGN;
}

// ---------------------------------------------------------------------------------------------
// In-kernel conveniences (OPS.md 1.7)

// Rows below this many per thread run on fewer threads: the prep is memory bound.
#define DN_ROWS_PER_THREAD 256

// y = x r with r = (sum x^2 + 1e-6)^{-1/2}, per row of K; x, y (rows, K), r (rows).
static void l2norm_fwd(float * y, float * r, const float * x, int64_t rows, int64_t K) {
#pragma omp parallel for schedule(static) num_threads(la_slots(rows / DN_ROWS_PER_THREAD + 1))
    for (int64_t t = 0; t < rows; t++) {
        const float * xr = x + t * K;
        double ss = 0;
        for (int64_t i = 0; i < K; i++) ss += (double)xr[i] * (double)xr[i];
        const float ri = (float)(1.0 / sqrt(ss + 1e-6));
        r[t] = ri;
        for (int64_t i = 0; i < K; i++) y[t * K + i] = xr[i] * ri;
    }
}

// dy (rows, K) becomes dx = r (dy - y (y . dy)), in place.
static void l2norm_bwd(float * dy, const float * y, const float * r, int64_t rows, int64_t K) {
#pragma omp parallel for schedule(static) num_threads(la_slots(rows / DN_ROWS_PER_THREAD + 1))
    for (int64_t t = 0; t < rows; t++) {
        float * d = dy + t * K;
        const float * yr = y + t * K;
        double yd = 0;
        for (int64_t i = 0; i < K; i++) yd += (double)yr[i] * (double)d[i];
        const float ydf = (float)yd, ri = r[t];
        for (int64_t i = 0; i < K; i++) d[i] = ri * (d[i] - yr[i] * ydf);
    }
}

// The argument of the gate function for entry i of (token t, value head hv): raw + dt_bias.
static inline float gate_arg(const dn_call * c, const dn_cfg * cfg, int64_t t, int64_t hv,
                             int64_t i) {
    const float raw = c->g[(t * cfg->HV + hv) * cfg->GK + i];
    return c->dt_bias ? raw + c->dt_bias[hv * cfg->GK + i] : raw;
}

// Effective beta and log gate into the workspace, and the engine's q, k, beta, g pointers.
static void dn_prep(const dn_call * c, const dn_cfg * cfg, const dn_buf * b, la_dn_args * x) {
    const int64_t ntok = c->sh.B * c->sh.T, H = c->sh.H, K = c->sh.K, HV = cfg->HV;
    const int64_t GK = cfg->GK;
    x->q = c->q;
    x->k = c->k;
    if (cfg->l2) {
        l2norm_fwd(b->qn, b->rq, c->q, ntok * H, K);
        l2norm_fwd(b->kn, b->rk, c->k, ntok * H, K);
        x->q = b->qn;
        x->k = b->kn;
    }
    x->beta = c->beta;
    if (!c->beta) {  // delta_rule without beta: beta = 1 (as fla)
        for (int64_t e = 0; e < ntok * HV; e++) b->beta[e] = 1.0f;
        x->beta = b->beta;
    } else if (cfg->bsig) {
        for (int64_t e = 0; e < ntok * HV; e++) b->beta[e] = cfg->bmul * la_sigmoid(c->beta[e]);
        x->beta = b->beta;
    }
    x->g = c->op == DN_DELTA_RULE ? NULL : c->g;
    if (cfg->gin) {
#pragma omp parallel for schedule(static) num_threads(la_slots(ntok / DN_ROWS_PER_THREAD + 1))
        for (int64_t t = 0; t < ntok; t++)
            for (int64_t hv = 0; hv < HV; hv++) {
                const float a = c->A_log ? expf(c->A_log[hv]) : 1.0f;
                for (int64_t i = 0; i < GK; i++) {
                    const float xa = gate_arg(c, cfg, t, hv, i);
                    // softplus gate: g = -exp(A_log) softplus(x); lower bound: g = lb sigma(z)
                    b->g[(t * HV + hv) * GK + i] = cfg->lb < 0.0f ? cfg->lb * la_sigmoid(a * xa)
                                                                  : -a * la_softplus(xa);
                }
            }
        x->g = b->g;
    }
}

// The chain rule of dn_prep, in place on the caller's gradients (the engine wrote the
// gradients of the effective inputs there), plus dA_log and ddt_bias.
static void dn_prep_bwd(const dn_call * c, const dn_cfg * cfg, const dn_buf * b) {
    const int64_t ntok = c->sh.B * c->sh.T, H = c->sh.H, K = c->sh.K, HV = cfg->HV;
    const int64_t GK = cfg->GK;
    if (cfg->l2) {
        l2norm_bwd(c->dq, b->qn, b->rq, ntok * H, K);
        l2norm_bwd(c->dk, b->kn, b->rk, ntok * H, K);
    }
    if (c->beta && cfg->bsig) {  // beta = m sigma(raw): dbeta_raw = dbeta m sigma(x) sigma(-x)
        // (1 - sigma(x) would cancel to a few digits once sigma(x) is near 1)
        for (int64_t e = 0; e < ntok * HV; e++)
            c->dbeta[e] *= cfg->bmul * la_sigmoid(c->beta[e]) * la_sigmoid(-c->beta[e]);
    }
    if (!cfg->gin) return;
    // One value head per thread; every sum over tokens runs in token order.
#pragma omp parallel for schedule(static) num_threads(la_slots(HV))
    for (int64_t hv = 0; hv < HV; hv++) {
        const float a = c->A_log ? expf(c->A_log[hv]) : 1.0f;
        double * bias = b->dbias + hv * GK;  // (GK) sum over tokens of dg_raw
        double sa = 0;                        // sum over tokens (and K) of dg dg/dA_log
        for (int64_t i = 0; i < GK; i++) bias[i] = 0;
        for (int64_t t = 0; t < ntok; t++)
            for (int64_t i = 0; i < GK; i++) {
                const int64_t e = (t * HV + hv) * GK + i;
                const float dge = c->dg[e], xa = gate_arg(c, cfg, t, hv, i);
                float dx;
                if (cfg->lb < 0.0f) {
                    // g = lb sigma(z), z = a x:  dg/dx = lb sigma' a,  dg/dA_log = lb sigma' z
                    const float z = a * xa, ds = cfg->lb * la_sigmoid(z) * la_sigmoid(-z);
                    dx = dge * ds * a;
                    sa += (double)dge * (double)ds * (double)z;
                } else {
                    // g = -a softplus(x):  dg/dx = -a sigma(x) (-a above the threshold 20),
                    // dg/dA_log = g
                    dx = dge * (xa > 20.0f ? -a : -a * la_sigmoid(xa));
                    sa += (double)dge * (double)b->g[e];
                }
                c->dg[e] = dx;
                bias[i] += (double)dx;
            }
        if (c->dA_log) c->dA_log[hv] = (float)sa;
        if (c->ddt_bias)
            for (int64_t i = 0; i < GK; i++) c->ddt_bias[hv * GK + i] = (float)bias[i];
    }
}

// dst (ntok, H, K) = the sum of src (ntok, HV, K) over each group of HV/H value heads, in head
// order.
static void group_sum(float * dst, const float * src, int64_t ntok, int64_t H, int64_t HV,
                      int64_t K) {
    const int64_t grp = HV / H;
#pragma omp parallel for schedule(static) num_threads(la_slots(ntok / DN_ROWS_PER_THREAD + 1))
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < K; i++) {
                double acc = 0;
                for (int64_t r = 0; r < grp; r++) acc += (double)src[(t * HV + h * grp + r) * K + i];
                dst[(t * H + h) * K + i] = (float)acc;
            }
}

// ---------------------------------------------------------------------------------------------
// Engine dispatch

typedef struct dn_task_ctx {
    const la_dn_args * x;
    bool               backward;
} dn_task_ctx;

// One (sequence n, value head hv) task: task = n * HV + hv.
static void dn_task(const void * ctx, int64_t task, void * scratch) {
    const dn_task_ctx * c = ctx;
    const int64_t HV = c->x->sh.HV, n = task / HV, hv = task % HV;
    if (c->x->opts->form == LA_FORM_RECURRENT) la_dn_rec_task(c->x, n, hv, scratch, c->backward);
    else la_dn_chunk_task(c->x, n, hv, scratch, c->backward);
}

static void dn_engine(const la_dn_args * x, const dn_buf * b, bool backward) {
    if (x->opts->form == LA_FORM_REF) {
        const la_ref_dims d = dn_ref_dims(x);
        if (backward)
            la_delta_bwd_ref(x->dq, x->dk, x->dv, x->dbeta, x->dg, x->dinit, x->dout, x->dfinal,
                             x->q, x->k, x->v, x->beta, x->g, x->gate, x->init, d, b->eng);
        else
            la_delta_fwd_ref(x->o, x->final, x->q, x->k, x->v, x->beta, x->g, x->gate, x->init,
                             d, b->eng);
        return;
    }
    const dn_task_ctx ctx = { x, backward };
    la_run_tasks(x->N * x->sh.HV, b->eng, b->per, dn_task, &ctx);
}

static la_status dn_run(const dn_call * c, bool backward) {
    dn_cfg cfg;
    if (!c->opts) return LA_STATUS_INVALID_ARG;
    la_status st = dn_config(c->op, c->sh, c->opts, &cfg);
    if (st != LA_STATUS_OK) return st;
    st = dn_check_ptrs(c, &cfg, backward);
    if (st != LA_STATUS_OK) return st;
    la_dn_args x;
    dn_args_base(&x, &cfg, c->sh, c->opts);
    dn_buf b;
    const size_t need = dn_layout(&b, NULL, c->op, backward, &cfg, &x) + LA_ALIGN;
    void * ws;
    bool owned;
    st = la_ws_acquire(c->opts, need, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    dn_layout(&b, ws, c->op, backward, &cfg, &x);
    dn_prep(c, &cfg, &b, &x);
    x.v = c->v;
    x.init = c->init;
    if (!backward) {
        x.o = c->o;
        x.final = c->final;
        dn_engine(&x, &b, false);
    } else {
        const bool gva = cfg.HV != c->sh.H;
        x.dout = c->dout;
        x.dfinal = c->dfinal;
        x.dq = gva ? b.dq : c->dq;
        x.dk = gva ? b.dk : c->dk;
        x.dv = c->dv;
        x.dbeta = c->beta ? c->dbeta : b.dbeta;
        x.dg = x.g ? c->dg : NULL;
        x.dinit = c->dinit;
        dn_engine(&x, &b, true);
        if (gva) {
            const int64_t ntok = c->sh.B * c->sh.T;
            group_sum(c->dq, b.dq, ntok, c->sh.H, cfg.HV, c->sh.K);
            group_sum(c->dk, b.dk, ntok, c->sh.H, cfg.HV, c->sh.K);
        }
        dn_prep_bwd(c, &cfg, &b);
    }
    la_ws_release(ws, owned);
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// Public entry points

size_t la_delta_rule_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return dn_workspace(DN_DELTA_RULE, backward, sh, opts);
}

la_status la_delta_rule_forward(float * o, float * final_state, const float * q,
                                const float * k, const float * v, const float * beta,
                                const float * initial_state, la_shape sh,
                                const la_opts * opts) {
    const dn_call c = { .op = DN_DELTA_RULE, .q = q, .k = k, .v = v, .beta = beta,
                        .init = initial_state, .o = o, .final = final_state, .sh = sh,
                        .opts = opts };
    return dn_run(&c, false);
}

la_status la_delta_rule_backward(float * dq, float * dk, float * dv, float * dbeta,
                                 float * dinitial_state, const float * dout,
                                 const float * dfinal_state, const float * q, const float * k,
                                 const float * v, const float * beta,
                                 const float * initial_state, la_shape sh,
                                 const la_opts * opts) {
    const dn_call c = { .op = DN_DELTA_RULE, .q = q, .k = k, .v = v, .beta = beta,
                        .init = initial_state, .dout = dout, .dfinal = dfinal_state, .dq = dq,
                        .dk = dk, .dv = dv, .dbeta = dbeta, .dinit = dinitial_state, .sh = sh,
                        .opts = opts };
    return dn_run(&c, true);
}

size_t la_gated_delta_rule_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return dn_workspace(DN_GDN, backward, sh, opts);
}

la_status la_gated_delta_rule_forward(float * o, float * final_state, const float * q,
                                      const float * k, const float * v, const float * g,
                                      const float * beta, const float * A_log,
                                      const float * dt_bias, const float * initial_state,
                                      la_shape sh, const la_opts * opts) {
    const dn_call c = { .op = DN_GDN, .q = q, .k = k, .v = v, .g = g, .beta = beta,
                        .A_log = A_log, .dt_bias = dt_bias, .init = initial_state, .o = o,
                        .final = final_state, .sh = sh, .opts = opts };
    return dn_run(&c, false);
}

la_status la_gated_delta_rule_backward(float * dq, float * dk, float * dv, float * dg,
                                       float * dbeta, float * dA_log, float * ddt_bias,
                                       float * dinitial_state, const float * dout,
                                       const float * dfinal_state, const float * q,
                                       const float * k, const float * v, const float * g,
                                       const float * beta, const float * A_log,
                                       const float * dt_bias, const float * initial_state,
                                       la_shape sh, const la_opts * opts) {
    const dn_call c = { .op = DN_GDN, .q = q, .k = k, .v = v, .g = g, .beta = beta,
                        .A_log = A_log, .dt_bias = dt_bias, .init = initial_state, .dout = dout,
                        .dfinal = dfinal_state, .dq = dq, .dk = dk, .dv = dv, .dg = dg,
                        .dbeta = dbeta, .dA_log = dA_log, .ddt_bias = ddt_bias,
                        .dinit = dinitial_state, .sh = sh, .opts = opts };
    return dn_run(&c, true);
}

size_t la_kda_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return dn_workspace(DN_KDA, backward, sh, opts);
}

la_status la_kda_forward(float * o, float * final_state, const float * q, const float * k,
                         const float * v, const float * g, const float * beta,
                         const float * A_log, const float * dt_bias,
                         const float * initial_state, la_shape sh, const la_opts * opts) {
    const dn_call c = { .op = DN_KDA, .q = q, .k = k, .v = v, .g = g, .beta = beta,
                        .A_log = A_log, .dt_bias = dt_bias, .init = initial_state, .o = o,
                        .final = final_state, .sh = sh, .opts = opts };
    return dn_run(&c, false);
}

la_status la_kda_backward(float * dq, float * dk, float * dv, float * dg, float * dbeta,
                          float * dA_log, float * ddt_bias, float * dinitial_state,
                          const float * dout, const float * dfinal_state, const float * q,
                          const float * k, const float * v, const float * g,
                          const float * beta, const float * A_log, const float * dt_bias,
                          const float * initial_state, la_shape sh, const la_opts * opts) {
    const dn_call c = { .op = DN_KDA, .q = q, .k = k, .v = v, .g = g, .beta = beta,
                        .A_log = A_log, .dt_bias = dt_bias, .init = initial_state, .dout = dout,
                        .dfinal = dfinal_state, .dq = dq, .dk = dk, .dv = dv, .dg = dg,
                        .dbeta = dbeta, .dA_log = dA_log, .ddt_bias = ddt_bias,
                        .dinit = dinitial_state, .sh = sh, .opts = opts };
    return dn_run(&c, true);
}
