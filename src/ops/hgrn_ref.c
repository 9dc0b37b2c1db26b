// hgrn reference: the plain elementwise recurrence and its reverse-time adjoint (OPS.md 2.13,
// ALGORITHMS.md 2.3), per sequence, in la_real.
//
//   h_t = exp(g_t) o h_{t-1} + x_t ;   o_t = h_t
//
// Backward, reverse time with dh = dL/dh_t (starting from dh_T = dfinal_state or 0):
//   dh += do_t ;  dx_t = dh ;  dg_t = dh o exp(g_t) o h_{t-1} ;  dh <- exp(g_t) o dh ;  dh_0 = dh
// h_{t-1} is never obtained by inverting a decay: the forward is replayed from checkpoints
// saved every LA_REF_SEG tokens (ALGORITHMS.md 2.4).
//
// Dimensions: B, T, N as in OPS.md, D = d.sh.H channels (d.sh.K = d.sh.V = 1); x, g, o (B,T,D);
// states (N,D).
#include "ref.h"

#include <math.h>
#include <string.h>


int64_t LA_REF(la_hgrn_ref_ws_elems)(la_ref_dims d) {
    const int64_t D = d.sh.H;
    const int64_t nseg = (la_ref_max_len(d) + LA_REF_SEG - 1) / LA_REF_SEG;
    // checkpoints (nseg + 1) states, one segment of LA_REF_SEG + 1 states, the adjoint dh.
    return (nseg + 1) * D + (LA_REF_SEG + 1) * D + D;
}

static void load(la_real * h, const la_real * init, int64_t n, int64_t D) {
    if (init) memcpy(h, init + n * D, (size_t)D * sizeof(la_real));
    else memset(h, 0, (size_t)D * sizeof(la_real));
}

// h <- exp(g_t) o h + x_t over D channels.
static void step(la_real * h, const la_real * xt, const la_real * gt, int64_t D) {
    for (int64_t c = 0; c < D; c++) h[c] = la_rexp(gt[c]) * h[c] + xt[c];
}

void LA_REF(la_hgrn_fwd_ref)(la_real * o, la_real * final_state, const la_real * x,
                             const la_real * g, const la_real * initial_state, la_ref_dims d,
                             la_real * ws) {
    const int64_t D = d.sh.H;
    la_real * h = ws;  // (D)
    for (int64_t n = 0; n < d.N; n++) {
        int64_t bos, eos;
        la_ref_bounds(d, n, &bos, &eos);
        load(h, initial_state, n, D);
        for (int64_t t = bos; t < eos; t++) {
            step(h, x + t * D, g + t * D, D);
            memcpy(o + t * D, h, (size_t)D * sizeof(la_real));
        }
        if (final_state) memcpy(final_state + n * D, h, (size_t)D * sizeof(la_real));
    }
}

void LA_REF(la_hgrn_bwd_ref)(la_real * dx, la_real * dg, la_real * dinitial_state,
                             const la_real * dout, const la_real * dfinal_state,
                             const la_real * x, const la_real * g,
                             const la_real * initial_state, la_ref_dims d, la_real * ws) {
    const int64_t D = d.sh.H;
    const int64_t nseg_max = (la_ref_max_len(d) + LA_REF_SEG - 1) / LA_REF_SEG;
    la_real * ckpt = ws;                         // (nseg + 1, D) states at segment starts
    la_real * seg = ckpt + (nseg_max + 1) * D;   // (LA_REF_SEG + 1, D) replayed states
    la_real * dh = seg + (LA_REF_SEG + 1) * D;   // (D) adjoint dL/dh_t
    for (int64_t n = 0; n < d.N; n++) {
        int64_t bos, eos;
        la_ref_bounds(d, n, &bos, &eos);
        const int64_t nseg = (eos - bos + LA_REF_SEG - 1) / LA_REF_SEG;
        load(ckpt, initial_state, n, D);
        for (int64_t s = 0; s < nseg; s++) {
            memcpy(ckpt + (s + 1) * D, ckpt + s * D, (size_t)D * sizeof(la_real));
            const int64_t t1 = bos + (s + 1) * LA_REF_SEG < eos ? bos + (s + 1) * LA_REF_SEG : eos;
            for (int64_t t = bos + s * LA_REF_SEG; t < t1; t++)
                step(ckpt + (s + 1) * D, x + t * D, g + t * D, D);
        }
        if (dfinal_state) memcpy(dh, dfinal_state + n * D, (size_t)D * sizeof(la_real));
        else memset(dh, 0, (size_t)D * sizeof(la_real));
        for (int64_t s = nseg - 1; s >= 0; s--) {
            const int64_t t0 = bos + s * LA_REF_SEG;
            const int64_t t1 = t0 + LA_REF_SEG < eos ? t0 + LA_REF_SEG : eos;
            // seg[i] = h_{t0 + i - 1}: seg[0] is the state before token t0.
            memcpy(seg, ckpt + s * D, (size_t)D * sizeof(la_real));
            for (int64_t t = t0; t < t1; t++) {
                memcpy(seg + (t - t0 + 1) * D, seg + (t - t0) * D, (size_t)D * sizeof(la_real));
                step(seg + (t - t0 + 1) * D, x + t * D, g + t * D, D);
            }
            for (int64_t t = t1 - 1; t >= t0; t--) {
                const la_real * hp = seg + (t - t0) * D;  // h_{t-1}
                for (int64_t c = 0; c < D; c++) {
                    const la_real decay = la_rexp(g[t * D + c]);
                    dh[c] += dout[t * D + c];              // o_t = h_t
                    dx[t * D + c] = dh[c];
                    dg[t * D + c] = dh[c] * decay * hp[c];
                    dh[c] *= decay;                        // dh becomes dL/dh_{t-1}
                }
            }
        }
        if (dinitial_state) memcpy(dinitial_state + n * D, dh, (size_t)D * sizeof(la_real));
    }
}
