// selective_scan (Mamba-1 S6, ALGORITHMS.md 6): an independent float64 oracle written here (a
// direct per-token loop keeping every state, and its adjoint), checked against central finite
// differences of itself for every floating input (u, delta, A, B, C, D, delta_bias,
// initial_state); the library's float64 reference against the oracle; every form (ref,
// recurrent, chunk with several chunk sizes), forward and backward, with 1 and 2 threads,
// against the oracle on awkward shapes (T = 1, Dm = 1, Nst = 1, several channel blocks, varlen
// with sequences of length 0 and 1, optional inputs absent, delta_softplus on and off with
// delta above the threshold 20, dt A down to -1200); bitwise determinism across thread counts;
// the chaining law; final_state aliasing initial_state; a 10^5-token sequence; argument errors.
//
// Tolerances (float32 forms vs the float64 oracle): |got - ref| <= TOL * (max|ref| + |ref|)
// elementwise, TOL = 2e-5 for outputs and states and 5e-5 for gradients (float32 rounding of
// the state and of sums over up to T tokens or Dm channels). The float64 reference vs the
// oracle: 1e-12. Finite differences: step 1e-6 in float64, |analytic - fd| <= 1e-6 (1 + |fd|);
// delta is kept away from the softplus threshold there (softplus jumps by 2e-9 at 20).
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
    int64_t      B, T, Dm, Nst;
    int          nseq;           // > 0: varlen with these lengths
    int64_t      lens[8];
    bool         sp;             // delta_softplus
    int          dmode;          // delta: 0 U[-4,1], 1 U[0.01,1], 2 (3): 0 (1) with a quarter
                                 // of the values in (21, 30)
    double       alo, ahi;       // A = -U[alo, ahi]
    bool         D, bias, init, dfinal;
} tcase;

// Inputs in float (for the library) and the oracle's float64 copies.
typedef struct tdata {
    int64_t  B, T, Dm, Nst, N, ntok, nu, nb, na, ns;
    int64_t  cu[9];
    bool     varlen, sp;
    float *  f[10];   // u, delta, A, Bm, Cm, D, bias, s0, dy, dfin (NULL when absent)
    double * x[10];
} tdata;

enum { U, DL, A_, BM, CM, DD, BI, S0, DY, DF };
static const char * const in_names[8] = { "du", "ddelta", "dA", "dBm", "dCm", "dD",
                                          "ddelta_bias", "dinitial_state" };

static int64_t in_size(const tdata * d, int k) {
    switch (k) {
    case U: case DL: case DY: return d->nu;
    case A_: return d->na;
    case BM: case CM: return d->nb;
    case DD: case BI: return d->Dm;
    default: return d->ns;
    }
}

static void make_data(const tcase * c, tdata * d, la_rng * r) {
    memset(d, 0, sizeof(*d));
    d->B = c->B;
    d->T = c->T;
    d->Dm = c->Dm;
    d->Nst = c->Nst;
    d->N = c->B;
    d->sp = c->sp;
    if (c->nseq > 0) {
        d->N = c->nseq;
        d->T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    d->ntok = d->B * d->T;
    d->nu = d->ntok * d->Dm;
    d->nb = d->ntok * d->Nst;
    d->na = d->Dm * d->Nst;
    d->ns = d->N * d->Dm * d->Nst;
    const bool present[10] = { true, true, true, true, true, c->D, c->bias, c->init, true,
                               c->dfinal };
    for (int k = 0; k < 10; k++)
        if (present[k]) d->f[k] = la_test_alloc((size_t)in_size(d, k) * 4 + 4);
    la_fill_normal(r, d->f[U], d->nu, 1.0);
    la_fill_normal(r, d->f[BM], d->nb, 1.0);
    la_fill_normal(r, d->f[CM], d->nb, 1.0);
    la_fill_normal(r, d->f[DY], d->nu, 1.0);
    la_fill_uniform(r, d->f[A_], d->na, -c->ahi, -c->alo);
    if (c->dmode == 1 || c->dmode == 3) la_fill_uniform(r, d->f[DL], d->nu, 0.01, 1.0);
    else la_fill_uniform(r, d->f[DL], d->nu, -4.0, 1.0);
    if (c->dmode >= 2)  // a quarter of the tokens far above the softplus threshold
        for (int64_t i = 0; i < d->nu; i++)
            if (la_rng_uniform(r) < 0.25) d->f[DL][i] = (float)(21.0 + 9.0 * la_rng_uniform(r));
    if (c->D) la_fill_normal(r, d->f[DD], d->Dm, 1.0);
    if (c->bias) la_fill_uniform(r, d->f[BI], d->Dm, -0.5, 0.5);
    if (c->init) la_fill_normal(r, d->f[S0], d->ns, 1.0);
    if (c->dfinal) la_fill_normal(r, d->f[DF], d->ns, 1.0);
    for (int k = 0; k < 10; k++)
        if (d->f[k]) d->x[k] = la_to_f64(d->f[k], in_size(d, k) + 1);
}

static void free_data(tdata * d) {
    for (int k = 0; k < 10; k++) { free(d->f[k]); free(d->x[k]); }
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C) {
    return la_test_opts(form, C, 0, d->varlen ? d->cu : NULL, d->N);
}

static void seq_bounds(const tdata * d, int64_t n, int64_t * bos, int64_t * eos) {
    la_seq_range(d->varlen ? d->cu : NULL, d->T, n, bos, eos);
}

// ---------------------------------------------------------------------------------------------
// The oracle, straight from the formulas (x[k] are the float64 inputs, NULL when absent).

static double o_softplus(double z) { return z > 20 ? z : log1p(exp(z)); }
static double o_softplus_grad(double z) { return z > 20 ? 1 : 1 / (1 + exp(-z)); }

static double o_dt(const tdata * d, double * const * x, int64_t t, int64_t c) {
    const double z = x[DL][t * d->Dm + c] + (x[BI] ? x[BI][c] : 0.0);
    return d->sp ? o_softplus(z) : z;
}

// y (ntok, Dm), fin (N, Dm, Nst); H (ntok, Dm, Nst) receives every h_t when non-NULL.
static void oracle_fwd(const tdata * d, double * const * x, double * y, double * fin,
                       double * H) {
    const int64_t Dm = d->Dm, Nst = d->Nst;
    double * h = la_test_alloc((size_t)(Dm * Nst) * 8);
    for (int64_t n = 0; n < d->N; n++) {
        int64_t bos, eos;
        seq_bounds(d, n, &bos, &eos);
        for (int64_t e = 0; e < Dm * Nst; e++) h[e] = x[S0] ? x[S0][n * Dm * Nst + e] : 0.0;
        for (int64_t t = bos; t < eos; t++) {
            for (int64_t c = 0; c < Dm; c++) {
                const double dt = o_dt(d, x, t, c), ut = x[U][t * Dm + c];
                double acc = x[DD] ? x[DD][c] * ut : 0.0;
                for (int64_t i = 0; i < Nst; i++) {
                    double * hi = &h[c * Nst + i];
                    *hi = exp(dt * x[A_][c * Nst + i]) * *hi + dt * x[BM][t * Nst + i] * ut;
                    acc += x[CM][t * Nst + i] * *hi;
                }
                y[t * Dm + c] = acc;
            }
            if (H) memcpy(H + t * Dm * Nst, h, (size_t)(Dm * Nst) * 8);
        }
        memcpy(fin + n * Dm * Nst, h, (size_t)(Dm * Nst) * 8);
    }
    free(h);
}

// g[k] receives the gradient of input k (k = U .. S0); all are allocated.
static void oracle_bwd(const tdata * d, double * const * x, double ** g) {
    const int64_t Dm = d->Dm, Nst = d->Nst, S = Dm * Nst;
    double * H = la_test_alloc((size_t)(d->ntok * S + 1) * 8);
    double * y = la_test_alloc((size_t)(d->nu + 1) * 8), * fin = la_test_alloc((size_t)d->ns * 8);
    double * G = la_test_alloc((size_t)S * 8);
    oracle_fwd(d, x, y, fin, H);
    for (int k = U; k <= S0; k++) memset(g[k], 0, (size_t)in_size(d, k) * 8);
    for (int64_t n = 0; n < d->N; n++) {
        int64_t bos, eos;
        seq_bounds(d, n, &bos, &eos);
        for (int64_t e = 0; e < S; e++) G[e] = x[DF] ? x[DF][n * S + e] : 0.0;
        for (int64_t t = eos - 1; t >= bos; t--) {
            for (int64_t c = 0; c < Dm; c++) {
                const double z = x[DL][t * Dm + c] + (x[BI] ? x[BI][c] : 0.0);
                const double dt = d->sp ? o_softplus(z) : z, ut = x[U][t * Dm + c];
                const double dyt = x[DY][t * Dm + c];
                double du = (x[DD] ? x[DD][c] : 0.0) * dyt, ddt = 0;
                for (int64_t i = 0; i < Nst; i++) {
                    const double a = x[A_][c * Nst + i], e = exp(dt * a);
                    const double bt = x[BM][t * Nst + i], ct = x[CM][t * Nst + i];
                    const double hp = t > bos ? H[(t - 1) * S + c * Nst + i]
                                              : (x[S0] ? x[S0][n * S + c * Nst + i] : 0.0);
                    double * Gi = &G[c * Nst + i];
                    *Gi += ct * dyt;                                    // y_t = C_t . h_t + ...
                    g[CM][t * Nst + i] += H[t * S + c * Nst + i] * dyt;
                    // h_t = e h_{t-1} + dt B u, e = exp(dt a)
                    du += *Gi * dt * bt;
                    g[BM][t * Nst + i] += *Gi * dt * ut;
                    ddt += *Gi * (a * e * hp + bt * ut);
                    g[A_][c * Nst + i] += *Gi * dt * e * hp;
                    *Gi *= e;
                }
                g[U][t * Dm + c] = du;
                const double dz = ddt * (d->sp ? o_softplus_grad(z) : 1.0);
                g[DL][t * Dm + c] = dz;
                g[BI][c] += dz;
                g[DD][c] += dyt * ut;
            }
        }
        memcpy(g[S0] + n * S, G, (size_t)S * 8);
    }
    free(H); free(y); free(fin); free(G);
}

typedef struct refout {
    double * y, * fin;
    double * g[8];
} refout;

static void oracle_run(const tdata * d, refout * ro) {
    ro->y = la_test_alloc((size_t)(d->nu + 1) * 8);
    ro->fin = la_test_alloc((size_t)d->ns * 8);
    for (int k = 0; k < 8; k++) ro->g[k] = la_test_alloc((size_t)(in_size(d, k) + 1) * 8);
    oracle_fwd(d, d->x, ro->y, ro->fin, NULL);
    oracle_bwd(d, d->x, ro->g);
}

static void ref_free(refout * r) {
    free(r->y); free(r->fin);
    for (int k = 0; k < 8; k++) free(r->g[k]);
}

// Which gradients a call returns: dD, ddelta_bias only with D, delta_bias; dinit always.
static bool grad_present(const tdata * d, int k) {
    if (k == DD) return d->f[DD] != NULL;
    if (k == BI) return d->f[BI] != NULL;
    return true;
}

// ---------------------------------------------------------------------------------------------
// The library's float64 reference against the oracle.

static la_ref_dims ref_dims(const tdata * d, const la_opts * o) {
    la_ref_dims rd = { { d->B, d->T, d->Dm, d->Nst, 1 }, d->N, o->cu_seqlens, 0 };
    return rd;
}

static void ref64_bwd(const tdata * d, double * const * x, double ** g, double * ws) {
    la_opts o = opts_for(d, LA_FORM_REF, 0);
    la_selective_scan_bwd_ref_f64(g[U], g[DL], g[A_], g[BM], g[CM], x[DD] ? g[DD] : NULL,
                                  x[BI] ? g[BI] : NULL, g[S0], x[DY], x[DF], x[U], x[DL], x[A_],
                                  x[BM], x[CM], x[DD], x[BI], d->sp, x[S0], ref_dims(d, &o), ws);
}

static void check_ref_f64(const tcase * c, const tdata * d, const refout * ro) {
    la_opts o = opts_for(d, LA_FORM_REF, 0);
    la_ref_dims rd = ref_dims(d, &o);
    double * ws = la_test_alloc((size_t)la_selective_scan_ref_ws_elems_f64(rd) * 8);
    double * y = la_test_alloc((size_t)(d->nu + 1) * 8), * fin = la_test_alloc((size_t)d->ns * 8);
    double * g[8];
    for (int k = 0; k < 8; k++) g[k] = la_test_alloc((size_t)(in_size(d, k) + 1) * 8);
    double * const * x = d->x;
    la_selective_scan_fwd_ref_f64(y, fin, x[U], x[DL], x[A_], x[BM], x[CM], x[DD], x[BI], d->sp,
                                  x[S0], rd, ws);
    ref64_bwd(d, x, g, ws);
    char nm[128];
    snprintf(nm, sizeof nm, "%s/ref_f64 y", c->name);
    la_check_rel_dd(nm, y, ro->y, d->nu, TOL_F64);
    snprintf(nm, sizeof nm, "%s/ref_f64 final_state", c->name);
    la_check_rel_dd(nm, fin, ro->fin, d->ns, TOL_F64);
    for (int k = 0; k < 8; k++) {
        if (!grad_present(d, k)) continue;
        snprintf(nm, sizeof nm, "%s/ref_f64 %s", c->name, in_names[k]);
        la_check_rel_dd(nm, g[k], ro->g[k], in_size(d, k), TOL_F64);
    }
    free(ws); free(y); free(fin);
    for (int k = 0; k < 8; k++) free(g[k]);
}

// ---------------------------------------------------------------------------------------------
// One float form against the oracle; res[0..9] = y, final, then the 8 gradients (kept for the
// determinism check when res is non-NULL).

enum { NRES = 10 };

static void check_form(const tcase * c, const tdata * d, const refout * ro, la_form form,
                       int32_t C, int threads, bool caller_ws, float ** res) {
    char nm[128], n2[192];
    la_set_num_threads(threads);
    la_opts o = opts_for(d, form, C);
    void * wbuf = NULL;
    if (caller_ws) {
        size_t need = la_selective_scan_workspace_size(true, d->B, d->T, d->Dm, d->Nst, &o);
        size_t nf = la_selective_scan_workspace_size(false, d->B, d->T, d->Dm, d->Nst, &o);
        need = need > nf ? need : nf;
        wbuf = la_test_alloc(need);
        o.work = wbuf;
        o.work_size = need;
    }
    float * const * f = d->f;
    float * y = la_test_alloc((size_t)d->nu * 4 + 4), * fin = la_test_alloc((size_t)d->ns * 4);
    la_status st = la_selective_scan_forward(y, fin, f[U], f[DL], f[A_], f[BM], f[CM], f[DD],
                                             f[BI], d->sp, f[S0], d->B, d->T, d->Dm, d->Nst, &o);
    snprintf(nm, sizeof nm, "%s/%s/C%d/t%d%s", c->name, la_form_str(form), C, threads,
             caller_ws ? "/ws" : "");
    la_check(st == LA_STATUS_OK, "%s forward status %s", nm, la_status_str(st));
    snprintf(n2, sizeof n2, "%s y", nm);
    la_check_rel(n2, y, ro->y, d->nu, TOL_FWD);
    snprintf(n2, sizeof n2, "%s final_state", nm);
    la_check_rel(n2, fin, ro->fin, d->ns, TOL_FWD);

    float * g[8];
    for (int k = 0; k < 8; k++)
        g[k] = grad_present(d, k) ? la_test_alloc((size_t)in_size(d, k) * 4 + 4) : NULL;
    st = la_selective_scan_backward(g[U], g[DL], g[A_], g[BM], g[CM], g[DD], g[BI], g[S0], f[DY],
                                    f[DF], f[U], f[DL], f[A_], f[BM], f[CM], f[DD], f[BI], d->sp,
                                    f[S0], d->B, d->T, d->Dm, d->Nst, &o);
    la_check(st == LA_STATUS_OK, "%s backward status %s", nm, la_status_str(st));
    for (int k = 0; k < 8; k++) {
        if (!g[k]) continue;
        snprintf(n2, sizeof n2, "%s %s", nm, in_names[k]);
        la_check_rel(n2, g[k], ro->g[k], in_size(d, k), TOL_BWD);
    }
    if (res) {
        res[0] = y;
        res[1] = fin;
        for (int k = 0; k < 8; k++) res[2 + k] = g[k];
    } else {
        free(y); free(fin);
        for (int k = 0; k < 8; k++) free(g[k]);
    }
    free(wbuf);
    la_set_num_threads(0);
}

static void check_determinism(const tcase * c, const tdata * d, const refout * ro, la_form form,
                              int32_t C) {
    float * r1[NRES], * r2[NRES];
    check_form(c, d, ro, form, C, 1, false, r1);
    check_form(c, d, ro, form, C, 2, false, r2);
    bool same = memcmp(r1[0], r2[0], (size_t)d->nu * 4) == 0 &&
                memcmp(r1[1], r2[1], (size_t)d->ns * 4) == 0;
    for (int k = 0; k < 8; k++)
        if (r1[2 + k]) same = same && memcmp(r1[2 + k], r2[2 + k], (size_t)in_size(d, k) * 4) == 0;
    la_check(same, "%s/%s/C%d bitwise identical for 1 and 2 threads", c->name,
             la_form_str(form), C);
    for (int i = 0; i < NRES; i++) { free(r1[i]); free(r2[i]); }
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
    check_form(c, &d, &ro, LA_FORM_REF, 0, 2, true, NULL);
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
// Finite differences of the oracle, L = sum(y * dy) + sum(final * dfinal), for every floating
// input, against the oracle's adjoint and the library's float64 reference.

static double oracle_loss(const tdata * d, double * const * x, double * y, double * fin) {
    oracle_fwd(d, x, y, fin, NULL);
    double L = 0;
    for (int64_t i = 0; i < d->nu; i++) L += y[i] * x[DY][i];
    if (x[DF])
        for (int64_t i = 0; i < d->ns; i++) L += fin[i] * x[DF][i];
    return L;
}

typedef struct fdctx { tdata * d; double * y, * fin; } fdctx;   // y, fin: scratch

static double fd_loss(void * ctx) {
    const fdctx * f = ctx;
    return oracle_loss(f->d, f->d->x, f->y, f->fin);
}

static void fd_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    double * y = la_test_alloc((size_t)(d.nu + 1) * 8), * fin = la_test_alloc((size_t)d.ns * 8);
    double * an[8], * lib[8];
    for (int k = 0; k < 8; k++) {
        an[k] = la_test_alloc((size_t)(in_size(&d, k) + 1) * 8);
        lib[k] = la_test_alloc((size_t)(in_size(&d, k) + 1) * 8);
    }
    oracle_bwd(&d, d.x, an);
    la_opts o = opts_for(&d, LA_FORM_REF, 0);
    double * ws = la_test_alloc((size_t)la_selective_scan_ref_ws_elems_f64(ref_dims(&d, &o)) * 8);
    ref64_bwd(&d, d.x, lib, ws);
    double * fd[8];
    int64_t nk[8];
    for (int k = 0; k < 8; k++) {
        nk[k] = in_size(&d, k);
        fd[k] = la_test_alloc((size_t)(nk[k] + 1) * 8);
    }
    fdctx fc = { &d, y, fin };
    la_fd_grads(8, d.x, nk, fd, 1e-6, fd_loss, &fc);
    char nm[128];
    for (int k = 0; k < 8; k++) {
        if (!d.x[k]) continue;
        snprintf(nm, sizeof nm, "%s/fd %-15s oracle adjoint", c->name, in_names[k]);
        la_check_fd(nm, an[k], fd[k], nk[k], TOL_FD);
        snprintf(nm, sizeof nm, "%s/fd %-15s ref_f64", c->name, in_names[k]);
        la_check_fd(nm, lib[k], fd[k], nk[k], TOL_FD);
    }
    for (int k = 0; k < 8; k++) { free(an[k]); free(lib[k]); free(fd[k]); }
    free(y); free(fin); free(ws);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Chaining law: [0, t) then [t, T) with the state carried equals one call; in the backward the
// second part's dinitial_state is the first part's dfinal_state, and the parameter gradients
// (dA, dD, ddelta_bias) of the two parts add up to the whole call's.

static void split_case(la_form form, int64_t T, int64_t t, int32_t C, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "split", 1, T, 70, 5, 0, {0}, true, 2, 0.5, 8, true, true, true, true };
    tdata d;
    make_data(&c, &d, &r);
    const int64_t Dm = d.Dm, Nst = d.Nst;
    float * const * f = d.f;
    la_opts o = opts_for(&d, form, C);
    float * y_full = la_test_alloc(d.nu * 4 + 4), * f_full = la_test_alloc(d.ns * 4);
    float * y_split = la_test_alloc(d.nu * 4 + 4), * mid = la_test_alloc(d.ns * 4);
    float * f_split = la_test_alloc(d.ns * 4);
    la_selective_scan_forward(y_full, f_full, f[U], f[DL], f[A_], f[BM], f[CM], f[DD], f[BI],
                              true, f[S0], 1, T, Dm, Nst, &o);
    la_selective_scan_forward(y_split, mid, f[U], f[DL], f[A_], f[BM], f[CM], f[DD], f[BI],
                              true, f[S0], 1, t, Dm, Nst, &o);
    la_selective_scan_forward(y_split + t * Dm, f_split, f[U] + t * Dm, f[DL] + t * Dm, f[A_],
                              f[BM] + t * Nst, f[CM] + t * Nst, f[DD], f[BI], true, mid, 1,
                              T - t, Dm, Nst, &o);
    float * g1[8], * g2[8], * gf[8];
    for (int k = 0; k < 8; k++) {
        g1[k] = la_test_alloc((size_t)in_size(&d, k) * 4 + 4);
        g2[k] = la_test_alloc((size_t)in_size(&d, k) * 4 + 4);
        gf[k] = la_test_alloc((size_t)in_size(&d, k) * 4 + 4);
    }
    la_selective_scan_backward(gf[U], gf[DL], gf[A_], gf[BM], gf[CM], gf[DD], gf[BI], gf[S0],
                               f[DY], f[DF], f[U], f[DL], f[A_], f[BM], f[CM], f[DD], f[BI], true,
                               f[S0], 1, T, Dm, Nst, &o);
    // Second part first: its dinitial_state (g2[S0]) is the first part's dfinal_state.
    la_selective_scan_backward(g2[U] + t * Dm, g2[DL] + t * Dm, g2[A_], g2[BM] + t * Nst,
                               g2[CM] + t * Nst, g2[DD], g2[BI], g2[S0], f[DY] + t * Dm, f[DF],
                               f[U] + t * Dm, f[DL] + t * Dm, f[A_], f[BM] + t * Nst,
                               f[CM] + t * Nst, f[DD], f[BI], true, mid, 1, T - t, Dm, Nst, &o);
    la_selective_scan_backward(g1[U], g1[DL], g1[A_], g1[BM], g1[CM], g1[DD], g1[BI], g1[S0],
                               f[DY], g2[S0], f[U], f[DL], f[A_], f[BM], f[CM], f[DD], f[BI],
                               true, f[S0], 1, t, Dm, Nst, &o);
    // Assemble: token-wise gradients from the two parts, parameter gradients summed.
    for (int64_t i = t * Dm; i < T * Dm; i++) {
        g1[U][i] = g2[U][i];
        g1[DL][i] = g2[DL][i];
    }
    for (int64_t i = t * Nst; i < T * Nst; i++) {
        g1[BM][i] = g2[BM][i];
        g1[CM][i] = g2[CM][i];
    }
    for (int64_t i = 0; i < d.na; i++) g1[A_][i] += g2[A_][i];
    for (int64_t i = 0; i < Dm; i++) {
        g1[DD][i] += g2[DD][i];
        g1[BI][i] += g2[BI][i];
    }
    char nm[96];
    snprintf(nm, sizeof nm, "split/%s C%d T=%lld t=%lld y", la_form_str(form), C, (long long)T,
             (long long)t);
    la_check_close(nm, y_split, y_full, d.nu, 1e-5, 1e-5);
    snprintf(nm, sizeof nm, "split/%s C%d T=%lld t=%lld final_state", la_form_str(form), C,
             (long long)T, (long long)t);
    la_check_close(nm, f_split, f_full, d.ns, 1e-5, 1e-5);
    for (int k = 0; k < 8; k++) {
        snprintf(nm, sizeof nm, "split/%s C%d T=%lld t=%lld %s", la_form_str(form), C,
                 (long long)T, (long long)t, in_names[k]);
        la_check_close(nm, g1[k], gf[k], in_size(&d, k), 1e-4, 1e-4);
    }
    for (int k = 0; k < 8; k++) { free(g1[k]); free(g2[k]); free(gf[k]); }
    free(y_full); free(f_full); free(y_split); free(mid); free(f_split);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Long sequence: 10^5 tokens, Dm = 4, Nst = 3, chunk and recurrent against the oracle.

static void long_sequence(void) {
    la_rng r;
    la_rng_seed(&r, 5);
    tcase c = { "long", 1, 100000, 4, 3, 0, {0}, true, 0, 0.01, 2, true, true, true, true };
    tdata d;
    make_data(&c, &d, &r);
    refout ro;
    oracle_run(&d, &ro);
    float * const * f = d.f;
    const la_form forms[2] = { LA_FORM_CHUNK, LA_FORM_RECURRENT };
    for (int fm = 0; fm < 2; fm++) {
        la_opts o = opts_for(&d, forms[fm], 64);
        float * y = la_test_alloc(d.nu * 4), * fin = la_test_alloc(d.ns * 4);
        float * g[8];
        for (int k = 0; k < 8; k++) g[k] = la_test_alloc((size_t)in_size(&d, k) * 4);
        la_selective_scan_forward(y, fin, f[U], f[DL], f[A_], f[BM], f[CM], f[DD], f[BI], true,
                                  f[S0], 1, d.T, d.Dm, d.Nst, &o);
        la_selective_scan_backward(g[U], g[DL], g[A_], g[BM], g[CM], g[DD], g[BI], g[S0], f[DY],
                                   f[DF], f[U], f[DL], f[A_], f[BM], f[CM], f[DD], f[BI], true,
                                   f[S0], 1, d.T, d.Dm, d.Nst, &o);
        char nm[96];
        // Decays as slow as exp(-0.01 dt) keep ~10^3 tokens in the state; the parameter
        // gradients are sums of 10^5 float32 terms: 1e-4 relative to the largest value.
        snprintf(nm, sizeof nm, "long T=1e5 %s y", la_form_str(forms[fm]));
        la_check_rel(nm, y, ro.y, d.nu, 1e-4);
        snprintf(nm, sizeof nm, "long T=1e5 %s final_state", la_form_str(forms[fm]));
        la_check_rel(nm, fin, ro.fin, d.ns, 1e-4);
        for (int k = 0; k < 8; k++) {
            snprintf(nm, sizeof nm, "long T=1e5 %s %s", la_form_str(forms[fm]), in_names[k]);
            la_check_rel(nm, g[k], ro.g[k], in_size(&d, k), 1e-4);
        }
        free(y); free(fin);
        for (int k = 0; k < 8; k++) free(g[k]);
    }
    ref_free(&ro);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// final_state may be initial_state itself (an in-place decode step): same results, bit for bit.

static void inplace_case(la_form form, int64_t T, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tcase c = { "inplace", 2, T, 150, 16, 0, {0}, true, 0, 0.5, 8, true, true, true, true };
    tdata d;
    make_data(&c, &d, &r);
    float * const * f = d.f;
    la_opts o = opts_for(&d, form, 16);
    float * y1 = la_test_alloc(d.nu * 4), * f1 = la_test_alloc(d.ns * 4);
    float * y2 = la_test_alloc(d.nu * 4), * st = la_test_alloc(d.ns * 4);
    memcpy(st, f[S0], (size_t)d.ns * 4);
    la_selective_scan_forward(y1, f1, f[U], f[DL], f[A_], f[BM], f[CM], f[DD], f[BI], true,
                              f[S0], d.B, d.T, d.Dm, d.Nst, &o);
    la_status s2 = la_selective_scan_forward(y2, st, f[U], f[DL], f[A_], f[BM], f[CM], f[DD],
                                             f[BI], true, st, d.B, d.T, d.Dm, d.Nst, &o);
    la_check(s2 == LA_STATUS_OK && memcmp(y1, y2, (size_t)d.nu * 4) == 0 &&
                 memcmp(f1, st, (size_t)d.ns * 4) == 0,
             "inplace/%s T=%lld: final_state == initial_state gives the same y and state",
             la_form_str(form), (long long)T);
    free(y1); free(f1); free(y2); free(st);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Argument errors come back as statuses.

static void bad_args(void) {
    float x[256] = { 0 };
    la_opts o = la_opts_default();
    o.scale = 1.0f;
    la_check(la_selective_scan_forward(x, NULL, x, x, x, x, x, NULL, NULL, true, NULL, 1, 4, 4,
                                       2, &o) == LA_STATUS_INVALID_ARG,
             "selective_scan: scale != 0 rejected");
    o = la_opts_default();
    la_check(la_selective_scan_forward(NULL, NULL, x, x, x, x, x, NULL, NULL, true, NULL, 1, 4,
                                       4, 2, &o) == LA_STATUS_INVALID_ARG,
             "selective_scan: NULL y rejected");
    la_check(la_selective_scan_forward(x, NULL, x, x, x, NULL, x, NULL, NULL, true, NULL, 1, 4,
                                       4, 2, &o) == LA_STATUS_INVALID_ARG,
             "selective_scan: NULL Bm rejected");
    la_check(la_selective_scan_forward(x, NULL, x, x, x, x, x, NULL, NULL, true, NULL, 1, 4, 4,
                                       0, &o) == LA_STATUS_SHAPE,
             "selective_scan: Nst = 0 rejected");
    la_check(la_selective_scan_backward(x, x, x, x, x, NULL, NULL, NULL, x, NULL, x, x, x, x, x,
                                        x, NULL, true, NULL, 1, 4, 4, 2, &o) ==
                 LA_STATUS_INVALID_ARG,
             "selective_scan: D without dD rejected");
    la_check(la_selective_scan_backward(x, x, x, x, NULL, NULL, NULL, NULL, x, NULL, x, x, x, x,
                                        x, NULL, NULL, true, NULL, 1, 4, 4, 2, &o) ==
                 LA_STATUS_INVALID_ARG,
             "selective_scan: NULL dCm rejected");
    int64_t cu[3] = { 0, 5, 4 };
    o.cu_seqlens = cu;
    o.n_seqs = 2;
    la_check(la_selective_scan_forward(x, NULL, x, x, x, x, x, NULL, NULL, true, NULL, 1, 4, 4,
                                       2, &o) == LA_STATUS_CU_SEQLENS,
             "selective_scan: cu_seqlens beyond T rejected");
    o = la_opts_default();
    char small[8];
    o.work = small;
    o.work_size = sizeof small;
    la_check(la_selective_scan_forward(x, NULL, x, x, x, x, x, NULL, NULL, true, NULL, 1, 4, 4,
                                       2, &o) == LA_STATUS_WORKSPACE,
             "selective_scan: small workspace rejected");
}

int main(void) {
    const tcase cases[] = {
        // name        B  T    Dm   Nst nseq lens                     sp     dmode alo   ahi  D      bias   init   dfin
        { "basic",     2, 50,  16,  4,  0, {0},                       true,  0,    0.5,  8,   true,  true,  true,  true },
        { "T1",        3, 1,   5,   3,  0, {0},                       true,  0,    0.5,  8,   true,  true,  true,  true },
        { "Dm1",       2, 70,  1,   16, 0, {0},                       true,  0,    0.5,  8,   true,  false, true,  true },
        { "Nst1",      1, 65,  19,  1,  0, {0},                       true,  0,    0.5,  8,   false, true,  true,  false },
        { "blocks",    1, 40,  150, 5,  0, {0},                       true,  0,    0.5,  8,   true,  true,  true,  true },
        { "bare",      2, 33,  23,  7,  0, {0},                       true,  0,    0.5,  8,   false, false, false, false },
        { "varlen",    1, 0,   13,  4,  6, {70, 0, 1, 64, 129, 3},    true,  0,    0.5,  8,   true,  true,  true,  true },
        { "varlen_mb", 1, 0,   130, 3,  5, {0, 1, 90, 0, 65},         true,  0,    0.5,  8,   true,  true,  false, true },
        { "nosoftplus",2, 45,  21,  6,  0, {0},                       false, 1,    0.5,  8,   true,  true,  true,  true },
        { "above20",   1, 60,  17,  5,  0, {0},                       true,  2,    1,    40,  true,  true,  true,  true },
        { "nosp_big",  1, 60,  17,  5,  0, {0},                       false, 3,    1,    40,  true,  true,  true,  true },
        { "slow",      1, 130, 9,   3,  0, {0},                       true,  0,    1e-4, 1e-3, true, true,  true,  true },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);

    const tcase fdc[] = {
        { "fd",        2, 6, 3, 2, 0, {0},          true,  0, 0.5, 4,  true, true, true, true },
        { "fd_varlen", 1, 0, 2, 3, 4, {4, 0, 1, 3}, true,  0, 0.5, 4,  true, true, true, true },
        { "fd_nosp",   1, 5, 3, 2, 0, {0},          false, 3, 0.01, 0.2, true, true, true, true },
        { "fd_above20",1, 5, 3, 2, 0, {0},          true,  2, 0.01, 0.2, true, true, true, true },
    };
    for (size_t i = 0; i < sizeof fdc / sizeof fdc[0]; i++) fd_case(&fdc[i], 200 + i);

    const la_form forms[3] = { LA_FORM_REF, LA_FORM_RECURRENT, LA_FORM_CHUNK };
    for (int fm = 0; fm < 3; fm++) {
        split_case(forms[fm], 100, 37, 16, 300);
        split_case(forms[fm], 64, 32, 16, 301);
        split_case(forms[fm], 10, 1, 4, 302);
    }
    for (int fm = 0; fm < 3; fm++) {
        inplace_case(forms[fm], 1, 400);
        inplace_case(forms[fm], 70, 401);
    }
    bad_args();
    long_sequence();
    return la_test_summary();
}
