// selective_scan reference: Mamba-1's S6 recurrence and its reverse-time adjoint
// (ALGORITHMS.md 6 and 2.3), per sequence, in la_real.
//
//   dt_t[d]  = z_t[d] = delta_t[d] + delta_bias[d], then softplus(z) when delta_softplus
//   h_t[d,n] = exp(dt_t[d] A[d,n]) h_{t-1}[d,n] + dt_t[d] B_t[n] u_t[d]
//   y_t[d]   = sum_n C_t[n] h_t[d,n] + D[d] u_t[d]
//
// Backward, reverse time with G = dL/dh_t (starting from dfinal_state or 0), E = exp(dt A):
//   G += C_t dy_t^T              dC_t[n] = sum_d h_t[d,n] dy_t[d]      (y_t reads h_t)
//   du_t[d]  = D[d] dy_t[d] + dt_t[d] sum_n G[d,n] B_t[n]
//   dB_t[n]  = sum_d G[d,n] dt_t[d] u_t[d]
//   ddt[d]   = sum_n G[d,n] (A[d,n] E[d,n] h_{t-1}[d,n] + B_t[n] u_t[d])
//   dA[d,n] += G[d,n] dt_t[d] E[d,n] h_{t-1}[d,n] ;   dD[d] += dy_t[d] u_t[d]
//   ddelta_t[d] = ddt[d] softplus'(z) (sigmoid(z), exactly 1 for z > 20; 1 without softplus)
//   ddelta_bias[d] += ddelta_t[d] ;   G <- E o G ;   dh_0 = G
// h_{t-1} is never obtained by inverting a decay: the forward is replayed from checkpoints
// saved every LA_REF_SEG tokens (ALGORITHMS.md 2.4). dA, dD, ddelta_bias are overwritten.
//
// Dimensions: B, T, N as in OPS.md; Dm = d.sh.H channels, Nst = d.sh.K state size
// (d.sh.V = 1). u, delta, y (B,T,Dm); A (Dm,Nst); Bm, Cm (B,T,Nst); D, delta_bias (Dm) or NULL;
// states (N,Dm,Nst).
#include "ref.h"

#include <math.h>
#include <string.h>

#ifdef LA_REF_F64
#define la_rlog1p log1p
#else
#define la_rlog1p log1pf
#endif


int64_t LA_REF(la_selective_scan_ref_ws_elems)(la_ref_dims d) {
    const int64_t S = d.sh.H * d.sh.K;
    const int64_t nseg = (la_ref_max_len(d) + LA_REF_SEG - 1) / LA_REF_SEG;
    // checkpoints (nseg + 1) states, one segment of LA_REF_SEG + 1 states, the adjoint G.
    return (nseg + 1) * S + (LA_REF_SEG + 1) * S + S;
}

// softplus with torch's threshold 20 (OPS.md 0), and its derivative.
static la_real softplus(la_real z) { return z > 20 ? z : la_rlog1p(la_rexp(z)); }
static la_real softplus_grad(la_real z) { return z > 20 ? 1 : 1 / (1 + la_rexp(-z)); }

// z = delta_t[c] + delta_bias[c], the argument of softplus.
static la_real pre_dt(const la_real * delta, const la_real * delta_bias, int64_t t, int64_t c,
                      int64_t Dm) {
    return delta[t * Dm + c] + (delta_bias ? delta_bias[c] : 0);
}

static void load(la_real * h, const la_real * init, int64_t n, int64_t S) {
    if (init) memcpy(h, init + n * S, (size_t)S * sizeof(la_real));
    else memset(h, 0, (size_t)S * sizeof(la_real));
}

// One token on the state h (Dm,Nst); writes y_t (Dm) when y is non-NULL.
static void step(la_real * h, la_real * yt, const la_real * ut, const la_real * delta,
                 const la_real * A, const la_real * Bt, const la_real * Ct, const la_real * D,
                 const la_real * delta_bias, bool sp, int64_t t, int64_t Dm, int64_t Nst) {
    for (int64_t c = 0; c < Dm; c++) {
        const la_real z = pre_dt(delta, delta_bias, t, c, Dm);
        const la_real dt = sp ? softplus(z) : z;
        la_real * hc = h + c * Nst;
        la_real acc = 0;
        for (int64_t i = 0; i < Nst; i++) {
            hc[i] = la_rexp(dt * A[c * Nst + i]) * hc[i] + dt * Bt[i] * ut[c];
            acc += Ct[i] * hc[i];
        }
        if (yt) yt[c] = acc + (D ? D[c] * ut[c] : 0);
    }
}

void LA_REF(la_selective_scan_fwd_ref)(la_real * y, la_real * final_state, const la_real * u,
                                       const la_real * delta, const la_real * A,
                                       const la_real * Bm, const la_real * Cm,
                                       const la_real * D, const la_real * delta_bias,
                                       bool delta_softplus, const la_real * initial_state,
                                       la_ref_dims d, la_real * ws) {
    const int64_t Dm = d.sh.H, Nst = d.sh.K, S = Dm * Nst;
    la_real * h = ws;  // (Dm, Nst)
    for (int64_t n = 0; n < d.N; n++) {
        int64_t bos, eos;
        la_ref_bounds(d, n, &bos, &eos);
        load(h, initial_state, n, S);
        for (int64_t t = bos; t < eos; t++)
            step(h, y + t * Dm, u + t * Dm, delta, A, Bm + t * Nst, Cm + t * Nst, D, delta_bias,
                 delta_softplus, t, Dm, Nst);
        if (final_state) memcpy(final_state + n * S, h, (size_t)S * sizeof(la_real));
    }
}

void LA_REF(la_selective_scan_bwd_ref)(la_real * du, la_real * ddelta, la_real * dA,
                                       la_real * dBm, la_real * dCm, la_real * dD,
                                       la_real * ddelta_bias, la_real * dinitial_state,
                                       const la_real * dy, const la_real * dfinal_state,
                                       const la_real * u, const la_real * delta,
                                       const la_real * A, const la_real * Bm,
                                       const la_real * Cm, const la_real * D,
                                       const la_real * delta_bias, bool delta_softplus,
                                       const la_real * initial_state, la_ref_dims d,
                                       la_real * ws) {
    const int64_t Dm = d.sh.H, Nst = d.sh.K, S = Dm * Nst;
    const int64_t nseg_max = (la_ref_max_len(d) + LA_REF_SEG - 1) / LA_REF_SEG;
    la_real * ckpt = ws;                         // (nseg + 1, Dm, Nst) states at segment starts
    la_real * seg = ckpt + (nseg_max + 1) * S;   // (LA_REF_SEG + 1, Dm, Nst) replayed states
    la_real * G = seg + (LA_REF_SEG + 1) * S;    // (Dm, Nst) adjoint dL/dh_t
    memset(dA, 0, (size_t)S * sizeof(la_real));
    if (dD) memset(dD, 0, (size_t)Dm * sizeof(la_real));
    if (ddelta_bias) memset(ddelta_bias, 0, (size_t)Dm * sizeof(la_real));
    for (int64_t n = 0; n < d.N; n++) {
        int64_t bos, eos;
        la_ref_bounds(d, n, &bos, &eos);
        const int64_t nseg = (eos - bos + LA_REF_SEG - 1) / LA_REF_SEG;
        load(ckpt, initial_state, n, S);
        for (int64_t s = 0; s < nseg; s++) {
            memcpy(ckpt + (s + 1) * S, ckpt + s * S, (size_t)S * sizeof(la_real));
            const int64_t t1 = bos + (s + 1) * LA_REF_SEG < eos ? bos + (s + 1) * LA_REF_SEG : eos;
            for (int64_t t = bos + s * LA_REF_SEG; t < t1; t++)
                step(ckpt + (s + 1) * S, NULL, u + t * Dm, delta, A, Bm + t * Nst, Cm + t * Nst,
                     D, delta_bias, delta_softplus, t, Dm, Nst);
        }
        if (dfinal_state) memcpy(G, dfinal_state + n * S, (size_t)S * sizeof(la_real));
        else memset(G, 0, (size_t)S * sizeof(la_real));
        for (int64_t s = nseg - 1; s >= 0; s--) {
            const int64_t t0 = bos + s * LA_REF_SEG;
            const int64_t t1 = t0 + LA_REF_SEG < eos ? t0 + LA_REF_SEG : eos;
            // seg[i] = h_{t0 + i - 1}: seg[0] is the state before token t0.
            memcpy(seg, ckpt + s * S, (size_t)S * sizeof(la_real));
            for (int64_t t = t0; t < t1; t++) {
                memcpy(seg + (t - t0 + 1) * S, seg + (t - t0) * S, (size_t)S * sizeof(la_real));
                step(seg + (t - t0 + 1) * S, NULL, u + t * Dm, delta, A, Bm + t * Nst,
                     Cm + t * Nst, D, delta_bias, delta_softplus, t, Dm, Nst);
            }
            for (int64_t t = t1 - 1; t >= t0; t--) {
                const la_real * ht = seg + (t - t0 + 1) * S;  // h_t
                const la_real * hp = seg + (t - t0) * S;      // h_{t-1}
                const la_real * Bt = Bm + t * Nst, * Ct = Cm + t * Nst;
                la_real * dBt = dBm + t * Nst, * dCt = dCm + t * Nst;
                for (int64_t i = 0; i < Nst; i++) dBt[i] = dCt[i] = 0;
                for (int64_t c = 0; c < Dm; c++) {
                    const la_real z = pre_dt(delta, delta_bias, t, c, Dm);
                    const la_real dt = delta_softplus ? softplus(z) : z;
                    const la_real dyc = dy[t * Dm + c], uc = u[t * Dm + c];
                    la_real * Gc = G + c * Nst;
                    la_real gb = 0, ddt = 0;
                    for (int64_t i = 0; i < Nst; i++) {
                        const la_real e = la_rexp(dt * A[c * Nst + i]);
                        Gc[i] += Ct[i] * dyc;                    // y_t reads h_t
                        dCt[i] += ht[c * Nst + i] * dyc;
                        dBt[i] += Gc[i] * dt * uc;
                        gb += Gc[i] * Bt[i];
                        ddt += Gc[i] * A[c * Nst + i] * e * hp[c * Nst + i];
                        dA[c * Nst + i] += Gc[i] * dt * e * hp[c * Nst + i];
                        Gc[i] *= e;                              // G becomes dL/dh_{t-1}
                    }
                    ddt += gb * uc;
                    du[t * Dm + c] = dt * gb + (D ? D[c] * dyc : 0);
                    const la_real dz = ddt * (delta_softplus ? softplus_grad(z) : 1);
                    ddelta[t * Dm + c] = dz;
                    if (ddelta_bias) ddelta_bias[c] += dz;
                    if (dD) dD[c] += dyc * uc;
                }
            }
        }
        if (dinitial_state) memcpy(dinitial_state + n * S, G, (size_t)S * sizeof(la_real));
    }
}
