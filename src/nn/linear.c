// Linear, Embedding and the SwiGLU MLP (OPS.md 4.4, 4.5): the matrix layers of a block.
//
//   linear     y = x W^T + b            dx = dy W ;  dW = dy^T x ;  db = sum_rows dy
//   embedding  y[r] = table[ids[r]]     dtable[ids[r]] += dy[r]   (token order)
//   mlp        G = x Wg^T ; U = x Wu^T ; A = SiLU(G) o U ; y = A Wd^T
//              dWd = dy^T A ; dA = dy Wd ; dU = dA o SiLU(G) ; dG = dA o U o SiLU'(G)
//              dWg = dG^T x ; dWu = dU^T x ; dx = dG Wg + dU Wu
//
// Dimensions: rows (every leading axis flattened), in / out (Linear), D (model width) and I
// (MLP intermediate width), vocab and dim (Embedding). Weights are stored as torch stores them,
// (out, in), so every product is a row-major la_sgemm with op(B) = W^T or W.
//
// Threads and determinism: the GEMMs run through la_nn_gemm, whose tiles are fixed by the
// shape (nn.h), so each output element is one la_sgemm call's sum whatever the thread count.
// Weight gradients are GEMMs over all rows inside one tile, never partial sums per thread.
// Column sums (db) and the embedding scatter split the channels into fixed blocks and walk
// the rows in order inside each block.
//
// Pointers: an input is required when a requested output needs it (la_linear_backward reads x
// only for dW and W only for dx); a NULL gradient is skipped.
#include "nn.h"

#include <stdlib.h>

#define LA_NN_GEMM_COLS 4096  // largest column tile of the activation GEMMs

// ---------------------------------------------------------------------------------------------
// Parallel GEMM over fixed tiles (nn.h)

void la_nn_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd,
                const float * A, int64_t lda, const float * B, int64_t ldb, float beta,
                float * C, int64_t ldc, int64_t mb, int64_t nb) {
    if (M <= 0 || N <= 0) return;
    // Big tiles run near the BLAS kernel's speed (one thread, 2048 x 2816 x 1024: 512 x 4096
    // tiles 97% of one call, 512 x 2048 93%, 256 x 2048 88%, 128 x 2048 80%), but a call needs
    // enough tiles to feed the threads: tiles are halved, columns first (down to 1024), then
    // rows (down to 128), then columns (down to 256), until there are LA_NN_MIN_TILES. Only
    // the shape decides, never the thread count.
    int64_t tm = (M + mb - 1) / mb, tn = (N + nb - 1) / nb;
    while (tm * tn < LA_NN_MIN_TILES) {
        if (nb > 1024 && N > nb / 2) nb /= 2;
        else if (mb > 128 && M > mb / 2) mb /= 2;
        else if (nb > 256 && N > nb / 2) nb /= 2;
        else break;
        tm = (M + mb - 1) / mb;
        tn = (N + nb - 1) / nb;
    }
    const int64_t ntile = tm * tn;
    // Below ~2^20 multiply-adds a second thread costs more than it saves.
    const int32_t nt = (double)M * (double)N * (double)Kd < 1048576.0 ? 1 : la_slots(ntile);
    (void)nt;  // read by the pragma only (unused without OpenMP)
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t t = 0; t < ntile; t++) {
        const int64_t m0 = (t / tn) * mb, n0 = (t % tn) * nb;
        const int64_t mm = LA_MIN(mb, M - m0), nn = LA_MIN(nb, N - n0);
        const float * At = trans_a ? A + m0 : A + m0 * lda;  // op(A) rows m0 .. m0 + mm
        const float * Bt = trans_b ? B + n0 * ldb : B + n0;  // op(B) columns n0 .. n0 + nn
        la_sgemm(trans_a, trans_b, mm, nn, Kd, 1.0f, At, lda, Bt, ldb, beta, C + m0 * ldc + n0,
                 ldc);
    }
}

// Activation GEMM: C (M, N) = op(A) op(B), M = rows.
// A few rows (decode steps): C = A B^T is bound by reading B (the weight) once, which a GEMM
// call does at a fraction of the bandwidth. Each output is the dot product of one contiguous
// row of B with a row of A, in 16 fixed lanes; columns are split in fixed blocks, so the result
// does not depend on the thread count.
#define GEMV_ROWS 4
#define GEMV_BLOCK 64

LA_CLONES
static void gemv_block(int64_t M, int64_t N, int64_t Kd, const float * A, int64_t lda,
                       const float * B, int64_t ldb, float beta, float * C, int64_t ldc,
                       int64_t n0) {
    const int64_t n1 = LA_MIN(N, n0 + GEMV_BLOCK);
    for (int64_t n = n0; n < n1; n++)
        for (int64_t r = 0; r < M; r++) {
            const float d = la_dot_lanes(B + n * ldb, A + r * lda, Kd);
            C[r * ldc + n] = beta != 0.0f ? C[r * ldc + n] + d : d;
        }
}

static void gemm_act(bool trans_b, int64_t M, int64_t N, int64_t Kd, const float * A,
                     int64_t lda, const float * B, int64_t ldb, float beta, float * C,
                     int64_t ldc) {
    if (trans_b && M <= GEMV_ROWS) {
        const int64_t nb = (N + GEMV_BLOCK - 1) / GEMV_BLOCK;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(nb, N * Kd))
        for (int64_t blk = 0; blk < nb; blk++)
            gemv_block(M, N, Kd, A, lda, B, ldb, beta, C, ldc, blk * GEMV_BLOCK);
        return;
    }
    la_nn_gemm(false, trans_b, M, N, Kd, A, lda, B, ldb, beta, C, ldc, LA_NN_GEMM_ROWS,
               LA_NN_GEMM_COLS);
}

// Weight-gradient GEMM: dW (M, N) (+)= G^T X with G (rows, M), X (rows, N): a sum over rows.
static void gemm_wgrad(int64_t M, int64_t N, int64_t rows, const float * G, const float * X,
                       float * dW, bool accumulate) {
    la_nn_gemm(true, false, M, N, rows, G, M, X, N, accumulate ? 1.0f : 0.0f, dW, N,
               LA_NN_GEMM_TILE, LA_NN_GEMM_TILE);
}

// out (cols) (+)= sum over rows of m (rows, cols), in double, rows in order per column.
LA_CLONES
static void colsum_block(float * out, const float * m, int64_t rows, int64_t cols, int64_t c0,
                         bool accumulate) {
    double acc[LA_NN_CHAN_BLOCK] = { 0 };
    const int64_t w = LA_MIN(LA_NN_CHAN_BLOCK, cols - c0);
    for (int64_t r = 0; r < rows; r++) {
        const float * restrict mr = m + r * cols + c0;
        for (int64_t c = 0; c < w; c++) acc[c] += (double)mr[c];
    }
    for (int64_t c = 0; c < w; c++)
        out[c0 + c] = (float)(accumulate ? (double)out[c0 + c] + acc[c] : acc[c]);
}

static void colsum(float * out, const float * m, int64_t rows, int64_t cols, bool accumulate) {
    const int64_t nb = (cols + LA_NN_CHAN_BLOCK - 1) / LA_NN_CHAN_BLOCK;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(nb, rows * cols))
    for (int64_t b = 0; b < nb; b++)
        colsum_block(out, m, rows, cols, b * LA_NN_CHAN_BLOCK, accumulate);
}

// ---------------------------------------------------------------------------------------------
// Linear

la_status la_linear_forward(float * y, const float * x, const float * W, const float * b,
                            int64_t rows, int64_t in, int64_t out) {
    if (rows <= 0 || in <= 0 || out <= 0) return LA_STATUS_SHAPE;
    if (!y || !x || !W) return LA_STATUS_INVALID_ARG;

    // torch.addmm(b, x, W^T): y starts as b in every row and the GEMM adds x W^T (beta = 1).
    if (b) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * out))
        for (int64_t r = 0; r < rows; r++) memcpy(y + r * out, b, (size_t)out * sizeof(float));
    }
    gemm_act(true, rows, out, in, x, in, W, in, b ? 1.0f : 0.0f, y, out);
    return LA_STATUS_OK;
}

la_status la_linear_backward(float * dx, float * dW, float * db, const float * dy,
                             const float * x, const float * W, int64_t rows, int64_t in,
                             int64_t out, bool accumulate) {
    if (rows <= 0 || in <= 0 || out <= 0) return LA_STATUS_SHAPE;
    if (!dy || (dW && !x) || (dx && !W)) return LA_STATUS_INVALID_ARG;
    if (dx) gemm_act(false, rows, in, out, dy, out, W, in, 0.0f, dx, in);  // dx = dy W
    if (dW) gemm_wgrad(out, in, rows, dy, x, dW, accumulate);              // dW = dy^T x
    if (db) colsum(db, dy, rows, out, accumulate);                         // db = 1^T dy
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// Embedding

static bool ids_valid(const int64_t * ids, int64_t n, int64_t vocab) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab) return false;
    return true;
}

la_status la_embedding_forward(float * y, const int64_t * ids, const float * table, int64_t n,
                               int64_t vocab, int64_t dim) {
    if (n <= 0 || vocab <= 0 || dim <= 0) return LA_STATUS_SHAPE;
    if (!y || !ids || !table) return LA_STATUS_INVALID_ARG;
    if (!ids_valid(ids, n, vocab)) return LA_STATUS_INVALID_ARG;  // before anything is written
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(n, n * dim))
    for (int64_t r = 0; r < n; r++)
        memcpy(y + r * dim, table + ids[r] * dim, (size_t)dim * sizeof(float));
    return LA_STATUS_OK;
}

// Channels c0 .. c0 + w of dtable: cleared (unless accumulating), then dy scattered in token
// order, so a row hit by several tokens sums them in the order they appear.
static void embed_bwd_block(float * dtable, const float * dy, const int64_t * ids, int64_t n,
                            int64_t vocab, int64_t dim, int64_t c0, bool accumulate) {
    const int64_t w = LA_MIN(LA_NN_CHAN_BLOCK, dim - c0);
    if (!accumulate)
        for (int64_t v = 0; v < vocab; v++)
            memset(dtable + v * dim + c0, 0, (size_t)w * sizeof(float));
    for (int64_t r = 0; r < n; r++) {
        float * restrict dt = dtable + ids[r] * dim + c0;
        const float * restrict g = dy + r * dim + c0;
        for (int64_t c = 0; c < w; c++) dt[c] += g[c];
    }
}

la_status la_embedding_backward(float * dtable, const float * dy, const int64_t * ids,
                                int64_t n, int64_t vocab, int64_t dim, bool accumulate) {
    if (n <= 0 || vocab <= 0 || dim <= 0) return LA_STATUS_SHAPE;
    if (!dy || !ids) return LA_STATUS_INVALID_ARG;
    if (!ids_valid(ids, n, vocab)) return LA_STATUS_INVALID_ARG;
    if (!dtable) return LA_STATUS_OK;
    const int64_t nb = (dim + LA_NN_CHAN_BLOCK - 1) / LA_NN_CHAN_BLOCK;
#pragma omp parallel for schedule(static) \
    num_threads(la_nn_threads(nb, (accumulate ? n : n + vocab) * dim))
    for (int64_t b = 0; b < nb; b++)
        embed_bwd_block(dtable, dy, ids, n, vocab, dim, b * LA_NN_CHAN_BLOCK, accumulate);
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// SwiGLU MLP
//
// Workspace: three (rows, I) buffers, carved 64-byte aligned. The forward uses two (G, then A
// over G; U). The backward recomputes G and U (nothing is saved from the forward), forms A in
// the third for dWd, then overwrites it with dA, and replaces G, U by dG, dU in place.

#define LA_MLP_ELEM_BLOCK 16384  // elementwise passes over (rows, I)

size_t la_mlp_workspace_size(int64_t rows, int64_t D, int64_t I) {
    if (rows <= 0 || D <= 0 || I <= 0) return 0;
    return 3 * la_align_up((size_t)rows * (size_t)I * sizeof(float)) + LA_ALIGN;
}

typedef struct mlp_bufs {
    float * G, * U, * A;  // (rows, I) each
    void *  owned;        // allocation to free, or NULL (caller's workspace)
} mlp_bufs;

static la_status mlp_bufs_get(mlp_bufs * mb, void * work, int64_t rows, int64_t I) {
    const size_t need = la_mlp_workspace_size(rows, 1, I);
    mb->owned = NULL;
    if (!work) {
        if (posix_memalign(&mb->owned, LA_ALIGN, need) != 0) return LA_STATUS_NOMEM;
        work = mb->owned;
    }
    // The public size has LA_ALIGN bytes of slack, so any alignment of work fits.
    la_carver cv = { (char *)work + (LA_ALIGN - (uintptr_t)work % LA_ALIGN) % LA_ALIGN, 0 };
    const size_t bytes = (size_t)rows * (size_t)I * sizeof(float);
    mb->G = la_carve(&cv, bytes);
    mb->U = la_carve(&cv, bytes);
    mb->A = la_carve(&cv, bytes);
    return LA_STATUS_OK;
}

// G (n) <- SiLU(G) o U
LA_CLONES
static void swiglu_block(float * restrict G, const float * restrict U, int64_t n) {
    for (int64_t i = 0; i < n; i++) G[i] = la_nn_silu(G[i]) * U[i];
}

// A (n) <- SiLU(G) o U, G and U kept
LA_CLONES
static void swiglu_copy_block(float * restrict A, const float * restrict G,
                              const float * restrict U, int64_t n) {
    for (int64_t i = 0; i < n; i++) A[i] = la_nn_silu(G[i]) * U[i];
}

// From A = SiLU(G) o U:  dG = dA o U o SiLU'(G) into G, dU = dA o SiLU(G) into U.
LA_CLONES
static void swiglu_bwd_block(float * restrict G, float * restrict U, const float * restrict dA,
                             int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float f, df;
        la_nn_silu_and_grad(G[i], &f, &df);
        G[i] = dA[i] * U[i] * df;
        U[i] = dA[i] * f;
    }
}

// The elementwise passes over n = rows * I values, in fixed blocks.
enum { SWIGLU_FWD, SWIGLU_COPY, SWIGLU_BWD };
static void swiglu_pass(int kind, float * G, float * U, float * A, int64_t n) {
    const int64_t nb = (n + LA_MLP_ELEM_BLOCK - 1) / LA_MLP_ELEM_BLOCK;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(nb, n))
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * LA_MLP_ELEM_BLOCK, m = LA_MIN(LA_MLP_ELEM_BLOCK, n - i0);
        if (kind == SWIGLU_FWD) swiglu_block(G + i0, U + i0, m);
        else if (kind == SWIGLU_COPY) swiglu_copy_block(A + i0, G + i0, U + i0, m);
        else swiglu_bwd_block(G + i0, U + i0, A + i0, m);
    }
}

la_status la_mlp_forward(float * y, const float * x, const float * Wg, const float * Wu,
                         const float * Wd, int64_t rows, int64_t D, int64_t I, void * work) {
    if (rows <= 0 || D <= 0 || I <= 0) return LA_STATUS_SHAPE;
    if (!y || !x || !Wg || !Wu || !Wd) return LA_STATUS_INVALID_ARG;
    mlp_bufs mb;
    la_status st = mlp_bufs_get(&mb, work, rows, I);
    if (st != LA_STATUS_OK) return st;
    gemm_act(true, rows, I, D, x, D, Wg, D, 0.0f, mb.G, I);  // G = x Wg^T   (rows, I)
    gemm_act(true, rows, I, D, x, D, Wu, D, 0.0f, mb.U, I);  // U = x Wu^T   (rows, I)
    swiglu_pass(SWIGLU_FWD, mb.G, mb.U, NULL, rows * I);     // A = SiLU(G) o U, over G
    gemm_act(true, rows, D, I, mb.G, I, Wd, I, 0.0f, y, D);  // y = A Wd^T   (rows, D)
    free(mb.owned);
    return LA_STATUS_OK;
}

la_status la_mlp_backward(float * dx, float * dWg, float * dWu, float * dWd, const float * dy,
                          const float * x, const float * Wg, const float * Wu, const float * Wd,
                          int64_t rows, int64_t D, int64_t I, bool accumulate, void * work) {
    if (rows <= 0 || D <= 0 || I <= 0) return LA_STATUS_SHAPE;
    if (!dy || !x || !Wg || !Wu || !Wd) return LA_STATUS_INVALID_ARG;
    if (!dx && !dWg && !dWu && !dWd) return LA_STATUS_OK;
    mlp_bufs mb;
    la_status st = mlp_bufs_get(&mb, work, rows, I);
    if (st != LA_STATUS_OK) return st;
    gemm_act(true, rows, I, D, x, D, Wg, D, 0.0f, mb.G, I);  // G = x Wg^T
    gemm_act(true, rows, I, D, x, D, Wu, D, 0.0f, mb.U, I);  // U = x Wu^T
    if (dWd) {
        swiglu_pass(SWIGLU_COPY, mb.G, mb.U, mb.A, rows * I);  // A = SiLU(G) o U
        gemm_wgrad(D, I, rows, dy, mb.A, dWd, accumulate);      // dWd = dy^T A   (D, I)
    }
    if (dx || dWg || dWu) {
        gemm_act(false, rows, I, D, dy, D, Wd, I, 0.0f, mb.A, I);  // dA = dy Wd  (rows, I)
        swiglu_pass(SWIGLU_BWD, mb.G, mb.U, mb.A, rows * I);      // G <- dG, U <- dU
        if (dWg) gemm_wgrad(I, D, rows, mb.G, x, dWg, accumulate);  // dWg = dG^T x  (I, D)
        if (dWu) gemm_wgrad(I, D, rows, mb.U, x, dWu, accumulate);  // dWu = dU^T x  (I, D)
        if (dx) {
            gemm_act(false, rows, D, I, mb.G, I, Wg, D, 0.0f, dx, D);  // dx = dG Wg
            gemm_act(false, rows, D, I, mb.U, I, Wu, D, 1.0f, dx, D);  //    + dU Wu
        }
    }
    free(mb.owned);
    return LA_STATUS_OK;
}
