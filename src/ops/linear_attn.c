// linear_attn (OPS.md 2.1): S_t = S_{t-1} + k_t v_t^T ; o_t = s S_t^T q_t, optionally normalised
// by the running key sum z_t = z_{t-1} + k_t:  o_t <- o_t / (s q_t . z_t + 1e-10).
//
// Without normalize this is simple_gla with no gate. With normalize, the key sum is one more
// value column: appending a column of ones to v makes column V of the state equal to z and
// column V of the output equal to s q_t . z_t, so every form (ref, recurrent, chunk, and their
// backward passes) comes from simple_gla on [v, 1] (V+1 columns) followed by the division:
//   o_t = n_t / d_t,  n_t = o_ext[t, :V],  d_t = o_ext[t, V] + 1e-10
//   backward: do_ext[t, :V] = do_t / d_t ;  do_ext[t, V] = -(do_t . n_t) / d_t^2
// The state pair (S, z) is S_ext = [S, z] with z (N, H, K) as its last column.
//
// Dimensions: B, T, H, K, V, N as in OPS.md.
#include "internal.h"

#include <string.h>

#define LA_NORM_EPS 1e-10f

typedef struct la_ext {
    float * v;      // (B,T,H,V+1) [v, 1]
    float * o;      // (B,T,H,V+1) simple_gla output on [v, 1]
    float * dout;   // (B,T,H,V+1) backward only
    float * dv;     // (B,T,H,V+1) backward only
    float * s0;     // (N,H,K,V+1) [S_0, z_0]
    float * s1;     // (N,H,K,V+1) final state, or its gradient in backward
    float * ds0;    // (N,H,K,V+1) backward only
    void *  inner;  // simple_gla scratch
    size_t  inner_size;
} la_ext;

static size_t ext_layout(la_ext * e, void * base, bool backward, la_shape sh, int64_t N,
                         const la_opts * opts) {
    la_shape se = sh;
    se.V = sh.V + 1;
    const size_t tok = (size_t)(sh.B * sh.T * sh.H * se.V) * 4;
    const size_t st = (size_t)(N * sh.H * sh.K * se.V) * 4;
    la_opts io = *opts;
    io.work = NULL;
    la_carver cv = { base, 0 };
    e->v = la_carve(&cv, tok);
    e->o = la_carve(&cv, tok);
    e->dout = backward ? la_carve(&cv, tok) : NULL;
    e->dv = backward ? la_carve(&cv, tok) : NULL;
    e->s0 = la_carve(&cv, st);
    e->s1 = la_carve(&cv, st);
    e->ds0 = backward ? la_carve(&cv, st) : NULL;
    e->inner_size = la_simple_gla_workspace_size(backward, se, &io);
    // The backward also runs the forward to recover n_t and d_t.
    if (backward) e->inner_size = LA_MAX(e->inner_size, la_simple_gla_workspace_size(false, se, &io));
    e->inner = la_carve(&cv, e->inner_size);
    return cv.used;
}

size_t la_linear_attn_workspace_size(bool backward, bool normalize, la_shape sh,
                                     const la_opts * opts) {
    int64_t N;
    if (la_check_common(sh, opts, &N) != LA_STATUS_OK) return 0;
    if (!normalize) return la_simple_gla_workspace_size(backward, sh, opts);
    la_ext e;
    return ext_layout(&e, NULL, backward, sh, N, opts) + LA_ALIGN;
}

// dst (rows, V+1) <- [src (rows, V) or 0, col (rows) or `fill`].
static void pack_ext(float * dst, const float * src, const float * col, float fill,
                     int64_t rows, int64_t V) {
    for (int64_t r = 0; r < rows; r++) {
        float * d = dst + r * (V + 1);
        if (src) memcpy(d, src + r * V, (size_t)V * sizeof(float));
        else memset(d, 0, (size_t)V * sizeof(float));
        d[V] = col ? col[r] : fill;
    }
}

// Splits src (rows, V+1) into dst (rows, V) and col (rows), each optional.
static void unpack_ext(float * dst, float * col, const float * src, int64_t rows, int64_t V) {
    for (int64_t r = 0; r < rows; r++) {
        if (dst) memcpy(dst + r * V, src + r * (V + 1), (size_t)V * sizeof(float));
        if (col) col[r] = src[r * (V + 1) + V];
    }
}

// Shared set-up: validates, acquires the workspace and builds [v, 1] and [S_0, z_0].
static la_status ext_begin(la_ext * e, void ** ws, bool * owned, bool backward, la_shape sh,
                           const la_opts * opts, const float * v, const float * init,
                           const float * init_z, int64_t * N) {
    la_status st = la_check_common(sh, opts, N);
    if (st != LA_STATUS_OK) return st;
    if (!v) return LA_STATUS_INVALID_ARG;
    la_ext tmp;
    const size_t need = ext_layout(&tmp, NULL, backward, sh, *N, opts) + LA_ALIGN;
    st = la_ws_acquire(opts, need, ws, owned);
    if (st != LA_STATUS_OK) return st;
    ext_layout(e, *ws, backward, sh, *N, opts);
    const int64_t ntok = sh.B * sh.T * sh.H, nst = *N * sh.H;
    pack_ext(e->v, v, NULL, 1.0f, ntok, sh.V);
    // S_0 rows are (n, h, i): column V of row (n, h, i) is z_0[n, h, i].
    pack_ext(e->s0, init, init_z, 0.0f, nst * sh.K, sh.V);
    return LA_STATUS_OK;
}

la_status la_linear_attn_forward(float * o, float * final_state, float * final_z,
                                 const float * q, const float * k, const float * v,
                                 const float * initial_state, const float * initial_z,
                                 bool normalize, la_shape sh, const la_opts * opts) {
    if (!normalize) {
        if (initial_z || final_z) return LA_STATUS_INVALID_ARG;
        return la_simple_gla_forward(o, final_state, q, k, v, NULL, NULL, initial_state, sh, opts);
    }
    if (!o) return LA_STATUS_INVALID_ARG;
    la_ext e;
    void * ws;
    bool owned;
    int64_t N;
    la_status st = ext_begin(&e, &ws, &owned, false, sh, opts, v, initial_state, initial_z, &N);
    if (st != LA_STATUS_OK) return st;
    la_shape se = sh;
    se.V = sh.V + 1;
    la_opts io = *opts;
    io.work = e.inner;
    io.work_size = e.inner_size;
    st = la_simple_gla_forward(e.o, e.s1, q, k, e.v, NULL, NULL, e.s0, se, &io);
    if (st == LA_STATUS_OK) {
        const int64_t ntok = sh.B * sh.T * sh.H, V = sh.V;
        for (int64_t r = 0; r < ntok; r++) {
            const float * n = e.o + r * (V + 1);
            const float d = n[V] + LA_NORM_EPS;
            for (int64_t j = 0; j < V; j++) o[r * V + j] = n[j] / d;
        }
        unpack_ext(final_state, final_z, e.s1, N * sh.H * sh.K, V);
    }
    la_ws_release(ws, owned);
    return st;
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
    if (!dout || !dv) return LA_STATUS_INVALID_ARG;
    la_ext e;
    void * ws;
    bool owned;
    int64_t N;
    la_status st = ext_begin(&e, &ws, &owned, true, sh, opts, v, initial_state, initial_z, &N);
    if (st != LA_STATUS_OK) return st;
    la_shape se = sh;
    se.V = sh.V + 1;
    la_opts io = *opts;
    io.work = e.inner;
    io.work_size = e.inner_size;
    st = la_simple_gla_forward(e.o, NULL, q, k, e.v, NULL, NULL, e.s0, se, &io);
    if (st == LA_STATUS_OK) {
        const int64_t ntok = sh.B * sh.T * sh.H, V = sh.V;
        for (int64_t r = 0; r < ntok; r++) {
            const float * n = e.o + r * (V + 1);
            const float * dor = dout + r * V;
            float * de = e.dout + r * (V + 1);
            const float d = n[V] + LA_NORM_EPS;
            double dn = 0;
            for (int64_t j = 0; j < V; j++) {
                de[j] = dor[j] / d;
                dn += (double)dor[j] * (double)n[j];
            }
            de[V] = (float)(-dn / ((double)d * (double)d));
        }
        pack_ext(e.s1, dfinal_state, dfinal_z, 0.0f, N * sh.H * sh.K, V);
        st = la_simple_gla_backward(dq, dk, e.dv, NULL, e.ds0, e.dout, e.s1, q, k, e.v, NULL,
                                    NULL, e.s0, se, &io);
    }
    if (st == LA_STATUS_OK) {
        unpack_ext(dv, NULL, e.dv, sh.B * sh.T * sh.H, sh.V);
        unpack_ext(dinitial_state, dinitial_z, e.ds0, N * sh.H * sh.K, sh.V);
    }
    la_ws_release(ws, owned);
    return st;
}
