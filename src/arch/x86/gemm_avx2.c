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
// Blocking (the scheme of gemm_avx512.c, whose header gives the reasons; M, N, Kd of 32 .. 256):
//   for each KC block of Kd                                 (KC = 256)
//     for each NC block of N: pack op(B) into NR-wide panels, [kc][NR] each, zero-padded
//                                                           (NC chosen so the block is <= 64 KiB)
//       for each MR row panel of C (A read in place; only a last partial panel is packed)
//         for each NR panel: MR x NR microkernel, kc rank-1 updates, then C at store time
// Only the first KC block applies beta; later ones add. A is only ever broadcast, so it is read
// in place (rows, or adjacent floats with trans_a): packing it measured slower at these sizes.
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
#include "internal.h"

#include <immintrin.h>

enum {
    MR = 6,                       // register tile rows
    NR = 16,                      // register tile columns (2 ymm)
    KC = 256,                     // Kd block
    BPACK_FLOATS = 16 * 1024,     // 64 KiB packed op(B) block
    APACK_FLOATS = MR * KC,       // 6 KiB partial op(A) panel
};
_Static_assert((BPACK_FLOATS + APACK_FLOATS) * sizeof(float) <= LA_GEMM_STACK_BYTES,
               "gemm_avx2 stack scratch exceeds LA_GEMM_STACK_BYTES");

// ---------------------------------------------------------------------------------------------
// Packing

// In-register 8x8 transpose: on return r[c] holds column c of the input rows r[0..7].
static inline void transpose_8x8_regs(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// op(B) with trans_b: B block [nr, kc] contiguous along k -> one panel dst [kc][NR], with zero
// columns past nr (8x8 transposes, scalar for the ragged rim).
static void pack_b_trans(const float * restrict src, int64_t ldb, int64_t nr, int64_t kc,
                         float * restrict dst) {
    const int64_t r8 = nr & ~(int64_t)7, k8 = kc & ~(int64_t)7;
    for (int64_t r = 0; r < r8; r += 8) {
        for (int64_t k = 0; k < k8; k += 8) {
            __m256 v[8];
            for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_ps(src + (r + i) * ldb + k);
            transpose_8x8_regs(v);
            for (int i = 0; i < 8; i++) _mm256_store_ps(dst + (k + i) * NR + r, v[i]);
        }
        for (int64_t k = k8; k < kc; k++) {
            for (int64_t i = 0; i < 8; i++) dst[k * NR + r + i] = src[(r + i) * ldb + k];
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        for (int64_t r = r8; r < nr; r++) dst[k * NR + r] = src[r * ldb + k];
        for (int64_t r = nr; r < NR; r++) dst[k * NR + r] = 0.0f;
    }
}

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

// The last, partial row panel of op(A) (mr < MR rows) -> dst [kc][MR], zero rows past mr. Full
// panels are read in place (see the file header); this is edge code, so plain loops.
static void pack_a_edge(bool trans_a, const float * restrict A, int64_t lda, int64_t mr,
                        int64_t kc, float * restrict dst) {
    for (int64_t k = 0; k < kc; k++) {
        for (int64_t i = 0; i < MR; i++) {
            dst[k * MR + i] = i >= mr ? 0.0f : trans_a ? A[k * lda + i] : A[i * lda + k];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Microkernel

// C[0:mr, 0:nr] = alpha * op(A)[tile] op(B)[panel] + beta * C, where op(A)[i, k] is
// a[i * a_rs + k * a_cs] (packed [kc][MR] panel: a_rs = 1, a_cs = MR; A in place: a_rs = lda,
// a_cs = 1, or with trans_a a_rs = 1, a_cs = lda) and b is the packed [kc][NR] op(B) panel
// (32-byte aligned). beta == 0 never reads C. Always inlined into callers with constant strides.
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
// Driver

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
    if (M <= 0 || N <= 0) return;
    if (Kd <= 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }

    _Alignas(64) float bpack[BPACK_FLOATS];  // [nc / NR][kc][NR] packed op(B) block
    _Alignas(64) float apack[APACK_FLOATS];  // [kc][MR] partial op(A) panel

    for (int64_t pc = 0; pc < Kd; pc += KC) {
        const int64_t kc = LA_MIN(KC, Kd - pc);
        const float   beta_pc = pc == 0 ? beta : 1.0f;  // later K blocks accumulate
        const int64_t nc_max = (BPACK_FLOATS / kc) / NR * NR;
        for (int64_t jc = 0; jc < N; jc += nc_max) {
            const int64_t nc = LA_MIN(nc_max, N - jc);

            // op(B)[pc : pc+kc, jc : jc+nc] -> NR-wide panels [kc][NR].
            if (trans_b) {
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    pack_b_trans(B + (jc + jr) * ldb + pc, ldb, LA_MIN(NR, nc - jr), kc,
                                 bpack + jr * kc);
                }
            } else {
                pack_b_notrans(B + pc * ldb + jc, ldb, nc, kc, bpack);
            }

            for (int64_t ir = 0; ir < M; ir += MR) {
                const int64_t mr = LA_MIN(MR, M - ir);
                float * restrict c = C + ir * ldc + jc;
                if (mr == MR) {
                    // A full row panel is read in place (see the file header).
                    if (trans_a) {
                        const float * restrict a = A + pc * lda + ir;
                        for (int64_t jr = 0; jr < nc; jr += NR) {
                            ukernel_6x16(kc, a, 1, lda, bpack + jr * kc, c + jr, ldc, MR,
                                         LA_MIN(NR, nc - jr), alpha, beta_pc);
                        }
                    } else {
                        const float * restrict a = A + ir * lda + pc;
                        for (int64_t jr = 0; jr < nc; jr += NR) {
                            ukernel_6x16(kc, a, lda, 1, bpack + jr * kc, c + jr, ldc, MR,
                                         LA_MIN(NR, nc - jr), alpha, beta_pc);
                        }
                    }
                    continue;
                }
                // The last, partial row panel: packed with zero rows, so nothing past A is read.
                pack_a_edge(trans_a, trans_a ? A + pc * lda + ir : A + ir * lda + pc, lda, mr, kc,
                            apack);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    ukernel_6x16(kc, apack, 1, MR, bpack + jr * kc, c + jr, ldc, mr,
                                 LA_MIN(NR, nc - jr), alpha, beta_pc);
                }
            }
        }
    }
}
