// Synthetic tasks: selective copying (ALGORITHMS.md 9.2), tokenizer-free passkey retrieval
// (ALGORITHMS.md 9.4) and in-context linear regression (ALGORITHMS.md 9.5). Like MQAR (data.c),
// example i of a call is a pure function of (seed, first + i): it draws from its own generator
// la_rng_at(seed, first + i), so it does not depend on the batch it is generated in.
//
// Selective copying (Gu & Dao 2023; the S4 "copying" dataset), S = L + M slots, then M markers:
//
//   data      = M draws uniform in [1, A - 2]                      (drawn first)
//   pos       = a uniform M-subset of [0, S), sorted                (Floyd's algorithm)
//   inputs    = zeros(S + M);  inputs[pos_j] = data_j;  inputs[S + j] = A - 1   (marker)
//   labels    = full(S + M, -100);  labels[S + j] = data_j
//   plain     : pos_j = j (the data first, then L zeros, then the markers); no position draws
//
// The data are drawn before the positions, so for the same (seed, index) the plain and the
// selective variants hold the same data tokens. Floyd's algorithm (for j = S - M .. S - 1:
// t = uniform in [0, j]; take t, or j when t is taken) gives every M-subset with probability
// 1 / C(S, M) in M draws; the example's own input row serves as its set (a slot is taken when
// it holds the placeholder -1), so a call needs no scratch memory.
//
// Passkey without a tokenizer (Mohtashami & Jaggi 2023, as MQAR with one pair), N tokens,
// value length V:
//
//   key      uniform in [1, Vc/2);  value = V draws uniform in [Vc/2, Vc) (may repeat)
//   context  = positions [0, N - V): filler, with the needle [key, v_1 .. v_V] at [p, p + V]
//   query    = positions [N - V, N): [key, v_1 .. v_{V-1}]
//   labels   = -100 except labels[N - V + i] = v_{i+1}, i in [0, V) (teacher forcing: the final
//              key predicts v_1, v_1 predicts v_2, ...)
//   filler   uniform in [1, Vc/2) without the key (so the key occurs exactly twice)
//
// Depth. F = N - 2 V - 1 filler tokens leave the needle's first token at p in [0, F]:
//   depth in [0, 1]:  p = floor(depth F + 1/2)   (depth 0: the needle opens the context;
//                     depth 1: it ends right before the final key)
//   depth < 0:        p uniform over the F + 1 positions [0, F], per example.
// Draw order: key, value, p (depth < 0 only), then the fillers in position order.
// Requires Vc >= 6 (a filler token besides the key: [1, Vc/2) must hold >= 2 tokens) and
// N >= 2 (V + 1) + 1 (at least 2 fillers, so the depth is not vacuous).
//
// In-context linear regression (Garg et al. 2022), d = dim, P = points, sequence 2P vectors of d:
//
//   w    ~ N(0, I_d)                                   (drawn first, stored as float32)
//   x_i  ~ N(0, I_d);  e_i ~ N(0, 1);  y_i = w^T x_i + noise e_i      i < P, in that order
//   x    = (x_0, yv_0, x_1, yv_1, ...),  yv_i = (y_i, 0, ..., 0)
//   y[2i] = y_i, wt[2i] = 1;  y[2i + 1] = 0, wt[2i + 1] = 0
//
// e_i is drawn even when noise = 0, so the same (seed, index) gives the same w and x_i at every
// noise level. w is kept in the slot of the last yv until every y_i is formed (no scratch
// memory); y_i = sum_j w_j x_ij is summed in double from the float32 values that are stored, so
// the stored data satisfy the model exactly up to the final rounding of y_i.
//
// The least-squares baseline (the Bayes-optimal predictor for noise 0 once i >= d): at 2i the
// minimum-norm solution of the first i pairs, evaluated at x_i, in float64:
//   i <  d:  K a = y_<i with K = X X^T (i x i);   pred = sum_j a_j (x_j . x_i)     (w = X^T a)
//   i >= d:  G w = X^T y_<i with G = X^T X (d x d, kept as a running sum);  pred = x_i . w
// Both systems are solved by Cholesky. When one is singular to working precision (a pivot at
// or below 1e-10 trace / size: repeated points, zero-padded coordinates), the factorisation is
// redone with that jitter on the diagonal: a tiny ridge, so a rank-deficient X gets the
// ridge-limit solution, which is the minimum-norm one, instead of a failed factorisation. A
// full-rank system is solved exactly (no ridge bias).
// Time O(P d^3) per example (fine for d <= 64, P <= 256); scratch 2 d^2 + 3 d doubles.
//
// Memory of the generators: O(1) beyond the caller's buffers; time O(seq_len) per example
// (icr: O(P d)).
//
// Dimensions: A = vocab (selcopy), M = num_tokens, L = noise_len, S = L + M; Vc = vocab
// (passkey), N = seq_len, V = value_len, F = fillers; d = dim, P = points (icr).
#include "internal.h"
#include "rng.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Shared argument rules of the generators: first, n >= 0 without overflow, (n, len) elements of
// `elem` bytes fit in int64 and size_t, buffers non-NULL unless n = 0 (as la_mqar_generate).
static bool batch_ok(const void * inputs, const void * labels, int64_t len, size_t elem,
                     int64_t first, int64_t n) {
    if (first < 0 || n < 0 || first > INT64_MAX - n) return false;
    if (n == 0) return true;
    if (!inputs || !labels) return false;
    return len <= (int64_t)(SIZE_MAX / elem) / n && n <= INT64_MAX / len;
}

static void fill_ignore(int64_t * y, int64_t n) {
    for (int64_t t = 0; t < n; t++) y[t] = LA_IGNORE_INDEX;
}

// ---------------------------------------------------------------------------------------------
// Selective copying

LA_API la_status la_selcopy_check(const la_selcopy_cfg * cfg, char * err, size_t errlen) {
    const la_status bad = LA_STATUS_INVALID_ARG;
    if (err && errlen) err[0] = 0;
    if (!cfg) return la_fail(err, errlen, bad, "selcopy: NULL cfg");
    const long long A = (long long)cfg->vocab, M = (long long)cfg->num_tokens;
    const long long L = (long long)cfg->noise_len;
    if (A < 3)
        return la_fail(err, errlen, bad,
                       "selcopy: vocab %lld must be >= 3 (data in [1, vocab - 2], marker "
                       "vocab - 1)", A);
    if (M < 1) return la_fail(err, errlen, bad, "selcopy: num_tokens %lld must be >= 1", M);
    if (L < 0) return la_fail(err, errlen, bad, "selcopy: noise_len %lld must be >= 0", L);
    if ((__int128)L + 2 * (__int128)M > INT64_MAX)
        return la_fail(err, errlen, bad,
                       "selcopy: noise_len %lld + 2 num_tokens %lld overflows int64", L, M);
    return LA_STATUS_OK;
}

// L + 2 M, or -1 for an invalid cfg.
LA_API int64_t la_selcopy_len(const la_selcopy_cfg * cfg) {
    if (la_selcopy_check(cfg, NULL, 0) != LA_STATUS_OK) return -1;
    return cfg->noise_len + 2 * cfg->num_tokens;
}

LA_API la_status la_selcopy_generate(int64_t * inputs, int64_t * labels,
                                     const la_selcopy_cfg * cfg, uint64_t seed, int64_t first,
                                     int64_t n) {
    if (la_selcopy_check(cfg, NULL, 0) != LA_STATUS_OK) return LA_STATUS_INVALID_ARG;
    const int64_t A = cfg->vocab, M = cfg->num_tokens, S = cfg->noise_len + M;
    const int64_t T = S + M;  // seq_len
    if (!batch_ok(inputs, labels, T, sizeof(int64_t), first, n)) return LA_STATUS_INVALID_ARG;

    for (int64_t e = 0; e < n; e++) {
        la_xrng r = la_rng_at(seed, (uint64_t)(first + e));
        int64_t * x = inputs + e * T;    // (T)
        int64_t * y = labels + e * T;    // (T)
        int64_t * data = y + S;          // (M) the labels at the markers are the data, in order

        fill_ignore(y, S);
        for (int64_t j = 0; j < M; j++)
            data[j] = 1 + (int64_t)la_rng_below(&r, (uint64_t)(A - 2));
        memset(x, 0, (size_t)S * sizeof(int64_t));
        for (int64_t j = 0; j < M; j++) x[S + j] = A - 1;

        if (cfg->plain) {
            memcpy(x, data, (size_t)M * sizeof(int64_t));
            continue;
        }
        // Floyd: mark a uniform M-subset of [0, S) with -1, then fill it in slot order.
        for (int64_t j = S - M; j < S; j++) {
            const int64_t t = (int64_t)la_rng_below(&r, (uint64_t)j + 1);
            x[x[t] < 0 ? j : t] = -1;
        }
        int64_t k = 0;
        for (int64_t t = 0; t < S; t++)
            if (x[t] < 0) x[t] = data[k++];
    }
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// Passkey retrieval

LA_API la_status la_passkey_check(const la_passkey_cfg * cfg, char * err, size_t errlen) {
    const la_status bad = LA_STATUS_INVALID_ARG;
    if (err && errlen) err[0] = 0;
    if (!cfg) return la_fail(err, errlen, bad, "passkey: NULL cfg");
    const long long Vc = (long long)cfg->vocab, N = (long long)cfg->seq_len;
    const long long V = (long long)cfg->value_len;
    if (Vc < 6)
        return la_fail(err, errlen, bad,
                       "passkey: vocab %lld must be >= 6 (keys and fillers in [1, vocab/2) need "
                       "a filler besides the key)", Vc);
    if (V < 1) return la_fail(err, errlen, bad, "passkey: value_len %lld must be >= 1", V);
    const __int128 need = 2 * ((__int128)V + 1) + 1;
    if (need > N)
        return la_fail(err, errlen, bad,
                       "passkey: seq_len %lld must be >= 2 (value_len + 1) + 1 = %.0f for "
                       "value_len %lld", N, (double)need, V);
    if (!isfinite(cfg->depth) || cfg->depth > 1.0)
        return la_fail(err, errlen, bad,
                       "passkey: depth %g must be finite and in [0, 1] (or < 0: uniform)",
                       cfg->depth);
    return LA_STATUS_OK;
}

LA_API la_status la_passkey_generate(int64_t * inputs, int64_t * labels,
                                     const la_passkey_cfg * cfg, uint64_t seed, int64_t first,
                                     int64_t n) {
    if (la_passkey_check(cfg, NULL, 0) != LA_STATUS_OK) return LA_STATUS_INVALID_ARG;
    const int64_t N = cfg->seq_len, V = cfg->value_len, Vc = cfg->vocab;
    if (!batch_ok(inputs, labels, N, sizeof(int64_t), first, n)) return LA_STATUS_INVALID_ARG;
    const int64_t F = N - 2 * V - 1;         // fillers, >= 2
    const int64_t Q = N - V;                 // the query's first position (the final key)
    const int64_t nkeys = Vc / 2 - 1, nvals = Vc - Vc / 2;
    // Depth in [0, 1]: p = floor(depth F + 1/2), in [0, F] (depth F <= F < 2^53 exactly).
    const int64_t p_fixed =
        cfg->depth >= 0.0 ? (int64_t)floor(cfg->depth * (double)F + 0.5) : -1;

    for (int64_t e = 0; e < n; e++) {
        la_xrng r = la_rng_at(seed, (uint64_t)(first + e));
        int64_t * x = inputs + e * N;    // (N)
        int64_t * y = labels + e * N;    // (N)

        const int64_t key = 1 + (int64_t)la_rng_below(&r, (uint64_t)nkeys);
        int64_t * val = y + Q;           // (V) the labels of the query are the value
        fill_ignore(y, Q);
        for (int64_t i = 0; i < V; i++)
            val[i] = Vc / 2 + (int64_t)la_rng_below(&r, (uint64_t)nvals);
        const int64_t p = p_fixed >= 0 ? p_fixed : (int64_t)la_rng_below(&r, (uint64_t)F + 1);

        // Context [0, Q): fillers around the needle [key, v_1 .. v_V] at [p, p + V].
        for (int64_t t = 0; t < Q; t++) {
            if (t == p) {
                x[t] = key;
                memcpy(x + t + 1, val, (size_t)V * sizeof(int64_t));
                t += V;
                continue;
            }
            // Uniform in [1, Vc/2) \ {key}: a draw from nkeys - 1 tokens, shifted past the key.
            const int64_t f = 1 + (int64_t)la_rng_below(&r, (uint64_t)(nkeys - 1));
            x[t] = f >= key ? f + 1 : f;
        }
        // Query [Q, N): the key, then v_1 .. v_{V-1}.
        x[Q] = key;
        memcpy(x + Q + 1, val, (size_t)(V - 1) * sizeof(int64_t));
    }
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// In-context linear regression

#define ICR_MAX_DIM    4096
#define ICR_MAX_POINTS (1 << 21)  // 2P <= 2^22 positions

LA_API la_status la_icr_check(const la_icr_cfg * cfg, char * err, size_t errlen) {
    const la_status bad = LA_STATUS_INVALID_ARG;
    if (err && errlen) err[0] = 0;
    if (!cfg) return la_fail(err, errlen, bad, "icr: NULL cfg");
    const long long d = (long long)cfg->dim, P = (long long)cfg->points;
    if (d < 1 || d > ICR_MAX_DIM)
        return la_fail(err, errlen, bad, "icr: dim %lld must be in [1, %d]", d, ICR_MAX_DIM);
    if (P < 1 || P > ICR_MAX_POINTS)
        return la_fail(err, errlen, bad, "icr: points %lld must be in [1, %d] (2 points <= 2^22)",
                       P, ICR_MAX_POINTS);
    if (!isfinite(cfg->noise) || cfg->noise < 0.0)
        return la_fail(err, errlen, bad, "icr: noise %g must be finite and >= 0", cfg->noise);
    return LA_STATUS_OK;
}

LA_API la_status la_icr_generate(float * x, float * y, float * wt, const la_icr_cfg * cfg,
                                 uint64_t seed, int64_t first, int64_t n) {
    if (la_icr_check(cfg, NULL, 0) != LA_STATUS_OK) return LA_STATUS_INVALID_ARG;
    const int64_t d = cfg->dim, P = cfg->points, T = 2 * P;
    if (!batch_ok(x, y, T * d, sizeof(float), first, n) || (n > 0 && !wt))
        return LA_STATUS_INVALID_ARG;

    for (int64_t e = 0; e < n; e++) {
        la_xrng r = la_rng_at(seed, (uint64_t)(first + e));
        float * xe = x + e * T * d;   // (T, d)
        float * ye = y + e * T;       // (T)
        float * we = wt + e * T;      // (T)
        float * w = xe + (T - 1) * d; // (d) the task, in yv_{P-1}'s slot until y_{P-1} is formed
        for (int64_t j = 0; j < d; j++) w[j] = (float)la_rng_gauss(&r);
        for (int64_t i = 0; i < P; i++) {
            float * xi = xe + 2 * i * d;  // (d)
            double yi = 0.0;
            for (int64_t j = 0; j < d; j++) {
                xi[j] = (float)la_rng_gauss(&r);
                yi += (double)w[j] * (double)xi[j];
            }
            yi += cfg->noise * la_rng_gauss(&r);
            float * yv = xi + d;          // (d) overwrites w last, at i = P - 1
            yv[0] = (float)yi;
            memset(yv + 1, 0, (size_t)(d - 1) * sizeof(float));
            ye[2 * i] = (float)yi, ye[2 * i + 1] = 0.0f;
            we[2 * i] = 1.0f, we[2 * i + 1] = 0.0f;
        }
    }
    return LA_STATUS_OK;
}

// Lower Cholesky factor of A + eps I (n, n, row-major) into A's lower triangle and diagonal;
// A's strict upper triangle is left as it was. A pivot at or below tol fails the factorisation
// (false; the factor is then incomplete), or with drop zeroes its column: the direction is
// dropped (its component of the solution becomes 0).
static bool chol_lower(double * A, int64_t n, double eps, double tol, bool drop) {
    for (int64_t j = 0; j < n; j++) {
        double * Lj = A + j * n;
        double dj = Lj[j] + eps;
        for (int64_t k = 0; k < j; k++) dj -= Lj[k] * Lj[k];
        const bool ok = dj > tol;
        if (!ok && !drop) return false;
        Lj[j] = ok ? sqrt(dj) : 0.0;
        for (int64_t i = j + 1; i < n; i++) {
            double * Li = A + i * n;
            double v = Li[j];
            for (int64_t k = 0; k < j; k++) v -= Li[k] * Lj[k];
            Li[j] = ok ? v / Lj[j] : 0.0;
        }
    }
    return true;
}

// Solves A z = b in place (z overwrites b) for a symmetric positive semi-definite A (n, n),
// row-major, both triangles given; dsave: n doubles of scratch. A plain Cholesky first; when a
// pivot falls to eps = 1e-10 trace / n or below (A singular to working precision), the
// factorisation restarts from the untouched upper triangle and the saved diagonal with eps
// added to the diagonal: a tiny ridge, whose solution tends to the minimum-norm one as the
// ridge goes to 0 (for b in A's range, as X^T y is in X^T X's). A pivot that still fails (A
// indefinite by rounding beyond the ridge) drops its direction. A zero A (trace 0) gives z = 0.
static void psd_solve(double * A, double * b, double * dsave, int64_t n) {
    double tr = 0.0;
    for (int64_t i = 0; i < n; i++) tr += dsave[i] = A[i * n + i];
    if (!(tr > 0.0)) {
        memset(b, 0, (size_t)n * sizeof(double));
        return;
    }
    const double eps = 1e-10 * tr / (double)n;
    if (!chol_lower(A, n, 0.0, eps, false)) {
        for (int64_t i = 0; i < n; i++) {
            A[i * n + i] = dsave[i];
            for (int64_t j = i + 1; j < n; j++) A[j * n + i] = A[i * n + j];
        }
        chol_lower(A, n, eps, 0.0, true);
    }
    // L u = b, then L^T z = u (a zero pivot: component 0).
    for (int64_t i = 0; i < n; i++) {
        const double * Li = A + i * n;
        double v = b[i];
        for (int64_t k = 0; k < i; k++) v -= Li[k] * b[k];
        b[i] = Li[i] > 0.0 ? v / Li[i] : 0.0;
    }
    for (int64_t i = n - 1; i >= 0; i--) {
        double v = b[i];
        for (int64_t k = i + 1; k < n; k++) v -= A[k * n + i] * b[k];
        b[i] = A[i * n + i] > 0.0 ? v / A[i * n + i] : 0.0;
    }
}

static double dot_ff(const float * a, const float * b, int64_t n) {
    double s = 0.0;
    for (int64_t j = 0; j < n; j++) s += (double)a[j] * (double)b[j];
    return s;
}

LA_API la_status la_icr_least_squares(float * pred, const float * x, const float * y,
                                      const la_icr_cfg * cfg, int64_t n) {
    if (la_icr_check(cfg, NULL, 0) != LA_STATUS_OK) return LA_STATUS_INVALID_ARG;
    const int64_t d = cfg->dim, P = cfg->points, T = 2 * P;
    if (!batch_ok(x, y, T * d, sizeof(float), 0, n) || (n > 0 && !pred))
        return LA_STATUS_INVALID_ARG;
    for (int64_t i = 0; i < n * T * d; i++)
        if (!isfinite(x[i])) return LA_STATUS_INVALID_ARG;
    for (int64_t i = 0; i < n * T; i++)
        if (!isfinite(y[i])) return LA_STATUS_INVALID_ARG;
    if (n == 0) return LA_STATUS_OK;

    double * G = malloc((size_t)(2 * d * d + 3 * d) * sizeof(double));
    if (!G) return LA_STATUS_NOMEM;
    double * C = G + d * d;     // (d, d) the system being factorised
    double * Xy = C + d * d;    // (d) X^T y, running
    double * z = Xy + d;        // (d) right-hand side, then solution
    double * dg = z + d;        // (d) psd_solve's scratch
    for (int64_t e = 0; e < n; e++) {
        const float * xe = x + e * T * d;  // (T, d); x_i at row 2i
        const float * ye = y + e * T;      // (T); y_i at 2i
        float * pe = pred + e * T;         // (T)
        memset(G, 0, (size_t)(d * d) * sizeof(double));
        memset(Xy, 0, (size_t)d * sizeof(double));
        for (int64_t i = 0; i < P; i++) {
            const float * xi = xe + 2 * i * d;
            double p = 0.0;
            if (i > 0 && i < d) {
                // underdetermined: w = X^T a with (X X^T) a = y_<i; pred = sum_j a_j (x_j . x_i)
                for (int64_t j = 0; j < i; j++) {
                    for (int64_t k = 0; k <= j; k++)
                        C[j * i + k] = C[k * i + j] = dot_ff(xe + 2 * j * d, xe + 2 * k * d, d);
                    z[j] = ye[2 * j];
                }
                psd_solve(C, z, dg, i);
                for (int64_t j = 0; j < i; j++) p += z[j] * dot_ff(xe + 2 * j * d, xi, d);
            } else if (i >= d) {
                // (X^T X) w = X^T y_<i; pred = x_i . w
                memcpy(C, G, (size_t)(d * d) * sizeof(double));
                memcpy(z, Xy, (size_t)d * sizeof(double));
                psd_solve(C, z, dg, d);
                for (int64_t j = 0; j < d; j++) p += z[j] * (double)xi[j];
            }
            pe[2 * i] = (float)p, pe[2 * i + 1] = 0.0f;
            // G += x_i x_i^T, Xy += y_i x_i: the pair enters the context of the next point
            for (int64_t j = 0; j < d; j++) {
                const double xj = (double)xi[j];
                for (int64_t k = 0; k < d; k++) G[j * d + k] += xj * (double)xi[k];
                Xy[j] += xj * (double)ye[2 * i];
            }
        }
    }
    free(G);
    return LA_STATUS_OK;
}
