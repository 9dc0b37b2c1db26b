// Models (OPS.md 4-8): the fla causal LM built from the ops and the layer toolkit.
//
//   h_0 = embeddings[ids]                                          (B*T, D)
//   h   = h + mixer_l(attn_norm_l(h));  h = h + mlp_l(mlp_norm_l(h))     for l < L
//   logits = norm(h_L) W_lm^T                                      (B*T, vocab)
//
// With input_dim d > 0 (a linattn extension for vector inputs, e.g. in-context regression)
// the ends change and the blocks stay:
//
//   h_0  = x W_in^T + b_in        x (B*T, d), W_in (D, d)          (<root>read_in)
//   pred = norm(h_L) W_out^T + b_out                    (B*T, 1)   (read_out)
//
// A model owns four arenas of the same layout (parameters, gradients, AdamW's two moments):
// every tensor is a named slice (la_param) whose name is fla's state-dict key, so saving and
// loading is a walk over the table. Activations and scratch live in two more arenas sized up
// front by la_model_reserve for a batch shape. Each token mixer is a vtable (la_mixer_vt)
// that registers its parameters, states its activation and scratch needs, and runs forward
// (training, or with a decode cache) and backward.
#ifndef LA_MODEL_H
#define LA_MODEL_H

#include "internal.h"
#include "linattn.h"

#include <cJSON.h>
#include <stdio.h>

#define LA_MAX_ATTN_GROUPS 16
#define LA_MAX_LAYER_PARAMS 40
#define LA_NAME_MAX 96

// ---------------------------------------------------------------------------------------------
// Configuration (config.json, OPS.md 6-7)

typedef enum la_mixer {
    LA_MIXER_ATTN = 0,  // softmax attention (transformer, hybrid layers)
    LA_MIXER_GDN,       // gated_deltanet
    LA_MIXER_DELTANET,  // delta_net
    LA_MIXER_GLA,       // gla
    LA_MIXER_KDA,       // kda
    LA_MIXER_RETNET,    // retnet (MultiScaleRetention)
    LA_MIXER_LINATTN,   // linear_attn
    LA_MIXER_HGRN2,     // hgrn2
    LA_MIXER_MAMBA2,    // mamba2
    LA_MIXER_MAMBA,     // mamba
    LA_MIXER_RWKV7,     // rwkv7
    LA_MIXER_COUNT
} la_mixer;

typedef struct la_attn_spec {  // one dict of the hybrid spec (OPS.md 7)
    int64_t num_heads, num_kv_heads, window_size;  // window 0 = full causal
    bool    qkv_bias;
    double  rope_theta;
} la_attn_spec;

typedef struct la_config {
    char     model_type[32];
    la_mixer mixer;          // the linear mixer of model_type (ATTN for "transformer")
    // common keys
    int64_t vocab_size, hidden_size, num_hidden_layers, num_heads, max_position_embeddings;
    int64_t intermediate_size;  // resolved (OPS.md 4.4 when null in the file)
    bool    intermediate_given;
    double  hidden_ratio, norm_eps, initializer_range;
    bool    tie_word_embeddings, fuse_norm;
    bool    use_l2warp;       // fla's L2Wrap in training (model.c head)
    int64_t input_dim;        // linattn's extension: d > 0 makes a real-valued model (read_in)
    char    hidden_act[16];   // as written ("swish" / "silu"; rwkv7 "sqrelu")
    int64_t pad_token_id, bos_token_id, eos_token_id;  // -1 = null
    // linear-mixer keys (each model reads its own; OPS.md 6)
    double  expand_k, expand_v;
    int64_t head_dim, num_v_heads, num_kv_heads, conv_size;  // 0 = null
    bool    use_short_conv, use_gate, use_beta, allow_neg_eigval, use_output_gate, safe_gate;
    bool    elementwise_affine;
    char    qk_activation[16], qk_norm[8], feature_map[24];
    double  clamp_min, lower_bound;  // NAN = null
    // transformer keys
    bool    qkv_bias;
    int64_t window_size;
    double  rope_theta;
    // other models' keys live in `extra` (kept verbatim, read by their layers)
    cJSON * extra;
    // hybrid spec: layer l uses attn[attn_of[l]] when attn_of[l] >= 0
    int          n_attn;
    la_attn_spec attn[LA_MAX_ATTN_GROUPS];
    int8_t *     attn_of;  // (num_hidden_layers)
} la_config;

// Parses config.json text; err names the offending key.
la_status la_config_parse(la_config * c, const char * json, char * err, size_t errlen);
// The config.json text (fla keys; model_type and architectures included). malloc'd.
char *    la_config_dump(const la_config * c);
void      la_config_free(la_config * c);
const char * la_mixer_short(la_mixer k);  // "gdn", "attn", ...

// ---------------------------------------------------------------------------------------------
// Parameters

typedef enum la_init {
    LA_INIT_NORMAL = 0,  // N(0, initializer_range)
    LA_INIT_ZERO,
    LA_INIT_ONE,
    LA_INIT_A_LOG_GDN,   // log U(0, 16)
    LA_INIT_A_LOG_KDA,   // log U(1, 16)
    LA_INIT_DT_BIAS,     // inverse softplus of dt ~ exp(U(log 1e-3, log 0.1)), dt >= 1e-4
    LA_INIT_CUSTOM,      // the layer's init hook fills it
} la_init;

typedef struct la_param {
    char    name[LA_NAME_MAX];  // fla state-dict key
    int32_t ndim;
    int64_t shape[4];
    int64_t numel;
    size_t  off;                // floats into the arenas (64-byte aligned)
    la_init init;
    bool    decay;              // AdamW weight decay applies
} la_param;

typedef struct la_model la_model;
typedef struct la_layer la_layer;

// Decode cache of one layer for N sequences (layout chosen by the mixer).
typedef struct la_lcache {
    float *   f;    // mixer-defined floats: recurrent states, conv caches, KV cache
    int64_t * len;  // (N) tokens seen per sequence
    int64_t   cap;  // KV capacity (attention)
} la_lcache;

// One forward or backward call of a mixer.
typedef struct la_call {
    int64_t     B, T;       // x, y (B, T, hidden)
    float *     act;        // the layer's saved activations (act_floats)
    void *      work;       // shared scratch (work_bytes), 64-byte aligned
    size_t      work_size;
    la_lcache * cache;      // NULL: training / stateless; else read and updated
} la_call;

typedef struct la_mixer_vt {
    const char * name;  // shorthand, as in --layers
    // Sets the layer's dimensions and registers its parameters (la_layer_param).
    la_status (*build)(la_model * m, la_layer * L, char * err, size_t errlen);
    // Floats of saved activations for a (B, T) batch; scratch bytes for forward/backward.
    size_t (*act_floats)(const la_layer * L, int64_t B, int64_t T);
    size_t (*work_bytes)(const la_layer * L, int64_t B, int64_t T, bool backward);
    // Decode cache floats per sequence (cap = KV capacity, used by attention only).
    size_t (*cache_floats)(const la_layer * L, int64_t cap);
    // y (B, T, hidden) = mixer(x); with c->cache, starts from and updates the cache.
    la_status (*forward)(const la_model * m, const la_layer * L, const la_call * c, float * y,
                         const float * x);
    // dx (B, T, hidden) overwritten; parameter gradients added to m->g. Needs the forward's
    // act (same call shape, no cache).
    la_status (*backward)(la_model * m, const la_layer * L, const la_call * c, float * dx,
                          const float * dy, const float * x);
    // Optional, called once per model before any layer's build: registers model-level
    // parameters of the mixer family (e.g. HGRN2's model.lower_bounds) into m->p_root.
    la_status (*root_params)(la_model * m, char * err, size_t errlen);
    // Optional: floats of the model-wide shared tensor per token (see la_model.shared).
    size_t (*shared_floats)(const la_layer * L);
    // Optional: fills LA_INIT_CUSTOM parameters.
    void (*init)(la_model * m, const la_layer * L, uint64_t seed);
} la_mixer_vt;

// The norm in front of a sublayer (OPS.md 4.2; RWKV-7 uses LayerNorm with a bias).
typedef enum la_norm_kind { LA_NORM_RMS = 0, LA_NORM_LAYER } la_norm_kind;

// A sublayer: h <- h + vt(norm(h)) (the residual branch of a block), or, when vt is NULL,
// h <- norm(h) (RWKV-7's pre_norm on the embeddings). A block of fla's models is two of them
// (token mixer, then MLP); Mamba's is one.
struct la_layer {
    int32_t             idx;            // block index
    la_mixer            kind;           // the token mixer (for an MLP: the block's mixer)
    const la_mixer_vt * vt;
    const la_attn_spec *spec;           // attention layers
    char                prefix[48];     // parameter names: prefix + suffix ("model.layers.3.attn.")
    la_norm_kind        norm;
    int32_t             p_nw, p_nb;     // the norm's weight and bias (-1: none)
    // dimensions the mixer sets in build (meaning is the mixer's)
    int64_t H, HV, HKV, dk, dv, key_dim, value_dim, W, F, R;
    int32_t np;
    int32_t p[LA_MAX_LAYER_PARAMS];     // the mixer's parameters, in registration order
    size_t  act_off;                    // floats into the activation arena
};

struct la_model {
    la_config  cfg;
    int64_t    L, D, vocab, I;
    la_layer * layers;      // (L) the token mixers, one per block
    la_layer * ffn;         // (L) the second sublayer of each block (fla: the SwiGLU MLP)
    la_layer   pre;         // RWKV-7's pre_norm (vt NULL)
    la_layer **seq;         // (n_seq) every sublayer in execution order
    int32_t    n_seq;
    la_norm_kind final_norm;
    int32_t    p_norm_b;    // final norm bias (-1: none)
    la_param * par;         // (n_par)
    int32_t    n_par, cap_par;
    int32_t    n_param_fail;  // registrations that failed (model_build reports them)
    size_t     n_floats;    // arena length
    float *    w;           // parameters
    float *    g;           // gradients (NULL until la_model_reserve with training)
    float *    m1, * m2;    // AdamW moments (allocated by the trainer)
    int32_t    p_emb, p_norm, p_head;  // p_head = p_emb when tied; -1 with input_dim
    int64_t    din;                    // input_dim (0: a token model)
    int32_t    p_in_w, p_in_b, p_out_w, p_out_b;  // read_in, read_out (-1 for a token model)
    // A tensor one sublayer produces and later ones read (RWKV-7's v_first, (rows, n) floats):
    // shared is written in the forward, dshared collects gradients in the backward.
    float *    shared, * dshared;
    size_t     shared_floats;
    int32_t    p_root[4];              // model-level parameters of the mixer family (root_params)
    // run-time arenas (la_model_reserve)
    int64_t    rB, rT;
    bool       rtrain;
    float *    act;
    size_t     act_floats;
    size_t     tail_off;    // floats: h_L, norm(h_L), dh, t1, t2 (training) / h, a, b (inference)
    void *     work;
    size_t     work_bytes;
};

// Decode caches of every layer for N sequences.
struct la_cache {
    int64_t     N, cap, L;
    float *     f;     // every layer's floats
    int64_t *   len;   // (L, N) tokens seen, per layer (equal across layers between calls)
    la_lcache * lc;    // (L)
};

// Registers a parameter of layer L named L->prefix + suffix (L NULL: the name as given);
// returns its index into m->par or -1 (out of memory, name too long).
int32_t la_layer_param(la_model * m, la_layer * L, const char * suffix, int32_t ndim,
                       const int64_t * shape, la_init init, bool decay);
static inline float * la_pw(const la_model * m, const la_layer * L, int i) {
    return m->w + m->par[L->p[i]].off;
}
static inline float * la_pg(const la_model * m, const la_layer * L, int i) {
    return m->g + m->par[L->p[i]].off;
}

// y (rows, out) = x W^T (+ b): la_linear_forward
// dx (rows, in) = dy W, overwritten (beta 0) or added (beta 1); dW, db added.
void la_lin_bwd(float * dx, float dx_beta, float * dW, float * db, const float * dy,
                const float * x, const float * W, int64_t rows, int64_t in, int64_t out);
// dst += src (n floats), fixed split.
void la_vec_add(float * dst, const float * src, int64_t n);

// The mixers.
// Each lives in src/model/mixer_<name>.c (strong references, so a static link pulls them in).
extern const la_mixer_vt la_mixer_attn_vt, la_mixer_gdn_vt, la_mixer_mlp_vt, la_mixer_deltanet_vt,
    la_mixer_gla_vt, la_mixer_kda_vt, la_mixer_retnet_vt, la_mixer_linattn_vt, la_mixer_hgrn2_vt,
    la_mixer_mamba2_vt, la_mixer_mamba_vt, la_mixer_rwkv7_vt, la_mixer_rwkv7_ffn_vt;

// Keys of config.json that the table in config.c does not hold (models whose layers read their
// own keys) are kept in cfg.extra; these read them with fla's defaults and a one-line error
// naming the key. la_extra_check rejects any key of extra not listed in `known` (NULL-ended).
la_status la_extra_num(const la_config * c, const char * key, double def, double * out,
                       char * err, size_t errlen);
la_status la_extra_int(const la_config * c, const char * key, int64_t def, int64_t * out,
                       char * err, size_t errlen);
la_status la_extra_bool(const la_config * c, const char * key, bool def, bool * out, char * err,
                        size_t errlen);
// String or null: *out = def when absent, "" when null.
la_status la_extra_str(const la_config * c, const char * key, const char * def, char * out,
                       size_t outlen, char * err, size_t errlen);
la_status la_extra_check(const la_config * c, const char * const * known, char * err,
                         size_t errlen);
const la_mixer_vt * la_mixer_vtable(la_mixer k);  // NULL when not built in

// ---------------------------------------------------------------------------------------------
// Pieces shared by the mixers (src/model/mixer.c)

// A projection followed by an optional short conv and an activation (the q/k/v path of
// DeltaNet, GDN, KDA; OPS.md 5.2-5.4):
//   y_pre = x W^T  (rows, n);   y = act(conv(y_pre))  or  act(y_pre) without conv_w
// conv_cache (N, n, Wc) is read and updated when non-NULL (decode / chunked prefill).
la_status la_proj_conv_forward(const la_call * c, float * y, float * y_pre, const float * x,
                               const float * W, const float * conv_w, float * conv_cache,
                               la_act act, int64_t D, int64_t n, int64_t Wc);
// dy (rows, n) is clobbered (becomes d y_pre); dx (rows, D) = beta dx + d y_pre W; dW, dconv_w
// added to. tmp: rows * n floats of scratch.
la_status la_proj_conv_backward(const la_call * c, float * dx, float dx_beta, float * dW,
                                float * dconv_w, float * dy, float * tmp, const float * y_pre,
                                const float * x, const float * W, const float * conv_w,
                                la_act act, int64_t D, int64_t n, int64_t Wc);
// Op options for a mixer call: chunk form (recurrent for a T = 1 step with a cache) over the
// given workspace.
la_opts la_mixer_opts(const la_call * c, void * work, size_t work_size);
// n floats from a carver (la_carve, 64-byte aligned; a NULL base only counts).
static inline float * la_carve_f(la_carver * c, int64_t n) {
    return la_carve(c, (size_t)n * sizeof(float));
}
// Bytes of a carve of these float counts (each aligned), for work_bytes.
size_t la_floats_bytes(int n, const int64_t * counts);

// A config error: la_fail with LA_STATUS_INVALID_ARG.
#define la_cfg_fail(err, errlen, ...) la_fail(err, errlen, LA_STATUS_INVALID_ARG, __VA_ARGS__)

// The q, k, v path of DeltaNet, GDN and KDA (OPS.md 5.2-5.4). Parameter slots 0, 1, 2 hold
// q_proj, k_proj (key_dim, D) and v_proj (value_dim, D); the convs q_conv1d, k_conv1d,
// v_conv1d, when present, sit in slots pc, pc + 1, pc + 2 (pc -1: none).
// Decode cache layout: state (N, HV, dk, dv), then the q, k, v conv caches (N, n, W).
typedef struct {
    float *xq, *xk, *xv;  // pre-conv projections (rows, key_dim) x 2, (rows, value_dim)
    float *q, *k, *v;     // after conv + activation
} la_qkv_bufs;

// Registers the q, k, v projections (la_qkv_params) or their convs (la_qkv_conv_params),
// shaped by L->key_dim, L->value_dim and L->W, with fla's names.
void la_qkv_params(la_model * m, la_layer * L);
void la_qkv_conv_params(la_model * m, la_layer * L);
// q, k = qk_act(conv(x W^T)), v = SiLU(conv(x Wv^T)), updating the conv caches of c->cache;
// *state = the cache's recurrent state (NULL without a cache).
la_status la_qkv_forward(const la_model * m, const la_layer * L, const la_call * c,
                         const la_qkv_bufs * b, const float * x, int pc, la_act qk_act,
                         float ** state);
// One path's backward (projection slot pw, conv slot pcw or -1, width n): dy is clobbered;
// dx (rows, D) = beta dx + the path's input gradient.
la_status la_qkv_path_backward(const la_model * m, const la_layer * L, const la_call * c,
                               int pw, int pcw, la_act act, int64_t n, float * dx,
                               float dx_beta, float * dy, float * tmp, const float * xpre,
                               const float * x);
// q, k, v backward in that order with SiLU on all three, dx added to; dq, dk, dv clobbered.
// tmp: rows * max(key_dim, value_dim) floats.
la_status la_qkv_backward(const la_model * m, const la_layer * L, const la_call * c, int pc,
                          float * dx, float * dq, float * dk, float * dv, float * tmp,
                          const la_qkv_bufs * b, const float * x);

// GDN / KDA head dims: H = num_heads, HV = num_v_heads (0: H), dk = head_dim,
// dv = head_dim expand_v, key_dim = H dk, value_dim = HV dv, W = conv_size. Rejects
// head_dim <= 0, a head_v that is not a whole number >= 1, and an HV that is not a multiple
// of H (or, with hv_min_h, is below H).
la_status la_gva_dims(const la_model * m, la_layer * L, bool hv_min_h, char * err, size_t errlen);

// Workspace of a mixer whose calls carve float scratch (counts: at most 16 counts into n, for
// the forward or the backward) and hand the rest to an op that may take either form (chunk;
// recurrent for a T = 1 decode step): the forward's bytes, or the larger of those and the
// backward's.
typedef int (*la_counts_fn)(const la_layer * L, int64_t B, int64_t T, bool backward,
                            int64_t * n);
typedef size_t (*la_op_size_fn)(const la_layer * L, int64_t B, int64_t T, bool backward,
                                const la_opts * o);
size_t la_scratch_work(const la_layer * L, int64_t B, int64_t T, bool backward,
                       la_counts_fn counts, la_op_size_fn op_size);

// Grouped heads (fla: repeat(k, '... (h d) -> ... (h g) d')), G heads per shared head:
// la_kv_expand: dst (rows, H, d) from src (rows, H / G, d), head h reads head h / G;
// la_kv_reduce: dst (rows, H / G, d) = sum of the G heads of src (rows, H, d) that read it,
// in head order.
void la_kv_expand(float * dst, const float * src, int64_t rows, int64_t H, int64_t G, int64_t d);
void la_kv_reduce(float * dst, const float * src, int64_t rows, int64_t H, int64_t G, int64_t d);

#endif  // LA_MODEL_H
