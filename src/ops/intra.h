// Gated intra-chunk score matrices: the shared core of the chunk forms with per-channel gates
// (gla, rwkv6: ALGORITHMS.md 3.2; kda 3.5; dplr 3.6) and of their scalar-gate and ungated
// cases (gated_delta_rule 3.4, delta_rule 3.3).
//
// One chunk holds L <= C tokens with log gates g_r: per channel (L, K), one scalar per row (L),
// or none. b_r = sum_{m<=r} g_m is the in-chunk cumulative gate (kept in double, so differences
// of large cumulative gates lose nothing), and b_{-1} = 0. For a row operand X (L, K) and a
// column operand Y (L, K):
//
//     A_rc = alpha * sum_d X_rd Y_cd exp(bx_rd - b_cd)      bx_r = b_r (shift 0) or b_{r-1} (shift 1)
//
// for c < r, and for c == r unless `strict`; every other entry of the L x L block is set to 0.
// shift 1 requires strict (on the diagonal its exponent would be -g_r > 0). Every exponential
// formed has an argument <= 0: per-channel gates use secondary chunking (16-row sub-chunks,
// anchors at or before the rows they serve, running decay products on the diagonal blocks).
//
// Gate gradients use the exact identity of a term x_r y_c exp(bx_r - b_c):
//     dL/dbx_r = x_r o dx_r ,  dL/db_c = -y_c o dy_c        (per channel; summed for scalar)
// la_intra_bwd adds these to dbz, an (L+1, K) double array whose row j holds dL/db_{j-1}
// (row 0 is b_{-1}, a constant). Callers add the terms of their own row scalings (e.g.
// Q o e^{b}: dbz[r+1] += dQg_r o Qg_r), then la_intra_dgate turns dbz into dL/dg by the
// in-chunk reverse cumulative sum. Everything is per chunk: dependencies across chunks go
// through the state and its gradient.
#ifndef LA_INTRA_H
#define LA_INTRA_H

#include "internal.h"

enum { LA_INTRA_NONE = 0, LA_INTRA_SCALAR = 1, LA_INTRA_CHANNEL = 2 };

#define LA_INTRA_SUB 16  // secondary-chunk rows (per-channel gates)

typedef struct la_intra {
    int      mode;   // LA_INTRA_*
    int64_t  C, K;   // capacity: chunk rows, channels
    int64_t  L;      // rows of the loaded chunk
    double * bz;     // (C+1, K) CHANNEL, (C+1) SCALAR: row 0 = b_{-1} = 0, row r+1 = b_r
    float *  al;     // (C, K) CHANNEL: per-token decays exp(g_r), formed on first use
    // scratch (L, K) unless noted
    float *  ex, * ey, * Xh, * Yh, * Xs, * f, * w;   // CHANNEL: anchored operands
    float *  D;                                       // (C, C) SCALAR/NONE: the decay mask
    float *  dXs, * dYs;                              // per-term gradients
    float *  dXh, * dYh;                              // CHANNEL backward
    float *  dAm;                                     // (C, C) SCALAR/NONE backward: dA o D
    const float * cx, * cy;                           // CHANNEL: operands behind Xh, Yh
    int64_t  cldx, cldy;
    int      cxs, cys;                                //   and their shifts
    int      exs, eys;                                // shift ex, ey were formed for (-1: none)
    const float * g;                                  // CHANNEL: the loaded gates (row stride
    int64_t  ldg;                                     //   ldg), for the decays al
    bool     al_ok;                                   // al formed for the loaded chunk
} la_intra;

// Bytes of scratch la_intra_init carves (64-byte aligned pieces).
size_t la_intra_bytes(int mode, int64_t C, int64_t K, bool backward);
// ws holds la_intra_bytes(...) bytes, 64-byte aligned.
void la_intra_init(la_intra * it, int mode, int64_t C, int64_t K, bool backward, void * ws);
// Loads one chunk's gates: row r at g + r * ldg (K floats for CHANNEL, one for SCALAR; g is
// ignored for NONE). Gates below LA_GATE_FLOOR are clamped in the cumulative sum. CHANNEL
// keeps the pointer: g must stay valid and unchanged until the next load.
void la_intra_load(la_intra * it, const float * g, int64_t ldg, int64_t L);

// Row factors of the loaded chunk as (L, K) arrays with row stride K (rows broadcast for
// SCALAR, ones for NONE): e^{bx_r} (shift 0: b_r, shift 1: b_{r-1}); e^{b_{L-1} - b_r}.
void la_intra_ebx(const la_intra * it, int shift, float * E);
void la_intra_etail(const la_intra * it, float * F);
// e^{b_{L-1}} (K).
void la_intra_elast(const la_intra * it, float * gL);

// A (row stride lda): the L x L block as defined above. Per-channel gates: the anchored form of
// each operand is cached by (address, stride, shift) until the next la_intra_load, so between
// two loads an array passed as X or Y must not change.
void la_intra_fwd(la_intra * it, int shift, bool strict, float alpha, const float * X,
                  int64_t ldx, const float * Y, int64_t ldy, float * A, int64_t lda);
// Given dA (L x L, row stride lda; entries outside the defined pattern are ignored):
// dX += dL/dX, dY += dL/dY, and (when dbz is non-NULL and the mode is not NONE) the gate terms
// into dbz ((L+1, K) doubles). dX and dY may be the same array (e.g. X = Y = K).
void la_intra_bwd(la_intra * it, int shift, bool strict, float alpha, const float * dA,
                  int64_t lda, const float * X, int64_t ldx, const float * Y, int64_t ldy,
                  float * dX, int64_t lddx, float * dY, int64_t lddy, double * dbz);
// dg_m = sum_{r >= m} dbz[r+1] for m < L (summed over channels for SCALAR): row m at
// dg + m * ldg (K floats, or one). Nothing for NONE.
void la_intra_dgate(const la_intra * it, const double * dbz, float * dg, int64_t ldg);

#endif
