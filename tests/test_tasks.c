// Synthetic tasks (src/model/tasks.c, ALGORITHMS.md 9.2 and 9.4):
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
    test_speed();
    return la_test_summary();
}
