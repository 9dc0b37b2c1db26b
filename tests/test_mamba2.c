// mamba2 (Mamba2's SSD recurrence through simple_gla, OPS.md 2.16): every form (ref, recurrent,
// chunk with C = 64, 16, 5), on 1 and 2 threads, forward and backward, against an independent
// float64 oracle written here from the SSD recurrence itself (not from the simple_gla mapping):
//
//   dt_t = softplus(dt_raw_t + dt_bias_h)   (softplus(u) = u for u > 20, else log(1 + e^u))
//   A_h  = -exp(A_log_h)
//   h_t  = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T       (h in R^{P x Nst} per head)
//   y_t  = h_t C_t + D_h x_t                            (head h reads group h / (H / G))
//
// The library's state is (N, H, Nst, P) = h^T; the oracle keeps h as P x Nst and transposes
// when it reads initial_state and writes final_state / dinitial_state. The oracle's
// hand-derived backward is checked against central finite differences of its forward for every
// floating input (x, dt, A_log, B, C, D, dt_bias, initial_state) with a random dfinal_state,
// and so are the float forms' backward passes on the tiny shapes. The cases thresh_G1/G2 and
// fd_G1_thr/fd_G2_thr drive dt_raw + dt_bias above 20 for a fifth of the tokens (softplus' identity branch, where
// d softplus / du = 1 exactly), some of them to 90..100 where log1p(expf(u)) would overflow.
//
// Tolerances (float32 forms vs float64 references): |got - ref| <= TOL * (max|ref| + |ref|)
// elementwise (la_check_rel, testlib.h):
//   TOL_FWD = 2e-5 for y and final_state (float32 rounding of the decayed sums; measured
//             worst 1.6e-6 of max|ref|);
//   TOL_BWD = 5e-5 for the per-token gradients dx, ddt, dB, dC and dinitial_state (measured
//             worst 1.9e-6); both are test_simple_gla's values;
//   TOL_PAR = 5e-5 for dA_log, dD, ddt_bias, but relative to max_h sum_t |term_t| (the oracle
//            reports these sums) instead of max|ref|: each is a sum over all B*T tokens of
//            per-token float32 terms of both signs, so its rounding error scales with the sum of
//            the magnitudes, not with |sum| (which cancels; measured error up to 3e-4 of |ref|
//            for one head, at most 5e-6 of sum|term|).
// Finite differences: central, step 1e-6, in float64; the oracle's analytic backward must match
// them to TOL_FD = 1e-6 relative to max|grad| (FD error ~1e-9; the comparison rounds the oracle
// gradient to float32, ~6e-8).
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FWD 2e-5
#define TOL_BWD 5e-5
#define TOL_PAR 5e-5
#define TOL_FD  1e-6
#define FD_STEP 1e-6

typedef struct tcase {
    const char * name;
    int64_t      B, T, H, P, Nst, G;
    int          nseq;           // > 0: varlen with these lengths (B = 1)
    int64_t      lens[8];
    bool         useD, bias, init, dfin;
    bool         thresh;         // a fifth of the tokens get dt_raw + dt_bias in [21, 100]
    double       alo, ahi;       // A_log ~ U[alo, ahi]
} tcase;

typedef struct tdata {
    la_shape sh;                 // K = Nst, V = P
    int64_t  G, N, nx, nt, nbc, ns, H;
    int64_t  cu[9];
    bool     varlen;
    float *  x, * dt, * A_log, * Bm, * Cm, * D, * bias, * s0, * dy, * dfin;
} tdata;

static void make_data(const tcase * c, tdata * d, la_rng * r) {
    memset(d, 0, sizeof(*d));
    d->sh = (la_shape){ c->B, c->T, c->H, c->Nst, c->P };
    d->G = c->G;
    d->H = c->H;
    d->N = c->B;
    if (c->nseq > 0) {
        d->N = c->nseq;
        d->sh.T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    const int64_t ntok = d->sh.B * d->sh.T;
    d->nx = ntok * c->H * c->P;
    d->nt = ntok * c->H;
    d->nbc = ntok * c->G * c->Nst;
    d->ns = d->N * c->H * c->Nst * c->P;
    d->dt = la_test_alloc(d->nt * 4);
    d->x = la_new_normal(r, d->nx, 1.0);
    d->Bm = la_new_normal(r, d->nbc, 1.0);
    d->Cm = la_new_normal(r, d->nbc, 1.0);
    d->dy = la_new_normal(r, d->nx, 1.0);
    d->A_log = la_new_uniform(r, c->H, c->alo, c->ahi);
    if (c->useD) d->D = la_new_uniform(r, c->H, -1.0, 1.0);
    if (c->bias) d->bias = la_new_uniform(r, c->H, -2.0, 0.5);
    for (int64_t i = 0; i < d->nt; i++) {
        const float b = d->bias ? d->bias[i % c->H] : 0.0f;
        if (c->thresh && i % 5 == 1) {
            // u in [21, 26], or in [90, 100] (where float log1p(exp(u)) overflows) for every
            // third of these; the strides cycle through the heads.
            const double u = i % 15 == 1 ? 90.0 + 10.0 * la_rng_uniform(r)
                                         : 21.0 + 5.0 * la_rng_uniform(r);
            d->dt[i] = (float)u - b;
        } else
            d->dt[i] = (float)(la_rng_normal(r) - 0.5);
    }
    if (c->init) d->s0 = la_new_normal(r, d->ns, 0.5);
    if (c->dfin) d->dfin = la_new_normal(r, d->ns, 1.0);
}

static void free_data(tdata * d) {
    free(d->x); free(d->dt); free(d->A_log); free(d->Bm); free(d->Cm); free(d->D);
    free(d->bias); free(d->s0); free(d->dy); free(d->dfin);
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C) {
    return la_test_opts(form, C, 0, d->varlen ? d->cu : NULL, d->N);
}

// ---------------------------------------------------------------------------------------------
// The float64 oracle. Token rows r = b*T + t; sequence n covers [n*T, (n+1)*T) or
// [cu[n], cu[n+1]).

typedef struct oin {
    const double * x, * dt, * A_log, * Bm, * Cm, * D, * bias, * s0;  // D, bias, s0 may be NULL
    const double * dy, * dfin;                                       // dfin may be NULL
} oin;

typedef struct oout {
    double * y, * fs;                                                 // forward
    double * dx, * ddt, * dA_log, * dBm, * dCm, * dD, * dbias, * ds0; // backward when dx != NULL
    // Backward: per head, the sum over tokens of |term| for dA_log, dD and ddt_bias (the scale
    // of their float32 rounding error; see TOL_PAR).
    double * sc_A, * sc_D, * sc_b;
} oout;

static void seq_range(const tdata * d, int64_t n, int64_t * t0, int64_t * t1) {
    la_seq_range(d->varlen ? d->cu : NULL, d->sh.T, n, t0, t1);
}

static double softplus_d(double u) { return u > 20.0 ? u : log1p(exp(u)); }
static double dsoftplus_d(double u) { return u > 20.0 ? 1.0 : 1.0 / (1.0 + exp(-u)); }

static void oracle(const tdata * d, const oin * in, oout * out) {
    const int64_t H = d->H, P = d->sh.V, Nst = d->sh.K, G = d->G, hpg = H / G, PN = P * Nst;
    const bool bwd = out->dx != NULL;
    int64_t maxlen = 0;
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        seq_range(d, n, &t0, &t1);
        if (t1 - t0 > maxlen) maxlen = t1 - t0;
    }
    // hs[j] = h after j tokens of the current sequence (hs[0] = h_0).
    double * hs = la_test_alloc((size_t)((maxlen + 1) * PN) * 8);
    double * dh = la_test_alloc((size_t)PN * 8);
    if (bwd) {
        memset(out->dBm, 0, (size_t)d->nbc * 8);
        memset(out->dCm, 0, (size_t)d->nbc * 8);
        memset(out->dA_log, 0, (size_t)H * 8);
        if (out->dD) memset(out->dD, 0, (size_t)H * 8);
        if (out->dbias) memset(out->dbias, 0, (size_t)H * 8);
        memset(out->sc_A, 0, (size_t)H * 8);
        memset(out->sc_D, 0, (size_t)H * 8);
        memset(out->sc_b, 0, (size_t)H * 8);
    }
    for (int64_t n = 0; n < d->N; n++) {
        int64_t t0, t1;
        seq_range(d, n, &t0, &t1);
        for (int64_t h = 0; h < H; h++) {
            const int64_t grp = h / hpg, sb = (n * H + h) * PN;
            const double A = -exp(in->A_log[h]);
            const double Dh = in->D ? in->D[h] : 0.0, bh = in->bias ? in->bias[h] : 0.0;
            for (int64_t p = 0; p < P; p++)
                for (int64_t i = 0; i < Nst; i++)
                    hs[p * Nst + i] = in->s0 ? in->s0[sb + i * P + p] : 0.0;
            for (int64_t t = t0; t < t1; t++) {
                const int64_t row = t * H + h;
                const double * xt = in->x + row * P;
                const double * Bt = in->Bm + (t * G + grp) * Nst, * Ct = in->Cm + (t * G + grp) * Nst;
                const double dtv = softplus_d(in->dt[row] + bh), a = exp(dtv * A);
                const double * hp = hs + (t - t0) * PN;
                double * hc = hs + (t - t0 + 1) * PN;
                for (int64_t p = 0; p < P; p++) {
                    double yv = Dh * xt[p];
                    for (int64_t i = 0; i < Nst; i++) {
                        hc[p * Nst + i] = a * hp[p * Nst + i] + dtv * xt[p] * Bt[i];
                        yv += hc[p * Nst + i] * Ct[i];
                    }
                    out->y[row * P + p] = yv;
                }
            }
            const double * hl = hs + (t1 - t0) * PN;
            for (int64_t p = 0; p < P; p++)
                for (int64_t i = 0; i < Nst; i++) out->fs[sb + i * P + p] = hl[p * Nst + i];
            if (!bwd) continue;
            // dh = dL/dh_t (total), running backwards.
            for (int64_t p = 0; p < P; p++)
                for (int64_t i = 0; i < Nst; i++)
                    dh[p * Nst + i] = in->dfin ? in->dfin[sb + i * P + p] : 0.0;
            double dA = 0;
            for (int64_t t = t1 - 1; t >= t0; t--) {
                const int64_t row = t * H + h;
                const double * xt = in->x + row * P, * dyt = in->dy + row * P;
                const double * Bt = in->Bm + (t * G + grp) * Nst, * Ct = in->Cm + (t * G + grp) * Nst;
                double * dBt = out->dBm + (t * G + grp) * Nst, * dCt = out->dCm + (t * G + grp) * Nst;
                const double u = in->dt[row] + bh, dtv = softplus_d(u), a = exp(dtv * A);
                const double * hp = hs + (t - t0) * PN, * hc = hs + (t - t0 + 1) * PN;
                // y_t = h_t C_t + D x_t
                double sD = 0;
                for (int64_t p = 0; p < P; p++) {
                    sD += dyt[p] * xt[p];
                    out->sc_D[h] += fabs(dyt[p] * xt[p]);
                    for (int64_t i = 0; i < Nst; i++) {
                        dh[p * Nst + i] += dyt[p] * Ct[i];
                        dCt[i] += hc[p * Nst + i] * dyt[p];
                    }
                }
                if (out->dD) out->dD[h] += sD;
                // h_t = a h_{t-1} + dt x_t B_t^T,  a = exp(dt A)
                double da = 0, ddtv = 0;
                for (int64_t p = 0; p < P; p++) {
                    double dxp = Dh * dyt[p];
                    for (int64_t i = 0; i < Nst; i++) {
                        const double g = dh[p * Nst + i];
                        da += g * hp[p * Nst + i];
                        ddtv += g * xt[p] * Bt[i];
                        dxp += dtv * g * Bt[i];
                        dBt[i] += dtv * g * xt[p];
                    }
                    out->dx[row * P + p] = dxp;
                }
                ddtv += da * a * A;
                dA += da * a * dtv;
                out->sc_A[h] += fabs(da * a * dtv * A);
                const double du = ddtv * dsoftplus_d(u);
                out->ddt[row] = du;
                out->sc_b[h] += fabs(du);
                if (out->dbias) out->dbias[h] += du;
                for (int64_t j = 0; j < PN; j++) dh[j] *= a;
            }
            out->dA_log[h] += dA * A;  // dA/dA_log = A
            for (int64_t p = 0; p < P; p++)
                for (int64_t i = 0; i < Nst; i++) out->ds0[sb + i * P + p] = dh[p * Nst + i];
        }
    }
    free(hs); free(dh);
}

typedef struct refset {
    double * y, * fs, * dx, * ddt, * dA_log, * dBm, * dCm, * dD, * dbias, * ds0;
    double * sc_A, * sc_D, * sc_b;  // (H) sum-of-|term| scales of the parameter gradients
} refset;

typedef struct din {
    double * x, * dt, * A_log, * Bm, * Cm, * D, * bias, * s0, * dy, * dfin;
} din;

static din to_f64(const tdata * d) {
    din v;
    v.x = la_to_f64(d->x, d->nx);
    v.dt = la_to_f64(d->dt, d->nt);
    v.A_log = la_to_f64(d->A_log, d->H);
    v.Bm = la_to_f64(d->Bm, d->nbc);
    v.Cm = la_to_f64(d->Cm, d->nbc);
    v.D = la_to_f64(d->D, d->H);
    v.bias = la_to_f64(d->bias, d->H);
    v.s0 = la_to_f64(d->s0, d->ns);
    v.dy = la_to_f64(d->dy, d->nx);
    v.dfin = la_to_f64(d->dfin, d->ns);
    return v;
}

static void din_free(din * v) {
    free(v->x); free(v->dt); free(v->A_log); free(v->Bm); free(v->Cm); free(v->D);
    free(v->bias); free(v->s0); free(v->dy); free(v->dfin);
}

static void ref_alloc(const tdata * d, refset * r) {
    r->y = la_test_alloc(d->nx * 8);
    r->fs = la_test_alloc(d->ns * 8);
    r->dx = la_test_alloc(d->nx * 8);
    r->ddt = la_test_alloc(d->nt * 8);
    r->dA_log = la_test_alloc(d->H * 8);
    r->dBm = la_test_alloc(d->nbc * 8);
    r->dCm = la_test_alloc(d->nbc * 8);
    r->dD = d->D ? la_test_alloc(d->H * 8) : NULL;
    r->dbias = d->bias ? la_test_alloc(d->H * 8) : NULL;
    r->ds0 = la_test_alloc(d->ns * 8);
    r->sc_A = la_test_alloc(d->H * 8);
    r->sc_D = la_test_alloc(d->H * 8);
    r->sc_b = la_test_alloc(d->H * 8);
}

static void ref_free(refset * r) {
    free(r->y); free(r->fs); free(r->dx); free(r->ddt); free(r->dA_log); free(r->dBm);
    free(r->dCm); free(r->dD); free(r->dbias); free(r->ds0);
    free(r->sc_A); free(r->sc_D); free(r->sc_b);
}

static oin make_oin(const din * v) {
    oin in = { v->x, v->dt, v->A_log, v->Bm, v->Cm, v->D, v->bias, v->s0, v->dy, v->dfin };
    return in;
}

static void ref_run(const tdata * d, const din * v, refset * r) {
    oin in = make_oin(v);
    oout out = { r->y, r->fs, r->dx, r->ddt, r->dA_log, r->dBm, r->dCm, r->dD, r->dbias, r->ds0,
                 r->sc_A, r->sc_D, r->sc_b };
    oracle(d, &in, &out);
}

// ---------------------------------------------------------------------------------------------
// Float forms.

typedef struct fres {
    float * y, * fs, * dx, * ddt, * dA_log, * dBm, * dCm, * dD, * dbias, * ds0;
} fres;

static void fres_alloc(const tdata * d, fres * f) {
    f->y = la_test_alloc(d->nx * 4);
    f->fs = la_test_alloc(d->ns * 4);
    f->dx = la_test_alloc(d->nx * 4);
    f->ddt = la_test_alloc(d->nt * 4);
    f->dA_log = la_test_alloc(d->H * 4);
    f->dBm = la_test_alloc(d->nbc * 4);
    f->dCm = la_test_alloc(d->nbc * 4);
    f->dD = d->D ? la_test_alloc(d->H * 4) : NULL;
    f->dbias = d->bias ? la_test_alloc(d->H * 4) : NULL;
    f->ds0 = la_test_alloc(d->ns * 4);
}

static void fres_free(fres * f) {
    free(f->y); free(f->fs); free(f->dx); free(f->ddt); free(f->dA_log); free(f->dBm);
    free(f->dCm); free(f->dD); free(f->dbias); free(f->ds0);
}

static bool fres_equal(const tdata * d, const fres * a, const fres * b) {
    bool ok = memcmp(a->y, b->y, d->nx * 4) == 0 && memcmp(a->fs, b->fs, d->ns * 4) == 0 &&
              memcmp(a->dx, b->dx, d->nx * 4) == 0 && memcmp(a->ddt, b->ddt, d->nt * 4) == 0 &&
              memcmp(a->dA_log, b->dA_log, d->H * 4) == 0 &&
              memcmp(a->dBm, b->dBm, d->nbc * 4) == 0 &&
              memcmp(a->dCm, b->dCm, d->nbc * 4) == 0 && memcmp(a->ds0, b->ds0, d->ns * 4) == 0;
    if (d->D) ok = ok && memcmp(a->dD, b->dD, d->H * 4) == 0;
    if (d->bias) ok = ok && memcmp(a->dbias, b->dbias, d->H * 4) == 0;
    return ok;
}

static void run_form(const tdata * d, la_form form, int32_t C, int threads, fres * f,
                     const char * nm) {
    la_set_num_threads(threads);
    la_opts o = opts_for(d, form, C);
    la_status st = la_mamba2_forward(f->y, f->fs, d->x, d->dt, d->A_log, d->Bm, d->Cm, d->D,
                                     d->bias, d->s0, d->sh, d->G, &o);
    la_check(st == LA_STATUS_OK, "%s forward status %s", nm, la_status_str(st));
    st = la_mamba2_backward(f->dx, f->ddt, f->dA_log, f->dBm, f->dCm, f->dD, f->dbias, f->ds0,
                            d->dy, d->dfin, d->x, d->dt, d->A_log, d->Bm, d->Cm, d->D, d->bias,
                            d->s0, d->sh, d->G, &o);
    la_check(st == LA_STATUS_OK, "%s backward status %s", nm, la_status_str(st));
    la_set_num_threads(0);
}

static void compare(const tdata * d, const fres * f, const refset * r, const char * nm) {
    char n2[240];
#define CMP(field, n, tol)                                                 \
    do {                                                                   \
        snprintf(n2, sizeof n2, "%s %s", nm, #field);                      \
        la_check_rel(n2, f->field, r->field, n, tol);                      \
    } while (0)
    CMP(y, d->nx, TOL_FWD);
    CMP(fs, d->ns, TOL_FWD);
    CMP(dx, d->nx, TOL_BWD);
    CMP(ddt, d->nt, TOL_BWD);
    CMP(dBm, d->nbc, TOL_BWD);
    CMP(dCm, d->nbc, TOL_BWD);
    CMP(ds0, d->ns, TOL_BWD);
#undef CMP
    // Parameter gradients: |got - ref| <= TOL_PAR * (max_h sum_t |term| + |ref|).
#define CMPP(field, sc)                                                                  \
    do {                                                                                 \
        snprintf(n2, sizeof n2, "%s %s", nm, #field);                                    \
        la_check_close_d(n2, f->field, r->field, d->H,                                   \
                         TOL_PAR * (la_maxabs_d(r->sc, d->H) + 1e-30), TOL_PAR);         \
    } while (0)
    CMPP(dA_log, sc_A);
    if (d->D) CMPP(dD, sc_D);
    if (d->bias) CMPP(dbias, sc_b);
#undef CMPP
}

static const struct { la_form form; int32_t C; } FORMS[] = {
    { LA_FORM_REF, 0 }, { LA_FORM_RECURRENT, 0 },
    { LA_FORM_CHUNK, 64 }, { LA_FORM_CHUNK, 16 }, { LA_FORM_CHUNK, 5 },
};
#define NFORMS (sizeof FORMS / sizeof FORMS[0])

static void check_all_forms(const char * cname, const tdata * d, const refset * r) {
    for (size_t fi = 0; fi < NFORMS; fi++) {
        fres f1, f2;
        fres_alloc(d, &f1);
        fres_alloc(d, &f2);
        char nm[160];
        snprintf(nm, sizeof nm, "%s/%s/C%d/t1", cname, la_form_str(FORMS[fi].form), FORMS[fi].C);
        run_form(d, FORMS[fi].form, FORMS[fi].C, 1, &f1, nm);
        compare(d, &f1, r, nm);
        snprintf(nm, sizeof nm, "%s/%s/C%d/t2", cname, la_form_str(FORMS[fi].form), FORMS[fi].C);
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
    din v = to_f64(&d);
    refset ref;
    ref_alloc(&d, &ref);
    ref_run(&d, &v, &ref);
    check_all_forms(c->name, &d, &ref);
    ref_free(&ref);
    din_free(&v);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Central finite differences of the oracle: L = sum(y * dy) + sum(final_state * dfinal_state).

typedef struct fdctx { const tdata * d; const oin * in; refset * scr; } fdctx;

static double loss(void * ctx) {
    const fdctx * fc = ctx;
    const tdata * d = fc->d;
    const oin * in = fc->in;
    refset * scr = fc->scr;
    oout out = { scr->y, scr->fs, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                 NULL };
    oracle(d, in, &out);
    return la_loss_dot(la_loss_dot(0, scr->y, in->dy, d->nx), scr->fs, in->dfin, d->ns);
}

static void fd_case(const tcase * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    tdata d;
    make_data(c, &d, &r);
    din v = to_f64(&d);
    refset ana, fd, scr;
    ref_alloc(&d, &ana);
    ref_alloc(&d, &fd);
    ref_alloc(&d, &scr);
    ref_run(&d, &v, &ana);
    memcpy(fd.y, ana.y, d.nx * 8);
    memcpy(fd.fs, ana.fs, d.ns * 8);
    memcpy(fd.sc_A, ana.sc_A, d.H * 8);
    memcpy(fd.sc_D, ana.sc_D, d.H * 8);
    memcpy(fd.sc_b, ana.sc_b, d.H * 8);
    // The initial state is differentiated at its value, or at zero when none is given.
    double * s0 = la_test_alloc(d.ns * 8);
    if (v.s0) memcpy(s0, v.s0, d.ns * 8);
    oin in = make_oin(&v);
    in.s0 = s0;
    double * params[8] = { v.x, v.dt, v.A_log, v.Bm, v.Cm, v.D, v.bias, s0 };
    double * grads[8] = { fd.dx, fd.ddt, fd.dA_log, fd.dBm, fd.dCm, fd.dD, fd.dbias, fd.ds0 };
    double * agr[8] = { ana.dx, ana.ddt, ana.dA_log, ana.dBm, ana.dCm, ana.dD, ana.dbias, ana.ds0 };
    const int64_t np[8] = { d.nx, d.nt, d.H, d.nbc, d.nbc, d.H, d.H, d.ns };
    const char * gn[8] = { "dx", "ddt", "dA_log", "dB", "dC", "dD", "ddt_bias", "dinitial_state" };
    char nm[160];
    fdctx fc = { &d, &in, &scr };
    la_fd_grads(8, params, np, grads, FD_STEP, loss, &fc);
    for (int p = 0; p < 8; p++) {
        if (!params[p]) continue;
        snprintf(nm, sizeof nm, "%s oracle backward vs FD %s", c->name, gn[p]);
        la_check_rel_as_f32(nm, agr[p], grads[p], np[p], TOL_FD);
    }
    snprintf(nm, sizeof nm, "%s[fd]", c->name);
    check_all_forms(nm, &d, &fd);
    free(s0);
    ref_free(&ana); ref_free(&fd); ref_free(&scr);
    din_free(&v);
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// API rules: opts.scale is ignored; caller-owned workspace; argument errors.

static void api_checks(void) {
    la_rng r;
    la_rng_seed(&r, 21);
    tcase c = { "api", 2, 40, 4, 6, 5, 2, 0, {0}, true, true, true, true, false, -1, 1 };
    tdata d;
    make_data(&c, &d, &r);
    for (size_t fi = 0; fi < NFORMS; fi++) {
        const char * fn = la_form_str(FORMS[fi].form);
        const int C = FORMS[fi].C;
        fres a, b;
        fres_alloc(&d, &a);
        fres_alloc(&d, &b);
        run_form(&d, FORMS[fi].form, C, 1, &a, "api");
        la_set_num_threads(1);
        la_opts o = opts_for(&d, FORMS[fi].form, C);
        o.scale = 0.37f;
        la_status s1 = la_mamba2_forward(b.y, b.fs, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias,
                                         d.s0, d.sh, d.G, &o);
        la_status s2 = la_mamba2_backward(b.dx, b.ddt, b.dA_log, b.dBm, b.dCm, b.dD, b.dbias,
                                          b.ds0, d.dy, d.dfin, d.x, d.dt, d.A_log, d.Bm, d.Cm,
                                          d.D, d.bias, d.s0, d.sh, d.G, &o);
        la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK && fres_equal(&d, &a, &b),
                 "%s/C%d: opts.scale is ignored", fn, C);
        o.scale = 0.0f;
        const size_t wf = la_mamba2_workspace_size(false, d.sh, d.G, &o);
        const size_t wb = la_mamba2_workspace_size(true, d.sh, d.G, &o);
        void * wsf = aligned_alloc(64, (wf + 63) / 64 * 64 + 64);
        void * wsb = aligned_alloc(64, (wb + 63) / 64 * 64 + 64);
        la_opts ow = o;
        ow.work = wsf;
        ow.work_size = wf;
        memset(b.y, 0, d.nx * 4);
        s1 = la_mamba2_forward(b.y, b.fs, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias, d.s0,
                               d.sh, d.G, &ow);
        ow.work = wsb;
        ow.work_size = wb;
        s2 = la_mamba2_backward(b.dx, b.ddt, b.dA_log, b.dBm, b.dCm, b.dD, b.dbias, b.ds0, d.dy,
                                d.dfin, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias, d.s0, d.sh,
                                d.G, &ow);
        la_check(wf > 0 && wb > 0 && s1 == LA_STATUS_OK && s2 == LA_STATUS_OK &&
                     fres_equal(&d, &a, &b),
                 "%s/C%d: caller-owned workspace (fwd %zu, bwd %zu bytes) gives identical results",
                 fn, C, wf, wb);
        ow.work = wsf;
        ow.work_size = wf - 1;
        s1 = la_mamba2_forward(b.y, b.fs, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias, d.s0,
                               d.sh, d.G, &ow);
        ow.work = wsb;
        ow.work_size = wb - 1;
        s2 = la_mamba2_backward(b.dx, b.ddt, b.dA_log, b.dBm, b.dCm, b.dD, b.dbias, b.ds0, d.dy,
                                d.dfin, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias, d.s0, d.sh,
                                d.G, &ow);
        la_check(s1 == LA_STATUS_WORKSPACE && s2 == LA_STATUS_WORKSPACE,
                 "%s/C%d: workspace one byte short rejected (%s, %s)", fn, C,
                 la_status_str(s1), la_status_str(s2));
        la_set_num_threads(0);
        free(wsf); free(wsb);
        fres_free(&a);
        fres_free(&b);
    }
    la_opts o = opts_for(&d, LA_FORM_CHUNK, 0);
    fres b;
    fres_alloc(&d, &b);
    la_check(la_mamba2_forward(b.y, b.fs, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias, d.s0,
                               d.sh, 3, &o) == LA_STATUS_SHAPE, "H %% G != 0 rejected");
    la_check(la_mamba2_forward(b.y, b.fs, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias, d.s0,
                               d.sh, 0, &o) == LA_STATUS_SHAPE, "G = 0 rejected");
    la_check(la_mamba2_forward(NULL, b.fs, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias, d.s0,
                               d.sh, d.G, &o) == LA_STATUS_INVALID_ARG, "NULL y rejected");
    la_check(la_mamba2_forward(b.y, b.fs, d.x, d.dt, NULL, d.Bm, d.Cm, d.D, d.bias, d.s0,
                               d.sh, d.G, &o) == LA_STATUS_INVALID_ARG, "NULL A_log rejected");
    la_check(la_mamba2_backward(b.dx, b.ddt, b.dA_log, b.dBm, b.dCm, NULL, b.dbias, b.ds0, d.dy,
                                d.dfin, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias, d.s0, d.sh,
                                d.G, &o) == LA_STATUS_INVALID_ARG, "D without dD rejected");
    la_check(la_mamba2_backward(b.dx, b.ddt, b.dA_log, b.dBm, b.dCm, b.dD, NULL, b.ds0, d.dy,
                                d.dfin, d.x, d.dt, d.A_log, d.Bm, d.Cm, d.D, d.bias, d.s0, d.sh,
                                d.G, &o) == LA_STATUS_INVALID_ARG,
             "dt_bias without ddt_bias rejected");
    la_check(la_mamba2_backward(b.dx, b.ddt, b.dA_log, b.dBm, b.dCm, b.dD, b.dbias, b.ds0, d.dy,
                                d.dfin, d.x, d.dt, d.A_log, d.Bm, d.Cm, NULL, d.bias, d.s0, d.sh,
                                d.G, &o) == LA_STATUS_INVALID_ARG, "dD without D rejected");
    fres_free(&b);
    free_data(&d);
}

int main(void) {
    const tcase cases[] = {
        // name         B  T    H  P   Nst G  nseq lens                       D      bias   init   dfin   thresh alo  ahi
        { "basic_G2",   2, 100, 4, 16, 8,  2, 0, {0},                       true,  true,  true,  true,  false, -1,  1.5 },
        { "G1_PneN",    1, 77,  4, 8,  16, 1, 0, {0},                       true,  false, false, true,  false, -3,  1 },
        { "GeqH",       2, 70,  4, 5,  3,  4, 0, {0},                       false, true,  true,  false, false, -2,  0.5 },
        { "T1",         3, 1,   2, 4,  4,  1, 0, {0},                       false, true,  true,  true,  false, -1,  1 },
        { "H1",         1, 130, 1, 7,  19, 1, 0, {0},                       true,  true,  true,  true,  false, -4,  -2 },
        { "varlen",     1, 0,   4, 12, 16, 2, 6, {37, 0, 1, 64, 65, 3},     true,  true,  true,  true,  false, -3,  1 },
        { "varlen_min", 1, 0,   2, 3,  5,  1, 4, {0, 70, 1, 0},             false, false, false, true,  false, -3,  0 },
        { "thresh_G1",  1, 90,  2, 8,  8,  1, 0, {0},                       true,  true,  true,  true,  true,  -5,  -3 },
        { "thresh_G2",  2, 50,  4, 6,  4,  2, 0, {0},                       true,  false, true,  true,  true,  -5,  -3 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);

    const tcase fdc[] = {
        { "fd_G2",      2, 7,   4, 3,  2,  2, 0, {0},                       true,  true,  true,  true,  false, -1,  1 },
        { "fd_G1_thr",  1, 9,   2, 2,  3,  1, 0, {0},                       true,  true,  true,  true,  true,  -5,  -3 },
        { "fd_G2_thr",  1, 8,   4, 3,  2,  2, 0, {0},                       true,  true,  false, true,  true,  -5,  -3 },
        { "fd_varlen",  1, 0,   2, 3,  4,  2, 4, {5, 0, 1, 8},              false, false, true,  true,  false, -2,  1 },
        { "fd_noinit",  1, 6,   2, 2,  2,  1, 0, {0},                       true,  true,  false, false, false, -2,  1 },
    };
    for (size_t i = 0; i < sizeof fdc / sizeof fdc[0]; i++) fd_case(&fdc[i], 200 + i);

    api_checks();
    return la_test_summary();
}
