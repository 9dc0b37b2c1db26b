// based and rebased: causal attention with a polynomial kernel, normalised (OPS.md 2.14-2.15,
// ALGORITHMS.md 3.7 and 7; fla's parallel_based and parallel_rebased).
//
//   s_ti   = s q_t . k_i                                   (s = opts.scale, default F^-1/2)
//   phi(s) = 1 + s + s^2/2   (based)        phi(s) = s^2   (rebased)
//   num_t  = sum_{i<=t} phi(s_ti) v_i ,   den_t = sum_{i<=t} phi(s_ti)
//   o_t    = num_t / (den_t + eps)        (use_norm; eps = 1e-6 for based as fla's
//                                          parallel_based, the caller's for rebased)
//   o_t    = num_t                        (use_norm off)
//
// Backward, with d_t = den_t + eps (every form computes these quantities):
//   dnum_t  = do_t / d_t ,  delta_t = -(do_t . num_t) / d_t^2      (use_norm off: do_t, 0)
//   dphi_ti = dnum_t . v_i + delta_t
//   ds_ti   = dphi_ti phi'(s_ti)          phi'(s) = 1 + s (based), 2 s (rebased)
//   dq_t = s sum_{i<=t} ds_ti k_i ,  dk_i = s sum_{t>=i} ds_ti q_t ,
//   dv_i = sum_{t>=i} phi(s_ti) dnum_t
//
// Forms (one (sequence, head) per task; no state, as fla):
//   REF        the definition, row by row: O(T^2 (F + V)) per head, sums in double.
//   CHUNK      the parallel form tiled like attention: query blocks of C rows against key tiles
//              of KT = max(C, 128) columns up to the diagonal, S = s Q K^T by la_kern()->gemm,
//              phi elementwise (causal mask where a tile reaches the diagonal), num += phi(S) V by
//              GEMM, den += rowsum phi(S); the T x T matrix is never formed. The backward
//              recomputes num and den per query block, then per key tile
//              dS = s (dN V^T + delta 1^T) o phi'(S) and dQ += dS K, dK += dS^T Q,
//              dV += phi(S)^T dN.
//   RECURRENT  linear attention on the features of la_fmap_forward (TAYLOR2 for based,
//              QUADRATIC for rebased): S_t = S_{t-1} + phi(k'_t) v_t^T, z_t = z_{t-1} + phi(k'_t),
//              num_t = S_t^T phi(q'_t), den_t = phi(q'_t) . z_t, the numerator and the
//              denominator carried separately so the same eps applies. Backward: a forward
//              token loop (dphi(q'_t) = S_t dnum_t + z_t delta_t) and a reverse one with the
//              adjoints G = sum_{t'>=t} phi(q'_t') dnum_t'^T, gz = sum phi(q'_t') delta_t'
//              (dphi(k'_t) = G v_t + gz, dv_t = G^T phi(k'_t)), chained through
//              la_fmap_backward.
//
// The forward saves nothing; every backward recomputes num_t and den_t (CHUNK per query block,
// RECURRENT in its forward loop). Gradients are overwritten. Results do not depend on the thread
// count (one thread per (sequence, head), fixed summation orders).
//
// Scale folding of the recurrent form (exact for any scale s != 0): with q' = a q, k' = b k,
//   TAYLOR2:   phi(q').phi(k') = 1 + ab q.k/sqrt F + (ab q.k)^2/(2F)
//              = 1 + s q.k + (s q.k)^2/2   iff   ab = s sqrt F;
//              we take a = sqrt(|s| sqrt F), b = sign(s) a (both feature vectors the same size;
//              for s = F^-1/2, a = b = 1: Based's plain Taylor features).
//   QUADRATIC: phi(q').phi(k') = (ab q.k)^2 = (s q.k)^2   iff   |ab| = |s|;  a = b = sqrt|s|.
//
// Dimensions: B, T, H, V, N, C as in OPS.md; F = sh.K is the feature (q/k head) dimension and
// D = la_fmap_dim(map, F) the expanded feature dimension of the recurrent form.
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define BASED_EPS 1e-6f

typedef struct bs_args {
    const float * q, * k, * v;      // (B,T,H,F), (B,T,H,F), (B,T,H,V)
    const float * dout;             // (B,T,H,V) backward only
    float *       o;                // (B,T,H,V) forward only
    float *       dq, * dk, * dv;   // as q, k, v
    la_shape      sh;
    const la_opts * opts;
    float         scale, eps;
    bool          use_norm, rebased, backward;
    int64_t       C, KT, maxlen;    // query block, key tile, longest sequence
    size_t        per;              // bytes of scratch per thread
} bs_args;

// Key tile of the chunk form: BASED_KTILE keys (at least C) per GEMM, so that phi(S) V keeps a
// long inner dimension when C is small (S = s Q K^T has only F = 16 of its own). Forward at
// T = 4096, F = 16, V = 128, 1 thread: C = 32 gains 20%, C = 64 about 5%.
#define BASED_KTILE 128
static int64_t bs_ktile(int64_t C) { return LA_MAX(C, BASED_KTILE); }

// phi(s) and phi'(s) of the kernel.
static inline float bs_phi(bool rebased, float s) {
    return rebased ? s * s : 1.0f + s * (1.0f + 0.5f * s);
}
static inline float bs_dphi(bool rebased, float s) { return rebased ? 2.0f * s : 1.0f + s; }
static inline double bs_phi_d(bool rebased, double s) {
    return rebased ? s * s : 1.0 + s * (1.0 + 0.5 * s);
}
static inline double bs_dphi_d(bool rebased, double s) { return rebased ? 2.0 * s : 1.0 + s; }

static double dot_d(const float * x, const float * y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)y[i];
    return s;
}

// Zeroes rows [bos, eos) of head h in a (B*T, H, D) tensor.
static void zero_rows(float * x, int64_t bos, int64_t eos, int64_t h, int64_t H, int64_t D) {
    for (int64_t t = bos; t < eos; t++) memset(x + (t * H + h) * D, 0, (size_t)D * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Per-thread scratch, carved in this order for the form and direction (sizes with base NULL).

typedef struct bs_buf {
    // REF
    double * num, * dnum, * dqa;  // (V), (V), (F)
    // CHUNK
    float *  P, * dP;             // (C, KT) phi(S) and dS of one key tile
    float *  N, * dN;             // (C, V) numerator block, do / d block
    double * den;                 // (C) denominators
    float *  delta;               // (C)
    // RECURRENT
    float *  S;                   // (D, V) state, then the adjoint G
    double * z;                   // (D) key-feature sum, then its adjoint gz
    float *  zf, * phq, * phk, * dph;  // (D) each
    float *  xs, * dxs;           // (F) scaled q or k, its gradient
    float *  nv;                  // (V) numerator, then dnum
    float *  d, * dl;             // (maxlen) d_t and delta_t for the reverse loop
} bs_buf;

static la_fmap bs_map(bool rebased) { return rebased ? LA_FMAP_QUADRATIC : LA_FMAP_TAYLOR2; }

static size_t bs_layout(bs_buf * b, void * base, la_shape sh, const la_opts * opts, bool rebased,
                        bool backward, int64_t maxlen) {
    la_carver cv = { (char *)base, 0 };
    memset(b, 0, sizeof(*b));
    const int64_t F = sh.K, V = sh.V;
    if (opts->form == LA_FORM_REF) {
        b->num = la_carve(&cv, (size_t)V * 8);
        if (backward) {
            b->dnum = la_carve(&cv, (size_t)V * 8);
            b->dqa = la_carve(&cv, (size_t)F * 8);
        }
    } else if (opts->form == LA_FORM_CHUNK) {
        const int64_t C = la_opts_chunk(opts), KT = bs_ktile(C);
        b->P = la_carve(&cv, (size_t)(C * KT) * 4);
        b->den = la_carve(&cv, (size_t)C * 8);
        if (backward) {
            b->dP = la_carve(&cv, (size_t)(C * KT) * 4);
            b->N = la_carve(&cv, (size_t)(C * V) * 4);
            b->dN = la_carve(&cv, (size_t)(C * V) * 4);
            b->delta = la_carve(&cv, (size_t)C * 4);
        }
    } else {
        const int64_t D = la_fmap_dim(bs_map(rebased), F);
        b->S = la_carve(&cv, (size_t)(D * V) * 4);
        b->z = la_carve(&cv, (size_t)D * 8);
        b->zf = la_carve(&cv, (size_t)D * 4);
        b->phq = la_carve(&cv, (size_t)D * 4);
        b->phk = la_carve(&cv, (size_t)D * 4);
        b->xs = la_carve(&cv, (size_t)F * 4);
        b->nv = la_carve(&cv, (size_t)V * 4);
        if (backward) {
            b->dph = la_carve(&cv, (size_t)D * 4);
            b->dxs = la_carve(&cv, (size_t)F * 4);
            b->d = la_carve(&cv, (size_t)maxlen * 4);
            b->dl = la_carve(&cv, (size_t)maxlen * 4);
        }
    }
    return cv.used;
}

// ---------------------------------------------------------------------------------------------
// REF: the definition, row by row, in double.

// num_t (V) and den_t of row t of head h, sequence start bos.
static double ref_row(const bs_args * a, int64_t bos, int64_t t, int64_t h, double * num) {
    const int64_t H = a->sh.H, F = a->sh.K, V = a->sh.V;
    const float * qt = a->q + (t * H + h) * F;
    double den = 0;
    for (int64_t j = 0; j < V; j++) num[j] = 0;
    for (int64_t i = bos; i <= t; i++) {
        const double si = (double)a->scale * dot_d(qt, a->k + (i * H + h) * F, F);
        const double p = bs_phi_d(a->rebased, si);
        const float * vi = a->v + (i * H + h) * V;
        den += p;
        for (int64_t j = 0; j < V; j++) num[j] += p * (double)vi[j];
    }
    return den;
}

static void ref_fwd_task(const bs_args * a, int64_t bos, int64_t eos, int64_t h, bs_buf * b) {
    const int64_t H = a->sh.H, V = a->sh.V;
    for (int64_t t = bos; t < eos; t++) {
        const double den = ref_row(a, bos, t, h, b->num);
        const double inv = a->use_norm ? 1.0 / (den + (double)a->eps) : 1.0;
        float * ot = a->o + (t * H + h) * V;
        for (int64_t j = 0; j < V; j++) ot[j] = (float)(b->num[j] * inv);
    }
}

static void ref_bwd_task(const bs_args * a, int64_t bos, int64_t eos, int64_t h, bs_buf * b) {
    const int64_t H = a->sh.H, F = a->sh.K, V = a->sh.V;
    const double s = (double)a->scale;
    zero_rows(a->dk, bos, eos, h, H, F);
    zero_rows(a->dv, bos, eos, h, H, V);
    for (int64_t t = bos; t < eos; t++) {
        const float * qt = a->q + (t * H + h) * F, * dot = a->dout + (t * H + h) * V;
        const double den = ref_row(a, bos, t, h, b->num);
        double delta = 0;
        if (a->use_norm) {
            const double d = den + (double)a->eps;
            double dn = 0;
            for (int64_t j = 0; j < V; j++) {
                b->dnum[j] = (double)dot[j] / d;
                dn += (double)dot[j] * b->num[j];
            }
            delta = -dn / (d * d);
        } else {
            for (int64_t j = 0; j < V; j++) b->dnum[j] = (double)dot[j];
        }
        for (int64_t i = 0; i < F; i++) b->dqa[i] = 0;
        for (int64_t i = bos; i <= t; i++) {
            const float * ki = a->k + (i * H + h) * F, * vi = a->v + (i * H + h) * V;
            float * dki = a->dk + (i * H + h) * F, * dvi = a->dv + (i * H + h) * V;
            const double si = s * dot_d(qt, ki, F);
            const double p = bs_phi_d(a->rebased, si);
            double dp = delta;
            for (int64_t j = 0; j < V; j++) dp += b->dnum[j] * (double)vi[j];
            const double ds = s * dp * bs_dphi_d(a->rebased, si);
            for (int64_t c = 0; c < F; c++) {
                b->dqa[c] += ds * (double)ki[c];
                dki[c] += (float)(ds * (double)qt[c]);
            }
            for (int64_t j = 0; j < V; j++) dvi[j] += (float)(p * b->dnum[j]);
        }
        float * dqt = a->dq + (t * H + h) * F;
        for (int64_t c = 0; c < F; c++) dqt[c] = (float)b->dqa[c];
    }
}

// ---------------------------------------------------------------------------------------------
// CHUNK: the parallel form, tiled.

// P (Lq, Lk) with row stride ld holds S = s Q K^T for queries qb + r and keys kb + c, with
// off = qb - kb (negative when the tile starts inside the query block): P <- phi(S) where
// kb + c <= qb + r, 0 elsewhere (the causal mask), and
// den[r] += rowsum(P) (16 float lanes per row, as la_dot_lanes: vectorised, in a fixed order).
LA_CLONES
static void phi_block(float * restrict P, int64_t Lq, int64_t Lk, int64_t ld, int64_t off,
                      bool rebased, double * restrict den) {
    for (int64_t r = 0; r < Lq; r++) {
        float * restrict Pr = P + r * ld;
        const int64_t lim = LA_MAX(0, LA_MIN(Lk, off + r + 1));  // off < 0: a tile past the row
        if (rebased) {
            for (int64_t c = 0; c < lim; c++) Pr[c] = Pr[c] * Pr[c];
        } else {
            for (int64_t c = 0; c < lim; c++) {
                const float s = Pr[c];
                Pr[c] = 1.0f + s * (1.0f + 0.5f * s);
            }
        }
        for (int64_t c = lim; c < Lk; c++) Pr[c] = 0.0f;
        float acc[16] = { 0 };
        int64_t c = 0;
        for (; c + 16 <= lim; c += 16)
            for (int l = 0; l < 16; l++) acc[l] += Pr[c + l];
        for (int l = 0; c + l < lim; l++) acc[l] += Pr[c + l];
        float sum = 0.0f;
        for (int l = 0; l < 16; l++) sum += acc[l];
        den[r] += (double)sum;
    }
}

// The gradient block (layout and mask as phi_block): S in P on entry, dN V^T in dP. Leaves
// P = phi(S) and dP = s (dP + delta_r) o phi'(S), both masked.
LA_CLONES
static void dphi_block(float * restrict P, float * restrict dP, const float * restrict delta,
                       int64_t Lq, int64_t Lk, int64_t ld, int64_t off, bool rebased,
                       float scale) {
    for (int64_t r = 0; r < Lq; r++) {
        float * restrict Pr = P + r * ld, * restrict dPr = dP + r * ld;
        const int64_t lim = LA_MAX(0, LA_MIN(Lk, off + r + 1));  // off < 0: a tile past the row
        const float dl = delta[r];
        for (int64_t c = 0; c < lim; c++) {
            const float s = Pr[c];
            Pr[c] = bs_phi(rebased, s);
            dPr[c] = scale * (dPr[c] + dl) * bs_dphi(rebased, s);
        }
        for (int64_t c = lim; c < Lk; c++) {
            Pr[c] = 0.0f;
            dPr[c] = 0.0f;
        }
    }
}

// num (Lq rows, stride ldn) and den (Lq) of the query block at qb: the sum over the key tiles
// [kb, kb + Lk) of [bos, qb + Lq) of phi(s Q K^T) V.
static void chunk_num(const bs_args * a, int64_t bos, int64_t qb, int64_t Lq, int64_t h,
                      float * Nb, int64_t ldn, bs_buf * b) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = a->sh.H, F = a->sh.K, V = a->sh.V, KT = a->KT;
    const int64_t ldk = H * F, ldv = H * V;
    const float * Qb = a->q + (qb * H + h) * F;
    for (int64_t r = 0; r < Lq; r++) b->den[r] = 0;
    for (int64_t kb = bos; kb < qb + Lq; kb += KT) {
        const int64_t Lk = LA_MIN(KT, qb + Lq - kb);
        gemm(false, true, Lq, Lk, F, a->scale, Qb, ldk, a->k + (kb * H + h) * F, ldk, 0.0f,
             b->P, KT);
        phi_block(b->P, Lq, Lk, KT, qb - kb, a->rebased, b->den);
        gemm(false, false, Lq, V, Lk, 1.0f, b->P, KT, a->v + (kb * H + h) * V, ldv,
             kb == bos ? 0.0f : 1.0f, Nb, ldn);
    }
}

static void chunk_fwd_task(const bs_args * a, int64_t bos, int64_t eos, int64_t h, bs_buf * b) {
    const int64_t H = a->sh.H, V = a->sh.V, C = a->C, ldv = H * V;
    for (int64_t qb = bos; qb < eos; qb += C) {
        const int64_t Lq = LA_MIN(C, eos - qb);
        float * Ob = a->o + (qb * H + h) * V;
        chunk_num(a, bos, qb, Lq, h, Ob, ldv, b);
        if (!a->use_norm) continue;
        for (int64_t r = 0; r < Lq; r++) {
            const float inv = (float)(1.0 / (b->den[r] + (double)a->eps));
            float * Or = Ob + r * ldv;
            for (int64_t j = 0; j < V; j++) Or[j] *= inv;
        }
    }
}

static void chunk_bwd_task(const bs_args * a, int64_t bos, int64_t eos, int64_t h, bs_buf * b) {
    la_gemm_fn gemm = la_kern()->gemm;
    const int64_t H = a->sh.H, F = a->sh.K, V = a->sh.V, C = a->C, KT = a->KT;
    const int64_t ldk = H * F, ldv = H * V;
    zero_rows(a->dk, bos, eos, h, H, F);
    zero_rows(a->dv, bos, eos, h, H, V);
    for (int64_t qb = bos; qb < eos; qb += C) {
        const int64_t Lq = LA_MIN(C, eos - qb);
        const float * Qb = a->q + (qb * H + h) * F;
        const float * dOb = a->dout + (qb * H + h) * V;
        float * dQb = a->dq + (qb * H + h) * F;
        // Row terms: dN = do / d, delta = -(do . num) / d^2 (use_norm off: dN = do, delta = 0).
        const float * dN = dOb;
        int64_t ldn = ldv;
        if (a->use_norm) {
            chunk_num(a, bos, qb, Lq, h, b->N, V, b);
            for (int64_t r = 0; r < Lq; r++) {
                const double d = b->den[r] + (double)a->eps;
                const float * dor = dOb + r * ldv;
                float * dNr = b->dN + r * V;
                for (int64_t j = 0; j < V; j++) dNr[j] = (float)((double)dor[j] / d);
                b->delta[r] = (float)(-dot_d(dor, b->N + r * V, V) / (d * d));
            }
            dN = b->dN;
            ldn = V;
        } else {
            for (int64_t r = 0; r < Lq; r++) b->delta[r] = 0.0f;
        }
        for (int64_t kb = bos; kb < qb + Lq; kb += KT) {
            const int64_t Lk = LA_MIN(KT, qb + Lq - kb);
            const float * Kb = a->k + (kb * H + h) * F, * Vb = a->v + (kb * H + h) * V;
            gemm(false, true, Lq, Lk, F, a->scale, Qb, ldk, Kb, ldk, 0.0f, b->P, KT);
            gemm(false, true, Lq, Lk, V, 1.0f, dN, ldn, Vb, ldv, 0.0f, b->dP, KT);  // dN V^T
            dphi_block(b->P, b->dP, b->delta, Lq, Lk, KT, qb - kb, a->rebased, a->scale);
            // dQ_b += dS K_kb ;  dK_kb += dS^T Q_b ;  dV_kb += phi(S)^T dN_b
            gemm(false, false, Lq, F, Lk, 1.0f, b->dP, KT, Kb, ldk, kb == bos ? 0.0f : 1.0f,
                 dQb, ldk);
            gemm(true, false, Lk, F, Lq, 1.0f, b->dP, KT, Qb, ldk, 1.0f,
                 a->dk + (kb * H + h) * F, ldk);
            gemm(true, false, Lk, V, Lq, 1.0f, b->P, KT, dN, ldn, 1.0f,
                 a->dv + (kb * H + h) * V, ldv);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RECURRENT: linear attention on the features of la_fmap_forward.

// q' = a q, k' = b k (see the file header).
static void fold_scale(bool rebased, float scale, int64_t F, float * qa, float * kb) {
    const double as = fabs((double)scale);
    const double m = rebased ? sqrt(as) : sqrt(as * sqrt((double)F));
    *qa = (float)m;
    *kb = (float)(rebased || scale > 0.0f ? m : -m);
}

// phi(c x) of one (F) row into y (D); xs (F) scratch keeps c x for the backward.
static void feat(float * y, float * xs, const float * x, float c, la_fmap map, int64_t F) {
    for (int64_t i = 0; i < F; i++) xs[i] = c * x[i];
    la_fmap_forward(y, xs, NULL, NULL, map, 1, 1, F);
}

LA_CLONES
static void rec_fwd_task(const bs_args * a, int64_t bos, int64_t eos, int64_t h, bs_buf * b) {
    const int64_t H = a->sh.H, F = a->sh.K, V = a->sh.V;
    const la_fmap map = bs_map(a->rebased);
    const int64_t D = la_fmap_dim(map, F);
    float ca, cb;
    fold_scale(a->rebased, a->scale, F, &ca, &cb);
    float * restrict S = b->S, * restrict phq = b->phq, * restrict phk = b->phk;
    float * restrict zf = b->zf, * restrict nv = b->nv;
    double * restrict z = b->z;
    memset(S, 0, (size_t)(D * V) * sizeof(float));
    for (int64_t d = 0; d < D; d++) z[d] = 0;
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict vt = a->v + (t * H + h) * V;
        feat(phk, b->xs, a->k + (t * H + h) * F, cb, map, F);
        feat(phq, b->xs, a->q + (t * H + h) * F, ca, map, F);
        // S_t = S_{t-1} + phi(k') v^T ;  num = S_t^T phi(q')
        for (int64_t j = 0; j < V; j++) nv[j] = 0.0f;
        for (int64_t d = 0; d < D; d++) {
            float * restrict Sd = S + d * V;
            const float kd = phk[d], qd = phq[d];
            for (int64_t j = 0; j < V; j++) {
                const float s = Sd[j] + kd * vt[j];
                Sd[j] = s;
                nv[j] += qd * s;
            }
        }
        float * restrict ot = a->o + (t * H + h) * V;
        if (a->use_norm) {
            // z_t = z_{t-1} + phi(k') (double: a sum of up to T features); den = phi(q') . z_t
            for (int64_t d = 0; d < D; d++) {
                z[d] += (double)phk[d];
                zf[d] = (float)z[d];
            }
            const float inv = 1.0f / (la_dot_lanes(phq, zf, D) + a->eps);
            for (int64_t j = 0; j < V; j++) ot[j] = nv[j] * inv;
        } else {
            memcpy(ot, nv, (size_t)V * sizeof(float));
        }
    }
}

LA_CLONES
static void rec_bwd_task(const bs_args * a, int64_t bos, int64_t eos, int64_t h, bs_buf * b) {
    const int64_t H = a->sh.H, F = a->sh.K, V = a->sh.V;
    const la_fmap map = bs_map(a->rebased);
    const int64_t D = la_fmap_dim(map, F);
    float ca, cb;
    fold_scale(a->rebased, a->scale, F, &ca, &cb);
    float * restrict S = b->S, * restrict phq = b->phq, * restrict phk = b->phk;
    float * restrict zf = b->zf, * restrict nv = b->nv, * restrict dph = b->dph;
    double * restrict z = b->z;
    memset(S, 0, (size_t)(D * V) * sizeof(float));
    for (int64_t d = 0; d < D; d++) {
        z[d] = 0;
        zf[d] = 0.0f;
    }
    // Forward loop: S_t, z_t, num_t; then d_t, delta_t and dq_t.
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict vt = a->v + (t * H + h) * V;
        const float * restrict dot = a->dout + (t * H + h) * V;
        feat(phk, b->xs, a->k + (t * H + h) * F, cb, map, F);
        feat(phq, b->xs, a->q + (t * H + h) * F, ca, map, F);
        for (int64_t j = 0; j < V; j++) nv[j] = 0.0f;
        for (int64_t d = 0; d < D; d++) {
            float * restrict Sd = S + d * V;
            const float kd = phk[d], qd = phq[d];
            for (int64_t j = 0; j < V; j++) {
                const float s = Sd[j] + kd * vt[j];
                Sd[j] = s;
                nv[j] += qd * s;
            }
        }
        float dl = 0.0f, dt = 1.0f;
        if (a->use_norm) {
            for (int64_t d = 0; d < D; d++) {
                z[d] += (double)phk[d];
                zf[d] = (float)z[d];
            }
            dt = la_dot_lanes(phq, zf, D) + a->eps;
            // delta_t = -(do . num) / d^2 ; dnum = do / d (in nv)
            dl = (float)(-dot_d(dot, nv, V) / ((double)dt * (double)dt));
            for (int64_t j = 0; j < V; j++) nv[j] = dot[j] / dt;
        } else {
            memcpy(nv, dot, (size_t)V * sizeof(float));
        }
        b->d[t - bos] = dt;
        b->dl[t - bos] = dl;
        // dphi(q') = S_t dnum + z_t delta ;  dq = a dx'
        for (int64_t d = 0; d < D; d++) dph[d] = la_dot_lanes(S + d * V, nv, V) + zf[d] * dl;
        la_fmap_backward(b->dxs, NULL, NULL, dph, b->xs, NULL, NULL, map, 1, 1, F, false);
        float * restrict dqt = a->dq + (t * H + h) * F;
        for (int64_t i = 0; i < F; i++) dqt[i] = ca * b->dxs[i];
    }
    // Reverse loop: G = sum_{t'>=t} phi(q'_t') dnum_t'^T (in S), gz = sum phi(q'_t') delta_t'.
    memset(S, 0, (size_t)(D * V) * sizeof(float));
    for (int64_t d = 0; d < D; d++) z[d] = 0;
    for (int64_t t = eos - 1; t >= bos; t--) {
        const float * restrict vt = a->v + (t * H + h) * V;
        const float * restrict dot = a->dout + (t * H + h) * V;
        const float dt = b->d[t - bos], dl = b->dl[t - bos];
        feat(phq, b->xs, a->q + (t * H + h) * F, ca, map, F);
        feat(phk, b->xs, a->k + (t * H + h) * F, cb, map, F);  // xs = k' for the chain below
        if (a->use_norm)
            for (int64_t j = 0; j < V; j++) nv[j] = dot[j] / dt;
        else
            memcpy(nv, dot, (size_t)V * sizeof(float));
        float * restrict dvt = a->dv + (t * H + h) * V;
        for (int64_t j = 0; j < V; j++) dvt[j] = 0.0f;
        for (int64_t d = 0; d < D; d++) {
            float * restrict Gd = S + d * V;
            const float qd = phq[d], kd = phk[d];
            // G += phi(q') dnum^T ;  dphi(k')_d = G_d . v + gz_d ;  dv += G_d phi(k')_d
            float acc = 0.0f;
            for (int64_t j = 0; j < V; j++) {
                const float gj = Gd[j] + qd * nv[j];
                Gd[j] = gj;
                acc += gj * vt[j];
                dvt[j] += kd * gj;
            }
            z[d] += (double)qd * (double)dl;
            dph[d] = acc + (float)z[d];
        }
        la_fmap_backward(b->dxs, NULL, NULL, dph, b->xs, NULL, NULL, map, 1, 1, F, false);
        float * restrict dkt = a->dk + (t * H + h) * F;
        for (int64_t i = 0; i < F; i++) dkt[i] = cb * b->dxs[i];
    }
}

// ---------------------------------------------------------------------------------------------
// Drivers

static size_t bs_per_thread(la_shape sh, const la_opts * opts, bool rebased, bool backward) {
    bs_buf b;
    return la_align_up(bs_layout(&b, NULL, sh, opts, rebased, backward, la_max_seq_len(sh, opts)));
}

static size_t bs_workspace(bool backward, bool rebased, la_shape sh, const la_opts * opts) {
    int64_t N;
    if (la_check_common(sh, opts, &N) != LA_STATUS_OK) return 0;
    return (size_t)la_slots(N * sh.H) * bs_per_thread(sh, opts, rebased, backward) + LA_ALIGN;
}

size_t la_based_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return bs_workspace(backward, false, sh, opts);
}

size_t la_rebased_workspace_size(bool backward, la_shape sh, const la_opts * opts) {
    return bs_workspace(backward, true, sh, opts);
}

static void bs_task(const void * ctx, int64_t task, void * scratch) {
    const bs_args * a = ctx;
    const int64_t n = task / a->sh.H, h = task % a->sh.H;
    int64_t bos, eos;
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    bs_buf b;
    bs_layout(&b, scratch, a->sh, a->opts, a->rebased, a->backward, a->maxlen);
    switch (a->opts->form) {
    case LA_FORM_REF:
        if (a->backward) ref_bwd_task(a, bos, eos, h, &b);
        else ref_fwd_task(a, bos, eos, h, &b);
        break;
    case LA_FORM_CHUNK:
        if (a->backward) chunk_bwd_task(a, bos, eos, h, &b);
        else chunk_fwd_task(a, bos, eos, h, &b);
        break;
    case LA_FORM_RECURRENT:
        if (a->backward) rec_bwd_task(a, bos, eos, h, &b);
        else rec_fwd_task(a, bos, eos, h, &b);
        break;
    }
}

static la_status bs_run(bs_args * a) {
    int64_t N;
    la_status st = la_check_common(a->sh, a->opts, &N);
    if (st != LA_STATUS_OK) return st;
    if (!a->q || !a->k || !a->v) return LA_STATUS_INVALID_ARG;
    if (!a->backward && !a->o) return LA_STATUS_INVALID_ARG;
    if (a->backward && (!a->dout || !a->dq || !a->dk || !a->dv)) return LA_STATUS_INVALID_ARG;
    if (!isfinite(a->eps) || a->eps < 0.0f) return LA_STATUS_INVALID_ARG;
    a->scale = la_opts_scale(a->opts, a->sh.K);
    a->C = la_opts_chunk(a->opts);
    a->KT = bs_ktile(a->C);
    a->maxlen = la_max_seq_len(a->sh, a->opts);
    a->per = bs_per_thread(a->sh, a->opts, a->rebased, a->backward);
    void * ws;
    bool owned;
    st = la_ws_acquire(a->opts, bs_workspace(a->backward, a->rebased, a->sh, a->opts), &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    la_run_tasks(N * a->sh.H, ws, a->per, bs_task, a);
    la_ws_release(ws, owned);
    return LA_STATUS_OK;
}

la_status la_based_forward(float * o, const float * q, const float * k, const float * v,
                           bool use_norm, la_shape sh, const la_opts * opts) {
    bs_args a = { .q = q, .k = k, .v = v, .o = o, .sh = sh, .opts = opts, .eps = BASED_EPS,
                  .use_norm = use_norm };
    return bs_run(&a);
}

la_status la_based_backward(float * dq, float * dk, float * dv, const float * dout,
                            const float * q, const float * k, const float * v, bool use_norm,
                            la_shape sh, const la_opts * opts) {
    bs_args a = { .q = q, .k = k, .v = v, .dout = dout, .dq = dq, .dk = dk, .dv = dv, .sh = sh,
                  .opts = opts, .eps = BASED_EPS, .use_norm = use_norm, .backward = true };
    return bs_run(&a);
}

la_status la_rebased_forward(float * o, const float * q, const float * k, const float * v,
                             float eps, bool use_norm, la_shape sh, const la_opts * opts) {
    bs_args a = { .q = q, .k = k, .v = v, .o = o, .sh = sh, .opts = opts, .eps = eps,
                  .use_norm = use_norm, .rebased = true };
    return bs_run(&a);
}

la_status la_rebased_backward(float * dq, float * dk, float * dv, const float * dout,
                              const float * q, const float * k, const float * v, float eps,
                              bool use_norm, la_shape sh, const la_opts * opts) {
    bs_args a = { .q = q, .k = k, .v = v, .dout = dout, .dq = dq, .dk = dk, .dv = dv, .sh = sh,
                  .opts = opts, .eps = eps, .use_norm = use_norm, .rebased = true,
                  .backward = true };
    return bs_run(&a);
}
