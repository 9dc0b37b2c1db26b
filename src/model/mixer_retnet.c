// MultiScaleRetention layer (RetNet; fla/layers/multiscale_retention.py, OPS.md 2.3, 4.3):
//   q1 = fm(x Wq^T), k1 = fm(x Wk^T), v = x Wv^T       (rows, H dk) (rows, HKV dk) (rows, HKV dv)
//   q, k = RoPE(q1), RoPE(k1)     rotate-half over dk, base 10000 (fla's RotaryEmbedding(dk)),
//                                 positions offset by the tokens already in the cache
//   k, v repeated to H heads      head h reads kv head h / G, G = H / HKV
//   o  = retention(q, k, v)       S_t = gamma_h S_{t-1} + k_t v_t^T, o_t = dk^-1/2 S_t^T q_t,
//                                 gamma_h = 1 - 2^(-5-h) (fla/ops/retention: chunk_simple_gla
//                                 with g_gamma)
//   y  = o_proj( RMSNorm_dv(o) w o swish(x Wg^T) )     per head (FusedRMSNormGated); without
//                                 use_output_gate y = o_proj(RMSNorm_dv(o) w)
// fm is the config's feature_map, a transformers ACT2FN activation, applied after the head
// split and before RoPE as fla does (None: no map). The model never passes use_short_conv to
// the layer (fla/models/retnet/modeling_retnet.py), so RetNet has no convolutions.
//
// Dimensions: rows = B T, D = hidden, H heads of dk = key_dim / H and dv = value_dim / H,
// HKV = num_kv_heads, key_dim = round(D expand_k), value_dim = round(D expand_v).
// Saves the projections, q and k after RoPE, the op output, the gate input and the normed
// output; the op itself saves nothing (its backward recomputes the chunk-boundary states).
// Decode cache per layer: state (N, H, dk, dv).
//
// The layer's own dims: L->F is the feature map (FM_*), L->R the option bits (RT_*).
#include "model.h"

#include "nn.h"

#include <math.h>

enum { P_Q, P_K, P_V, P_REST };
enum { RT_GATE = 1, RT_AFFINE = 2, RT_FUSED = 4 };

// ---------------------------------------------------------------------------------------------
// Feature maps: the elementwise activations of transformers' ACT2FN that have no parameters.
// Values and derivatives in double, rounded once.

enum {
    FM_NONE = 0, FM_LINEAR, FM_RELU, FM_RELU2, FM_RELU6, FM_LEAKY_RELU, FM_SIGMOID, FM_SILU,
    FM_TANH, FM_GELU, FM_GELU_TANH, FM_QUICK_GELU, FM_MISH
};

static const struct {
    const char * name;
    int          kind;
} fm_names[] = {
    { "linear", FM_LINEAR },       { "relu", FM_RELU },           { "relu2", FM_RELU2 },
    { "relu6", FM_RELU6 },         { "leaky_relu", FM_LEAKY_RELU }, { "sigmoid", FM_SIGMOID },
    { "silu", FM_SILU },           { "swish", FM_SILU },          { "tanh", FM_TANH },
    { "gelu", FM_GELU },           { "gelu_python", FM_GELU },    { "gelu_new", FM_GELU_TANH },
    { "gelu_fast", FM_GELU_TANH }, { "gelu_pytorch_tanh", FM_GELU_TANH },
    { "gelu_accurate", FM_GELU_TANH }, { "quick_gelu", FM_QUICK_GELU }, { "mish", FM_MISH },
};

static double sigmoid_d(double x) {
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

// f(x) and f'(x). The derivative at a kink is torch's (relu: 0 at 0; relu6: 0 at 0 and 6).
static double fm_eval(int kind, double x, double * d) {
    switch (kind) {
    case FM_RELU: *d = x > 0; return x > 0 ? x : 0.0;
    case FM_RELU2: *d = x > 0 ? 2 * x : 0.0; return x > 0 ? x * x : 0.0;
    case FM_RELU6: *d = x > 0 && x < 6; return fmin(fmax(x, 0.0), 6.0);
    case FM_LEAKY_RELU: *d = x > 0 ? 1.0 : 0.01; return x > 0 ? x : 0.01 * x;  // nn.LeakyReLU()
    case FM_SIGMOID: {
        const double s = sigmoid_d(x);
        *d = s * (1 - s);
        return s;
    }
    case FM_SILU: {
        const double s = sigmoid_d(x);
        *d = s * (1 + x * (1 - s));
        return x * s;
    }
    case FM_TANH: {
        const double t = tanh(x);
        *d = 1 - t * t;
        return t;
    }
    case FM_GELU: {  // x Phi(x), erf form
        const double c = 0.5 * (1 + erf(x / sqrt(2.0)));
        *d = c + x * exp(-0.5 * x * x) / sqrt(2 * 3.14159265358979323846);
        return x * c;
    }
    case FM_GELU_TANH: {  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        const double a = sqrt(2 / 3.14159265358979323846), t = tanh(a * (x + 0.044715 * x * x * x));
        *d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * a * (1 + 3 * 0.044715 * x * x);
        return 0.5 * x * (1 + t);
    }
    case FM_QUICK_GELU: {  // x sigmoid(1.702 x)
        const double s = sigmoid_d(1.702 * x);
        *d = s + 1.702 * x * s * (1 - s);
        return x * s;
    }
    case FM_MISH: {  // x tanh(softplus(x))
        const double sp = x > 20 ? x : log1p(exp(x)), t = tanh(sp);
        *d = t + x * (1 - t * t) * sigmoid_d(x);
        return x * t;
    }
    default: *d = 1.0; return x;
    }
}

// y (n) = fm(x)
static void fm_forward(float * y, const float * x, int kind, int64_t n) {
#pragma omp parallel for schedule(static) if (n > LA_NN_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        double d;
        y[i] = (float)fm_eval(kind, (double)x[i], &d);
    }
}

// dy (n) <- dy fm'(x), in place
static void fm_backward(float * dy, const float * x, int kind, int64_t n) {
#pragma omp parallel for schedule(static) if (n > LA_NN_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        double d;
        fm_eval(kind, (double)x[i], &d);
        dy[i] = (float)((double)dy[i] * d);
    }
}

// ---------------------------------------------------------------------------------------------
// Options and parameters

typedef struct {
    int  fm;            // FM_*
    bool gate, affine;  // use_output_gate; elementwise_affine (the norm has a weight)
    int  g, o, norm;    // parameter slots (g and norm -1 when absent)
} rt_mode;

static rt_mode mode_of(const la_layer * L) {
    rt_mode d = { .fm = (int)L->F, .gate = L->R & RT_GATE, .affine = L->R & RT_AFFINE };
    int i = P_REST;
    d.g = d.gate ? i++ : -1;
    d.o = i++;
    d.norm = d.affine ? i++ : -1;
    return d;
}

// RetNetConfig's keys (fla/models/retnet/configuration_retnet.py).
static const char * const rt_keys[] = {
    "attn_mode", "hidden_size", "expand_k", "expand_v", "hidden_ratio", "intermediate_size",
    "num_hidden_layers", "num_heads", "num_kv_heads", "feature_map", "hidden_act",
    "use_short_conv", "conv_size", "use_output_gate", "max_position_embeddings",
    "elementwise_affine", "norm_eps", "attn", "use_cache", "pad_token_id", "bos_token_id",
    "eos_token_id", "tie_word_embeddings", "initializer_range", "fuse_norm", "fuse_swiglu",
    "fuse_cross_entropy", "fuse_linear_cross_entropy", "use_l2warp", "vocab_size", NULL,
};

// Checks the layer keys once per model (also for a model whose every layer is attention).
static la_status rt_root(la_model * m, char * err, size_t errlen) {
    return la_extra_check(&m->cfg, rt_keys, err, errlen);
}

static la_status bad(char * err, size_t errlen, const char * msg, const char * key, double a,
                     double b) {
    snprintf(err, errlen, msg, key, a, b);
    return LA_STATUS_INVALID_ARG;
}

static la_status rt_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    const int64_t D = m->D, H = c->num_heads;
    double ek, ev;
    int64_t hkv, conv_size;
    bool gate, affine, short_conv;
    char fm[32];
    la_status s = la_extra_num(c, "expand_k", 1.0, &ek, err, errlen);
    if (!s) s = la_extra_num(c, "expand_v", 2.0, &ev, err, errlen);
    if (!s) s = la_extra_int(c, "num_kv_heads", 0, &hkv, err, errlen);
    if (!s) s = la_extra_str(c, "feature_map", "", fm, sizeof fm, err, errlen);
    if (!s) s = la_extra_bool(c, "use_output_gate", true, &gate, err, errlen);
    if (!s) s = la_extra_bool(c, "elementwise_affine", true, &affine, err, errlen);
    // read for their types only: the model does not pass them to the layer
    if (!s) s = la_extra_bool(c, "use_short_conv", false, &short_conv, err, errlen);
    if (!s) s = la_extra_int(c, "conv_size", 4, &conv_size, err, errlen);
    if (s) return s;
    // fla: key_dim = round(hidden * expand_k), asserted to be a whole number (same for value)
    const double kd = (double)D * ek, vd = (double)D * ev;
    if (!(kd >= 1) || fabs(kd - round(kd)) > 1e-9 * kd)
        return bad(err, errlen, "config: '%s' %g times hidden_size %g is not a whole key dim",
                   "expand_k", ek, (double)D);
    if (!(vd >= 1) || fabs(vd - round(vd)) > 1e-9 * vd)
        return bad(err, errlen, "config: '%s' %g times hidden_size %g is not a whole value dim",
                   "expand_v", ev, (double)D);
    const int64_t Dk = (int64_t)round(kd), Dv = (int64_t)round(vd);
    if (hkv == 0) hkv = H;
    if (hkv < 1 || H % hkv)
        return bad(err, errlen, "config: '%s' %g does not divide num_heads %g", "num_kv_heads",
                   (double)hkv, (double)H);
    if (Dk % H || Dv % H || (Dk / H) % 2)
        return bad(err, errlen, "config: '%s' %g must split key_dim %g into even heads (RoPE) "
                   "and value_dim into whole heads", "num_heads", (double)H, (double)Dk);
    if (Dk / H > 256)
        return bad(err, errlen, "config: '%s' %g gives a head_k_dim above 256 (fla asserts "
                   "<= 256) with key_dim %g", "num_heads", (double)H, (double)Dk);
    int kind = fm[0] ? -1 : FM_NONE;
    for (size_t i = 0; i < sizeof fm_names / sizeof fm_names[0] && kind < 0; i++)
        if (!strcmp(fm, fm_names[i].name)) kind = fm_names[i].kind;
    if (kind < 0) {
        snprintf(err, errlen, "config: 'feature_map' \"%s\" is not null or one of linear, relu, "
                 "relu2, relu6, leaky_relu, sigmoid, silu, swish, tanh, gelu, gelu_python, "
                 "gelu_new, gelu_fast, gelu_pytorch_tanh, gelu_accurate, quick_gelu, mish", fm);
        return LA_STATUS_INVALID_ARG;
    }
    L->H = L->HV = H;
    L->HKV = hkv;
    L->dk = Dk / H;
    L->dv = Dv / H;
    L->key_dim = Dk;
    L->value_dim = Dv;
    L->F = kind;
    // fla names the norm g_norm_swish_gate when it is fused with the gate, i.e. fuse_norm is
    // on and gate_fn = hidden_act is literally "swish" ("silu": g_norm, the same function).
    const bool fused = gate && c->fuse_norm && !strcmp(c->hidden_act, "swish");
    L->R = (gate ? RT_GATE : 0) | (affine ? RT_AFFINE : 0) | (fused ? RT_FUSED : 0);
    const int64_t G = H / hkv, dv = L->dv;
    la_layer_param(m, L, "q_proj.weight", 2, (int64_t[]){ Dk, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "k_proj.weight", 2, (int64_t[]){ Dk / G, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "v_proj.weight", 2, (int64_t[]){ Dv / G, D }, LA_INIT_NORMAL, true);
    if (gate) la_layer_param(m, L, "g_proj.weight", 2, (int64_t[]){ Dv, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "o_proj.weight", 2, (int64_t[]){ D, Dv }, LA_INIT_NORMAL, true);
    if (affine)
        la_layer_param(m, L, L->R & RT_FUSED ? "g_norm_swish_gate.weight" : "g_norm.weight", 1,
                       (int64_t[]){ dv }, LA_INIT_ONE, false);
    return LA_STATUS_OK;
}

static la_shape rt_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->dk, .V = L->dv };
}

// ---------------------------------------------------------------------------------------------
// Activations and scratch

// Saved, in this order (rows = B T; Dq = H dk, Dkv = HKV dk, Dvv = HKV dv, Dv = H dv):
//   xq (rows, Dq), xk (rows, Dkv)   projections before the feature map (only with one)
//   q (rows, Dq), k (rows, Dkv)     after the feature map and RoPE: the op's q and k
//   v (rows, Dvv)                   projection
//   o, gt, on (rows, Dv)            op output, gate input (with the gate), normed output
typedef struct {
    float *xq, *xk, *q, *k, *v, *o, *gt, *on;
    size_t n;  // floats in all
} rt_act;

static rt_act act_of(const la_layer * L, float * base, int64_t rows) {
    const rt_mode d = mode_of(L);
    const int64_t Dq = L->key_dim, Dkv = L->HKV * L->dk, Dvv = L->HKV * L->dv, Dv = L->value_dim;
    const int64_t n[8] = { d.fm ? rows * Dq : 0, d.fm ? rows * Dkv : 0, rows * Dq, rows * Dkv,
                           rows * Dvv, rows * Dv, d.gate ? rows * Dv : 0, rows * Dv };
    float * p[8];
    int64_t off = 0;
    for (int i = 0; i < 8; i++) {
        p[i] = base && n[i] ? base + off : NULL;
        off += n[i];
    }
    return (rt_act){ p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], (size_t)off };
}

static size_t rt_act_floats(const la_layer * L, int64_t B, int64_t T) {
    return act_of(L, NULL, B * T).n;
}

// Scratch: the k, v heads expanded to H (when grouped) and the final state of a chunked
// prefill; backward adds don, dO, dgt (rows, Dv), dq (rows, Dq), dke (rows, H dk),
// dve (rows, Dv), dk (rows, Dkv), dv (rows, Dvv). Then the op's workspace.
typedef struct {
    float *ke, *ve, *fin, *don, *dO, *dgt, *dq, *dke, *dve, *dk, *dv;
    size_t used;
} rt_scratch;

static rt_scratch scratch_of(const la_layer * L, void * base, int64_t B, int64_t T, bool bwd) {
    const int64_t rows = B * T, H = L->H, dk = L->dk, dv = L->dv, G = L->H / L->HKV;
    la_carver cv = { base, 0 };
    rt_scratch s = { 0 };
    if (G > 1) {
        s.ke = la_carve(&cv, (size_t)(rows * H * dk) * 4);
        s.ve = la_carve(&cv, (size_t)(rows * H * dv) * 4);
    }
    s.fin = la_carve(&cv, (size_t)(B * H * dk * dv) * 4);
    if (bwd) {
        s.don = la_carve(&cv, (size_t)(rows * H * dv) * 4);
        s.dO = la_carve(&cv, (size_t)(rows * H * dv) * 4);
        s.dgt = la_carve(&cv, (size_t)(rows * H * dv) * 4);
        s.dq = la_carve(&cv, (size_t)(rows * H * dk) * 4);
        s.dke = la_carve(&cv, (size_t)(rows * H * dk) * 4);
        s.dve = la_carve(&cv, (size_t)(rows * H * dv) * 4);
        s.dk = G > 1 ? la_carve(&cv, (size_t)(rows * L->HKV * dk) * 4) : s.dke;
        s.dv = G > 1 ? la_carve(&cv, (size_t)(rows * L->HKV * dv) * 4) : s.dve;
    }
    s.used = cv.used;
    return s;
}

static size_t rt_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    la_opts o = la_opts_default();
    const la_shape sh = rt_shape(L, B, T);
    size_t op = la_retention_workspace_size(backward, sh, &o);
    o.form = LA_FORM_RECURRENT;  // the T = 1 decode step
    op = LA_MAX(op, la_retention_workspace_size(backward, sh, &o));
    return scratch_of(L, NULL, B, T, backward).used + LA_ALIGN + op;
}

static size_t rt_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)(L->H * L->dk * L->dv);
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

static la_status rt_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                            const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, H = L->H, HKV = L->HKV;
    const int64_t dk = L->dk, dv = L->dv, G = H / HKV, Dq = L->key_dim, Dkv = HKV * dk;
    const int64_t Dvv = HKV * dv, Dv = L->value_dim;
    const rt_mode d = mode_of(L);
    const rt_act a = act_of(L, c->act, rows);
    const rt_scratch sc = scratch_of(L, c->work, B, T, false);
    // q, k = RoPE(fm(x W^T)); without a feature map the projections go straight to q, k
    la_status s = la_linear_forward(d.fm ? a.xq : a.q, x, la_pw(m, L, P_Q), NULL, rows, D, Dq);
    if (!s) s = la_linear_forward(d.fm ? a.xk : a.k, x, la_pw(m, L, P_K), NULL, rows, D, Dkv);
    if (!s) s = la_linear_forward(a.v, x, la_pw(m, L, P_V), NULL, rows, D, Dvv);
    if (s) return s;
    if (d.fm) {
        fm_forward(a.q, a.xq, d.fm, rows * Dq);
        fm_forward(a.k, a.xk, d.fm, rows * Dkv);
    }
    const la_lcache * lc = c->cache;
    const int64_t * pos = lc ? lc->len : NULL;  // tokens before this call, per sequence
    const la_opts ro = la_opts_default();
    s = la_rope_forward(a.q, a.q, 10000.0f, pos, B, T, H, dk, &ro);
    if (!s) s = la_rope_forward(a.k, a.k, 10000.0f, pos, B, T, HKV, dk, &ro);
    if (s) return s;
    const float * ke = a.k, *ve = a.v;
    if (G > 1) {
        la_kv_expand(sc.ke, a.k, rows, H, G, dk);
        la_kv_expand(sc.ve, a.v, rows, H, G, dv);
        ke = sc.ke, ve = sc.ve;
    }
    float * state = lc ? lc->f : NULL;  // (N, H, dk, dv)
    la_opts o = la_mixer_opts(c, (char *)c->work + sc.used, c->work_size - sc.used);
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    float * final = state && o.form == LA_FORM_RECURRENT ? state : state ? sc.fin : NULL;
    s = la_retention_forward(a.o, final, a.q, ke, ve, state, rt_shape(L, B, T), &o);
    if (s) return s;
    if (final == sc.fin) memcpy(state, sc.fin, (size_t)(B * H * dk * dv) * 4);
    const float eps = (float)m->cfg.norm_eps;
    const float * w = d.affine ? la_pw(m, L, d.norm) : NULL;
    if (d.gate) {
        s = la_linear_forward(a.gt, x, la_pw(m, L, d.g), NULL, rows, D, Dv);
        if (!s) s = la_rmsnorm_gated_forward(a.on, a.o, a.gt, w, eps, LA_ACT_SILU, rows * H, dv);
    } else {
        s = la_rmsnorm_forward(a.on, a.o, w, eps, rows * H, dv);
    }
    if (!s) s = la_linear_forward(y, a.on, la_pw(m, L, d.o), NULL, rows, Dv, D);
    return s;
}

static la_status rt_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                             const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, H = L->H, HKV = L->HKV;
    const int64_t dk = L->dk, dv = L->dv, G = H / HKV, Dq = L->key_dim, Dkv = HKV * dk;
    const int64_t Dvv = HKV * dv, Dv = L->value_dim;
    const rt_mode d = mode_of(L);
    const rt_act a = act_of(L, c->act, rows);
    const rt_scratch sc = scratch_of(L, c->work, B, T, true);
    const float eps = (float)m->cfg.norm_eps;
    const float * w = d.affine ? la_pw(m, L, d.norm) : NULL;
    float * dw = d.affine ? la_pg(m, L, d.norm) : NULL;
    // y = on Wo^T
    la_lin_bwd(sc.don, 0.0f, la_pg(m, L, d.o), NULL, dy, a.on, la_pw(m, L, d.o), rows, Dv, D);
    la_status s;
    if (d.gate)
        s = la_rmsnorm_gated_backward(sc.dO, sc.dgt, dw, sc.don, a.o, a.gt, w, eps, LA_ACT_SILU,
                                      rows * H, dv, true);
    else
        s = la_rmsnorm_backward(sc.dO, dw, sc.don, a.o, w, eps, rows * H, dv, true);
    if (s) return s;
    // o = retention(q, repeat(k), repeat(v))
    const float * ke = a.k, *ve = a.v;
    if (G > 1) {
        la_kv_expand(sc.ke, a.k, rows, H, G, dk);
        la_kv_expand(sc.ve, a.v, rows, H, G, dv);
        ke = sc.ke, ve = sc.ve;
    }
    la_opts o = la_mixer_opts(c, (char *)c->work + sc.used, c->work_size - sc.used);
    s = la_retention_backward(sc.dq, sc.dke, sc.dve, NULL, sc.dO, NULL, a.q, ke, ve, NULL,
                              rt_shape(L, B, T), &o);
    if (s) return s;
    if (G > 1) {
        la_kv_reduce(sc.dk, sc.dke, rows, H, G, dk);
        la_kv_reduce(sc.dv, sc.dve, rows, H, G, dv);
    }
    // q = RoPE(fm(xq)): the inverse rotation, then fm'
    const la_opts ro = la_opts_default();
    s = la_rope_backward(sc.dq, sc.dq, 10000.0f, NULL, B, T, H, dk, &ro);
    if (!s) s = la_rope_backward(sc.dk, sc.dk, 10000.0f, NULL, B, T, HKV, dk, &ro);
    if (s) return s;
    if (d.fm) {
        fm_backward(sc.dq, a.xq, d.fm, rows * Dq);
        fm_backward(sc.dk, a.xk, d.fm, rows * Dkv);
    }
    // dx from every projection that read x
    la_lin_bwd(dx, 0.0f, la_pg(m, L, P_Q), NULL, sc.dq, x, la_pw(m, L, P_Q), rows, D, Dq);
    la_lin_bwd(dx, 1.0f, la_pg(m, L, P_K), NULL, sc.dk, x, la_pw(m, L, P_K), rows, D, Dkv);
    la_lin_bwd(dx, 1.0f, la_pg(m, L, P_V), NULL, sc.dv, x, la_pw(m, L, P_V), rows, D, Dvv);
    if (d.gate)
        la_lin_bwd(dx, 1.0f, la_pg(m, L, d.g), NULL, sc.dgt, x, la_pw(m, L, d.g), rows, D, Dv);
    return LA_STATUS_OK;
}

const la_mixer_vt la_mixer_retnet_vt = {
    .name = "retnet",
    .build = rt_build,
    .act_floats = rt_act_floats,
    .work_bytes = rt_work,
    .cache_floats = rt_cache,
    .forward = rt_forward,
    .backward = rt_backward,
    .root_params = rt_root,
};
