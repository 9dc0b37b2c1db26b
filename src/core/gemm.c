// Portable reference small GEMM: row-major C[M,N] = alpha * op(A)[M,Kd] * op(B)[Kd,N] + beta * C.
//
// The contract is in internal.h ("Small GEMM"). This is the oracle and the fallback for CPUs
// without AVX2: plain loops in the order that keeps the innermost access unit-stride, built on
// two helpers (axpy, dot) that the compiler vectorises with the baseline ISA at -O2 (no ISA
// flags here). The tuned kernels live in src/arch/x86/gemm_avx2.c and gemm_avx512.c.
//
// Dimensions: M rows of C, N columns of C, Kd the reduction length.
//   A: [M, Kd] (lda >= Kd) or, with trans_a, [Kd, M] (lda >= M)
//   B: [Kd, N] (ldb >= N)  or, with trans_b, [N, Kd] (ldb >= Kd)
//   C: [M, N]  (ldc >= N)
//
// Numerics: C is first scaled by beta (beta == 0 writes zeros without reading C, so C may hold
// NaN), then alpha * op(A) op(B) is added. As in BLAS, alpha == 0 or Kd == 0 leaves C = beta * C
// without reading A or B.
#include "internal.h"

// y[0:n] += a * x[0:n]. Blocks of 8 with a constant trip count: -O2's "very cheap" vectoriser
// rejects a loop of unknown length (it would need an epilogue) but does vectorise these.
static inline void axpy(int64_t n, float a, const float * restrict x, float * restrict y) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        for (int64_t u = 0; u < 8; u++) y[j + u] += a * x[j + u];
    }
    for (; j < n; j++) y[j] += a * x[j];
}

// sum_k x[k] y[k] with 8 partial sums (vectorisable, and a shorter rounding chain than one sum).
static inline float dot(int64_t n, const float * restrict x, const float * restrict y) {
    float s[8] = { 0.0f };
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        for (int64_t u = 0; u < 8; u++) s[u] += x[k + u] * y[k + u];
    }
    float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; k < n; k++) t += x[k] * y[k];
    return t;
}

void la_gemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
                 const float * restrict A, int64_t lda, const float * restrict B, int64_t ldb,
                 float beta, float * restrict C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;

    // C <- beta * C. beta == 0 must not read C (it may hold NaN); beta == 1 is a no-op.
    if (beta == 0.0f) {
        for (int64_t i = 0; i < M; i++) {
            float * restrict c = C + i * ldc;  // (N)
            for (int64_t j = 0; j < N; j++) c[j] = 0.0f;
        }
    } else if (beta != 1.0f) {
        for (int64_t i = 0; i < M; i++) {
            float * restrict c = C + i * ldc;  // (N)
            for (int64_t j = 0; j < N; j++) c[j] *= beta;
        }
    }
    if (Kd <= 0 || alpha == 0.0f) return;

    if (!trans_b) {
        // C[i,:] += (alpha op(A)[i,k]) B[k,:]   (i-k-j: a row of C stays in L1 while rows of B
        // stream past it; op(A)[i,k] is A[i,k], or A[k,i] with trans_a)
        for (int64_t i = 0; i < M; i++) {
            float * restrict c = C + i * ldc;  // (N)
            for (int64_t k = 0; k < Kd; k++) {
                const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
                axpy(N, alpha * a, B + k * ldb, c);
            }
        }
    } else if (!trans_a) {
        // C[i,j] += alpha * dot(A[i,:], B[j,:]): both rows are contiguous in k.
        for (int64_t i = 0; i < M; i++) {
            const float * restrict a = A + i * lda;  // (Kd)
            float * restrict       c = C + i * ldc;  // (N)
            for (int64_t j = 0; j < N; j++) c[j] += alpha * dot(Kd, a, B + j * ldb);
        }
    } else {
        // C[i,j] += alpha * sum_k A[k,i] B[j,k]: B rows are contiguous in k; the column of A is
        // strided but reused for all N columns, so it stays in cache.
        for (int64_t i = 0; i < M; i++) {
            float * restrict c = C + i * ldc;  // (N)
            for (int64_t j = 0; j < N; j++) {
                const float * restrict b = B + j * ldb;  // (Kd)
                float s = 0.0f;
                for (int64_t k = 0; k < Kd; k++) s += A[k * lda + i] * b[k];
                c[j] += alpha * s;
            }
        }
    }
}
