// Pieces shared by the token mixers: the projection + short conv + activation path, op
// options, and workspace arithmetic.
#include "model.h"

#include "nn.h"

#include <math.h>

la_opts la_mixer_opts(const la_call * c, void * work, size_t work_size) {
    la_opts o = la_opts_default();
    o.form = c->cache && c->T == 1 ? LA_FORM_RECURRENT : LA_FORM_CHUNK;
    o.work = work;
    o.work_size = work_size;
    return o;
}

size_t la_floats_bytes(int n, const int64_t * counts) {
    size_t b = LA_ALIGN;
    for (int i = 0; i < n; i++) b += la_align_up((size_t)counts[i] * sizeof(float));
    return b;
}

la_status la_proj_conv_forward(const la_call * c, float * y, float * y_pre, const float * x,
                               const float * W, const float * conv_w, float * conv_cache,
                               la_act act, int64_t D, int64_t n, int64_t Wc) {
    const int64_t rows = c->B * c->T;
    la_status s = la_linear_forward(y_pre, x, W, NULL, rows, D, n);
    if (s) return s;
    if (!conv_w) return la_act_forward(y, y_pre, act, rows * n);
    const la_opts o = la_opts_default();
    return la_short_conv_forward(y, conv_cache, y_pre, conv_w, NULL, conv_cache, act, c->B, c->T,
                                 n, Wc, &o);
}

la_status la_proj_conv_backward(const la_call * c, float * dx, float dx_beta, float * dW,
                                float * dconv_w, float * dy, float * tmp, const float * y_pre,
                                const float * x, const float * W, const float * conv_w,
                                la_act act, int64_t D, int64_t n, int64_t Wc) {
    const int64_t rows = c->B * c->T;
    la_status s;
    if (conv_w) {
        const la_opts o = la_opts_default();
        s = la_short_conv_backward(tmp, dconv_w, NULL, NULL, dy, NULL, y_pre, conv_w, NULL, NULL,
                                   act, c->B, c->T, n, Wc, true, &o);
        if (s) return s;
        memcpy(dy, tmp, (size_t)(rows * n) * sizeof(float));
    } else {
        s = la_act_backward(dy, dy, y_pre, act, rows * n);
        if (s) return s;
    }
    la_lin_bwd(dx, dx_beta, dW, NULL, dy, x, W, rows, D, n);
    return LA_STATUS_OK;
}

void la_qkv_params(la_model * m, la_layer * L) {
    const int64_t D = m->D, Dk = L->key_dim, Dv = L->value_dim;
    la_layer_param(m, L, "q_proj.weight", 2, (int64_t[]){ Dk, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "k_proj.weight", 2, (int64_t[]){ Dk, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "v_proj.weight", 2, (int64_t[]){ Dv, D }, LA_INIT_NORMAL, true);
}

void la_qkv_conv_params(la_model * m, la_layer * L) {
    const int64_t Dk = L->key_dim, Dv = L->value_dim, W = L->W;
    la_layer_param(m, L, "q_conv1d.weight", 3, (int64_t[]){ Dk, 1, W }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "k_conv1d.weight", 3, (int64_t[]){ Dk, 1, W }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "v_conv1d.weight", 3, (int64_t[]){ Dv, 1, W }, LA_INIT_NORMAL, true);
}

la_status la_qkv_forward(const la_model * m, const la_layer * L, const la_call * c,
                         const la_qkv_bufs * b, const float * x, int pc, la_act qk_act,
                         float ** state) {
    const int64_t D = m->D, Dk = L->key_dim, Dv = L->value_dim, W = L->W;
    const la_lcache * lc = c->cache;
    float * st = lc ? lc->f : NULL;
    float * cq = lc && pc >= 0 ? st + c->B * L->HV * L->dk * L->dv : NULL;
    float * ck = cq ? cq + c->B * Dk * W : NULL, *cv = ck ? ck + c->B * Dk * W : NULL;
    *state = st;
    const float * wq = pc >= 0 ? la_pw(m, L, pc) : NULL;
    const float * wk = pc >= 0 ? la_pw(m, L, pc + 1) : NULL;
    const float * wv = pc >= 0 ? la_pw(m, L, pc + 2) : NULL;
    la_status s = la_proj_conv_forward(c, b->q, b->xq, x, la_pw(m, L, 0), wq, cq, qk_act, D, Dk, W);
    if (!s) s = la_proj_conv_forward(c, b->k, b->xk, x, la_pw(m, L, 1), wk, ck, qk_act, D, Dk, W);
    if (!s)
        s = la_proj_conv_forward(c, b->v, b->xv, x, la_pw(m, L, 2), wv, cv, LA_ACT_SILU, D, Dv, W);
    return s;
}

la_status la_qkv_path_backward(const la_model * m, const la_layer * L, const la_call * c,
                               int pw, int pcw, la_act act, int64_t n, float * dx,
                               float dx_beta, float * dy, float * tmp, const float * xpre,
                               const float * x) {
    const bool conv = pcw >= 0;
    return la_proj_conv_backward(c, dx, dx_beta, la_pg(m, L, pw), conv ? la_pg(m, L, pcw) : NULL,
                                 dy, tmp, xpre, x, la_pw(m, L, pw),
                                 conv ? la_pw(m, L, pcw) : NULL, act, m->D, n, L->W);
}

la_status la_qkv_backward(const la_model * m, const la_layer * L, const la_call * c, int pc,
                          float * dx, float * dq, float * dk, float * dv, float * tmp,
                          const la_qkv_bufs * b, const float * x) {
    const int64_t Dk = L->key_dim, Dv = L->value_dim;
    la_status s =
        la_qkv_path_backward(m, L, c, 0, pc, LA_ACT_SILU, Dk, dx, 1.0f, dq, tmp, b->xq, x);
    if (!s) s = la_qkv_path_backward(m, L, c, 1, pc >= 0 ? pc + 1 : -1, LA_ACT_SILU, Dk, dx, 1.0f,
                                     dk, tmp, b->xk, x);
    if (!s) s = la_qkv_path_backward(m, L, c, 2, pc >= 0 ? pc + 2 : -1, LA_ACT_SILU, Dv, dx, 1.0f,
                                     dv, tmp, b->xv, x);
    return s;
}

la_status la_gva_dims(const la_model * m, la_layer * L, bool hv_min_h, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    L->H = c->num_heads;
    L->HV = c->num_v_heads ? c->num_v_heads : c->num_heads;
    L->dk = c->head_dim;
    const double dv = (double)c->head_dim * c->expand_v;
    if (L->dk <= 0) return la_cfg_fail(err, errlen, "config: 'head_dim' must be > 0");
    if (dv != floor(dv) || dv < 1)
        return la_cfg_fail(err, errlen, "config: 'expand_v' %g times head_dim %lld is not a "
                           "whole head_v", c->expand_v, (long long)c->head_dim);
    if ((hv_min_h && L->HV < L->H) || L->HV % L->H)
        return la_cfg_fail(err, errlen, "config: 'num_v_heads' %lld is not a multiple of "
                           "num_heads %lld", (long long)L->HV, (long long)L->H);
    L->dv = (int64_t)dv;
    L->key_dim = L->H * L->dk;
    L->value_dim = L->HV * L->dv;
    L->W = c->conv_size;
    return LA_STATUS_OK;
}

// The op's workspace for either form a call may take.
static size_t op_work_any_form(const la_layer * L, int64_t B, int64_t T, bool backward,
                               la_op_size_fn op_size) {
    la_opts o = la_opts_default();
    const size_t a = op_size(L, B, T, backward, &o);
    o.form = LA_FORM_RECURRENT;
    const size_t b = op_size(L, B, T, backward, &o);
    return LA_MAX(a, b);
}

size_t la_scratch_work(const la_layer * L, int64_t B, int64_t T, bool backward,
                       la_counts_fn counts, la_op_size_fn op_size) {
    int64_t n[16];
    size_t bytes = la_floats_bytes(counts(L, B, T, false, n), n) +
                   op_work_any_form(L, B, T, false, op_size);
    if (backward)
        bytes = LA_MAX(bytes, la_floats_bytes(counts(L, B, T, true, n), n) +
                                  op_work_any_form(L, B, T, true, op_size));
    return bytes;
}

void la_kv_expand(float * dst, const float * src, int64_t rows, int64_t H, int64_t G, int64_t d) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < H; h++)
            memcpy(dst + (r * H + h) * d, src + (r * (H / G) + h / G) * d, (size_t)d * 4);
}

void la_kv_reduce(float * dst, const float * src, int64_t rows, int64_t H, int64_t G, int64_t d) {
    const int64_t HK = H / G;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < HK; j++) {
            float * o = dst + (r * HK + j) * d;
            memcpy(o, src + (r * H + j * G) * d, (size_t)d * 4);
            for (int64_t g = 1; g < G; g++) {
                const float * s = src + (r * H + j * G + g) * d;
                for (int64_t i = 0; i < d; i++) o[i] += s[i];
            }
        }
}
