// AVX2 + FMA small GEMM: row-major C[M,N] = alpha * op(A)[M,Kd] * op(B)[Kd,N] + beta * C.
//
// Contract: internal.h ("Small GEMM"); la_gemm_ref in src/core/gemm.c is the oracle. Built with
// -mavx2 -mfma; called only on CPUs that have them.
//
// Dimensions: M rows of C, N columns, Kd the reduction length; MR x NR is the register tile.
//   A: [M, Kd] (lda >= Kd) or, with trans_a, [Kd, M] (lda >= M)
//   B: [Kd, N] (ldb >= N)  or, with trans_b, [N, Kd] (ldb >= Kd)
//   C: [M, N]  (ldc >= N)
//
// Blocking: the shared driver of gemm_driver.h (KC = 256 blocks of Kd, op(B) packed into
// NR-wide panels in a 64 KiB block, full MR row panels of A read in place, only a last partial
// panel packed; beta on the first KC block only). This file supplies the AVX2 pieces: the tile,
// the microkernel, the non-transposing B pack, the beta-only C update and the stack scratch.
//
// Register blocking: MR = 6 rows x NR = 16 columns (2 ymm per row) = 12 ymm accumulators, plus 2
// for B and 1 for the broadcast: 15 of the 16 ymm registers (the Haswell-era BLIS/OpenBLAS tile).
// Per k, 2 loads of B and 6 broadcasts feed 12 FMAs; 12 chains cover 2 FMA ports x 4-5 cycles.
//
// Edges: op(B) is packed zero-padded to NR and a partial row panel of op(A) to MR, so the
// microkernel always computes a full tile; edge tiles go through a small stack tile and are
// written element by element, never touching memory outside C[0:M, 0:N]. beta == 0 never reads
// C (it may hold NaN); alpha == 0 or Kd == 0 gives C = beta * C without reading A or B, as in BLAS.
//
// Scratch: one 64 KiB op(B) block and one 6 KiB op(A) panel on the stack (<= LA_GEMM_STACK_BYTES).
#include "gemm_driver.h"

enum {
    MR = 6,                       // register tile rows
    NR = 16,                      // register tile columns (2 ymm)
    BPACK_FLOATS = 16 * 1024,     // 64 KiB packed op(B) block
    APACK_FLOATS = MR * GEMM_KC,  // 6 KiB partial op(A) panel
};
_Static_assert((BPACK_FLOATS + APACK_FLOATS) * sizeof(float) <= LA_GEMM_STACK_BYTES,
               "gemm_avx2 stack scratch exceeds LA_GEMM_STACK_BYTES");

// ---------------------------------------------------------------------------------------------
// Packing

// Lane masks for _mm256_maskload_ps: the first n lanes (n = 0 .. 8) are set.
static inline __m256i lane_mask(int64_t n) {
    static const int32_t ones_then_zeros[16] = { -1, -1, -1, -1, -1, -1, -1, -1,
                                                 0,  0,  0,  0,  0,  0,  0,  0 };
    return _mm256_loadu_si256((const __m256i *)(ones_then_zeros + 8 - n));
}

// op(B) without trans_b: B block [kc, nc] is k-major already -> panels dst [nc / NR][kc][NR],
// zero columns past nc. Row by row across all panels, so each row of B is read once in order
// (panel by panel, a strided B, e.g. ldb = 1024, thrashed the L1 TLB).
static void pack_b_notrans(const float * restrict src, int64_t ldb, int64_t nc, int64_t kc,
                           float * restrict dst) {
    for (int64_t k = 0; k < kc; k++) {
        const float * restrict s = src + k * ldb;  // (nc)
        for (int64_t jr = 0; jr < nc; jr += NR) {
            float * restrict d = dst + jr * kc + k * NR;  // (NR)
            if (nc - jr >= NR) {
                _mm256_store_ps(d, _mm256_loadu_ps(s + jr));
                _mm256_store_ps(d + 8, _mm256_loadu_ps(s + jr + 8));
            } else {
                const int64_t nr = nc - jr;
                const __m256i m0 = lane_mask(LA_MIN(nr, 8)), m1 = lane_mask(LA_MAX(nr - 8, 0));
                _mm256_store_ps(d, _mm256_maskload_ps(s + jr, m0));
                _mm256_store_ps(d + 8, _mm256_maskload_ps(s + jr + 8, m1));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Microkernel

// The gemm_ukernel_fn of gemm_driver.h for a 6 x 16 tile: C[0:mr, 0:nr] = alpha * op(A)[tile]
// op(B)[panel] + beta * C, op(A)[i, k] at a[i * a_rs + k * a_cs], b the packed [kc][NR] op(B)
// panel (32-byte aligned). beta == 0 never reads C. Always inlined (through gemm_drive) with
// constant strides.
static inline __attribute__((always_inline)) void
ukernel_6x16(int64_t kc, const float * restrict a, int64_t a_rs, int64_t a_cs,
             const float * restrict b, float * restrict c, int64_t ldc, int64_t mr, int64_t nr,
             float alpha, float beta) {
    // acc[i][h] holds C[i, 8h : 8h+8]; constant trip counts let the compiler unroll the i loops
    // and keep all 12 in ymm registers.
    __m256 acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(b + k * NR), b1 = _mm256_load_ps(b + k * NR + 8);
        for (int i = 0; i < MR; i++) {
            const __m256 ai = _mm256_broadcast_ss(a + i * a_rs + k * a_cs);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }

    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; i++) {
            float * restrict ci = c + i * ldc;
            __m256 r0 = _mm256_mul_ps(va, acc[i][0]), r1 = _mm256_mul_ps(va, acc[i][1]);
            if (beta != 0.0f) {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
            }
            _mm256_storeu_ps(ci, r0);
            _mm256_storeu_ps(ci + 8, r1);
        }
        return;
    }
    // Edge tile: through a stack tile, element by element (rare at the chunk shapes).
    _Alignas(32) float t[MR][NR];
    for (int i = 0; i < MR; i++) {
        _mm256_store_ps(t[i], _mm256_mul_ps(va, acc[i][0]));
        _mm256_store_ps(t[i] + 8, _mm256_mul_ps(va, acc[i][1]));
    }
    for (int64_t i = 0; i < mr; i++) {
        float * restrict ci = c + i * ldc;
        if (beta != 0.0f) {
            for (int64_t j = 0; j < nr; j++) ci[j] = t[i][j] + beta * ci[j];
        } else {
            for (int64_t j = 0; j < nr; j++) ci[j] = t[i][j];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry point

// C <- beta * C for the alpha == 0 / Kd == 0 cases (beta == 0 writes zeros without reading).
static void scale_c(int64_t M, int64_t N, float beta, float * restrict C, int64_t ldc) {
    if (beta == 1.0f) return;
    for (int64_t i = 0; i < M; i++) {
        float * restrict ci = C + i * ldc;
        if (beta == 0.0f) {
            for (int64_t j = 0; j < N; j++) ci[j] = 0.0f;
        } else {
            for (int64_t j = 0; j < N; j++) ci[j] *= beta;
        }
    }
}

void la_gemm_avx2(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
                  const float * restrict A, int64_t lda, const float * restrict B, int64_t ldb,
                  float beta, float * restrict C, int64_t ldc) {
    _Alignas(64) float bpack[BPACK_FLOATS];  // [nc / NR][kc][NR] packed op(B) block
    _Alignas(64) float apack[APACK_FLOATS];  // [kc][MR] partial op(A) panel
    gemm_drive(MR, NR, ukernel_6x16, pack_b_notrans, scale_c, trans_a, trans_b, M, N, Kd, alpha,
               A, lda, B, ldb, beta, C, ldc, bpack, BPACK_FLOATS, apack);
}
