// attn (softmax attention, OPS.md 2.17-2.18): the REF and CHUNK forms, forward (o, lse) and
// backward (dq, dk, dv, dg), against an independent float64 oracle written here (the
// definition with masks, windows, gates, GQA and varlen, and its analytic backward, itself
// checked by central finite differences); the chunk backward against finite differences of
// its own float32 forward; recurrent == chunk; the decode step against the full causal pass (a
// growing cache, a ring with a window, GQA); bitwise determinism across thread counts (which
// also equates the two backward schedules); workspaces; the status of every bad argument.
//
// Tolerances (float32 forms vs the float64 oracle): |got - ref| <= TOL * (max|ref| + |ref|)
// elementwise, TOL_FWD = 2e-5 for o and lse, TOL_BWD = 5e-5 for the gradients (float32 sums of
// up to T*G terms; dg is a reverse cumsum of such sums), TOL_DEC = 2e-5 for decode against the
// chunk form; observed: at most 6% of these with every GEMM kernel. Finite differences of the
// oracle: step 1e-6 in float64, TOL_FD = 1e-6.
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FWD 2e-5
#define TOL_BWD 5e-5
#define TOL_DEC 2e-5
#define TOL_FD  1e-6

// ---------------------------------------------------------------------------------------------
// float64 oracle

typedef struct odims {
    int64_t         B, T, HQ, HKV, K, V, N;
    const int64_t * cu;      // (N+1) or NULL
    int64_t         w;       // window (0: none)
    bool            causal;
    double          scale;
} odims;

typedef struct oin {
    const double * q, * k, * v, * g;  // (B,T,HQ,K), (B,T,HKV,K), (B,T,HKV,V), (B,T,HQ) or NULL
} oin;

// Whether key j is visible to query t (both relative to the sequence start).
static bool o_visible(const odims * d, int64_t t, int64_t j) {
    if (d->causal && j > t) return false;
    if (d->w > 0 && (t - j >= d->w || j - t >= d->w)) return false;
    return true;
}

// Row r of the flat (B*T) axis for token t of sequence n.
static int64_t o_row(const odims * d, int64_t n, int64_t t) {
    return d->cu ? d->cu[n] + t : n * d->T + t;
}
static int64_t o_len(const odims * d, int64_t n) {
    return d->cu ? d->cu[n + 1] - d->cu[n] : d->T;
}

// Logits Z (L, L) of head h of sequence n (-inf where not visible): s q.k + G_t - G_j.
static void o_logits(const odims * d, const oin * x, int64_t n, int64_t h, double * Z) {
    const int64_t L = o_len(d, n), kvh = h / (d->HQ / d->HKV), K = d->K;
    double * G = la_test_alloc((size_t)(L + 1) * 8);
    double acc = 0;
    for (int64_t t = 0; t < L; t++) {
        if (x->g) acc += x->g[o_row(d, n, t) * d->HQ + h];
        G[t] = acc;
    }
    for (int64_t t = 0; t < L; t++)
        for (int64_t j = 0; j < L; j++) {
            if (!o_visible(d, t, j)) {
                Z[t * L + j] = -(double)INFINITY;
                continue;
            }
            const double * qt = x->q + (o_row(d, n, t) * d->HQ + h) * K;
            const double * kj = x->k + (o_row(d, n, j) * d->HKV + kvh) * K;
            double s = 0;
            for (int64_t e = 0; e < K; e++) s += qt[e] * kj[e];
            Z[t * L + j] = d->scale * s + G[t] - G[j];
        }
    free(G);
}

// P = softmax rows of Z (in place); lse (L).
static void o_softmax(double * Z, int64_t L, double * lse) {
    for (int64_t t = 0; t < L; t++) {
        double m = -(double)INFINITY, l = 0;
        for (int64_t j = 0; j < L; j++) m = Z[t * L + j] > m ? Z[t * L + j] : m;
        for (int64_t j = 0; j < L; j++) l += exp(Z[t * L + j] - m);
        lse[t] = m + log(l);
        for (int64_t j = 0; j < L; j++) Z[t * L + j] = exp(Z[t * L + j] - lse[t]);
    }
}

static int64_t o_maxlen(const odims * d) {
    int64_t m = 0;
    for (int64_t n = 0; n < d->N; n++) m = o_len(d, n) > m ? o_len(d, n) : m;
    return m;
}

// o (B,T,HQ,V), lse (B,T,HQ) or NULL.
static void o_forward(const odims * d, const oin * x, double * o, double * lse) {
    const int64_t ML = o_maxlen(d) + 1, V = d->V;
    double * P = la_test_alloc((size_t)(ML * ML) * 8), * ls = la_test_alloc((size_t)ML * 8);
    for (int64_t n = 0; n < d->N; n++)
        for (int64_t h = 0; h < d->HQ; h++) {
            const int64_t L = o_len(d, n), kvh = h / (d->HQ / d->HKV);
            o_logits(d, x, n, h, P);
            o_softmax(P, L, ls);
            for (int64_t t = 0; t < L; t++) {
                double * ot = o + (o_row(d, n, t) * d->HQ + h) * V;
                for (int64_t e = 0; e < V; e++) ot[e] = 0;
                for (int64_t j = 0; j < L; j++) {
                    const double * vj = x->v + (o_row(d, n, j) * d->HKV + kvh) * V;
                    for (int64_t e = 0; e < V; e++) ot[e] += P[t * L + j] * vj[e];
                }
                if (lse) lse[o_row(d, n, t) * d->HQ + h] = ls[t];
            }
        }
    free(P);
    free(ls);
}

// Analytic backward of L = sum(o * dout): dP = dout v^T; dZ = P o (dP - rowsum(P o dP));
// dq = s dZ k; dk = s dZ^T q and dv = P^T dout summed over each kv head's query heads;
// dG_t = rowsum(dZ)_t - colsum(dZ)_t and dg_i = sum_{t >= i} dG_t. Outputs overwritten.
static void o_backward(const odims * d, const oin * x, const double * dout, double * dq,
                       double * dk, double * dv, double * dg) {
    const int64_t ML = o_maxlen(d) + 1, K = d->K, V = d->V;
    double * P = la_test_alloc((size_t)(ML * ML) * 8), * dZ = la_test_alloc((size_t)(ML * ML) * 8);
    double * ls = la_test_alloc((size_t)ML * 8);
    memset(dk, 0, (size_t)(d->B * d->T * d->HKV * K) * 8);
    memset(dv, 0, (size_t)(d->B * d->T * d->HKV * V) * 8);
    for (int64_t n = 0; n < d->N; n++)
        for (int64_t h = 0; h < d->HQ; h++) {
            const int64_t L = o_len(d, n), kvh = h / (d->HQ / d->HKV);
            o_logits(d, x, n, h, P);
            o_softmax(P, L, ls);
            for (int64_t t = 0; t < L; t++) {
                const double * dot = dout + (o_row(d, n, t) * d->HQ + h) * V;
                double D = 0;
                for (int64_t j = 0; j < L; j++) {
                    const double * vj = x->v + (o_row(d, n, j) * d->HKV + kvh) * V;
                    double s = 0;
                    for (int64_t e = 0; e < V; e++) s += dot[e] * vj[e];
                    dZ[t * L + j] = s;
                    D += P[t * L + j] * s;
                }
                for (int64_t j = 0; j < L; j++) dZ[t * L + j] = P[t * L + j] * (dZ[t * L + j] - D);
            }
            for (int64_t t = 0; t < L; t++) {
                const int64_t rt = o_row(d, n, t);
                double * dqt = dq + (rt * d->HQ + h) * K;
                for (int64_t e = 0; e < K; e++) dqt[e] = 0;
                for (int64_t j = 0; j < L; j++) {
                    const int64_t rj = o_row(d, n, j);
                    const double z = dZ[t * L + j], p = P[t * L + j];
                    const double * kj = x->k + (rj * d->HKV + kvh) * K;
                    const double * qt = x->q + (rt * d->HQ + h) * K;
                    const double * dot = dout + (rt * d->HQ + h) * V;
                    double * dkj = dk + (rj * d->HKV + kvh) * K, * dvj = dv + (rj * d->HKV + kvh) * V;
                    for (int64_t e = 0; e < K; e++) {
                        dqt[e] += d->scale * z * kj[e];
                        dkj[e] += d->scale * z * qt[e];
                    }
                    for (int64_t e = 0; e < V; e++) dvj[e] += p * dot[e];
                }
            }
            if (dg) {
                double acc = 0;
                for (int64_t t = L - 1; t >= 0; t--) {
                    double dG = 0;
                    for (int64_t j = 0; j < L; j++) dG += dZ[t * L + j] - dZ[j * L + t];
                    acc += dG;
                    dg[o_row(d, n, t) * d->HQ + h] = acc;
                }
            }
        }
    free(P);
    free(dZ);
    free(ls);
}

// ---------------------------------------------------------------------------------------------
// Cases

enum { GATE_NONE, GATE_LOGSIG, GATE_DEEP };  // none; logsigmoid(N(0,1)); U[-20, 0]

typedef struct tcase {
    const char * name;
    int64_t      B, T, HQ, HKV, K, V;
    int          nseq;        // > 0: varlen with these lengths
    int64_t      lens[8];
    int64_t      w;
    bool         causal;
    int          gate;
    double       qstd;        // q ~ N(0, qstd^2): larger is a peakier softmax
} tcase;

typedef struct tdata {
    la_shape sh;
    odims    od;
    int64_t  nq, nk, nv, no, ng;
    int64_t  cu[9];
    bool     varlen;
    float *  q, * k, * v, * g, * dout;
} tdata;

static void make_data(const tcase * c, tdata * d, la_rng * r) {
    memset(d, 0, sizeof(*d));
    d->sh = (la_shape){ c->B, c->T, c->HQ, c->K, c->V, c->HKV };
    int64_t N = c->B;
    if (c->nseq > 0) {
        N = c->nseq;
        d->sh.T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    const int64_t rows = d->sh.B * d->sh.T;
    d->nq = rows * c->HQ * c->K;
    d->nk = rows * c->HKV * c->K;
    d->nv = rows * c->HKV * c->V;
    d->no = rows * c->HQ * c->V;
    d->ng = rows * c->HQ;
    d->q = la_new_normal(r, d->nq, c->qstd);
    d->k = la_new_normal(r, d->nk, 1.0);
    d->v = la_new_normal(r, d->nv, 1.0);
    d->dout = la_new_normal(r, d->no, 1.0);
    if (c->gate == GATE_LOGSIG) {
        d->g = la_test_alloc((size_t)d->ng * 4 + 4);
        la_fill_logsigmoid(r, d->g, d->ng);
    } else if (c->gate == GATE_DEEP) {
        d->g = la_new_uniform(r, d->ng, -20.0, 0.0);
    }
    d->od = (odims){ d->sh.B, d->sh.T, c->HQ, c->HKV, c->K, c->V, N, d->varlen ? d->cu : NULL,
                     c->w, c->causal, 1.0 / sqrt((double)c->K) };
}

static void free_data(tdata * d) {
    free(d->q); free(d->k); free(d->v); free(d->g); free(d->dout);
}

static la_opts opts_for(const tdata * d, la_form form, int32_t C) {
    return la_test_opts(form, C, 0.0f, d->varlen ? d->cu : NULL, d->od.N);
}

typedef struct refout {
    double * o, * lse, * dq, * dk, * dv, * dg;
} refout;

static void ref_run(const tdata * d, refout * ro) {
    double * q = la_to_f64(d->q, d->nq), * k = la_to_f64(d->k, d->nk);
    double * v = la_to_f64(d->v, d->nv), * g = la_to_f64(d->g, d->ng);
    double * dout = la_to_f64(d->dout, d->no);
    oin x = { q, k, v, g };
    ro->o = la_test_alloc((size_t)d->no * 8 + 8);
    ro->lse = la_test_alloc((size_t)d->ng * 8 + 8);
    ro->dq = la_test_alloc((size_t)d->nq * 8 + 8);
    ro->dk = la_test_alloc((size_t)d->nk * 8 + 8);
    ro->dv = la_test_alloc((size_t)d->nv * 8 + 8);
    ro->dg = g ? la_test_alloc((size_t)d->ng * 8 + 8) : NULL;
    o_forward(&d->od, &x, ro->o, ro->lse);
    o_backward(&d->od, &x, dout, ro->dq, ro->dk, ro->dv, ro->dg);
    free(q); free(k); free(v); free(g); free(dout);
}

static void ref_free(refout * r) {
    free(r->o); free(r->lse); free(r->dq); free(r->dk); free(r->dv); free(r->dg);
}

// Outputs of one float form.
typedef struct fout {
    float * o, * lse, * dq, * dk, * dv, * dg;
} fout;

static void fout_alloc(const tdata * d, fout * f) {
    f->o = la_test_alloc((size_t)d->no * 4 + 4);
    f->lse = la_test_alloc((size_t)d->ng * 4 + 4);
    f->dq = la_test_alloc((size_t)d->nq * 4 + 4);
    f->dk = la_test_alloc((size_t)d->nk * 4 + 4);
    f->dv = la_test_alloc((size_t)d->nv * 4 + 4);
    f->dg = d->g ? la_test_alloc((size_t)d->ng * 4 + 4) : NULL;
}

static void fout_free(fout * f) {
    free(f->o); free(f->lse); free(f->dq); free(f->dk); free(f->dv); free(f->dg);
}

static la_status run_form(const tcase * c, const tdata * d, const la_opts * o, fout * f) {
    la_status st = la_attn_forward(f->o, f->lse, d->q, d->k, d->v, d->g, c->w, c->causal, d->sh, o);
    if (st != LA_STATUS_OK) return st;
    return la_attn_backward(f->dq, f->dk, f->dv, f->dg, d->dout, d->q, d->k, d->v, d->g, f->o,
                            f->lse, c->w, c->causal, d->sh, o);
}

// la_check_rel, except where the reference is exactly 0 everywhere (a window of 1 gives P = 1
// and dq = dk = 0): dP - Delta then cancels only in exact arithmetic, and what is left is the
// float32 rounding of two V-term dot products of unit-normal data (~1e-7 * V, seen up to
// 6e-7 at V = 8), times s|k|: held to an absolute 1e-5.
static void check_grad(const char * name, const float * got, const double * ref, int64_t n) {
    if (la_maxabs_d(ref, n) == 0.0) la_check_close_d(name, got, ref, n, 1e-5, 0.0);
    else la_check_rel(name, got, ref, n, TOL_BWD);
}

static void check_form(const tcase * c, const tdata * d, const refout * ro, la_form form,
                       int32_t C) {
    char nm[128], n2[192];
    snprintf(nm, sizeof nm, "%s/%s/C%d", c->name, la_form_str(form), C);
    la_opts o = opts_for(d, form, C);
    fout f;
    fout_alloc(d, &f);
    la_status st = run_form(c, d, &o, &f);
    la_check(st == LA_STATUS_OK, "%s status %s", nm, la_status_str(st));
    snprintf(n2, sizeof n2, "%s o", nm);
    la_check_rel(n2, f.o, ro->o, d->no, TOL_FWD);
    snprintf(n2, sizeof n2, "%s lse", nm);
    la_check_rel(n2, f.lse, ro->lse, d->ng, TOL_FWD);
    snprintf(n2, sizeof n2, "%s dq", nm);
    check_grad(n2, f.dq, ro->dq, d->nq);
    snprintf(n2, sizeof n2, "%s dk", nm);
    check_grad(n2, f.dk, ro->dk, d->nk);
    snprintf(n2, sizeof n2, "%s dv", nm);
    check_grad(n2, f.dv, ro->dv, d->nv);
    if (f.dg) {
        snprintf(n2, sizeof n2, "%s dg", nm);
        check_grad(n2, f.dg, ro->dg, d->ng);
    }
    // recurrent is the chunk form: bitwise the same.
    if (form == LA_FORM_CHUNK) {
        la_opts orc = opts_for(d, LA_FORM_RECURRENT, C);
        fout r;
        fout_alloc(d, &r);
        st = run_form(c, d, &orc, &r);
        la_check(st == LA_STATUS_OK && memcmp(r.o, f.o, (size_t)d->no * 4) == 0 &&
                     memcmp(r.dq, f.dq, (size_t)d->nq * 4) == 0 &&
                     memcmp(r.dk, f.dk, (size_t)d->nk * 4) == 0,
                 "%s recurrent == chunk", nm);
        fout_free(&r);
    }
    fout_free(&f);
}

static const tcase k_cases[] = {
    // name            B  T   HQ HKV K   V   nseq lens                     w    causal gate qstd
    { "T1",            1, 1,  1, 1,  8,  8,  0, { 0 },                     0,   true,  GATE_NONE,   1.0 },
    { "T65_gqa",       1, 65, 4, 2,  24, 40, 0, { 0 },                     0,   true,  GATE_NONE,   1.0 },
    { "T65_mqa_peaky", 2, 65, 4, 1,  24, 40, 0, { 0 },                     0,   true,  GATE_NONE,   4.0 },
    { "win1",          1, 65, 2, 1,  16, 8,  0, { 0 },                     1,   true,  GATE_NONE,   1.0 },
    { "win7",          2, 70, 4, 2,  24, 40, 0, { 0 },                     7,   true,  GATE_NONE,   1.0 },
    { "win_gt_T",      1, 65, 2, 2,  16, 16, 0, { 0 },                     100, true,  GATE_NONE,   1.0 },
    { "noncausal",     2, 65, 4, 2,  24, 40, 0, { 0 },                     0,   false, GATE_NONE,   1.0 },
    { "noncausal_w7",  1, 80, 4, 1,  16, 24, 0, { 0 },                     7,   false, GATE_NONE,   1.0 },
    { "noncausal_w1",  1, 20, 2, 1,  8,  8,  0, { 0 },                     1,   false, GATE_NONE,   1.0 },
    { "gate",          1, 65, 4, 2,  24, 40, 0, { 0 },                     0,   true,  GATE_LOGSIG, 1.0 },
    { "gate_deep",     2, 70, 2, 1,  16, 24, 0, { 0 },                     0,   true,  GATE_DEEP,   1.0 },
    { "gate_win7",     1, 70, 4, 4,  16, 16, 0, { 0 },                     7,   true,  GATE_LOGSIG, 1.0 },
    { "varlen",        1, 0,  4, 2,  24, 40, 5, { 0, 1, 70, 0, 33 },       0,   true,  GATE_LOGSIG, 1.0 },
    { "varlen_win",    1, 0,  2, 1,  16, 8,  4, { 1, 0, 90, 17 },          9,   true,  GATE_DEEP,   1.0 },
    { "varlen_nc",     1, 0,  3, 1,  16, 8,  4, { 40, 1, 0, 65 },          0,   false, GATE_NONE,   1.0 },
    { "g9_subgroups",  1, 40, 9, 1,  8,  12, 0, { 0 },                     0,   true,  GATE_LOGSIG, 1.0 },
    { "long",          1, 300,2, 1,  64, 64, 0, { 0 },                     0,   true,  GATE_LOGSIG, 1.0 },
};

static void forms_vs_oracle(void) {
    la_rng r;
    la_rng_seed(&r, 1234);
    la_set_num_threads(2);
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
        const tcase * c = &k_cases[i];
        tdata d;
        make_data(c, &d, &r);
        refout ro;
        ref_run(&d, &ro);
        check_form(c, &d, &ro, LA_FORM_REF, 0);
        check_form(c, &d, &ro, LA_FORM_CHUNK, 0);
        check_form(c, &d, &ro, LA_FORM_CHUNK, 16);
        check_form(c, &d, &ro, LA_FORM_CHUNK, 5);
        ref_free(&ro);
        free_data(&d);
    }
    la_set_num_threads(0);
}

// ---------------------------------------------------------------------------------------------
// The oracle's backward against central finite differences of its forward.

typedef struct fd_ctx {
    const odims * d;
    double *      q, * k, * v, * g;
    const double * dout;
    double *      o;
    int64_t       no;
} fd_ctx;

static double fd_loss(void * p) {
    fd_ctx * c = p;
    oin x = { c->q, c->k, c->v, c->g };
    o_forward(c->d, &x, c->o, NULL);
    return la_loss_dot(0.0, c->o, c->dout, c->no);
}

static void oracle_fd(void) {
    static const tcase fc[] = {
        { "fd_gqa_gate",  1, 9, 4, 2, 3, 2, 0, { 0 },        0, true,  GATE_LOGSIG, 1.0 },
        { "fd_deep_win",  2, 8, 2, 1, 3, 2, 0, { 0 },        3, true,  GATE_DEEP,   1.0 },
        { "fd_noncausal", 1, 8, 2, 2, 3, 4, 0, { 0 },        3, false, GATE_NONE,   1.0 },
        { "fd_varlen",    1, 0, 2, 1, 2, 3, 3, { 4, 0, 5 },  0, true,  GATE_LOGSIG, 1.0 },
    };
    la_rng r;
    la_rng_seed(&r, 99);
    for (size_t i = 0; i < sizeof fc / sizeof fc[0]; i++) {
        tdata d;
        make_data(&fc[i], &d, &r);
        double * q = la_to_f64(d.q, d.nq), * k = la_to_f64(d.k, d.nk);
        double * v = la_to_f64(d.v, d.nv), * g = la_to_f64(d.g, d.ng);
        double * dout = la_to_f64(d.dout, d.no);
        double * o = la_test_alloc((size_t)d.no * 8 + 8);
        double * an[4], * fd[4];
        const int64_t n[4] = { d.nq, d.nk, d.nv, d.ng };
        for (int p = 0; p < 4; p++) {
            an[p] = la_test_alloc((size_t)n[p] * 8 + 8);
            fd[p] = la_test_alloc((size_t)n[p] * 8 + 8);
        }
        oin x = { q, k, v, g };
        o_backward(&d.od, &x, dout, an[0], an[1], an[2], g ? an[3] : NULL);
        fd_ctx c = { &d.od, q, k, v, g, dout, o, d.no };
        double * xs[4] = { q, k, v, g };
        la_fd_grads(4, xs, n, fd, 1e-6, fd_loss, &c);
        static const char * names[4] = { "dq", "dk", "dv", "dg" };
        for (int p = 0; p < 4; p++) {
            if (!xs[p]) continue;
            char nm[96];
            snprintf(nm, sizeof nm, "oracle fd %s %s", fc[i].name, names[p]);
            la_check_fd(nm, an[p], fd[p], n[p], TOL_FD);
        }
        for (int p = 0; p < 4; p++) {
            free(an[p]);
            free(fd[p]);
        }
        free(q); free(k); free(v); free(g); free(dout); free(o);
        free_data(&d);
    }
}

// The library's own chunk backward against finite differences of its float32 forward: a
// 4-point stencil (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h with h = 1e-2 on sum(o * dout)
// accumulated in double; truncation O(h^4) and float32 rounding ~1e-7 |L| / h leave a few
// 1e-5 (observed up to 4e-5), held to TOL_FD32 = 1e-3 (|an - fd| <= tol (1 + |fd|)).
#define TOL_FD32 1e-3

static double lib_loss(const tcase * c, const tdata * d, const la_opts * o, float * out) {
    la_status st = la_attn_forward(out, NULL, d->q, d->k, d->v, d->g, c->w, c->causal, d->sh, o);
    if (st != LA_STATUS_OK) return (double)NAN;
    double L = 0;
    for (int64_t i = 0; i < d->no; i++) L += (double)out[i] * (double)d->dout[i];
    return L;
}

static void library_fd(void) {
    static const tcase fc[] = {
        { "lib_fd_gqa_gate",  1, 7, 4, 2, 3, 2, 0, { 0 },       3, true,  GATE_LOGSIG, 1.0 },
        { "lib_fd_noncausal", 1, 6, 2, 1, 3, 4, 0, { 0 },       0, false, GATE_NONE,   1.0 },
        { "lib_fd_varlen",    1, 0, 2, 2, 2, 3, 3, { 3, 0, 4 }, 0, true,  GATE_DEEP,   1.0 },
    };
    la_rng r;
    la_rng_seed(&r, 5);
    for (size_t ci = 0; ci < sizeof fc / sizeof fc[0]; ci++) {
        const tcase * c = &fc[ci];
        tdata d;
        make_data(c, &d, &r);
        la_opts o = opts_for(&d, LA_FORM_CHUNK, 2);  // C = 2: several blocks even at T = 7
        fout f;
        fout_alloc(&d, &f);
        la_status st = run_form(c, &d, &o, &f);
        la_check(st == LA_STATUS_OK, "%s status", c->name);
        float * out = la_test_alloc((size_t)d.no * 4 + 4);
        float * xs[4] = { d.q, d.k, d.v, d.g };
        const float * an[4] = { f.dq, f.dk, f.dv, f.dg };
        const int64_t n[4] = { d.nq, d.nk, d.nv, d.ng };
        static const char * names[4] = { "dq", "dk", "dv", "dg" };
        const float h = 1e-2f;
        for (int p = 0; p < 4; p++) {
            if (!xs[p]) continue;
            double * fd = la_test_alloc((size_t)n[p] * 8 + 8), * a64 = la_to_f64(an[p], n[p]);
            for (int64_t i = 0; i < n[p]; i++) {
                const float x0 = xs[p][i];
                double Ls[4];
                const float st4[4] = { -2 * h, -h, h, 2 * h };
                for (int e = 0; e < 4; e++) {
                    xs[p][i] = x0 + st4[e];
                    Ls[e] = lib_loss(c, &d, &o, out);
                }
                xs[p][i] = x0;
                fd[i] = (Ls[0] - 8 * Ls[1] + 8 * Ls[2] - Ls[3]) / (12.0 * (double)h);
            }
            char nm[96];
            snprintf(nm, sizeof nm, "%s %s vs fd of the float32 forward", c->name, names[p]);
            la_check_fd(nm, a64, fd, n[p], TOL_FD32);
            free(fd);
            free(a64);
        }
        free(out);
        fout_free(&f);
        free_data(&d);
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism, workspaces

// 1 and 2 threads give the same bits. With N * HKV in [2, 4) the chunk backward runs the fused
// schedule on 1 thread and the two-pass one on 2 (at_run), so those cases also check that the
// two schedules agree bitwise; "det_hs1" stacks one head per block (dq accumulated in place).
static void determinism_case(const tcase * c) {
    la_rng r;
    la_rng_seed(&r, 7);
    tdata d;
    make_data(c, &d, &r);
    const la_form forms[2] = { LA_FORM_CHUNK, LA_FORM_REF };
    for (int fi = 0; fi < 2; fi++) {
        la_opts o = opts_for(&d, forms[fi], 0);
        fout a, b;
        fout_alloc(&d, &a);
        fout_alloc(&d, &b);
        la_set_num_threads(1);
        la_status s1 = run_form(c, &d, &o, &a);
        la_set_num_threads(2);
        la_status s2 = run_form(c, &d, &o, &b);
        la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK &&
                     memcmp(a.o, b.o, (size_t)d.no * 4) == 0 &&
                     memcmp(a.lse, b.lse, (size_t)d.ng * 4) == 0 &&
                     memcmp(a.dq, b.dq, (size_t)d.nq * 4) == 0 &&
                     memcmp(a.dk, b.dk, (size_t)d.nk * 4) == 0 &&
                     memcmp(a.dv, b.dv, (size_t)d.nv * 4) == 0 &&
                     (!a.dg || memcmp(a.dg, b.dg, (size_t)d.ng * 4) == 0),
                 "determinism %s %s: 1 and 2 threads bitwise identical", c->name,
                 la_form_str(forms[fi]));
        fout_free(&a);
        fout_free(&b);
    }
    la_set_num_threads(0);
    free_data(&d);
}

static void determinism(void) {
    static const tcase dc[] = {
        { "det_varlen", 1, 0,   4, 2, 32, 24, 3, { 150, 7, 200 }, 50, true,  GATE_LOGSIG, 1.0 },
        { "det_gqa3",   1, 200, 6, 2, 16, 24, 0, { 0 },           0,  true,  GATE_LOGSIG, 1.0 },
        { "det_hs1",    1, 200, 2, 2, 16, 8,  0, { 0 },           30, true,  GATE_DEEP,   1.0 },
        { "det_nc",     1, 150, 3, 3, 16, 8,  0, { 0 },           0,  false, GATE_NONE,   1.0 },
        { "det_b2",     2, 130, 4, 1, 16, 16, 0, { 0 },           0,  true,  GATE_NONE,   1.0 },
    };
    for (size_t i = 0; i < sizeof dc / sizeof dc[0]; i++) determinism_case(&dc[i]);
}

static void workspaces(void) {
    const tcase c = { "ws", 1, 90, 4, 2, 16, 8, 0, { 0 }, 0, true, GATE_LOGSIG, 1.0 };
    la_rng r;
    la_rng_seed(&r, 8);
    tdata d;
    make_data(&c, &d, &r);
    const la_form forms[2] = { LA_FORM_CHUNK, LA_FORM_REF };
    for (int fi = 0; fi < 2; fi++) {
        la_opts o = opts_for(&d, forms[fi], 0);
        fout a, b;
        fout_alloc(&d, &a);
        fout_alloc(&d, &b);
        la_check(run_form(&c, &d, &o, &a) == LA_STATUS_OK, "ws %s: own allocation",
                 la_form_str(forms[fi]));
        // A caller's block, deliberately misaligned, of exactly the queried size.
        const size_t need = la_attn_workspace_size(true, d.sh, &o);
        const size_t need_f = la_attn_workspace_size(false, d.sh, &o);
        la_check(need > 0 && need_f > 0, "ws %s: sizes %zu %zu", la_form_str(forms[fi]), need,
                 need_f);
        char * blk = la_test_alloc(need + 8);
        o.work = blk + 4;
        o.work_size = need;
        la_status st = run_form(&c, &d, &o, &b);
        la_check(st == LA_STATUS_OK && memcmp(a.o, b.o, (size_t)d.no * 4) == 0 &&
                     memcmp(a.dq, b.dq, (size_t)d.nq * 4) == 0 &&
                     memcmp(a.dk, b.dk, (size_t)d.nk * 4) == 0 &&
                     memcmp(a.dg, b.dg, (size_t)d.ng * 4) == 0,
                 "ws %s: caller workspace, same result (%s)", la_form_str(forms[fi]),
                 la_status_str(st));
        o.work_size = need_f - 1;
        st = la_attn_forward(b.o, b.lse, d.q, d.k, d.v, d.g, 0, true, d.sh, &o);
        la_check(st == LA_STATUS_WORKSPACE, "ws %s: forward, too small -> %s",
                 la_form_str(forms[fi]), la_status_str(st));
        o.work_size = need - 1;
        st = la_attn_backward(b.dq, b.dk, b.dv, b.dg, d.dout, d.q, d.k, d.v, d.g, a.o, a.lse, 0,
                              true, d.sh, &o);
        la_check(st == LA_STATUS_WORKSPACE, "ws %s: backward, too small -> %s",
                 la_form_str(forms[fi]), la_status_str(st));
        free(blk);
        fout_free(&a);
        fout_free(&b);
    }
    free_data(&d);
}

// ---------------------------------------------------------------------------------------------
// Decode: step by step against the full causal pass.

// N = 2 sequences of T tokens; sequence 1 starts with `pre` tokens already cached. Each step
// appends one token per sequence; o must equal row (pre_n + step) of the chunk form's o.
static void decode_case(const char * name, int64_t HQ, int64_t HKV, int64_t K, int64_t V,
                        int64_t T, int64_t pre, int64_t w, int64_t cap) {
    la_rng r;
    la_rng_seed(&r, 31);
    const int64_t N = 2;
    la_shape full = { N, T, HQ, K, V, HKV };
    float * q = la_new_normal(&r, N * T * HQ * K, 1.0), * k = la_new_normal(&r, N * T * HKV * K, 1.0);
    float * v = la_new_normal(&r, N * T * HKV * V, 1.0);
    float * of = la_test_alloc((size_t)(N * T * HQ * V) * 4);
    la_opts oc = la_opts_default();
    la_status st = la_attn_forward(of, NULL, q, k, v, NULL, w, true, full, &oc);
    la_check(st == LA_STATUS_OK, "decode %s: full pass %s", name, la_status_str(st));
    float * kc = la_test_alloc((size_t)(N * cap * HKV * K) * 4);
    float * vc = la_test_alloc((size_t)(N * cap * HKV * V) * 4);
    int64_t len[2] = { 0, pre };
    // Prefill sequence 1's first `pre` tokens into their slots.
    for (int64_t p = 0; p < pre; p++) {
        memcpy(kc + ((1 * cap + p % cap) * HKV) * K, k + ((1 * T + p) * HKV) * K,
               (size_t)(HKV * K) * 4);
        memcpy(vc + ((1 * cap + p % cap) * HKV) * V, v + ((1 * T + p) * HKV) * V,
               (size_t)(HKV * V) * 4);
    }
    la_shape sh = { N, 1, HQ, K, V, HKV };
    float * qs = la_test_alloc((size_t)(N * HQ * K) * 4), * ks = la_test_alloc((size_t)(N * HKV * K) * 4);
    float * vs = la_test_alloc((size_t)(N * HKV * V) * 4), * os = la_test_alloc((size_t)(N * HQ * V) * 4);
    float * got = la_test_alloc((size_t)(N * T * HQ * V) * 4);
    double * want = la_test_alloc((size_t)(N * T * HQ * V) * 8);
    int64_t cnt = 0;
    bool ok = true;
    for (int64_t s = 0; s + pre < T; s++) {
        for (int64_t n = 0; n < N; n++) {
            const int64_t t = len[n];
            memcpy(qs + n * HQ * K, q + (n * T + t) * HQ * K, (size_t)(HQ * K) * 4);
            memcpy(ks + n * HKV * K, k + (n * T + t) * HKV * K, (size_t)(HKV * K) * 4);
            memcpy(vs + n * HKV * V, v + (n * T + t) * HKV * V, (size_t)(HKV * V) * 4);
        }
        const int64_t before[2] = { len[0], len[1] };
        st = la_attn_decode(os, qs, ks, vs, kc, vc, len, cap, w, sh, &oc);
        ok = ok && st == LA_STATUS_OK && len[0] == before[0] + 1 && len[1] == before[1] + 1;
        for (int64_t n = 0; n < N; n++) {
            const int64_t t = before[n];
            memcpy(got + cnt * HQ * V, os + n * HQ * V, (size_t)(HQ * V) * 4);
            for (int64_t e = 0; e < HQ * V; e++)
                want[cnt * HQ * V + e] = (double)of[(n * T + t) * HQ * V + e];
            cnt++;
        }
    }
    la_check(ok, "decode %s: every step ok, cache_len advanced", name);
    char nm[96];
    snprintf(nm, sizeof nm, "decode %s: o == full causal pass", name);
    la_check_rel(nm, got, want, cnt * HQ * V, TOL_DEC);
    free(q); free(k); free(v); free(of); free(kc); free(vc); free(qs); free(ks); free(vs);
    free(os); free(got); free(want);
}

static void decode_tests(void) {
    la_set_num_threads(2);
    decode_case("growing", 2, 2, 16, 24, 90, 5, 0, 90);
    decode_case("gqa", 6, 2, 24, 8, 70, 13, 0, 128);
    decode_case("g9", 9, 1, 8, 8, 40, 3, 0, 40);
    decode_case("ring_w7", 4, 2, 16, 16, 150, 20, 7, 7);
    decode_case("ring_w7_cap10", 4, 1, 16, 16, 150, 20, 7, 10);
    decode_case("window1", 2, 1, 8, 8, 30, 2, 1, 1);
    la_set_num_threads(0);
}

// ---------------------------------------------------------------------------------------------
// Bad arguments: one status per bad input, nothing written on error.

static void bad_args(void) {
    float x[4096] = { 0 };
    la_opts o = la_opts_default();
    la_shape sh = { 1, 8, 4, 8, 8, 2 };
    float * y = la_test_alloc(4096 * 4);
#define ST(expr, want, what) \
    do { la_status s_ = (expr); la_check(s_ == (want), "bad args: %s -> %s", what, la_status_str(s_)); } while (0)
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, sh, &o), LA_STATUS_OK, "valid call");
    ST(la_attn_forward(y, y + 2048, x, x, x, x, 3, true, sh, &o), LA_STATUS_OK, "gated window");
    ST(la_attn_forward(NULL, NULL, x, x, x, NULL, 0, true, sh, &o), LA_STATUS_INVALID_ARG, "NULL o");
    ST(la_attn_forward(y, NULL, NULL, x, x, NULL, 0, true, sh, &o), LA_STATUS_INVALID_ARG, "NULL q");
    ST(la_attn_forward(y, NULL, x, NULL, x, NULL, 0, true, sh, &o), LA_STATUS_INVALID_ARG, "NULL k");
    ST(la_attn_forward(y, NULL, x, x, NULL, NULL, 0, true, sh, &o), LA_STATUS_INVALID_ARG, "NULL v");
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, sh, NULL), LA_STATUS_INVALID_ARG, "NULL opts");
    ST(la_attn_forward(y, NULL, x, x, x, NULL, -1, true, sh, &o), LA_STATUS_INVALID_ARG, "window < 0");
    ST(la_attn_forward(y, NULL, x, x, x, x, 0, false, sh, &o), LA_STATUS_INVALID_ARG,
       "gate with causal = false");
    la_shape bad = sh;
    bad.HV = 3;
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, bad, &o), LA_STATUS_SHAPE, "HQ % HKV != 0");
    bad.HV = -1;
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, bad, &o), LA_STATUS_SHAPE, "HKV < 0");
    bad = sh;
    bad.K = 0;
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, bad, &o), LA_STATUS_SHAPE, "K = 0");
    bad = sh;
    bad.T = -1;
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, bad, &o), LA_STATUS_SHAPE, "T < 0");
    bad = sh;
    bad.T = 0;
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, bad, &o), LA_STATUS_OK, "T = 0");
    ST(la_attn_backward(y, y, y, NULL, x, x, x, x, NULL, x, x, 0, true, bad, &o), LA_STATUS_OK,
       "backward T = 0");
    la_opts ob = o;
    ob.use_qk_l2norm_in_kernel = true;
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, sh, &ob), LA_STATUS_INVALID_ARG,
       "delta-family flag");
    ob = o;
    ob.chunk_size = 1000;
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, sh, &ob), LA_STATUS_INVALID_ARG,
       "chunk_size 1000");
    ob = o;
    ob.form = (la_form)7;
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, sh, &ob), LA_STATUS_INVALID_ARG, "bad form");
    const int64_t cu_bad[3] = { 0, 5, 4 }, cu_ok[3] = { 0, 3, 8 };
    la_opts ov = la_test_opts(LA_FORM_CHUNK, 0, 0.0f, cu_bad, 2);
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, sh, &ov), LA_STATUS_CU_SEQLENS,
       "decreasing cu_seqlens");
    ov = la_test_opts(LA_FORM_CHUNK, 0, 0.0f, cu_ok, 2);
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, sh, &ov), LA_STATUS_OK, "varlen");
    la_shape sh2 = sh;
    sh2.B = 2;
    ST(la_attn_forward(y, NULL, x, x, x, NULL, 0, true, sh2, &ov), LA_STATUS_CU_SEQLENS,
       "varlen with B = 2");
    bad = sh;
    bad.HV = 3;
    la_check(la_attn_workspace_size(false, bad, &o) == 0, "bad args: workspace size of a bad shape is 0");
    // Backward.
    ST(la_attn_backward(y, y, y, NULL, x, x, x, x, NULL, x, x, 0, true, sh, &o), LA_STATUS_OK,
       "valid backward");
    ST(la_attn_backward(y, y, y, NULL, x, x, x, x, NULL, x, NULL, 0, true, sh, &o),
       LA_STATUS_INVALID_ARG, "backward NULL lse");
    ST(la_attn_backward(y, y, y, NULL, x, x, x, x, NULL, NULL, x, 0, true, sh, &o),
       LA_STATUS_INVALID_ARG, "backward NULL o");
    ST(la_attn_backward(y, y, y, NULL, NULL, x, x, x, NULL, x, x, 0, true, sh, &o),
       LA_STATUS_INVALID_ARG, "backward NULL dout");
    ST(la_attn_backward(NULL, y, y, NULL, x, x, x, x, NULL, x, x, 0, true, sh, &o),
       LA_STATUS_INVALID_ARG, "backward NULL dq");
    ST(la_attn_backward(y, y, y, y, x, x, x, x, NULL, x, x, 0, true, sh, &o),
       LA_STATUS_INVALID_ARG, "backward dg without g");
    ST(la_attn_backward(y, y, y, NULL, x, x, x, x, x, x, x, 0, true, sh, &o),
       LA_STATUS_INVALID_ARG, "backward g without dg");
    ST(la_attn_backward(y, y, y, y, x, x, x, x, x, x, x, 0, false, sh, &o),
       LA_STATUS_INVALID_ARG, "backward gate with causal = false");
    ST(la_attn_backward(y, y, y, NULL, x, x, x, x, NULL, x, x, -2, true, sh, &o),
       LA_STATUS_INVALID_ARG, "backward window < 0");
    // Decode: nothing written on error.
    la_shape sd = { 2, 1, 4, 8, 8, 2 };
    float kc[2 * 4 * 2 * 8], vc[2 * 4 * 2 * 8], oo[2 * 4 * 8];
    for (int i = 0; i < 2 * 4 * 2 * 8; i++) kc[i] = vc[i] = (float)i;
    for (int i = 0; i < 2 * 4 * 8; i++) oo[i] = -1.0f;
    float kc0[sizeof kc / 4], vc0[sizeof vc / 4], oo0[sizeof oo / 4];
    memcpy(kc0, kc, sizeof kc);
    memcpy(vc0, vc, sizeof vc);
    memcpy(oo0, oo, sizeof oo);
    int64_t len[2] = { 3, 4 };  // sequence 1 would need a 5th slot of a capacity-4 cache
    ST(la_attn_decode(oo, x, x, x, kc, vc, len, 4, 0, sd, &o), LA_STATUS_INVALID_ARG,
       "decode: cache full");
    la_check(len[0] == 3 && len[1] == 4 && memcmp(kc, kc0, sizeof kc) == 0 &&
                 memcmp(vc, vc0, sizeof vc) == 0 && memcmp(oo, oo0, sizeof oo) == 0,
             "decode: nothing written on error");
    ST(la_attn_decode(oo, x, x, x, kc, vc, len, 4, 5, sd, &o), LA_STATUS_INVALID_ARG,
       "decode: ring smaller than the window");
    ST(la_attn_decode(oo, x, x, x, kc, vc, len, 4, 4, sd, &o), LA_STATUS_OK, "decode: ring = window");
    la_check(len[0] == 4 && len[1] == 5, "decode: cache_len advanced");
    len[0] = -1;
    ST(la_attn_decode(oo, x, x, x, kc, vc, len, 4, 4, sd, &o), LA_STATUS_INVALID_ARG,
       "decode: negative cache_len");
    len[0] = 0;
    ST(la_attn_decode(oo, x, x, x, kc, vc, len, 0, 0, sd, &o), LA_STATUS_INVALID_ARG,
       "decode: capacity 0");
    ST(la_attn_decode(oo, x, x, x, kc, vc, len, 4, -1, sd, &o), LA_STATUS_INVALID_ARG,
       "decode: window < 0");
    ST(la_attn_decode(oo, x, x, x, kc, vc, NULL, 4, 4, sd, &o), LA_STATUS_INVALID_ARG,
       "decode: NULL cache_len");
    ST(la_attn_decode(oo, x, x, x, NULL, vc, len, 4, 4, sd, &o), LA_STATUS_INVALID_ARG,
       "decode: NULL k_cache");
    la_shape sd2 = sd;
    sd2.T = 2;
    ST(la_attn_decode(oo, x, x, x, kc, vc, len, 4, 4, sd2, &o), LA_STATUS_SHAPE, "decode: T = 2");
    sd2 = sd;
    sd2.HV = 3;
    ST(la_attn_decode(oo, x, x, x, kc, vc, len, 4, 4, sd2, &o), LA_STATUS_SHAPE,
       "decode: HQ % HKV != 0");
    const int64_t cu1[2] = { 0, 1 };
    la_opts od = la_test_opts(LA_FORM_CHUNK, 0, 0.0f, cu1, 1);
    sd2 = sd;
    sd2.B = 1;
    ST(la_attn_decode(oo, x, x, x, kc, vc, len, 4, 4, sd2, &od), LA_STATUS_INVALID_ARG,
       "decode: cu_seqlens");
#undef ST
    free(y);
}

int main(void) {
    forms_vs_oracle();
    oracle_fd();
    library_fd();
    determinism();
    workspaces();
    decode_tests();
    bad_args();
    return la_test_summary();
}
