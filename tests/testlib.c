#include "testlib.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int64_t g_pass, g_fail;
static struct { double tol, ratio; char name[160]; } g_worst[8];
static int g_nworst;

void la_rng_seed(la_rng * r, uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    r->s = (z ^ (z >> 31)) | 1;
}
double la_rng_uniform(la_rng * r) {
    r->s ^= r->s << 13; r->s ^= r->s >> 7; r->s ^= r->s << 17;
    return (double)(r->s >> 11) * (1.0 / 9007199254740992.0);
}
double la_rng_normal(la_rng * r) {
    double u1 = la_rng_uniform(r), u2 = la_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
void la_fill_normal(la_rng * r, float * x, int64_t n, double std) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(std * la_rng_normal(r));
}
void la_fill_uniform(la_rng * r, float * x, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * la_rng_uniform(r));
}
float * la_new_normal(la_rng * r, int64_t n, double std) {
    float * x = la_test_alloc((size_t)n * sizeof(float));
    la_fill_normal(r, x, n, std);
    return x;
}
float * la_new_uniform(la_rng * r, int64_t n, double lo, double hi) {
    float * x = la_test_alloc((size_t)n * sizeof(float));
    la_fill_uniform(r, x, n, lo, hi);
    return x;
}
void la_fill_logsigmoid(la_rng * r, float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double z = la_rng_normal(r);
        x[i] = (float)(-log1p(exp(-z)));
    }
}
void la_l2norm_rows(float * x, int64_t rows, int64_t d) {
    for (int64_t i = 0; i < rows; i++) {
        double s = 0;
        for (int64_t j = 0; j < d; j++) s += (double)x[i * d + j] * (double)x[i * d + j];
        double r = 1.0 / sqrt(s + 1e-6);
        for (int64_t j = 0; j < d; j++) x[i * d + j] = (float)((double)x[i * d + j] * r);
    }
}

static bool check_impl(const char * name, const float * got, const float * reff,
                       const double * refd, int64_t n, double atol, double rtol) {
    int64_t bad = 0, imax = -1;
    double maxd = 0, se = 0, sr = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = (double)got[i];
        double r = reff ? (double)reff[i] : refd[i];
        double d = fabs(g - r);
        bool fail = !isfinite(g) || !isfinite(r) || d > atol + rtol * fabs(r);
        if (isfinite(d)) { se += d * d; sr += r * r; }
        if (!isfinite(d) || d > maxd) { maxd = isfinite(d) ? d : (double)INFINITY; imax = i; }
        if (fail) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: got %.9g ref %.9g (diff %.3g > %.3g)\n", name,
                        (long long)i, g, r, d, atol + rtol * fabs(r));
            bad++;
        }
    }
    double nmse = sr > 0 ? se / sr : se;
    bool ok = bad == 0;
    printf("%s %-44s n=%-9lld maxdiff=%.3g at %lld  nmse=%.3g  (atol %.1g rtol %.1g)\n",
           ok ? "PASS" : "FAIL", name, (long long)n, maxd, (long long)imax, nmse, atol, rtol);
    if (ok) g_pass++; else g_fail++;
    return ok;
}
bool la_check_close(const char * name, const float * got, const float * ref, int64_t n,
                    double atol, double rtol) {
    return check_impl(name, got, ref, NULL, n, atol, rtol);
}
bool la_check_close_d(const char * name, const float * got, const double * ref, int64_t n,
                      double atol, double rtol) {
    return check_impl(name, got, NULL, ref, n, atol, rtol);
}
bool la_check_rel(const char * name, const float * got, const double * ref, int64_t n,
                  double tol) {
    return la_check_close_d(name, got, ref, n, tol * (la_maxabs_d(ref, n) + 1e-30), tol);
}
bool la_check_rel_as_f32(const char * name, const double * got, const double * ref, int64_t n,
                         double tol) {
    float * g = la_to_f32(got, n);
    bool ok = la_check_rel(name, g, ref, n, tol);
    free(g);
    return ok;
}
double la_maxabs_d(const double * x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}
bool la_check(bool ok, const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "PASS" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (ok) g_pass++; else g_fail++;
    return ok;
}
int la_test_summary(void) {
    if (getenv("LA_TEST_VERBOSE"))
        for (int i = 0; i < g_nworst; i++)
            printf("tol %.0e: worst |diff| / allowed = %.3g (%s)\n", g_worst[i].tol,
                   g_worst[i].ratio, g_worst[i].name);
    printf("%lld passed, %lld failed\n", (long long)g_pass, (long long)g_fail);
    fflush(stdout);
    return g_fail == 0 && g_pass > 0 ? 0 : 1;
}
void * la_test_alloc(size_t bytes) {
    void * p = calloc(1, bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory (%zu bytes)\n", bytes); exit(1); }
    return p;
}
double * la_to_f64(const float * x, int64_t n) {
    if (!x) return NULL;
    double * y = la_test_alloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) y[i] = (double)x[i];
    return y;
}
float * la_to_f32(const double * x, int64_t n) {
    float * y = la_test_alloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

// --- Shared fixtures ---------------------------------------------------------------------------

void la_fill_gate_mix1000(la_rng * r, float * x, int64_t n, int64_t D, int64_t H, int64_t T) {
    for (int64_t e = 0; e < n; e++) {
        const int64_t c = e % D, t = (e / D / H) % T;
        const double u = la_rng_uniform(r), z = la_rng_normal(r);
        if (c % 3 == 0) x[e] = -16.0f;
        else if (c % 3 == 1) x[e] = (float)(-1e-6 * u);
        else x[e] = (t >= 10 && t < 80) ? -16.0f : (float)(-log1p(exp(-z)));
    }
}
void la_fill_gate_tail(la_rng * r, float * x, int64_t n, int64_t D, int64_t H, int64_t T) {
    for (int64_t e = 0; e < n; e++) {
        const int64_t t = (e / D / H) % T;
        const double u = la_rng_uniform(r);
        x[e] = t % 64 < 40 ? -16.0f : (float)(-0.05 * u);
    }
}
int64_t la_cu_from_lens(int64_t * cu, const int64_t * lens, int nseq) {
    cu[0] = 0;
    for (int i = 0; i < nseq; i++) cu[i + 1] = cu[i] + lens[i];
    return cu[nseq];
}
int64_t la_case_seqs(const la_case * c, int64_t * cu, int64_t * T) {
    *T = c->T;
    if (c->nseq <= 0) return c->B;
    *T = la_cu_from_lens(cu, c->lens, c->nseq);
    return c->nseq;
}
void la_seq_range(const int64_t * cu, int64_t T, int64_t n, int64_t * t0, int64_t * t1) {
    if (cu) { *t0 = cu[n]; *t1 = cu[n + 1]; }
    else { *t0 = n * T; *t1 = (n + 1) * T; }
}
la_opts la_test_opts(la_form form, int32_t C, float scale, const int64_t * cu, int64_t n_seqs) {
    la_opts o = la_opts_default();
    o.form = form;
    o.chunk_size = C;
    o.scale = scale;
    if (cu) {
        o.cu_seqlens = cu;
        o.n_seqs = n_seqs;
    }
    return o;
}

// --- float64 comparisons and finite differences ------------------------------------------------

bool la_check_rel_dd(const char * name, const double * got, const double * ref, int64_t n,
                     double tol) {
    const double m = la_maxabs_d(ref, n);
    double md = 0;
    int64_t bad = 0, imax = -1;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs(got[i] - ref[i]);
        if (!(d <= tol * (m + fabs(ref[i])))) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: got %.17g ref %.17g\n", name, (long long)i, got[i],
                        ref[i]);
            bad++;
        }
        if (!(d <= md)) { md = d; imax = i; }
    }
    return la_check(bad == 0, "%-52s n=%-7lld maxdiff=%.3g at %lld (max|ref| %.3g, tol %.0e)",
                    name, (long long)n, md, (long long)imax, m, tol);
}
bool la_check_fd(const char * name, const double * an, const double * fd, int64_t n, double tol) {
    int64_t bad = 0;
    double md = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs(an[i] - fd[i]);
        md = fmax(md, d);
        if (!(d <= tol * (1 + fabs(fd[i])))) bad++;
    }
    return la_check(bad == 0, "%-52s n=%lld max|an - fd| = %.3g (tol %.0e)", name, (long long)n,
                    md, tol);
}
void la_fd_grads(int np, double * const * x, const int64_t * n, double * const * grad, double h,
                 la_loss_fn loss, void * ctx) {
    for (int p = 0; p < np; p++) {
        if (!x[p]) continue;
        for (int64_t i = 0; i < n[p]; i++) {
            const double x0 = x[p][i];
            x[p][i] = x0 + h;
            const double lp = loss(ctx);
            x[p][i] = x0 - h;
            const double lm = loss(ctx);
            x[p][i] = x0;
            grad[p][i] = (lp - lm) / (2 * h);
        }
    }
}
double la_loss_dot(double L, const double * y, const double * dy, int64_t n) {
    if (dy)
        for (int64_t i = 0; i < n; i++) L += y[i] * dy[i];
    return L;
}

// --- Quiet checks ------------------------------------------------------------------------------

bool la_expect(bool ok, const char * fmt, ...) {
    if (ok) {
        g_pass++;
        return true;
    }
    char buf[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return la_check(false, "%s", buf);
}
bool la_expect_status(la_status got, la_status want, const char * what) {
    return la_expect(got == want, "%s: got %s, want %s", what, la_status_str(got),
                     la_status_str(want));
}
void la_note_worst(const char * name, double tol, double ratio) {
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
// got is float (gf) or double (gd).
static bool expect_rel_impl(const char * name, const float * gf, const double * gd,
                            const double * ref, int64_t n, double tol, double scale) {
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
    la_note_worst(name, tol, ratio);
    return la_expect(bad == 0,
                     "%s: %lld of %lld entries beyond tol %.0e (max|diff| %.3g at %lld, scale "
                     "%.3g)", name, (long long)bad, (long long)n, tol, md, (long long)imax, m);
}
bool la_expect_rel(const char * name, const float * got, const double * ref, int64_t n,
                   double tol) {
    return expect_rel_impl(name, got, NULL, ref, n, tol, 0.0);
}
bool la_expect_rel_s(const char * name, const float * got, const double * ref, int64_t n,
                     double tol, double scale) {
    return expect_rel_impl(name, got, NULL, ref, n, tol, scale);
}
bool la_expect_rel_d(const char * name, const double * got, const double * ref, int64_t n,
                     double tol) {
    return expect_rel_impl(name, NULL, got, ref, n, tol, 0.0);
}
bool la_expect_rel_ff(const char * name, const float * got, const float * ref, int64_t n,
                      double tol) {
    double * r = la_to_f64(ref, n);
    const bool ok = la_expect_rel(name, got, r, n, tol);
    free(r);
    return ok;
}
bool la_all_finite(const float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}
bool la_same_bits(const float * a, const float * b, int64_t n) {
    return (!a && !b) || (a && b && memcmp(a, b, (size_t)n * sizeof(float)) == 0);
}

// --- Test data by spec string ------------------------------------------------------------------

bool la_spec_has(const char * spec, const char * t) {
    const size_t n = strlen(t);
    const char * p = spec ? spec : "";
    while (*p) {
        while (*p == ' ') p++;
        const size_t m = strcspn(p, " ");
        if (m == n && !strncmp(p, t, n)) return true;
        p += m;
    }
    return false;
}
double la_sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }
float * la_new_logsigmoid(la_rng * r, int64_t n) {
    float * x = la_test_alloc((size_t)n * sizeof(float));
    la_fill_logsigmoid(r, x, n);
    return x;
}
float * la_new_l2rows(la_rng * r, int64_t rows, int64_t d) {
    float * x = la_new_normal(r, rows * d, 1.0);
    la_l2norm_rows(x, rows, d);
    return x;
}
bool la_fill_gate_spec(la_rng * r, float * x, int64_t n, const char * spec, int64_t D,
                       int64_t H, int64_t T) {
    if (la_spec_has(spec, "g:logsig")) la_fill_logsigmoid(r, x, n);
    else if (la_spec_has(spec, "g:uni")) la_fill_uniform(r, x, n, -20.0, -1e-6);
    else if (la_spec_has(spec, "g:zero")) memset(x, 0, (size_t)n * sizeof(float));
    else if (la_spec_has(spec, "g:small")) la_fill_uniform(r, x, n, -1e-6, 0.0);
    else if (la_spec_has(spec, "g:mix")) la_fill_gate_mix1000(r, x, n, D, H, T);
    else if (la_spec_has(spec, "g:tail")) la_fill_gate_tail(r, x, n, D, H, T);
    else return false;
    return true;
}

// --- Forms -------------------------------------------------------------------------------------

const la_form_c LA_FORMS[LA_N_FORMS] = {
    { LA_FORM_REF, 0 },   { LA_FORM_RECURRENT, 0 }, { LA_FORM_CHUNK, 64 },
    { LA_FORM_CHUNK, 32 }, { LA_FORM_CHUNK, 16 },   { LA_FORM_CHUNK, 24 },
};
// The forms of the finite-difference cases (T ~ 9), and of chaining and decode.
static const la_form_c LA_FORMS_FD[LA_N_FORMS] = {
    { LA_FORM_REF, 0 },   { LA_FORM_RECURRENT, 0 }, { LA_FORM_CHUNK, 64 },
    { LA_FORM_CHUNK, 16 }, { LA_FORM_CHUNK, 5 },    { LA_FORM_CHUNK, 2 },
};
#define LA_N_FORMS_CHAIN 5
static const la_form_c LA_FORMS_CHAIN[LA_N_FORMS_CHAIN] = {
    { LA_FORM_REF, 0 }, { LA_FORM_RECURRENT, 0 }, { LA_FORM_CHUNK, 64 }, { LA_FORM_CHUNK, 16 },
    { LA_FORM_CHUNK, 24 },
};
void la_form_name(char * buf, size_t n, const char * pre, la_form_c fc) {
    if (fc.form == LA_FORM_CHUNK) snprintf(buf, n, "%s/chunk%d", pre, fc.C);
    else snprintf(buf, n, "%s/%s", pre, la_form_str(fc.form));
}
la_opts la_opts_form(la_opts o, la_form_c fc) {
    o.form = fc.form;
    o.chunk_size = fc.C;
    return o;
}

// --- Sets of tensors ---------------------------------------------------------------------------

void la_alloc_f(float ** p, const int64_t * n, int cnt) {
    for (int i = 0; i < cnt; i++)
        p[i] = n[i] ? la_test_alloc((size_t)n[i] * sizeof(float)) : NULL;
}
void la_alloc_d(double ** p, const int64_t * n, int cnt) {
    for (int i = 0; i < cnt; i++)
        p[i] = n[i] ? la_test_alloc((size_t)n[i] * sizeof(double)) : NULL;
}
void la_free_f(float ** p, int cnt) {
    for (int i = 0; i < cnt; i++) {
        free(p[i]);
        p[i] = NULL;
    }
}
void la_free_d(double ** p, int cnt) {
    for (int i = 0; i < cnt; i++) {
        free(p[i]);
        p[i] = NULL;
    }
}
void la_to_f64_all(double ** y, float * const * x, const int64_t * n, int cnt) {
    for (int i = 0; i < cnt; i++) y[i] = la_to_f64(x[i], n[i]);
}
bool la_same_bits_all(float * const * a, float * const * b, const int64_t * n, int cnt) {
    for (int i = 0; i < cnt; i++)
        if (!la_same_bits(a[i], b[i], n[i])) return false;
    return true;
}

// --- The op harness ----------------------------------------------------------------------------

void la_op_sizes(la_optest * t, int64_t n_o, int64_t n_fs) {
    t->nres = 2 + t->npar;
    t->res_n[0] = n_o;
    t->res_n[1] = n_fs;
    for (int i = 0; i < t->npar; i++) t->res_n[2 + i] = t->in[i] ? t->in_n[i] : 0;
}
// initial_state: in[npar - 1]
static const float * op_s0(const la_optest * t) { return t->in[t->npar - 1]; }

// The oracle on t's inputs: x (the inputs in float64), r (results), scale.
typedef struct opref {
    double * x[LA_OP_MAXT], * r[LA_OP_MAXT];
    double   scale[LA_OP_MAXT];
} opref;

static void ref_init(opref * R, const la_optest * t, bool bwd) {
    la_to_f64_all(R->x, t->in, t->in_n, t->nin);
    la_alloc_d(R->r, t->res_n, t->nres);
    memset(R->scale, 0, sizeof R->scale);
    t->oracle(t, R->x, R->r, R->scale, bwd);
}
static void ref_free(opref * R, const la_optest * t) {
    la_free_d(R->x, t->nin);
    la_free_d(R->r, t->nres);
}

static la_status op_fwd(const la_optest * t, float * o, float * fs, const float * s0,
                        const la_opts * op) {
    return t->fwd(t, o, fs, s0, op);
}
bool la_op_run(const la_optest * t, float * const * res, const la_opts * op, int threads,
               const char * nm) {
    la_set_num_threads(threads);
    const la_status s1 = op_fwd(t, res[0], res[1], op_s0(t), op);
    const la_status s2 = t->bwd(t, res, op);
    la_set_num_threads(0);
    return la_expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK,
                     "%s: status forward %s, backward %s", nm, la_status_str(s1),
                     la_status_str(s2));
}
// Every result present in both against the oracle: o and final_state within tol_fwd (only when
// fwd), the gradients within tol_bwd.
static void op_compare(const la_optest * t, float * const * got, const opref * R,
                       double * const * ref, const char * nm, double tol_fwd, double tol_bwd,
                       bool fwd) {
    char n2[240];
    for (int i = fwd ? 0 : 2; i < t->nres; i++) {
        if (!got[i] || !ref[i]) continue;
        snprintf(n2, sizeof n2, "%s %s", nm, t->res_name[i]);
        la_expect_rel_s(n2, got[i], ref[i], t->res_n[i], i < 2 ? tol_fwd : tol_bwd,
                        R->scale[i]);
    }
}
void la_op_compare_ff(const la_optest * t, float * const * a, float * const * b, const char * nm,
                      double tol_fwd, double tol_bwd) {
    char n2[300];
    for (int i = 0; i < t->nres; i++) {
        if (!a[i] || !b[i]) continue;
        snprintf(n2, sizeof n2, "%s %s", nm, t->res_name[i]);
        la_expect_rel_ff(n2, a[i], b[i], t->res_n[i], i < 2 ? tol_fwd : tol_bwd);
    }
}
// Every form on 1 thread against the oracle, on 2 threads bitwise equal to 1 thread.
static void op_forms(const la_optest * t, const char * pre, double tol_fwd, double tol_bwd) {
    opref R;
    ref_init(&R, t, true);
    for (int fi = 0; fi < LA_N_FORMS; fi++) {
        char nm[160];
        la_form_name(nm, sizeof nm, pre, LA_FORMS[fi]);
        const la_opts o = la_opts_form(t->opts, LA_FORMS[fi]);
        float * f1[LA_OP_MAXT], * f2[LA_OP_MAXT];
        la_alloc_f(f1, t->res_n, t->nres);
        la_alloc_f(f2, t->res_n, t->nres);
        if (la_op_run(t, f1, &o, 1, nm)) op_compare(t, f1, &R, R.r, nm, tol_fwd, tol_bwd, true);
        if (la_op_run(t, f2, &o, 2, nm))
            la_expect(la_same_bits_all(f1, f2, t->res_n, t->nres), "%s: 1 and 2 threads differ",
                      nm);
        la_free_f(f1, t->nres);
        la_free_f(f2, t->nres);
    }
    ref_free(&R, t);
}

typedef struct fdctx { const la_optest * t; double * const * x; double ** scr; } fdctx;

static double fd_loss(void * ctx) {
    const fdctx * c = ctx;
    const la_optest * t = c->t;
    double scale[LA_OP_MAXT];
    t->oracle(t, c->x, c->scr, scale, false);
    return la_loss_dot(la_loss_dot(0, c->scr[0], c->x[t->nin - 2], t->res_n[0]), c->scr[1],
                       c->x[t->nin - 1], t->res_n[1]);
}
// Finite differences of the oracle; its gradients and the library's (LA_FORMS_FD) against them.
static void op_fd(const la_optest * t, const char * pre, double h, double tol_fd, double tol_fwd,
                  double tol_bwd) {
    opref R;
    ref_init(&R, t, true);
    double * fd[LA_OP_MAXT], * scr[LA_OP_MAXT];
    la_alloc_d(fd, t->res_n, t->nres);
    la_alloc_d(scr, t->res_n, t->nres);
    fdctx c = { t, R.x, scr };
    la_fd_grads(t->npar, R.x, t->res_n + 2, fd + 2, h, fd_loss, &c);
    for (int p = 0; p < t->npar; p++) {
        if (!R.x[p]) continue;
        char nm[200];
        snprintf(nm, sizeof nm, "%s oracle %s vs finite differences", pre, t->res_name[2 + p]);
        la_expect_rel_d(nm, R.r[2 + p], fd[2 + p], t->res_n[2 + p], tol_fd);
    }
    for (int fi = 0; fi < LA_N_FORMS; fi++) {
        char nm[160];
        la_form_name(nm, sizeof nm, pre, LA_FORMS_FD[fi]);
        strncat(nm, " vs FD", sizeof nm - strlen(nm) - 1);
        const la_opts o = la_opts_form(t->opts, LA_FORMS_FD[fi]);
        float * f[LA_OP_MAXT];
        la_alloc_f(f, t->res_n, t->nres);
        if (la_op_run(t, f, &o, 1, nm)) {
            op_compare(t, f, &R, R.r, nm, tol_fwd, tol_bwd, true);  // o, final_state
            op_compare(t, f, &R, fd, nm, tol_fwd, tol_bwd, false);  // on the oracle's scale
        }
        la_free_f(f, t->nres);
    }
    la_free_d(fd, t->nres);
    la_free_d(scr, t->nres);
    ref_free(&R, t);
}
// The chaining law at tsplit (la_op_contract).
static void op_split(const la_optest * t, la_form_c fc, int64_t tsplit, const char * tag,
                     double tol_id, double tol) {
    opref R;
    ref_init(&R, t, false);
    const la_opts o = la_opts_form(t->opts, fc);
    const int64_t T = t->sh.T, nv = t->res_n[0], ns = t->res_n[1];
    float * o1 = la_test_alloc((size_t)nv * 4), * f1 = la_test_alloc((size_t)ns * 4);
    float * os = la_test_alloc((size_t)nv * 4), * ms = la_test_alloc((size_t)ns * 4);
    float * fs = la_test_alloc((size_t)ns * 4);
    la_optest t1 = *t, t2 = *t;   // tokens [0, tsplit) and [tsplit, T)
    t1.sh.T = tsplit;
    t2.sh.T = T - tsplit;
    for (int i = 0; i < t->ntok; i++)
        if (t->in[i]) t2.in[i] = t->in[i] + tsplit * t->in_w[i];
    const la_status s0 = op_fwd(t, o1, f1, op_s0(t), &o);
    const la_status s1 = op_fwd(&t1, os, ms, op_s0(t), &o);
    const la_status s2 = op_fwd(&t2, os + tsplit * t->o_w, fs, ms, &o);
    char nm[200], pre[120];
    snprintf(pre, sizeof pre, "%s chaining [%s] T=%lld split at %lld", t->name, tag,
             (long long)T, (long long)tsplit);
    la_form_name(nm, sizeof nm, pre, fc);
    if (la_expect(s0 == LA_STATUS_OK && s1 == LA_STATUS_OK && s2 == LA_STATUS_OK,
                  "%s: status %s %s %s", nm, la_status_str(s0), la_status_str(s1),
                  la_status_str(s2))) {
        char n2[240];
        snprintf(n2, sizeof n2, "%s o == one call", nm);
        la_expect_rel_ff(n2, os, o1, nv, tol_id);
        snprintf(n2, sizeof n2, "%s final_state == one call", nm);
        la_expect_rel_ff(n2, fs, f1, ns, tol_id);
        snprintf(n2, sizeof n2, "%s o vs oracle", nm);
        la_expect_rel(n2, os, R.r[0], nv, tol);
        snprintf(n2, sizeof n2, "%s final_state vs oracle", nm);
        la_expect_rel(n2, fs, R.r[1], ns, tol);
    }
    free(o1); free(f1); free(os); free(ms); free(fs);
    ref_free(&R, t);
}
// Decode token by token in place against the full pass (la_op_contract).
static void op_decode(const la_optest * t, la_form_c fc, const char * tag, double tol_id) {
    const la_opts o = la_opts_form(t->opts, fc);
    const int64_t B = t->sh.B, T = t->sh.T, nv = t->res_n[0], ns = t->res_n[1], ow = t->o_w;
    float * o1 = la_test_alloc((size_t)nv * 4), * f1 = la_test_alloc((size_t)ns * 4);
    const la_status st = op_fwd(t, o1, f1, op_s0(t), &o);
    float * state = la_test_alloc((size_t)ns * 4), * od = la_test_alloc((size_t)nv * 4);
    memcpy(state, op_s0(t), (size_t)ns * 4);
    la_optest s = *t;   // one token of every row, gathered into (B, 1, ...) tensors
    s.sh.T = 1;
    for (int i = 0; i < t->ntok; i++)
        s.in[i] = t->in[i] ? la_test_alloc((size_t)(B * t->in_w[i]) * 4) : NULL;
    float * ot = la_test_alloc((size_t)(B * ow) * 4);
    bool ok = st == LA_STATUS_OK;
    for (int64_t tk = 0; tk < T && ok; tk++) {
        for (int64_t b = 0; b < B; b++)
            for (int i = 0; i < t->ntok; i++) {
                const int64_t w = t->in_w[i];
                if (s.in[i]) memcpy(s.in[i] + b * w, t->in[i] + (b * T + tk) * w, (size_t)w * 4);
            }
        ok = op_fwd(&s, ot, state, state, &o) == LA_STATUS_OK;
        for (int64_t b = 0; b < B; b++)
            memcpy(od + (b * T + tk) * ow, ot + b * ow, (size_t)ow * 4);
    }
    char nm[200], pre[120];
    snprintf(pre, sizeof pre, "%s decode [%s] T=1 steps in place", t->name, tag);
    la_form_name(nm, sizeof nm, pre, fc);
    if (la_expect(ok, "%s: a call failed", nm)) {
        char n2[240];
        snprintf(n2, sizeof n2, "%s o == full pass", nm);
        la_expect_rel_ff(n2, od, o1, nv, tol_id);
        snprintf(n2, sizeof n2, "%s final_state == full pass", nm);
        la_expect_rel_ff(n2, state, f1, ns, tol_id);
    }
    la_free_f(s.in, t->ntok);
    free(ot); free(o1); free(f1); free(state); free(od);
}
// final_state == initial_state in place; zero-length sequences (la_op_contract).
static void op_inplace(const la_optest * t) {
    const int64_t nv = t->res_n[0], ns = t->res_n[1], S = ns / t->N;  // S: one sequence's state
    const float * s0 = op_s0(t);
    for (int fi = 0; fi < LA_N_FORMS; fi++) {
        const la_opts o = la_opts_form(t->opts, LA_FORMS[fi]);
        float * o1 = la_test_alloc((size_t)nv * 4), * f1 = la_test_alloc((size_t)ns * 4);
        float * o2 = la_test_alloc((size_t)nv * 4), * st = la_test_alloc((size_t)ns * 4);
        memcpy(st, s0, (size_t)ns * 4);
        const la_status s1 = op_fwd(t, o1, f1, s0, &o);
        const la_status s2 = op_fwd(t, o2, st, st, &o);
        char nm[160];
        la_form_name(nm, sizeof nm, t->name, LA_FORMS[fi]);
        la_expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK && la_same_bits(o1, o2, nv) &&
                      la_same_bits(f1, st, ns),
                  "%s: final_state == initial_state (in place) differs from separate buffers "
                  "(status %s, %s)", nm, la_status_str(s1), la_status_str(s2));
        bool kept = s1 == LA_STATUS_OK;   // the empty sequences' state rows pass through
        for (int64_t n = 0; n < t->N; n++) {
            int64_t t0, t1;
            la_seq_range(t->opts.cu_seqlens, t->sh.T, n, &t0, &t1);
            if (t0 == t1) kept = kept && la_same_bits(f1 + n * S, s0 + n * S, S);
        }
        la_expect(kept, "%s: a zero-length sequence changed its state", nm);
        free(o1); free(f1); free(o2); free(st);
    }
}
// Caller-owned workspaces and optional outputs (la_op_contract).
static void op_workspace(const la_optest * t) {
    const int nr = t->nres;
    const float * s0 = op_s0(t);
    for (int fi = 0; fi < LA_N_FORMS; fi++) {
        char nm[160];
        la_form_name(nm, sizeof nm, t->name, LA_FORMS[fi]);
        const la_opts o = la_opts_form(t->opts, LA_FORMS[fi]);
        float * a[LA_OP_MAXT], * b[LA_OP_MAXT];
        la_alloc_f(a, t->res_n, nr);
        la_alloc_f(b, t->res_n, nr);
        if (!la_op_run(t, a, &o, 2, nm)) {
            la_free_f(a, nr);
            la_free_f(b, nr);
            continue;
        }
        la_set_num_threads(2);
        const size_t wf = t->ws(t, false, &o), wb = t->ws(t, true, &o);
        char * bf = la_test_alloc(wf + 1), * bb = la_test_alloc(wb + 1);
        la_opts ow = o;
        ow.work = bf + 1;   // any alignment
        ow.work_size = wf;
        la_status s1 = op_fwd(t, b[0], b[1], s0, &ow);
        ow.work = bb + 1;
        ow.work_size = wb;
        la_status s2 = t->bwd(t, b, &ow);
        la_expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK && la_same_bits_all(a, b, t->res_n, nr),
                  "%s: caller-owned workspace (fwd %zu, bwd %zu bytes, misaligned) differs from "
                  "NULL (status %s, %s)", nm, wf, wb, la_status_str(s1), la_status_str(s2));
        la_expect(wf > 0 && wb > 0, "%s: workspace sizes %zu, %zu include the slack", nm, wf, wb);
        if (wf > 0 && wb > 0) {
            ow.work = bf;
            ow.work_size = wf - 1;
            s1 = op_fwd(t, b[0], b[1], s0, &ow);
            ow.work = bb;
            ow.work_size = wb - 1;
            s2 = t->bwd(t, b, &ow);
            la_expect(s1 == LA_STATUS_WORKSPACE && s2 == LA_STATUS_WORKSPACE,
                      "%s: workspace one byte short: forward %s, backward %s (want %s)", nm,
                      la_status_str(s1), la_status_str(s2), la_status_str(LA_STATUS_WORKSPACE));
        }
        // optional outputs: final_state; dinitial_state (the last result), the other gradients
        // recomputed from zero
        ow = o;
        memset(b[0], 0, (size_t)t->res_n[0] * 4);
        s1 = op_fwd(t, b[0], NULL, s0, &ow);
        la_expect(s1 == LA_STATUS_OK && la_same_bits(a[0], b[0], t->res_n[0]),
                  "%s: final_state optional (%s)", nm, la_status_str(s1));
        float * c[LA_OP_MAXT];
        memcpy(c, b, (size_t)nr * sizeof *c);
        c[nr - 1] = NULL;
        for (int i = 2; i < nr - 1; i++)
            if (b[i]) memset(b[i], 0, (size_t)t->res_n[i] * 4);
        s2 = t->bwd(t, c, &ow);
        la_expect(s2 == LA_STATUS_OK && la_same_bits_all(a + 2, b + 2, t->res_n + 2, nr - 3),
                  "%s: dinitial_state optional (%s)", nm, la_status_str(s2));
        la_set_num_threads(0);
        free(bf);
        free(bb);
        la_free_f(a, nr);
        la_free_f(b, nr);
    }
}
void la_op_want_both(const la_optest * t, const la_opts * op, la_status want, const char * what) {
    float * f[LA_OP_MAXT];
    la_alloc_f(f, t->res_n, t->nres);
    char nm[200];
    snprintf(nm, sizeof nm, "%s %s forward", t->name, what);
    la_expect_status(op_fwd(t, f[0], f[1], op_s0(t), op), want, nm);
    snprintf(nm, sizeof nm, "%s %s backward", t->name, what);
    la_expect_status(t->bwd(t, f, op), want, nm);
    la_free_f(f, t->nres);
}
void la_op_api(const la_optest * t, const la_opts * op) {
    la_op_want_both(t, op, LA_STATUS_OK, "valid call");
    float * f[LA_OP_MAXT], * g[LA_OP_MAXT];
    la_alloc_f(f, t->res_n, t->nres);
    char nm[200];
    for (int fm = 0; fm < 3; fm++) {
        la_opts of = *op;
        of.form = (la_form)fm;
        const char * fn = la_form_str(of.form);
        snprintf(nm, sizeof nm, "%s/%s NULL o", t->name, fn);
        la_expect_status(op_fwd(t, NULL, f[1], op_s0(t), &of), LA_STATUS_INVALID_ARG, nm);
        la_optest v = *t;
        v.in[0] = NULL;
        snprintf(nm, sizeof nm, "%s/%s NULL q", t->name, fn);
        la_expect_status(op_fwd(&v, f[0], f[1], op_s0(t), &of), LA_STATUS_INVALID_ARG, nm);
        memcpy(g, f, (size_t)t->nres * sizeof *g);
        g[2] = NULL;
        snprintf(nm, sizeof nm, "%s/%s NULL dq", t->name, fn);
        la_expect_status(t->bwd(t, g, &of), LA_STATUS_INVALID_ARG, nm);
        v = *t;
        v.in[t->nin - 2] = NULL;
        snprintf(nm, sizeof nm, "%s/%s NULL dout", t->name, fn);
        la_expect_status(v.bwd(&v, f, &of), LA_STATUS_INVALID_ARG, nm);
    }
    la_optest v = *t;
    v.sh.K = 0;
    la_op_want_both(&v, op, LA_STATUS_SHAPE, "K = 0");
    la_opts ob = *op;
    ob.chunk_size = 300;
    la_op_want_both(t, &ob, LA_STATUS_INVALID_ARG, "chunk_size 300");
    int64_t cu[3] = { 0, 4, 10 };
    ob = *op;
    ob.cu_seqlens = cu;
    ob.n_seqs = 2;
    la_op_want_both(t, &ob, LA_STATUS_CU_SEQLENS, "cu_seqlens with B = 2");
    la_free_f(f, t->nres);
}
static la_optest make_case(const la_opmaker * m, const la_case * c, uint64_t seed) {
    la_rng r;
    la_rng_seed(&r, seed);
    m->make_data(c, m->data, &r);
    return m->optest(m->data);
}
void la_op_cases(const la_opmaker * m, const la_case * cases, size_t n, uint64_t seed, bool fd,
                 const la_tols * tol) {
    for (size_t i = 0; i < n; i++) {
        const la_optest t = make_case(m, &cases[i], seed + i);
        char pre[120];
        snprintf(pre, sizeof pre, "%s/%s", t.name, cases[i].name);
        if (fd) op_fd(&t, pre, tol->fd_step, tol->fd, tol->fwd, tol->bwd);
        else op_forms(&t, pre, tol->fwd, tol->bwd);
        m->free_data(m->data);
    }
}
void la_op_contract(const la_opmaker * m, int op, const char * spec, uint64_t seed,
                    const la_tols * tol) {
    static const int64_t split[3][2] = { { 100, 37 }, { 128, 64 }, { 10, 1 } };
    for (int i = 0; i < 3; i++) {
        const la_case c = { "split", op, 1, split[i][0], 2, 8, 6, 0, { 0 }, spec, 0, 4 };
        const la_optest t = make_case(m, &c, seed + 10 * (uint64_t)i);
        for (int fi = 0; fi < LA_N_FORMS_CHAIN; fi++)
            op_split(&t, LA_FORMS_CHAIN[fi], split[i][1], spec, tol->id_fwd, tol->fwd);
        m->free_data(m->data);
    }
    const la_case dc = { "decode", op, 2, 20, 2, 8, 6, 0, { 0 }, spec, 0, 4 };
    la_optest t = make_case(m, &dc, seed + 30);
    for (int fi = 0; fi < 3; fi++) op_decode(&t, LA_FORMS_CHAIN[fi], spec, tol->id_fwd);
    m->free_data(m->data);
    const la_case ic = { "inplace", op, 1, 0, 2, 6, 7, 5, { 5, 0, 70, 1, 0 }, spec, 0, 4 };
    t = make_case(m, &ic, seed + 40);
    op_inplace(&t);
    m->free_data(m->data);
    const la_case wc = { "ws", op, 2, 45, 2, 8, 5, 0, { 0 }, spec, 0, 4 };
    t = make_case(m, &wc, seed + 50);
    op_workspace(&t);
    m->free_data(m->data);
}
void la_op_long(const la_opmaker * m, int op, const char * spec, uint64_t seed,
                const la_tols * tol) {
    const la_case c = { "long", op, 1, 100000, 1, 16, 16, 0, { 0 }, spec, 0 };
    const la_optest t = make_case(m, &c, seed);
    opref R;
    ref_init(&R, &t, true);
    const la_form_c fc = { LA_FORM_CHUNK, 64 };
    const la_opts o = la_opts_form(t.opts, fc);
    float * f[LA_OP_MAXT];
    la_alloc_f(f, t.res_n, t.nres);
    char nm[160], pre[120];
    snprintf(pre, sizeof pre, "%s/long T=1e5 [%s]", t.name, spec);
    la_form_name(nm, sizeof nm, pre, fc);
    if (la_op_run(&t, f, &o, 2, nm)) {
        bool finite = true;
        for (int i = 0; i < t.nres; i++)
            finite = finite && (!f[i] || la_all_finite(f[i], t.res_n[i]));
        la_expect(finite, "%s: non-finite output", nm);
        op_compare(&t, f, &R, R.r, nm, tol->longseq, tol->longseq, true);
    }
    la_free_f(f, t.nres);
    ref_free(&R, &t);
    m->free_data(m->data);
}

// --- The float64 oracles' token loop -----------------------------------------------------------

void la_oracle_run(const la_oracle_scan * s, bool bwd) {
    const int64_t KV = s->K * s->V, SEG = LA_ORACLE_SEG;
    int64_t L = 0;   // the longest sequence
    for (int64_t n = 0; n < s->N; n++) {
        int64_t t0, t1;
        la_seq_range(s->cu, s->T, n, &t0, &t1);
        if (t1 - t0 > L) L = t1 - t0;
    }
    double * ck = la_test_alloc((size_t)((L / SEG + 1) * KV) * 8);
    double * Sb = la_test_alloc((size_t)((SEG + 1) * KV) * 8);
    double * S = la_test_alloc((size_t)KV * 8), * S2 = la_test_alloc((size_t)KV * 8);
    double * G = la_test_alloc((size_t)KV * 8);
    for (int64_t n = 0; n < s->N; n++) {
        int64_t t0, t1;
        la_seq_range(s->cu, s->T, n, &t0, &t1);
        for (int64_t h = 0; h < s->nh; h++) {
            const int64_t sb = (n * s->nh + h) * KV;
            for (int64_t i = 0; i < KV; i++) S[i] = s->s0 ? s->s0[sb + i] : 0.0;
            for (int64_t t = t0; t < t1; t++) {
                if ((t - t0) % SEG == 0) memcpy(ck + ((t - t0) / SEG) * KV, S, (size_t)KV * 8);
                s->step(s->ctx, t, h, S, S2, s->o + (t * s->nh + h) * s->V);
                memcpy(S, S2, (size_t)KV * 8);
            }
            memcpy(s->fs + sb, S, (size_t)KV * 8);
            if (!bwd) continue;
            for (int64_t i = 0; i < KV; i++) G[i] = s->dfs ? s->dfs[sb + i] : 0.0;
            for (int64_t sg = (t1 - t0 + SEG - 1) / SEG - 1; sg >= 0; sg--) {
                const int64_t ta = t0 + sg * SEG, tb = ta + SEG < t1 ? ta + SEG : t1;
                memcpy(Sb, ck + sg * KV, (size_t)KV * 8);
                for (int64_t t = ta; t < tb; t++)
                    s->step(s->ctx, t, h, Sb + (t - ta) * KV, Sb + (t - ta + 1) * KV, NULL);
                for (int64_t t = tb - 1; t >= ta; t--)
                    s->adjoint(s->ctx, t, h, Sb + (t - ta) * KV, Sb + (t - ta + 1) * KV, G);
            }
            if (s->ds0) memcpy(s->ds0 + sb, G, (size_t)KV * 8);
        }
    }
    free(ck); free(Sb); free(S); free(S2); free(G);
}

// --- The program's op runner -------------------------------------------------------------------

static const char * g_bin;
static char g_dir[256];

void la_write_st(const char * path, const la_tin * t, int n) {
    la_st_writer * w = la_st_writer_new();
    char err[512];
    for (int i = 0; i < n; i++)
        if (la_st_writer_add(w, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, t[i].data, err,
                             sizeof err) != LA_STATUS_OK) {
            fprintf(stderr, "writer: %s\n", err);
            exit(1);
        }
    if (la_st_writer_save(w, path, err, sizeof err) != LA_STATUS_OK) {
        fprintf(stderr, "save: %s\n", err);
        exit(1);
    }
    la_st_writer_free(w);
}
void la_write_bytes(const char * path, const void * p, size_t n) {
    FILE * f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}
char * la_read_file(const char * path, size_t * n) {
    FILE * f = fopen(path, "rb");
    if (!f) {
        *n = 0;
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    const long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char * b = la_test_alloc((size_t)(sz > 0 ? sz : 0) + 1);
    *n = sz > 0 ? fread(b, 1, (size_t)sz, f) : 0;
    fclose(f);
    return b;
}
bool la_runner_init(const char * tag) {
    g_bin = getenv("LA_BIN");
    if (!g_bin) {
        fprintf(stderr, "LA_BIN must name the linattn program\n");
        return false;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/la_%s_XXXXXX", tag);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return false;
    }
    return true;
}
const char * la_tmp_dir(void) { return g_dir; }
char * la_tmp(const char * name) {
    static char buf[8][512];
    static int k;
    char * p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}
void la_runner_cleanup(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}
int la_run_op(const char * args, int * nlines, char * first, size_t nfirst) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s op %s >%s 2>%s", g_bin, args, la_tmp("stdout.txt"),
             la_tmp("stderr.txt"));
    const int st = system(cmd);
    size_t n;
    char * e = la_read_file(la_tmp("stderr.txt"), &n);
    *nlines = 0;
    if (first && nfirst) first[0] = 0;
    for (size_t i = 0; e && i < n; i++)
        if (e[i] == '\n') (*nlines)++;
    if (e && first && nfirst) {
        const size_t l = strcspn(e, "\n");
        snprintf(first, nfirst, "%.*s", (int)(l < nfirst - 1 ? l : nfirst - 1), e);
    }
    free(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
void la_bad_call(const char * what, const char * fmt, ...) {
    char args[3072];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    static const char sentinel[] = "an existing OUT must survive a failed run";
    const char * keep = la_tmp("keep.safetensors");
    la_write_bytes(keep, sentinel, sizeof sentinel);
    char full[4096];
    snprintf(full, sizeof full, "%s --out %s", args, keep);
    int nl;
    char first[512];
    const int st = la_run_op(full, &nl, first, sizeof first);
    size_t n;
    char * after = la_read_file(keep, &n);
    const bool intact = after && n == sizeof sentinel && !memcmp(after, sentinel, n);
    free(after);
    if (getenv("LA_TEST_VERBOSE")) printf("%-58s -> %s\n", what, first);
    la_expect(st == 2 && nl == 1 && !strncmp(first, "linattn: error:", 15) && intact,
              "bad input %s -> status %d, %d stderr line(s), OUT %s: %s", what, st, nl,
              intact ? "intact" : "CHANGED", first);
}

// Runs the op on `in` and compares OUT with the library's results `w` (exactly these tensors).
void la_good_run(const char * tag, const char * op, const char * flags, const la_tin * in,
                     int nin, const la_want_out * w, int nw) {
    la_write_st(la_tmp("in.safetensors"), in, nin);
    char args[2048];
    snprintf(args, sizeof args, "%s --in %s --out %s --threads 1 %s", op,
             la_tmp("in.safetensors"), la_tmp("out.safetensors"), flags);
    remove(la_tmp("out.safetensors"));
    int nl;
    char first[512];
    const int st = la_run_op(args, &nl, first, sizeof first);
    if (!la_expect(st == 0 && nl == 0, "%s: exit %d, %d stderr lines: %s", tag, st, nl, first))
        return;
    la_st_file * f;
    char err[512];
    if (!la_expect(la_st_open(&f, la_tmp("out.safetensors"), err, sizeof err) == LA_STATUS_OK,
                   "%s: OUT does not open: %s", tag, err))
        return;
    la_expect(la_st_count(f) == nw, "%s: OUT holds %lld tensors, want %d", tag,
              (long long)la_st_count(f), nw);
    for (int i = 0; i < nw; i++) {
        const la_st_tensor * t = la_st_find(f, w[i].name);
        if (!la_expect(t != NULL && t->dtype == LA_DTYPE_F32 && t->numel == w[i].n,
                       "%s: OUT lacks '%s' (float32, %lld entries)", tag, w[i].name,
                       (long long)w[i].n))
            continue;
        float * x = la_test_alloc((size_t)w[i].n * 4);
        la_st_read_f32(f, t, x, w[i].n, NULL, 0);
        int64_t bad = 0;
        for (int64_t e = 0; e < w[i].n; e++)
            if (memcmp(&x[e], &w[i].ref[e], 4) != 0) bad++;
        la_expect(bad == 0, "%s: OUT '%s' differs from the library call in %lld of %lld entries",
                  tag, w[i].name, (long long)bad, (long long)w[i].n);
        free(x);
    }
    la_st_close(f);
}

// --- Models ---------------------------------------------------------------------------------------

#include "model/model.h"

la_model * la_test_model(const char * json, uint64_t seed) {
    char err[256] = "";
    la_model * m = NULL;
    la_status s = la_model_from_json(&m, json, err, sizeof err);
    if (s) {
        printf("config rejected: %s\n", err);
        exit(1);
    }
    la_model_init(m, seed);
    return m;
}

static void random_tokens(la_rng * r, int64_t * x, int64_t n, int64_t vocab) {
    for (int64_t i = 0; i < n; i++) x[i] = (int64_t)(la_rng_uniform(r) * (double)vocab);
}

bool la_same_file(const char * a, const char * b) {
    size_t na, nb;
    char * x = la_read_file(a, &na), *y = la_read_file(b, &nb);
    const bool same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

// The check itself, drawing the directions from r (after whatever the caller drew from it).
static void grad_check(la_model * m, la_model_loss_cb loss, void * ctx, const char * tag, int ci,
                       la_rng * rp, int halvings, bool want_nonzero) {
    la_rng r = *rp;
    double l0;
    la_model_zero_grad(m);
    la_expect_status(loss(m, ctx, true, &l0), LA_STATUS_OK, "loss + backward");
    if (!m->g) return;
    double worst = 0;
    int nonzero = 0;
    for (int32_t p = 0; p < m->n_par; p++) {
        const la_param * P = &m->par[p];
        float * w = m->w + P->off;
        const float * g = m->g + P->off;
        double * u = la_test_alloc((size_t)P->numel * sizeof(double));
        float * w0 = la_test_alloc((size_t)P->numel * sizeof(float));
        memcpy(w0, w, (size_t)P->numel * sizeof(float));
        double nu = 0, an = 0, best = INFINITY, fd = 0, eps = 2e-3;
        for (int64_t j = 0; j < P->numel; j++) u[j] = la_rng_normal(&r), nu += u[j] * u[j];
        for (int64_t j = 0; j < P->numel; j++) u[j] /= sqrt(nu), an += u[j] * (double)g[j];
        // the loss at w0 +- eps u, for eps halved up to `halvings` times; the best agreement wins
        for (int h = 0; h < halvings; h++, eps /= 2) {
            double lpm[2];
            for (int k = 0; k < 2; k++) {
                const double e = k ? -eps : eps;
                for (int64_t j = 0; j < P->numel; j++) w[j] = (float)((double)w0[j] + e * u[j]);
                loss(m, ctx, false, &lpm[k]);
            }
            const double f = (lpm[0] - lpm[1]) / (2 * eps);
            const double tol =
                3e-2 * fabs(an) + 2e-4 + (halvings > 1 ? 2e-7 * fabs(l0) / eps : 0.0);
            if (fabs(f - an) / tol < best) best = fabs(f - an) / tol, fd = f;
        }
        memcpy(w, w0, (size_t)P->numel * sizeof(float));
        worst = fmax(worst, best);
        nonzero += fabs(an) > 1e-6;
        la_expect(best <= 1 && isfinite(an), "%s %d %s: fd %.6e analytic %.6e", tag, ci, P->name,
                  fd, an);
        free(u);
        free(w0);
    }
    if (want_nonzero)
        la_expect(nonzero == m->n_par, "%s %d: %d of %d gradients are non-zero", tag, ci, nonzero,
                  m->n_par);
    printf("grad check %s %d: %d tensors, worst |fd - an| / tol = %.3f\n", tag, ci, m->n_par,
           worst);
}

void la_model_grad_check_cb(la_model * m, la_model_loss_cb loss, void * ctx, const char * tag,
                            int ci, uint64_t seed, int halvings, bool want_nonzero) {
    la_rng r;
    la_rng_seed(&r, seed);
    grad_check(m, loss, ctx, tag, ci, &r, halvings, want_nonzero);
}

// The token loss of a fixed batch, for la_model_grad_check_m.
typedef struct {
    const int64_t * ids, *lab;
    int64_t         B, T;
} token_batch;

static la_status token_loss(la_model * m, void * ctx, bool backward, double * loss) {
    const token_batch * b = ctx;
    return la_model_loss(m, loss, NULL, b->ids, b->lab, b->B, b->T, backward, 1.0f);
}

void la_model_grad_check_m(la_model * m, const char * tag, int ci, uint64_t seed, int halvings,
                           bool want_nonzero) {
    la_rng r;
    la_rng_seed(&r, seed);
    const int64_t B = 2, T = 19, n = B * T;
    int64_t * ids = la_test_alloc((size_t)n * 8), *lab = la_test_alloc((size_t)n * 8);
    random_tokens(&r, ids, n, m->vocab);
    random_tokens(&r, lab, n, m->vocab);
    for (int64_t i = 0; i < n; i += 5) lab[i] = LA_IGNORE_INDEX;
    la_model_reserve(m, B, T, true);
    token_batch b = { ids, lab, B, T };
    grad_check(m, token_loss, &b, tag, ci, &r, halvings, want_nonzero);
    free(ids);
    free(lab);
}

void la_model_grad_check(const char * json, int ci) {
    la_model * m = la_test_model(json, 11 + (uint64_t)ci);
    la_model_grad_check_m(m, "cfg", ci, 100 + (uint64_t)ci, 1, false);
    la_model_free(m);
}

void la_model_decode_check_m(la_model * m, const char * tag, int ci, uint64_t seed, int64_t T,
                             const int64_t * lens, int nlens, int64_t cap) {
    la_rng r;
    la_rng_seed(&r, seed);
    const int64_t N = 2, V = m->vocab;
    int64_t * ids = la_test_alloc((size_t)(N * T) * 8);
    random_tokens(&r, ids, N * T, V);
    float * full = la_test_alloc((size_t)(N * T * V) * 4);
    la_status s = la_model_logits(m, full, ids, N, T, NULL, false);
    la_expect_status(s, LA_STATUS_OK, "full forward");
    la_cache * c = NULL;
    la_expect_status(la_cache_new(&c, m, N, cap), LA_STATUS_OK, "cache");
    float * got = la_test_alloc((size_t)(N * T * V) * 4);
    int64_t * chunk = la_test_alloc((size_t)(N * T) * 8);
    float * lg = la_test_alloc((size_t)(N * T * V) * 4);
    for (int64_t t0 = 0, k = 0; c && t0 < T; k++) {
        const int64_t len = LA_MIN(T - t0, k < nlens ? lens[k] : 1);
        for (int64_t b = 0; b < N; b++) memcpy(chunk + b * len, ids + b * T + t0, (size_t)len * 8);
        s = la_model_logits(m, lg, chunk, N, len, c, false);
        la_expect_status(s, LA_STATUS_OK, "cached forward");
        for (int64_t b = 0; b < N; b++)
            memcpy(got + (b * T + t0) * V, lg + b * len * V, (size_t)(len * V) * 4);
        t0 += len;
    }
    double * ref = la_to_f64(full, N * T * V);
    char name[96];
    snprintf(name, sizeof name, "%s %d prefill+decode logits", tag, ci);
    la_expect_rel(name, got, ref, N * T * V, 2e-4);
    free(ref);
    free(ids);
    free(full);
    free(got);
    free(chunk);
    free(lg);
    la_cache_free(c);
}

void la_model_decode_check(const char * json, int ci) {
    la_model * m = la_test_model(json, 21 + (uint64_t)ci);
    const int64_t lens[] = { 11, 9 };  // two prefill chunks, then decode steps
    la_model_decode_check_m(m, "cfg", ci, 200 + (uint64_t)ci, 30, lens, 2, 64);
    la_model_free(m);
}

void la_model_round_trip_check(la_model * m, const char * dir, const char * tag, int ci) {
    char err[512] = "";
    la_expect_status(la_model_save(m, dir, NULL, NULL, err, sizeof err), LA_STATUS_OK, err);
    la_model * r = NULL;
    la_expect_status(la_model_load(&r, dir, err, sizeof err), LA_STATUS_OK, err);
    if (!r) return;
    la_expect(r->n_par == m->n_par && r->n_floats == m->n_floats, "%s %d: layout differs", tag, ci);
    la_expect(!memcmp(r->w, m->w, m->n_floats * 4), "%s %d: parameters differ after reload", tag,
              ci);
    char * a = la_model_config_json(m), *b = la_model_config_json(r);
    la_expect(!strcmp(a, b), "%s %d: config.json differs after reload", tag, ci);
    free(a);
    free(b);
    const int64_t T = 9;
    int64_t ids[9];
    for (int64_t i = 0; i < T; i++) ids[i] = (i * 7 + 3) % m->vocab;
    const size_t nb = (size_t)(T * m->vocab) * 4;
    float * l1 = la_test_alloc(nb), *l2 = la_test_alloc(nb);
    la_expect_status(la_model_logits(m, l1, ids, 1, T, NULL, false), LA_STATUS_OK, "logits");
    la_expect_status(la_model_logits(r, l2, ids, 1, T, NULL, false), LA_STATUS_OK, "logits");
    la_expect(!memcmp(l1, l2, nb), "%s %d: logits differ after reload", tag, ci);
    free(l1);
    free(l2);
    la_model_free(r);
}

int la_run_cli(char ** out, char * first_err, size_t nerr, int * err_lines, const char * bin,
               const char * fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char o[600], e[600];
    snprintf(o, sizeof o, "%s", la_tmp("stdout.txt"));
    snprintf(e, sizeof e, "%s", la_tmp("stderr.txt"));
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s", bin, args, o, e);
    const int st = system(cmd);
    size_t n;
    char * err = la_read_file(e, &n);
    int lines = 0;
    for (size_t i = 0; err && i < n; i++) lines += err[i] == '\n';
    if (err_lines) *err_lines = lines;
    if (first_err && nerr) {
        const size_t l = err ? strcspn(err, "\n") : 0;
        snprintf(first_err, nerr, "%.*s", (int)(l < nerr - 1 ? l : nerr - 1), err ? err : "");
    }
    free(err);
    if (out) *out = la_read_file(o, &n);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
