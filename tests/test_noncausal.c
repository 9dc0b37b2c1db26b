// Non-causal (bidirectional) linear_attn and simple_gla: every form (ref, recurrent, chunk with
// C = 64, 16, 5), on 1 and 2 threads, forward and backward, against an independent float64
// oracle written here (the quadratic definition and its hand-derived backward); the oracle's
// backward against central finite differences of its forward (q, k, v, g), and the float forms'
// backward against those finite differences; the documented equivalences (simple_gla with g = 0
// = linear_attn without normalisation; non-causal = causal pass + anti-causal pass - diagonal,
// forward and backward, built from la_simple_gla_forward/backward on the sequence and on its time
// reversal); caller-owned workspaces; bitwise determinism across thread counts; argument errors.
//
//   linear_attn:  o_t = s sum_j (q_t . k_j) v_j   (normalize: / (s q_t . sum_j k_j + 1e-10))
//   simple_gla:   o_t = s sum_j D_tj (q_t . k_j) v_j,
//                 D_tj = exp(G_t - G_j) (j <= t), exp(G_j - G_t) (j > t),  G = cumsum(g)
//
// Inputs: q, k ~ N(0, 0.5^2) per entry; with normalize the positive feature map elu(x) + 1 is
// applied to them (as test_linear_attn), so every denominator is a sum of positive terms. Gates:
// logsigmoid(N(0, 1)); g_gamma in {-0.05, -0.5, -2}; and a stress pattern of -16 on 40 of every
// 64 tokens (la_fill_gate_tail: cumulative log decays near -640 inside a chunk).
//
// Tolerances, |got - ref| <= TOL * (max|ref| + |ref|) elementwise (la_check_rel), as
// test_simple_gla (the causal kernels these mirror):
//   TOL_FWD = 2e-5 (o): float32 sums of up to T K terms (measured worst 6.6e-7 of max|ref|);
//   TOL_BWD = 5e-5 (dq, dk, dv, dg): sums over T tokens again, and dg a suffix sum of
//             differences (measured worst 1.8e-6);
//   TOL_FD  = 1e-6: the oracle's backward against central differences, step 1e-6, float64;
//   TOL_EQ  = 2e-5 / 5e-5 for the equivalences, whose references are float32 results.
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FWD 2e-5
#define TOL_BWD 5e-5
#define TOL_FD  1e-6
#define FD_STEP 1e-6
#define NORM_EPS 1e-10

enum { GATE_NONE, GATE_G, GATE_GAMMA, GATE_TAIL, GATE_ZERO };

typedef struct tcase {
    const char * name;
    bool         linear;         // linear_attn (else simple_gla)
    int64_t      B, T, H, K, V;
    int          nseq;
    int64_t      lens[8];
    int          gate;           // simple_gla: GATE_*
    bool         normalize;      // linear_attn
    float        scale;          // 0 = default K^-1/2
    bool         no_grads;       // compare o only (see the T = 1 case in main)
} tcase;

typedef struct tdata {
    const tcase * c;
    la_shape sh;
    int64_t  N, nq, nv, ng;
    int64_t  cu[9];
    bool     varlen;
    double   scale;
    float *  q, * k, * v, * g, * gamma, * dout;
} tdata;

static void make_data(const tcase * c, tdata * d, la_rng * r) {
    memset(d, 0, sizeof(*d));
    d->c = c;
    d->sh = (la_shape){ c->B, c->T, c->H, c->K, c->V };
    d->N = c->B;
    if (c->nseq > 0) {
        d->N = c->nseq;
        d->sh.T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    const int64_t rows = d->sh.B * d->sh.T;
    d->nq = rows * c->H * c->K;
    d->nv = rows * c->H * c->V;
    d->ng = rows * c->H;
    d->scale = c->scale != 0.0f ? (double)c->scale : 1.0 / sqrt((double)c->K);
    d->q = la_new_normal(r, d->nq, 0.5);
    d->k = la_new_normal(r, d->nq, 0.5);
    if (c->normalize)
        for (int64_t i = 0; i < d->nq; i++) {
            d->q[i] = d->q[i] > 0 ? d->q[i] + 1.0f : expf(d->q[i]);
            d->k[i] = d->k[i] > 0 ? d->k[i] + 1.0f : expf(d->k[i]);
        }
    d->v = la_new_normal(r, d->nv, 1.0);
    d->dout = la_new_normal(r, d->nv, 1.0);
    if (c->gate == GATE_G || c->gate == GATE_TAIL || c->gate == GATE_ZERO) {
        d->g = la_test_alloc((size_t)d->ng * 4);
        if (c->gate == GATE_G) la_fill_logsigmoid(r, d->g, d->ng);
        if (c->gate == GATE_TAIL) la_fill_gate_tail(r, d->g, d->ng, 1, c->H, d->sh.T);
    }
    if (c->gate == GATE_GAMMA) {
        d->gamma = la_test_alloc((size_t)c->H * 4);
        const float gm[3] = { -0.05f, -0.5f, -2.0f };
        for (int64_t h = 0; h < c->H; h++) d->gamma[h] = gm[h % 3];
    }
}

static void free_data(tdata * d) {
    free(d->q); free(d->k); free(d->v); free(d->g); free(d->gamma); free(d->dout);
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C) {
    return la_test_opts(form, C, d->c->scale, d->varlen ? d->cu : NULL, d->N);
}

// ---------------------------------------------------------------------------------------------
// The float64 oracle. With n_t = s sum_j D_tj (q_t . k_j) v_j, d_t = s q_t . z + 1e-10
// (z = sum_j k_j; 1 and no eps without normalize), o_t = n_t / d_t:
//   dn_t = do_t / d_t ;  dd_t = -(do_t . n_t) / d_t^2
//   dq_t = s sum_j D_tj (dn_t . v_j) k_j + s dd_t z
//   dk_j = s sum_t D_tj (dn_t . v_j) q_t + s sum_t dd_t q_t
//   dv_j = s sum_t D_tj (q_t . k_j) dn_t
//   dL/dG_m = sum over pairs of P_tj d(log D_tj)/dG_m,  P_tj = s D_tj (q_t . k_j)(dn_t . v_j),
//   with log D_tj = G_t - G_j (j <= t), G_j - G_t (j > t);  dg_i = sum_{m >= i} dL/dG_m.

static void oracle(const tdata * d, const double * q, const double * k, const double * v,
                   const double * g, const double * dout, double * o, double * dq, double * dk,
                   double * dv, double * dg) {
    const int64_t H = d->sh.H, K = d->sh.K, V = d->sh.V;
    const bool norm = d->c->normalize;
    const double s = d->scale;
    int64_t maxlen = 1;
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        la_seq_range(d->varlen ? d->cu : NULL, d->sh.T, n, &t0, &t1);
        if (t1 - t0 > maxlen) maxlen = t1 - t0;
    }
    double * G = la_test_alloc((size_t)maxlen * 8), * dG = la_test_alloc((size_t)maxlen * 8);
    double * den = la_test_alloc((size_t)maxlen * 8), * dd = la_test_alloc((size_t)maxlen * 8);
    double * nn = la_test_alloc((size_t)(maxlen * V) * 8);
    double * dn = la_test_alloc((size_t)(maxlen * V) * 8);
    double * z = la_test_alloc((size_t)K * 8), * sq = la_test_alloc((size_t)K * 8);
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        la_seq_range(d->varlen ? d->cu : NULL, d->sh.T, n, &t0, &t1);
        const int64_t L = t1 - t0;
        for (int64_t h = 0; h < H; h++) {
            double acc = 0;
            for (int64_t t = 0; t < L; t++) {
                acc += g ? g[(t0 + t) * H + h] : d->gamma ? (double)d->gamma[h] : 0.0;
                G[t] = acc;
            }
            const bool gated = g || d->gamma;
#define QQ(t) (q + ((t0 + (t)) * H + h) * K)
#define KK(t) (k + ((t0 + (t)) * H + h) * K)
#define VV(t) (v + ((t0 + (t)) * H + h) * V)
#define DEC(t, j) (!gated ? 1.0 : (j) <= (t) ? exp(G[t] - G[j]) : exp(G[j] - G[t]))
            for (int64_t i = 0; i < K; i++) z[i] = 0;
            for (int64_t j = 0; j < L; j++)
                for (int64_t i = 0; i < K; i++) z[i] += KK(j)[i];
            for (int64_t t = 0; t < L; t++) {
                double qz = 0;
                for (int64_t i = 0; i < K; i++) qz += QQ(t)[i] * z[i];
                den[t] = norm ? s * qz + NORM_EPS : 1.0;
                for (int64_t e = 0; e < V; e++) nn[t * V + e] = 0;
                for (int64_t j = 0; j < L; j++) {
                    double qk = 0;
                    for (int64_t i = 0; i < K; i++) qk += QQ(t)[i] * KK(j)[i];
                    const double w = s * DEC(t, j) * qk;
                    for (int64_t e = 0; e < V; e++) nn[t * V + e] += w * VV(j)[e];
                }
                for (int64_t e = 0; e < V; e++)
                    o[((t0 + t) * H + h) * V + e] = nn[t * V + e] / den[t];
            }
            if (!dq) continue;
            for (int64_t t = 0; t < L; t++) {
                const double * dot = dout + ((t0 + t) * H + h) * V;
                double dno = 0;
                for (int64_t e = 0; e < V; e++) {
                    dn[t * V + e] = dot[e] / den[t];
                    dno += dot[e] * nn[t * V + e];
                }
                dd[t] = norm ? -dno / (den[t] * den[t]) : 0.0;
                dG[t] = 0;
            }
            for (int64_t i = 0; i < K; i++) sq[i] = 0;
            for (int64_t t = 0; t < L; t++)
                for (int64_t i = 0; i < K; i++) sq[i] += s * dd[t] * QQ(t)[i];
            for (int64_t t = 0; t < L; t++) {
                double * dqt = dq + ((t0 + t) * H + h) * K;
                for (int64_t i = 0; i < K; i++) dqt[i] = s * dd[t] * z[i];
            }
            for (int64_t j = 0; j < L; j++) {
                double * dkj = dk + ((t0 + j) * H + h) * K, * dvj = dv + ((t0 + j) * H + h) * V;
                for (int64_t i = 0; i < K; i++) dkj[i] = sq[i];
                for (int64_t e = 0; e < V; e++) dvj[e] = 0;
            }
            for (int64_t t = 0; t < L; t++)
                for (int64_t j = 0; j < L; j++) {
                    double qk = 0, dnv = 0;
                    for (int64_t i = 0; i < K; i++) qk += QQ(t)[i] * KK(j)[i];
                    for (int64_t e = 0; e < V; e++) dnv += dn[t * V + e] * VV(j)[e];
                    const double D = DEC(t, j);
                    double * dqt = dq + ((t0 + t) * H + h) * K;
                    double * dkj = dk + ((t0 + j) * H + h) * K, * dvj = dv + ((t0 + j) * H + h) * V;
                    for (int64_t i = 0; i < K; i++) {
                        dqt[i] += s * D * dnv * KK(j)[i];
                        dkj[i] += s * D * dnv * QQ(t)[i];
                    }
                    for (int64_t e = 0; e < V; e++) dvj[e] += s * D * qk * dn[t * V + e];
                    const double P = s * D * qk * dnv;
                    if (j < t) { dG[t] += P; dG[j] -= P; }
                    if (j > t) { dG[t] -= P; dG[j] += P; }
                }
            if (dg) {
                double suf = 0;
                for (int64_t t = L - 1; t >= 0; t--) {
                    suf += dG[t];
                    dg[(t0 + t) * H + h] = suf;
                }
            }
#undef QQ
#undef KK
#undef VV
#undef DEC
        }
    }
    free(G); free(dG); free(den); free(dd); free(nn); free(dn); free(z); free(sq);
}

typedef struct refset { double * o, * dq, * dk, * dv, * dg; } refset;

static void ref_alloc(const tdata * d, refset * r) {
    r->o = la_test_alloc(d->nv * 8);
    r->dq = la_test_alloc(d->nq * 8);
    r->dk = la_test_alloc(d->nq * 8);
    r->dv = la_test_alloc(d->nv * 8);
    r->dg = la_test_alloc(d->ng * 8);
}
static void ref_free(refset * r) { free(r->o); free(r->dq); free(r->dk); free(r->dv); free(r->dg); }

typedef struct din { double * q, * k, * v, * g, * dout; } din;

static din to_f64(const tdata * d) {
    din x = { la_to_f64(d->q, d->nq), la_to_f64(d->k, d->nq), la_to_f64(d->v, d->nv),
              la_to_f64(d->g, d->ng), la_to_f64(d->dout, d->nv) };
    return x;
}
static void din_free(din * x) { free(x->q); free(x->k); free(x->v); free(x->g); free(x->dout); }

static void ref_run(const tdata * d, const din * x, refset * r) {
    oracle(d, x->q, x->k, x->v, x->g, x->dout, r->o, r->dq, r->dk, r->dv, x->g ? r->dg : NULL);
}

// ---------------------------------------------------------------------------------------------
// The float forms.

typedef struct fres { float * o, * dq, * dk, * dv, * dg; } fres;

static void fres_alloc(const tdata * d, fres * f) {
    f->o = la_test_alloc(d->nv * 4);
    f->dq = la_test_alloc(d->nq * 4);
    f->dk = la_test_alloc(d->nq * 4);
    f->dv = la_test_alloc(d->nv * 4);
    f->dg = la_test_alloc(d->ng * 4);
}
static void fres_free(fres * f) { free(f->o); free(f->dq); free(f->dk); free(f->dv); free(f->dg); }
static bool fres_equal(const tdata * d, const fres * a, const fres * b) {
    return memcmp(a->o, b->o, d->nv * 4) == 0 && memcmp(a->dq, b->dq, d->nq * 4) == 0 &&
           memcmp(a->dk, b->dk, d->nq * 4) == 0 && memcmp(a->dv, b->dv, d->nv * 4) == 0 &&
           memcmp(a->dg, b->dg, d->ng * 4) == 0;
}

static la_status op_fwd(const tdata * d, float * o, const la_opts * op) {
    if (d->c->linear)
        return la_linear_attn_noncausal_forward(o, d->q, d->k, d->v, d->c->normalize, d->sh, op);
    return la_simple_gla_noncausal_forward(o, d->q, d->k, d->v, d->g, d->gamma, d->sh, op);
}
static la_status op_bwd(const tdata * d, fres * f, const la_opts * op) {
    if (d->c->linear)
        return la_linear_attn_noncausal_backward(f->dq, f->dk, f->dv, d->dout, d->q, d->k, d->v,
                                                 d->c->normalize, d->sh, op);
    return la_simple_gla_noncausal_backward(f->dq, f->dk, f->dv, d->g ? f->dg : NULL, d->dout,
                                            d->q, d->k, d->v, d->g, d->gamma, d->sh, op);
}
static size_t op_ws(const tdata * d, bool backward, const la_opts * op) {
    return d->c->linear ? la_linear_attn_noncausal_workspace_size(backward, d->sh, op)
                        : la_simple_gla_noncausal_workspace_size(backward, d->sh, op);
}

static void run_form(const tdata * d, la_form form, int32_t C, int threads, fres * f,
                     const char * nm) {
    la_set_num_threads(threads);
    la_opts o = opts_for(d, form, C);
    la_status st = op_fwd(d, f->o, &o);
    la_check(st == LA_STATUS_OK, "%s forward status %s", nm, la_status_str(st));
    st = op_bwd(d, f, &o);
    la_check(st == LA_STATUS_OK, "%s backward status %s", nm, la_status_str(st));
    la_set_num_threads(0);
}

static void compare(const tdata * d, const fres * f, const refset * r, const char * nm) {
    char n2[240];
    snprintf(n2, sizeof n2, "%s o", nm);
    la_check_rel(n2, f->o, r->o, d->nv, TOL_FWD);
    if (d->c->no_grads) return;
    snprintf(n2, sizeof n2, "%s dq", nm);
    la_check_rel(n2, f->dq, r->dq, d->nq, TOL_BWD);
    snprintf(n2, sizeof n2, "%s dk", nm);
    la_check_rel(n2, f->dk, r->dk, d->nq, TOL_BWD);
    snprintf(n2, sizeof n2, "%s dv", nm);
    la_check_rel(n2, f->dv, r->dv, d->nv, TOL_BWD);
    if (d->g) {
        snprintf(n2, sizeof n2, "%s dg", nm);
        la_check_rel(n2, f->dg, r->dg, d->ng, TOL_BWD);
    }
}

static const struct { la_form form; int32_t C; } FORMS[] = {
    { LA_FORM_REF, 0 }, { LA_FORM_RECURRENT, 0 },
    { LA_FORM_CHUNK, 64 }, { LA_FORM_CHUNK, 16 }, { LA_FORM_CHUNK, 5 },
};
#define NFORMS (sizeof FORMS / sizeof FORMS[0])

static void check_all_forms(const tdata * d, const refset * r, const char * pre) {
    for (size_t fi = 0; fi < NFORMS; fi++) {
        fres f1, f2;
        fres_alloc(d, &f1);
        fres_alloc(d, &f2);
        char nm[160];
        snprintf(nm, sizeof nm, "%s/%s/C%d", pre, la_form_str(FORMS[fi].form), FORMS[fi].C);
        run_form(d, FORMS[fi].form, FORMS[fi].C, 1, &f1, nm);
        compare(d, &f1, r, nm);
        run_form(d, FORMS[fi].form, FORMS[fi].C, 2, &f2, nm);
        la_check(fres_equal(d, &f1, &f2), "%s: bitwise identical for 1 and 2 threads", nm);
        fres_free(&f1);
        fres_free(&f2);
    }
}

static void run_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    din x = to_f64(&d);
    refset ref;
    ref_alloc(&d, &ref);
    ref_run(&d, &x, &ref);
    check_all_forms(&d, &ref, c->name);
    ref_free(&ref);
    din_free(&x);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Finite differences of the oracle, L = sum(o * do), in q, k, v and g.

typedef struct fdctx { const tdata * d; const din * x; double * o; } fdctx;

static double loss(void * ctx) {
    const fdctx * fc = ctx;
    const din * x = fc->x;
    oracle(fc->d, x->q, x->k, x->v, x->g, NULL, fc->o, NULL, NULL, NULL, NULL);
    return la_loss_dot(0, fc->o, x->dout, fc->d->nv);
}

static void fd_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    din x = to_f64(&d);
    refset ana, fd;
    ref_alloc(&d, &ana);
    ref_alloc(&d, &fd);
    ref_run(&d, &x, &ana);
    memcpy(fd.o, ana.o, d.nv * 8);
    double * scr = la_test_alloc(d.nv * 8);
    fdctx fc = { &d, &x, scr };
    double * params[4] = { x.q, x.k, x.v, x.g };
    double * grads[4] = { fd.dq, fd.dk, fd.dv, fd.dg };
    const int64_t np[4] = { d.nq, d.nq, d.nv, d.ng };
    la_fd_grads(4, params, np, grads, FD_STEP, loss, &fc);
    const char * gn[4] = { "dq", "dk", "dv", "dg" };
    double * ag[4] = { ana.dq, ana.dk, ana.dv, ana.dg };
    char nm[160];
    for (int p = 0; p < (x.g ? 4 : 3); p++) {
        snprintf(nm, sizeof nm, "%s oracle backward vs FD %s", c->name, gn[p]);
        la_check_rel_as_f32(nm, ag[p], grads[p], np[p], TOL_FD);
    }
    snprintf(nm, sizeof nm, "%s[fd]", c->name);
    check_all_forms(&d, &fd, nm);
    free(scr);
    ref_free(&ana);
    ref_free(&fd);
    din_free(&x);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Equivalences.

// simple_gla with g = 0 equals linear_attn (normalize off), forward and backward, every form.
static void equiv_zero_gate(uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    const tcase cg = { "eq_g0", false, 1, 0, 2, 12, 20, 3, {70, 0, 33}, GATE_ZERO, false, 0 };
    const tcase cl = { "eq_lin", true, 1, 0, 2, 12, 20, 3, {70, 0, 33}, GATE_NONE, false, 0 };
    tdata dg, dl;
    make_data(&cg, &dg, &r);
    la_rng_seed(&r, seed);
    make_data(&cl, &dl, &r);
    for (size_t fi = 0; fi < NFORMS; fi++) {
        fres a, b;
        fres_alloc(&dg, &a);
        fres_alloc(&dl, &b);
        char nm[160];
        snprintf(nm, sizeof nm, "noncausal simple_gla(g = 0) = linear_attn /%s/C%d",
                 la_form_str(FORMS[fi].form), FORMS[fi].C);
        run_form(&dg, FORMS[fi].form, FORMS[fi].C, 1, &a, nm);
        run_form(&dl, FORMS[fi].form, FORMS[fi].C, 1, &b, nm);
        double * ro = la_to_f64(b.o, dl.nv), * rq = la_to_f64(b.dq, dl.nq);
        double * rk = la_to_f64(b.dk, dl.nq), * rv = la_to_f64(b.dv, dl.nv);
        char n2[200];
        snprintf(n2, sizeof n2, "%s o", nm);
        la_check_rel(n2, a.o, ro, dl.nv, TOL_FWD);
        snprintf(n2, sizeof n2, "%s dq", nm);
        la_check_rel(n2, a.dq, rq, dl.nq, TOL_BWD);
        snprintf(n2, sizeof n2, "%s dk", nm);
        la_check_rel(n2, a.dk, rk, dl.nq, TOL_BWD);
        snprintf(n2, sizeof n2, "%s dv", nm);
        la_check_rel(n2, a.dv, rv, dl.nv, TOL_BWD);
        free(ro); free(rq); free(rk); free(rv);
        fres_free(&a);
        fres_free(&b);
    }
    free_data(&dg);
    free_data(&dl);
}

// Non-causal = causal pass + anti-causal pass - diagonal. The anti-causal pass (j >= t) is causal
// simple_gla on the time-reversed sequence with gates g'_tau = g_{T - tau} (tau >= 1; g'_0 = 0):
// sum_{i = sigma+1}^{tau} g'_i = sum of g over (t, j] for t = T-1-tau, j = T-1-sigma. The diagonal
// is s (q_t . k_t) v_t. Backward: the same sum of the three parts' gradients (dg of the reversed
// pass maps back through the shift).
static void equiv_split(int gate, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    const tcase c = { gate == GATE_G ? "eq_split_g" : "eq_split_gamma", false, 2, 77, 2, 16, 24,
                      0, {0}, gate, false, 0.3f };
    tdata d;
    make_data(&c, &d, &r);
    const int64_t B = d.sh.B, T = d.sh.T, H = d.sh.H, K = d.sh.K, V = d.sh.V;
    // Time reversal of each batch row; gates shifted by one.
    float * qr = la_test_alloc(d.nq * 4), * kr = la_test_alloc(d.nq * 4);
    float * vr = la_test_alloc(d.nv * 4), * dor = la_test_alloc(d.nv * 4);
    float * gr = la_test_alloc(d.ng * 4);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const int64_t src = b * T + t, dst = b * T + (T - 1 - t);
            memcpy(qr + dst * H * K, d.q + src * H * K, (size_t)(H * K) * 4);
            memcpy(kr + dst * H * K, d.k + src * H * K, (size_t)(H * K) * 4);
            memcpy(vr + dst * H * V, d.v + src * H * V, (size_t)(H * V) * 4);
            memcpy(dor + dst * H * V, d.dout + src * H * V, (size_t)(H * V) * 4);
            for (int64_t h = 0; h < H; h++) {
                const float gt = d.g ? d.g[src * H + h] : d.gamma[h];
                // g'_tau = g_{T - tau}: token t feeds tau = T - t, which exists for t >= 1.
                if (t >= 1) gr[(b * T + (T - t)) * H + h] = gt;
            }
        }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) gr[(b * T) * H + h] = 0.0f;
    la_opts o = la_test_opts(LA_FORM_CHUNK, 0, c.scale, NULL, 0);
    fres cz, az;  // causal, anti-causal (reversed)
    fres_alloc(&d, &cz);
    fres_alloc(&d, &az);
    la_status s1 = la_simple_gla_forward(cz.o, NULL, d.q, d.k, d.v, d.g, d.gamma, NULL, d.sh, &o);
    la_status s2 = la_simple_gla_forward(az.o, NULL, qr, kr, vr, gr, NULL, NULL, d.sh, &o);
    la_status s3 = la_simple_gla_backward(cz.dq, cz.dk, cz.dv, d.g ? cz.dg : NULL, NULL, d.dout,
                                          NULL, d.q, d.k, d.v, d.g, d.gamma, NULL, d.sh, &o);
    la_status s4 = la_simple_gla_backward(az.dq, az.dk, az.dv, az.dg, NULL, dor, NULL, qr, kr, vr,
                                          gr, NULL, NULL, d.sh, &o);
    la_check(s1 == 0 && s2 == 0 && s3 == 0 && s4 == 0, "%s: causal passes status", c.name);
    double * eo = la_test_alloc(d.nv * 8), * eq = la_test_alloc(d.nq * 8);
    double * ek = la_test_alloc(d.nq * 8), * ev = la_test_alloc(d.nv * 8);
    double * eg = la_test_alloc(d.ng * 8);
    const double s = (double)c.scale;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t rt = (b * T + t) * H + h, rr = (b * T + (T - 1 - t)) * H + h;
                double qk = 0, dov = 0;
                for (int64_t i = 0; i < K; i++)
                    qk += (double)d.q[rt * K + i] * (double)d.k[rt * K + i];
                for (int64_t j = 0; j < V; j++)
                    dov += (double)d.dout[rt * V + j] * (double)d.v[rt * V + j];
                for (int64_t j = 0; j < V; j++) {
                    eo[rt * V + j] = (double)cz.o[rt * V + j] + (double)az.o[rr * V + j] -
                                     s * qk * (double)d.v[rt * V + j];
                    ev[rt * V + j] = (double)cz.dv[rt * V + j] + (double)az.dv[rr * V + j] -
                                     s * qk * (double)d.dout[rt * V + j];
                }
                for (int64_t i = 0; i < K; i++) {
                    eq[rt * K + i] = (double)cz.dq[rt * K + i] + (double)az.dq[rr * K + i] -
                                     s * dov * (double)d.k[rt * K + i];
                    ek[rt * K + i] = (double)cz.dk[rt * K + i] + (double)az.dk[rr * K + i] -
                                     s * dov * (double)d.q[rt * K + i];
                }
                if (d.g)  // g_t feeds g'_{T - t} (t >= 1); g_0 enters neither pass's D
                    eg[rt] = (double)cz.dg[rt] +
                             (t >= 1 ? (double)az.dg[(b * T + (T - t)) * H + h] : 0.0);
            }
    for (la_form form = LA_FORM_CHUNK; form <= LA_FORM_REF; form++) {
        la_opts on = la_test_opts(form, 0, c.scale, NULL, 0);
        fres f;
        fres_alloc(&d, &f);
        la_status st = op_fwd(&d, f.o, &on), st2 = op_bwd(&d, &f, &on);
        char nm[160], n2[200];
        snprintf(nm, sizeof nm, "%s/%s: non-causal = causal + anti-causal - diagonal", c.name,
                 la_form_str(form));
        la_check(st == 0 && st2 == 0, "%s: status", nm);
        snprintf(n2, sizeof n2, "%s o", nm);
        la_check_rel(n2, f.o, eo, d.nv, TOL_FWD);
        snprintf(n2, sizeof n2, "%s dq", nm);
        la_check_rel(n2, f.dq, eq, d.nq, TOL_BWD);
        snprintf(n2, sizeof n2, "%s dk", nm);
        la_check_rel(n2, f.dk, ek, d.nq, TOL_BWD);
        snprintf(n2, sizeof n2, "%s dv", nm);
        la_check_rel(n2, f.dv, ev, d.nv, TOL_BWD);
        if (d.g) {
            snprintf(n2, sizeof n2, "%s dg", nm);
            la_check_rel(n2, f.dg, eg, d.ng, TOL_BWD);
        }
        fres_free(&f);
    }
    free(qr); free(kr); free(vr); free(dor); free(gr);
    free(eo); free(eq); free(ek); free(ev); free(eg);
    fres_free(&cz);
    fres_free(&az);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Caller-owned workspace and argument errors.

static void api_checks(bool linear) {
    la_rng r;
    la_rng_seed(&r, linear ? 21 : 22);
    const tcase c = { linear ? "api_linear_attn" : "api_simple_gla", linear, 2, 45, 2, 8, 5, 0,
                      {0}, linear ? GATE_NONE : GATE_G, linear, 0 };
    tdata d;
    make_data(&c, &d, &r);
    for (size_t fi = 0; fi < NFORMS; fi++) {
        la_opts o = opts_for(&d, FORMS[fi].form, FORMS[fi].C);
        const char * fn = la_form_str(FORMS[fi].form);
        const int C = FORMS[fi].C;
        fres a, b;
        fres_alloc(&d, &a);
        fres_alloc(&d, &b);
        run_form(&d, FORMS[fi].form, FORMS[fi].C, 1, &a, c.name);
        la_set_num_threads(1);
        const size_t wf = op_ws(&d, false, &o), wb = op_ws(&d, true, &o);
        void * wsf = malloc(wf + 1), * wsb = malloc(wb + 1);
        la_opts ow = o;
        ow.work = (char *)wsf + 1;  // any alignment
        ow.work_size = wf;
        la_status s1 = op_fwd(&d, b.o, &ow);
        ow.work = (char *)wsb + 1;
        ow.work_size = wb;
        la_status s2 = op_bwd(&d, &b, &ow);
        la_check(wf > 64 && wb > 64 && s1 == 0 && s2 == 0 && fres_equal(&d, &a, &b),
                 "%s/%s/C%d: caller-owned workspace (fwd %zu, bwd %zu bytes) gives identical "
                 "results", c.name, fn, C, wf, wb);
        ow.work = wsf;
        ow.work_size = wf - 1;
        s1 = op_fwd(&d, b.o, &ow);
        ow.work = wsb;
        ow.work_size = wb - 1;
        s2 = op_bwd(&d, &b, &ow);
        la_check(s1 == LA_STATUS_WORKSPACE && s2 == LA_STATUS_WORKSPACE,
                 "%s/%s/C%d: workspace one byte short rejected (%s, %s)", c.name, fn, C,
                 la_status_str(s1), la_status_str(s2));
        la_set_num_threads(0);
        free(wsf);
        free(wsb);
        fres_free(&a);
        fres_free(&b);
    }
    la_opts o = opts_for(&d, LA_FORM_CHUNK, 0);
    fres b;
    fres_alloc(&d, &b);
    la_status st;
    st = linear ? la_linear_attn_noncausal_forward(NULL, d.q, d.k, d.v, true, d.sh, &o)
                : la_simple_gla_noncausal_forward(NULL, d.q, d.k, d.v, d.g, NULL, d.sh, &o);
    la_check(st == LA_STATUS_INVALID_ARG, "%s: NULL o rejected", c.name);
    st = linear ? la_linear_attn_noncausal_forward(b.o, NULL, d.k, d.v, true, d.sh, &o)
                : la_simple_gla_noncausal_forward(b.o, NULL, d.k, d.v, d.g, NULL, d.sh, &o);
    la_check(st == LA_STATUS_INVALID_ARG, "%s: NULL q rejected", c.name);
    st = linear ? la_linear_attn_noncausal_backward(b.dq, b.dk, NULL, d.dout, d.q, d.k, d.v, true,
                                                    d.sh, &o)
                : la_simple_gla_noncausal_backward(b.dq, b.dk, NULL, b.dg, d.dout, d.q, d.k, d.v,
                                                   d.g, NULL, d.sh, &o);
    la_check(st == LA_STATUS_INVALID_ARG, "%s: NULL dv rejected", c.name);
    if (!linear) {
        float gam[2] = { -0.1f, -0.2f };
        la_check(la_simple_gla_noncausal_forward(b.o, d.q, d.k, d.v, d.g, gam, d.sh, &o) ==
                     LA_STATUS_INVALID_ARG, "simple_gla: g and g_gamma together rejected");
        la_check(la_simple_gla_noncausal_backward(b.dq, b.dk, b.dv, NULL, d.dout, d.q, d.k, d.v,
                                                  d.g, NULL, d.sh, &o) == LA_STATUS_INVALID_ARG,
                 "simple_gla: g without dg rejected");
        la_check(la_simple_gla_noncausal_backward(b.dq, b.dk, b.dv, b.dg, d.dout, d.q, d.k, d.v,
                                                  NULL, gam, d.sh, &o) == LA_STATUS_INVALID_ARG,
                 "simple_gla: dg without g rejected");
        la_check(la_simple_gla_noncausal_forward(b.o, d.q, d.k, d.v, NULL, NULL, d.sh, &o) ==
                     LA_STATUS_OK, "simple_gla: no gate accepted");
    }
    la_shape bad = d.sh;
    bad.V = 0;
    tdata db = d;
    db.sh = bad;
    la_check(op_fwd(&db, b.o, &o) == LA_STATUS_SHAPE, "%s: V = 0 rejected", c.name);
    la_check(op_ws(&db, true, &o) == 0, "%s: workspace query of a bad shape is 0", c.name);
    db.sh = d.sh;
    db.sh.HV = 1;
    la_check(op_fwd(&db, b.o, &o) == LA_STATUS_SHAPE, "%s: HV != H rejected", c.name);
    la_opts ob = o;
    ob.form = (la_form)7;
    la_check(op_fwd(&d, b.o, &ob) == LA_STATUS_INVALID_ARG, "%s: unknown form rejected", c.name);
    ob = o;
    ob.allow_neg_eigval = true;
    la_check(op_fwd(&d, b.o, &ob) == LA_STATUS_INVALID_ARG, "%s: delta-family flag rejected",
             c.name);
    const int64_t cu[3] = { 0, 30, 20 };
    tdata dv = d;
    dv.sh.B = 1;
    dv.sh.T = 20;
    ob = o;
    ob.cu_seqlens = cu;
    ob.n_seqs = 2;
    la_check(op_fwd(&dv, b.o, &ob) == LA_STATUS_CU_SEQLENS, "%s: decreasing cu_seqlens rejected",
             c.name);
    fres_free(&b);
    free_data(&d);
}

int main(void) {
    const tcase cases[] = {
        // name             linear B  T    H  K   V   nseq lens                    gate        norm   scale
        { "sgla_g_T65",     false, 2, 65,  2, 16, 40, 0, {0},                    GATE_G,     false, 0 },
        { "sgla_g_T1",      false, 3, 1,   2, 8,  8,  0, {0},                    GATE_G,     false, 0 },
        { "sgla_gamma_K24", false, 1, 130, 3, 24, 40, 0, {0},                    GATE_GAMMA, false, 0.3f },
        { "sgla_nogate",    false, 2, 70,  2, 16, 12, 0, {0},                    GATE_NONE,  false, 0 },
        { "sgla_varlen",    false, 1, 0,   2, 16, 40, 5, {0, 1, 130, 5, 64},     GATE_G,     false, 0 },
        { "sgla_tail",      false, 1, 150, 2, 8,  8,  0, {0},                    GATE_TAIL,  false, 0 },
        { "lin_norm_T65",   true,  2, 65,  2, 16, 40, 0, {0},                    GATE_NONE,  true,  0 },
        { "lin_T65",        true,  2, 65,  2, 24, 40, 0, {0},                    GATE_NONE,  false, 0.3f },
        { "lin_T1",         true,  3, 1,   2, 8,  8,  0, {0},                    GATE_NONE,  false, 0 },
        { "lin_norm_T1",    true,  3, 1,   2, 8,  8,  0, {0},                    GATE_NONE,  true,  0, true },
        { "lin_norm_varlen",true,  1, 0,   2, 16, 40, 5, {0, 1, 130, 5, 64},     GATE_NONE,  true,  0 },
        { "lin_varlen",     true,  1, 0,   3, 7,  9,  4, {70, 1, 0, 3},          GATE_NONE,  false, 1.0f },
    };
    // lin_norm_T1: with one token, o = v (s q.k)/(s q.k + 1e-10) and the q, k gradients are
    // O(1e-10) remainders, pure float32 rounding: o is compared, the backward must still run
    // and agree across thread counts.
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);

    const tcase fdc[] = {
        { "fd_sgla_g",      false, 2, 7,   2, 4,  3,  0, {0},                    GATE_G,     false, 0 },
        { "fd_sgla_varlen", false, 1, 0,   2, 3,  2,  4, {4, 0, 1, 9},           GATE_G,     false, 0.7f },
        { "fd_sgla_gamma",  false, 1, 11,  2, 4,  3,  0, {0},                    GATE_GAMMA, false, 0 },
        { "fd_lin_norm",    true,  2, 7,   2, 4,  3,  0, {0},                    GATE_NONE,  true,  0 },
        { "fd_lin_varlen",  true,  1, 0,   1, 5,  4,  3, {6, 1, 0},              GATE_NONE,  true,  0.5f },
    };
    for (size_t i = 0; i < sizeof fdc / sizeof fdc[0]; i++) fd_case(&fdc[i], 200 + i);

    equiv_zero_gate(300);
    equiv_split(GATE_G, 301);
    equiv_split(GATE_GAMMA, 302);
    api_checks(true);
    api_checks(false);
    return la_test_summary();
}
