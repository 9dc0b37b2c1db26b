// Internal helpers shared by the layer toolkit (src/nn): stable sigmoid pairs and the
// activation derivatives built from them, the parallel blocked GEMM behind Linear and the MLP,
// and the fixed work splits that keep every result independent of the thread count.
//
// Determinism rule of src/nn: work is cut into blocks whose size depends only on the problem
// (never on la_nthreads()), each block is computed by one thread with the same code, and every
// reduction over blocks runs in block order. The thread count then only decides which thread
// computes a block, never what it computes.
#ifndef LA_NN_H
#define LA_NN_H

#include "internal.h"
#include "vexp.h"

#include <math.h>

// ---------------------------------------------------------------------------------------------
// Sigmoid pairs without cancellation or overflow
//
// With e = exp(-|x|) in (0, 1] and r = 1 / (1 + e):
//   sigma(x)  = r      (x >= 0)  or  e r  (x < 0)
//   sigma(-x) = e r    (x >= 0)  or  r    (x < 0)
// so 1 - sigma(x) is never formed by a subtraction (for x = 20 it is 2e-9, which 1 - 0.99999...
// would round to 0) and exp never overflows (for x = -100, exp(-x) = inf and inf / inf = NaN).

static inline void la_nn_sigmoid2(float x, float * s, float * sm) {
    const float e = la_expf(-fabsf(x));
    const float r = 1.0f / (1.0f + e);
    const float er = e * r;
    *s = x >= 0.0f ? r : er;
    *sm = x >= 0.0f ? er : r;
}

// SiLU(x) = x sigma(x)
static inline float la_nn_silu(float x) {
    float s, sm;
    la_nn_sigmoid2(x, &s, &sm);
    return x * s;
}

// SiLU'(x) = sigma(x) (1 + x (1 - sigma(x))) = sigma(x) (1 + x sigma(-x))
static inline float la_nn_silu_grad(float x) {
    float s, sm;
    la_nn_sigmoid2(x, &s, &sm);
    return s * (1.0f + x * sm);
}

// SiLU(x) and SiLU'(x) from one exponential.
static inline void la_nn_silu_and_grad(float x, float * f, float * df) {
    float s, sm;
    la_nn_sigmoid2(x, &s, &sm);
    *f = x * s;
    *df = s * (1.0f + x * sm);
}

// ---------------------------------------------------------------------------------------------
// Parallel GEMM over fixed tiles of C
//
// Row-major C[M,N] = op(A)[M,Kd] op(B)[Kd,N] + beta C through la_sgemm (alpha = 1), cut into
// tiles of at most mb x nb that are computed by one la_sgemm call each. The tiles depend on
// the shape only, so the sum over Kd for every element of C is the same call (same kernel,
// same order) for any thread count. beta is 0 (overwrite; C is never read) or 1
// (accumulate).
void la_nn_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd,
                const float * A, int64_t lda, const float * B, int64_t ldb, float beta,
                float * C, int64_t ldc, int64_t mb, int64_t nb);

// Largest row tile of the activation GEMMs (x W^T and friends: M = rows).
#define LA_NN_GEMM_ROWS 512
// Largest tile of the weight-gradient GEMMs (dW = dy^T x: M, N = weight dims, Kd = rows).
#define LA_NN_GEMM_TILE 512
// la_nn_gemm halves its tiles until a call has this many (or they reach 128 x 256).
#define LA_NN_MIN_TILES 8

// Fixed blocks of rows for row-parallel passes whose per-row results are independent.
#define LA_NN_ROW_BLOCK 16
// Fixed blocks of channels for passes that reduce over rows per channel (one block = one task
// that walks all rows in order).
#define LA_NN_CHAN_BLOCK 256

// Number of fixed row blocks for parameter-gradient partial sums over `rows` rows: at most
// LA_NN_MAX_PARTS blocks of at least LA_NN_ROW_BLOCK rows; depends on rows only.
#define LA_NN_MAX_PARTS 64
static inline int64_t la_nn_part_rows(int64_t rows) {
    int64_t rb = (rows + LA_NN_MAX_PARTS - 1) / LA_NN_MAX_PARTS;
    return rb < LA_NN_ROW_BLOCK ? LA_NN_ROW_BLOCK : rb;
}

// Elementwise work (values) below which a pass runs on one thread.
#define LA_NN_PAR_MIN (1 << 15)

// Threads for a pass of ntask tasks and `work` elementwise operations.
static inline int32_t la_nn_threads(int64_t ntask, int64_t work) {
    return work < LA_NN_PAR_MIN ? 1 : la_slots(ntask);
}

// sum_j x[j]^2 in double, in 8 independent lanes (a fixed order the compiler can vectorise).
static inline double la_nn_sumsq(const float * restrict x, int64_t n) {
    double acc[8] = { 0 };
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += (double)x[j + l] * (double)x[j + l];
    for (int l = 0; j + l < n; l++) acc[l] += (double)x[j + l] * (double)x[j + l];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// sum_j x[j] y[j] in double, same lanes.
static inline double la_nn_dot(const float * restrict x, const float * restrict y, int64_t n) {
    double acc[8] = { 0 };
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += (double)x[j + l] * (double)y[j + l];
    for (int l = 0; j + l < n; l++) acc[l] += (double)x[j + l] * (double)y[j + l];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

#endif  // LA_NN_H
