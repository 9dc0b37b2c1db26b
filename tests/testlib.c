#include "testlib.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_pass, g_fail;

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
    printf("%d passed, %d failed\n", g_pass, g_fail);
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
