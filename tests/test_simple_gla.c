// simple_gla, retention and linear_attn (without normalisation): every form (ref, recurrent,
// chunk), forward and backward, against the float64 reference recurrence; the float64
// reference's backward against central finite differences; the chaining law; determinism
// across thread counts; extreme gates; and a 10^6-token sequence.
//
// Tolerances (float32 forms vs float64 reference): |got - ref| <= TOL * (max|ref| + |ref|)
// elementwise with TOL = 2e-5 for outputs and states and 5e-5 for gradients (float32 rounding
// over sums of up to T*K terms). Finite differences: step 1e-6 in float64, TOL_FD = 1e-6.
#include "ref.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FWD 2e-5
#define TOL_BWD 5e-5
#define TOL_FD  1e-6

typedef enum { GATE_NONE, GATE_G, GATE_GAMMA } gate_kind;

typedef struct tcase {
    const char * name;
    int64_t      B, T, H, K, V;
    int          nseq;           // > 0: varlen with these lengths
    int64_t      lens[8];
    gate_kind    gate;
    double       glo, ghi;       // g ~ U[glo, ghi] (glo == ghi == 1: logsigmoid(N(0,1)))
    bool         init, dfinal;
    float        scale;          // 0 = default
} tcase;

typedef struct tdata {
    la_shape sh;
    int64_t  N, nq, nv, ng, ns;
    int64_t  cu[9];
    bool     varlen;
    float *  q, * k, * v, * g, * gam, * s0, * dout, * dfin;
} tdata;

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
    d->ng = ntok;
    d->ns = d->N * c->H * c->K * c->V;
    d->q = la_new_normal(r, d->nq, 1.0);
    d->k = la_new_normal(r, d->nq, 1.0);
    la_l2norm_rows(d->k, ntok, c->K);
    d->v = la_new_normal(r, d->nv, 1.0);
    d->dout = la_new_normal(r, d->nv, 1.0);
    if (c->gate == GATE_G) {
        d->g = la_test_alloc(d->ng * 4);
        if (c->glo == 1.0 && c->ghi == 1.0) la_fill_logsigmoid(r, d->g, d->ng);
        else la_fill_uniform(r, d->g, d->ng, c->glo, c->ghi);
    } else if (c->gate == GATE_GAMMA) {
        d->gam = la_new_uniform(r, c->H, c->glo, c->ghi);
    }
    if (c->init) d->s0 = la_new_normal(r, d->ns, 0.5);
    if (c->dfinal) d->dfin = la_new_normal(r, d->ns, 1.0);
}

static void free_data(tdata * d) {
    free(d->q); free(d->k); free(d->v); free(d->g); free(d->gam); free(d->s0);
    free(d->dout); free(d->dfin);
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C, float scale) {
    return la_test_opts(form, C, scale, d->varlen ? d->cu : NULL, d->N);
}

// float64 reference outputs and gradients.
typedef struct refout {
    double * o, * fin, * dq, * dk, * dv, * dg, * ds0;
} refout;

static la_ref_dims ref_dims(const tdata * d, const la_opts * o) {
    la_ref_dims rd = { d->sh, d->N, o->cu_seqlens, 0 };
    rd.scale = o->scale != 0.0f ? (double)o->scale : 1.0 / sqrt((double)d->sh.K);
    return rd;
}

static void ref_run(const tdata * d, const tcase * c, refout * ro) {
    la_opts o = opts_for(d, LA_FORM_REF, 0, c->scale);
    la_ref_dims rd = ref_dims(d, &o);
    double * q = la_to_f64(d->q, d->nq), * k = la_to_f64(d->k, d->nq);
    double * v = la_to_f64(d->v, d->nv), * dout = la_to_f64(d->dout, d->nv);
    double * g = la_to_f64(d->g, d->ng);
    double * gam = la_to_f64(d->gam, c->H);
    double * s0 = la_to_f64(d->s0, d->ns);
    double * dfin = la_to_f64(d->dfin, d->ns);
    double * ws = la_test_alloc((size_t)la_simple_gla_ref_ws_elems_f64(rd) * 8);
    ro->o = la_test_alloc(d->nv * 8);
    ro->fin = la_test_alloc(d->ns * 8);
    ro->dq = la_test_alloc(d->nq * 8);
    ro->dk = la_test_alloc(d->nq * 8);
    ro->dv = la_test_alloc(d->nv * 8);
    ro->dg = g ? la_test_alloc(d->ng * 8) : NULL;
    ro->ds0 = la_test_alloc(d->ns * 8);
    la_simple_gla_fwd_ref_f64(ro->o, ro->fin, q, k, v, g, gam, s0, rd, ws);
    la_simple_gla_bwd_ref_f64(ro->dq, ro->dk, ro->dv, ro->dg, ro->ds0, dout, dfin, q, k, v, g,
                              gam, s0, rd, ws);
    free(q); free(k); free(v); free(dout); free(g); free(gam); free(s0); free(dfin); free(ws);
}

static void ref_free(refout * r) {
    free(r->o); free(r->fin); free(r->dq); free(r->dk); free(r->dv); free(r->dg); free(r->ds0);
}

// One float form (forward and backward) against the float64 reference.
static void check_form(const tcase * c, const tdata * d, const refout * ro, la_form form,
                       int32_t C, int threads) {
    char nm[160];
    la_set_num_threads(threads);
    la_opts o = opts_for(d, form, C, c->scale);
    float * out = la_test_alloc(d->nv * 4), * fin = la_test_alloc(d->ns * 4);
    la_status st = la_simple_gla_forward(out, fin, d->q, d->k, d->v, d->g, d->gam, d->s0, d->sh,
                                         &o);
    snprintf(nm, sizeof nm, "%s/%s/C%d/t%d", c->name, la_form_str(form), C, threads);
    la_check(st == LA_STATUS_OK, "%s forward status %s", nm, la_status_str(st));
    char n2[200];
    snprintf(n2, sizeof n2, "%s o", nm);
    la_check_rel(n2, out, ro->o, d->nv, TOL_FWD);
    snprintf(n2, sizeof n2, "%s final_state", nm);
    la_check_rel(n2, fin, ro->fin, d->ns, TOL_FWD);

    float * dq = la_test_alloc(d->nq * 4), * dk = la_test_alloc(d->nq * 4);
    float * dv = la_test_alloc(d->nv * 4), * ds0 = la_test_alloc(d->ns * 4);
    float * dg = d->g ? la_test_alloc(d->ng * 4) : NULL;
    st = la_simple_gla_backward(dq, dk, dv, dg, ds0, d->dout, d->dfin, d->q, d->k, d->v, d->g,
                                d->gam, d->s0, d->sh, &o);
    la_check(st == LA_STATUS_OK, "%s backward status %s", nm, la_status_str(st));
    snprintf(n2, sizeof n2, "%s dq", nm);
    la_check_rel(n2, dq, ro->dq, d->nq, TOL_BWD);
    snprintf(n2, sizeof n2, "%s dk", nm);
    la_check_rel(n2, dk, ro->dk, d->nq, TOL_BWD);
    snprintf(n2, sizeof n2, "%s dv", nm);
    la_check_rel(n2, dv, ro->dv, d->nv, TOL_BWD);
    snprintf(n2, sizeof n2, "%s dinitial_state", nm);
    la_check_rel(n2, ds0, ro->ds0, d->ns, TOL_BWD);
    if (dg) {
        snprintf(n2, sizeof n2, "%s dg", nm);
        la_check_rel(n2, dg, ro->dg, d->ng, TOL_BWD);
    }
    free(out); free(fin); free(dq); free(dk); free(dv); free(ds0); free(dg);
    la_set_num_threads(0);
}

static void run_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    refout ro;
    ref_run(&d, c, &ro);
    check_form(c, &d, &ro, LA_FORM_REF, 0, 1);
    check_form(c, &d, &ro, LA_FORM_RECURRENT, 0, 2);
    check_form(c, &d, &ro, LA_FORM_CHUNK, 64, 1);
    check_form(c, &d, &ro, LA_FORM_CHUNK, 16, 2);
    check_form(c, &d, &ro, LA_FORM_CHUNK, 5, 2);
    ref_free(&ro);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Finite differences of the float64 reference: L = sum(o * do) + sum(final * dfinal).

typedef struct fdctx {
    const tdata * d;
    la_ref_dims   rd;
    double * const * x;                       // q, k, v, g, initial_state
    const double * gam, * dout, * dfin;
    double * ws, * o, * fin;                  // scratch
} fdctx;

static double ref_loss(void * ctx) {
    const fdctx * f = ctx;
    la_simple_gla_fwd_ref_f64(f->o, f->fin, f->x[0], f->x[1], f->x[2], f->x[3], f->gam, f->x[4],
                              f->rd, f->ws);
    return la_loss_dot(la_loss_dot(0, f->o, f->dout, f->d->nv), f->fin, f->dfin, f->d->ns);
}

static void fd_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    la_opts o = opts_for(&d, LA_FORM_REF, 0, c->scale);
    la_ref_dims rd = ref_dims(&d, &o);
    double * x[6] = { la_to_f64(d.q, d.nq), la_to_f64(d.k, d.nq), la_to_f64(d.v, d.nv),
                      la_to_f64(d.g, d.ng), la_to_f64(d.s0, d.ns),
                      NULL };
    int64_t nx[6] = { d.nq, d.nq, d.nv, d.ng, d.ns, 0 };
    const char * names[6] = { "dq", "dk", "dv", "dg", "dinitial_state", "" };
    double * gam = la_to_f64(d.gam, c->H);
    double * dout = la_to_f64(d.dout, d.nv), * dfin = la_to_f64(d.dfin, d.ns);
    double * ws = la_test_alloc((size_t)la_simple_gla_ref_ws_elems_f64(rd) * 8);
    double * o64 = la_test_alloc(d.nv * 8), * f64 = la_test_alloc(d.ns * 8);
    double * gr[6];
    for (int i = 0; i < 5; i++) gr[i] = x[i] ? la_test_alloc(nx[i] * 8) : NULL;
    la_simple_gla_bwd_ref_f64(gr[0], gr[1], gr[2], gr[3], gr[4], dout, dfin, x[0], x[1], x[2],
                              x[3], gam, x[4], rd, ws);
    double * fd[5];
    for (int i = 0; i < 5; i++) fd[i] = x[i] ? la_test_alloc(nx[i] * 8) : NULL;
    fdctx fc = { &d, rd, x, gam, dout, dfin, ws, o64, f64 };
    la_fd_grads(5, x, nx, fd, 1e-6, ref_loss, &fc);
    for (int i = 0; i < 5; i++) {
        if (!x[i]) continue;
        char nm[128];
        snprintf(nm, sizeof nm, "%s/fd %s", c->name, names[i]);
        // Compare the float64 analytic gradient with FD directly in double.
        la_check_fd(nm, gr[i], fd[i], nx[i], TOL_FD);
        free(fd[i]);
    }
    for (int i = 0; i < 5; i++) { free(x[i]); free(gr[i]); }
    free(gam); free(dout); free(dfin); free(ws); free(o64); free(f64);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Chaining law: [0, t) then [t, T) with the state carried equals one call (B = 1).

static void split_case(la_form form, int64_t T, int64_t t, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "split", 1, T, 2, 16, 8, 0, {0}, GATE_G, 1, 1, true, true, 0 };
    tdata d;
    make_data(&c, &d, &r);
    la_opts o = opts_for(&d, form, 16, 0);
    float * o_full = la_test_alloc(d.nv * 4), * f_full = la_test_alloc(d.ns * 4);
    float * o_split = la_test_alloc(d.nv * 4), * mid = la_test_alloc(d.ns * 4);
    float * f_split = la_test_alloc(d.ns * 4);
    la_simple_gla_forward(o_full, f_full, d.q, d.k, d.v, d.g, NULL, d.s0, d.sh, &o);
    la_shape s1 = d.sh, s2 = d.sh;
    s1.T = t;
    s2.T = T - t;
    const int64_t H = c.H, K = c.K, V = c.V;
    la_simple_gla_forward(o_split, mid, d.q, d.k, d.v, d.g, NULL, d.s0, s1, &o);
    la_simple_gla_forward(o_split + t * H * V, f_split, d.q + t * H * K, d.k + t * H * K,
                          d.v + t * H * V, d.g + t * H, NULL, mid, s2, &o);
    char nm[96];
    snprintf(nm, sizeof nm, "split/%s T=%lld t=%lld o", la_form_str(form), (long long)T,
             (long long)t);
    la_check_close(nm, o_split, o_full, d.nv, 1e-5, 1e-5);
    snprintf(nm, sizeof nm, "split/%s T=%lld t=%lld final_state", la_form_str(form),
             (long long)T, (long long)t);
    la_check_close(nm, f_split, f_full, d.ns, 1e-5, 1e-5);
    free(o_full); free(f_full); free(o_split); free(mid); free(f_split);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Decoding in place: T one-token calls with final_state == initial_state (the state updated
// where it lies) give the outputs and final state of one call. Tolerance 1e-5 (float32).

static void decode_inplace(la_form form) {
    la_rng r;
    la_rng_seed(&r, 400);
    tcase c = { "decode", 2, 23, 3, 16, 8, 0, {0}, GATE_G, 1, 1, true, false, 0 };
    tdata d;
    make_data(&c, &d, &r);
    la_opts o = opts_for(&d, form, 16, 0);
    const int64_t B = c.B, T = d.sh.T, H = c.H, K = c.K, V = c.V;
    float * o_full = la_test_alloc(d.nv * 4), * f_full = la_test_alloc(d.ns * 4);
    la_simple_gla_forward(o_full, f_full, d.q, d.k, d.v, d.g, NULL, d.s0, d.sh, &o);
    float * S = la_test_alloc(d.ns * 4), * o_dec = la_test_alloc(d.nv * 4);
    memcpy(S, d.s0, (size_t)d.ns * 4);
    float * qt = la_test_alloc(B * H * K * 4), * kt = la_test_alloc(B * H * K * 4);
    float * vt = la_test_alloc(B * H * V * 4), * gt = la_test_alloc(B * H * 4);
    float * ot = la_test_alloc(B * H * V * 4);
    la_shape s1 = { B, 1, H, K, V };
    for (int64_t t = 0; t < T; t++) {
        for (int64_t b = 0; b < B; b++) {  // gather token t of every batch row
            memcpy(qt + b * H * K, d.q + (b * T + t) * H * K, (size_t)(H * K) * 4);
            memcpy(kt + b * H * K, d.k + (b * T + t) * H * K, (size_t)(H * K) * 4);
            memcpy(vt + b * H * V, d.v + (b * T + t) * H * V, (size_t)(H * V) * 4);
            memcpy(gt + b * H, d.g + (b * T + t) * H, (size_t)H * 4);
        }
        la_simple_gla_forward(ot, S, qt, kt, vt, gt, NULL, S, s1, &o);
        for (int64_t b = 0; b < B; b++)
            memcpy(o_dec + (b * T + t) * H * V, ot + b * H * V, (size_t)(H * V) * 4);
    }
    char nm[80];
    snprintf(nm, sizeof nm, "decode in place/%s o", la_form_str(form));
    la_check_close(nm, o_dec, o_full, d.nv, 1e-5, 1e-5);
    snprintf(nm, sizeof nm, "decode in place/%s final_state", la_form_str(form));
    la_check_close(nm, S, f_full, d.ns, 1e-5, 1e-5);
    free(o_full); free(f_full); free(S); free(o_dec); free(qt); free(kt); free(vt); free(gt);
    free(ot);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Determinism: the chunk form gives bitwise-identical results for 1 and 2 threads.

static void determinism(void) {
    la_rng r;
    la_rng_seed(&r, 77);
    tcase c = { "det", 2, 300, 3, 32, 24, 0, {0}, GATE_G, 1, 1, true, true, 0 };
    tdata d;
    make_data(&c, &d, &r);
    la_opts o = opts_for(&d, LA_FORM_CHUNK, 64, 0);
    float * a = la_test_alloc(d.nq * 4), * b = la_test_alloc(d.nq * 4);
    float * dk = la_test_alloc(d.nq * 4), * dv = la_test_alloc(d.nv * 4);
    float * dg = la_test_alloc(d.ng * 4);
    la_set_num_threads(1);
    la_simple_gla_backward(a, dk, dv, dg, NULL, d.dout, d.dfin, d.q, d.k, d.v, d.g, NULL, d.s0,
                           d.sh, &o);
    la_set_num_threads(2);
    la_simple_gla_backward(b, dk, dv, dg, NULL, d.dout, d.dfin, d.q, d.k, d.v, d.g, NULL, d.s0,
                           d.sh, &o);
    la_set_num_threads(0);
    la_check(memcmp(a, b, d.nq * 4) == 0, "determinism: chunk dq identical for 1 and 2 threads");
    free(a); free(b); free(dk); free(dv); free(dg);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Long sequence: 10^6 tokens with strong gates, chunk vs recurrent, everything finite.

static void long_sequence(void) {
    la_rng r;
    la_rng_seed(&r, 5);
    tcase c = { "long", 1, 1000000, 1, 8, 8, 0, {0}, GATE_G, -20, 0, false, false, 0 };
    tdata d;
    make_data(&c, &d, &r);
    // Mix in long stretches of exactly-zero gates (no decay) and of -1e-6.
    for (int64_t t = 0; t < d.sh.T; t++) {
        if ((t / 50000) % 3 == 1) d.g[t] = 0.0f;
        else if ((t / 50000) % 3 == 2) d.g[t] = -1e-6f;
    }
    la_opts oc = opts_for(&d, LA_FORM_CHUNK, 64, 0), orr = opts_for(&d, LA_FORM_RECURRENT, 0, 0);
    float * a = la_test_alloc(d.nv * 4), * b = la_test_alloc(d.nv * 4);
    float * fa = la_test_alloc(d.ns * 4), * fb = la_test_alloc(d.ns * 4);
    la_simple_gla_forward(a, fa, d.q, d.k, d.v, d.g, NULL, NULL, d.sh, &oc);
    la_simple_gla_forward(b, fb, d.q, d.k, d.v, d.g, NULL, NULL, d.sh, &orr);
    // Against the float64 reference; tolerance relative to the largest output (the no-decay
    // stretches make outputs grow like the square root of their length).
    la_ref_dims rd = ref_dims(&d, &oc);
    double * q64 = la_to_f64(d.q, d.nq), * k64 = la_to_f64(d.k, d.nq), * v64 = la_to_f64(d.v, d.nv);
    double * g64 = la_to_f64(d.g, d.ng), * o64 = la_test_alloc(d.nv * 8), * f64 = la_test_alloc(d.ns * 8);
    double * ws = la_test_alloc((size_t)la_simple_gla_ref_ws_elems_f64(rd) * 8);
    la_simple_gla_fwd_ref_f64(o64, f64, q64, k64, v64, g64, NULL, NULL, rd, ws);
    la_check_rel("long T=1e6 chunk o", a, o64, d.nv, 1e-4);
    // The recurrent form adds 50,000 undecayed rank-1 updates into one float32 state, so its
    // rounding error grows with the stretch length (about 6e-4 of max|o| measured): 2e-3.
    la_check_rel("long T=1e6 recurrent o", b, o64, d.nv, 2e-3);
    la_check_rel("long T=1e6 chunk final_state", fa, f64, d.ns, 1e-4);
    la_check_rel("long T=1e6 recurrent final_state", fb, f64, d.ns, 1e-4);
    free(q64); free(k64); free(v64); free(g64); free(o64); free(f64); free(ws);
    float * dq = la_test_alloc(d.nq * 4), * dk = la_test_alloc(d.nq * 4);
    float * dv = la_test_alloc(d.nv * 4), * dg = la_test_alloc(d.ng * 4);
    la_simple_gla_backward(dq, dk, dv, dg, NULL, d.dout, NULL, d.q, d.k, d.v, d.g, NULL, NULL,
                           d.sh, &oc);
    bool fin = true;
    for (int64_t i = 0; i < d.nq && fin; i++) fin = isfinite(dq[i]) && isfinite(dk[i]);
    for (int64_t i = 0; i < d.ng && fin; i++) fin = isfinite(dg[i]);
    la_check(fin, "long T=1e6 chunk backward finite");
    free(a); free(b); free(fa); free(fb); free(dq); free(dk); free(dv); free(dg);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// retention = simple_gla(g_gamma = log(1 - 2^(-5-h))), linear_attn = simple_gla(no gate).

static void wrappers(void) {
    la_rng r;
    la_rng_seed(&r, 9);
    tcase c = { "ret", 2, 70, 4, 16, 12, 0, {0}, GATE_NONE, 0, 0, true, true, 0 };
    tdata d;
    make_data(&c, &d, &r);
    float gam[4];
    la_retention_gamma(gam, 4);
    la_check(fabsf(gam[0] - logf(31.0f / 32.0f)) < 1e-7f && fabsf(gam[3] - logf(1 - 1.0f / 256)) < 1e-7f,
             "retention gamma[0] = log(31/32), gamma[3] = log(255/256)");
    for (int f = 0; f < 3; f++) {
        la_opts o = opts_for(&d, (la_form)f, 0, 0);
        float * a = la_test_alloc(d.nv * 4), * b = la_test_alloc(d.nv * 4);
        float * fa = la_test_alloc(d.ns * 4), * fb = la_test_alloc(d.ns * 4);
        la_retention_forward(a, fa, d.q, d.k, d.v, d.s0, d.sh, &o);
        la_simple_gla_forward(b, fb, d.q, d.k, d.v, NULL, gam, d.s0, d.sh, &o);
        char nm[64];
        snprintf(nm, sizeof nm, "retention == simple_gla(gamma) %s", la_form_str((la_form)f));
        la_check(memcmp(a, b, d.nv * 4) == 0 && memcmp(fa, fb, d.ns * 4) == 0, "%s", nm);
        float * dq = la_test_alloc(d.nq * 4), * dk = la_test_alloc(d.nq * 4);
        float * dv = la_test_alloc(d.nv * 4), * ds = la_test_alloc(d.ns * 4);
        float * dq2 = la_test_alloc(d.nq * 4), * dk2 = la_test_alloc(d.nq * 4);
        float * dv2 = la_test_alloc(d.nv * 4), * ds2 = la_test_alloc(d.ns * 4);
        la_retention_backward(dq, dk, dv, ds, d.dout, d.dfin, d.q, d.k, d.v, d.s0, d.sh, &o);
        la_simple_gla_backward(dq2, dk2, dv2, NULL, ds2, d.dout, d.dfin, d.q, d.k, d.v, NULL, gam,
                               d.s0, d.sh, &o);
        la_check(memcmp(dq, dq2, d.nq * 4) == 0 && memcmp(dk, dk2, d.nq * 4) == 0 &&
                     memcmp(dv, dv2, d.nv * 4) == 0 && memcmp(ds, ds2, d.ns * 4) == 0,
                 "retention backward == simple_gla(gamma) backward %s", la_form_str((la_form)f));
        // linear_attn without normalisation is simple_gla with no gate.
        la_linear_attn_forward(a, fa, NULL, d.q, d.k, d.v, d.s0, NULL, false, d.sh, &o);
        la_simple_gla_forward(b, fb, d.q, d.k, d.v, NULL, NULL, d.s0, d.sh, &o);
        la_check(memcmp(a, b, d.nv * 4) == 0, "linear_attn == simple_gla(no gate) %s",
                 la_form_str((la_form)f));
        free(a); free(b); free(fa); free(fb);
        free(dq); free(dk); free(dv); free(ds); free(dq2); free(dk2); free(dv2); free(ds2);
    }
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Argument errors come back as statuses.

static void bad_args(void) {
    float x[64] = {0};
    la_opts o = la_opts_default();
    la_shape sh = { 1, 2, 1, 4, 4 };
    la_check(la_simple_gla_forward(x, NULL, x, x, x, x, x, NULL, sh, &o) == LA_STATUS_INVALID_ARG,
             "g and g_gamma together rejected");
    la_check(la_simple_gla_forward(NULL, NULL, x, x, x, NULL, NULL, NULL, sh, &o) ==
                 LA_STATUS_INVALID_ARG, "NULL output rejected");
    la_shape bad = { 1, 2, 0, 4, 4 };
    la_check(la_simple_gla_forward(x, NULL, x, x, x, NULL, NULL, NULL, bad, &o) == LA_STATUS_SHAPE,
             "H = 0 rejected");
    int64_t cu[3] = { 0, 3, 2 };
    o.cu_seqlens = cu;
    o.n_seqs = 2;
    la_check(la_simple_gla_forward(x, NULL, x, x, x, NULL, NULL, NULL, sh, &o) ==
                 LA_STATUS_CU_SEQLENS, "decreasing cu_seqlens rejected");
    o = la_opts_default();
    o.chunk_size = 1000;
    la_check(la_simple_gla_forward(x, NULL, x, x, x, NULL, NULL, NULL, sh, &o) ==
                 LA_STATUS_INVALID_ARG, "chunk_size 1000 rejected");
    o = la_opts_default();
    char small[8];
    o.work = small;
    o.work_size = sizeof small;
    la_check(la_simple_gla_forward(x, NULL, x, x, x, NULL, NULL, NULL, sh, &o) ==
                 LA_STATUS_WORKSPACE, "small workspace rejected");
}

// A workspace of any alignment works (the queried size carries 64 bytes of slack), and a gate
// of -inf (a hard reset) gives the recurrent form's finite result in the chunk form.
static void workspace_and_reset(void) {
    la_rng r;
    la_rng_seed(&r, 31);
    tcase c = { "reset", 1, 150, 2, 16, 8, 0, {0}, GATE_G, 1, 1, true, true, 0 };
    tdata d;
    make_data(&c, &d, &r);
    for (int64_t t = 40; t < d.sh.T; t += 53) d.g[t * c.H] = -INFINITY;  // head 0 resets
    la_opts oc = opts_for(&d, LA_FORM_CHUNK, 64, 0), orr = opts_for(&d, LA_FORM_RECURRENT, 0, 0);
    float * a = la_test_alloc(d.nv * 4), * b = la_test_alloc(d.nv * 4), * e = la_test_alloc(d.nv * 4);
    float * fa = la_test_alloc(d.ns * 4), * fb = la_test_alloc(d.ns * 4);
    la_simple_gla_forward(a, fa, d.q, d.k, d.v, d.g, NULL, d.s0, d.sh, &oc);
    la_simple_gla_forward(b, fb, d.q, d.k, d.v, d.g, NULL, d.s0, d.sh, &orr);
    la_check_close("gate -inf: chunk o == recurrent o", a, b, d.nv, 1e-5, 1e-5);
    la_check_close("gate -inf: chunk final_state == recurrent", fa, fb, d.ns, 1e-5, 1e-5);
    const size_t need = la_simple_gla_workspace_size(true, d.sh, &oc);
    char * raw = la_test_alloc(need + 8);
    oc.work = raw + 4;  // 4-byte aligned only
    oc.work_size = need;
    la_status st = la_simple_gla_forward(e, NULL, d.q, d.k, d.v, d.g, NULL, d.s0, d.sh, &oc);
    la_check(st == LA_STATUS_OK && memcmp(a, e, d.nv * 4) == 0,
             "misaligned caller workspace: same result (%s)", la_status_str(st));
    free(raw); free(a); free(b); free(e); free(fa); free(fb);
    free_data(&d);
}

// A backward over more than LA_CKPT_ALL chunks keeps sqrt-spaced checkpoints and replays each
// group of boundary states: chunk (C = 64, 313 chunks) against the recurrent form, fixed length
// and varlen, every gradient. Tolerance 1e-4 relative to the largest entry (float32 sums over
// 20,000 tokens in two different orders).
static void long_backward(void) {
    for (int varlen = 0; varlen < 2; varlen++) {
        la_rng r;
        la_rng_seed(&r, 600 + varlen);
        tcase c = { "long_bwd", 1, 20000, 2, 8, 8, 0, {0}, GATE_G, 1, 1, true, true, 0 };
        if (varlen) {
            c.nseq = 4;
            c.lens[0] = 17000; c.lens[1] = 1; c.lens[2] = 0; c.lens[3] = 2999;
        }
        tdata d;
        make_data(&c, &d, &r);
        la_opts oc = opts_for(&d, LA_FORM_CHUNK, 64, 0), orr = opts_for(&d, LA_FORM_RECURRENT, 0, 0);
        float * g1[5], * g2[5];
        const int64_t nn[5] = { d.nq, d.nq, d.nv, d.ng, d.ns };
        for (int i = 0; i < 5; i++) {
            g1[i] = la_test_alloc(nn[i] * 4);
            g2[i] = la_test_alloc(nn[i] * 4);
        }
        la_simple_gla_backward(g1[0], g1[1], g1[2], g1[3], g1[4], d.dout, d.dfin, d.q, d.k, d.v,
                               d.g, NULL, d.s0, d.sh, &oc);
        la_simple_gla_backward(g2[0], g2[1], g2[2], g2[3], g2[4], d.dout, d.dfin, d.q, d.k, d.v,
                               d.g, NULL, d.s0, d.sh, &orr);
        const char * names[5] = { "dq", "dk", "dv", "dg", "dinitial_state" };
        for (int i = 0; i < 5; i++) {
            char nm[96];
            snprintf(nm, sizeof nm, "long backward%s (grouped checkpoints) %s",
                     varlen ? " varlen" : "", names[i]);
            double * ref = la_to_f64(g2[i], nn[i]);
            la_check_rel(nm, g1[i], ref, nn[i], 1e-4);
            free(ref);
            free(g1[i]);
            free(g2[i]);
        }
        free_data(&d);
    }
}

int main(void) {
    const tcase cases[] = {
        // name          B   T    H  K   V  nseq lens             gate        glo   ghi   init  dfin  scale
        { "basic",       2,  100, 2, 16, 8,  0, {0},              GATE_G,     1,    1,    true, true, 0 },
        { "T1",          3,  1,   2, 8,  8,  0, {0},              GATE_G,     1,    1,    true, true, 0 },
        { "H1_KneV",     1,  130, 1, 7,  19, 0, {0},              GATE_G,     1,    1,    false, true, 0.3f },
        { "nogate",      2,  77,  3, 16, 16, 0, {0},              GATE_NONE,  0,    0,    true, true, 0 },
        { "gamma",       1,  200, 4, 32, 16, 0, {0},              GATE_GAMMA, -0.5, -0.01, true, false, 0 },
        { "varlen",      1,  0,   2, 16, 12, 6, {37, 0, 1, 64, 65, 3}, GATE_G, 1,  1,    true, true, 0 },
        { "extreme",     1,  150, 2, 16, 16, 0, {0},              GATE_G,     -20,  -1e-6, true, true, 0 },
        { "zero_gate",   1,  90,  2, 16, 16, 0, {0},              GATE_G,     0,    0,    true, true, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);

    const tcase fdc[] = {
        { "fd_g",      2, 7, 2, 4, 3, 0, {0},       GATE_G,     1, 1, true, true, 0 },
        { "fd_gamma",  1, 9, 2, 3, 5, 0, {0},       GATE_GAMMA, -0.3, -0.05, true, true, 0.7f },
        { "fd_varlen", 1, 0, 1, 4, 3, 3, {4, 0, 5}, GATE_G,     1, 1, true, true, 0 },
    };
    for (size_t i = 0; i < sizeof fdc / sizeof fdc[0]; i++) fd_case(&fdc[i], 200 + i);

    for (int f = 0; f < 3; f++) {
        split_case((la_form)f, 100, 37, 300);
        split_case((la_form)f, 64, 32, 301);
        split_case((la_form)f, 10, 1, 302);
    }
    for (int f = 0; f < 3; f++) decode_inplace((la_form)f);
    determinism();
    wrappers();
    bad_args();
    workspace_and_reset();
    long_backward();
    long_sequence();
    return la_test_summary();
}
