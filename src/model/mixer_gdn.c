// GatedDeltaNet layer (OPS.md 5.3):
//   q, k, v = SiLU(conv(x W^T))                      (rows, H dk) (rows, H dk) (rows, HV dv)
//   o = gated_delta_rule(q, k, v, g = x Wa^T, beta = x Wb^T, A_log, dt_bias) with the qk
//       l2norm, the gate (g = -exp(A_log) softplus(a + dt_bias)) and the beta sigmoid in kernel
//   y = o_proj( RMSNormGated_swish(o, x Wg^T) )   (per head over dv; RMSNorm(o) without gate)
// Decode cache per layer: state (N, HV, dk, dv), conv caches (N, H dk, W) x 2, (N, HV dv, W).
#include "model.h"

#include "nn.h"

#include <math.h>

enum { P_Q, P_K, P_V, P_A, P_B, P_ALOG, P_DT, P_ONORM, P_O, P_REST };

typedef struct {
    int g, qc, kc, vc;  // parameter slots of the optional parts, -1 when absent
} gdn_slots;

static gdn_slots slots_of(const la_model * m) {
    const la_config * c = &m->cfg;
    gdn_slots s = { -1, -1, -1, -1 };
    int i = P_REST;
    if (c->use_gate) s.g = i++;
    if (c->use_short_conv) s.qc = i, s.kc = i + 1, s.vc = i + 2;
    return s;
}

static la_status gdn_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    const int64_t D = m->D;
    la_status s = la_gva_dims(m, L, false, err, errlen);
    if (s) return s;
    const int64_t Dv = L->value_dim, HV = L->HV;
    la_qkv_params(m, L);
    la_layer_param(m, L, "a_proj.weight", 2, (int64_t[]){ HV, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "b_proj.weight", 2, (int64_t[]){ HV, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "A_log", 1, (int64_t[]){ HV }, LA_INIT_A_LOG_GDN, false);
    la_layer_param(m, L, "dt_bias", 1, (int64_t[]){ HV }, LA_INIT_DT_BIAS, false);
    la_layer_param(m, L, "o_norm.weight", 1, (int64_t[]){ L->dv }, LA_INIT_ONE, false);
    la_layer_param(m, L, "o_proj.weight", 2, (int64_t[]){ D, Dv }, LA_INIT_NORMAL, true);
    if (c->use_gate)
        la_layer_param(m, L, "g_proj.weight", 2, (int64_t[]){ Dv, D }, LA_INIT_NORMAL, true);
    if (c->use_short_conv) la_qkv_conv_params(m, L);
    return LA_STATUS_OK;
}

static la_shape gdn_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->dk, .V = L->dv, .HV = L->HV };
}

static la_opts gdn_flags(const la_model * m, la_opts o) {
    o.use_qk_l2norm_in_kernel = true;
    o.use_gate_in_kernel = true;
    o.use_beta_sigmoid_in_kernel = true;
    o.allow_neg_eigval = m->cfg.allow_neg_eigval;
    return o;
}

// Saved activations, in this order (rows = B T):
//   xq, xk (rows, Dk)  xv (rows, Dv)   pre-conv projections
//   q, k   (rows, Dk)  v  (rows, Dv)   after conv + SiLU
//   a, b   (rows, HV)                  raw gate and beta inputs
//   o, gt, on (rows, Dv)               op output, output gate input, gated-norm output
typedef struct {
    float *xq, *xk, *xv, *q, *k, *v, *a, *b, *o, *gt, *on;
} gdn_act;

static gdn_act act_of(const la_layer * L, float * base, int64_t rows) {
    gdn_act a;
    const int64_t Dk = L->key_dim, Dv = L->value_dim;
    a.xq = base, a.xk = a.xq + rows * Dk, a.xv = a.xk + rows * Dk;
    a.q = a.xv + rows * Dv, a.k = a.q + rows * Dk, a.v = a.k + rows * Dk;
    a.a = a.v + rows * Dv, a.b = a.a + rows * L->HV;
    a.o = a.b + rows * L->HV, a.gt = a.o + rows * Dv, a.on = a.gt + rows * Dv;
    return a;
}

static size_t gdn_act_floats(const la_layer * L, int64_t B, int64_t T) {
    return (size_t)(B * T * (4 * L->key_dim + 5 * L->value_dim + 2 * L->HV));
}

// Backward scratch: don, do, dgt, dq, dk, dv, da, db, tmp, dA, ddt; then the op's workspace.
static int64_t scratch_counts(const la_layer * L, int64_t rows, int64_t * n) {
    const int64_t Dk = L->key_dim, Dv = L->value_dim, HV = L->HV;
    const int64_t c[] = { rows * Dv, rows * Dv, rows * Dv, rows * Dk, rows * Dk, rows * Dv,
                          rows * HV, rows * HV, rows * LA_MAX(Dk, Dv), HV, HV };
    memcpy(n, c, sizeof c);
    return 11;
}

static size_t gdn_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    int64_t n[11];
    const int cnt = (int)scratch_counts(L, B * T, n);
    la_opts o = la_opts_default();
    o.use_qk_l2norm_in_kernel = o.use_gate_in_kernel = o.use_beta_sigmoid_in_kernel = true;
    // the forward's final state when chunked prefill cannot update the cache in place
    const size_t fin = la_align_up((size_t)(B * L->HV * L->dk * L->dv) * 4);
    return la_floats_bytes(cnt, n) + fin + LA_ALIGN +
           la_gated_delta_rule_workspace_size(backward, gdn_shape(L, B, T), &o);
}

static size_t gdn_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    const int64_t W = L->W;
    return (size_t)(L->HV * L->dk * L->dv + (2 * L->key_dim + L->value_dim) * W);
}

static la_status gdn_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                             const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, Dv = L->value_dim;
    const gdn_slots sl = slots_of(m);
    const gdn_act a = act_of(L, c->act, rows);
    const la_qkv_bufs qb = { a.xq, a.xk, a.xv, a.q, a.k, a.v };
    float * state;
    la_status s = la_qkv_forward(m, L, c, &qb, x, sl.qc, LA_ACT_SILU, &state);
    if (!s) s = la_linear_forward(a.a, x, la_pw(m, L, P_A), NULL, rows, D, L->HV);
    if (!s) s = la_linear_forward(a.b, x, la_pw(m, L, P_B), NULL, rows, D, L->HV);
    if (s) return s;
    int64_t n[11];
    const int cnt = (int)scratch_counts(L, rows, n);
    la_carver w = { (char *)c->work, la_floats_bytes(cnt, n) };
    const size_t sbytes = (size_t)(B * L->HV * L->dk * L->dv) * 4;
    float * fin = la_carve(&w, sbytes);
    la_opts o = gdn_flags(m, la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used));
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    float * final = state && o.form == LA_FORM_RECURRENT ? state : state ? fin : NULL;
    s = la_gated_delta_rule_forward(a.o, final, a.q, a.k, a.v, a.a, a.b, la_pw(m, L, P_ALOG),
                                    la_pw(m, L, P_DT), state, gdn_shape(L, B, T), &o);
    if (s) return s;
    if (final == fin) memcpy(state, fin, sbytes);
    const float eps = (float)m->cfg.norm_eps;
    if (sl.g >= 0) {
        s = la_linear_forward(a.gt, x, la_pw(m, L, sl.g), NULL, rows, D, Dv);
        if (!s) s = la_rmsnorm_gated_forward(a.on, a.o, a.gt, la_pw(m, L, P_ONORM), eps,
                                             LA_ACT_SILU, rows * L->HV, L->dv);
    } else {
        s = la_rmsnorm_forward(a.on, a.o, la_pw(m, L, P_ONORM), eps, rows * L->HV, L->dv);
    }
    if (!s) s = la_linear_forward(y, a.on, la_pw(m, L, P_O), NULL, rows, Dv, D);
    return s;
}

static la_status gdn_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                              const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, Dk = L->key_dim, Dv = L->value_dim;
    const int64_t HV = L->HV;
    const gdn_slots sl = slots_of(m);
    const gdn_act a = act_of(L, c->act, rows);
    la_carver w = { (char *)c->work, 0 };
    float * don = la_carve(&w, (size_t)(rows * Dv) * 4), *dO = la_carve(&w, (size_t)(rows * Dv) * 4);
    float * dgt = la_carve(&w, (size_t)(rows * Dv) * 4), *dq = la_carve(&w, (size_t)(rows * Dk) * 4);
    float * dk = la_carve(&w, (size_t)(rows * Dk) * 4), *dv = la_carve(&w, (size_t)(rows * Dv) * 4);
    float * da = la_carve(&w, (size_t)(rows * HV) * 4), *db = la_carve(&w, (size_t)(rows * HV) * 4);
    float * tmp = la_carve(&w, (size_t)(rows * LA_MAX(Dk, Dv)) * 4);
    float * dA = la_carve(&w, (size_t)HV * 4), *ddt = la_carve(&w, (size_t)HV * 4);
    w.used += LA_ALIGN;
    la_carve(&w, (size_t)(B * HV * L->dk * L->dv) * 4);
    const float eps = (float)m->cfg.norm_eps;
    // y = on Wo^T
    la_lin_bwd(don, 0.0f, la_pg(m, L, P_O), NULL, dy, a.on, la_pw(m, L, P_O), rows, Dv, D);
    la_status s;
    if (sl.g >= 0) {
        s = la_rmsnorm_gated_backward(dO, dgt, la_pg(m, L, P_ONORM), don, a.o, a.gt,
                                      la_pw(m, L, P_ONORM), eps, LA_ACT_SILU, rows * HV, L->dv,
                                      true);
    } else {
        s = la_rmsnorm_backward(dO, la_pg(m, L, P_ONORM), don, a.o, la_pw(m, L, P_ONORM), eps,
                                rows * HV, L->dv, true);
    }
    if (s) return s;
    la_opts o = gdn_flags(m, la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used));
    s = la_gated_delta_rule_backward(dq, dk, dv, da, db, dA, ddt, NULL, dO, NULL, a.q, a.k, a.v,
                                     a.a, a.b, la_pw(m, L, P_ALOG), la_pw(m, L, P_DT), NULL,
                                     gdn_shape(L, B, T), &o);
    if (s) return s;
    la_vec_add(la_pg(m, L, P_ALOG), dA, HV);
    la_vec_add(la_pg(m, L, P_DT), ddt, HV);
    // dx from every projection that read x
    la_lin_bwd(dx, 0.0f, la_pg(m, L, P_A), NULL, da, x, la_pw(m, L, P_A), rows, D, HV);
    la_lin_bwd(dx, 1.0f, la_pg(m, L, P_B), NULL, db, x, la_pw(m, L, P_B), rows, D, HV);
    if (sl.g >= 0) la_lin_bwd(dx, 1.0f, la_pg(m, L, sl.g), NULL, dgt, x, la_pw(m, L, sl.g), rows, D, Dv);
    const la_qkv_bufs qb = { a.xq, a.xk, a.xv, a.q, a.k, a.v };
    return la_qkv_backward(m, L, c, sl.qc, dx, dq, dk, dv, tmp, &qb, x);
}

const la_mixer_vt la_mixer_gdn_vt = {
    .name = "gdn",
    .build = gdn_build,
    .act_floats = gdn_act_floats,
    .work_bytes = gdn_work,
    .cache_floats = gdn_cache,
    .forward = gdn_forward,
    .backward = gdn_backward,
};
