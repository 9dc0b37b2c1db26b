// mamba2: Mamba2's SSD recurrence through simple_gla (OPS.md 2.16, ALGORITHMS.md 6).
//
//   dt_t = softplus(dt_raw_t + dt_bias_h),  A_h = -exp(A_log_h)
//   h_t  = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T ;   y_t = h_t C_t + D_h x_t
//
// is exactly simple_gla(q = C, k = B, v = dt x, g = dt A, scale = 1) with state S = h^T
// (Nst x P per head), plus D x. B and C are shared by the H/G heads of a group and expanded per
// head before the call. Every form of simple_gla (and its backward) therefore serves Mamba2.
//
// Backward (chain rule through the mapping; dq, dk, dv, dg from simple_gla):
//   dx = dv * dt + D dy ;  ddt = sum_p dv x + dg A ;  ddt_raw = ddt * softplus'(dt_raw + bias)
//   dA_log_h = A_h * sum_t dg_t dt_t ;  dB_g = sum_{h in g} dk_h ;  dC_g = sum_{h in g} dq_h
//   dD_h = sum dy x ;  ddt_bias_h = sum_t ddt_raw
// softplus' is sigmoid, and exactly 1 above the threshold 20 where softplus is the identity.
//
// Dimensions: B, T, H (heads), P = sh.V (head dim), Nst = sh.K (d_state), G (groups).
#include "internal.h"

#include <string.h>

typedef struct m2_buf {
    float * q, * k;     // (B,T,H,Nst) C and B expanded per head
    float * v;          // (B,T,H,P)   dt x
    float * g;          // (B,T,H)     dt A
    float * dtp;        // (B,T,H)     softplus(dt + dt_bias)
    float * dq, * dk;   // backward: as q, k
    float * dv;         // backward: as v
    float * dg;         // backward: as g
    void *  inner;
    size_t  inner_size;
} m2_buf;

static size_t m2_layout(m2_buf * m, void * base, bool backward, la_shape sh,
                        const la_opts * opts) {
    const size_t ntok = (size_t)(sh.B * sh.T * sh.H);
    la_carver cv = { base, 0 };
    m->q = la_carve(&cv, ntok * (size_t)sh.K * 4);
    m->k = la_carve(&cv, ntok * (size_t)sh.K * 4);
    m->v = la_carve(&cv, ntok * (size_t)sh.V * 4);
    m->g = la_carve(&cv, ntok * 4);
    m->dtp = la_carve(&cv, ntok * 4);
    m->dq = backward ? la_carve(&cv, ntok * (size_t)sh.K * 4) : NULL;
    m->dk = backward ? la_carve(&cv, ntok * (size_t)sh.K * 4) : NULL;
    m->dv = backward ? la_carve(&cv, ntok * (size_t)sh.V * 4) : NULL;
    m->dg = backward ? la_carve(&cv, ntok * 4) : NULL;
    la_opts io = *opts;
    io.work = NULL;
    m->inner_size = la_simple_gla_workspace_size(backward, sh, &io);
    m->inner = la_carve(&cv, m->inner_size);
    return cv.used;
}

size_t la_mamba2_workspace_size(bool backward, la_shape sh, int64_t G, const la_opts * opts) {
    int64_t N;
    if (la_check_common(sh, opts, &N) != LA_STATUS_OK) return 0;
    m2_buf m;
    return m2_layout(&m, NULL, backward, sh, opts) + LA_ALIGN;
}

static inline float neg_exp(float a_log) { return -expf(a_log); }

// Builds the simple_gla inputs from the Mamba2 ones.
static void m2_map(m2_buf * m, const float * x, const float * dt, const float * A_log,
                   const float * Bm, const float * Cm, const float * dt_bias, la_shape sh,
                   int64_t G) {
    const int64_t H = sh.H, P = sh.V, Nst = sh.K, hpg = H / G, ntok = sh.B * sh.T;
    // Tokens are independent: split them over the threads (each writes its own rows).
#pragma omp parallel for schedule(static) num_threads(la_slots(ntok / 64 + 1))
    for (int64_t t = 0; t < ntok; t++) {
        for (int64_t h = 0; h < H; h++) {
            const int64_t th = t * H + h, grp = h / hpg;
            const float d = la_softplus(dt[th] + (dt_bias ? dt_bias[h] : 0.0f));
            m->dtp[th] = d;
            m->g[th] = d * neg_exp(A_log[h]);
            memcpy(m->q + th * Nst, Cm + (t * G + grp) * Nst, (size_t)Nst * sizeof(float));
            memcpy(m->k + th * Nst, Bm + (t * G + grp) * Nst, (size_t)Nst * sizeof(float));
            for (int64_t p = 0; p < P; p++) m->v[th * P + p] = d * x[th * P + p];
        }
    }
}

static la_status m2_check(la_shape sh, int64_t G, const la_opts * opts, const float * x,
                          const float * dt, const float * A_log, const float * Bm,
                          const float * Cm, int64_t * N) {
    la_status st = la_check_common(sh, opts, N);
    if (st != LA_STATUS_OK) return st;
    if (G < 1 || sh.H % G != 0) return LA_STATUS_SHAPE;
    if (!x || !dt || !A_log || !Bm || !Cm) return LA_STATUS_INVALID_ARG;
    return LA_STATUS_OK;
}

la_status la_mamba2_forward(float * y, float * final_state,
                            const float * x, const float * dt, const float * A_log,
                            const float * Bm, const float * Cm, const float * D,
                            const float * dt_bias, const float * initial_state,
                            la_shape sh, int64_t G, const la_opts * opts) {
    int64_t N;
    la_status st = m2_check(sh, G, opts, x, dt, A_log, Bm, Cm, &N);
    if (st != LA_STATUS_OK) return st;
    if (!y) return LA_STATUS_INVALID_ARG;
    m2_buf m;
    void * ws;
    bool owned;
    st = la_ws_acquire(opts, m2_layout(&m, NULL, false, sh, opts) + LA_ALIGN, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    m2_layout(&m, ws, false, sh, opts);
    m2_map(&m, x, dt, A_log, Bm, Cm, dt_bias, sh, G);
    la_opts io = *opts;
    io.scale = 1.0f;
    io.work = m.inner;
    io.work_size = m.inner_size;
    st = la_simple_gla_forward(y, final_state, m.q, m.k, m.v, m.g, NULL, initial_state, sh, &io);
    if (st == LA_STATUS_OK && D) {
        const int64_t ntok = sh.B * sh.T, H = sh.H, P = sh.V;
        for (int64_t t = 0; t < ntok; t++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t p = 0; p < P; p++) y[(t * H + h) * P + p] += D[h] * x[(t * H + h) * P + p];
    }
    la_ws_release(ws, owned);
    return st;
}

la_status la_mamba2_backward(float * dx, float * ddt, float * dA_log, float * dBm,
                             float * dCm, float * dD, float * ddt_bias,
                             float * dinitial_state,
                             const float * dy, const float * dfinal_state,
                             const float * x, const float * dt, const float * A_log,
                             const float * Bm, const float * Cm, const float * D,
                             const float * dt_bias, const float * initial_state,
                             la_shape sh, int64_t G, const la_opts * opts) {
    int64_t N;
    la_status st = m2_check(sh, G, opts, x, dt, A_log, Bm, Cm, &N);
    if (st != LA_STATUS_OK) return st;
    if (!dy || !dx || !ddt || !dA_log || !dBm || !dCm) return LA_STATUS_INVALID_ARG;
    if ((D != NULL) != (dD != NULL) || (dt_bias != NULL) != (ddt_bias != NULL))
        return LA_STATUS_INVALID_ARG;
    m2_buf m;
    void * ws;
    bool owned;
    st = la_ws_acquire(opts, m2_layout(&m, NULL, true, sh, opts) + LA_ALIGN, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    m2_layout(&m, ws, true, sh, opts);
    m2_map(&m, x, dt, A_log, Bm, Cm, dt_bias, sh, G);
    la_opts io = *opts;
    io.scale = 1.0f;
    io.work = m.inner;
    io.work_size = m.inner_size;
    st = la_simple_gla_backward(m.dq, m.dk, m.dv, m.dg, dinitial_state, dy, dfinal_state, m.q,
                                m.k, m.v, m.g, NULL, initial_state, sh, &io);
    if (st == LA_STATUS_OK) {
        const int64_t H = sh.H, P = sh.V, Nst = sh.K, hpg = H / G, ntok = sh.B * sh.T;
        // Per token: dx and the raw dt gradient, and dB, dC summed over the group's heads (each
        // token writes its own rows, so tokens split over threads).
#pragma omp parallel for schedule(static) num_threads(la_slots(ntok / 64 + 1))
        for (int64_t t = 0; t < ntok; t++) {
            memset(dBm + t * G * Nst, 0, (size_t)(G * Nst) * sizeof(float));
            memset(dCm + t * G * Nst, 0, (size_t)(G * Nst) * sizeof(float));
            for (int64_t h = 0; h < H; h++) {
                const int64_t th = t * H + h, grp = h / hpg;
                const float A = neg_exp(A_log[h]);
                const float * xr = x + th * P, * dvr = m.dv + th * P, * dyr = dy + th * P;
                float * dxr = dx + th * P;
                double dd = (double)m.dg[th] * (double)A;
                for (int64_t p = 0; p < P; p++) {
                    dxr[p] = dvr[p] * m.dtp[th] + (D ? D[h] * dyr[p] : 0.0f);
                    dd += (double)dvr[p] * (double)xr[p];
                }
                const float z = dt[th] + (dt_bias ? dt_bias[h] : 0.0f);
                ddt[th] = (float)(dd * (z > 20.0f ? 1.0 : (double)la_sigmoid(z)));
                for (int64_t i = 0; i < Nst; i++) {
                    dBm[(t * G + grp) * Nst + i] += m.dk[th * Nst + i];
                    dCm[(t * G + grp) * Nst + i] += m.dq[th * Nst + i];
                }
            }
        }
        // Per head: sums over tokens, in token order (double), heads split over threads.
#pragma omp parallel for schedule(static) num_threads(la_slots(H))
        for (int64_t h = 0; h < H; h++) {
            const float A = neg_exp(A_log[h]);
            double sA = 0, sD = 0, sb = 0;
            for (int64_t t = 0; t < ntok; t++) {
                const int64_t th = t * H + h;
                sA += (double)m.dg[th] * (double)m.dtp[th];
                sb += (double)ddt[th];
                if (D) {
                    const float * xr = x + th * P, * dyr = dy + th * P;
                    for (int64_t p = 0; p < P; p++) sD += (double)dyr[p] * (double)xr[p];
                }
            }
            dA_log[h] = (float)(sA * (double)A);
            if (dD) dD[h] = (float)sD;
            if (ddt_bias) ddt_bias[h] = (float)sb;
        }
    }
    la_ws_release(ws, owned);
    return st;
}
