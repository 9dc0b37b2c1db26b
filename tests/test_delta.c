// delta_rule, gated_delta_rule and kda (OPS.md 2.6-2.8) with the in-kernel conveniences of
// OPS.md 1.7 and grouped value heads (1.8):
//
//   P = D_t S_{t-1} ;  u_t = beta_t (v_t - P^T k_t) ;  S_t = P + k_t u_t^T ;  o_t = s S_t^T q_t
//   D_t = I (delta_rule) | exp(g_t) I (gated_delta_rule) | Diag(exp(g_t)) (kda)
//
// checked against an independent float64 oracle written here: a per-token loop of the
// recurrence on the effective inputs, preceded by the OPS.md 1.7 formulas (l2norm with the eps
// inside the sqrt, beta = sigmoid or 2 sigmoid, the softplus gate -exp(A_log) softplus(x + dt_bias)
// with its threshold 20, the lower-bound gate lb sigmoid(exp(A_log)(x + dt_bias))), and its
// hand-derived reverse-time adjoint (G = dL/dS_t; newest token first):
//   G += s q do^T ; dq = s S_t do ; P = D S_{t-1} ; w = P^T k ; u = beta (v - w)
//   dk = G u + P dw ; du = G^T k ; dv = beta du ; dbeta = du . (v - w) ; dw = -beta du
//   dP = G + k dw^T ; dlog-decay_i = sum_j dP_ij P_ij ; G <- D dP          (dinitial_state = G)
// followed by the chain rule through the 1.7 formulas back to the raw inputs and parameters
// (A_log, dt_bias summed over tokens), and the sum of dq, dk over each group of value heads.
// The oracle keeps a state checkpoint every 64 tokens and replays one segment at a time, so
// it also serves the 10^5-token sequences.
//
// What is checked:
//   * the oracle's gradients against central finite differences of its own forward, with
//     respect to every raw floating input (q, k, v, beta, g, A_log, dt_bias, initial_state),
//     for every flag combination (l2norm, beta sigmoid, negative eigenvalues, softplus gate with
//     and without dt_bias and with gate inputs beyond the softplus threshold, lower-bound gate
//     with and without A_log / dt_bias), GVA, varlen, T = 1; then the library's float32
//     gradients in every form against the same finite differences;
//   * every form (ref, recurrent, chunk with C = 64, 32, 16 and 24) forward and backward
//     against the oracle on 1 and 2 threads (bitwise identical) over a matrix of shapes and
//     flags: T = 1, T not a multiple of C, varlen with sequences of length 0, 1 and > 64,
//     HV = 2H and 3H, K != V, K = 64 and 128, raw q, k rows of norm ~1e-3 under the l2norm
//     flag, with and without initial_state / dfinal_state, explicit
//     scale; beta near 0, near 1 and near 2 (allow_neg_eigval); log gates from -1e-6 to -20,
//     exactly 0, and the mixed patterns whose in-chunk cumulative decay reaches -1000;
//   * identities (OPS.md 3): gated_delta_rule with g = 0 equals delta_rule (also beta = NULL
//     against beta = 1), kda with a gate constant over K equals gated_delta_rule (also through
//     the gate flag, with dt_bias constant over K; sum_K dg, sum_K ddt_bias), and
//     allow_neg_eigval without the sigmoid flag changes nothing;
//   * the chaining law (OPS.md 1.3), decode (T = 1 steps with final_state == initial_state)
//     against the full pass, final_state aliasing initial_state, caller-owned workspaces
//     (any alignment; one byte short rejected), optional outputs, argument rules;
//   * 10^5-token sequences (H = 1, K = V = 16), chunk form forward and backward: finite and
//     equal to the oracle.
//
// Tolerances (float32 forms vs the float64 oracle): |got - ref| <= TOL * (max|ref| + |ref|)
// elementwise, i.e. relative to the tensor's largest entry (la_check_rel's rule):
//   TOL_FWD = 2e-5 for o and final_state, TOL_BWD = 5e-5 for every gradient (float32 rounding of
//   sums over up to T*K terms; the delta rule's transitions have norm <= 1 for l2-normalised k
//   and beta in (0, 2), so errors do not grow with T beyond that);
//   dA_log and ddt_bias sum terms of both signs over tokens (and channels): their scale is the
//   larger of max|ref| and the largest sum of |terms| (the condition of the sum);
//   TOL_ID = 2 * TOL for identities between two float32 computations;
//   TOL_LONG = 1e-4 for the 10^5-token sequences.
// Measured (AVX-512, AVX2 and portable kernels): o, final_state within 0.09 of TOL_FWD,
// gradients within 0.15 of TOL_BWD. The cases beta1_sig and beta2 (raw beta in [6, 14] under
// the sigmoid flag) also demand sigmoid'(raw) to float32 relative precision: formed as
// s (1 - s) from a float32 s it loses the digits of 1 - s (up to 7e-4 relative at raw = 10, 4%
// at raw = 14), formed as s sigmoid(-raw) it does not.
// float64: the oracle's gradients against finite differences (central, step 1e-6) to
// TOL_FD = 1e-6 relative to max|grad| (truncation ~1e-12, rounding ~1e-10 |L|).
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
//   flags  l2 sig neg gate lb (lower_bound = -5; implies nothing else)
//   norms  tiny (with l2: 10% of the raw q, k rows have norms near 1e-3)
//   absent nobeta (delta_rule) noA nodtb noinit nodfs
//   gates  g:logsig (default) g:uni (U[-20, -1e-6]) g:zero g:small (U[-1e-6, 0]) g:mix g:tail
//          with the gate flag: raw inputs N(0, 2), or g:big (15% of them with x + dt_bias in
//          [21, 26], beyond the softplus threshold)
//   beta   b:std (default) b:zero (near 0) b:one (near 1) b:two (near 2)

typedef enum { OP_DELTA, OP_GDN, OP_KDA } op_kind;
static const char * const OP_NAME[3] = { "delta_rule", "gated_delta_rule", "kda" };

// The inputs: NTOK per-token ones, then the other parameters (NPAR floating inputs in all, the
// order of their gradients among the results), then the output gradients.
enum { NTOK = 5, NPAR = 8, NIN = 10 };
// The results (la_optest's layout): o, final_state, the gradients of the NPAR inputs.
enum { NRES = 2 + NPAR, R_DA = 7, R_DDT = 8 };
static const char * const RES_NAME[NRES] = { "o", "final_state", "dq", "dk", "dv", "dbeta", "dg",
                                             "dA_log", "ddt_bias", "dinitial_state" };

typedef struct tdata {
    const char * name;
    op_kind  op;
    la_shape sh;            // as passed to the library
    int64_t  HV, GK;        // value heads; gate width: 0 (delta_rule), 1 (gdn), K (kda)
    int64_t  N, rows, nq, nv, nb, ng, na, ndt, ns;
    int64_t  cu[9];
    bool     varlen;
    bool     l2, sig, neg, gate;
    float    lb;
    double   scale;         // resolved
    float    fscale;        // as passed (0: default)
    union {
        struct { float * q, * k, * v, * beta, * g, * A_log, * dt_bias, * s0, * dout, * dfs; };
        float * in[NIN];
    };
} tdata;
_Static_assert(offsetof(tdata, dfs) == offsetof(tdata, in) + (NIN - 1) * sizeof(float *),
               "tdata: in[] is q .. dfs");

static double softplus(double x) { return x > 20 ? x : log1p(exp(x)); }

static void make_data(const la_case * c, void * dv, la_rng * r) {
    tdata * d = dv;
    memset(d, 0, sizeof *d);
    const char * sp = c->spec ? c->spec : "";
    d->name = c->name;
    d->op = (op_kind)c->op;
    const int64_t hvs = c->op == OP_DELTA ? 0 : c->HV;   // delta_rule: no grouped value heads
    d->HV = hvs ? hvs : c->H;
    d->sh = (la_shape){ c->B, c->T, c->H, c->K, c->V, hvs };
    d->N = la_case_seqs(c, d->cu, &d->sh.T);
    d->varlen = c->nseq > 0;
    const int64_t H = c->H, HV = d->HV, K = c->K, V = c->V;
    d->rows = d->sh.B * d->sh.T;
    d->GK = c->op == OP_DELTA ? 0 : c->op == OP_GDN ? 1 : K;
    d->l2 = la_spec_has(sp, "l2");
    d->sig = la_spec_has(sp, "sig");
    d->neg = la_spec_has(sp, "neg");
    d->gate = la_spec_has(sp, "gate");
    d->lb = la_spec_has(sp, "lb") ? -5.0f : 0.0f;
    d->nq = d->rows * H * K;
    d->nv = d->rows * HV * V;
    d->nb = (c->op == OP_DELTA && la_spec_has(sp, "nobeta")) ? 0 : d->rows * HV;
    d->ng = d->rows * HV * d->GK;
    d->na = d->gate && !la_spec_has(sp, "noA") ? HV : 0;
    d->ndt = d->gate && !la_spec_has(sp, "nodtb") ? HV * d->GK : 0;
    d->ns = d->N * HV * K * V;
    d->fscale = c->scale;
    d->scale = c->scale != 0.0f ? (double)c->scale : 1.0 / sqrt((double)K);

    d->q = la_new_normal(r, d->nq, 1.0);
    d->k = la_new_normal(r, d->nq, 1.0);
    const bool tiny = la_spec_has(sp, "tiny");
    if (!d->l2) la_l2norm_rows(d->k, d->rows * H, K);
    else  // raw q, k rows of assorted norms, with "tiny" 10% of them near 1e-3 (where the eps
          // inside the sqrt of OPS.md's l2norm matters)
        for (int64_t e = 0; e < 2 * d->rows * H; e++) {
            float * x = e % 2 ? d->k : d->q;
            const double u = la_rng_uniform(r), u2 = la_rng_uniform(r);
            const double m = tiny && u2 < 0.1 ? 1e-3 * (0.5 + u) : 0.2 + 3.0 * u;
            for (int64_t i = 0; i < K; i++) x[e / 2 * K + i] = (float)(m * (double)x[e / 2 * K + i]);
        }
    d->v = la_new_normal(r, d->nv, 1.0);
    d->dout = la_new_normal(r, d->nv, 1.0);

    if (d->nb) {
        d->beta = la_test_alloc((size_t)d->nb * 4);
        for (int64_t e = 0; e < d->nb; e++) {
            const double u = la_rng_uniform(r), z = la_rng_normal(r);
            double b;
            if (la_spec_has(sp, "b:zero")) b = d->sig ? -14.0 + 4.0 * u : 1e-4 * u;
            else if (la_spec_has(sp, "b:one"))
                b = d->sig ? 10.0 + 4.0 * u : (e % 3 ? 1.0 - 1e-4 * u : 1.0);
            else if (la_spec_has(sp, "b:two")) b = d->sig ? 6.0 + 4.0 * u : 2.0 - 1e-2 * (u + 1e-3);
            else b = d->sig ? 1.5 * z : la_sigmoid_d(z);
            d->beta[e] = (float)b;
        }
    }
    if (d->na) {
        d->A_log = la_test_alloc((size_t)d->na * 4);
        for (int64_t e = 0; e < d->na; e++) {
            const double u = la_rng_uniform(r), z = la_rng_normal(r);
            d->A_log[e] = (float)(d->lb < 0 ? 0.5 * z
                                  : la_spec_has(sp, "g:big") ? log(0.02 + 0.08 * u)
                                                             : log(1.0 + 7.0 * u));
        }
    }
    if (d->ndt) {
        d->dt_bias = la_test_alloc((size_t)d->ndt * 4);
        for (int64_t e = 0; e < d->ndt; e++) {
            const double u = la_rng_uniform(r), z = la_rng_normal(r);
            // softplus gate: dt_bias = softplus^-1(dt), dt in [1e-3, 0.1] (Mamba's init)
            const double dt = 1e-3 + 0.099 * u;
            d->dt_bias[e] = (float)(d->lb < 0 ? 0.5 * z : log(expm1(dt)));
        }
    }
    if (d->ng) {
        d->g = la_test_alloc((size_t)d->ng * 4);
        const int64_t n = d->ng, T = d->sh.T;
        if (d->gate) {
            for (int64_t e = 0; e < n; e++) {
                const double u = la_rng_uniform(r), z = la_rng_normal(r), u2 = la_rng_uniform(r);
                const int64_t hv = (e / d->GK) % HV, ch = e % d->GK;
                const double bias = d->dt_bias ? (double)d->dt_bias[hv * d->GK + ch] : 0.0;
                d->g[e] = (float)(la_spec_has(sp, "g:big") && u2 < 0.15 ? 21.0 + 5.0 * u - bias
                                                                          : 2.0 * z);
            }
        } else if (!la_fill_gate_spec(r, d->g, n, sp, d->GK == 1 ? HV : K, d->GK == 1 ? 1 : HV,
                                      T)) {
            // (g:mix's channels: the key channels (kda) or the value heads (gdn))
            la_fill_logsigmoid(r, d->g, n);   // g:logsig, the default
        }
    }
    if (!la_spec_has(sp, "noinit")) d->s0 = la_new_normal(r, d->ns, 0.5);
    if (!la_spec_has(sp, "nodfs")) d->dfs = la_new_normal(r, d->ns, 1.0);
}

static void free_data(void * d) { la_free_f(((tdata *)d)->in, NIN); }

// Every call's options; form and chunk size fc.
static la_opts opts_for(const tdata * d, la_form_c fc) {
    la_opts o = la_test_opts(fc.form, fc.C, d->fscale, d->varlen ? d->cu : NULL, d->N);
    o.use_qk_l2norm_in_kernel = d->l2;
    o.use_beta_sigmoid_in_kernel = d->sig;
    o.allow_neg_eigval = d->neg;
    o.use_gate_in_kernel = d->gate;
    o.lower_bound = d->lb;
    return o;
}

// ---------------------------------------------------------------------------------------------
// The float64 oracle.

// The inputs in float64 and the results (la_optest's layout), by name.
typedef union din {
    struct { double * q, * k, * v, * beta, * g, * A_log, * dt_bias, * s0, * dout, * dfs; };
    double * p[NIN];
} din;
_Static_assert(sizeof(din) == sizeof(double *[NIN]), "din: the inputs' pointers, in order");

typedef union oset {
    struct { double * o, * fs, * dq, * dk, * dv, * dbeta, * dg, * dA, * ddt, * ds0; };
    double * p[NRES];
} oset;
_Static_assert(sizeof(oset) == sizeof(double *[NRES]), "oset: the results' pointers, in order");

// Effective inputs (after OPS.md 1.7) and the per-value-head gradient accumulators.
typedef struct eff {
    int64_t  H, HV, K, V, GK, grp;
    double   s;
    double * qe, * ke, * be, * ge;   // ge NULL for delta_rule
    const double * v, * dout;
    double * dqe, * dke, * dbe, * dge;  // dqe, dke (rows, HV, K)
    double * dv;
    double * P, * w, * u, * dw, * a;   // scratch
} eff;

static void decay(const eff * e, int64_t row, int64_t hv, double * a) {
    for (int64_t i = 0; i < e->K; i++)
        a[i] = e->GK == 0 ? 1.0
             : e->GK == 1 ? exp(e->ge[row * e->HV + hv]) : exp(e->ge[(row * e->HV + hv) * e->K + i]);
}

// One token of value head hv: Sn from Sp (K x V, row-major); o_t (V) when o != NULL.
static void step_fwd(void * ctx, int64_t row, int64_t hv, const double * Sp, double * Sn,
                     double * o) {
    const eff * e = ctx;
    const int64_t K = e->K, V = e->V, h = hv / e->grp;
    const double * q = e->qe + (row * e->H + h) * K, * k = e->ke + (row * e->H + h) * K;
    const double * v = e->v + (row * e->HV + hv) * V, beta = e->be[row * e->HV + hv];
    decay(e, row, hv, e->a);
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) Sn[i * V + j] = e->a[i] * Sp[i * V + j];
    for (int64_t j = 0; j < V; j++) {
        double w = 0;
        for (int64_t i = 0; i < K; i++) w += Sn[i * V + j] * k[i];
        e->u[j] = beta * (v[j] - w);
    }
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) Sn[i * V + j] += k[i] * e->u[j];
    if (!o) return;
    for (int64_t j = 0; j < V; j++) {
        double acc = 0;
        for (int64_t i = 0; i < K; i++) acc += Sn[i * V + j] * q[i];
        o[j] = e->s * acc;
    }
}

// The adjoint of step_fwd: G holds dL/dS_t on entry and dL/dS_{t-1} on return.
static void step_bwd(void * ctx, int64_t row, int64_t hv, const double * Sp, const double * Sn,
                     double * G) {
    eff * e = ctx;
    const int64_t K = e->K, V = e->V, h = hv / e->grp;
    const double * q = e->qe + (row * e->H + h) * K, * k = e->ke + (row * e->H + h) * K;
    const double * v = e->v + (row * e->HV + hv) * V, beta = e->be[row * e->HV + hv];
    const double * dot = e->dout + (row * e->HV + hv) * V;
    double * dq = e->dqe + (row * e->HV + hv) * K, * dk = e->dke + (row * e->HV + hv) * K;
    double * P = e->P, * a = e->a;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) G[i * V + j] += e->s * q[i] * dot[j];
    for (int64_t i = 0; i < K; i++) {
        double acc = 0;
        for (int64_t j = 0; j < V; j++) acc += Sn[i * V + j] * dot[j];
        dq[i] = e->s * acc;
    }
    decay(e, row, hv, a);
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < V; j++) P[i * V + j] = a[i] * Sp[i * V + j];
    for (int64_t j = 0; j < V; j++) {
        double w = 0;
        for (int64_t i = 0; i < K; i++) w += P[i * V + j] * k[i];
        e->w[j] = w;
        e->u[j] = beta * (v[j] - w);
    }
    double db = 0;
    for (int64_t j = 0; j < V; j++) {
        double du = 0;
        for (int64_t i = 0; i < K; i++) du += G[i * V + j] * k[i];
        e->dv[(row * e->HV + hv) * V + j] = beta * du;
        db += du * (v[j] - e->w[j]);
        e->dw[j] = -beta * du;
    }
    e->dbe[row * e->HV + hv] = db;
    double dgs = 0;
    for (int64_t i = 0; i < K; i++) {
        double dki = 0, dgi = 0;
        for (int64_t j = 0; j < V; j++) {
            dki += G[i * V + j] * e->u[j] + P[i * V + j] * e->dw[j];
            const double dP = G[i * V + j] + k[i] * e->dw[j];
            dgi += dP * P[i * V + j];
            G[i * V + j] = a[i] * dP;
        }
        dk[i] = dki;
        if (e->GK > 1) e->dge[(row * e->HV + hv) * K + i] = dgi;
        dgs += dgi;
    }
    if (e->GK == 1) e->dge[row * e->HV + hv] = dgs;   // scalar gate (or kda with K = 1)
}

// Forward always (o, final_state); the backward too when bwd (every gradient present), and the
// scale floors of dA_log, ddt_bias: the largest sum of |terms| of an entry (their condition).
static void oracle(const la_optest * ot, double * const * xp, double * const * rp, double * scale,
                   bool bwd) {
    const tdata * d = ot->ctx;
    din xs;
    oset rs;
    memcpy(xs.p, xp, sizeof xs.p);
    memcpy(rs.p, rp, sizeof rs.p);
    const din * x = &xs;
    const oset * r = &rs;
    const int64_t H = d->sh.H, HV = d->HV, K = d->sh.K, V = d->sh.V, KV = K * V;
    const int64_t rows = d->rows, GK = d->GK, nrh = rows * H;
    eff e = { .H = H, .HV = HV, .K = K, .V = V, .GK = GK, .grp = HV / H, .s = d->scale,
              .v = x->v, .dout = x->dout, .dv = r->dv };
    // OPS.md 1.7: q, k <- l2norm (eps inside the sqrt); the scale is applied in the read.
    e.qe = la_test_alloc((size_t)d->nq * 8);
    e.ke = la_test_alloc((size_t)d->nq * 8);
    double * rq = la_test_alloc((size_t)nrh * 8), * rk = la_test_alloc((size_t)nrh * 8);
    for (int64_t t = 0; t < nrh; t++) {
        double sq = 0, sk = 0;
        for (int64_t i = 0; i < K; i++) {
            sq += x->q[t * K + i] * x->q[t * K + i];
            sk += x->k[t * K + i] * x->k[t * K + i];
        }
        rq[t] = d->l2 ? 1.0 / sqrt(sq + 1e-6) : 1.0;
        rk[t] = d->l2 ? 1.0 / sqrt(sk + 1e-6) : 1.0;
        for (int64_t i = 0; i < K; i++) {
            e.qe[t * K + i] = x->q[t * K + i] * rq[t];
            e.ke[t * K + i] = x->k[t * K + i] * rk[t];
        }
    }
    // beta = raw | sigmoid(raw) | 2 sigmoid(raw) (allow_neg_eigval with the sigmoid); 1 if absent
    const double bmul = d->neg ? 2.0 : 1.0;
    e.be = la_test_alloc((size_t)(rows * HV) * 8);
    for (int64_t t = 0; t < rows * HV; t++)
        e.be[t] = !x->beta ? 1.0 : d->sig ? bmul * la_sigmoid_d(x->beta[t]) : x->beta[t];
    // gates: log gate as given, or from the raw input (softplus or lower-bound form)
    double * xb = NULL;
    if (GK) {
        e.ge = la_test_alloc((size_t)d->ng * 8);
        xb = la_test_alloc((size_t)d->ng * 8);
        for (int64_t t = 0; t < d->ng; t++) {
            const int64_t hv = (t / GK) % HV, ch = t % GK;
            if (!d->gate) {
                e.ge[t] = x->g[t];
                continue;
            }
            xb[t] = x->g[t] + (x->dt_bias ? x->dt_bias[hv * GK + ch] : 0.0);
            if (d->lb < 0) {
                const double A = x->A_log ? exp(x->A_log[hv]) : 1.0;
                e.ge[t] = (double)d->lb * la_sigmoid_d(A * xb[t]);
            } else {
                e.ge[t] = -exp(x->A_log[hv]) * softplus(xb[t]);
            }
        }
    }
    if (bwd) {
        e.dqe = la_test_alloc((size_t)(rows * HV * K) * 8);
        e.dke = la_test_alloc((size_t)(rows * HV * K) * 8);
        e.dbe = la_test_alloc((size_t)(rows * HV) * 8);
        e.dge = GK ? la_test_alloc((size_t)d->ng * 8) : NULL;
    }
    e.P = la_test_alloc((size_t)KV * 8);
    e.w = la_test_alloc((size_t)V * 8);
    e.u = la_test_alloc((size_t)V * 8);
    e.dw = la_test_alloc((size_t)V * 8);
    e.a = la_test_alloc((size_t)K * 8);
    la_oracle_scan scan = { d->N, d->sh.T, d->varlen ? d->cu : NULL, HV, K, V, x->s0, x->dfs,
                            r->o, r->fs, r->ds0, &e, step_fwd, step_bwd };
    la_oracle_run(&scan, bwd);
    if (bwd) {
        // GVA: q/k head h collects the gradients of its HV/H value heads; then through l2norm:
        // dx = r (dy - y (y . dy)).
        for (int64_t row = 0; row < rows; row++)
            for (int64_t h = 0; h < H; h++) {
                double * dq = r->dq + (row * H + h) * K, * dk = r->dk + (row * H + h) * K;
                for (int64_t i = 0; i < K; i++) dq[i] = dk[i] = 0.0;
                for (int64_t hv = h * e.grp; hv < (h + 1) * e.grp; hv++)
                    for (int64_t i = 0; i < K; i++) {
                        dq[i] += e.dqe[(row * HV + hv) * K + i];
                        dk[i] += e.dke[(row * HV + hv) * K + i];
                    }
                if (!d->l2) continue;
                const int64_t t = row * H + h;
                const double * yq = e.qe + t * K, * yk = e.ke + t * K;
                double pq = 0, pk = 0;
                for (int64_t i = 0; i < K; i++) {
                    pq += yq[i] * dq[i];
                    pk += yk[i] * dk[i];
                }
                for (int64_t i = 0; i < K; i++) {
                    dq[i] = rq[t] * (dq[i] - yq[i] * pq);
                    dk[i] = rk[t] * (dk[i] - yk[i] * pk);
                }
            }
        if (r->dbeta)
            for (int64_t t = 0; t < rows * HV; t++) {
                const double sg = la_sigmoid_d(x->beta[t]);
                r->dbeta[t] = d->sig ? e.dbe[t] * bmul * sg * (1.0 - sg) : e.dbe[t];
            }
        if (r->dA) memset(r->dA, 0, (size_t)d->na * 8);
        if (r->ddt) memset(r->ddt, 0, (size_t)d->ndt * 8);
        double * aA = la_test_alloc((size_t)(HV + 1) * 8);
        double * adt = la_test_alloc((size_t)(HV * (GK ? GK : 1)) * 8);
        for (int64_t t = 0; t < d->ng; t++) {
            if (!d->gate) {
                r->dg[t] = e.dge[t];
                continue;
            }
            const int64_t hv = (t / GK) % HV, ch = t % GK;
            double dx, dA;
            if (d->lb < 0) {   // g = lb sigmoid(z), z = exp(A_log) (x + dt_bias)
                const double A = x->A_log ? exp(x->A_log[hv]) : 1.0, z = A * xb[t];
                const double sg = la_sigmoid_d(z), dz = e.dge[t] * (double)d->lb * sg * (1.0 - sg);
                dx = dz * A;
                dA = dz * z;
            } else {           // g = -exp(A_log) softplus(x + dt_bias)
                const double A = exp(x->A_log[hv]);
                dx = e.dge[t] * -A * (xb[t] > 20 ? 1.0 : la_sigmoid_d(xb[t]));
                dA = e.dge[t] * e.ge[t];
            }
            r->dg[t] = dx;
            if (r->dA) r->dA[hv] += dA;
            if (r->ddt) r->ddt[hv * GK + ch] += dx;
            aA[hv] += fabs(dA);
            adt[hv * GK + ch] += fabs(dx);
        }
        scale[R_DA] = la_maxabs_d(aA, HV);
        scale[R_DDT] = la_maxabs_d(adt, HV * (GK ? GK : 1));
        free(aA);
        free(adt);
    }
    free(e.qe); free(e.ke); free(rq); free(rk); free(e.be); free(e.ge); free(xb);
    free(e.dqe); free(e.dke); free(e.dbe); free(e.dge);
    free(e.P); free(e.w); free(e.u); free(e.dw); free(e.a);
}

// ---------------------------------------------------------------------------------------------
// The library.

typedef union fres {
    struct { float * o, * fs, * dq, * dk, * dv, * dbeta, * dg, * dA, * ddt, * ds0; };
    float * p[NRES];
} fres;
_Static_assert(sizeof(fres) == sizeof(float *[NRES]), "fres: the results' pointers, in order");

static la_status lib_fwd(const tdata * d, float * o, float * fs, const float * s0,
                         const la_opts * op) {
    switch (d->op) {
    case OP_DELTA:
        return la_delta_rule_forward(o, fs, d->q, d->k, d->v, d->beta, s0, d->sh, op);
    case OP_GDN:
        return la_gated_delta_rule_forward(o, fs, d->q, d->k, d->v, d->g, d->beta, d->A_log,
                                           d->dt_bias, s0, d->sh, op);
    case OP_KDA:
        return la_kda_forward(o, fs, d->q, d->k, d->v, d->g, d->beta, d->A_log, d->dt_bias, s0,
                              d->sh, op);
    }
    return LA_STATUS_INVALID_ARG;
}

static la_status lib_bwd(const tdata * d, fres * f, const la_opts * op) {
    switch (d->op) {
    case OP_DELTA:
        return la_delta_rule_backward(f->dq, f->dk, f->dv, f->dbeta, f->ds0, d->dout, d->dfs,
                                      d->q, d->k, d->v, d->beta, d->s0, d->sh, op);
    case OP_GDN:
        return la_gated_delta_rule_backward(f->dq, f->dk, f->dv, f->dg, f->dbeta, f->dA, f->ddt,
                                            f->ds0, d->dout, d->dfs, d->q, d->k, d->v, d->g,
                                            d->beta, d->A_log, d->dt_bias, d->s0, d->sh, op);
    case OP_KDA:
        return la_kda_backward(f->dq, f->dk, f->dv, f->dg, f->dbeta, f->dA, f->ddt, f->ds0,
                               d->dout, d->dfs, d->q, d->k, d->v, d->g, d->beta, d->A_log,
                               d->dt_bias, d->s0, d->sh, op);
    }
    return LA_STATUS_INVALID_ARG;
}

static size_t lib_ws(const tdata * d, bool backward, const la_opts * op) {
    switch (d->op) {
    case OP_DELTA: return la_delta_rule_workspace_size(backward, d->sh, op);
    case OP_GDN: return la_gated_delta_rule_workspace_size(backward, d->sh, op);
    case OP_KDA: return la_kda_workspace_size(backward, d->sh, op);
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
    const int64_t H = d->sh.H, HV = d->HV, K = d->sh.K, V = d->sh.V;
    la_optest t = { .ctx = d, .name = OP_NAME[d->op], .opts = opts_for(d, LA_FORMS[0]),
                    .sh = d->sh, .N = d->N, .nin = NIN, .ntok = NTOK, .npar = NPAR,
                    .in_n = { d->nq, d->nq, d->nv, d->nb, d->ng, d->na, d->ndt, d->ns, d->nv,
                              d->ns },
                    .in_w = { H * K, H * K, HV * V, HV, HV * d->GK }, .o_w = HV * V,
                    .res_name = RES_NAME, .fwd = t_fwd, .bwd = t_bwd, .ws = t_ws,
                    .oracle = oracle };
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
// Identities (OPS.md 3 #5, #6) and allow_neg_eigval without the sigmoid flag.

// a and b computed on the same inputs: every shared tensor but the gates' gradients (dg, dA_log,
// ddt_bias), which the callers compare where they correspond.
static void compare_ff(const tdata * d, const fres * a, const fres * b, const char * nm) {
    fres x = *a;
    x.dg = x.dA = x.ddt = NULL;
    const la_optest t = optest_of(d);
    la_op_compare_ff(&t, x.p, b->p, nm, TOL_ID_FWD, TOL_ID_BWD);
}

// gated_delta_rule(g = 0) == delta_rule, with and without beta (beta = NULL against ones).
static void identity_gdn_delta(void) {
    for (int variant = 0; variant < 2; variant++) {
        la_rng r;
        la_rng_seed(&r, 40 + (uint64_t)variant);
        const bool nobeta = variant == 1;
        la_case c = { "id", OP_GDN, 2, 90, 2, 16, 8, 0, {0}, "l2 g:zero", 0, 0 };
        tdata g;
        make_data(&c, &g, &r);
        if (nobeta)
            for (int64_t e = 0; e < g.nb; e++) g.beta[e] = 1.0f;
        tdata dl = g;   // the same inputs as delta_rule (no gate)
        dl.op = OP_DELTA;
        dl.GK = 0;
        dl.ng = 0;
        dl.g = NULL;
        if (nobeta) {
            dl.beta = NULL;
            dl.nb = 0;
        }
        for (int fi = 0; fi < LA_N_FORMS; fi++) {
            char nm[160];
            la_form_name(nm, sizeof nm,
                         nobeta ? "identity gdn(g=0, beta=1) == delta_rule(beta=NULL)"
                                : "identity gdn(g=0) == delta_rule",
                         LA_FORMS[fi]);
            la_opts o = opts_for(&g, LA_FORMS[fi]);
            fres a, b;
            fres_alloc(&g, &a);
            fres_alloc(&dl, &b);
            if (run_lib(&g, &a, &o, 1, nm) && run_lib(&dl, &b, &o, 1, nm))
                compare_ff(&dl, &b, &a, nm);
            fres_free(&a);
            fres_free(&b);
        }
        free_data(&g);
    }
}

// kda with g_t = g_t 1_K equals gated_delta_rule(g): log gates, and raw gates through the
// gate flag (dt_bias constant over K); sum_K dg (and ddt_bias) equals gdn's.
static void identity_kda_gdn(void) {
    const char * specs[3] = { "", "l2 sig neg gate", "l2 sig gate nodtb" };
    for (int variant = 0; variant < 3; variant++) {
        la_rng r;
        la_rng_seed(&r, 50 + (uint64_t)variant);
        la_case c = { "id", OP_GDN, 2, 70, 2, 8, 6, 0, {0}, specs[variant], 0, 4 };
        tdata g;
        make_data(&c, &g, &r);
        const int64_t K = c.K;
        tdata kd = g;
        kd.op = OP_KDA;
        kd.GK = K;
        kd.ng = g.ng * K;
        kd.g = la_test_alloc((size_t)kd.ng * 4);
        for (int64_t e = 0; e < kd.ng; e++) kd.g[e] = g.g[e / K];
        kd.ndt = g.dt_bias ? g.ndt * K : 0;
        kd.dt_bias = g.dt_bias ? la_test_alloc((size_t)kd.ndt * 4) : NULL;
        for (int64_t e = 0; e < kd.ndt; e++) kd.dt_bias[e] = g.dt_bias[e / K];
        for (int fi = 0; fi < LA_N_FORMS; fi++) {
            char nm[200], pre[120];
            snprintf(pre, sizeof pre, "identity kda(g 1_K) == gdn(g) [%s]", specs[variant]);
            la_form_name(nm, sizeof nm, pre, LA_FORMS[fi]);
            la_opts o = opts_for(&g, LA_FORMS[fi]);
            fres a, b;
            fres_alloc(&kd, &a);
            fres_alloc(&g, &b);
            if (run_lib(&kd, &a, &o, 1, nm) && run_lib(&g, &b, &o, 1, nm)) {
                compare_ff(&g, &a, &b, nm);
                float * sdg = la_test_alloc((size_t)g.ng * 4);
                for (int64_t e = 0; e < g.ng; e++) {
                    double s = 0;
                    for (int64_t i = 0; i < K; i++) s += (double)a.dg[e * K + i];
                    sdg[e] = (float)s;
                }
                char n2[240];
                snprintf(n2, sizeof n2, "%s sum_K dg", nm);
                la_expect_rel_ff(n2, sdg, b.dg, g.ng, TOL_ID_BWD);
                if (a.dA) {
                    snprintf(n2, sizeof n2, "%s dA_log", nm);
                    la_expect_rel_ff(n2, a.dA, b.dA, g.na, TOL_ID_BWD);
                }
                if (a.ddt) {
                    for (int64_t e = 0; e < g.ndt; e++) {
                        double s = 0;
                        for (int64_t i = 0; i < K; i++) s += (double)a.ddt[e * K + i];
                        sdg[e] = (float)s;
                    }
                    snprintf(n2, sizeof n2, "%s sum_K ddt_bias", nm);
                    la_expect_rel_ff(n2, sdg, b.ddt, g.ndt, TOL_ID_BWD);
                }
                free(sdg);
            }
            fres_free(&a);
            fres_free(&b);
        }
        free(kd.g);
        free(kd.dt_bias);
        free_data(&g);
    }
}

// allow_neg_eigval only acts together with the sigmoid flag (OPS.md 1.7): alone it changes
// nothing, bitwise.
static void neg_without_sigmoid(void) {
    for (int op = OP_GDN; op <= OP_KDA; op++) {
        la_rng r;
        la_rng_seed(&r, 60 + (uint64_t)op);
        la_case c = { "neg_only", op, 1, 40, 2, 8, 8, 0, {0}, "l2", 0, 4 };
        tdata d;
        make_data(&c, &d, &r);
        for (int fi = 0; fi < LA_N_FORMS; fi += 2) {
            char nm[160];
            la_form_name(nm, sizeof nm, OP_NAME[op], LA_FORMS[fi]);
            strncat(nm, ": allow_neg_eigval without the sigmoid flag is a no-op",
                    sizeof nm - strlen(nm) - 1);
            la_opts o = opts_for(&d, LA_FORMS[fi]);
            la_opts on = o;
            on.allow_neg_eigval = true;
            fres a, b;
            fres_alloc(&d, &a);
            fres_alloc(&d, &b);
            if (run_lib(&d, &a, &o, 1, nm) && run_lib(&d, &b, &on, 1, nm))
                la_expect(fres_equal(&d, &a, &b), "%s", nm);
            fres_free(&a);
            fres_free(&b);
        }
        free_data(&d);
    }
}

// ---------------------------------------------------------------------------------------------
// Argument rules.

// Forward and backward of one configuration, both expected to return w.
static void want_both(const tdata * d, const la_opts * o, la_status w, const char * what) {
    const la_optest t = optest_of(d);
    la_op_want_both(&t, o, w, what);
}

static void api_checks(void) {
    la_rng r;
    la_rng_seed(&r, 70);
    const char * specs[3] = { "l2", "l2 sig neg gate", "l2 sig gate lb" };
    for (int op = 0; op < 3; op++) {
        la_case c = { "api", op, 2, 10, 2, 8, 5, 0, {0}, specs[op], 0, 4 };
        tdata d;
        make_data(&c, &d, &r);
        la_opts o = opts_for(&d, (la_form_c){ LA_FORM_CHUNK, 16 });
        const la_optest t = optest_of(&d);
        la_op_api(&t, &o);
        fres f;
        fres_alloc(&d, &f);
        char nm[200];
        la_opts ob = o;
        ob.scale = NAN;
        want_both(&d, &ob, LA_STATUS_INVALID_ARG, "scale NaN");
        tdata bad = d;
        if (op == OP_DELTA) {
            bad.sh.HV = 2 * c.H;
            want_both(&bad, &o, LA_STATUS_SHAPE, "HV = 2H (no GVA)");
            bad.sh.HV = c.H;
            want_both(&bad, &o, LA_STATUS_OK, "HV = H given explicitly");
        } else {
            bad.sh.HV = 3;
            want_both(&bad, &o, LA_STATUS_SHAPE, "HV = 3 with H = 2 (HV % H != 0)");
            bad.sh.HV = 1;
            want_both(&bad, &o, LA_STATUS_SHAPE, "HV = 1 with H = 2");
        }
        // flags the op does not take
        const struct { const char * what; bool l2, sig, neg, gate; float lb; } fl[] = {
            { "use_beta_sigmoid_in_kernel", false, true, false, false, 0 },
            { "allow_neg_eigval", false, false, true, false, 0 },
            { "use_gate_in_kernel", false, false, false, true, 0 },
            { "lower_bound", false, false, false, false, -5 },
            { "lower_bound with the gate flag", false, false, false, true, -5 },
        };
        if (op != OP_KDA)
            for (size_t i = op == OP_DELTA ? 0 : 3; i < sizeof fl / sizeof fl[0]; i++) {
                ob = o;
                ob.use_beta_sigmoid_in_kernel |= fl[i].sig;
                ob.allow_neg_eigval |= fl[i].neg;
                ob.use_gate_in_kernel |= fl[i].gate;
                ob.lower_bound = fl[i].lb;
                snprintf(nm, sizeof nm, "flag %s (not accepted)", fl[i].what);
                want_both(&d, &ob, LA_STATUS_INVALID_ARG, nm);
            }
        if (op == OP_DELTA) {
            // beta and dbeta: both or neither
            tdata nb = d;
            nb.beta = NULL;
            nb.nb = 0;
            want_both(&nb, &o, LA_STATUS_OK, "beta = NULL (beta = 1)");
            fres fb = f;
            fb.dbeta = NULL;
            la_expect_status(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG,
                             "delta_rule beta without dbeta");
            fb = f;
            la_expect_status(lib_bwd(&nb, &fb, &o), LA_STATUS_INVALID_ARG,
                             "delta_rule dbeta without beta");
        } else {
            fres fb = f;
            fb.dg = NULL;
            snprintf(nm, sizeof nm, "%s g without dg", OP_NAME[op]);
            la_expect_status(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            fb = f;
            fb.dbeta = NULL;
            snprintf(nm, sizeof nm, "%s beta without dbeta", OP_NAME[op]);
            la_expect_status(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            fb = f;
            fb.dA = NULL;
            snprintf(nm, sizeof nm, "%s A_log without dA_log", OP_NAME[op]);
            la_expect_status(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            fb = f;
            fb.ddt = NULL;
            snprintf(nm, sizeof nm, "%s dt_bias without ddt_bias", OP_NAME[op]);
            la_expect_status(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            // gradients of absent parameters
            tdata na = d;
            na.dt_bias = NULL;
            na.ndt = 0;
            fb = f;
            snprintf(nm, sizeof nm, "%s ddt_bias without dt_bias", OP_NAME[op]);
            la_expect_status(lib_bwd(&na, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            fres fz = f;
            fz.ddt = NULL;
            snprintf(nm, sizeof nm, "%s no dt_bias, no ddt_bias", OP_NAME[op]);
            la_expect_status(lib_bwd(&na, &fz, &o), LA_STATUS_OK, nm);
            // A_log and dt_bias belong to the gate flag
            ob = o;
            ob.use_gate_in_kernel = false;
            ob.lower_bound = 0;
            want_both(&d, &ob, LA_STATUS_INVALID_ARG, "A_log and dt_bias without the gate flag");
            na = d;
            na.A_log = NULL;
            na.na = 0;
            if (op == OP_GDN) {
                want_both(&na, &o, LA_STATUS_INVALID_ARG, "gate flag without A_log");
            } else {
                want_both(&na, &o, LA_STATUS_OK, "lower-bound gate without A_log");
                fb = f;
                la_expect_status(lib_bwd(&na, &fb, &o), LA_STATUS_INVALID_ARG,
                                 "kda dA_log without A_log");
                ob = o;
                ob.lower_bound = 0;
                want_both(&na, &ob, LA_STATUS_INVALID_ARG, "softplus gate flag without A_log");
                ob = o;
                ob.use_gate_in_kernel = false;
                tdata ng = na;
                ng.dt_bias = NULL;
                ng.ndt = 0;
                want_both(&ng, &ob, LA_STATUS_INVALID_ARG, "lower_bound without the gate flag");
                ob = o;
                ob.lower_bound = 2.0f;
                want_both(&d, &ob, LA_STATUS_INVALID_ARG, "lower_bound > 0");
                ob.lower_bound = NAN;
                want_both(&d, &ob, LA_STATUS_INVALID_ARG, "lower_bound NaN");
            }
        }
        fres_free(&f);
        free_data(&d);
    }
}

// ---------------------------------------------------------------------------------------------

int main(void) {
    const la_case cases[] = {
        // name         op        B  T    H  K    V    nseq lens                        spec                        scale HV
        { "basic",      OP_DELTA, 2, 100, 2, 16,  8,   0,   {0},                        "",                         0,    0 },
        { "T1",         OP_DELTA, 3, 1,   2, 8,   8,   0,   {0},                        "",                         0,    0 },
        { "T67_noinit", OP_DELTA, 1, 67,  3, 16,  16,  0,   {0},                        "noinit",                   0,    0 },
        { "l2",         OP_DELTA, 2, 90,  2, 16,  12,  0,   {0},                        "l2",                       0,    0 },
        { "nobeta",     OP_DELTA, 2, 70,  2, 8,   8,   0,   {0},                        "nobeta",                   0,    0 },
        { "varlen",     OP_DELTA, 1, 0,   2, 16,  12,  7,   {37, 0, 1, 64, 65, 3, 130}, "l2",                       0,    0 },
        { "K7_V19",     OP_DELTA, 1, 130, 1, 7,   19,  0,   {0},                        "nodfs",                    0.3f, 0 },
        { "K64",        OP_DELTA, 1, 80,  1, 64,  32,  0,   {0},                        "l2",                       0,    0 },
        { "beta0",      OP_DELTA, 1, 150, 2, 16,  8,   0,   {0},                        "b:zero",                   0,    0 },
        { "beta1",      OP_DELTA, 1, 150, 2, 16,  8,   0,   {0},                        "b:one",                    0,    0 },
        { "beta2",      OP_DELTA, 1, 150, 2, 16,  8,   0,   {0},                        "b:two",                    0,    0 },
        { "l2_tiny",    OP_DELTA, 1, 90,  2, 16,  8,   0,   {0},                        "l2 tiny",                  0,    0 },

        { "basic",      OP_GDN,   2, 100, 2, 16,  8,   0,   {0},                        "",                         0,    0 },
        { "T1",         OP_GDN,   3, 1,   2, 8,   8,   0,   {0},                        "l2 sig neg gate",          0,    4 },
        { "gva",        OP_GDN,   2, 67,  2, 16,  8,   0,   {0},                        "l2 sig gate",              0,    4 },
        { "gva3",       OP_GDN,   1, 50,  1, 8,   8,   0,   {0},                        "noinit",                   0,    3 },
        { "varlen",     OP_GDN,   1, 0,   2, 16,  12,  7,   {37, 0, 1, 64, 65, 3, 130}, "l2 sig gate",              0,    4 },
        { "all",        OP_GDN,   2, 90,  2, 16,  16,  0,   {0},                        "l2 sig neg gate",          0,    4 },
        { "gate_nodtb", OP_GDN,   1, 80,  2, 8,   8,   0,   {0},                        "gate nodtb",               0,    2 },
        { "gate_big",   OP_GDN,   1, 80,  2, 8,   8,   0,   {0},                        "gate g:big",               0,    2 },
        { "sig",        OP_GDN,   1, 80,  2, 16,  8,   0,   {0},                        "sig",                      0,    0 },
        { "K7_V19",     OP_GDN,   1, 130, 1, 7,   19,  0,   {0},                        "l2 nodfs",                 0.3f, 2 },
        { "K64",        OP_GDN,   1, 80,  1, 64,  32,  0,   {0},                        "l2 sig gate",              0,    2 },
        { "g_uni",      OP_GDN,   1, 150, 2, 16,  8,   0,   {0},                        "g:uni",                    0,    2 },
        { "g_zero",     OP_GDN,   2, 90,  2, 16,  8,   0,   {0},                        "g:zero",                   0,    2 },
        { "g_small",    OP_GDN,   1, 90,  2, 16,  8,   0,   {0},                        "g:small",                  0,    2 },
        { "g_mix",      OP_GDN,   1, 150, 1, 16,  8,   0,   {0},                        "g:mix",                    0,    3 },
        { "g_tail",     OP_GDN,   1, 192, 2, 16,  8,   0,   {0},                        "g:tail",                   0,    2 },
        { "beta0",      OP_GDN,   1, 150, 2, 16,  8,   0,   {0},                        "sig b:zero",               0,    2 },
        { "beta1",      OP_GDN,   1, 150, 2, 16,  8,   0,   {0},                        "b:one",                    0,    2 },
        { "beta2",      OP_GDN,   1, 150, 2, 16,  8,   0,   {0},                        "sig neg b:two g:small",    0,    2 },
        { "beta1_sig",  OP_GDN,   1, 150, 2, 16,  8,   0,   {0},                        "sig b:one",                0,    2 },
        { "l2_tiny",    OP_GDN,   1, 90,  2, 16,  8,   0,   {0},                        "l2 sig gate tiny",         0,    4 },
        { "K128",       OP_GDN,   1, 70,  1, 128, 128, 0,   {0},                        "l2 sig gate",              0,    1 },

        { "basic",      OP_KDA,   2, 100, 2, 16,  8,   0,   {0},                        "",                         0,    0 },
        { "T1",         OP_KDA,   3, 1,   2, 8,   8,   0,   {0},                        "l2 sig neg gate",          0,    4 },
        { "gva",        OP_KDA,   2, 67,  2, 16,  8,   0,   {0},                        "l2 sig gate",              0,    4 },
        { "gva3",       OP_KDA,   1, 50,  1, 8,   8,   0,   {0},                        "noinit",                   0,    3 },
        { "varlen",     OP_KDA,   1, 0,   2, 16,  12,  7,   {37, 0, 1, 64, 65, 3, 130}, "l2 sig gate lb",           0,    4 },
        { "all",        OP_KDA,   2, 90,  2, 16,  16,  0,   {0},                        "l2 sig neg gate",          0,    4 },
        { "lb",         OP_KDA,   2, 90,  2, 16,  8,   0,   {0},                        "gate lb",                  0,    2 },
        { "lb_noA",     OP_KDA,   1, 80,  2, 16,  8,   0,   {0},                        "gate lb noA",              0,    2 },
        { "lb_nodtb",   OP_KDA,   1, 80,  2, 8,   8,   0,   {0},                        "l2 sig neg gate lb nodtb", 0,    4 },
        { "gate_nodtb", OP_KDA,   1, 80,  2, 8,   8,   0,   {0},                        "gate nodtb",               0,    2 },
        { "gate_big",   OP_KDA,   1, 80,  2, 8,   8,   0,   {0},                        "gate g:big",               0,    2 },
        { "K7_V19",     OP_KDA,   1, 130, 1, 7,   19,  0,   {0},                        "l2 nodfs",                 0.3f, 2 },
        { "K64",        OP_KDA,   1, 80,  1, 64,  32,  0,   {0},                        "l2 sig gate lb",           0,    2 },
        { "g_uni",      OP_KDA,   1, 150, 2, 16,  8,   0,   {0},                        "g:uni",                    0,    2 },
        { "g_zero",     OP_KDA,   2, 90,  2, 16,  8,   0,   {0},                        "g:zero",                   0,    2 },
        { "g_small",    OP_KDA,   1, 90,  2, 16,  8,   0,   {0},                        "g:small",                  0,    2 },
        { "g_mix",      OP_KDA,   1, 150, 2, 16,  16,  0,   {0},                        "g:mix",                    0,    2 },
        { "g_mix_vl",   OP_KDA,   1, 0,   2, 12,  8,   3,   {130, 1, 77},               "g:mix",                    0,    2 },
        { "g_tail",     OP_KDA,   1, 192, 2, 16,  16,  0,   {0},                        "g:tail",                   0,    2 },
        { "beta0",      OP_KDA,   1, 150, 2, 16,  8,   0,   {0},                        "sig b:zero",               0,    2 },
        { "beta1",      OP_KDA,   1, 150, 2, 16,  8,   0,   {0},                        "b:one",                    0,    2 },
        { "beta2",      OP_KDA,   1, 150, 2, 16,  8,   0,   {0},                        "sig neg b:two g:small",    0,    2 },
        { "beta1_sig",  OP_KDA,   1, 150, 2, 16,  8,   0,   {0},                        "sig b:one",                0,    2 },
        { "l2_tiny",    OP_KDA,   1, 90,  2, 16,  8,   0,   {0},                        "l2 gate lb tiny",          0,    4 },
        { "K128",       OP_KDA,   1, 70,  1, 128, 128, 0,   {0},                        "l2 sig gate lb",           0,    1 },
        { "K128_mix",   OP_KDA,   1, 100, 1, 128, 64,  0,   {0},                        "l2 g:mix",                 0,    0 },
    };
    tdata data;
    const la_opmaker mk = { &data, make_data, optest_of, free_data };
    la_op_cases(&mk, cases, sizeof cases / sizeof cases[0], 100, false, &TOLS);

    const la_case fdc[] = {
        { "fd",            OP_DELTA, 2, 9, 2, 4, 3, 0, {0},          "",                      0,    0 },
        { "fd_l2_nobeta",  OP_DELTA, 1, 9, 2, 4, 3, 0, {0},          "l2 nobeta",             0.7f, 0 },
        { "fd_varlen",     OP_DELTA, 1, 0, 2, 3, 2, 4, {4, 0, 1, 6}, "l2",                    0,    0 },
        { "fd",            OP_GDN,   2, 9, 2, 4, 3, 0, {0},          "",                      0,    0 },
        { "fd_flags",      OP_GDN,   2, 9, 1, 4, 3, 0, {0},          "l2 sig neg gate",       0,    2 },
        { "fd_gate_nodtb", OP_GDN,   1, 9, 2, 4, 3, 0, {0},          "sig gate nodtb",        0,    4 },
        { "fd_gate_big",   OP_GDN,   1, 9, 1, 3, 3, 0, {0},          "gate g:big",            0,    2 },
        { "fd_varlen",     OP_GDN,   1, 0, 1, 3, 2, 4, {4, 0, 1, 6}, "l2 sig gate",           0,    2 },
        { "fd_T1",         OP_GDN,   2, 1, 1, 4, 3, 0, {0},          "l2 sig neg gate",       0,    2 },
        { "fd_l2_tiny",    OP_GDN,   1, 9, 2, 4, 3, 0, {0},          "l2 tiny",               0,    2 },
        { "fd",            OP_KDA,   2, 9, 2, 4, 3, 0, {0},          "",                      0,    0 },
        { "fd_flags",      OP_KDA,   2, 9, 1, 4, 3, 0, {0},          "l2 sig neg gate",       0,    2 },
        { "fd_lb",         OP_KDA,   1, 9, 2, 4, 3, 0, {0},          "sig gate lb",           0,    4 },
        { "fd_lb_noA",     OP_KDA,   1, 9, 1, 4, 3, 0, {0},          "gate lb noA",           0,    2 },
        { "fd_lb_nodtb",   OP_KDA,   1, 9, 1, 4, 3, 0, {0},          "l2 gate lb nodtb",      0,    2 },
        { "fd_gate_big",   OP_KDA,   1, 9, 1, 3, 3, 0, {0},          "gate g:big",            0,    2 },
        { "fd_varlen",     OP_KDA,   1, 0, 1, 3, 2, 4, {4, 0, 1, 6}, "l2 sig gate lb",        0,    2 },
        { "fd_T1",         OP_KDA,   2, 1, 1, 4, 3, 0, {0},          "l2 sig neg gate nodtb", 0,    2 },
    };
    la_op_cases(&mk, fdc, sizeof fdc / sizeof fdc[0], 200, true, &TOLS);

    identity_gdn_delta();
    identity_kda_gdn();
    neg_without_sigmoid();

    const char * chain_spec[3] = { "l2", "l2 sig neg gate", "l2 sig gate lb" };
    for (int op = 0; op < 3; op++)
        la_op_contract(&mk, op, chain_spec[op], 300 + (uint64_t)op, &TOLS);
    api_checks();

    const struct { op_kind op; const char * spec; } longs[4] = {
        { OP_DELTA, "l2" }, { OP_GDN, "l2 sig neg gate" }, { OP_KDA, "g:mix" },
        { OP_KDA, "l2 sig gate lb" }
    };
    for (int i = 0; i < 4; i++)
        la_op_long(&mk, longs[i].op, longs[i].spec, 400 + (uint64_t)i, &TOLS);
    return la_test_summary();
}
