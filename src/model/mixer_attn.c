// Softmax attention layer (OPS.md 5.5): q, k, v projections (biases iff qkv_bias), RoPE
// (rotate half, theta from the spec) on q and k, causal attention with GQA and an optional
// window, o_proj. Decode: K and V after RoPE in a cache of min(capacity, window) slots.
//
// Parameters: 0 q_proj.weight (D, D), 1 k_proj.weight (HKV d, D), 2 v_proj.weight (HKV d, D),
// 3 o_proj.weight (D, D), then with qkv_bias 4-6 the three biases.
#include "model.h"

#include "nn.h"

enum { P_Q, P_K, P_V, P_O, P_QB, P_KB, P_VB };

static la_status attn_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    (void)err, (void)errlen;
    const la_attn_spec * s = L->spec;
    const int64_t D = m->D;
    L->H = s->num_heads;
    L->HKV = s->num_kv_heads;
    L->dk = L->dv = D / L->H;
    const int64_t kv = L->HKV * L->dk;
    la_layer_param(m, L, "q_proj.weight", 2, (int64_t[]){ D, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "k_proj.weight", 2, (int64_t[]){ kv, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "v_proj.weight", 2, (int64_t[]){ kv, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "o_proj.weight", 2, (int64_t[]){ D, D }, LA_INIT_NORMAL, true);
    if (s->qkv_bias) {
        la_layer_param(m, L, "q_proj.bias", 1, (int64_t[]){ D }, LA_INIT_ZERO, false);
        la_layer_param(m, L, "k_proj.bias", 1, (int64_t[]){ kv }, LA_INIT_ZERO, false);
        la_layer_param(m, L, "v_proj.bias", 1, (int64_t[]){ kv }, LA_INIT_ZERO, false);
    }
    return LA_STATUS_OK;
}

static la_shape attn_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->dk, .V = L->dv, .HV = L->HKV };
}

// Saved: q, k (after RoPE), v, o (rows, H d / HKV d), lse (rows, H).
static size_t attn_act(const la_layer * L, int64_t B, int64_t T) {
    const int64_t rows = B * T, q = L->H * L->dk, kv = L->HKV * L->dk;
    return (size_t)(rows * (2 * q + 2 * kv + L->H)) + 64;
}

static size_t attn_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    la_opts o = la_opts_default();
    const la_shape sh = attn_shape(L, B, T);
    const int64_t rows = B * T, q = L->H * L->dk, kv = L->HKV * L->dk;
    // backward: do, dq, dk, dv; decode loop: one token's q, k, v, o per sequence + positions
    const int64_t n[] = { rows * q, rows * q, rows * kv, rows * kv, 4 * B * q + 2 * B };
    return la_floats_bytes(5, n) + la_attn_workspace_size(backward, sh, &o);
}

static int64_t attn_slots(const la_layer * L, int64_t cap) {
    const int64_t w = L->spec->window_size;
    return w > 0 && w < cap ? w : cap;
}

static size_t attn_cache(const la_layer * L, int64_t cap) {
    return (size_t)(2 * attn_slots(L, cap) * L->HKV * L->dk);
}

static la_status attn_forward(const la_model * m, const la_layer * L, const la_call * c,
                              float * y, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, d = L->dk;
    const int64_t q = L->H * d, kv = L->HKV * d;
    const bool bias = L->spec->qkv_bias;
    const float theta = (float)L->spec->rope_theta;
    float * Q = c->act, *K = Q + rows * q, *V = K + rows * kv, *O = V + rows * kv,
          *lse = O + rows * q;
    la_status s = la_linear_forward(Q, x, la_pw(m, L, P_Q), bias ? la_pw(m, L, P_QB) : NULL,
                                    rows, D, q);
    if (!s) s = la_linear_forward(K, x, la_pw(m, L, P_K), bias ? la_pw(m, L, P_KB) : NULL, rows,
                                  D, kv);
    if (!s) s = la_linear_forward(V, x, la_pw(m, L, P_V), bias ? la_pw(m, L, P_VB) : NULL, rows,
                                  D, kv);
    if (s) return s;
    const la_lcache * lc = c->cache;
    const int64_t * pos = lc ? lc->len : NULL;  // tokens before this call, per sequence
    const la_opts ro = la_opts_default();
    s = la_rope_forward(Q, Q, theta, pos, B, T, L->H, d, &ro);
    if (!s) s = la_rope_forward(K, K, theta, pos, B, T, L->HKV, d, &ro);
    if (s) return s;
    const la_shape sh = attn_shape(L, B, T);
    const int64_t w = L->spec->window_size;
    la_carver cv = { (char *)c->work, 0 };
    if (!lc || pos[0] == 0) {
        la_carve(&cv, la_floats_bytes(5, (int64_t[]){ rows * q, rows * q, rows * kv, rows * kv,
                                                      4 * B * q + 2 * B }));
        la_opts o = la_opts_default();
        o.work = (char *)c->work + cv.used;
        o.work_size = c->work_size - cv.used;
        s = la_attn_forward(O, lse, Q, K, V, NULL, w, true, sh, &o);
        if (!s && lc) {
            // Keep K and V of the prompt: position p in slot p % slots.
            const int64_t slots = attn_slots(L, lc->cap);
            if (w == 0 && T > lc->cap) return LA_STATUS_SHAPE;
            float * kc = lc->f, *vc = lc->f + B * slots * kv;
            for (int64_t b = 0; b < B; b++)
                for (int64_t t = LA_MAX(0, T - slots); t < T; t++) {
                    const int64_t slot = t % slots;
                    memcpy(kc + (b * slots + slot) * kv, K + (b * T + t) * kv, (size_t)kv * 4);
                    memcpy(vc + (b * slots + slot) * kv, V + (b * T + t) * kv, (size_t)kv * 4);
                }
        }
    } else {
        // Tokens after cached ones: one decode step per token (each appends its K and V).
        const int64_t slots = attn_slots(L, lc->cap);
        float * qt = la_carve(&cv, (size_t)(B * q) * 4), *kt = la_carve(&cv, (size_t)(B * kv) * 4);
        float * vt = la_carve(&cv, (size_t)(B * kv) * 4), *ot = la_carve(&cv, (size_t)(B * q) * 4);
        int64_t * len = la_carve(&cv, (size_t)B * sizeof(int64_t));
        memcpy(len, lc->len, (size_t)B * sizeof(int64_t));
        const la_shape s1 = attn_shape(L, B, 1);
        const la_opts o = la_opts_default();
        for (int64_t t = 0; t < T && !s; t++) {
            for (int64_t b = 0; b < B; b++) {
                memcpy(qt + b * q, Q + (b * T + t) * q, (size_t)q * 4);
                memcpy(kt + b * kv, K + (b * T + t) * kv, (size_t)kv * 4);
                memcpy(vt + b * kv, V + (b * T + t) * kv, (size_t)kv * 4);
            }
            s = la_attn_decode(ot, qt, kt, vt, lc->f, lc->f + B * slots * kv, len, slots, w, s1, &o);
            for (int64_t b = 0; b < B && !s; b++)
                memcpy(O + (b * T + t) * q, ot + b * q, (size_t)q * 4);
        }
        if (s) return s;
    }
    if (s) return s;
    return la_linear_forward(y, O, la_pw(m, L, P_O), NULL, rows, q, D);
}

static la_status attn_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                               const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, d = L->dk;
    const int64_t q = L->H * d, kv = L->HKV * d;
    const bool bias = L->spec->qkv_bias;
    const float theta = (float)L->spec->rope_theta;
    const float * Q = c->act, *K = Q + rows * q, *V = K + rows * kv, *O = V + rows * kv,
                *lse = O + rows * q;
    la_carver cv = { (char *)c->work, 0 };
    float * dO = la_carve(&cv, (size_t)(rows * q) * 4), *dQ = la_carve(&cv, (size_t)(rows * q) * 4);
    float * dK = la_carve(&cv, (size_t)(rows * kv) * 4), *dV = la_carve(&cv, (size_t)(rows * kv) * 4);
    la_carve(&cv, (size_t)(4 * B * q + 2 * B) * 4);
    la_lin_bwd(dO, 0.0f, la_pg(m, L, P_O), NULL, dy, O, la_pw(m, L, P_O), rows, q, D);
    la_opts o = la_opts_default();
    o.work = (char *)c->work + cv.used + LA_ALIGN;
    o.work_size = c->work_size - cv.used - LA_ALIGN;
    la_status s = la_attn_backward(dQ, dK, dV, NULL, dO, Q, K, V, NULL, O, lse,
                                   L->spec->window_size, true, attn_shape(L, B, T), &o);
    const la_opts ro = la_opts_default();
    if (!s) s = la_rope_backward(dQ, dQ, theta, NULL, B, T, L->H, d, &ro);
    if (!s) s = la_rope_backward(dK, dK, theta, NULL, B, T, L->HKV, d, &ro);
    if (s) return s;
    la_lin_bwd(dx, 0.0f, la_pg(m, L, P_Q), bias ? la_pg(m, L, P_QB) : NULL, dQ, x,
               la_pw(m, L, P_Q), rows, D, q);
    la_lin_bwd(dx, 1.0f, la_pg(m, L, P_K), bias ? la_pg(m, L, P_KB) : NULL, dK, x,
               la_pw(m, L, P_K), rows, D, kv);
    la_lin_bwd(dx, 1.0f, la_pg(m, L, P_V), bias ? la_pg(m, L, P_VB) : NULL, dV, x,
               la_pw(m, L, P_V), rows, D, kv);
    return LA_STATUS_OK;
}

const la_mixer_vt la_mixer_attn_vt = {
    .name = "attn",
    .build = attn_build,
    .act_floats = attn_act,
    .work_bytes = attn_work,
    .cache_floats = attn_cache,
    .forward = attn_forward,
    .backward = attn_backward,
};
