// Models with the RetNet, LinearAttention and HGRN2 mixers: whole-model gradients against finite
// differences and chunked prefill + decode against one full forward for tiny configs covering
// each option (feature maps, grouped heads, gates, norms, short convs, lower bounds, hybrids
// with softmax-attention layers); checkpoint round trips; fla's state-dict names and shapes;
// fla's config defaults and config errors.
#include "model/model.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TINY \
    "\"vocab_size\":37,\"hidden_size\":16,\"intermediate_size\":24,\"initializer_range\":0.25"

// Tiny models; initializer_range is large so gradients stand well above float32 noise. kinked:
// the feature map has relu kinks (relu, t2r, dpfp), checked by grad_check_kinked below.
// fla normalises each head's output by its RMS, and the first token's output is
// s (q0 . k0) v0: with a sign-indefinite q . k (RetNet without the gate, elementwise_product,
// identity, and the relu maps' exact zeros) the normed output flips across a width of
// ~sqrt(norm_eps) when q0 . k0 passes 0. That is fla's function, but it defeats finite
// differences at some seeds, so those configs use norm_eps 0.1 (SMOOTH).
#define SMOOTH ",\"norm_eps\":0.1"
static const struct {
    const char * json;
    bool         kinked;
} configs[] = {
    // RetNet: fla's defaults (expand_k 1, expand_v 2, swish output gate fused with the norm)
    { "{\"model_type\":\"retnet\"," TINY ",\"num_hidden_layers\":2,\"num_heads\":2}", false },
    // RetNet: grouped kv heads, tanh feature map, no output gate, no norm weight
    { "{\"model_type\":\"retnet\"," TINY SMOOTH ",\"num_hidden_layers\":2,\"num_heads\":4,"
      "\"num_kv_heads\":2,\"expand_v\":1,\"feature_map\":\"tanh\",\"use_output_gate\":false,"
      "\"elementwise_affine\":false}", false },
    // RetNet: unfused norm (g_norm), gelu feature map, tied embeddings, a softmax layer
    { "{\"model_type\":\"retnet\"," TINY ",\"num_hidden_layers\":3,\"num_heads\":2,"
      "\"expand_k\":0.5,\"feature_map\":\"gelu\",\"fuse_norm\":false,"
      "\"tie_word_embeddings\":true,\"attn\":{\"layers\":[1],\"num_heads\":2,\"num_kv_heads\":1}}",
      false },
    // RetNet: relu feature map
    { "{\"model_type\":\"retnet\"," TINY ",\"num_hidden_layers\":2,\"num_heads\":2,"
      "\"feature_map\":\"relu\"}", true },
    // LinearAttention: fla's defaults (elementwise_product)
    { "{\"model_type\":\"linear_attn\"," TINY SMOOTH ",\"num_hidden_layers\":2,\"num_heads\":2}",
      false },
    // hedgehog, grouped kv heads, norm_q, norm_k, normalised output, no norm weight
    { "{\"model_type\":\"linear_attn\"," TINY ",\"num_hidden_layers\":2,\"num_heads\":2,"
      "\"num_kv_heads\":1,\"feature_map\":\"hedgehog\",\"norm_q\":true,\"norm_k\":true,"
      "\"norm_feature_map\":true,\"elementwise_affine\":false}", false },
    // t2r shared by q and k, wider values
    { "{\"model_type\":\"linear_attn\"," TINY SMOOTH ",\"num_hidden_layers\":2,\"num_heads\":2,"
      "\"feature_map\":\"t2r\",\"tie_feature_map_qk\":true,\"expand_v\":2}", true },
    // dpfp (F = 8 dk), 2-wide key heads (each relu input is a kink of both halves)
    { "{\"model_type\":\"linear_attn\"," TINY SMOOTH ",\"num_hidden_layers\":2,\"num_heads\":2,"
      "\"expand_k\":0.25,\"feature_map\":\"dpfp\"}", true },
    // relu with grouped kv heads
    { "{\"model_type\":\"linear_attn\"," TINY SMOOTH ",\"num_hidden_layers\":2,\"num_heads\":4,"
      "\"num_kv_heads\":2,\"feature_map\":\"relu\"}", true },
    // elu + 1 with the normalised output and norm_k, after a softmax layer
    { "{\"model_type\":\"linear_attn\"," TINY ",\"num_hidden_layers\":2,\"num_heads\":2,"
      "\"feature_map\":\"elu\",\"norm_k\":true,\"norm_feature_map\":true,"
      "\"attn\":{\"layers\":[0],\"num_heads\":4,\"window_size\":5}}", false },
    // identity with grouped kv heads
    { "{\"model_type\":\"linear_attn\"," TINY SMOOTH ",\"num_hidden_layers\":2,\"num_heads\":4,"
      "\"num_kv_heads\":2,\"feature_map\":\"identity\"}", false },
    // HGRN2: lower bounds (fla's default), 2 heads
    { "{\"model_type\":\"hgrn2\"," TINY ",\"num_hidden_layers\":3,\"expand_ratio\":8}", false },
    // HGRN2: short convs, no lower bounds, no norm weight, 4 heads
    { "{\"model_type\":\"hgrn2\"," TINY ",\"num_hidden_layers\":2,\"expand_ratio\":4,"
      "\"use_short_conv\":true,\"conv_size\":3,\"use_lower_bound\":false,"
      "\"elementwise_affine\":false}", false },
    // HGRN2: expand_ratio from num_heads, a softmax layer between bounded layers
    { "{\"model_type\":\"hgrn2\"," TINY ",\"num_hidden_layers\":3,\"expand_ratio\":null,"
      "\"num_heads\":2,\"attn\":{\"layers\":[1],\"num_heads\":2}}", false },
    // HGRN2: one head, lower bounds and convs
    { "{\"model_type\":\"hgrn2\"," TINY ",\"num_hidden_layers\":2,\"expand_ratio\":16,"
      "\"use_short_conv\":true}", false },
};
#define NCFG (int)(sizeof configs / sizeof configs[0])

// ---------------------------------------------------------------------------------------------
// fla state-dict names and shapes (fla/layers/{multiscale_retention,linear_attn,hgrn2}.py and
// the models' root names), written out by hand.

static la_model * build(const char * json) {
    char err[256] = "";
    la_model * m = NULL;
    la_status s = la_model_from_json(&m, json, err, sizeof err);
    la_expect(s == LA_STATUS_OK, "config rejected: %s", err);
    return m;
}

static void expect_names(const char * tag, const char * json, const char * const * want) {
    la_model * m = build(json);
    if (!m) return;
    int nwant = 0;
    while (want[nwant]) nwant++;
    la_expect(m->n_par == nwant, "%s: %d tensors, fla has %d", tag, m->n_par, nwant);
    for (int i = 0; i < nwant; i++) {
        int found = 0;
        for (int32_t p = 0; p < m->n_par; p++) {
            const la_param * P = &m->par[p];
            char got[160];
            int n = snprintf(got, sizeof got, "%s [", P->name);
            for (int d = 0; d < P->ndim; d++)
                n += snprintf(got + n, sizeof got - (size_t)n, "%s%lld", d ? "," : "",
                              (long long)P->shape[d]);
            snprintf(got + n, sizeof got - (size_t)n, "]");
            found += !strcmp(got, want[i]);
        }
        la_expect(found == 1, "%s: '%s' found %d times", tag, want[i], found);
    }
    la_model_free(m);
}

#define BLOCK0(I)                                                                            \
    "model.layers.0.attn_norm.weight [16]", "model.layers.0.mlp_norm.weight [16]",           \
        "model.layers.0.mlp.gate_proj.weight [" I ",16]",                                   \
        "model.layers.0.mlp.up_proj.weight [" I ",16]",                                     \
        "model.layers.0.mlp.down_proj.weight [16," I "]"
#define ROOT "model.embeddings.weight [37,16]", "model.norm.weight [16]", "lm_head.weight [37,16]"

static void test_names(void) {
    static const char * const retnet[] = {
        ROOT, BLOCK0("24"),
        "model.layers.0.attn.q_proj.weight [16,16]", "model.layers.0.attn.k_proj.weight [8,16]",
        "model.layers.0.attn.v_proj.weight [16,16]", "model.layers.0.attn.g_proj.weight [32,16]",
        "model.layers.0.attn.o_proj.weight [16,32]",
        "model.layers.0.attn.g_norm_swish_gate.weight [8]", NULL,
    };
    expect_names("retnet", "{\"model_type\":\"retnet\"," TINY ",\"num_hidden_layers\":1,"
                 "\"num_heads\":4,\"num_kv_heads\":2}", retnet);
    static const char * const retnet_unfused[] = {
        ROOT, BLOCK0("24"),
        "model.layers.0.attn.q_proj.weight [8,16]", "model.layers.0.attn.k_proj.weight [8,16]",
        "model.layers.0.attn.v_proj.weight [16,16]", "model.layers.0.attn.o_proj.weight [16,16]",
        "model.layers.0.attn.g_norm.weight [8]", NULL,
    };
    expect_names("retnet no gate", "{\"model_type\":\"retnet\"," TINY ",\"num_hidden_layers\":1,"
                 "\"num_heads\":2,\"expand_k\":0.5,\"expand_v\":1,\"use_output_gate\":false}",
                 retnet_unfused);
    static const char * const linattn[] = {
        ROOT, BLOCK0("24"),
        "model.layers.0.attn.feature_map_q.layer1.weight [8,8]",
        "model.layers.0.attn.feature_map_q.layer1.bias [8]",
        "model.layers.0.attn.feature_map_q.layer2.weight [8,8]",
        "model.layers.0.attn.feature_map_q.layer2.bias [8]",
        "model.layers.0.attn.feature_map_k.layer1.weight [8,8]",
        "model.layers.0.attn.feature_map_k.layer1.bias [8]",
        "model.layers.0.attn.feature_map_k.layer2.weight [8,8]",
        "model.layers.0.attn.feature_map_k.layer2.bias [8]",
        "model.layers.0.attn.q_proj.weight [16,16]", "model.layers.0.attn.k_proj.weight [8,16]",
        "model.layers.0.attn.v_proj.weight [8,16]", "model.layers.0.attn.norm.weight [8]",
        "model.layers.0.attn.o_proj.weight [16,16]", NULL,
    };
    expect_names("linear_attn", "{\"model_type\":\"linear_attn\"," TINY ","
                 "\"num_hidden_layers\":1,\"num_heads\":2,\"num_kv_heads\":1}", linattn);
    static const char * const hedgehog[] = {
        ROOT, BLOCK0("24"),
        "model.layers.0.attn.feature_map_q.layer.weight [4,4]",
        "model.layers.0.attn.feature_map_q.layer.bias [4]",
        "model.layers.0.attn.feature_map_k.layer.weight [4,4]",
        "model.layers.0.attn.feature_map_k.layer.bias [4]",
        "model.layers.0.attn.q_proj.weight [16,16]", "model.layers.0.attn.k_proj.weight [16,16]",
        "model.layers.0.attn.v_proj.weight [16,16]", "model.layers.0.attn.o_proj.weight [16,16]",
        NULL,
    };
    expect_names("linear_attn hedgehog", "{\"model_type\":\"linear_attn\"," TINY ","
                 "\"num_hidden_layers\":1,\"num_heads\":4,\"feature_map\":\"hedgehog\","
                 "\"elementwise_affine\":false}", hedgehog);
    static const char * const t2r[] = {
        ROOT, BLOCK0("24"),
        "model.layers.0.attn.feature_map_q.layer.weight [8,8]",
        "model.layers.0.attn.q_proj.weight [16,16]", "model.layers.0.attn.k_proj.weight [16,16]",
        "model.layers.0.attn.v_proj.weight [16,16]", "model.layers.0.attn.norm.weight [8]",
        "model.layers.0.attn.o_proj.weight [16,16]", NULL,
    };
    expect_names("linear_attn t2r tied", "{\"model_type\":\"linear_attn\"," TINY ","
                 "\"num_hidden_layers\":1,\"num_heads\":2,\"feature_map\":\"t2r\","
                 "\"tie_feature_map_qk\":true}", t2r);
    static const char * const hgrn2[] = {
        ROOT, BLOCK0("24"), "model.lower_bounds [2,16]",
        "model.layers.0.attn.q_proj.weight [16,16]", "model.layers.0.attn.f_proj.weight [16,16]",
        "model.layers.0.attn.i_proj.weight [16,16]", "model.layers.0.attn.g_norm.weight [16]",
        "model.layers.0.attn.o_proj.weight [16,16]",
        "model.layers.1.attn_norm.weight [16]", "model.layers.1.mlp_norm.weight [16]",
        "model.layers.1.mlp.gate_proj.weight [24,16]", "model.layers.1.mlp.up_proj.weight [24,16]",
        "model.layers.1.mlp.down_proj.weight [16,24]",
        "model.layers.1.attn.q_proj.weight [16,16]", "model.layers.1.attn.f_proj.weight [16,16]",
        "model.layers.1.attn.i_proj.weight [16,16]", "model.layers.1.attn.g_norm.weight [16]",
        "model.layers.1.attn.o_proj.weight [16,16]", NULL,
    };
    expect_names("hgrn2", "{\"model_type\":\"hgrn2\"," TINY ",\"num_hidden_layers\":2,"
                 "\"expand_ratio\":4}", hgrn2);
    static const char * const hgrn2_conv[] = {
        ROOT, BLOCK0("24"),
        "model.layers.0.attn.q_proj.weight [16,16]", "model.layers.0.attn.f_proj.weight [16,16]",
        "model.layers.0.attn.i_proj.weight [16,16]",
        "model.layers.0.attn.q_conv1d.weight [16,1,4]",
        "model.layers.0.attn.f_conv1d.weight [16,1,4]",
        "model.layers.0.attn.i_conv1d.weight [16,1,4]",
        "model.layers.0.attn.g_norm.weight [16]", "model.layers.0.attn.o_proj.weight [16,16]",
        NULL,
    };
    expect_names("hgrn2 conv", "{\"model_type\":\"hgrn2\"," TINY ",\"num_hidden_layers\":1,"
                 "\"expand_ratio\":8,\"use_short_conv\":true,\"use_lower_bound\":false}",
                 hgrn2_conv);
}

// ---------------------------------------------------------------------------------------------
// fla's defaults and config errors

static void expect_error(const char * json, const char * needle) {
    char err[256] = "";
    la_model * m = NULL;
    la_status s = la_model_from_json(&m, json, err, sizeof err);
    la_expect(s != LA_STATUS_OK && strstr(err, needle) != NULL,
              "expected an error naming '%s', got status %d: %s", needle, (int)s, err);
    la_model_free(m);
}

static void test_config(void) {
    // RetNet: hidden_ratio 2 (I = 256 ceil(int(512 * 2 * 2/3) / 256) = 768), 8 heads, head_v
    // 2 head_k; LinearAttention: ratio 4 (1536), 4 heads; HGRN2: 128-wide key heads.
    la_model * m = build("{\"model_type\":\"retnet\",\"hidden_size\":512,\"num_hidden_layers\":1,"
                         "\"vocab_size\":8}");
    if (m) {
        la_expect(m->I == 768 && m->layers[0].H == 8 && m->layers[0].dk == 64 &&
                      m->layers[0].dv == 128,
                  "retnet defaults: I %lld, H %lld, dk %lld, dv %lld", (long long)m->I,
                  (long long)m->layers[0].H, (long long)m->layers[0].dk,
                  (long long)m->layers[0].dv);
        la_model_free(m);
    }
    m = build("{\"model_type\":\"linear_attn\",\"hidden_size\":512,\"num_hidden_layers\":1,"
              "\"vocab_size\":8}");
    if (m) {
        la_expect(m->I == 1536 && m->layers[0].H == 4 && m->layers[0].F == 128,
                  "linear_attn defaults: I %lld, H %lld, F %lld", (long long)m->I,
                  (long long)m->layers[0].H, (long long)m->layers[0].F);
        la_model_free(m);
    }
    m = build("{\"model_type\":\"hgrn2\",\"hidden_size\":512,\"num_hidden_layers\":2,"
              "\"vocab_size\":8}");
    if (m) {
        la_expect(m->I == 1536 && m->layers[1].H == 4 && m->layers[1].dk == 128 &&
                      m->p_root[0] >= 0,
                  "hgrn2 defaults: I %lld, H %lld, expand_ratio %lld", (long long)m->I,
                  (long long)m->layers[1].H, (long long)m->layers[1].dk);
        la_model_free(m);
    }
    expect_error("{\"model_type\":\"retnet\"," TINY ",\"num_heads\":2,\"foo\":1}", "'foo'");
    expect_error("{\"model_type\":\"retnet\"," TINY ",\"num_heads\":2,\"feature_map\":\"elu\"}",
                 "'feature_map'");
    expect_error("{\"model_type\":\"retnet\"," TINY ",\"num_heads\":2,\"expand_k\":0.3}",
                 "'expand_k'");
    expect_error("{\"model_type\":\"linear_attn\"," TINY ",\"feature_map\":\"cosformer\"}",
                 "'feature_map'");
    expect_error("{\"model_type\":\"linear_attn\"," TINY ",\"feature_map\":null}",
                 "'feature_map'");
    expect_error("{\"model_type\":\"linear_attn\"," TINY ",\"use_short_conv\":true}",
                 "'use_short_conv'");
    expect_error("{\"model_type\":\"hgrn2\"," TINY ",\"expand_ratio\":5}", "'expand_ratio'");
    expect_error("{\"model_type\":\"hgrn2\"," TINY ",\"expand_ratio\":8,\"feature_map\":\"elu\"}",
                 "'feature_map'");
}

// ---------------------------------------------------------------------------------------------
// Gradients of maps with kinks
//
// la_model_grad_check's directional check (same seeds, batch and tolerance), for feature maps
// with relu kinks: a central difference whose interval holds the kink of one of the hundreds of
// relu inputs is off by a share of that input's slope jump. A kink at distance delta spoils only
// steps above delta, so each direction is tried with steps 2e-3, 1e-3, ..., 1.25e-4 (five
// halvings of la_model_grad_check_m) and passes when one agrees.



// ---------------------------------------------------------------------------------------------
// Checkpoint round trip: config.json (with the layer keys kept in cfg.extra) and the weights
// under fla's names reload into the same model, logits included.

static void test_roundtrip(const char * json, int ci) {
    char dir[] = "/tmp/la_mixers2_XXXXXX", ck[64];
    if (!la_expect(mkdtemp(dir) != NULL, "mkdtemp")) return;
    snprintf(ck, sizeof ck, "%s/ck", dir);
    la_model * m = la_test_model(json, 31 + (uint64_t)ci);
    la_model_round_trip_check(m, ck, "cfg", ci);
    la_model_free(m);
    char p[96];
    snprintf(p, sizeof p, "%s/config.json", ck), unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", ck), unlink(p);
    rmdir(ck), rmdir(dir);
}

int main(void) {
    test_names();
    test_config();
    for (int i = 0; i < NCFG; i++) {
        if (configs[i].kinked) {
            la_model * m = la_test_model(configs[i].json, 11 + (uint64_t)i);
            la_model_grad_check_m(m, "cfg (kinks)", i, 100 + (uint64_t)i, 5, false);
            la_model_free(m);
        } else {
            la_model_grad_check(configs[i].json, i);
        }
        la_model_decode_check(configs[i].json, i);
        test_roundtrip(configs[i].json, i);
    }
    return la_test_summary();
}
