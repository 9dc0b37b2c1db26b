// Gated Linear Attention layer (OPS.md 5.1; fla/layers/gla.py):
//   q1 = conv(x Wq^T), k1 = conv(x Wk^T), v1 = conv(x Wv^T), SiLU in the conv   (use_short_conv;
//        without it the plain projections, no activation)
//   gk = max( logsigmoid( (x W0^T) W1^T + b1 ) / 16, clamp_min )    (gate_logit_normalizer 16,
//        gate_low_rank_dim 16; the clamp only when clamp_min is set)
//   q, k = fmap(q1), fmap(k1)     feature_map, an activation of fla's ACT2FN (when set)
//   k, v, gk expanded from HKV to H heads (head h reads kv head h / G, G = H / HKV), by copying
//   o  = gla(q, k, v, gk)  (scale dk^-1/2)
//   y  = o_proj( RMSNorm(o) w  (o SiLU(x Wg^T)  with use_output_gate) )   per head over dv
// fla's names: the norm weight is g_norm_swish_gate with the output gate and fuse_norm (its
// FusedRMSNormGated, gate_fn = hidden_act = swish), g_norm otherwise (RMSNorm, then
// o * swish(g) when gated: the same function); elementwise_affine false: no weight. fla tests
// gate_fn == 'swish' literally, so hidden_act 'silu' gives g_norm, here too.
// Dimensions: H heads, HKV = num_kv_heads, G = H / HKV, Dk = int(hidden expand_k),
// Dv = int(hidden expand_v), dk = Dk / H, dv = Dv / H, Dkg = Dk / G, Dvg = Dv / G.
// Saves the projections and every intermediate at HKV heads; the expanded k, v, gk live in the
// workspace (copied again in backward, whose expanded gradients are summed back per group).
// The op saves nothing (its backward recomputes the chunk-boundary states).
// Decode cache per layer: state (N, H, dk, dv), conv caches (N, Dk, W), (N, Dkg, W), (N, Dvg, W).
//
// The layer's own dims: L->F is the feature map (FM_*), L->R the option bits (GL_*).
#include "model.h"

#include "nn.h"

#include <math.h>

#define GK_RANK 16    // gate_low_rank_dim
#define GK_NORM 16.0  // gate_logit_normalizer

enum { P_Q, P_K, P_V, P_GK0, P_GK1, P_GK1B, P_O, P_REST };
enum { GL_GATE = 1, GL_CLAMP = 2 };

// ---------------------------------------------------------------------------------------------
// Feature maps: fla's ACT2FN (fla/modules/activations.py), elementwise. 'bias_gelu' (two
// arguments) cannot be a feature map; fla has no 'elu' or 'identity' key.

typedef enum { FM_NONE, FM_RELU, FM_SIGMOID, FM_LOGSIGMOID, FM_SILU, FM_SQRELU, FM_GELU } gl_fm;

static const struct { const char * name; gl_fm fm; } fm_names[] = {
    { "relu", FM_RELU },   { "sigmoid", FM_SIGMOID }, { "logsigmoid", FM_LOGSIGMOID },
    { "silu", FM_SILU },   { "swish", FM_SILU },      { "sqrelu", FM_SQRELU },
    { "gelu", FM_GELU },
};

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }
// log sigma(x) = min(x, 0) - log(1 + e^-|x|), no overflow either way
static double logsigm(double x) { return fmin(x, 0.0) - log1p(exp(-fabs(x))); }

// fla's 'gelu' is the tanh approximation (fast_gelu_impl)
static double gelu_t(double x) { return tanh(0.79788456 * x * (1 + 0.044715 * x * x)); }

static float fm_fwd(gl_fm f, float xf) {
    const double x = xf;
    switch (f) {
    case FM_NONE: return xf;
    case FM_RELU: return xf > 0.0f ? xf : 0.0f;
    case FM_SIGMOID: return (float)sigm(x);
    case FM_LOGSIGMOID: return (float)logsigm(x);
    case FM_SILU: return (float)(x * sigm(x));
    case FM_SQRELU: return xf > 0.0f ? xf * xf : 0.0f;
    case FM_GELU: return (float)(0.5 * x * (1.0 + gelu_t(x)));
    }
    return xf;
}

static float fm_grad(gl_fm f, float xf) {
    const double x = xf;
    switch (f) {
    case FM_NONE: return 1.0f;
    case FM_RELU: return xf > 0.0f ? 1.0f : 0.0f;
    case FM_SIGMOID: return (float)(sigm(x) * sigm(-x));
    case FM_LOGSIGMOID: return (float)sigm(-x);
    case FM_SILU: return (float)(sigm(x) * (1.0 + x * sigm(-x)));
    case FM_SQRELU: return xf > 0.0f ? 2.0f * xf : 0.0f;
    case FM_GELU: {  // fla's gelu_bwd
        const double t = gelu_t(x);
        return (float)(0.5 * x * ((1 - t * t) * (0.79788456 + 0.1070322243 * x * x)) +
                       0.5 * (1 + t));
    }
    }
    return 1.0f;
}

// y = fmap(x), n values; backward: dy *= fmap'(x) in place.
static void fmap_forward(float * y, const float * x, gl_fm f, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(n, n))
    for (int64_t i = 0; i < n; i++) y[i] = fm_fwd(f, x[i]);
}

static void fmap_backward(float * dy, const float * x, gl_fm f, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(n, n))
    for (int64_t i = 0; i < n; i++) dy[i] *= fm_grad(f, x[i]);
}

// gk = max(logsigmoid(gkr) / 16, cmin), n values (fla: F.logsigmoid(gk) / 16, then
// torch.clamp_min).
static void gate_forward(float * gk, const float * gkr, int64_t n, bool clamp, float cmin) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(n, n))
    for (int64_t i = 0; i < n; i++) {
        const float g = (float)(logsigm(gkr[i]) / GK_NORM);
        gk[i] = clamp && g < cmin ? cmin : g;
    }
}

// dgkr = dgk [g >= cmin] sigma(-gkr) / 16, in place on dgk (torch.clamp_min passes the gradient
// where its input >= min).
static void gate_backward(float * dgk, const float * gkr, int64_t n, bool clamp, float cmin) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(n, n))
    for (int64_t i = 0; i < n; i++) {
        const bool pass = !clamp || (float)(logsigm(gkr[i]) / GK_NORM) >= cmin;
        dgk[i] = pass ? (float)((double)dgk[i] * sigm(-(double)gkr[i]) / GK_NORM) : 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------
// Build

typedef struct {
    int g, norm, qc, kc, vc;  // parameter slots of the optional parts, -1 when absent
} gl_slots;

static gl_slots slots_of(const la_model * m) {
    const la_config * c = &m->cfg;
    gl_slots s = { -1, -1, -1, -1, -1 };
    int i = P_REST;
    if (c->use_output_gate) s.g = i++;
    if (c->elementwise_affine) s.norm = i++;
    if (c->use_short_conv) s.qc = i, s.kc = i + 1, s.vc = i + 2;
    return s;
}

static la_status gl_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    const int64_t D = m->D, H = c->num_heads;
    const int64_t HKV = c->num_kv_heads ? c->num_kv_heads : H;
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
    if (HKV <= 0 || H % HKV)
        return (snprintf(err, errlen, "config: 'num_kv_heads' %lld does not divide num_heads %lld",
                         (long long)HKV, (long long)H), LA_STATUS_INVALID_ARG);
    L->F = FM_NONE;
    if (c->feature_map[0]) {
        L->F = -1;
        for (size_t i = 0; i < sizeof fm_names / sizeof fm_names[0]; i++)
            if (!strcmp(c->feature_map, fm_names[i].name)) L->F = fm_names[i].fm;
        if (L->F < 0)
            return (snprintf(err, errlen, "config: 'feature_map' \"%s\" is not an activation of "
                             "fla's ACT2FN (relu, sigmoid, logsigmoid, silu, swish, sqrelu, gelu) "
                             "or null", c->feature_map), LA_STATUS_INVALID_ARG);
    }
    L->R = (c->use_output_gate ? GL_GATE : 0) | (isnan(c->clamp_min) ? 0 : GL_CLAMP);
    L->H = L->HV = H;
    L->HKV = HKV;
    L->dk = Dk / H;
    L->dv = Dv / H;
    L->key_dim = Dk;
    L->value_dim = Dv;
    L->W = c->conv_size;
    const int64_t W = L->W, Dkg = HKV * L->dk, Dvg = HKV * L->dv;
    la_layer_param(m, L, "q_proj.weight", 2, (int64_t[]){ Dk, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "k_proj.weight", 2, (int64_t[]){ Dkg, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "v_proj.weight", 2, (int64_t[]){ Dvg, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "gk_proj.0.weight", 2, (int64_t[]){ GK_RANK, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "gk_proj.1.weight", 2, (int64_t[]){ Dkg, GK_RANK }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "gk_proj.1.bias", 1, (int64_t[]){ Dkg }, LA_INIT_ZERO, false);
    la_layer_param(m, L, "o_proj.weight", 2, (int64_t[]){ D, Dv }, LA_INIT_NORMAL, true);
    if (c->use_output_gate)
        la_layer_param(m, L, "g_proj.weight", 2, (int64_t[]){ Dv, D }, LA_INIT_NORMAL, true);
    if (c->elementwise_affine)
        la_layer_param(m, L, c->use_output_gate && c->fuse_norm && !strcmp(c->hidden_act, "swish")
                                   ? "g_norm_swish_gate.weight"
                                                                : "g_norm.weight",
                       1, (int64_t[]){ L->dv }, LA_INIT_ONE, false);
    if (c->use_short_conv) {
        la_layer_param(m, L, "q_conv1d.weight", 3, (int64_t[]){ Dk, 1, W }, LA_INIT_NORMAL, true);
        la_layer_param(m, L, "k_conv1d.weight", 3, (int64_t[]){ Dkg, 1, W }, LA_INIT_NORMAL, true);
        la_layer_param(m, L, "v_conv1d.weight", 3, (int64_t[]){ Dvg, 1, W }, LA_INIT_NORMAL, true);
    }
    return LA_STATUS_OK;
}

static la_shape gl_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->dk, .V = L->dv };
}

// ---------------------------------------------------------------------------------------------
// Activations and workspace

// Saved activations, in this order (rows = B T; Dkg, Dvg: the HKV heads of k, v, gk);
// [..] only when the layer needs it:
//   xq, q1 [qf] (rows, Dk)           projection, after conv (+ SiLU), after the feature map
//   xk, k1 [kf] (rows, Dkg)          likewise
//   xv, v1      (rows, Dvg)
//   h16 (rows, 16), gkr, gk (rows, Dkg)   gate: low-rank input, raw logits, log decay
//   o [gt] on   (rows, Dv)           op output, output gate input, norm output
typedef struct {
    float *xq, *q1, *qf, *xk, *k1, *kf, *xv, *v1, *h16, *gkr, *gk, *o, *gt, *on;
} gl_act;

static gl_act act_of(const la_layer * L, float * base, int64_t rows, int64_t * total) {
    const int64_t Dk = L->key_dim, Dv = L->value_dim;
    const int64_t Dkg = L->HKV * L->dk, Dvg = L->HKV * L->dv;
    const bool fm = L->F != FM_NONE;
    la_carver cv = { (char *)base, 0 };  // base NULL: counts only
    gl_act a;
    a.xq = la_carve_f(&cv, rows * Dk), a.q1 = la_carve_f(&cv, rows * Dk);
    a.qf = fm ? la_carve_f(&cv, rows * Dk) : a.q1;
    a.xk = la_carve_f(&cv, rows * Dkg), a.k1 = la_carve_f(&cv, rows * Dkg);
    a.kf = fm ? la_carve_f(&cv, rows * Dkg) : a.k1;
    a.xv = la_carve_f(&cv, rows * Dvg), a.v1 = la_carve_f(&cv, rows * Dvg);
    a.h16 = la_carve_f(&cv, rows * GK_RANK);
    a.gkr = la_carve_f(&cv, rows * Dkg), a.gk = la_carve_f(&cv, rows * Dkg);
    a.o = la_carve_f(&cv, rows * Dv);
    a.gt = (L->R & GL_GATE) ? la_carve_f(&cv, rows * Dv) : NULL;
    a.on = la_carve_f(&cv, rows * Dv);
    if (total) *total = (int64_t)(cv.used / sizeof(float));
    return a;
}

static size_t gl_act_floats(const la_layer * L, int64_t B, int64_t T) {
    int64_t n;
    act_of(L, NULL, B * T, &n);
    return (size_t)n;
}

// The expanded k, v, gk (rows, H dk / H dv / H dk), only when G > 1.
static int expand_counts(const la_layer * L, int64_t rows, int64_t * n) {
    if (L->HKV == L->H) return 0;
    n[0] = rows * L->H * L->dk, n[1] = rows * L->H * L->dv, n[2] = rows * L->H * L->dk;
    return 3;
}

// Forward: final state copy, expanded k, v, gk; backward adds don, dO, dgt (rows, Dv); dq
// (rows, Dk); dke, dge (rows, H dk), dve (rows, H dv) the op's gradients; dh16 (rows, 16);
// tmp (rows, max(Dk, Dv)) for the conv; with G > 1 also the summed dk, dgk (rows, Dkg), dv
// (rows, Dvg).
static int scratch_counts(const la_layer * L, int64_t B, int64_t T, bool backward, int64_t * n) {
    const int64_t rows = B * T, Dk = L->key_dim, Dv = L->value_dim, H = L->H;
    int cnt = 0;
    n[cnt++] = B * H * L->dk * L->dv;
    cnt += expand_counts(L, rows, n + cnt);
    if (!backward) return cnt;
    const int64_t c[] = { rows * Dv, rows * Dv, rows * Dv, rows * Dk, rows * H * L->dk,
                          rows * H * L->dk, rows * H * L->dv, rows * GK_RANK,
                          rows * LA_MAX(Dk, Dv) };
    memcpy(n + cnt, c, sizeof c);
    cnt += 9;
    if (L->HKV != H) {
        n[cnt++] = rows * L->HKV * L->dk, n[cnt++] = rows * L->HKV * L->dk;
        n[cnt++] = rows * L->HKV * L->dv;
    }
    return cnt;
}

static size_t gl_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    int64_t n[16];
    const la_opts o = la_opts_default();
    const size_t fwd = la_floats_bytes(scratch_counts(L, B, T, false, n), n) +
                       la_gla_workspace_size(false, gl_shape(L, B, T), &o);
    if (!backward) return fwd;
    return LA_MAX(fwd, la_floats_bytes(scratch_counts(L, B, T, true, n), n) +
                           la_gla_workspace_size(true, gl_shape(L, B, T), &o));
}

static size_t gl_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)(L->H * L->dk * L->dv + (L->key_dim + L->HKV * (L->dk + L->dv)) * L->W);
}

// dst (rows, HKV G, d) = src (rows, HKV, d) repeated: head h G + g reads kv head h.
static void expand_heads(float * dst, const float * src, int64_t rows, int64_t HKV, int64_t G,
                         int64_t d) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * HKV * G * d))
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < HKV; h++)
            for (int64_t g = 0; g < G; g++)
                memcpy(dst + ((r * HKV + h) * G + g) * d, src + (r * HKV + h) * d,
                       (size_t)d * sizeof(float));
}

// dst (rows, HKV, d) = sum over g of src (rows, HKV G, d): the expansion's backward.
static void sum_heads(float * dst, const float * src, int64_t rows, int64_t HKV, int64_t G,
                      int64_t d) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * HKV * G * d))
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < HKV; h++) {
            float * o = dst + (r * HKV + h) * d;
            const float * s = src + (r * HKV + h) * G * d;
            memcpy(o, s, (size_t)d * sizeof(float));
            for (int64_t g = 1; g < G; g++)
                for (int64_t i = 0; i < d; i++) o[i] += s[g * d + i];
        }
}

// k, v, gk at H heads: the saved tensors themselves when G = 1, copies into e[0..2] otherwise.
static void expanded(const la_layer * L, const gl_act * a, int64_t rows, float * const * e,
                     const float ** k, const float ** v, const float ** gk) {
    const int64_t G = L->H / L->HKV;
    if (G == 1) {
        *k = a->kf, *v = a->v1, *gk = a->gk;
        return;
    }
    expand_heads(e[0], a->kf, rows, L->HKV, G, L->dk);
    expand_heads(e[1], a->v1, rows, L->HKV, G, L->dv);
    expand_heads(e[2], a->gk, rows, L->HKV, G, L->dk);
    *k = e[0], *v = e[1], *gk = e[2];
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

static la_status gl_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                            const float * x) {
    const la_config * cf = &m->cfg;
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, Dk = L->key_dim, Dv = L->value_dim;
    const int64_t H = L->H, Dkg = L->HKV * L->dk, Dvg = L->HKV * L->dv;
    const gl_slots sl = slots_of(m);
    const gl_act a = act_of(L, c->act, rows, NULL);
    const gl_fm fm = (gl_fm)L->F;
    const la_lcache * lc = c->cache;
    // cache layout: state (N, H, dk, dv), then the q, k, v conv caches (N, n, W)
    float * state = lc ? lc->f : NULL;
    float * cq = lc && sl.qc >= 0 ? state + B * H * L->dk * L->dv : NULL;
    float * ck = cq ? cq + B * Dk * L->W : NULL, *cv = ck ? ck + B * Dkg * L->W : NULL;
    const float * wq = sl.qc >= 0 ? la_pw(m, L, sl.qc) : NULL;
    const float * wk = sl.kc >= 0 ? la_pw(m, L, sl.kc) : NULL;
    const float * wv = sl.vc >= 0 ? la_pw(m, L, sl.vc) : NULL;
    const la_act act = sl.qc >= 0 ? LA_ACT_SILU : LA_ACT_IDENTITY;  // no activation without conv
    la_status s = la_proj_conv_forward(c, a.q1, a.xq, x, la_pw(m, L, P_Q), wq, cq, act, D, Dk, L->W);
    if (!s) s = la_proj_conv_forward(c, a.k1, a.xk, x, la_pw(m, L, P_K), wk, ck, act, D, Dkg, L->W);
    if (!s) s = la_proj_conv_forward(c, a.v1, a.xv, x, la_pw(m, L, P_V), wv, cv, act, D, Dvg, L->W);
    // gk = logsigmoid(gk_proj(x)) / 16, clamped from below
    if (!s) s = la_linear_forward(a.h16, x, la_pw(m, L, P_GK0), NULL, rows, D, GK_RANK);
    if (!s) s = la_linear_forward(a.gkr, a.h16, la_pw(m, L, P_GK1), la_pw(m, L, P_GK1B), rows,
                                  GK_RANK, Dkg);
    if (s) return s;
    gate_forward(a.gk, a.gkr, rows * Dkg, L->R & GL_CLAMP, (float)cf->clamp_min);
    if (fm != FM_NONE) {
        fmap_forward(a.qf, a.q1, fm, rows * Dk);
        fmap_forward(a.kf, a.k1, fm, rows * Dkg);
    }
    int64_t n[16];
    const int cnt = scratch_counts(L, B, T, false, n);
    la_carver w = { (char *)c->work, LA_ALIGN };
    const size_t sbytes = (size_t)n[0] * sizeof(float);
    float * fin = la_carve(&w, sbytes);
    float * e[3] = { NULL, NULL, NULL };
    for (int i = 1; i < cnt; i++) e[i - 1] = la_carve(&w, (size_t)n[i] * sizeof(float));
    const float *k, *v, *gk;
    expanded(L, &a, rows, e, &k, &v, &gk);
    la_opts o = la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used);
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    float * final = state && o.form == LA_FORM_RECURRENT ? state : state ? fin : NULL;
    s = la_gla_forward(a.o, final, a.qf, k, v, gk, NULL, state, gl_shape(L, B, T), &o);
    if (s) return s;
    if (final == fin) memcpy(state, fin, sbytes);
    const float eps = (float)cf->norm_eps;
    const float * nw = sl.norm >= 0 ? la_pw(m, L, sl.norm) : NULL;
    if (sl.g >= 0) {
        s = la_linear_forward(a.gt, x, la_pw(m, L, sl.g), NULL, rows, D, Dv);
        if (!s) s = la_rmsnorm_gated_forward(a.on, a.o, a.gt, nw, eps, LA_ACT_SILU, rows * H, L->dv);
    } else {
        s = la_rmsnorm_forward(a.on, a.o, nw, eps, rows * H, L->dv);
    }
    if (!s) s = la_linear_forward(y, a.on, la_pw(m, L, P_O), NULL, rows, Dv, D);
    return s;
}

static la_status gl_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                             const float * dy, const float * x) {
    const la_config * cf = &m->cfg;
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, Dk = L->key_dim, Dv = L->value_dim;
    const int64_t H = L->H, HKV = L->HKV, G = H / HKV, Dkg = HKV * L->dk, Dvg = HKV * L->dv;
    const gl_slots sl = slots_of(m);
    const gl_act a = act_of(L, c->act, rows, NULL);
    const gl_fm fm = (gl_fm)L->F;
    int64_t n[16];
    const int cnt = scratch_counts(L, B, T, true, n);
    float * p[16];
    la_carver w = { (char *)c->work, LA_ALIGN };
    for (int i = 0; i < cnt; i++) p[i] = la_carve(&w, (size_t)n[i] * sizeof(float));
    const int ne = G > 1 ? 3 : 0;  // p[0] the forward's state slot, p[1..ne] the expansions
    float * e[3] = { p[1], p[2], p[3] };
    float ** b = p + 1 + ne;
    float * don = b[0], *dO = b[1], *dgt = b[2], *dq = b[3], *dke = b[4], *dge = b[5];
    float * dve = b[6], *dh16 = b[7], *tmp = b[8];
    float * dk = G > 1 ? b[9] : dke, *dgk = G > 1 ? b[10] : dge, *dv = G > 1 ? b[11] : dve;
    const float eps = (float)cf->norm_eps;
    const float * nw = sl.norm >= 0 ? la_pw(m, L, sl.norm) : NULL;
    float * dnw = sl.norm >= 0 ? la_pg(m, L, sl.norm) : NULL;
    // y = on Wo^T
    la_lin_bwd(don, 0.0f, la_pg(m, L, P_O), NULL, dy, a.on, la_pw(m, L, P_O), rows, Dv, D);
    la_status s;
    if (sl.g >= 0) {
        s = la_rmsnorm_gated_backward(dO, dgt, dnw, don, a.o, a.gt, nw, eps, LA_ACT_SILU,
                                      rows * H, L->dv, true);
    } else {
        s = la_rmsnorm_backward(dO, dnw, don, a.o, nw, eps, rows * H, L->dv, true);
    }
    if (s) return s;
    const float *k, *v, *gk;
    expanded(L, &a, rows, e, &k, &v, &gk);
    la_opts o = la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used);
    s = la_gla_backward(dq, dke, dve, dge, NULL, NULL, dO, NULL, a.qf, k, v, gk, NULL, NULL,
                        gl_shape(L, B, T), &o);
    if (s) return s;
    if (G > 1) {  // k, v, gk were repeated over each group: their gradients sum back
        sum_heads(dk, dke, rows, HKV, G, L->dk);
        sum_heads(dv, dve, rows, HKV, G, L->dv);
        sum_heads(dgk, dge, rows, HKV, G, L->dk);
    }
    gate_backward(dgk, a.gkr, rows * Dkg, L->R & GL_CLAMP, (float)cf->clamp_min);
    // gkr = h16 W1^T + b1; h16 = x W0^T   (dx starts here: overwritten)
    la_lin_bwd(dh16, 0.0f, la_pg(m, L, P_GK1), la_pg(m, L, P_GK1B), dgk, a.h16,
               la_pw(m, L, P_GK1), rows, GK_RANK, Dkg);
    la_lin_bwd(dx, 0.0f, la_pg(m, L, P_GK0), NULL, dh16, x, la_pw(m, L, P_GK0), rows, D, GK_RANK);
    if (sl.g >= 0) la_lin_bwd(dx, 1.0f, la_pg(m, L, sl.g), NULL, dgt, x, la_pw(m, L, sl.g), rows, D, Dv);
    // q = fmap(q1), k = fmap(k1)
    if (fm != FM_NONE) {
        fmap_backward(dq, a.q1, fm, rows * Dk);
        fmap_backward(dk, a.k1, fm, rows * Dkg);
    }
    const bool conv = sl.qc >= 0;
    const la_act act = conv ? LA_ACT_SILU : LA_ACT_IDENTITY;
    s = la_proj_conv_backward(c, dx, 1.0f, la_pg(m, L, P_Q), conv ? la_pg(m, L, sl.qc) : NULL, dq,
                              tmp, a.xq, x, la_pw(m, L, P_Q), conv ? la_pw(m, L, sl.qc) : NULL,
                              act, D, Dk, L->W);
    if (!s) s = la_proj_conv_backward(c, dx, 1.0f, la_pg(m, L, P_K), conv ? la_pg(m, L, sl.kc) : NULL,
                                      dk, tmp, a.xk, x, la_pw(m, L, P_K),
                                      conv ? la_pw(m, L, sl.kc) : NULL, act, D, Dkg, L->W);
    if (!s) s = la_proj_conv_backward(c, dx, 1.0f, la_pg(m, L, P_V), conv ? la_pg(m, L, sl.vc) : NULL,
                                      dv, tmp, a.xv, x, la_pw(m, L, P_V),
                                      conv ? la_pw(m, L, sl.vc) : NULL, act, D, Dvg, L->W);
    return s;
}

const la_mixer_vt la_mixer_gla_vt = {
    .name = "gla",
    .build = gl_build,
    .act_floats = gl_act_floats,
    .work_bytes = gl_work,
    .cache_floats = gl_cache,
    .forward = gl_forward,
    .backward = gl_backward,
};
