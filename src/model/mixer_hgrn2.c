// HGRN2 layer (fla/layers/hgrn2.py, fla/models/hgrn2/modeling_hgrn2.py; OPS.md 2.5):
//   q = SiLU(conv(x Wq^T)),  f = conv(x Wf^T)     (rows, F)
//   i = conv(x Wi^T)                              (rows, D)
//       the convs only with use_short_conv; fla's ShortConvolution(activation=None) there
//   g = log(lb + (1 - lb) sigmoid(f))             = logaddexp(log lb, log1p(-lb) + logsigmoid(f));
//                                                   logsigmoid(f) on layer 0 or without bounds
//   k = 1 - exp(g)                                the input gate is tied to the forget gate
//   o = gla(q, k, i, gk = g)                      per head: o_t = er^-1/2 S_t^T q_t,
//                                                   S_t = Diag(exp g_t) S_{t-1} + k_t i_t^T
//                                                   (chunk_gla's default scale)
//   y = o_proj( RMSNorm_D(o) w )                  one norm over the full hidden size, not per
//                                                   head (fla's rms_norm_linear with g_norm)
// Lower bounds (HGRN2Model.forward): P = softmax(model.lower_bounds, dim 0) over the L layers
// per channel, lb_l = cumsum(P)[l] - P[0] = sum_{1 <= j <= l} P_j, broadcast over rows (so F
// must equal D). The backward adds this layer's part of d model.lower_bounds through the
// softmax + cumsum Jacobian:  dLam[j, d] += P[j, d] dlb[d] ([1 <= j <= l] - lb_l[d]).
//
// Dimensions: rows = B T, D = hidden, er = expand_ratio (the key head dim), H = D / er heads,
// F = H er (the forget dim), hi = D / H (the value head dim), W = conv_size.
// Saves the projections (before the convs, when there are convs), q, f, i, g, k, the op output
// and the normed output; the op saves nothing (its backward recomputes the chunk states).
// Decode cache per layer: state (N, H, er, hi), then conv caches (N, F, W) x 2 and (N, D, W).
//
// The layer's own dims: L->dk = er, L->dv = hi, L->key_dim = F, L->value_dim = D, L->W the
// conv size (0 without convs), L->R the option bits (HG_*).
#include "model.h"

#include "nn.h"

#include <math.h>

enum { P_Q, P_F, P_I, P_REST };
enum { HG_AFFINE = 1 };

typedef struct {
    bool affine;
    int  qc, fc, ic, norm, o;  // parameter slots (-1: absent)
} hg_mode;

static hg_mode mode_of(const la_layer * L) {
    hg_mode d = { .affine = L->R & HG_AFFINE, .qc = -1, .fc = -1, .ic = -1, .norm = -1 };
    int i = P_REST;
    if (L->W) d.qc = i++, d.fc = i++, d.ic = i++;
    if (d.affine) d.norm = i++;
    d.o = i++;
    return d;
}

// HGRN2Config's keys (fla/models/hgrn2/configuration_hgrn2.py).
static const char * const hg_keys[] = {
    "hidden_size", "num_hidden_layers", "attn_mode", "num_heads", "expand_ratio",
    "use_short_conv", "conv_size", "use_lower_bound", "hidden_ratio", "intermediate_size",
    "hidden_act", "max_position_embeddings", "elementwise_affine", "norm_eps", "attn",
    "use_cache", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
    "initializer_range", "fuse_norm", "fuse_swiglu", "fuse_cross_entropy",
    "fuse_linear_cross_entropy", "use_l2warp", "vocab_size", NULL,
};

// Checks the layer keys and registers model.lower_bounds (L, D): a model-level nn.Parameter of
// zeros that fla's _init_weights never visits (so it stays zero: lb_l = l / L). It is a gate
// parameter, kept out of weight decay like A_log.
static la_status hg_root(la_model * m, char * err, size_t errlen) {
    bool use_lb;
    la_status s = la_extra_check(&m->cfg, hg_keys, err, errlen);
    if (!s) s = la_extra_bool(&m->cfg, "use_lower_bound", true, &use_lb, err, errlen);
    if (s || !use_lb) return s;
    m->p_root[0] = la_layer_param(m, NULL, "model.lower_bounds", 2, (int64_t[]){ m->L, m->D },
                                  LA_INIT_ZERO, false);
    return m->p_root[0] < 0 ? LA_STATUS_NOMEM : LA_STATUS_OK;
}

static la_status hg_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    const la_config * c = &m->cfg;
    const int64_t D = m->D;
    int64_t er, W;
    bool conv, affine;
    la_status s = la_extra_int(c, "expand_ratio", 128, &er, err, errlen);
    if (!s) s = la_extra_bool(c, "use_short_conv", false, &conv, err, errlen);
    if (!s) s = la_extra_int(c, "conv_size", 4, &W, err, errlen);
    if (!s) s = la_extra_bool(c, "elementwise_affine", true, &affine, err, errlen);
    if (s) return s;
    // fla (config, then layer): expand_ratio null -> hidden // num_heads; then the layer's
    // num_heads = hidden // expand_ratio.
    if (er == 0) er = D / c->num_heads;
    if (er < 1 || er > D)
        return (snprintf(err, errlen, "config: 'expand_ratio' %lld must be in [1, hidden_size "
                         "%lld]", (long long)er, (long long)D), LA_STATUS_INVALID_ARG);
    const int64_t H = D / er, F = H * er;
    if (D % H)
        return (snprintf(err, errlen, "config: 'expand_ratio' %lld gives %lld heads, which do not "
                         "divide hidden_size %lld", (long long)er, (long long)H, (long long)D),
                LA_STATUS_INVALID_ARG);
    if (m->p_root[0] >= 0 && F != D)
        return (snprintf(err, errlen, "config: 'expand_ratio' %lld must divide hidden_size %lld "
                         "when use_lower_bound is on (the bound is per hidden channel)",
                         (long long)er, (long long)D), LA_STATUS_INVALID_ARG);
    if (conv && (W < 1 || W > 64))
        return (snprintf(err, errlen, "config: 'conv_size' must be in [1, 64]"),
                LA_STATUS_INVALID_ARG);
    L->H = L->HV = L->HKV = H;
    L->dk = er;
    L->dv = D / H;
    L->key_dim = F;
    L->value_dim = D;
    L->W = conv ? W : 0;
    L->R = affine ? HG_AFFINE : 0;
    la_layer_param(m, L, "q_proj.weight", 2, (int64_t[]){ F, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "f_proj.weight", 2, (int64_t[]){ F, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "i_proj.weight", 2, (int64_t[]){ D, D }, LA_INIT_NORMAL, true);
    if (conv) {
        la_layer_param(m, L, "q_conv1d.weight", 3, (int64_t[]){ F, 1, W }, LA_INIT_NORMAL, true);
        la_layer_param(m, L, "f_conv1d.weight", 3, (int64_t[]){ F, 1, W }, LA_INIT_NORMAL, true);
        la_layer_param(m, L, "i_conv1d.weight", 3, (int64_t[]){ D, 1, W }, LA_INIT_NORMAL, true);
    }
    if (affine) la_layer_param(m, L, "g_norm.weight", 1, (int64_t[]){ D }, LA_INIT_ONE, false);
    la_layer_param(m, L, "o_proj.weight", 2, (int64_t[]){ D, D }, LA_INIT_NORMAL, true);
    return LA_STATUS_OK;
}

static la_shape hg_shape(const la_layer * L, int64_t B, int64_t T) {
    return (la_shape){ .B = B, .T = T, .H = L->H, .K = L->dk, .V = L->dv };
}

// ---------------------------------------------------------------------------------------------
// Lower bounds

// lb (D) of layer l from Lam (nl, D): per channel P = softmax over the layers (max-shifted, in
// double), lb = sum_{1 <= j <= l} P_j (fla: cumsum(P)[l] - P[0], the same sum).
static void lower_bound(double * lb, const float * Lam, int64_t nl, int64_t D, int64_t l) {
    for (int64_t d = 0; d < D; d++) {
        double mx = -INFINITY, s = 0, acc = 0;
        for (int64_t j = 0; j < nl; j++) mx = fmax(mx, (double)Lam[j * D + d]);
        for (int64_t j = 0; j < nl; j++) {
            const double e = exp((double)Lam[j * D + d] - mx);
            s += e;
            if (j >= 1 && j <= l) acc += e;
        }
        lb[d] = acc / s;
    }
}

// dLam (nl, D) += the Jacobian of lb_l (above) applied to dlb (D):
//   dLam[j, d] += P[j, d] dlb[d] ([1 <= j <= l] - lb_l[d])
static void lower_bound_backward(float * dLam, const double * dlb, const float * Lam, int64_t nl,
                                 int64_t D, int64_t l) {
    for (int64_t d = 0; d < D; d++) {
        double mx = -INFINITY, s = 0, acc = 0;
        for (int64_t j = 0; j < nl; j++) mx = fmax(mx, (double)Lam[j * D + d]);
        for (int64_t j = 0; j < nl; j++) {
            const double e = exp((double)Lam[j * D + d] - mx);
            s += e;
            if (j >= 1 && j <= l) acc += e;
        }
        const double lb = acc / s;
        for (int64_t j = 0; j < nl; j++) {
            const double p = exp((double)Lam[j * D + d] - mx) / s;
            dLam[j * D + d] += (float)(p * dlb[d] * ((j >= 1 && j <= l ? 1.0 : 0.0) - lb));
        }
    }
}

// log sigmoid(x) and sigmoid(x), sigmoid(-x) without overflow
static inline double logsig(double x, double * s, double * sm) {
    const double e = exp(-fabs(x)), r = 1.0 / (1.0 + e);
    *s = x >= 0 ? r : e * r;
    *sm = x >= 0 ? e * r : r;
    return x >= 0 ? -log1p(e) : x - log1p(e);
}

// ---------------------------------------------------------------------------------------------
// Activations and scratch

// Saved, in this order (rows = B T):
//   xq (rows, F)                projection before conv + SiLU
//   xf (rows, F), xi (rows, D)  projections before the convs (only with convs: else f, i)
//   q, f, g, k (rows, F)        q after SiLU, f after its conv, the log decay, the input gate
//   i (rows, D)                 after its conv: the op's v
//   o, on (rows, D)             op output, normed output
typedef struct {
    float *xq, *xf, *xi, *q, *f, *g, *k, *i, *o, *on;
    size_t n;
} hg_act;

static hg_act act_of(const la_layer * L, float * base, int64_t rows) {
    const int64_t F = L->key_dim, D = L->value_dim, c = L->W ? 1 : 0;
    const int64_t n[10] = { rows * F, c * rows * F, c * rows * D, rows * F, rows * F,
                            rows * F, rows * F, rows * D, rows * D, rows * D };
    float * p[10];
    int64_t off = 0;
    for (int j = 0; j < 10; j++) {
        p[j] = base && n[j] ? base + off : NULL;
        off += n[j];
    }
    hg_act a = { p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], (size_t)off };
    if (!c) a.xf = a.f, a.xi = a.i;  // without a conv, the projection is its own output
    return a;
}

static size_t hg_act_floats(const la_layer * L, int64_t B, int64_t T) {
    return act_of(L, NULL, B * T).n;
}

// Scratch: lb (D doubles), the final state of a chunked prefill; backward adds dlb (D
// doubles), don, dO (rows, D), dq, dk, dg (rows, F), di (rows, D) and tmp (rows, max(F, D)).
// Then the op's workspace.
typedef struct {
    double *lb, *dlb;
    float *fin, *don, *dO, *dq, *dk, *dg, *di, *tmp;
    size_t used;
} hg_scratch;

static hg_scratch scratch_of(const la_layer * L, void * base, int64_t B, int64_t T, bool bwd) {
    const int64_t rows = B * T, F = L->key_dim, D = L->value_dim;
    la_carver cv = { base, 0 };
    hg_scratch s = { 0 };
    s.lb = la_carve(&cv, (size_t)D * sizeof(double));
    s.fin = la_carve(&cv, (size_t)(B * L->H * L->dk * L->dv) * 4);
    if (bwd) {
        s.dlb = la_carve(&cv, (size_t)D * sizeof(double));
        s.don = la_carve(&cv, (size_t)(rows * D) * 4);
        s.dO = la_carve(&cv, (size_t)(rows * D) * 4);
        s.dq = la_carve(&cv, (size_t)(rows * F) * 4);
        s.dk = la_carve(&cv, (size_t)(rows * F) * 4);
        s.dg = la_carve(&cv, (size_t)(rows * F) * 4);
        s.di = la_carve(&cv, (size_t)(rows * D) * 4);
        s.tmp = la_carve(&cv, (size_t)(rows * LA_MAX(F, D)) * 4);
    }
    s.used = cv.used;
    return s;
}

static size_t hg_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    la_opts o = la_opts_default();
    const la_shape sh = hg_shape(L, B, T);
    size_t op = la_gla_workspace_size(backward, sh, &o);
    o.form = LA_FORM_RECURRENT;  // the T = 1 decode step
    op = LA_MAX(op, la_gla_workspace_size(backward, sh, &o));
    return scratch_of(L, NULL, B, T, backward).used + LA_ALIGN + op;
}

static size_t hg_cache(const la_layer * L, int64_t cap) {
    (void)cap;
    return (size_t)(L->H * L->dk * L->dv + (2 * L->key_dim + L->value_dim) * L->W);
}

// The lower bound of layer L into lb (D); false when the layer has none (layer 0, or the model
// has no lower bounds).
static bool layer_bound(const la_model * m, const la_layer * L, double * lb) {
    if (m->p_root[0] < 0 || L->idx == 0) return false;
    lower_bound(lb, m->w + m->par[m->p_root[0]].off, m->L, m->D, L->idx);
    return true;
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

static la_status hg_forward(const la_model * m, const la_layer * L, const la_call * c, float * y,
                            const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, F = L->key_dim, W = L->W;
    const hg_mode d = mode_of(L);
    const hg_act a = act_of(L, c->act, rows);
    const hg_scratch sc = scratch_of(L, c->work, B, T, false);
    const la_lcache * lc = c->cache;
    // cache layout: state (N, H, er, hi), then the q, f, i conv caches (N, n, W)
    float * state = lc ? lc->f : NULL;
    float * cq = lc && W ? state + B * L->H * L->dk * L->dv : NULL;
    float * cf = cq ? cq + B * F * W : NULL, *ci = cf ? cf + B * F * W : NULL;
    const float * wq = W ? la_pw(m, L, d.qc) : NULL, *wf = W ? la_pw(m, L, d.fc) : NULL;
    const float * wi = W ? la_pw(m, L, d.ic) : NULL;
    la_status s = la_proj_conv_forward(c, a.q, a.xq, x, la_pw(m, L, P_Q), wq, cq, LA_ACT_SILU, D,
                                       F, W);
    if (!s) s = la_proj_conv_forward(c, a.f, a.xf, x, la_pw(m, L, P_F), wf, cf, LA_ACT_IDENTITY,
                                     D, F, W);
    if (!s) s = la_proj_conv_forward(c, a.i, a.xi, x, la_pw(m, L, P_I), wi, ci, LA_ACT_IDENTITY,
                                     D, D, W);
    if (s) return s;
    // g = log(lb + (1 - lb) sigmoid(f)) (logsigmoid(f) without a bound), k = 1 - exp(g)
    const bool bounded = layer_bound(m, L, sc.lb);
    const double * lb = sc.lb;
#pragma omp parallel for schedule(static) if (rows * F > LA_NN_PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < F; j++) {
            double sg, sm;
            double g = logsig((double)a.f[r * F + j], &sg, &sm);
            if (bounded && lb[j] > 0) g = log(lb[j] + (1 - lb[j]) * sg);
            a.g[r * F + j] = (float)g;
            a.k[r * F + j] = (float)-expm1(g);
        }
    la_opts o = la_mixer_opts(c, (char *)c->work + sc.used, c->work_size - sc.used);
    // A T = 1 step updates the state in place; a chunked prefill writes a copy first.
    float * final = state && o.form == LA_FORM_RECURRENT ? state : state ? sc.fin : NULL;
    s = la_gla_forward(a.o, final, a.q, a.k, a.i, a.g, NULL, state, hg_shape(L, B, T), &o);
    if (s) return s;
    if (final == sc.fin) memcpy(state, sc.fin, (size_t)(B * L->H * L->dk * L->dv) * 4);
    s = la_rmsnorm_forward(a.on, a.o, d.affine ? la_pw(m, L, d.norm) : NULL,
                           (float)m->cfg.norm_eps, rows, D);
    if (!s) s = la_linear_forward(y, a.on, la_pw(m, L, d.o), NULL, rows, D, D);
    return s;
}

static la_status hg_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                             const float * dy, const float * x) {
    const int64_t B = c->B, T = c->T, rows = B * T, D = m->D, F = L->key_dim, W = L->W;
    const hg_mode d = mode_of(L);
    const hg_act a = act_of(L, c->act, rows);
    const hg_scratch sc = scratch_of(L, c->work, B, T, true);
    // y = on Wo^T;  on = RMSNorm_D(o) w
    la_lin_bwd(sc.don, 0.0f, la_pg(m, L, d.o), NULL, dy, a.on, la_pw(m, L, d.o), rows, D, D);
    la_status s = la_rmsnorm_backward(sc.dO, d.affine ? la_pg(m, L, d.norm) : NULL, sc.don, a.o,
                                      d.affine ? la_pw(m, L, d.norm) : NULL,
                                      (float)m->cfg.norm_eps, rows, D, true);
    if (s) return s;
    la_opts o = la_mixer_opts(c, (char *)c->work + sc.used, c->work_size - sc.used);
    s = la_gla_backward(sc.dq, sc.dk, sc.di, sc.dg, NULL, NULL, sc.dO, NULL, a.q, a.k, a.i, a.g,
                        NULL, NULL, hg_shape(L, B, T), &o);
    if (s) return s;
    // k = 1 - exp(g): dg += -exp(g) dk.  g = log(u), u = lb + (1 - lb) s, s = sigmoid(f):
    //   dg/df = (1 - lb) s (1 - s) / u,  dg/dlb = (1 - s) / u   (lb = 0: dg/df = 1 - s)
    // df goes to sc.dg in place; dg dg/dlb to tmp for the per-channel sums.
    const bool bounded = layer_bound(m, L, sc.lb);
    const double * lb = sc.lb;
    float * df = sc.dg, *tmp = sc.tmp;
#pragma omp parallel for schedule(static) if (rows * F > LA_NN_PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < F; j++) {
            const int64_t e = r * F + j;
            const double dg = (double)sc.dg[e] - (double)sc.dk[e] * exp((double)a.g[e]);
            double sg, sm;
            logsig((double)a.f[e], &sg, &sm);
            if (bounded && lb[j] > 0) {
                const double u = lb[j] + (1 - lb[j]) * sg;
                df[e] = (float)(dg * (1 - lb[j]) * sg * sm / u);
                tmp[e] = (float)(dg * sm / u);
            } else {
                df[e] = (float)(dg * sm);
                if (bounded) tmp[e] = sg > 0 ? (float)(dg * sm / sg) : 0.0f;  // lb underflowed to 0
            }
        }
    if (bounded) {
        // dlb[j] = sum over rows, one channel block per task in row order (deterministic)
        const int64_t cb = LA_NN_CHAN_BLOCK, nb = (F + cb - 1) / cb;
#pragma omp parallel for schedule(static) if (rows * F > LA_NN_PAR_MIN)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t j0 = b * cb, j1 = LA_MIN(F, j0 + cb);
            for (int64_t j = j0; j < j1; j++) sc.dlb[j] = 0;
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = j0; j < j1; j++) sc.dlb[j] += (double)tmp[r * F + j];
        }
        lower_bound_backward(m->g + m->par[m->p_root[0]].off, sc.dlb,
                             m->w + m->par[m->p_root[0]].off, m->L, D, L->idx);
    }
    // dx from every projection that read x (through the convs)
    const bool conv = W > 0;
    float * gi = conv ? la_pg(m, L, d.ic) : NULL, *gf = conv ? la_pg(m, L, d.fc) : NULL;
    float * gq = conv ? la_pg(m, L, d.qc) : NULL;
    const float * wi = conv ? la_pw(m, L, d.ic) : NULL, *wf = conv ? la_pw(m, L, d.fc) : NULL;
    const float * wq = conv ? la_pw(m, L, d.qc) : NULL;
    s = la_proj_conv_backward(c, dx, 0.0f, la_pg(m, L, P_I), gi, sc.di, tmp, a.xi, x,
                              la_pw(m, L, P_I), wi, LA_ACT_IDENTITY, D, D, W);
    if (!s) s = la_proj_conv_backward(c, dx, 1.0f, la_pg(m, L, P_F), gf, df, tmp, a.xf, x,
                                      la_pw(m, L, P_F), wf, LA_ACT_IDENTITY, D, F, W);
    if (!s) s = la_proj_conv_backward(c, dx, 1.0f, la_pg(m, L, P_Q), gq, sc.dq, tmp, a.xq, x,
                                      la_pw(m, L, P_Q), wq, LA_ACT_SILU, D, F, W);
    return s;
}

const la_mixer_vt la_mixer_hgrn2_vt = {
    .name = "hgrn2",
    .build = hg_build,
    .act_floats = hg_act_floats,
    .work_bytes = hg_work,
    .cache_floats = hg_cache,
    .forward = hg_forward,
    .backward = hg_backward,
    .root_params = hg_root,
};
