// Training data (src/model/data.c, ALGORITHMS.md 9.1):
//   MQAR   determinism (an example depends on (seed, index) only, not on the batch); structure
//          (context layout, key/value vocabularies, distinct keys and values, one label per key
//          at its query, the label is the paired value) over edge configurations; the gap law
//          (chi-square of the first and the second draw against P(i) ~ a (i + 1)^(a - 1) and
//          its without-replacement renormalisation, for a = 1 and a = 0.01, mean gap and the
//          frequency of gap 0); random non-queries (only fillers change, zeros at rate 1/Vc,
//          fillers uniform); invalid configurations (message names the field); speed.
//   text   round trip, UTF-8 rejection with the byte offset, file errors, split sizes,
//          sampled windows (determinism, label = next token, uniform starts over the whole
//          range), evaluation windows (every label of a split exactly once).
//
// Chi-square bounds: the Wilson-Hilferty upper quantile at z = 4.265 (tail 1e-5), e.g. 70.8 for
// 27 degrees of freedom; every draw uses fixed seeds, so a pass is reproducible.
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double chi2_bound(int df) {
    const double z = 4.265, c = 2.0 / (9.0 * df);
    const double q = 1.0 - c + z * sqrt(c);
    return df * q * q * q;
}

static bool one_line(const char * s) { return strchr(s, '\n') == NULL && s[0] != 0; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static la_mqar_cfg mqar_cfg(int64_t Vc, int64_t N, int64_t D, double a, int64_t p, bool rnq) {
    la_mqar_cfg c = { .vocab = Vc, .seq_len = N, .num_kv_pairs = D, .power_a = a,
                      .num_passes = p, .random_non_queries = rnq };
    return c;
}

// Fresh (n, N) inputs and labels of examples first .. first + n - 1.
static void mqar_gen(const la_mqar_cfg * c, uint64_t seed, int64_t first, int64_t n,
                     int64_t ** x, int64_t ** y) {
    *x = la_test_alloc((size_t)(n * c->seq_len) * sizeof(int64_t));
    *y = la_test_alloc((size_t)(n * c->seq_len) * sizeof(int64_t));
    la_status s = la_mqar_generate(*x, *y, c, seed, first, n);
    la_expect_status(s, LA_STATUS_OK, "la_mqar_generate");
}

static bool same_i64(const int64_t * a, const int64_t * b, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof(int64_t)) == 0;
}

// Gap of the key in context pair j of example (x, y): its query position, (t - 2 D p) / 2; -1
// when it has no labelled query.
static int64_t mqar_gap(const la_mqar_cfg * c, const int64_t * x, const int64_t * y, int64_t j) {
    const int64_t ctx = 2 * c->num_kv_pairs * c->num_passes;
    for (int64_t t = ctx; t < c->seq_len; t++)
        if (y[t] != LA_IGNORE_INDEX && x[t] == x[2 * j]) return (t - ctx) / 2;
    return -1;
}

// ---------------------------------------------------------------------------------------------
// MQAR

static void test_mqar_determinism(void) {
    const la_mqar_cfg c = mqar_cfg(8192, 64, 8, 0.01, 1, true);
    const int64_t N = c.seq_len;
    int64_t *x, *y, *x2, *y2, *xb, *yb;
    mqar_gen(&c, 7, 0, 10, &x, &y);
    mqar_gen(&c, 7, 0, 10, &x2, &y2);
    la_expect(same_i64(x, x2, 10 * N) && same_i64(y, y2, 10 * N), "mqar: same call differs");
    free(x2);
    free(y2);
    mqar_gen(&c, 7, 5, 5, &xb, &yb);
    la_expect(same_i64(x + 5 * N, xb, 5 * N) && same_i64(y + 5 * N, yb, 5 * N),
              "mqar: examples 5..9 in one call differ from rows 5..9 of examples 0..9");
    for (int64_t i = 5; i < 10; i++) {
        mqar_gen(&c, 7, i, 1, &x2, &y2);
        la_expect(same_i64(xb + (i - 5) * N, x2, N) && same_i64(yb + (i - 5) * N, y2, N),
                  "mqar: example %lld alone differs from the batch", (long long)i);
        free(x2);
        free(y2);
    }
    la_expect(!same_i64(x, x + N, N), "mqar: examples 0 and 1 are equal");
    mqar_gen(&c, 8, 0, 10, &x2, &y2);
    la_expect(!same_i64(x, x2, 10 * N), "mqar: seeds 7 and 8 give the same examples");
    free(x2);
    free(y2);
    free(xb);
    free(yb);
    free(x);
    free(y);
}

// Every structural rule of ALGORITHMS.md 9.1 on n examples; returns the number of violations.
static int64_t mqar_violations(const la_mqar_cfg * c, const int64_t * X, const int64_t * Y,
                               int64_t n, char * why, size_t whylen) {
    const int64_t N = c->seq_len, Vc = c->vocab, D = c->num_kv_pairs, P = c->num_passes;
    const int64_t ctx = 2 * D * P, half = Vc / 2;
    int64_t bad = 0;
    int64_t * seen = la_test_alloc((size_t)D * sizeof(int64_t));
#define VIOL(...) do { if (!bad++) snprintf(why, whylen, __VA_ARGS__); } while (0)
    for (int64_t e = 0; e < n; e++) {
        const int64_t * x = X + e * N, * y = Y + e * N;
        for (int64_t j = 0; j < D; j++) {
            const int64_t k = x[2 * j], v = x[2 * j + 1];
            if (k < 1 || k >= half) VIOL("ex %lld: key %lld outside [1, %lld)", (long long)e,
                                         (long long)k, (long long)half);
            if (v < half || v >= Vc) VIOL("ex %lld: value %lld outside [%lld, %lld)",
                                          (long long)e, (long long)v, (long long)half,
                                          (long long)Vc);
            for (int64_t i = 0; i < j; i++) {
                if (x[2 * i] == k) VIOL("ex %lld: key %lld repeated", (long long)e, (long long)k);
                if (x[2 * i + 1] == v)
                    VIOL("ex %lld: value %lld repeated", (long long)e, (long long)v);
            }
            for (int64_t r = 1; r < P; r++)
                if (x[r * 2 * D + 2 * j] != k || x[r * 2 * D + 2 * j + 1] != v)
                    VIOL("ex %lld: pass %lld differs at pair %lld", (long long)e, (long long)r,
                         (long long)j);
        }
        for (int64_t t = 0; t < ctx; t++)
            if (y[t] != LA_IGNORE_INDEX) VIOL("ex %lld: label at context position %lld",
                                              (long long)e, (long long)t);
        memset(seen, 0, (size_t)D * sizeof(int64_t));
        int64_t count = 0;
        for (int64_t t = ctx; t < N; t++) {
            if (x[t] < 0 || x[t] >= Vc) VIOL("ex %lld: token %lld", (long long)e, (long long)x[t]);
            if (y[t] == LA_IGNORE_INDEX) {
                if (!c->random_non_queries && x[t] != 0)
                    VIOL("ex %lld: filler %lld at %lld", (long long)e, (long long)x[t],
                         (long long)t);
                continue;
            }
            count++;
            if ((t - ctx) % 2 != 0) VIOL("ex %lld: query at odd offset %lld", (long long)e,
                                         (long long)(t - ctx));
            int64_t j = 0;
            while (j < D && x[2 * j] != x[t]) j++;
            if (j == D) {
                VIOL("ex %lld: label at %lld on a non-key %lld", (long long)e, (long long)t,
                     (long long)x[t]);
                continue;
            }
            seen[j]++;
            if (y[t] != x[2 * j + 1])
                VIOL("ex %lld: label %lld at %lld, the key's value is %lld", (long long)e,
                     (long long)y[t], (long long)t, (long long)x[2 * j + 1]);
        }
        if (count != D) VIOL("ex %lld: %lld labels, want %lld", (long long)e, (long long)count,
                             (long long)D);
        for (int64_t j = 0; j < D; j++)
            if (seen[j] != 1) VIOL("ex %lld: key %lld queried %lld times", (long long)e,
                                   (long long)j, (long long)seen[j]);
    }
#undef VIOL
    free(seen);
    return bad;
}

static void test_mqar_structure(void) {
    const la_mqar_cfg cfgs[] = {
        mqar_cfg(8192, 64, 4, 0.01, 1, false), mqar_cfg(8192, 64, 4, 0.01, 1, true),
        mqar_cfg(8192, 512, 64, 0.01, 1, false), mqar_cfg(8192, 512, 64, 0.01, 1, true),
        mqar_cfg(130, 128, 32, 1.0, 1, false),  // 2 D p + 2 D = N: every query slot is used
        mqar_cfg(65, 64, 4, 0.5, 3, false),     // three passes
        mqar_cfg(5, 4, 1, 0.01, 1, false),      // the smallest task: one key, one slot
        mqar_cfg(7, 6, 1, 1.0, 2, true),
        mqar_cfg(1000, 200, 10, 0.3, 4, false),
    };
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
        const la_mqar_cfg * c = &cfgs[k];
        int64_t *x, *y;
        mqar_gen(c, 100 + k, 3, 200, &x, &y);
        char why[200] = "";
        const int64_t bad = mqar_violations(c, x, y, 200, why, sizeof why);
        la_expect(bad == 0, "mqar structure, cfg %zu (Vc %lld N %lld D %lld p %lld): %lld "
                  "violations, first: %s", k, (long long)c->vocab, (long long)c->seq_len,
                  (long long)c->num_kv_pairs, (long long)c->num_passes, (long long)bad, why);
        // The key of pair 0 is a permutation draw: it must vary across examples.
        int64_t differ = 0;
        for (int64_t e = 1; e < 200; e++) differ += x[e * c->seq_len + 1] != x[1];
        la_expect(c->vocab - c->vocab / 2 == 1 || differ > 0, "mqar cfg %zu: value 0 constant",
                  k);
        free(x);
        free(y);
    }
}

// Chi-square of observed counts against expected ones (bins with expectation 0 must be empty).
static double chi2(const double * obs, const double * expc, int64_t bins, bool * impossible) {
    double s = 0.0;
    *impossible = false;
    for (int64_t i = 0; i < bins; i++) {
        if (expc[i] <= 0.0) {
            if (obs[i] > 0.0) *impossible = true;
            continue;
        }
        s += (obs[i] - expc[i]) * (obs[i] - expc[i]) / expc[i];
    }
    return s;
}

// The gap law over M examples of N = 64, D = 4 (space 28): the first draw against
// P(i) = w_i / W; the second, given the first g, against w_i / (W - w_g) (i != g), summed over
// the examples (the law of sequential sampling without replacement); returns the mean of all
// gaps.
static double check_gap_law(double a, int64_t M) {
    const la_mqar_cfg c = mqar_cfg(8192, 64, 4, a, 1, true);
    const int64_t N = c.seq_len, S = 28;
    double w[28], W = 0.0, h1[28] = { 0 }, h2[28] = { 0 }, e1[28], e2[28] = { 0 };
    for (int64_t i = 0; i < S; i++) W += (w[i] = a * pow((double)(i + 1), a - 1.0));
    int64_t *x, *y;
    mqar_gen(&c, 2024, 0, M, &x, &y);
    double sum = 0.0, mean1 = 0.0, var1 = 0.0;
    int64_t missing = 0;
    for (int64_t i = 0; i < S; i++) mean1 += i * w[i] / W;
    for (int64_t i = 0; i < S; i++) var1 += (i - mean1) * (i - mean1) * w[i] / W;
    double sum1 = 0.0;
    for (int64_t e = 0; e < M; e++) {
        const int64_t * xe = x + e * N, * ye = y + e * N;
        int64_t g[4];
        for (int64_t j = 0; j < 4; j++) {
            g[j] = mqar_gap(&c, xe, ye, j);
            if (g[j] < 0 || g[j] >= S) {
                missing++;
                g[j] = 0;
            }
            sum += (double)g[j];
        }
        h1[g[0]] += 1;
        h2[g[1]] += 1;
        sum1 += (double)g[0];
        for (int64_t i = 0; i < S; i++)
            if (i != g[0]) e2[i] += w[i] / (W - w[g[0]]);
    }
    la_expect(missing == 0, "gap law a=%g: %lld keys without a query", a, (long long)missing);
    for (int64_t i = 0; i < S; i++) e1[i] = (double)M * w[i] / W;
    bool imp1, imp2;
    const double c1 = chi2(h1, e1, S, &imp1), c2 = chi2(h2, e2, S, &imp2);
    const double bound = chi2_bound((int)S - 1);
    la_expect(!imp1 && c1 < bound, "gap law a=%g, first draw: chi2 %.1f >= %.1f (df %d)", a, c1,
              bound, (int)S - 1);
    la_expect(!imp2 && c2 < bound, "gap law a=%g, second draw: chi2 %.1f >= %.1f (df %d)", a, c2,
              bound, (int)S - 1);
    // The first draw's mean gap and its frequency of gap 0, within 5 standard errors.
    const double m1 = sum1 / (double)M, se1 = sqrt(var1 / (double)M);
    la_expect(fabs(m1 - mean1) < 5 * se1, "gap law a=%g: first-draw mean gap %.3f, law %.3f "
              "(5 se = %.3f)", a, m1, mean1, 5 * se1);
    const double p0 = w[0] / W, f0 = h1[0] / (double)M, se0 = sqrt(p0 * (1 - p0) / (double)M);
    la_expect(fabs(f0 - p0) < 5 * se0, "gap law a=%g: P(first gap = 0) %.4f, law %.4f (5 se = "
              "%.4f)", a, f0, p0, 5 * se0);
    if (getenv("LA_TEST_VERBOSE"))
        printf("gap law a=%g: chi2 first %.1f second %.1f (bound %.1f), mean first gap %.3f "
               "(law %.3f), P(gap 0) %.4f (law %.4f)\n", a, c1, c2, bound, m1, mean1, f0, p0);
    free(x);
    free(y);
    return sum / (double)(4 * M);
}

static void test_mqar_gaps(void) {
    const double mean_uniform = check_gap_law(1.0, 20000);
    const double mean_power = check_gap_law(0.01, 20000);
    la_expect(mean_power < mean_uniform - 1.0, "gap law: mean gap %.3f at a = 0.01 is not below "
              "%.3f at a = 1", mean_power, mean_uniform);
}

// random_non_queries: with the same seed only the fillers change, and they are uniform in
// [0, Vc) (so a filler is 0 with probability 1/Vc).
static void test_mqar_fillers(void) {
    const int64_t M = 20000, N = 64, Vc = 66, D = 4;
    const la_mqar_cfg off = mqar_cfg(Vc, N, D, 0.01, 1, false);
    const la_mqar_cfg on = mqar_cfg(Vc, N, D, 0.01, 1, true);
    int64_t *x0, *y0, *x1, *y1;
    mqar_gen(&off, 5, 0, M, &x0, &y0);
    mqar_gen(&on, 5, 0, M, &x1, &y1);
    la_expect(same_i64(y0, y1, M * N), "fillers: labels depend on random_non_queries");
    int64_t changed = 0, fillers = 0, zeros1 = 0;
    double hist[66] = { 0 };
    for (int64_t i = 0; i < M * N; i++) {
        if (x0[i] != 0) {
            changed += x1[i] != x0[i];
            continue;
        }
        fillers++;
        zeros1 += x1[i] == 0;
        if (x1[i] >= 0 && x1[i] < Vc) hist[x1[i]] += 1;
    }
    la_expect(changed == 0, "fillers: %lld non-filler tokens changed", (long long)changed);
    la_expect(fillers == M * (N - 3 * D), "fillers: %lld zeros without random_non_queries, want "
              "%lld", (long long)fillers, (long long)(M * (N - 3 * D)));
    const double p = 1.0 / (double)Vc, sd = sqrt((double)fillers * p * (1 - p));
    la_expect(fabs((double)zeros1 - (double)fillers * p) < 5 * sd, "fillers: %lld zeros of %lld "
              "fillers, want %.0f +- %.0f (5 sd)", (long long)zeros1, (long long)fillers,
              (double)fillers * p, 5 * sd);
    double expc[66];
    for (int64_t v = 0; v < Vc; v++) expc[v] = (double)fillers * p;
    bool imp;
    const double c = chi2(hist, expc, Vc, &imp), bound = chi2_bound((int)Vc - 1);
    la_expect(c < bound, "fillers: chi2 %.1f of the filler tokens >= %.1f (df %d)", c, bound,
              (int)Vc - 1);
    free(x0);
    free(y0);
    free(x1);
    free(y1);
}

static void test_mqar_invalid(void) {
    const la_mqar_cfg d = la_mqar_default();
    la_expect(d.vocab == 8192 && d.seq_len == 64 && d.num_kv_pairs == 4 && d.power_a == 0.01 &&
              d.num_passes == 1 && d.random_non_queries, "la_mqar_default");
    char err[256] = "x";
    la_expect_status(la_mqar_check(&d, err, sizeof err), LA_STATUS_OK, "mqar default");
    la_expect(err[0] == 0, "mqar: err not cleared on success");
    struct {
        la_mqar_cfg  c;
        const char * field;
    } bad[] = {
        { mqar_cfg(8192, 63, 4, 0.01, 1, true), "seq_len" },
        { mqar_cfg(8192, 0, 1, 0.01, 1, true), "seq_len" },
        { mqar_cfg(8192, -4, 1, 0.01, 1, true), "seq_len" },
        { mqar_cfg(64, 64, 4, 0.01, 1, true), "vocab" },
        { mqar_cfg(8192, 64, 0, 0.01, 1, true), "num_kv_pairs" },
        { mqar_cfg(8192, 128, 40, 0.01, 1, true), "num_kv_pairs 40 (num_passes 1) needs "
                                                  "seq_len >= 160" },
        { mqar_cfg(8192, 64, INT64_MAX, 0.01, 1, true), "num_kv_pairs" },
        { mqar_cfg(8192, 64, 4, 0.01, 0, true), "num_passes" },
        { mqar_cfg(8192, 64, 4, 0.01, 8, true), "num_passes 8" },
        { mqar_cfg(8192, 64, 4, 0.01, INT64_MAX, true), "num_passes" },
        { mqar_cfg(8192, 64, 4, 0.0, 1, true), "power_a" },
        { mqar_cfg(8192, 64, 4, -0.5, 1, true), "power_a" },
        { mqar_cfg(8192, 64, 4, 1.5, 1, true), "power_a" },
        { mqar_cfg(8192, 64, 4, (double)NAN, 1, true), "power_a" },
        { mqar_cfg(8192, 64, 4, (double)INFINITY, 1, true), "power_a" },
    };
    int64_t x[64], y[64];
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        err[0] = 0;
        la_status s = la_mqar_check(&bad[k].c, err, sizeof err);
        la_expect(s == LA_STATUS_INVALID_ARG && one_line(err) && strstr(err, bad[k].field) &&
                  strncmp(err, "mqar: ", 6) == 0,
                  "mqar invalid case %zu: status %s, message '%s' should name '%s'", k,
                  la_status_str(s), err, bad[k].field);
        la_expect_status(la_mqar_generate(x, y, &bad[k].c, 1, 0, 1), LA_STATUS_INVALID_ARG,
                         "mqar generate with an invalid cfg");
        char tiny[8];
        la_mqar_check(&bad[k].c, tiny, sizeof tiny);  // truncated, still terminated
        la_expect(strlen(tiny) == sizeof tiny - 1, "mqar: truncated message");
    }
    la_expect_status(la_mqar_check(NULL, err, sizeof err), LA_STATUS_INVALID_ARG, "NULL cfg");
    la_expect_status(la_mqar_check(&bad[0].c, NULL, 0), LA_STATUS_INVALID_ARG, "NULL err");
    la_expect_status(la_mqar_generate(NULL, y, &d, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "NULL inputs");
    la_expect_status(la_mqar_generate(x, NULL, &d, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "NULL labels");
    la_expect_status(la_mqar_generate(x, y, NULL, 1, 0, 1), LA_STATUS_INVALID_ARG, "NULL cfg");
    la_expect_status(la_mqar_generate(x, y, &d, 1, -1, 1), LA_STATUS_INVALID_ARG, "first < 0");
    la_expect_status(la_mqar_generate(x, y, &d, 1, 0, -1), LA_STATUS_INVALID_ARG, "n < 0");
    la_expect_status(la_mqar_generate(x, y, &d, 1, INT64_MAX, 2), LA_STATUS_INVALID_ARG,
                     "first + n overflows");
    la_expect_status(la_mqar_generate(NULL, NULL, &d, 1, 0, 0), LA_STATUS_OK, "n = 0");
}

// Zoology's largest Fig. 2 point: 256 examples of N = 512, D = 64, Vc = 8192 (best of 5).
static void test_mqar_speed(void) {
    const la_mqar_cfg c = mqar_cfg(8192, 512, 64, 0.01, 1, true);
    int64_t * x = la_test_alloc(256 * 512 * sizeof(int64_t));
    int64_t * y = la_test_alloc(256 * 512 * sizeof(int64_t));
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        const double t0 = now_s();
        la_status s = la_mqar_generate(x, y, &c, 9, 256 * r, 256);
        const double dt = now_s() - t0;
        best = dt < best ? dt : best;
        la_expect_status(s, LA_STATUS_OK, "mqar speed");
    }
    la_expect(best < 0.5, "mqar: 256 x 512 examples took %.3f s", best);
    if (getenv("LA_TEST_VERBOSE"))
        printf("mqar: 256 examples of N 512, D 64, Vc 8192: %.3f ms\n", best * 1e3);
    free(x);
    free(y);
}

// ---------------------------------------------------------------------------------------------
// Text

static char g_dir[64];

static const char * path_in(const char * name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_file(const char * path, const void * p, size_t n) {
    FILE * fp = fopen(path, "wb");
    if (!fp || fwrite(p, 1, n, fp) != n || fclose(fp) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

// The token stream of bytes: BOS, then the bytes.
static int64_t * stream_of(const unsigned char * b, size_t n) {
    int64_t * tok = la_test_alloc((n + 1) * sizeof(int64_t));
    tok[0] = LA_TEXT_BOS;
    for (size_t i = 0; i < n; i++) tok[i + 1] = b[i];
    return tok;
}

static void test_text_memory(void) {
    unsigned char buf[] = "Hi \xC3\xA9 \xF0\x9F\x98\x80 \xE2\x82\xAC!\n";
    const size_t n = sizeof buf - 1;
    la_text * t = NULL;
    char err[256];
    la_status s = la_text_from_memory(&t, buf, n, 0.0, err, sizeof err);
    if (!la_expect(s == LA_STATUS_OK, "text from memory: %s", err)) return;
    int64_t * tok = stream_of(buf, n);
    memset(buf, 'z', n);  // the text keeps its own copy
    const int64_t T = (int64_t)n;
    la_expect(la_text_tokens(t, false) == T + 1 && la_text_tokens(t, true) == 0,
              "text: split sizes %lld / %lld, want %lld / 0",
              (long long)la_text_tokens(t, false), (long long)la_text_tokens(t, true),
              (long long)(T + 1));
    la_expect(la_text_windows(t, false, T) == 1 && la_text_windows(t, true, T) == 0,
              "text: windows");
    int64_t x[64], y[64], xs[64], ys[64];
    la_expect_status(la_text_window(t, false, x, y, T, 0, 1), LA_STATUS_OK, "text window");
    la_expect(same_i64(x, tok, T) && same_i64(y, tok + 1, T),
              "text: tokens differ from BOS + bytes");
    // T = tokens - 1: the only start is 0.
    la_expect_status(la_text_sample(t, false, xs, ys, T, 3, 0, 1), LA_STATUS_OK, "text sample");
    la_expect(same_i64(xs, tok, T) && same_i64(ys, tok + 1, T), "text: sample of the whole "
              "stream");
    la_expect_status(la_text_sample(t, false, xs, ys, T + 1, 3, 0, 1), LA_STATUS_SHAPE,
                     "text sample T = tokens");
    la_expect_status(la_text_sample(t, true, xs, ys, 1, 3, 0, 1), LA_STATUS_SHAPE,
                     "text sample from an empty split");
    la_text_close(t);
    la_text_close(NULL);
    la_expect(la_text_tokens(NULL, false) == 0 && la_text_windows(NULL, false, 4) == 0,
              "text: NULL text");
    free(tok);
}

static void test_text_utf8(void) {
    static const struct {
        const char * b;
        int          off;  // -1: valid
    } cases[] = {
        { "ab\xC3\x28", 2 },           // a lead byte without its continuation
        { "\xC0\x80", 0 },             // overlong NUL
        { "\xC1\xBF", 0 },             // overlong
        { "x\xED\xA0\x80", 1 },        // surrogate U+D800
        { "abc\xE2\x82", 3 },          // truncated at the end
        { "\x80", 0 },                 // lone continuation
        { "ok\xF5\x80\x80\x80", 2 },   // F5: beyond U+10FFFF
        { "\xF4\x90\x80\x80", 0 },     // U+110000
        { "\xE0\x80\x80", 0 },         // overlong 3-byte
        { "a\xF0\x8F\xBF\xBF", 1 },    // overlong 4-byte
        { "\xE2\x28\xA1", 0 },
        { "\xE2\x82\x28", 0 },         // bad third byte
        { "\xF0\x9F\x98\x28", 0 },     // bad fourth byte
        { "abc\xFF", 3 },
        { "\xF4\x8F\xBF\xBF", -1 },    // U+10FFFF
        { "\xED\x9F\xBF", -1 },        // U+D7FF
        { "\xEE\x80\x80", -1 },        // U+E000
        { "\xEF\xBF\xBF", -1 },
        { "\xC2\x80\xDF\xBF", -1 },
        { "\xF0\x90\x80\x80", -1 },    // U+10000
        { "\x7F\x01", -1 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        la_text * t = NULL;
        char err[256] = "";
        la_status s = la_text_from_memory(&t, cases[k].b, strlen(cases[k].b), 0.0, err,
                                          sizeof err);
        if (cases[k].off < 0) {
            la_expect(s == LA_STATUS_OK && t, "utf8 case %zu: valid text rejected: %s", k, err);
        } else {
            char want[64];
            snprintf(want, sizeof want, "invalid UTF-8 at byte offset %d", cases[k].off);
            la_expect(s == LA_STATUS_FORMAT && !t && strstr(err, want) && one_line(err),
                      "utf8 case %zu: status %s, message '%s', want '%s'", k, la_status_str(s),
                      err, want);
        }
        la_text_close(t);
    }
}

static void test_text_files(void) {
    const char text[] = "line one\nline two \xCE\xBB\n";
    const size_t n = sizeof text - 1;
    write_file(path_in("ok.txt"), text, n);
    la_text * t = NULL;
    char err[512] = "";
    la_status s = la_text_open(&t, path_in("ok.txt"), 0.0, err, sizeof err);
    if (la_expect(s == LA_STATUS_OK, "text open: %s", err)) {
        int64_t * tok = stream_of((const unsigned char *)text, n);
        int64_t x[64], y[64];
        la_expect(la_text_tokens(t, false) == (int64_t)n + 1, "text open: %lld tokens",
                  (long long)la_text_tokens(t, false));
        la_expect_status(la_text_window(t, false, x, y, (int64_t)n, 0, 1), LA_STATUS_OK,
                         "text open window");
        la_expect(same_i64(x, tok, (int64_t)n) && same_i64(y, tok + 1, (int64_t)n),
                  "text open: tokens differ from BOS + file bytes");
        free(tok);
        la_text_close(t);
    }

    const char bad_utf8[] = "hello\xC3\x28world";
    write_file(path_in("bad.txt"), bad_utf8, sizeof bad_utf8 - 1);
    write_file(path_in("empty.txt"), "", 0);
    mkdir(path_in("adir"), 0755);
    static const struct {
        const char * name;
        la_status    want;
        const char * text;
    } cases[] = {
        { "missing.txt", LA_STATUS_IO, "cannot open" },
        { "bad.txt", LA_STATUS_FORMAT, "invalid UTF-8 at byte offset 5" },
        { "empty.txt", LA_STATUS_FORMAT, "empty" },
        { "adir", LA_STATUS_IO, "not a regular file" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char * p = path_in(cases[k].name);
        t = (la_text *)&err;  // must be reset to NULL
        err[0] = 0;
        s = la_text_open(&t, p, 0.1, err, sizeof err);
        la_expect(s == cases[k].want && !t && strstr(err, p) && strstr(err, cases[k].text) &&
                  one_line(err), "text open %s: status %s, message '%s'", cases[k].name,
                  la_status_str(s), err);
    }
    const double bad_frac[] = { -0.1, 0.6, (double)NAN, (double)INFINITY };
    for (size_t k = 0; k < sizeof bad_frac / sizeof bad_frac[0]; k++) {
        s = la_text_open(&t, path_in("ok.txt"), bad_frac[k], err, sizeof err);
        la_expect(s == LA_STATUS_INVALID_ARG && strstr(err, "val_frac"),
                  "text open val_frac %g: status %s, '%s'", bad_frac[k], la_status_str(s), err);
        s = la_text_from_memory(&t, text, n, bad_frac[k], err, sizeof err);
        la_expect(s == LA_STATUS_INVALID_ARG && strstr(err, "val_frac"),
                  "text from memory val_frac %g: status %s", bad_frac[k], la_status_str(s));
    }
    la_expect_status(la_text_open(NULL, path_in("ok.txt"), 0.0, err, sizeof err),
                     LA_STATUS_INVALID_ARG, "text open NULL out");
    la_expect_status(la_text_open(&t, NULL, 0.0, err, sizeof err), LA_STATUS_INVALID_ARG,
                     "text open NULL path");
    la_expect_status(la_text_from_memory(&t, NULL, 3, 0.0, NULL, 0), LA_STATUS_INVALID_ARG,
                     "text from memory NULL bytes");
    remove(path_in("ok.txt"));
    remove(path_in("bad.txt"));
    remove(path_in("empty.txt"));
    rmdir(path_in("adir"));
}

static void test_text_split(void) {
    static const struct {
        int64_t bytes;
        double  vf;
        int64_t train, val;  // -1: rejected
    } cases[] = {
        { 99, 0.1, 90, 10 },  { 9, 0.25, 8, 2 },  // round(7.5) = 8
        { 999, 0.5, 500, 500 }, { 3, 0.5, 2, 2 }, { 1, 0.0, 2, 0 }, { 1000, 0.0, 1001, 0 },
        { 2, 0.5, -1, -1 },    // 2 + 1: the validation split would hold 1 token
        { 0, 0.0, -1, -1 },    // empty
        { 1, 0.5, -1, -1 },    // 1 + 1 tokens, 1 each
        { 100, 1e-6, -1, -1 }, // val_frac > 0 but no validation token
    };
    unsigned char buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (unsigned char)('a' + i % 26);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        la_text * t = NULL;
        char err[256] = "";
        la_status s = la_text_from_memory(&t, buf, (size_t)cases[k].bytes, cases[k].vf, err,
                                          sizeof err);
        if (cases[k].train < 0) {
            la_expect(s == LA_STATUS_FORMAT && !t && one_line(err) && strstr(err, "<memory>"),
                      "split case %zu: status %s, '%s'", k, la_status_str(s), err);
            continue;
        }
        if (!la_expect(s == LA_STATUS_OK, "split case %zu: %s", k, err)) continue;
        la_expect(la_text_tokens(t, false) == cases[k].train &&
                  la_text_tokens(t, true) == cases[k].val,
                  "split case %zu: %lld / %lld, want %lld / %lld", k,
                  (long long)la_text_tokens(t, false), (long long)la_text_tokens(t, true),
                  (long long)cases[k].train, (long long)cases[k].val);
        if (cases[k].val > 0) {  // the validation split starts right after the training split
            int64_t x, y;
            la_text_window(t, true, &x, &y, 1, 0, 1);
            la_expect(x == buf[cases[k].train - 1] && y == buf[cases[k].train],
                      "split case %zu: validation starts at %lld", k, (long long)x);
        }
        la_text_close(t);
    }
}

// Split tokens (BOS + 94 distinct printable bytes): a sample's start is identified by its
// first token.
static void test_text_sample(void) {
    unsigned char buf[94];
    for (int i = 0; i < 94; i++) buf[i] = (unsigned char)(33 + i);
    int64_t * tok = stream_of(buf, 94);
    la_text * t = NULL;
    char err[256];
    if (!la_expect(la_text_from_memory(&t, buf, 94, 0.2, err, sizeof err) == LA_STATUS_OK,
                   "text sample: %s", err))
        return;
    const int64_t ntrain = la_text_tokens(t, false), nval = la_text_tokens(t, true);
    la_expect(ntrain == 76 && nval == 19, "text sample: split %lld / %lld", (long long)ntrain,
              (long long)nval);
    const int64_t T = 10, M = 4000;
    int64_t * x = la_test_alloc((size_t)(M * T) * sizeof(int64_t));
    int64_t * y = la_test_alloc((size_t)(M * T) * sizeof(int64_t));
    for (int sp = 0; sp < 2; sp++) {
        const bool val = sp == 1;
        const int64_t base = val ? ntrain : 0, len = val ? nval : ntrain;
        const int64_t nstart = len - T;  // starts [0, len - T - 1]
        la_expect_status(la_text_sample(t, val, x, y, T, 11, 0, M), LA_STATUS_OK, "sample");
        double hist[80] = { 0 };
        int64_t bad = 0;
        for (int64_t i = 0; i < M; i++) {
            const int64_t * xi = x + i * T, * yi = y + i * T;
            const int64_t s = xi[0] == LA_TEXT_BOS ? 0 : xi[0] - 33 + 1;  // stream position
            if (s - base < 0 || s - base >= nstart) {
                bad++;
                continue;
            }
            hist[s - base] += 1;
            for (int64_t j = 0; j < T; j++)
                bad += xi[j] != tok[s + j] || yi[j] != tok[s + j + 1];
        }
        la_expect(bad == 0, "text sample %s: %lld bad windows or tokens", val ? "val" : "train",
                  (long long)bad);
        double expc[80];
        for (int64_t i = 0; i < nstart; i++) expc[i] = (double)M / (double)nstart;
        bool imp;
        const double c = chi2(hist, expc, nstart, &imp), bound = chi2_bound((int)nstart - 1);
        la_expect(c < bound && hist[0] > 0 && hist[nstart - 1] > 0,
                  "text sample %s: starts not uniform over [0, %lld] (chi2 %.1f, bound %.1f)",
                  val ? "val" : "train", (long long)(nstart - 1), c, bound);
    }
    // Determinism: a window is a function of (seed, index).
    la_text_sample(t, false, x, y, T, 11, 0, M);
    int64_t xa[5 * 10], ya[5 * 10], xb[10], yb[10];
    la_text_sample(t, false, xa, ya, T, 11, 100, 5);
    int64_t same = 0;
    for (int64_t i = 0; i < 5; i++) {
        la_text_sample(t, false, xb, yb, T, 11, 100 + i, 1);
        same += same_i64(xa + i * T, xb, T) && same_i64(ya + i * T, yb, T);
    }
    la_expect(same == 5 && same_i64(xa, x + 100 * T, 5 * T),
              "text sample: windows depend on the batch");
    int64_t diff = 0;
    for (int64_t i = 0; i < 50; i++) {
        la_text_sample(t, false, xb, yb, T, 12, i, 1);
        diff += !same_i64(xb, x + i * T, T);
    }
    la_expect(diff > 0, "text sample: seeds 11 and 12 give the same windows");
    la_expect_status(la_text_sample(t, true, xa, ya, nval - 1, 1, 0, 1), LA_STATUS_OK,
                     "sample T = len - 1");
    la_expect_status(la_text_sample(t, true, xa, ya, nval, 1, 0, 1), LA_STATUS_SHAPE,
                     "sample T = len");
    la_expect_status(la_text_sample(t, false, xa, ya, 0, 1, 0, 1), LA_STATUS_SHAPE,
                     "sample T = 0");
    la_expect_status(la_text_sample(t, false, NULL, ya, T, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "sample NULL inputs");
    la_expect_status(la_text_sample(NULL, false, xa, ya, T, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "sample NULL text");
    la_expect_status(la_text_sample(t, false, xa, ya, T, 1, -1, 1), LA_STATUS_INVALID_ARG,
                     "sample first < 0");
    free(x);
    free(y);
    free(tok);
    la_text_close(t);
}

// Evaluation windows: every label of a split exactly once, inputs aligned with the stream,
// padding only past the end.
static void test_text_windows(void) {
    unsigned char buf[1000];
    la_rng r;
    la_rng_seed(&r, 3);
    for (int i = 0; i < 1000; i++) {
        const int v = (int)(la_rng_uniform(&r) * 96);
        buf[i] = (unsigned char)(v == 95 ? '\n' : 32 + v);
    }
    int64_t * tok = stream_of(buf, 1000);
    la_text * t = NULL;
    char err[256];
    if (!la_expect(la_text_from_memory(&t, buf, 1000, 0.1, err, sizeof err) == LA_STATUS_OK,
                   "text windows: %s", err))
        return;
    for (int sp = 0; sp < 2; sp++) {
        const bool val = sp == 1;
        const int64_t base = val ? la_text_tokens(t, false) : 0, len = la_text_tokens(t, val);
        const int64_t Ts[] = { 1, 3, 7, 64, len - 1, len, len + 5 };
        for (size_t k = 0; k < sizeof Ts / sizeof Ts[0]; k++) {
            const int64_t T = Ts[k], nw = la_text_windows(t, val, T);
            la_expect(nw == (len - 1 + T - 1) / T, "windows %s T %lld: %lld", val ? "val" : "train",
                      (long long)T, (long long)nw);
            int64_t * x = la_test_alloc((size_t)(nw * T) * sizeof(int64_t));
            int64_t * y = la_test_alloc((size_t)(nw * T) * sizeof(int64_t));
            int64_t * cover = la_test_alloc((size_t)len * sizeof(int64_t));
            la_expect_status(la_text_window(t, val, x, y, T, 0, nw), LA_STATUS_OK, "windows");
            int64_t bad = 0;
            for (int64_t i = 0; i < nw * T; i++) {  // position i of the split
                if (y[i] == LA_IGNORE_INDEX) {
                    bad += i + 1 < len || x[i] != LA_TEXT_EOS || i / T != nw - 1;
                    continue;
                }
                bad += i + 1 >= len || x[i] != tok[base + i] || y[i] != tok[base + i + 1];
                if (i + 1 < len) cover[i + 1]++;
            }
            int64_t once = 0;
            for (int64_t p = 1; p < len; p++) once += cover[p] == 1;
            la_expect(bad == 0 && once == len - 1, "windows %s T %lld: %lld bad positions, %lld "
                      "of %lld labels once", val ? "val" : "train", (long long)T,
                      (long long)bad, (long long)once, (long long)(len - 1));
            if (nw >= 3) {  // a sub-batch equals the same windows of the whole
                int64_t * x2 = la_test_alloc((size_t)(2 * T) * sizeof(int64_t));
                int64_t * y2 = la_test_alloc((size_t)(2 * T) * sizeof(int64_t));
                la_text_window(t, val, x2, y2, T, nw - 2, 2);
                la_expect(same_i64(x2, x + (nw - 2) * T, 2 * T) &&
                          same_i64(y2, y + (nw - 2) * T, 2 * T), "windows: sub-batch differs");
                free(x2);
                free(y2);
            }
            la_expect_status(la_text_window(t, val, x, y, T, nw, 1), LA_STATUS_SHAPE,
                             "window past the end");
            la_expect_status(la_text_window(t, val, x, y, T, 0, nw + 1), LA_STATUS_SHAPE,
                             "windows past the end");
            free(x);
            free(y);
            free(cover);
        }
    }
    int64_t x[4], y[4];
    la_expect(la_text_windows(t, false, 0) == 0, "windows T = 0");
    la_expect_status(la_text_window(t, false, x, y, 0, 0, 1), LA_STATUS_SHAPE, "window T = 0");
    la_expect_status(la_text_window(t, false, x, NULL, 4, 0, 1), LA_STATUS_INVALID_ARG,
                     "window NULL labels");
    la_expect_status(la_text_window(t, false, x, y, 4, -1, 1), LA_STATUS_INVALID_ARG,
                     "window first < 0");
    free(tok);
    la_text_close(t);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/la_data_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_mqar_determinism();
    test_mqar_structure();
    test_mqar_gaps();
    test_mqar_fillers();
    test_mqar_invalid();
    test_mqar_speed();
    test_text_memory();
    test_text_utf8();
    test_text_files();
    test_text_split();
    test_text_sample();
    test_text_windows();
    rmdir(g_dir);
    return la_test_summary();
}
