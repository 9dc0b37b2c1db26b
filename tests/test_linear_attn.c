// linear_attn with normalize = true (OPS.md 2.1): every form (ref, recurrent, chunk with C = 64,
// 16, 5), on 1 and 2 threads, forward and backward, against an independent float64 oracle
// written here (a direct per-token loop and its hand-derived backward); the oracle's backward
// against central finite differences of its forward; the float forms' backward against those
// finite differences on tiny shapes; the chaining law on the pair (S, z); caller-owned
// workspaces; bitwise determinism across thread counts; and the argument rules for the z
// arguments.
//
//   S_t = S_{t-1} + k_t v_t^T,  z_t = z_{t-1} + k_t,  o_t = s S_t^T q_t / (s q_t . z_t + 1e-10)
//
// Inputs use the positive feature map phi(x) = elu(x) + 1 for q and k (and a positive z_0), so
// every denominator is a sum of positive terms: o_t is then (up to S_0) a convex combination of
// the values and float32 rounding stays relative to the magnitude of the terms.
//
// Tolerances (float32 forms vs float64 references): |got - ref| <= TOL * (max|ref| + |ref|)
// elementwise (la_check_rel, testlib.h) with
//   TOL_FWD = 2e-5 for o, final_state, final_z: float32 rounding of sums of up to T*K positive
//             terms, then one division (measured worst 6e-7 of max|ref|);
//   TOL_BWD = 5e-5 for dq, dk, dv, dinitial_state, dinitial_z: the backward adds a second
//             division by d_t (do_ext[V] = -(do . n)/d^2) and reverse sums over T tokens
//             (measured worst 6e-7 of max|ref|).
// These are test_simple_gla's values: linear_attn is simple_gla on [v, 1] plus the division.
// Finite differences: central, step 1e-6, in float64; the oracle's analytic backward must match
// them to TOL_FD = 1e-6 relative to max|grad| (FD error ~1e-9; the comparison rounds the oracle
// gradient to float32, ~6e-8; measured 6e-8).
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

typedef struct tcase {
    const char * name;
    int64_t      B, T, H, K, V;
    int          nseq;           // > 0: varlen with these lengths (B = 1)
    int64_t      lens[8];
    bool         init_s, init_z; // pass initial_state / initial_z
    bool         dfin_s, dfin_z; // pass dfinal_state / dfinal_z
    float        scale;          // 0 = default K^-1/2
} tcase;

typedef struct tdata {
    la_shape sh;
    int64_t  N, nq, nv, ns, nz;
    int64_t  cu[9];
    bool     varlen;
    double   scale;
    float    fscale;
    float *  q, * k, * v, * s0, * z0, * dout, * dfs, * dfz;
} tdata;

// phi(x) = elu(x) + 1 > 0
static void fill_phi(la_rng * r, float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double a = la_rng_normal(r);
        x[i] = (float)(a > 0 ? a + 1.0 : exp(a));
    }
}

static void make_data(const tcase * c, tdata * d, la_rng * r) {
    memset(d, 0, sizeof(*d));
    d->sh = (la_shape){ c->B, c->T, c->H, c->K, c->V };
    d->N = c->B;
    if (c->nseq > 0) {
        d->N = c->nseq;
        d->sh.T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    const int64_t ntok = d->sh.B * d->sh.T * d->sh.H;
    d->nq = ntok * c->K;
    d->nv = ntok * c->V;
    d->ns = d->N * c->H * c->K * c->V;
    d->nz = d->N * c->H * c->K;
    d->fscale = c->scale;
    d->scale = c->scale != 0.0f ? (double)c->scale : 1.0 / sqrt((double)c->K);
    d->q = la_test_alloc(d->nq * 4);
    d->k = la_test_alloc(d->nq * 4);
    fill_phi(r, d->q, d->nq);
    fill_phi(r, d->k, d->nq);
    d->v = la_new_normal(r, d->nv, 1.0);
    d->dout = la_new_normal(r, d->nv, 1.0);
    if (c->init_s) d->s0 = la_new_normal(r, d->ns, 0.5);
    if (c->init_z) d->z0 = la_new_uniform(r, d->nz, 0.5, 5.0);
    if (c->dfin_s) d->dfs = la_new_normal(r, d->ns, 1.0);
    if (c->dfin_z) d->dfz = la_new_normal(r, d->nz, 1.0);
}

static void free_data(tdata * d) {
    free(d->q); free(d->k); free(d->v); free(d->s0); free(d->z0);
    free(d->dout); free(d->dfs); free(d->dfz);
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C) {
    return la_test_opts(form, C, d->fscale, d->varlen ? d->cu : NULL, d->N);
}

// ---------------------------------------------------------------------------------------------
// The float64 oracle. Token rows are flattened: row r = b*T + t; sequence n covers rows
// [n*T, (n+1)*T) or [cu[n], cu[n+1]) in varlen mode. Arrays may be NULL where optional.

typedef struct oin {
    const double * q, * k, * v, * s0, * z0;    // s0, z0 may be NULL (zero)
    const double * dout, * dfs, * dfz;         // dfs, dfz may be NULL (zero)
} oin;

typedef struct oout {
    double * o, * fs, * fz;                    // forward
    double * dq, * dk, * dv, * ds0, * dz0;     // backward, when dq != NULL
} oout;

static void seq_range(const tdata * d, int64_t n, int64_t * t0, int64_t * t1) {
    la_seq_range(d->varlen ? d->cu : NULL, d->sh.T, n, t0, t1);
}

static void oracle(const tdata * d, const oin * in, oout * out) {
    const int64_t H = d->sh.H, K = d->sh.K, V = d->sh.V;
    const double s = d->scale;
    const bool bwd = out->dq != NULL;
    double * S = la_test_alloc((size_t)(K * V) * 8), * z = la_test_alloc((size_t)K * 8);
    double * nv = la_test_alloc((size_t)V * 8);
    int64_t maxlen = 0;
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        seq_range(d, n, &t0, &t1);
        if (t1 - t0 > maxlen) maxlen = t1 - t0;
    }
    double * dn = la_test_alloc((size_t)((maxlen + 1) * V) * 8);
    double * dd = la_test_alloc((size_t)(maxlen + 1) * 8);
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        seq_range(d, n, &t0, &t1);
        for (int64_t h = 0; h < H; h++) {
            const int64_t sb = (n * H + h) * K * V, zb = (n * H + h) * K;
            for (int64_t i = 0; i < K * V; i++) S[i] = in->s0 ? in->s0[sb + i] : 0.0;
            for (int64_t i = 0; i < K; i++) z[i] = in->z0 ? in->z0[zb + i] : 0.0;
            for (int64_t t = t0; t < t1; t++) {
                const int64_t row = t * H + h;
                const double * qt = in->q + row * K, * kt = in->k + row * K, * vt = in->v + row * V;
                for (int64_t i = 0; i < K; i++) {
                    for (int64_t j = 0; j < V; j++) S[i * V + j] += kt[i] * vt[j];
                    z[i] += kt[i];
                }
                double den = 0;
                for (int64_t i = 0; i < K; i++) den += qt[i] * z[i];
                den = s * den + NORM_EPS;
                for (int64_t j = 0; j < V; j++) {
                    double a = 0;
                    for (int64_t i = 0; i < K; i++) a += qt[i] * S[i * V + j];
                    nv[j] = s * a;
                    out->o[row * V + j] = nv[j] / den;
                }
                if (bwd) {
                    // dn = do/d, dd = dL/dd = -(do . o)/d ; dq = s (S dn + z dd)
                    const double * dot = in->dout + row * V;
                    double * dnt = dn + (t - t0) * V, ddo = 0;
                    for (int64_t j = 0; j < V; j++) {
                        dnt[j] = dot[j] / den;
                        ddo += dot[j] * out->o[row * V + j];
                    }
                    dd[t - t0] = -ddo / den;
                    for (int64_t i = 0; i < K; i++) {
                        double a = z[i] * dd[t - t0];
                        for (int64_t j = 0; j < V; j++) a += S[i * V + j] * dnt[j];
                        out->dq[row * K + i] = s * a;
                    }
                }
            }
            for (int64_t i = 0; i < K * V; i++) out->fs[sb + i] = S[i];
            for (int64_t i = 0; i < K; i++) out->fz[zb + i] = z[i];
            if (!bwd) continue;
            // Reverse: dS, dz are dL/dS_t, dL/dz_t (total, including later tokens).
            for (int64_t i = 0; i < K * V; i++) S[i] = in->dfs ? in->dfs[sb + i] : 0.0;
            for (int64_t i = 0; i < K; i++) z[i] = in->dfz ? in->dfz[zb + i] : 0.0;
            for (int64_t t = t1 - 1; t >= t0; t--) {
                const int64_t row = t * H + h;
                const double * qt = in->q + row * K, * kt = in->k + row * K, * vt = in->v + row * V;
                const double * dnt = dn + (t - t0) * V;
                for (int64_t i = 0; i < K; i++) {
                    for (int64_t j = 0; j < V; j++) S[i * V + j] += s * qt[i] * dnt[j];
                    z[i] += s * qt[i] * dd[t - t0];
                }
                for (int64_t i = 0; i < K; i++) {
                    double a = z[i];
                    for (int64_t j = 0; j < V; j++) a += S[i * V + j] * vt[j];
                    out->dk[row * K + i] = a;
                }
                for (int64_t j = 0; j < V; j++) {
                    double a = 0;
                    for (int64_t i = 0; i < K; i++) a += S[i * V + j] * kt[i];
                    out->dv[row * V + j] = a;
                }
            }
            for (int64_t i = 0; i < K * V; i++) out->ds0[sb + i] = S[i];
            for (int64_t i = 0; i < K; i++) out->dz0[zb + i] = z[i];
        }
    }
    free(S); free(z); free(nv); free(dn); free(dd);
}

typedef struct refset {
    double * o, * fs, * fz, * dq, * dk, * dv, * ds0, * dz0;
} refset;

typedef struct din {        // float64 copies of the test data
    double * q, * k, * v, * s0, * z0, * dout, * dfs, * dfz;
} din;

static din to_f64(const tdata * d) {
    din x;
    x.q = la_to_f64(d->q, d->nq);
    x.k = la_to_f64(d->k, d->nq);
    x.v = la_to_f64(d->v, d->nv);
    x.s0 = la_to_f64(d->s0, d->ns);
    x.z0 = la_to_f64(d->z0, d->nz);
    x.dout = la_to_f64(d->dout, d->nv);
    x.dfs = la_to_f64(d->dfs, d->ns);
    x.dfz = la_to_f64(d->dfz, d->nz);
    return x;
}

static void din_free(din * x) {
    free(x->q); free(x->k); free(x->v); free(x->s0); free(x->z0);
    free(x->dout); free(x->dfs); free(x->dfz);
}

static void ref_alloc(const tdata * d, refset * r) {
    r->o = la_test_alloc(d->nv * 8);
    r->fs = la_test_alloc(d->ns * 8);
    r->fz = la_test_alloc(d->nz * 8);
    r->dq = la_test_alloc(d->nq * 8);
    r->dk = la_test_alloc(d->nq * 8);
    r->dv = la_test_alloc(d->nv * 8);
    r->ds0 = la_test_alloc(d->ns * 8);
    r->dz0 = la_test_alloc(d->nz * 8);
}

static void ref_free(refset * r) {
    free(r->o); free(r->fs); free(r->fz); free(r->dq); free(r->dk); free(r->dv);
    free(r->ds0); free(r->dz0);
}

static void ref_run(const tdata * d, const din * x, refset * r) {
    oin in = { x->q, x->k, x->v, x->s0, x->z0, x->dout, x->dfs, x->dfz };
    oout out = { r->o, r->fs, r->fz, r->dq, r->dk, r->dv, r->ds0, r->dz0 };
    oracle(d, &in, &out);
}

// ---------------------------------------------------------------------------------------------
// One float form (forward and backward) against a reference set. Returns the results through
// `keep` (when non-NULL) for the determinism comparison.

typedef struct fres {
    float * o, * fs, * fz, * dq, * dk, * dv, * ds0, * dz0;
} fres;

static void fres_alloc(const tdata * d, fres * f) {
    f->o = la_test_alloc(d->nv * 4);
    f->fs = la_test_alloc(d->ns * 4);
    f->fz = la_test_alloc(d->nz * 4);
    f->dq = la_test_alloc(d->nq * 4);
    f->dk = la_test_alloc(d->nq * 4);
    f->dv = la_test_alloc(d->nv * 4);
    f->ds0 = la_test_alloc(d->ns * 4);
    f->dz0 = la_test_alloc(d->nz * 4);
}

static void fres_free(fres * f) {
    free(f->o); free(f->fs); free(f->fz); free(f->dq); free(f->dk); free(f->dv);
    free(f->ds0); free(f->dz0);
}

static bool fres_equal(const tdata * d, const fres * a, const fres * b) {
    return memcmp(a->o, b->o, d->nv * 4) == 0 && memcmp(a->fs, b->fs, d->ns * 4) == 0 &&
           memcmp(a->fz, b->fz, d->nz * 4) == 0 && memcmp(a->dq, b->dq, d->nq * 4) == 0 &&
           memcmp(a->dk, b->dk, d->nq * 4) == 0 && memcmp(a->dv, b->dv, d->nv * 4) == 0 &&
           memcmp(a->ds0, b->ds0, d->ns * 4) == 0 && memcmp(a->dz0, b->dz0, d->nz * 4) == 0;
}

static void run_form(const tdata * d, la_form form, int32_t C, int threads, fres * f,
                     const char * nm) {
    la_set_num_threads(threads);
    la_opts o = opts_for(d, form, C);
    la_status st = la_linear_attn_forward(f->o, f->fs, f->fz, d->q, d->k, d->v, d->s0, d->z0,
                                          true, d->sh, &o);
    la_check(st == LA_STATUS_OK, "%s forward status %s", nm, la_status_str(st));
    st = la_linear_attn_backward(f->dq, f->dk, f->dv, f->ds0, f->dz0, d->dout, d->dfs, d->dfz,
                                 d->q, d->k, d->v, d->s0, d->z0, true, d->sh, &o);
    la_check(st == LA_STATUS_OK, "%s backward status %s", nm, la_status_str(st));
    la_set_num_threads(0);
}

static void compare(const tdata * d, const fres * f, const refset * r, const char * nm,
                    double tol_fwd, double tol_bwd) {
    char n2[240];
#define CMP(field, n, tol)                                                 \
    do {                                                                   \
        snprintf(n2, sizeof n2, "%s %s", nm, #field);                      \
        la_check_rel(n2, f->field, r->field, n, tol);                      \
    } while (0)
    if (tol_fwd > 0) {
        CMP(o, d->nv, tol_fwd);
        CMP(fs, d->ns, tol_fwd);
        CMP(fz, d->nz, tol_fwd);
    }
    CMP(dq, d->nq, tol_bwd);
    CMP(dk, d->nq, tol_bwd);
    CMP(dv, d->nv, tol_bwd);
    CMP(ds0, d->ns, tol_bwd);
    CMP(dz0, d->nz, tol_bwd);
#undef CMP
}

static const struct { la_form form; int32_t C; } FORMS[] = {
    { LA_FORM_REF, 0 }, { LA_FORM_RECURRENT, 0 },
    { LA_FORM_CHUNK, 64 }, { LA_FORM_CHUNK, 16 }, { LA_FORM_CHUNK, 5 },
};
#define NFORMS (sizeof FORMS / sizeof FORMS[0])

// Every form on 1 and 2 threads against `r`; the two thread counts must agree bitwise.
static void check_all_forms(const tcase * c, const tdata * d, const refset * r, double tol_fwd,
                            double tol_bwd) {
    for (size_t fi = 0; fi < NFORMS; fi++) {
        fres f1, f2;
        fres_alloc(d, &f1);
        fres_alloc(d, &f2);
        char nm[160];
        snprintf(nm, sizeof nm, "%s/%s/C%d/t1", c->name, la_form_str(FORMS[fi].form),
                 FORMS[fi].C);
        run_form(d, FORMS[fi].form, FORMS[fi].C, 1, &f1, nm);
        compare(d, &f1, r, nm, tol_fwd, tol_bwd);
        snprintf(nm, sizeof nm, "%s/%s/C%d/t2", c->name, la_form_str(FORMS[fi].form),
                 FORMS[fi].C);
        run_form(d, FORMS[fi].form, FORMS[fi].C, 2, &f2, nm);
        la_check(fres_equal(d, &f1, &f2), "%s: results bitwise identical for 1 and 2 threads",
                 nm);
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
    check_all_forms(c, &d, &ref, TOL_FWD, TOL_BWD);
    ref_free(&ref);
    din_free(&x);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Central finite differences of the float64 oracle:
//   L = sum(o * do) + sum(final_state * dfinal_state) + sum(final_z * dfinal_z).
// dinitial_state / dinitial_z are differentiated at the given initial values, or at zero when
// none is given (NULL means zero).

typedef struct fdctx { const tdata * d; const oin * in; refset * scr; } fdctx;

static double loss(void * ctx) {
    const fdctx * fc = ctx;
    const tdata * d = fc->d;
    const oin * in = fc->in;
    refset * scratch = fc->scr;
    oout out = { scratch->o, scratch->fs, scratch->fz, NULL, NULL, NULL, NULL, NULL };
    oracle(d, in, &out);
    return la_loss_dot(la_loss_dot(la_loss_dot(0, scratch->o, in->dout, d->nv), scratch->fs, in->dfs, d->ns), scratch->fz, in->dfz, d->nz);
}

static void fd_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    din x = to_f64(&d);
    refset ana, fd, scr;
    ref_alloc(&d, &ana);
    ref_alloc(&d, &fd);
    ref_alloc(&d, &scr);
    ref_run(&d, &x, &ana);
    memcpy(fd.o, ana.o, d.nv * 8);
    memcpy(fd.fs, ana.fs, d.ns * 8);
    memcpy(fd.fz, ana.fz, d.nz * 8);
    // Always differentiate with respect to explicit (possibly zero) initial arrays.
    double * s0 = la_test_alloc(d.ns * 8), * z0 = la_test_alloc(d.nz * 8);
    if (x.s0) memcpy(s0, x.s0, d.ns * 8);
    if (x.z0) memcpy(z0, x.z0, d.nz * 8);
    oin in = { x.q, x.k, x.v, s0, z0, x.dout, x.dfs, x.dfz };
    double * params[5] = { x.q, x.k, x.v, s0, z0 };
    double * grads[5] = { fd.dq, fd.dk, fd.dv, fd.ds0, fd.dz0 };
    const int64_t np[5] = { d.nq, d.nq, d.nv, d.ns, d.nz };
    fdctx fc = { &d, &in, &scr };
    la_fd_grads(5, params, np, grads, FD_STEP, loss, &fc);
    char nm[160];
    const char * gn[5] = { "dq", "dk", "dv", "dinitial_state", "dinitial_z" };
    double * ag[5] = { ana.dq, ana.dk, ana.dv, ana.ds0, ana.dz0 };
    for (int p = 0; p < 5; p++) {
        snprintf(nm, sizeof nm, "%s oracle backward vs FD %s", c->name, gn[p]);
        la_check_rel_as_f32(nm, ag[p], grads[p], np[p], TOL_FD);
    }
    // Each float form's backward against the finite differences.
    snprintf(nm, sizeof nm, "%s[fd]", c->name);
    tcase cc = *c;
    cc.name = nm;
    check_all_forms(&cc, &d, &fd, TOL_FWD, TOL_BWD);
    free(s0); free(z0);
    ref_free(&ana); ref_free(&fd); ref_free(&scr);
    din_free(&x);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Chaining law (OPS.md 1.3) on the pair (S, z): tokens [0, t) then [t, T) with the first call's
// (final_state, final_z) as the second call's (initial_state, initial_z) equals one call.

static void split_case(la_form form, int64_t T, int64_t t, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "split", 1, T, 2, 8, 6, 0, {0}, true, true, false, false, 0 };
    tdata d;
    make_data(&c, &d, &r);
    din x = to_f64(&d);
    refset ref;
    ref_alloc(&d, &ref);
    oin in = { x.q, x.k, x.v, x.s0, x.z0, x.dout, NULL, NULL };
    oout out = { ref.o, ref.fs, ref.fz, NULL, NULL, NULL, NULL, NULL };
    oracle(&d, &in, &out);
    la_opts o = opts_for(&d, form, 16);
    const int64_t H = c.H, K = c.K, V = c.V;
    float * os = la_test_alloc(d.nv * 4), * ms = la_test_alloc(d.ns * 4);
    float * mz = la_test_alloc(d.nz * 4), * fs = la_test_alloc(d.ns * 4);
    float * fz = la_test_alloc(d.nz * 4);
    la_shape s1 = d.sh, s2 = d.sh;
    s1.T = t;
    s2.T = T - t;
    la_status st1 = la_linear_attn_forward(os, ms, mz, d.q, d.k, d.v, d.s0, d.z0, true, s1, &o);
    la_status st2 = la_linear_attn_forward(os + t * H * V, fs, fz, d.q + t * H * K,
                                           d.k + t * H * K, d.v + t * H * V, ms, mz, true, s2, &o);
    char nm[120];
    snprintf(nm, sizeof nm, "split/%s T=%lld t=%lld", la_form_str(form), (long long)T,
             (long long)t);
    la_check(st1 == LA_STATUS_OK && st2 == LA_STATUS_OK, "%s status", nm);
    char n2[160];
    snprintf(n2, sizeof n2, "%s o", nm);
    la_check_rel(n2, os, ref.o, d.nv, TOL_FWD);
    snprintf(n2, sizeof n2, "%s final_state", nm);
    la_check_rel(n2, fs, ref.fs, d.ns, TOL_FWD);
    snprintf(n2, sizeof n2, "%s final_z", nm);
    la_check_rel(n2, fz, ref.fz, d.nz, TOL_FWD);
    free(os); free(ms); free(mz); free(fs); free(fz);
    ref_free(&ref);
    din_free(&x);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Optional outputs, caller-owned workspace and argument rules.

static void api_checks(void) {
    la_rng r;
    la_rng_seed(&r, 11);
    tcase c = { "api", 2, 45, 2, 8, 5, 0, {0}, true, true, true, true, 0 };
    tdata d;
    make_data(&c, &d, &r);
    for (size_t fi = 0; fi < NFORMS; fi++) {
        la_opts o = opts_for(&d, FORMS[fi].form, FORMS[fi].C);
        const char * fn = la_form_str(FORMS[fi].form);
        const int C = FORMS[fi].C;
        fres a, b;
        fres_alloc(&d, &a);
        fres_alloc(&d, &b);
        run_form(&d, FORMS[fi].form, FORMS[fi].C, 1, &a, "api");
        // final_z alone, final_state alone, neither: same o and the same requested finals.
        la_status s1 = la_linear_attn_forward(b.o, NULL, b.fz, d.q, d.k, d.v, d.s0, d.z0, true,
                                              d.sh, &o);
        la_status s2 = la_linear_attn_forward(b.o, b.fs, NULL, d.q, d.k, d.v, d.s0, d.z0, true,
                                              d.sh, &o);
        la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK &&
                     memcmp(a.o, b.o, d.nv * 4) == 0 && memcmp(a.fs, b.fs, d.ns * 4) == 0 &&
                     memcmp(a.fz, b.fz, d.nz * 4) == 0,
                 "%s/C%d: final_state and final_z are independently optional", fn, C);
        // dinitial_state / dinitial_z independently optional.
        memset(b.ds0, 0, d.ns * 4);
        memset(b.dz0, 0, d.nz * 4);
        s1 = la_linear_attn_backward(b.dq, b.dk, b.dv, NULL, b.dz0, d.dout, d.dfs, d.dfz, d.q,
                                     d.k, d.v, d.s0, d.z0, true, d.sh, &o);
        s2 = la_linear_attn_backward(b.dq, b.dk, b.dv, b.ds0, NULL, d.dout, d.dfs, d.dfz, d.q,
                                     d.k, d.v, d.s0, d.z0, true, d.sh, &o);
        la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK && fres_equal(&d, &a, &b),
                 "%s/C%d: dinitial_state and dinitial_z are independently optional", fn, C);
        // Caller-owned workspace of exactly the queried size gives identical results;
        // one byte less is LA_STATUS_WORKSPACE.
        la_set_num_threads(1);
        size_t wf = la_linear_attn_workspace_size(false, true, d.sh, &o);
        size_t wb = la_linear_attn_workspace_size(true, true, d.sh, &o);
        void * wsf = aligned_alloc(64, (wf + 63) / 64 * 64 + 64);
        void * wsb = aligned_alloc(64, (wb + 63) / 64 * 64 + 64);
        la_opts ow = o;
        ow.work = wsf;
        ow.work_size = wf;
        memset(&b.o[0], 0, d.nv * 4);
        s1 = la_linear_attn_forward(b.o, b.fs, b.fz, d.q, d.k, d.v, d.s0, d.z0, true, d.sh, &ow);
        ow.work = wsb;
        ow.work_size = wb;
        s2 = la_linear_attn_backward(b.dq, b.dk, b.dv, b.ds0, b.dz0, d.dout, d.dfs, d.dfz, d.q,
                                     d.k, d.v, d.s0, d.z0, true, d.sh, &ow);
        la_check(wf > 0 && wb > 0 && s1 == LA_STATUS_OK && s2 == LA_STATUS_OK &&
                     fres_equal(&d, &a, &b),
                 "%s/C%d: caller-owned workspace (fwd %zu, bwd %zu bytes) gives identical results",
                 fn, C, wf, wb);
        ow.work = wsf;
        ow.work_size = wf - 1;
        s1 = la_linear_attn_forward(b.o, b.fs, b.fz, d.q, d.k, d.v, d.s0, d.z0, true, d.sh, &ow);
        ow.work = wsb;
        ow.work_size = wb - 1;
        s2 = la_linear_attn_backward(b.dq, b.dk, b.dv, b.ds0, b.dz0, d.dout, d.dfs, d.dfz, d.q,
                                     d.k, d.v, d.s0, d.z0, true, d.sh, &ow);
        la_check(s1 == LA_STATUS_WORKSPACE && s2 == LA_STATUS_WORKSPACE,
                 "%s/C%d: workspace one byte short rejected (%s, %s)", fn, C,
                 la_status_str(s1), la_status_str(s2));
        la_set_num_threads(0);
        free(wsf); free(wsb);
        fres_free(&a);
        fres_free(&b);
    }

    // Without normalize the z arguments must be NULL.
    la_opts o = opts_for(&d, LA_FORM_CHUNK, 0);
    fres b;
    fres_alloc(&d, &b);
    la_check(la_linear_attn_forward(b.o, b.fs, NULL, d.q, d.k, d.v, d.s0, d.z0, false, d.sh, &o)
                 == LA_STATUS_INVALID_ARG, "normalize off: initial_z rejected");
    la_check(la_linear_attn_forward(b.o, b.fs, b.fz, d.q, d.k, d.v, d.s0, NULL, false, d.sh, &o)
                 == LA_STATUS_INVALID_ARG, "normalize off: final_z rejected");
    la_check(la_linear_attn_forward(b.o, b.fs, NULL, d.q, d.k, d.v, d.s0, NULL, false, d.sh, &o)
                 == LA_STATUS_OK, "normalize off: no z arguments accepted");
    la_check(la_linear_attn_backward(b.dq, b.dk, b.dv, b.ds0, NULL, d.dout, d.dfs, NULL, d.q,
                                     d.k, d.v, d.s0, d.z0, false, d.sh, &o)
                 == LA_STATUS_INVALID_ARG, "normalize off: backward initial_z rejected");
    la_check(la_linear_attn_backward(b.dq, b.dk, b.dv, b.ds0, b.dz0, d.dout, d.dfs, NULL, d.q,
                                     d.k, d.v, d.s0, NULL, false, d.sh, &o)
                 == LA_STATUS_INVALID_ARG, "normalize off: backward dinitial_z rejected");
    la_check(la_linear_attn_backward(b.dq, b.dk, b.dv, b.ds0, NULL, d.dout, d.dfs, d.dfz, d.q,
                                     d.k, d.v, d.s0, NULL, false, d.sh, &o)
                 == LA_STATUS_INVALID_ARG, "normalize off: backward dfinal_z rejected");
    la_check(la_linear_attn_backward(b.dq, b.dk, b.dv, b.ds0, NULL, d.dout, d.dfs, NULL, d.q,
                                     d.k, d.v, d.s0, NULL, false, d.sh, &o)
                 == LA_STATUS_OK, "normalize off: backward without z arguments accepted");
    // Normalised: NULL o, NULL dout, NULL dv are rejected; a bad shape is a shape error.
    la_check(la_linear_attn_forward(NULL, b.fs, b.fz, d.q, d.k, d.v, d.s0, d.z0, true, d.sh, &o)
                 == LA_STATUS_INVALID_ARG, "normalize on: NULL o rejected");
    la_check(la_linear_attn_backward(b.dq, b.dk, b.dv, b.ds0, b.dz0, NULL, d.dfs, d.dfz, d.q,
                                     d.k, d.v, d.s0, d.z0, true, d.sh, &o)
                 == LA_STATUS_INVALID_ARG, "normalize on: NULL dout rejected");
    la_shape bad = d.sh;
    bad.K = 0;
    la_check(la_linear_attn_forward(b.o, b.fs, b.fz, d.q, d.k, d.v, d.s0, d.z0, true, bad, &o)
                 == LA_STATUS_SHAPE, "normalize on: K = 0 rejected");
    fres_free(&b);
    free_data(&d);
}

int main(void) {
    const tcase cases[] = {
        // name           B   T    H  K   V  nseq lens                        S0     z0     dS     dz     scale
        { "basic",        2,  100, 2, 16, 8,  0, {0},                        true,  true,  true,  true,  0 },
        { "T1",           3,  1,   2, 8,  8,  0, {0},                        true,  true,  true,  true,  0 },
        { "T64",          1,  64,  3, 8,  8,  0, {0},                        true,  true,  false, true,  0 },
        { "H1_KneV",      1,  130, 1, 7,  19, 0, {0},                        false, false, true,  false, 0.3f },
        { "S0_only",      2,  77,  3, 16, 16, 0, {0},                        true,  false, true,  true,  0 },
        { "z0_only",      2,  70,  2, 12, 4,  0, {0},                        false, true,  false, true,  0 },
        { "noinit",       1,  200, 4, 32, 16, 0, {0},                        false, false, false, false, 0 },
        { "varlen",       1,  0,   2, 16, 12, 7, {37, 0, 1, 64, 65, 3, 130}, true,  true,  true,  true,  0 },
        { "varlen_noinit",1,  0,   3, 5,  9,  4, {0, 70, 1, 0},              false, false, true,  true,  1.0f },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);

    const tcase fdc[] = {
        { "fd_basic",     2,  7,   2, 4,  3,  0, {0},                        true,  true,  true,  true,  0 },
        { "fd_noinit",    1,  12,  1, 5,  4,  0, {0},                        false, false, false, true,  0.7f },
        { "fd_varlen",    1,  0,   2, 3,  2,  4, {4, 0, 1, 9},               true,  true,  true,  true,  0 },
    };
    for (size_t i = 0; i < sizeof fdc / sizeof fdc[0]; i++) fd_case(&fdc[i], 200 + i);

    for (size_t f = 0; f < 3; f++) {
        split_case((la_form)f, 100, 37, 300);
        split_case((la_form)f, 64, 32, 301);
        split_case((la_form)f, 10, 1, 302);
    }
    api_checks();
    return la_test_summary();
}
