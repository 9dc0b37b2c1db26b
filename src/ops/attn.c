// attn: softmax attention with GQA, sliding windows, a forgetting gate and a KV-cache decode step
// (OPS.md 2.17-2.18, ALGORITHMS.md 3.8).
//
//   z_tj = s q_t . k_j + G_t - G_j        G = cumsum(g) per sequence (0 without a gate)
//   o_t  = sum_{j in W(t)} softmax_j(z_tj) v_j ,  lse_t = log sum_{j in W(t)} exp(z_tj)
//   W(t) = {j <= t} (causal), {t - w < j <= t} (causal, window w > 0),
//          every j of the sequence (causal = false), {|t - j| < w} (causal = false, window w)
//
// Forms
//   ref    row by row in double (the plain definition; the oracle of the fast form). Its
//          backward recomputes each row's lse and Delta from the definition as well, so it
//          does not read o and lse (still required arguments).
//   chunk  FlashAttention-2 tiling (Dao 2023): query blocks of C rows against key blocks of C
//          columns with an online softmax (running max m and sum l per row); key blocks outside
//          W are skipped, partial ones masked before the exp, so the T x T matrix is never
//          formed. The query heads of one kv head are stacked into one block of rows (GQA), so
//          each K, V block is packed and read once for all of them. recurrent = chunk.
//
// Backward (FlashAttention-2): nothing is saved but o and lse; each tile recomputes
//   P  = exp(z - lse)                      dP = dO V^T           dZ = P o (dP - Delta)
//   Delta_t = rowsum(dO o O)_t             dQ = s dZ K           dK = s dZ^T Q      dV = P^T dO
// With the gate, dG_t = rowsum(dZ)_t - colsum(dZ)_t; the row term vanishes exactly (a shift of
// row t's logits by G_t leaves its softmax unchanged: sum_j P_tj (dP_tj - Delta_t) = 0), so
// dG_t = -colsum(dZ)_t and dg is its reverse cumsum within the sequence, in double.
// Deterministic without atomics: no output row is shared between tasks. When the (sequence,
// kv head) pairs keep every thread busy, one task per pair walks its key blocks in order and
// accumulates dK, dV (summed over the group's query heads in a fixed order), the gate's column
// sums, and dQ in place (5 block products per tile). Otherwise two passes over finer tasks:
// (sequence, kv head, key block) for dK, dV, dG, then (sequence, query heads, query block) for
// dQ (7 products per tile: pass 2 recomputes P and dP). Both schedules make the same GEMM calls
// on every dq row in the same order, so they give the same bits, and results are bitwise
// identical for any thread count.
//
// Work balance: the causal cost of query block i grows with i, so a task takes the pair of
// blocks {p, nb-1-p} of its sequence (equal total cost) and the static split stays balanced.
//
// Dimensions: B, T, HQ (= sh.H), HKV (= sh.HV, 0: HQ), K, V, N, C as in OPS.md; G = HQ / HKV
// query heads per kv head, of which HG are stacked at a time. Layout [B, T, H, D] (OPS.md 1.1).
#include "internal.h"
#include "vexp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    AT_HG = 4,   // query heads stacked per block of rows (GQA): HG*C rows share each K, V block
    AT_PB = 64,  // cache positions per block of the decode step
};

typedef struct at_args {
    const float * q, * k, * v, * g;    // (B,T,HQ,K), (B,T,HKV,K), (B,T,HKV,V), (B,T,HQ) or NULL
    float *       o, * lse;            // (B,T,HQ,V), (B,T,HQ) or NULL (forward outputs)
    const float * dout, * o_in;        // (B,T,HQ,V) each (backward inputs)
    const float * lse_in;              // (B,T,HQ) (backward input)
    float *       dq, * dk, * dv, * dg;// as q, k, v, g
    la_shape      sh;
    const la_opts * opts;
    int64_t       HQ, HKV, G, nsub;    // heads; G = HQ / HKV; nsub = ceil(G / HG)
    int64_t       N, C, npair;         // sequences, block size, block pairs of the longest one
    int64_t       w;                   // window (0: none)
    bool          causal;
    float         scale;
    double *      Gc;                  // (B*T, HQ) cumulative gate (gated calls)
    float *       Dr;                  // (B*T, HQ) Delta = rowsum(dO o O)
    double *      dGc;                 // (B*T, HQ) dG = -colsum(dZ)
} at_args;

// ---------------------------------------------------------------------------------------------
// Windows: W(t) = [key_lo(t), key_hi(t)] inside the sequence [bos, eos); both are
// non-decreasing in t, and t itself is always in W(t), so no row is empty.

static inline int64_t key_lo(const at_args * a, int64_t t, int64_t bos) {
    return a->w > 0 ? LA_MAX(bos, t - a->w + 1) : bos;
}
static inline int64_t key_hi(const at_args * a, int64_t t, int64_t eos) {
    if (a->causal) return t;
    return a->w > 0 ? LA_MIN(eos - 1, t + a->w - 1) : eos - 1;
}
// The queries that see key j: [qry_lo(j), qry_hi(j)] (the transpose of W).
static inline int64_t qry_lo(const at_args * a, int64_t j, int64_t bos) {
    if (a->causal) return j;
    return a->w > 0 ? LA_MAX(bos, j - a->w + 1) : bos;
}
static inline int64_t qry_hi(const at_args * a, int64_t j, int64_t eos) {
    return a->w > 0 ? LA_MIN(eos - 1, j + a->w - 1) : eos - 1;
}

// ---------------------------------------------------------------------------------------------
// Pre- and post-passes over (sequence, query head): the cumulative gate, Delta, and dg.

// Gc[t, h] = sum_{bos <= i <= t} g[i, h] in double (ALGORITHMS.md 4.3), gates clamped at
// LA_GATE_FLOOR so that a -inf gate (a hard reset) gives no -inf - -inf.
static void cumgate_task(const void * ctx, int64_t task, void * scratch) {
    (void)scratch;
    const at_args * a = ctx;
    const int64_t n = task / a->HQ, h = task % a->HQ;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    double acc = 0;
    for (int64_t t = bos; t < eos; t++) {
        const double g = (double)a->g[t * a->HQ + h];
        acc += g < LA_GATE_FLOOR ? LA_GATE_FLOOR : g;
        a->Gc[t * a->HQ + h] = acc;
    }
}

// Delta[t, h] = dout[t, h] . o[t, h] for the rows of one block of 64 tokens.
static void delta_task(const void * ctx, int64_t task, void * scratch) {
    (void)scratch;
    const at_args * a = ctx;
    const int64_t rows = a->sh.B * a->sh.T, V = a->sh.V;
    for (int64_t t = task * 64; t < LA_MIN(rows, task * 64 + 64); t++)
        for (int64_t h = 0; h < a->HQ; h++) {
            const int64_t r = t * a->HQ + h;
            a->Dr[r] = la_dot_lanes(a->dout + r * V, a->o_in + r * V, V);
        }
}

// dg_i = sum_{t >= i} dG_t within the sequence (G_t = sum_{i <= t} g_i), in double.
static void dg_task(const void * ctx, int64_t task, void * scratch) {
    (void)scratch;
    const at_args * a = ctx;
    const int64_t n = task / a->HQ, h = task % a->HQ;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    double acc = 0;
    for (int64_t t = eos - 1; t >= bos; t--) {
        acc += a->dGc[t * a->HQ + h];
        a->dg[t * a->HQ + h] = (float)acc;
    }
}

// ---------------------------------------------------------------------------------------------
// Reference form: each row from the definition, in double.

static double dot_f64(const float * x, const float * y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)y[i];
    return s;
}

// z_tj of query head h (double).
static inline double ref_logit(const at_args * a, int64_t t, int64_t j, int64_t h) {
    const int64_t K = a->sh.K, kvh = h / a->G;
    double z = (double)a->scale *
               dot_f64(a->q + (t * a->HQ + h) * K, a->k + (j * a->HKV + kvh) * K, K);
    if (a->g) z += a->Gc[t * a->HQ + h] - a->Gc[j * a->HQ + h];
    return z;
}

// Row t of head h: z[j - lo] = z_tj for j in W(t) = [lo, hi]; returns log sum_j exp(z_tj).
static double ref_row(const at_args * a, int64_t t, int64_t h, int64_t lo, int64_t hi,
                      double * z) {
    double m = -(double)INFINITY, l = 0;
    for (int64_t j = lo; j <= hi; j++) {
        z[j - lo] = ref_logit(a, t, j, h);
        m = z[j - lo] > m ? z[j - lo] : m;
    }
    for (int64_t j = lo; j <= hi; j++) l += exp(z[j - lo] - m);
    return m + log(l);
}

// Per-thread scratch of the reference form: z (maxlen) and two accumulators of max(K, V).
static size_t ref_per_bytes(la_shape sh, int64_t maxlen) {
    return la_align_up((size_t)(maxlen + 2 * LA_MAX(sh.K, sh.V)) * sizeof(double));
}

// Forward rows of one (sequence, query head).
static void ref_fwd_task(const void * ctx, int64_t task, void * scratch) {
    const at_args * a = ctx;
    const int64_t n = task / a->HQ, h = task % a->HQ, V = a->sh.V, kvh = h / a->G;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    double * z = scratch;                  // (maxlen)
    double * acc = z + (eos - bos);        // (V)
    for (int64_t t = bos; t < eos; t++) {
        const int64_t lo = key_lo(a, t, bos), hi = key_hi(a, t, eos);
        const double lse = ref_row(a, t, h, lo, hi, z);
        for (int64_t e = 0; e < V; e++) acc[e] = 0;
        for (int64_t j = lo; j <= hi; j++) {
            const double p = exp(z[j - lo] - lse);
            const float * vj = a->v + (j * a->HKV + kvh) * V;
            for (int64_t e = 0; e < V; e++) acc[e] += p * (double)vj[e];
        }
        float * ot = a->o + (t * a->HQ + h) * V;
        for (int64_t e = 0; e < V; e++) ot[e] = (float)acc[e];
        if (a->lse) a->lse[t * a->HQ + h] = (float)lse;
    }
}

// Backward, pass A, rows of one (sequence, query head): the row's own lse and
// Delta_t = sum_j P_tj dP_tj (kept in double for pass B) and dq_t = s sum_j dZ_tj k_j with
// dZ_tj = P_tj (dP_tj - Delta_t), dP_tj = dout_t . v_j.
typedef struct ref_bwd_ctx {
    const at_args * a;
    double *        Lr, * Dd;  // (B*T, HQ) each
} ref_bwd_ctx;

static void ref_bwd_rows_task(const void * ctx, int64_t task, void * scratch) {
    const ref_bwd_ctx * c = ctx;
    const at_args * a = c->a;
    const int64_t n = task / a->HQ, h = task % a->HQ, K = a->sh.K, V = a->sh.V, kvh = h / a->G;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    double * z = scratch;            // (maxlen) logits, then P
    double * acc = z + (eos - bos);  // (K)
    for (int64_t t = bos; t < eos; t++) {
        const int64_t lo = key_lo(a, t, bos), hi = key_hi(a, t, eos), r = t * a->HQ + h;
        const double lse = ref_row(a, t, h, lo, hi, z);
        const float * dot = a->dout + r * V;
        double D = 0;
        for (int64_t j = lo; j <= hi; j++) {
            const double p = exp(z[j - lo] - lse);
            z[j - lo] = p;
            D += p * dot_f64(dot, a->v + (j * a->HKV + kvh) * V, V);
        }
        for (int64_t e = 0; e < K; e++) acc[e] = 0;
        for (int64_t j = lo; j <= hi; j++) {
            const double p = z[j - lo];
            const double dz = p * (dot_f64(dot, a->v + (j * a->HKV + kvh) * V, V) - D);
            const float * kj = a->k + (j * a->HKV + kvh) * K;
            for (int64_t e = 0; e < K; e++) acc[e] += dz * (double)kj[e];
        }
        float * dqt = a->dq + r * K;
        for (int64_t e = 0; e < K; e++) dqt[e] = (float)((double)a->scale * acc[e]);
        c->Lr[r] = lse;
        c->Dd[r] = D;
    }
}

// Backward, pass B, columns of one (sequence, kv head): dk_j = s sum_{h,t} dZ_tj q_t,
// dv_j = sum_{h,t} P_tj dout_t over the group's query heads, and dG_j = -sum_t dZ_tj.
static void ref_bwd_cols_task(const void * ctx, int64_t task, void * scratch) {
    const ref_bwd_ctx * c = ctx;
    const at_args * a = c->a;
    const int64_t n = task / a->HKV, kvh = task % a->HKV, K = a->sh.K, V = a->sh.V;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    double * ak = scratch;                   // (K)
    double * av = ak + LA_MAX(K, V);         // (V)
    for (int64_t j = bos; j < eos; j++) {
        for (int64_t e = 0; e < K; e++) ak[e] = 0;
        for (int64_t e = 0; e < V; e++) av[e] = 0;
        const float * vj = a->v + (j * a->HKV + kvh) * V;
        for (int64_t h = kvh * a->G; h < (kvh + 1) * a->G; h++) {
            double cs = 0;
            for (int64_t t = qry_lo(a, j, bos); t <= qry_hi(a, j, eos); t++) {
                if (j < key_lo(a, t, bos) || j > key_hi(a, t, eos)) continue;
                const int64_t r = t * a->HQ + h;
                const double p = exp(ref_logit(a, t, j, h) - c->Lr[r]);
                const float * dot = a->dout + r * V;
                const double dz = p * (dot_f64(dot, vj, V) - c->Dd[r]);
                const float * qt = a->q + r * K;
                for (int64_t e = 0; e < K; e++) ak[e] += dz * (double)qt[e];
                for (int64_t e = 0; e < V; e++) av[e] += p * (double)dot[e];
                cs += dz;
            }
            if (a->g) a->dGc[j * a->HQ + h] = -cs;
        }
        float * dkj = a->dk + (j * a->HKV + kvh) * K, * dvj = a->dv + (j * a->HKV + kvh) * V;
        for (int64_t e = 0; e < K; e++) dkj[e] = (float)((double)a->scale * ak[e]);
        for (int64_t e = 0; e < V; e++) dvj[e] = (float)av[e];
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk form: tiles

// One block of query rows: rows t0 .. t0+Lq-1 of query heads h0 .. h0+hs-1, stacked head-major
// into R = hs*Lq rows (row hl*Lq + r is token t0 + r of head h0 + hl).
typedef struct at_rows {
    int64_t bos, eos, t0, Lq, h0, hs, R;
} at_rows;

// dst (hs*L, D) head-major <- rows t0 .. t0+L-1, heads h0 .. h0+hs-1 of src (rows, H, D).
static void gather_rows(float * restrict dst, const float * restrict src, const at_rows * b,
                        int64_t H, int64_t D) {
    for (int64_t hl = 0; hl < b->hs; hl++)
        for (int64_t r = 0; r < b->Lq; r++)
            memcpy(dst + (hl * b->Lq + r) * D, src + ((b->t0 + r) * H + b->h0 + hl) * D,
                   (size_t)D * sizeof(float));
}

// The stacked rows of a (rows, HQ, D) tensor as a GEMM operand: in place when one head is
// stacked (row stride HQ*D), else gathered into buf (row stride D).
static const float * rows_operand(const float * src, const at_rows * b, int64_t H, int64_t D,
                                  float * buf, int64_t * ld) {
    if (b->hs == 1) {
        *ld = H * D;
        return src + (b->t0 * H + b->h0) * D;
    }
    gather_rows(buf, src, b, H, D);
    *ld = D;
    return buf;
}

// Per-row scalars x[t, h] (float or double) of the stacked rows -> dst (R).
static void gather_scalars(float * dst, const float * x, const at_rows * b, int64_t H) {
    for (int64_t hl = 0; hl < b->hs; hl++)
        for (int64_t r = 0; r < b->Lq; r++) dst[hl * b->Lq + r] = x[(b->t0 + r) * H + b->h0 + hl];
}
static void gather_scalars_d(double * dst, const double * x, const at_rows * b, int64_t H) {
    for (int64_t hl = 0; hl < b->hs; hl++)
        for (int64_t r = 0; r < b->Lq; r++) dst[hl * b->Lq + r] = x[(b->t0 + r) * H + b->h0 + hl];
}

// S (R, Lk) row stride C += G_t - G_j: Gq (R) the query rows' cumulative gates, Gk (hs, C)
// the key block's per head. The difference is formed in double, then rounded.
LA_CLONES
static void add_gate(float * restrict S, int64_t C, const at_rows * b, int64_t Lk,
                     const double * restrict Gq, const double * restrict Gk) {
    for (int64_t hl = 0; hl < b->hs; hl++)
        for (int64_t r = 0; r < b->Lq; r++) {
            float * restrict Sr = S + (hl * b->Lq + r) * C;
            const double gq = Gq[hl * b->Lq + r];
            const double * restrict gk = Gk + hl * C;
            for (int64_t c = 0; c < Lk; c++) Sr[c] += (float)(gq - gk[c]);
        }
}

// S (R, Lk) row stride C: -inf outside W(t) for key block [j0, j0 + Lk), so exp gives exactly 0
// there (the mask comes before the exp: ALGORITHMS.md 4.1).
static void mask_tile(const at_args * a, float * S, int64_t C, const at_rows * b, int64_t j0,
                      int64_t Lk) {
    for (int64_t r = 0; r < b->Lq; r++) {
        const int64_t t = b->t0 + r;
        const int64_t lo = LA_MAX(key_lo(a, t, b->bos), j0) - j0;
        const int64_t hi = LA_MIN(key_hi(a, t, b->eos), j0 + Lk - 1) - j0;
        for (int64_t hl = 0; hl < b->hs; hl++) {
            float * Sr = S + (hl * b->Lq + r) * C;
            for (int64_t c = 0; c < LA_MIN(lo, Lk); c++) Sr[c] = -INFINITY;
            for (int64_t c = LA_MAX(hi + 1, 0); c < Lk; c++) Sr[c] = -INFINITY;
        }
    }
}

// Whether every (t, j) of the tile lies in W(t) (no mask needed): W's bounds are monotone.
static bool tile_full(const at_args * a, const at_rows * b, int64_t j0, int64_t Lk) {
    return j0 >= key_lo(a, b->t0 + b->Lq - 1, b->bos) && j0 + Lk - 1 <= key_hi(a, b->t0, b->eos);
}

// Logits of a tile: S (R, Lk) row stride C = s Q K^T + G_t - G_j, masked to W.
// Q (R, K) row stride ldq; key block rows j0 .. j0+Lk-1 of kv head kvh. Gk (hs, C) scratch.
static void tile_logits(const at_args * a, const at_rows * b, const float * Q, int64_t ldq,
                        int64_t kvh, int64_t j0, int64_t Lk, const double * Gq, double * Gk,
                        float * S) {
    const int64_t K = a->sh.K, C = a->C;
    la_kern()->gemm(false, true, b->R, Lk, K, a->scale, Q, ldq, a->k + (j0 * a->HKV + kvh) * K,
                    a->HKV * K, 0.0f, S, C);
    if (a->g) {
        for (int64_t hl = 0; hl < b->hs; hl++)
            for (int64_t c = 0; c < Lk; c++) Gk[hl * C + c] = a->Gc[(j0 + c) * a->HQ + b->h0 + hl];
        add_gate(S, C, b, Lk, Gq, Gk);
    }
    if (!tile_full(a, b, j0, Lk)) mask_tile(a, S, C, b, j0, Lk);
}

// max_c x[c] in 16 lanes (-inf for n = 0), in a fixed order.
static inline float max_lanes(const float * restrict x, int64_t n) {
    float acc[16];
    for (int l = 0; l < 16; l++) acc[l] = -INFINITY;
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
    for (int l = 0; j + l < n; l++) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
    float m = acc[0];
    for (int l = 1; l < 16; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}

// x[c] <- exp(x[c] - m) and their sum in 16 lanes, in a fixed order (one pass over the row).
static inline float exp_sum_lanes(float * restrict x, int64_t n, float m) {
    float acc[16] = { 0 };
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) {
            const float e = la_expf(x[j + l] - m);
            x[j + l] = e;
            acc[l] += e;
        }
    for (int l = 0; j + l < n; l++) {
        const float e = la_expf(x[j + l] - m);
        x[j + l] = e;
        acc[l] += e;
    }
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += acc[l];
    return s;
}

// Online softmax over one key block (FlashAttention-2): for each of the R rows of S (Lk logits,
// row stride C) with running max m and sum l and output accumulator O (R, V):
//   m' = max(m, max_c S_rc);  P_rc = exp(S_rc - m');  l = e^{m - m'} l + sum_c P_rc;
//   O_r *= e^{m - m'};  m = m'
// S is overwritten with P. A row with no key so far (m' = -inf) gets P = 0 and is left alone.
LA_CLONES
static void softmax_update(float * restrict S, int64_t R, int64_t Lk, int64_t C,
                           float * restrict m, float * restrict l, float * restrict O, int64_t V) {
    for (int64_t r = 0; r < R; r++) {
        float * restrict Sr = S + r * C;
        const float mn = LA_MAX(m[r], max_lanes(Sr, Lk));
        if (mn == -INFINITY) {
            for (int64_t c = 0; c < Lk; c++) Sr[c] = 0.0f;
            continue;
        }
        const float alpha = la_expf(m[r] - mn);  // 0 when m = -inf (O and l are 0 then)
        l[r] = alpha * l[r] + exp_sum_lanes(Sr, Lk, mn);
        if (alpha != 1.0f) {
            float * restrict Or = O + r * V;
            for (int64_t e = 0; e < V; e++) Or[e] *= alpha;
        }
        m[r] = mn;
    }
}

// Prefetches the K and V rows of the key block at j0 (L rows): one head's rows sit HKV*K floats
// apart, too far for the hardware prefetcher, and every query block streams them again.
static void prefetch_kv(const at_args * a, int64_t kvh, int64_t j0, int64_t L) {
    la_prefetch_rows(a->k + (j0 * a->HKV + kvh) * a->sh.K, a->HKV * a->sh.K, L, a->sh.K);
    la_prefetch_rows(a->v + (j0 * a->HKV + kvh) * a->sh.V, a->HKV * a->sh.V, L, a->sh.V);
}

// ---------------------------------------------------------------------------------------------
// Chunk form: forward

// Per-thread scratch of the chunk forward, carved in this order (sizes with base == NULL).
typedef struct at_fwd_buf {
    float *  Q;       // (HG*C, K) stacked query rows
    float *  S;       // (HG*C, C) logits, then probabilities
    float *  O;       // (HG*C, V) unnormalised output
    float *  m, * l;  // (HG*C) running max and sum
    double * Gq;      // (HG*C) cumulative gate of the query rows
    double * Gk;      // (HG, C) cumulative gate of the key block
} at_fwd_buf;

static size_t at_fwd_layout(at_fwd_buf * f, void * base, la_shape sh, int64_t C) {
    la_carver cv = { (char *)base, 0 };
    const size_t R = (size_t)(AT_HG * C);
    f->Q = la_carve(&cv, R * (size_t)sh.K * 4);
    f->S = la_carve(&cv, R * (size_t)C * 4);
    f->O = la_carve(&cv, R * (size_t)sh.V * 4);
    f->m = la_carve(&cv, R * 4);
    f->l = la_carve(&cv, R * 4);
    f->Gq = la_carve(&cv, R * 8);
    f->Gk = la_carve(&cv, R * 8);
    return cv.used;
}

// Query block i of sequence [bos, eos), heads h0 .. h0+hs-1 of kv head kvh.
static void fwd_block(const at_args * a, int64_t bos, int64_t eos, int64_t kvh, int64_t h0,
                      int64_t hs, int64_t i, const at_fwd_buf * f) {
    const int64_t K = a->sh.K, V = a->sh.V, C = a->C, HQ = a->HQ;
    at_rows b = { bos, eos, bos + i * C, LA_MIN(C, eos - bos - i * C), h0, hs, 0 };
    b.R = hs * b.Lq;
    int64_t ldq;
    const float * Q = rows_operand(a->q, &b, HQ, K, f->Q, &ldq);
    if (a->g) gather_scalars_d(f->Gq, a->Gc, &b, HQ);
    for (int64_t r = 0; r < b.R; r++) {
        f->m[r] = -INFINITY;
        f->l[r] = 0.0f;
    }
    memset(f->O, 0, (size_t)(b.R * V) * sizeof(float));
    // Key blocks on the sequence's grid that meet [key_lo(first row), key_hi(last row)].
    const int64_t c0 = (key_lo(a, b.t0, bos) - bos) / C;
    const int64_t c1 = (key_hi(a, b.t0 + b.Lq - 1, eos) - bos) / C;
    for (int64_t cb = c0; cb <= c1; cb++) {
        const int64_t j0 = bos + cb * C, Lk = LA_MIN(C, eos - j0);
        if (cb < c1) prefetch_kv(a, kvh, j0 + C, LA_MIN(C, eos - j0 - C));
        tile_logits(a, &b, Q, ldq, kvh, j0, Lk, f->Gq, f->Gk, f->S);
        softmax_update(f->S, b.R, Lk, C, f->m, f->l, f->O, V);
        // O += P V
        la_kern()->gemm(false, false, b.R, V, Lk, 1.0f, f->S, C, a->v + (j0 * a->HKV + kvh) * V,
                        a->HKV * V, 1.0f, f->O, V);
    }
    // o = O / l; lse = m + log l.
    for (int64_t hl = 0; hl < hs; hl++)
        for (int64_t r = 0; r < b.Lq; r++) {
            const int64_t rr = hl * b.Lq + r, row = (b.t0 + r) * HQ + h0 + hl;
            const float inv = 1.0f / f->l[rr];
            const float * Or = f->O + rr * V;
            float * ot = a->o + row * V;
            for (int64_t e = 0; e < V; e++) ot[e] = Or[e] * inv;
            if (a->lse) a->lse[row] = (float)((double)f->m[rr] + log((double)f->l[rr]));
        }
}

// Task index -> (sequence n, kv head, head subgroup or 0, block pair p), p fastest.
static void task_coords(const at_args * a, int64_t task, int64_t nsub, int64_t * n,
                        int64_t * kvh, int64_t * sub, int64_t * p) {
    *p = task % a->npair;
    task /= a->npair;
    *sub = task % nsub;
    task /= nsub;
    *kvh = task % a->HKV;
    *n = task / a->HKV;
}

// Blocks {p, nb-1-p} of a sequence of nb blocks: writes them to blk and returns how many exist.
static int block_pair(int64_t p, int64_t nb, int64_t blk[2]) {
    if (2 * p >= nb) return 0;
    blk[0] = p;
    blk[1] = nb - 1 - p;
    return blk[1] == p ? 1 : 2;
}

static void fwd_task(const void * ctx, int64_t task, void * scratch) {
    const at_args * a = ctx;
    int64_t n, kvh, sub, p, bos, eos, blk[2];
    task_coords(a, task, a->nsub, &n, &kvh, &sub, &p);
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    at_fwd_buf f;
    at_fwd_layout(&f, scratch, a->sh, a->C);
    const int nblk = block_pair(p, (eos - bos + a->C - 1) / a->C, blk);
    const int64_t h0 = kvh * a->G + sub * AT_HG, hs = LA_MIN(AT_HG, a->G - sub * AT_HG);
    for (int e = 0; e < nblk; e++) fwd_block(a, bos, eos, kvh, h0, hs, blk[e], &f);
}

// ---------------------------------------------------------------------------------------------
// Chunk form: backward

// Per-thread scratch of the chunk backward (both passes), carved in this order.
typedef struct at_bwd_buf {
    float *  Q;       // (HG*C, K) stacked query rows
    float *  dO;      // (HG*C, V) stacked output gradients
    float *  P;       // (HG*C, C) probabilities
    float *  dZ;      // (HG*C, C) dP, then the logit gradient dZ
    float *  dQ;      // (HG*C, K) dQ of the stacked rows when hs > 1
    float *  L, * D;  // (HG*C) lse and Delta of the rows
    float *  cs;      // (C) column sums of dZ
    double * Gq;      // (HG*C) cumulative gate of the query rows
    double * Gk;      // (HG, C) cumulative gate of the key block
} at_bwd_buf;

static size_t at_bwd_layout(at_bwd_buf * f, void * base, la_shape sh, int64_t C) {
    la_carver cv = { (char *)base, 0 };
    const size_t R = (size_t)(AT_HG * C);
    f->Q = la_carve(&cv, R * (size_t)sh.K * 4);
    f->dO = la_carve(&cv, R * (size_t)sh.V * 4);
    f->P = la_carve(&cv, R * (size_t)C * 4);
    f->dZ = la_carve(&cv, R * (size_t)C * 4);
    f->dQ = la_carve(&cv, R * (size_t)sh.K * 4);
    f->L = la_carve(&cv, R * 4);
    f->D = la_carve(&cv, R * 4);
    f->cs = la_carve(&cv, (size_t)C * 4);
    f->Gq = la_carve(&cv, R * 8);
    f->Gk = la_carve(&cv, R * 8);
    return cv.used;
}

// Operands of one block of stacked query rows.
typedef struct at_bwd_rows {
    at_rows       b;
    const float * Q, * dO;
    int64_t       ldq, ldo;
} at_bwd_rows;

static void bwd_rows(const at_args * a, at_bwd_rows * br, int64_t bos, int64_t eos, int64_t h0,
                     int64_t hs, int64_t i, const at_bwd_buf * f) {
    at_rows b = { bos, eos, bos + i * a->C, LA_MIN(a->C, eos - bos - i * a->C), h0, hs, 0 };
    b.R = hs * b.Lq;
    br->b = b;
    br->Q = rows_operand(a->q, &br->b, a->HQ, a->sh.K, f->Q, &br->ldq);
    br->dO = rows_operand(a->dout, &br->b, a->HQ, a->sh.V, f->dO, &br->ldo);
    gather_scalars(f->L, a->lse_in, &br->b, a->HQ);
    gather_scalars(f->D, a->Dr, &br->b, a->HQ);
    if (a->g) gather_scalars_d(f->Gq, a->Gc, &br->b, a->HQ);
}

// P = exp(Z - lse) (0 where masked, Z = -inf), and dZ = P o (dP - Delta) with dP in dZ on entry.
LA_CLONES
static void probs_and_dz(float * restrict P, float * restrict dZ, int64_t R, int64_t Lk, int64_t C,
                         const float * restrict L, const float * restrict D) {
    for (int64_t r = 0; r < R; r++) {
        float * restrict Pr = P + r * C, * restrict dr = dZ + r * C;
        const float lr = L[r], Dl = D[r];
        for (int64_t c = 0; c < Lk; c++) {
            const float p = la_expf(Pr[c] - lr);
            Pr[c] = p;
            dr[c] = p * (dr[c] - Dl);
        }
    }
}

// One tile of the backward: P and dZ (R, Lk) for key block j0 of kv head kvh.
static void bwd_tile(const at_args * a, const at_bwd_rows * br, int64_t kvh, int64_t j0,
                     int64_t Lk, const at_bwd_buf * f) {
    const int64_t V = a->sh.V, C = a->C;
    tile_logits(a, &br->b, br->Q, br->ldq, kvh, j0, Lk, f->Gq, f->Gk, f->P);
    // dP = dO V^T
    la_kern()->gemm(false, true, br->b.R, Lk, V, 1.0f, br->dO, br->ldo,
                    a->v + (j0 * a->HKV + kvh) * V, a->HKV * V, 0.0f, f->dZ, C);
    probs_and_dz(f->P, f->dZ, br->b.R, Lk, C, f->L, f->D);
}

// dQ += s dZ K_j for the stacked rows of br: the one GEMM both schedules use (see bwd_fused_task).
// dQ (R, K) has row stride ldd.
static void dq_update(const at_args * a, const at_bwd_rows * br, int64_t kvh, int64_t j0,
                      int64_t Lk, const at_bwd_buf * f, float * dQ, int64_t ldd) {
    la_kern()->gemm(false, false, br->b.R, a->sh.K, Lk, a->scale, f->dZ, a->C,
                    a->k + (j0 * a->HKV + kvh) * a->sh.K, a->HKV * a->sh.K, 1.0f, dQ, ldd);
}

// dq rows of the stacked heads <-> dst (R, K) head-major (the dQ accumulator when hs > 1).
static void dq_gather(const at_args * a, const at_rows * b, float * dst) {
    gather_rows(dst, a->dq, b, a->HQ, a->sh.K);
}
static void dq_scatter(const at_args * a, const at_rows * b, const float * src) {
    const int64_t K = a->sh.K;
    for (int64_t hl = 0; hl < b->hs; hl++)
        for (int64_t r = 0; r < b->Lq; r++)
            memcpy(a->dq + ((b->t0 + r) * a->HQ + b->h0 + hl) * K, src + (hl * b->Lq + r) * K,
                   (size_t)K * sizeof(float));
}

// Pass 1: key block cb of (sequence n, kv head kvh): dK, dV and dG = -colsum(dZ) of its rows;
// with_dq (the fused schedule) also adds each tile's dQ += s dZ K_j to dq in place.
static void bwd_kv_block(const at_args * a, int64_t bos, int64_t eos, int64_t kvh, int64_t cb,
                         const at_bwd_buf * f, bool with_dq) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t K = a->sh.K, V = a->sh.V, C = a->C, HKV = a->HKV;
    const int64_t j0 = bos + cb * C, Lk = LA_MIN(C, eos - j0);
    float * dK = a->dk + (j0 * HKV + kvh) * K;  // (Lk, K) row stride HKV*K
    float * dV = a->dv + (j0 * HKV + kvh) * V;  // (Lk, V) row stride HKV*V
    for (int64_t c = 0; c < Lk; c++) {
        memset(dK + c * HKV * K, 0, (size_t)K * sizeof(float));
        memset(dV + c * HKV * V, 0, (size_t)V * sizeof(float));
        if (a->g)
            for (int64_t h = kvh * a->G; h < (kvh + 1) * a->G; h++)
                a->dGc[(j0 + c) * a->HQ + h] = 0;
    }
    // Query blocks that see some key of the block; heads of the group in subgroups of HG.
    const int64_t i0 = (qry_lo(a, j0, bos) - bos) / C, i1 = (qry_hi(a, j0 + Lk - 1, eos) - bos) / C;
    for (int64_t i = i0; i <= i1; i++)
        for (int64_t sub = 0; sub < a->nsub; sub++) {
            const int64_t h0 = kvh * a->G + sub * AT_HG, hs = LA_MIN(AT_HG, a->G - sub * AT_HG);
            at_bwd_rows br;
            bwd_rows(a, &br, bos, eos, h0, hs, i, f);
            bwd_tile(a, &br, kvh, j0, Lk, f);
            // dV += P^T dO ; dK += s dZ^T Q (the sum over the stacked heads is the reduction)
            gemm(true, false, Lk, V, br.b.R, 1.0f, f->P, C, br.dO, br.ldo, 1.0f, dV, HKV * V);
            gemm(true, false, Lk, K, br.b.R, a->scale, f->dZ, C, br.Q, br.ldq, 1.0f, dK, HKV * K);
            if (with_dq) {
                if (hs == 1) {
                    dq_update(a, &br, kvh, j0, Lk, f, a->dq + (br.b.t0 * a->HQ + h0) * K,
                              a->HQ * K);
                } else {
                    dq_gather(a, &br.b, f->dQ);
                    dq_update(a, &br, kvh, j0, Lk, f, f->dQ, K);
                    dq_scatter(a, &br.b, f->dQ);
                }
            }
            if (a->g) {
                for (int64_t hl = 0; hl < hs; hl++) {
                    float * cs = f->cs;
                    for (int64_t c = 0; c < Lk; c++) cs[c] = 0.0f;
                    for (int64_t r = 0; r < br.b.Lq; r++) {
                        const float * dz = f->dZ + (hl * br.b.Lq + r) * C;
                        for (int64_t c = 0; c < Lk; c++) cs[c] += dz[c];
                    }
                    double * dG = a->dGc + j0 * a->HQ + h0 + hl;  // (Lk) stride HQ
                    for (int64_t c = 0; c < Lk; c++) dG[c * a->HQ] -= (double)cs[c];
                }
            }
        }
}

static void bwd_kv_task(const void * ctx, int64_t task, void * scratch) {
    const at_args * a = ctx;
    int64_t n, kvh, sub, p, bos, eos, blk[2];
    task_coords(a, task, 1, &n, &kvh, &sub, &p);
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    at_bwd_buf f;
    at_bwd_layout(&f, scratch, a->sh, a->C);
    const int nblk = block_pair(p, (eos - bos + a->C - 1) / a->C, blk);
    for (int e = 0; e < nblk; e++) bwd_kv_block(a, bos, eos, kvh, blk[e], &f, false);
}

// Pass 2: query block i of heads h0 .. h0+hs-1: dQ = s sum_j dZ_j K_j over its key blocks.
static void bwd_q_block(const at_args * a, int64_t bos, int64_t eos, int64_t kvh, int64_t h0,
                        int64_t hs, int64_t i, const at_bwd_buf * f) {
    const int64_t K = a->sh.K, C = a->C, HQ = a->HQ;
    at_bwd_rows br;
    bwd_rows(a, &br, bos, eos, h0, hs, i, f);
    const at_rows * b = &br.b;
    // Accumulate in place in dq when one head is stacked, else in dQ and scatter.
    float * dQ = hs == 1 ? a->dq + (b->t0 * HQ + h0) * K : f->dQ;
    const int64_t ldd = hs == 1 ? HQ * K : K;
    for (int64_t r = 0; r < b->R; r++) memset(dQ + r * ldd, 0, (size_t)K * sizeof(float));
    const int64_t c0 = (key_lo(a, b->t0, bos) - bos) / C;
    const int64_t c1 = (key_hi(a, b->t0 + b->Lq - 1, eos) - bos) / C;
    for (int64_t cb = c0; cb <= c1; cb++) {
        const int64_t j0 = bos + cb * C, Lk = LA_MIN(C, eos - j0);
        bwd_tile(a, &br, kvh, j0, Lk, f);
        dq_update(a, &br, kvh, j0, Lk, f, dQ, ldd);
    }
    if (hs > 1) dq_scatter(a, b, dQ);
}

static void bwd_q_task(const void * ctx, int64_t task, void * scratch) {
    const at_args * a = ctx;
    int64_t n, kvh, sub, p, bos, eos, blk[2];
    task_coords(a, task, a->nsub, &n, &kvh, &sub, &p);
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    at_bwd_buf f;
    at_bwd_layout(&f, scratch, a->sh, a->C);
    const int nblk = block_pair(p, (eos - bos + a->C - 1) / a->C, blk);
    const int64_t h0 = kvh * a->G + sub * AT_HG, hs = LA_MIN(AT_HG, a->G - sub * AT_HG);
    for (int e = 0; e < nblk; e++) bwd_q_block(a, bos, eos, kvh, h0, hs, blk[e], &f);
}

// The fused schedule: one task per (sequence, kv head) runs pass 1 over the key blocks in
// order and adds dQ in place (5 block products per tile instead of pass 1's 4 plus pass 2's 3).
// Each dq row receives exactly the GEMM calls of pass 2, in the same order (key blocks
// ascending, from zero) and with the same operands and strides, so both schedules give the same
// bits and the choice between them (by the thread count, in at_run) changes nothing but time.
static void bwd_fused_task(const void * ctx, int64_t task, void * scratch) {
    const at_args * a = ctx;
    const int64_t n = task / a->HKV, kvh = task % a->HKV, K = a->sh.K;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    at_bwd_buf f;
    at_bwd_layout(&f, scratch, a->sh, a->C);
    for (int64_t t = bos; t < eos; t++)
        memset(a->dq + (t * a->HQ + kvh * a->G) * K, 0, (size_t)(a->G * K) * sizeof(float));
    const int64_t nb = (eos - bos + a->C - 1) / a->C;
    for (int64_t cb = 0; cb < nb; cb++) bwd_kv_block(a, bos, eos, kvh, cb, &f, true);
}

// ---------------------------------------------------------------------------------------------
// Drivers

// Validates what every entry point shares: opts, the shape (with GQA: HQ % HKV == 0),
// cu_seqlens and the window. Fills a's dimensions.
static la_status at_check(at_args * a, la_shape sh, const la_opts * opts, int64_t window,
                          bool causal) {
    if (!opts) return LA_STATUS_INVALID_ARG;
    if (opts->use_qk_l2norm_in_kernel || opts->use_beta_sigmoid_in_kernel ||
        opts->allow_neg_eigval || opts->use_gate_in_kernel || opts->lower_bound != 0.0f)
        return LA_STATUS_INVALID_ARG;  // the delta family's flags (OPS.md 1.7)
    int64_t N;
    la_status st = la_check_base(sh, opts, &N);
    if (st != LA_STATUS_OK) return st;
    if (sh.HV < 0) return LA_STATUS_SHAPE;
    const int64_t HKV = sh.HV ? sh.HV : sh.H;
    if (sh.H % HKV != 0) return LA_STATUS_SHAPE;
    if (window < 0) return LA_STATUS_INVALID_ARG;
    memset(a, 0, sizeof(*a));
    a->sh = sh;
    a->opts = opts;
    a->HQ = sh.H;
    a->HKV = HKV;
    a->G = sh.H / HKV;
    a->nsub = (a->G + AT_HG - 1) / AT_HG;
    a->N = N;
    a->C = la_opts_chunk(opts);
    const int64_t nbmax = (la_max_seq_len(sh, opts) + a->C - 1) / a->C;
    a->npair = LA_MAX((nbmax + 1) / 2, 1);
    a->w = window;
    a->causal = causal;
    a->scale = la_opts_scale(opts, sh.K);
    return LA_STATUS_OK;
}

// Workspace: the per-(token, query head) arrays, then one scratch block per thread.
typedef struct at_ws {
    size_t glob;   // bytes of Gc, Dr, dGc (or the reference's Gc, Lr, Dd, dGc)
    size_t per;    // bytes per thread
    int32_t slots; // threads
} at_ws;

static at_ws at_ws_plan(const at_args * a, bool backward) {
    at_ws p;
    const size_t rows = (size_t)(a->sh.B * a->sh.T * a->HQ);
    const int64_t maxlen = la_max_seq_len(a->sh, a->opts);
    if (a->opts->form == LA_FORM_REF) {
        p.glob = la_align_up(rows * 8) * (backward ? 4 : 1);
        p.per = ref_per_bytes(a->sh, maxlen);
        p.slots = la_slots(a->N * a->HQ);
        return p;
    }
    p.glob = la_align_up(rows * 8) + (backward ? la_align_up(rows * 4) + la_align_up(rows * 8) : 0);
    at_fwd_buf f;
    at_bwd_buf b;
    p.per = la_align_up(backward ? at_bwd_layout(&b, NULL, a->sh, a->C)
                                 : at_fwd_layout(&f, NULL, a->sh, a->C));
    p.slots = la_slots(a->N * a->HKV * a->nsub * a->npair);
    return p;
}

size_t la_attn_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    at_args a;
    if (at_check(&a, sh, opts, 0, true) != LA_STATUS_OK) return 0;
    const at_ws p = at_ws_plan(&a, backward);
    return p.glob + (size_t)p.slots * p.per + LA_ALIGN;
}

// The cumulative gate into ws (when gated); returns the scratch that follows the global arrays.
static char * at_globals(at_args * a, char * ws, bool backward) {
    const size_t rows = (size_t)(a->sh.B * a->sh.T * a->HQ);
    la_carver cv = { ws, 0 };
    a->Gc = la_carve(&cv, rows * 8);
    if (backward) {
        if (a->opts->form == LA_FORM_REF) {
            la_carve(&cv, rows * 8);  // Lr, Dd: the reference's ref_bwd_ctx (carved again there)
            la_carve(&cv, rows * 8);
        } else {
            a->Dr = la_carve(&cv, rows * 4);
        }
        a->dGc = la_carve(&cv, rows * 8);
    }
    if (a->g) la_run_tasks(a->N * a->HQ, ws, 0, cumgate_task, a);
    return ws + cv.used;
}

static la_status at_run(at_args * a, bool backward) {
    const at_ws p = at_ws_plan(a, backward);
    const size_t need = p.glob + (size_t)p.slots * p.per + LA_ALIGN;
    void * ws;
    bool owned;
    la_status st = la_ws_acquire(a->opts, need, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    if (a->sh.T == 0) {
        la_ws_release(ws, owned);
        return LA_STATUS_OK;
    }
    char * scratch = at_globals(a, ws, backward);
    const int64_t rows = a->sh.B * a->sh.T;
    if (a->opts->form == LA_FORM_REF) {
        if (!backward) {
            la_run_tasks(a->N * a->HQ, scratch, p.per, ref_fwd_task, a);
        } else {
            // Gc, Lr, Dd, dGc are carved each la_align_up(rows * HQ * 8) bytes apart.
            const size_t stride = la_align_up((size_t)(rows * a->HQ) * 8) / 8;
            ref_bwd_ctx c = { a, a->Gc + stride, a->Gc + 2 * stride };
            la_run_tasks(a->N * a->HQ, scratch, p.per, ref_bwd_rows_task, &c);
            la_run_tasks(a->N * a->HKV, scratch, p.per, ref_bwd_cols_task, &c);
        }
    } else if (!backward) {
        la_run_tasks(a->N * a->HKV * a->nsub * a->npair, scratch, p.per, fwd_task, a);
    } else {
        la_run_tasks((rows + 63) / 64, scratch, 0, delta_task, a);
        // Fused when the (sequence, kv head) tasks alone keep every thread busy; otherwise
        // two passes over finer tasks. Same results either way (bwd_fused_task).
        const int64_t nt = la_nthreads();
        if (nt == 1 || a->N * a->HKV >= 2 * nt) {
            la_run_tasks(a->N * a->HKV, scratch, p.per, bwd_fused_task, a);
        } else {
            la_run_tasks(a->N * a->HKV * a->npair, scratch, p.per, bwd_kv_task, a);
            la_run_tasks(a->N * a->HKV * a->nsub * a->npair, scratch, p.per, bwd_q_task, a);
        }
    }
    if (backward && a->g) la_run_tasks(a->N * a->HQ, scratch, 0, dg_task, a);
    la_ws_release(ws, owned);
    return LA_STATUS_OK;
}

la_status la_attn_forward(float * o, float * lse, const float * q, const float * k,
                          const float * v, const float * g, int64_t window_size, bool causal,
                          la_shape sh, const la_opts * opts) {
    at_args a;
    la_status st = at_check(&a, sh, opts, window_size, causal);
    if (st != LA_STATUS_OK) return st;
    if (!o || !q || !k || !v) return LA_STATUS_INVALID_ARG;
    if (g && !causal) return LA_STATUS_INVALID_ARG;  // the forgetting gate is causal only
    a.q = q;
    a.k = k;
    a.v = v;
    a.g = g;
    a.o = o;
    a.lse = lse;
    return at_run(&a, false);
}

la_status la_attn_backward(float * dq, float * dk, float * dv, float * dg, const float * dout,
                           const float * q, const float * k, const float * v, const float * g,
                           const float * o, const float * lse, int64_t window_size, bool causal,
                           la_shape sh, const la_opts * opts) {
    at_args a;
    la_status st = at_check(&a, sh, opts, window_size, causal);
    if (st != LA_STATUS_OK) return st;
    if (!dq || !dk || !dv || !dout || !q || !k || !v || !o || !lse) return LA_STATUS_INVALID_ARG;
    if ((g != NULL) != (dg != NULL)) return LA_STATUS_INVALID_ARG;
    if (g && !causal) return LA_STATUS_INVALID_ARG;
    a.q = q;
    a.k = k;
    a.v = v;
    a.g = g;
    a.dout = dout;
    a.o_in = o;
    a.lse_in = lse;
    a.dq = dq;
    a.dk = dk;
    a.dv = dv;
    a.dg = dg;
    return at_run(&a, true);
}

// ---------------------------------------------------------------------------------------------
// Decode: one query per sequence against its KV cache (ALGORITHMS.md 3.8), the online softmax
// of the chunk form over blocks of AT_PB cached positions; the HG query heads of a kv head
// share each cached K, V row. Tasks over (sequence, kv head), each of which owns its cache
// slot and output rows. Scratch lives on the stack: opts.work is not used.

typedef struct at_dec {
    float *         o;                  // (N, HQ, V)
    const float *   q, * k, * v;        // (N, HQ, K), (N, HKV, K), (N, HKV, V)
    float *         kc, * vc;           // (N, capacity, HKV, K), (N, capacity, HKV, V)
    const int64_t * len;                // (N) positions cached before this step
    int64_t         cap, w, HQ, HKV, G, K, V;
    float           scale;
} at_dec;

LA_CLONES
static void dec_task(const void * ctx, int64_t task, void * scratch) {
    (void)scratch;
    const at_dec * d = ctx;
    const int64_t n = task / d->HKV, kvh = task % d->HKV, K = d->K, V = d->V, cap = d->cap;
    const int64_t len = d->len[n];
    // Append the new token at position len (slot len % capacity): this task owns the slot.
    const int64_t slot = len % cap;
    memmove(d->kc + ((n * cap + slot) * d->HKV + kvh) * K, d->k + (n * d->HKV + kvh) * K,
            (size_t)K * sizeof(float));
    memmove(d->vc + ((n * cap + slot) * d->HKV + kvh) * V, d->v + (n * d->HKV + kvh) * V,
            (size_t)V * sizeof(float));
    const int64_t p_lo = d->w > 0 ? LA_MAX(0, len + 1 - d->w) : 0;
    for (int64_t h0 = kvh * d->G; h0 < (kvh + 1) * d->G; h0 += AT_HG) {
        const int64_t hs = LA_MIN(AT_HG, (kvh + 1) * d->G - h0);
        float S[AT_HG][AT_PB], m[AT_HG], l[AT_HG];
        for (int64_t hl = 0; hl < hs; hl++) {
            m[hl] = -INFINITY;
            l[hl] = 0.0f;
            memset(d->o + (n * d->HQ + h0 + hl) * V, 0, (size_t)V * sizeof(float));
        }
        // Ring slots without a division per position: one modulo per decode step, then a
        // wrapping counter (slot of position p is p % cap).
        int64_t sb = p_lo % cap;
        for (int64_t pb = p_lo; pb <= len; pb += AT_PB) {
            const int64_t L = LA_MIN(AT_PB, len + 1 - pb);
            const float * kp[AT_PB], *vp[AT_PB];
            for (int64_t pi = 0, sl = sb; pi < L; pi++, sl = sl + 1 == cap ? 0 : sl + 1) {
                kp[pi] = d->kc + ((n * cap + sl) * d->HKV + kvh) * K;
                vp[pi] = d->vc + ((n * cap + sl) * d->HKV + kvh) * V;
            }
            sb = (sb + L) % cap;
            // The next block's K and V rows: one head's rows sit HKV*K floats apart in the
            // cache (and wrap around the ring), beyond what the hardware prefetcher follows.
            const int64_t Ln = LA_MIN(AT_PB, len + 1 - pb - L);
            for (int64_t pi = 0, sl = sb; pi < Ln; pi++, sl = sl + 1 == cap ? 0 : sl + 1) {
                la_prefetch_rows(d->kc + ((n * cap + sl) * d->HKV + kvh) * K, 0, 1, K);
                la_prefetch_rows(d->vc + ((n * cap + sl) * d->HKV + kvh) * V, 0, 1, V);
            }
            for (int64_t pi = 0; pi < L; pi++)
                for (int64_t hl = 0; hl < hs; hl++)
                    S[hl][pi] = d->scale * la_dot_lanes(d->q + (n * d->HQ + h0 + hl) * K, kp[pi], K);
            for (int64_t hl = 0; hl < hs; hl++)
                softmax_update(S[hl], 1, L, AT_PB, &m[hl], &l[hl],
                               d->o + (n * d->HQ + h0 + hl) * V, V);
            for (int64_t pi = 0; pi < L; pi++) {
                const float * restrict v = vp[pi];
                for (int64_t hl = 0; hl < hs; hl++) {
                    float * restrict oh = d->o + (n * d->HQ + h0 + hl) * V;
                    const float p = S[hl][pi];
                    for (int64_t e = 0; e < V; e++) oh[e] += p * v[e];
                }
            }
        }
        for (int64_t hl = 0; hl < hs; hl++) {
            float * oh = d->o + (n * d->HQ + h0 + hl) * V;
            const float inv = 1.0f / l[hl];
            for (int64_t e = 0; e < V; e++) oh[e] *= inv;
        }
    }
}

la_status la_attn_decode(float * o, const float * q, const float * k, const float * v,
                         float * k_cache, float * v_cache, int64_t * cache_len, int64_t capacity,
                         int64_t window_size, la_shape sh, const la_opts * opts) {
    at_args a;
    if (opts && opts->cu_seqlens) return LA_STATUS_INVALID_ARG;  // one row per sequence
    la_status st = at_check(&a, sh, opts, window_size, true);
    if (st != LA_STATUS_OK) return st;
    if (sh.T != 1) return LA_STATUS_SHAPE;
    if (!o || !q || !k || !v || !k_cache || !v_cache || !cache_len) return LA_STATUS_INVALID_ARG;
    if (capacity < 1) return LA_STATUS_INVALID_ARG;
    // Every attended position must still be in the cache: the span len + 1 - p_lo positions
    // lives in distinct slots only if it fits the capacity. Checked for all rows first, so an
    // error writes nothing.
    for (int64_t n = 0; n < sh.B; n++) {
        const int64_t len = cache_len[n];
        if (len < 0) return LA_STATUS_INVALID_ARG;
        const int64_t span = window_size > 0 ? LA_MIN(len + 1, window_size) : len + 1;
        if (span > capacity) return LA_STATUS_INVALID_ARG;
    }
    at_dec d = { o, q, k, v, k_cache, v_cache, cache_len, capacity, window_size, a.HQ, a.HKV,
                 a.G, sh.K, sh.V, a.scale };
    char dummy[LA_ALIGN];
    la_run_tasks(sh.B * a.HKV, dummy, 0, dec_task, &d);
    for (int64_t n = 0; n < sh.B; n++) cache_len[n]++;
    return LA_STATUS_OK;
}
