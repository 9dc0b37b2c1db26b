// ShortConvolution (OPS.md 4.1): causal depthwise convolution of width W with a decode cache.
//
//   z_t[d] = bias[d] + sum_{i<W} w[d, i] x_{t-W+1+i}[d] ;  y_t[d] = act(z_t[d])
//
// with act identity or SiLU. Positions are relative to each sequence's start; x_tau for
// tau < 0 comes from the sequence's initial cache (slot W + tau; slot W-1 is the newest) or is
// 0 without one. The final cache of a sequence of L tokens holds the last W entries of
// (cache, x): slot i = x_{L-W+i}, i.e. x for L-W+i >= 0 and the initial cache's slot L+i
// otherwise, so a sequence of 0 tokens passes its cache through and a T = 1 call is the decode
// step (shift left, write x_t at slot W-1, y_t = act(sum_i cache[d, i] w[d, i] + bias[d])).
//
// Backward (dz = dy o act'(z), act'(z) = SiLU'(z) or 1; p = position in the sequence):
//   dx_p[d]       = sum_i w[d, i] dz_{p+W-1-i}[d]  (terms with p+W-1-i < L)  + dfinal[d, p-L+W]
//   dw[d, i]      = sum_p dz_p[d] x_{p-W+1+i}[d]   (x from the cache for negative positions)
//   dbias[d]      = sum_p dz_p[d]
//   dinit[d, s]   = sum_{p < min(s, L)} w[d, s-1-p] dz_p[d]  +  dfinal[d, s-L] (s >= L)
// The edge terms are what fla #1140 got wrong for sequences shorter than W-1: there the cache
// slots feed outputs and the final cache at once, and dinit collects both.
//
// Dimensions: B, T, N as OPS.md, D channels, W taps; x, y, dx, dy (B, T, D); w, dw (D, W);
// bias, dbias (D); caches (N, D, W).
//
// Aliasing: y must not overlap x (later tokens read earlier rows of x). final_cache may be
// initial_cache (the cache is read into scratch before the final one is written), dx may be
// dy and dinitial_cache may be dfinal_cache. dinitial_cache is written whenever it is given,
// without an initial cache too (the gradient with respect to its implicit zeros).
//
// Layout of the work: one task per fixed block of LA_NN_CHAN_BLOCK channels walks every
// sequence and token in order, so every channel's sums (dw, dbias over all tokens) run in one
// thread in token order and nothing depends on the thread count. Per task, the block's
// weights are transposed to (W, cw) and each sequence's initial cache to (W, cw) rows, so
// every tap reads one unit-stride source row (a row of x or of the cache), and taps are
// applied four per pass over the block. The backward keeps dz of the last W tokens in a ring
// of W rows: dx_p is complete once dz_{p+W-1} is known, and is written then.
// Scratch: (threads, 2 W + 2) rows of LA_NN_CHAN_BLOCK floats forward (W rounded up to 4 in
// one of the terms), plus 2 W float and W + 1 double rows backward, allocated per call
// (10 KiB per thread forward at W = 4).
#include "nn.h"

#include <stdlib.h>

#define CB LA_NN_CHAN_BLOCK

typedef struct conv_args {
    const float *   x;        // (B*T, D)
    const float *   w;        // (D, W)
    const float *   bias;     // (D) or NULL
    const float *   init;     // (N, D, W) or NULL
    float *         y;        // (B*T, D)           forward
    float *         fin;      // (N, D, W) or NULL  forward
    const float *   dy;       // (B*T, D)           backward
    const float *   dfin;     // (N, D, W) or NULL
    float *         dx;       // (B*T, D) or NULL
    float *         dw;       // (D, W) or NULL
    float *         db;       // (D) or NULL
    float *         dinit;    // (N, D, W) or NULL
    la_act          act;
    int64_t         T, D, W, N;
    int64_t         rows;     // B*T
    const int64_t * cu;       // (N+1) or NULL
    bool            accumulate;
    size_t          per;      // scratch bytes per thread
    char *          ws;       // (threads, per)
} conv_args;

// Per-thread scratch, carved in this order (float rows of CB, then double rows).
typedef struct conv_scratch {
    float *  wt;    // (Wp, CB) w transposed: wt[i][d] = w[c0 + d, i]; rows W .. Wp are 0
    float *  hist;  // (W, CB) hist[s][d] = initial cache[n, c0 + d, s] (zeros without one)
    float *  zero;  // (CB) zeros: the bias when there is none, the source of padding taps
    float *  z;     // (CB) pre-activation of one token
    float *  ring;  // (W, CB) backward: dz of position p at row p mod W
    float *  dacc;  // (W, CB) backward: output terms of dinit, per slot
    double * aw;    // (W, CB) backward: dw sums, per tap
    double * ab;    // (CB) backward: dbias sums
} conv_scratch;

// Taps are applied in groups of 4 (one pass over the block per group); W is padded to Wp, a
// multiple of 4, with zero weights.
static inline int64_t padded_taps(int64_t W) { return (W + 3) / 4 * 4; }

static size_t fwd_rows(int64_t W) { return (size_t)(padded_taps(W) + W + 2); }

static size_t scratch_bytes(int64_t W, bool backward) {
    const size_t row = (size_t)CB * sizeof(float);
    size_t b = la_align_up(fwd_rows(W) * row);
    if (backward)
        b += la_align_up((size_t)(2 * W) * row) +
             la_align_up((size_t)(W + 1) * CB * sizeof(double));
    return b;
}

static conv_scratch scratch_carve(const conv_args * a, int tid, bool backward) {
    const int64_t W = a->W;
    char * base = a->ws + (size_t)tid * a->per;
    conv_scratch s = { 0 };
    s.wt = (float *)base;
    s.hist = s.wt + padded_taps(W) * CB;
    s.zero = s.hist + W * CB;
    s.z = s.zero + CB;
    if (backward) {
        float * f = (float *)(base + la_align_up(fwd_rows(W) * CB * sizeof(float)));
        s.ring = f;
        s.dacc = f + W * CB;
        s.aw = (double *)((char *)f + la_align_up((size_t)(2 * W) * CB * sizeof(float)));
        s.ab = s.aw + W * CB;
    }
    return s;
}

static inline void seq_range(const conv_args * a, int64_t n, int64_t * bos, int64_t * eos) {
    if (a->cu) {
        *bos = a->cu[n];
        *eos = a->cu[n + 1];
    } else {
        *bos = n * a->T;
        *eos = (n + 1) * a->T;
    }
}

// The block's weights, transposed to (Wp, cw), and the zero row.
static void load_block(const conv_args * a, conv_scratch * s, int64_t c0, int64_t cw) {
    const int64_t W = a->W;
    for (int64_t i = 0; i < W; i++)
        for (int64_t d = 0; d < cw; d++) s->wt[i * CB + d] = a->w[(c0 + d) * W + i];
    memset(s->wt + W * CB, 0, (size_t)((padded_taps(W) - W) * CB) * sizeof(float));
    memset(s->zero, 0, CB * sizeof(float));
}

// h (W, CB) <- c (cw, W) transposed, and back; written with W as a parameter that the W = 4
// call sites turn into a constant, so the strided accesses become vector shuffles (a decode
// step spends most of its time here).
static inline __attribute__((always_inline)) void cache_to_rows(float * restrict h,
                                                                const float * restrict c,
                                                                int64_t W, int64_t cw) {
    for (int64_t d = 0; d < cw; d++)
        for (int64_t i = 0; i < W; i++) h[i * CB + d] = c[d * W + i];
}

// Sequence n's initial cache for the block, transposed to (W, cw).
LA_CLONES
static void load_hist(const conv_args * a, conv_scratch * s, int64_t n, int64_t c0, int64_t cw) {
    const int64_t W = a->W, D = a->D;
    if (!a->init) {
        for (int64_t i = 0; i < W; i++) memset(s->hist + i * CB, 0, (size_t)cw * sizeof(float));
        return;
    }
    const float * c = a->init + (n * D + c0) * W;
    if (W == 4) cache_to_rows(s->hist, c, 4, cw);
    else cache_to_rows(s->hist, c, W, cw);
}

// f (cw, W) <- rows src_i (i < W) interleaved: f[d, i] = src_i[d].
static inline __attribute__((always_inline)) void rows_to_cache(float * restrict f,
                                                                const float * const * src,
                                                                int64_t W, int64_t cw) {
    for (int64_t d = 0; d < cw; d++)
        for (int64_t i = 0; i < W; i++) f[d * W + i] = src[i][d];
}

// The source row of tap i for the token at position p of a sequence starting at flat row bos:
// x_{p-W+1+i} (channels c0 ..), from x or the cache rows (zeros without a cache).
static inline const float * tap_src(const conv_args * a, const conv_scratch * s, int64_t bos,
                                    int64_t p, int64_t i, int64_t c0) {
    const int64_t tau = p - a->W + 1 + i;
    if (tau >= 0) return a->x + (bos + tau) * a->D + c0;
    return s->hist + (a->W + tau) * CB;  // slot W + tau in [1, W - 1]
}

// z = init + w0 o s0 + w1 o s1 + w2 o s2 + w3 o s3 (cw values, left to right), with w_k the
// rows of w (4, CB). first: init is another row; otherwise init is z itself.
static inline __attribute__((always_inline)) void taps4(
    float * restrict z, const float * restrict init, bool first, const float * restrict w,
    const float * restrict s0, const float * restrict s1, const float * restrict s2,
    const float * restrict s3, int64_t cw) {
    const float * restrict w0 = w, * restrict w1 = w + CB, * restrict w2 = w + 2 * CB;
    const float * restrict w3 = w + 3 * CB;
    if (first)
        for (int64_t d = 0; d < cw; d++)
            z[d] = init[d] + w0[d] * s0[d] + w1[d] * s1[d] + w2[d] * s2[d] + w3[d] * s3[d];
    else
        for (int64_t d = 0; d < cw; d++)
            z[d] = z[d] + w0[d] * s0[d] + w1[d] * s1[d] + w2[d] * s2[d] + w3[d] * s3[d];
}

// z (cw) = bias + sum_i wt[i] o src_i, taps in ascending order (the same code in forward and
// backward, so both see the same z to the bit). Padding taps add 0 o 0.
LA_CLONES
static void conv_z(const conv_args * a, const conv_scratch * s, float * restrict z, int64_t bos,
                   int64_t p, int64_t c0, int64_t cw) {
    const float * init = a->bias ? a->bias + c0 : s->zero;
    for (int64_t i0 = 0; i0 < a->W; i0 += 4) {
        const float * src[4];
        for (int64_t k = 0; k < 4; k++)
            src[k] = i0 + k < a->W ? tap_src(a, s, bos, p, i0 + k, c0) : s->zero;
        taps4(z, init, i0 == 0, s->wt + i0 * CB, src[0], src[1], src[2], src[3], cw);
    }
}

// Prefetch of the block's slice of a row: the rows of one block are D floats apart (often a
// page or more), which the hardware prefetcher does not follow.
static inline void prefetch_slice(const float * row, int64_t cw) {
    for (int64_t d = 0; d < cw; d += 16) __builtin_prefetch(row + d, 0, 3);
}
static inline void prefetch_slice_w(float * row, int64_t cw) {
    for (int64_t d = 0; d < cw; d += 16) __builtin_prefetch(row + d, 1, 3);
}

// ---------------------------------------------------------------------------------------------
// Forward

// Final cache slot i = x_{L-W+i}: a row of x, or the initial cache's slot L + i (read from the
// transposed copy, so final_cache may be initial_cache).
LA_CLONES
static void write_final(const conv_args * a, const conv_scratch * s, int64_t n, int64_t bos,
                        int64_t L, int64_t c0, int64_t cw) {
    const int64_t W = a->W, D = a->D;
    enum { MAXW = 64 };
    const float * src[MAXW];
    float * f = a->fin + (n * D + c0) * W;
    if (W > MAXW) {  // wide caches: slot by slot
        for (int64_t i = 0; i < W; i++) {
            const float * r = L + i >= W ? a->x + (bos + L + i - W) * D + c0
                                         : s->hist + (L + i) * CB;
            for (int64_t d = 0; d < cw; d++) f[d * W + i] = r[d];
        }
        return;
    }
    for (int64_t i = 0; i < W; i++)
        src[i] = L + i >= W ? a->x + (bos + L + i - W) * D + c0 : s->hist + (L + i) * CB;
    if (W == 4) rows_to_cache(f, src, 4, cw);
    else rows_to_cache(f, src, W, cw);
}

LA_CLONES
static void conv_fwd_block(const conv_args * a, conv_scratch * s, int64_t c0) {
    const int64_t D = a->D, cw = LA_MIN(CB, D - c0);
    load_block(a, s, c0, cw);
    for (int64_t n = 0; n < a->N; n++) {
        int64_t bos, eos;
        seq_range(a, n, &bos, &eos);
        const int64_t L = eos - bos;
        load_hist(a, s, n, c0, cw);
        for (int64_t p = 0; p < L; p++) {
            float * restrict yt = a->y + (bos + p) * D + c0;
            if (p + 1 < L) {
                prefetch_slice(a->x + (bos + p + 1) * D + c0, cw);
                prefetch_slice_w(a->y + (bos + p + 1) * D + c0, cw);
            }
            conv_z(a, s, yt, bos, p, c0, cw);
            if (a->act == LA_ACT_SILU)
                for (int64_t d = 0; d < cw; d++) yt[d] = la_nn_silu(yt[d]);
        }
        if (a->fin) write_final(a, s, n, bos, L, c0, cw);
    }
}

// ---------------------------------------------------------------------------------------------
// Backward

// dx at position q of a sequence of L tokens (flat row bos + q), once dz_{q .. min(q+W-1, L-1)}
// are in the ring: sum_i w_i dz_{q+W-1-i} over taps whose token exists, then the final
// cache's gradient at slot j = q - L + W when that slot holds x_q.
LA_CLONES
static void conv_dx(const conv_args * a, const conv_scratch * s, int64_t n, int64_t bos,
                    int64_t L, int64_t q, int64_t c0, int64_t cw) {
    const int64_t D = a->D, W = a->W;
    float * restrict out = a->dx + (bos + q) * D + c0;
    const int64_t ilo = LA_MAX(0, q + W - L);  // taps below read tokens past the sequence
    for (int64_t i0 = 0; i0 < W; i0 += 4) {
        const float * src[4];
        for (int64_t k = 0; k < 4; k++) {
            const int64_t i = i0 + k;
            src[k] = i >= ilo && i < W ? s->ring + ((q + W - 1 - i) % W) * CB : s->zero;
        }
        taps4(out, s->zero, i0 == 0, s->wt + i0 * CB, src[0], src[1], src[2], src[3], cw);
    }
    const int64_t j = q - L + W;
    if (a->dfin && j >= 0) {
        const float * restrict g = a->dfin + (n * D + c0) * W + j;
        for (int64_t d = 0; d < cw; d++) out[d] += g[d * W];
    }
}

LA_CLONES
static void conv_bwd_block(const conv_args * a, conv_scratch * s, int64_t c0) {
    const int64_t D = a->D, W = a->W, cw = LA_MIN(CB, D - c0);
    load_block(a, s, c0, cw);
    memset(s->aw, 0, (size_t)(W * CB) * sizeof(double));
    memset(s->ab, 0, (size_t)CB * sizeof(double));
    for (int64_t n = 0; n < a->N; n++) {
        int64_t bos, eos;
        seq_range(a, n, &bos, &eos);
        const int64_t L = eos - bos;
        load_hist(a, s, n, c0, cw);
        memset(s->dacc, 0, (size_t)(W * CB) * sizeof(float));
        for (int64_t p = 0; p < L; p++) {
            // dz_p = dy_p o act'(z_p), into the ring.
            float * restrict dz = s->ring + (p % W) * CB;
            const float * restrict dyt = a->dy + (bos + p) * D + c0;
            if (p + 1 < L) {
                prefetch_slice(a->x + (bos + p + 1) * D + c0, cw);
                prefetch_slice(a->dy + (bos + p + 1) * D + c0, cw);
                if (a->dx && p + 2 >= W) prefetch_slice_w(a->dx + (bos + p + 2 - W) * D + c0, cw);
            }
            if (a->act == LA_ACT_SILU) {
                conv_z(a, s, s->z, bos, p, c0, cw);
                for (int64_t d = 0; d < cw; d++) dz[d] = dyt[d] * la_nn_silu_grad(s->z[d]);
            } else {
                memcpy(dz, dyt, (size_t)cw * sizeof(float));
            }
            // dbias += dz ; dw[:, i] += dz o x_{p-W+1+i}
            if (a->db)
                for (int64_t d = 0; d < cw; d++) s->ab[d] += (double)dz[d];
            if (a->dw)
                for (int64_t i = 0; i < W; i++) {
                    const float * restrict src = tap_src(a, s, bos, p, i, c0);
                    double * restrict awi = s->aw + i * CB;
                    for (int64_t d = 0; d < cw; d++) awi[d] += (double)dz[d] * (double)src[d];
                }
            // Cache slot sl fed tap sl-1-p of this token: dinit[sl] += w[sl-1-p] dz_p.
            if (a->dinit)
                for (int64_t sl = p + 1; sl < W; sl++) {
                    const float * restrict wi = s->wt + (sl - 1 - p) * CB;
                    float * restrict da = s->dacc + sl * CB;
                    for (int64_t d = 0; d < cw; d++) da[d] += wi[d] * dz[d];
                }
            // dx_{p-W+1} is complete now (dz of its W successors, itself included, are known).
            if (a->dx && p >= W - 1) conv_dx(a, s, n, bos, L, p - W + 1, c0, cw);
        }
        if (a->dx)
            for (int64_t q = LA_MAX(0, L - W + 1); q < L; q++) conv_dx(a, s, n, bos, L, q, c0, cw);
        if (a->dinit) {
            // dinit[sl] = output terms + dfinal[sl - L] (the slot the cache shifted it to).
            // Slots in descending order: dinit may be dfinal, and slot sl - L <= sl is read
            // before it is overwritten.
            float * di = a->dinit + (n * D + c0) * W;
            const float * df = a->dfin ? a->dfin + (n * D + c0) * W : NULL;
            for (int64_t sl = W - 1; sl >= 0; sl--) {
                const float * restrict da = s->dacc + sl * CB;
                for (int64_t d = 0; d < cw; d++) {
                    const float g = df && sl >= L ? df[d * W + sl - L] : 0.0f;
                    di[d * W + sl] = da[d] + g;
                }
            }
        }
    }
    if (a->db)
        for (int64_t d = 0; d < cw; d++)
            a->db[c0 + d] = (float)(a->accumulate ? (double)a->db[c0 + d] + s->ab[d] : s->ab[d]);
    if (a->dw)
        for (int64_t d = 0; d < cw; d++)
            for (int64_t i = 0; i < W; i++) {
                float * g = a->dw + (c0 + d) * W + i;
                const double v = s->aw[i * CB + d];
                *g = (float)(a->accumulate ? (double)*g + v : v);
            }
}

// ---------------------------------------------------------------------------------------------
// Drivers

static la_status conv_setup(conv_args * a, int64_t B, int64_t T, int64_t D, int64_t W,
                            la_act act, const la_opts * opts) {
    if (B < 1 || T < 1 || D < 1 || W < 1) return LA_STATUS_SHAPE;
    if (act != LA_ACT_IDENTITY && act != LA_ACT_SILU) return LA_STATUS_INVALID_ARG;
    a->act = act;
    a->T = T;
    a->D = D;
    a->W = W;
    a->N = B;
    a->rows = B * T;
    a->cu = NULL;
    if (opts) {
        const la_shape sh = { .B = B, .T = T, .H = 1, .K = 1, .V = 1 };
        la_status st = la_check_base(sh, opts, &a->N);
        if (st != LA_STATUS_OK) return st;
        a->cu = opts->cu_seqlens;
    }
    return LA_STATUS_OK;
}

static la_status conv_run(conv_args * a, bool backward) {
    const int64_t nb = (a->D + CB - 1) / CB;
    const int32_t nt = la_nn_threads(nb, a->rows * a->D * a->W);
    a->per = scratch_bytes(a->W, backward);
    void * ws = NULL;
    if (posix_memalign(&ws, LA_ALIGN, (size_t)nt * a->per) != 0) return LA_STATUS_NOMEM;
    a->ws = ws;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t b = 0; b < nb; b++) {
        conv_scratch s = scratch_carve(a, la_thread_index(), backward);
        if (backward) conv_bwd_block(a, &s, b * CB);
        else conv_fwd_block(a, &s, b * CB);
    }
    free(ws);
    return LA_STATUS_OK;
}

la_status la_short_conv_forward(float * y, float * final_cache, const float * x,
                                const float * w, const float * bias,
                                const float * initial_cache, la_act act, int64_t B, int64_t T,
                                int64_t D, int64_t W, const la_opts * opts) {
    conv_args a = { .x = x, .w = w, .bias = bias, .init = initial_cache, .y = y,
                    .fin = final_cache };
    la_status st = conv_setup(&a, B, T, D, W, act, opts);
    if (st != LA_STATUS_OK) return st;
    if (!y || !x || !w) return LA_STATUS_INVALID_ARG;
    return conv_run(&a, false);
}

la_status la_short_conv_backward(float * dx, float * dw, float * dbias, float * dinitial_cache,
                                 const float * dy, const float * dfinal_cache, const float * x,
                                 const float * w, const float * bias,
                                 const float * initial_cache, la_act act, int64_t B, int64_t T,
                                 int64_t D, int64_t W, bool accumulate, const la_opts * opts) {
    conv_args a = { .x = x, .w = w, .bias = bias, .init = initial_cache, .dy = dy,
                    .dfin = dfinal_cache, .dx = dx, .dw = dw, .db = dbias,
                    .dinit = dinitial_cache, .accumulate = accumulate };
    la_status st = conv_setup(&a, B, T, D, W, act, opts);
    if (st != LA_STATUS_OK) return st;
    if (!dy || !x || !w) return LA_STATUS_INVALID_ARG;
    if (!dx && !dw && !dbias && !dinitial_cache) return LA_STATUS_OK;
    return conv_run(&a, true);
}
