// Synthetic tasks (src/model/tasks.c, ALGORITHMS.md 9.2, 9.4 and 9.5):
//   selcopy  determinism (an example depends on (seed, index) only: batches split differently
//            give the same rows; plain and selective share the data tokens); structure over edge
//            configurations (M labels = the data in order at the markers A - 1, data in
//            [1, A - 2], zeros elsewhere, the plain layout); statistics (chi-square of the
//            occupied slots against the uniform marginal M / S, of the whole subset for S = 6,
//            M = 3 against 1 / C(6, 3), of the data tokens against uniform); invalid configs.
//   passkey  determinism; structure (value_len labels = the value at the query, the key twice
//            and nowhere else, the needle once at p = floor(depth F + 1/2), fillers in
//            [1, Vc/2) without the key, values in [Vc/2, Vc)); statistics (depth < 0: p uniform
//            over [0, F]; key, value and filler tokens uniform); invalid configs; speed.
//   icr      in-context linear regression: determinism (also across noise levels: the same w and
//            x_i); layout (yv_i = (y_i, 0, ..., 0) at odd positions, weights exactly 1 at even
//            and 0 at odd positions); statistics (moments of x and y, the noise's variance);
//            the least-squares baseline: exact for noise 0 once i >= d, against an independent
//            float64 solve (modified Gram-Schmidt QR for i >= d, Gaussian elimination on
//            X X^T for the minimum norm when i < d), zero-padded (rank-deficient) inputs against
//            the unpadded problem; invalid configs and inputs.
//
// Chi-square bounds: the Wilson-Hilferty upper quantile at z = 4.265 (tail 1e-5), e.g. 70.8 for
// 27 degrees of freedom, as test_data.c. For the slot counts of selective copying the M slots of
// one example are drawn without replacement, which lowers the statistic's mean from S - 1 to
// S - M, so the bound is conservative there. Every draw uses fixed seeds: a pass is reproducible.
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double chi2_bound(int df) {
    const double z = 4.265, c = 2.0 / (9.0 * df);
    const double q = 1.0 - c + z * sqrt(c);
    return df * q * q * q;
}

// sum (c - e)^2 / e over k bins of equal expectation e = total / k.
static double chi2_flat(const int64_t * c, int k) {
    int64_t tot = 0;
    for (int i = 0; i < k; i++) tot += c[i];
    const double e = (double)tot / k;
    double s = 0.0;
    for (int i = 0; i < k; i++) s += ((double)c[i] - e) * ((double)c[i] - e) / e;
    return s;
}

static bool one_line(const char * s) { return strchr(s, '\n') == NULL && s[0] != 0; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool same_i64(const int64_t * a, const int64_t * b, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof(int64_t)) == 0;
}

// ---------------------------------------------------------------------------------------------
// Selective copying

static la_selcopy_cfg sc_cfg(int64_t A, int64_t M, int64_t L, bool plain) {
    la_selcopy_cfg c = { .vocab = A, .num_tokens = M, .noise_len = L, .plain = plain };
    return c;
}

// Fresh (n, L + 2 M) inputs and labels of examples first .. first + n - 1.
static void sc_gen(const la_selcopy_cfg * c, uint64_t seed, int64_t first, int64_t n,
                   int64_t ** x, int64_t ** y) {
    const int64_t T = c->noise_len + 2 * c->num_tokens;
    *x = la_test_alloc((size_t)(n * T) * sizeof(int64_t));
    *y = la_test_alloc((size_t)(n * T) * sizeof(int64_t));
    la_expect_status(la_selcopy_generate(*x, *y, c, seed, first, n), LA_STATUS_OK,
                     "la_selcopy_generate");
}

// One example's layout; returns false (after one message) on the first violation. pos receives
// the M data positions (NULL: not wanted).
static bool sc_example_ok(const la_selcopy_cfg * c, const int64_t * x, const int64_t * y,
                          int64_t * pos, const char * tag) {
    const int64_t A = c->vocab, M = c->num_tokens, L = c->noise_len, S = L + M;
    int64_t nlab = 0, k = 0;
    for (int64_t t = 0; t < S + M; t++) nlab += y[t] != LA_IGNORE_INDEX;
    if (!la_expect(nlab == M, "%s: %lld labels, want %lld", tag, (long long)nlab, (long long)M))
        return false;
    for (int64_t j = 0; j < M; j++) {
        const int64_t d = y[S + j];
        if (!la_expect(x[S + j] == A - 1 && d >= 1 && d <= A - 2,
                       "%s: marker %lld: input %lld (want %lld), label %lld (want [1, %lld])",
                       tag, (long long)j, (long long)x[S + j], (long long)(A - 1), (long long)d,
                       (long long)(A - 2)))
            return false;
    }
    // The first S slots: zeros and exactly the M data tokens, in order (slot order is sorted and
    // distinct by construction of the scan).
    for (int64_t t = 0; t < S; t++) {
        if (x[t] == 0) continue;
        if (!la_expect(k < M && x[t] == y[S + k],
                       "%s: slot %lld holds %lld, want data token %lld (%lld)", tag,
                       (long long)t, (long long)x[t], (long long)k,
                       (long long)(k < M ? y[S + k] : -1)))
            return false;
        if (pos) pos[k] = t;
        k++;
    }
    if (!la_expect(k == M, "%s: %lld data tokens in the first %lld slots, want %lld", tag,
                   (long long)k, (long long)S, (long long)M))
        return false;
    if (c->plain)
        for (int64_t j = 0; j < M; j++)
            if (!la_expect(x[j] == y[S + j], "%s: plain: slot %lld is not data token %lld", tag,
                           (long long)j, (long long)j))
                return false;
    return true;
}

static void test_selcopy_determinism(void) {
    const la_selcopy_cfg cs = sc_cfg(16, 16, 200, false), cp = sc_cfg(16, 16, 200, true);
    const int64_t T = la_selcopy_len(&cs), n = 50;
    la_expect(T == 232 && la_selcopy_len(&cp) == 232, "selcopy: len %lld, want 232",
              (long long)T);
    int64_t *x, *y, *x2, *y2, *x3, *y3;
    sc_gen(&cs, 7, 100, n, &x, &y);
    // The same rows from three calls split at 1 and 31, and from one-example calls.
    x2 = la_test_alloc((size_t)(n * T) * sizeof(int64_t));
    y2 = la_test_alloc((size_t)(n * T) * sizeof(int64_t));
    la_selcopy_generate(x2, y2, &cs, 7, 100, 1);
    la_selcopy_generate(x2 + T, y2 + T, &cs, 7, 101, 30);
    la_selcopy_generate(x2 + 31 * T, y2 + 31 * T, &cs, 7, 131, n - 31);
    la_expect(same_i64(x, x2, n * T) && same_i64(y, y2, n * T), "selcopy: split batch differs");
    for (int64_t e = 0; e < n; e += 7) {
        int64_t xi[232], yi[232];
        la_selcopy_generate(xi, yi, &cs, 7, 100 + e, 1);
        la_expect(same_i64(xi, x + e * T, T) && same_i64(yi, y + e * T, T),
                  "selcopy: example %lld alone differs", (long long)(100 + e));
    }
    // Another seed: other examples. The plain variant: the same data tokens (labels).
    sc_gen(&cs, 8, 100, n, &x3, &y3);
    la_expect(!same_i64(x, x3, n * T), "selcopy: seed 8 gives the examples of seed 7");
    free(x3);
    free(y3);
    sc_gen(&cp, 7, 100, n, &x3, &y3);
    la_expect(same_i64(y, y3, n * T), "selcopy: plain changes the data tokens");
    la_expect(!same_i64(x, x3, n * T), "selcopy: plain gives the selective inputs");
    free(x);
    free(y);
    free(x2);
    free(y2);
    free(x3);
    free(y3);
}

static void test_selcopy_structure(void) {
    const la_selcopy_cfg cases[] = {
        sc_cfg(16, 16, 4064, false),  // Mamba's setting: seq_len 4096
        sc_cfg(3, 1, 0, false),       // one data token (always 1), no noise
        sc_cfg(3, 5, 0, false),       // every slot holds data
        sc_cfg(4, 7, 3, false),
        sc_cfg(1000, 1, 50, false),
        sc_cfg(16, 16, 4064, true),
        sc_cfg(3, 1, 0, true),
        sc_cfg(5, 4, 9, true),
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const la_selcopy_cfg * c = &cases[k];
        const int64_t T = la_selcopy_len(c), n = 40;
        la_expect(T == c->noise_len + 2 * c->num_tokens, "selcopy case %zu: len %lld", k,
                  (long long)T);
        int64_t *x, *y;
        sc_gen(c, 3 + k, 0, n, &x, &y);
        char tag[64];
        for (int64_t e = 0; e < n; e++) {
            snprintf(tag, sizeof tag, "selcopy case %zu example %lld", k, (long long)e);
            if (!sc_example_ok(c, x + e * T, y + e * T, NULL, tag)) break;
        }
        free(x);
        free(y);
    }
}

// Slots of S = 64 (M = 8, L = 56): counts per slot against M / S (df 63); the whole subset for
// S = 6, M = 3 (20 subsets, df 19); the data tokens of A = 16 (14 values, df 13).
static void test_selcopy_stats(void) {
    {
        const la_selcopy_cfg c = sc_cfg(16, 8, 56, false);
        const int64_t S = 64, T = 72, n = 20000;
        int64_t *x, *y, cnt[64] = { 0 }, tok[14] = { 0 }, pos[8];
        sc_gen(&c, 11, 0, n, &x, &y);
        for (int64_t e = 0; e < n; e++) {
            if (!sc_example_ok(&c, x + e * T, y + e * T, pos, "selcopy stats")) break;
            for (int j = 0; j < 8; j++) cnt[pos[j]]++;
            for (int j = 0; j < 8; j++) tok[y[e * T + S + j] - 1]++;
        }
        const double q = chi2_flat(cnt, 64), qt = chi2_flat(tok, 14);
        la_expect(q < chi2_bound(63), "selcopy: slot chi-square %.1f >= %.1f (df 63)", q,
                  chi2_bound(63));
        la_expect(qt < chi2_bound(13), "selcopy: data token chi-square %.1f >= %.1f (df 13)",
                  qt, chi2_bound(13));
        free(x);
        free(y);
    }
    {
        const la_selcopy_cfg c = sc_cfg(5, 3, 3, false);
        const int64_t T = 9, n = 20000;
        int64_t *x, *y, cnt[20] = { 0 }, pos[3];
        int id[64];  // subset bitmask -> index among the 20 3-subsets of 6
        int m = 0;
        for (int b = 0; b < 64; b++) id[b] = __builtin_popcount((unsigned)b) == 3 ? m++ : -1;
        sc_gen(&c, 12, 0, n, &x, &y);
        for (int64_t e = 0; e < n; e++) {
            if (!sc_example_ok(&c, x + e * T, y + e * T, pos, "selcopy subsets")) break;
            cnt[id[(1 << pos[0]) | (1 << pos[1]) | (1 << pos[2])]]++;
        }
        const double q = chi2_flat(cnt, 20);
        la_expect(q < chi2_bound(19), "selcopy: subset chi-square %.1f >= %.1f (df 19)", q,
                  chi2_bound(19));
        free(x);
        free(y);
    }
}

static void test_selcopy_invalid(void) {
    char err[256] = "x";
    la_selcopy_cfg ok = sc_cfg(16, 16, 4064, false);
    la_expect_status(la_selcopy_check(&ok, err, sizeof err), LA_STATUS_OK, "selcopy ok");
    la_expect(err[0] == 0, "selcopy: err not cleared on success");
    struct {
        la_selcopy_cfg c;
        const char *   field;
    } bad[] = {
        { sc_cfg(2, 1, 0, false), "vocab 2" },
        { sc_cfg(-5, 1, 0, true), "vocab" },
        { sc_cfg(16, 0, 10, false), "num_tokens 0" },
        { sc_cfg(16, -3, 10, false), "num_tokens" },
        { sc_cfg(16, 4, -1, false), "noise_len -1" },
        { sc_cfg(16, INT64_MAX / 2, 10, false), "overflows" },
        { sc_cfg(16, 1, INT64_MAX - 1, false), "noise_len" },
    };
    int64_t x[64], y[64];
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        err[0] = 0;
        la_status s = la_selcopy_check(&bad[k].c, err, sizeof err);
        la_expect(s == LA_STATUS_INVALID_ARG && one_line(err) && strstr(err, bad[k].field) &&
                  strncmp(err, "selcopy: ", 9) == 0,
                  "selcopy invalid case %zu: status %s, message '%s' should name '%s'", k,
                  la_status_str(s), err, bad[k].field);
        la_expect_status(la_selcopy_generate(x, y, &bad[k].c, 1, 0, 1), LA_STATUS_INVALID_ARG,
                         "selcopy generate with an invalid cfg");
        la_expect(la_selcopy_len(&bad[k].c) == -1, "selcopy: len of invalid case %zu", k);
        la_expect_status(la_selcopy_check(&bad[k].c, NULL, 0), LA_STATUS_INVALID_ARG,
                         "selcopy NULL err");
    }
    const la_selcopy_cfg c = sc_cfg(16, 4, 8, false);  // T = 16
    la_expect(la_selcopy_len(NULL) == -1, "selcopy: len of NULL");
    la_expect_status(la_selcopy_check(NULL, err, sizeof err), LA_STATUS_INVALID_ARG, "NULL cfg");
    la_expect(one_line(err) && strstr(err, "cfg"), "selcopy NULL cfg message '%s'", err);
    la_expect_status(la_selcopy_generate(NULL, y, &c, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "selcopy NULL inputs");
    la_expect_status(la_selcopy_generate(x, NULL, &c, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "selcopy NULL labels");
    la_expect_status(la_selcopy_generate(x, y, NULL, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "selcopy NULL cfg");
    la_expect_status(la_selcopy_generate(x, y, &c, 1, -1, 1), LA_STATUS_INVALID_ARG,
                     "selcopy first < 0");
    la_expect_status(la_selcopy_generate(x, y, &c, 1, 0, -1), LA_STATUS_INVALID_ARG,
                     "selcopy n < 0");
    la_expect_status(la_selcopy_generate(x, y, &c, 1, INT64_MAX, 2), LA_STATUS_INVALID_ARG,
                     "selcopy first + n overflows");
    la_expect_status(la_selcopy_generate(x, y, &c, 1, 0, INT64_MAX / 8), LA_STATUS_INVALID_ARG,
                     "selcopy n seq_len overflows");
    la_expect_status(la_selcopy_generate(NULL, NULL, &c, 1, 0, 0), LA_STATUS_OK,
                     "selcopy n = 0");
    la_expect_status(la_selcopy_generate(x, y, &c, 1, 0, 4), LA_STATUS_OK, "selcopy 4 x 16");
}

// ---------------------------------------------------------------------------------------------
// Passkey

static la_passkey_cfg pk_cfg(int64_t Vc, int64_t N, int64_t V, double depth) {
    la_passkey_cfg c = { .vocab = Vc, .seq_len = N, .value_len = V, .depth = depth };
    return c;
}

static void pk_gen(const la_passkey_cfg * c, uint64_t seed, int64_t first, int64_t n,
                   int64_t ** x, int64_t ** y) {
    *x = la_test_alloc((size_t)(n * c->seq_len) * sizeof(int64_t));
    *y = la_test_alloc((size_t)(n * c->seq_len) * sizeof(int64_t));
    la_expect_status(la_passkey_generate(*x, *y, c, seed, first, n), LA_STATUS_OK,
                     "la_passkey_generate");
}

// One example's layout; returns the needle's first position p (-1 after one message on the
// first violation), and the key in *key.
static int64_t pk_example(const la_passkey_cfg * c, const int64_t * x, const int64_t * y,
                          int64_t * key, const char * tag) {
    const int64_t N = c->seq_len, V = c->value_len, Vc = c->vocab, Q = N - V, h = Vc / 2;
    int64_t nlab = 0;
    for (int64_t t = 0; t < N; t++) nlab += y[t] != LA_IGNORE_INDEX;
    if (!la_expect(nlab == V, "%s: %lld labels, want %lld", tag, (long long)nlab, (long long)V))
        return -1;
    const int64_t k = x[Q];
    *key = k;
    if (!la_expect(k >= 1 && k < h, "%s: final key %lld not in [1, %lld)", tag, (long long)k,
                   (long long)h))
        return -1;
    // Labels at [Q, N) are the value; the query's inputs after the key are its first V - 1.
    for (int64_t i = 0; i < V; i++) {
        if (!la_expect(y[Q + i] >= h && y[Q + i] < Vc, "%s: label %lld = %lld not in [%lld, %lld)",
                       tag, (long long)(Q + i), (long long)y[Q + i], (long long)h, (long long)Vc))
            return -1;
        if (i > 0 && !la_expect(x[Q + i] == y[Q + i - 1], "%s: query input %lld is %lld, want "
                                "value token %lld (%lld)", tag, (long long)(Q + i),
                                (long long)x[Q + i], (long long)(i - 1), (long long)y[Q + i - 1]))
            return -1;
    }
    // Context: the key exactly once, followed by the value; everything else a filler.
    int64_t p = -1;
    for (int64_t t = 0; t < Q; t++) {
        if (x[t] != k) continue;
        if (!la_expect(p < 0, "%s: key at %lld and at %lld", tag, (long long)p, (long long)t))
            return -1;
        p = t;
    }
    if (!la_expect(p >= 0 && p + V < Q, "%s: needle at %lld does not fit before %lld", tag,
                   (long long)p, (long long)Q))
        return -1;
    for (int64_t t = 0; t < Q; t++) {
        if (t > p && t <= p + V) {
            if (!la_expect(x[t] == y[Q + t - p - 1], "%s: needle token %lld is %lld, want %lld",
                           tag, (long long)(t - p), (long long)x[t], (long long)y[Q + t - p - 1]))
                return -1;
        } else if (t != p && !la_expect(x[t] >= 1 && x[t] < h && x[t] != k,
                                        "%s: filler %lld at %lld (key %lld)", tag,
                                        (long long)x[t], (long long)t, (long long)k)) {
            return -1;
        }
    }
    return p;
}

static void test_passkey_determinism(void) {
    const la_passkey_cfg cfgs[2] = { pk_cfg(64, 300, 4, -1.0), pk_cfg(64, 300, 4, 0.3) };
    for (int v = 0; v < 2; v++) {
        const la_passkey_cfg * c = &cfgs[v];
        const int64_t T = 300, n = 50;
        int64_t *x, *y, *x2, *y2;
        pk_gen(c, 5, 1000, n, &x, &y);
        x2 = la_test_alloc((size_t)(n * T) * sizeof(int64_t));
        y2 = la_test_alloc((size_t)(n * T) * sizeof(int64_t));
        la_passkey_generate(x2, y2, c, 5, 1000, 17);
        la_passkey_generate(x2 + 17 * T, y2 + 17 * T, c, 5, 1017, 1);
        la_passkey_generate(x2 + 18 * T, y2 + 18 * T, c, 5, 1018, n - 18);
        la_expect(same_i64(x, x2, n * T) && same_i64(y, y2, n * T),
                  "passkey (depth %g): split batch differs", c->depth);
        int64_t xi[300], yi[300];
        la_passkey_generate(xi, yi, c, 5, 1033, 1);
        la_expect(same_i64(xi, x + 33 * T, T) && same_i64(yi, y + 33 * T, T),
                  "passkey (depth %g): example 1033 alone differs", c->depth);
        la_passkey_generate(x2, y2, c, 6, 1000, n);
        la_expect(!same_i64(x, x2, n * T), "passkey: seed 6 gives the examples of seed 5");
        free(x);
        free(y);
        free(x2);
        free(y2);
    }
}

static void test_passkey_structure(void) {
    const la_passkey_cfg cases[] = {
        pk_cfg(6, 5, 1, 0.0),          // the smallest: 2 fillers, keys {1, 2}, values {3, 4, 5}
        pk_cfg(6, 5, 1, 1.0),
        pk_cfg(6, 5, 1, 0.5),          // p = floor(2 0.5 + 1/2) = 1
        pk_cfg(7, 9, 3, -1.0),
        pk_cfg(8192, 4096, 5, 0.0),
        pk_cfg(8192, 4096, 5, 1.0),
        pk_cfg(8192, 4096, 5, 0.37),
        pk_cfg(8192, 4096, 5, 0.5),
        pk_cfg(100, 64, 1, 0.25),
        pk_cfg(100, 64, 1, -0.5),
        pk_cfg(1000, 61, 20, 0.999),   // F = 20: p = floor(19.98 + 0.5) = 20
        pk_cfg(1000, 61, 20, 0.024),   // 0.48 + 0.5 -> 0; 0.026 would give 1
    };
    const int64_t want_p[] = { 0, 2, 1, -1, 0, 4085, 1511, 2043, 15, -1, 20, 0 };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const la_passkey_cfg * c = &cases[k];
        const int64_t N = c->seq_len, n = 30, F = N - 2 * c->value_len - 1;
        int64_t *x, *y, key;
        pk_gen(c, 40 + k, 0, n, &x, &y);
        char tag[64];
        for (int64_t e = 0; e < n; e++) {
            snprintf(tag, sizeof tag, "passkey case %zu example %lld", k, (long long)e);
            const int64_t p = pk_example(c, x + e * N, y + e * N, &key, tag);
            if (p < 0) break;
            // The stated depth: p = floor(depth F + 1/2), checked against hand-computed values.
            if (c->depth >= 0.0) {
                if (!la_expect(p == want_p[k] && p == (int64_t)floor(c->depth * F + 0.5),
                               "%s: needle at %lld, want %lld (depth %g, F %lld)", tag,
                               (long long)p, (long long)want_p[k], c->depth, (long long)F))
                    break;
            } else if (!la_expect(p <= F, "%s: needle at %lld > F = %lld", tag, (long long)p,
                                  (long long)F)) {
                break;
            }
        }
        free(x);
        free(y);
    }
}

// depth < 0 with F = 35 (N = 40, V = 2): p over 36 bins (df 35); with Vc = 12: keys over
// [1, 6) (df 4), fillers relative to the key over the 4 others (df 3), values over [6, 12) (df 5).
static void test_passkey_stats(void) {
    const la_passkey_cfg c = pk_cfg(12, 40, 2, -1.0);
    const int64_t N = 40, n = 20000;
    int64_t *x, *y, key, cp[36] = { 0 }, ck[5] = { 0 }, cf[4] = { 0 }, cv[6] = { 0 };
    pk_gen(&c, 77, 0, n, &x, &y);
    for (int64_t e = 0; e < n; e++) {
        const int64_t * xe = x + e * N, * ye = y + e * N;
        const int64_t p = pk_example(&c, xe, ye, &key, "passkey stats");
        if (p < 0) break;
        cp[p]++;
        ck[key - 1]++;
        for (int64_t t = 0; t < N - 2; t++)
            if (t < p || t > p + 2) cf[xe[t] < key ? xe[t] - 1 : xe[t] - 2]++;
        cv[ye[N - 2] - 6]++;
        cv[ye[N - 1] - 6]++;
    }
    const double qp = chi2_flat(cp, 36), qk = chi2_flat(ck, 5), qf = chi2_flat(cf, 4);
    const double qv = chi2_flat(cv, 6);
    la_expect(qp < chi2_bound(35), "passkey: depth chi-square %.1f >= %.1f (df 35)", qp,
              chi2_bound(35));
    la_expect(qk < chi2_bound(4), "passkey: key chi-square %.1f >= %.1f (df 4)", qk,
              chi2_bound(4));
    la_expect(qf < chi2_bound(3), "passkey: filler chi-square %.1f >= %.1f (df 3)", qf,
              chi2_bound(3));
    la_expect(qv < chi2_bound(5), "passkey: value chi-square %.1f >= %.1f (df 5)", qv,
              chi2_bound(5));
    free(x);
    free(y);
}

static void test_passkey_invalid(void) {
    char err[256] = "x";
    const la_passkey_cfg ok = pk_cfg(6, 5, 1, 1.0);
    la_expect_status(la_passkey_check(&ok, err, sizeof err), LA_STATUS_OK, "passkey ok");
    la_expect(err[0] == 0, "passkey: err not cleared on success");
    struct {
        la_passkey_cfg c;
        const char *   field;
    } bad[] = {
        { pk_cfg(5, 64, 1, 0.5), "vocab 5" },
        { pk_cfg(4, 64, 1, 0.5), "vocab" },
        { pk_cfg(-1, 64, 1, 0.5), "vocab" },
        { pk_cfg(100, 64, 0, 0.5), "value_len 0" },
        { pk_cfg(100, 64, -2, 0.5), "value_len" },
        { pk_cfg(100, 4, 1, 0.5), "seq_len 4 must be >= 2 (value_len + 1) + 1 = 5" },
        { pk_cfg(100, 10, 4, 0.5), "seq_len 10 must be >= 2 (value_len + 1) + 1 = 11" },
        { pk_cfg(100, 64, INT64_MAX, 0.5), "seq_len" },
        { pk_cfg(100, 64, 1, 1.5), "depth" },
        { pk_cfg(100, 64, 1, 1.0000001), "depth" },
        { pk_cfg(100, 64, 1, (double)NAN), "depth" },
        { pk_cfg(100, 64, 1, (double)INFINITY), "depth" },
        { pk_cfg(100, 64, 1, -(double)INFINITY), "depth" },
    };
    int64_t x[64], y[64];
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        err[0] = 0;
        la_status s = la_passkey_check(&bad[k].c, err, sizeof err);
        la_expect(s == LA_STATUS_INVALID_ARG && one_line(err) && strstr(err, bad[k].field) &&
                  strncmp(err, "passkey: ", 9) == 0,
                  "passkey invalid case %zu: status %s, message '%s' should name '%s'", k,
                  la_status_str(s), err, bad[k].field);
        la_expect_status(la_passkey_generate(x, y, &bad[k].c, 1, 0, 1), LA_STATUS_INVALID_ARG,
                         "passkey generate with an invalid cfg");
        char tiny[8];
        la_passkey_check(&bad[k].c, tiny, sizeof tiny);  // truncated, still terminated
        la_expect(strlen(tiny) == sizeof tiny - 1, "passkey: truncated message");
    }
    const la_passkey_cfg c = pk_cfg(100, 16, 2, -1.0);
    la_expect_status(la_passkey_check(NULL, err, sizeof err), LA_STATUS_INVALID_ARG, "NULL cfg");
    la_expect(one_line(err) && strstr(err, "cfg"), "passkey NULL cfg message '%s'", err);
    la_expect_status(la_passkey_generate(NULL, y, &c, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "passkey NULL inputs");
    la_expect_status(la_passkey_generate(x, NULL, &c, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "passkey NULL labels");
    la_expect_status(la_passkey_generate(x, y, NULL, 1, 0, 1), LA_STATUS_INVALID_ARG,
                     "passkey NULL cfg");
    la_expect_status(la_passkey_generate(x, y, &c, 1, -1, 1), LA_STATUS_INVALID_ARG,
                     "passkey first < 0");
    la_expect_status(la_passkey_generate(x, y, &c, 1, 0, -1), LA_STATUS_INVALID_ARG,
                     "passkey n < 0");
    la_expect_status(la_passkey_generate(x, y, &c, 1, INT64_MAX, 2), LA_STATUS_INVALID_ARG,
                     "passkey first + n overflows");
    la_expect_status(la_passkey_generate(NULL, NULL, &c, 1, 0, 0), LA_STATUS_OK,
                     "passkey n = 0");
    la_expect_status(la_passkey_generate(x, y, &c, 1, 0, 4), LA_STATUS_OK, "passkey 4 x 16");
}

// ---------------------------------------------------------------------------------------------
// In-context linear regression

static la_icr_cfg icr_cfg(int64_t d, int64_t P, double noise) {
    la_icr_cfg c = { .dim = d, .points = P, .noise = noise };
    return c;
}

// Fresh x (n, 2P, d), y and wt (n, 2P) of examples first .. first + n - 1.
static void icr_gen(const la_icr_cfg * c, uint64_t seed, int64_t first, int64_t n, float ** x,
                    float ** y, float ** wt) {
    const int64_t T = 2 * c->points;
    *x = la_test_alloc((size_t)(n * T * c->dim) * sizeof(float));
    *y = la_test_alloc((size_t)(n * T) * sizeof(float));
    *wt = la_test_alloc((size_t)(n * T) * sizeof(float));
    la_expect_status(la_icr_generate(*x, *y, *wt, c, seed, first, n), LA_STATUS_OK,
                     "la_icr_generate");
}

static bool same_f32(const float * a, const float * b, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static void test_icr_determinism(void) {
    const la_icr_cfg c = icr_cfg(5, 7, 0.1);
    const int64_t T = 14, d = 5, n = 40;
    float *x, *y, *wt, *x2, *y2, *w2;
    icr_gen(&c, 9, 100, n, &x, &y, &wt);
    x2 = la_test_alloc((size_t)(n * T * d) * sizeof(float));
    y2 = la_test_alloc((size_t)(n * T) * sizeof(float));
    w2 = la_test_alloc((size_t)(n * T) * sizeof(float));
    la_icr_generate(x2, y2, w2, &c, 9, 100, 17);
    la_icr_generate(x2 + 17 * T * d, y2 + 17 * T, w2 + 17 * T, &c, 9, 117, 1);
    la_icr_generate(x2 + 18 * T * d, y2 + 18 * T, w2 + 18 * T, &c, 9, 118, n - 18);
    la_expect(same_f32(x, x2, n * T * d) && same_f32(y, y2, n * T) && same_f32(wt, w2, n * T),
              "icr: split batch differs");
    float xi[14 * 5], yi[14], wi[14];
    la_icr_generate(xi, yi, wi, &c, 9, 133, 1);
    la_expect(same_f32(xi, x + 33 * T * d, T * d) && same_f32(yi, y + 33 * T, T),
              "icr: example 133 alone differs");
    la_icr_generate(x2, y2, w2, &c, 10, 100, n);
    la_expect(!same_f32(x, x2, n * T * d) && !same_f32(y, y2, n * T),
              "icr: seed 10 gives the examples of seed 9");
    // Another noise level: the same points (even rows), different labels.
    const la_icr_cfg c0 = icr_cfg(5, 7, 0.0);
    la_icr_generate(x2, y2, w2, &c0, 9, 100, n);
    bool same_x = true;
    for (int64_t r = 0; r < n * T; r += 2) same_x &= same_f32(x + r * d, x2 + r * d, d);
    la_expect(same_x, "icr: the points depend on the noise level");
    la_expect(!same_f32(y, y2, n * T), "icr: noise 0.1 gives the labels of noise 0");
    free(x), free(y), free(wt), free(x2), free(y2), free(w2);
}

static void test_icr_layout(void) {
    const la_icr_cfg cases[] = { icr_cfg(1, 1, 0.0), icr_cfg(3, 5, 0.5), icr_cfg(20, 41, 0.0),
                                 icr_cfg(1, 9, 2.0), icr_cfg(64, 3, 0.1) };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const la_icr_cfg * c = &cases[k];
        const int64_t d = c->dim, P = c->points, T = 2 * P, n = 6;
        float *x, *y, *wt;
        icr_gen(c, 3 + k, 0, n, &x, &y, &wt);
        int64_t bad = 0;
        for (int64_t e = 0; e < n; e++)
            for (int64_t t = 0; t < T; t++) {
                const float * v = x + (e * T + t) * d;
                const float yt = y[e * T + t], w = wt[e * T + t];
                if (t % 2 == 0) {
                    bad += w != 1.0f || !isfinite(yt) || !la_all_finite(v, d);
                    // the odd row after carries this label
                    bad += v[d] != yt;
                } else {
                    bad += w != 0.0f || yt != 0.0f;
                    for (int64_t j = 1; j < d; j++) bad += v[j] != 0.0f;
                }
            }
        la_expect(bad == 0, "icr case %zu (d %lld, P %lld): %lld layout violations", k,
                  (long long)d, (long long)P, (long long)bad);
        free(x), free(y), free(wt);
    }
}

// x_ij over every point: mean 0 and variance 1 (N samples: 5 standard errors, 5 / sqrt(N) and
// 5 sqrt(2 / N)); y_i: variance d + noise^2 = 8.25, whose estimate has a standard error of
// sqrt((2 d + 2 E(|w|^2 + s^2)^2 / P) / n) ~ 0.08 over n = 4000 examples of P = 16 points
// (the points of an example share w), so +- 0.45 is over 5 of them; the noise alone, the label
// difference to the noise-0 draw of the same examples, has variance 0.25 (+- 5 sqrt(2 / N) 0.25).
static void test_icr_stats(void) {
    const int64_t d = 8, P = 16, T = 2 * P, n = 4000;
    const double s = 0.5;
    const la_icr_cfg c = icr_cfg(d, P, s), c0 = icr_cfg(d, P, 0.0);
    float *x, *y, *wt, *x0, *y0, *wt0;
    icr_gen(&c, 21, 0, n, &x, &y, &wt);
    icr_gen(&c0, 21, 0, n, &x0, &y0, &wt0);
    double sx = 0, sxx = 0, sxy01 = 0, syy = 0, sy = 0, sn = 0, snn = 0;
    for (int64_t e = 0; e < n; e++)
        for (int64_t i = 0; i < P; i++) {
            const float * v = x + (e * T + 2 * i) * d;
            for (int64_t j = 0; j < d; j++) sx += (double)v[j], sxx += (double)v[j] * (double)v[j];
            sxy01 += (double)v[0] * (double)v[1];
            const double yi = (double)y[e * T + 2 * i], nz = yi - (double)y0[e * T + 2 * i];
            sy += yi, syy += yi * yi, sn += nz, snn += nz * nz;
        }
    const double Nx = (double)(n * P * d), Ny = (double)(n * P);
    const double mx = sx / Nx, vx = sxx / Nx - mx * mx, c01 = sxy01 / Ny;
    const double vy = syy / Ny - (sy / Ny) * (sy / Ny), vn = snn / Ny - (sn / Ny) * (sn / Ny);
    la_expect(fabs(mx) < 5 / sqrt(Nx), "icr: x mean %.5f (bound %.5f)", mx, 5 / sqrt(Nx));
    la_expect(fabs(vx - 1) < 5 * sqrt(2 / Nx), "icr: x variance %.5f (1 +- %.5f)", vx,
              5 * sqrt(2 / Nx));
    la_expect(fabs(c01) < 5 / sqrt(Ny), "icr: x_0 x_1 covariance %.5f (bound %.5f)", c01,
              5 / sqrt(Ny));
    la_expect(fabs(vy - (d + s * s)) < 0.45, "icr: y variance %.4f, want %.2f +- 0.45", vy,
              d + s * s);
    la_expect(fabs(vn - s * s) < 5 * sqrt(2 / Ny) * s * s + 1e-6,
              "icr: noise variance %.5f, want %.4f", vn, s * s);
    free(x), free(y), free(wt), free(x0), free(y0), free(wt0);
}

// Least squares of X (m, d) row-major against t (m), m >= d, by modified Gram-Schmidt QR
// (X = Q R, w = R^-1 Q^T t): no normal equations, so independent of the library's Cholesky.
static void lsq_qr(double * w, const double * X, const double * t, int64_t m, int64_t d) {
    double * Q = malloc((size_t)(m * d) * sizeof(double));
    double * R = calloc((size_t)(d * d), sizeof(double));
    memcpy(Q, X, (size_t)(m * d) * sizeof(double));
    for (int64_t j = 0; j < d; j++) {
        double nrm = 0;
        for (int64_t r = 0; r < m; r++) nrm += Q[r * d + j] * Q[r * d + j];
        R[j * d + j] = sqrt(nrm);
        for (int64_t r = 0; r < m; r++) Q[r * d + j] /= R[j * d + j];
        for (int64_t k = j + 1; k < d; k++) {
            double p = 0;
            for (int64_t r = 0; r < m; r++) p += Q[r * d + j] * Q[r * d + k];
            R[j * d + k] = p;
            for (int64_t r = 0; r < m; r++) Q[r * d + k] -= p * Q[r * d + j];
        }
    }
    for (int64_t j = d - 1; j >= 0; j--) {
        double v = 0;
        for (int64_t r = 0; r < m; r++) v += Q[r * d + j] * t[r];
        for (int64_t k = j + 1; k < d; k++) v -= R[j * d + k] * w[k];
        w[j] = v / R[j * d + j];
    }
    free(Q);
    free(R);
}

// Solves A z = b (n, n) by Gaussian elimination with partial pivoting (A and b clobbered).
static void gauss_solve(double * A, double * b, double * z, int64_t n) {
    for (int64_t c = 0; c < n; c++) {
        int64_t piv = c;
        for (int64_t r = c + 1; r < n; r++)
            if (fabs(A[r * n + c]) > fabs(A[piv * n + c])) piv = r;
        for (int64_t k = 0; k < n; k++) {
            const double t = A[c * n + k];
            A[c * n + k] = A[piv * n + k], A[piv * n + k] = t;
        }
        const double tb = b[c];
        b[c] = b[piv], b[piv] = tb;
        for (int64_t r = c + 1; r < n; r++) {
            const double f = A[r * n + c] / A[c * n + c];
            for (int64_t k = c; k < n; k++) A[r * n + k] -= f * A[c * n + k];
            b[r] -= f * b[c];
        }
    }
    for (int64_t r = n - 1; r >= 0; r--) {
        double v = b[r];
        for (int64_t k = r + 1; k < n; k++) v -= A[r * n + k] * z[k];
        z[r] = v / A[r * n + r];
    }
}

// The minimum-norm least-squares prediction at x_i from the first i pairs of one example,
// computed without the library: QR for i >= d; w = X^T (X X^T)^-1 y by Gaussian elimination for
// 0 < i < d; 0 for i = 0.
static double icr_ref_pred(const float * xe, const float * ye, int64_t d, int64_t i) {
    if (i == 0) return 0.0;
    double * X = malloc((size_t)(i * d) * sizeof(double)), *t = malloc((size_t)i * sizeof(double));
    double * w = calloc((size_t)(d > i ? d : i), sizeof(double));
    for (int64_t r = 0; r < i; r++) {
        for (int64_t j = 0; j < d; j++) X[r * d + j] = xe[2 * r * d + j];
        t[r] = ye[2 * r];
    }
    if (i >= d) {
        lsq_qr(w, X, t, i, d);
    } else {
        double * K = malloc((size_t)(i * i) * sizeof(double));
        double * a = malloc((size_t)i * sizeof(double));
        for (int64_t r = 0; r < i; r++)
            for (int64_t k = 0; k < i; k++) {
                double v = 0;
                for (int64_t j = 0; j < d; j++) v += X[r * d + j] * X[k * d + j];
                K[r * i + k] = v;
            }
        gauss_solve(K, t, a, i);
        for (int64_t j = 0; j < d; j++) {
            double v = 0;
            for (int64_t r = 0; r < i; r++) v += X[r * d + j] * a[r];
            w[j] = v;
        }
        free(K);
        free(a);
    }
    double p = 0;
    for (int64_t j = 0; j < d; j++) p += w[j] * (double)xe[2 * i * d + j];
    free(X), free(t), free(w);
    return p;
}

static void test_icr_least_squares(void) {
    // Noise 0: once i >= d the fit recovers w, so the prediction is the label (float32 data:
    // |pred - y| <= 1e-3 (|y| + 1) is loose by orders of magnitude); i = 0 and odd rows are 0.
    {
        const int64_t d = 6, P = 20, T = 2 * P, n = 25;
        const la_icr_cfg c = icr_cfg(d, P, 0.0);
        float *x, *y, *wt, *p = la_test_alloc((size_t)(n * T) * sizeof(float));
        icr_gen(&c, 31, 0, n, &x, &y, &wt);
        la_expect_status(la_icr_least_squares(p, x, y, &c, n), LA_STATUS_OK, "icr lsq noise 0");
        int64_t bad = 0, zeros = 0;
        double worst = 0;
        for (int64_t e = 0; e < n; e++) {
            zeros += p[e * T] == 0.0f;
            for (int64_t t = 1; t < T; t += 2) zeros += p[e * T + t] == 0.0f;
            for (int64_t i = d; i < P; i++) {
                const double yi = (double)y[e * T + 2 * i];
                const double r = fabs((double)p[e * T + 2 * i] - yi) / (fabs(yi) + 1);
                worst = fmax(worst, r);
                bad += !(r < 1e-3);
            }
        }
        la_expect(bad == 0, "icr lsq noise 0: %lld predictions off (worst %.3g)", (long long)bad,
                  worst);
        la_expect(zeros == n * (P + 1), "icr lsq: %lld of %lld zeros at i = 0 and odd rows",
                  (long long)zeros, (long long)(n * (P + 1)));
        free(x), free(y), free(wt), free(p);
    }
    // Noisy labels, every i, against the independent float64 solves.
    const la_icr_cfg cases[] = { icr_cfg(5, 14, 0.3), icr_cfg(1, 6, 1.0), icr_cfg(12, 30, 0.05) };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const la_icr_cfg * c = &cases[k];
        const int64_t d = c->dim, P = c->points, T = 2 * P, n = 8;
        float *x, *y, *wt, *p = la_test_alloc((size_t)(n * T) * sizeof(float));
        icr_gen(c, 41 + k, 0, n, &x, &y, &wt);
        la_expect_status(la_icr_least_squares(p, x, y, c, n), LA_STATUS_OK, "icr lsq noisy");
        int64_t bad = 0;
        double worst = 0;
        for (int64_t e = 0; e < n; e++)
            for (int64_t i = 0; i < P; i++) {
                const double ref = icr_ref_pred(x + e * T * d, y + e * T, d, i);
                const double r = fabs((double)p[e * T + 2 * i] - ref) / (fabs(ref) + 1);
                worst = fmax(worst, r);
                bad += !(r < 1e-5);
            }
        la_expect(bad == 0, "icr lsq case %zu (d %lld): %lld predictions differ from the "
                  "reference (worst %.3g)", k, (long long)d, (long long)bad, worst);
        free(x), free(y), free(wt), free(p);
    }
    // Zero-padded inputs (the curriculum's unused coordinates): d = 5 with coordinates 2..4
    // zero is rank 2, so X X^T (i = 3, 4) and X^T X (i >= 5) are singular; the jittered solves
    // must give the minimum-norm fit, i.e. the predictions of the unpadded d = 2 problem. With
    // noise the labels leave X X^T's range, and the ridge (1e-10 relative) amplifies rounding
    // to about 1e-6 relative (7e-7 seen), hence 1e-5.
    {
        const int64_t d = 5, d2 = 2, P = 12, T = 2 * P, n = 6;
        const la_icr_cfg c = icr_cfg(d, P, 0.3), c2 = icr_cfg(d2, P, 0.3);
        float *x, *y, *wt, *xp = la_test_alloc((size_t)(n * T * d) * sizeof(float));
        float * p = la_test_alloc((size_t)(n * T) * sizeof(float));
        float * p2 = la_test_alloc((size_t)(n * T) * sizeof(float));
        icr_gen(&c2, 51, 0, n, &x, &y, &wt);
        for (int64_t r = 0; r < n * T; r++)
            memcpy(xp + r * d, x + r * d2, (size_t)d2 * sizeof(float));
        la_expect_status(la_icr_least_squares(p, xp, y, &c, n), LA_STATUS_OK, "icr lsq padded");
        la_expect_status(la_icr_least_squares(p2, x, y, &c2, n), LA_STATUS_OK, "icr lsq d = 2");
        double worst = 0;
        for (int64_t r = 0; r < n * T; r++)
            worst = fmax(worst, fabs((double)p[r] - (double)p2[r]) / (fabs((double)p2[r]) + 1));
        la_expect(worst < 1e-5, "icr lsq padded: worst relative difference %.3g to d = 2", worst);
        free(x), free(y), free(wt), free(xp), free(p), free(p2);
    }
}

static void test_icr_invalid(void) {
    char err[256] = "x";
    const la_icr_cfg ok = icr_cfg(1, 1, 0.0);
    la_expect_status(la_icr_check(&ok, err, sizeof err), LA_STATUS_OK, "icr ok");
    la_expect(err[0] == 0, "icr: err not cleared on success");
    la_expect_status(la_icr_check(&(la_icr_cfg){ 4096, 1 << 21, 1e300 }, err, sizeof err),
                     LA_STATUS_OK, "icr at the limits");
    struct {
        la_icr_cfg   c;
        const char * field;
    } bad[] = {
        { icr_cfg(0, 4, 0.1), "dim 0" },
        { icr_cfg(-3, 4, 0.1), "dim -3" },
        { icr_cfg(4097, 4, 0.1), "dim 4097" },
        { icr_cfg(4, 0, 0.1), "points 0" },
        { icr_cfg(4, (1 << 21) + 1, 0.1), "points" },
        { icr_cfg(4, INT64_MAX, 0.1), "points" },
        { icr_cfg(4, 4, -0.1), "noise" },
        { icr_cfg(4, 4, (double)NAN), "noise" },
        { icr_cfg(4, 4, (double)INFINITY), "noise" },
    };
    float x[64], y[16], wt[16], p[16];
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        err[0] = 0;
        la_status s = la_icr_check(&bad[k].c, err, sizeof err);
        la_expect(s == LA_STATUS_INVALID_ARG && one_line(err) && strstr(err, bad[k].field) &&
                  strncmp(err, "icr: ", 5) == 0,
                  "icr invalid case %zu: status %s, message '%s' should name '%s'", k,
                  la_status_str(s), err, bad[k].field);
        la_expect_status(la_icr_generate(x, y, wt, &bad[k].c, 1, 0, 1), LA_STATUS_INVALID_ARG,
                         "icr generate with an invalid cfg");
        la_expect_status(la_icr_least_squares(p, x, y, &bad[k].c, 1), LA_STATUS_INVALID_ARG,
                         "icr least squares with an invalid cfg");
    }
    const la_icr_cfg c = icr_cfg(4, 8, 0.5);  // x (16, 4), y (16)
    la_expect_status(la_icr_check(NULL, err, sizeof err), LA_STATUS_INVALID_ARG, "NULL cfg");
    la_expect(one_line(err) && strstr(err, "cfg"), "icr NULL cfg message '%s'", err);
    la_expect_status(la_icr_generate(NULL, y, wt, &c, 1, 0, 1), LA_STATUS_INVALID_ARG, "NULL x");
    la_expect_status(la_icr_generate(x, NULL, wt, &c, 1, 0, 1), LA_STATUS_INVALID_ARG, "NULL y");
    la_expect_status(la_icr_generate(x, y, NULL, &c, 1, 0, 1), LA_STATUS_INVALID_ARG, "NULL wt");
    la_expect_status(la_icr_generate(x, y, wt, NULL, 1, 0, 1), LA_STATUS_INVALID_ARG, "NULL cfg");
    la_expect_status(la_icr_generate(x, y, wt, &c, 1, -1, 1), LA_STATUS_INVALID_ARG, "first < 0");
    la_expect_status(la_icr_generate(x, y, wt, &c, 1, 0, -1), LA_STATUS_INVALID_ARG, "n < 0");
    la_expect_status(la_icr_generate(x, y, wt, &c, 1, INT64_MAX, 2), LA_STATUS_INVALID_ARG,
                     "first + n overflows");
    la_expect_status(la_icr_generate(NULL, NULL, NULL, &c, 1, 0, 0), LA_STATUS_OK, "icr n = 0");
    la_expect_status(la_icr_generate(x, y, wt, &c, 1, 0, 1), LA_STATUS_OK, "icr 1 x 16");
    la_expect_status(la_icr_least_squares(p, x, y, &c, 1), LA_STATUS_OK, "icr lsq");
    la_expect_status(la_icr_least_squares(NULL, x, y, &c, 1), LA_STATUS_INVALID_ARG, "NULL pred");
    la_expect_status(la_icr_least_squares(p, NULL, y, &c, 1), LA_STATUS_INVALID_ARG, "lsq NULL x");
    la_expect_status(la_icr_least_squares(p, x, NULL, &c, 1), LA_STATUS_INVALID_ARG, "lsq NULL y");
    la_expect_status(la_icr_least_squares(p, x, y, &c, -1), LA_STATUS_INVALID_ARG, "lsq n < 0");
    la_expect_status(la_icr_least_squares(NULL, NULL, NULL, &c, 0), LA_STATUS_OK, "lsq n = 0");
    x[9] = NAN;
    la_expect_status(la_icr_least_squares(p, x, y, &c, 1), LA_STATUS_INVALID_ARG, "lsq NaN x");
    x[9] = 0.0f;
    y[4] = INFINITY;
    la_expect_status(la_icr_least_squares(p, x, y, &c, 1), LA_STATUS_INVALID_ARG, "lsq Inf y");
}

// ---------------------------------------------------------------------------------------------
// Speed: 2000 examples of length 4096 each (Mamba's selective copying; passkey, V = 5, uniform
// depth), best of 3, under 0.5 s (expected: tens of ms in a release build).

static void test_speed(void) {
    const int64_t n = 2000, T = 4096;
    int64_t * x = malloc((size_t)(n * T) * sizeof(int64_t));
    int64_t * y = malloc((size_t)(n * T) * sizeof(int64_t));
    if (!la_expect(x && y, "speed: out of memory")) {
        free(x);
        free(y);
        return;
    }
    const la_selcopy_cfg sc = sc_cfg(16, 16, 4064, false);
    const la_passkey_cfg pk = pk_cfg(8192, 4096, 5, -1.0);
    double best_sc = 1e9, best_pk = 1e9;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        la_expect_status(la_selcopy_generate(x, y, &sc, 1, r * n, n), LA_STATUS_OK, "sc speed");
        const double t1 = now_s();
        la_expect_status(la_passkey_generate(x, y, &pk, 1, r * n, n), LA_STATUS_OK, "pk speed");
        const double t2 = now_s();
        best_sc = t1 - t0 < best_sc ? t1 - t0 : best_sc;
        best_pk = t2 - t1 < best_pk ? t2 - t1 : best_pk;
    }
    la_expect(best_sc < 0.5, "selcopy: 2000 x 4096 took %.3f s", best_sc);
    la_expect(best_pk < 0.5, "passkey: 2000 x 4096 took %.3f s", best_pk);
    if (getenv("LA_TEST_VERBOSE"))
        printf("2000 examples of 4096: selcopy %.1f ms, passkey %.1f ms\n", best_sc * 1e3,
               best_pk * 1e3);
    free(x);
    free(y);
}

int main(void) {
    test_selcopy_determinism();
    test_selcopy_structure();
    test_selcopy_stats();
    test_selcopy_invalid();
    test_passkey_determinism();
    test_passkey_structure();
    test_passkey_stats();
    test_passkey_invalid();
    test_icr_determinism();
    test_icr_layout();
    test_icr_stats();
    test_icr_least_squares();
    test_icr_invalid();
    test_speed();
    return la_test_summary();
}
