// config.json (OPS.md 6) and the hybrid attn spec (OPS.md 7).
//
// Every key is looked up in one table that says its type, which model types read it and where
// it lands in la_config; defaults are fla's, set per model type before the file is read. A key
// the table does not know, a value of the wrong type or out of range is an error that names the
// key: a checkpoint whose config is misread would load "successfully" into the wrong model.
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char * model_type;
    const char * arch;
    const char * shorthand;
} mixer_names[LA_MIXER_COUNT] = {
    [LA_MIXER_ATTN] = { "transformer", "TransformerForCausalLM", "attn" },
    [LA_MIXER_GDN] = { "gated_deltanet", "GatedDeltaNetForCausalLM", "gdn" },
    [LA_MIXER_DELTANET] = { "delta_net", "DeltaNetForCausalLM", "deltanet" },
    [LA_MIXER_GLA] = { "gla", "GLAForCausalLM", "gla" },
    [LA_MIXER_KDA] = { "kda", "KDAForCausalLM", "kda" },
    [LA_MIXER_RETNET] = { "retnet", "RetNetForCausalLM", "retnet" },
    [LA_MIXER_LINATTN] = { "linear_attn", "LinearAttentionForCausalLM", "linear_attn" },
    [LA_MIXER_HGRN2] = { "hgrn2", "HGRN2ForCausalLM", "hgrn2" },
    [LA_MIXER_MAMBA2] = { "mamba2", "Mamba2ForCausalLM", "mamba2" },
    [LA_MIXER_MAMBA] = { "mamba", "MambaForCausalLM", "mamba" },
    [LA_MIXER_RWKV7] = { "rwkv7", "RWKV7ForCausalLM", "rwkv7" },
};

const char * la_mixer_short(la_mixer k) {
    return (unsigned)k < LA_MIXER_COUNT ? mixer_names[k].shorthand : "?";
}

// ---------------------------------------------------------------------------------------------
// The key table

typedef enum {
    K_INT,        // integer
    K_INT_NULL,   // integer or null (null -> 0)
    K_F64,        // number
    K_F64_NULL,   // number or null (null -> NAN)
    K_BOOL,
    K_STR,        // string (fits the field)
    K_STR_NULL,   // string or null (null -> "")
    K_INFO,       // informational: any value, ignored
    K_FALSE,      // must be false (or absent)
    K_NULL,       // must be null (or absent)
    K_SWISH,      // hidden_act: must be "swish"/"silu"
    K_SQRELU,     // hidden_act of rwkv7's channel mix: must be "sqrelu"
} key_type;

#define M(k) (1u << (k))
#define M_ALL 0xFFFFu
#define M_LIN (M_ALL & ~M(LA_MIXER_ATTN))
#define OFF(f) offsetof(la_config, f), sizeof(((la_config *)0)->f)

static const struct cfg_key {
    const char * key;
    key_type     type;
    size_t       off, size;
    unsigned     models;
} keys[] = {
    { "vocab_size", K_INT, OFF(vocab_size), M_ALL },
    { "hidden_size", K_INT, OFF(hidden_size), M_ALL },
    { "num_hidden_layers", K_INT, OFF(num_hidden_layers), M_ALL },
    { "num_heads", K_INT, OFF(num_heads), M_ALL },
    { "max_position_embeddings", K_INT_NULL, OFF(max_position_embeddings), M_ALL },
    { "hidden_ratio", K_F64_NULL, OFF(hidden_ratio), M_ALL },
    { "intermediate_size", K_INT_NULL, OFF(intermediate_size), M_ALL },
    { "norm_eps", K_F64, OFF(norm_eps), M_ALL },
    { "initializer_range", K_F64, OFF(initializer_range), M_ALL },
    { "tie_word_embeddings", K_BOOL, OFF(tie_word_embeddings), M_ALL },
    { "fuse_norm", K_BOOL, OFF(fuse_norm), M_ALL },
    { "pad_token_id", K_INT_NULL, OFF(pad_token_id), M_ALL },
    { "bos_token_id", K_INT_NULL, OFF(bos_token_id), M_ALL },
    { "eos_token_id", K_INT_NULL, OFF(eos_token_id), M_ALL },
    { "hidden_act", K_SWISH, 0, 0, M_ALL & ~M(LA_MIXER_RWKV7) },
    { "hidden_act", K_SQRELU, 0, 0, M(LA_MIXER_RWKV7) },
    // rwkv7: kept in extra (fla's default is true; the rwkv7 layers read it, mixer_rwkv7.c)
    { "use_l2warp", K_BOOL, OFF(use_l2warp), M_ALL },
    { "attnres_block_size", K_NULL, 0, 0, M_ALL },
    // linattn's extension: real-valued inputs through a linear read-in (model.h)
    { "input_dim", K_INT, OFF(input_dim), M_ALL },
    // kernel choices and bookkeeping: no semantic effect
    { "attn_mode", K_INFO, 0, 0, M_ALL },
    { "use_cache", K_INFO, 0, 0, M_ALL },
    { "fuse_swiglu", K_INFO, 0, 0, M_ALL },
    { "fuse_cross_entropy", K_INFO, 0, 0, M_ALL },
    { "fuse_linear_cross_entropy", K_INFO, 0, 0, M_ALL },
    { "architectures", K_INFO, 0, 0, M_ALL },
    { "torch_dtype", K_INFO, 0, 0, M_ALL },
    { "dtype", K_INFO, 0, 0, M_ALL },
    { "transformers_version", K_INFO, 0, 0, M_ALL },
    { "_name_or_path", K_INFO, 0, 0, M_ALL },
    { "model_type", K_INFO, 0, 0, M_ALL },
    { "attn", K_INFO, 0, 0, M_LIN },  // parsed separately
    { "use_output_norm", K_INFO, 0, 0, M(LA_MIXER_DELTANET) },
    { "use_gk", K_INFO, 0, 0, M(LA_MIXER_GLA) },
    { "use_gv", K_INFO, 0, 0, M(LA_MIXER_GLA) },
    // linear mixers (OPS.md 6, per model)
    { "expand_k", K_F64, OFF(expand_k), M(LA_MIXER_GLA) | M(LA_MIXER_DELTANET) },
    { "expand_v", K_F64, OFF(expand_v),
      M(LA_MIXER_GLA) | M(LA_MIXER_DELTANET) | M(LA_MIXER_GDN) | M(LA_MIXER_KDA) },
    { "head_dim", K_INT, OFF(head_dim), M(LA_MIXER_GDN) | M(LA_MIXER_KDA) },
    { "num_v_heads", K_INT_NULL, OFF(num_v_heads), M(LA_MIXER_GDN) | M(LA_MIXER_KDA) },
    { "num_kv_heads", K_INT_NULL, OFF(num_kv_heads), M(LA_MIXER_GLA) | M(LA_MIXER_ATTN) },
    { "conv_size", K_INT, OFF(conv_size),
      M(LA_MIXER_GLA) | M(LA_MIXER_DELTANET) | M(LA_MIXER_GDN) | M(LA_MIXER_KDA) },
    { "use_short_conv", K_BOOL, OFF(use_short_conv),
      M(LA_MIXER_GLA) | M(LA_MIXER_DELTANET) | M(LA_MIXER_GDN) | M(LA_MIXER_KDA) },
    { "use_gate", K_BOOL, OFF(use_gate), M(LA_MIXER_DELTANET) | M(LA_MIXER_GDN) },
    { "use_beta", K_BOOL, OFF(use_beta), M(LA_MIXER_DELTANET) },
    { "allow_neg_eigval", K_BOOL, OFF(allow_neg_eigval),
      M(LA_MIXER_DELTANET) | M(LA_MIXER_GDN) | M(LA_MIXER_KDA) },
    { "use_output_gate", K_BOOL, OFF(use_output_gate), M(LA_MIXER_GLA) },
    { "safe_gate", K_BOOL, OFF(safe_gate), M(LA_MIXER_KDA) },
    { "lower_bound", K_F64_NULL, OFF(lower_bound), M(LA_MIXER_KDA) },
    { "clamp_min", K_F64_NULL, OFF(clamp_min), M(LA_MIXER_GLA) },
    { "elementwise_affine", K_BOOL, OFF(elementwise_affine), M(LA_MIXER_GLA) },
    { "feature_map", K_STR_NULL, OFF(feature_map), M(LA_MIXER_GLA) },
    { "qk_activation", K_STR, OFF(qk_activation), M(LA_MIXER_DELTANET) },
    { "qk_norm", K_STR, OFF(qk_norm), M(LA_MIXER_DELTANET) },
    // transformer (fla's TransformerConfig)
    { "qkv_bias", K_BOOL, OFF(qkv_bias), M(LA_MIXER_ATTN) },
    { "qk_norm", K_FALSE, 0, 0, M(LA_MIXER_ATTN) },
    { "window_size", K_INT_NULL, OFF(window_size), M(LA_MIXER_ATTN) },
    { "rope_theta", K_F64, OFF(rope_theta), M(LA_MIXER_ATTN) },
};

static void set_defaults(la_config * c, la_mixer k) {
    c->mixer = k;
    snprintf(c->model_type, sizeof c->model_type, "%s", mixer_names[k].model_type);
    c->vocab_size = 32000;
    c->hidden_size = 2048;
    c->num_hidden_layers = k == LA_MIXER_GDN ? 21 : 24;
    c->max_position_embeddings = 2048;
    c->hidden_ratio = 4;
    c->norm_eps = 1e-6;
    c->initializer_range = 0.02;
    c->fuse_norm = true;
    c->pad_token_id = -1;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
    c->conv_size = 4;
    c->use_short_conv = true;
    c->elementwise_affine = true;
    c->clamp_min = NAN;
    c->lower_bound = NAN;
    c->rope_theta = 10000.0;
    snprintf(c->qk_activation, sizeof c->qk_activation, "silu");
    snprintf(c->qk_norm, sizeof c->qk_norm, "l2");
    // fla's defaults: the MLP's "swish" (Mamba's "silu"; RWKV-7's channel mix "sqrelu"), and
    // L2Wrap on for RWKV-7 only
    snprintf(c->hidden_act, sizeof c->hidden_act, "%s",
             k == LA_MIXER_RWKV7 ? "sqrelu" : k == LA_MIXER_MAMBA || k == LA_MIXER_MAMBA2 ? "silu"
                                                                                          : "swish");
    c->use_l2warp = k == LA_MIXER_RWKV7;
    switch (k) {
    case LA_MIXER_GLA:
        c->expand_k = 0.5, c->expand_v = 1, c->num_heads = 4, c->use_short_conv = false;
        c->use_output_gate = true;
        break;
    case LA_MIXER_DELTANET:
        c->expand_k = 1, c->expand_v = 1, c->num_heads = 16, c->use_beta = true;
        break;
    case LA_MIXER_GDN:
        c->expand_v = 2, c->use_gate = true, c->head_dim = 256, c->num_heads = 6;
        break;
    case LA_MIXER_KDA:
        c->expand_v = 1, c->head_dim = 128, c->num_heads = 16;
        break;
    case LA_MIXER_ATTN:
        c->num_heads = 32;
        break;
    case LA_MIXER_RETNET:  // RetNetConfig: 8 heads and an MLP ratio of 2, not 4
        c->num_heads = 8, c->hidden_ratio = 2;
        break;
    case LA_MIXER_LINATTN:  // LinearAttentionConfig
        c->num_heads = 4;
        break;
    case LA_MIXER_HGRN2:  // HGRN2Config derives num_heads = hidden_size // expand_ratio (2048 // 128)
        c->num_heads = 16;
        break;
    case LA_MIXER_RWKV7:  // RWKV7Config: num_heads derives from head_dim (2048 // 64); LayerNorm eps
        c->num_heads = 32, c->norm_eps = 1e-5;
        break;
    case LA_MIXER_MAMBA2:  // Mamba2Config: 48 layers, eps 1e-5, pad 0; num_heads is derived
        // (expand * hidden_size / head_dim = 2 * 2048 / 64) and checked by the layer
        c->num_hidden_layers = 48, c->norm_eps = 1e-5, c->pad_token_id = 0, c->num_heads = 64;
        break;
    case LA_MIXER_MAMBA:  // MambaConfig: 48 layers, eps 1e-5, pad 0 (num_heads: not a key, unused)
        c->num_hidden_layers = 48, c->norm_eps = 1e-5, c->pad_token_id = 0, c->num_heads = 4;
        break;
    default:
        c->num_heads = 4;
        break;
    }
}

static bool json_int(const cJSON * v, int64_t * out) {
    if (!cJSON_IsNumber(v)) return false;
    const double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || fabs(d) > 9007199254740992.0) return false;
    *out = (int64_t)d;
    return true;
}

static la_status set_key(la_config * c, const struct cfg_key * k, const cJSON * v, char * err,
                         size_t errlen) {
    char * f = (char *)c + k->off;
    const char * n = k->key;
    int64_t iv;
    switch (k->type) {
    case K_INT:
        if (!json_int(v, &iv)) return la_cfg_fail(err, errlen, "config: '%s' must be an integer", n);
        *(int64_t *)f = iv;
        return LA_STATUS_OK;
    case K_INT_NULL:
        if (cJSON_IsNull(v)) {
            *(int64_t *)f = k->off == offsetof(la_config, pad_token_id) ||
                                    k->off == offsetof(la_config, bos_token_id) ||
                                    k->off == offsetof(la_config, eos_token_id)
                                ? -1
                                : 0;
            return LA_STATUS_OK;
        }
        if (!json_int(v, &iv))
            return la_cfg_fail(err, errlen, "config: '%s' must be an integer or null", n);
        *(int64_t *)f = iv;
        if (k->off == offsetof(la_config, intermediate_size)) c->intermediate_given = true;
        return LA_STATUS_OK;
    case K_F64:
    case K_F64_NULL:
        if (k->type == K_F64_NULL && cJSON_IsNull(v)) {
            *(double *)f = NAN;
            return LA_STATUS_OK;
        }
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
            return la_cfg_fail(err, errlen, "config: '%s' must be a finite number%s", n,
                               k->type == K_F64_NULL ? " or null" : "");
        *(double *)f = v->valuedouble;
        return LA_STATUS_OK;
    case K_BOOL:
        if (!cJSON_IsBool(v)) return la_cfg_fail(err, errlen, "config: '%s' must be true or false", n);
        *(bool *)f = cJSON_IsTrue(v);
        return LA_STATUS_OK;
    case K_STR:
    case K_STR_NULL:
        if (k->type == K_STR_NULL && cJSON_IsNull(v)) {
            f[0] = 0;
            return LA_STATUS_OK;
        }
        if (!cJSON_IsString(v) || strlen(v->valuestring) >= k->size)
            return la_cfg_fail(err, errlen, "config: '%s' must be a string of at most %zu bytes", n,
                               k->size - 1);
        memcpy(f, v->valuestring, strlen(v->valuestring) + 1);
        return LA_STATUS_OK;
    case K_INFO:
        return LA_STATUS_OK;
    case K_FALSE:
        if (cJSON_IsFalse(v) || cJSON_IsNull(v)) return LA_STATUS_OK;
        return la_cfg_fail(err, errlen, "config: '%s' must be false (not supported by linattn)", n);
    case K_NULL:
        if (cJSON_IsNull(v)) return LA_STATUS_OK;
        return la_cfg_fail(err, errlen, "config: '%s' must be null (not supported by linattn)", n);
    case K_SWISH:
        if (cJSON_IsString(v) &&
            (!strcmp(v->valuestring, "swish") || !strcmp(v->valuestring, "silu"))) {
            snprintf(c->hidden_act, sizeof c->hidden_act, "%s", v->valuestring);
            return LA_STATUS_OK;
        }
        return la_cfg_fail(err, errlen, "config: 'hidden_act' must be \"swish\"");
    case K_SQRELU:
        if (cJSON_IsString(v) && !strcmp(v->valuestring, "sqrelu")) return LA_STATUS_OK;
        return la_cfg_fail(err, errlen, "config: 'hidden_act' must be \"sqrelu\" (rwkv7)");
    }
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// The hybrid spec

static la_status parse_attn_dict(la_config * c, const cJSON * d, int gi, char * err,
                                 size_t errlen) {
    if (!cJSON_IsObject(d)) return la_cfg_fail(err, errlen, "config: 'attn' entries must be objects");
    la_attn_spec * s = &c->attn[gi];
    *s = (la_attn_spec){ .rope_theta = 10000.0 };
    const cJSON * layers = cJSON_GetObjectItemCaseSensitive(d, "layers");
    const cJSON * nh = cJSON_GetObjectItemCaseSensitive(d, "num_heads");
    if (!cJSON_IsArray(layers)) return la_cfg_fail(err, errlen, "config: 'attn.layers' is required (a list of layer indices)");
    if (!json_int(nh, &s->num_heads) || s->num_heads <= 0)
        return la_cfg_fail(err, errlen, "config: 'attn.num_heads' is required (an integer > 0)");
    s->num_kv_heads = s->num_heads;
    const cJSON * v = cJSON_GetObjectItemCaseSensitive(d, "num_kv_heads");
    if (v && !cJSON_IsNull(v) && (!json_int(v, &s->num_kv_heads) || s->num_kv_heads <= 0))
        return la_cfg_fail(err, errlen, "config: 'attn.num_kv_heads' must be an integer > 0");
    v = cJSON_GetObjectItemCaseSensitive(d, "qkv_bias");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) return la_cfg_fail(err, errlen, "config: 'attn.qkv_bias' must be true or false");
        s->qkv_bias = cJSON_IsTrue(v);
    }
    v = cJSON_GetObjectItemCaseSensitive(d, "window_size");
    if (v && !cJSON_IsNull(v) && (!json_int(v, &s->window_size) || s->window_size <= 0))
        return la_cfg_fail(err, errlen, "config: 'attn.window_size' must be an integer > 0 or null");
    v = cJSON_GetObjectItemCaseSensitive(d, "rope_theta");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble <= 0)
            return la_cfg_fail(err, errlen, "config: 'attn.rope_theta' must be a finite number > 0");
        s->rope_theta = v->valuedouble;
    }
    if (s->num_heads % s->num_kv_heads)
        return la_cfg_fail(err, errlen, "config: 'attn.num_heads' %lld is not a multiple of "
                           "'attn.num_kv_heads' %lld", (long long)s->num_heads,
                           (long long)s->num_kv_heads);
    if (c->hidden_size % s->num_heads || (c->hidden_size / s->num_heads) % 2)
        return la_cfg_fail(err, errlen, "config: 'attn.num_heads' %lld must divide hidden_size %lld "
                           "into an even head dim (RoPE)", (long long)s->num_heads,
                           (long long)c->hidden_size);
    const cJSON * it;
    cJSON_ArrayForEach(it, layers) {
        int64_t l;
        if (!json_int(it, &l) || l < 0 || l >= c->num_hidden_layers)
            return la_cfg_fail(err, errlen, "config: 'attn.layers' entry must be a layer index in "
                               "[0, %lld)", (long long)c->num_hidden_layers);
        if (c->attn_of[l] >= 0)
            return la_cfg_fail(err, errlen, "config: 'attn.layers' lists layer %lld twice", (long long)l);
        c->attn_of[l] = (int8_t)gi;
    }
    return LA_STATUS_OK;
}

static la_status parse_attn(la_config * c, const cJSON * a, char * err, size_t errlen) {
    if (!a || cJSON_IsNull(a)) return LA_STATUS_OK;
    if (cJSON_IsObject(a)) {
        c->n_attn = 1;
        return parse_attn_dict(c, a, 0, err, errlen);
    }
    if (!cJSON_IsArray(a)) return la_cfg_fail(err, errlen, "config: 'attn' must be null, an object or a list of objects");
    const int n = cJSON_GetArraySize(a);
    if (n > LA_MAX_ATTN_GROUPS)
        return la_cfg_fail(err, errlen, "config: 'attn' has %d entries (at most %d)", n, LA_MAX_ATTN_GROUPS);
    c->n_attn = n;
    for (int i = 0; i < n; i++) {
        la_status s = parse_attn_dict(c, cJSON_GetArrayItem(a, i), i, err, errlen);
        if (s) return s;
    }
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// Parse, check, dump

static la_status check_config(la_config * c, char * err, size_t errlen) {
#define NEED(cond, ...) do { if (!(cond)) return la_cfg_fail(err, errlen, __VA_ARGS__); } while (0)
    NEED(c->vocab_size > 0 && c->vocab_size <= (1 << 24), "config: 'vocab_size' must be in [1, 2^24]");
    NEED(c->hidden_size > 0 && c->hidden_size <= 65536, "config: 'hidden_size' must be in [1, 65536]");
    NEED(c->num_hidden_layers > 0 && c->num_hidden_layers <= 1024,
         "config: 'num_hidden_layers' must be in [1, 1024]");
    NEED(c->num_heads > 0, "config: 'num_heads' must be > 0");
    NEED(c->norm_eps > 0 && c->norm_eps < 1, "config: 'norm_eps' must be in (0, 1)");
    NEED(c->initializer_range >= 0 && c->initializer_range < 10,
         "config: 'initializer_range' must be in [0, 10)");
    if (!c->intermediate_given || c->intermediate_size == 0) {
        double hr = isnan(c->hidden_ratio) ? 4.0 : c->hidden_ratio;
        NEED(hr > 0 && hr < 1000, "config: 'hidden_ratio' must be in (0, 1000)");
        const int64_t raw = (int64_t)floor((double)c->hidden_size * hr * 2.0 / 3.0);
        c->intermediate_size = 256 * ((raw + 255) / 256);  // OPS.md 4.4
        c->intermediate_given = false;
    }
    NEED(c->intermediate_size > 0 && c->intermediate_size <= (1 << 20),
         "config: 'intermediate_size' must be in [1, 2^20]");
    for (int64_t id = 0; id < 3; id++) {
        const int64_t t = id == 0 ? c->pad_token_id : id == 1 ? c->bos_token_id : c->eos_token_id;
        NEED(t >= -1 && t < c->vocab_size, "config: '%s' must be null or in [0, vocab_size)",
             id == 0 ? "pad_token_id" : id == 1 ? "bos_token_id" : "eos_token_id");
    }
    NEED(c->conv_size >= 1 && c->conv_size <= 64, "config: 'conv_size' must be in [1, 64]");
    NEED(c->window_size >= 0, "config: 'window_size' must be > 0 or null");
    NEED(c->num_kv_heads >= 0, "config: 'num_kv_heads' must be > 0 or null");
    NEED(c->num_v_heads >= 0, "config: 'num_v_heads' must be > 0 or null");
    NEED(c->head_dim >= 0, "config: 'head_dim' must be > 0");
    NEED(c->rope_theta > 0, "config: 'rope_theta' must be > 0");
    NEED(c->input_dim >= 0 && c->input_dim <= 65536,
         "config: 'input_dim' must be in [0, 65536] (0: token inputs)");
    return LA_STATUS_OK;
#undef NEED
}

// Python's json module writes Infinity, -Infinity and NaN, which JSON does not have (HF's
// Mamba2 configs hold "time_step_limit": [0.0, Infinity]). Outside strings they become 1e999
// (which strtod reads as inf) and null; the keys that need finite values then reject them.
static char * json_relax(const char * in) {
    const size_t n = strlen(in);
    char * out = malloc(2 * n + 1), *o = out;
    if (!out) return NULL;
    bool str = false;
    for (size_t i = 0; i < n;) {
        const char ch = in[i];
        if (str) {
            *o++ = ch, i++;
            if (ch == '\\' && i < n) *o++ = in[i++];
            else if (ch == '"') str = false;
        } else if (ch == '"') {
            str = true, *o++ = ch, i++;
        } else if (!strncmp(in + i, "Infinity", 8)) {
            memcpy(o, "1e999", 5), o += 5, i += 8;
        } else if (!strncmp(in + i, "NaN", 3)) {
            memcpy(o, "null", 4), o += 4, i += 3;
        } else {
            *o++ = ch, i++;
        }
    }
    *o = 0;
    return out;
}

la_status la_config_parse(la_config * c, const char * json, char * err, size_t errlen) {
    memset(c, 0, sizeof *c);
    char * relaxed = json_relax(json);
    if (!relaxed) return LA_STATUS_NOMEM;
    cJSON * root = cJSON_Parse(relaxed);
    const ptrdiff_t bad = root ? 0 : cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - relaxed : 0;
    free(relaxed);
    if (!root) return la_cfg_fail(err, errlen, "config: not valid JSON (near byte %td)", bad);
    la_status s = LA_STATUS_OK;
    if (!cJSON_IsObject(root)) {
        s = la_cfg_fail(err, errlen, "config: the top level must be a JSON object");
        goto done;
    }
    const cJSON * mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        s = la_cfg_fail(err, errlen, "config: 'model_type' is required (a string)");
        goto done;
    }
    int kind = -1;
    for (int k = 0; k < LA_MIXER_COUNT; k++)
        if (!strcmp(mt->valuestring, mixer_names[k].model_type)) kind = k;
    if (kind < 0) {
        s = la_cfg_fail(err, errlen, "config: 'model_type' \"%.40s\" is not one of transformer, "
                        "gated_deltanet, delta_net, gla, kda, retnet, linear_attn, hgrn2, mamba2, "
                        "mamba, rwkv7", mt->valuestring);
        goto done;
    }
    set_defaults(c, (la_mixer)kind);
    const cJSON * it;
    cJSON_ArrayForEach(it, root) {
        const struct cfg_key * k = NULL;
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (!strcmp(keys[i].key, it->string) && (keys[i].models & M(kind))) k = &keys[i];
        if (!k) {
            // Models whose layers read their own keys keep the rest for them to check.
            if (kind >= LA_MIXER_RETNET) {
                if (!c->extra) c->extra = cJSON_CreateObject();
                cJSON_AddItemToObject(c->extra, it->string, cJSON_Duplicate(it, true));
                continue;
            }
            s = la_cfg_fail(err, errlen, "config: unknown key '%.60s' for model_type %s",
                            it->string, c->model_type);
            goto done;
        }
        if ((s = set_key(c, k, it, err, errlen))) goto done;
    }
    if ((s = check_config(c, err, errlen))) goto done;
    c->attn_of = malloc((size_t)c->num_hidden_layers);
    if (!c->attn_of) {
        s = LA_STATUS_NOMEM;
        goto done;
    }
    memset(c->attn_of, -1, (size_t)c->num_hidden_layers);
    if (kind == LA_MIXER_ATTN) {
        // A pure transformer: every layer is attention with the model's own keys.
        la_attn_spec * a = &c->attn[0];
        *a = (la_attn_spec){ .num_heads = c->num_heads,
                             .num_kv_heads = c->num_kv_heads ? c->num_kv_heads : c->num_heads,
                             .window_size = c->window_size, .qkv_bias = c->qkv_bias,
                             .rope_theta = c->rope_theta };
        if (a->num_heads % a->num_kv_heads || c->hidden_size % a->num_heads ||
            (c->hidden_size / a->num_heads) % 2) {
            s = la_cfg_fail(err, errlen, "config: 'num_heads' %lld must divide hidden_size into an "
                            "even head dim and be a multiple of 'num_kv_heads'",
                            (long long)a->num_heads);
            goto done;
        }
        c->n_attn = 1;
        memset(c->attn_of, 0, (size_t)c->num_hidden_layers);
    } else {
        s = parse_attn(c, cJSON_GetObjectItemCaseSensitive(root, "attn"), err, errlen);
    }
done:
    cJSON_Delete(root);
    if (s) la_config_free(c);
    return s;
}

void la_config_free(la_config * c) {
    if (!c) return;
    cJSON_Delete(c->extra);
    free(c->attn_of);
    c->extra = NULL;
    c->attn_of = NULL;
}

static void add_num(cJSON * o, const char * k, double v) { cJSON_AddNumberToObject(o, k, v); }
static void add_int_null(cJSON * o, const char * k, int64_t v, int64_t null_value) {
    if (v == null_value) cJSON_AddNullToObject(o, k);
    else cJSON_AddNumberToObject(o, k, (double)v);
}
static void add_f64_null(cJSON * o, const char * k, double v) {
    if (isnan(v)) cJSON_AddNullToObject(o, k);
    else cJSON_AddNumberToObject(o, k, v);
}

static cJSON * dump_attn(const la_config * c) {
    if (c->n_attn == 0) return cJSON_CreateNull();
    cJSON * list = cJSON_CreateArray();
    for (int g = 0; g < c->n_attn; g++) {
        const la_attn_spec * s = &c->attn[g];
        cJSON * d = cJSON_CreateObject();
        cJSON * ls = cJSON_AddArrayToObject(d, "layers");
        for (int64_t l = 0; l < c->num_hidden_layers; l++)
            if (c->attn_of[l] == g) cJSON_AddItemToArray(ls, cJSON_CreateNumber((double)l));
        add_num(d, "num_heads", (double)s->num_heads);
        add_num(d, "num_kv_heads", (double)s->num_kv_heads);
        cJSON_AddBoolToObject(d, "qkv_bias", s->qkv_bias);
        add_int_null(d, "window_size", s->window_size, 0);
        add_num(d, "rope_theta", s->rope_theta);
        cJSON_AddItemToArray(list, d);
    }
    if (c->n_attn == 1) {  // fla writes one dict
        cJSON * one = cJSON_DetachItemFromArray(list, 0);
        cJSON_Delete(list);
        return one;
    }
    return list;
}

char * la_config_dump(const la_config * c) {
    cJSON * o = cJSON_CreateObject();
    cJSON * arch = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(mixer_names[c->mixer].arch));
    cJSON_AddStringToObject(o, "model_type", c->model_type);
    add_num(o, "vocab_size", (double)c->vocab_size);
    add_num(o, "hidden_size", (double)c->hidden_size);
    add_num(o, "num_hidden_layers", (double)c->num_hidden_layers);
    add_num(o, "num_heads", (double)c->num_heads);
    add_num(o, "max_position_embeddings", (double)c->max_position_embeddings);
    add_f64_null(o, "hidden_ratio", c->hidden_ratio);
    add_num(o, "intermediate_size", (double)c->intermediate_size);
    cJSON_AddStringToObject(o, "hidden_act", c->hidden_act);
    cJSON_AddBoolToObject(o, "use_l2warp", c->use_l2warp);
    add_num(o, "norm_eps", c->norm_eps);
    add_num(o, "initializer_range", c->initializer_range);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddBoolToObject(o, "fuse_norm", c->fuse_norm);
    add_int_null(o, "pad_token_id", c->pad_token_id, -1);
    add_int_null(o, "bos_token_id", c->bos_token_id, -1);
    add_int_null(o, "eos_token_id", c->eos_token_id, -1);
    // written only when set, so token models' configs stay fla's
    if (c->input_dim > 0) add_num(o, "input_dim", (double)c->input_dim);
    cJSON_AddBoolToObject(o, "use_cache", true);
    const unsigned mk = M(c->mixer);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const struct cfg_key * k = &keys[i];
        if (k->models == M_ALL || !(k->models & mk) || k->size == 0) continue;
        const char * f = (const char *)c + k->off;
        switch (k->type) {
        case K_INT: add_num(o, k->key, (double)*(const int64_t *)f); break;
        case K_INT_NULL: add_int_null(o, k->key, *(const int64_t *)f, 0); break;
        case K_F64: add_num(o, k->key, *(const double *)f); break;
        case K_F64_NULL: add_f64_null(o, k->key, *(const double *)f); break;
        case K_BOOL: cJSON_AddBoolToObject(o, k->key, *(const bool *)f); break;
        case K_STR: cJSON_AddStringToObject(o, k->key, f); break;
        case K_STR_NULL:
            if (f[0]) cJSON_AddStringToObject(o, k->key, f);
            else cJSON_AddNullToObject(o, k->key);
            break;
        default: break;
        }
    }
    if (c->mixer != LA_MIXER_ATTN) cJSON_AddItemToObject(o, "attn", dump_attn(c));
    if (c->extra) {
        const cJSON * it;
        cJSON_ArrayForEach(it, c->extra)
            cJSON_AddItemToObject(o, it->string, cJSON_Duplicate(it, true));
    }
    char * s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Keys kept in cfg.extra

static const cJSON * extra_item(const la_config * c, const char * key) {
    return c->extra ? cJSON_GetObjectItemCaseSensitive(c->extra, key) : NULL;
}

la_status la_extra_num(const la_config * c, const char * key, double def, double * out,
                       char * err, size_t errlen) {
    const cJSON * v = extra_item(c, key);
    if (!v) {
        *out = def;
        return LA_STATUS_OK;
    }
    if (cJSON_IsNull(v)) {
        *out = NAN;
        return LA_STATUS_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return la_cfg_fail(err, errlen, "config: '%s' must be a finite number", key);
    *out = v->valuedouble;
    return LA_STATUS_OK;
}

la_status la_extra_int(const la_config * c, const char * key, int64_t def, int64_t * out,
                       char * err, size_t errlen) {
    const cJSON * v = extra_item(c, key);
    if (!v || cJSON_IsNull(v)) {
        *out = v ? 0 : def;
        return LA_STATUS_OK;
    }
    if (!json_int(v, out)) return la_cfg_fail(err, errlen, "config: '%s' must be an integer", key);
    return LA_STATUS_OK;
}

la_status la_extra_bool(const la_config * c, const char * key, bool def, bool * out, char * err,
                        size_t errlen) {
    const cJSON * v = extra_item(c, key);
    if (!v) {
        *out = def;
        return LA_STATUS_OK;
    }
    if (!cJSON_IsBool(v)) return la_cfg_fail(err, errlen, "config: '%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return LA_STATUS_OK;
}

la_status la_extra_str(const la_config * c, const char * key, const char * def, char * out,
                       size_t outlen, char * err, size_t errlen) {
    const cJSON * v = extra_item(c, key);
    const char * s = !v ? def : cJSON_IsNull(v) ? "" : cJSON_IsString(v) ? v->valuestring : NULL;
    if (!s || strlen(s) >= outlen)
        return la_cfg_fail(err, errlen, "config: '%s' must be a string of at most %zu bytes or null",
                           key, outlen - 1);
    memcpy(out, s, strlen(s) + 1);
    return LA_STATUS_OK;
}

la_status la_extra_check(const la_config * c, const char * const * known, char * err,
                         size_t errlen) {
    const cJSON * it;
    if (!c->extra) return LA_STATUS_OK;
    cJSON_ArrayForEach(it, c->extra) {
        bool ok = false;
        for (int i = 0; known[i] && !ok; i++) ok = !strcmp(known[i], it->string);
        if (!ok)
            return la_cfg_fail(err, errlen, "config: unknown key '%.60s' for model_type %s",
                               it->string, c->model_type);
    }
    return LA_STATUS_OK;
}
