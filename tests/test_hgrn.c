// hgrn (OPS.md 2.13): an independent float64 oracle written here (a direct per-token loop and
// its adjoint, every state kept), checked against central finite differences of itself; the
// library's float64 reference against the oracle; every form (ref, recurrent, chunk with
// several chunk sizes), forward and backward, with 1 and 2 threads, against the oracle on
// awkward shapes; bitwise determinism across thread counts; the chaining law; final_state
// aliasing initial_state; a 2*10^5-token sequence; argument errors.
//
// Tolerances (float32 forms vs the float64 oracle): |got - ref| <= TOL * (max|ref| + |ref|)
// elementwise, TOL = 2e-5 for outputs and states and 5e-5 for gradients (float32 rounding of
// a recurrence whose decays may be 1 - 1e-6, so the state sums up to T terms). The float64
// reference vs the oracle: 1e-12. Finite differences: step 1e-6 in float64,
// |analytic - fd| <= 1e-6 (1 + |fd|).
#include "ref.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FWD 2e-5
#define TOL_BWD 5e-5
#define TOL_F64 1e-12
#define TOL_FD  1e-6

typedef struct tcase {
    const char * name;
    int64_t      B, T, D;
    int          nseq;          // > 0: varlen with these lengths
    int64_t      lens[8];
    double       glo, ghi;      // g ~ U[glo, ghi] (glo == ghi == 1: logsigmoid(N(0,1)))
    bool         init, dfinal;
} tcase;

typedef struct tdata {
    int64_t  B, T, D, N, nx, ns;
    int64_t  cu[9];
    bool     varlen;
    float *  x, * g, * s0, * dout, * dfin;
} tdata;

static void make_data(const tcase * c, tdata * d, la_rng * r) {
    memset(d, 0, sizeof(*d));
    d->B = c->B;
    d->T = c->T;
    d->D = c->D;
    d->N = c->B;
    if (c->nseq > 0) {
        d->N = c->nseq;
        d->T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    d->nx = d->B * d->T * d->D;
    d->ns = d->N * d->D;
    d->g = la_test_alloc(d->nx * 4);
    d->x = la_new_normal(r, d->nx, 1.0);
    d->dout = la_new_normal(r, d->nx, 1.0);
    if (c->glo == 1.0 && c->ghi == 1.0) la_fill_logsigmoid(r, d->g, d->nx);
    else la_fill_uniform(r, d->g, d->nx, c->glo, c->ghi);
    if (c->init) d->s0 = la_new_normal(r, d->ns, 1.0);
    if (c->dfinal) d->dfin = la_new_normal(r, d->ns, 1.0);
}

static void free_data(tdata * d) {
    free(d->x); free(d->g); free(d->s0); free(d->dout); free(d->dfin);
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C) {
    return la_test_opts(form, C, 0, d->varlen ? d->cu : NULL, d->N);
}

static void seq_bounds(const tdata * d, int64_t n, int64_t * bos, int64_t * eos) {
    la_seq_range(d->varlen ? d->cu : NULL, d->T, n, bos, eos);
}

// ---------------------------------------------------------------------------------------------
// The oracle, straight from the formulas: h_t = exp(g_t) h_{t-1} + x_t, o_t = h_t; backward
// dh_t = do_t + exp(g_{t+1}) dh_{t+1}, dx_t = dh_t, dg_t = dh_t exp(g_t) h_{t-1}.

static void oracle_fwd(const tdata * d, const double * x, const double * g, const double * s0,
                       double * o, double * fin) {
    const int64_t D = d->D;
    for (int64_t n = 0; n < d->N; n++) {
        int64_t bos, eos;
        seq_bounds(d, n, &bos, &eos);
        for (int64_t c = 0; c < D; c++) {
            double h = s0 ? s0[n * D + c] : 0.0;
            for (int64_t t = bos; t < eos; t++) {
                h = exp(g[t * D + c]) * h + x[t * D + c];
                o[t * D + c] = h;
            }
            fin[n * D + c] = h;
        }
    }
}

static void oracle_bwd(const tdata * d, const double * x, const double * g, const double * s0,
                       const double * dout, const double * dfin, double * dx, double * dg,
                       double * ds0) {
    const int64_t D = d->D;
    double * o = la_test_alloc((size_t)(d->nx + 1) * 8), * fin = la_test_alloc((size_t)d->ns * 8);
    oracle_fwd(d, x, g, s0, o, fin);
    for (int64_t n = 0; n < d->N; n++) {
        int64_t bos, eos;
        seq_bounds(d, n, &bos, &eos);
        for (int64_t c = 0; c < D; c++) {
            double dh = dfin ? dfin[n * D + c] : 0.0;   // dL/dh_t, t = eos - 1
            for (int64_t t = eos - 1; t >= bos; t--) {
                dh += dout[t * D + c];
                const double hp = t > bos ? o[(t - 1) * D + c] : (s0 ? s0[n * D + c] : 0.0);
                dx[t * D + c] = dh;
                dg[t * D + c] = dh * exp(g[t * D + c]) * hp;
                dh *= exp(g[t * D + c]);
            }
            ds0[n * D + c] = dh;
        }
    }
    free(o); free(fin);
}

typedef struct refout {
    double * o, * fin, * dx, * dg, * ds0;
} refout;

static void oracle_run(const tdata * d, refout * ro) {
    double * x = la_to_f64(d->x, d->nx), * g = la_to_f64(d->g, d->nx);
    double * s0 = la_to_f64(d->s0, d->ns);
    double * dout = la_to_f64(d->dout, d->nx), * dfin = la_to_f64(d->dfin, d->ns);
    ro->o = la_test_alloc((size_t)(d->nx + 1) * 8);
    ro->fin = la_test_alloc((size_t)d->ns * 8);
    ro->dx = la_test_alloc((size_t)(d->nx + 1) * 8);
    ro->dg = la_test_alloc((size_t)(d->nx + 1) * 8);
    ro->ds0 = la_test_alloc((size_t)d->ns * 8);
    oracle_fwd(d, x, g, s0, ro->o, ro->fin);
    oracle_bwd(d, x, g, s0, dout, dfin, ro->dx, ro->dg, ro->ds0);
    free(x); free(g); free(s0); free(dout); free(dfin);
}

static void ref_free(refout * r) {
    free(r->o); free(r->fin); free(r->dx); free(r->dg); free(r->ds0);
}

// ---------------------------------------------------------------------------------------------
// The library's float64 reference against the oracle.

static void check_ref_f64(const tcase * c, const tdata * d, const refout * ro) {
    la_opts o = opts_for(d, LA_FORM_REF, 0);
    la_ref_dims rd = { { d->B, d->T, d->D, 1, 1 }, d->N, o.cu_seqlens, 0 };
    double * x = la_to_f64(d->x, d->nx), * g = la_to_f64(d->g, d->nx);
    double * s0 = la_to_f64(d->s0, d->ns);
    double * dout = la_to_f64(d->dout, d->nx), * dfin = la_to_f64(d->dfin, d->ns);
    double * ws = la_test_alloc((size_t)la_hgrn_ref_ws_elems_f64(rd) * 8);
    double * oo = la_test_alloc((size_t)(d->nx + 1) * 8), * fin = la_test_alloc((size_t)d->ns * 8);
    double * dx = la_test_alloc((size_t)(d->nx + 1) * 8), * dg = la_test_alloc((size_t)(d->nx + 1) * 8);
    double * ds0 = la_test_alloc((size_t)d->ns * 8);
    la_hgrn_fwd_ref_f64(oo, fin, x, g, s0, rd, ws);
    la_hgrn_bwd_ref_f64(dx, dg, ds0, dout, dfin, x, g, s0, rd, ws);
    char nm[128];
    snprintf(nm, sizeof nm, "%s/ref_f64 o", c->name);
    la_check_rel_dd(nm, oo, ro->o, d->nx, TOL_F64);
    snprintf(nm, sizeof nm, "%s/ref_f64 final_state", c->name);
    la_check_rel_dd(nm, fin, ro->fin, d->ns, TOL_F64);
    snprintf(nm, sizeof nm, "%s/ref_f64 dx", c->name);
    la_check_rel_dd(nm, dx, ro->dx, d->nx, TOL_F64);
    snprintf(nm, sizeof nm, "%s/ref_f64 dg", c->name);
    la_check_rel_dd(nm, dg, ro->dg, d->nx, TOL_F64);
    snprintf(nm, sizeof nm, "%s/ref_f64 dinitial_state", c->name);
    la_check_rel_dd(nm, ds0, ro->ds0, d->ns, TOL_F64);
    free(x); free(g); free(s0); free(dout); free(dfin); free(ws);
    free(oo); free(fin); free(dx); free(dg); free(ds0);
}

// ---------------------------------------------------------------------------------------------
// One float form against the oracle. Outputs are returned (for the determinism check) in
// res[0..4] = o, final, dx, dg, dinit when res is non-NULL.

static void check_form(const tcase * c, const tdata * d, const refout * ro, la_form form,
                       int32_t C, int threads, bool caller_ws, float ** res) {
    char nm[128], n2[192];
    la_set_num_threads(threads);
    la_opts o = opts_for(d, form, C);
    void * wbuf = NULL;
    if (caller_ws) {
        size_t need = la_hgrn_workspace_size(true, d->B, d->T, d->D, &o);
        size_t needf = la_hgrn_workspace_size(false, d->B, d->T, d->D, &o);
        need = need > needf ? need : needf;
        wbuf = la_test_alloc(need);
        o.work = wbuf;
        o.work_size = need;
    }
    float * out = la_test_alloc(d->nx * 4 + 4), * fin = la_test_alloc(d->ns * 4);
    la_status st = la_hgrn_forward(out, fin, d->x, d->g, d->s0, d->B, d->T, d->D, &o);
    snprintf(nm, sizeof nm, "%s/%s/C%d/t%d%s", c->name, la_form_str(form), C, threads,
             caller_ws ? "/ws" : "");
    la_check(st == LA_STATUS_OK, "%s forward status %s", nm, la_status_str(st));
    snprintf(n2, sizeof n2, "%s o", nm);
    la_check_rel(n2, out, ro->o, d->nx, TOL_FWD);
    snprintf(n2, sizeof n2, "%s final_state", nm);
    la_check_rel(n2, fin, ro->fin, d->ns, TOL_FWD);

    float * dx = la_test_alloc(d->nx * 4 + 4), * dg = la_test_alloc(d->nx * 4 + 4);
    float * ds0 = la_test_alloc(d->ns * 4);
    st = la_hgrn_backward(dx, dg, ds0, d->dout, d->dfin, d->x, d->g, d->s0, d->B, d->T, d->D, &o);
    la_check(st == LA_STATUS_OK, "%s backward status %s", nm, la_status_str(st));
    snprintf(n2, sizeof n2, "%s dx", nm);
    la_check_rel(n2, dx, ro->dx, d->nx, TOL_BWD);
    snprintf(n2, sizeof n2, "%s dg", nm);
    la_check_rel(n2, dg, ro->dg, d->nx, TOL_BWD);
    snprintf(n2, sizeof n2, "%s dinitial_state", nm);
    la_check_rel(n2, ds0, ro->ds0, d->ns, TOL_BWD);
    if (res) {
        res[0] = out; res[1] = fin; res[2] = dx; res[3] = dg; res[4] = ds0;
    } else {
        free(out); free(fin); free(dx); free(dg); free(ds0);
    }
    free(wbuf);
    la_set_num_threads(0);
}

// The same form with 1 and 2 threads gives bitwise-identical results.
static void check_determinism(const tcase * c, const tdata * d, const refout * ro, la_form form,
                              int32_t C) {
    float * r1[5], * r2[5];
    check_form(c, d, ro, form, C, 1, false, r1);
    check_form(c, d, ro, form, C, 2, false, r2);
    const int64_t n[5] = { d->nx, d->ns, d->nx, d->nx, d->ns };
    bool same = true;
    for (int i = 0; i < 5; i++) same = same && memcmp(r1[i], r2[i], (size_t)n[i] * 4) == 0;
    la_check(same, "%s/%s/C%d bitwise identical for 1 and 2 threads", c->name,
             la_form_str(form), C);
    for (int i = 0; i < 5; i++) { free(r1[i]); free(r2[i]); }
}

static void run_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    refout ro;
    oracle_run(&d, &ro);
    check_ref_f64(c, &d, &ro);
    check_form(c, &d, &ro, LA_FORM_REF, 0, 1, false, NULL);
    check_form(c, &d, &ro, LA_FORM_REF, 0, 1, true, NULL);
    check_determinism(c, &d, &ro, LA_FORM_RECURRENT, 0);
    check_determinism(c, &d, &ro, LA_FORM_CHUNK, 64);
    check_form(c, &d, &ro, LA_FORM_CHUNK, 16, 2, true, NULL);
    check_form(c, &d, &ro, LA_FORM_CHUNK, 7, 2, false, NULL);
    check_form(c, &d, &ro, LA_FORM_CHUNK, 1, 1, false, NULL);
    check_form(c, &d, &ro, LA_FORM_CHUNK, 256, 2, false, NULL);
    check_form(c, &d, &ro, LA_FORM_RECURRENT, 0, 1, true, NULL);
    ref_free(&ro);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Finite differences of the oracle, L = sum(o * do) + sum(final * dfinal), for x, g and the
// initial state, against the oracle's adjoint and the library's float64 reference.

static double oracle_loss(const tdata * d, const double * x, const double * g, const double * s0,
                          const double * dout, const double * dfin, double * o, double * fin) {
    oracle_fwd(d, x, g, s0, o, fin);
    double L = 0;
    for (int64_t i = 0; i < d->nx; i++) L += o[i] * dout[i];
    for (int64_t i = 0; i < d->ns; i++) L += fin[i] * dfin[i];
    return L;
}

typedef struct fdctx {
    const tdata * d;
    double * const * x;                // x, g, initial_state
    const double * dout, * dfin;
    double * o, * fin;                 // scratch
} fdctx;

static double fd_loss(void * ctx) {
    const fdctx * f = ctx;
    return oracle_loss(f->d, f->x[0], f->x[1], f->x[2], f->dout, f->dfin, f->o, f->fin);
}

static void fd_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    double * x[3] = { la_to_f64(d.x, d.nx), la_to_f64(d.g, d.nx), la_to_f64(d.s0, d.ns) };
    const int64_t nx[3] = { d.nx, d.nx, d.ns };
    const char * names[3] = { "dx", "dg", "dinitial_state" };
    double * dout = la_to_f64(d.dout, d.nx), * dfin = la_to_f64(d.dfin, d.ns);
    double * o = la_test_alloc((size_t)(d.nx + 1) * 8), * fin = la_test_alloc((size_t)d.ns * 8);
    double * an[3], * lib[3];
    for (int i = 0; i < 3; i++) {
        an[i] = la_test_alloc((size_t)(nx[i] + 1) * 8);
        lib[i] = la_test_alloc((size_t)(nx[i] + 1) * 8);
    }
    oracle_bwd(&d, x[0], x[1], x[2], dout, dfin, an[0], an[1], an[2]);
    la_opts op = opts_for(&d, LA_FORM_REF, 0);
    la_ref_dims rd = { { d.B, d.T, d.D, 1, 1 }, d.N, op.cu_seqlens, 0 };
    double * ws = la_test_alloc((size_t)la_hgrn_ref_ws_elems_f64(rd) * 8);
    la_hgrn_bwd_ref_f64(lib[0], lib[1], lib[2], dout, dfin, x[0], x[1], x[2], rd, ws);
    double * fd[3];
    for (int i = 0; i < 3; i++) fd[i] = la_test_alloc((size_t)(nx[i] + 1) * 8);
    fdctx fc = { &d, x, dout, dfin, o, fin };
    la_fd_grads(3, x, nx, fd, 1e-6, fd_loss, &fc);
    char nm[128];
    for (int i = 0; i < 3; i++) {
        snprintf(nm, sizeof nm, "%s/fd %-16s oracle adjoint", c->name, names[i]);
        la_check_fd(nm, an[i], fd[i], nx[i], TOL_FD);
        snprintf(nm, sizeof nm, "%s/fd %-16s ref_f64", c->name, names[i]);
        la_check_fd(nm, lib[i], fd[i], nx[i], TOL_FD);
    }
    for (int i = 0; i < 3; i++) { free(x[i]); free(an[i]); free(lib[i]); free(fd[i]); }
    free(dout); free(dfin); free(o); free(fin); free(ws);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Chaining law: [0, t) then [t, T) with the state carried equals one call (B = 2).

static void split_case(la_form form, int64_t T, int64_t t, int32_t C, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "split", 1, T, 37, 0, {0}, 1, 1, true, true };
    tdata d;
    make_data(&c, &d, &r);
    const int64_t D = d.D;
    la_opts o = opts_for(&d, form, C);
    float * o_full = la_test_alloc(d.nx * 4 + 4), * f_full = la_test_alloc(d.ns * 4);
    float * o_split = la_test_alloc(d.nx * 4 + 4), * mid = la_test_alloc(d.ns * 4);
    float * f_split = la_test_alloc(d.ns * 4);
    la_hgrn_forward(o_full, f_full, d.x, d.g, d.s0, 1, T, D, &o);
    la_hgrn_forward(o_split, mid, d.x, d.g, d.s0, 1, t, D, &o);
    la_hgrn_forward(o_split + t * D, f_split, d.x + t * D, d.g + t * D, mid, 1, T - t, D, &o);
    // Backward: the gradient of the first part's final state is the second part's dh_0.
    float * dx_f = la_test_alloc(d.nx * 4 + 4), * dg_f = la_test_alloc(d.nx * 4 + 4);
    float * ds_f = la_test_alloc(d.ns * 4), * dx_s = la_test_alloc(d.nx * 4 + 4);
    float * dg_s = la_test_alloc(d.nx * 4 + 4), * dmid = la_test_alloc(d.ns * 4);
    float * ds_s = la_test_alloc(d.ns * 4);
    la_hgrn_backward(dx_f, dg_f, ds_f, d.dout, d.dfin, d.x, d.g, d.s0, 1, T, D, &o);
    la_hgrn_backward(dx_s + t * D, dg_s + t * D, dmid, d.dout + t * D, d.dfin, d.x + t * D,
                     d.g + t * D, mid, 1, T - t, D, &o);
    la_hgrn_backward(dx_s, dg_s, ds_s, d.dout, dmid, d.x, d.g, d.s0, 1, t, D, &o);
    char nm[96];
    snprintf(nm, sizeof nm, "split/%s C%d T=%lld t=%lld o", la_form_str(form), C, (long long)T,
             (long long)t);
    la_check_close(nm, o_split, o_full, d.nx, 1e-5, 1e-5);
    snprintf(nm, sizeof nm, "split/%s C%d T=%lld t=%lld final_state", la_form_str(form), C,
             (long long)T, (long long)t);
    la_check_close(nm, f_split, f_full, d.ns, 1e-5, 1e-5);
    snprintf(nm, sizeof nm, "split/%s C%d T=%lld t=%lld dx, dg, dh0", la_form_str(form), C,
             (long long)T, (long long)t);
    la_check_close(nm, dx_s, dx_f, d.nx, 1e-5, 1e-5);
    la_check_close(nm, dg_s, dg_f, d.nx, 1e-5, 1e-5);
    la_check_close(nm, ds_s, ds_f, d.ns, 1e-5, 1e-5);
    free(o_full); free(f_full); free(o_split); free(mid); free(f_split);
    free(dx_f); free(dg_f); free(ds_f); free(dx_s); free(dg_s); free(dmid); free(ds_s);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Long sequence: 2*10^5 tokens, D = 3, gates from -20 to 0 with long stretches of exactly 0
// and of -1e-6 (no or almost no decay), chunk and recurrent against the oracle.

static void long_sequence(void) {
    la_rng r;
    la_rng_seed(&r, 5);
    tcase c = { "long", 1, 200000, 3, 0, {0}, -20, 0, true, true };
    tdata d;
    make_data(&c, &d, &r);
    for (int64_t t = 0; t < d.T; t++)
        for (int64_t k = 0; k < d.D; k++) {
            if ((t / 20000) % 3 == 1) d.g[t * d.D + k] = 0.0f;
            else if ((t / 20000) % 3 == 2) d.g[t * d.D + k] = -1e-6f;
        }
    refout ro;
    oracle_run(&d, &ro);
    const la_form forms[2] = { LA_FORM_CHUNK, LA_FORM_RECURRENT };
    for (int f = 0; f < 2; f++) {
        la_opts o = opts_for(&d, forms[f], 64);
        float * out = la_test_alloc(d.nx * 4), * fin = la_test_alloc(d.ns * 4);
        float * dx = la_test_alloc(d.nx * 4), * dg = la_test_alloc(d.nx * 4);
        float * ds0 = la_test_alloc(d.ns * 4);
        la_hgrn_forward(out, fin, d.x, d.g, d.s0, d.B, d.T, d.D, &o);
        la_hgrn_backward(dx, dg, ds0, d.dout, d.dfin, d.x, d.g, d.s0, d.B, d.T, d.D, &o);
        char nm[96];
        // In float32, exp(-1e-6) = 1 - 1e-6 is itself rounded by up to 3e-8, i.e. the decay
        // rate 1e-6 carries up to 3% error, which over a 20,000-token stretch moves the state
        // by about 2e-4 of its size (measured); the stretches of exactly 0 add 20,000
        // roundings into one state: 1e-3 relative to the largest value.
        snprintf(nm, sizeof nm, "long T=2e5 %s o", la_form_str(forms[f]));
        la_check_rel(nm, out, ro.o, d.nx, 1e-3);
        snprintf(nm, sizeof nm, "long T=2e5 %s final_state", la_form_str(forms[f]));
        la_check_rel(nm, fin, ro.fin, d.ns, 1e-3);
        snprintf(nm, sizeof nm, "long T=2e5 %s dx", la_form_str(forms[f]));
        la_check_rel(nm, dx, ro.dx, d.nx, 1e-3);
        snprintf(nm, sizeof nm, "long T=2e5 %s dg", la_form_str(forms[f]));
        la_check_rel(nm, dg, ro.dg, d.nx, 1e-3);
        snprintf(nm, sizeof nm, "long T=2e5 %s dinitial_state", la_form_str(forms[f]));
        la_check_rel(nm, ds0, ro.ds0, d.ns, 1e-3);
        free(out); free(fin); free(dx); free(dg); free(ds0);
    }
    ref_free(&ro);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// final_state may be initial_state itself (an in-place decode step): same results, bit for bit.

static void inplace_case(la_form form, int64_t T, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "inplace", 2, T, 150, 0, {0}, 1, 1, true, true };
    tdata d;
    make_data(&c, &d, &r);
    la_opts o = opts_for(&d, form, 16);
    float * o1 = la_test_alloc(d.nx * 4), * f1 = la_test_alloc(d.ns * 4);
    float * o2 = la_test_alloc(d.nx * 4), * st = la_test_alloc(d.ns * 4);
    memcpy(st, d.s0, (size_t)d.ns * 4);
    la_hgrn_forward(o1, f1, d.x, d.g, d.s0, d.B, d.T, d.D, &o);
    la_status s2 = la_hgrn_forward(o2, st, d.x, d.g, st, d.B, d.T, d.D, &o);
    la_check(s2 == LA_STATUS_OK && memcmp(o1, o2, (size_t)d.nx * 4) == 0 &&
                 memcmp(f1, st, (size_t)d.ns * 4) == 0,
             "inplace/%s T=%lld: final_state == initial_state gives the same o and state",
             la_form_str(form), (long long)T);
    free(o1); free(f1); free(o2); free(st);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Argument errors come back as statuses.

static void bad_args(void) {
    float x[64] = { 0 };
    la_opts o = la_opts_default();
    o.scale = 0.5f;
    la_check(la_hgrn_forward(x, NULL, x, x, NULL, 1, 4, 4, &o) == LA_STATUS_INVALID_ARG,
             "hgrn: scale != 0 rejected");
    o = la_opts_default();
    la_check(la_hgrn_forward(NULL, NULL, x, x, NULL, 1, 4, 4, &o) == LA_STATUS_INVALID_ARG,
             "hgrn: NULL output rejected");
    la_check(la_hgrn_forward(x, NULL, x, NULL, NULL, 1, 4, 4, &o) == LA_STATUS_INVALID_ARG,
             "hgrn: NULL g rejected");
    la_check(la_hgrn_backward(x, NULL, NULL, x, NULL, x, x, NULL, 1, 4, 4, &o) ==
                 LA_STATUS_INVALID_ARG, "hgrn: NULL dg rejected");
    la_check(la_hgrn_forward(x, NULL, x, x, NULL, 1, 4, 0, &o) == LA_STATUS_SHAPE,
             "hgrn: D = 0 rejected");
    la_check(la_hgrn_forward(x, NULL, x, x, NULL, 1, 4, 4, NULL) == LA_STATUS_INVALID_ARG,
             "hgrn: NULL opts rejected");
    int64_t cu[3] = { 0, 3, 2 };
    o.cu_seqlens = cu;
    o.n_seqs = 2;
    la_check(la_hgrn_forward(x, NULL, x, x, NULL, 1, 2, 4, &o) == LA_STATUS_CU_SEQLENS,
             "hgrn: decreasing cu_seqlens rejected");
    o = la_opts_default();
    char small[8];
    o.work = small;
    o.work_size = sizeof small;
    la_check(la_hgrn_forward(x, NULL, x, x, NULL, 1, 4, 4, &o) == LA_STATUS_WORKSPACE,
             "hgrn: small workspace rejected");
}

int main(void) {
    const tcase cases[] = {
        // name          B  T    D    nseq lens                          glo    ghi    init   dfin
        { "basic",       2, 100, 16,  0, {0},                            1,     1,     true,  true },
        { "T1",          3, 1,   5,   0, {0},                            1,     1,     true,  true },
        { "D1",          2, 131, 1,   0, {0},                            1,     1,     true,  false },
        { "odd_blocks",  1, 77,  300, 0, {0},                            1,     1,     false, true },
        { "no_state",    2, 65,  19,  0, {0},                            1,     1,     false, false },
        { "varlen",      1, 0,   13,  6, {70, 0, 1, 64, 129, 3},         1,     1,     true,  true },
        { "varlen_nos",  1, 0,   130, 5, {0, 1, 300, 0, 65},             1,     1,     false, true },
        { "extreme",     1, 150, 33,  0, {0},                            -20,   -1e-6, true,  true },
        { "zero_gate",   1, 90,  17,  0, {0},                            0,     0,     true,  true },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);

    const tcase fdc[] = {
        { "fd",        2, 9, 3, 0, {0},       1,   1,     true, true },
        { "fd_varlen", 1, 0, 2, 4, {4, 0, 1, 5}, 1, 1,    true, true },
        { "fd_strong", 1, 6, 2, 0, {0},       -20, -1e-6, true, true },
    };
    for (size_t i = 0; i < sizeof fdc / sizeof fdc[0]; i++) fd_case(&fdc[i], 200 + i);

    const la_form forms[3] = { LA_FORM_REF, LA_FORM_RECURRENT, LA_FORM_CHUNK };
    for (int f = 0; f < 3; f++) {
        split_case(forms[f], 100, 37, 16, 300);
        split_case(forms[f], 64, 32, 16, 301);
        split_case(forms[f], 10, 1, 4, 302);
        split_case(forms[f], 10, 9, 3, 303);
    }
    for (int f = 0; f < 3; f++) {
        inplace_case(forms[f], 1, 400);
        inplace_case(forms[f], 70, 401);
    }
    bad_args();
    long_sequence();
    return la_test_summary();
}
