// selective_scan: Mamba-1's S6 scan (ALGORITHMS.md 6), in three forms.
//
//   dt_t[d]  = z_t[d] = delta_t[d] + delta_bias[d], then softplus(z) when delta_softplus
//   h_t[d,n] = exp(dt_t[d] A[d,n]) h_{t-1}[d,n] + dt_t[d] B_t[n] u_t[d]
//   y_t[d]   = sum_n C_t[n] h_t[d,n] + D[d] u_t[d]
//
// The decay exp(dt A) differs for every (channel, state) pair, so there is no matmul chunk form
// (ALGORITHMS.md 6): every form is a scan, vectorised either over the Nst states of a channel
// or over a block of SS_CB channels.
//
// Forms
//   ref        plain recurrence in src/ops/selective_scan_ref.c (single-threaded oracle).
//   recurrent  the decode path: token loop on the state in its own (Dm, Nst) layout,
//              vectorised over n, so initial_state, A and final_state are used in place. One
//              task per (sequence, channel block).
//   chunk      training and prefill: the state of a block of SS_CB channels held transposed,
//              h[n][d] with d fastest, so every loop runs over contiguous channels for any Nst
//              and y_t = sum_n C_t[n] h[n] is a vertical accumulation. Per chunk of C tokens:
//              dt, softplus and dt u for the whole chunk in one vectorised pass, then a token
//              loop fusing exp(dt A), the state update and the read-out.
//   Measured (one thread, AVX-512; B = 1, Dm = 1536, Nst = 16): chunk 0.86-0.9 ns per (token,
//   channel, state), about 22 us per token at T = 8192, of which la_expf is ~0.5 ns; the
//   recurrent form 1.35 ns there (its sum over n is a horizontal reduction per channel) but
//   33 us for a T = 1 decode step against the chunk form's 49 us (which pays for transposing
//   A and the state in and out). Two other chunk designs were slower: writing all
//   C x Nst x SS_CB decays of a chunk in one la_expf pass and then running the recurrence from
//   them cost 10-15% more (an extra round trip through L1/L2, the same exponentials), and a
//   chunked parallel scan with carries doubles the exponentials.
// Backward (both fast forms, in the chunk form's transposed layout; reverse-time adjoint,
// ALGORITHMS.md 2.3), per (sequence, channel block):
//   a forward pass saves the state every L tokens (L = C in the chunk form, 64 in the
//   recurrent form); then segments in reverse: replay the segment from its checkpoint, keeping
//   exp(dt A) and every h_t, and run the adjoint G = dL/dh_t backwards through it:
//     G += C_t dy_t^T ;  dC_t[n] = sum_d h_t[d,n] dy_t[d] ;  dB_t[n] = sum_d G[d,n] dt u_t[d]
//     du_t = dt sum_n G B_t + D dy_t ;  ddt = sum_n G (A E h_{t-1} + B_t u_t)
//     dA += G dt E h_{t-1} ;  ddelta = ddt softplus'(z) ;  G <- E o G
//   The sums over channels (dB, dC) are formed per block in a fixed lane order and the block
//   partials are summed in block order; the sums over tokens (dA, dD, ddelta_bias) are
//   accumulated in double per (sequence, block) and summed over sequences in order. Results
//   therefore do not depend on the thread count.
// softplus and its derivative are evaluated with la_expf and a short atanh series, so the
// per-token work vectorises; exp(dt A) < e^-87.3 is flushed to 0 (true value below float's
// normal range), so dt A of -1000 and below is safe.
//
// Dimensions: B, T, N as in OPS.md; Dm channels, Nst state size. u, delta, y (B,T,Dm);
// A (Dm,Nst); Bm, Cm (B,T,Nst); D, delta_bias (Dm); states (N,Dm,Nst).
#include "internal.h"
#include "ref.h"
#include "vexp.h"

#include <string.h>

#define SS_CB  128  // channels per task (a multiple of the vector width); fixed, as the
                    // backward's sums over channels are formed per block
#define SS_SEG 64   // checkpoint interval of the recurrent form's backward
#define SS_PF  8    // prefetch distance in tokens
#define SS_PAR_MIN (1 << 14)  // B*T*Dm*Nst below which a call runs on one thread (the work
                              // costs less than waking the threads; results are the same)

typedef struct ss_args {
    const float * u, * delta;          // (B,T,Dm)
    const float * A;                   // (Dm,Nst)
    const float * Bm, * Cm;            // (B,T,Nst)
    const float * D, * bias;           // (Dm) or NULL
    const float * init;                // (N,Dm,Nst) or NULL
    bool          sp;                  // delta_softplus
    float *       y, * final;          // (B,T,Dm), (N,Dm,Nst) or NULL
    const float * dy, * dfinal;        // (B,T,Dm), (N,Dm,Nst) or NULL
    float *       du, * ddelta;        // (B,T,Dm)
    float *       dA;                  // (Dm,Nst)
    float *       dBm, * dCm;          // (B,T,Nst)
    float *       dD, * dbias;         // (Dm) or NULL
    float *       dinit;               // (N,Dm,Nst) or NULL
    la_shape      sh;                  // { B, T, Dm, Nst, 1 }
    const la_opts * opts;
    int64_t       Dm, Nst, N, ntok;
    int64_t       cs;                  // block stride: min(SS_CB, Dm)
    int64_t       nblk;
    int64_t       L;                   // chunk (forward) or checkpoint interval (backward)
    int64_t       maxlen;
    // Shared workspace.
    float *       At;                  // (Nst, Dm) A transposed
    float *       dBp, * dCp;          // (nblk, B*T, Nst) per-block partials (= dBm, dCm if 1 block)
    double *      dAp;                 // (N, Dm, Nst) per-sequence sums
    double *      dDp, * dbp;          // (N, Dm)
} ss_args;

// ---------------------------------------------------------------------------------------------
// Elementwise helpers (inlined into the vectorised loops)

// softplus(z) = max(z, 0) + log1p(exp(-|z|)) for z <= 20, z above (torch's threshold), with
// log1p(v) = 2 atanh(v / (2 + v)), v in (0, 1]: s <= 1/3, so seven terms of the series reach
// float precision.
static inline float ss_softplus(float z) {
    const float v = la_expf(-fabsf(z));
    const float s = v / (2.0f + v), s2 = s * s;
    float p = 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    const float r = (z > 0.0f ? z : 0.0f) + 2.0f * s * p;
    return z > 20.0f ? z : r;
}

// softplus'(z) = sigmoid(z), exactly 1 above the threshold where softplus is the identity.
static inline float ss_softplus_grad(float z) {
    const float s = 1.0f / (1.0f + la_expf(-z));
    return z > 20.0f ? 1.0f : s;
}

// dt and dt u of token t for channels c0 .. c0 + w; sg = softplus'(z) when non-NULL. Separate
// simple loops, so that each vectorises.
static inline void token_dt(const ss_args * a, int64_t t, int64_t c0, int64_t w,
                            float * restrict dt, float * restrict dtu, float * restrict sg) {
    const float * restrict dl = a->delta + t * a->Dm + c0;
    const float * restrict ut = a->u + t * a->Dm + c0;
    const float * restrict bias = a->bias ? a->bias + c0 : NULL;
    if (bias) {
        for (int64_t c = 0; c < w; c++) dt[c] = dl[c] + bias[c];
    } else {
        for (int64_t c = 0; c < w; c++) dt[c] = dl[c];
    }
    if (a->sp) {
        if (sg)
            for (int64_t c = 0; c < w; c++) sg[c] = ss_softplus_grad(dt[c]);
        for (int64_t c = 0; c < w; c++) dt[c] = ss_softplus(dt[c]);
    } else if (sg) {
        for (int64_t c = 0; c < w; c++) sg[c] = 1.0f;
    }
    for (int64_t c = 0; c < w; c++) dtu[c] = dt[c] * ut[c];
}

// The rows of token t that a block reads (delta, u) and writes (y) are SS_CB * 4 bytes out of
// every Dm * 4, one TLB page each: the hardware prefetcher misses them, so they are requested
// SS_PF tokens ahead (15-20% of the forward's time at Dm = 1536).
static inline void prefetch_rows(const ss_args * a, int64_t t, int64_t c0, int64_t w) {
    for (int64_t c = 0; c < w; c += 16) {
        __builtin_prefetch(a->delta + t * a->Dm + c0 + c);
        __builtin_prefetch(a->u + t * a->Dm + c0 + c);
        if (a->y) __builtin_prefetch(a->y + t * a->Dm + c0 + c, 1);
    }
}

// The rows of token t that the reverse step reads (dy, u) and writes (du, ddelta).
static inline void prefetch_rows_bwd(const ss_args * a, int64_t t, int64_t c0, int64_t w) {
    for (int64_t c = 0; c < w; c += 16) {
        __builtin_prefetch(a->dy + t * a->Dm + c0 + c);
        __builtin_prefetch(a->u + t * a->Dm + c0 + c);
        __builtin_prefetch(a->du + t * a->Dm + c0 + c, 1);
        __builtin_prefetch(a->ddelta + t * a->Dm + c0 + c, 1);
    }
}

// Sum of x[0 .. n) in a fixed order: 16 lanes, then a halving tree.
static inline float hsum(const float * restrict x, int64_t n) {
    float l[16] = { 0 };
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int k = 0; k < 16; k++) l[k] += x[j + k];
    for (int k = 0; j + k < n; k++) l[k] += x[j + k];
    for (int k = 0; k < 8; k++) l[k] += l[k + 8];
    for (int k = 0; k < 4; k++) l[k] += l[k + 4];
    for (int k = 0; k < 2; k++) l[k] += l[k + 2];
    return l[0] + l[1];
}

static inline void blk_range(const ss_args * a, int64_t blk, int64_t * c0, int64_t * w) {
    *c0 = blk * a->cs;
    *w = LA_MIN(a->cs, a->Dm - *c0);
}

// h (Nst, cs) <- state (N,Dm,Nst) rows c0 .. c0 + w of sequence n, transposed; 0 without one.
static void load_state_t(const ss_args * a, float * h, const float * state, int64_t n,
                         int64_t c0, int64_t w) {
    for (int64_t i = 0; i < a->Nst; i++)
        for (int64_t c = 0; c < w; c++)
            h[i * a->cs + c] = state ? state[(n * a->Dm + c0 + c) * a->Nst + i] : 0.0f;
}

static void store_state_t(const ss_args * a, float * state, const float * h, int64_t n,
                          int64_t c0, int64_t w) {
    for (int64_t c = 0; c < w; c++)
        for (int64_t i = 0; i < a->Nst; i++)
            state[(n * a->Dm + c0 + c) * a->Nst + i] = h[i * a->cs + c];
}

// One token on the transposed state h (Nst, cs): h <- exp(dt A) h + dt u B_t, and when yv is
// non-NULL, yv += sum_n C_t[n] h[n].
static inline void fused_step(const ss_args * a, float * restrict h, const float * restrict dt,
                              const float * restrict dtu, int64_t t, int64_t c0, int64_t w,
                              float * restrict yv) {
    const float * Bt = a->Bm + t * a->Nst, * Ct = a->Cm + t * a->Nst;
    for (int64_t i = 0; i < a->Nst; i++) {
        const float bi = Bt[i], ci = Ct[i];
        const float * restrict Ai = a->At + i * a->Dm + c0;
        float * restrict hi = h + i * a->cs;
        if (yv) {
            for (int64_t c = 0; c < w; c++) {
                const float hv = la_expf(dt[c] * Ai[c]) * hi[c] + dtu[c] * bi;
                hi[c] = hv;
                yv[c] += ci * hv;
            }
        } else {
            for (int64_t c = 0; c < w; c++) hi[c] = la_expf(dt[c] * Ai[c]) * hi[c] + dtu[c] * bi;
        }
    }
}

// y_t (channels c0 ..) <- yv + D u_t.
static inline void write_y(const ss_args * a, int64_t t, int64_t c0, int64_t w,
                           const float * restrict yv) {
    const float * restrict ut = a->u + t * a->Dm + c0;
    float * restrict yt = a->y + t * a->Dm + c0;
    if (a->D) {
        const float * restrict Dc = a->D + c0;
        for (int64_t c = 0; c < w; c++) yt[c] = yv[c] + Dc[c] * ut[c];
    } else {
        for (int64_t c = 0; c < w; c++) yt[c] = yv[c];
    }
}

// ---------------------------------------------------------------------------------------------
// Forward

// Recurrent form: the state in its own (d, n) layout, vectorised over n, so a call reads
// initial_state and A and writes final_state without transposing them (for a decode step the
// three transposes would cost more than the token). y = sum_n C h is summed in hsum's lane
// order. ws: h (cs, Nst) when there is no final_state, dt, dtu, yv (cs), prod (Nst).
static inline void rec_row(int64_t Nst, float dt, float dtu, const float * restrict Ac,
                           const float * restrict Bt, const float * restrict Ct,
                           float * restrict hc, float * restrict prod) {
    for (int64_t i = 0; i < Nst; i++) {
        const float hv = la_expf(dt * Ac[i]) * hc[i] + dtu * Bt[i];
        hc[i] = hv;
        prod[i] = Ct[i] * hv;
    }
}

LA_CLONES
static void rec_fwd_task(const ss_args * a, int64_t n, int64_t blk, float * ws) {
    const int64_t cs = a->cs, Nst = a->Nst, Dm = a->Dm;
    int64_t c0, w, bos, eos;
    blk_range(a, blk, &c0, &w);
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    float * dt = ws + cs * Nst, * dtu = dt + cs, * yv = dtu + cs, * prod = yv + cs;
    // The state lives in final_state's rows when there is one, so a decode step with
    // final_state == initial_state updates it in place and touches it once.
    const int64_t off = (n * Dm + c0) * Nst;
    float * h = a->final ? a->final + off : ws;
    if (!a->init) memset(h, 0, (size_t)(w * Nst) * sizeof(float));
    else if (a->init + off != h) memcpy(h, a->init + off, (size_t)(w * Nst) * sizeof(float));
    for (int64_t t = bos; t < eos; t++) {
        if (t + SS_PF < eos) prefetch_rows(a, t + SS_PF, c0, w);
        token_dt(a, t, c0, w, dt, dtu, NULL);
        const float * Bt = a->Bm + t * Nst, * Ct = a->Cm + t * Nst;
        if (Nst == 16) {  // Mamba's default: whole-vector rows, no remainder handling
            for (int64_t c = 0; c < w; c++) {
                rec_row(16, dt[c], dtu[c], a->A + (c0 + c) * 16, Bt, Ct, h + c * 16, prod);
                yv[c] = hsum(prod, 16);
            }
        } else {
            for (int64_t c = 0; c < w; c++) {
                rec_row(Nst, dt[c], dtu[c], a->A + (c0 + c) * Nst, Bt, Ct, h + c * Nst, prod);
                yv[c] = hsum(prod, Nst);
            }
        }
        write_y(a, t, c0, w, yv);
    }
}

// Chunk form. ws: h (Nst, cs), yv (cs), DT, DU (L, cs).
LA_CLONES
static void chunk_fwd_task(const ss_args * a, int64_t n, int64_t blk, float * ws) {
    const int64_t cs = a->cs, Nst = a->Nst, L = a->L;
    int64_t c0, w, bos, eos;
    blk_range(a, blk, &c0, &w);
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    float * h = ws, * yv = h + Nst * cs, * DT = yv + cs, * DU = DT + L * cs;
    load_state_t(a, h, a->init, n, c0, w);
    for (int64_t t0 = bos; t0 < eos; t0 += L) {
        const int64_t len = LA_MIN(L, eos - t0);
        // dt, softplus and dt u of the whole chunk in one pass.
        for (int64_t r = 0; r < len; r++) {
            if (t0 + r + SS_PF < eos) prefetch_rows(a, t0 + r + SS_PF, c0, w);
            token_dt(a, t0 + r, c0, w, DT + r * cs, DU + r * cs, NULL);
        }
        for (int64_t r = 0; r < len; r++) {
            for (int64_t c = 0; c < w; c++) yv[c] = 0.0f;
            fused_step(a, h, DT + r * cs, DU + r * cs, t0 + r, c0, w, yv);
            write_y(a, t0 + r, c0, w, yv);
        }
    }
    if (a->final) store_state_t(a, a->final, h, n, c0, w);
}

// ---------------------------------------------------------------------------------------------
// Backward

typedef struct bwd_ws {
    float *  ck;        // (nseg + 1, Nst, cs) states at segment starts
    float *  G;         // (Nst, cs) adjoint dL/dh_t
    float *  H;         // (L + 1, Nst, cs) replayed states; H[0] = the segment's start state
    float *  E;         // (L, Nst, cs) exp(dt A)
    float *  DT, * DU, * SG;   // (L, cs) dt, dt u, softplus'
    float *  gb, * ddt, * lb, * lc;  // (cs)
    float *  dAf;       // (Nst, cs) this segment's dA
    double * dAd;       // (Nst, cs) dA of the sequence
    double * dDd, * dbd;  // (cs)
} bwd_ws;

static size_t bwd_ws_layout(bwd_ws * b, void * base, int64_t Nst, int64_t cs, int64_t L,
                            int64_t maxlen) {
    const size_t S = (size_t)(Nst * cs) * sizeof(float), row = (size_t)cs * sizeof(float);
    const int64_t nseg = (maxlen + L - 1) / L;
    la_carver cv = { base, 0 };
    b->ck = la_carve(&cv, (size_t)(nseg + 1) * S);
    b->G = la_carve(&cv, S);
    b->H = la_carve(&cv, (size_t)(L + 1) * S);
    b->E = la_carve(&cv, (size_t)L * S);
    b->DT = la_carve(&cv, (size_t)L * row);
    b->DU = la_carve(&cv, (size_t)L * row);
    b->SG = la_carve(&cv, (size_t)L * row);
    b->gb = la_carve(&cv, row);
    b->ddt = la_carve(&cv, row);
    b->lb = la_carve(&cv, row);
    b->lc = la_carve(&cv, row);
    b->dAf = la_carve(&cv, S);
    b->dAd = la_carve(&cv, (size_t)(Nst * cs) * sizeof(double));
    b->dDd = la_carve(&cv, (size_t)cs * sizeof(double));
    b->dbd = la_carve(&cv, (size_t)cs * sizeof(double));
    return cv.used;
}

// Kernels of the reverse step, over w channels (restrict parameters: no alias checks).
// One state row n: G += C_t[n] dy ; lc = h_t dy ; lb = G dt u ; gb += G B_t[n] ;
// ddt += G E h_{t-1} A ; dA += G E h_{t-1} dt ; G <- E G.
static inline void bwd_row(int64_t w, float ci, float bi, const float * restrict dyt,
                           const float * restrict dt, const float * restrict dtu,
                           const float * restrict Ai, const float * restrict hti,
                           const float * restrict hpi, const float * restrict Ei,
                           float * restrict Gi, float * restrict dAi, float * restrict gb,
                           float * restrict ddt, float * restrict lb, float * restrict lc) {
    for (int64_t c = 0; c < w; c++) {
        const float g = Gi[c] + ci * dyt[c];  // y_t reads h_t
        lc[c] = hti[c] * dyt[c];
        lb[c] = g * dtu[c];
        gb[c] += g * bi;
        const float q = g * Ei[c] * hpi[c];
        ddt[c] += q * Ai[c];
        dAi[c] += q * dt[c];
        Gi[c] = g * Ei[c];                    // G becomes dL/dh_{t-1}
    }
}

// du = dt gb + D dy ; ddelta = (ddt + gb u) softplus'(z) ; sums of ddelta and dy u (double).
static inline void bwd_out(int64_t w, const float * restrict dt, const float * restrict gb,
                           const float * restrict ddt, const float * restrict dyt,
                           const float * restrict ut, const float * restrict sg,
                           const float * restrict Dc, float * restrict dut,
                           float * restrict ddl, double * restrict dbd, double * restrict dDd) {
    for (int64_t c = 0; c < w; c++) {
        dut[c] = Dc ? dt[c] * gb[c] + Dc[c] * dyt[c] : dt[c] * gb[c];
        const float dz = (ddt[c] + gb[c] * ut[c]) * sg[c];
        ddl[c] = dz;
        dbd[c] += (double)dz;
        dDd[c] += (double)dyt[c] * (double)ut[c];
    }
}

// The adjoint through one token t = t0 + r of a replayed segment.
static inline void bwd_token(const ss_args * a, const bwd_ws * b, int64_t blk, int64_t r,
                             int64_t t, int64_t c0, int64_t w) {
    const int64_t cs = a->cs, Nst = a->Nst, Dm = a->Dm;
    const float * dyt = a->dy + t * Dm + c0;
    const float * Bt = a->Bm + t * Nst, * Ct = a->Cm + t * Nst;
    float * dBt = a->dBp + (blk * a->ntok + t) * Nst, * dCt = a->dCp + (blk * a->ntok + t) * Nst;
    for (int64_t c = 0; c < w; c++) b->gb[c] = b->ddt[c] = 0.0f;
    for (int64_t i = 0; i < Nst; i++) {
        bwd_row(w, Ct[i], Bt[i], dyt, b->DT + r * cs, b->DU + r * cs, a->At + i * Dm + c0,
                b->H + ((r + 1) * Nst + i) * cs, b->H + (r * Nst + i) * cs,
                b->E + (r * Nst + i) * cs, b->G + i * cs, b->dAf + i * cs, b->gb, b->ddt, b->lb,
                b->lc);
        dCt[i] = hsum(b->lc, w);
        dBt[i] = hsum(b->lb, w);
    }
    bwd_out(w, b->DT + r * cs, b->gb, b->ddt, dyt, a->u + t * Dm + c0, b->SG + r * cs,
            a->D ? a->D + c0 : NULL, a->du + t * Dm + c0, a->ddelta + t * Dm + c0, b->dbd,
            b->dDd);
}

// Replay of one token: E = exp(dt A), h_t = E h_{t-1} + dt u B_t, per state row.
static inline void replay_row(int64_t w, float bi, const float * restrict dt,
                              const float * restrict dtu, const float * restrict Ai,
                              const float * restrict hp, float * restrict ht,
                              float * restrict Ei) {
    for (int64_t c = 0; c < w; c++) {
        const float e = la_expf(dt[c] * Ai[c]);
        Ei[c] = e;
        ht[c] = e * hp[c] + dtu[c] * bi;
    }
}

LA_CLONES
static void bwd_task(const ss_args * a, int64_t n, int64_t blk, void * ws) {
    const int64_t cs = a->cs, Nst = a->Nst, L = a->L, Dm = a->Dm, S = Nst * cs;
    int64_t c0, w, bos, eos;
    blk_range(a, blk, &c0, &w);
    la_seq_bounds(a->opts, a->sh, n, &bos, &eos);
    const int64_t nseg = (eos - bos + L - 1) / L;
    bwd_ws b;
    bwd_ws_layout(&b, ws, Nst, cs, L, a->maxlen);
    // Checkpoints every L tokens.
    load_state_t(a, b.ck, a->init, n, c0, w);
    for (int64_t s = 0; s < nseg; s++) {
        float * h = b.ck + (s + 1) * S;
        memcpy(h, b.ck + s * S, (size_t)S * sizeof(float));
        const int64_t t1 = LA_MIN(bos + (s + 1) * L, eos);
        for (int64_t t = bos + s * L; t < t1; t++) {
            if (t + SS_PF < eos) prefetch_rows(a, t + SS_PF, c0, w);
            token_dt(a, t, c0, w, b.DT, b.DU, NULL);
            fused_step(a, h, b.DT, b.DU, t, c0, w, NULL);
        }
    }
    load_state_t(a, b.G, a->dfinal, n, c0, w);
    for (int64_t e = 0; e < S; e++) b.dAd[e] = 0.0;
    for (int64_t c = 0; c < cs; c++) b.dDd[c] = b.dbd[c] = 0.0;
    for (int64_t s = nseg - 1; s >= 0; s--) {
        const int64_t t0 = bos + s * L, len = LA_MIN(L, eos - t0);
        // Replay: dt, softplus', exp(dt A) and h_t of the segment.
        memcpy(b.H, b.ck + s * S, (size_t)S * sizeof(float));
        for (int64_t r = 0; r < len; r++) {
            const int64_t t = t0 + r;
            float * restrict dt = b.DT + r * cs, * restrict dtu = b.DU + r * cs;
            if (r + SS_PF < len) prefetch_rows(a, t + SS_PF, c0, w);
            token_dt(a, t, c0, w, dt, dtu, b.SG + r * cs);
            const float * Bt = a->Bm + t * Nst;
            for (int64_t i = 0; i < Nst; i++)
                replay_row(w, Bt[i], dt, dtu, a->At + i * Dm + c0, b.H + (r * Nst + i) * cs,
                           b.H + ((r + 1) * Nst + i) * cs, b.E + (r * Nst + i) * cs);
        }
        for (int64_t e = 0; e < S; e++) b.dAf[e] = 0.0f;
        for (int64_t r = len - 1; r >= 0; r--) {
            if (r >= SS_PF) prefetch_rows_bwd(a, t0 + r - SS_PF, c0, w);
            bwd_token(a, &b, blk, r, t0 + r, c0, w);
        }
        for (int64_t e = 0; e < S; e++) b.dAd[e] += (double)b.dAf[e];
    }
    if (a->dinit) store_state_t(a, a->dinit, b.G, n, c0, w);
    for (int64_t c = 0; c < w; c++) {
        for (int64_t i = 0; i < Nst; i++)
            a->dAp[(n * Dm + c0 + c) * Nst + i] = b.dAd[i * cs + c];
        a->dDp[n * Dm + c0 + c] = b.dDd[c];
        a->dbp[n * Dm + c0 + c] = b.dbd[c];
    }
}

// Sums the partials in a fixed order: dB, dC over blocks (per token), dA, dD, ddelta_bias over
// sequences (per channel).
static void bwd_reduce(const ss_args * a) {
    const int64_t Nst = a->Nst, Dm = a->Dm, nb = a->nblk, N = a->N;
    if (nb > 1) {
        const int64_t nel = a->ntok * Nst, stride = a->ntok * Nst;
#pragma omp parallel for schedule(static) if (a->ntok * Dm * Nst >= SS_PAR_MIN)
        for (int64_t e = 0; e < nel; e++) {
            double sb = 0, sc = 0;
            for (int64_t k = 0; k < nb; k++) {
                sb += (double)a->dBp[k * stride + e];
                sc += (double)a->dCp[k * stride + e];
            }
            a->dBm[e] = (float)sb;
            a->dCm[e] = (float)sc;
        }
    }
    for (int64_t e = 0; e < Dm * Nst; e++) {
        double s = 0;
        for (int64_t n = 0; n < N; n++) s += a->dAp[n * Dm * Nst + e];
        a->dA[e] = (float)s;
    }
    for (int64_t c = 0; c < Dm; c++) {
        double sd = 0, sb = 0;
        for (int64_t n = 0; n < N; n++) {
            sd += a->dDp[n * Dm + c];
            sb += a->dbp[n * Dm + c];
        }
        if (a->dD) a->dD[c] = (float)sd;
        if (a->dbias) a->dbias[c] = (float)sb;
    }
}

// ---------------------------------------------------------------------------------------------
// Drivers

static size_t per_thread_bytes(const ss_args * a, bool backward) {
    const int64_t cs = a->cs, Nst = a->Nst, L = a->L;
    if (backward) {
        bwd_ws b;
        return bwd_ws_layout(&b, NULL, Nst, cs, L, a->maxlen);
    }
    if (a->opts->form == LA_FORM_RECURRENT)
        return la_align_up((size_t)((Nst + 3) * cs + Nst) * sizeof(float));
    return la_align_up((size_t)((Nst + 1 + 2 * L) * cs) * sizeof(float));
}

// Shared workspace (At, and for the backward the partials), then per-thread scratch.
static size_t ss_layout(ss_args * a, void * base, bool backward, float ** thr, size_t * per) {
    const int64_t Dm = a->Dm, Nst = a->Nst, N = a->N;
    la_carver cv = { base, 0 };
    a->At = la_carve(&cv, (size_t)(Nst * Dm) * sizeof(float));
    if (backward) {
        const size_t part = a->nblk > 1 ? (size_t)(a->nblk * a->ntok * Nst) * sizeof(float) : 0;
        a->dBp = la_carve(&cv, part);
        a->dCp = la_carve(&cv, part);
        a->dAp = la_carve(&cv, (size_t)(N * Dm * Nst) * sizeof(double));
        a->dDp = la_carve(&cv, (size_t)(N * Dm) * sizeof(double));
        a->dbp = la_carve(&cv, (size_t)(N * Dm) * sizeof(double));
        if (a->nblk == 1) {
            a->dBp = a->dBm;
            a->dCp = a->dCm;
        }
    }
    *per = per_thread_bytes(a, backward);
    *thr = la_carve(&cv, (size_t)la_nthreads() * *per);
    return cv.used;
}

static la_status ss_setup(ss_args * a, int64_t B, int64_t T, int64_t Dm, int64_t Nst,
                          const la_opts * opts, bool backward) {
    a->sh = (la_shape){ B, T, Dm, Nst, 1 };
    a->opts = opts;
    la_status st = la_check_common(a->sh, opts, &a->N);
    if (st != LA_STATUS_OK) return st;
    if (opts->scale != 0.0f) return LA_STATUS_INVALID_ARG;
    a->Dm = Dm;
    a->Nst = Nst;
    a->ntok = B * T;
    a->cs = LA_MIN(SS_CB, Dm);
    a->nblk = (Dm + a->cs - 1) / a->cs;
    a->L = backward && opts->form == LA_FORM_RECURRENT ? SS_SEG : la_opts_chunk(opts);
    a->maxlen = la_max_seq_len(a->sh, opts);
    return LA_STATUS_OK;
}

size_t la_selective_scan_workspace_size(bool backward, int64_t B, int64_t T, int64_t Dm,
                                        int64_t Nst, const la_opts * opts) {
    ss_args a = { 0 };
    if (ss_setup(&a, B, T, Dm, Nst, opts, backward) != LA_STATUS_OK) return 0;
    if (opts->form == LA_FORM_REF) {
        la_ref_dims d = { a.sh, a.N, opts->cu_seqlens, 0 };
        return (size_t)la_selective_scan_ref_ws_elems(d) * sizeof(float) + LA_ALIGN;
    }
    float * thr;
    size_t per;
    return ss_layout(&a, NULL, backward, &thr, &per) + LA_ALIGN;
}

static la_status ss_run(ss_args * a, bool backward) {
    const la_opts * opts = a->opts;
    const size_t need = la_selective_scan_workspace_size(backward, a->sh.B, a->sh.T, a->Dm,
                                                         a->Nst, opts);
    void * ws;
    bool owned;
    la_status st = la_ws_acquire(opts, need, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    if (opts->form == LA_FORM_REF) {
        la_ref_dims d = { a->sh, a->N, opts->cu_seqlens, 0 };
        if (backward)
            la_selective_scan_bwd_ref(a->du, a->ddelta, a->dA, a->dBm, a->dCm, a->dD, a->dbias,
                                      a->dinit, a->dy, a->dfinal, a->u, a->delta, a->A, a->Bm,
                                      a->Cm, a->D, a->bias, a->sp, a->init, d, ws);
        else
            la_selective_scan_fwd_ref(a->y, a->final, a->u, a->delta, a->A, a->Bm, a->Cm, a->D,
                                      a->bias, a->sp, a->init, d, ws);
        la_ws_release(ws, owned);
        return LA_STATUS_OK;
    }
    float * thr;
    size_t per;
    ss_layout(a, ws, backward, &thr, &per);
    const bool chunk = opts->form == LA_FORM_CHUNK;
    if (backward || chunk)  // the channel-major kernels read A transposed
        for (int64_t c = 0; c < a->Dm; c++)
            for (int64_t i = 0; i < a->Nst; i++) a->At[i * a->Dm + c] = a->A[c * a->Nst + i];
    const int64_t ntask = a->N * a->nblk;
#pragma omp parallel for schedule(static) if (a->ntok * a->Dm * a->Nst >= SS_PAR_MIN)
    for (int64_t i = 0; i < ntask; i++) {
        const int tid = la_thread_index();
        float * w = (float *)((char *)thr + (size_t)tid * per);
        const int64_t n = i / a->nblk, blk = i % a->nblk;
        if (backward) bwd_task(a, n, blk, w);
        else if (chunk) chunk_fwd_task(a, n, blk, w);
        else rec_fwd_task(a, n, blk, w);
    }
    if (backward) bwd_reduce(a);
    la_ws_release(ws, owned);
    return LA_STATUS_OK;
}

la_status la_selective_scan_forward(float * y, float * final_state,
                                    const float * u, const float * delta,
                                    const float * A, const float * Bm, const float * Cm,
                                    const float * D, const float * delta_bias,
                                    bool delta_softplus, const float * initial_state,
                                    int64_t B, int64_t T, int64_t Dm, int64_t Nst,
                                    const la_opts * opts) {
    ss_args a = { .u = u, .delta = delta, .A = A, .Bm = Bm, .Cm = Cm, .D = D,
                  .bias = delta_bias, .init = initial_state, .sp = delta_softplus, .y = y,
                  .final = final_state };
    la_status st = ss_setup(&a, B, T, Dm, Nst, opts, false);
    if (st != LA_STATUS_OK) return st;
    if (!y || !u || !delta || !A || !Bm || !Cm) return LA_STATUS_INVALID_ARG;
    return ss_run(&a, false);
}

la_status la_selective_scan_backward(float * du, float * ddelta, float * dA, float * dBm,
                                     float * dCm, float * dD, float * ddelta_bias,
                                     float * dinitial_state,
                                     const float * dy, const float * dfinal_state,
                                     const float * u, const float * delta,
                                     const float * A, const float * Bm, const float * Cm,
                                     const float * D, const float * delta_bias,
                                     bool delta_softplus, const float * initial_state,
                                     int64_t B, int64_t T, int64_t Dm, int64_t Nst,
                                     const la_opts * opts) {
    ss_args a = { .u = u, .delta = delta, .A = A, .Bm = Bm, .Cm = Cm, .D = D,
                  .bias = delta_bias, .init = initial_state, .sp = delta_softplus, .dy = dy,
                  .dfinal = dfinal_state, .du = du, .ddelta = ddelta, .dA = dA, .dBm = dBm,
                  .dCm = dCm, .dD = dD, .dbias = ddelta_bias, .dinit = dinitial_state };
    la_status st = ss_setup(&a, B, T, Dm, Nst, opts, true);
    if (st != LA_STATUS_OK) return st;
    if (!du || !ddelta || !dA || !dBm || !dCm || !dy || !u || !delta || !A || !Bm || !Cm)
        return LA_STATUS_INVALID_ARG;
    if ((D != NULL) != (dD != NULL) || (delta_bias != NULL) != (ddelta_bias != NULL))
        return LA_STATUS_INVALID_ARG;
    return ss_run(&a, true);
}
