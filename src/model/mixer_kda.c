// Kimi Delta Attention layer (OPS.md 5.4; fla/layers/kda.py):
//   q, k, v = SiLU(conv(x W^T))                      (rows, H dk) (rows, H dk) (rows, HV dv)
//   g_raw   = (x Wf0^T) Wf1^T                        (rows, HV dk)   f_proj: two Linears, no bias
//   o = kda(q, k, v, g_raw, beta_raw = x Wb^T, A_log, dt_bias) with the qk l2norm, the gate
//       (g = -exp(A_log) softplus(g_raw + dt_bias), or lb sigma(exp(A_log) (g_raw + dt_bias))
//       with lower_bound = lb) and the beta sigmoid (x 2 with allow_neg_eigval) in kernel
//   y = o_proj( RMSNormGated_sigmoid(o, (x Wg0^T) Wg1^T + bg) )   per head over dv
// GVA (num_v_heads HV > H): the op reads q/k head hv / (HV/H) for value head hv; f_proj,
// b_proj, A_log and dt_bias are per value head (fla's GVA layer).
// safe_gate: a promise that gates lie in [lb, 0), which fla uses for a faster kernel; it
// requires lower_bound in [-5, 0) and, as fla, initialises A_log to zeros (OPS.md 4.6).
// Saves the projections and intermediates below; the op saves nothing (its backward
// recomputes the chunk states).
// Decode cache per layer: state (N, HV, dk, dv), conv caches (N, H dk, W) x 2, (N, HV dv, W).
#include "model.h"

#include "nn.h"

#include <math.h>

enum { P_Q, P_K, P_V, P_F0, P_F1, P_B, P_ALOG, P_DT, P_G0, P_G1, P_G1B, P_ONORM, P_O, P_REST };
enum { KDA_NEG = 1, KDA_LB = 2 };  // L->R: allow_neg_eigval, lower_bound set

typedef struct {
    int qc, kc, vc;  // parameter slots of the convs, -1 when absent
} kda_slots;

static kda_slots slots_of(const la_model * m) {
    kda_slots s = { -1, -1, -1 };
    if (m->cfg.use_short_conv) s.qc = P_REST, s.kc = P_REST + 1, s.vc = P_REST + 2;
    return s;
}

static la_status kda_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    const int64_t D = m->D;
    la_status s = la_gva_dims(m, L, true, err, errlen);
    if (s) return s;
    const double lb = c->lower_bound;
    // linattn's op takes lower_bound < 0 (0 = off); fla accepts any value without safe_gate, but
    // lb >= 0 would give a gate >= 0 (no decay, or growth)
    if (!isnan(lb) && !(lb < 0))
        return la_cfg_fail(err, errlen, "config: 'lower_bound' %g must be < 0 or null", lb);
    if (c->safe_gate && (isnan(lb) || lb < -5))
        return la_cfg_fail(err, errlen, "config: 'safe_gate' requires 'lower_bound' in [-5, 0)");
    L->R = (c->allow_neg_eigval ? KDA_NEG : 0) | (isnan(lb) ? 0 : KDA_LB);
    const int64_t Dv = L->value_dim, HV = L->HV, dvh = L->dv;
    const int64_t Dg = HV * L->dk;  // gate_dim
    la_qkv_params(m, L);
    la_layer_param(m, L, "f_proj.0.weight", 2, (int64_t[]){ dvh, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "f_proj.1.weight", 2, (int64_t[]){ Dg, dvh }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "b_proj.weight", 2, (int64_t[]){ HV, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "A_log", 1, (int64_t[]){ HV },
                   c->safe_gate ? LA_INIT_ZERO : LA_INIT_A_LOG_KDA, false);
    la_layer_param(m, L, "dt_bias", 1, (int64_t[]){ Dg }, LA_INIT_DT_BIAS, false);
    la_layer_param(m, L, "g_proj.0.weight", 2, (int64_t[]){ dvh, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "g_proj.1.weight", 2, (int64_t[]){ Dv, dvh }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "g_proj.1.bias", 1, (int64_t[]){ Dv }, LA_INIT_ZERO, false);
    la_layer_param(m, L, "o_norm.weight", 1, (int64_t[]){ dvh }, LA_INIT_ONE, false);
    la_layer_param(m, L, "o_proj.weight", 2, (int64_t[]){ D, Dv }, LA_INIT_NORMAL, true);
    if (c->use_short_conv) la_qkv_conv_params(m, L);
    return LA_STATUS_OK;
}

static la_shape kda_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->dk, .V = L->dv, .HV = L->HV };
}

static la_opts kda_flags(const la_model * m, la_opts o) {
    o.use_qk_l2norm_in_kernel = true;
    o.use_gate_in_kernel = true;
    o.use_beta_sigmoid_in_kernel = true;
    o.allow_neg_eigval = m->cfg.allow_neg_eigval;
    o.lower_bound = isnan(m->cfg.lower_bound) ? 0.0f : (float)m->cfg.lower_bound;
    return o;
}

// Saved activations, in this order (rows = B T; Dk = H dk, Dv = HV dv, Dg = HV dk):
//   xq, xk (rows, Dk)  xv (rows, Dv)   pre-conv projections
//   q, k   (rows, Dk)  v  (rows, Dv)   after conv + SiLU
//   f1 (rows, dv)  g (rows, Dg)        f_proj's hidden and the raw gate
//   b (rows, HV)                       raw beta logits
//   g1 (rows, dv)                      g_proj's hidden
//   o, gt, on (rows, Dv)               op output, output gate input, gated-norm output
typedef struct {
    float *xq, *xk, *xv, *q, *k, *v, *f1, *g, *b, *g1, *o, *gt, *on;
} kda_act;

static kda_act act_of(const la_layer * L, float * base, int64_t rows) {
    const int64_t Dk = L->key_dim, Dv = L->value_dim, Dg = L->HV * L->dk, dv = L->dv;
    kda_act a;
    a.xq = base, a.xk = a.xq + rows * Dk, a.xv = a.xk + rows * Dk;
    a.q = a.xv + rows * Dv, a.k = a.q + rows * Dk, a.v = a.k + rows * Dk;
    a.f1 = a.v + rows * Dv, a.g = a.f1 + rows * dv, a.b = a.g + rows * Dg;
    a.g1 = a.b + rows * L->HV;
    a.o = a.g1 + rows * dv, a.gt = a.o + rows * Dv, a.on = a.gt + rows * Dv;
    return a;
}

static size_t kda_act_floats(const la_layer * L, int64_t B, int64_t T) {
    const int64_t Dk = L->key_dim, Dv = L->value_dim, Dg = L->HV * L->dk;
    return (size_t)(B * T * (4 * Dk + 5 * Dv + Dg + 2 * L->dv + L->HV));
}

// Backward scratch: don, dO, dgt (rows, Dv); dq, dk (rows, Dk); dv (rows, Dv); dg (rows, Dg);
// db (rows, HV); dh (rows, dv) for either two-Linear stack; tmp (rows, max(Dk, Dv)); dA (HV);
// ddt (Dg).
static int scratch_counts(const la_layer * L, int64_t rows, int64_t * n) {
    const int64_t Dk = L->key_dim, Dv = L->value_dim, Dg = L->HV * L->dk;
    const int64_t c[] = { rows * Dv, rows * Dv, rows * Dv, rows * Dk, rows * Dk, rows * Dv,
                          rows * Dg, rows * L->HV, rows * L->dv, rows * LA_MAX(Dk, Dv), L->HV,
                          Dg };
    memcpy(n, c, sizeof c);
    return 12;
}

// The op's workspace for the layer's flags (L->R: KDA_NEG, KDA_LB; the bound's value does not
// change the size).
static size_t op_work(const la_layer * L, int64_t B, int64_t T, bool bwd) {
    la_opts o = la_opts_default();
    o.use_qk_l2norm_in_kernel = o.use_gate_in_kernel = o.use_beta_sigmoid_in_kernel = true;
    o.allow_neg_eigval = L->R & KDA_NEG;
    o.lower_bound = (L->R & KDA_LB) ? -1.0f : 0.0f;
    return la_kda_workspace_size(bwd, kda_shape(L, B, T), &o);
}

// Forward: [final state copy | op workspace]; backward: [scratch | op workspace].
static size_t kda_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    const int64_t st = B * L->HV * L->dk * L->dv;
    const size_t fwd = la_floats_bytes(1, &st) + op_work(L, B, T, false);
    if (!backward) return fwd;
    int64_t n[12];
    const int cnt = scratch_counts(L, B * T, n);
    return LA_MAX(fwd, la_floats_bytes(cnt, n) + op_work(L, B, T, true));
}

static size_t kda_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)(L->HV * L->dk * L->dv + (2 * L->key_dim + L->value_dim) * L->W);
}

static la_status kda_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                             const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, Dv = L->value_dim;
    const int64_t HV = L->HV, dv = L->dv, Dg = HV * L->dk;
    const kda_slots sl = slots_of(m);
    const kda_act a = act_of(L, c->act, rows);
    const la_qkv_bufs qb = { a.xq, a.xk, a.xv, a.q, a.k, a.v };
    float * state;
    la_status s = la_qkv_forward(m, L, c, &qb, x, sl.qc, LA_ACT_SILU, &state);
    // g_raw = f_proj(x), beta_raw = b_proj(x), gate = g_proj(x)
    if (!s) s = la_linear_forward(a.f1, x, la_pw(m, L, P_F0), NULL, rows, D, dv);
    if (!s) s = la_linear_forward(a.g, a.f1, la_pw(m, L, P_F1), NULL, rows, dv, Dg);
    if (!s) s = la_linear_forward(a.b, x, la_pw(m, L, P_B), NULL, rows, D, HV);
    if (!s) s = la_linear_forward(a.g1, x, la_pw(m, L, P_G0), NULL, rows, D, dv);
    if (!s) s = la_linear_forward(a.gt, a.g1, la_pw(m, L, P_G1), la_pw(m, L, P_G1B), rows, dv, Dv);
    if (s) return s;
    la_carver w = { (char *)c->work, LA_ALIGN };
    const size_t sbytes = (size_t)(B * HV * L->dk * dv) * sizeof(float);
    float * fin = la_carve(&w, sbytes);
    la_opts o = kda_flags(m, la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used));
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    float * final = state && o.form == LA_FORM_RECURRENT ? state : state ? fin : NULL;
    s = la_kda_forward(a.o, final, a.q, a.k, a.v, a.g, a.b, la_pw(m, L, P_ALOG), la_pw(m, L, P_DT),
                       state, kda_shape(L, B, T), &o);
    if (s) return s;
    if (final == fin) memcpy(state, fin, sbytes);
    s = la_rmsnorm_gated_forward(a.on, a.o, a.gt, la_pw(m, L, P_ONORM), (float)m->cfg.norm_eps,
                                 LA_ACT_SIGMOID, rows * HV, dv);
    if (!s) s = la_linear_forward(y, a.on, la_pw(m, L, P_O), NULL, rows, Dv, D);
    return s;
}

static la_status kda_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                              const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, Dv = L->value_dim;
    const int64_t HV = L->HV, dv = L->dv, Dg = HV * L->dk;
    const kda_slots sl = slots_of(m);
    const kda_act a = act_of(L, c->act, rows);
    int64_t n[12];
    const int cnt = scratch_counts(L, rows, n);
    float * p[12];
    la_carver w = { (char *)c->work, LA_ALIGN };
    for (int i = 0; i < cnt; i++) p[i] = la_carve(&w, (size_t)n[i] * sizeof(float));
    float * don = p[0], *dO = p[1], *dgt = p[2], *dq = p[3], *dk = p[4], *dv_ = p[5], *dg = p[6];
    float * db = p[7], *dh = p[8], *tmp = p[9], *dA = p[10], *ddt = p[11];
    // y = on Wo^T;  on = RMSNorm(o) w sigma(gt)
    la_lin_bwd(don, 0.0f, la_pg(m, L, P_O), NULL, dy, a.on, la_pw(m, L, P_O), rows, Dv, D);
    la_status s = la_rmsnorm_gated_backward(dO, dgt, la_pg(m, L, P_ONORM), don, a.o, a.gt,
                                            la_pw(m, L, P_ONORM), (float)m->cfg.norm_eps,
                                            LA_ACT_SIGMOID, rows * HV, dv, true);
    if (s) return s;
    // gt = g1 Wg1^T + bg;  g1 = x Wg0^T   (dx starts here: overwritten)
    la_lin_bwd(dh, 0.0f, la_pg(m, L, P_G1), la_pg(m, L, P_G1B), dgt, a.g1, la_pw(m, L, P_G1),
               rows, dv, Dv);
    la_lin_bwd(dx, 0.0f, la_pg(m, L, P_G0), NULL, dh, x, la_pw(m, L, P_G0), rows, D, dv);
    la_opts o = kda_flags(m, la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used));
    s = la_kda_backward(dq, dk, dv_, dg, db, dA, ddt, NULL, dO, NULL, a.q, a.k, a.v, a.g, a.b,
                        la_pw(m, L, P_ALOG), la_pw(m, L, P_DT), NULL, kda_shape(L, B, T), &o);
    if (s) return s;
    la_vec_add(la_pg(m, L, P_ALOG), dA, HV);
    la_vec_add(la_pg(m, L, P_DT), ddt, Dg);
    // g = f1 Wf1^T;  f1 = x Wf0^T
    la_lin_bwd(dh, 0.0f, la_pg(m, L, P_F1), NULL, dg, a.f1, la_pw(m, L, P_F1), rows, dv, Dg);
    la_lin_bwd(dx, 1.0f, la_pg(m, L, P_F0), NULL, dh, x, la_pw(m, L, P_F0), rows, D, dv);
    la_lin_bwd(dx, 1.0f, la_pg(m, L, P_B), NULL, db, x, la_pw(m, L, P_B), rows, D, HV);
    const la_qkv_bufs qb = { a.xq, a.xk, a.xv, a.q, a.k, a.v };
    return la_qkv_backward(m, L, c, sl.qc, dx, dq, dk, dv_, tmp, &qb, x);
}

const la_mixer_vt la_mixer_kda_vt = {
    .name = "kda",
    .build = kda_build,
    .act_floats = kda_act_floats,
    .work_bytes = kda_work,
    .cache_floats = kda_cache,
    .forward = kda_forward,
    .backward = kda_backward,
};
