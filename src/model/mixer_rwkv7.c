// RWKV-7 ("Goose"): the time mix (fla's RWKV7Attention, fla/layers/rwkv7.py) and the channel
// mix (RWKV7FeedForward, fla/models/rwkv7/modeling_rwkv7.py); OPS.md 2.12, spec section 6.
//
// Time mix, x = attn_norm(h) (rows, D), per token t of a sequence:
//   delta  = x_{t-1} - x_t          x_{-1} = the cached last token, or 0    (token_shift)
//   x_i    = x + delta o mu_i        i in {r, w, k, v, a, g}                 (fused_addcmul)
//   r      = x_r Wr^T                                             (rows, K)    K = D
//   w      = -e^{-1/2} sigma( tanh(x_w Aw^T) Bw^T + bw )         (rows, K)    log decay
//   k0     = x_k Wk^T;   v0 = x_v Wv^T                            (rows, K), (rows, Vd)
//   v      = v0 (layer 0, which also publishes v_first = v0), else
//            v0 + (v_first - v0) o sigma( (x_v Av^T) Bv^T + bv )                   (torch.lerp)
//   a      = sigma( (x_a Aa^T) Ba^T + ba )                        (rows, K)
//   g      = sigma(x_g Ag^T) Bg^T                                 (rows, Vd)   no bias
//   kk     = l2norm_head(k0 o k_k);   k = k0 o (1 + (a - 1) o k_a)           (fused_k_rwkv7)
//   o      = rwkv7(r, w, k, v, a = -kk, b = kk o a), scale 1, state (N, H, dk, dv)
//   og     = (GroupNorm_H(o) + (sum_head r o k o r_k) v) o g          (gate_output_correction)
//   y      = og Wo^T
// Channel mix: y = Wval relu(Wkey (x + delta o x_k))^2, delta as above with its own cache.
//
// Dimensions: B, T, N (sequences of a cache), H heads of dk (head_dim) key and dv value
// channels, K = H dk = D, Vd = H dv (value_dim), Rw/Ra/Rv/Rg the LoRA ranks, I the channel-mix
// width; rows = B T.
//
// Decode caches per sequence: time mix: state (H, dk, dv) then the last token (D); channel mix:
// the last token (D). v_first travels through la_model.shared (rows, Vd): layer 0's forward
// writes it, later layers read it; their backward adds d v_first into la_model.dshared, which
// layer 0's backward (run last) adds to its dv0.
//
// Saved per time-mix layer: r, w, k0, k, kk, a, v, g, o, og and the LoRA hiddens (plus v0 and
// the lerp weight s for layers > 0); the backward recomputes delta and the six mixes x_i, and
// the op recomputes its states. The channel mix saves nothing and recomputes its (rows, I)
// hidden from x.
//
// What linattn rejects, with the reason (see rw_config):
//   attn (hybrid layers): fla's RWKV7Block unpacks four values from Attention.forward, which
//     returns three, so fla cannot run such a model;
//   value_dim != hidden_size: fla's init copies a (D) bias into v_lora's (value_dim) bias, and
//     its fused gate_output_correction kernel indexes v and o with head_dim, not head_v_dim;
//   norm_first / norm_bias false: the framework always builds pre_norm and biased LayerNorms;
// use_l2warp (fla's default for rwkv7, true) is the LM head's business (model.c), not the
// mixer's.
#include "model.h"

#include "nn.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RW_W_SCALE 0.6065306597126334  // e^{-1/2}: w = -e^{-1/2} sigma(.), decay in (0.545, 1)
#define RW_L2_EPS 1e-6                 // fla's l2_norm (fuse_norm); F.normalize clamps at 1e-12

// ---------------------------------------------------------------------------------------------
// Config (fla's RWKV7Config, spec 6.1)

// Every key of RWKV7Config; those the common table does not hold arrive in cfg.extra.
static const char * const rw_keys[] = {
    "attn_mode", "hidden_size", "hidden_ratio", "intermediate_size", "num_hidden_layers",
    "head_dim", "num_heads", "decay_low_rank_dim", "gate_low_rank_dim", "a_low_rank_dim",
    "v_low_rank_dim", "hidden_act", "max_position_embeddings", "norm_first", "norm_bias",
    "norm_eps", "attn", "use_cache", "pad_token_id", "bos_token_id", "eos_token_id",
    "tie_word_embeddings", "initializer_range", "fuse_norm", "fuse_cross_entropy",
    "fuse_linear_cross_entropy", "use_l2warp", "vocab_size", "value_dim", NULL,
};

typedef struct rw_cfg {
    int64_t H, dk, Vd, dv;   // heads, head_dim, value_dim, head_v_dim
    int64_t Rw, Ra, Rv, Rg;  // LoRA ranks (decay, a, v, gate)
    int64_t I;               // channel-mix width
} rw_cfg;

// A LoRA rank: the config's value, or RWKV7Attention's formula when it is null (0):
// max(32, round(c sqrt(D) f / 32) 32), Python's round (half to even: nearbyint).
static int64_t rw_rank(int64_t given, double c, double f, int64_t D) {
    if (given > 0) return given;
    return LA_MAX(32, (int64_t)nearbyint(c * sqrt((double)D) * f / 32.0) * 32);
}

// Reads and checks every RWKV-7 key; both sublayers' builds call it (the channel mix always
// exists, so the checks run even when the config is rejected for its token mixers).
static la_status rw_config(const la_model * m, rw_cfg * o, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    const int64_t D = m->D;
    la_status s = la_extra_check(c, rw_keys, err, errlen);
    if (s) return s;
    if (c->n_attn > 0)
        return la_cfg_fail(err, errlen,
                "config: 'attn' (hybrid layers) is not supported for rwkv7: fla's "
                "RWKV7Block cannot run them (it unpacks four values from "
                "Attention, which returns three)");
    bool norm_first, norm_bias;
    int64_t hd, vdim;
    if ((s = la_extra_bool(c, "norm_first", true, &norm_first, err, errlen)) ||
        (s = la_extra_bool(c, "norm_bias", true, &norm_bias, err, errlen)) ||
        (s = la_extra_int(c, "head_dim", 64, &hd, err, errlen)))
        return s;
    if (!norm_first)
        return la_cfg_fail(err, errlen,
                "config: 'norm_first' false is not supported (rwkv7)");
    if (!norm_bias)
        return la_cfg_fail(err, errlen,
                "config: 'norm_bias' false is not supported (rwkv7)");
    // head_dim wins; null head_dim derives it from num_heads (RWKV7Config)
    if (hd == 0) hd = c->num_heads > 0 ? D / c->num_heads : 0;
    if (hd <= 0 || D % hd)
        return la_cfg_fail(err, errlen,
                "config: 'head_dim' must be > 0 and divide hidden_size (rwkv7)");
    o->dk = hd;
    o->H = D / hd;
    // value_dim: null, an int, or a list with one entry per layer (RWKV7Config)
    const cJSON * vd = c->extra ? cJSON_GetObjectItemCaseSensitive(c->extra, "value_dim") : NULL;
    if (vd && cJSON_IsArray(vd)) {
        if (cJSON_GetArraySize(vd) != c->num_hidden_layers)
            return la_cfg_fail(err, errlen, "config: 'value_dim' must have one entry per layer");
        vdim = -1;
        const cJSON * it;
        cJSON_ArrayForEach(it, vd) {
            if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble))
                return la_cfg_fail(err, errlen, "config: 'value_dim' entries must be integers");
            if (vdim >= 0 && (int64_t)it->valuedouble != vdim)
                return la_cfg_fail(err, errlen,
                        "config: 'value_dim' entries must be equal (v_first is "
                        "lerped across layers)");
            vdim = (int64_t)it->valuedouble;
        }
    } else if ((s = la_extra_int(c, "value_dim", D, &vdim, err, errlen))) {
        return s;
    }
    if (vdim == 0) vdim = D;  // null
    if (vdim != D)
        return la_cfg_fail(err, errlen,
                "config: 'value_dim' must equal hidden_size (rwkv7): fla's init and "
                "its fused gate_output_correction kernel assume it");
    o->Vd = vdim;
    o->dv = vdim / o->H;
    int64_t rw, rg, ra, rv;
    if ((s = la_extra_int(c, "decay_low_rank_dim", 64, &rw, err, errlen)) ||
        (s = la_extra_int(c, "gate_low_rank_dim", 128, &rg, err, errlen)) ||
        (s = la_extra_int(c, "a_low_rank_dim", 64, &ra, err, errlen)) ||
        (s = la_extra_int(c, "v_low_rank_dim", 16, &rv, err, errlen)))
        return s;
    if (rw < 0 || rg < 0 || ra < 0 || rv < 0)
        return la_cfg_fail(err, errlen,
                "config: the LoRA ranks (*_low_rank_dim) must be > 0 or null");
    const double f = (double)hd / 64.0;  // "increase lora dimension for headdim > 64"
    o->Rw = rw_rank(rw, 2.5, f, D);
    o->Ra = rw_rank(ra, 2.5, f, D);
    o->Rv = rw_rank(rv, 1.7, f, D);
    o->Rg = rw_rank(rg, 5.0, 1.0, D);
    // RWKV7FeedForward: I = 32 ceil(int(D hidden_ratio) / 32) unless given (null ratio: 4)
    if (c->intermediate_given) {
        o->I = c->intermediate_size;
    } else {
        const double hr = isnan(c->hidden_ratio) ? 4.0 : c->hidden_ratio;
        const int64_t raw = (int64_t)((double)D * hr);
        o->I = 32 * ((raw + 31) / 32);
    }
    if (o->I <= 0 || o->I > (1 << 20))
        return la_cfg_fail(err, errlen,
                "config: the channel-mix width must be in [1, 2^20] (rwkv7)");
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// Pieces shared by both sublayers

// delta (B, T, D) = x_{t-1} - x_t within each row b; x_{-1} = cache[b] (N = B rows of D), or 0.
static void shift_delta(float * delta, const float * x, const float * cache, int64_t B,
                        int64_t T, int64_t D) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float * xt = x + (b * T + t) * D;
            const float * xp = t > 0 ? xt - D : cache ? cache + b * D : NULL;
            float * d = delta + (b * T + t) * D;
            for (int64_t i = 0; i < D; i++) d[i] = (xp ? xp[i] : 0.0f) - xt[i];
        }
}

// The cache keeps the last token of each row.
static void shift_save(float * cache, const float * x, int64_t B, int64_t T, int64_t D) {
    for (int64_t b = 0; b < B; b++)
        memcpy(cache + b * D, x + (b * T + T - 1) * D, (size_t)D * sizeof(float));
}

// Backward of delta_t = x_{t-1} - x_t (no cache in training): dx_t += ddelta_{t+1} - ddelta_t.
static void shift_backward(float * dx, const float * ddelta, int64_t B, int64_t T, int64_t D) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float * dd = ddelta + (b * T + t) * D;
            float * o = dx + (b * T + t) * D;
            for (int64_t i = 0; i < D; i++) o[i] += (t + 1 < T ? dd[i + D] : 0.0f) - dd[i];
        }
}

// xm (rows, D) = x + delta o mu                              (torch.addcmul(x, delta, mu))
static void mix(float * xm, const float * x, const float * delta, const float * mu, int64_t rows,
                int64_t D) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < D; i++) xm[r * D + i] = x[r * D + i] + delta[r * D + i] * mu[i];
}

// Backward of xm = x + delta o mu for one mix: dx += dxm (overwrite when first), ddelta +=
// dxm o mu (likewise), dmu += sum_rows dxm o delta (in row order).
static void mix_backward(float * dx, float * ddelta, float * dmu, const float * dxm,
                         const float * delta, const float * mu, bool first, int64_t rows,
                         int64_t D) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < D; i++) {
            const float g = dxm[r * D + i];
            dx[r * D + i] = (first ? 0.0f : dx[r * D + i]) + g;
            ddelta[r * D + i] = (first ? 0.0f : ddelta[r * D + i]) + g * mu[i];
            dmu[i] += g * delta[r * D + i];
        }
}

static inline float sigmoidf(float x) {
    float s, sm;
    la_nn_sigmoid2(x, &s, &sm);
    return s;
}

// ---------------------------------------------------------------------------------------------
// LoRA (fla/layers/rwkv6.py): lora.0 Linear(D, R, no bias) -> act -> lora.2 Linear(R, n, bias)

typedef enum { LORA_ID, LORA_TANH, LORA_SIGMOID } lora_act;

// h (rows, R) = act(x A^T);  y (rows, n) = h B^T + b (b may be NULL)
static la_status lora_forward(float * y, float * h, const float * x, const float * A,
                              const float * Bw, const float * b, lora_act act, int64_t rows,
                              int64_t D, int64_t R, int64_t n) {
    la_status s = la_linear_forward(h, x, A, NULL, rows, D, R);
    if (s) return s;
    for (int64_t i = 0; act != LORA_ID && i < rows * R; i++)
        h[i] = act == LORA_TANH ? tanhf(h[i]) : sigmoidf(h[i]);
    return la_linear_forward(y, h, Bw, b, rows, R, n);
}

// From dy (rows, n): dx (rows, D) = beta dx + d(x); dA, dB, db added to; dh: (rows, R) scratch.
static void lora_backward(float * dx, float dx_beta, float * dA, float * dB, float * db,
                          float * dh, const float * dy, const float * x, const float * h,
                          const float * A, const float * Bw, lora_act act, int64_t rows,
                          int64_t D, int64_t R, int64_t n) {
    la_lin_bwd(dh, 0.0f, dB, db, dy, h, Bw, rows, R, n);  // y = h B^T + b
    for (int64_t i = 0; act != LORA_ID && i < rows * R; i++)  // h = act(pre), act' from h
        dh[i] *= act == LORA_TANH ? 1.0f - h[i] * h[i] : h[i] * (1.0f - h[i]);
    la_lin_bwd(dx, dx_beta, dA, NULL, dh, x, A, rows, D, R);  // pre = x A^T
}

// ---------------------------------------------------------------------------------------------
// Orthogonal initialisation (torch.nn.init.orthogonal_)
//
// torch takes the QR of a Gaussian (max, min) matrix with R's diagonal made positive, so the
// min(rows, cols) orthonormal vectors are Haar-distributed; Gram-Schmidt of Gaussian vectors in
// order gives exactly that distribution (not torch's random stream). Blocked classical
// Gram-Schmidt, run twice against the earlier blocks ("CGS2", orthogonal to float rounding),
// keeps the cost in la_sgemm: about 4 max(rows, cols) min(rows, cols)^2 flops.

#define ORTH_BLOCK 64

static void init_orthogonal(float * W, int64_t rows, int64_t cols, double gain, la_xrng * rng) {
    const int64_t n = LA_MAX(rows, cols), k = LA_MIN(rows, cols);
    const bool tr = rows > cols;  // the vectors are W's columns
    float * A = tr ? malloc((size_t)(k * n) * sizeof(float)) : W;  // (k, n): one vector a row
    float * C = malloc((size_t)(ORTH_BLOCK * k) * sizeof(float));
    if (!A || !C) {
        // Out of memory: N(0, gain^2 / n), the entries' variance of an orthogonal matrix.
        const double sd = gain / sqrt((double)n);
        for (int64_t i = 0; i < rows * cols; i++) W[i] = (float)(sd * la_rng_gauss(rng));
        if (tr) free(A);
        free(C);
        return;
    }
    for (int64_t i = 0; i < k * n; i++) A[i] = (float)la_rng_gauss(rng);
    for (int64_t s = 0; s < k; s += ORTH_BLOCK) {
        const int64_t nb = LA_MIN(ORTH_BLOCK, k - s);
        float * X = A + s * n;  // (nb, n)
        for (int pass = 0; pass < 2 && s > 0; pass++) {
            la_sgemm(false, true, nb, s, n, 1.0f, X, n, A, n, 0.0f, C, s);   // C = X Q^T
            la_sgemm(false, false, nb, n, s, -1.0f, C, s, A, n, 1.0f, X, n); // X -= C Q
        }
        for (int64_t i = 0; i < nb; i++) {  // modified Gram-Schmidt inside the block, twice
            float * xi = X + i * n;
            for (int pass = 0; pass < 2; pass++)
                for (int64_t j = 0; j < i; j++) {
                    const float * xj = X + j * n;
                    const float d = (float)la_nn_dot(xi, xj, n);
                    for (int64_t c = 0; c < n; c++) xi[c] -= d * xj[c];
                }
            const double nrm = sqrt(la_nn_sumsq(xi, n));
            for (int64_t c = 0; c < n && nrm > 0; c++) xi[c] = (float)((double)xi[c] / nrm);
        }
    }
    for (int64_t i = 0; i < k; i++)
        for (int64_t c = 0; c < n; c++) {
            const float v = (float)(gain * (double)A[i * n + c]);
            if (tr) W[c * cols + i] = v;  // W[c, i] = q_i[c]
            else A[i * n + c] = v;
        }
    if (tr) free(A);
    free(C);
}

// ---------------------------------------------------------------------------------------------
// Time mix: parameters

// Registration order follows fla's state dict, except v_lora (layers > 0 only), which comes last
// so the other slots are fixed.
enum {
    P_XR, P_XW, P_XK, P_XV, P_XA, P_XG,  // (1, 1, D) token-shift mixes
    P_KK, P_KA,                          // (D)
    P_RK,                                // (H, dk)
    P_WR, P_WK, P_WV, P_WO,              // r/k/v (K|Vd, D), o (D, Vd)
    P_WL0, P_WL2, P_WLB,                 // w_lora: (Rw, D), (K, Rw), (K)
    P_AL0, P_AL2, P_ALB,                 // a_lora: (Ra, D), (K, Ra), (K)
    P_GL0, P_GL2,                        // g_lora: (Rg, D), (Vd, Rg)
    P_GNW, P_GNB,                        // g_norm weight, bias (Vd)
    P_VL0, P_VL2, P_VLB,                 // v_lora (layers > 0): (Rv, D), (Vd, Rv), (Vd)
};

static la_status tm_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    rw_cfg rc;
    la_status s = rw_config(m, &rc, err, errlen);
    if (s) return s;
    const int64_t D = m->D, K = D, Vd = rc.Vd;
    L->H = L->HV = rc.H;
    L->dk = rc.dk;
    L->dv = rc.dv;
    L->key_dim = K;
    L->value_dim = Vd;
    L->R = LA_MAX(LA_MAX(rc.Rw, rc.Ra), LA_MAX(rc.Rv, rc.Rg));  // the largest LoRA rank
    m->cfg.num_heads = rc.H;  // resolved, so config.json states the heads fla derives
    static const char * const mixes[] = { "x_r", "x_w", "x_k", "x_v", "x_a", "x_g" };
    for (int i = 0; i < 6; i++)
        la_layer_param(m, L, mixes[i], 3, (int64_t[]){ 1, 1, D }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "k_k", 1, (int64_t[]){ K }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "k_a", 1, (int64_t[]){ K }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "r_k", 2, (int64_t[]){ rc.H, rc.dk }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "r_proj.weight", 2, (int64_t[]){ K, D }, LA_INIT_CUSTOM, true);
    la_layer_param(m, L, "k_proj.weight", 2, (int64_t[]){ K, D }, LA_INIT_CUSTOM, true);
    la_layer_param(m, L, "v_proj.weight", 2, (int64_t[]){ Vd, D }, LA_INIT_CUSTOM, true);
    la_layer_param(m, L, "o_proj.weight", 2, (int64_t[]){ D, Vd }, LA_INIT_ZERO, true);
    la_layer_param(m, L, "w_lora.lora.0.weight", 2, (int64_t[]){ rc.Rw, D }, LA_INIT_ZERO, true);
    la_layer_param(m, L, "w_lora.lora.2.weight", 2, (int64_t[]){ K, rc.Rw }, LA_INIT_CUSTOM, true);
    la_layer_param(m, L, "w_lora.lora.2.bias", 1, (int64_t[]){ K }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "a_lora.lora.0.weight", 2, (int64_t[]){ rc.Ra, D }, LA_INIT_ZERO, true);
    la_layer_param(m, L, "a_lora.lora.2.weight", 2, (int64_t[]){ K, rc.Ra }, LA_INIT_CUSTOM, true);
    la_layer_param(m, L, "a_lora.lora.2.bias", 1, (int64_t[]){ K }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "g_lora.lora.0.weight", 2, (int64_t[]){ rc.Rg, D }, LA_INIT_ZERO, true);
    la_layer_param(m, L, "g_lora.lora.2.weight", 2, (int64_t[]){ Vd, rc.Rg }, LA_INIT_CUSTOM, true);
    la_layer_param(m, L, "g_norm.weight", 1, (int64_t[]){ Vd }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "g_norm.bias", 1, (int64_t[]){ Vd }, LA_INIT_ZERO, false);
    if (L->idx != 0) {
        const int64_t Rv = rc.Rv;
        la_layer_param(m, L, "v_lora.lora.0.weight", 2, (int64_t[]){ Rv, D }, LA_INIT_ZERO, true);
        la_layer_param(m, L, "v_lora.lora.2.weight", 2, (int64_t[]){ Vd, Rv }, LA_INIT_CUSTOM,
                       true);
        la_layer_param(m, L, "v_lora.lora.2.bias", 1, (int64_t[]){ Vd }, LA_INIT_CUSTOM, false);
    }
    return LA_STATUS_OK;
}

// The LoRA ranks, read back from the registered shapes (lora.0 weights are (R, D)).
typedef struct { int64_t w, a, v, g; } rw_ranks;

static rw_ranks ranks_of(const la_model * m, const la_layer * L) {
    rw_ranks k;
    k.w = m->par[L->p[P_WL0]].shape[0];
    k.a = m->par[L->p[P_AL0]].shape[0];
    k.g = m->par[L->p[P_GL0]].shape[0];
    k.v = L->idx != 0 ? m->par[L->p[P_VL0]].shape[0] : 0;
    return k;
}

// ---------------------------------------------------------------------------------------------
// Time mix: activations and scratch

// Saved activations (rows = B T), in this order:
//   r, w, k0, k, kk, a   (rows, K)      receptance, log decay, k before/after fused_k, kk, a
//   v, g, o, og          (rows, Vd)     value after the lerp, output gate, op output, gated out
//   hw, ha, hg           (rows, Rw|Ra|Rg)  LoRA hiddens (after tanh / identity / sigmoid)
//   v0, s                (rows, Vd)     layers > 0: value before the lerp and its weight
//   hv                   (rows, Rv)     layers > 0: v_lora hidden
typedef struct {
    float *r, *w, *k0, *k, *kk, *a, *v, *g, *o, *og, *hw, *ha, *hg, *v0, *s, *hv;
} tm_act;

static tm_act tm_act_of(const la_model * m, const la_layer * L, float * p, int64_t rows) {
    const int64_t K = L->key_dim, Vd = L->value_dim;
    const rw_ranks rk = ranks_of(m, L);
    tm_act a;
    float ** const kk[] = { &a.r, &a.w, &a.k0, &a.k, &a.kk, &a.a };
    for (int i = 0; i < 6; i++) *kk[i] = p, p += rows * K;
    float ** const vv[] = { &a.v, &a.g, &a.o, &a.og };
    for (int i = 0; i < 4; i++) *vv[i] = p, p += rows * Vd;
    a.hw = p, p += rows * rk.w;
    a.ha = p, p += rows * rk.a;
    a.hg = p, p += rows * rk.g;
    a.v0 = a.s = a.hv = NULL;
    if (L->idx != 0) {
        a.v0 = p, p += rows * Vd;
        a.s = p, p += rows * Vd;
        a.hv = p;
    }
    return a;
}

// act_floats has no model at hand: the ranks are bounded by L->R (the largest), which sizes
// every LoRA hidden generously.
static size_t tm_act_floats(const la_layer * L, int64_t B, int64_t T) {
    const int64_t rows = B * T, K = L->key_dim, Vd = L->value_dim;
    const int64_t n = 6 * K + 4 * Vd + 3 * L->R + (L->idx != 0 ? 2 * Vd + L->R : 0);
    return (size_t)(rows * n);
}

static la_shape tm_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->dk, .V = L->dv };
}

// Scratch, forward: delta, xm (rows, D); pre (rows, max(K, Vd)); na, bb (rows, K); xhat
// (rows, Vd); the final state of a chunked prefill (B, H, dk, dv).
// Backward: delta, xm, dxm, ddelta (rows, D); dog, dO, dg, dv, dv2, xhat (rows, Vd); dr, dw,
// dk, dA, dB, dr2, dk2, da, dk0, na, bb (rows, K); dh (rows, R).
// Then the op's workspace.
enum { TM_NF = 7, TM_NB = 22 };

static int tm_counts(const la_layer * L, int64_t B, int64_t T, bool backward, int64_t * n) {
    const int64_t rows = B * T, D = L->key_dim, K = L->key_dim, Vd = L->value_dim;
    if (!backward) {
        const int64_t c[TM_NF] = { rows * D, rows * D, rows * LA_MAX(K, Vd), rows * K,
                                   rows * K, rows * Vd, B * L->H * L->dk * L->dv };
        memcpy(n, c, sizeof c);
        return TM_NF;
    }
    int i = 0;
    for (int j = 0; j < 4; j++) n[i++] = rows * D;
    for (int j = 0; j < 6; j++) n[i++] = rows * Vd;
    for (int j = 0; j < 11; j++) n[i++] = rows * K;
    n[i++] = rows * L->R;
    return i;
}

static size_t tm_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    int64_t n[TM_NB];
    size_t b = 0;
    for (int bw = 0; bw <= (int)backward; bw++) {
        const int cnt = tm_counts(L, B, T, bw, n);
        la_opts o = la_opts_default();
        size_t op = la_rwkv7_workspace_size(bw, tm_shape(L, B, T), &o);
        o.form = LA_FORM_RECURRENT;
        op = LA_MAX(op, la_rwkv7_workspace_size(bw, tm_shape(L, B, T), &o));
        b = LA_MAX(b, la_floats_bytes(cnt, n) + op + LA_ALIGN);
    }
    return b;
}

static size_t tm_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)(L->H * L->dk * L->dv + L->key_dim);  // state, then the last token (D)
}

static size_t tm_shared(const la_layer * L) { return (size_t)L->value_dim; }

// kk = x / ||x|| per head of dk: fla's l2_norm (x / sqrt(sum x^2 + 1e-6)) under fuse_norm, else
// F.normalize (x / max(||x||, 1e-12)).
static void kk_forward(float * y, const float * x, bool fused, int64_t n_heads, int64_t dk) {
    for (int64_t h = 0; h < n_heads; h++) {
        const float * xh = x + h * dk;
        const double ss = la_nn_sumsq(xh, dk);
        const double nrm = fused ? sqrt(ss + RW_L2_EPS) : fmax(sqrt(ss), 1e-12);
        for (int64_t j = 0; j < dk; j++) y[h * dk + j] = (float)((double)xh[j] / nrm);
    }
}

// dx = dy / n - x (x . dy) / n^3 (n = sqrt(ss + eps), or the unclamped norm), dy / 1e-12 when
// F.normalize clamps.
static void kk_backward(float * dx, const float * dy, const float * x, bool fused,
                        int64_t n_heads, int64_t dk) {
    for (int64_t h = 0; h < n_heads; h++) {
        const float * xh = x + h * dk, *gh = dy + h * dk;
        const double ss = la_nn_sumsq(xh, dk);
        const double nrm = fused ? sqrt(ss + RW_L2_EPS) : sqrt(ss);
        if (!fused && nrm < 1e-12) {
            for (int64_t j = 0; j < dk; j++) dx[h * dk + j] = (float)((double)gh[j] / 1e-12);
            continue;
        }
        const double xg = la_nn_dot(xh, gh, dk);
        for (int64_t j = 0; j < dk; j++)
            dx[h * dk + j] = (float)((double)gh[j] / nrm - (double)xh[j] * xg / (nrm * nrm * nrm));
    }
}

// ---------------------------------------------------------------------------------------------
// Time mix: forward

static la_status tm_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                            const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, K = L->key_dim, Vd = L->value_dim;
    const int64_t H = L->H, dk = L->dk, dv = L->dv;
    const rw_ranks rk = ranks_of(m, L);
    const tm_act a = tm_act_of(m, L, c->act, rows);
    int64_t n[TM_NB];
    const int cnt = tm_counts(L, B, T, false, n);
    la_carver cv = { (char *)c->work, 0 };
    float * delta = la_carve(&cv, (size_t)n[0] * 4), *xm = la_carve(&cv, (size_t)n[1] * 4);
    float * pre = la_carve(&cv, (size_t)n[2] * 4);   // LoRA outputs before their sigmoid
    float * na = la_carve(&cv, (size_t)n[3] * 4), *bb = la_carve(&cv, (size_t)n[4] * 4);
    float * xhat = la_carve(&cv, (size_t)n[5] * 4);  // GroupNorm without its affine
    float * fin = la_carve(&cv, (size_t)n[6] * 4);
    cv.used = la_floats_bytes(cnt, n);
    const la_lcache * lc = c->cache;
    float * state = lc ? lc->f : NULL;                       // (N, H, dk, dv)
    float * last = lc ? state + B * H * dk * dv : NULL;      // (N, D)
    const bool fused = m->cfg.fuse_norm;
#define PW(i) la_pw(m, L, (i))
    // token shift, then the cache keeps this call's last token
    shift_delta(delta, x, last, B, T, D);
    if (last) shift_save(last, x, B, T, D);
    // r = x_r Wr^T
    mix(xm, x, delta, PW(P_XR), rows, D);
    la_status s = la_linear_forward(a.r, xm, PW(P_WR), NULL, rows, D, K);
    // w = -e^{-1/2} sigma(w_lora(x_w))
    if (!s) mix(xm, x, delta, PW(P_XW), rows, D);
    if (!s) s = lora_forward(pre, a.hw, xm, PW(P_WL0), PW(P_WL2), PW(P_WLB), LORA_TANH, rows, D,
                             rk.w, K);
    for (int64_t i = 0; !s && i < rows * K; i++) a.w[i] = (float)(-RW_W_SCALE) * sigmoidf(pre[i]);
    // k0 = x_k Wk^T
    if (!s) mix(xm, x, delta, PW(P_XK), rows, D);
    if (!s) s = la_linear_forward(a.k0, xm, PW(P_WK), NULL, rows, D, K);
    // v: layer 0 publishes v_first; later layers lerp toward it
    if (!s) mix(xm, x, delta, PW(P_XV), rows, D);
    if (L->idx == 0) {
        if (!s) s = la_linear_forward(a.v, xm, PW(P_WV), NULL, rows, D, Vd);
        if (!s) memcpy(m->shared, a.v, (size_t)(rows * Vd) * sizeof(float));
    } else {
        if (!s) s = la_linear_forward(a.v0, xm, PW(P_WV), NULL, rows, D, Vd);
        if (!s) s = lora_forward(pre, a.hv, xm, PW(P_VL0), PW(P_VL2), PW(P_VLB), LORA_ID, rows,
                                 D, rk.v, Vd);
        const float * vf = m->shared;  // (rows, Vd)
        for (int64_t i = 0; !s && i < rows * Vd; i++) {
            a.s[i] = sigmoidf(pre[i]);
            a.v[i] = a.v0[i] + (vf[i] - a.v0[i]) * a.s[i];  // torch.lerp(v, v_first, s)
        }
    }
    // a = sigma(a_lora(x_a))
    if (!s) mix(xm, x, delta, PW(P_XA), rows, D);
    if (!s) s = lora_forward(pre, a.ha, xm, PW(P_AL0), PW(P_AL2), PW(P_ALB), LORA_ID, rows, D,
                             rk.a, K);
    for (int64_t i = 0; !s && i < rows * K; i++) a.a[i] = sigmoidf(pre[i]);
    // g = g_lora(x_g) (sigmoid inside, no bias)
    if (!s) mix(xm, x, delta, PW(P_XG), rows, D);
    if (!s) s = lora_forward(a.g, a.hg, xm, PW(P_GL0), PW(P_GL2), NULL, LORA_SIGMOID, rows, D,
                             rk.g, Vd);
    if (s) return s;
    // kk = l2norm(k0 o k_k) per head; k = k0 o (1 + (a - 1) o k_a); op inputs a = -kk, b = kk o a
    const float * k_k = PW(P_KK), *k_a = PW(P_KA);
    for (int64_t r = 0; r < rows; r++) {
        float * t = pre + r * K;  // k0 o k_k (pre is free again)
        for (int64_t j = 0; j < K; j++) t[j] = a.k0[r * K + j] * k_k[j];
        kk_forward(a.kk + r * K, t, fused, H, dk);
        for (int64_t j = 0; j < K; j++) {
            const int64_t i = r * K + j;
            a.k[i] = a.k0[i] * (1.0f + (a.a[i] - 1.0f) * k_a[j]);
            na[i] = -a.kk[i];
            bb[i] = a.kk[i] * a.a[i];
        }
    }
    la_opts o = la_mixer_opts(c, (char *)c->work + cv.used, c->work_size - cv.used);
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    float * final = state && o.form == LA_FORM_RECURRENT ? state : state ? fin : NULL;
    s = la_rwkv7_forward(a.o, final, a.r, a.w, a.k, a.v, na, bb, state, tm_shape(L, B, T), &o);
    if (s) return s;
    if (final == fin) memcpy(state, fin, (size_t)n[6] * sizeof(float));
    // og = (GroupNorm(o) + (sum_head r o k o r_k) v) o g   (gate_output_correction_ref)
    const float eps = (float)((double)dk * m->cfg.norm_eps);  // fla: head_dim * norm_eps
    s = la_layernorm_forward(xhat, a.o, NULL, NULL, eps, rows * H, dv);
    if (s) return s;
    const float * gw = PW(P_GNW), *gb = PW(P_GNB), *r_k = PW(P_RK);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t ik = r * K + h * dk, iv = r * Vd + h * dv;
            double corr = 0;
            for (int64_t j = 0; j < dk; j++)
                corr += (double)a.r[ik + j] * (double)a.k[ik + j] * (double)r_k[h * dk + j];
            for (int64_t j = 0; j < dv; j++) {
                const int64_t ch = h * dv + j;
                const float on = xhat[iv + j] * gw[ch] + gb[ch];
                a.og[iv + j] = (on + (float)corr * a.v[iv + j]) * a.g[iv + j];
            }
        }
#undef PW
    return la_linear_forward(y, a.og, la_pw(m, L, P_WO), NULL, rows, Vd, D);
}

// ---------------------------------------------------------------------------------------------
// Time mix: backward

static la_status tm_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                             const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, K = L->key_dim, Vd = L->value_dim;
    const int64_t H = L->H, dk = L->dk, dv = L->dv;
    const rw_ranks rk = ranks_of(m, L);
    const tm_act a = tm_act_of(m, L, c->act, rows);
    int64_t n[TM_NB];
    const int cnt = tm_counts(L, B, T, true, n);
    la_carver cv = { (char *)c->work, 0 };
    float * bufs[TM_NB];
    for (int i = 0; i < cnt; i++) bufs[i] = la_carve(&cv, (size_t)n[i] * sizeof(float));
    cv.used = la_floats_bytes(cnt, n);
    float *delta = bufs[0], *xm = bufs[1], *dxm = bufs[2], *ddelta = bufs[3];      // (rows, D)
    float *dog = bufs[4], *dO = bufs[5], *dg = bufs[6], *dv_ = bufs[7], *dv2 = bufs[8];
    float *xhat = bufs[9];                                                          // (rows, Vd)
    float *dr = bufs[10], *dw = bufs[11], *dk_ = bufs[12], *dA = bufs[13], *dB = bufs[14];
    float *dr2 = bufs[15], *dk2 = bufs[16], *da = bufs[17], *dk0 = bufs[18];
    float *na = bufs[19], *bb = bufs[20];                                           // (rows, K)
    float *dh = bufs[21];                                                           // (rows, R)
    const bool fused = m->cfg.fuse_norm;
#define PW(i) la_pw(m, L, (i))
#define PG(i) la_pg(m, L, (i))
    // y = og Wo^T
    la_lin_bwd(dog, 0.0f, PG(P_WO), NULL, dy, a.og, PW(P_WO), rows, Vd, D);
    // og = (on + corr v) o g, on = xhat o gw + gb, corr = sum_head r o k o r_k
    const float eps = (float)((double)dk * m->cfg.norm_eps);
    la_status s = la_layernorm_forward(xhat, a.o, NULL, NULL, eps, rows * H, dv);
    if (s) return s;
    const float * gw = PW(P_GNW), *gb = PW(P_GNB), *r_k = PW(P_RK);
    float * dgw = PG(P_GNW), *dgb = PG(P_GNB), *drk = PG(P_RK);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t ik = r * K + h * dk, iv = r * Vd + h * dv;
            double corr = 0, dcorr = 0;
            for (int64_t j = 0; j < dk; j++)
                corr += (double)a.r[ik + j] * (double)a.k[ik + j] * (double)r_k[h * dk + j];
            for (int64_t j = 0; j < dv; j++) {
                const int64_t ch = h * dv + j, i = iv + j;
                const float on = xhat[i] * gw[ch] + gb[ch];
                const float dgo = dog[i] * a.g[i];  // d(on + corr v)
                dg[i] = dog[i] * (on + (float)corr * a.v[i]);
                dv2[i] = dgo * (float)corr;
                dcorr += (double)dgo * (double)a.v[i];
                dgw[ch] += dgo * xhat[i];
                dgb[ch] += dgo;
                xhat[i] = dgo * gw[ch];  // now d xhat
            }
            for (int64_t j = 0; j < dk; j++) {
                dr2[ik + j] = (float)dcorr * a.k[ik + j] * r_k[h * dk + j];
                dk2[ik + j] = (float)dcorr * a.r[ik + j] * r_k[h * dk + j];
                drk[h * dk + j] += (float)dcorr * a.r[ik + j] * a.k[ik + j];
            }
        }
    // xhat = GroupNorm without affine (o)
    s = la_layernorm_backward(dO, NULL, NULL, xhat, a.o, NULL, eps, rows * H, dv, false);
    if (s) return s;
    // o = rwkv7(r, w, k, v, -kk, kk o a)
    for (int64_t i = 0; i < rows * K; i++) na[i] = -a.kk[i], bb[i] = a.kk[i] * a.a[i];
    la_opts o = la_mixer_opts(c, (char *)c->work + cv.used, c->work_size - cv.used);
    s = la_rwkv7_backward(dr, dw, dk_, dv_, dA, dB, NULL, dO, NULL, a.r, a.w, a.k, a.v, na, bb,
                          NULL, tm_shape(L, B, T), &o);
    if (s) return s;
    // the correction term's share of dr, dk, dv
    for (int64_t i = 0; i < rows * K; i++) dr[i] += dr2[i], dk_[i] += dk2[i];
    for (int64_t i = 0; i < rows * Vd; i++) dv_[i] += dv2[i];
    // op a = -kk, b = kk o a;  k = k0 o (1 + (a - 1) o k_a);  kk = l2norm(k0 o k_k)
    const float * k_k = PW(P_KK), *k_a = PW(P_KA);
    float * dkk_ = PG(P_KK), *dka = PG(P_KA);
    for (int64_t r = 0; r < rows; r++) {
        float * dkkr = dr2 + r * K;  // d kk (dr2 is free again)
        float * t = dk2 + r * K;     // k0 o k_k (dk2 is free again)
        float * dt = dxm + r * D;    // d (k0 o k_k) (dxm is free until the mixes; K = D)
        for (int64_t j = 0; j < K; j++) {
            const int64_t i = r * K + j;
            dkkr[j] = -dA[i] + dB[i] * a.a[i];
            da[i] = dB[i] * a.kk[i] + dk_[i] * a.k0[i] * k_a[j];
            dk0[i] = dk_[i] * (1.0f + (a.a[i] - 1.0f) * k_a[j]);
            dka[j] += dk_[i] * a.k0[i] * (a.a[i] - 1.0f);
            t[j] = a.k0[i] * k_k[j];
        }
        kk_backward(dt, dkkr, t, fused, H, dk);
        for (int64_t j = 0; j < K; j++) {
            const int64_t i = r * K + j;
            dk0[i] += dt[j] * k_k[j];
            dkk_[j] += dt[j] * a.k0[i];
        }
    }
    // a = sigma(al): d al = da a (1 - a)  (into da);  w = -c sigma(wl): d wl = dw w (1 - sigma)
    for (int64_t i = 0; i < rows * K; i++) {
        da[i] *= a.a[i] * (1.0f - a.a[i]);
        const float sg = a.w[i] / (float)(-RW_W_SCALE);
        dw[i] *= a.w[i] * (1.0f - sg);
    }
    // v: layer 0 adds d v_first from every later layer; later layers split dv across the lerp
    float * dv0 = dv_;
    if (L->idx == 0) {
        for (int64_t i = 0; i < rows * Vd; i++) dv0[i] += m->dshared[i];
    } else {
        const float * vf = m->shared;
        for (int64_t i = 0; i < rows * Vd; i++) {
            const float g = dv_[i], sv = a.s[i];
            m->dshared[i] += g * sv;                                       // d v_first
            dv2[i] = g * (vf[i] - a.v0[i]) * sv * (1.0f - sv);             // d (v_lora output)
            dv0[i] = g * (1.0f - sv);
        }
    }
    // Each mix x_i = x + delta o mu_i: its input gradient dxm, then dx, ddelta, dmu_i.
    shift_delta(delta, x, NULL, B, T, D);
    // x_r -> r
    mix(xm, x, delta, PW(P_XR), rows, D);
    la_lin_bwd(dxm, 0.0f, PG(P_WR), NULL, dr, xm, PW(P_WR), rows, D, K);
    mix_backward(dx, ddelta, PG(P_XR), dxm, delta, PW(P_XR), true, rows, D);
    // x_w -> w_lora
    mix(xm, x, delta, PW(P_XW), rows, D);
    lora_backward(dxm, 0.0f, PG(P_WL0), PG(P_WL2), PG(P_WLB), dh, dw, xm, a.hw, PW(P_WL0),
                  PW(P_WL2), LORA_TANH, rows, D, rk.w, K);
    mix_backward(dx, ddelta, PG(P_XW), dxm, delta, PW(P_XW), false, rows, D);
    // x_k -> k0
    mix(xm, x, delta, PW(P_XK), rows, D);
    la_lin_bwd(dxm, 0.0f, PG(P_WK), NULL, dk0, xm, PW(P_WK), rows, D, K);
    mix_backward(dx, ddelta, PG(P_XK), dxm, delta, PW(P_XK), false, rows, D);
    // x_v -> v0 (and v_lora)
    mix(xm, x, delta, PW(P_XV), rows, D);
    la_lin_bwd(dxm, 0.0f, PG(P_WV), NULL, dv0, xm, PW(P_WV), rows, D, Vd);
    if (L->idx != 0)
        lora_backward(dxm, 1.0f, PG(P_VL0), PG(P_VL2), PG(P_VLB), dh, dv2, xm, a.hv, PW(P_VL0),
                      PW(P_VL2), LORA_ID, rows, D, rk.v, Vd);
    mix_backward(dx, ddelta, PG(P_XV), dxm, delta, PW(P_XV), false, rows, D);
    // x_a -> a_lora
    mix(xm, x, delta, PW(P_XA), rows, D);
    lora_backward(dxm, 0.0f, PG(P_AL0), PG(P_AL2), PG(P_ALB), dh, da, xm, a.ha, PW(P_AL0),
                  PW(P_AL2), LORA_ID, rows, D, rk.a, K);
    mix_backward(dx, ddelta, PG(P_XA), dxm, delta, PW(P_XA), false, rows, D);
    // x_g -> g_lora
    mix(xm, x, delta, PW(P_XG), rows, D);
    lora_backward(dxm, 0.0f, PG(P_GL0), PG(P_GL2), NULL, dh, dg, xm, a.hg, PW(P_GL0), PW(P_GL2),
                  LORA_SIGMOID, rows, D, rk.g, Vd);
    mix_backward(dx, ddelta, PG(P_XG), dxm, delta, PW(P_XG), false, rows, D);
#undef PW
#undef PG
    shift_backward(dx, ddelta, B, T, D);
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// Initialisation (RWKV7Attention._initialize_weights and RWKV7PreTrainedModel._init_weights;
// spec 6.6). l = layer, L layers; r01 = l / (L - 1) (0 for L = 1, where fla divides by zero),
// r10 = 1 - l / L.

static void tm_init(la_model * m, const la_layer * L, uint64_t seed) {
    const int64_t D = m->D, dk = L->dk, Vd = L->value_dim, nl = m->L, l = L->idx;
    const double r01 = nl > 1 ? (double)l / (double)(nl - 1) : 0.0;
    const double r10 = 1.0 - (double)l / (double)nl;
    static const double pw[6] = { 0.2, 0.9, 0.7, 0.7, 0.9, 0.2 };  // x_r, x_w, x_k, x_v, x_a, x_g
    float * wb = la_pw(m, L, P_WLB), *ab = la_pw(m, L, P_ALB);
    for (int64_t i = 0; i < D; i++) {
        const double ddd = (double)i / (double)D;
        const double lin = D > 1 ? (double)i / (double)(D - 1) - 0.5 : -0.5;
        double z = dk > 1 ? ((double)(i % dk) - (double)(dk - 1) / 2) / ((double)(dk - 1) / 2) : 0;
        z *= fabs(z);
        const double www = -6.0 + 6.0 * pow(D > 1 ? (double)i / (double)(D - 1) : 0.0,
                                            1.0 + pow(r01, 0.3));
        for (int j = 0; j < 6; j++) la_pw(m, L, P_XR + j)[i] = (float)(1.0 - pow(ddd, pw[j] * r10));
        la_pw(m, L, P_KK)[i] = (float)(0.71 - 0.1 * lin);
        la_pw(m, L, P_KA)[i] = 1.02f;
        wb[i] = (float)(www + 0.5 + 2.5 * z);
        ab[i] = (float)(-0.19 + 0.3 * z + 0.4 * lin);
        if (l != 0) la_pw(m, L, P_VLB)[i] = (float)(0.73 - 0.4 * lin);  // Vd == D (rw_config)
    }
    for (int64_t i = 0; i < L->H * dk; i++) la_pw(m, L, P_RK)[i] = -0.04f;
    const float gn = (float)pow((double)(l + 1) / (double)nl, 0.7);
    for (int64_t i = 0; i < Vd; i++) la_pw(m, L, P_GNW)[i] = gn;
    // orthogonal: r_proj (gain 1), k_proj (0.1), v_proj (1); LoRA lora.2 weights (out, R) with
    // gain 0.1 sqrt(R / out) when R > out, else 0.1 (LoRA._initialize_weights)
    static const struct { int slot; double gain; } orth[] = {
        { P_WR, 1.0 }, { P_WK, 0.1 }, { P_WV, 1.0 },
        { P_WL2, 0.1 }, { P_AL2, 0.1 }, { P_GL2, 0.1 }, { P_VL2, 0.1 },
    };
    for (size_t i = 0; i < sizeof orth / sizeof orth[0]; i++) {
        if (orth[i].slot == P_VL2 && l == 0) continue;
        const la_param * p = &m->par[L->p[orth[i].slot]];
        const int64_t out = p->shape[0], in = p->shape[1];
        const bool lora = orth[i].slot != P_WR && orth[i].slot != P_WK && orth[i].slot != P_WV;
        const double f = lora && in > out ? sqrt((double)in / (double)out) : 1.0;
        const double gain = orth[i].gain * f;
        la_xrng r = la_rng_at(seed, (uint64_t)L->p[orth[i].slot]);
        init_orthogonal(m->w + p->off, out, in, gain, &r);
    }
    // Model level, once: embeddings ~ U(-1e-4, 1e-4); lm_head orthogonal with gain
    // 0.5 sqrt(V / D) when V > D, else 0.5. Tied: the embedding's init (HF ties after init).
    // A real-valued model (input_dim) has neither: its read-in and read-out keep the generic
    // initialisation.
    if (l != 0 || m->p_emb < 0) return;
    const la_param * e = &m->par[m->p_emb];
    la_xrng r = la_rng_at(seed, (uint64_t)m->p_emb);
    for (int64_t i = 0; i < e->numel; i++)
        m->w[e->off + i] = (float)(2e-4 * la_rng_unif(&r) - 1e-4);
    if (m->p_head != m->p_emb) {
        const la_param * h = &m->par[m->p_head];
        const double g = m->vocab > D ? 0.5 * sqrt((double)m->vocab / (double)D) : 0.5;
        la_xrng rh = la_rng_at(seed, (uint64_t)m->p_head);
        init_orthogonal(m->w + h->off, m->vocab, D, g, &rh);
    }
}

const la_mixer_vt la_mixer_rwkv7_vt = {
    .name = "rwkv7",
    .build = tm_build,
    .act_floats = tm_act_floats,
    .work_bytes = tm_work,
    .cache_floats = tm_cache,
    .forward = tm_forward,
    .backward = tm_backward,
    .shared_floats = tm_shared,
    .init = tm_init,
};

// ---------------------------------------------------------------------------------------------
// Channel mix (RWKV7FeedForward): y = Wval sqrelu(Wkey (x + delta o x_k))
//
// Parameters: 0 x_k (D), 1 key.weight (I, D), 2 value.weight (D, I). Saves nothing.

enum { F_XK, F_KEY, F_VAL };

static la_status ffn_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    rw_cfg rc;
    la_status s = rw_config(m, &rc, err, errlen);
    if (s) return s;
    const int64_t D = m->D, I = rc.I;
    L->F = I;
    L->key_dim = D;  // the width the scratch sizes read
    // Resolved here (config.c resolved it with the SwiGLU rule), so config.json states fla's I.
    m->I = m->cfg.intermediate_size = I;
    la_layer_param(m, L, "x_k", 1, (int64_t[]){ D }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "key.weight", 2, (int64_t[]){ I, D }, LA_INIT_CUSTOM, true);
    la_layer_param(m, L, "value.weight", 2, (int64_t[]){ D, I }, LA_INIT_ZERO, true);
    return LA_STATUS_OK;
}

static size_t ffn_act(const la_layer * L, int64_t B, int64_t T) {
    (void)L, (void)B, (void)T;
    return 0;
}

// Scratch: delta, xk (rows, D); hpre, h (rows, I); dxk (rows, D) (backward only, carved always).
static size_t ffn_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    (void)backward;
    const int64_t rows = B * T, D = L->key_dim, I = L->F;
    const int64_t n[5] = { rows * D, rows * D, rows * I, rows * I, rows * D };
    return la_floats_bytes(5, n);
}

static size_t ffn_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)L->key_dim;  // the last token
}

typedef struct {
    float *delta, *xk, *hpre, *h, *dxk;
} ffn_bufs;

static ffn_bufs ffn_carve(const la_layer * L, const la_call * c) {
    const int64_t rows = c->B * c->T, D = L->key_dim, I = L->F;
    la_carver cv = { (char *)c->work, 0 };
    ffn_bufs b;
    b.delta = la_carve(&cv, (size_t)(rows * D) * 4);
    b.xk = la_carve(&cv, (size_t)(rows * D) * 4);
    b.hpre = la_carve(&cv, (size_t)(rows * I) * 4);
    b.h = la_carve(&cv, (size_t)(rows * I) * 4);
    b.dxk = la_carve(&cv, (size_t)(rows * D) * 4);
    return b;
}

// h = relu(xk Wkey^T)^2 (fla's ACT2FN['sqrelu'])
static la_status ffn_hidden(const la_model * m, const la_layer * L, const la_call * c,
                            const ffn_bufs * b, const float * x, float * last) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, I = L->F;
    shift_delta(b->delta, x, last, B, T, D);
    if (last) shift_save(last, x, B, T, D);
    mix(b->xk, x, b->delta, la_pw(m, L, F_XK), rows, D);
    la_status s = la_linear_forward(b->hpre, b->xk, la_pw(m, L, F_KEY), NULL, rows, D, I);
    for (int64_t i = 0; !s && i < rows * I; i++) {
        const float v = b->hpre[i] > 0.0f ? b->hpre[i] : 0.0f;
        b->h[i] = v * v;
    }
    return s;
}

static la_status ffn_forward(const la_model * m, const la_layer * L, const la_call * c,
                             float * y, const float * x) {
    const ffn_bufs b = ffn_carve(L, c);
    la_status s = ffn_hidden(m, L, c, &b, x, c->cache ? c->cache->f : NULL);
    if (!s) s = la_linear_forward(y, b.h, la_pw(m, L, F_VAL), NULL, c->B * c->T, L->F, m->D);
    return s;
}

static la_status ffn_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                              const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, I = L->F;
    const ffn_bufs b = ffn_carve(L, c);
    la_status s = ffn_hidden(m, L, c, &b, x, NULL);
    if (s) return s;
    // y = h Wval^T: dh into h's slot after dWval has used h
    la_lin_bwd(NULL, 0.0f, la_pg(m, L, F_VAL), NULL, dy, b.h, la_pw(m, L, F_VAL), rows, I, D);
    la_lin_bwd(b.h, 0.0f, NULL, NULL, dy, NULL, la_pw(m, L, F_VAL), rows, I, D);
    // h = relu(hpre)^2: dhpre = dh 2 relu(hpre)
    for (int64_t i = 0; i < rows * I; i++) b.h[i] *= b.hpre[i] > 0.0f ? 2.0f * b.hpre[i] : 0.0f;
    la_lin_bwd(b.dxk, 0.0f, la_pg(m, L, F_KEY), NULL, b.h, b.xk, la_pw(m, L, F_KEY), rows, D, I);
    // xk = x + delta o x_k
    float * ddelta = b.xk;  // xk is no longer needed
    mix_backward(dx, ddelta, la_pg(m, L, F_XK), b.dxk, b.delta, la_pw(m, L, F_XK), true, rows, D);
    shift_backward(dx, ddelta, B, T, D);
    return LA_STATUS_OK;
}

// x_k = 1 - ddd^(r10^4), key orthogonal (gain 1), value 0 (RWKV7FeedForward._initialize_weights)
static void ffn_init(la_model * m, const la_layer * L, uint64_t seed) {
    const int64_t D = m->D;
    const double r10 = 1.0 - (double)L->idx / (double)m->L;
    for (int64_t i = 0; i < D; i++)
        la_pw(m, L, F_XK)[i] = (float)(1.0 - pow((double)i / (double)D, pow(r10, 4.0)));
    la_xrng r = la_rng_at(seed, (uint64_t)L->p[F_KEY]);
    init_orthogonal(la_pw(m, L, F_KEY), L->F, D, 1.0, &r);
}

const la_mixer_vt la_mixer_rwkv7_ffn_vt = {
    .name = "rwkv7_ffn",
    .build = ffn_build,
    .act_floats = ffn_act,
    .work_bytes = ffn_work,
    .cache_floats = ffn_cache,
    .forward = ffn_forward,
    .backward = ffn_backward,
    .init = ffn_init,
};
