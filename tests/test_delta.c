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

#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOL_FWD  2e-5
#define TOL_BWD  5e-5
#define TOL_ID_FWD (2 * TOL_FWD)
#define TOL_ID_BWD (2 * TOL_BWD)
#define TOL_LONG 1e-4
#define TOL_FD   1e-6
#define FD_STEP  1e-6
#define SEG      64      // oracle checkpoint spacing (tokens)

// ---------------------------------------------------------------------------------------------
// Checks: a line only on failure. testlib's la_check prints a line for every check, so a
// passing check is counted here and handed to the tally at the end (finish) with stdout muted.

static int64_t g_passed;
static struct { double tol, ratio; char name[160]; } g_worst[8];
static int g_nworst;

static bool expect(bool ok, const char * fmt, ...) __attribute__((format(printf, 2, 3)));
static bool expect(bool ok, const char * fmt, ...) {
    if (ok) {
        g_passed++;
        return true;
    }
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    la_check(false, "%s", buf);
    return false;
}

static void note_worst(const char * name, double tol, double ratio) {
    int i = 0;
    while (i < g_nworst && g_worst[i].tol != tol) i++;
    if (i == g_nworst) {
        if (g_nworst == 8) return;
        g_nworst++;
        g_worst[i].tol = tol;
        g_worst[i].ratio = -1;
    }
    if (ratio > g_worst[i].ratio) {
        g_worst[i].ratio = ratio;
        snprintf(g_worst[i].name, sizeof g_worst[i].name, "%s", name);
    }
}

// |got - ref| <= tol * (m + |ref|) everywhere with m = max(max|ref|, scale); NaN/Inf fail. got
// is float (gf) or double.
static bool rel_core_s(const char * name, const float * gf, const double * gd, const double * ref,
                       int64_t n, double tol, double scale) {
    const double m = fmax(la_maxabs_d(ref, n), scale);
    int64_t bad = 0, imax = -1;
    double md = 0, ratio = 0;
    for (int64_t i = 0; i < n; i++) {
        const double g = gf ? (double)gf[i] : gd[i];
        const double diff = fabs(g - ref[i]), allow = tol * (m + fabs(ref[i]));
        if (!(diff <= allow)) {
            if (bad < 3)
                fprintf(stderr, "  %s[%lld]: got %.9g ref %.9g\n", name, (long long)i, g, ref[i]);
            bad++;
        }
        if (isnan(diff) || diff > md) {
            md = isnan(diff) ? (double)INFINITY : diff;
            imax = i;
        }
        if (allow > 0 && diff / allow > ratio) ratio = diff / allow;
    }
    note_worst(name, tol, ratio);
    return expect(bad == 0,
                  "%s: %lld of %lld entries beyond tol %.0e (max|diff| %.3g at %lld, scale %.3g)",
                  name, (long long)bad, (long long)n, tol, md, (long long)imax, m);
}

static bool rel_core(const char * name, const float * gf, const double * gd, const double * ref,
                     int64_t n, double tol) {
    return rel_core_s(name, gf, gd, ref, n, tol, 0.0);
}

static bool rel_f(const char * name, const float * got, const double * ref, int64_t n,
                  double tol) {
    return rel_core(name, got, NULL, ref, n, tol);
}

static bool rel_d(const char * name, const double * got, const double * ref, int64_t n,
                  double tol) {
    return rel_core(name, NULL, got, ref, n, tol);
}

// Two float32 results against each other (an identity): ref rounded up to double.
static bool rel_ff(const char * name, const float * got, const float * ref, int64_t n,
                   double tol) {
    double * r = la_to_f64(ref, n);
    bool ok = rel_f(name, got, r, n, tol);
    free(r);
    return ok;
}

static bool all_finite(const float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

static int finish(void) {
    if (getenv("LA_TEST_VERBOSE"))
        for (int i = 0; i < g_nworst; i++)
            printf("tol %.0e: worst |diff| / allowed = %.3g (%s)\n", g_worst[i].tol,
                   g_worst[i].ratio, g_worst[i].name);
    fflush(stdout);
    const int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY);
    const bool mute = saved >= 0 && null >= 0 && dup2(null, STDOUT_FILENO) >= 0;
    for (int64_t i = 0; i < g_passed; i++) la_check(true, "-");
    fflush(stdout);
    if (mute) dup2(saved, STDOUT_FILENO);
    if (null >= 0) close(null);
    if (saved >= 0) close(saved);
    return la_test_summary();
}

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

typedef struct tcase {
    const char * name;
    op_kind      op;
    int64_t      B, T, H, HV, K, V;  // HV 0: H (passed to the library as sh.HV = 0)
    int          nseq;               // > 0: varlen with these lengths (B = 1)
    int64_t      lens[8];
    const char * spec;
    float        scale;              // 0: the default K^-1/2
} tcase;

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
    float *  q, * k, * v, * beta, * g, * A_log, * dt_bias, * s0, * dout, * dfs;
} tdata;

static bool tok(const char * spec, const char * t) {
    const size_t n = strlen(t);
    const char * p = spec;
    while (*p) {
        while (*p == ' ') p++;
        const size_t m = strcspn(p, " ");
        if (m == n && !strncmp(p, t, n)) return true;
        p += m;
    }
    return false;
}

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }
static double softplus(double x) { return x > 20 ? x : log1p(exp(x)); }

static void make_data(const tcase * c, tdata * d, la_rng * r) {
    memset(d, 0, sizeof *d);
    const char * sp = c->spec ? c->spec : "";
    d->name = c->name;
    d->op = c->op;
    d->HV = c->HV ? c->HV : c->H;
    d->sh = (la_shape){ c->B, c->T, c->H, c->K, c->V, c->HV };
    d->N = c->B;
    if (c->nseq > 0) {
        d->N = c->nseq;
        d->sh.T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    const int64_t H = c->H, HV = d->HV, K = c->K, V = c->V;
    d->rows = d->sh.B * d->sh.T;
    d->GK = c->op == OP_DELTA ? 0 : c->op == OP_GDN ? 1 : K;
    d->l2 = tok(sp, "l2");
    d->sig = tok(sp, "sig");
    d->neg = tok(sp, "neg");
    d->gate = tok(sp, "gate");
    d->lb = tok(sp, "lb") ? -5.0f : 0.0f;
    d->nq = d->rows * H * K;
    d->nv = d->rows * HV * V;
    d->nb = (c->op == OP_DELTA && tok(sp, "nobeta")) ? 0 : d->rows * HV;
    d->ng = d->rows * HV * d->GK;
    d->na = d->gate && !tok(sp, "noA") ? HV : 0;
    d->ndt = d->gate && !tok(sp, "nodtb") ? HV * d->GK : 0;
    d->ns = d->N * HV * K * V;
    d->fscale = c->scale;
    d->scale = c->scale != 0.0f ? (double)c->scale : 1.0 / sqrt((double)K);

    d->q = la_new_normal(r, d->nq, 1.0);
    d->k = la_new_normal(r, d->nq, 1.0);
    if (!d->l2) la_l2norm_rows(d->k, d->rows * H, K);
    else  // raw q, k rows of assorted norms, with "tiny" 10% of them near 1e-3 (where the eps
          // inside the sqrt of OPS.md's l2norm matters)
        for (int64_t e = 0; e < 2 * d->rows * H; e++) {
            float * x = e % 2 ? d->k : d->q;
            const double u = la_rng_uniform(r), u2 = la_rng_uniform(r);
            const double m = tok(sp, "tiny") && u2 < 0.1 ? 1e-3 * (0.5 + u) : 0.2 + 3.0 * u;
            for (int64_t i = 0; i < K; i++) x[e / 2 * K + i] = (float)(m * (double)x[e / 2 * K + i]);
        }
    d->v = la_new_normal(r, d->nv, 1.0);
    d->dout = la_new_normal(r, d->nv, 1.0);

    if (d->nb) {
        d->beta = la_test_alloc((size_t)d->nb * 4);
        for (int64_t e = 0; e < d->nb; e++) {
            const double u = la_rng_uniform(r), z = la_rng_normal(r);
            double b;
            if (tok(sp, "b:zero")) b = d->sig ? -14.0 + 4.0 * u : 1e-4 * u;
            else if (tok(sp, "b:one")) b = d->sig ? 10.0 + 4.0 * u : (e % 3 ? 1.0 - 1e-4 * u : 1.0);
            else if (tok(sp, "b:two")) b = d->sig ? 6.0 + 4.0 * u : 2.0 - 1e-2 * (u + 1e-3);
            else b = d->sig ? 1.5 * z : sigm(z);
            d->beta[e] = (float)b;
        }
    }
    if (d->na) {
        d->A_log = la_test_alloc((size_t)d->na * 4);
        for (int64_t e = 0; e < d->na; e++) {
            const double u = la_rng_uniform(r), z = la_rng_normal(r);
            d->A_log[e] = (float)(d->lb < 0 ? 0.5 * z
                                  : tok(sp, "g:big") ? log(0.02 + 0.08 * u) : log(1.0 + 7.0 * u));
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
                d->g[e] = (float)(tok(sp, "g:big") && u2 < 0.15 ? 21.0 + 5.0 * u - bias : 2.0 * z);
            }
        } else if (tok(sp, "g:uni")) {
            la_fill_uniform(r, d->g, n, -20.0, -1e-6);
        } else if (tok(sp, "g:zero")) {
            memset(d->g, 0, (size_t)n * 4);
        } else if (tok(sp, "g:small")) {
            la_fill_uniform(r, d->g, n, -1e-6, 0.0);
        } else if (tok(sp, "g:mix")) {
            // per key channel (kda) or per value head (gdn): -16 always / ~0 / -16 on a stretch
            if (d->GK == 1) la_fill_gate_mix1000(r, d->g, n, HV, 1, T);
            else la_fill_gate_mix1000(r, d->g, n, K, HV, T);
        } else if (tok(sp, "g:tail")) {
            la_fill_gate_tail(r, d->g, n, d->GK, HV, T);
        } else {
            la_fill_logsigmoid(r, d->g, n);
        }
    }
    if (!tok(sp, "noinit")) d->s0 = la_new_normal(r, d->ns, 0.5);
    if (!tok(sp, "nodfs")) d->dfs = la_new_normal(r, d->ns, 1.0);
}

static void free_data(tdata * d) {
    free(d->q); free(d->k); free(d->v); free(d->beta); free(d->g); free(d->A_log);
    free(d->dt_bias); free(d->s0); free(d->dout); free(d->dfs);
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C) {
    la_opts o = la_test_opts(form, C, d->fscale, d->varlen ? d->cu : NULL, d->N);
    o.use_qk_l2norm_in_kernel = d->l2;
    o.use_beta_sigmoid_in_kernel = d->sig;
    o.allow_neg_eigval = d->neg;
    o.use_gate_in_kernel = d->gate;
    o.lower_bound = d->lb;
    return o;
}

static void seq_range(const tdata * d, int64_t n, int64_t * t0, int64_t * t1) {
    la_seq_range(d->varlen ? d->cu : NULL, d->sh.T, n, t0, t1);
}

// ---------------------------------------------------------------------------------------------
// The float64 oracle.

typedef struct din {
    double * q, * k, * v, * beta, * g, * A_log, * dt_bias, * s0, * dout, * dfs;
} din;

static din to_f64(const tdata * d) {
    din x;
    x.q = la_to_f64(d->q, d->nq);
    x.k = la_to_f64(d->k, d->nq);
    x.v = la_to_f64(d->v, d->nv);
    x.beta = la_to_f64(d->beta, d->nb);
    x.g = la_to_f64(d->g, d->ng);
    x.A_log = la_to_f64(d->A_log, d->na);
    x.dt_bias = la_to_f64(d->dt_bias, d->ndt);
    x.s0 = la_to_f64(d->s0, d->ns);
    x.dout = la_to_f64(d->dout, d->nv);
    x.dfs = la_to_f64(d->dfs, d->ns);
    return x;
}

static void din_free(din * x) {
    free(x->q); free(x->k); free(x->v); free(x->beta); free(x->g); free(x->A_log);
    free(x->dt_bias); free(x->s0); free(x->dout); free(x->dfs);
}

// Oracle results; gradients of absent inputs stay NULL.
typedef struct oset {
    double * o, * fs, * dq, * dk, * dv, * dbeta, * dg, * dA, * ddt, * ds0;
    double   sA, sdt;   // the largest sum of |terms| of an entry of dA, ddt (their condition)
} oset;

static void oset_alloc(const tdata * d, oset * r) {
    r->o = la_test_alloc((size_t)d->nv * 8);
    r->fs = la_test_alloc((size_t)d->ns * 8);
    r->dq = la_test_alloc((size_t)d->nq * 8);
    r->dk = la_test_alloc((size_t)d->nq * 8);
    r->dv = la_test_alloc((size_t)d->nv * 8);
    r->dbeta = d->beta ? la_test_alloc((size_t)d->nb * 8) : NULL;
    r->dg = d->g ? la_test_alloc((size_t)d->ng * 8) : NULL;
    r->dA = d->A_log ? la_test_alloc((size_t)d->na * 8) : NULL;
    r->ddt = d->dt_bias ? la_test_alloc((size_t)d->ndt * 8) : NULL;
    r->ds0 = d->s0 ? la_test_alloc((size_t)d->ns * 8) : NULL;
    r->sA = r->sdt = 0.0;
}

static void oset_free(oset * r) {
    free(r->o); free(r->fs); free(r->dq); free(r->dk); free(r->dv); free(r->dbeta); free(r->dg);
    free(r->dA); free(r->ddt); free(r->ds0);
}

// Effective inputs (after OPS.md 1.7) and the per-value-head gradient accumulators.
typedef struct eff {
    int64_t  H, HV, K, V, GK, grp;
    double   s;
    double * qe, * ke, * be, * ge;   // ge NULL for delta_rule
    const double * v;
    double * dqe, * dke, * dbe, * dge;  // dqe, dke (rows, HV, K)
    double * P, * w, * u, * dw, * a;   // scratch
} eff;

static void decay(const eff * e, int64_t row, int64_t hv, double * a) {
    for (int64_t i = 0; i < e->K; i++)
        a[i] = e->GK == 0 ? 1.0
             : e->GK == 1 ? exp(e->ge[row * e->HV + hv]) : exp(e->ge[(row * e->HV + hv) * e->K + i]);
}

// One token of value head hv: Sn from Sp (K x V, row-major); o_t (V) when o != NULL.
static void step_fwd(const eff * e, int64_t row, int64_t hv, const double * Sp, double * Sn,
                     double * o) {
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
static void step_bwd(eff * e, int64_t row, int64_t hv, const double * Sp, const double * Sn,
                     double * G, const double * dout, double * dv) {
    const int64_t K = e->K, V = e->V, h = hv / e->grp;
    const double * q = e->qe + (row * e->H + h) * K, * k = e->ke + (row * e->H + h) * K;
    const double * v = e->v + (row * e->HV + hv) * V, beta = e->be[row * e->HV + hv];
    const double * dot = dout + (row * e->HV + hv) * V;
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
        dv[(row * e->HV + hv) * V + j] = beta * du;
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

static int64_t max_len(const tdata * d) {
    int64_t m = 0;
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        seq_range(d, n, &t0, &t1);
        if (t1 - t0 > m) m = t1 - t0;
    }
    return m;
}

// Forward always (r->o, r->fs); the backward too when bwd (every gradient in r that is
// non-NULL).
static void oracle(const tdata * d, const din * x, oset * r, bool bwd) {
    const int64_t H = d->sh.H, HV = d->HV, K = d->sh.K, V = d->sh.V, KV = K * V;
    const int64_t rows = d->rows, GK = d->GK, nrh = rows * H;
    eff e = { H, HV, K, V, GK, HV / H, d->scale, NULL, NULL, NULL, NULL, x->v,
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL };
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
        e.be[t] = !x->beta ? 1.0 : d->sig ? bmul * sigm(x->beta[t]) : x->beta[t];
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
                e.ge[t] = (double)d->lb * sigm(A * xb[t]);
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
    const int64_t L = max_len(d), nseg = L / SEG + 1;
    double * ck = la_test_alloc((size_t)(nseg * KV) * 8);
    double * Sb = la_test_alloc((size_t)((SEG + 1) * KV) * 8);
    double * S = la_test_alloc((size_t)KV * 8), * S2 = la_test_alloc((size_t)KV * 8);
    double * G = la_test_alloc((size_t)KV * 8);
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        seq_range(d, n, &t0, &t1);
        for (int64_t hv = 0; hv < HV; hv++) {
            const int64_t sb = (n * HV + hv) * KV;
            for (int64_t i = 0; i < KV; i++) S[i] = x->s0 ? x->s0[sb + i] : 0.0;
            for (int64_t t = t0; t < t1; t++) {
                if ((t - t0) % SEG == 0) memcpy(ck + ((t - t0) / SEG) * KV, S, (size_t)KV * 8);
                step_fwd(&e, t, hv, S, S2, r->o + (t * HV + hv) * V);
                memcpy(S, S2, (size_t)KV * 8);
            }
            memcpy(r->fs + sb, S, (size_t)KV * 8);
            if (!bwd) continue;
            for (int64_t i = 0; i < KV; i++) G[i] = x->dfs ? x->dfs[sb + i] : 0.0;
            for (int64_t sg = (t1 - t0 + SEG - 1) / SEG - 1; sg >= 0; sg--) {
                const int64_t ta = t0 + sg * SEG, tb = ta + SEG < t1 ? ta + SEG : t1;
                memcpy(Sb, ck + sg * KV, (size_t)KV * 8);
                for (int64_t t = ta; t < tb; t++)
                    step_fwd(&e, t, hv, Sb + (t - ta) * KV, Sb + (t - ta + 1) * KV, NULL);
                for (int64_t t = tb - 1; t >= ta; t--)
                    step_bwd(&e, t, hv, Sb + (t - ta) * KV, Sb + (t - ta + 1) * KV, G, x->dout,
                             r->dv);
            }
            if (r->ds0) memcpy(r->ds0 + sb, G, (size_t)KV * 8);
        }
    }
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
                const double sg = sigm(x->beta[t]);
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
                const double sg = sigm(z), dz = e.dge[t] * (double)d->lb * sg * (1.0 - sg);
                dx = dz * A;
                dA = dz * z;
            } else {           // g = -exp(A_log) softplus(x + dt_bias)
                const double A = exp(x->A_log[hv]);
                dx = e.dge[t] * -A * (xb[t] > 20 ? 1.0 : sigm(xb[t]));
                dA = e.dge[t] * e.ge[t];
            }
            r->dg[t] = dx;
            if (r->dA) r->dA[hv] += dA;
            if (r->ddt) r->ddt[hv * GK + ch] += dx;
            aA[hv] += fabs(dA);
            adt[hv * GK + ch] += fabs(dx);
        }
        r->sA = la_maxabs_d(aA, HV);
        r->sdt = la_maxabs_d(adt, HV * (GK ? GK : 1));
        free(aA);
        free(adt);
    }
    free(e.qe); free(e.ke); free(rq); free(rk); free(e.be); free(e.ge); free(xb);
    free(e.dqe); free(e.dke); free(e.dbe); free(e.dge);
    free(e.P); free(e.w); free(e.u); free(e.dw); free(e.a);
    free(ck); free(Sb); free(S); free(S2); free(G);
}

// ---------------------------------------------------------------------------------------------
// The library.

typedef struct fres {
    float * o, * fs, * dq, * dk, * dv, * dbeta, * dg, * dA, * ddt, * ds0;
} fres;

static void fres_alloc(const tdata * d, fres * f) {
    f->o = la_test_alloc((size_t)d->nv * 4);
    f->fs = la_test_alloc((size_t)d->ns * 4);
    f->dq = la_test_alloc((size_t)d->nq * 4);
    f->dk = la_test_alloc((size_t)d->nq * 4);
    f->dv = la_test_alloc((size_t)d->nv * 4);
    f->dbeta = d->beta ? la_test_alloc((size_t)d->nb * 4) : NULL;
    f->dg = d->g ? la_test_alloc((size_t)d->ng * 4) : NULL;
    f->dA = d->A_log ? la_test_alloc((size_t)d->na * 4) : NULL;
    f->ddt = d->dt_bias ? la_test_alloc((size_t)d->ndt * 4) : NULL;
    f->ds0 = d->s0 ? la_test_alloc((size_t)d->ns * 4) : NULL;
}

static void fres_free(fres * f) {
    free(f->o); free(f->fs); free(f->dq); free(f->dk); free(f->dv); free(f->dbeta); free(f->dg);
    free(f->dA); free(f->ddt); free(f->ds0);
}

static bool eqb(const float * a, const float * b, int64_t n) {
    return (!a && !b) || (a && b && memcmp(a, b, (size_t)n * 4) == 0);
}

static bool fres_equal(const tdata * d, const fres * a, const fres * b) {
    return eqb(a->o, b->o, d->nv) && eqb(a->fs, b->fs, d->ns) && eqb(a->dq, b->dq, d->nq) &&
           eqb(a->dk, b->dk, d->nq) && eqb(a->dv, b->dv, d->nv) &&
           eqb(a->dbeta, b->dbeta, d->nb) && eqb(a->dg, b->dg, d->ng) &&
           eqb(a->dA, b->dA, d->na) && eqb(a->ddt, b->ddt, d->ndt) && eqb(a->ds0, b->ds0, d->ns);
}

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

static bool run_lib(const tdata * d, fres * f, const la_opts * op, int threads, const char * nm) {
    la_set_num_threads(threads);
    la_status s1 = lib_fwd(d, f->o, f->fs, d->s0, op);
    la_status s2 = lib_bwd(d, f, op);
    la_set_num_threads(0);
    return expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s: status forward %s, backward %s",
                  nm, la_status_str(s1), la_status_str(s2));
}

// Library results against the oracle (or finite differences: fwd = false).
static void compare(const tdata * d, const fres * f, const oset * r, const char * nm,
                    double tol_fwd, double tol_bwd, bool fwd) {
    char n2[240];
#define CMP(field, n, tol)                                                 \
    do {                                                                   \
        if (f->field && r->field) {                                        \
            snprintf(n2, sizeof n2, "%s %s", nm, #field);                  \
            rel_f(n2, f->field, r->field, n, tol);                         \
        }                                                                  \
    } while (0)
    if (fwd) {
        CMP(o, d->nv, tol_fwd);
        CMP(fs, d->ns, tol_fwd);
    }
    CMP(dq, d->nq, tol_bwd);
    CMP(dk, d->nq, tol_bwd);
    CMP(dv, d->nv, tol_bwd);
    CMP(dbeta, d->nb, tol_bwd);
    CMP(dg, d->ng, tol_bwd);
    CMP(ds0, d->ns, tol_bwd);
#undef CMP
    // sums over tokens (and channels) of terms of both signs: scaled by the sum of |terms|
    if (f->dA && r->dA) {
        snprintf(n2, sizeof n2, "%s dA", nm);
        rel_core_s(n2, f->dA, NULL, r->dA, d->na, tol_bwd, r->sA);
    }
    if (f->ddt && r->ddt) {
        snprintf(n2, sizeof n2, "%s ddt", nm);
        rel_core_s(n2, f->ddt, NULL, r->ddt, d->ndt, tol_bwd, r->sdt);
    }
}

typedef struct form_c { la_form form; int32_t C; } form_c;
static const form_c FORMS[] = {
    { LA_FORM_REF, 0 }, { LA_FORM_RECURRENT, 0 }, { LA_FORM_CHUNK, 64 },
    { LA_FORM_CHUNK, 32 }, { LA_FORM_CHUNK, 16 }, { LA_FORM_CHUNK, 24 },
};
#define NFORMS (sizeof FORMS / sizeof FORMS[0])

static void form_name(char * buf, size_t n, const char * pre, form_c fc) {
    if (fc.form == LA_FORM_CHUNK) snprintf(buf, n, "%s/chunk%d", pre, fc.C);
    else snprintf(buf, n, "%s/%s", pre, la_form_str(fc.form));
}

// ---------------------------------------------------------------------------------------------
// Forms x shapes: every form on 1 and 2 threads against the oracle.

static void run_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    din x = to_f64(&d);
    oset ref;
    oset_alloc(&d, &ref);
    oracle(&d, &x, &ref, true);
    char pre[120];
    snprintf(pre, sizeof pre, "%s/%s", OP_NAME[c->op], c->name);
    for (size_t fi = 0; fi < NFORMS; fi++) {
        char nm[160];
        form_name(nm, sizeof nm, pre, FORMS[fi]);
        la_opts o = opts_for(&d, FORMS[fi].form, FORMS[fi].C);
        fres f1, f2;
        fres_alloc(&d, &f1);
        fres_alloc(&d, &f2);
        if (run_lib(&d, &f1, &o, 1, nm)) compare(&d, &f1, &ref, nm, TOL_FWD, TOL_BWD, true);
        if (run_lib(&d, &f2, &o, 2, nm))
            expect(fres_equal(&d, &f1, &f2), "%s: 1 and 2 threads differ", nm);
        fres_free(&f1);
        fres_free(&f2);
    }
    oset_free(&ref);
    din_free(&x);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Finite differences of the oracle with respect to every raw floating input; the oracle's
// gradients and the library's (every form) against them.

typedef struct fdctx { const tdata * d; const din * x; oset * scr; } fdctx;

static double fd_loss(void * ctx) {
    const fdctx * fc = ctx;
    oracle(fc->d, fc->x, fc->scr, false);
    return la_loss_dot(la_loss_dot(0, fc->scr->o, fc->x->dout, fc->d->nv), fc->scr->fs,
                       fc->x->dfs, fc->d->ns);
}

static void fd_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    din x = to_f64(&d);
    oset ana, fd, scr;
    oset_alloc(&d, &ana);
    oset_alloc(&d, &fd);
    oset_alloc(&d, &scr);
    oracle(&d, &x, &ana, true);
    double * params[8] = { x.q, x.k, x.v, x.beta, x.g, x.A_log, x.dt_bias, x.s0 };
    double * grads[8] = { fd.dq, fd.dk, fd.dv, fd.dbeta, fd.dg, fd.dA, fd.ddt, fd.ds0 };
    const int64_t np[8] = { d.nq, d.nq, d.nv, d.nb, d.ng, d.na, d.ndt, d.ns };
    fdctx fc = { &d, &x, &scr };
    la_fd_grads(8, params, np, grads, FD_STEP, fd_loss, &fc);
    fd.sA = ana.sA;   // the library's dA, ddt against FD on the oracle's scale
    fd.sdt = ana.sdt;
    char pre[120];
    snprintf(pre, sizeof pre, "%s/%s", OP_NAME[c->op], c->name);
    const char * names[8] = { "dq", "dk", "dv", "dbeta", "dg", "dA_log", "ddt_bias",
                              "dinitial_state" };
    const double * an[8] = { ana.dq, ana.dk, ana.dv, ana.dbeta, ana.dg, ana.dA, ana.ddt,
                             ana.ds0 };
    for (int p = 0; p < 8; p++) {
        if (!params[p]) continue;
        char nm[200];
        snprintf(nm, sizeof nm, "%s oracle %s vs finite differences", pre, names[p]);
        rel_d(nm, an[p], grads[p], np[p], TOL_FD);
    }
    const form_c fdf[] = { { LA_FORM_REF, 0 }, { LA_FORM_RECURRENT, 0 }, { LA_FORM_CHUNK, 64 },
                           { LA_FORM_CHUNK, 16 }, { LA_FORM_CHUNK, 5 }, { LA_FORM_CHUNK, 2 } };
    for (size_t fi = 0; fi < sizeof fdf / sizeof fdf[0]; fi++) {
        char nm[160];
        form_name(nm, sizeof nm, pre, fdf[fi]);
        strncat(nm, " vs FD", sizeof nm - strlen(nm) - 1);
        la_opts o = opts_for(&d, fdf[fi].form, fdf[fi].C);
        fres f;
        fres_alloc(&d, &f);
        if (run_lib(&d, &f, &o, 1, nm)) {
            compare(&d, &f, &ana, nm, TOL_FWD, TOL_BWD, true);  // o, final_state vs oracle
            compare(&d, &f, &fd, nm, TOL_FWD, TOL_BWD, false);
        }
        fres_free(&f);
    }
    oset_free(&ana);
    oset_free(&fd);
    oset_free(&scr);
    din_free(&x);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Identities (OPS.md 3 #5, #6) and allow_neg_eigval without the sigmoid flag.

// a and b computed on the same inputs: compare every shared tensor.
static void compare_ff(const tdata * d, const fres * a, const fres * b, const char * nm,
                       bool with_dg) {
    char n2[240];
#define CMPF(field, n, tol)                                                \
    do {                                                                   \
        if (a->field && b->field) {                                        \
            snprintf(n2, sizeof n2, "%s %s", nm, #field);                  \
            rel_ff(n2, a->field, b->field, n, tol);                        \
        }                                                                  \
    } while (0)
    CMPF(o, d->nv, TOL_ID_FWD);
    CMPF(fs, d->ns, TOL_ID_FWD);
    CMPF(dq, d->nq, TOL_ID_BWD);
    CMPF(dk, d->nq, TOL_ID_BWD);
    CMPF(dv, d->nv, TOL_ID_BWD);
    CMPF(dbeta, d->nb, TOL_ID_BWD);
    if (with_dg) {
        CMPF(dg, d->ng, TOL_ID_BWD);
        CMPF(dA, d->na, TOL_ID_BWD);
        CMPF(ddt, d->ndt, TOL_ID_BWD);
    }
    CMPF(ds0, d->ns, TOL_ID_BWD);
#undef CMPF
}

// gated_delta_rule(g = 0) == delta_rule, with and without beta (beta = NULL against ones).
static void identity_gdn_delta(void) {
    for (int variant = 0; variant < 2; variant++) {
        la_rng r;
        la_rng_seed(&r, 40 + (uint64_t)variant);
        const bool nobeta = variant == 1;
        tcase c = { "id", OP_GDN, 2, 90, 2, 0, 16, 8, 0, {0}, "l2 g:zero", 0 };
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
        for (size_t fi = 0; fi < NFORMS; fi++) {
            char nm[160];
            form_name(nm, sizeof nm, nobeta ? "identity gdn(g=0, beta=1) == delta_rule(beta=NULL)"
                                             : "identity gdn(g=0) == delta_rule", FORMS[fi]);
            la_opts o = opts_for(&g, FORMS[fi].form, FORMS[fi].C);
            fres a, b;
            fres_alloc(&g, &a);
            fres_alloc(&dl, &b);
            if (run_lib(&g, &a, &o, 1, nm) && run_lib(&dl, &b, &o, 1, nm))
                compare_ff(&dl, &b, &a, nm, false);
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
        tcase c = { "id", OP_GDN, 2, 70, 2, 4, 8, 6, 0, {0}, specs[variant], 0 };
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
        for (size_t fi = 0; fi < NFORMS; fi++) {
            char nm[200], pre[120];
            snprintf(pre, sizeof pre, "identity kda(g 1_K) == gdn(g) [%s]", specs[variant]);
            form_name(nm, sizeof nm, pre, FORMS[fi]);
            la_opts o = opts_for(&g, FORMS[fi].form, FORMS[fi].C);
            fres a, b;
            fres_alloc(&kd, &a);
            fres_alloc(&g, &b);
            if (run_lib(&kd, &a, &o, 1, nm) && run_lib(&g, &b, &o, 1, nm)) {
                compare_ff(&g, &a, &b, nm, false);
                float * sdg = la_test_alloc((size_t)g.ng * 4);
                for (int64_t e = 0; e < g.ng; e++) {
                    double s = 0;
                    for (int64_t i = 0; i < K; i++) s += (double)a.dg[e * K + i];
                    sdg[e] = (float)s;
                }
                char n2[240];
                snprintf(n2, sizeof n2, "%s sum_K dg", nm);
                rel_ff(n2, sdg, b.dg, g.ng, TOL_ID_BWD);
                if (a.dA) {
                    snprintf(n2, sizeof n2, "%s dA_log", nm);
                    rel_ff(n2, a.dA, b.dA, g.na, TOL_ID_BWD);
                }
                if (a.ddt) {
                    for (int64_t e = 0; e < g.ndt; e++) {
                        double s = 0;
                        for (int64_t i = 0; i < K; i++) s += (double)a.ddt[e * K + i];
                        sdg[e] = (float)s;
                    }
                    snprintf(n2, sizeof n2, "%s sum_K ddt_bias", nm);
                    rel_ff(n2, sdg, b.ddt, g.ndt, TOL_ID_BWD);
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
        tcase c = { "neg_only", (op_kind)op, 1, 40, 2, 4, 8, 8, 0, {0}, "l2", 0 };
        tdata d;
        make_data(&c, &d, &r);
        for (size_t fi = 0; fi < NFORMS; fi += 2) {
            char nm[160];
            form_name(nm, sizeof nm, OP_NAME[op], FORMS[fi]);
            strncat(nm, ": allow_neg_eigval without the sigmoid flag is a no-op",
                    sizeof nm - strlen(nm) - 1);
            la_opts o = opts_for(&d, FORMS[fi].form, FORMS[fi].C);
            la_opts on = o;
            on.allow_neg_eigval = true;
            fres a, b;
            fres_alloc(&d, &a);
            fres_alloc(&d, &b);
            if (run_lib(&d, &a, &o, 1, nm) && run_lib(&d, &b, &on, 1, nm))
                expect(fres_equal(&d, &a, &b), "%s", nm);
            fres_free(&a);
            fres_free(&b);
        }
        free_data(&d);
    }
}

// ---------------------------------------------------------------------------------------------
// Chaining law, decode steps, in-place states.

// Token rows [t0, t0 + n) of a (B = 1) tensor with `w` floats per token.
#define ROWS(p, t0, w) ((p) ? (p) + (t0) * (w) : NULL)

static void split_case(op_kind op, const char * spec, form_c fc, int64_t T, int64_t t,
                       uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "split", op, 1, T, 2, op == OP_DELTA ? 0 : 4, 8, 6, 0, {0}, spec, 0 };
    tdata d;
    make_data(&c, &d, &r);
    din x = to_f64(&d);
    oset ref;
    oset_alloc(&d, &ref);
    oracle(&d, &x, &ref, false);
    la_opts o = opts_for(&d, fc.form, fc.C);
    const int64_t H = c.H, HV = d.HV, K = c.K, V = c.V, GK = d.GK;
    float * o1 = la_test_alloc((size_t)d.nv * 4), * f1 = la_test_alloc((size_t)d.ns * 4);
    float * os = la_test_alloc((size_t)d.nv * 4), * ms = la_test_alloc((size_t)d.ns * 4);
    float * fs = la_test_alloc((size_t)d.ns * 4);
    tdata d1 = d, d2 = d;
    d1.sh.T = t;
    d2.sh.T = T - t;
    d2.q = d.q + t * H * K;
    d2.k = d.k + t * H * K;
    d2.v = d.v + t * HV * V;
    d2.beta = ROWS(d.beta, t, HV);
    d2.g = ROWS(d.g, t, HV * GK);
    la_status s0 = lib_fwd(&d, o1, f1, d.s0, &o);
    la_status s1 = lib_fwd(&d1, os, ms, d.s0, &o);
    la_status s2 = lib_fwd(&d2, os + t * HV * V, fs, ms, &o);
    char nm[200], pre[120];
    snprintf(pre, sizeof pre, "%s chaining [%s] T=%lld split at %lld", OP_NAME[op], spec,
             (long long)T, (long long)t);
    form_name(nm, sizeof nm, pre, fc);
    if (expect(s0 == LA_STATUS_OK && s1 == LA_STATUS_OK && s2 == LA_STATUS_OK,
               "%s: status %s %s %s", nm, la_status_str(s0), la_status_str(s1),
               la_status_str(s2))) {
        char n2[240];
        snprintf(n2, sizeof n2, "%s o == one call", nm);
        rel_ff(n2, os, o1, d.nv, TOL_ID_FWD);
        snprintf(n2, sizeof n2, "%s final_state == one call", nm);
        rel_ff(n2, fs, f1, d.ns, TOL_ID_FWD);
        snprintf(n2, sizeof n2, "%s o vs oracle", nm);
        rel_f(n2, os, ref.o, d.nv, TOL_FWD);
        snprintf(n2, sizeof n2, "%s final_state vs oracle", nm);
        rel_f(n2, fs, ref.fs, d.ns, TOL_FWD);
    }
    free(o1); free(f1); free(os); free(ms); free(fs);
    oset_free(&ref);
    din_free(&x);
    free_data(&d);
}

// Decode: T = 1 calls, one token at a time, the state updated in place (final_state ==
// initial_state), equal the full pass (B = 2 rows decoded together).
static void decode_case(op_kind op, const char * spec, form_c fc, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    const int64_t B = 2, T = 20;
    tcase c = { "decode", op, B, T, 2, op == OP_DELTA ? 0 : 4, 8, 6, 0, {0}, spec, 0 };
    tdata d;
    make_data(&c, &d, &r);
    const int64_t H = c.H, HV = d.HV, K = c.K, V = c.V, GK = d.GK;
    la_opts o = opts_for(&d, fc.form, fc.C);
    float * o1 = la_test_alloc((size_t)d.nv * 4), * f1 = la_test_alloc((size_t)d.ns * 4);
    la_status st = lib_fwd(&d, o1, f1, d.s0, &o);
    float * state = la_test_alloc((size_t)d.ns * 4), * od = la_test_alloc((size_t)d.nv * 4);
    memcpy(state, d.s0, (size_t)d.ns * 4);
    tdata s = d;   // one token of both rows, gathered into (2, 1, ...) tensors
    s.sh.T = 1;
    s.q = la_test_alloc((size_t)(B * H * K) * 4);
    s.k = la_test_alloc((size_t)(B * H * K) * 4);
    s.v = la_test_alloc((size_t)(B * HV * V) * 4);
    s.beta = d.beta ? la_test_alloc((size_t)(B * HV) * 4) : NULL;
    s.g = d.g ? la_test_alloc((size_t)(B * HV * GK) * 4) : NULL;
    float * ot = la_test_alloc((size_t)(B * HV * V) * 4);
    bool ok = st == LA_STATUS_OK;
    for (int64_t t = 0; t < T && ok; t++) {
        for (int64_t b = 0; b < B; b++) {
            const int64_t row = b * T + t;
            memcpy(s.q + b * H * K, d.q + row * H * K, (size_t)(H * K) * 4);
            memcpy(s.k + b * H * K, d.k + row * H * K, (size_t)(H * K) * 4);
            memcpy(s.v + b * HV * V, d.v + row * HV * V, (size_t)(HV * V) * 4);
            if (s.beta) memcpy(s.beta + b * HV, d.beta + row * HV, (size_t)HV * 4);
            if (s.g) memcpy(s.g + b * HV * GK, d.g + row * HV * GK, (size_t)(HV * GK) * 4);
        }
        ok = lib_fwd(&s, ot, state, state, &o) == LA_STATUS_OK;
        for (int64_t b = 0; b < B; b++)
            memcpy(od + (b * T + t) * HV * V, ot + b * HV * V, (size_t)(HV * V) * 4);
    }
    char nm[200], pre[120];
    snprintf(pre, sizeof pre, "%s decode [%s] T=1 steps in place", OP_NAME[op], spec);
    form_name(nm, sizeof nm, pre, fc);
    if (expect(ok, "%s: a call failed", nm)) {
        char n2[240];
        snprintf(n2, sizeof n2, "%s o == full pass", nm);
        rel_ff(n2, od, o1, d.nv, TOL_ID_FWD);
        snprintf(n2, sizeof n2, "%s final_state == full pass", nm);
        rel_ff(n2, state, f1, d.ns, TOL_ID_FWD);
    }
    free(s.q); free(s.k); free(s.v); free(s.beta); free(s.g); free(ot);
    free(o1); free(f1); free(state); free(od);
    free_data(&d);
}

// final_state may be initial_state itself: the same o and final state, bitwise, as with
// separate buffers; zero-length sequences keep their row.
static void inplace_case(op_kind op, const char * spec, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "inplace", op, 1, 0, 2, op == OP_DELTA ? 0 : 4, 6, 7, 5, {5, 0, 70, 1, 0}, spec,
                0 };
    tdata d;
    make_data(&c, &d, &r);
    for (size_t fi = 0; fi < NFORMS; fi++) {
        la_opts o = opts_for(&d, FORMS[fi].form, FORMS[fi].C);
        float * o1 = la_test_alloc((size_t)d.nv * 4), * f1 = la_test_alloc((size_t)d.ns * 4);
        float * o2 = la_test_alloc((size_t)d.nv * 4), * st = la_test_alloc((size_t)d.ns * 4);
        memcpy(st, d.s0, (size_t)d.ns * 4);
        la_status s1 = lib_fwd(&d, o1, f1, d.s0, &o);
        la_status s2 = lib_fwd(&d, o2, st, st, &o);
        char nm[160];
        form_name(nm, sizeof nm, OP_NAME[op], FORMS[fi]);
        expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK && eqb(o1, o2, d.nv) &&
                   eqb(f1, st, d.ns),
               "%s: final_state == initial_state (in place) differs from separate buffers "
               "(status %s, %s)", nm, la_status_str(s1), la_status_str(s2));
        // sequences 1 and 4 are empty: their state rows pass through unchanged
        const int64_t KVH = d.HV * c.K * c.V;
        expect(s1 == LA_STATUS_OK && eqb(f1 + 1 * KVH, d.s0 + 1 * KVH, KVH) &&
                   eqb(f1 + 4 * KVH, d.s0 + 4 * KVH, KVH),
               "%s: a zero-length sequence changed its state", nm);
        free(o1); free(f1); free(o2); free(st);
    }
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Workspaces, optional outputs, argument rules.

static void workspace_case(op_kind op, const char * spec, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "ws", op, 2, 45, 2, op == OP_DELTA ? 0 : 4, 8, 5, 0, {0}, spec, 0 };
    tdata d;
    make_data(&c, &d, &r);
    for (size_t fi = 0; fi < NFORMS; fi++) {
        char nm[160];
        form_name(nm, sizeof nm, OP_NAME[op], FORMS[fi]);
        la_opts o = opts_for(&d, FORMS[fi].form, FORMS[fi].C);
        fres a, b;
        fres_alloc(&d, &a);
        fres_alloc(&d, &b);
        if (!run_lib(&d, &a, &o, 2, nm)) {
            fres_free(&a);
            fres_free(&b);
            continue;
        }
        la_set_num_threads(2);
        const size_t wf = lib_ws(&d, false, &o), wb = lib_ws(&d, true, &o);
        char * bf = la_test_alloc(wf + 1), * bb = la_test_alloc(wb + 1);
        la_opts ow = o;
        ow.work = bf + 1;   // any alignment
        ow.work_size = wf;
        la_status s1 = lib_fwd(&d, b.o, b.fs, d.s0, &ow);
        ow.work = bb + 1;
        ow.work_size = wb;
        la_status s2 = lib_bwd(&d, &b, &ow);
        expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK && fres_equal(&d, &a, &b),
               "%s: caller-owned workspace (fwd %zu, bwd %zu bytes, misaligned) differs from "
               "NULL (status %s, %s)", nm, wf, wb, la_status_str(s1), la_status_str(s2));
        expect(wf > 0 && wb > 0, "%s: workspace sizes %zu, %zu include the slack", nm, wf, wb);
        if (wf > 0 && wb > 0) {
            ow.work = bf;
            ow.work_size = wf - 1;
            s1 = lib_fwd(&d, b.o, b.fs, d.s0, &ow);
            ow.work = bb;
            ow.work_size = wb - 1;
            s2 = lib_bwd(&d, &b, &ow);
            expect(s1 == LA_STATUS_WORKSPACE && s2 == LA_STATUS_WORKSPACE,
                   "%s: workspace one byte short: forward %s, backward %s (want %s)", nm,
                   la_status_str(s1), la_status_str(s2), la_status_str(LA_STATUS_WORKSPACE));
        }
        // optional outputs: final_state, dinitial_state
        ow = o;
        memset(b.o, 0, (size_t)d.nv * 4);
        s1 = lib_fwd(&d, b.o, NULL, d.s0, &ow);
        expect(s1 == LA_STATUS_OK && eqb(a.o, b.o, d.nv), "%s: final_state optional (%s)", nm,
               la_status_str(s1));
        fres c2 = b;
        c2.ds0 = NULL;
        memset(b.dq, 0, (size_t)d.nq * 4);
        s2 = lib_bwd(&d, &c2, &ow);
        expect(s2 == LA_STATUS_OK && eqb(a.dq, b.dq, d.nq) && eqb(a.dk, b.dk, d.nq) &&
                   eqb(a.dv, b.dv, d.nv) && eqb(a.dg, b.dg, d.ng),
               "%s: dinitial_state optional (%s)", nm, la_status_str(s2));
        la_set_num_threads(0);
        free(bf);
        free(bb);
        fres_free(&a);
        fres_free(&b);
    }
    free_data(&d);
}

static void want(la_status got, la_status w, const char * what) {
    expect(got == w, "%s: got %s, want %s", what, la_status_str(got), la_status_str(w));
}

// Forward and backward of one configuration, both expected to return w.
static void want_both(const tdata * d, const la_opts * o, la_status w, const char * what) {
    fres f;
    fres_alloc(d, &f);
    char nm[200];
    snprintf(nm, sizeof nm, "%s %s forward", OP_NAME[d->op], what);
    want(lib_fwd(d, f.o, f.fs, d->s0, o), w, nm);
    snprintf(nm, sizeof nm, "%s %s backward", OP_NAME[d->op], what);
    want(lib_bwd(d, &f, o), w, nm);
    fres_free(&f);
}

static void api_checks(void) {
    la_rng r;
    la_rng_seed(&r, 70);
    const char * specs[3] = { "l2", "l2 sig neg gate", "l2 sig gate lb" };
    for (int op = 0; op < 3; op++) {
        tcase c = { "api", (op_kind)op, 2, 10, 2, op == OP_DELTA ? 0 : 4, 8, 5, 0, {0},
                    specs[op], 0 };
        tdata d;
        make_data(&c, &d, &r);
        la_opts o = opts_for(&d, LA_FORM_CHUNK, 16);
        want_both(&d, &o, LA_STATUS_OK, "valid call");
        fres f;
        fres_alloc(&d, &f);
        char nm[200];
        for (int fm = 0; fm < 3; fm++) {
            la_opts of = o;
            of.form = (la_form)fm;
            snprintf(nm, sizeof nm, "%s/%s NULL o", OP_NAME[op], la_form_str(of.form));
            want(lib_fwd(&d, NULL, f.fs, d.s0, &of), LA_STATUS_INVALID_ARG, nm);
            tdata dq = d;
            dq.q = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL q", OP_NAME[op], la_form_str(of.form));
            want(lib_fwd(&dq, f.o, f.fs, d.s0, &of), LA_STATUS_INVALID_ARG, nm);
            fres fn = f;
            fn.dq = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL dq", OP_NAME[op], la_form_str(of.form));
            want(lib_bwd(&d, &fn, &of), LA_STATUS_INVALID_ARG, nm);
            tdata dd = d;
            dd.dout = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL dout", OP_NAME[op], la_form_str(of.form));
            want(lib_bwd(&dd, &f, &of), LA_STATUS_INVALID_ARG, nm);
        }
        // shapes and options
        tdata bad = d;
        bad.sh.K = 0;
        want_both(&bad, &o, LA_STATUS_SHAPE, "K = 0");
        la_opts ob = o;
        ob.chunk_size = 300;
        want_both(&d, &ob, LA_STATUS_INVALID_ARG, "chunk_size 300");
        ob = o;
        ob.scale = NAN;
        want_both(&d, &ob, LA_STATUS_INVALID_ARG, "scale NaN");
        int64_t cu[3] = { 0, 4, 10 };
        ob = o;
        ob.cu_seqlens = cu;
        ob.n_seqs = 2;
        want_both(&d, &ob, LA_STATUS_CU_SEQLENS, "cu_seqlens with B = 2");
        if (op == OP_DELTA) {
            bad = d;
            bad.sh.HV = 2 * c.H;
            want_both(&bad, &o, LA_STATUS_SHAPE, "HV = 2H (no GVA)");
            bad.sh.HV = c.H;
            want_both(&bad, &o, LA_STATUS_OK, "HV = H given explicitly");
        } else {
            bad = d;
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
            want(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG, "delta_rule beta without dbeta");
            fb = f;
            want(lib_bwd(&nb, &fb, &o), LA_STATUS_INVALID_ARG, "delta_rule dbeta without beta");
        } else {
            fres fb = f;
            fb.dg = NULL;
            snprintf(nm, sizeof nm, "%s g without dg", OP_NAME[op]);
            want(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            fb = f;
            fb.dbeta = NULL;
            snprintf(nm, sizeof nm, "%s beta without dbeta", OP_NAME[op]);
            want(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            fb = f;
            fb.dA = NULL;
            snprintf(nm, sizeof nm, "%s A_log without dA_log", OP_NAME[op]);
            want(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            fb = f;
            fb.ddt = NULL;
            snprintf(nm, sizeof nm, "%s dt_bias without ddt_bias", OP_NAME[op]);
            want(lib_bwd(&d, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            // gradients of absent parameters
            tdata na = d;
            na.dt_bias = NULL;
            na.ndt = 0;
            fb = f;
            snprintf(nm, sizeof nm, "%s ddt_bias without dt_bias", OP_NAME[op]);
            want(lib_bwd(&na, &fb, &o), LA_STATUS_INVALID_ARG, nm);
            fres fz = f;
            fz.ddt = NULL;
            snprintf(nm, sizeof nm, "%s no dt_bias, no ddt_bias", OP_NAME[op]);
            want(lib_bwd(&na, &fz, &o), LA_STATUS_OK, nm);
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
                want(lib_bwd(&na, &fb, &o), LA_STATUS_INVALID_ARG, "kda dA_log without A_log");
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
// 10^5-token sequences, chunk form forward and backward: finite and equal to the oracle.

static void long_case(op_kind op, const char * spec, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "long", op, 1, 100000, 1, 0, 16, 16, 0, {0}, spec, 0 };
    tdata d;
    make_data(&c, &d, &r);
    din x = to_f64(&d);
    oset ref;
    oset_alloc(&d, &ref);
    oracle(&d, &x, &ref, true);
    la_opts o = opts_for(&d, LA_FORM_CHUNK, 64);
    fres f;
    fres_alloc(&d, &f);
    char nm[160];
    snprintf(nm, sizeof nm, "%s/long T=1e5 [%s]/chunk64", OP_NAME[op], spec);
    if (run_lib(&d, &f, &o, 2, nm)) {
        expect(all_finite(f.o, d.nv) && all_finite(f.fs, d.ns) && all_finite(f.dq, d.nq) &&
                   all_finite(f.dk, d.nq) && all_finite(f.dv, d.nv) &&
                   (!f.dg || all_finite(f.dg, d.ng)) && (!f.dbeta || all_finite(f.dbeta, d.nb)),
               "%s: non-finite output", nm);
        compare(&d, &f, &ref, nm, TOL_LONG, TOL_LONG, true);
    }
    fres_free(&f);
    oset_free(&ref);
    din_free(&x);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------

int main(void) {
    const tcase cases[] = {
        // name         op        B  T    H  HV K   V   nseq lens                        spec                         scale
        { "basic",      OP_DELTA, 2, 100, 2, 0, 16, 8,  0, {0},                        "",                          0 },
        { "T1",         OP_DELTA, 3, 1,   2, 0, 8,  8,  0, {0},                        "",                          0 },
        { "T67_noinit", OP_DELTA, 1, 67,  3, 0, 16, 16, 0, {0},                        "noinit",                    0 },
        { "l2",         OP_DELTA, 2, 90,  2, 0, 16, 12, 0, {0},                        "l2",                        0 },
        { "nobeta",     OP_DELTA, 2, 70,  2, 0, 8,  8,  0, {0},                        "nobeta",                    0 },
        { "varlen",     OP_DELTA, 1, 0,   2, 0, 16, 12, 7, {37, 0, 1, 64, 65, 3, 130}, "l2",                        0 },
        { "K7_V19",     OP_DELTA, 1, 130, 1, 0, 7,  19, 0, {0},                        "nodfs",                     0.3f },
        { "K64",        OP_DELTA, 1, 80,  1, 0, 64, 32, 0, {0},                        "l2",                        0 },
        { "beta0",      OP_DELTA, 1, 150, 2, 0, 16, 8,  0, {0},                        "b:zero",                    0 },
        { "beta1",      OP_DELTA, 1, 150, 2, 0, 16, 8,  0, {0},                        "b:one",                     0 },
        { "beta2",      OP_DELTA, 1, 150, 2, 0, 16, 8,  0, {0},                        "b:two",                     0 },
        { "l2_tiny",    OP_DELTA, 1, 90,  2, 0, 16, 8,  0, {0},                        "l2 tiny",                   0 },

        { "basic",      OP_GDN,   2, 100, 2, 0, 16, 8,  0, {0},                        "",                          0 },
        { "T1",         OP_GDN,   3, 1,   2, 4, 8,  8,  0, {0},                        "l2 sig neg gate",           0 },
        { "gva",        OP_GDN,   2, 67,  2, 4, 16, 8,  0, {0},                        "l2 sig gate",               0 },
        { "gva3",       OP_GDN,   1, 50,  1, 3, 8,  8,  0, {0},                        "noinit",                    0 },
        { "varlen",     OP_GDN,   1, 0,   2, 4, 16, 12, 7, {37, 0, 1, 64, 65, 3, 130}, "l2 sig gate",               0 },
        { "all",        OP_GDN,   2, 90,  2, 4, 16, 16, 0, {0},                        "l2 sig neg gate",           0 },
        { "gate_nodtb", OP_GDN,   1, 80,  2, 2, 8,  8,  0, {0},                        "gate nodtb",                0 },
        { "gate_big",   OP_GDN,   1, 80,  2, 2, 8,  8,  0, {0},                        "gate g:big",                0 },
        { "sig",        OP_GDN,   1, 80,  2, 0, 16, 8,  0, {0},                        "sig",                       0 },
        { "K7_V19",     OP_GDN,   1, 130, 1, 2, 7,  19, 0, {0},                        "l2 nodfs",                  0.3f },
        { "K64",        OP_GDN,   1, 80,  1, 2, 64, 32, 0, {0},                        "l2 sig gate",               0 },
        { "g_uni",      OP_GDN,   1, 150, 2, 2, 16, 8,  0, {0},                        "g:uni",                     0 },
        { "g_zero",     OP_GDN,   2, 90,  2, 2, 16, 8,  0, {0},                        "g:zero",                    0 },
        { "g_small",    OP_GDN,   1, 90,  2, 2, 16, 8,  0, {0},                        "g:small",                   0 },
        { "g_mix",      OP_GDN,   1, 150, 1, 3, 16, 8,  0, {0},                        "g:mix",                     0 },
        { "g_tail",     OP_GDN,   1, 192, 2, 2, 16, 8,  0, {0},                        "g:tail",                    0 },
        { "beta0",      OP_GDN,   1, 150, 2, 2, 16, 8,  0, {0},                        "sig b:zero",                0 },
        { "beta1",      OP_GDN,   1, 150, 2, 2, 16, 8,  0, {0},                        "b:one",                     0 },
        { "beta2",      OP_GDN,   1, 150, 2, 2, 16, 8,  0, {0},                        "sig neg b:two g:small",     0 },
        { "beta1_sig",  OP_GDN,   1, 150, 2, 2, 16, 8,  0, {0},                        "sig b:one",                 0 },
        { "l2_tiny",    OP_GDN,   1, 90,  2, 4, 16, 8,  0, {0},                        "l2 sig gate tiny",          0 },
        { "K128",       OP_GDN,   1, 70,  1, 1, 128,128,0, {0},                        "l2 sig gate",               0 },

        { "basic",      OP_KDA,   2, 100, 2, 0, 16, 8,  0, {0},                        "",                          0 },
        { "T1",         OP_KDA,   3, 1,   2, 4, 8,  8,  0, {0},                        "l2 sig neg gate",           0 },
        { "gva",        OP_KDA,   2, 67,  2, 4, 16, 8,  0, {0},                        "l2 sig gate",               0 },
        { "gva3",       OP_KDA,   1, 50,  1, 3, 8,  8,  0, {0},                        "noinit",                    0 },
        { "varlen",     OP_KDA,   1, 0,   2, 4, 16, 12, 7, {37, 0, 1, 64, 65, 3, 130}, "l2 sig gate lb",            0 },
        { "all",        OP_KDA,   2, 90,  2, 4, 16, 16, 0, {0},                        "l2 sig neg gate",           0 },
        { "lb",         OP_KDA,   2, 90,  2, 2, 16, 8,  0, {0},                        "gate lb",                   0 },
        { "lb_noA",     OP_KDA,   1, 80,  2, 2, 16, 8,  0, {0},                        "gate lb noA",               0 },
        { "lb_nodtb",   OP_KDA,   1, 80,  2, 4, 8,  8,  0, {0},                        "l2 sig neg gate lb nodtb",  0 },
        { "gate_nodtb", OP_KDA,   1, 80,  2, 2, 8,  8,  0, {0},                        "gate nodtb",                0 },
        { "gate_big",   OP_KDA,   1, 80,  2, 2, 8,  8,  0, {0},                        "gate g:big",                0 },
        { "K7_V19",     OP_KDA,   1, 130, 1, 2, 7,  19, 0, {0},                        "l2 nodfs",                  0.3f },
        { "K64",        OP_KDA,   1, 80,  1, 2, 64, 32, 0, {0},                        "l2 sig gate lb",            0 },
        { "g_uni",      OP_KDA,   1, 150, 2, 2, 16, 8,  0, {0},                        "g:uni",                     0 },
        { "g_zero",     OP_KDA,   2, 90,  2, 2, 16, 8,  0, {0},                        "g:zero",                    0 },
        { "g_small",    OP_KDA,   1, 90,  2, 2, 16, 8,  0, {0},                        "g:small",                   0 },
        { "g_mix",      OP_KDA,   1, 150, 2, 2, 16, 16, 0, {0},                        "g:mix",                     0 },
        { "g_mix_vl",   OP_KDA,   1, 0,   2, 2, 12, 8,  3, {130, 1, 77},               "g:mix",                     0 },
        { "g_tail",     OP_KDA,   1, 192, 2, 2, 16, 16, 0, {0},                        "g:tail",                    0 },
        { "beta0",      OP_KDA,   1, 150, 2, 2, 16, 8,  0, {0},                        "sig b:zero",                0 },
        { "beta1",      OP_KDA,   1, 150, 2, 2, 16, 8,  0, {0},                        "b:one",                     0 },
        { "beta2",      OP_KDA,   1, 150, 2, 2, 16, 8,  0, {0},                        "sig neg b:two g:small",     0 },
        { "beta1_sig",  OP_KDA,   1, 150, 2, 2, 16, 8,  0, {0},                        "sig b:one",                 0 },
        { "l2_tiny",    OP_KDA,   1, 90,  2, 4, 16, 8,  0, {0},                        "l2 gate lb tiny",           0 },
        { "K128",       OP_KDA,   1, 70,  1, 1, 128,128,0, {0},                        "l2 sig gate lb",            0 },
        { "K128_mix",   OP_KDA,   1, 100, 1, 0, 128,64, 0, {0},                        "l2 g:mix",                  0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);

    const tcase fdc[] = {
        { "fd",             OP_DELTA, 2, 9, 2, 0, 4, 3, 0, {0},          "",                        0 },
        { "fd_l2_nobeta",   OP_DELTA, 1, 9, 2, 0, 4, 3, 0, {0},          "l2 nobeta",               0.7f },
        { "fd_varlen",      OP_DELTA, 1, 0, 2, 0, 3, 2, 4, {4, 0, 1, 6}, "l2",                      0 },
        { "fd",             OP_GDN,   2, 9, 2, 0, 4, 3, 0, {0},          "",                        0 },
        { "fd_flags",       OP_GDN,   2, 9, 1, 2, 4, 3, 0, {0},          "l2 sig neg gate",         0 },
        { "fd_gate_nodtb",  OP_GDN,   1, 9, 2, 4, 4, 3, 0, {0},          "sig gate nodtb",          0 },
        { "fd_gate_big",    OP_GDN,   1, 9, 1, 2, 3, 3, 0, {0},          "gate g:big",              0 },
        { "fd_varlen",      OP_GDN,   1, 0, 1, 2, 3, 2, 4, {4, 0, 1, 6}, "l2 sig gate",             0 },
        { "fd_T1",          OP_GDN,   2, 1, 1, 2, 4, 3, 0, {0},          "l2 sig neg gate",         0 },
        { "fd_l2_tiny",     OP_GDN,   1, 9, 2, 2, 4, 3, 0, {0},          "l2 tiny",                 0 },
        { "fd",             OP_KDA,   2, 9, 2, 0, 4, 3, 0, {0},          "",                        0 },
        { "fd_flags",       OP_KDA,   2, 9, 1, 2, 4, 3, 0, {0},          "l2 sig neg gate",         0 },
        { "fd_lb",          OP_KDA,   1, 9, 2, 4, 4, 3, 0, {0},          "sig gate lb",             0 },
        { "fd_lb_noA",      OP_KDA,   1, 9, 1, 2, 4, 3, 0, {0},          "gate lb noA",             0 },
        { "fd_lb_nodtb",    OP_KDA,   1, 9, 1, 2, 4, 3, 0, {0},          "l2 gate lb nodtb",        0 },
        { "fd_gate_big",    OP_KDA,   1, 9, 1, 2, 3, 3, 0, {0},          "gate g:big",              0 },
        { "fd_varlen",      OP_KDA,   1, 0, 1, 2, 3, 2, 4, {4, 0, 1, 6}, "l2 sig gate lb",          0 },
        { "fd_T1",          OP_KDA,   2, 1, 1, 2, 4, 3, 0, {0},          "l2 sig neg gate nodtb",   0 },
    };
    for (size_t i = 0; i < sizeof fdc / sizeof fdc[0]; i++) fd_case(&fdc[i], 200 + i);

    identity_gdn_delta();
    identity_kda_gdn();
    neg_without_sigmoid();

    const char * chain_spec[3] = { "l2", "l2 sig neg gate", "l2 sig gate lb" };
    const form_c chain_forms[] = { { LA_FORM_REF, 0 }, { LA_FORM_RECURRENT, 0 },
                                   { LA_FORM_CHUNK, 64 }, { LA_FORM_CHUNK, 16 },
                                   { LA_FORM_CHUNK, 24 } };
    for (int op = 0; op < 3; op++)
        for (size_t fi = 0; fi < sizeof chain_forms / sizeof chain_forms[0]; fi++) {
            split_case((op_kind)op, chain_spec[op], chain_forms[fi], 100, 37, 300 + op);
            split_case((op_kind)op, chain_spec[op], chain_forms[fi], 128, 64, 310 + op);
            split_case((op_kind)op, chain_spec[op], chain_forms[fi], 10, 1, 320 + op);
        }
    for (int op = 0; op < 3; op++) {
        for (size_t fi = 0; fi < 3; fi++)
            decode_case((op_kind)op, chain_spec[op], chain_forms[fi], 330 + op);
        inplace_case((op_kind)op, chain_spec[op], 340 + op);
    }
    for (int op = 0; op < 3; op++) workspace_case((op_kind)op, chain_spec[op], 350 + op);
    api_checks();

    long_case(OP_DELTA, "l2", 400);
    long_case(OP_GDN, "l2 sig neg gate", 401);
    long_case(OP_KDA, "g:mix", 402);
    long_case(OP_KDA, "l2 sig gate lb", 403);
    return finish();
}
