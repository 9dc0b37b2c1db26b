// The blocked driver of the x86 small GEMMs (gemm_avx2.c, gemm_avx512.c), written once:
// row-major C[M,N] = alpha * op(A)[M,Kd] * op(B)[Kd,N] + beta * C.
//
// Contract: internal.h ("Small GEMM"); la_gemm_ref in src/core/gemm.c is the oracle. Included
// only by the ISA files, each compiled with its own -m flags (at least AVX: the shared
// transposing B pack below uses ymm), so everything here is static and compiles once per ISA.
//
// Dimensions: M rows of C, N columns, Kd the reduction length; MR x NR is the register tile.
//   A: [M, Kd] (lda >= Kd) or, with trans_a, [Kd, M] (lda >= M)
//   B: [Kd, N] (ldb >= N)  or, with trans_b, [N, Kd] (ldb >= Kd)
//   C: [M, N]  (ldc >= N)
//
// Blocking (BLIS-style, sized for the chunkwise shapes: M, N, Kd of 32 .. 256, operands in L2):
//   for each KC block of Kd                                 (KC = 256)
//     for each NC block of N: pack op(B) into NR-wide panels, [kc][NR] each, zero-padded
//                                                           (NC chosen so the block fits bpack)
//       for each MR row panel of C (A read in place; only a last partial panel is packed)
//         for each NR panel: MR x NR microkernel, kc rank-1 updates, then C at store time
// The packed B block (all of N for the chunk shapes) is reused by every row panel from L2; the
// row panel of A is reused by every B panel from L1. Only the first KC block applies beta; later
// ones add. gemm_avx512.c's header gives the measurements behind these choices (A not packed,
// B packed row by row).
//
// What each ISA file supplies (BLIS's split of a framework and its kernels): MR, NR, the
// microkernel, the non-transposing B pack, the beta-only C update and the stack scratch. They
// are compile-time constants at the one call of gemm_drive, which is always inlined, so the
// microkernel is inlined in turn with constant tile sizes and strides (the broadcasts of A become
// fixed addressing): the result is the same code as a driver written out per ISA.
//
// Edges: op(B) is packed zero-padded to NR and a partial row panel of op(A) to MR, so the
// microkernel always computes a full tile and only its store handles mr < MR, nr < NR, never
// touching memory outside C[0:M, 0:N]. beta == 0 never reads C (it may hold NaN); alpha == 0 or
// Kd == 0 gives C = beta * C without reading A or B, as in BLAS.
#ifndef LA_GEMM_DRIVER_H
#define LA_GEMM_DRIVER_H

#include "internal.h"

#include <immintrin.h>

enum { GEMM_KC = 256 };  // Kd block

// C[0:mr, 0:nr] = alpha * op(A)[tile] op(B)[panel] + beta * C, where op(A)[i, k] is
// a[i * a_rs + k * a_cs] (packed [kc][MR] panel: a_rs = 1, a_cs = MR; A in place: a_rs = lda,
// a_cs = 1, or with trans_a a_rs = 1, a_cs = lda) and b is the packed [kc][NR] op(B) panel
// (aligned to the vector width). beta == 0 never reads C.
typedef void gemm_ukernel_fn(int64_t kc, const float * restrict a, int64_t a_rs, int64_t a_cs,
                             const float * restrict b, float * restrict c, int64_t ldc,
                             int64_t mr, int64_t nr, float alpha, float beta);
// op(B) without trans_b: B block [kc, nc] (k-major already) -> panels dst [nc / NR][kc][NR],
// zero columns past nc.
typedef void gemm_pack_b_fn(const float * restrict src, int64_t ldb, int64_t nc, int64_t kc,
                            float * restrict dst);
// C <- beta * C (the alpha == 0 / Kd == 0 cases); beta == 0 writes zeros without reading C.
typedef void gemm_scale_c_fn(int64_t M, int64_t N, float beta, float * restrict C,
                             int64_t ldc);

// ---------------------------------------------------------------------------------------------
// Packing shared by both ISAs

// dst[c * ldd + r] = src[r * lds + c] for an 8x8 block (ymm: the unpack/shuffle/permute ladder).
static inline void gemm_transpose_8x8(const float * restrict src, int64_t lds,
                                      float * restrict dst, int64_t ldd) {
    __m256 r0 = _mm256_loadu_ps(src + 0 * lds), r1 = _mm256_loadu_ps(src + 1 * lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst + 0 * ldd, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + 1 * ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}

// op(B) with trans_b: B block [nr, kc] contiguous along k -> one panel dst [kc][NR], with zero
// columns past nr (8x8 transposes, scalar for the ragged rim).
static inline __attribute__((always_inline)) void
gemm_pack_b_trans(int64_t NR, const float * restrict src, int64_t ldb, int64_t nr, int64_t kc,
                  float * restrict dst) {
    const int64_t r8 = nr & ~(int64_t)7, k8 = kc & ~(int64_t)7;
    for (int64_t r = 0; r < r8; r += 8) {
        for (int64_t k = 0; k < k8; k += 8) {
            gemm_transpose_8x8(src + r * ldb + k, ldb, dst + k * NR + r, NR);
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

// The last, partial row panel of op(A) (mr < MR rows) -> dst [kc][MR], zero rows past mr. Full
// panels are read in place (see the file header); this is edge code, so plain loops.
static inline __attribute__((always_inline)) void
gemm_pack_a_edge(int64_t MR, bool trans_a, const float * restrict A, int64_t lda, int64_t mr,
                 int64_t kc, float * restrict dst) {
    for (int64_t k = 0; k < kc; k++) {
        for (int64_t i = 0; i < MR; i++) {
            dst[k * MR + i] = i >= mr ? 0.0f : trans_a ? A[k * lda + i] : A[i * lda + k];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driver

// The GEMM of internal.h with an MR x NR tile. bpack: [bpack_floats] packed op(B) block,
// 64-byte aligned, at least GEMM_KC * NR floats; apack: [GEMM_KC * MR] partial op(A) panel,
// 64-byte aligned. Both are scratch owned by the caller (its stack).
static inline __attribute__((always_inline)) void
gemm_drive(int64_t MR, int64_t NR, gemm_ukernel_fn * ukernel, gemm_pack_b_fn * pack_b_notrans,
           gemm_scale_c_fn * scale_c, bool trans_a, bool trans_b, int64_t M, int64_t N,
           int64_t Kd, float alpha, const float * restrict A, int64_t lda,
           const float * restrict B, int64_t ldb, float beta, float * restrict C, int64_t ldc,
           float * restrict bpack, int64_t bpack_floats, float * restrict apack) {
    if (M <= 0 || N <= 0) return;
    if (Kd <= 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }

    for (int64_t pc = 0; pc < Kd; pc += GEMM_KC) {
        const int64_t kc = LA_MIN(GEMM_KC, Kd - pc);
        const float   beta_pc = pc == 0 ? beta : 1.0f;  // later K blocks accumulate
        // As many NR panels as fit the block: all of N for the chunk shapes.
        const int64_t nc_max = (bpack_floats / kc) / NR * NR;
        for (int64_t jc = 0; jc < N; jc += nc_max) {
            const int64_t nc = LA_MIN(nc_max, N - jc);

            // op(B)[pc : pc+kc, jc : jc+nc] -> NR-wide panels [kc][NR].
            if (trans_b) {
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    gemm_pack_b_trans(NR, B + (jc + jr) * ldb + pc, ldb, LA_MIN(NR, nc - jr), kc,
                                      bpack + jr * kc);
                }
            } else {
                pack_b_notrans(B + pc * ldb + jc, ldb, nc, kc, bpack);
            }

            for (int64_t ir = 0; ir < M; ir += MR) {
                const int64_t mr = LA_MIN(MR, M - ir);
                float * restrict c = C + ir * ldc + jc;
                if (mr == MR) {
                    // A full row panel is read in place: op(A)[i, k] at A[i * lda + k], or
                    // A[k * lda + i] with trans_a. Broadcasts need no layout, and this beat
                    // packing at every shape and stride measured (lda = 128, 1024, 1040).
                    if (trans_a) {
                        const float * restrict a = A + pc * lda + ir;
                        for (int64_t jr = 0; jr < nc; jr += NR) {
                            ukernel(kc, a, 1, lda, bpack + jr * kc, c + jr, ldc, MR,
                                    LA_MIN(NR, nc - jr), alpha, beta_pc);
                        }
                    } else {
                        const float * restrict a = A + ir * lda + pc;
                        for (int64_t jr = 0; jr < nc; jr += NR) {
                            ukernel(kc, a, lda, 1, bpack + jr * kc, c + jr, ldc, MR,
                                    LA_MIN(NR, nc - jr), alpha, beta_pc);
                        }
                    }
                    continue;
                }
                // The last, partial row panel: packed with zero rows, so nothing past A is read.
                gemm_pack_a_edge(MR, trans_a, trans_a ? A + pc * lda + ir : A + ir * lda + pc,
                                 lda, mr, kc, apack);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    ukernel(kc, apack, 1, MR, bpack + jr * kc, c + jr, ldc, mr,
                            LA_MIN(NR, nc - jr), alpha, beta_pc);
                }
            }
        }
    }
}

#endif
