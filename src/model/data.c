// Training data: the MQAR synthetic task (ALGORITHMS.md 9.1) and byte-level text.
//
// MQAR follows Zoology's multiquery_ar (Arora et al. 2023, zoology/data/associative_recall.py),
// one example at a time:
//
//   keys   = D distinct draws from [1, Vc/2);  values = D distinct draws from [Vc/2, Vc)
//   ctx    = [k1, v1, ..., kD, vD] tiled p times                      (2 D p tokens)
//   space  = (N - 2 D p) / 2 ;  P(gap = i) ~ a (i + 1)^(a - 1), i in [0, space)
//   gaps   = D distinct draws from that law (sequential, without replacement: numpy's
//            choice(replace=False, p=...) gives this law, drawing repeats and dropping them)
//   qry    = zeros(N - 2 D p + 1);  qry[2 gap_j] = k_j ;  ex = concat(ctx, qry)   (N + 1)
//   lab    = full(N + 1, -100);  lab[2 gap_j + 2 D p + 1] = v_j
//   inputs = ex[0 : N];  labels = lab[1 : N + 1]   (v_j is the label at k_j's query position)
//   random_non_queries: every 0 in inputs becomes a uniform token in [0, Vc)
//
// Example i draws from its own generator la_rng_at(seed, i), in the order keys, values, gaps,
// fillers, so an example does not depend on the batch it is generated in, and switching
// random_non_queries changes only the filler positions. Distinct keys and values come from
// rejection against a small hash set (2 D entries; never O(Vc) work per example, and
// 2 D (p + 1) <= N < Vc keeps the rejection rate below one half); the gaps from a Fenwick
// tree over the space weights (O(space) to reset, O(log space) per draw).
//
// Text: the token stream is [LA_TEXT_BOS, byte 0, byte 1, ...]; the training split is its first
// round((1 - val_frac) n) tokens, the validation split the rest.
//
// Dimensions: N = seq_len, Vc = vocab, D = num_kv_pairs, p = num_passes, T = text window.
#include "internal.h"
#include "rng.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>


// ---------------------------------------------------------------------------------------------
// MQAR: configuration

LA_API la_mqar_cfg la_mqar_default(void) {
    la_mqar_cfg c = {
        .vocab = 8192,
        .seq_len = 64,
        .num_kv_pairs = 4,
        .power_a = 0.01,
        .num_passes = 1,
        .random_non_queries = true,
    };
    return c;
}

LA_API la_status la_mqar_check(const la_mqar_cfg * cfg, char * err, size_t errlen) {
    const la_status bad = LA_STATUS_INVALID_ARG;
    if (err && errlen) err[0] = 0;
    if (!cfg) return la_fail(err, errlen, bad, "mqar: NULL cfg");
    const long long N = (long long)cfg->seq_len, Vc = (long long)cfg->vocab;
    const long long D = (long long)cfg->num_kv_pairs, p = (long long)cfg->num_passes;
    if (N < 2 || N % 2 != 0)
        return la_fail(err, errlen, bad, "mqar: seq_len %lld must be even and >= 2", N);
    if (Vc <= N)
        return la_fail(err, errlen, bad, "mqar: vocab %lld must exceed seq_len %lld", Vc, N);
    if (D < 1) return la_fail(err, errlen, bad, "mqar: num_kv_pairs %lld must be >= 1", D);
    if (p < 1) return la_fail(err, errlen, bad, "mqar: num_passes %lld must be >= 1", p);
    if (!isfinite(cfg->power_a) || !(cfg->power_a > 0.0) || cfg->power_a > 1.0)
        return la_fail(err, errlen, bad, "mqar: power_a %g must be in (0, 1]", cfg->power_a);
    // 2 D p + 2 D in 128 bits: D and p may each be near INT64_MAX.
    const __int128 need = (__int128)2 * D * ((__int128)p + 1);
    if (need > N)
        return la_fail(err, errlen, bad,
                         "mqar: num_kv_pairs %lld (num_passes %lld) needs seq_len >= %.0f "
                         "(2 D p + 2 D), not %lld", D, p, (double)need, N);
    // Implied by the checks above (Vc > N >= 2 D (p + 1)); kept as the generator's own guard.
    const long long nkeys = Vc / 2 - 1, nvals = Vc - Vc / 2;
    if (D > nkeys || D > nvals)
        return la_fail(err, errlen, bad,
                         "mqar: num_kv_pairs %lld exceeds the %lld keys in [1, vocab/2)", D,
                         nkeys);
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// MQAR: distinct draws and the gap law

// An open-addressed set of nonzero tokens (0 marks an empty slot; keys and values are >= 1).
typedef struct tok_set {
    int64_t * slot;  // (mask + 1)
    uint64_t  mask;
} tok_set;

// Inserts x; false when it was already there.
static bool tok_set_add(tok_set * s, int64_t x) {
    uint64_t h = ((uint64_t)x * 0x9E3779B97F4A7C15ull) >> 17;
    for (;; h++) {
        int64_t * e = &s->slot[h & s->mask];
        if (*e == x) return false;
        if (*e == 0) {
            *e = x;
            return true;
        }
    }
}

// A draw from [lo, lo + n) not drawn before in this example.
static int64_t draw_distinct(la_xrng * r, tok_set * s, int64_t lo, int64_t n) {
    for (;;) {
        const int64_t x = lo + (int64_t)la_rng_below(r, (uint64_t)n);
        if (tok_set_add(s, x)) return x;
    }
}

// Fenwick tree (1-based) over the weights w[0, n): tree[i] sums w over (i - lowbit(i), i].
static void fenwick_build(double * tree, const double * w, int64_t n) {
    tree[0] = 0.0;
    for (int64_t i = 1; i <= n; i++) tree[i] = w[i - 1];
    for (int64_t i = 1; i <= n; i++) {
        const int64_t j = i + (i & -i);
        if (j <= n) tree[j] += tree[i];
    }
}

// One draw of index g with probability w[g] / (sum of the weights not yet taken), then g is
// taken: its weight leaves the tree. top = the largest power of two <= n.
static int64_t fenwick_draw(double * tree, const double * w, uint8_t * taken, int64_t n,
                            int64_t top, la_xrng * r) {
    double total = 0.0;
    for (int64_t i = n; i > 0; i -= i & -i) total += tree[i];
    double target = la_rng_unif(r) * total;
    int64_t pos = 0;  // after the descent: the weights of [0, pos) sum to <= target
    for (int64_t step = top; step > 0; step >>= 1) {
        if (pos + step <= n && tree[pos + step] <= target) {
            pos += step;
            target -= tree[pos];
        }
    }
    // Rounding in the subtractions can land past the end or on a taken index (weight 0):
    // take the nearest free index below, else above (not reached in exact arithmetic).
    if (pos >= n || taken[pos]) {
        int64_t g = pos < n ? pos : n - 1;
        while (g >= 0 && taken[g]) g--;
        if (g < 0) {
            g = pos;
            while (taken[g]) g++;
        }
        pos = g;
    }
    taken[pos] = 1;
    for (int64_t i = pos + 1; i <= n; i += i & -i) tree[i] -= w[pos];
    return pos;
}

// ---------------------------------------------------------------------------------------------
// MQAR: the generator

LA_API la_status la_mqar_generate(int64_t * inputs, int64_t * labels, const la_mqar_cfg * cfg,
                                  uint64_t seed, int64_t first, int64_t n) {
    if (la_mqar_check(cfg, NULL, 0) != LA_STATUS_OK) return LA_STATUS_INVALID_ARG;
    if (first < 0 || n < 0 || first > INT64_MAX - n) return LA_STATUS_INVALID_ARG;
    if (n == 0) return LA_STATUS_OK;
    if (!inputs || !labels) return LA_STATUS_INVALID_ARG;

    const int64_t N = cfg->seq_len, Vc = cfg->vocab, D = cfg->num_kv_pairs;
    const int64_t P = cfg->num_passes;
    const int64_t ctx = 2 * D * P;          // context tokens
    const int64_t space = (N - ctx) / 2;    // query slots (>= D)
    const int64_t nkeys = Vc / 2 - 1, nvals = Vc - Vc / 2;
    uint64_t hmask = 1;
    while (hmask + 1 < (uint64_t)(4 * D)) hmask = 2 * hmask + 1;  // load <= 1/2
    int64_t top = 1;
    while (2 * top <= space) top *= 2;

    // Scratch, O(N) in all, allocated once per call.
    const size_t bytes = (size_t)(3 * space + 2) * sizeof(double) +
                         (size_t)(3 * D + hmask + 1) * sizeof(int64_t) + (size_t)space;
    char * mem = malloc(bytes);
    if (!mem) return LA_STATUS_NOMEM;
    double *  w     = (double *)mem;                   // (space) weights a (i + 1)^(a - 1)
    double *  tree0 = w + space;                       // (space + 1) their Fenwick tree
    double *  tree  = tree0 + space + 1;               // (space + 1) the example's copy
    int64_t * keys  = (int64_t *)(tree + space + 1);   // (D)
    int64_t * vals  = keys + D;                        // (D)
    int64_t * gaps  = vals + D;                        // (D)
    tok_set   set   = { gaps + D, hmask };             // (hmask + 1)
    uint8_t * taken = (uint8_t *)(set.slot + hmask + 1);  // (space)

    const double a = cfg->power_a;
    for (int64_t i = 0; i < space; i++) w[i] = a * pow((double)(i + 1), a - 1.0);
    fenwick_build(tree0, w, space);

    for (int64_t e = 0; e < n; e++) {
        la_xrng r = la_rng_at(seed, (uint64_t)(first + e));
        int64_t * x = inputs + e * N;   // (N)
        int64_t * y = labels + e * N;   // (N)

        memset(set.slot, 0, (size_t)(hmask + 1) * sizeof(int64_t));
        for (int64_t j = 0; j < D; j++) keys[j] = draw_distinct(&r, &set, 1, nkeys);
        for (int64_t j = 0; j < D; j++) vals[j] = draw_distinct(&r, &set, Vc / 2, nvals);
        memcpy(tree, tree0, (size_t)(space + 1) * sizeof(double));
        memset(taken, 0, (size_t)space);
        for (int64_t j = 0; j < D; j++) gaps[j] = fenwick_draw(tree, w, taken, space, top, &r);

        // inputs = ex[0 : N]: the context, then the queries; labels = lab[1 : N + 1].
        for (int64_t pass = 0; pass < P; pass++) {
            for (int64_t j = 0; j < D; j++) {
                x[pass * 2 * D + 2 * j]     = keys[j];
                x[pass * 2 * D + 2 * j + 1] = vals[j];
            }
        }
        for (int64_t t = ctx; t < N; t++) x[t] = 0;
        for (int64_t t = 0; t < N; t++) y[t] = LA_IGNORE_INDEX;
        for (int64_t j = 0; j < D; j++) {
            x[ctx + 2 * gaps[j]] = keys[j];  // qry[2 gap_j] = k_j
            y[ctx + 2 * gaps[j]] = vals[j];  // lab[2 gap_j + 2 D p + 1] = v_j, shifted by one
        }
        if (cfg->random_non_queries) {
            for (int64_t t = 0; t < N; t++)
                if (x[t] == 0) x[t] = (int64_t)la_rng_below(&r, (uint64_t)Vc);
        }
    }
    free(mem);
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// Byte-level text

struct la_text {
    unsigned char * bytes;   // (ntok - 1) the file; token i > 0 is bytes[i - 1]
    int64_t         ntok;    // 1 + bytes
    int64_t         ntrain;  // tokens [0, ntrain) train, [ntrain, ntok) validation
};

static inline int64_t text_tok(const la_text * t, int64_t i) {
    return i == 0 ? LA_TEXT_BOS : (int64_t)t->bytes[i - 1];
}


// Validates bytes (owned: freed on failure) and builds the text; name is for messages.
static la_status text_build(la_text ** out, unsigned char * bytes, size_t n, double val_frac,
                            const char * name, char * err, size_t errlen) {
    la_status s = LA_STATUS_OK;
    int64_t bad = -1;
    if (n == 0) {
        s = la_fail(err, errlen, LA_STATUS_FORMAT, "%s: empty file", name);
    } else if ((uint64_t)n >= (uint64_t)INT64_MAX) {
        s = la_fail(err, errlen, LA_STATUS_FORMAT, "%s: too large", name);
    } else if ((bad = la_utf8_bad_offset(bytes, n)) >= 0) {
        s = la_fail(err, errlen, LA_STATUS_FORMAT,
                      "%s: invalid UTF-8 at byte offset %lld (byte 0x%02X)", name,
                      (long long)bad, (unsigned)bytes[bad]);
    }
    const int64_t ntok = (int64_t)n + 1;
    const int64_t ntrain = (int64_t)llround((1.0 - val_frac) * (double)ntok);
    if (!s && ntrain < 2) {
        s = la_fail(err, errlen, LA_STATUS_FORMAT,
                      "%s: the training split has %lld tokens, needs >= 2", name,
                      (long long)ntrain);
    } else if (!s && val_frac > 0.0 && ntok - ntrain < 2) {
        s = la_fail(err, errlen, LA_STATUS_FORMAT,
                      "%s: the validation split (val_frac %g) has %lld tokens, needs >= 2",
                      name, val_frac, (long long)(ntok - ntrain));
    }
    la_text * t = s ? NULL : malloc(sizeof *t);
    if (!s && !t) s = la_fail(err, errlen, LA_STATUS_NOMEM, "%s: out of memory", name);
    if (s) {
        free(bytes);
        return s;
    }
    t->bytes = bytes;
    t->ntok = ntok;
    t->ntrain = ntrain;
    *out = t;
    return LA_STATUS_OK;
}

static la_status text_args(la_text ** out, const void * src, double val_frac,
                           const char * fn, char * err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!out || !src)
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG, "%s: NULL %s", fn,
                         !out ? "out" : "source");
    *out = NULL;
    if (!isfinite(val_frac) || val_frac < 0.0 || val_frac > 0.5)
        return la_fail(err, errlen, LA_STATUS_INVALID_ARG,
                         "%s: val_frac %g must be in [0, 0.5]", fn, val_frac);
    return LA_STATUS_OK;
}

// val_frac = 0 gives an empty validation split; otherwise each split holds >= 2 tokens.
LA_API la_status la_text_from_memory(la_text ** out, const void * bytes, size_t n,
                                     double val_frac, char * err, size_t errlen) {
    la_status s = text_args(out, bytes, val_frac, "la_text_from_memory", err, errlen);
    if (s) return s;
    unsigned char * copy = malloc(n > 0 ? n : 1);
    if (!copy) return la_fail(err, errlen, LA_STATUS_NOMEM, "<memory>: out of memory");
    if (n > 0) memcpy(copy, bytes, n);
    return text_build(out, copy, n, val_frac, "<memory>", err, errlen);
}

LA_API la_status la_text_open(la_text ** out, const char * path, double val_frac, char * err,
                              size_t errlen) {
    la_status s = text_args(out, path, val_frac, "la_text_open", err, errlen);
    if (s) return s;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return la_fail(err, errlen, LA_STATUS_IO, "%s: cannot open: %s", path,
                         strerror(errno));
    struct stat st;
    unsigned char * buf = NULL;
    size_t n = 0;
    if (fstat(fd, &st) != 0) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: not a regular file", path);
    } else if ((uint64_t)st.st_size >= (uint64_t)SIZE_MAX) {
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: file too large", path);
    } else {
        n = (size_t)st.st_size;
        buf = malloc(n > 0 ? n : 1);
        if (!buf) s = la_fail(err, errlen, LA_STATUS_NOMEM, "%s: out of memory", path);
        for (size_t got = 0; !s && got < n;) {
            const ssize_t r = read(fd, buf + got, n - got);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0)
                s = la_fail(err, errlen, LA_STATUS_IO, "%s: read failed: %s", path,
                              strerror(errno));
            else if (r == 0)
                s = la_fail(err, errlen, LA_STATUS_IO, "%s: read failed: file shrank", path);
            else
                got += (size_t)r;
        }
    }
    close(fd);
    if (s) {
        free(buf);
        return s;
    }
    return text_build(out, buf, n, val_frac, path, err, errlen);
}

LA_API void la_text_close(la_text * t) {
    if (!t) return;
    free(t->bytes);
    free(t);
}

LA_API int64_t la_text_tokens(const la_text * t, bool val) {
    if (!t) return 0;
    return val ? t->ntok - t->ntrain : t->ntrain;
}

LA_API la_status la_text_sample(const la_text * t, bool val, int64_t * inputs, int64_t * labels,
                                int64_t T, uint64_t seed, int64_t first, int64_t n) {
    if (!t || first < 0 || n < 0 || first > INT64_MAX - n) return LA_STATUS_INVALID_ARG;
    if (n > 0 && (!inputs || !labels)) return LA_STATUS_INVALID_ARG;
    const int64_t base = val ? t->ntrain : 0, len = la_text_tokens(t, val);
    if (T < 1 || len < T + 1) return LA_STATUS_SHAPE;
    for (int64_t i = 0; i < n; i++) {
        la_xrng r = la_rng_at(seed, (uint64_t)(first + i));
        const int64_t s = base + (int64_t)la_rng_below(&r, (uint64_t)(len - T));  // [0, len-T-1]
        for (int64_t j = 0; j < T; j++) {
            inputs[i * T + j] = text_tok(t, s + j);
            labels[i * T + j] = text_tok(t, s + j + 1);
        }
    }
    return LA_STATUS_OK;
}

// The split's len - 1 labels (tokens 1 .. len - 1) in windows of T: ceil((len - 1) / T).
LA_API int64_t la_text_windows(const la_text * t, bool val, int64_t T) {
    const int64_t len = la_text_tokens(t, val);
    if (T < 1 || len < 2) return 0;
    return (len - 1 + T - 1) / T;
}

// Position i T + j carries input tok[p] and label tok[p + 1] while p + 1 < len; past that the
// input is LA_TEXT_EOS and the label LA_IGNORE_INDEX, so every label appears exactly once.
LA_API la_status la_text_window(const la_text * t, bool val, int64_t * inputs, int64_t * labels,
                                int64_t T, int64_t first, int64_t n) {
    if (!t || first < 0 || n < 0) return LA_STATUS_INVALID_ARG;
    if (n > 0 && (!inputs || !labels)) return LA_STATUS_INVALID_ARG;
    if (T < 1) return LA_STATUS_SHAPE;
    const int64_t base = val ? t->ntrain : 0, len = la_text_tokens(t, val);
    const int64_t nwin = la_text_windows(t, val, T);
    if (first > nwin || n > nwin - first) return LA_STATUS_SHAPE;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < T; j++) {
            const int64_t p = (first + i) * T + j;
            const bool in = p + 1 < len;
            inputs[i * T + j] = in ? text_tok(t, base + p) : LA_TEXT_EOS;
            labels[i * T + j] = in ? text_tok(t, base + p + 1) : LA_IGNORE_INDEX;
        }
    }
    return LA_STATUS_OK;
}
