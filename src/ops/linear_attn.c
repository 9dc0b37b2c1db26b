// linear_attn (OPS.md 2.1): S_t = S_{t-1} + k_t v_t^T ; o_t = s S_t^T q_t, optionally normalised
// by the running key sum z_t = z_{t-1} + k_t:  o_t <- o_t / (s q_t . z_t + 1e-10).
//
// The numerator n_t = s S_t^T q_t is simple_gla with no gate, in any form. The normaliser is an
// O(T K) pass per (sequence, head) (ALGORITHMS.md 2.3):
//   forward    z_t = z_0 + sum_{c <= t} k_c ;  d_t = s q_t . z_t + 1e-10 ;  o_t = n_t / d_t
//   backward   dn_t = do_t / d_t ;  dd_t = -(do_t . n_t) / d_t^2
//              dq_t += dd_t s z_t ;  dz_t = dd_t s q_t
//              dk_c += sum_{t >= c} dz_t + dz_T  (suffix sum) ;  dz_0 = sum_t dz_t + dz_T
// with dz_T = dfinal_z; the numerator's gradients come from simple_gla's backward run on dn.
// z is (N, H, K) here (fla: (N, 1, H, K), the same memory).
//
// Dimensions: B, T, H, K, V, N as in OPS.md.
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define LA_NORM_EPS 1e-10f

// Backward scratch: the recomputed numerator n (B,T,H,V), dn (B,T,H,V), the denominators d
// (B,T,H), then simple_gla's scratch.
typedef struct la_norm_buf {
    float * n, * dn, * d;
    void *  inner;
    size_t  inner_size;
} la_norm_buf;

static size_t norm_layout(la_norm_buf * b, void * base, la_shape sh, const la_opts * opts) {
    const size_t ntok = (size_t)(sh.B * sh.T * sh.H);
    la_opts io = *opts;
    io.work = NULL;
    la_carver cv = { base, 0 };
    b->n = la_carve(&cv, ntok * (size_t)sh.V * 4);
    b->dn = la_carve(&cv, ntok * (size_t)sh.V * 4);
    b->d = la_carve(&cv, ntok * 4);
    b->inner_size = LA_MAX(la_simple_gla_workspace_size(true, sh, &io),
                           la_simple_gla_workspace_size(false, sh, &io));
    b->inner = la_carve(&cv, b->inner_size);
    return cv.used;
}

size_t la_linear_attn_workspace_size(bool backward, bool normalize, la_shape sh,
                                     const la_opts * opts) {
    int64_t N;
    if (la_check_common(sh, opts, &N) != LA_STATUS_OK) return 0;
    if (!normalize || !backward) return la_simple_gla_workspace_size(backward, sh, opts);
    la_norm_buf b;
    return norm_layout(&b, NULL, sh, opts) + LA_ALIGN;
}

// Forward normaliser of one (sequence, head): divides n (in o) by d_t, stores d_t when asked,
// writes z_T. z runs in double (a sum of up to T keys); the dot q_t . z_t uses its float copy zf
// in vector lanes. z, zf: K scratch each.
LA_CLONES
static void norm_fwd_task(float * o, float * d_out, float * final_z, const float * q,
                          const float * k, const float * init_z, int64_t n, int64_t h,
                          la_shape sh, const la_opts * opts, float scale, double * restrict z,
                          float * restrict zf) {
    const int64_t H = sh.H, K = sh.K, V = sh.V;
    int64_t bos, eos;
    la_seq_bounds(opts, sh, n, &bos, &eos);
    for (int64_t i = 0; i < K; i++) z[i] = init_z ? (double)init_z[(n * H + h) * K + i] : 0.0;
    for (int64_t t = bos; t < eos; t++) {
        const float * restrict qt = q + (t * H + h) * K, * restrict kt = k + (t * H + h) * K;
        for (int64_t i = 0; i < K; i++) {
            z[i] += (double)kt[i];
            zf[i] = (float)z[i];
        }
        const float d = scale * la_dot_lanes(qt, zf, K) + LA_NORM_EPS;
        float * restrict ot = o + (t * H + h) * V;
        const float inv = 1.0f / d;
        for (int64_t j = 0; j < V; j++) ot[j] *= inv;
        if (d_out) d_out[t * H + h] = d;
    }
    if (final_z)
        for (int64_t i = 0; i < K; i++) final_z[(n * H + h) * K + i] = (float)z[i];
}

// Backward normaliser of one (sequence, head), after simple_gla's backward on dn: adds the
// denominator's share to dq and dk and writes dz_0. d holds d_t on entry (overwritten).
// z, acc: K doubles of scratch each.
LA_CLONES
static void norm_bwd_task(float * dq, float * dk, float * dinit_z, float * d, const float * n_,
                          const float * dout, const float * q, const float * k,
                          const float * init_z, const float * dfinal_z, int64_t n, int64_t h,
                          la_shape sh, const la_opts * opts, float scale, double * restrict z,
                          double * restrict acc) {
    const int64_t H = sh.H, K = sh.K, V = sh.V;
    int64_t bos, eos;
    la_seq_bounds(opts, sh, n, &bos, &eos);
    for (int64_t i = 0; i < K; i++) {
        z[i] = init_z ? (double)init_z[(n * H + h) * K + i] : 0.0;
        acc[i] = dfinal_z ? (double)dfinal_z[(n * H + h) * K + i] : 0.0;
    }
    for (int64_t t = bos; t < eos; t++) {  // z_t forward: dq_t += dd_t s z_t
        const int64_t r = t * H + h;
        const float * restrict kt = k + r * K;
        float * restrict dqt = dq + r * K;
        const double dn = (double)la_dot_lanes(dout + r * V, n_ + r * V, V);
        const double dds = -dn / ((double)d[r] * (double)d[r]) * (double)scale;
        d[r] = (float)dds;  // dd_t s, for the reverse pass
        for (int64_t i = 0; i < K; i++) {
            z[i] += (double)kt[i];
            dqt[i] += (float)(dds * z[i]);
        }
    }
    for (int64_t t = eos - 1; t >= bos; t--) {  // dk_c += suffix sum of dz_t = dd_t s q_t
        const int64_t r = t * H + h;
        const float * restrict qt = q + r * K;
        float * restrict dkt = dk + r * K;
        const double dds = (double)d[r];
        for (int64_t i = 0; i < K; i++) {
            acc[i] += dds * (double)qt[i];
            dkt[i] += (float)acc[i];
        }
    }
    if (dinit_z)
        for (int64_t i = 0; i < K; i++) dinit_z[(n * H + h) * K + i] = (float)acc[i];
}

la_status la_linear_attn_forward(float * o, float * final_state, float * final_z,
                                 const float * q, const float * k, const float * v,
                                 const float * initial_state, const float * initial_z,
                                 bool normalize, la_shape sh, const la_opts * opts) {
    if (!normalize && (initial_z || final_z)) return LA_STATUS_INVALID_ARG;
    la_status st = la_simple_gla_forward(o, final_state, q, k, v, NULL, NULL, initial_state, sh,
                                         opts);
    if (st != LA_STATUS_OK || !normalize) return st;
    int64_t N;
    la_check_common(sh, opts, &N);
    const float scale = la_opts_scale(opts, sh.K);
    const int64_t ntask = N * sh.H;
    bool fail = false;
#pragma omp parallel num_threads(la_slots(ntask)) reduction(|| : fail)
    {
        double * z = malloc((size_t)sh.K * (sizeof(double) + sizeof(float)));
        fail = z == NULL;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < ntask; task++)
            if (z)
                norm_fwd_task(o, NULL, final_z, q, k, initial_z, task / sh.H, task % sh.H, sh,
                              opts, scale, z, (float *)(z + sh.K));
        free(z);
    }
    return fail ? LA_STATUS_NOMEM : st;
}

la_status la_linear_attn_backward(float * dq, float * dk, float * dv,
                                  float * dinitial_state, float * dinitial_z,
                                  const float * dout, const float * dfinal_state,
                                  const float * dfinal_z,
                                  const float * q, const float * k, const float * v,
                                  const float * initial_state, const float * initial_z,
                                  bool normalize, la_shape sh, const la_opts * opts) {
    if (!normalize) {
        if (initial_z || dinitial_z || dfinal_z) return LA_STATUS_INVALID_ARG;
        return la_simple_gla_backward(dq, dk, dv, NULL, dinitial_state, dout, dfinal_state, q, k,
                                      v, NULL, NULL, initial_state, sh, opts);
    }
    int64_t N;
    la_status st = la_check_common(sh, opts, &N);
    if (st != LA_STATUS_OK) return st;
    if (!dout || !q || !k || !dq || !dk) return LA_STATUS_INVALID_ARG;
    la_norm_buf b;
    void * ws;
    bool owned;
    st = la_ws_acquire(opts, norm_layout(&b, NULL, sh, opts) + LA_ALIGN, &ws, &owned);
    if (st != LA_STATUS_OK) return st;
    norm_layout(&b, ws, sh, opts);
    la_opts io = *opts;
    io.work = b.inner;
    io.work_size = b.inner_size;
    // Numerator and denominators again, then dn = do / d.
    st = la_simple_gla_forward(b.n, NULL, q, k, v, NULL, NULL, initial_state, sh, &io);
    if (st != LA_STATUS_OK) {
        la_ws_release(ws, owned);
        return st;
    }
    const float scale = la_opts_scale(opts, sh.K);
    const int64_t H = sh.H, K = sh.K, V = sh.V, ntask = N * H;
    const int64_t ntok = sh.B * sh.T * H;
    // The numerator stays in b.n: the division is redone into b.dn to get the denominators.
    memcpy(b.dn, b.n, (size_t)(ntok * V) * sizeof(float));
    bool fail = false;
#pragma omp parallel num_threads(la_slots(ntask)) reduction(|| : fail)
    {
        double * z = malloc((size_t)K * (sizeof(double) + sizeof(float)));
        fail = z == NULL;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < ntask; task++)
            if (z) norm_fwd_task(b.dn, b.d, NULL, q, k, initial_z, task / H, task % H, sh, opts,
                                 scale, z, (float *)(z + K));
        free(z);
    }
#pragma omp parallel for schedule(static) num_threads(la_slots(ntok / 256 + 1))
    for (int64_t r = 0; r < ntok; r++) {
        const float d = b.d[r];
        for (int64_t j = 0; j < V; j++) b.dn[r * V + j] = dout[r * V + j] / d;
    }
    st = la_simple_gla_backward(dq, dk, dv, NULL, dinitial_state, b.dn, dfinal_state, q, k, v,
                                NULL, NULL, initial_state, sh, &io);
    if (st == LA_STATUS_OK) {
        // The normaliser's share (see the file header).
#pragma omp parallel num_threads(la_slots(ntask)) reduction(|| : fail)
        {
            double * z = malloc((size_t)(2 * K) * sizeof(double));
            fail = fail || z == NULL;
#pragma omp for schedule(static)
            for (int64_t task = 0; task < ntask; task++)
                if (z)
                    norm_bwd_task(dq, dk, dinitial_z, b.d, b.n, dout, q, k, initial_z, dfinal_z,
                                  task / H, task % H, sh, opts, scale, z, z + K);
            free(z);
        }
    }
    if (st == LA_STATUS_OK && fail) st = LA_STATUS_NOMEM;
    la_ws_release(ws, owned);
    return st;
}
