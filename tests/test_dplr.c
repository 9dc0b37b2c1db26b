// dplr_delta_rule, iplr_delta_rule and rwkv7 (OPS.md 2.9, 2.10, 2.12):
//
//   S_t = Diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T ;   o_t = s S_t^T q_t
//
// (the low-rank term reads the undecayed S_{t-1}; iplr: gk = 0; rwkv7: q = r, gk = w, default
// s = 1.0), checked against an independent float64 oracle written here: a per-token loop and
// its hand-derived reverse-time adjoint (G = dL/dS_t, newest token first; w = S_{t-1}^T a):
//   G += s q do^T ; dq = s S_t do ; dk = G v ; dv = G^T k ; db = G w ; dw = G^T b ;
//   da = S_{t-1} dw ; dgk_i = e^{gk_i} sum_j G_ij S_{t-1,ij} ; G <- Diag(e^{gk}) G + a dw^T
// with a state checkpoint every 64 tokens (one segment replayed at a time).
//
// What is checked:
//   * the oracle's gradients against central finite differences of its forward for every
//     floating input (q/r, k, v, a, b, gk/w, initial_state), then the library's float32
//     gradients in every form against the same finite differences;
//   * every form (ref, recurrent, chunk with C = 64, 32, 16, 24) forward and backward against
//     the oracle on 1 and 2 threads (bitwise identical), over shapes (T = 1, T not a multiple of
//     C, varlen with sequences of length 0, 1 and > 64, K != V, K = 64, no initial state,
//     explicit scale) and inputs: the RWKV7 layer's (w = -e^{-1/2} sigmoid(.), a = -kk,
//     b = kk o a_r with kk = l2norm), the delta-rule and KDA mappings of OPS.md 3, log decays
//     from -1e-6 to -20, exactly 0, and the mixed patterns with in-chunk cumulative decays near
//     -1000; dplr with gk = NULL (iplr semantics);
//   * identities (OPS.md 3): #7 delta_rule = iplr(a = k, b = -beta k, v = beta v), #8 kda =
//     dplr(a = e^g k, b = -beta k, v = beta v, gk = g), #9 gated_delta_rule = dplr(gk = g 1_K),
//     forward and backward (the gradients mapped back through the substitutions); #10 rwkv7 =
//     dplr(q = r, gk = w, scale 1), rwkv7's default scale 1.0 and dplr's K^-1/2; iplr = dplr
//     with gk = NULL = dplr with gk = 0;
//   * the chaining law, decode (T = 1 steps, final_state == initial_state) against the full
//     pass, final_state aliasing initial_state, caller-owned workspaces (any alignment; one
//     byte short rejected), optional outputs, argument rules (no grouped value heads, none of
//     the delta family's flags, dgk exactly when gk);
//   * 10^5-token sequences (H = 1, K = V = 16), chunk form forward and backward: finite and
//     equal to the oracle.
//
// Tolerances (float32 forms vs the float64 oracle): |got - ref| <= TOL * (max|ref| + |ref|)
// elementwise (relative to the tensor's largest entry): TOL_FWD = 2e-5 for o and final_state,
// TOL_BWD = 5e-5 for gradients, TOL_ID = 2 * TOL for identities between two float32 results,
// TOL_LONG = 1e-4 for the 10^5-token sequences. float64: oracle gradients against finite
// differences (central, step 1e-6) to TOL_FD = 1e-6 relative to max|grad|. Measured (AVX-512,
// AVX2 and portable kernels): within 0.05 of TOL_FWD and 0.02 of TOL_BWD.
// LA_TEST_VERBOSE=1 prints the worst |diff| / allowed per tolerance class.
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FWD  2e-5
#define TOL_BWD  5e-5
#define TOL_ID_FWD (2 * TOL_FWD)
#define TOL_ID_BWD (2 * TOL_BWD)
#define TOL_LONG 1e-4
#define TOL_FD   1e-6
#define FD_STEP  1e-6
static const la_tols TOLS = { TOL_FWD, TOL_BWD, TOL_ID_FWD, TOL_ID_BWD, TOL_LONG, TOL_FD, FD_STEP };

// ---------------------------------------------------------------------------------------------
// Test data. A case is a shape plus a spec string of space-separated tokens:
//   mapping  m:rwkv (default: the RWKV7 layer's a = -kk, b = kk o a_r, kk = l2norm(.),
//            a_r = sigmoid(.)), m:delta (a = k, b = -beta k), m:kda (a = e^gk k, b = -beta k),
//            m:rand (a, b ~ N(0, 0.3^2): finite differences only)
//   decay    g:w (default: -e^{-1/2} sigmoid(N(0,1)), the RWKV7 layer's) g:logsig g:uni
//            (U[-20, -1e-6]) g:zero g:small (U[-1e-6, 0]) g:mix g:tail; nogk (dplr with
//            gk = NULL); iplr has no decay
//   absent   noinit nodfs

typedef enum { OP_DPLR, OP_IPLR, OP_RWKV7 } op_kind;
static const char * const OP_NAME[3] = { "dplr_delta_rule", "iplr_delta_rule", "rwkv7" };

// The inputs: NTOK per-token ones, then initial_state (NPAR floating inputs in all, the order of
// their gradients among the results), then the output gradients.
enum { NTOK = 6, NPAR = 7, NIN = 9 };
// The results (la_optest's layout): o, final_state, the gradients of the NPAR inputs.
enum { NRES = 2 + NPAR };
static const char * const RES_NAME[NRES] = { "o", "final_state", "dq", "dk", "dv", "da", "db",
                                             "dgk", "dinitial_state" };

typedef struct tdata {
    const char * name;
    op_kind  op;
    la_shape sh;
    int64_t  N, rows, nq, nv, ng, ns;
    int64_t  cu[9];
    bool     varlen;
    double   scale;
    float    fscale;
    union {   // q is r, gk is w for rwkv7
        struct { float * q, * k, * v, * a, * b, * gk, * s0, * dout, * dfs; };
        float * in[NIN];
    };
} tdata;
_Static_assert(offsetof(tdata, dfs) == offsetof(tdata, in) + (NIN - 1) * sizeof(float *),
               "tdata: in[] is q .. dfs");

static void make_data(const la_case * c, void * dv, la_rng * r) {
    tdata * d = dv;
    memset(d, 0, sizeof *d);
    const char * sp = c->spec ? c->spec : "";
    d->name = c->name;
    d->op = (op_kind)c->op;
    d->sh = (la_shape){ c->B, c->T, c->H, c->K, c->V, 0 };
    d->N = la_case_seqs(c, d->cu, &d->sh.T);
    d->varlen = c->nseq > 0;
    const int64_t H = c->H, K = c->K, T = d->sh.T;
    d->rows = d->sh.B * d->sh.T;
    d->nq = d->rows * H * K;
    d->nv = d->rows * H * c->V;
    d->ng = c->op == OP_IPLR || la_spec_has(sp, "nogk") ? 0 : d->nq;
    d->ns = d->N * H * K * c->V;
    d->fscale = c->scale;
    d->scale = c->scale != 0.0f ? (double)c->scale
             : c->op == OP_RWKV7 ? 1.0 : 1.0 / sqrt((double)K);
    const int64_t n = d->nq, nrh = d->rows * H;
    d->q = la_new_normal(r, n, 1.0);
    d->k = la_new_normal(r, n, 1.0);
    la_l2norm_rows(d->k, nrh, K);
    d->v = la_new_normal(r, d->nv, 1.0);
    d->dout = la_new_normal(r, d->nv, 1.0);
    if (d->ng) {
        d->gk = la_test_alloc((size_t)n * 4);
        if (!la_fill_gate_spec(r, d->gk, n, sp, K, H, T))   // g:w, the default
            for (int64_t e = 0; e < n; e++)
                d->gk[e] = (float)(-exp(-0.5) * la_sigmoid_d(la_rng_normal(r)));
    }
    d->a = la_test_alloc((size_t)n * 4);
    d->b = la_test_alloc((size_t)n * 4);
    if (la_spec_has(sp, "m:rand")) {
        la_fill_normal(r, d->a, n, 0.3);
        la_fill_normal(r, d->b, n, 0.3);
    } else if (la_spec_has(sp, "m:delta") || la_spec_has(sp, "m:kda")) {
        const bool kda = la_spec_has(sp, "m:kda");
        for (int64_t e = 0; e < nrh; e++) {
            const double beta = la_sigmoid_d(la_rng_normal(r));
            for (int64_t i = 0; i < K; i++) {
                const int64_t x = e * K + i;
                const double decay = d->gk && kda ? exp((double)d->gk[x]) : 1.0;
                d->a[x] = (float)(decay * (double)d->k[x]);
                d->b[x] = (float)(-beta * (double)d->k[x]);
            }
        }
    } else {   // RWKV7: a = -kk, b = kk o a_r
        la_fill_normal(r, d->a, n, 1.0);
        la_l2norm_rows(d->a, nrh, K);
        for (int64_t e = 0; e < n; e++) {
            const double kk = (double)d->a[e], ar = la_sigmoid_d(la_rng_normal(r));
            d->a[e] = (float)-kk;
            d->b[e] = (float)(kk * ar);
        }
    }
    if (!la_spec_has(sp, "noinit")) d->s0 = la_new_normal(r, d->ns, 0.5);
    if (!la_spec_has(sp, "nodfs")) d->dfs = la_new_normal(r, d->ns, 1.0);
}

static void free_data(void * d) { la_free_f(((tdata *)d)->in, NIN); }

static la_opts opts_for(const tdata * d, la_form_c fc) {
    return la_test_opts(fc.form, fc.C, d->fscale, d->varlen ? d->cu : NULL, d->N);
}

// ---------------------------------------------------------------------------------------------
// The float64 oracle.

// The inputs in float64 and the results (la_optest's layout), by name.
typedef union din {
    struct { double * q, * k, * v, * a, * b, * gk, * s0, * dout, * dfs; };
    double * p[NIN];
} din;
_Static_assert(sizeof(din) == sizeof(double *[NIN]), "din: the inputs' pointers, in order");

typedef union oset {
    struct { double * o, * fs, * dq, * dk, * dv, * da, * db, * dgk, * ds0; };
    double * p[NRES];
} oset;
_Static_assert(sizeof(oset) == sizeof(double *[NRES]), "oset: the results' pointers, in order");

typedef struct octx {
    const tdata * d;
    const din *   x;
    const oset *  r;
    double *      w, * dw;   // scratch (V)
} octx;

// One token of head h: Sn from Sp; o_t (V) when o != NULL.
static void step_fwd(void * ctx, int64_t row, int64_t h, const double * Sp, double * Sn,
                     double * o) {
    const octx * c = ctx;
    const int64_t H = c->d->sh.H, K = c->d->sh.K, V = c->d->sh.V, x0 = (row * H + h) * K;
    const din * x = c->x;
    for (int64_t j = 0; j < V; j++) {
        double acc = 0;
        for (int64_t i = 0; i < K; i++) acc += Sp[i * V + j] * x->a[x0 + i];
        c->w[j] = acc;
    }
    const double * v = x->v + (row * H + h) * V;
    for (int64_t i = 0; i < K; i++) {
        const double dec = x->gk ? exp(x->gk[x0 + i]) : 1.0;
        for (int64_t j = 0; j < V; j++)
            Sn[i * V + j] = dec * Sp[i * V + j] + x->b[x0 + i] * c->w[j] + x->k[x0 + i] * v[j];
    }
    if (!o) return;
    for (int64_t j = 0; j < V; j++) {
        double acc = 0;
        for (int64_t i = 0; i < K; i++) acc += Sn[i * V + j] * x->q[x0 + i];
        o[j] = c->d->scale * acc;
    }
}

// The adjoint of step_fwd: G holds dL/dS_t on entry and dL/dS_{t-1} on return.
static void step_bwd(void * ctx, int64_t row, int64_t h, const double * Sp, const double * Sn,
                     double * G) {
    const octx * c = ctx;
    const oset * r = c->r;
    const int64_t H = c->d->sh.H, K = c->d->sh.K, V = c->d->sh.V, x0 = (row * H + h) * K;
    const int64_t v0 = (row * H + h) * V;
    const din * x = c->x;
    const double s = c->d->scale, * dot = x->dout + v0, * v = x->v + v0;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) G[i * V + j] += s * x->q[x0 + i] * dot[j];
    for (int64_t j = 0; j < V; j++) {
        double w = 0, dw = 0, dv = 0;
        for (int64_t i = 0; i < K; i++) {
            w += Sp[i * V + j] * x->a[x0 + i];
            dw += G[i * V + j] * x->b[x0 + i];
            dv += G[i * V + j] * x->k[x0 + i];
        }
        c->w[j] = w;
        c->dw[j] = dw;
        r->dv[v0 + j] = dv;
    }
    for (int64_t i = 0; i < K; i++) {
        double dq = 0, dk = 0, db = 0, da = 0, dg = 0;
        const double dec = x->gk ? exp(x->gk[x0 + i]) : 1.0;
        for (int64_t j = 0; j < V; j++) {
            dq += Sn[i * V + j] * dot[j];
            dk += G[i * V + j] * v[j];
            db += G[i * V + j] * c->w[j];
            da += Sp[i * V + j] * c->dw[j];
            dg += G[i * V + j] * Sp[i * V + j];
        }
        r->dq[x0 + i] = s * dq;
        r->dk[x0 + i] = dk;
        r->db[x0 + i] = db;
        r->da[x0 + i] = da;
        if (r->dgk) r->dgk[x0 + i] = dec * dg;
        for (int64_t j = 0; j < V; j++)
            G[i * V + j] = dec * G[i * V + j] + x->a[x0 + i] * c->dw[j];
    }
}

// The float64 reference (la_optest's oracle): forward always, the backward too when bwd. No
// result sums terms over tokens, so no scale floors.
static void oracle(const la_optest * t, double * const * xp, double * const * rp, double * scale,
                   bool bwd) {
    const tdata * d = t->ctx;
    din x;
    oset r;
    memcpy(x.p, xp, sizeof x.p);
    memcpy(r.p, rp, sizeof r.p);
    const int64_t V = d->sh.V;
    octx c = { d, &x, &r, la_test_alloc((size_t)V * 8), la_test_alloc((size_t)V * 8) };
    la_oracle_scan scan = { d->N, d->sh.T, d->varlen ? d->cu : NULL, d->sh.H, d->sh.K, V, x.s0,
                            x.dfs, r.o, r.fs, r.ds0, &c, step_fwd, step_bwd };
    la_oracle_run(&scan, bwd);
    free(c.w);
    free(c.dw);
}

// ---------------------------------------------------------------------------------------------
// The library.

typedef union fres {
    struct { float * o, * fs, * dq, * dk, * dv, * da, * db, * dgk, * ds0; };
    float * p[NRES];
} fres;
_Static_assert(sizeof(fres) == sizeof(float *[NRES]), "fres: the results' pointers, in order");

static la_status lib_fwd(const tdata * d, float * o, float * fs, const float * s0,
                         const la_opts * op) {
    switch (d->op) {
    case OP_DPLR:
        return la_dplr_delta_rule_forward(o, fs, d->q, d->k, d->v, d->a, d->b, d->gk, s0, d->sh,
                                          op);
    case OP_IPLR:
        return la_iplr_delta_rule_forward(o, fs, d->q, d->k, d->v, d->a, d->b, s0, d->sh, op);
    case OP_RWKV7:
        return la_rwkv7_forward(o, fs, d->q, d->gk, d->k, d->v, d->a, d->b, s0, d->sh, op);
    }
    return LA_STATUS_INVALID_ARG;
}

static la_status lib_bwd(const tdata * d, fres * f, const la_opts * op) {
    switch (d->op) {
    case OP_DPLR:
        return la_dplr_delta_rule_backward(f->dq, f->dk, f->dv, f->da, f->db, f->dgk, f->ds0,
                                           d->dout, d->dfs, d->q, d->k, d->v, d->a, d->b, d->gk,
                                           d->s0, d->sh, op);
    case OP_IPLR:
        return la_iplr_delta_rule_backward(f->dq, f->dk, f->dv, f->da, f->db, f->ds0, d->dout,
                                           d->dfs, d->q, d->k, d->v, d->a, d->b, d->s0, d->sh,
                                           op);
    case OP_RWKV7:
        return la_rwkv7_backward(f->dq, f->dgk, f->dk, f->dv, f->da, f->db, f->ds0, d->dout,
                                 d->dfs, d->q, d->gk, d->k, d->v, d->a, d->b, d->s0, d->sh, op);
    }
    return LA_STATUS_INVALID_ARG;
}

static size_t lib_ws(const tdata * d, bool backward, const la_opts * op) {
    switch (d->op) {
    case OP_DPLR: return la_dplr_delta_rule_workspace_size(backward, d->sh, op);
    case OP_IPLR: return la_iplr_delta_rule_workspace_size(backward, d->sh, op);
    case OP_RWKV7: return la_rwkv7_workspace_size(backward, d->sh, op);
    }
    return 0;
}

// The op as the shared checks (la_op_*) see it: the callbacks run the library on the tdata with
// la_optest's shape and inputs.
static tdata view(const la_optest * t) {
    tdata d = *(const tdata *)t->ctx;
    d.sh = t->sh;
    memcpy(d.in, t->in, sizeof d.in);
    return d;
}

static la_status t_fwd(const la_optest * t, float * o, float * fs, const float * s0,
                       const la_opts * op) {
    const tdata d = view(t);
    return lib_fwd(&d, o, fs, s0, op);
}

static la_status t_bwd(const la_optest * t, float * const * res, const la_opts * op) {
    const tdata d = view(t);
    fres f;
    memcpy(f.p, res, sizeof f.p);
    return lib_bwd(&d, &f, op);
}

static size_t t_ws(const la_optest * t, bool backward, const la_opts * op) {
    const tdata d = view(t);
    return lib_ws(&d, backward, op);
}

// The la_optest of the data (also la_opmaker's optest).
static la_optest optest_of(const void * dv) {
    const tdata * d = dv;
    const int64_t HK = d->sh.H * d->sh.K, HV = d->sh.H * d->sh.V;
    la_optest t = { .ctx = d, .name = OP_NAME[d->op], .opts = opts_for(d, LA_FORMS[0]),
                    .sh = d->sh, .N = d->N, .nin = NIN, .ntok = NTOK, .npar = NPAR,
                    .in_n = { d->nq, d->nq, d->nv, d->nq, d->nq, d->ng, d->ns, d->nv, d->ns },
                    .in_w = { HK, HK, HV, HK, HK, HK }, .o_w = HV, .res_name = RES_NAME,
                    .fwd = t_fwd, .bwd = t_bwd, .ws = t_ws, .oracle = oracle };
    memcpy(t.in, d->in, sizeof d->in);
    la_op_sizes(&t, d->nv, d->ns);
    return t;
}

static void fres_alloc(const tdata * d, fres * f) { la_alloc_f(f->p, optest_of(d).res_n, NRES); }

static void fres_free(fres * f) { la_free_f(f->p, NRES); }

static bool fres_equal(const tdata * d, const fres * a, const fres * b) {
    return la_same_bits_all(a->p, b->p, optest_of(d).res_n, NRES);
}

static bool run_lib(const tdata * d, fres * f, const la_opts * op, int threads, const char * nm) {
    const la_optest t = optest_of(d);
    return la_op_run(&t, f->p, op, threads, nm);
}

// ---------------------------------------------------------------------------------------------
// Identities (OPS.md 3 #7-#10).

// A float tensor from float64 values computed by the test (a chain-rule mapping).
static float * rnd(const double * x, int64_t n) { return la_to_f32(x, n); }

// #7 delta_rule(q, k, v, beta) = iplr(q, k, beta v, a = k, b = -beta k), and
// #8 kda(q, k, v, g, beta) = dplr(q, k, beta v, a = e^g k, b = -beta k, gk = g), and
// #9 gated_delta_rule(g) = dplr(.., gk = g 1_K). Backward through the substitutions:
//   dk = dk' + e^g o da - beta db ;  dv = beta dv' ;  dbeta = -k . db + v . dv' ;
//   dg = dgk + e^g o k o da  (summed over K for #9).
typedef enum { ID_DELTA, ID_KDA, ID_GDN } id_kind;

static void identity_case(id_kind kind, uint64_t seed) {
    static const char * const nm_of[3] = { "identity delta_rule == iplr(a=k, b=-beta k, v=beta v)",
                                           "identity kda == dplr(a=e^g k, b=-beta k, v=beta v, gk=g)",
                                           "identity gdn == dplr(a=e^g k, b=-beta k, v=beta v, gk=g 1_K)" };
    la_rng r;
    la_rng_seed(&r, seed);
    const int64_t B = 2, T = 90, H = 2, K = 16, V = 8, N = B;
    const int64_t rows = B * T, nq = rows * H * K, nv = rows * H * V, nb = rows * H;
    const int64_t ns = N * H * K * V, GK = kind == ID_DELTA ? 0 : kind == ID_KDA ? K : 1;
    const la_shape sh = { B, T, H, K, V, 0 };
    float * q = la_new_normal(&r, nq, 1.0), * k = la_new_normal(&r, nq, 1.0);
    la_l2norm_rows(k, rows * H, K);
    float * v = la_new_normal(&r, nv, 1.0), * dout = la_new_normal(&r, nv, 1.0);
    float * beta = la_test_alloc((size_t)nb * 4);
    for (int64_t e = 0; e < nb; e++) beta[e] = (float)la_sigmoid_d(la_rng_normal(&r));
    float * g = GK ? la_test_alloc((size_t)(nb * GK) * 4) : NULL;
    if (g) la_fill_logsigmoid(&r, g, nb * GK);
    float * s0 = la_new_normal(&r, ns, 0.5), * dfs = la_new_normal(&r, ns, 1.0);
    // the dplr inputs, computed in float64 and rounded once
    double * ad = la_test_alloc((size_t)nq * 8), * bd = la_test_alloc((size_t)nq * 8);
    double * vd = la_test_alloc((size_t)nv * 8), * gd = la_test_alloc((size_t)nq * 8);
    for (int64_t x = 0; x < nq; x++) {
        const int64_t t = x / K;   // (row, h)
        const double gx = GK == K ? (double)g[x] : GK == 1 ? (double)g[t] : 0.0;
        ad[x] = exp(gx) * (double)k[x];
        bd[x] = -(double)beta[t] * (double)k[x];
        gd[x] = gx;
    }
    for (int64_t x = 0; x < nv; x++) vd[x] = (double)beta[x / V] * (double)v[x];
    float * a = rnd(ad, nq), * b = rnd(bd, nq), * vp = rnd(vd, nv);
    float * gk = GK ? rnd(gd, nq) : NULL;
    for (int fi = 0; fi < LA_N_FORMS; fi++) {
        char nm[240];
        la_form_name(nm, sizeof nm, nm_of[kind], LA_FORMS[fi]);
        la_opts o = la_test_opts(LA_FORMS[fi].form, LA_FORMS[fi].C, 0, NULL, 0);
        float * o1 = la_test_alloc((size_t)nv * 4), * f1 = la_test_alloc((size_t)ns * 4);
        float * o2 = la_test_alloc((size_t)nv * 4), * f2 = la_test_alloc((size_t)ns * 4);
        float * dq1 = la_test_alloc((size_t)nq * 4), * dk1 = la_test_alloc((size_t)nq * 4);
        float * dv1 = la_test_alloc((size_t)nv * 4), * db1 = la_test_alloc((size_t)nb * 4);
        float * dg1 = GK ? la_test_alloc((size_t)(nb * GK) * 4) : NULL;
        float * ds1 = la_test_alloc((size_t)ns * 4), * ds2 = la_test_alloc((size_t)ns * 4);
        float * dq2 = la_test_alloc((size_t)nq * 4), * dk2 = la_test_alloc((size_t)nq * 4);
        float * dv2 = la_test_alloc((size_t)nv * 4), * da2 = la_test_alloc((size_t)nq * 4);
        float * dbb2 = la_test_alloc((size_t)nq * 4);
        float * dgk2 = GK ? la_test_alloc((size_t)nq * 4) : NULL;
        la_status s[4];
        if (kind == ID_DELTA) {
            s[0] = la_delta_rule_forward(o1, f1, q, k, v, beta, s0, sh, &o);
            s[1] = la_delta_rule_backward(dq1, dk1, dv1, db1, ds1, dout, dfs, q, k, v, beta, s0,
                                          sh, &o);
            s[2] = la_iplr_delta_rule_forward(o2, f2, q, k, vp, a, b, s0, sh, &o);
            s[3] = la_iplr_delta_rule_backward(dq2, dk2, dv2, da2, dbb2, ds2, dout, dfs, q, k, vp,
                                               a, b, s0, sh, &o);
        } else {
            if (kind == ID_KDA) {
                s[0] = la_kda_forward(o1, f1, q, k, v, g, beta, NULL, NULL, s0, sh, &o);
                s[1] = la_kda_backward(dq1, dk1, dv1, dg1, db1, NULL, NULL, ds1, dout, dfs, q, k,
                                       v, g, beta, NULL, NULL, s0, sh, &o);
            } else {
                s[0] = la_gated_delta_rule_forward(o1, f1, q, k, v, g, beta, NULL, NULL, s0, sh,
                                                   &o);
                s[1] = la_gated_delta_rule_backward(dq1, dk1, dv1, dg1, db1, NULL, NULL, ds1,
                                                    dout, dfs, q, k, v, g, beta, NULL, NULL, s0,
                                                    sh, &o);
            }
            s[2] = la_dplr_delta_rule_forward(o2, f2, q, k, vp, a, b, gk, s0, sh, &o);
            s[3] = la_dplr_delta_rule_backward(dq2, dk2, dv2, da2, dbb2, dgk2, ds2, dout, dfs, q,
                                               k, vp, a, b, gk, s0, sh, &o);
        }
        if (la_expect(s[0] == LA_STATUS_OK && s[1] == LA_STATUS_OK && s[2] == LA_STATUS_OK &&
                          s[3] == LA_STATUS_OK, "%s: status %s %s %s %s", nm,
                      la_status_str(s[0]), la_status_str(s[1]), la_status_str(s[2]),
                      la_status_str(s[3]))) {
            // the delta-family gradients from the dplr ones
            double * mk = la_test_alloc((size_t)nq * 8), * mv = la_test_alloc((size_t)nv * 8);
            double * mb = la_test_alloc((size_t)nb * 8);
            double * mg = GK ? la_test_alloc((size_t)(nb * GK) * 8) : NULL;
            for (int64_t x = 0; x < nq; x++) {
                const int64_t t = x / K;
                const double ex = GK ? exp(gd[x]) : 1.0;
                mk[x] = (double)dk2[x] + ex * (double)da2[x] - (double)beta[t] * (double)dbb2[x];
                mb[t] -= (double)k[x] * (double)dbb2[x];
                if (GK == K) mg[x] = (double)dgk2[x] + ex * (double)k[x] * (double)da2[x];
                else if (GK == 1) mg[t] += (double)dgk2[x] + ex * (double)k[x] * (double)da2[x];
            }
            for (int64_t x = 0; x < nv; x++) {
                mv[x] = (double)beta[x / V] * (double)dv2[x];
                mb[x / V] += (double)v[x] * (double)dv2[x];
            }
            char n2[300];
            snprintf(n2, sizeof n2, "%s o", nm);
            la_expect_rel_ff(n2, o1, o2, nv, TOL_ID_FWD);
            snprintf(n2, sizeof n2, "%s final_state", nm);
            la_expect_rel_ff(n2, f1, f2, ns, TOL_ID_FWD);
            snprintf(n2, sizeof n2, "%s dq", nm);
            la_expect_rel_ff(n2, dq1, dq2, nq, TOL_ID_BWD);
            snprintf(n2, sizeof n2, "%s dk", nm);
            la_expect_rel(n2, dk1, mk, nq, TOL_ID_BWD);
            snprintf(n2, sizeof n2, "%s dv", nm);
            la_expect_rel(n2, dv1, mv, nv, TOL_ID_BWD);
            snprintf(n2, sizeof n2, "%s dbeta", nm);
            la_expect_rel(n2, db1, mb, nb, TOL_ID_BWD);
            if (GK) {
                snprintf(n2, sizeof n2, "%s dg", nm);
                la_expect_rel(n2, dg1, mg, nb * GK, TOL_ID_BWD);
            }
            snprintf(n2, sizeof n2, "%s dinitial_state", nm);
            la_expect_rel_ff(n2, ds1, ds2, ns, TOL_ID_BWD);
            free(mk); free(mv); free(mb); free(mg);
        }
        free(o1); free(f1); free(o2); free(f2); free(dq1); free(dk1); free(dv1); free(db1);
        free(dg1); free(ds1); free(ds2); free(dq2); free(dk2); free(dv2); free(da2); free(dbb2);
        free(dgk2);
    }
    free(q); free(k); free(v); free(dout); free(beta); free(g); free(s0); free(dfs);
    free(ad); free(bd); free(vd); free(gd); free(a); free(b); free(vp); free(gk);
}

// Every output of two runs on the same data: within tol (or bitwise with tol < 0).
static void same_results(const tdata * d, const fres * x, const fres * y, const char * nm,
                         double tol_fwd, double tol_bwd) {
    const la_optest t = optest_of(d);
    if (tol_fwd < 0) la_expect(fres_equal(d, x, y), "%s: results differ", nm);
    else la_op_compare_ff(&t, x->p, y->p, nm, tol_fwd, tol_bwd);
}

// #10: rwkv7(r, w, k, v, a, b) = dplr(q = r, gk = w) with scale 1; rwkv7's default scale is
// 1.0 (every form), dplr's and iplr's K^-1/2; iplr = dplr(gk = NULL) = dplr(gk = 0).
static void identity_rwkv7_scales(void) {
    la_rng r;
    la_rng_seed(&r, 70);
    la_case c = { "id", OP_RWKV7, 2, 70, 2, 16, 8, 0, {0}, "", 0 };
    tdata rw;
    make_data(&c, &rw, &r);
    tdata dp = rw;
    dp.op = OP_DPLR;
    const float inv_sqrt_k = (float)(1.0 / sqrt((double)c.K));
    for (int fi = 0; fi < LA_N_FORMS; fi++) {
        la_opts o0 = la_test_opts(LA_FORMS[fi].form, LA_FORMS[fi].C, 0, NULL, 0);
        la_opts o1 = o0, os = o0, oh = o0;
        o1.scale = 1.0f;
        os.scale = inv_sqrt_k;
        oh.scale = 0.5f;
        fres a, b;
        fres_alloc(&rw, &a);
        fres_alloc(&rw, &b);
        char nm[200];
        la_form_name(nm, sizeof nm, "identity rwkv7 (default scale) == dplr(q=r, gk=w, scale 1)",
                     LA_FORMS[fi]);
        if (run_lib(&rw, &a, &o0, 1, nm) && run_lib(&dp, &b, &o1, 1, nm))
            same_results(&rw, &a, &b, nm, TOL_ID_FWD, TOL_ID_BWD);
        la_form_name(nm, sizeof nm, "rwkv7 default scale == explicit 1.0", LA_FORMS[fi]);
        if (run_lib(&rw, &b, &o1, 1, nm)) same_results(&rw, &a, &b, nm, -1, -1);
        la_form_name(nm, sizeof nm, "identity rwkv7 == dplr(q=r, gk=w), scale 0.5", LA_FORMS[fi]);
        if (run_lib(&rw, &a, &oh, 1, nm) && run_lib(&dp, &b, &oh, 1, nm))
            same_results(&rw, &a, &b, nm, TOL_ID_FWD, TOL_ID_BWD);
        la_form_name(nm, sizeof nm, "dplr default scale == K^-1/2", LA_FORMS[fi]);
        if (run_lib(&dp, &a, &o0, 1, nm) && run_lib(&dp, &b, &os, 1, nm))
            same_results(&rw, &a, &b, nm, -1, -1);
        fres_free(&a);
        fres_free(&b);
    }
    // iplr = dplr(gk = NULL) = dplr(gk = 0)
    tdata ip = rw;
    ip.op = OP_IPLR;
    ip.gk = NULL;
    ip.ng = 0;
    tdata dn = ip;
    dn.op = OP_DPLR;
    tdata dz = rw;
    dz.op = OP_DPLR;
    dz.gk = la_test_alloc((size_t)rw.nq * 4);
    for (int fi = 0; fi < LA_N_FORMS; fi++) {
        la_opts o = la_test_opts(LA_FORMS[fi].form, LA_FORMS[fi].C, 0, NULL, 0);
        fres a, b, z;
        fres_alloc(&ip, &a);
        fres_alloc(&ip, &b);
        fres_alloc(&dz, &z);
        char nm[200];
        la_form_name(nm, sizeof nm, "identity iplr == dplr(gk=NULL)", LA_FORMS[fi]);
        if (run_lib(&ip, &a, &o, 1, nm) && run_lib(&dn, &b, &o, 1, nm))
            same_results(&ip, &a, &b, nm, TOL_ID_FWD, TOL_ID_BWD);
        la_form_name(nm, sizeof nm, "identity iplr == dplr(gk=0)", LA_FORMS[fi]);
        if (run_lib(&dz, &z, &o, 1, nm)) {
            float * dgk = z.dgk;
            z.dgk = NULL;
            same_results(&ip, &a, &z, nm, TOL_ID_FWD, TOL_ID_BWD);
            z.dgk = dgk;
        }
        fres_free(&a);
        fres_free(&b);
        fres_free(&z);
    }
    free(dz.gk);
    free_data(&rw);
}

// ---------------------------------------------------------------------------------------------
// Argument rules.

static void want_both(const tdata * d, const la_opts * o, la_status w, const char * what) {
    const la_optest t = optest_of(d);
    la_op_want_both(&t, o, w, what);
}

static void api_checks(void) {
    la_rng r;
    la_rng_seed(&r, 80);
    for (int op = 0; op < 3; op++) {
        la_case c = { "api", (op_kind)op, 2, 10, 2, 8, 5, 0, {0}, "", 0 };
        tdata d;
        make_data(&c, &d, &r);
        la_opts o = opts_for(&d, (la_form_c){ LA_FORM_CHUNK, 16 });
        const la_optest t = optest_of(&d);
        la_op_api(&t, &o);
        fres f;
        fres_alloc(&d, &f);
        char nm[200];
        for (int fm = 0; fm < 3; fm++) {
            la_opts of = o;
            of.form = (la_form)fm;
            const char * fn = la_form_str(of.form);
            tdata dn = d;
            dn.a = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL a", OP_NAME[op], fn);
            la_expect_status(lib_fwd(&dn, f.o, f.fs, d.s0, &of), LA_STATUS_INVALID_ARG, nm);
            dn = d;
            dn.b = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL b", OP_NAME[op], fn);
            la_expect_status(lib_fwd(&dn, f.o, f.fs, d.s0, &of), LA_STATUS_INVALID_ARG, nm);
            fres fn2 = f;
            fn2.da = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL da", OP_NAME[op], fn);
            la_expect_status(lib_bwd(&d, &fn2, &of), LA_STATUS_INVALID_ARG, nm);
            fn2 = f;
            fn2.db = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL db", OP_NAME[op], fn);
            la_expect_status(lib_bwd(&d, &fn2, &of), LA_STATUS_INVALID_ARG, nm);
        }
        tdata bad = d;
        bad.sh.HV = 2 * c.H;
        want_both(&bad, &o, LA_STATUS_SHAPE, "HV = 2H (no grouped value heads)");
        bad.sh.HV = c.H;
        want_both(&bad, &o, LA_STATUS_OK, "HV = H given explicitly");
        la_opts ob;
        // none of the delta family's flags
        const char * fl[5] = { "use_qk_l2norm_in_kernel", "use_beta_sigmoid_in_kernel",
                               "allow_neg_eigval", "use_gate_in_kernel", "lower_bound" };
        for (int i = 0; i < 5; i++) {
            ob = o;
            ob.use_qk_l2norm_in_kernel = i == 0;
            ob.use_beta_sigmoid_in_kernel = i == 1;
            ob.allow_neg_eigval = i == 2;
            ob.use_gate_in_kernel = i == 3;
            ob.lower_bound = i == 4 ? -5.0f : 0.0f;
            snprintf(nm, sizeof nm, "flag %s (not accepted)", fl[i]);
            want_both(&d, &ob, LA_STATUS_INVALID_ARG, nm);
        }
        if (op != OP_IPLR) {
            fres fg = f;
            fg.dgk = NULL;
            snprintf(nm, sizeof nm, "%s %s without its gradient", OP_NAME[op],
                     op == OP_RWKV7 ? "w" : "gk");
            la_expect_status(lib_bwd(&d, &fg, &o), LA_STATUS_INVALID_ARG, nm);
        }
        if (op == OP_DPLR) {
            tdata ng = d;
            ng.gk = NULL;
            fres fg = f;
            la_expect_status(lib_bwd(&ng, &fg, &o), LA_STATUS_INVALID_ARG, "dplr dgk without gk");
            fg.dgk = NULL;
            la_expect_status(lib_bwd(&ng, &fg, &o), LA_STATUS_OK, "dplr without gk and dgk");
        }
        fres_free(&f);
        free_data(&d);
    }
}

// ---------------------------------------------------------------------------------------------

int main(void) {
    const la_case cases[] = {
        // name         op        B  T    H  K   V   nseq lens                        spec                 scale
        { "basic",      OP_DPLR,  2, 100, 2, 16, 8,  0, {0},                        "",                  0 },
        { "T1",         OP_DPLR,  3, 1,   2, 8,  8,  0, {0},                        "",                  0 },
        { "T67_noinit", OP_DPLR,  1, 67,  3, 16, 16, 0, {0},                        "noinit",            0 },
        { "varlen",     OP_DPLR,  1, 0,   2, 16, 12, 7, {37, 0, 1, 64, 65, 3, 130}, "",                  0 },
        { "K7_V19",     OP_DPLR,  1, 130, 1, 7,  19, 0, {0},                        "nodfs",             0.3f },
        { "K64",        OP_DPLR,  1, 80,  1, 64, 32, 0, {0},                        "",                  0 },
        { "kda_map",    OP_DPLR,  2, 90,  2, 16, 8,  0, {0},                        "m:kda g:logsig",    0 },
        { "delta_map",  OP_DPLR,  1, 90,  2, 16, 8,  0, {0},                        "m:delta g:logsig",  0 },
        { "nogk",       OP_DPLR,  2, 70,  2, 16, 8,  0, {0},                        "nogk m:delta",      0 },
        { "g_logsig",   OP_DPLR,  1, 100, 2, 16, 8,  0, {0},                        "g:logsig",          0 },
        { "g_uni",      OP_DPLR,  1, 150, 2, 16, 8,  0, {0},                        "g:uni",             0 },
        { "g_zero",     OP_DPLR,  2, 90,  2, 16, 8,  0, {0},                        "g:zero",            0 },
        { "g_small",    OP_DPLR,  1, 90,  2, 16, 8,  0, {0},                        "g:small",           0 },
        { "g_mix",      OP_DPLR,  1, 150, 2, 16, 16, 0, {0},                        "g:mix",             0 },
        { "g_mix_kda",  OP_DPLR,  1, 150, 2, 16, 16, 0, {0},                        "g:mix m:kda",       0 },
        { "g_mix_vl",   OP_DPLR,  1, 0,   2, 12, 8,  3, {130, 1, 77},               "g:mix",             0 },
        { "g_tail",     OP_DPLR,  1, 192, 2, 16, 16, 0, {0},                        "g:tail",            0 },

        { "basic",      OP_IPLR,  2, 100, 2, 16, 8,  0, {0},                        "m:delta",           0 },
        { "rwkv_map",   OP_IPLR,  1, 100, 2, 16, 8,  0, {0},                        "",                  0 },
        { "T1",         OP_IPLR,  3, 1,   2, 8,  8,  0, {0},                        "m:delta",           0 },
        { "T67_noinit", OP_IPLR,  1, 67,  3, 16, 16, 0, {0},                        "m:delta noinit",    0 },
        { "varlen",     OP_IPLR,  1, 0,   2, 16, 12, 7, {37, 0, 1, 64, 65, 3, 130}, "m:delta",           0 },
        { "K7_V19",     OP_IPLR,  1, 130, 1, 7,  19, 0, {0},                        "m:delta nodfs",     0.3f },
        { "K64",        OP_IPLR,  1, 80,  1, 64, 32, 0, {0},                        "m:delta",           0 },

        { "basic",      OP_RWKV7, 2, 100, 2, 16, 8,  0, {0},                        "",                  0 },
        { "T1",         OP_RWKV7, 3, 1,   2, 8,  8,  0, {0},                        "",                  0 },
        { "T67_noinit", OP_RWKV7, 1, 67,  3, 16, 16, 0, {0},                        "noinit",            0 },
        { "varlen",     OP_RWKV7, 1, 0,   2, 16, 12, 7, {37, 0, 1, 64, 65, 3, 130}, "",                  0 },
        { "K7_V19",     OP_RWKV7, 1, 130, 1, 7,  19, 0, {0},                        "nodfs",             0.3f },
        { "K64",        OP_RWKV7, 1, 80,  1, 64, 32, 0, {0},                        "",                  0 },
        { "g_uni",      OP_RWKV7, 1, 150, 2, 16, 8,  0, {0},                        "g:uni",             0 },
        { "g_zero",     OP_RWKV7, 1, 90,  2, 16, 8,  0, {0},                        "g:zero",            0 },
        { "g_mix",      OP_RWKV7, 1, 150, 2, 16, 16, 0, {0},                        "g:mix",             0 },
        { "g_tail",     OP_RWKV7, 1, 192, 2, 16, 16, 0, {0},                        "g:tail",            0 },
    };
    tdata data;
    const la_opmaker mk = { &data, make_data, optest_of, free_data };
    la_op_cases(&mk, cases, sizeof cases / sizeof cases[0], 100, false, &TOLS);

    const la_case fdc[] = {
        { "fd",          OP_DPLR,  2, 9, 2, 4, 3, 0, {0},          "m:rand g:logsig",     0 },
        { "fd_rwkv",     OP_DPLR,  1, 9, 2, 4, 3, 0, {0},          "",                    0.7f },
        { "fd_uni",      OP_DPLR,  1, 9, 1, 3, 3, 0, {0},          "m:rand g:uni",        0 },
        { "fd_nogk",     OP_DPLR,  1, 9, 2, 4, 3, 0, {0},          "m:rand nogk",         0 },
        { "fd_varlen",   OP_DPLR,  1, 0, 2, 3, 2, 4, {4, 0, 1, 6}, "m:rand",              0 },
        { "fd_T1",       OP_DPLR,  2, 1, 1, 4, 3, 0, {0},          "m:rand",              0 },
        { "fd",          OP_IPLR,  2, 9, 2, 4, 3, 0, {0},          "m:rand",              0 },
        { "fd_varlen",   OP_IPLR,  1, 0, 2, 3, 2, 4, {4, 0, 1, 6}, "m:delta",             0 },
        { "fd",          OP_RWKV7, 2, 9, 2, 4, 3, 0, {0},          "",                    0 },
        { "fd_rand",     OP_RWKV7, 1, 9, 1, 4, 3, 0, {0},          "m:rand g:logsig",     0 },
        { "fd_varlen",   OP_RWKV7, 1, 0, 2, 3, 2, 4, {4, 0, 1, 6}, "",                    0 },
    };
    la_op_cases(&mk, fdc, sizeof fdc / sizeof fdc[0], 200, true, &TOLS);

    identity_case(ID_DELTA, 60);
    identity_case(ID_KDA, 61);
    identity_case(ID_GDN, 62);
    identity_rwkv7_scales();

    const char * spec[3] = { "g:logsig", "m:delta", "" };
    for (int op = 0; op < 3; op++)
        la_op_contract(&mk, op, spec[op], 300 + (uint64_t)op, &TOLS);
    api_checks();

    const struct { op_kind op; const char * spec; } longs[4] = {
        { OP_DPLR, "m:kda g:logsig" }, { OP_DPLR, "g:mix" }, { OP_IPLR, "m:delta" }, { OP_RWKV7, "" }
    };
    for (int i = 0; i < 4; i++)
        la_op_long(&mk, longs[i].op, longs[i].spec, 400 + (uint64_t)i, &TOLS);
    return la_test_summary();
}
