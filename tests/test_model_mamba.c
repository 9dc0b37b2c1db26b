// Mamba2 and Mamba (v1) models: whole-model gradients against finite differences, chunked
// prefill + decode against one full forward, fla/HF state-dict names and shapes, checkpoint
// round trips, fla's init, and bad configs.
#include "model/model.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Tiny models covering the option paths; initializer_range is large so gradients stand well
// above float32 noise in the finite differences.
static const char * const configs[] = {
    // Mamba2: 2 groups of 2 heads, conv bias, no linear biases, default rescaled out_proj init
    "{\"model_type\":\"mamba2\",\"vocab_size\":37,\"hidden_size\":16,\"num_hidden_layers\":2,"
    "\"head_dim\":8,\"state_size\":6,\"expand\":2,\"n_groups\":2,\"conv_kernel\":3,"
    "\"initializer_range\":0.25}",
    // Mamba2: one group, linear biases, no conv bias, tied embeddings, E = int(1.5 * 16) = 24
    "{\"model_type\":\"mamba2\",\"vocab_size\":29,\"hidden_size\":16,\"num_hidden_layers\":2,"
    "\"head_dim\":6,\"state_size\":4,\"expand\":1.5,\"n_groups\":1,\"conv_kernel\":4,"
    "\"use_bias\":true,\"use_conv_bias\":false,\"tie_word_embeddings\":true,"
    "\"rescale_prenorm_residual\":false,\"initializer_range\":0.25,\"norm_eps\":1e-6}",
    // Mamba2: one group per head, the newer config's keys, conv width 2, fla's saved num_heads
    "{\"model_type\":\"mamba2\",\"vocab_size\":31,\"hidden_size\":12,\"num_hidden_layers\":1,"
    "\"head_dim\":4,\"num_heads\":3,\"state_size\":5,\"expand\":1,\"n_groups\":3,"
    "\"conv_kernel\":2,\"A_init_range\":[1,16],\"dt_min\":0.01,\"dt_max\":0.2,"
    "\"dt_init_floor\":1e-4,\"rmsnorm\":true,\"norm_before_gate\":false,\"D_has_hdim\":false,"
    "\"conv_init\":0.5,\"time_step_limit\":[0.0,null],\"chunk_size\":8,"
    "\"time_step_rank\":\"auto\",\"residual_in_fp32\":false,\"initializer_range\":0.25}",
    // Mamba: rank "auto" = 1, no linear biases
    "{\"model_type\":\"mamba\",\"vocab_size\":37,\"hidden_size\":16,\"num_hidden_layers\":2,"
    "\"state_size\":5,\"expand\":2,\"conv_kernel\":4,\"time_step_rank\":\"auto\","
    "\"initializer_range\":0.25}",
    // Mamba: biases, tied, given intermediate_size, rank 3, constant dt init, rescaled out_proj,
    // use_conv_bias false (fla ignores it: the conv keeps its bias)
    "{\"model_type\":\"mamba\",\"vocab_size\":29,\"hidden_size\":12,\"num_hidden_layers\":2,"
    "\"state_size\":3,\"intermediate_size\":20,\"conv_kernel\":2,\"time_step_rank\":3,"
    "\"use_bias\":true,\"use_conv_bias\":false,\"tie_word_embeddings\":true,"
    "\"time_step_init_scheme\":\"constant\",\"time_step_scale\":2.0,"
    "\"rescale_prenorm_residual\":true,\"initializer_range\":0.25}",
};
#define NCFG (int)(sizeof configs / sizeof configs[0])

static char g_dir[256];

// ---------------------------------------------------------------------------------------------
// Names and shapes (HF/fla state dicts: backbone.layers.{i}.mixer.*)

typedef struct { const char * name; int nd; int64_t s[3]; } want_t;

static void check_names(const char * what, const char * json, const want_t * want, int nw) {
    la_model * m = la_test_model(json, 1);
    la_expect(m->n_par == nw, "%s: %d tensors, want %d", what, m->n_par, nw);
    for (int i = 0; i < nw; i++) {
        int found = -1;
        for (int j = 0; j < m->n_par; j++)
            if (!strcmp(m->par[j].name, want[i].name)) found = j;
        if (!la_expect(found >= 0, "%s: tensor '%s' missing", what, want[i].name)) continue;
        bool same = m->par[found].ndim == want[i].nd;
        for (int d = 0; same && d < want[i].nd; d++) same = m->par[found].shape[d] == want[i].s[d];
        la_expect(same, "%s: tensor '%s': shape differs", what, want[i].name);
    }
    // the saved file holds exactly these names
    char err[512] = "", dir[600], p[700];
    snprintf(dir, sizeof dir, "%s/names_%s", g_dir, what);
    la_expect_status(la_model_save(m, dir, NULL, NULL, err, sizeof err), LA_STATUS_OK, err);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    la_st_file * f = NULL;
    la_expect_status(la_st_open(&f, p, err, sizeof err), LA_STATUS_OK, err);
    la_expect(f && la_st_count(f) == nw, "%s: saved file holds %lld tensors", what,
              f ? (long long)la_st_count(f) : -1LL);
    la_st_close(f);
    la_model_free(m);
}

static void names(void) {
    // Mamba2: E = 2 * 16 = 32, P = 8 -> H = 4, G = 2, Nst = 4: Cd = 32 + 16 = 48,
    // in_proj rows E + Cd + H = 84
    static const want_t m2[] = {
        { "backbone.embeddings.weight", 2, { 50, 16 } },
        { "backbone.layers.0.norm.weight", 1, { 16 } },
        { "backbone.layers.0.mixer.in_proj.weight", 2, { 84, 16 } },
        { "backbone.layers.0.mixer.in_proj.bias", 1, { 84 } },
        { "backbone.layers.0.mixer.conv1d.weight", 3, { 48, 1, 4 } },
        { "backbone.layers.0.mixer.conv1d.bias", 1, { 48 } },
        { "backbone.layers.0.mixer.dt_bias", 1, { 4 } },
        { "backbone.layers.0.mixer.A_log", 1, { 4 } },
        { "backbone.layers.0.mixer.D", 1, { 4 } },
        { "backbone.layers.0.mixer.norm.weight", 1, { 32 } },
        { "backbone.layers.0.mixer.out_proj.weight", 2, { 16, 32 } },
        { "backbone.layers.0.mixer.out_proj.bias", 1, { 16 } },
        { "backbone.layers.1.norm.weight", 1, { 16 } },
        { "backbone.layers.1.mixer.in_proj.weight", 2, { 84, 16 } },
        { "backbone.layers.1.mixer.in_proj.bias", 1, { 84 } },
        { "backbone.layers.1.mixer.conv1d.weight", 3, { 48, 1, 4 } },
        { "backbone.layers.1.mixer.conv1d.bias", 1, { 48 } },
        { "backbone.layers.1.mixer.dt_bias", 1, { 4 } },
        { "backbone.layers.1.mixer.A_log", 1, { 4 } },
        { "backbone.layers.1.mixer.D", 1, { 4 } },
        { "backbone.layers.1.mixer.norm.weight", 1, { 32 } },
        { "backbone.layers.1.mixer.out_proj.weight", 2, { 16, 32 } },
        { "backbone.layers.1.mixer.out_proj.bias", 1, { 16 } },
        { "backbone.norm_f.weight", 1, { 16 } },
        { "lm_head.weight", 2, { 50, 16 } },
    };
    check_names("mamba2",
                "{\"model_type\":\"mamba2\",\"vocab_size\":50,\"hidden_size\":16,"
                "\"num_hidden_layers\":2,\"head_dim\":8,\"state_size\":4,\"n_groups\":2,"
                "\"use_bias\":true}",
                m2, (int)(sizeof m2 / sizeof m2[0]));
    // Mamba2 defaults: no linear biases, conv bias on; tied: no lm_head
    static const want_t m2t[] = {
        { "backbone.embeddings.weight", 2, { 50, 16 } },
        { "backbone.layers.0.norm.weight", 1, { 16 } },
        { "backbone.layers.0.mixer.in_proj.weight", 2, { 84, 16 } },
        { "backbone.layers.0.mixer.conv1d.weight", 3, { 48, 1, 4 } },
        { "backbone.layers.0.mixer.conv1d.bias", 1, { 48 } },
        { "backbone.layers.0.mixer.dt_bias", 1, { 4 } },
        { "backbone.layers.0.mixer.A_log", 1, { 4 } },
        { "backbone.layers.0.mixer.D", 1, { 4 } },
        { "backbone.layers.0.mixer.norm.weight", 1, { 32 } },
        { "backbone.layers.0.mixer.out_proj.weight", 2, { 16, 32 } },
        { "backbone.norm_f.weight", 1, { 16 } },
    };
    check_names("mamba2_tied",
                "{\"model_type\":\"mamba2\",\"vocab_size\":50,\"hidden_size\":16,"
                "\"num_hidden_layers\":1,\"head_dim\":8,\"state_size\":4,\"n_groups\":2,"
                "\"tie_word_embeddings\":true}",
                m2t, (int)(sizeof m2t / sizeof m2t[0]));
    // Mamba: E = 32, Nst = 4, R = ceil(16 / 16) = 1, K = 4
    static const want_t mb[] = {
        { "backbone.embeddings.weight", 2, { 50, 16 } },
        { "backbone.layers.0.norm.weight", 1, { 16 } },
        { "backbone.layers.0.mixer.conv1d.weight", 3, { 32, 1, 4 } },
        { "backbone.layers.0.mixer.conv1d.bias", 1, { 32 } },
        { "backbone.layers.0.mixer.in_proj.weight", 2, { 64, 16 } },
        { "backbone.layers.0.mixer.in_proj.bias", 1, { 64 } },
        { "backbone.layers.0.mixer.x_proj.weight", 2, { 9, 32 } },
        { "backbone.layers.0.mixer.dt_proj.weight", 2, { 32, 1 } },
        { "backbone.layers.0.mixer.dt_proj.bias", 1, { 32 } },
        { "backbone.layers.0.mixer.A_log", 2, { 32, 4 } },
        { "backbone.layers.0.mixer.D", 1, { 32 } },
        { "backbone.layers.0.mixer.out_proj.weight", 2, { 16, 32 } },
        { "backbone.layers.0.mixer.out_proj.bias", 1, { 16 } },
        { "backbone.norm_f.weight", 1, { 16 } },
        { "lm_head.weight", 2, { 50, 16 } },
    };
    check_names("mamba",
                "{\"model_type\":\"mamba\",\"vocab_size\":50,\"hidden_size\":16,"
                "\"num_hidden_layers\":1,\"state_size\":4,\"use_bias\":true}",
                mb, (int)(sizeof mb / sizeof mb[0]));
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: save, load, identical parameters (bitwise), config text and logits

static void round_trip(const char * json, int ci) {
    la_model * m = la_test_model(json, 31 + (uint64_t)ci);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ckpt%d", g_dir, ci);
    la_model_round_trip_check(m, dir, "cfg", ci);
    la_model_free(m);
}

// ---------------------------------------------------------------------------------------------
// Init (fla's _init_weights and the layers' constructors)

static const float * param(const la_model * m, const char * name, int64_t * n) {
    for (int32_t i = 0; i < m->n_par; i++)
        if (!strcmp(m->par[i].name, name)) {
            *n = m->par[i].numel;
            return m->w + m->par[i].off;
        }
    la_expect(false, "no tensor '%s'", name);
    *n = 0;
    return NULL;
}

static double softplus_d(double x) { return x > 20 ? x : log1p(exp(x)); }

// Every value of name in [lo, hi] (after f), and not all equal when spread.
static void in_range(const la_model * m, const char * name, double lo, double hi, int f,
                     bool spread) {
    int64_t n;
    const float * w = param(m, name, &n);
    bool ok = n > 0, differ = false;
    for (int64_t i = 0; w && i < n; i++) {
        const double wi = (double)w[i], v = f == 1 ? softplus_d(wi) : f == 2 ? exp(wi) : wi;
        ok = ok && v >= lo && v <= hi;
        differ = differ || w[i] != w[0];
    }
    la_expect(ok && (!spread || differ), "init %s: values outside [%g, %g]%s", name, lo, hi,
              spread ? " or all equal" : "");
}

static void init_values(void) {
    // Mamba2 defaults: dt in [1e-3, 0.1], A in (0, 16], D = 1, norm 1, biases 0,
    // out_proj U(+-1/sqrt(E)/sqrt(L)) (rescale_prenorm_residual on)
    la_model * m = la_test_model("{\"model_type\":\"mamba2\",\"vocab_size\":20,\"hidden_size\":32,"
                                 "\"num_hidden_layers\":4,\"head_dim\":4,\"state_size\":4}", 7);
    const char * p = "backbone.layers.1.mixer.";
    char nm[128];
#define NM(s) (snprintf(nm, sizeof nm, "%s%s", p, s), nm)
    in_range(m, NM("dt_bias"), 1e-3 * (1 - 1e-5), 0.1 * (1 + 1e-5), 1, true);
    in_range(m, NM("A_log"), 1e-4 * (1 - 1e-5), 16 * (1 + 1e-5), 2, true);
    in_range(m, NM("D"), 1, 1, 0, false);
    in_range(m, NM("norm.weight"), 1, 1, 0, false);
    in_range(m, NM("conv1d.bias"), 0, 0, 0, false);
    const double b = 1 / sqrt(64.0) / sqrt(4.0);
    in_range(m, NM("out_proj.weight"), -b, b, 0, true);
    la_model_free(m);
    // Mamba2, newer keys: A in [1, 4], dt in [0.01, 0.02], conv U(+-0.5)
    m = la_test_model("{\"model_type\":\"mamba2\",\"vocab_size\":20,\"hidden_size\":32,"
                      "\"num_hidden_layers\":1,\"head_dim\":4,\"state_size\":4,"
                      "\"A_init_range\":[1,4],\"dt_min\":0.01,\"dt_max\":0.02,"
                      "\"conv_init\":0.5}", 7);
    p = "backbone.layers.0.mixer.";
    in_range(m, NM("dt_bias"), 0.01 * (1 - 1e-5), 0.02 * (1 + 1e-5), 1, true);
    in_range(m, NM("A_log"), 1 - 1e-5, 4 * (1 + 1e-5), 2, true);
    in_range(m, NM("conv1d.weight"), -0.5, 0.5, 0, true);
    la_model_free(m);
    // Mamba: A_log = log(1 .. Nst) per channel, D = 1, dt_proj U(+-R^-1/2), conv U(+-1/sqrt K)
    m = la_test_model("{\"model_type\":\"mamba\",\"vocab_size\":20,\"hidden_size\":32,"
                      "\"num_hidden_layers\":1,\"state_size\":3,\"conv_kernel\":4}", 7);
    int64_t n;
    const float * A = param(m, NM("A_log"), &n);
    bool ok = n == 64 * 3;
    for (int64_t i = 0; A && i < n; i++) ok = ok && fabsf(A[i] - logf((float)(i % 3 + 1))) < 1e-6f;
    la_expect(ok, "init mamba A_log = log(1 .. Nst) per channel");
    in_range(m, NM("D"), 1, 1, 0, false);
    in_range(m, NM("dt_proj.bias"), 1e-3 * (1 - 1e-5), 0.1 * (1 + 1e-5), 1, true);
    in_range(m, NM("dt_proj.weight"), -1 / sqrt(2.0), 1 / sqrt(2.0), 0, true);  // R = 2
    in_range(m, NM("conv1d.weight"), -0.5, 0.5, 0, true);
    in_range(m, NM("conv1d.bias"), -0.5, 0.5, 0, true);
    la_model_free(m);
#undef NM
}

// ---------------------------------------------------------------------------------------------
// Bad configs: each is rejected with one line naming the key

static void bad_configs(void) {
    static const struct { const char * json, *key; } bad[] = {
        { "{\"model_type\":\"mamba2\",\"hidden_size\":16,\"head_dim\":8,\"n_groups\":3}", "n_groups" },
        { "{\"model_type\":\"mamba2\",\"hidden_size\":16,\"head_dim\":5}", "head_dim" },
        { "{\"model_type\":\"mamba2\",\"hidden_size\":16,\"head_dim\":8,\"num_heads\":5}", "num_heads" },
        { "{\"model_type\":\"mamba2\",\"rms_norm\":false}", "rms_norm" },
        { "{\"model_type\":\"mamba2\",\"rmsnorm\":false}", "rmsnorm" },
        { "{\"model_type\":\"mamba2\",\"norm_before_gate\":true}", "norm_before_gate" },
        { "{\"model_type\":\"mamba2\",\"D_has_hdim\":true}", "D_has_hdim" },
        { "{\"model_type\":\"mamba2\",\"time_step_limit\":[0.0,1.0]}", "time_step_limit" },
        { "{\"model_type\":\"mamba2\",\"dt_limit\":[0.01,null]}", "dt_limit" },
        { "{\"model_type\":\"mamba2\",\"time_step_min\":0.1,\"dt_min\":0.2}", "dt_min" },
        { "{\"model_type\":\"mamba2\",\"A_init_range\":[0,16]}", "A_init_range" },
        { "{\"model_type\":\"mamba2\",\"state_size\":0}", "state_size" },
        { "{\"model_type\":\"mamba2\",\"use_bias\":1}", "use_bias" },
        { "{\"model_type\":\"mamba2\",\"expand_v\":2}", "expand_v" },
        { "{\"model_type\":\"mamba2\",\"hidden_act\":\"gelu\"}", "hidden_act" },
        { "{\"model_type\":\"mamba2\",\"num_hidden_layers\":2,\"attn\":{\"layers\":[1],\"num_heads\":2}}", "attn" },
        { "{\"model_type\":\"mamba\",\"time_step_rank\":\"big\"}", "time_step_rank" },
        { "{\"model_type\":\"mamba\",\"time_step_init_scheme\":\"uniform\"}", "time_step_init_scheme" },
        { "{\"model_type\":\"mamba\",\"conv_kernel\":0}", "conv_kernel" },
        { "{\"model_type\":\"mamba\",\"expand\":0}", "expand" },
        { "{\"model_type\":\"mamba\",\"n_groups\":2}", "n_groups" },
        { "{\"model_type\":\"mamba\",\"time_step_min\":0}", "time_step_min" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512] = "";
        la_model * m = NULL;
        const la_status s = la_model_from_json(&m, bad[i].json, err, sizeof err);
        la_expect(s != LA_STATUS_OK && !m && strstr(err, bad[i].key) && !strchr(err, '\n'),
                  "bad config %zu (%s): status %d, message '%s'", i, bad[i].key, (int)s, err);
        la_model_free(m);
    }
    // fla's defaults for the common keys
    la_model * m = la_test_model("{\"model_type\":\"mamba2\",\"hidden_size\":64}", 1);
    la_expect(m->L == 48 && m->cfg.norm_eps == 1e-5 && m->cfg.pad_token_id == 0 &&
              m->cfg.num_heads == 2 && m->vocab == 32000, "mamba2 defaults");
    la_model_free(m);
    m = la_test_model("{\"model_type\":\"mamba\",\"hidden_size\":64,\"num_hidden_layers\":1}", 1);
    la_expect(m->cfg.norm_eps == 1e-5 && m->cfg.pad_token_id == 0 &&
              m->cfg.intermediate_size == 128, "mamba defaults");
    la_model_free(m);
}

// ---------------------------------------------------------------------------------------------
// A float64 reference written from fla's pure-torch paths (Mamba2.torch_forward's decode step,
// token by token, and Mamba.slow_forward), reading the tensors by name: the logits of one
// sequence must match the library's forward. This pins the in_proj split order, the conv,
// the head-to-group map, the gate-then-norm order and the residual blocks.

static const float * W(const la_model * m, const char * name, int64_t * n) {
    for (int32_t i = 0; i < m->n_par; i++)
        if (!strcmp(m->par[i].name, name)) {
            if (n) *n = m->par[i].numel;
            return m->w + m->par[i].off;
        }
    if (n) *n = 0;
    return NULL;
}

static const float * LW(const la_model * m, int l, const char * s, int64_t * n) {
    char nm[128];
    snprintf(nm, sizeof nm, "backbone.layers.%d.%s", l, s);
    return W(m, nm, n);
}

static double silu_d(double x) { return x / (1 + exp(-x)); }

// y (T, out) = x (T, in) W^T + b
static void lin(double * y, const double * x, const float * Wt, const float * b, int64_t T,
                int64_t in, int64_t out) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < out; o++) {
            double a = b ? (double)b[o] : 0;
            for (int64_t i = 0; i < in; i++) a += x[t * in + i] * (double)Wt[o * in + i];
            y[t * out + o] = a;
        }
}

static void rms(double * y, const double * x, const float * w, double eps, int64_t T, int64_t D) {
    for (int64_t t = 0; t < T; t++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += x[t * D + i] * x[t * D + i];
        const double r = 1 / sqrt(ss / (double)D + eps);
        for (int64_t i = 0; i < D; i++) y[t * D + i] = x[t * D + i] * r * (double)w[i];
    }
}

// y (T, C) = SiLU(causal depthwise conv1d(x) + bias), w (C, K)
static void conv_silu(double * y, const double * x, const float * w, const float * b, int64_t T,
                      int64_t C, int64_t K) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t c = 0; c < C; c++) {
            double a = b ? (double)b[c] : 0;
            for (int64_t i = 0; i < K; i++) {
                const int64_t s = t - K + 1 + i;
                if (s >= 0) a += (double)w[c * K + i] * x[s * C + c];
            }
            y[t * C + c] = silu_d(a);
        }
}

static void mamba2_ref(const la_model * m, int l, double * out, const double * xn, int64_t T,
                       int64_t G) {
    const int64_t D = m->D;
    int64_t E, H, nc, np;
    const float * nw = LW(m, l, "mixer.norm.weight", &E);
    const float * A_log = LW(m, l, "mixer.A_log", &H);
    const float * cw = LW(m, l, "mixer.conv1d.weight", &nc);
    const float * Win = LW(m, l, "mixer.in_proj.weight", &np);
    const int64_t P = E / H, Cd = np / D - E - H, K = nc / Cd, N = (Cd - E) / 2 / G;
    const float * bin = LW(m, l, "mixer.in_proj.bias", NULL);
    const float * cb = LW(m, l, "mixer.conv1d.bias", NULL);
    const float * dtb = LW(m, l, "mixer.dt_bias", NULL), *Dp = LW(m, l, "mixer.D", NULL);
    const int64_t Dpj = E + Cd + H;
    double * proj = calloc((size_t)(T * Dpj), 8), *xbp = calloc((size_t)(T * Cd), 8);
    double * xbc = calloc((size_t)(T * Cd), 8), *y = calloc((size_t)(T * E), 8);
    double * st = calloc((size_t)(H * P * N), 8), *u = calloc((size_t)(T * E), 8);
    lin(proj, xn, Win, bin, T, D, Dpj);
    // _, _, gate, hidden_states_B_C, dt = projected_states.split([0, 0, E, Cd, H])
    for (int64_t t = 0; t < T; t++) memcpy(xbp + t * Cd, proj + t * Dpj + E, (size_t)Cd * 8);
    conv_silu(xbc, xbp, cw, cb, T, Cd, K);
    for (int64_t t = 0; t < T; t++) {
        const double * x = xbc + t * Cd, *Bt = x + E, *Ct = x + E + G * N;
        for (int64_t h = 0; h < H; h++) {
            const int64_t g = h / (H / G);  // B.reshape(b, G, -1)[..., None, :].expand(..H//G..)
            const double dt = log1p(exp(proj[t * Dpj + E + Cd + h] + (double)dtb[h]));
            const double dA = exp(dt * -exp((double)A_log[h]));
            for (int64_t p = 0; p < P; p++) {
                double acc = 0;
                for (int64_t n = 0; n < N; n++) {
                    double * s = st + (h * P + p) * N + n;
                    *s = *s * dA + dt * Bt[g * N + n] * x[h * P + p];
                    acc += *s * Ct[g * N + n];
                }
                y[t * E + h * P + p] = acc + (double)Dp[h] * x[h * P + p];
            }
        }
        // RMSNormGated(norm_before_gate=False): rmsnorm(y * silu(gate)) * w
        for (int64_t i = 0; i < E; i++) u[t * E + i] = y[t * E + i] * silu_d(proj[t * Dpj + i]);
    }
    rms(y, u, nw, m->cfg.norm_eps, T, E);
    lin(out, y, LW(m, l, "mixer.out_proj.weight", NULL), LW(m, l, "mixer.out_proj.bias", NULL),
        T, E, D);
    free(proj), free(xbp), free(xbc), free(y), free(st), free(u);
}

static void mamba_ref(const la_model * m, int l, double * out, const double * xn, int64_t T) {
    const int64_t D = m->D;
    int64_t E, EN, ER, nc;
    LW(m, l, "mixer.D", &E);
    const float * A_log = LW(m, l, "mixer.A_log", &EN);
    const float * Wdt = LW(m, l, "mixer.dt_proj.weight", &ER);
    const float * cw = LW(m, l, "mixer.conv1d.weight", &nc);
    const int64_t N = EN / E, R = ER / E, K = nc / E;
    const float * Dp = LW(m, l, "mixer.D", NULL), *bdt = LW(m, l, "mixer.dt_proj.bias", NULL);
    double * proj = calloc((size_t)(T * 2 * E), 8), *xi = calloc((size_t)(T * E), 8);
    double * xc = calloc((size_t)(T * E), 8), *ssm = calloc((size_t)(T * (R + 2 * N)), 8);
    double * dt = calloc((size_t)(T * E), 8), *y = calloc((size_t)(T * E), 8);
    double * dtr = calloc((size_t)(T * R), 8), *st = calloc((size_t)(E * N), 8);
    lin(proj, xn, LW(m, l, "mixer.in_proj.weight", NULL), LW(m, l, "mixer.in_proj.bias", NULL), T,
        D, 2 * E);
    // hidden_states, gate = projected_states.chunk(2, dim=1)
    for (int64_t t = 0; t < T; t++) memcpy(xi + t * E, proj + t * 2 * E, (size_t)E * 8);
    conv_silu(xc, xi, cw, LW(m, l, "mixer.conv1d.bias", NULL), T, E, K);
    lin(ssm, xc, LW(m, l, "mixer.x_proj.weight", NULL), NULL, T, E, R + 2 * N);
    for (int64_t t = 0; t < T; t++) memcpy(dtr + t * R, ssm + t * (R + 2 * N), (size_t)R * 8);
    lin(dt, dtr, Wdt, bdt, T, R, E);
    for (int64_t t = 0; t < T; t++) {
        const double * Bt = ssm + t * (R + 2 * N) + R, *Ct = Bt + N;
        for (int64_t e = 0; e < E; e++) {
            const double d = log1p(exp(dt[t * E + e])), x = xc[t * E + e];
            double acc = 0;
            for (int64_t n = 0; n < N; n++) {
                double * s = st + e * N + n;
                *s = exp(-exp((double)A_log[e * N + n]) * d) * *s + d * Bt[n] * x;
                acc += *s * Ct[n];
            }
            y[t * E + e] = (acc + x * (double)Dp[e]) * silu_d(proj[t * 2 * E + E + e]);
        }
    }
    lin(out, y, LW(m, l, "mixer.out_proj.weight", NULL), LW(m, l, "mixer.out_proj.bias", NULL), T,
        E, D);
    free(proj), free(xi), free(xc), free(ssm), free(dt), free(y), free(dtr), free(st);
}

// Logits (T, V) of one sequence: embeddings, blocks h += mixer(norm(h)), norm_f, lm_head.
static void reference(const char * json, int ci, int64_t G) {
    la_model * m = la_test_model(json, 41 + (uint64_t)ci);
    const bool v2 = m->cfg.mixer == LA_MIXER_MAMBA2;
    const int64_t T = 23, D = m->D, V = m->vocab;
    int64_t ids[23];
    for (int64_t t = 0; t < T; t++) ids[t] = (t * 11 + 5) % V;
    double * h = calloc((size_t)(T * D), 8), *xn = calloc((size_t)(T * D), 8);
    double * mix = calloc((size_t)(T * D), 8), *lg = calloc((size_t)(T * V), 8);
    const float * emb = W(m, "backbone.embeddings.weight", NULL);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < D; i++) h[t * D + i] = (double)emb[ids[t] * D + i];
    for (int l = 0; l < m->L; l++) {
        rms(xn, h, LW(m, l, "norm.weight", NULL), m->cfg.norm_eps, T, D);
        if (v2) mamba2_ref(m, l, mix, xn, T, G);
        else mamba_ref(m, l, mix, xn, T);
        for (int64_t i = 0; i < T * D; i++) h[i] += mix[i];
    }
    rms(xn, h, W(m, "backbone.norm_f.weight", NULL), m->cfg.norm_eps, T, D);
    const float * head = m->cfg.tie_word_embeddings ? emb : W(m, "lm_head.weight", NULL);
    lin(lg, xn, head, NULL, T, D, V);
    float * got = la_test_alloc((size_t)(T * V) * 4);
    la_expect_status(la_model_logits(m, got, ids, 1, T, NULL, false), LA_STATUS_OK, "logits");
    char name[64];
    snprintf(name, sizeof name, "cfg %d logits vs the float64 fla reference", ci);
    la_expect_rel(name, got, lg, T * V, 1e-4);
    free(h), free(xn), free(mix), free(lg), free(got);
    la_model_free(m);
}

// ---------------------------------------------------------------------------------------------
// Long prefill: chunks longer than the ops' chunk (64) and the scan's blocks, from a cache, then
// decode steps, against one full forward (la_model_decode_check stays within one op chunk).

static void long_decode(const char * json, int ci) {
    la_model * m = la_test_model(json, 51 + (uint64_t)ci);
    const int64_t lens[] = { 70, 67, 1, 1, 1, 30 };
    la_model_decode_check_m(m, "cfg (long)", ci, 700 + (uint64_t)ci, 170, lens, 6, 8);
    la_model_free(m);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/la_mamba_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    names();
    init_values();
    bad_configs();
    for (int i = 0; i < NCFG; i++) {
        la_model_grad_check(configs[i], i);
        la_model_decode_check(configs[i], i);
        round_trip(configs[i], i);
        long_decode(configs[i], i);
    }
    static const int64_t groups[NCFG] = { 2, 1, 3, 0, 0 };  // n_groups of the Mamba2 configs
    for (int i = 0; i < NCFG; i++) reference(configs[i], i, groups[i]);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) printf("could not remove %s\n", g_dir);
    return la_test_summary();
}
