// LinearAttention layer (fla/layers/linear_attn.py, fla/modules/feature_map.py; OPS.md 2.1):
//   xq, xk, v = x Wq^T, x Wk^T, x Wv^T               (rows, H, dk) (rows, HKV, dk) (rows, HKV, dv)
//   qf, kf    = phi_q(xq), phi_k(xk)  per head        (rows, H, F) (rows, HKV, F)
//   q, k      = qf / (sum qf + 1e-4), likewise k       only with norm_q / norm_k
//   k, v repeated to H heads                          head h reads kv head h / G, G = H / HKV
//   o         = linear_attn(q, k, v, normalize = norm_feature_map), scale F^-1/2
//               (fla passes scale=None and the kernel takes q's last dim, i.e. F)
//   y         = o_proj( RMSNorm_dv(o) w )             (the model never passes output_norm, so
//                                                      it is always fla's default 'rmsnorm')
// Feature maps (one module shared by all heads; F = the feature dim):
//   identity  x                                       F = dk
//   elu       elu(x) + 1                              F = dk
//   relu      max(x, 0)                               F = dk
//   hedgehog  softmax([2z, -2z]), z = x W^T + b       F = 2 dk   feature_map_*.layer.{weight,bias}
//   t2r       relu(x W^T)                             F = dk     feature_map_*.layer.weight
//   elementwise_product (fla's default, HadamardFeatureMap)
//             (x W1^T + b1) o (x W2^T + b2)           F = dk     feature_map_*.layer{1,2}.weight,
//                                                                feature_map_*.layer{1,2}.bias
//   dpfp      r = [relu(x), relu(-x)],  [r o roll(r, j)] for j = 1..4        F = 8 dk
// With tie_feature_map_qk fla registers one module under both names; here it is registered once,
// as feature_map_q (transformers refuses to save such shared tensors as safetensors, so no
// checkpoint this loader reads holds both), and q and k both read and train it.
// Learned maps are initialised as every fla Linear (N(0, initializer_range), biases 0): the
// model's _init_weights overwrites Hedgehog's identity init.
//
// Dimensions: rows = B T, D = hidden, H heads, dk = int(D expand_k) / H, dv = int(D expand_v) / H,
// HKV = num_kv_heads, F as above.
// Saves the projections, the feature maps' intermediates, the op inputs, its output and the
// normed output; the op saves nothing (its backward recomputes the chunk-boundary states).
// Decode cache per layer: state (N, H, F, dv), then with norm_feature_map the key sum z
// (N, H, F). fla keeps no cache for this layer and recomputes the whole prefix at every step;
// carrying the state computes the same function.
//
// The layer's own dims: L->F is the feature dim, L->R the feature map (LF_*) in its low byte
// and the option bits (LN_*) above.
#include "model.h"

#include "nn.h"

#include <math.h>

enum { LF_IDENTITY = 0, LF_ELU, LF_RELU, LF_HEDGEHOG, LF_T2R, LF_HADAMARD, LF_DPFP };
enum {
    LN_TIE = 1 << 8, LN_NQ = 1 << 9, LN_NK = 1 << 10, LN_NORMALIZE = 1 << 11, LN_AFFINE = 1 << 12
};

static const char * const fm_names[] = {
    [LF_IDENTITY] = "identity", [LF_ELU] = "elu", [LF_RELU] = "relu", [LF_HEDGEHOG] = "hedgehog",
    [LF_T2R] = "t2r", [LF_HADAMARD] = "elementwise_product", [LF_DPFP] = "dpfp",
};

// Parameters of one feature-map module.
static int fm_nparams(int kind) {
    return kind == LF_HEDGEHOG ? 2 : kind == LF_T2R ? 1 : kind == LF_HADAMARD ? 4 : 0;
}

// What the layer computes, decoded from L->R, and its parameter slots.
typedef struct {
    int  fm;
    bool tie, nq, nk, normalize, affine;
    int  fq, fk;              // first slot of the q and k maps' parameters (-1: none)
    int  q, k, v, norm, o;    // norm -1 without elementwise_affine
} ln_mode;

static ln_mode mode_of(const la_layer * L) {
    ln_mode d = { .fm = (int)(L->R & 0xff), .tie = L->R & LN_TIE, .nq = L->R & LN_NQ,
                  .nk = L->R & LN_NK, .normalize = L->R & LN_NORMALIZE,
                  .affine = L->R & LN_AFFINE };
    const int np = fm_nparams(d.fm);
    int i = 0;
    d.fq = np ? i : -1, i += np;
    d.fk = !np ? -1 : d.tie ? d.fq : i, i += d.tie ? 0 : np;
    d.q = i++, d.k = i++, d.v = i++;
    d.norm = d.affine ? i++ : -1;
    d.o = i++;
    return d;
}

// LinearAttentionConfig's keys (fla/models/linear_attn/configuration_linear_attn.py).
static const char * const ln_keys[] = {
    "attn_mode", "hidden_size", "expand_k", "expand_v", "hidden_ratio", "intermediate_size",
    "num_hidden_layers", "num_heads", "num_kv_heads", "feature_map", "tie_feature_map_qk",
    "norm_q", "norm_k", "norm_feature_map", "hidden_act", "max_position_embeddings",
    "elementwise_affine", "norm_eps", "attn", "use_cache", "pad_token_id", "bos_token_id",
    "eos_token_id", "tie_word_embeddings", "initializer_range", "fuse_norm", "fuse_swiglu",
    "fuse_cross_entropy", "fuse_linear_cross_entropy", "use_l2warp", "vocab_size", NULL,
};

static la_status ln_root(la_model * m, char * err, size_t errlen) {
    return la_extra_check(&m->cfg, ln_keys, err, errlen);
}

static la_status ln_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    const int64_t D = m->D, H = c->num_heads;
    double ek, ev;
    int64_t hkv;
    bool tie, nq, nk, nfm, affine;
    char fm[32];
    la_status s = la_extra_num(c, "expand_k", 1.0, &ek, err, errlen);
    if (!s) s = la_extra_num(c, "expand_v", 1.0, &ev, err, errlen);
    if (!s) s = la_extra_int(c, "num_kv_heads", 0, &hkv, err, errlen);
    if (!s) s = la_extra_str(c, "feature_map", "elementwise_product", fm, sizeof fm, err, errlen);
    if (!s) s = la_extra_bool(c, "tie_feature_map_qk", false, &tie, err, errlen);
    if (!s) s = la_extra_bool(c, "norm_q", false, &nq, err, errlen);
    if (!s) s = la_extra_bool(c, "norm_k", false, &nk, err, errlen);
    if (!s) s = la_extra_bool(c, "norm_feature_map", false, &nfm, err, errlen);
    if (!s) s = la_extra_bool(c, "elementwise_affine", true, &affine, err, errlen);
    if (s) return s;
    if (isnan(ek) || isnan(ev))
        return (snprintf(err, errlen, "config: '%s' must be a number",
                         isnan(ek) ? "expand_k" : "expand_v"),
                LA_STATUS_INVALID_ARG);
    // fla: key_dim = int(hidden * expand_k), value_dim = int(hidden * expand_v)
    const int64_t Dk = (int64_t)floor((double)D * ek), Dv = (int64_t)floor((double)D * ev);
    if (hkv == 0) hkv = H;
    if (hkv < 1 || H % hkv)
        return (snprintf(err, errlen, "config: 'num_kv_heads' %lld does not divide num_heads %lld",
                         (long long)hkv, (long long)H), LA_STATUS_INVALID_ARG);
    if (Dk < H || Dk % H || Dv < H || Dv % H)
        return (snprintf(err, errlen, "config: 'num_heads' %lld must divide key_dim %lld and "
                         "value_dim %lld (int(hidden_size * expand_k / expand_v))", (long long)H,
                         (long long)Dk, (long long)Dv), LA_STATUS_INVALID_ARG);
    int kind = -1;
    for (int i = 0; i < (int)(sizeof fm_names / sizeof fm_names[0]) && kind < 0; i++)
        if (!strcmp(fm, fm_names[i])) kind = i;
    if (kind < 0)
        return (snprintf(err, errlen, "config: 'feature_map' \"%s\" is not one of hedgehog, t2r, "
                         "elementwise_product, dpfp, elu, relu, identity", fm),
                LA_STATUS_INVALID_ARG);
    const int64_t dk = Dk / H, dv = Dv / H, G = H / hkv;
    L->H = L->HV = H;
    L->HKV = hkv;
    L->dk = dk;
    L->dv = dv;
    L->key_dim = Dk;
    L->value_dim = Dv;
    L->F = kind == LF_HEDGEHOG ? 2 * dk : kind == LF_DPFP ? 8 * dk : dk;
    L->R = kind | (tie ? LN_TIE : 0) | (nq ? LN_NQ : 0) | (nk ? LN_NK : 0) |
           (nfm ? LN_NORMALIZE : 0) | (affine ? LN_AFFINE : 0);
    // fla registers feature_map_q, feature_map_k, then the projections, the norm and o_proj.
    for (int side = 0; side < (tie ? 1 : 2); side++) {
        char nm[64];
        const char * p = side ? "feature_map_k" : "feature_map_q";
        const int64_t wsh[2] = { dk, dk }, bsh[1] = { dk };
        if (kind == LF_HEDGEHOG || kind == LF_T2R) {
            snprintf(nm, sizeof nm, "%s.layer.weight", p);
            la_layer_param(m, L, nm, 2, wsh, LA_INIT_NORMAL, true);
        }
        if (kind == LF_HEDGEHOG) {
            snprintf(nm, sizeof nm, "%s.layer.bias", p);
            la_layer_param(m, L, nm, 1, bsh, LA_INIT_ZERO, false);
        }
        for (int j = 1; j <= 2 && kind == LF_HADAMARD; j++) {
            snprintf(nm, sizeof nm, "%s.layer%d.weight", p, j);
            la_layer_param(m, L, nm, 2, wsh, LA_INIT_NORMAL, true);
            snprintf(nm, sizeof nm, "%s.layer%d.bias", p, j);
            la_layer_param(m, L, nm, 1, bsh, LA_INIT_ZERO, false);
        }
    }
    la_layer_param(m, L, "q_proj.weight", 2, (int64_t[]){ Dk, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "k_proj.weight", 2, (int64_t[]){ Dk / G, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "v_proj.weight", 2, (int64_t[]){ Dv / G, D }, LA_INIT_NORMAL, true);
    if (affine) la_layer_param(m, L, "norm.weight", 1, (int64_t[]){ dv }, LA_INIT_ONE, false);
    la_layer_param(m, L, "o_proj.weight", 2, (int64_t[]){ D, Dv }, LA_INIT_NORMAL, true);
    return LA_STATUS_OK;
}

static la_shape ln_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->F, .V = L->dv };
}

// ---------------------------------------------------------------------------------------------
// Pieces: the sum norm, DPFP (grouped heads: la_kv_expand, la_kv_reduce)

// y = x / (sum_i x_i + 1e-4) per vector of F (fla: q / (q.sum(-1, True) + 1e-4)); n vectors.
static void sum_norm_forward(float * y, const float * x, int64_t n, int64_t F) {
#pragma omp parallel for schedule(static) if (n * F > LA_NN_PAR_MIN)
    for (int64_t r = 0; r < n; r++) {
        double s = 1e-4;
        for (int64_t i = 0; i < F; i++) s += (double)x[r * F + i];
        const double inv = 1.0 / s;
        for (int64_t i = 0; i < F; i++) y[r * F + i] = (float)((double)x[r * F + i] * inv);
    }
}

// dy <- dx in place: dx_i = (dy_i - y . dy) / (sum x + 1e-4)
static void sum_norm_backward(float * dy, const float * x, const float * y, int64_t n, int64_t F) {
#pragma omp parallel for schedule(static) if (n * F > LA_NN_PAR_MIN)
    for (int64_t r = 0; r < n; r++) {
        double s = 1e-4, yd = 0;
        for (int64_t i = 0; i < F; i++)
            s += (double)x[r * F + i], yd += (double)y[r * F + i] * (double)dy[r * F + i];
        for (int64_t i = 0; i < F; i++) dy[r * F + i] = (float)(((double)dy[r * F + i] - yd) / s);
    }
}

// fla's DPFPFeatureMap with nu = 4, per vector of dk:
//   r = [relu(x), relu(-x)] (R = 2 dk);  y[(j-1) R + i] = r_i r_{(i-j) mod R},  j = 1..4
// (torch.roll(r, j)_i = r_{(i-j) mod R}). y (n, 8 dk).
static inline float dpfp_r(const float * x, int64_t dk, int64_t i) {
    return i < dk ? (x[i] > 0 ? x[i] : 0.0f) : (x[i - dk] < 0 ? -x[i - dk] : 0.0f);
}

static void dpfp_forward(float * y, const float * x, int64_t n, int64_t dk) {
    const int64_t R = 2 * dk;
#pragma omp parallel for schedule(static) if (n * 8 * dk > LA_NN_PAR_MIN)
    for (int64_t v = 0; v < n; v++) {
        const float * xv = x + v * dk;
        float * yv = y + v * 8 * dk;
        for (int64_t j = 1; j <= 4; j++)
            for (int64_t i = 0; i < R; i++)
                yv[(j - 1) * R + i] = dpfp_r(xv, dk, i) * dpfp_r(xv, dk, ((i - j) % R + R) % R);
    }
}

//   dr_i = sum_j dy[j, i] r_{(i-j)} + dy[j, (i+j)] r_{(i+j)}
//   dx_i = dr_i [x_i > 0] - dr_{dk+i} [x_i < 0]
// (relu's derivative is 0 at 0, as torch's).
static void dpfp_backward(float * dx, const float * dy, const float * x, int64_t n, int64_t dk) {
    const int64_t R = 2 * dk;
#pragma omp parallel for schedule(static) if (n * 8 * dk > LA_NN_PAR_MIN)
    for (int64_t v = 0; v < n; v++) {
        const float * xv = x + v * dk, *dyv = dy + v * 8 * dk;
        for (int64_t i = 0; i < dk; i++) {
            double dr[2] = { 0, 0 };
            for (int e = 0; e < 2; e++) {
                const int64_t a = i + e * dk;
                for (int64_t j = 1; j <= 4; j++) {
                    const int64_t lo = ((a - j) % R + R) % R, hi = (a + j) % R;
                    dr[e] += (double)dyv[(j - 1) * R + a] * (double)dpfp_r(xv, dk, lo) +
                             (double)dyv[(j - 1) * R + hi] * (double)dpfp_r(xv, dk, hi);
                }
            }
            dx[v * dk + i] = (float)(xv[i] > 0 ? dr[0] : xv[i] < 0 ? -dr[1] : 0.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One side's feature map over n vectors of dk (n = rows * heads)

// y (n, F) = phi(x); fa, fb (n, dk) keep what the backward needs: t2r z = x W^T (fa);
// elementwise_product a = x W1^T + b1 (fa), b = x W2^T + b2 (fb).
static la_status fmap_forward(const la_model * m, const la_layer * L, int slot, float * y,
                              float * fa, float * fb, const float * x, int64_t n) {
    const int kind = mode_of(L).fm;
    const int64_t dk = L->dk;
    switch (kind) {
    case LF_IDENTITY: return LA_STATUS_OK;  // y is x
    case LF_ELU: return la_fmap_forward(y, x, NULL, NULL, LA_FMAP_ELU1, n, 1, dk);
    case LF_RELU: return la_fmap_forward(y, x, NULL, NULL, LA_FMAP_RELU, n, 1, dk);
    case LF_HEDGEHOG:  // one map shared by all heads: every (row, head) vector is a row
        return la_fmap_forward(y, x, la_pw(m, L, slot), la_pw(m, L, slot + 1), LA_FMAP_HEDGEHOG,
                               n, 1, dk);
    case LF_T2R: {
        la_status s = la_linear_forward(fa, x, la_pw(m, L, slot), NULL, n, dk, dk);
        if (s) return s;
        for (int64_t i = 0; i < n * dk; i++) y[i] = fa[i] > 0 ? fa[i] : 0.0f;
        return LA_STATUS_OK;
    }
    case LF_HADAMARD: {
        la_status s = la_linear_forward(fa, x, la_pw(m, L, slot), la_pw(m, L, slot + 1), n, dk, dk);
        if (!s)
            s = la_linear_forward(fb, x, la_pw(m, L, slot + 2), la_pw(m, L, slot + 3), n, dk, dk);
        if (s) return s;
        for (int64_t i = 0; i < n * dk; i++) y[i] = fa[i] * fb[i];
        return LA_STATUS_OK;
    }
    case LF_DPFP: dpfp_forward(y, x, n, dk); return LA_STATUS_OK;
    }
    return LA_STATUS_INVALID_ARG;
}

// dx (n, dk) from dy (n, F); parameter gradients added. t1, t2 (n, dk) scratch.
static la_status fmap_backward(la_model * m, const la_layer * L, int slot, float * dx,
                               const float * dy, const float * fa, const float * fb,
                               const float * x, int64_t n, float * t1, float * t2) {
    const int kind = mode_of(L).fm;
    const int64_t dk = L->dk;
    switch (kind) {
    case LF_IDENTITY: memcpy(dx, dy, (size_t)(n * dk) * 4); return LA_STATUS_OK;
    case LF_ELU:
        return la_fmap_backward(dx, NULL, NULL, dy, x, NULL, NULL, LA_FMAP_ELU1, n, 1, dk, false);
    case LF_RELU:
        return la_fmap_backward(dx, NULL, NULL, dy, x, NULL, NULL, LA_FMAP_RELU, n, 1, dk, false);
    case LF_HEDGEHOG:
        return la_fmap_backward(dx, la_pg(m, L, slot), la_pg(m, L, slot + 1), dy, x,
                                la_pw(m, L, slot), la_pw(m, L, slot + 1), LA_FMAP_HEDGEHOG, n, 1,
                                dk, true);
    case LF_T2R:  // y = relu(z), z = x W^T
        for (int64_t i = 0; i < n * dk; i++) t1[i] = fa[i] > 0 ? dy[i] : 0.0f;
        la_lin_bwd(dx, 0.0f, la_pg(m, L, slot), NULL, t1, x, la_pw(m, L, slot), n, dk, dk);
        return LA_STATUS_OK;
    case LF_HADAMARD:  // y = a o b:  da = dy o b, db = dy o a
        for (int64_t i = 0; i < n * dk; i++) t1[i] = dy[i] * fb[i], t2[i] = dy[i] * fa[i];
        la_lin_bwd(dx, 0.0f, la_pg(m, L, slot), la_pg(m, L, slot + 1), t1, x, la_pw(m, L, slot),
                   n, dk, dk);
        la_lin_bwd(dx, 1.0f, la_pg(m, L, slot + 2), la_pg(m, L, slot + 3), t2, x,
                   la_pw(m, L, slot + 2), n, dk, dk);
        return LA_STATUS_OK;
    case LF_DPFP: dpfp_backward(dx, dy, x, n, dk); return LA_STATUS_OK;
    }
    return LA_STATUS_INVALID_ARG;
}

// ---------------------------------------------------------------------------------------------
// Activations and scratch

// Saved, in this order (rows = B T):
//   xq (rows, H, dk), xk (rows, HKV, dk), v (rows, HKV, dv)      projections
//   faq, fbq (rows, H, dk), fak, fbk (rows, HKV, dk)             map intermediates (t2r: fa;
//                                                                elementwise_product: fa, fb)
//   qf (rows, H, F), kf (rows, HKV, F)                           mapped (identity: xq, xk)
//   qn (rows, H, F), kn (rows, HKV, F)                           sum-normed (norm_q / norm_k)
//   o, on (rows, H, dv)                                          op output, normed output
typedef struct {
    float *xq, *xk, *v, *faq, *fbq, *fak, *fbk, *qf, *kf, *qn, *kn, *o, *on;
    size_t n;
} ln_act;

static ln_act act_of(const la_layer * L, float * base, int64_t rows) {
    const ln_mode d = mode_of(L);
    const int64_t H = L->H, HK = L->HKV, dk = L->dk, dv = L->dv, F = L->F;
    const bool fa = d.fm == LF_T2R || d.fm == LF_HADAMARD, fb = d.fm == LF_HADAMARD;
    const bool mapped = d.fm != LF_IDENTITY;
    const int64_t n[13] = { rows * H * dk, rows * HK * dk, rows * HK * dv,
                            fa ? rows * H * dk : 0, fb ? rows * H * dk : 0,
                            fa ? rows * HK * dk : 0, fb ? rows * HK * dk : 0,
                            mapped ? rows * H * F : 0, mapped ? rows * HK * F : 0,
                            d.nq ? rows * H * F : 0, d.nk ? rows * HK * F : 0,
                            rows * H * dv, rows * H * dv };
    float * p[13];
    int64_t off = 0;
    for (int i = 0; i < 13; i++) {
        p[i] = base && n[i] ? base + off : NULL;
        off += n[i];
    }
    ln_act a = { p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12],
                 (size_t)off };
    if (!mapped) a.qf = a.xq, a.kf = a.xk;
    return a;
}

static size_t ln_act_floats(const la_layer * L, int64_t B, int64_t T) {
    return act_of(L, NULL, B * T).n;
}

// Scratch: k, v expanded to H heads (when grouped), the final state and key sum of a chunked
// prefill; backward adds don, dO (rows, H, dv), dq, dke (rows, H, F), dve (rows, H, dv),
// dk (rows, HKV, F), dv (rows, HKV, dv), dxq (rows, H, dk), dxk (rows, HKV, dk) and two
// (rows, H, dk) temporaries. Then the op's workspace.
typedef struct {
    float *ke, *ve, *fin, *finz, *don, *dO, *dq, *dke, *dve, *dk, *dv, *dxq, *dxk, *t1, *t2;
    size_t used;
} ln_scratch;

static ln_scratch scratch_of(const la_layer * L, void * base, int64_t B, int64_t T, bool bwd) {
    const int64_t rows = B * T, H = L->H, HK = L->HKV, dk = L->dk, dv = L->dv, F = L->F;
    const int64_t G = H / HK;
    la_carver cv = { base, 0 };
    ln_scratch s = { 0 };
    if (G > 1) {
        s.ke = la_carve(&cv, (size_t)(rows * H * F) * 4);
        s.ve = la_carve(&cv, (size_t)(rows * H * dv) * 4);
    }
    s.fin = la_carve(&cv, (size_t)(B * H * F * dv) * 4);
    s.finz = la_carve(&cv, (size_t)(B * H * F) * 4);
    if (bwd) {
        s.don = la_carve(&cv, (size_t)(rows * H * dv) * 4);
        s.dO = la_carve(&cv, (size_t)(rows * H * dv) * 4);
        s.dq = la_carve(&cv, (size_t)(rows * H * F) * 4);
        s.dke = la_carve(&cv, (size_t)(rows * H * F) * 4);
        s.dve = la_carve(&cv, (size_t)(rows * H * dv) * 4);
        s.dk = G > 1 ? la_carve(&cv, (size_t)(rows * HK * F) * 4) : s.dke;
        s.dv = G > 1 ? la_carve(&cv, (size_t)(rows * HK * dv) * 4) : s.dve;
        s.dxq = la_carve(&cv, (size_t)(rows * H * dk) * 4);
        s.dxk = la_carve(&cv, (size_t)(rows * HK * dk) * 4);
        s.t1 = la_carve(&cv, (size_t)(rows * H * dk) * 4);
        s.t2 = la_carve(&cv, (size_t)(rows * H * dk) * 4);
    }
    s.used = cv.used;
    return s;
}

static size_t ln_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    const bool nz = mode_of(L).normalize;
    la_opts o = la_opts_default();
    const la_shape sh = ln_shape(L, B, T);
    size_t op = la_linear_attn_workspace_size(backward, nz, sh, &o);
    o.form = LA_FORM_RECURRENT;  // the T = 1 decode step
    op = LA_MAX(op, la_linear_attn_workspace_size(backward, nz, sh, &o));
    return scratch_of(L, NULL, B, T, backward).used + LA_ALIGN + op;
}

static size_t ln_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)(L->H * L->F * L->dv + (mode_of(L).normalize ? L->H * L->F : 0));
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

static la_status ln_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                            const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, H = L->H, HK = L->HKV;
    const int64_t dk = L->dk, dv = L->dv, F = L->F, G = H / HK;
    const ln_mode d = mode_of(L);
    const ln_act a = act_of(L, c->act, rows);
    const ln_scratch sc = scratch_of(L, c->work, B, T, false);
    la_status s = la_linear_forward(a.xq, x, la_pw(m, L, d.q), NULL, rows, D, H * dk);
    if (!s) s = la_linear_forward(a.xk, x, la_pw(m, L, d.k), NULL, rows, D, HK * dk);
    if (!s) s = la_linear_forward(a.v, x, la_pw(m, L, d.v), NULL, rows, D, HK * dv);
    if (!s) s = fmap_forward(m, L, d.fq, a.qf, a.faq, a.fbq, a.xq, rows * H);
    if (!s) s = fmap_forward(m, L, d.fk, a.kf, a.fak, a.fbk, a.xk, rows * HK);
    if (s) return s;
    if (d.nq) sum_norm_forward(a.qn, a.qf, rows * H, F);
    if (d.nk) sum_norm_forward(a.kn, a.kf, rows * HK, F);
    const float * q = d.nq ? a.qn : a.qf, *k = d.nk ? a.kn : a.kf, *v = a.v;
    if (G > 1) {
        la_kv_expand(sc.ke, k, rows, H, G, F);
        la_kv_expand(sc.ve, v, rows, H, G, dv);
        k = sc.ke, v = sc.ve;
    }
    const la_lcache * lc = c->cache;
    float * state = lc ? lc->f : NULL;                                      // (N, H, F, dv)
    float * z = lc && d.normalize ? state + B * H * F * dv : NULL;         // (N, H, F)
    la_opts o = la_mixer_opts(c, (char *)c->work + sc.used, c->work_size - sc.used);
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    const bool inplace = o.form == LA_FORM_RECURRENT;
    float * final = state && inplace ? state : state ? sc.fin : NULL;
    float * final_z = z && inplace ? z : z ? sc.finz : NULL;
    s = la_linear_attn_forward(a.o, final, final_z, q, k, v, state, z, d.normalize,
                               ln_shape(L, B, T), &o);
    if (s) return s;
    if (final == sc.fin) memcpy(state, sc.fin, (size_t)(B * H * F * dv) * 4);
    if (final_z == sc.finz) memcpy(z, sc.finz, (size_t)(B * H * F) * 4);
    const float * w = d.affine ? la_pw(m, L, d.norm) : NULL;
    s = la_rmsnorm_forward(a.on, a.o, w, (float)m->cfg.norm_eps, rows * H, dv);
    if (!s) s = la_linear_forward(y, a.on, la_pw(m, L, d.o), NULL, rows, H * dv, D);
    return s;
}

static la_status ln_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                             const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, H = L->H, HK = L->HKV;
    const int64_t dk = L->dk, dv = L->dv, F = L->F, G = H / HK;
    const ln_mode d = mode_of(L);
    const ln_act a = act_of(L, c->act, rows);
    const ln_scratch sc = scratch_of(L, c->work, B, T, true);
    // y = on Wo^T;  on = RMSNorm(o) w
    la_lin_bwd(sc.don, 0.0f, la_pg(m, L, d.o), NULL, dy, a.on, la_pw(m, L, d.o), rows, H * dv, D);
    la_status s = la_rmsnorm_backward(sc.dO, d.affine ? la_pg(m, L, d.norm) : NULL, sc.don, a.o,
                                      d.affine ? la_pw(m, L, d.norm) : NULL,
                                      (float)m->cfg.norm_eps, rows * H, dv, true);
    if (s) return s;
    // o = linear_attn(q, repeat(k), repeat(v))
    const float * q = d.nq ? a.qn : a.qf, *k = d.nk ? a.kn : a.kf, *v = a.v;
    if (G > 1) {
        la_kv_expand(sc.ke, k, rows, H, G, F);
        la_kv_expand(sc.ve, v, rows, H, G, dv);
        k = sc.ke, v = sc.ve;
    }
    la_opts o = la_mixer_opts(c, (char *)c->work + sc.used, c->work_size - sc.used);
    s = la_linear_attn_backward(sc.dq, sc.dke, sc.dve, NULL, NULL, sc.dO, NULL, NULL, q, k, v,
                                NULL, NULL, d.normalize, ln_shape(L, B, T), &o);
    if (s) return s;
    if (G > 1) {
        la_kv_reduce(sc.dk, sc.dke, rows, H, G, F);
        la_kv_reduce(sc.dv, sc.dve, rows, H, G, dv);
    }
    // q = qf / (sum qf + 1e-4), qf = phi_q(xq); likewise k
    if (d.nq) sum_norm_backward(sc.dq, a.qf, a.qn, rows * H, F);
    if (d.nk) sum_norm_backward(sc.dk, a.kf, a.kn, rows * HK, F);
    s = fmap_backward(m, L, d.fq, sc.dxq, sc.dq, a.faq, a.fbq, a.xq, rows * H, sc.t1, sc.t2);
    if (!s)
        s = fmap_backward(m, L, d.fk, sc.dxk, sc.dk, a.fak, a.fbk, a.xk, rows * HK, sc.t1, sc.t2);
    if (s) return s;
    // dx from every projection that read x
    la_lin_bwd(dx, 0.0f, la_pg(m, L, d.q), NULL, sc.dxq, x, la_pw(m, L, d.q), rows, D, H * dk);
    la_lin_bwd(dx, 1.0f, la_pg(m, L, d.k), NULL, sc.dxk, x, la_pw(m, L, d.k), rows, D, HK * dk);
    la_lin_bwd(dx, 1.0f, la_pg(m, L, d.v), NULL, sc.dv, x, la_pw(m, L, d.v), rows, D, HK * dv);
    return LA_STATUS_OK;
}

const la_mixer_vt la_mixer_linattn_vt = {
    .name = "linear_attn",
    .build = ln_build,
    .act_floats = ln_act_floats,
    .work_bytes = ln_work,
    .cache_floats = ln_cache,
    .forward = ln_forward,
    .backward = ln_backward,
    .root_params = ln_root,
};
