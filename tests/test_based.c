// based and rebased (OPS.md 2.14-2.15) and the feature maps (ALGORITHMS.md 7).
//
// based / rebased: every form (ref, recurrent, chunk with C = 64, 16, 5), on 1 and 2 threads,
// forward and backward, against an independent float64 oracle written here (the quadratic
// definition and its hand-derived backward); the oracle's backward against central finite
// differences of its forward, and the float forms' backward against those finite differences;
// the documented equivalences (based = linear attention with normalisation on the TAYLOR2
// features of q' = a q, k' = b k with ab = s sqrt F; rebased = the same on QUADRATIC features
// with |ab| = |s|), forward and backward through la_linear_attn and la_fmap; caller-owned
// workspaces; bitwise determinism across thread counts; argument errors.
//
//   s_ti = s q_t . k_i ;  phi = 1 + s + s^2/2 (based), s^2 (rebased)
//   o_t = sum_{i<=t} phi(s_ti) v_i / (sum_{i<=t} phi(s_ti) + eps)   (use_norm; else the numerator)
//
// Feature maps: each kind's forward and backward against a float64 oracle, its backward
// (dx, and Hedgehog's dW and dbias) against finite differences, the kernel identities
// phi(x).phi(y) of TAYLOR2 and QUADRATIC, the accumulate flag, thread-count determinism and the
// argument rules.
//
// Inputs: q, k = 0.4 + 0.6 N(0, 1) per entry, so the scores s q.k are O(1) and mostly away from
// 0: rebased's weights s^2 then do not all vanish at once (a row whose whole denominator is
// near eps is ill-conditioned in any precision).
//
// Tolerances, |got - ref| <= TOL * (max|ref| + |ref|) elementwise (la_check_rel):
//   TOL_FWD = 2e-5 (o): float32 rounding of sums of up to T positive-weighted terms, a division
//             (measured worst: 8e-7 of max|ref|, based's recurrent form on 1 + F + F(F+1)/2
//             features);
//   TOL_BWD = 5e-5 (dq, dk, dv): products of two such sums, summed over T rows again
//             (measured worst: 1.9e-6; 4.4e-6 in the equivalences, whose reference is itself
//             float32);
//   TOL_FWD_RQ = 1e-4, TOL_BWD_RQ = 1e-3 (rebased's recurrent form): it evaluates s^2 as
//             phi(q').phi(k'), a sum of F(F+1)/2 products whose rounding is relative to
//             (sum_i |q_i k_i|)^2, not (q.k)^2; in the first rows of a sequence with use_norm the
//             gradient grows like 1/|s| where s^2 is comparable to eps (measured worst: 9.2e-6
//             (o) and 1.3e-4 (dk) of max|ref|, fd_rebased);
//   TOL_EQ  = 2e-5 for o in the equivalences (based's eps 1e-6 against linear_attn's 1e-10 moves
//             o by at most 1e-6 / den <= 2e-6 since den >= 0.5; rebased is run with eps 1e-10);
//   TOL_FD  = 1e-6: the oracle's analytic backward against central differences with step
//             1e-6 in float64 (FD error ~1e-9; the comparison rounds to float32; measured 5e-8);
//   TOL_MAP = 2e-6 (feature-map forward: one or two roundings per output, measured 2e-7), and
//             5 TOL_MAP for the maps' backward against finite differences (measured 7e-7).
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FWD 2e-5
#define TOL_BWD 5e-5
#define TOL_FWD_RQ 1e-4
#define TOL_BWD_RQ 1e-3
#define TOL_EQ  2e-5
#define TOL_FD  1e-6
#define TOL_MAP 2e-6
#define FD_STEP 1e-6
#define BASED_EPS 1e-6

typedef struct tcase {
    const char * name;
    bool         rebased;
    int64_t      B, T, H, F, V;
    int          nseq;           // > 0: varlen with these lengths (B = 1)
    int64_t      lens[8];
    bool         use_norm;
    float        scale;          // 0 = default F^-1/2
    float        eps;            // rebased only
    bool         no_grads;       // compare o only (see the T = 1 cases in main)
} tcase;

typedef struct tdata {
    const tcase * c;
    la_shape sh;
    int64_t  N, nq, nv;
    int64_t  cu[9];
    bool     varlen;
    double   scale, eps;
    float *  q, * k, * v, * dout;
} tdata;

static void make_data(const tcase * c, tdata * d, la_rng * r) {
    memset(d, 0, sizeof(*d));
    d->c = c;
    d->sh = (la_shape){ c->B, c->T, c->H, c->F, c->V };
    d->N = c->B;
    if (c->nseq > 0) {
        d->N = c->nseq;
        d->sh.T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    const int64_t ntok = d->sh.B * d->sh.T * d->sh.H;
    d->nq = ntok * c->F;
    d->nv = ntok * c->V;
    d->scale = c->scale != 0.0f ? (double)c->scale : 1.0 / sqrt((double)c->F);
    d->eps = c->rebased ? (double)c->eps : BASED_EPS;
    d->q = la_new_normal(r, d->nq, 0.6);
    d->k = la_new_normal(r, d->nq, 0.6);
    for (int64_t i = 0; i < d->nq; i++) {
        d->q[i] += 0.4f;
        d->k[i] += 0.4f;
    }
    d->v = la_new_normal(r, d->nv, 1.0);
    d->dout = la_new_normal(r, d->nv, 1.0);
}

static void free_data(tdata * d) {
    free(d->q); free(d->k); free(d->v); free(d->dout);
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C) {
    return la_test_opts(form, C, d->c->scale, d->varlen ? d->cu : NULL, d->N);
}

// ---------------------------------------------------------------------------------------------
// The float64 oracle: the definition, and its backward
//   dnum_t = do_t / d_t, delta_t = -(do_t . num_t) / d_t^2 (use_norm off: do_t, 0),
//   ds_ti = (dnum_t . v_i + delta_t) phi'(s_ti), dq_t = s sum_i ds_ti k_i,
//   dk_i = s sum_t ds_ti q_t, dv_i = sum_t phi(s_ti) dnum_t.

static double phi_of(bool rebased, double s) { return rebased ? s * s : 1.0 + s + 0.5 * s * s; }
static double dphi_of(bool rebased, double s) { return rebased ? 2.0 * s : 1.0 + s; }

static void oracle(const tdata * d, const double * q, const double * k, const double * v,
                   const double * dout, double * o, double * dq, double * dk, double * dv) {
    const int64_t H = d->sh.H, F = d->sh.K, V = d->sh.V;
    const bool rb = d->c->rebased, norm = d->c->use_norm;
    double * num = la_test_alloc((size_t)V * 8), * dnum = la_test_alloc((size_t)V * 8);
    if (dq) {
        memset(dk, 0, (size_t)d->nq * 8);
        memset(dv, 0, (size_t)d->nv * 8);
    }
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        la_seq_range(d->varlen ? d->cu : NULL, d->sh.T, n, &t0, &t1);
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = t0; t < t1; t++) {
                const double * qt = q + (t * H + h) * F;
                double den = 0;
                for (int64_t j = 0; j < V; j++) num[j] = 0;
                for (int64_t i = t0; i <= t; i++) {
                    double s = 0;
                    for (int64_t c = 0; c < F; c++) s += qt[c] * k[(i * H + h) * F + c];
                    const double p = phi_of(rb, d->scale * s);
                    den += p;
                    for (int64_t j = 0; j < V; j++) num[j] += p * v[(i * H + h) * V + j];
                }
                const double dd = den + d->eps;
                for (int64_t j = 0; j < V; j++)
                    o[(t * H + h) * V + j] = norm ? num[j] / dd : num[j];
                if (!dq) continue;
                const double * dot = dout + (t * H + h) * V;
                double delta = 0, dn = 0;
                for (int64_t j = 0; j < V; j++) {
                    dnum[j] = norm ? dot[j] / dd : dot[j];
                    dn += dot[j] * num[j];
                }
                if (norm) delta = -dn / (dd * dd);
                for (int64_t c = 0; c < F; c++) dq[(t * H + h) * F + c] = 0;
                for (int64_t i = t0; i <= t; i++) {
                    const double * ki = k + (i * H + h) * F, * vi = v + (i * H + h) * V;
                    double s = 0, dp = delta;
                    for (int64_t c = 0; c < F; c++) s += qt[c] * ki[c];
                    s *= d->scale;
                    for (int64_t j = 0; j < V; j++) dp += dnum[j] * vi[j];
                    const double ds = dp * dphi_of(rb, s) * d->scale, p = phi_of(rb, s);
                    for (int64_t c = 0; c < F; c++) {
                        dq[(t * H + h) * F + c] += ds * ki[c];
                        dk[(i * H + h) * F + c] += ds * qt[c];
                    }
                    for (int64_t j = 0; j < V; j++) dv[(i * H + h) * V + j] += p * dnum[j];
                }
            }
    }
    free(num); free(dnum);
}

typedef struct refset { double * o, * dq, * dk, * dv; } refset;

static void ref_alloc(const tdata * d, refset * r) {
    r->o = la_test_alloc(d->nv * 8);
    r->dq = la_test_alloc(d->nq * 8);
    r->dk = la_test_alloc(d->nq * 8);
    r->dv = la_test_alloc(d->nv * 8);
}
static void ref_free(refset * r) { free(r->o); free(r->dq); free(r->dk); free(r->dv); }

typedef struct din { double * q, * k, * v, * dout; } din;

static din to_f64(const tdata * d) {
    din x = { la_to_f64(d->q, d->nq), la_to_f64(d->k, d->nq), la_to_f64(d->v, d->nv),
              la_to_f64(d->dout, d->nv) };
    return x;
}
static void din_free(din * x) { free(x->q); free(x->k); free(x->v); free(x->dout); }

// ---------------------------------------------------------------------------------------------
// The float forms.

typedef struct fres { float * o, * dq, * dk, * dv; } fres;

static void fres_alloc(const tdata * d, fres * f) {
    f->o = la_test_alloc(d->nv * 4);
    f->dq = la_test_alloc(d->nq * 4);
    f->dk = la_test_alloc(d->nq * 4);
    f->dv = la_test_alloc(d->nv * 4);
}
static void fres_free(fres * f) { free(f->o); free(f->dq); free(f->dk); free(f->dv); }
static bool fres_equal(const tdata * d, const fres * a, const fres * b) {
    return memcmp(a->o, b->o, d->nv * 4) == 0 && memcmp(a->dq, b->dq, d->nq * 4) == 0 &&
           memcmp(a->dk, b->dk, d->nq * 4) == 0 && memcmp(a->dv, b->dv, d->nv * 4) == 0;
}

static la_status op_fwd(const tdata * d, float * o, const la_opts * op) {
    if (d->c->rebased)
        return la_rebased_forward(o, d->q, d->k, d->v, d->c->eps, d->c->use_norm, d->sh, op);
    return la_based_forward(o, d->q, d->k, d->v, d->c->use_norm, d->sh, op);
}
static la_status op_bwd(const tdata * d, fres * f, const la_opts * op) {
    if (d->c->rebased)
        return la_rebased_backward(f->dq, f->dk, f->dv, d->dout, d->q, d->k, d->v, d->c->eps,
                                   d->c->use_norm, d->sh, op);
    return la_based_backward(f->dq, f->dk, f->dv, d->dout, d->q, d->k, d->v, d->c->use_norm,
                             d->sh, op);
}
static size_t op_ws(const tdata * d, bool backward, const la_opts * op) {
    return d->c->rebased ? la_rebased_workspace_size(backward, d->sh, op)
                         : la_based_workspace_size(backward, d->sh, op);
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

static void compare(const tdata * d, const fres * f, const refset * r, const char * nm,
                    double tol_fwd, double tol_bwd) {
    char n2[240];
    snprintf(n2, sizeof n2, "%s o", nm);
    la_check_rel(n2, f->o, r->o, d->nv, tol_fwd);
    if (d->c->no_grads) return;
    snprintf(n2, sizeof n2, "%s dq", nm);
    la_check_rel(n2, f->dq, r->dq, d->nq, tol_bwd);
    snprintf(n2, sizeof n2, "%s dk", nm);
    la_check_rel(n2, f->dk, r->dk, d->nq, tol_bwd);
    snprintf(n2, sizeof n2, "%s dv", nm);
    la_check_rel(n2, f->dv, r->dv, d->nv, tol_bwd);
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
        const bool rq = d->c->rebased && FORMS[fi].form == LA_FORM_RECURRENT;
        compare(d, &f1, r, nm, rq ? TOL_FWD_RQ : TOL_FWD, rq ? TOL_BWD_RQ : TOL_BWD);
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
    oracle(&d, x.q, x.k, x.v, x.dout, ref.o, ref.dq, ref.dk, ref.dv);
    check_all_forms(&d, &ref, c->name);
    ref_free(&ref);
    din_free(&x);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Finite differences of the oracle, L = sum(o * do).

typedef struct fdctx { const tdata * d; const din * x; double * o; } fdctx;

static double loss(void * ctx) {
    const fdctx * fc = ctx;
    oracle(fc->d, fc->x->q, fc->x->k, fc->x->v, NULL, fc->o, NULL, NULL, NULL);
    return la_loss_dot(0, fc->o, fc->x->dout, fc->d->nv);
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
    oracle(&d, x.q, x.k, x.v, x.dout, ana.o, ana.dq, ana.dk, ana.dv);
    memcpy(fd.o, ana.o, d.nv * 8);
    double * scr = la_test_alloc(d.nv * 8);
    fdctx fc = { &d, &x, scr };
    double * params[3] = { x.q, x.k, x.v };
    double * grads[3] = { fd.dq, fd.dk, fd.dv };
    const int64_t np[3] = { d.nq, d.nq, d.nv };
    la_fd_grads(3, params, np, grads, FD_STEP, loss, &fc);
    const char * gn[3] = { "dq", "dk", "dv" };
    double * ag[3] = { ana.dq, ana.dk, ana.dv };
    char nm[160];
    for (int p = 0; p < 3; p++) {
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
// Equivalence: based (scale s) = linear_attn(normalize, scale 1) on TAYLOR2 features of
// q' = a q, k' = b k with a = sqrt(|s| sqrt F), b = sign(s) a (phi(q').phi(k') = 1 + ab q.k/sqrt F
// + (ab q.k)^2/(2F) = 1 + s q.k + (s q.k)^2/2); rebased = the same on QUADRATIC features with
// a = b = sqrt|s|. Forward, and backward chained through la_fmap_backward (dq = a dq', dk = b dk').
// use_norm off compares with linear_attn without normalisation.

static void equiv_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    const la_fmap map = c->rebased ? LA_FMAP_QUADRATIC : LA_FMAP_TAYLOR2;
    const int64_t F = c->F, D = la_fmap_dim(map, F), ntok = d.sh.B * d.sh.T * d.sh.H;
    const double as = fabs(d.scale);
    const double m = c->rebased ? sqrt(as) : sqrt(as * sqrt((double)F));
    const float ca = (float)m, cb = (float)(c->rebased || d.scale > 0 ? m : -m);
    float * qs = la_test_alloc(d.nq * 4), * ks = la_test_alloc(d.nq * 4);
    for (int64_t i = 0; i < d.nq; i++) {
        qs[i] = ca * d.q[i];
        ks[i] = cb * d.k[i];
    }
    float * fq = la_test_alloc((size_t)(ntok * D) * 4);
    float * fk = la_test_alloc((size_t)(ntok * D) * 4);
    la_status s1 = la_fmap_forward(fq, qs, NULL, NULL, map, d.sh.B * d.sh.T, d.sh.H, F);
    la_status s2 = la_fmap_forward(fk, ks, NULL, NULL, map, d.sh.B * d.sh.T, d.sh.H, F);
    la_shape fsh = d.sh;
    fsh.K = D;
    la_opts lo = la_test_opts(LA_FORM_CHUNK, 0, 1.0f, d.varlen ? d.cu : NULL, d.N);
    float * o_lin = la_test_alloc(d.nv * 4);
    la_status s3 = la_linear_attn_forward(o_lin, NULL, NULL, fq, fk, d.v, NULL, NULL,
                                          c->use_norm, fsh, &lo);
    // Backward: dphi(q'), dphi(k'), dv from linear_attn, then the feature maps.
    float * dfq = la_test_alloc((size_t)(ntok * D) * 4);
    float * dfk = la_test_alloc((size_t)(ntok * D) * 4);
    float * dv_lin = la_test_alloc(d.nv * 4);
    la_status s4 = la_linear_attn_backward(dfq, dfk, dv_lin, NULL, NULL, d.dout, NULL, NULL, fq,
                                           fk, d.v, NULL, NULL, c->use_norm, fsh, &lo);
    float * dq_lin = la_test_alloc(d.nq * 4), * dk_lin = la_test_alloc(d.nq * 4);
    la_status s5 = la_fmap_backward(dq_lin, NULL, NULL, dfq, qs, NULL, NULL, map,
                                    d.sh.B * d.sh.T, d.sh.H, F, false);
    la_status s6 = la_fmap_backward(dk_lin, NULL, NULL, dfk, ks, NULL, NULL, map,
                                    d.sh.B * d.sh.T, d.sh.H, F, false);
    for (int64_t i = 0; i < d.nq; i++) {
        dq_lin[i] *= ca;
        dk_lin[i] *= cb;
    }
    la_check(s1 == 0 && s2 == 0 && s3 == 0 && s4 == 0 && s5 == 0 && s6 == 0,
             "%s: feature maps and linear_attn status", c->name);
    double * ro = la_to_f64(o_lin, d.nv), * rdq = la_to_f64(dq_lin, d.nq);
    double * rdk = la_to_f64(dk_lin, d.nq), * rdv = la_to_f64(dv_lin, d.nv);
    for (la_form form = LA_FORM_CHUNK; form <= LA_FORM_REF; form++) {
        la_opts o = opts_for(&d, form, 0);
        fres f;
        fres_alloc(&d, &f);
        la_status st = op_fwd(&d, f.o, &o);
        la_status st2 = op_bwd(&d, &f, &o);
        char nm[200];
        snprintf(nm, sizeof nm, "%s/%s = linear_attn on %s features", c->name,
                 la_form_str(form), c->rebased ? "QUADRATIC" : "TAYLOR2");
        la_check(st == 0 && st2 == 0, "%s: status", nm);
        char n2[240];
        snprintf(n2, sizeof n2, "%s o", nm);
        la_check_rel(n2, f.o, ro, d.nv, TOL_EQ);
        snprintf(n2, sizeof n2, "%s dq", nm);
        la_check_rel(n2, f.dq, rdq, d.nq, TOL_BWD);
        snprintf(n2, sizeof n2, "%s dk", nm);
        la_check_rel(n2, f.dk, rdk, d.nq, TOL_BWD);
        snprintf(n2, sizeof n2, "%s dv", nm);
        la_check_rel(n2, f.dv, rdv, d.nv, TOL_BWD);
        fres_free(&f);
    }
    free(ro); free(rdq); free(rdk); free(rdv);
    free(qs); free(ks); free(fq); free(fk); free(o_lin); free(dfq); free(dfk); free(dv_lin);
    free(dq_lin); free(dk_lin);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Caller-owned workspace and argument errors.

static void api_checks(bool rebased) {
    la_rng r;
    la_rng_seed(&r, rebased ? 12 : 11);
    tcase c = { rebased ? "api_rebased" : "api_based", rebased, 2, 45, 2, 8, 5, 0, {0}, true, 0,
                1e-5f };
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
        la_check(wf > 64 && wb > 64 && s1 == 0 && s2 == 0 &&
                     fres_equal(&d, &a, &b),
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
    la_check(op_fwd(&d, b.o, &o) == LA_STATUS_OK, "%s: valid call accepted", c.name);
    la_status st;
    st = rebased ? la_rebased_forward(NULL, d.q, d.k, d.v, 1e-5f, true, d.sh, &o)
                 : la_based_forward(NULL, d.q, d.k, d.v, true, d.sh, &o);
    la_check(st == LA_STATUS_INVALID_ARG, "%s: NULL o rejected (%s)", c.name, la_status_str(st));
    st = rebased ? la_rebased_forward(b.o, d.q, NULL, d.v, 1e-5f, true, d.sh, &o)
                 : la_based_forward(b.o, d.q, NULL, d.v, true, d.sh, &o);
    la_check(st == LA_STATUS_INVALID_ARG, "%s: NULL k rejected (%s)", c.name, la_status_str(st));
    st = rebased ? la_rebased_backward(b.dq, NULL, b.dv, d.dout, d.q, d.k, d.v, 1e-5f, true,
                                       d.sh, &o)
                 : la_based_backward(b.dq, NULL, b.dv, d.dout, d.q, d.k, d.v, true, d.sh, &o);
    la_check(st == LA_STATUS_INVALID_ARG, "%s: NULL dk rejected (%s)", c.name, la_status_str(st));
    st = rebased ? la_rebased_backward(b.dq, b.dk, b.dv, NULL, d.q, d.k, d.v, 1e-5f, true, d.sh,
                                       &o)
                 : la_based_backward(b.dq, b.dk, b.dv, NULL, d.q, d.k, d.v, true, d.sh, &o);
    la_check(st == LA_STATUS_INVALID_ARG, "%s: NULL dout rejected (%s)", c.name,
             la_status_str(st));
    if (rebased) {
        la_check(la_rebased_forward(b.o, d.q, d.k, d.v, -1e-5f, true, d.sh, &o) ==
                     LA_STATUS_INVALID_ARG, "rebased: negative eps rejected");
        la_check(la_rebased_forward(b.o, d.q, d.k, d.v, NAN, true, d.sh, &o) ==
                     LA_STATUS_INVALID_ARG, "rebased: NaN eps rejected");
        la_check(la_rebased_forward(b.o, d.q, d.k, d.v, 0.0f, true, d.sh, &o) == LA_STATUS_OK,
                 "rebased: eps 0 accepted");
    }
    la_shape bad = d.sh;
    bad.K = 0;
    la_check(op_fwd(&(tdata){ .c = d.c, .sh = bad, .q = d.q, .k = d.k, .v = d.v }, b.o, &o) ==
                 LA_STATUS_SHAPE, "%s: F = 0 rejected", c.name);
    bad = d.sh;
    bad.HV = 3;
    la_check(op_fwd(&(tdata){ .c = d.c, .sh = bad, .q = d.q, .k = d.k, .v = d.v }, b.o, &o) ==
                 LA_STATUS_SHAPE, "%s: HV != H rejected", c.name);
    la_opts ob = o;
    ob.chunk_size = 300;
    la_check(op_fwd(&d, b.o, &ob) == LA_STATUS_INVALID_ARG, "%s: chunk_size 300 rejected",
             c.name);
    ob = o;
    ob.use_qk_l2norm_in_kernel = true;
    la_check(op_fwd(&d, b.o, &ob) == LA_STATUS_INVALID_ARG,
             "%s: the delta family's flags rejected", c.name);
    const int64_t cu[3] = { 0, 50, 45 };
    ob = o;
    ob.cu_seqlens = cu;
    ob.n_seqs = 2;
    la_check(op_fwd(&d, b.o, &ob) == LA_STATUS_CU_SEQLENS, "%s: cu_seqlens with B = 2 rejected",
             c.name);
    la_check(op_ws(&(tdata){ .c = d.c, .sh = bad }, false, &o) == 0,
             "%s: workspace query of a bad shape is 0", c.name);
    fres_free(&b);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Feature maps: float64 oracle.

static int64_t map_dim(la_fmap kind, int64_t F) {
    switch (kind) {
    case LA_FMAP_TAYLOR2: return 1 + F + F * (F + 1) / 2;
    case LA_FMAP_QUADRATIC: return F * (F + 1) / 2;
    case LA_FMAP_HEDGEHOG: return 2 * F;
    default: return F;
    }
}

// y (rows, H, D) from x (rows, H, F), written from the documented definitions.
static void map_oracle(la_fmap kind, const double * x, const double * W, const double * b,
                       double * y, int64_t rows, int64_t H, int64_t F) {
    const int64_t D = map_dim(kind, F);
    double * z = la_test_alloc((size_t)F * 8);
    for (int64_t e = 0; e < rows * H; e++) {
        const double * xe = x + e * F;
        double * ye = y + e * D;
        const int64_t h = e % H;
        int64_t p = 0;
        switch (kind) {
        case LA_FMAP_IDENTITY:
            for (int64_t i = 0; i < F; i++) ye[i] = xe[i];
            break;
        case LA_FMAP_ELU1:
            for (int64_t i = 0; i < F; i++) ye[i] = xe[i] > 0 ? xe[i] + 1 : exp(xe[i]);
            break;
        case LA_FMAP_RELU:
            for (int64_t i = 0; i < F; i++) ye[i] = xe[i] > 0 ? xe[i] : 0;
            break;
        case LA_FMAP_TAYLOR2:
            ye[p++] = 1;
            for (int64_t i = 0; i < F; i++) ye[p++] = xe[i] / pow((double)F, 0.25);
            for (int64_t i = 0; i < F; i++) ye[p++] = xe[i] * xe[i] / (sqrt(2.0) * sqrt((double)F));
            for (int64_t i = 0; i < F; i++)
                for (int64_t j = i + 1; j < F; j++) ye[p++] = xe[i] * xe[j] / sqrt((double)F);
            break;
        case LA_FMAP_QUADRATIC:
            for (int64_t i = 0; i < F; i++) ye[p++] = xe[i] * xe[i];
            for (int64_t i = 0; i < F; i++)
                for (int64_t j = i + 1; j < F; j++) ye[p++] = sqrt(2.0) * xe[i] * xe[j];
            break;
        case LA_FMAP_HEDGEHOG: {
            // fla: z = Linear(x); softmax(cat([2z, -2z]))
            double m = -(double)INFINITY, s = 0;
            for (int64_t i = 0; i < F; i++) {
                z[i] = b ? b[h * F + i] : 0;
                for (int64_t j = 0; j < F; j++) z[i] += W[(h * F + i) * F + j] * xe[j];
                m = fmax(m, fabs(2 * z[i]));
            }
            for (int64_t i = 0; i < F; i++) s += exp(2 * z[i] - m) + exp(-2 * z[i] - m);
            for (int64_t i = 0; i < F; i++) {
                ye[i] = exp(2 * z[i] - m) / s;
                ye[F + i] = exp(-2 * z[i] - m) / s;
            }
            break;
        }
        }
    }
    free(z);
}

typedef struct mapctx {
    la_fmap kind;
    const double * x, * W, * b, * dy;
    double * y;
    int64_t rows, H, F;
} mapctx;

static double map_loss(void * ctx) {
    const mapctx * m = ctx;
    map_oracle(m->kind, m->x, m->W, m->b, m->y, m->rows, m->H, m->F);
    return la_loss_dot(0, m->y, m->dy, m->rows * m->H * map_dim(m->kind, m->F));
}

static const char * map_name(la_fmap k) {
    static const char * n[] = { "IDENTITY", "ELU1", "RELU", "TAYLOR2", "QUADRATIC", "HEDGEHOG" };
    return n[k];
}

// Forward against the oracle, backward (dx, dW, dbias) against finite differences of it.
static void map_case(la_fmap kind, int64_t rows, int64_t H, int64_t F, bool with_bias,
                     uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    const int64_t D = la_fmap_dim(kind, F), nx = rows * H * F, ny = rows * H * D;
    const bool hh = kind == LA_FMAP_HEDGEHOG;
    float * x = la_new_normal(&r, nx, 1.0), * dy = la_new_normal(&r, ny, 1.0);
    float * W = NULL, * b = NULL;
    if (hh) {
        W = la_new_normal(&r, H * F * F, 0.4);
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < F; i++) W[(h * F + i) * F + i] += 1.0f;  // near identity
        if (with_bias) b = la_new_normal(&r, H * F, 0.3);
    }
    char nm[160];
    snprintf(nm, sizeof nm, "fmap %s rows=%lld H=%lld F=%lld%s", map_name(kind),
             (long long)rows, (long long)H, (long long)F, hh && !with_bias ? " nobias" : "");
    la_check(D == map_dim(kind, F), "%s: la_fmap_dim = %lld", nm, (long long)D);
    double * xd = la_to_f64(x, nx), * dyd = la_to_f64(dy, ny);
    double * Wd = la_to_f64(W, H * F * F), * bd = la_to_f64(b, H * F);
    double * yref = la_test_alloc((size_t)ny * 8);
    map_oracle(kind, xd, Wd, bd, yref, rows, H, F);
    float * y = la_test_alloc((size_t)ny * 4);
    la_status st = la_fmap_forward(y, x, W, b, kind, rows, H, F);
    la_check(st == LA_STATUS_OK, "%s: forward status", nm);
    char n2[220];
    snprintf(n2, sizeof n2, "%s forward", nm);
    la_check_rel(n2, y, yref, ny, TOL_MAP);
    // Finite differences of sum(y * dy) in x, W and b (b at 0 when there is none).
    double * bz = bd ? bd : la_test_alloc((size_t)(H * F) * 8);
    double * gx = la_test_alloc((size_t)nx * 8), * gW = la_test_alloc((size_t)(H * F * F) * 8);
    double * gb = la_test_alloc((size_t)(H * F) * 8), * scr = la_test_alloc((size_t)ny * 8);
    mapctx mc = { kind, xd, Wd, hh ? bz : NULL, dyd, scr, rows, H, F };
    double * params[3] = { xd, Wd, hh ? bz : NULL };
    double * grads[3] = { gx, gW, gb };
    const int64_t np[3] = { nx, H * F * F, H * F };
    la_fd_grads(3, params, np, grads, FD_STEP, map_loss, &mc);
    float * dx = la_test_alloc((size_t)nx * 4);
    float * dW = hh ? la_test_alloc((size_t)(H * F * F) * 4) : NULL;
    float * db = hh ? la_test_alloc((size_t)(H * F) * 4) : NULL;
    st = la_fmap_backward(dx, dW, db, dy, x, W, b, kind, rows, H, F, false);
    la_check(st == LA_STATUS_OK, "%s: backward status", nm);
    snprintf(n2, sizeof n2, "%s dx vs FD", nm);
    la_check_rel(n2, dx, gx, nx, TOL_MAP * 5);
    if (hh) {
        snprintf(n2, sizeof n2, "%s dW vs FD", nm);
        la_check_rel(n2, dW, gW, H * F * F, TOL_MAP * 5);
        snprintf(n2, sizeof n2, "%s dbias vs FD", nm);
        la_check_rel(n2, db, gb, H * F, TOL_MAP * 5);
        // dx alone is the same bits; accumulate adds onto what is there.
        float * dx2 = la_test_alloc((size_t)nx * 4);
        st = la_fmap_backward(dx2, NULL, NULL, dy, x, W, b, kind, rows, H, F, false);
        la_check(st == 0 && memcmp(dx, dx2, (size_t)nx * 4) == 0,
                 "%s: dx without parameter gradients is identical", nm);
        float * dW2 = la_new_normal(&r, H * F * F, 1.0), * db2 = la_new_normal(&r, H * F, 1.0);
        double * eW = la_to_f64(dW2, H * F * F), * eb = la_to_f64(db2, H * F);
        for (int64_t i = 0; i < H * F * F; i++) eW[i] += gW[i];
        for (int64_t i = 0; i < H * F; i++) eb[i] += gb[i];
        st = la_fmap_backward(dx2, dW2, db2, dy, x, W, b, kind, rows, H, F, true);
        la_check(st == LA_STATUS_OK, "%s: accumulate status", nm);
        snprintf(n2, sizeof n2, "%s accumulate dW = dW0 + grad", nm);
        la_check_rel(n2, dW2, eW, H * F * F, TOL_MAP * 5);
        snprintf(n2, sizeof n2, "%s accumulate dbias = db0 + grad", nm);
        la_check_rel(n2, db2, eb, H * F, TOL_MAP * 5);
        free(dx2); free(dW2); free(db2); free(eW); free(eb);
    }
    free(x); free(dy); free(W); free(b); free(xd); free(dyd); free(Wd); free(bd);
    if (!bd) free(bz);
    free(yref); free(y); free(gx); free(gW); free(gb); free(scr); free(dx); free(dW); free(db);
}

// phi(x).phi(y) = 1 + x.y/sqrt F + (x.y)^2/(2F) (TAYLOR2), (x.y)^2 (QUADRATIC).
static void map_kernel_identity(int64_t F, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    const int64_t rows = 20;
    float * x = la_new_normal(&r, rows * F, 1.0), * y = la_new_normal(&r, rows * F, 1.0);
    for (la_fmap kind = LA_FMAP_TAYLOR2; kind <= LA_FMAP_QUADRATIC; kind++) {
        const int64_t D = la_fmap_dim(kind, F);
        float * fx = la_test_alloc((size_t)(rows * D) * 4);
        float * fy = la_test_alloc((size_t)(rows * D) * 4);
        la_fmap_forward(fx, x, NULL, NULL, kind, rows, 1, F);
        la_fmap_forward(fy, y, NULL, NULL, kind, rows, 1, F);
        float * got = la_test_alloc((size_t)rows * 4);
        double * want = la_test_alloc((size_t)rows * 8);
        for (int64_t i = 0; i < rows; i++) {
            double g = 0, xy = 0;
            for (int64_t j = 0; j < D; j++) g += (double)fx[i * D + j] * (double)fy[i * D + j];
            for (int64_t j = 0; j < F; j++) xy += (double)x[i * F + j] * (double)y[i * F + j];
            got[i] = (float)g;
            want[i] = kind == LA_FMAP_TAYLOR2 ? 1 + xy / sqrt((double)F) + xy * xy / (2.0 * F)
                                              : xy * xy;
        }
        char nm[120];
        snprintf(nm, sizeof nm, "fmap %s F=%lld: phi(x).phi(y) kernel identity", map_name(kind),
                 (long long)F);
        la_check_rel(nm, got, want, rows, TOL_MAP * 2);
        free(fx); free(fy); free(got); free(want);
    }
    free(x); free(y);
}

// Thread-count determinism (Hedgehog's dW, db reductions) and argument rules.
static void map_api(void) {
    la_rng r;
    la_rng_seed(&r, 77);
    const int64_t rows = 300, H = 3, F = 8, D = 2 * F;
    float * x = la_new_normal(&r, rows * H * F, 1.0), * dy = la_new_normal(&r, rows * H * D, 1.0);
    float * W = la_new_normal(&r, H * F * F, 0.5), * b = la_new_normal(&r, H * F, 0.5);
    float * y1 = la_test_alloc((size_t)(rows * H * D) * 4);
    float * y2 = la_test_alloc((size_t)(rows * H * D) * 4);
    float * dx1 = la_test_alloc((size_t)(rows * H * F) * 4);
    float * dx2 = la_test_alloc((size_t)(rows * H * F) * 4);
    float * dW1 = la_test_alloc((size_t)(H * F * F) * 4);
    float * dW2 = la_test_alloc((size_t)(H * F * F) * 4);
    float * db1 = la_test_alloc((size_t)(H * F) * 4), * db2 = la_test_alloc((size_t)(H * F) * 4);
    la_set_num_threads(1);
    la_fmap_forward(y1, x, W, b, LA_FMAP_HEDGEHOG, rows, H, F);
    la_fmap_backward(dx1, dW1, db1, dy, x, W, b, LA_FMAP_HEDGEHOG, rows, H, F, false);
    la_set_num_threads(2);
    la_fmap_forward(y2, x, W, b, LA_FMAP_HEDGEHOG, rows, H, F);
    la_fmap_backward(dx2, dW2, db2, dy, x, W, b, LA_FMAP_HEDGEHOG, rows, H, F, false);
    la_set_num_threads(0);
    la_check(memcmp(y1, y2, (size_t)(rows * H * D) * 4) == 0 &&
                 memcmp(dx1, dx2, (size_t)(rows * H * F) * 4) == 0 &&
                 memcmp(dW1, dW2, (size_t)(H * F * F) * 4) == 0 &&
                 memcmp(db1, db2, (size_t)(H * F) * 4) == 0,
             "fmap HEDGEHOG rows=%lld: y, dx, dW, dbias bitwise identical for 1 and 2 threads",
             (long long)rows);
    // Identity W, no bias: y = softmax([2x, -2x]) (fla's initialisation).
    float * I = la_test_alloc((size_t)(H * F * F) * 4);
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < F; i++) I[(h * F + i) * F + i] = 1.0f;
    la_fmap_forward(y1, x, I, NULL, LA_FMAP_HEDGEHOG, 1, H, F);
    double * want = la_test_alloc((size_t)(H * D) * 8);
    for (int64_t h = 0; h < H; h++) {
        double s = 0;
        for (int64_t i = 0; i < F; i++) {
            const double xi = (double)x[h * F + i];
            s += exp(2.0 * xi) + exp(-2.0 * xi);
        }
        for (int64_t i = 0; i < F; i++) {
            const double xi = (double)x[h * F + i];
            want[h * D + i] = exp(2.0 * xi) / s;
            want[h * D + F + i] = exp(-2.0 * xi) / s;
        }
    }
    la_check_rel("fmap HEDGEHOG W = I: softmax([2x, -2x])", y1, want, H * D, TOL_MAP);
    // Argument rules.
    la_check(la_fmap_forward(y1, x, NULL, b, LA_FMAP_HEDGEHOG, rows, H, F) ==
                 LA_STATUS_INVALID_ARG, "fmap: HEDGEHOG without W rejected");
    la_check(la_fmap_forward(y1, x, W, NULL, LA_FMAP_TAYLOR2, rows, H, F) ==
                 LA_STATUS_INVALID_ARG, "fmap: W given to TAYLOR2 rejected");
    la_check(la_fmap_backward(dx1, dW1, NULL, dy, x, NULL, NULL, LA_FMAP_RELU, rows, H, F, false)
                 == LA_STATUS_INVALID_ARG, "fmap: dW asked of RELU rejected");
    la_check(la_fmap_forward(y1, x, NULL, NULL, LA_FMAP_RELU, rows, H, 0) == LA_STATUS_SHAPE,
             "fmap: F = 0 rejected");
    la_check(la_fmap_forward(y1, x, NULL, NULL, LA_FMAP_RELU, -1, H, F) == LA_STATUS_SHAPE,
             "fmap: rows < 0 rejected");
    la_check(la_fmap_forward(y1, x, NULL, NULL, (la_fmap)99, rows, H, F) == LA_STATUS_INVALID_ARG,
             "fmap: unknown kind rejected");
    la_check(la_fmap_forward(NULL, x, NULL, NULL, LA_FMAP_RELU, rows, H, F) ==
                 LA_STATUS_INVALID_ARG, "fmap: NULL y rejected");
    la_check(la_fmap_forward(NULL, NULL, NULL, NULL, LA_FMAP_RELU, 0, H, F) == LA_STATUS_OK,
             "fmap: rows = 0 is a no-op");
    la_check(la_fmap_dim((la_fmap)99, 4) == 0 && la_fmap_dim(LA_FMAP_TAYLOR2, 0) == 0 &&
                 la_fmap_dim(LA_FMAP_TAYLOR2, 16) == 153 &&
                 la_fmap_dim(LA_FMAP_QUADRATIC, 16) == 136 &&
                 la_fmap_dim(LA_FMAP_HEDGEHOG, 16) == 32 && la_fmap_dim(LA_FMAP_ELU1, 16) == 16,
             "fmap: la_fmap_dim (153, 136, 32, 16 at F = 16; 0 for bad arguments)");
    // rows = 0 with parameter gradients: overwritten with zeros, or left as they are.
    for (int64_t i = 0; i < H * F * F; i++) dW1[i] = 5.0f;
    la_fmap_backward(NULL, dW1, NULL, NULL, NULL, W, b, LA_FMAP_HEDGEHOG, 0, H, F, true);
    bool kept = dW1[0] == 5.0f;
    la_fmap_backward(NULL, dW1, NULL, NULL, NULL, W, b, LA_FMAP_HEDGEHOG, 0, H, F, false);
    la_check(kept && dW1[0] == 0.0f && dW1[H * F * F - 1] == 0.0f,
             "fmap: rows = 0 leaves dW (accumulate) or zeroes it");
    free(x); free(dy); free(W); free(b); free(y1); free(y2); free(dx1); free(dx2);
    free(dW1); free(dW2); free(db1); free(db2); free(I); free(want);
}

int main(void) {
    const tcase cases[] = {
        // name              rebased B  T    H  F   V   nseq lens                      norm   scale  eps
        { "based_T65",        false, 2, 65,  2, 16, 40, 0, {0},                        true,  0,     0 },
        { "based_T1",         false, 3, 1,   2, 16, 8,  0, {0},                        false, 0,     0 },
        { "based_T1_norm",    false, 3, 1,   2, 16, 8,  0, {0},                        true,  0,     0, true },
        { "based_F24_nonorm", false, 1, 70,  2, 24, 40, 0, {0},                        false, 0.3f,  0 },
        { "based_negscale",   false, 1, 33,  3, 8,  12, 0, {0},                        true, -0.2f,  0 },
        { "based_varlen",     false, 1, 0,   2, 16, 40, 5, {0, 1, 130, 5, 64},         true,  0,     0 },
        { "rebased_T65",      true,  2, 65,  2, 16, 40, 0, {0},                        true,  0,     1e-5f },
        { "rebased_T1",       true,  3, 1,   1, 16, 8,  0, {0},                        false, 0,     1e-5f },
        { "rebased_T1_norm",  true,  3, 1,   1, 16, 8,  0, {0},                        true,  0,     1e-5f, true },
        { "rebased_F24",      true,  1, 70,  2, 24, 40, 0, {0},                        false, 0.5f,  1e-5f },
        { "rebased_varlen",   true,  1, 0,   2, 16, 40, 4, {1, 0, 100, 7},             true,  0,     1e-3f },
    };
    // With T = 1 and use_norm, o = v phi / (phi + eps): dq and dk are O(eps) remainders of two
    // cancelling O(1) terms, i.e. float32 rounding, so the *_T1_norm cases compare o only (the
    // backward still runs and must agree across thread counts); *_T1 checks the gradients
    // without the normaliser.
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);

    const tcase fdc[] = {
        { "fd_based",         false, 2, 7,   2, 4,  3,  0, {0},                        true,  0,     0 },
        { "fd_based_nonorm",  false, 1, 9,   1, 5,  4,  0, {0},                        false, 0.7f,  0 },
        { "fd_based_varlen",  false, 1, 0,   2, 3,  2,  4, {4, 0, 1, 6},               true,  0,     0 },
        { "fd_rebased",       true,  2, 7,   2, 4,  3,  0, {0},                        true,  0,     1e-5f },
        { "fd_rebased_var",   true,  1, 0,   1, 4,  3,  3, {5, 1, 0},                  true,  1.2f,  1e-4f },
    };
    for (size_t i = 0; i < sizeof fdc / sizeof fdc[0]; i++) fd_case(&fdc[i], 200 + i);

    const tcase eqc[] = {
        { "eq_based",         false, 2, 65,  2, 16, 40, 0, {0},                        true,  0,     0 },
        { "eq_based_scale",   false, 1, 0,   2, 8,  24, 3, {40, 0, 17},                true,  0.2f,  0 },
        { "eq_based_neg",     false, 1, 30,  2, 8,  24, 0, {0},                        false, -0.3f, 0 },
        { "eq_rebased",       true,  2, 65,  2, 16, 40, 0, {0},                        true,  0,     1e-10f },
        { "eq_rebased_nonorm",true,  1, 50,  2, 24, 16, 0, {0},                        false, 0.4f,  0 },
    };
    for (size_t i = 0; i < sizeof eqc / sizeof eqc[0]; i++) equiv_case(&eqc[i], 300 + i);

    api_checks(false);
    api_checks(true);

    for (la_fmap kind = LA_FMAP_IDENTITY; kind <= LA_FMAP_HEDGEHOG; kind++) {
        map_case(kind, 7, 2, 5, true, 400 + kind);
        map_case(kind, 3, 1, 16, true, 410 + kind);
    }
    map_case(LA_FMAP_HEDGEHOG, 70, 2, 4, false, 420);  // two row blocks, no bias
    map_case(LA_FMAP_HEDGEHOG, 130, 1, 3, true, 421);
    map_kernel_identity(16, 430);
    map_kernel_identity(7, 431);
    map_api();
    return la_test_summary();
}
