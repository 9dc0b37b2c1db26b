// Feature maps for linear attention (ALGORITHMS.md 7), forward and backward, per head of F
// features; the maps of fla's fla/modules/feature_map.py.
//
//   IDENTITY   phi(x) = x                                                        F outputs
//   ELU1       phi(x) = elu(x) + 1                                               F
//   RELU       phi(x) = max(x, 0)                                                F
//   TAYLOR2    phi(x) = [1, x / F^(1/4), x_i^2 / (sqrt2 sqrt F) (each i),
//                        x_i x_j / sqrt F (i < j, row-major)]                    1 + F + F(F+1)/2
//              so phi(q).phi(k) = 1 + q.k/sqrt F + (q.k)^2/(2F)  (fla's TaylorFeatureMap, Based)
//   QUADRATIC  phi(x) = [x_i^2 (each i), sqrt2 x_i x_j (i < j)], phi(q).phi(k) = (q.k)^2
//                                                                                F(F+1)/2
//   HEDGEHOG   z = W_h x + b_h,  phi(x) = softmax([2z, -2z])                     2F
//              fla's HedgehogFeatureMap: nn.Linear(F, F) (W initialised to the identity, b to
//              0), then y = 2 x, torch.cat([y, -y], -1).softmax(-1). fla's module holds one
//              Linear shared by all heads; here W (H, F, F) and b (H, F) are per head (a shared
//              map is W repeated over heads, its gradient the sum of the heads' dW).
//
// The off-diagonal order (i < j, i outer) is torch.triu_indices(F, F, 1), fla's order; the
// order of features never changes phi(q).phi(k).
//
// Backward (dy -> dx; HEDGEHOG also dW, db):
//   ELU1       dx = dy (x > 0 ? 1 : e^x)           RELU  dx = dy (x > 0)
//   TAYLOR2    dx_i = dy_{1+i} / F^(1/4) + dy_diag,i sqrt2 x_i / sqrt F
//                     + sum_{j != i} dy_ij x_j / sqrt F
//   QUADRATIC  dx_i = 2 x_i dy_diag,i + sqrt2 sum_{j != i} dy_ij x_j
//   HEDGEHOG   u = [2z, -2z], y = softmax(u): du = y o (dy - y.dy);
//              dz_i = 2 du_i - 2 du_{F+i};  dx = W_h^T dz;  dW_h += dz x^T;  db_h += dz
//
// Layout: x (rows, H, F) -> y (rows, H, la_fmap_dim(kind, F)), row-major; y must not overlap
// x, nor dx overlap dy or x. dx is overwritten; dW (H, F, F) and dbias (H, F) are overwritten
// or, with accumulate, added to (without a bias, dbias is the gradient at b = 0). Threads split
// rows (elementwise maps) or (64-row block, head) pairs (HEDGEHOG); Hedgehog's dW and db are
// summed over the row blocks of each head in block order by one thread per head, so every result
// is independent of the thread count. The Hedgehog backward allocates one (64, F) block per
// thread (the call has no workspace argument): LA_STATUS_NOMEM if that fails.
#include "internal.h"
#include "vexp.h"

#include <stdlib.h>
#include <string.h>

// Rows per HEDGEHOG task: the block's z = x W^T is one small GEMM.
#define FMAP_RB 64
// Elementwise maps go parallel above this many output floats (below it a parallel region costs
// more than the work; the recurrent based form calls the maps once per token).
#define FMAP_PAR_MIN 32768

int64_t la_fmap_dim(la_fmap kind, int64_t F) {
    if (F < 1) return 0;
    switch (kind) {
    case LA_FMAP_IDENTITY:
    case LA_FMAP_ELU1:
    case LA_FMAP_RELU:      return F;
    case LA_FMAP_TAYLOR2:   return 1 + F + F * (F + 1) / 2;
    case LA_FMAP_QUADRATIC: return F * (F + 1) / 2;
    case LA_FMAP_HEDGEHOG:  return 2 * F;
    }
    return 0;
}

// Constants of the polynomial maps, rounded once from double.
typedef struct poly_c {
    float c1;    // TAYLOR2: F^(-1/4)
    float cd;    // diagonal: 1/(sqrt2 sqrt F) (TAYLOR2), 1 (QUADRATIC)
    float co;    // off-diagonal: 1/sqrt F (TAYLOR2), sqrt2 (QUADRATIC)
} poly_c;

static poly_c poly_consts(la_fmap kind, int64_t F) {
    const double rf = sqrt((double)F);
    poly_c c;
    if (kind == LA_FMAP_TAYLOR2) {
        c.c1 = (float)(1.0 / sqrt(rf));
        c.cd = (float)(1.0 / (sqrt(2.0) * rf));
        c.co = (float)(1.0 / rf);
    } else {
        c.c1 = 0.0f;
        c.cd = 1.0f;
        c.co = (float)sqrt(2.0);
    }
    return c;
}

// ---------------------------------------------------------------------------------------------
// One head's vector: y (D) from x (F); dx (F, overwritten) from dy (D).

LA_CLONES
static void row_fwd(float * restrict y, const float * restrict x, la_fmap kind, int64_t F,
                    poly_c c) {
    switch (kind) {
    case LA_FMAP_IDENTITY:
        memcpy(y, x, (size_t)F * sizeof(float));
        return;
    case LA_FMAP_ELU1:
        for (int64_t i = 0; i < F; i++) y[i] = x[i] > 0.0f ? x[i] + 1.0f : la_expf(x[i]);
        return;
    case LA_FMAP_RELU:
        for (int64_t i = 0; i < F; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        return;
    case LA_FMAP_TAYLOR2:
    case LA_FMAP_QUADRATIC: {
        int64_t p = 0;
        if (kind == LA_FMAP_TAYLOR2) {
            y[p++] = 1.0f;
            for (int64_t i = 0; i < F; i++) y[p++] = x[i] * c.c1;
        }
        for (int64_t i = 0; i < F; i++) y[p + i] = x[i] * x[i] * c.cd;
        p += F;
        for (int64_t i = 0; i < F; i++) {
            const float xi = x[i] * c.co;
            for (int64_t j = i + 1; j < F; j++) y[p + j - i - 1] = xi * x[j];
            p += F - i - 1;
        }
        return;
    }
    case LA_FMAP_HEDGEHOG:
        return;  // block code below
    }
}

LA_CLONES
static void row_bwd(float * restrict dx, const float * restrict dy, const float * restrict x,
                    la_fmap kind, int64_t F, poly_c c) {
    switch (kind) {
    case LA_FMAP_IDENTITY:
        memcpy(dx, dy, (size_t)F * sizeof(float));
        return;
    case LA_FMAP_ELU1:
        for (int64_t i = 0; i < F; i++) dx[i] = x[i] > 0.0f ? dy[i] : dy[i] * la_expf(x[i]);
        return;
    case LA_FMAP_RELU:
        for (int64_t i = 0; i < F; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
        return;
    case LA_FMAP_TAYLOR2:
    case LA_FMAP_QUADRATIC: {
        int64_t p = 0;
        if (kind == LA_FMAP_TAYLOR2) {
            p = 1;  // the constant feature has no gradient
            for (int64_t i = 0; i < F; i++) dx[i] = dy[p + i] * c.c1;
            p += F;
        } else {
            for (int64_t i = 0; i < F; i++) dx[i] = 0.0f;
        }
        // y_ii = cd x_i^2  ->  dx_i += 2 cd x_i dy_ii
        for (int64_t i = 0; i < F; i++) dx[i] += 2.0f * c.cd * x[i] * dy[p + i];
        p += F;
        // y_ij = co x_i x_j (i < j)  ->  dx_i += co x_j dy_ij, dx_j += co x_i dy_ij
        for (int64_t i = 0; i < F; i++) {
            const float * restrict dyi = dy + p - i - 1;  // dyi[j] = dy_ij for j > i
            float acc = 0.0f;
            const float xi = x[i] * c.co;
            for (int64_t j = i + 1; j < F; j++) {
                acc += dyi[j] * x[j];
                dx[j] += xi * dyi[j];
            }
            dx[i] += c.co * acc;
            p += F - i - 1;
        }
        return;
    }
    case LA_FMAP_HEDGEHOG:
        return;
    }
}

// ---------------------------------------------------------------------------------------------
// HEDGEHOG on a block of Lb rows of head h.

typedef struct hh_args {
    const float * x, * W, * bias, * dy;  // (rows,H,F), (H,F,F), (H,F) or NULL, (rows,H,2F)
    float *       y, * dx, * dW, * dbias;
    int64_t       rows, H, F, nblk;
    bool          accumulate;
} hh_args;

// u (Lb rows, stride ld) holds 2 (x W^T) on entry: adds 2 b and returns the row's softmax
// statistics over [u, -u]: m = max |u_i| (the larger of the two halves' maxima) and the sum
// of exp(+-u_i - m), so every exponent is <= 0.
static void hh_stats(const float * restrict u, int64_t F, float * m_out, float * sum_out) {
    float m = 0.0f;
    for (int64_t i = 0; i < F; i++) m = fmaxf(m, fabsf(u[i]));
    float s = 0.0f;
    for (int64_t i = 0; i < F; i++) s += la_expf(u[i] - m) + la_expf(-u[i] - m);
    *m_out = m;
    *sum_out = s;
}

// 2 (x W_h^T + b_h) for rows [r0, r0 + Lb) of head h into u (row stride ldu).
static void hh_logits(const hh_args * a, int64_t r0, int64_t Lb, int64_t h, float * u,
                      int64_t ldu) {
    const int64_t F = a->F, ldx = a->H * F;
    la_kern()->gemm(false, true, Lb, F, F, 2.0f, a->x + (r0 * a->H + h) * F, ldx,
                    a->W + h * F * F, F, 0.0f, u, ldu);
    if (a->bias) {
        const float * restrict b = a->bias + h * F;
        for (int64_t r = 0; r < Lb; r++)
            for (int64_t i = 0; i < F; i++) u[r * ldu + i] += 2.0f * b[i];
    }
}

LA_CLONES
static void hh_fwd_block(const hh_args * a, int64_t blk, int64_t h) {
    const int64_t F = a->F, r0 = blk * FMAP_RB, Lb = LA_MIN(FMAP_RB, a->rows - r0);
    const int64_t ldy = a->H * 2 * F;
    float * Y = a->y + (r0 * a->H + h) * 2 * F;
    hh_logits(a, r0, Lb, h, Y, ldy);  // u in the first F columns of each output row
    for (int64_t r = 0; r < Lb; r++) {
        float * restrict yr = Y + r * ldy;
        float m, s;
        hh_stats(yr, F, &m, &s);
        const float inv = 1.0f / s;
        for (int64_t i = 0; i < F; i++) {
            const float ui = yr[i];
            yr[F + i] = la_expf(-ui - m) * inv;
            yr[i] = la_expf(ui - m) * inv;
        }
    }
}

// dz for the block into Z (Lb, F) dense, then dx = dz W_h.
LA_CLONES
static void hh_bwd_block(const hh_args * a, int64_t blk, int64_t h, float * restrict Z) {
    const int64_t F = a->F, H = a->H, r0 = blk * FMAP_RB, Lb = LA_MIN(FMAP_RB, a->rows - r0);
    hh_logits(a, r0, Lb, h, Z, F);
    for (int64_t r = 0; r < Lb; r++) {
        float * restrict zr = Z + r * F;
        const float * restrict dyr = a->dy + ((r0 + r) * H + h) * 2 * F;
        float m, s;
        hh_stats(zr, F, &m, &s);
        const float inv = 1.0f / s;
        // y.dy over both halves, then du = y o (dy - y.dy) and dz = 2 du_+ - 2 du_-.
        float yd = 0.0f;
        for (int64_t i = 0; i < F; i++)
            yd += la_expf(zr[i] - m) * inv * dyr[i] + la_expf(-zr[i] - m) * inv * dyr[F + i];
        for (int64_t i = 0; i < F; i++) {
            const float yp = la_expf(zr[i] - m) * inv, ym = la_expf(-zr[i] - m) * inv;
            zr[i] = 2.0f * (yp * (dyr[i] - yd) - ym * (dyr[F + i] - yd));
        }
    }
    // dx = dz W_h   (x was mapped by z = x W_h^T)
    la_kern()->gemm(false, false, Lb, F, F, 1.0f, Z, F, a->W + h * F * F, F, 0.0f,
                    a->dx + (r0 * H + h) * F, H * F);
}

// Head h, every block in order: dx, and dW_h, db_h summed over the blocks in block order.
static void hh_bwd_head(const hh_args * a, int64_t h, float * restrict Z) {
    const int64_t F = a->F, H = a->H;
    float * dWh = a->dW ? a->dW + h * F * F : NULL;
    float * dbh = a->dbias ? a->dbias + h * F : NULL;
    if (!a->accumulate) {
        if (dWh) memset(dWh, 0, (size_t)(F * F) * sizeof(float));
        if (dbh) memset(dbh, 0, (size_t)F * sizeof(float));
    }
    for (int64_t blk = 0; blk < a->nblk; blk++) {
        const int64_t r0 = blk * FMAP_RB, Lb = LA_MIN(FMAP_RB, a->rows - r0);
        hh_bwd_block(a, blk, h, Z);
        // dW_h += dz^T x   (F, F), rows of the block summed by the GEMM
        if (dWh)
            la_kern()->gemm(true, false, F, F, Lb, 1.0f, Z, F, a->x + (r0 * H + h) * F, H * F,
                            1.0f, dWh, F);
        if (dbh)
            for (int64_t r = 0; r < Lb; r++)
                for (int64_t i = 0; i < F; i++) dbh[i] += Z[r * F + i];
    }
}

// ---------------------------------------------------------------------------------------------
// Public entry points

static la_status fmap_check(la_fmap kind, int64_t rows, int64_t H, int64_t F, const float * W,
                            const float * bias) {
    if (rows < 0 || H < 1 || F < 1) return LA_STATUS_SHAPE;
    if (la_fmap_dim(kind, F) == 0) return LA_STATUS_INVALID_ARG;  // not an la_fmap value
    if (kind == LA_FMAP_HEDGEHOG) {
        if (!W) return LA_STATUS_INVALID_ARG;
    } else if (W || bias) {
        return LA_STATUS_INVALID_ARG;  // only Hedgehog has parameters
    }
    return LA_STATUS_OK;
}

la_status la_fmap_forward(float * y, const float * x, const float * W, const float * bias,
                          la_fmap kind, int64_t rows, int64_t H, int64_t F) {
    la_status st = fmap_check(kind, rows, H, F, W, bias);
    if (st != LA_STATUS_OK) return st;
    if (rows == 0) return LA_STATUS_OK;
    if (!y || !x) return LA_STATUS_INVALID_ARG;
    if (kind == LA_FMAP_HEDGEHOG) {
        hh_args a = { .x = x, .W = W, .bias = bias, .y = y, .rows = rows, .H = H, .F = F,
                      .nblk = (rows + FMAP_RB - 1) / FMAP_RB };
        const int64_t ntask = a.nblk * H;
#pragma omp parallel for schedule(static) num_threads(la_slots(ntask))
        for (int64_t task = 0; task < ntask; task++) hh_fwd_block(&a, task / H, task % H);
        return LA_STATUS_OK;
    }
    const int64_t D = la_fmap_dim(kind, F), nvec = rows * H;
    const poly_c c = poly_consts(kind, F);
    if (nvec * D < FMAP_PAR_MIN) {  // no parallel region at all (not even a team of one)
        for (int64_t e = 0; e < nvec; e++) row_fwd(y + e * D, x + e * F, kind, F, c);
        return LA_STATUS_OK;
    }
#pragma omp parallel for schedule(static) num_threads(la_slots(nvec))
    for (int64_t e = 0; e < nvec; e++) row_fwd(y + e * D, x + e * F, kind, F, c);
    return LA_STATUS_OK;
}

la_status la_fmap_backward(float * dx, float * dW, float * dbias, const float * dy,
                           const float * x, const float * W, const float * bias,
                           la_fmap kind, int64_t rows, int64_t H, int64_t F, bool accumulate) {
    la_status st = fmap_check(kind, rows, H, F, W, bias);
    if (st != LA_STATUS_OK) return st;
    if (kind != LA_FMAP_HEDGEHOG && (dW || dbias)) return LA_STATUS_INVALID_ARG;
    if (rows > 0 && (!dx || !dy || !x)) return LA_STATUS_INVALID_ARG;
    if (kind != LA_FMAP_HEDGEHOG) {
        const int64_t D = la_fmap_dim(kind, F), nvec = rows * H;
        const poly_c c = poly_consts(kind, F);
        if (nvec * D < FMAP_PAR_MIN) {
            for (int64_t e = 0; e < nvec; e++)
                row_bwd(dx + e * F, dy + e * D, x + e * F, kind, F, c);
            return LA_STATUS_OK;
        }
#pragma omp parallel for schedule(static) num_threads(la_slots(nvec))
        for (int64_t e = 0; e < nvec; e++) row_bwd(dx + e * F, dy + e * D, x + e * F, kind, F, c);
        return LA_STATUS_OK;
    }
    // Without a bias, dbias (when asked for) is the gradient at b = 0.
    hh_args a = { .x = x, .W = W, .bias = bias, .dy = dy, .dx = dx, .dW = dW, .dbias = dbias,
                  .rows = rows, .H = H, .F = F, .nblk = (rows + FMAP_RB - 1) / FMAP_RB,
                  .accumulate = accumulate };
    const bool params = a.dW || a.dbias;
    // With parameter gradients one task per head sums its blocks in order; otherwise the
    // (block, head) pairs are independent. dx comes out of the same block code either way.
    const int64_t ntask = params ? H : a.nblk * H;
    bool fail = false;
#pragma omp parallel num_threads(la_slots(ntask)) reduction(|| : fail)
    {
        float * Z = malloc((size_t)(FMAP_RB * F) * sizeof(float));  // (RB, F) dz of one block
        fail = Z == NULL;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < ntask; task++) {
            if (!Z) continue;
            if (params) hh_bwd_head(&a, task, Z);
            else hh_bwd_block(&a, task / H, task % H, Z);
        }
        free(Z);
    }
    return fail ? LA_STATUS_NOMEM : LA_STATUS_OK;
}
