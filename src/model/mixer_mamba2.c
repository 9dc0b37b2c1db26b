// Mamba2 mixer (fla/layers/mamba2.py, fla/models/mamba2/*; HF transformers' Mamba2 names;
// OPS.md 2.16, ALGORITHMS.md 6):
//   [z | xBC | dt] = x W_in^T (+ b_in)          (rows, E) (rows, Cd) (rows, H), in_proj's row order
//   xBC = SiLU(conv1d(xBC) + conv_bias)          depthwise causal conv over all Cd channels
//   [xs | Bm | Cm] = xBC                         (rows, E) (rows, G Nst) (rows, G Nst)
//   y   = SSD(xs, dt, A_log, Bm, Cm, D, dt_bias) per head h:
//           dt_t = softplus(dt_t + dt_bias_h), A_h = -exp(A_log_h)
//           h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T,  y_t = h_t C_t + D_h x_t
//         through la_mamba2 (simple_gla with q = C, k = B, v = dt x, g = dt A, scale 1);
//         head h reads group h / (H / G) (mamba_ssm's kernels and fla's decode path)
//   u   = y o SiLU(z);  on = RMSNorm_E(u) o w    gate first, then norm (RMSNormGated with
//                                                norm_before_gate=False), over the whole E
//   out = on W_out^T (+ b_out)
//
// Where fla disagrees with itself or with OPS.md, this follows fla's module code:
// * The gated norm spans the whole d_inner E (fla's RMSNormGated(E) has group_size None, as HF's
//   MambaRMSNormGated). mamba_ssm's fused training kernel, which fla calls in CUDA training,
//   and OPS.md 2.16 normalise per group of E / G; the two agree only for n_groups = 1.
// * Heads map to groups as h / (H / G); fla's pure-torch prefill repeats B and C (h % G). Again
//   the same for n_groups = 1.
// * A_log init: fla's _init_weights of @1364b38 (and the layer of @00937f2), log U(0, 16), floored
//   at 1e-4 as GDN's; with the newer config's A_init_range [lo, hi] (lo > 0), log U(lo, hi).
//   (@82e5772 / @81d14f9 used log(1..H); mamba_ssm uses U(1, 16).)
// * dt is not clamped: time_step_limit must be (0, inf) (softplus >= 0 makes a lower bound <= 0
//   a no-op). chunk_size only changes fla's numerics and is not used (the op's chunk is 64).
//
// Dimensions: rows = B T, D = hidden, E = int(expand D) = H P, P = head_dim, Nst = state_size,
// G = n_groups, Cd = E + 2 G Nst (conv channels), K = conv_kernel.
// Saves z, the pre-conv xBC, dt, the split xs / Bm / Cm, the op output y, the gated u and the
// normed on; the op saves nothing (its backward recomputes the chunk-boundary states).
// Decode cache per layer: ssm state (N, H, Nst, P) (= mamba_ssm's (N, H, P, Nst) transposed),
// then the conv cache (N, Cd, K) of the last K pre-conv xBC inputs (fla's conv_state).
//
// The layer's own dims: H heads, dk = Nst, dv = P, HKV = G, value_dim = E, F = Cd, W = K,
// R the option bits (M2_*).
#include "model.h"

#include "nn.h"
#include "rng.h"

#include <float.h>
#include <math.h>

enum { P_IN, P_CONV, P_DTB, P_ALOG, P_D, P_NORM, P_OUT, P_REST };
enum { M2_BIAS = 1, M2_CONV_BIAS = 2 };

typedef struct {
    int inb, outb, convb;  // parameter slots of the optional biases, -1 when absent
} m2_slots;

static m2_slots slots_of(const la_layer * L) {
    m2_slots s = { -1, -1, -1 };
    int i = P_REST;
    if (L->R & M2_BIAS) s.inb = i++, s.outb = i++;
    if (L->R & M2_CONV_BIAS) s.convb = i++;
    return s;
}

// ---------------------------------------------------------------------------------------------
// Config (Mamba2Config: @20ceee5 and the renamed keys of @05c7460; both are accepted)

static const char * const m2_keys[] = {
    "head_dim", "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "norm_eps",
    "pad_token_id", "bos_token_id", "eos_token_id", "expand", "conv_kernel", "n_groups",
    "use_bias", "use_conv_bias", "hidden_act", "initializer_range", "residual_in_fp32",
    "time_step_rank", "time_step_min", "time_step_max", "time_step_floor", "time_step_limit",
    "rescale_prenorm_residual", "use_cache", "rms_norm", "chunk_size", "fuse_norm",
    "fuse_cross_entropy", "fuse_linear_cross_entropy", "use_l2warp", "tie_word_embeddings",
    "num_heads",
    // @05c7460 (newest config): renames and additions
    "conv_init", "A_init_range", "D_has_hdim", "dt_min", "dt_max", "dt_init_floor", "dt_limit",
    "rmsnorm", "norm_before_gate", NULL,
};

typedef struct {
    int64_t E, H, P, Nst, G, K;
    bool    bias, conv_bias, rescale;
    double  t_min, t_max, t_floor;  // dt_bias init: dt = exp U(log t_min, log t_max) >= t_floor
    double  a_lo, a_hi;             // A_log init: a_lo = 0 means log U(0, 16) (see the header)
    double  conv_init;              // NAN: conv1d.weight ~ N(0, initializer_range)
} m2_cfg;

static const cJSON * extra(const la_config * c, const char * key) {
    return c->extra ? cJSON_GetObjectItemCaseSensitive(c->extra, key) : NULL;
}

// A setting under its old name a and its new name b: b wins; both present must agree.
static la_status num2(const la_config * c, const char * a, const char * b, double def,
                      double * out, char * err, size_t errlen) {
    double va, vb;
    la_status s = la_extra_num(c, a, def, &va, err, errlen);
    if (!s) s = la_extra_num(c, b, def, &vb, err, errlen);
    if (s) return s;
    if (extra(c, a) && extra(c, b) && va != vb)
        return la_cfg_fail(err, errlen, "config: '%s' %g and '%s' %g disagree (one setting under its "
                           "old and new name)", a, va, b, vb);
    *out = extra(c, b) ? vb : va;
    return LA_STATUS_OK;
}

// time_step_limit / dt_limit: only (0, inf) (or a lower bound <= 0) is implemented.
static la_status limit_ok(const la_config * c, const char * key, char * err, size_t errlen) {
    const cJSON * v = extra(c, key);
    if (!v || cJSON_IsNull(v)) return LA_STATUS_OK;
    const cJSON * lo = cJSON_GetArrayItem(v, 0), *hi = cJSON_GetArrayItem(v, 1);
    const double big = (double)FLT_MAX;  // a float dt never exceeds it: no clamp
    const bool ok = cJSON_IsArray(v) && cJSON_GetArraySize(v) == 2 &&
                    (cJSON_IsNull(lo) || (cJSON_IsNumber(lo) && lo->valuedouble <= 0)) &&
                    (cJSON_IsNull(hi) || (cJSON_IsNumber(hi) && hi->valuedouble >= big));
    return ok ? LA_STATUS_OK
              : la_cfg_fail(err, errlen, "config: '%s' must be [0.0, inf] (clamping dt is not "
                            "implemented)", key);
}

static la_status m2_read(const la_model * m, m2_cfg * o, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    double expand;
    int64_t chunk;
    bool rms, rms_b, nbg, dhd, fp32;
    la_status s = la_extra_check(c, m2_keys, err, errlen);
    if (!s) s = la_extra_int(c, "head_dim", 64, &o->P, err, errlen);
    if (!s) s = la_extra_int(c, "state_size", 128, &o->Nst, err, errlen);
    if (!s) s = la_extra_num(c, "expand", 2, &expand, err, errlen);
    if (!s) s = la_extra_int(c, "conv_kernel", 4, &o->K, err, errlen);
    if (!s) s = la_extra_int(c, "n_groups", 1, &o->G, err, errlen);
    if (!s) s = la_extra_bool(c, "use_bias", false, &o->bias, err, errlen);
    if (!s) s = la_extra_bool(c, "use_conv_bias", true, &o->conv_bias, err, errlen);
    if (!s) s = la_extra_bool(c, "residual_in_fp32", true, &fp32, err, errlen);
    if (!s) s = la_extra_bool(c, "rescale_prenorm_residual", true, &o->rescale, err, errlen);
    if (!s) s = la_extra_bool(c, "rms_norm", true, &rms, err, errlen);
    if (!s) s = la_extra_bool(c, "rmsnorm", true, &rms_b, err, errlen);
    if (!s) s = la_extra_bool(c, "norm_before_gate", false, &nbg, err, errlen);
    if (!s) s = la_extra_bool(c, "D_has_hdim", false, &dhd, err, errlen);
    if (!s) s = la_extra_int(c, "chunk_size", 256, &chunk, err, errlen);
    if (!s) s = num2(c, "time_step_min", "dt_min", 1e-3, &o->t_min, err, errlen);
    if (!s) s = num2(c, "time_step_max", "dt_max", 0.1, &o->t_max, err, errlen);
    if (!s) s = num2(c, "time_step_floor", "dt_init_floor", 1e-4, &o->t_floor, err, errlen);
    if (!s) s = la_extra_num(c, "conv_init", (double)NAN, &o->conv_init, err, errlen);
    if (!s) s = limit_ok(c, "time_step_limit", err, errlen);
    if (!s) s = limit_ok(c, "dt_limit", err, errlen);
    if (s) return s;
    (void)fp32;  // linattn's residual stream is float32 anyway
    const cJSON * tr = extra(c, "time_step_rank");  // stored by fla's layer, never used
    if (tr && !cJSON_IsNull(tr) && !cJSON_IsNumber(tr) &&
        !(cJSON_IsString(tr) && !strcmp(tr->valuestring, "auto")))
        return la_cfg_fail(err, errlen, "config: 'time_step_rank' must be \"auto\" or a number");
    if (!rms) return la_cfg_fail(err, errlen, "config: 'rms_norm' must be true (Mamba2 without the "
                                 "gated RMSNorm is not implemented)");
    if (!rms_b) return la_cfg_fail(err, errlen, "config: 'rmsnorm' must be true (Mamba2 without the "
                                   "gated RMSNorm is not implemented)");
    if (nbg) return la_cfg_fail(err, errlen, "config: 'norm_before_gate' must be false (fla's Mamba2 "
                                "gates, then normalises)");
    if (dhd) return la_cfg_fail(err, errlen, "config: 'D_has_hdim' must be false (D is one value per "
                                "head)");
    if (chunk < 1) return la_cfg_fail(err, errlen, "config: 'chunk_size' must be >= 1");
    if (o->P < 1) return la_cfg_fail(err, errlen, "config: 'head_dim' must be >= 1");
    if (o->Nst < 1 || o->Nst > 4096)
        return la_cfg_fail(err, errlen, "config: 'state_size' must be in [1, 4096]");
    if (o->K < 1 || o->K > 64)
        return la_cfg_fail(err, errlen, "config: 'conv_kernel' must be in [1, 64]");
    if (!(expand > 0) || expand * (double)m->D > 1e7)
        return la_cfg_fail(err, errlen, "config: 'expand' must be > 0");
    o->E = (int64_t)(expand * (double)m->D);  // python int(): truncation
    if (o->E < 1 || o->E % o->P)
        return la_cfg_fail(err, errlen, "config: 'head_dim' %lld must divide the inner size "
                           "expand * hidden_size = %lld", (long long)o->P, (long long)o->E);
    o->H = o->E / o->P;
    if (o->G < 1 || o->H % o->G)
        return la_cfg_fail(err, errlen, "config: 'n_groups' %lld must divide the %lld heads",
                           (long long)o->G, (long long)o->H);
    if (!(o->t_min > 0) || !(o->t_max >= o->t_min) || !(o->t_floor >= 0))
        return la_cfg_fail(err, errlen, "config: 'time_step_min' / 'time_step_max' / "
                           "'time_step_floor' must satisfy 0 < min <= max, floor >= 0");
    if (!isnan(o->conv_init) && !(o->conv_init > 0))
        return la_cfg_fail(err, errlen, "config: 'conv_init' must be null or > 0");
    o->a_lo = 0, o->a_hi = 16;
    const cJSON * ar = extra(c, "A_init_range");
    if (ar && !cJSON_IsNull(ar)) {
        const cJSON * lo = cJSON_GetArrayItem(ar, 0), *hi = cJSON_GetArrayItem(ar, 1);
        if (!cJSON_IsArray(ar) || cJSON_GetArraySize(ar) != 2 || !cJSON_IsNumber(lo) ||
            !cJSON_IsNumber(hi) || !(lo->valuedouble > 0) ||
            !(hi->valuedouble >= lo->valuedouble) || !isfinite(hi->valuedouble))
            return la_cfg_fail(err, errlen, "config: 'A_init_range' must be [lo, hi] with "
                               "0 < lo <= hi");
        o->a_lo = lo->valuedouble, o->a_hi = hi->valuedouble;
    }
    return LA_STATUS_OK;
}

// Once per model: the keys, no hybrid layers, and num_heads, which fla derives
// (Mamba2Config: num_heads = int(expand * hidden_size / head_dim)). A num_heads other than the
// derived one is an error, except the default 64, which cannot be told apart from an absent key.
// The config then holds the derived values, so config.json reads as fla writes it.
static la_status m2_root(la_model * m, char * err, size_t errlen) {
    m2_cfg o;
    la_status s = m2_read(m, &o, err, errlen);
    if (s) return s;
    if (m->cfg.n_attn)
        return la_cfg_fail(err, errlen, "config: 'attn' must be null for model_type mamba2 (fla's "
                           "Mamba2 has no hybrid attention layers)");
    if (m->cfg.num_heads != o.H && m->cfg.num_heads != 64)
        return la_cfg_fail(err, errlen, "config: 'num_heads' %lld disagrees with expand * hidden_size "
                           "/ head_dim = %lld", (long long)m->cfg.num_heads, (long long)o.H);
    m->cfg.num_heads = o.H;
    return LA_STATUS_OK;
}

static la_status m2_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    m2_cfg o;
    la_status s = m2_read(m, &o, err, errlen);
    if (s) return s;
    const int64_t D = m->D, E = o.E, H = o.H, Cd = E + 2 * o.G * o.Nst, K = o.K;
    L->H = L->HV = H;
    L->HKV = o.G;
    L->dk = o.Nst;
    L->dv = o.P;
    L->value_dim = E;
    L->F = Cd;
    L->W = K;
    L->R = (o.bias ? M2_BIAS : 0) | (o.conv_bias ? M2_CONV_BIAS : 0);
    const la_init conv_init = isnan(o.conv_init) ? LA_INIT_NORMAL : LA_INIT_CUSTOM;
    la_layer_param(m, L, "in_proj.weight", 2, (int64_t[]){ E + Cd + H, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "conv1d.weight", 3, (int64_t[]){ Cd, 1, K }, conv_init, true);
    la_layer_param(m, L, "dt_bias", 1, (int64_t[]){ H }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "A_log", 1, (int64_t[]){ H }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "D", 1, (int64_t[]){ H }, LA_INIT_ONE, false);
    la_layer_param(m, L, "norm.weight", 1, (int64_t[]){ E }, LA_INIT_ONE, false);
    la_layer_param(m, L, "out_proj.weight", 2, (int64_t[]){ D, E },
                   o.rescale ? LA_INIT_CUSTOM : LA_INIT_NORMAL, true);
    if (o.bias) {
        la_layer_param(m, L, "in_proj.bias", 1, (int64_t[]){ E + Cd + H }, LA_INIT_ZERO, false);
        la_layer_param(m, L, "out_proj.bias", 1, (int64_t[]){ D }, LA_INIT_ZERO, false);
    }
    if (o.conv_bias) la_layer_param(m, L, "conv1d.bias", 1, (int64_t[]){ Cd }, LA_INIT_ZERO, false);
    return LA_STATUS_OK;
}

// fla's _init_weights for a Mamba2 module (the LA_INIT_CUSTOM tensors); tensor p draws from
// stream (seed, p) as every other tensor.
static void m2_init(la_model * m, const la_layer * L, uint64_t seed) {
    m2_cfg o;
    if (m2_read(m, &o, NULL, 0)) return;  // build accepted the config
    for (int i = 0; i < L->np; i++) {
        const la_param * p = &m->par[L->p[i]];
        if (p->init != LA_INIT_CUSTOM) continue;
        float * w = m->w + p->off;
        la_xrng r = la_rng_at(seed, (uint64_t)L->p[i]);
        for (int64_t j = 0; j < p->numel; j++) {
            const double u = la_rng_unif(&r);
            if (i == P_DTB) {
                // dt = exp(U(log t_min, log t_max)).clamp(min=floor); dt_bias = softplus^-1(dt)
                double dt = exp(log(o.t_min) + u * (log(o.t_max) - log(o.t_min)));
                dt = fmax(dt, o.t_floor);
                w[j] = (float)(dt + log(-expm1(-dt)));
            } else if (i == P_ALOG) {
                const double A = o.a_lo > 0 ? o.a_lo + u * (o.a_hi - o.a_lo) : fmax(16.0 * u, 1e-4);
                w[j] = (float)log(A);
            } else if (i == P_CONV) {  // mamba_ssm's conv_init: U(-conv_init, conv_init)
                w[j] = (float)(o.conv_init * (2 * u - 1));
            } else if (i == P_OUT) {
                // rescale_prenorm_residual: kaiming_uniform(a = sqrt 5) over fan_in E, i.e.
                // U(-1/sqrt E, 1/sqrt E), divided by sqrt(num_residuals_per_layer (1) * L)
                const double b = 1.0 / sqrt((double)o.E) / sqrt((double)m->L);
                w[j] = (float)(b * (2 * u - 1));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Activations and scratch

static la_shape m2_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->dk, .V = L->dv };
}

// Saved activations, in this order (rows = B T, GN = G Nst):
//   z (rows, E)   xbp (rows, Cd) pre-conv xBC   dt (rows, H) raw
//   xs (rows, E)  bs, cs (rows, GN)             the conv output split
//   y (rows, E)   op output    u (rows, E) = y o SiLU(z)    on (rows, E) normed
typedef struct {
    float *z, *xbp, *dt, *xs, *bs, *cs, *y, *u, *on;
} m2_act;

static m2_act act_of(const la_layer * L, float * base, int64_t rows) {
    const int64_t E = L->value_dim, GN = L->HKV * L->dk;
    m2_act a;
    a.z = base, a.xbp = a.z + rows * E, a.dt = a.xbp + rows * L->F;
    a.xs = a.dt + rows * L->H, a.bs = a.xs + rows * E, a.cs = a.bs + rows * GN;
    a.y = a.cs + rows * GN, a.u = a.y + rows * E, a.on = a.u + rows * E;
    return a;
}

static size_t m2_act_floats(const la_layer * L, int64_t B, int64_t T) {
    const int64_t E = L->value_dim, GN = L->HKV * L->dk;
    return (size_t)(B * T * (5 * E + L->F + L->H + 2 * GN));
}

// Forward scratch: xbc (rows, Cd) after the conv; the final state when a chunked prefill cannot
// update the cache in place (B, H, Nst, P).
// Backward scratch: dxs (rows, E), du, dyo, dz (rows, E), dbs, dcs (rows, GN), ddt (rows, H),
// dxbc, dxbp (rows, Cd), dA, dD, ddtb (H).
static int m2_counts(const la_layer * L, int64_t B, int64_t T, bool backward, int64_t * n) {
    const int64_t rows = B * T, E = L->value_dim, GN = L->HKV * L->dk, Cd = L->F, H = L->H;
    if (!backward) {
        n[0] = rows * Cd, n[1] = B * H * L->dk * L->dv;
        return 2;
    }
    const int64_t c[] = { rows * E, rows * E, rows * E, rows * E, rows * GN, rows * GN,
                          rows * H, rows * Cd, rows * Cd, H, H, H };
    memcpy(n, c, sizeof c);
    return 12;
}

// The op's workspace for the given form.
static size_t op_size(const la_layer * L, int64_t B, int64_t T, bool backward,
                      const la_opts * o) {
    return la_mamba2_workspace_size(backward, m2_shape(L, B, T), L->HKV, o);
}

static size_t m2_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    return la_scratch_work(L, B, T, backward, m2_counts, op_size);
}

static size_t m2_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)(L->H * L->dk * L->dv + L->F * L->W);
}

// dst = a o b (n floats; dst may be a or b).
static void mul(float * dst, const float * a, const float * b, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(n / 16384 + 1, n))
    for (int64_t i = 0; i < n; i++) dst[i] = a[i] * b[i];
}

// xBC rows (rows, Cd) <-> xs (rows, E), bs, cs (rows, GN).
static void split_xbc(float * xs, float * bs, float * cs, const float * xbc, int64_t rows,
                      int64_t E, int64_t GN) {
    const int64_t Cd = E + 2 * GN;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * Cd))
    for (int64_t r = 0; r < rows; r++) {
        memcpy(xs + r * E, xbc + r * Cd, (size_t)E * 4);
        memcpy(bs + r * GN, xbc + r * Cd + E, (size_t)GN * 4);
        memcpy(cs + r * GN, xbc + r * Cd + E + GN, (size_t)GN * 4);
    }
}

static void join_xbc(float * xbc, const float * xs, const float * bs, const float * cs,
                     int64_t rows, int64_t E, int64_t GN) {
    const int64_t Cd = E + 2 * GN;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(rows, rows * Cd))
    for (int64_t r = 0; r < rows; r++) {
        memcpy(xbc + r * Cd, xs + r * E, (size_t)E * 4);
        memcpy(xbc + r * Cd + E, bs + r * GN, (size_t)GN * 4);
        memcpy(xbc + r * Cd + E + GN, cs + r * GN, (size_t)GN * 4);
    }
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

static la_status m2_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                            const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, E = L->value_dim, H = L->H;
    const int64_t Cd = L->F, GN = L->HKV * L->dk, K = L->W;
    const m2_slots sl = slots_of(L);
    const m2_act a = act_of(L, c->act, rows);
    const la_lcache * lc = c->cache;
    // cache layout: ssm state (N, H, Nst, P), then the conv cache (N, Cd, K)
    const size_t sfloats = (size_t)(B * H * L->dk * L->dv);
    float * state = lc ? lc->f : NULL;
    float * ccache = lc ? state + sfloats : NULL;
    // in_proj: its row blocks z | xBC | dt are three contiguous sub-matrices (and bias slices)
    const float * W = la_pw(m, L, P_IN), *b = sl.inb >= 0 ? la_pw(m, L, sl.inb) : NULL;
    la_status s = la_linear_forward(a.z, x, W, b, rows, D, E);
    if (!s) s = la_linear_forward(a.xbp, x, W + E * D, b ? b + E : NULL, rows, D, Cd);
    if (!s) s = la_linear_forward(a.dt, x, W + (E + Cd) * D, b ? b + E + Cd : NULL, rows, D, H);
    if (s) return s;
    int64_t n[12];
    const int cnt = m2_counts(L, B, T, false, n);
    la_carver w = { (char *)c->work, 0 };
    float * xbc = la_carve(&w, (size_t)n[0] * 4);  // (rows, Cd)
    float * fin = la_carve(&w, (size_t)n[1] * 4);  // (B, H, Nst, P)
    w.used = la_floats_bytes(cnt, n);
    // xBC = SiLU(conv1d(xBC) + bias); the cache holds the last K raw inputs and is updated
    const la_opts od = la_opts_default();
    s = la_short_conv_forward(xbc, ccache, a.xbp, la_pw(m, L, P_CONV),
                              sl.convb >= 0 ? la_pw(m, L, sl.convb) : NULL, ccache, LA_ACT_SILU,
                              B, T, Cd, K, &od);
    if (s) return s;
    split_xbc(a.xs, a.bs, a.cs, xbc, rows, E, GN);
    la_opts o = la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used);
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    float * final = state && o.form == LA_FORM_RECURRENT ? state : state ? fin : NULL;
    s = la_mamba2_forward(a.y, final, a.xs, a.dt, la_pw(m, L, P_ALOG), a.bs, a.cs,
                          la_pw(m, L, P_D), la_pw(m, L, P_DTB), state, m2_shape(L, B, T),
                          L->HKV, &o);
    if (s) return s;
    if (final == fin) memcpy(state, fin, sfloats * 4);
    // u = y o SiLU(z);  on = RMSNorm(u) w  (norm_before_gate=False, over all of E)
    s = la_act_forward(a.u, a.z, LA_ACT_SILU, rows * E);
    if (s) return s;
    mul(a.u, a.u, a.y, rows * E);
    s = la_rmsnorm_forward(a.on, a.u, la_pw(m, L, P_NORM), (float)m->cfg.norm_eps, rows, E);
    if (!s) s = la_linear_forward(y, a.on, la_pw(m, L, P_OUT),
                                  sl.outb >= 0 ? la_pw(m, L, sl.outb) : NULL, rows, E, D);
    return s;
}

static la_status m2_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                             const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, E = L->value_dim, H = L->H;
    const int64_t Cd = L->F, GN = L->HKV * L->dk, K = L->W;
    const m2_slots sl = slots_of(L);
    const m2_act a = act_of(L, c->act, rows);
    int64_t n[12];
    const int cnt = m2_counts(L, B, T, true, n);
    la_carver w = { (char *)c->work, 0 };
    float * f[12];
    for (int i = 0; i < cnt; i++) f[i] = la_carve(&w, (size_t)n[i] * 4);
    float * dxs = f[0], *du = f[1], *dyo = f[2], *dz = f[3], *dbs = f[4], *dcs = f[5];
    float * ddt = f[6], *dxbc = f[7], *dxbp = f[8], *dA = f[9], *dD = f[10], *ddtb = f[11];
    w.used = la_floats_bytes(cnt, n);
    float * don = dxs;  // d on (rows, E); free again before the op's backward writes dxs
    // out = on W_out^T + b_out
    la_lin_bwd(don, 0.0f, la_pg(m, L, P_OUT), sl.outb >= 0 ? la_pg(m, L, sl.outb) : NULL, dy,
               a.on, la_pw(m, L, P_OUT), rows, E, D);
    // on = RMSNorm(u) w
    la_status s = la_rmsnorm_backward(du, la_pg(m, L, P_NORM), don, a.u, la_pw(m, L, P_NORM),
                                      (float)m->cfg.norm_eps, rows, E, true);
    if (s) return s;
    // u = y o SiLU(z):  dy_o = du o SiLU(z),  dz = SiLU'(z) o (du o y)
    s = la_act_forward(dyo, a.z, LA_ACT_SILU, rows * E);
    if (s) return s;
    mul(dyo, dyo, du, rows * E);
    mul(dz, du, a.y, rows * E);
    s = la_act_backward(dz, dz, a.z, LA_ACT_SILU, rows * E);
    if (s) return s;
    // y = SSD(xs, dt, A_log, Bm, Cm, D, dt_bias); its parameter gradients are overwritten
    la_opts o = la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used);
    s = la_mamba2_backward(dxs, ddt, dA, dbs, dcs, dD, ddtb, NULL, dyo, NULL, a.xs, a.dt,
                           la_pw(m, L, P_ALOG), a.bs, a.cs, la_pw(m, L, P_D), la_pw(m, L, P_DTB),
                           NULL, m2_shape(L, B, T), L->HKV, &o);
    if (s) return s;
    la_vec_add(la_pg(m, L, P_ALOG), dA, H);
    la_vec_add(la_pg(m, L, P_D), dD, H);
    la_vec_add(la_pg(m, L, P_DTB), ddtb, H);
    // xBC = SiLU(conv1d(xBC_pre) + bias), split into xs | Bm | Cm
    join_xbc(dxbc, dxs, dbs, dcs, rows, E, GN);
    const la_opts od = la_opts_default();
    const bool cb = sl.convb >= 0;
    s = la_short_conv_backward(dxbp, la_pg(m, L, P_CONV), cb ? la_pg(m, L, sl.convb) : NULL, NULL,
                               dxbc, NULL, a.xbp, la_pw(m, L, P_CONV),
                               cb ? la_pw(m, L, sl.convb) : NULL, NULL, LA_ACT_SILU, B, T, Cd, K,
                               true, &od);
    if (s) return s;
    // [z | xBC_pre | dt] = x W_in^T + b_in: dx from the three row blocks
    const float * W = la_pw(m, L, P_IN);
    float * gW = la_pg(m, L, P_IN), *gb = sl.inb >= 0 ? la_pg(m, L, sl.inb) : NULL;
    la_lin_bwd(dx, 0.0f, gW, gb, dz, x, W, rows, D, E);
    la_lin_bwd(dx, 1.0f, gW + E * D, gb ? gb + E : NULL, dxbp, x, W + E * D, rows, D, Cd);
    la_lin_bwd(dx, 1.0f, gW + (E + Cd) * D, gb ? gb + E + Cd : NULL, ddt, x, W + (E + Cd) * D,
               rows, D, H);
    return LA_STATUS_OK;
}

const la_mixer_vt la_mixer_mamba2_vt = {
    .name = "mamba2",
    .build = m2_build,
    .act_floats = m2_act_floats,
    .work_bytes = m2_work,
    .cache_floats = m2_cache,
    .forward = m2_forward,
    .backward = m2_backward,
    .root_params = m2_root,
    .init = m2_init,
};
