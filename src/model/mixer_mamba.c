// Mamba (v1, S6) mixer (fla/layers/mamba.py, fla/models/mamba/*; HF transformers' Mamba names;
// ALGORITHMS.md 6):
//   [xi | z] = x W_in^T (+ b_in)                 (rows, E) each: in_proj's first half is x,
//                                                the second the gate (projected.chunk(2))
//   xc = SiLU(conv1d(xi) + conv_bias)            depthwise causal conv, (rows, E)
//   [dtr | Bm | Cm] = xc W_x^T                   (rows, R) (rows, Nst) (rows, Nst), no bias
//   delta = dtr W_dt^T                           (rows, E); dt_proj's bias is added in kernel
//   ys = selective_scan(xc, delta, A = -exp(A_log), Bm, Cm, D, delta_bias = dt_proj.bias,
//                       delta_softplus):
//          dt_t = softplus(delta_t + b_dt),  h_t = exp(dt_t A) o h_{t-1} + dt_t B_t x_t,
//          y_t = h_t C_t + D o x_t            per channel, h (E, Nst)
//   g = ys o SiLU(z);  out = g W_out^T (+ b_out)
// This is fla's cuda_kernels_forward (selective_scan_fn with z and delta_bias) and equals its
// slow_forward (softplus(dt_proj(dtr)) then the scan).
//
// fla's MambaBlock does not pass use_conv_bias (nor hidden_act) to the layer, whose defaults
// (True, "silu") therefore always apply: conv1d.bias is always present and use_conv_bias is
// read but has no effect, as in fla (HF transformers' Mamba does honour it). intermediate_size,
// when the config holds it, wins over expand (MambaConfig sets it from expand, then the saved
// value overrides it through kwargs).
// Init (fla's _init_weights, children before parents): in_proj, x_proj N(0, initializer_range),
// biases 0; conv1d keeps PyTorch's default (weight and bias U(-1/sqrt K, 1/sqrt K)); the layer's
// A_log = log(1 .. Nst) per channel and D = 1; dt_proj.weight U(-s, s) ("random") or s
// ("constant"), s = R^-1/2 time_step_scale; dt_proj.bias = softplus^-1(dt), dt log-uniform in
// [time_step_min, time_step_max], floored at time_step_floor; with rescale_prenorm_residual,
// out_proj.weight = kaiming_uniform(a = sqrt 5) / sqrt(L).
//
// Dimensions: rows = B T, D = hidden, E = intermediate size, Nst = state_size, R = dt rank
// (time_step_rank, "auto" = ceil(D / 16)), K = conv_kernel.
// Saves xi, z, xc, dtr, Bm, Cm, delta, the scan output and the gated g; the scan itself saves
// nothing (its backward replays each chunk from checkpoints).
// Decode cache per layer: ssm state (N, E, Nst), then the conv cache (N, E, K) of the last K
// pre-conv inputs (fla's recurrent_state and conv_state).
//
// The layer's own dims: dk = Nst, key_dim = R, value_dim = E, W = K, R the option bits (MB_*).
#include "model.h"

#include "nn.h"
#include "rng.h"

#include <math.h>

enum { P_CONV, P_CONVB, P_IN, P_X, P_DTW, P_DTB, P_ALOG, P_D, P_OUT, P_REST };
enum { MB_BIAS = 1 };

typedef struct {
    int inb, outb;  // parameter slots of the optional biases, -1 when absent
} mb_slots;

static mb_slots slots_of(const la_layer * L) {
    mb_slots s = { -1, -1 };
    if (L->R & MB_BIAS) s.inb = P_REST, s.outb = P_REST + 1;
    return s;
}

// ---------------------------------------------------------------------------------------------
// Config (MambaConfig, fla/models/mamba/configuration_mamba.py)

static const char * const mb_keys[] = {
    "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "norm_eps", "pad_token_id",
    "bos_token_id", "eos_token_id", "expand", "conv_kernel", "use_bias", "use_conv_bias",
    "hidden_act", "initializer_range", "residual_in_fp32", "time_step_rank", "time_step_scale",
    "time_step_min", "time_step_max", "time_step_init_scheme", "time_step_floor",
    "rescale_prenorm_residual", "use_cache", "fuse_norm", "fuse_cross_entropy",
    "fuse_linear_cross_entropy", "use_l2warp", "tie_word_embeddings", "intermediate_size", NULL,
};

typedef struct {
    int64_t E, Nst, R, K;
    bool    bias, rescale, dt_const;
    double  t_scale, t_min, t_max, t_floor;
} mb_cfg;

static la_status mb_read(const la_model * m, mb_cfg * o, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    double expand;
    bool conv_bias, fp32;
    char scheme[16];
    la_status s = la_extra_check(c, mb_keys, err, errlen);
    if (!s) s = la_extra_int(c, "state_size", 16, &o->Nst, err, errlen);
    if (!s) s = la_extra_num(c, "expand", 2, &expand, err, errlen);
    if (!s) s = la_extra_int(c, "conv_kernel", 4, &o->K, err, errlen);
    if (!s) s = la_extra_bool(c, "use_bias", false, &o->bias, err, errlen);
    if (!s) s = la_extra_bool(c, "use_conv_bias", true, &conv_bias, err, errlen);
    if (!s) s = la_extra_bool(c, "residual_in_fp32", false, &fp32, err, errlen);
    if (!s) s = la_extra_bool(c, "rescale_prenorm_residual", false, &o->rescale, err, errlen);
    if (!s) s = la_extra_num(c, "time_step_scale", 1.0, &o->t_scale, err, errlen);
    if (!s) s = la_extra_num(c, "time_step_min", 1e-3, &o->t_min, err, errlen);
    if (!s) s = la_extra_num(c, "time_step_max", 0.1, &o->t_max, err, errlen);
    if (!s) s = la_extra_num(c, "time_step_floor", 1e-4, &o->t_floor, err, errlen);
    if (!s) s = la_extra_str(c, "time_step_init_scheme", "random", scheme, sizeof scheme, err,
                             errlen);
    if (s) return s;
    (void)conv_bias, (void)fp32;  // see the header; the residual stream is float32 anyway
    if (strcmp(scheme, "random") && strcmp(scheme, "constant"))
        return la_cfg_fail(err, errlen, "config: 'time_step_init_scheme' must be \"random\" or "
                           "\"constant\"");
    o->dt_const = !strcmp(scheme, "constant");
    if (o->Nst < 1 || o->Nst > 4096)
        return la_cfg_fail(err, errlen, "config: 'state_size' must be in [1, 4096]");
    if (o->K < 1 || o->K > 64)
        return la_cfg_fail(err, errlen, "config: 'conv_kernel' must be in [1, 64]");
    if (c->intermediate_given) {
        o->E = c->intermediate_size;
    } else {
        if (!(expand > 0) || expand * (double)m->D > 1e7)
            return la_cfg_fail(err, errlen, "config: 'expand' must be > 0");
        o->E = (int64_t)(expand * (double)m->D);  // python int(): truncation
    }
    if (o->E < 1)
        return la_cfg_fail(err, errlen, "config: 'expand' %g gives an empty inner size", expand);
    // time_step_rank: "auto" = ceil(hidden_size / 16) (MambaConfig), or a positive integer
    const cJSON * tr =
        c->extra ? cJSON_GetObjectItemCaseSensitive(c->extra, "time_step_rank") : NULL;
    if (!tr || (cJSON_IsString(tr) && !strcmp(tr->valuestring, "auto"))) {
        o->R = (m->D + 15) / 16;
    } else if (cJSON_IsNumber(tr) && tr->valuedouble >= 1 && tr->valuedouble <= 65536 &&
               tr->valuedouble == floor(tr->valuedouble)) {
        o->R = (int64_t)tr->valuedouble;
    } else {
        return la_cfg_fail(err, errlen, "config: 'time_step_rank' must be \"auto\" or an integer in "
                           "[1, 65536]");
    }
    if (!(o->t_min > 0) || !(o->t_max >= o->t_min) || !(o->t_floor >= 0) || !isfinite(o->t_max))
        return la_cfg_fail(err, errlen, "config: 'time_step_min' / 'time_step_max' / "
                           "'time_step_floor' must satisfy 0 < min <= max, floor >= 0");
    if (!isfinite(o->t_scale))
        return la_cfg_fail(err, errlen, "config: 'time_step_scale' must be a finite number");
    return LA_STATUS_OK;
}

// Once per model: the keys, no hybrid layers; the config then holds the inner size as
// MambaConfig does (intermediate_size = int(expand * hidden_size)), so config.json reads as fla
// writes it.
static la_status mb_root(la_model * m, char * err, size_t errlen) {
    mb_cfg o;
    la_status s = mb_read(m, &o, err, errlen);
    if (s) return s;
    if (m->cfg.n_attn)
        return la_cfg_fail(err, errlen, "config: 'attn' must be null for model_type mamba (fla's "
                           "Mamba has no hybrid attention layers)");
    m->cfg.intermediate_size = o.E;
    m->cfg.intermediate_given = true;
    m->I = o.E;
    return LA_STATUS_OK;
}

static la_status mb_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    mb_cfg o;
    la_status s = mb_read(m, &o, err, errlen);
    if (s) return s;
    const int64_t D = m->D, E = o.E, N = o.Nst, R = o.R, K = o.K;
    L->H = L->HV = 1;
    L->dk = N;
    L->key_dim = R;
    L->value_dim = E;
    L->W = K;
    L->R = o.bias ? MB_BIAS : 0;
    la_layer_param(m, L, "conv1d.weight", 3, (int64_t[]){ E, 1, K }, LA_INIT_CUSTOM, true);
    la_layer_param(m, L, "conv1d.bias", 1, (int64_t[]){ E }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "in_proj.weight", 2, (int64_t[]){ 2 * E, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "x_proj.weight", 2, (int64_t[]){ R + 2 * N, E }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "dt_proj.weight", 2, (int64_t[]){ E, R }, LA_INIT_CUSTOM, true);
    la_layer_param(m, L, "dt_proj.bias", 1, (int64_t[]){ E }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "A_log", 2, (int64_t[]){ E, N }, LA_INIT_CUSTOM, false);
    la_layer_param(m, L, "D", 1, (int64_t[]){ E }, LA_INIT_ONE, false);
    la_layer_param(m, L, "out_proj.weight", 2, (int64_t[]){ D, E },
                   o.rescale ? LA_INIT_CUSTOM : LA_INIT_NORMAL, true);
    if (o.bias) {
        la_layer_param(m, L, "in_proj.bias", 1, (int64_t[]){ 2 * E }, LA_INIT_ZERO, false);
        la_layer_param(m, L, "out_proj.bias", 1, (int64_t[]){ D }, LA_INIT_ZERO, false);
    }
    return LA_STATUS_OK;
}

// The LA_INIT_CUSTOM tensors (see the header); tensor p draws from stream (seed, p).
static void mb_init(la_model * m, const la_layer * L, uint64_t seed) {
    mb_cfg o;
    if (mb_read(m, &o, NULL, 0)) return;  // build accepted the config
    for (int i = 0; i < L->np; i++) {
        const la_param * p = &m->par[L->p[i]];
        if (p->init != LA_INIT_CUSTOM) continue;
        float * w = m->w + p->off;
        la_xrng r = la_rng_at(seed, (uint64_t)L->p[i]);
        const double s_dt = pow((double)o.R, -0.5) * o.t_scale;
        for (int64_t j = 0; j < p->numel; j++) {
            const double u = la_rng_unif(&r);
            switch (i) {
            case P_CONV:
            case P_CONVB:  // nn.Conv1d.reset_parameters: fan_in = (in / groups) K = K
                w[j] = (float)((2 * u - 1) / sqrt((double)o.K));
                break;
            case P_DTW: w[j] = (float)(o.dt_const ? s_dt : s_dt * (2 * u - 1)); break;
            case P_DTB: {
                double dt = exp(log(o.t_min) + u * (log(o.t_max) - log(o.t_min)));
                dt = fmax(dt, o.t_floor);
                w[j] = (float)(dt + log(-expm1(-dt)));  // softplus^-1
                break;
            }
            case P_ALOG: w[j] = (float)log((double)(j % o.Nst + 1)); break;  // S4D-real
            case P_OUT:  // kaiming_uniform(a = sqrt 5) over fan_in E, / sqrt(L)
                w[j] = (float)((2 * u - 1) / sqrt((double)o.E) / sqrt((double)m->L));
                break;
            default: break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Activations and scratch

// Saved activations, in this order (rows = B T):
//   xi, z (rows, E)     in_proj halves (xi before the conv)
//   xc (rows, E)        after conv + SiLU
//   dtr (rows, R)  bm, cm (rows, Nst)     x_proj's three blocks
//   delta (rows, E)     dt_proj without its bias
//   ys (rows, E)        scan output     g (rows, E) = ys o SiLU(z)
typedef struct {
    float *xi, *z, *xc, *dtr, *bm, *cm, *delta, *ys, *g;
} mb_act;

static mb_act act_of(const la_layer * L, float * base, int64_t rows) {
    const int64_t E = L->value_dim, R = L->key_dim, N = L->dk;
    mb_act a;
    a.xi = base, a.z = a.xi + rows * E, a.xc = a.z + rows * E;
    a.dtr = a.xc + rows * E, a.bm = a.dtr + rows * R, a.cm = a.bm + rows * N;
    a.delta = a.cm + rows * N, a.ys = a.delta + rows * E, a.g = a.ys + rows * E;
    return a;
}

static size_t mb_act_floats(const la_layer * L, int64_t B, int64_t T) {
    return (size_t)(B * T * (7 * L->value_dim + L->key_dim + 2 * L->dk));
}

// Forward scratch: A (E, Nst), the final state when a chunked prefill cannot update the cache
// in place (B, E, Nst).
// Backward scratch: dg, dys, dz, dxc, ddelta, dxi (rows, E), ddtr (rows, R), dbm, dcm
// (rows, Nst), A, dA (E, Nst), dD, ddb (E).
static int mb_counts(const la_layer * L, int64_t B, int64_t T, bool backward, int64_t * n) {
    const int64_t rows = B * T, E = L->value_dim, R = L->key_dim, N = L->dk;
    if (!backward) {
        n[0] = E * N, n[1] = B * E * N;
        return 2;
    }
    const int64_t c[] = { rows * E, rows * E, rows * E, rows * E, rows * E, rows * E, rows * R,
                          rows * N, rows * N, E * N, E * N, E, E };
    memcpy(n, c, sizeof c);
    return 13;
}

// The op's workspace for the given form.
static size_t scan_size(const la_layer * L, int64_t B, int64_t T, bool backward,
                        const la_opts * o) {
    return la_selective_scan_workspace_size(backward, B, T, L->value_dim, L->dk, o);
}

static size_t mb_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    return la_scratch_work(L, B, T, backward, mb_counts, scan_size);
}

static size_t mb_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)(L->value_dim * L->dk + L->value_dim * L->W);
}

// dst = a o b (n floats; dst may be a or b).
static void mul(float * dst, const float * a, const float * b, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(n / 16384 + 1, n))
    for (int64_t i = 0; i < n; i++) dst[i] = a[i] * b[i];
}

// A = -exp(A_log) (E, Nst), fp32 as fla's -torch.exp(self.A_log.float()).
static void neg_exp(float * A, const float * A_log, int64_t n) {
    for (int64_t i = 0; i < n; i++) A[i] = -expf(A_log[i]);
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

static la_status mb_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                            const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, E = L->value_dim, N = L->dk;
    const int64_t R = L->key_dim, K = L->W;
    const mb_slots sl = slots_of(L);
    const mb_act a = act_of(L, c->act, rows);
    const la_lcache * lc = c->cache;
    // cache layout: ssm state (N, E, Nst), then the conv cache (N, E, K)
    const size_t sfloats = (size_t)(B * E * N);
    float * state = lc ? lc->f : NULL;
    float * ccache = lc ? state + sfloats : NULL;
    // in_proj: the x and z halves are two contiguous row blocks of W_in (and of b_in)
    const float * W = la_pw(m, L, P_IN), *b = sl.inb >= 0 ? la_pw(m, L, sl.inb) : NULL;
    la_status s = la_linear_forward(a.xi, x, W, b, rows, D, E);
    if (!s) s = la_linear_forward(a.z, x, W + E * D, b ? b + E : NULL, rows, D, E);
    if (s) return s;
    // xc = SiLU(conv1d(xi) + bias); the cache holds the last K raw inputs and is updated
    const la_opts od = la_opts_default();
    s = la_short_conv_forward(a.xc, ccache, a.xi, la_pw(m, L, P_CONV), la_pw(m, L, P_CONVB),
                              ccache, LA_ACT_SILU, B, T, E, K, &od);
    // x_proj's row blocks dtr | B | C; delta = dtr W_dt^T (the bias goes to the scan)
    const float * Wx = la_pw(m, L, P_X);
    if (!s) s = la_linear_forward(a.dtr, a.xc, Wx, NULL, rows, E, R);
    if (!s) s = la_linear_forward(a.bm, a.xc, Wx + R * E, NULL, rows, E, N);
    if (!s) s = la_linear_forward(a.cm, a.xc, Wx + (R + N) * E, NULL, rows, E, N);
    if (!s) s = la_linear_forward(a.delta, a.dtr, la_pw(m, L, P_DTW), NULL, rows, R, E);
    if (s) return s;
    int64_t n[13];
    const int cnt = mb_counts(L, B, T, false, n);
    la_carver w = { (char *)c->work, 0 };
    float * A = la_carve(&w, (size_t)n[0] * 4);    // (E, Nst)
    float * fin = la_carve(&w, (size_t)n[1] * 4);  // (B, E, Nst)
    w.used = la_floats_bytes(cnt, n);
    neg_exp(A, la_pw(m, L, P_ALOG), E * N);
    la_opts o = la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used);
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    float * final = state && o.form == LA_FORM_RECURRENT ? state : state ? fin : NULL;
    s = la_selective_scan_forward(a.ys, final, a.xc, a.delta, A, a.bm, a.cm, la_pw(m, L, P_D),
                                  la_pw(m, L, P_DTB), true, state, B, T, E, N, &o);
    if (s) return s;
    if (final == fin) memcpy(state, fin, sfloats * 4);
    // g = ys o SiLU(z);  out = g W_out^T + b_out
    s = la_act_forward(a.g, a.z, LA_ACT_SILU, rows * E);
    if (s) return s;
    mul(a.g, a.g, a.ys, rows * E);
    return la_linear_forward(y, a.g, la_pw(m, L, P_OUT),
                             sl.outb >= 0 ? la_pw(m, L, sl.outb) : NULL, rows, E, D);
}

static la_status mb_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                             const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, E = L->value_dim, N = L->dk;
    const int64_t R = L->key_dim, K = L->W;
    const mb_slots sl = slots_of(L);
    const mb_act a = act_of(L, c->act, rows);
    int64_t n[13];
    const int cnt = mb_counts(L, B, T, true, n);
    la_carver w = { (char *)c->work, 0 };
    float * f[13];
    for (int i = 0; i < cnt; i++) f[i] = la_carve(&w, (size_t)n[i] * 4);
    float * dg = f[0], *dys = f[1], *dz = f[2], *dxc = f[3], *ddelta = f[4], *dxi = f[5];
    float * ddtr = f[6], *dbm = f[7], *dcm = f[8], *A = f[9], *dA = f[10], *dD = f[11];
    float * ddb = f[12];
    w.used = la_floats_bytes(cnt, n);
    // out = g W_out^T + b_out
    la_lin_bwd(dg, 0.0f, la_pg(m, L, P_OUT), sl.outb >= 0 ? la_pg(m, L, sl.outb) : NULL, dy, a.g,
               la_pw(m, L, P_OUT), rows, E, D);
    // g = ys o SiLU(z):  dys = dg o SiLU(z),  dz = SiLU'(z) o (dg o ys)
    la_status s = la_act_forward(dys, a.z, LA_ACT_SILU, rows * E);
    if (s) return s;
    mul(dys, dys, dg, rows * E);
    mul(dz, dg, a.ys, rows * E);
    s = la_act_backward(dz, dz, a.z, LA_ACT_SILU, rows * E);
    if (s) return s;
    // ys = selective_scan(xc, delta, A, Bm, Cm, D, b_dt); its parameter gradients are
    // overwritten. A = -exp(A_log): dA_log = dA o A.
    neg_exp(A, la_pw(m, L, P_ALOG), E * N);
    la_opts o = la_mixer_opts(c, (char *)c->work + w.used, c->work_size - w.used);
    s = la_selective_scan_backward(dxc, ddelta, dA, dbm, dcm, dD, ddb, NULL, dys, NULL, a.xc,
                                   a.delta, A, a.bm, a.cm, la_pw(m, L, P_D), la_pw(m, L, P_DTB),
                                   true, NULL, B, T, E, N, &o);
    if (s) return s;
    mul(dA, dA, A, E * N);
    la_vec_add(la_pg(m, L, P_ALOG), dA, E * N);
    la_vec_add(la_pg(m, L, P_D), dD, E);
    la_vec_add(la_pg(m, L, P_DTB), ddb, E);
    // delta = dtr W_dt^T
    la_lin_bwd(ddtr, 0.0f, la_pg(m, L, P_DTW), NULL, ddelta, a.dtr, la_pw(m, L, P_DTW), rows, R, E);
    // [dtr | Bm | Cm] = xc W_x^T: dxc gathers the three blocks on top of the scan's du
    const float * Wx = la_pw(m, L, P_X);
    float * gWx = la_pg(m, L, P_X);
    la_lin_bwd(dxc, 1.0f, gWx, NULL, ddtr, a.xc, Wx, rows, E, R);
    la_lin_bwd(dxc, 1.0f, gWx + R * E, NULL, dbm, a.xc, Wx + R * E, rows, E, N);
    la_lin_bwd(dxc, 1.0f, gWx + (R + N) * E, NULL, dcm, a.xc, Wx + (R + N) * E, rows, E, N);
    // xc = SiLU(conv1d(xi) + bias)
    const la_opts od = la_opts_default();
    s = la_short_conv_backward(dxi, la_pg(m, L, P_CONV), la_pg(m, L, P_CONVB), NULL, dxc, NULL,
                               a.xi, la_pw(m, L, P_CONV), la_pw(m, L, P_CONVB), NULL, LA_ACT_SILU,
                               B, T, E, K, true, &od);
    if (s) return s;
    // [xi | z] = x W_in^T + b_in
    const float * W = la_pw(m, L, P_IN);
    float * gW = la_pg(m, L, P_IN), *gb = sl.inb >= 0 ? la_pg(m, L, sl.inb) : NULL;
    la_lin_bwd(dx, 0.0f, gW, gb, dxi, x, W, rows, D, E);
    la_lin_bwd(dx, 1.0f, gW + E * D, gb ? gb + E : NULL, dz, x, W + E * D, rows, D, E);
    return LA_STATUS_OK;
}

const la_mixer_vt la_mixer_mamba_vt = {
    .name = "mamba",
    .build = mb_build,
    .act_floats = mb_act_floats,
    .work_bytes = mb_work,
    .cache_floats = mb_cache,
    .forward = mb_forward,
    .backward = mb_backward,
    .root_params = mb_root,
    .init = mb_init,
};
