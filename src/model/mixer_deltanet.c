// DeltaNet layer (OPS.md 5.2; fla/layers/delta_net.py):
//   q1, k1 = conv(x Wq^T), conv(x Wk^T), SiLU only when qk_activation = 'silu'   (rows, Dk)
//   v      = SiLU(conv(x Wv^T))                                                   (rows, Dv)
//   (without conv: the same activations on the projections)
//   q, k   = phi(q1), phi(k1) per head: relu, elu + 1 or nothing (silu, identity)
//   q, k   = q / sum_i q_i, k / sum_i k_i per head when qk_norm = 'sum' (no epsilon, as fla)
//   beta   = m sigma(x Wb^T) (m = 2 with allow_neg_eigval), or m without use_beta
//   o      = delta_rule(q, k, v, beta), with the in-kernel l2norm when qk_norm = 'l2'
//   y      = o_proj( RMSNormGated_swish(o, x Wg^T) )   per head over dv (RMSNorm(o) without
//            use_gate; the weight is o_norm either way)
// Dimensions: H heads, dk = Dk / H, dv = Dv / H, Dk = int(hidden expand_k),
// Dv = int(hidden expand_v).
// Saves the projections and every intermediate the backward differentiates through; the op
// itself saves nothing (its backward recomputes the chunk states).
// Decode cache per layer: state (N, H, dk, dv), conv caches (N, Dk, W) x 2, (N, Dv, W).
//
// The layer's own dims: L->F is the qk activation (QK_*), L->R the option bits (DN_*), both
// set by build from the config, so act_floats can size the optional buffers.
#include "model.h"

#include "nn.h"

#include <math.h>

enum { P_Q, P_K, P_V, P_ONORM, P_O, P_REST };
enum { QK_SILU, QK_RELU, QK_ELU, QK_IDENTITY };
enum { DN_SUM = 1, DN_BETA = 2, DN_NEG = 4, DN_GATE = 8 };

typedef struct {
    int b, g, qc, kc, vc;  // parameter slots of the optional parts, -1 when absent
} dn_slots;

static dn_slots slots_of(const la_model * m) {
    const la_config * c = &m->cfg;
    dn_slots s = { -1, -1, -1, -1, -1 };
    int i = P_REST;
    if (c->use_beta) s.b = i++;
    if (c->use_gate) s.g = i++;
    if (c->use_short_conv) s.qc = i, s.kc = i + 1, s.vc = i + 2;
    return s;
}

// What the layer computes, decoded from L->F and L->R.
typedef struct {
    la_act  conv_act;  // the q, k conv's activation: SiLU only for qk_activation 'silu'
    la_fmap fmap;      // the activation after the head split (IDENTITY: none)
    bool    post;      // q, k pass through fmap or the sum norm: the op reads qn, kn
    bool    sum, beta, beta_buf, gate;
} dn_mode;

static dn_mode mode_of(const la_layer * L) {
    dn_mode d;
    d.conv_act = L->F == QK_SILU ? LA_ACT_SILU : LA_ACT_IDENTITY;
    d.fmap = L->F == QK_RELU ? LA_FMAP_RELU : L->F == QK_ELU ? LA_FMAP_ELU1 : LA_FMAP_IDENTITY;
    d.sum = L->R & DN_SUM;
    d.post = d.fmap != LA_FMAP_IDENTITY || d.sum;
    d.beta = L->R & DN_BETA;
    d.beta_buf = L->R & (DN_BETA | DN_NEG);  // beta is 1 (NULL to the op) only without both
    d.gate = L->R & DN_GATE;
    return d;
}

static la_status dn_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    const int64_t D = m->D, H = c->num_heads;
    // fla: key_dim = int(hidden * expand_k), value_dim = int(hidden * expand_v)
    const int64_t Dk = (int64_t)floor((double)D * c->expand_k);
    const int64_t Dv = (int64_t)floor((double)D * c->expand_v);
    if (Dk < H || Dk % H)
        return (snprintf(err, errlen, "config: key dim int(hidden_size * expand_k) = %lld is not "
                         "a positive multiple of num_heads %lld", (long long)Dk, (long long)H),
                LA_STATUS_INVALID_ARG);
    if (Dv < H || Dv % H)
        return (snprintf(err, errlen, "config: value dim int(hidden_size * expand_v) = %lld is "
                         "not a positive multiple of num_heads %lld", (long long)Dv, (long long)H),
                LA_STATUS_INVALID_ARG);
    const char * qa = c->qk_activation;
    if (!strcmp(qa, "silu")) L->F = QK_SILU;
    else if (!strcmp(qa, "relu")) L->F = QK_RELU;
    else if (!strcmp(qa, "elu")) L->F = QK_ELU;
    else if (!strcmp(qa, "identity")) L->F = QK_IDENTITY;
    else
        return (snprintf(err, errlen, "config: 'qk_activation' \"%s\" is not one of silu, relu, "
                         "elu, identity", qa), LA_STATUS_INVALID_ARG);
    if (strcmp(c->qk_norm, "l2") && strcmp(c->qk_norm, "sum"))
        return (snprintf(err, errlen, "config: 'qk_norm' \"%s\" is not one of l2, sum",
                         c->qk_norm), LA_STATUS_INVALID_ARG);
    L->R = (!strcmp(c->qk_norm, "sum") ? DN_SUM : 0) | (c->use_beta ? DN_BETA : 0) |
           (c->allow_neg_eigval ? DN_NEG : 0) | (c->use_gate ? DN_GATE : 0);
    L->H = L->HV = H;
    L->dk = Dk / H;
    L->dv = Dv / H;
    L->key_dim = Dk;
    L->value_dim = Dv;
    L->W = c->conv_size;
    la_qkv_params(m, L);
    la_layer_param(m, L, "o_norm.weight", 1, (int64_t[]){ L->dv }, LA_INIT_ONE, false);
    la_layer_param(m, L, "o_proj.weight", 2, (int64_t[]){ D, Dv }, LA_INIT_NORMAL, true);
    if (c->use_beta)
        la_layer_param(m, L, "b_proj.weight", 2, (int64_t[]){ H, D }, LA_INIT_NORMAL, true);
    if (c->use_gate)
        la_layer_param(m, L, "g_proj.weight", 2, (int64_t[]){ Dv, D }, LA_INIT_NORMAL, true);
    if (c->use_short_conv) la_qkv_conv_params(m, L);
    return LA_STATUS_OK;
}

static la_shape dn_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->dk, .V = L->dv };
}

static la_opts dn_flags(const la_layer * L, la_opts o) {
    o.use_qk_l2norm_in_kernel = !(L->R & DN_SUM);  // qk_norm 'l2': in kernel, as fla
    return o;
}

// Saved activations, in this order (rows = B T); [..] only when the mode needs it:
//   xq, xk (rows, Dk)  xv (rows, Dv)   pre-conv projections
//   q1, k1 (rows, Dk)  v  (rows, Dv)   after conv (+ SiLU)
//   [qn, kn (rows, Dk)]                the op's q, k after phi and the sum norm
//   [sq, sk (rows, H)]                 the sum norm's denominators
//   [b (rows, H)]  [beta (rows, H)]    raw beta logits (use_beta); the op's beta
//   o, [gt], on (rows, Dv)             op output, output gate input (use_gate), norm output
typedef struct {
    float *xq, *xk, *xv, *q1, *k1, *v, *qn, *kn, *sq, *sk, *b, *beta, *o, *gt, *on;
} dn_act;

static dn_act act_of(const la_layer * L, float * base, int64_t rows, int64_t * total) {
    const dn_mode d = mode_of(L);
    const int64_t Dk = L->key_dim, Dv = L->value_dim, H = L->H;
    la_carver cv = { (char *)base, 0 };  // base NULL: counts only
    dn_act a;
    a.xq = la_carve_f(&cv, rows * Dk), a.xk = la_carve_f(&cv, rows * Dk);
    a.xv = la_carve_f(&cv, rows * Dv);
    a.q1 = la_carve_f(&cv, rows * Dk), a.k1 = la_carve_f(&cv, rows * Dk);
    a.v = la_carve_f(&cv, rows * Dv);
    a.qn = d.post ? la_carve_f(&cv, rows * Dk) : a.q1;
    a.kn = d.post ? la_carve_f(&cv, rows * Dk) : a.k1;
    a.sq = d.sum ? la_carve_f(&cv, rows * H) : NULL;
    a.sk = d.sum ? la_carve_f(&cv, rows * H) : NULL;
    a.b = d.beta ? la_carve_f(&cv, rows * H) : NULL;
    a.beta = d.beta_buf ? la_carve_f(&cv, rows * H) : NULL;
    a.o = la_carve_f(&cv, rows * Dv);
    a.gt = d.gate ? la_carve_f(&cv, rows * Dv) : NULL;
    a.on = la_carve_f(&cv, rows * Dv);
    if (total) *total = (int64_t)(cv.used / sizeof(float));
    return a;
}

static size_t dn_act_floats(const la_layer * L, int64_t B, int64_t T) {
    int64_t n;
    act_of(L, NULL, B * T, &n);
    return (size_t)n;
}

// Backward scratch: don, dO, dgt (rows, Dv); dq, dk (rows, Dk); dv (rows, Dv); dbeta (rows, H);
// dpre (rows, Dk): d q1 / d k1 after phi's backward; tmp (rows, max(Dk, Dv)) for the conv.
static int scratch_counts(const la_layer * L, int64_t rows, int64_t * n) {
    const int64_t Dk = L->key_dim, Dv = L->value_dim;
    const int64_t c[] = { rows * Dv, rows * Dv, rows * Dv, rows * Dk, rows * Dk, rows * Dv,
                          rows * L->H, rows * Dk, rows * LA_MAX(Dk, Dv) };
    memcpy(n, c, sizeof c);
    return 9;
}

static size_t op_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    const la_opts o = dn_flags(L, la_opts_default());
    return la_delta_rule_workspace_size(backward, dn_shape(L, B, T), &o);
}

// Forward: [final state copy | op workspace]; backward: [scratch | op workspace].
static size_t dn_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    const int64_t st = B * L->H * L->dk * L->dv;
    const size_t fwd = la_floats_bytes(1, &st) + op_work(L, B, T, false);
    if (!backward) return fwd;
    int64_t n[9];
    const int cnt = scratch_counts(L, B * T, n);
    return LA_MAX(fwd, la_floats_bytes(cnt, n) + op_work(L, B, T, true));
}

static size_t dn_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)(L->H * L->dk * L->dv + (2 * L->key_dim + L->value_dim) * L->W);
}

// y = x / sum_i x_i over each group of d (fla's sum_norm, no epsilon); s (groups) saved.
static void sum_norm_forward(float * y, float * s, const float * x, int64_t groups, int64_t d) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(groups, groups * d))
    for (int64_t g = 0; g < groups; g++) {
        double acc = 0;
        for (int64_t i = 0; i < d; i++) acc += (double)x[g * d + i];
        s[g] = (float)acc;
        for (int64_t i = 0; i < d; i++) y[g * d + i] = x[g * d + i] / s[g];
    }
}

// y = x / s:  dx_j = (dy_j - sum_i dy_i y_i) / s, in place on dy.
static void sum_norm_backward(float * dy, const float * y, const float * s, int64_t groups,
                              int64_t d) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(groups, groups * d))
    for (int64_t g = 0; g < groups; g++) {
        double dot = 0;
        for (int64_t i = 0; i < d; i++) dot += (double)dy[g * d + i] * (double)y[g * d + i];
        for (int64_t i = 0; i < d; i++)
            dy[g * d + i] = (float)(((double)dy[g * d + i] - dot) / (double)s[g]);
    }
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// beta = mul sigma(b), or mul where b is NULL (fla: ones, times 2 with allow_neg_eigval); n values.
static void beta_forward(float * beta, const float * b, float mul, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(n, n))
    for (int64_t i = 0; i < n; i++) beta[i] = b ? mul * sigmoidf(b[i]) : mul;
}

// beta = mul sigma(b):  db = dbeta beta (1 - sigma(b)), in place on dbeta.
static void beta_backward(float * dbeta, const float * beta, const float * b, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(n, n))
    for (int64_t i = 0; i < n; i++) dbeta[i] *= beta[i] * (1.0f - sigmoidf(b[i]));
}

static la_status dn_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                            const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, Dv = L->value_dim;
    const int64_t H = L->H;
    const dn_slots sl = slots_of(m);
    const dn_mode d = mode_of(L);
    const dn_act a = act_of(L, c->act, rows, NULL);
    const la_qkv_bufs qb = { a.xq, a.xk, a.xv, a.q1, a.k1, a.v };
    float * state;
    la_status s = la_qkv_forward(m, L, c, &qb, x, sl.qc, d.conv_act, &state);
    if (s) return s;
    // q, k = phi(q1), phi(k1) per head (relu / elu + 1), then the sum norm
    if (d.fmap != LA_FMAP_IDENTITY) {
        s = la_fmap_forward(a.qn, a.q1, NULL, NULL, d.fmap, rows, H, L->dk);
        if (!s) s = la_fmap_forward(a.kn, a.k1, NULL, NULL, d.fmap, rows, H, L->dk);
        if (s) return s;
    }
    if (d.sum) {
        sum_norm_forward(a.qn, a.sq, d.fmap != LA_FMAP_IDENTITY ? a.qn : a.q1, rows * H, L->dk);
        sum_norm_forward(a.kn, a.sk, d.fmap != LA_FMAP_IDENTITY ? a.kn : a.k1, rows * H, L->dk);
    }
    // beta = m sigma(x Wb^T), or m without b_proj (m = 2 with allow_neg_eigval, else 1)
    if (d.beta) s = la_linear_forward(a.b, x, la_pw(m, L, sl.b), NULL, rows, D, H);
    if (s) return s;
    if (d.beta_buf) beta_forward(a.beta, a.b, (L->R & DN_NEG) ? 2.0f : 1.0f, rows * H);
    la_carver w = { (char *)c->work, LA_ALIGN };
    const size_t sbytes = (size_t)(B * H * L->dk * L->dv) * sizeof(float);
    float * fin = la_carve(&w, sbytes);
    la_opts o = dn_flags(L, la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used));
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    float * final = state && o.form == LA_FORM_RECURRENT ? state : state ? fin : NULL;
    s = la_delta_rule_forward(a.o, final, a.qn, a.kn, a.v, a.beta, state, dn_shape(L, B, T), &o);
    if (s) return s;
    if (final == fin) memcpy(state, fin, sbytes);
    const float eps = (float)m->cfg.norm_eps;
    if (d.gate) {
        s = la_linear_forward(a.gt, x, la_pw(m, L, sl.g), NULL, rows, D, Dv);
        if (!s) s = la_rmsnorm_gated_forward(a.on, a.o, a.gt, la_pw(m, L, P_ONORM), eps,
                                             LA_ACT_SILU, rows * H, L->dv);
    } else {
        s = la_rmsnorm_forward(a.on, a.o, la_pw(m, L, P_ONORM), eps, rows * H, L->dv);
    }
    if (!s) s = la_linear_forward(y, a.on, la_pw(m, L, P_O), NULL, rows, Dv, D);
    return s;
}

// The q (or k) path backward from the op's gradient dqn: the sum norm (in place), phi (into
// dpre), then the conv, its activation and the projection (dx added to).
static la_status qk_backward(const la_model * m, const la_layer * L, const la_call * c, float * dx,
                             int pw, int pc, float * dqn, float * dpre, float * tmp,
                             const float * xq, const float * q1, const float * qn,
                             const float * sq, const float * x) {
    const dn_mode d = mode_of(L);
    const int64_t rows = c->B * c->T, Dk = L->key_dim;
    if (d.sum) sum_norm_backward(dqn, qn, sq, rows * L->H, L->dk);
    float * dq1 = dqn;
    if (d.fmap != LA_FMAP_IDENTITY) {
        // q = phi(q1) (then the sum norm): phi's input q1 is saved
        la_status s = la_fmap_backward(dpre, NULL, NULL, dqn, q1, NULL, NULL, d.fmap, rows, L->H,
                                       L->dk, false);
        if (s) return s;
        dq1 = dpre;
    }
    return la_qkv_path_backward(m, L, c, pw, pc, d.conv_act, Dk, dx, 1.0f, dq1, tmp, xq, x);
}

static la_status dn_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                             const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, Dk = L->key_dim, Dv = L->value_dim;
    const int64_t H = L->H;
    const dn_slots sl = slots_of(m);
    const dn_mode d = mode_of(L);
    const dn_act a = act_of(L, c->act, rows, NULL);
    la_carver w = { (char *)c->work, LA_ALIGN };
    float * don = la_carve(&w, (size_t)(rows * Dv) * 4), *dO = la_carve(&w, (size_t)(rows * Dv) * 4);
    float * dgt = la_carve(&w, (size_t)(rows * Dv) * 4), *dq = la_carve(&w, (size_t)(rows * Dk) * 4);
    float * dk = la_carve(&w, (size_t)(rows * Dk) * 4), *dv = la_carve(&w, (size_t)(rows * Dv) * 4);
    float * dbeta = la_carve(&w, (size_t)(rows * H) * 4), *dpre = la_carve(&w, (size_t)(rows * Dk) * 4);
    float * tmp = la_carve(&w, (size_t)(rows * LA_MAX(Dk, Dv)) * 4);
    const float eps = (float)m->cfg.norm_eps;
    // y = on Wo^T
    la_lin_bwd(don, 0.0f, la_pg(m, L, P_O), NULL, dy, a.on, la_pw(m, L, P_O), rows, Dv, D);
    la_status s;
    if (d.gate) {
        s = la_rmsnorm_gated_backward(dO, dgt, la_pg(m, L, P_ONORM), don, a.o, a.gt,
                                      la_pw(m, L, P_ONORM), eps, LA_ACT_SILU, rows * H, L->dv,
                                      true);
    } else {
        s = la_rmsnorm_backward(dO, la_pg(m, L, P_ONORM), don, a.o, la_pw(m, L, P_ONORM), eps,
                                rows * H, L->dv, true);
    }
    if (s) return s;
    la_opts o = dn_flags(L, la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used));
    s = la_delta_rule_backward(dq, dk, dv, a.beta ? dbeta : NULL, NULL, dO, NULL, a.qn, a.kn, a.v,
                               a.beta, NULL, dn_shape(L, B, T), &o);
    if (s) return s;
    // dx from every projection that read x: v first (it overwrites dx), then the rest
    s = la_qkv_path_backward(m, L, c, P_V, sl.vc, LA_ACT_SILU, Dv, dx, 0.0f, dv, tmp, a.xv, x);
    if (!s) s = qk_backward(m, L, c, dx, P_Q, sl.qc, dq, dpre, tmp, a.xq, a.q1, a.qn, a.sq, x);
    if (!s) s = qk_backward(m, L, c, dx, P_K, sl.kc, dk, dpre, tmp, a.xk, a.k1, a.kn, a.sk, x);
    if (s) return s;
    if (d.beta) {
        beta_backward(dbeta, a.beta, a.b, rows * H);
        la_lin_bwd(dx, 1.0f, la_pg(m, L, sl.b), NULL, dbeta, x, la_pw(m, L, sl.b), rows, D, H);
    }
    if (d.gate) la_lin_bwd(dx, 1.0f, la_pg(m, L, sl.g), NULL, dgt, x, la_pw(m, L, sl.g), rows, D, Dv);
    return LA_STATUS_OK;
}

const la_mixer_vt la_mixer_deltanet_vt = {
    .name = "deltanet",
    .build = dn_build,
    .act_floats = dn_act_floats,
    .work_bytes = dn_work,
    .cache_floats = dn_cache,
    .forward = dn_forward,
    .backward = dn_backward,
};
