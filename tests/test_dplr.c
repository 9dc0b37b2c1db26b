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

// |got - ref| <= tol * (max|ref| + |ref|) everywhere; NaN/Inf fail. got is float (gf) or double.
static bool rel_core(const char * name, const float * gf, const double * gd, const double * ref,
                     int64_t n, double tol) {
    const double m = la_maxabs_d(ref, n);
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
                  "%s: %lld of %lld entries beyond tol %.0e (max|diff| %.3g at %lld, max|ref| "
                  "%.3g)", name, (long long)bad, (long long)n, tol, md, (long long)imax, m);
}

static bool rel_f(const char * name, const float * got, const double * ref, int64_t n,
                  double tol) {
    return rel_core(name, got, NULL, ref, n, tol);
}

static bool rel_d(const char * name, const double * got, const double * ref, int64_t n,
                  double tol) {
    return rel_core(name, NULL, got, ref, n, tol);
}

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
//   mapping  m:rwkv (default: the RWKV7 layer's a = -kk, b = kk o a_r, kk = l2norm(.),
//            a_r = sigmoid(.)), m:delta (a = k, b = -beta k), m:kda (a = e^gk k, b = -beta k),
//            m:rand (a, b ~ N(0, 0.3^2): finite differences only)
//   decay    g:w (default: -e^{-1/2} sigmoid(N(0,1)), the RWKV7 layer's) g:logsig g:uni
//            (U[-20, -1e-6]) g:zero g:small (U[-1e-6, 0]) g:mix g:tail; nogk (dplr with
//            gk = NULL); iplr has no decay
//   absent   noinit nodfs

typedef enum { OP_DPLR, OP_IPLR, OP_RWKV7 } op_kind;
static const char * const OP_NAME[3] = { "dplr_delta_rule", "iplr_delta_rule", "rwkv7" };

typedef struct tcase {
    const char * name;
    op_kind      op;
    int64_t      B, T, H, K, V;
    int          nseq;
    int64_t      lens[8];
    const char * spec;
    float        scale;   // 0: the op's default (K^-1/2; rwkv7 1.0)
} tcase;

typedef struct tdata {
    const char * name;
    op_kind  op;
    la_shape sh;
    int64_t  N, rows, nq, nv, ng, ns;
    int64_t  cu[9];
    bool     varlen;
    double   scale;
    float    fscale;
    float *  q, * k, * v, * a, * b, * gk, * s0, * dout, * dfs;   // q is r, gk is w for rwkv7
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

static void make_data(const tcase * c, tdata * d, la_rng * r) {
    memset(d, 0, sizeof *d);
    const char * sp = c->spec ? c->spec : "";
    d->name = c->name;
    d->op = c->op;
    d->sh = (la_shape){ c->B, c->T, c->H, c->K, c->V, 0 };
    d->N = c->B;
    if (c->nseq > 0) {
        d->N = c->nseq;
        d->sh.T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    const int64_t H = c->H, K = c->K, T = d->sh.T;
    d->rows = d->sh.B * d->sh.T;
    d->nq = d->rows * H * K;
    d->nv = d->rows * H * c->V;
    d->ng = c->op == OP_IPLR || tok(sp, "nogk") ? 0 : d->nq;
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
        if (tok(sp, "g:logsig")) la_fill_logsigmoid(r, d->gk, n);
        else if (tok(sp, "g:uni")) la_fill_uniform(r, d->gk, n, -20.0, -1e-6);
        else if (tok(sp, "g:zero")) memset(d->gk, 0, (size_t)n * 4);
        else if (tok(sp, "g:small")) la_fill_uniform(r, d->gk, n, -1e-6, 0.0);
        else if (tok(sp, "g:mix")) la_fill_gate_mix1000(r, d->gk, n, K, H, T);
        else if (tok(sp, "g:tail")) la_fill_gate_tail(r, d->gk, n, K, H, T);
        else
            for (int64_t e = 0; e < n; e++)
                d->gk[e] = (float)(-exp(-0.5) * sigm(la_rng_normal(r)));
    }
    d->a = la_test_alloc((size_t)n * 4);
    d->b = la_test_alloc((size_t)n * 4);
    if (tok(sp, "m:rand")) {
        la_fill_normal(r, d->a, n, 0.3);
        la_fill_normal(r, d->b, n, 0.3);
    } else if (tok(sp, "m:delta") || tok(sp, "m:kda")) {
        for (int64_t e = 0; e < nrh; e++) {
            const double beta = sigm(la_rng_normal(r));
            for (int64_t i = 0; i < K; i++) {
                const int64_t x = e * K + i;
                const double decay = d->gk && tok(sp, "m:kda") ? exp((double)d->gk[x]) : 1.0;
                d->a[x] = (float)(decay * (double)d->k[x]);
                d->b[x] = (float)(-beta * (double)d->k[x]);
            }
        }
    } else {   // RWKV7: a = -kk, b = kk o a_r
        la_fill_normal(r, d->a, n, 1.0);
        la_l2norm_rows(d->a, nrh, K);
        for (int64_t e = 0; e < n; e++) {
            const double kk = (double)d->a[e], ar = sigm(la_rng_normal(r));
            d->a[e] = (float)-kk;
            d->b[e] = (float)(kk * ar);
        }
    }
    if (!tok(sp, "noinit")) d->s0 = la_new_normal(r, d->ns, 0.5);
    if (!tok(sp, "nodfs")) d->dfs = la_new_normal(r, d->ns, 1.0);
}

static void free_data(tdata * d) {
    free(d->q); free(d->k); free(d->v); free(d->a); free(d->b); free(d->gk); free(d->s0);
    free(d->dout); free(d->dfs);
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C) {
    return la_test_opts(form, C, d->fscale, d->varlen ? d->cu : NULL, d->N);
}

static void seq_range(const tdata * d, int64_t n, int64_t * t0, int64_t * t1) {
    la_seq_range(d->varlen ? d->cu : NULL, d->sh.T, n, t0, t1);
}

// ---------------------------------------------------------------------------------------------
// The float64 oracle.

typedef struct din {
    double * q, * k, * v, * a, * b, * gk, * s0, * dout, * dfs;
} din;

static din to_f64(const tdata * d) {
    din x;
    x.q = la_to_f64(d->q, d->nq);
    x.k = la_to_f64(d->k, d->nq);
    x.v = la_to_f64(d->v, d->nv);
    x.a = la_to_f64(d->a, d->nq);
    x.b = la_to_f64(d->b, d->nq);
    x.gk = la_to_f64(d->gk, d->ng);
    x.s0 = la_to_f64(d->s0, d->ns);
    x.dout = la_to_f64(d->dout, d->nv);
    x.dfs = la_to_f64(d->dfs, d->ns);
    return x;
}

static void din_free(din * x) {
    free(x->q); free(x->k); free(x->v); free(x->a); free(x->b); free(x->gk); free(x->s0);
    free(x->dout); free(x->dfs);
}

typedef struct oset {
    double * o, * fs, * dq, * dk, * dv, * da, * db, * dgk, * ds0;
} oset;

static void oset_alloc(const tdata * d, oset * r) {
    r->o = la_test_alloc((size_t)d->nv * 8);
    r->fs = la_test_alloc((size_t)d->ns * 8);
    r->dq = la_test_alloc((size_t)d->nq * 8);
    r->dk = la_test_alloc((size_t)d->nq * 8);
    r->dv = la_test_alloc((size_t)d->nv * 8);
    r->da = la_test_alloc((size_t)d->nq * 8);
    r->db = la_test_alloc((size_t)d->nq * 8);
    r->dgk = d->gk ? la_test_alloc((size_t)d->ng * 8) : NULL;
    r->ds0 = d->s0 ? la_test_alloc((size_t)d->ns * 8) : NULL;
}

static void oset_free(oset * r) {
    free(r->o); free(r->fs); free(r->dq); free(r->dk); free(r->dv); free(r->da); free(r->db);
    free(r->dgk); free(r->ds0);
}

typedef struct octx {
    const tdata * d;
    const din *   x;
    double *      w, * dw;   // scratch (V)
} octx;

// One token of head h: Sn from Sp; o_t (V) when o != NULL.
static void step_fwd(const octx * c, int64_t row, int64_t h, const double * Sp, double * Sn,
                     double * o) {
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
static void step_bwd(const octx * c, int64_t row, int64_t h, const double * Sp,
                     const double * Sn, double * G, oset * r) {
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

static int64_t max_len(const tdata * d) {
    int64_t m = 0;
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        seq_range(d, n, &t0, &t1);
        if (t1 - t0 > m) m = t1 - t0;
    }
    return m;
}

static void oracle(const tdata * d, const din * x, oset * r, bool bwd) {
    const int64_t H = d->sh.H, K = d->sh.K, V = d->sh.V, KV = K * V;
    octx c = { d, x, la_test_alloc((size_t)V * 8), la_test_alloc((size_t)V * 8) };
    const int64_t nseg = max_len(d) / SEG + 1;
    double * ck = la_test_alloc((size_t)(nseg * KV) * 8);
    double * Sb = la_test_alloc((size_t)((SEG + 1) * KV) * 8);
    double * S = la_test_alloc((size_t)KV * 8), * S2 = la_test_alloc((size_t)KV * 8);
    double * G = la_test_alloc((size_t)KV * 8);
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        seq_range(d, n, &t0, &t1);
        for (int64_t h = 0; h < H; h++) {
            const int64_t sb = (n * H + h) * KV;
            for (int64_t i = 0; i < KV; i++) S[i] = x->s0 ? x->s0[sb + i] : 0.0;
            for (int64_t t = t0; t < t1; t++) {
                if ((t - t0) % SEG == 0) memcpy(ck + ((t - t0) / SEG) * KV, S, (size_t)KV * 8);
                step_fwd(&c, t, h, S, S2, r->o + (t * H + h) * V);
                memcpy(S, S2, (size_t)KV * 8);
            }
            memcpy(r->fs + sb, S, (size_t)KV * 8);
            if (!bwd) continue;
            for (int64_t i = 0; i < KV; i++) G[i] = x->dfs ? x->dfs[sb + i] : 0.0;
            for (int64_t sg = (t1 - t0 + SEG - 1) / SEG - 1; sg >= 0; sg--) {
                const int64_t ta = t0 + sg * SEG, tb = ta + SEG < t1 ? ta + SEG : t1;
                memcpy(Sb, ck + sg * KV, (size_t)KV * 8);
                for (int64_t t = ta; t < tb; t++)
                    step_fwd(&c, t, h, Sb + (t - ta) * KV, Sb + (t - ta + 1) * KV, NULL);
                for (int64_t t = tb - 1; t >= ta; t--)
                    step_bwd(&c, t, h, Sb + (t - ta) * KV, Sb + (t - ta + 1) * KV, G, r);
            }
            if (r->ds0) memcpy(r->ds0 + sb, G, (size_t)KV * 8);
        }
    }
    free(c.w); free(c.dw);
    free(ck); free(Sb); free(S); free(S2); free(G);
}

// ---------------------------------------------------------------------------------------------
// The library.

typedef struct fres {
    float * o, * fs, * dq, * dk, * dv, * da, * db, * dgk, * ds0;
} fres;

static void fres_alloc(const tdata * d, fres * f) {
    f->o = la_test_alloc((size_t)d->nv * 4);
    f->fs = la_test_alloc((size_t)d->ns * 4);
    f->dq = la_test_alloc((size_t)d->nq * 4);
    f->dk = la_test_alloc((size_t)d->nq * 4);
    f->dv = la_test_alloc((size_t)d->nv * 4);
    f->da = la_test_alloc((size_t)d->nq * 4);
    f->db = la_test_alloc((size_t)d->nq * 4);
    f->dgk = d->gk ? la_test_alloc((size_t)d->ng * 4) : NULL;
    f->ds0 = d->s0 ? la_test_alloc((size_t)d->ns * 4) : NULL;
}

static void fres_free(fres * f) {
    free(f->o); free(f->fs); free(f->dq); free(f->dk); free(f->dv); free(f->da); free(f->db);
    free(f->dgk); free(f->ds0);
}

static bool eqb(const float * a, const float * b, int64_t n) {
    return (!a && !b) || (a && b && memcmp(a, b, (size_t)n * 4) == 0);
}

static bool fres_equal(const tdata * d, const fres * a, const fres * b) {
    return eqb(a->o, b->o, d->nv) && eqb(a->fs, b->fs, d->ns) && eqb(a->dq, b->dq, d->nq) &&
           eqb(a->dk, b->dk, d->nq) && eqb(a->dv, b->dv, d->nv) && eqb(a->da, b->da, d->nq) &&
           eqb(a->db, b->db, d->nq) && eqb(a->dgk, b->dgk, d->ng) && eqb(a->ds0, b->ds0, d->ns);
}

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

static bool run_lib(const tdata * d, fres * f, const la_opts * op, int threads, const char * nm) {
    la_set_num_threads(threads);
    la_status s1 = lib_fwd(d, f->o, f->fs, d->s0, op);
    la_status s2 = lib_bwd(d, f, op);
    la_set_num_threads(0);
    return expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s: status forward %s, backward %s",
                  nm, la_status_str(s1), la_status_str(s2));
}

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
    CMP(da, d->nq, tol_bwd);
    CMP(db, d->nq, tol_bwd);
    CMP(dgk, d->ng, tol_bwd);
    CMP(ds0, d->ns, tol_bwd);
#undef CMP
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
// Forms x shapes.

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
// Finite differences.

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
    double * params[7] = { x.q, x.k, x.v, x.a, x.b, x.gk, x.s0 };
    double * grads[7] = { fd.dq, fd.dk, fd.dv, fd.da, fd.db, fd.dgk, fd.ds0 };
    const int64_t np[7] = { d.nq, d.nq, d.nv, d.nq, d.nq, d.ng, d.ns };
    fdctx fc = { &d, &x, &scr };
    la_fd_grads(7, params, np, grads, FD_STEP, fd_loss, &fc);
    char pre[120];
    snprintf(pre, sizeof pre, "%s/%s", OP_NAME[c->op], c->name);
    const char * names[7] = { "dq", "dk", "dv", "da", "db", "dgk", "dinitial_state" };
    const double * an[7] = { ana.dq, ana.dk, ana.dv, ana.da, ana.db, ana.dgk, ana.ds0 };
    for (int p = 0; p < 7; p++) {
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
            compare(&d, &f, &ana, nm, TOL_FWD, TOL_BWD, true);
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
    for (int64_t e = 0; e < nb; e++) beta[e] = (float)sigm(la_rng_normal(&r));
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
    for (size_t fi = 0; fi < NFORMS; fi++) {
        char nm[240];
        form_name(nm, sizeof nm, nm_of[kind], FORMS[fi]);
        la_opts o = la_test_opts(FORMS[fi].form, FORMS[fi].C, 0, NULL, 0);
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
        if (expect(s[0] == LA_STATUS_OK && s[1] == LA_STATUS_OK && s[2] == LA_STATUS_OK &&
                       s[3] == LA_STATUS_OK, "%s: status %s %s %s %s", nm, la_status_str(s[0]),
                   la_status_str(s[1]), la_status_str(s[2]), la_status_str(s[3]))) {
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
            rel_ff(n2, o1, o2, nv, TOL_ID_FWD);
            snprintf(n2, sizeof n2, "%s final_state", nm);
            rel_ff(n2, f1, f2, ns, TOL_ID_FWD);
            snprintf(n2, sizeof n2, "%s dq", nm);
            rel_ff(n2, dq1, dq2, nq, TOL_ID_BWD);
            snprintf(n2, sizeof n2, "%s dk", nm);
            rel_f(n2, dk1, mk, nq, TOL_ID_BWD);
            snprintf(n2, sizeof n2, "%s dv", nm);
            rel_f(n2, dv1, mv, nv, TOL_ID_BWD);
            snprintf(n2, sizeof n2, "%s dbeta", nm);
            rel_f(n2, db1, mb, nb, TOL_ID_BWD);
            if (GK) {
                snprintf(n2, sizeof n2, "%s dg", nm);
                rel_f(n2, dg1, mg, nb * GK, TOL_ID_BWD);
            }
            snprintf(n2, sizeof n2, "%s dinitial_state", nm);
            rel_ff(n2, ds1, ds2, ns, TOL_ID_BWD);
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
    if (tol_fwd < 0) {
        expect(fres_equal(d, x, y), "%s: results differ", nm);
        return;
    }
    char n2[300];
#define CMPF(field, n, tol)                                                \
    do {                                                                   \
        if (x->field && y->field) {                                        \
            snprintf(n2, sizeof n2, "%s %s", nm, #field);                  \
            rel_ff(n2, x->field, y->field, n, tol);                        \
        }                                                                  \
    } while (0)
    CMPF(o, d->nv, tol_fwd);
    CMPF(fs, d->ns, tol_fwd);
    CMPF(dq, d->nq, tol_bwd);
    CMPF(dk, d->nq, tol_bwd);
    CMPF(dv, d->nv, tol_bwd);
    CMPF(da, d->nq, tol_bwd);
    CMPF(db, d->nq, tol_bwd);
    CMPF(dgk, d->ng, tol_bwd);
    CMPF(ds0, d->ns, tol_bwd);
#undef CMPF
}

// #10: rwkv7(r, w, k, v, a, b) = dplr(q = r, gk = w) with scale 1; rwkv7's default scale is
// 1.0 (every form), dplr's and iplr's K^-1/2; iplr = dplr(gk = NULL) = dplr(gk = 0).
static void identity_rwkv7_scales(void) {
    la_rng r;
    la_rng_seed(&r, 70);
    tcase c = { "id", OP_RWKV7, 2, 70, 2, 16, 8, 0, {0}, "", 0 };
    tdata rw;
    make_data(&c, &rw, &r);
    tdata dp = rw;
    dp.op = OP_DPLR;
    const float inv_sqrt_k = (float)(1.0 / sqrt((double)c.K));
    for (size_t fi = 0; fi < NFORMS; fi++) {
        la_opts o0 = la_test_opts(FORMS[fi].form, FORMS[fi].C, 0, NULL, 0);
        la_opts o1 = o0, os = o0, oh = o0;
        o1.scale = 1.0f;
        os.scale = inv_sqrt_k;
        oh.scale = 0.5f;
        fres a, b;
        fres_alloc(&rw, &a);
        fres_alloc(&rw, &b);
        char nm[200];
        form_name(nm, sizeof nm, "identity rwkv7 (default scale) == dplr(q=r, gk=w, scale 1)",
                  FORMS[fi]);
        if (run_lib(&rw, &a, &o0, 1, nm) && run_lib(&dp, &b, &o1, 1, nm))
            same_results(&rw, &a, &b, nm, TOL_ID_FWD, TOL_ID_BWD);
        form_name(nm, sizeof nm, "rwkv7 default scale == explicit 1.0", FORMS[fi]);
        if (run_lib(&rw, &b, &o1, 1, nm)) same_results(&rw, &a, &b, nm, -1, -1);
        form_name(nm, sizeof nm, "identity rwkv7 == dplr(q=r, gk=w), scale 0.5", FORMS[fi]);
        if (run_lib(&rw, &a, &oh, 1, nm) && run_lib(&dp, &b, &oh, 1, nm))
            same_results(&rw, &a, &b, nm, TOL_ID_FWD, TOL_ID_BWD);
        form_name(nm, sizeof nm, "dplr default scale == K^-1/2", FORMS[fi]);
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
    for (size_t fi = 0; fi < NFORMS; fi++) {
        la_opts o = la_test_opts(FORMS[fi].form, FORMS[fi].C, 0, NULL, 0);
        fres a, b, z;
        fres_alloc(&ip, &a);
        fres_alloc(&ip, &b);
        fres_alloc(&dz, &z);
        char nm[200];
        form_name(nm, sizeof nm, "identity iplr == dplr(gk=NULL)", FORMS[fi]);
        if (run_lib(&ip, &a, &o, 1, nm) && run_lib(&dn, &b, &o, 1, nm))
            same_results(&ip, &a, &b, nm, TOL_ID_FWD, TOL_ID_BWD);
        form_name(nm, sizeof nm, "identity iplr == dplr(gk=0)", FORMS[fi]);
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
// Chaining law, decode steps, in-place states.

static void split_case(op_kind op, const char * spec, form_c fc, int64_t T, int64_t t,
                       uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "split", op, 1, T, 2, 8, 6, 0, {0}, spec, 0 };
    tdata d;
    make_data(&c, &d, &r);
    din x = to_f64(&d);
    oset ref;
    oset_alloc(&d, &ref);
    oracle(&d, &x, &ref, false);
    la_opts o = opts_for(&d, fc.form, fc.C);
    const int64_t H = c.H, K = c.K, V = c.V;
    float * o1 = la_test_alloc((size_t)d.nv * 4), * f1 = la_test_alloc((size_t)d.ns * 4);
    float * os = la_test_alloc((size_t)d.nv * 4), * ms = la_test_alloc((size_t)d.ns * 4);
    float * fs = la_test_alloc((size_t)d.ns * 4);
    tdata d1 = d, d2 = d;
    d1.sh.T = t;
    d2.sh.T = T - t;
    d2.q = d.q + t * H * K;
    d2.k = d.k + t * H * K;
    d2.a = d.a + t * H * K;
    d2.b = d.b + t * H * K;
    d2.gk = d.gk ? d.gk + t * H * K : NULL;
    d2.v = d.v + t * H * V;
    la_status s0 = lib_fwd(&d, o1, f1, d.s0, &o);
    la_status s1 = lib_fwd(&d1, os, ms, d.s0, &o);
    la_status s2 = lib_fwd(&d2, os + t * H * V, fs, ms, &o);
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

static void decode_case(op_kind op, const char * spec, form_c fc, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    const int64_t B = 2, T = 20;
    tcase c = { "decode", op, B, T, 2, 8, 6, 0, {0}, spec, 0 };
    tdata d;
    make_data(&c, &d, &r);
    const int64_t HK = c.H * c.K, HVV = c.H * c.V;
    la_opts o = opts_for(&d, fc.form, fc.C);
    float * o1 = la_test_alloc((size_t)d.nv * 4), * f1 = la_test_alloc((size_t)d.ns * 4);
    la_status st = lib_fwd(&d, o1, f1, d.s0, &o);
    float * state = la_test_alloc((size_t)d.ns * 4), * od = la_test_alloc((size_t)d.nv * 4);
    memcpy(state, d.s0, (size_t)d.ns * 4);
    tdata s = d;
    s.sh.T = 1;
    float * buf[5];
    const float * src[5] = { d.q, d.k, d.a, d.b, d.gk };
    for (int i = 0; i < 5; i++) buf[i] = la_test_alloc((size_t)(B * HK) * 4);
    s.q = buf[0]; s.k = buf[1]; s.a = buf[2]; s.b = buf[3]; s.gk = d.gk ? buf[4] : NULL;
    s.v = la_test_alloc((size_t)(B * HVV) * 4);
    float * ot = la_test_alloc((size_t)(B * HVV) * 4);
    bool ok = st == LA_STATUS_OK;
    for (int64_t t = 0; t < T && ok; t++) {
        for (int64_t b = 0; b < B; b++) {
            const int64_t row = b * T + t;
            for (int i = 0; i < 5; i++)
                if (src[i]) memcpy(buf[i] + b * HK, src[i] + row * HK, (size_t)HK * 4);
            memcpy(s.v + b * HVV, d.v + row * HVV, (size_t)HVV * 4);
        }
        ok = lib_fwd(&s, ot, state, state, &o) == LA_STATUS_OK;
        for (int64_t b = 0; b < B; b++)
            memcpy(od + (b * T + t) * HVV, ot + b * HVV, (size_t)HVV * 4);
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
    for (int i = 0; i < 5; i++) free(buf[i]);
    free(s.v); free(ot); free(o1); free(f1); free(state); free(od);
    free_data(&d);
}

static void inplace_case(op_kind op, const char * spec, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "inplace", op, 1, 0, 2, 6, 7, 5, {5, 0, 70, 1, 0}, spec, 0 };
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
        const int64_t KVH = c.H * c.K * c.V;
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
    tcase c = { "ws", op, 2, 45, 2, 8, 5, 0, {0}, spec, 0 };
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
        ow.work = bf + 1;
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
                   eqb(a.da, b.da, d.nq) && eqb(a.db, b.db, d.nq) && eqb(a.dgk, b.dgk, d.ng),
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
    la_rng_seed(&r, 80);
    for (int op = 0; op < 3; op++) {
        tcase c = { "api", (op_kind)op, 2, 10, 2, 8, 5, 0, {0}, "", 0 };
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
            const char * fn = la_form_str(of.form);
            snprintf(nm, sizeof nm, "%s/%s NULL o", OP_NAME[op], fn);
            want(lib_fwd(&d, NULL, f.fs, d.s0, &of), LA_STATUS_INVALID_ARG, nm);
            tdata dn = d;
            dn.a = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL a", OP_NAME[op], fn);
            want(lib_fwd(&dn, f.o, f.fs, d.s0, &of), LA_STATUS_INVALID_ARG, nm);
            dn = d;
            dn.b = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL b", OP_NAME[op], fn);
            want(lib_fwd(&dn, f.o, f.fs, d.s0, &of), LA_STATUS_INVALID_ARG, nm);
            dn = d;
            dn.q = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL q", OP_NAME[op], fn);
            want(lib_fwd(&dn, f.o, f.fs, d.s0, &of), LA_STATUS_INVALID_ARG, nm);
            fres fn2 = f;
            fn2.da = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL da", OP_NAME[op], fn);
            want(lib_bwd(&d, &fn2, &of), LA_STATUS_INVALID_ARG, nm);
            fn2 = f;
            fn2.db = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL db", OP_NAME[op], fn);
            want(lib_bwd(&d, &fn2, &of), LA_STATUS_INVALID_ARG, nm);
            dn = d;
            dn.dout = NULL;
            snprintf(nm, sizeof nm, "%s/%s NULL dout", OP_NAME[op], fn);
            want(lib_bwd(&dn, &f, &of), LA_STATUS_INVALID_ARG, nm);
        }
        tdata bad = d;
        bad.sh.HV = 2 * c.H;
        want_both(&bad, &o, LA_STATUS_SHAPE, "HV = 2H (no grouped value heads)");
        bad.sh.HV = c.H;
        want_both(&bad, &o, LA_STATUS_OK, "HV = H given explicitly");
        bad = d;
        bad.sh.K = 0;
        want_both(&bad, &o, LA_STATUS_SHAPE, "K = 0");
        la_opts ob = o;
        ob.chunk_size = 300;
        want_both(&d, &ob, LA_STATUS_INVALID_ARG, "chunk_size 300");
        int64_t cu[3] = { 0, 4, 10 };
        ob = o;
        ob.cu_seqlens = cu;
        ob.n_seqs = 2;
        want_both(&d, &ob, LA_STATUS_CU_SEQLENS, "cu_seqlens with B = 2");
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
            want(lib_bwd(&d, &fg, &o), LA_STATUS_INVALID_ARG, nm);
        }
        if (op == OP_DPLR) {
            tdata ng = d;
            ng.gk = NULL;
            fres fg = f;
            want(lib_bwd(&ng, &fg, &o), LA_STATUS_INVALID_ARG, "dplr dgk without gk");
            fg.dgk = NULL;
            want(lib_bwd(&ng, &fg, &o), LA_STATUS_OK, "dplr without gk and dgk");
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
    tcase c = { "long", op, 1, 100000, 1, 16, 16, 0, {0}, spec, 0 };
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
                   all_finite(f.dk, d.nq) && all_finite(f.dv, d.nv) && all_finite(f.da, d.nq) &&
                   all_finite(f.db, d.nq) && (!f.dgk || all_finite(f.dgk, d.ng)),
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
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);

    const tcase fdc[] = {
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
    for (size_t i = 0; i < sizeof fdc / sizeof fdc[0]; i++) fd_case(&fdc[i], 200 + i);

    identity_case(ID_DELTA, 60);
    identity_case(ID_KDA, 61);
    identity_case(ID_GDN, 62);
    identity_rwkv7_scales();

    const char * spec[3] = { "g:logsig", "m:delta", "" };
    const form_c chain_forms[] = { { LA_FORM_REF, 0 }, { LA_FORM_RECURRENT, 0 },
                                   { LA_FORM_CHUNK, 64 }, { LA_FORM_CHUNK, 16 },
                                   { LA_FORM_CHUNK, 24 } };
    for (int op = 0; op < 3; op++)
        for (size_t fi = 0; fi < sizeof chain_forms / sizeof chain_forms[0]; fi++) {
            split_case((op_kind)op, spec[op], chain_forms[fi], 100, 37, 300 + op);
            split_case((op_kind)op, spec[op], chain_forms[fi], 128, 64, 310 + op);
            split_case((op_kind)op, spec[op], chain_forms[fi], 10, 1, 320 + op);
        }
    for (int op = 0; op < 3; op++) {
        for (size_t fi = 0; fi < 3; fi++)
            decode_case((op_kind)op, spec[op], chain_forms[fi], 330 + op);
        inplace_case((op_kind)op, spec[op], 340 + op);
        workspace_case((op_kind)op, spec[op], 350 + op);
    }
    api_checks();

    long_case(OP_DPLR, "m:kda g:logsig", 400);
    long_case(OP_DPLR, "g:mix", 401);
    long_case(OP_IPLR, "m:delta", 402);
    long_case(OP_RWKV7, "", 403);
    return finish();
}
