// Model mixers DeltaNet, GLA and KDA (OPS.md 5.1, 5.2, 5.4): whole-model gradients against
// finite differences and chunked prefill + decode against one full forward, over tiny configs
// that cover the option flags; fla's tensor names and shapes (OPS.md 8) per option set; the
// initial values fla gives the special tensors (OPS.md 4.6); grouped heads and renaming options
// against the plain layer (same logits); configs the layers reject.
#include "model/model.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


// Tiny models. initializer_range 0.2 keeps gradients well above float32 noise in the finite
// differences, yet the loss close enough to quadratic over the step (2e-3 along a random unit
// direction): at 0.25 the directional differences of two conv weights (DeltaNet's l2-normed q,
// GLA's unnormalised k) were off by 5% from curvature, while per-element differences with
// smaller steps converged to the analytic gradients.
#define COMMON "\"vocab_size\":37,\"hidden_size\":32,\"intermediate_size\":40," \
               "\"initializer_range\":0.2"
static const char * const configs[] = {
    // DeltaNet defaults (conv, silu, l2, beta) with a softmax layer in the middle
    "{\"model_type\":\"delta_net\"," COMMON ",\"num_hidden_layers\":3,\"num_heads\":2,"
    "\"attn\":{\"layers\":[1],\"num_heads\":4,\"num_kv_heads\":2}}",
    // DeltaNet: relu + sum norm (no epsilon, as fla), no beta, output gate
    "{\"model_type\":\"delta_net\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":2,"
    "\"qk_activation\":\"relu\",\"qk_norm\":\"sum\",\"use_beta\":false,\"use_gate\":true}",
    // DeltaNet: elu + 1, no conv, negative eigenvalues, narrow values
    "{\"model_type\":\"delta_net\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":2,"
    "\"qk_activation\":\"elu\",\"use_short_conv\":false,\"allow_neg_eigval\":true,"
    "\"expand_v\":0.5,\"norm_eps\":1e-5}",
    // DeltaNet: identity, no beta with negative eigenvalues (beta = 2), gate, conv 3
    "{\"model_type\":\"delta_net\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":4,"
    "\"qk_activation\":\"identity\",\"use_beta\":false,\"allow_neg_eigval\":true,"
    "\"use_gate\":true,\"conv_size\":3,\"expand_k\":0.5}",
    // GLA defaults (fused swish-gated norm, no conv), tied embeddings
    "{\"model_type\":\"gla\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":2,"
    "\"tie_word_embeddings\":true}",
    // GLA: kv-head groups, clamp_min, no output gate, short conv, relu feature map
    "{\"model_type\":\"gla\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":4,"
    "\"num_kv_heads\":2,\"expand_k\":1,\"expand_v\":0.5,\"clamp_min\":-0.05,"
    "\"use_output_gate\":false,\"use_short_conv\":true,\"feature_map\":\"relu\"}",
    // GLA: unfused norm (g_norm), no norm weight, one kv head, swish feature map, conv
    "{\"model_type\":\"gla\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":2,"
    "\"num_kv_heads\":1,\"fuse_norm\":false,\"elementwise_affine\":false,"
    "\"feature_map\":\"swish\",\"use_short_conv\":true,\"conv_size\":2}",
    // GLA: gelu feature map, a windowed softmax layer first
    "{\"model_type\":\"gla\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":2,"
    "\"feature_map\":\"gelu\",\"attn\":{\"layers\":[0],\"num_heads\":2,\"window_size\":5}}",
    // KDA defaults (conv, softplus gate)
    "{\"model_type\":\"kda\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":2,"
    "\"head_dim\":8}",
    // KDA: lower-bound gate with safe_gate, grouped values (HV = 2H), no conv, neg eigenvalues
    "{\"model_type\":\"kda\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":2,"
    "\"head_dim\":8,\"num_v_heads\":4,\"use_short_conv\":false,\"lower_bound\":-5,"
    "\"safe_gate\":true,\"allow_neg_eigval\":true}",
    // KDA: lower bound without safe_gate, wide values, a softmax layer last
    "{\"model_type\":\"kda\"," COMMON ",\"num_hidden_layers\":2,\"num_heads\":1,"
    "\"head_dim\":8,\"num_v_heads\":2,\"expand_v\":2,\"lower_bound\":-2,"
    "\"attn\":{\"layers\":[1],\"num_heads\":2}}",
};
#define NCFG (int)(sizeof configs / sizeof configs[0])

// ---------------------------------------------------------------------------------------------
// Names and shapes: one-layer models against fla's lists (OPS.md 8). "name d0,d1,...".

#define ONE "\"vocab_size\":10,\"hidden_size\":32,\"intermediate_size\":40,\"num_hidden_layers\":1"
#define BLOCK "model.embeddings.weight 10,32", "model.layers.0.attn_norm.weight 32", \
              "model.layers.0.mlp_norm.weight 32", "model.layers.0.mlp.gate_proj.weight 40,32", \
              "model.layers.0.mlp.up_proj.weight 40,32", \
              "model.layers.0.mlp.down_proj.weight 32,40", "model.norm.weight 32", \
              "lm_head.weight 10,32"
#define A "model.layers.0.attn."

typedef struct {
    const char * json;
    const char * names[32];
} names_case;

static const names_case names_cases[] = {
    { "{\"model_type\":\"delta_net\"," ONE ",\"num_heads\":2}",
      { BLOCK, A "q_proj.weight 32,32", A "k_proj.weight 32,32", A "v_proj.weight 32,32",
        A "b_proj.weight 2,32", A "q_conv1d.weight 32,1,4", A "k_conv1d.weight 32,1,4",
        A "v_conv1d.weight 32,1,4", A "o_norm.weight 16", A "o_proj.weight 32,32" } },
    { "{\"model_type\":\"delta_net\"," ONE ",\"num_heads\":2,\"use_beta\":false,"
      "\"use_gate\":true,\"use_short_conv\":false,\"expand_v\":0.5}",
      { BLOCK, A "q_proj.weight 32,32", A "k_proj.weight 32,32", A "v_proj.weight 16,32",
        A "g_proj.weight 16,32", A "o_norm.weight 8", A "o_proj.weight 32,16" } },
    { "{\"model_type\":\"gla\"," ONE ",\"num_heads\":2}",
      { BLOCK, A "q_proj.weight 16,32", A "k_proj.weight 16,32", A "v_proj.weight 32,32",
        A "g_proj.weight 32,32", A "gk_proj.0.weight 16,32", A "gk_proj.1.weight 16,16",
        A "gk_proj.1.bias 16", A "g_norm_swish_gate.weight 16", A "o_proj.weight 32,32" } },
    { "{\"model_type\":\"gla\"," ONE ",\"num_heads\":4,\"num_kv_heads\":2,\"expand_k\":1,"
      "\"use_short_conv\":true,\"fuse_norm\":false}",
      { BLOCK, A "q_proj.weight 32,32", A "k_proj.weight 16,32", A "v_proj.weight 16,32",
        A "g_proj.weight 32,32", A "gk_proj.0.weight 16,32", A "gk_proj.1.weight 16,16",
        A "gk_proj.1.bias 16", A "g_norm.weight 8", A "q_conv1d.weight 32,1,4",
        A "k_conv1d.weight 16,1,4", A "v_conv1d.weight 16,1,4", A "o_proj.weight 32,32" } },
    { "{\"model_type\":\"gla\"," ONE ",\"num_heads\":2,\"use_output_gate\":false}",
      { BLOCK, A "q_proj.weight 16,32", A "k_proj.weight 16,32", A "v_proj.weight 32,32",
        A "gk_proj.0.weight 16,32", A "gk_proj.1.weight 16,16", A "gk_proj.1.bias 16",
        A "g_norm.weight 16", A "o_proj.weight 32,32" } },
    { "{\"model_type\":\"gla\"," ONE ",\"num_heads\":2,\"elementwise_affine\":false,"
      "\"tie_word_embeddings\":true}",
      { "model.embeddings.weight 10,32", "model.layers.0.attn_norm.weight 32",
        "model.layers.0.mlp_norm.weight 32", "model.layers.0.mlp.gate_proj.weight 40,32",
        "model.layers.0.mlp.up_proj.weight 40,32", "model.layers.0.mlp.down_proj.weight 32,40",
        "model.norm.weight 32", A "q_proj.weight 16,32", A "k_proj.weight 16,32",
        A "v_proj.weight 32,32", A "g_proj.weight 32,32", A "gk_proj.0.weight 16,32",
        A "gk_proj.1.weight 16,16", A "gk_proj.1.bias 16", A "o_proj.weight 32,32" } },
    { "{\"model_type\":\"kda\"," ONE ",\"num_heads\":2,\"head_dim\":8}",
      { BLOCK, A "q_proj.weight 16,32", A "k_proj.weight 16,32", A "v_proj.weight 16,32",
        A "q_conv1d.weight 16,1,4", A "k_conv1d.weight 16,1,4", A "v_conv1d.weight 16,1,4",
        A "f_proj.0.weight 8,32", A "f_proj.1.weight 16,8", A "b_proj.weight 2,32",
        A "A_log 2", A "dt_bias 16", A "g_proj.0.weight 8,32", A "g_proj.1.weight 16,8",
        A "g_proj.1.bias 16", A "o_norm.weight 8", A "o_proj.weight 32,16" } },
    { "{\"model_type\":\"kda\"," ONE ",\"num_heads\":2,\"head_dim\":8,\"num_v_heads\":4,"
      "\"expand_v\":2,\"use_short_conv\":false,\"safe_gate\":true,\"lower_bound\":-5}",
      { BLOCK, A "q_proj.weight 16,32", A "k_proj.weight 16,32", A "v_proj.weight 64,32",
        A "f_proj.0.weight 16,32", A "f_proj.1.weight 32,16", A "b_proj.weight 4,32",
        A "A_log 4", A "dt_bias 32", A "g_proj.0.weight 16,32", A "g_proj.1.weight 64,16",
        A "g_proj.1.bias 64", A "o_norm.weight 16", A "o_proj.weight 32,64" } },
};

static int cmp_str(const void * a, const void * b) {
    return strcmp(*(const char * const *)a, *(const char * const *)b);
}

static const float * param(const la_model * m, const char * name, int64_t * n) {
    for (int32_t i = 0; i < m->n_par; i++)
        if (!strcmp(m->par[i].name, name)) {
            *n = m->par[i].numel;
            return m->w + m->par[i].off;
        }
    *n = 0;
    return NULL;
}

static void names_check(int ci) {
    const names_case * nc = &names_cases[ci];
    la_model * m = la_test_model(nc->json, 5);
    int nwant = 0;
    while (nwant < 32 && nc->names[nwant]) nwant++;
    char ** got = la_test_alloc((size_t)m->n_par * sizeof *got);
    for (int32_t i = 0; i < m->n_par; i++) {
        const la_param * p = &m->par[i];
        char buf[160];
        int len = snprintf(buf, sizeof buf, "%s ", p->name);
        for (int d = 0; d < p->ndim; d++)
            len += snprintf(buf + len, sizeof buf - (size_t)len, "%s%lld", d ? "," : "",
                            (long long)p->shape[d]);
        got[i] = strdup(buf);
    }
    const char ** want = la_test_alloc((size_t)nwant * sizeof *want);
    memcpy(want, nc->names, (size_t)nwant * sizeof *want);
    qsort(got, (size_t)m->n_par, sizeof *got, cmp_str);
    qsort(want, (size_t)nwant, sizeof *want, cmp_str);
    bool same = m->n_par == nwant;
    for (int i = 0; same && i < nwant; i++) same = !strcmp(got[i], want[i]);
    if (!same) {
        printf("names case %d: got %d tensors, want %d\n", ci, m->n_par, nwant);
        for (int i = 0; i < LA_MAX(m->n_par, nwant); i++)
            printf("  %-56s | %s\n", i < m->n_par ? got[i] : "", i < nwant ? want[i] : "");
    }
    la_check(same, "names case %d (%s ...): fla's tensor names and shapes", ci, nc->json + 1);
    for (int32_t i = 0; i < m->n_par; i++) free(got[i]);
    free(got);
    free(want);
    la_model_free(m);
}

// Initial values fla gives the special tensors (OPS.md 4.6): biases 0; KDA's A_log = log U(1, 16)
// (zeros with safe_gate) and dt_bias the inverse softplus of dt in [1e-3, 0.1].
static void init_check(void) {
    la_model * m = la_test_model(names_cases[7].json, 3);  // KDA, safe_gate
    int64_t n;
    const float * w = param(m, A "A_log", &n);
    bool ok = w && n == 4;
    for (int64_t i = 0; ok && i < n; i++) ok = w[i] == 0.0f;
    la_check(ok, "kda safe_gate: A_log initialised to zeros");
    w = param(m, A "dt_bias", &n);
    const double lo = log(expm1(1e-3)) - 1e-4, hi = log(expm1(0.1)) + 1e-4;
    ok = w && n == 32;
    for (int64_t i = 0; ok && i < n; i++) ok = (double)w[i] >= lo && (double)w[i] <= hi;
    la_check(ok, "kda: dt_bias = inverse softplus of dt in [1e-3, 0.1]");
    w = param(m, A "g_proj.1.bias", &n);
    ok = w && n == 64;
    for (int64_t i = 0; ok && i < n; i++) ok = w[i] == 0.0f;
    la_check(ok, "kda: g_proj.1.bias initialised to zeros");
    la_model_free(m);
    m = la_test_model(names_cases[6].json, 3);  // KDA, no safe_gate
    w = param(m, A "A_log", &n);
    ok = w && n == 2;
    for (int64_t i = 0; ok && i < n; i++) ok = w[i] >= 0.0f && w[i] <= (float)log(16.0) + 1e-6f;
    la_check(ok, "kda: A_log = log U(1, 16)");
    la_model_free(m);
    m = la_test_model(names_cases[2].json, 3);  // GLA
    w = param(m, A "gk_proj.1.bias", &n);
    ok = w && n == 16;
    for (int64_t i = 0; ok && i < n; i++) ok = w[i] == 0.0f;
    la_check(ok, "gla: gk_proj.1.bias initialised to zeros");
    la_model_free(m);
}

// ---------------------------------------------------------------------------------------------
// Equivalences: a layer with grouped heads, or with an option that only renames or drops a
// tensor, computes what the plain layer computes from the corresponding weights.

// dst's tensor dn from src's tensor sn: row r of src (row = the trailing dims) becomes rows
// (h G + g) d + i of dst for r = h d + i and every g < G (fla's repeat '(h d) -> (h g) d').
static bool put_rows(la_model * dst, const char * dn, const la_model * src, const char * sn,
                     int64_t d, int64_t G) {
    int64_t nd, ns;
    float * w = (float *)param(dst, dn, &nd);
    const float * v = param(src, sn, &ns);
    if (!w || !v || nd != ns * G) return false;
    int64_t rows = 0;
    for (int32_t i = 0; i < src->n_par; i++)
        if (!strcmp(src->par[i].name, sn)) rows = src->par[i].shape[0];
    const int64_t len = ns / rows;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < G; g++)
            memcpy(w + (((r / d) * G + g) * d + r % d) * len, v + r * len, (size_t)len * 4);
    return true;
}

typedef struct {
    const char * name, * src_name;  // src_name NULL: the same name
    int64_t      d, G;              // put_rows' head size and group count (G = 0: plain copy)
} put_spec;

// Logits of a (2, 23) batch from model a and from model b, whose tensors are a's (same names
// and shapes) except those in spec; they must agree to float32 rounding.
static void equiv_check(const char * what, const char * ja, const char * jb, const put_spec * spec,
                        int nspec) {
    la_model * a = la_test_model(ja, 7), *b = la_test_model(jb, 8);
    bool ok = true;
    for (int32_t i = 0; i < b->n_par; i++) {
        const la_param * p = &b->par[i];
        const put_spec * sp = NULL;
        const size_t ln = strlen(p->name);
        for (int j = 0; j < nspec; j++) {  // spec names are suffixes after the "attn." prefix
            const size_t ls = strlen(spec[j].name);
            if (ln > ls && p->name[ln - ls - 1] == '.' && !strcmp(p->name + ln - ls, spec[j].name))
                sp = &spec[j];
        }
        char sn[LA_NAME_MAX];
        snprintf(sn, sizeof sn, "%s", p->name);
        if (sp && sp->src_name)  // the same prefix, another suffix
            snprintf(sn + ln - strlen(sp->name), sizeof sn - (ln - strlen(sp->name)), "%s",
                     sp->src_name);
        int64_t ns;
        if (!param(a, sn, &ns)) continue;  // b's own tensor (e.g. a norm weight of ones)
        ok = ok && put_rows(b, p->name, a, sn, sp && sp->G ? sp->d : p->shape[0],
                            sp && sp->G ? sp->G : 1);
    }
    la_check(ok, "%s: weights carried over", what);
    const int64_t B = 2, T = 23, V = a->vocab;
    int64_t ids[2 * 23];
    la_rng r;
    la_rng_seed(&r, 77);
    for (int64_t i = 0; i < B * T; i++) ids[i] = (int64_t)(la_rng_uniform(&r) * (double)V);
    float * la = la_test_alloc((size_t)(B * T * V) * 4);
    float * lb = la_test_alloc((size_t)(B * T * V) * 4);
    la_expect_status(la_model_logits(a, la, ids, B, T, NULL, false), LA_STATUS_OK, what);
    la_expect_status(la_model_logits(b, lb, ids, B, T, NULL, false), LA_STATUS_OK, what);
    double * ref = la_to_f64(la, B * T * V);
    char name[128];
    snprintf(name, sizeof name, "%s: logits", what);
    la_expect_rel(name, lb, ref, B * T * V, 1e-5);
    free(ref);
    free(la);
    free(lb);
    la_model_free(a);
    la_model_free(b);
}

#define GLA_EQ "\"model_type\":\"gla\"," ONE ",\"num_heads\":4,\"expand_k\":1," \
               "\"expand_v\":0.5,\"use_short_conv\":true,\"clamp_min\":-0.05," \
               "\"feature_map\":\"relu\",\"initializer_range\":0.2"
#define KDA_EQ "\"model_type\":\"kda\"," ONE ",\"head_dim\":8,\"num_v_heads\":4," \
               "\"lower_bound\":-3,\"initializer_range\":0.2"

static void equiv_checks(void) {
    // GLA with 2 kv heads of 4 (G = 2) = GLA with 4 kv heads whose k, v, gk rows repeat
    const put_spec gla_kv[] = {
        { "k_proj.weight", NULL, 8, 2 },    { "k_conv1d.weight", NULL, 8, 2 },
        { "gk_proj.1.weight", NULL, 8, 2 }, { "gk_proj.1.bias", NULL, 8, 2 },
        { "v_proj.weight", NULL, 4, 2 },    { "v_conv1d.weight", NULL, 4, 2 },
    };
    equiv_check("gla num_kv_heads 2 of 4", "{" GLA_EQ ",\"num_kv_heads\":2}",
                "{" GLA_EQ ",\"num_kv_heads\":4}", gla_kv, 6);
    // fuse_norm only renames the gated norm's weight
    const put_spec gla_fuse[] = { { "g_norm.weight", "g_norm_swish_gate.weight", 0, 0 } };
    equiv_check("gla fuse_norm true vs false", "{" GLA_EQ "}", "{" GLA_EQ ",\"fuse_norm\":false}",
                gla_fuse, 1);
    // elementwise_affine false: the norm weight of ones (b's own, from its init) is dropped
    equiv_check("gla elementwise_affine false vs true", "{" GLA_EQ ",\"elementwise_affine\":false}",
                "{" GLA_EQ "}", NULL, 0);
    // KDA with 2 q/k heads for 4 value heads = KDA with 4 q/k heads whose rows repeat
    const put_spec kda_gva[] = {
        { "q_proj.weight", NULL, 8, 2 },   { "k_proj.weight", NULL, 8, 2 },
        { "q_conv1d.weight", NULL, 8, 2 }, { "k_conv1d.weight", NULL, 8, 2 },
    };
    equiv_check("kda num_v_heads 4 of num_heads 2", "{" KDA_EQ ",\"num_heads\":2}",
                "{" KDA_EQ ",\"num_heads\":4}", kda_gva, 4);
}

// ---------------------------------------------------------------------------------------------
// Configs the layers reject: the error names the key.

static void reject_check(void) {
    static const struct { const char * json, * key; } bad[] = {
        { "{\"model_type\":\"delta_net\"," ONE ",\"num_heads\":2,\"qk_activation\":\"tanh\"}",
          "'qk_activation'" },
        { "{\"model_type\":\"delta_net\"," ONE ",\"num_heads\":2,\"qk_norm\":\"l1\"}",
          "'qk_norm'" },
        { "{\"model_type\":\"delta_net\"," ONE ",\"num_heads\":3}", "num_heads" },
        // fla's ACT2FN has no 'elu' (nor 'identity'): its GLA cannot be built with them
        { "{\"model_type\":\"gla\"," ONE ",\"num_heads\":2,\"feature_map\":\"elu\"}",
          "'feature_map'" },
        { "{\"model_type\":\"gla\"," ONE ",\"num_heads\":2,\"feature_map\":\"identity\"}",
          "'feature_map'" },
        { "{\"model_type\":\"gla\"," ONE ",\"num_heads\":4,\"num_kv_heads\":3}",
          "'num_kv_heads'" },
        { "{\"model_type\":\"kda\"," ONE ",\"num_heads\":2,\"head_dim\":8,\"safe_gate\":true}",
          "'safe_gate'" },
        { "{\"model_type\":\"kda\"," ONE ",\"num_heads\":2,\"head_dim\":8,\"safe_gate\":true,"
          "\"lower_bound\":-6}", "'safe_gate'" },
        { "{\"model_type\":\"kda\"," ONE ",\"num_heads\":2,\"head_dim\":8,\"lower_bound\":0.5}",
          "'lower_bound'" },
        { "{\"model_type\":\"kda\"," ONE ",\"num_heads\":2,\"head_dim\":8,\"num_v_heads\":3}",
          "'num_v_heads'" },
        { "{\"model_type\":\"kda\"," ONE ",\"num_heads\":2,\"head_dim\":8,\"expand_v\":0.3}",
          "'expand_v'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        la_model * m = NULL;
        const la_status s = la_model_from_json(&m, bad[i].json, err, sizeof err);
        la_check(s != LA_STATUS_OK && !m && strstr(err, bad[i].key), "rejected, naming %s: %s",
                 bad[i].key, err);
        la_model_free(m);
    }
}

int main(void) {
    for (int i = 0; i < NCFG; i++) {
        la_model_grad_check(configs[i], i);
        la_model_decode_check(configs[i], i);
    }
    for (int i = 0; i < (int)(sizeof names_cases / sizeof names_cases[0]); i++) names_check(i);
    init_check();
    equiv_checks();
    reject_check();
    return la_test_summary();
}
