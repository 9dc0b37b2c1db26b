// Synthetic tasks: selective copying (ALGORITHMS.md 9.2) and tokenizer-free passkey retrieval
// (ALGORITHMS.md 9.4). Like MQAR (data.c), example i of a call is a pure function of
// (seed, first + i): it draws from its own generator la_rng_at(seed, first + i), so it does not
// depend on the batch it is generated in.
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
// Memory: O(1) beyond the caller's (n, seq_len) inputs and labels; time O(seq_len) per example.
//
// Dimensions: A = vocab (selcopy), M = num_tokens, L = noise_len, S = L + M; Vc = vocab
// (passkey), N = seq_len, V = value_len, F = fillers.
#include "internal.h"
#include "rng.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

// Shared argument rules of the generators: first, n >= 0 without overflow, (n, len) fits in
// int64 and size_t, buffers non-NULL unless n = 0 (as la_mqar_generate).
static bool batch_ok(const int64_t * inputs, const int64_t * labels, int64_t len, int64_t first,
                     int64_t n) {
    if (first < 0 || n < 0 || first > INT64_MAX - n) return false;
    if (n == 0) return true;
    if (!inputs || !labels) return false;
    return len <= (int64_t)(SIZE_MAX / sizeof(int64_t)) / n && n <= INT64_MAX / len;
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
    if (!batch_ok(inputs, labels, T, first, n)) return LA_STATUS_INVALID_ARG;

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
    if (!batch_ok(inputs, labels, N, first, n)) return LA_STATUS_INVALID_ARG;
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
