// AVX-512 small GEMM: row-major C[M,N] = alpha * op(A)[M,Kd] * op(B)[Kd,N] + beta * C.
//
// Contract: internal.h ("Small GEMM"); la_gemm_ref in src/core/gemm.c is the oracle. Built with
// -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma; called only on CPUs that have them.
//
// Dimensions: M rows of C, N columns, Kd the reduction length; MR x NR is the register tile.
//   A: [M, Kd] (lda >= Kd) or, with trans_a, [Kd, M] (lda >= M)
//   B: [Kd, N] (ldb >= N)  or, with trans_b, [N, Kd] (ldb >= Kd)
//   C: [M, N]  (ldc >= N)
//
// Blocking: the shared driver of gemm_driver.h (KC = 256 blocks of Kd, op(B) packed into
// NR-wide panels in a 64 KiB block, full MR row panels of A read in place, only a last partial
// panel packed; beta on the first KC block only). This file supplies the AVX-512 pieces: the
// tile, the microkernel, the non-transposing B pack, the beta-only C update and the stack
// scratch. The measurements behind the blocking, taken with this tile, follow.
//
// Why A is not packed: the kernel only broadcasts A, one element per row per k, so any layout
// works: rows A[i * lda + k] (8 row pointers) or, with trans_a, A[k * lda + i] (8 adjacent
// floats per k). On Zen 4, packing A measured 3-13% slower at the chunk shapes with tight
// strides and up to 20% slower with lda = 1024: the pass (an 8x8 transpose without trans_a)
// is not amortised by the small N. op(B) is packed: it is loaded as full vectors, and in place
// its rows would crowd a few L1 sets whenever ldb is a multiple of 128 floats (512 B).
//
// Register blocking: MR = 8 rows x NR = 32 columns (2 zmm per row) = 16 zmm accumulators; per k,
// 2 loads of B and 8 broadcasts of A feed 16 FMAs. 16 independent chains cover FMA latency x
// throughput on Intel (2 x 512-bit ports, 4 cycles: 8 needed) and on AMD Zen 4 (512-bit ops
// double-pumped on 2 x 256-bit pipes: 1 zmm FMA per cycle). MR = 8 divides the chunk sizes (32,
// 64, 128), where a 12- or 14-row tile would leave ragged row panels.
// 512 vs 256 bits on Zen 4, where both peak at 32 FLOP/cycle: with this driver, 256-bit tiles
// using all 32 ymm registers (8x16, 6x32, 12x16, 8x24) measured 2-11%, 3-19%, 4-20% and 6-42%
// slower than 8x32 zmm at the chunk shapes, the 16-register AVX2 6x16 tile 2-16% slower: the
// zmm loop issues half the instructions. So 512-bit here too, and it is 2x wider on Intel.
//
// Edges: op(B) is packed zero-padded to NR and a partial row panel of op(A) to MR, so the
// microkernel always computes a full tile; only the store is masked (rows by count, columns by
// a lane mask), never touching memory outside C[0:M, 0:N]. beta == 0 never reads C (it may hold
// NaN); alpha == 0 or Kd == 0 gives C = beta * C without reading A or B, as in BLAS.
//
// Scratch: one 64 KiB op(B) block and one 8 KiB op(A) panel on the stack (<= LA_GEMM_STACK_BYTES).
#include "gemm_driver.h"

enum {
    MR = 8,                       // register tile rows
    NR = 32,                      // register tile columns (2 zmm)
    BPACK_FLOATS = 16 * 1024,     // 64 KiB packed op(B) block
    APACK_FLOATS = MR * GEMM_KC,  // 8 KiB partial op(A) panel
};
_Static_assert((BPACK_FLOATS + APACK_FLOATS) * sizeof(float) <= LA_GEMM_STACK_BYTES,
               "gemm_avx512 stack scratch exceeds LA_GEMM_STACK_BYTES");

// ---------------------------------------------------------------------------------------------
// Packing

// op(B) without trans_b: B block [kc, nc] is k-major already -> panels dst [nc / NR][kc][NR],
// zero columns past nc. Row by row across all panels, so each row of B is read once in order
// (panel by panel, a strided B, e.g. ldb = 1024, thrashed the L1 TLB: up to 15% slower).
static void pack_b_notrans(const float * restrict src, int64_t ldb, int64_t nc, int64_t kc,
                           float * restrict dst) {
    for (int64_t k = 0; k < kc; k++) {
        const float * restrict s = src + k * ldb;  // (nc)
        for (int64_t jr = 0; jr < nc; jr += NR) {
            float * restrict d = dst + jr * kc + k * NR;  // (NR)
            if (nc - jr >= NR) {
                _mm512_store_ps(d, _mm512_loadu_ps(s + jr));
                _mm512_store_ps(d + 16, _mm512_loadu_ps(s + jr + 16));
            } else {
                const int64_t  nr = nc - jr;
                const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
                const __mmask16 m1 = (__mmask16)(nr <= 16 ? 0 : (1u << (nr - 16)) - 1);
                _mm512_store_ps(d, _mm512_maskz_loadu_ps(m0, s + jr));
                _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(m1, s + jr + 16));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Microkernel

// The gemm_ukernel_fn of gemm_driver.h for an 8 x 32 tile: C[0:mr, 0:nr] = alpha * op(A)[tile]
// op(B)[panel] + beta * C, op(A)[i, k] at a[i * a_rs + k * a_cs], b the packed [kc][NR] op(B)
// panel (64-byte aligned). beta == 0 never reads C. Always inlined (through gemm_drive) with
// constant strides, so the broadcasts become fixed addressing.
static inline __attribute__((always_inline)) void
ukernel_8x32(int64_t kc, const float * restrict a, int64_t a_rs, int64_t a_cs,
             const float * restrict b, float * restrict c, int64_t ldc, int64_t mr, int64_t nr,
             float alpha, float beta) {
    // acc[i][h] holds C[i, 16h : 16h+16]; constant trip counts let the compiler unroll the
    // i loops and keep all 16 in zmm registers.
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b + k * NR), b1 = _mm512_load_ps(b + k * NR + 16);
        for (int i = 0; i < MR; i++) {
            const __m512 ai = _mm512_set1_ps(a[i * a_rs + k * a_cs]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }

    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; i++) {
            float * restrict ci = c + i * ldc;
            __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
            if (beta != 0.0f) {
                r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), r0);
                r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), r1);
            }
            _mm512_storeu_ps(ci, r0);
            _mm512_storeu_ps(ci + 16, r1);
        }
        return;
    }
    // Edge tile: masked columns (masked-off lanes are neither read nor written), counted rows.
    const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
    const __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1);
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float * restrict ci = c + i * ldc;
        __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
        if (beta != 0.0f) {
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);
        }
        _mm512_mask_storeu_ps(ci, m0, r0);
        _mm512_mask_storeu_ps(ci + 16, m1, r1);
    }
}

// ---------------------------------------------------------------------------------------------
// Entry point

// C <- beta * C for the alpha == 0 / Kd == 0 cases (beta == 0 writes zeros without reading).
static void scale_c(int64_t M, int64_t N, float beta, float * restrict C, int64_t ldc) {
    if (beta == 1.0f) return;
    const __m512 vb = _mm512_set1_ps(beta);
    for (int64_t i = 0; i < M; i++) {
        float * restrict ci = C + i * ldc;
        for (int64_t j = 0; j < N; j += 16) {
            const __mmask16 m = (__mmask16)(N - j >= 16 ? 0xFFFF : (1u << (N - j)) - 1);
            const __m512 v = beta == 0.0f ? _mm512_setzero_ps()
                                          : _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, ci + j));
            _mm512_mask_storeu_ps(ci + j, m, v);
        }
    }
}

void la_gemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
                    const float * restrict A, int64_t lda, const float * restrict B, int64_t ldb,
                    float beta, float * restrict C, int64_t ldc) {
    _Alignas(64) float bpack[BPACK_FLOATS];  // [nc / NR][kc][NR] packed op(B) block
    _Alignas(64) float apack[APACK_FLOATS];  // [kc][MR] partial op(A) panel
    gemm_drive(MR, NR, ukernel_8x32, pack_b_notrans, scale_c, trans_a, trans_b, M, N, Kd, alpha,
               A, lda, B, ldb, beta, C, ldc, bpack, BPACK_FLOATS, apack);
}
