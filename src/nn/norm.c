// RMSNorm (OPS.md 4.2), FusedRMSNormGated (OPS.md 4.3) and the L2 norm (OPS.md 0), per row of
// D values.
//
//   rmsnorm   r = 1 / sqrt(sum_d x_d^2 / D + eps) ;  n_d = x_d r ;  y_d = n_d w_d
//   gated     y_d = n_d w_d act(g_d),  act = SiLU or sigmoid (norm first, then gate)
//   l2norm    r = 1 / sqrt(sum_d x_d^2 + eps) ;      y_d = x_d r
//
// Backward, with e_d = dL/d(n_d w_d) (e = dy for rmsnorm, dy act(g) for gated) and since
// dr/dx_j = -r^3 x_j / D:
//   dx_j = r e_j w_j - x_j r^3 (sum_d e_d w_d x_d) / D
//   dw_d = sum_rows e_d n_d ;  dg_d = dy_d n_d w_d act'(g_d)
//   l2norm: dx_j = r dy_j - x_j r^3 (sum_d dy_d x_d)
// The sums of squares and the row dot products run in double (nn.h lanes). The forward rounds
// r to float once and multiplies in float, as fla's kernels do. The backward keeps r and the
// two terms of dx in double: dx = r (g - n (n . g) / D) (g = e o w) removes g's component
// along n = x r, and when g is nearly parallel to n (always at D = 1, where
// dx = g r eps / (x^2 + eps)) the result is orders of magnitude below either term; a float r
// (relative error 6e-8, doubled in r^2) would leave no correct digit there.
//
// Threads: rows are cut into at most LA_NN_MAX_PARTS fixed blocks (sizes depend on rows only).
// A block computes its rows' dx and, in double, its own partial dw; dw is then the sum of the
// partials in block order, so no result depends on the thread count. The partials take
// (blocks, D) doubles, allocated per backward call that asks for dw.
#include "nn.h"

#include <stdlib.h>

static bool eps_valid(float eps) { return isfinite(eps) && eps >= 0.0f; }

// The fixed row partition of the backward passes (the partial dw of each block).
typedef struct row_parts {
    int64_t rb, nb;  // rows per block, blocks
} row_parts;

static row_parts parts_for(int64_t rows) {
    const int64_t rb = la_nn_part_rows(rows);
    return (row_parts){ rb, (rows + rb - 1) / rb };
}

// dw (D) (+)= sum over blocks b in order of part (nb, D).
static void reduce_parts(float * dw, const double * part, int64_t nb, int64_t D,
                         bool accumulate) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(D, nb * D))
    for (int64_t d = 0; d < D; d++) {
        double s = 0.0;
        for (int64_t b = 0; b < nb; b++) s += part[b * D + d];
        dw[d] = (float)(accumulate ? (double)dw[d] + s : s);
    }
}

static inline double rms_rstd(const float * x, int64_t D, float eps) {
    return 1.0 / sqrt(la_nn_sumsq(x, D) / (double)D + (double)eps);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

// y (D) = x r o w (w NULL: no weight)
LA_CLONES
static void rms_fwd_row(float * restrict y, const float * restrict x, const float * restrict w,
                        float eps, int64_t D) {
    const float r = (float)rms_rstd(x, D, eps);
    if (w) for (int64_t d = 0; d < D; d++) y[d] = x[d] * r * w[d];
    else   for (int64_t d = 0; d < D; d++) y[d] = x[d] * r;
}

// One row: dx (D) or NULL; part (D) += dy o n (dw's partial) or NULL. dx may equal dy: each
// element of dy is read before dx at the same index is written.
LA_CLONES
static void rms_bwd_row(float * dx, double * restrict part, const float * dy,
                        const float * restrict x, const float * restrict w, float eps,
                        int64_t D) {
    const double r = rms_rstd(x, D, eps);
    if (part)
        for (int64_t d = 0; d < D; d++) part[d] += (double)dy[d] * ((double)x[d] * r);
    if (!dx) return;
    // c = r^3 sum_d dy_d w_d x_d / D
    double dot = 0.0;
    if (w) {
        double acc[8] = { 0 };
        int64_t d = 0;
        for (; d + 8 <= D; d += 8)
            for (int l = 0; l < 8; l++)
                acc[l] += (double)dy[d + l] * (double)w[d + l] * (double)x[d + l];
        for (int l = 0; d + l < D; l++)
            acc[l] += (double)dy[d + l] * (double)w[d + l] * (double)x[d + l];
        dot = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    } else {
        dot = la_nn_dot(dy, x, D);
    }
    const double c = r * r * r * dot / (double)D;
    if (w)
        for (int64_t d = 0; d < D; d++)
            dx[d] = (float)(r * ((double)dy[d] * (double)w[d]) - (double)x[d] * c);
    else
        for (int64_t d = 0; d < D; d++) dx[d] = (float)(r * (double)dy[d] - (double)x[d] * c);
}

la_status la_rmsnorm_forward(float * y, const float * x, const float * w, float eps,
                             int64_t rows, int64_t D) {
    if (rows <= 0 || D <= 0) return LA_STATUS_SHAPE;
    if (!y || !x || !eps_valid(eps)) return LA_STATUS_INVALID_ARG;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * D))
    for (int64_t r = 0; r < rows; r++) rms_fwd_row(y + r * D, x + r * D, w, eps, D);
    return LA_STATUS_OK;
}

la_status la_rmsnorm_backward(float * dx, float * dw, const float * dy, const float * x,
                              const float * w, float eps, int64_t rows, int64_t D,
                              bool accumulate) {
    if (rows <= 0 || D <= 0) return LA_STATUS_SHAPE;
    if (!dy || !x || !eps_valid(eps)) return LA_STATUS_INVALID_ARG;
    if (!dx && !dw) return LA_STATUS_OK;
    const row_parts p = parts_for(rows);
    double * part = NULL;  // (p.nb, D) partial dw of each row block
    if (dw) {
        part = calloc((size_t)(p.nb * D), sizeof(double));
        if (!part) return LA_STATUS_NOMEM;
    }
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(p.nb, rows * D))
    for (int64_t b = 0; b < p.nb; b++) {
        const int64_t r1 = LA_MIN(rows, (b + 1) * p.rb);
        for (int64_t r = b * p.rb; r < r1; r++)
            rms_bwd_row(dx ? dx + r * D : NULL, part ? part + b * D : NULL, dy + r * D,
                        x + r * D, w, eps, D);
    }
    if (dw) reduce_parts(dw, part, p.nb, D, accumulate);
    free(part);
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// LayerNorm: y = (x - mean(x)) r o w + b,  r = 1 / sqrt(var(x) + eps)  (biased variance, torch)

static inline void ln_stats(const float * x, int64_t D, float eps, double * mu, double * r) {
    double s = 0.0;
    for (int64_t d = 0; d < D; d++) s += (double)x[d];
    *mu = s / (double)D;
    double v = 0.0;
    for (int64_t d = 0; d < D; d++) v += ((double)x[d] - *mu) * ((double)x[d] - *mu);
    *r = 1.0 / sqrt(v / (double)D + (double)eps);
}

LA_CLONES
static void ln_fwd_row(float * restrict y, const float * restrict x, const float * restrict w,
                       const float * restrict b, float eps, int64_t D) {
    double mu, r;
    ln_stats(x, D, eps, &mu, &r);
    for (int64_t d = 0; d < D; d++) {
        const float n = (float)(((double)x[d] - mu) * r);
        y[d] = (w ? n * w[d] : n) + (b ? b[d] : 0.0f);
    }
}

// dx = r (g - mean(g) - n mean(g n)) with g = dy o w and n the normalised x; part (2 D): dw's
// and db's partials (dy o n, dy). dx may equal dy.
LA_CLONES
static void ln_bwd_row(float * dx, double * restrict part, const float * dy,
                       const float * restrict x, const float * restrict w, float eps,
                       int64_t D) {
    double mu, r;
    ln_stats(x, D, eps, &mu, &r);
    double sg = 0.0, sgn = 0.0;
    for (int64_t d = 0; d < D; d++) {
        const double n = ((double)x[d] - mu) * r;
        const double g = (double)dy[d] * (w ? (double)w[d] : 1.0);
        sg += g;
        sgn += g * n;
        if (part) {
            part[d] += (double)dy[d] * n;
            part[D + d] += (double)dy[d];
        }
    }
    if (!dx) return;
    sg /= (double)D;
    sgn /= (double)D;
    for (int64_t d = 0; d < D; d++) {
        const double n = ((double)x[d] - mu) * r;
        const double g = (double)dy[d] * (w ? (double)w[d] : 1.0);
        dx[d] = (float)(r * (g - sg - n * sgn));
    }
}

la_status la_layernorm_forward(float * y, const float * x, const float * w, const float * b,
                               float eps, int64_t rows, int64_t D) {
    if (rows <= 0 || D <= 0) return LA_STATUS_SHAPE;
    if (!y || !x || !eps_valid(eps)) return LA_STATUS_INVALID_ARG;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * D))
    for (int64_t r = 0; r < rows; r++) ln_fwd_row(y + r * D, x + r * D, w, b, eps, D);
    return LA_STATUS_OK;
}

la_status la_layernorm_backward(float * dx, float * dw, float * db, const float * dy,
                                const float * x, const float * w, float eps, int64_t rows,
                                int64_t D, bool accumulate) {
    if (rows <= 0 || D <= 0) return LA_STATUS_SHAPE;
    if (!dy || !x || !eps_valid(eps)) return LA_STATUS_INVALID_ARG;
    if (!dx && !dw && !db) return LA_STATUS_OK;
    const row_parts p = parts_for(rows);
    double * part = NULL;  // (p.nb, 2 D): partial dw, db of each row block
    if (dw || db) {
        part = calloc((size_t)(p.nb * 2 * D), sizeof(double));
        if (!part) return LA_STATUS_NOMEM;
    }
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(p.nb, rows * D))
    for (int64_t blk = 0; blk < p.nb; blk++) {
        const int64_t r1 = LA_MIN(rows, (blk + 1) * p.rb);
        for (int64_t r = blk * p.rb; r < r1; r++)
            ln_bwd_row(dx ? dx + r * D : NULL, part ? part + blk * 2 * D : NULL, dy + r * D,
                       x + r * D, w, eps, D);
    }
    if (part) {
        // the blocks' partials in block order: reorganise to (nb, D) for each reduction
        double * q = malloc((size_t)(p.nb * D) * sizeof(double));
        if (!q) {
            free(part);
            return LA_STATUS_NOMEM;
        }
        for (int k = 0; k < 2; k++) {
            float * out = k == 0 ? dw : db;
            if (!out) continue;
            for (int64_t blk = 0; blk < p.nb; blk++)
                memcpy(q + blk * D, part + blk * 2 * D + k * D, (size_t)D * sizeof(double));
            reduce_parts(out, q, p.nb, D, accumulate);
        }
        free(q);
    }
    free(part);
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// Gated RMSNorm: y = RMSNorm(x) o w o act(g)

static inline void gate_fn(float g, la_act act, float * a, float * da) {
    float s, sm;
    la_nn_sigmoid2(g, &s, &sm);
    if (act == LA_ACT_SILU) {  // a = g sigma(g), a' = sigma(g) (1 + g sigma(-g))
        *a = g * s;
        *da = s * (1.0f + g * sm);
    } else {                   // a = sigma(g), a' = sigma(g) sigma(-g)
        *a = s;
        *da = s * sm;
    }
}

LA_CLONES
static void gated_fwd_row(float * restrict y, const float * restrict x,
                          const float * restrict g, const float * restrict w, float eps,
                          la_act act, int64_t D) {
    const float r = (float)rms_rstd(x, D, eps);
    for (int64_t d = 0; d < D; d++) {
        float a, da;
        gate_fn(g[d], act, &a, &da);
        const float nw = w ? x[d] * r * w[d] : x[d] * r;
        y[d] = nw * a;
    }
}

// One row, in chunks of GATE_CHUNK values: the gate's value a and slope a' and a copy of dy
// go to stack rows first, then each wanted output is one plain loop (dg, dw's partial, and
// e o w into dx); a last pass turns dx into the gradient through r. Reading dy from the copy
// lets dx or dg be dy itself.
#define GATE_CHUNK 256

LA_CLONES
static void gated_bwd_row(float * dx, float * dg, double * restrict part, const float * dy,
                          const float * restrict x, const float * restrict g,
                          const float * restrict w, float eps, la_act act, int64_t D) {
    const double rd = rms_rstd(x, D, eps);
    const float r = (float)rd;
    float av[GATE_CHUNK], dav[GATE_CHUNK], dyv[GATE_CHUNK];
    for (int64_t d0 = 0; d0 < D; d0 += GATE_CHUNK) {
        const int64_t m = LA_MIN(GATE_CHUNK, D - d0);
        const float * restrict xc = x + d0, * restrict gc = g + d0;
        if (act == LA_ACT_SILU)
            for (int64_t j = 0; j < m; j++) la_nn_silu_and_grad(gc[j], &av[j], &dav[j]);
        else
            for (int64_t j = 0; j < m; j++) {
                float sp, sm;
                la_nn_sigmoid2(gc[j], &sp, &sm);
                av[j] = sp;
                dav[j] = sp * sm;
            }
        memcpy(dyv, dy + d0, (size_t)m * sizeof(float));
        if (part) {
            double * restrict pc = part + d0;
            for (int64_t j = 0; j < m; j++)
                pc[j] += (double)(dyv[j] * av[j]) * ((double)xc[j] * rd);
        }
        if (dg) {
            float * restrict o = dg + d0;
            if (w) for (int64_t j = 0; j < m; j++) o[j] = dyv[j] * (xc[j] * r * w[d0 + j]) * dav[j];
            else   for (int64_t j = 0; j < m; j++) o[j] = dyv[j] * (xc[j] * r) * dav[j];
        }
        if (dx) {
            float * restrict o = dx + d0;
            if (w) for (int64_t j = 0; j < m; j++) o[j] = dyv[j] * av[j] * w[d0 + j];
            else   for (int64_t j = 0; j < m; j++) o[j] = dyv[j] * av[j];
        }
    }
    if (!dx) return;
    const double dot = la_nn_dot(dx, x, D);        // sum_d e_d w_d x_d
    const double c = rd * rd * rd * dot / (double)D;
    for (int64_t d = 0; d < D; d++) dx[d] = (float)(rd * (double)dx[d] - (double)x[d] * c);
}

la_status la_rmsnorm_gated_forward(float * y, const float * x, const float * gate,
                                   const float * w, float eps, la_act act, int64_t rows,
                                   int64_t D) {
    if (rows <= 0 || D <= 0) return LA_STATUS_SHAPE;
    if (!y || !x || !gate || !eps_valid(eps)) return LA_STATUS_INVALID_ARG;
    if (act != LA_ACT_SILU && act != LA_ACT_SIGMOID) return LA_STATUS_INVALID_ARG;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * D))
    for (int64_t r = 0; r < rows; r++)
        gated_fwd_row(y + r * D, x + r * D, gate + r * D, w, eps, act, D);
    return LA_STATUS_OK;
}

la_status la_rmsnorm_gated_backward(float * dx, float * dgate, float * dw, const float * dy,
                                    const float * x, const float * gate, const float * w,
                                    float eps, la_act act, int64_t rows, int64_t D,
                                    bool accumulate) {
    if (rows <= 0 || D <= 0) return LA_STATUS_SHAPE;
    if (!dy || !x || !gate || !eps_valid(eps)) return LA_STATUS_INVALID_ARG;
    if (act != LA_ACT_SILU && act != LA_ACT_SIGMOID) return LA_STATUS_INVALID_ARG;
    if (!dx && !dgate && !dw) return LA_STATUS_OK;
    const row_parts p = parts_for(rows);
    double * part = NULL;  // (p.nb, D)
    if (dw) {
        part = calloc((size_t)(p.nb * D), sizeof(double));
        if (!part) return LA_STATUS_NOMEM;
    }
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(p.nb, rows * D))
    for (int64_t b = 0; b < p.nb; b++) {
        const int64_t r1 = LA_MIN(rows, (b + 1) * p.rb);
        for (int64_t r = b * p.rb; r < r1; r++)
            gated_bwd_row(dx ? dx + r * D : NULL, dgate ? dgate + r * D : NULL,
                          part ? part + b * D : NULL, dy + r * D, x + r * D, gate + r * D, w,
                          eps, act, D);
    }
    if (dw) reduce_parts(dw, part, p.nb, D, accumulate);
    free(part);
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// L2 norm

LA_CLONES
static void l2_fwd_row(float * restrict y, const float * restrict x, float eps, int64_t D) {
    const float r = (float)(1.0 / sqrt(la_nn_sumsq(x, D) + (double)eps));
    for (int64_t d = 0; d < D; d++) y[d] = x[d] * r;
}

// dx may equal dy.
LA_CLONES
static void l2_bwd_row(float * dx, const float * dy, const float * restrict x, float eps,
                       int64_t D) {
    const double r = 1.0 / sqrt(la_nn_sumsq(x, D) + (double)eps);
    const double c = r * r * r * la_nn_dot(dy, x, D);
    for (int64_t d = 0; d < D; d++) dx[d] = (float)(r * (double)dy[d] - (double)x[d] * c);
}

la_status la_l2norm_forward(float * y, const float * x, float eps, int64_t rows, int64_t D) {
    if (rows <= 0 || D <= 0) return LA_STATUS_SHAPE;
    if (!y || !x || !eps_valid(eps)) return LA_STATUS_INVALID_ARG;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * D))
    for (int64_t r = 0; r < rows; r++) l2_fwd_row(y + r * D, x + r * D, eps, D);
    return LA_STATUS_OK;
}

la_status la_l2norm_backward(float * dx, const float * dy, const float * x, float eps,
                             int64_t rows, int64_t D) {
    if (rows <= 0 || D <= 0) return LA_STATUS_SHAPE;
    if (!dy || !x || !eps_valid(eps)) return LA_STATUS_INVALID_ARG;
    if (!dx) return LA_STATUS_OK;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * D))
    for (int64_t r = 0; r < rows; r++) l2_bwd_row(dx + r * D, dy + r * D, x + r * D, eps, D);
    return LA_STATUS_OK;
}
