// The causal LM: parameter table and arenas, initialisation, the training pass (loss and
// gradients), the inference pass with decode caches, the regression pass of real-valued models
// (input_dim), and checkpoint I/O.
#include "model.h"

#include "nn.h"
#include "rng.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const la_mixer_vt * const vtables[LA_MIXER_COUNT] = {
    [LA_MIXER_ATTN] = &la_mixer_attn_vt,
    [LA_MIXER_GDN] = &la_mixer_gdn_vt,
    [LA_MIXER_DELTANET] = &la_mixer_deltanet_vt,
    [LA_MIXER_GLA] = &la_mixer_gla_vt,
    [LA_MIXER_KDA] = &la_mixer_kda_vt,
    [LA_MIXER_RETNET] = &la_mixer_retnet_vt,
    [LA_MIXER_LINATTN] = &la_mixer_linattn_vt,
    [LA_MIXER_HGRN2] = &la_mixer_hgrn2_vt,
    [LA_MIXER_MAMBA2] = &la_mixer_mamba2_vt,
    [LA_MIXER_MAMBA] = &la_mixer_mamba_vt,
    [LA_MIXER_RWKV7] = &la_mixer_rwkv7_vt,
};

const la_mixer_vt * la_mixer_vtable(la_mixer k) {
    return (unsigned)k < LA_MIXER_COUNT ? vtables[k] : NULL;
}

// ---------------------------------------------------------------------------------------------
// Small shared kernels

void la_lin_bwd(float * dx, float dx_beta, float * dW, float * db, const float * dy,
                const float * x, const float * W, int64_t rows, int64_t in, int64_t out) {
    if (dx) la_nn_gemm(false, false, rows, in, out, dy, out, W, in, dx_beta, dx, in,
                       LA_NN_GEMM_ROWS, 4096);
    if (dW || db) la_linear_backward(NULL, dW, db, dy, x, W, rows, in, out, true);
}

void la_vec_add(float * dst, const float * src, int64_t n) {
    const int64_t blk = 1 << 14, nb = (n + blk - 1) / blk;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(nb, n))
    for (int64_t b = 0; b < nb; b++) {
        const int64_t e = LA_MIN(n, (b + 1) * blk);
        for (int64_t i = b * blk; i < e; i++) dst[i] += src[i];
    }
}

// ---------------------------------------------------------------------------------------------
// Parameter table

int32_t la_layer_param(la_model * m, la_layer * L, const char * suffix, int32_t ndim,
                       const int64_t * shape, la_init init, bool decay) {
    if (m->n_par == m->cap_par) {
        const int32_t cap = m->cap_par ? 2 * m->cap_par : 64;
        la_param * p = realloc(m->par, (size_t)cap * sizeof *p);
        if (!p) return -1;
        m->par = p;
        m->cap_par = cap;
    }
    if (L && L->np == LA_MAX_LAYER_PARAMS) {
        m->n_param_fail++;
        return -1;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 1) {
            m->n_param_fail++;
            return -1;
        }
    la_param * p = &m->par[m->n_par];
    memset(p, 0, sizeof *p);
    const int n = snprintf(p->name, sizeof p->name, "%s%s", L ? L->prefix : "", suffix);
    if (n < 0 || n >= (int)sizeof p->name || ndim < 1 || ndim > 4) {
        m->n_param_fail++;
        return -1;
    }
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= shape[i];
    }
    p->off = m->n_floats;
    m->n_floats += (size_t)((p->numel + 15) & ~(int64_t)15);
    p->init = init;
    p->decay = decay;
    if (L) L->p[L->np++] = m->n_par;
    return m->n_par++;
}

// ---------------------------------------------------------------------------------------------
// Build
//
// The block structure and the names around the mixers differ by family (fla's models,
// OPS.md 4.5; Mamba's backbone.*; RWKV-7's LayerNorms, pre_norm and channel mix).

typedef struct la_family {
    const char *        root;        // "model." or "backbone."
    const char *        mixer;       // the token mixer's module name in a block
    const char *        norm1;       // its norm
    const char *        norm2;       // the second sublayer's norm (NULL: no second sublayer)
    const char *        ffn;         // the second sublayer's module name
    const char *        final_norm;  // "norm" or "norm_f"
    la_norm_kind        norm;
    const la_mixer_vt * ffn_vt;
    bool                pre_norm;    // layer 0 normalises the embeddings first
} la_family;

static la_family family_of(la_mixer k) {
    if (k == LA_MIXER_MAMBA || k == LA_MIXER_MAMBA2)
        return (la_family){ "backbone.", "mixer", "norm", NULL, NULL, "norm_f", LA_NORM_RMS, NULL, false };
    if (k == LA_MIXER_RWKV7)
        return (la_family){ "model.", "attn", "attn_norm", "ffn_norm", "ffn", "norm", LA_NORM_LAYER,
                            &la_mixer_rwkv7_ffn_vt, true };
    return (la_family){ "model.", "attn", "attn_norm", "mlp_norm", "mlp", "norm", LA_NORM_RMS,
                        &la_mixer_mlp_vt, false };
}

void la_model_free(la_model * m) {
    if (!m) return;
    la_config_free(&m->cfg);
    free(m->layers);
    free(m->ffn);
    free(m->seq);
    free(m->par);
    free(m->w);
    free(m->g);
    free(m->m1);
    free(m->m2);
    free(m->act);
    free(m->work);
    free(m->shared);
    free(m->dshared);
    free(m);
}

// Registers a norm's weight (and bias for LayerNorm) under `name`.
static bool add_norm(la_model * m, la_norm_kind k, const char * name, int32_t * pw, int32_t * pb) {
    char n[LA_NAME_MAX];
    const int64_t D = m->D;
    snprintf(n, sizeof n, "%s.weight", name);
    *pw = la_layer_param(m, NULL, n, 1, &D, LA_INIT_ONE, false);
    *pb = -1;
    if (k == LA_NORM_LAYER) {
        snprintf(n, sizeof n, "%s.bias", name);
        *pb = la_layer_param(m, NULL, n, 1, &D, LA_INIT_ZERO, false);
    }
    return *pw >= 0 && (k != LA_NORM_LAYER || *pb >= 0);
}

static la_status model_build(la_model ** out, la_config * cfg, char * err, size_t errlen) {
    *out = NULL;
    la_model * m = calloc(1, sizeof *m);
    if (!m) {
        la_config_free(cfg);
        return LA_STATUS_NOMEM;
    }
    m->cfg = *cfg;  // takes ownership
    memset(cfg, 0, sizeof *cfg);
    const la_config * c = &m->cfg;
    const la_family fam = family_of(c->mixer);
    m->L = c->num_hidden_layers;
    m->D = c->hidden_size;
    m->vocab = c->vocab_size;
    m->I = c->intermediate_size;
    m->final_norm = fam.norm;
    m->layers = calloc((size_t)m->L, sizeof *m->layers);
    m->ffn = calloc((size_t)m->L, sizeof *m->ffn);
    m->seq = calloc((size_t)(2 * m->L + 1), sizeof *m->seq);
    m->din = c->input_dim;
    m->p_emb = m->p_head = m->p_in_w = m->p_in_b = m->p_out_w = m->p_out_b = -1;
    la_status s = m->layers && m->ffn && m->seq ? LA_STATUS_OK : LA_STATUS_NOMEM;
    char name[LA_NAME_MAX];
    if (!s && m->din > 0) {
        // the read-in takes the embeddings' place, first in the table
        snprintf(name, sizeof name, "%sread_in.weight", fam.root);
        m->p_in_w = la_layer_param(m, NULL, name, 2, (int64_t[]){ m->D, m->din }, LA_INIT_NORMAL,
                                   true);
        snprintf(name, sizeof name, "%sread_in.bias", fam.root);
        m->p_in_b = la_layer_param(m, NULL, name, 1, &m->D, LA_INIT_ZERO, false);
    } else if (!s) {
        snprintf(name, sizeof name, "%sembeddings.weight", fam.root);
        m->p_emb = la_layer_param(m, NULL, name, 2, (int64_t[]){ m->vocab, m->D },
                                  LA_INIT_NORMAL, true);
    }
    const la_mixer_vt * main_vt = la_mixer_vtable(c->mixer);
    for (int i = 0; i < 4; i++) m->p_root[i] = -1;
    if (!s && main_vt && main_vt->root_params) s = main_vt->root_params(m, err, errlen);
    for (int64_t l = 0; l < m->L && !s; l++) {
        if (l == 0 && fam.pre_norm) {
            la_layer * P = &m->pre;
            P->idx = 0;
            P->norm = fam.norm;
            snprintf(name, sizeof name, "%slayers.0.pre_norm", fam.root);
            if (!add_norm(m, fam.norm, name, &P->p_nw, &P->p_nb)) s = LA_STATUS_NOMEM;
            m->seq[m->n_seq++] = P;
        }
        la_layer * L = &m->layers[l];
        L->idx = (int32_t)l;
        L->kind = c->attn_of[l] >= 0 ? LA_MIXER_ATTN : c->mixer;
        L->spec = c->attn_of[l] >= 0 ? &c->attn[c->attn_of[l]] : NULL;
        L->vt = la_mixer_vtable(L->kind);
        L->norm = fam.norm;
        if (!L->vt) {
            s = la_fail(err, errlen, LA_STATUS_UNSUPPORTED,
                      "model: layer %lld: mixer '%s' is not built into this linattn", (long long)l,
                      la_mixer_short(L->kind));
            break;
        }
        snprintf(name, sizeof name, "%slayers.%d.%s", fam.root, (int)l, fam.norm1);
        if (!add_norm(m, fam.norm, name, &L->p_nw, &L->p_nb)) s = LA_STATUS_NOMEM;
        snprintf(L->prefix, sizeof L->prefix, "%slayers.%d.%s.", fam.root, (int)l, fam.mixer);
        if (!s) s = L->vt->build(m, L, err, errlen);
        m->seq[m->n_seq++] = L;
        if (!s && fam.norm2) {
            la_layer * F = &m->ffn[l];
            F->idx = (int32_t)l;
            F->kind = L->kind;
            F->vt = fam.ffn_vt;
            F->norm = fam.norm;
            if (!F->vt) {
                s = la_fail(err, errlen, LA_STATUS_UNSUPPORTED, "model: the %s block's '%s' is not "
                          "built into this linattn", c->model_type, fam.ffn);
                break;
            }
            snprintf(name, sizeof name, "%slayers.%d.%s", fam.root, (int)l, fam.norm2);
            if (!add_norm(m, fam.norm, name, &F->p_nw, &F->p_nb)) s = LA_STATUS_NOMEM;
            snprintf(F->prefix, sizeof F->prefix, "%slayers.%d.%s.", fam.root, (int)l, fam.ffn);
            if (!s) s = F->vt->build(m, F, err, errlen);
            m->seq[m->n_seq++] = F;
        }
        for (int i = 0; i < L->np && !s; i++)
            if (L->p[i] < 0) s = LA_STATUS_NOMEM;
    }
    if (!s) {
        snprintf(name, sizeof name, "%s%s", fam.root, fam.final_norm);
        if (!add_norm(m, fam.norm, name, &m->p_norm, &m->p_norm_b)) s = LA_STATUS_NOMEM;
        if (m->din > 0) {  // the read-out in the LM head's place; tie_word_embeddings is moot
            m->p_out_w = la_layer_param(m, NULL, "read_out.weight", 2, (int64_t[]){ 1, m->D },
                                        LA_INIT_NORMAL, true);
            m->p_out_b = la_layer_param(m, NULL, "read_out.bias", 1, (int64_t[]){ 1 },
                                        LA_INIT_ZERO, false);
            if (m->p_in_w < 0 || m->p_in_b < 0 || m->p_out_w < 0 || m->p_out_b < 0)
                s = LA_STATUS_NOMEM;
        } else {
            m->p_head = c->tie_word_embeddings
                            ? m->p_emb
                            : la_layer_param(m, NULL, "lm_head.weight", 2,
                                             (int64_t[]){ m->vocab, m->D }, LA_INIT_NORMAL, true);
            if (m->p_emb < 0 || m->p_head < 0) s = LA_STATUS_NOMEM;
        }
    }
    for (int32_t i = 0; i < m->n_seq && !s; i++)
        if (m->seq[i]->vt && m->seq[i]->vt->shared_floats)
            m->shared_floats = LA_MAX(m->shared_floats, m->seq[i]->vt->shared_floats(m->seq[i]));
    if (!s && m->n_param_fail)
        s = la_fail(err, errlen, LA_STATUS_INVALID_ARG, "model: %d parameter tensor(s) could not "
                    "be registered (a dimension below 1, or a name too long)", m->n_param_fail);
    if (!s && !(m->w = calloc(m->n_floats, sizeof(float)))) s = LA_STATUS_NOMEM;
    if (s) {
        if (s == LA_STATUS_NOMEM) la_fail(err, errlen, s, "model: out of memory");
        la_model_free(m);
        return s;
    }
    *out = m;
    return LA_STATUS_OK;
}

la_status la_model_from_json(la_model ** out, const char * json, char * err, size_t errlen) {
    if (!out || !json) return la_fail(err, errlen, LA_STATUS_INVALID_ARG, "model: NULL argument");
    *out = NULL;
    la_config cfg;
    la_status s = la_config_parse(&cfg, json, err, errlen);
    if (s) return s;
    return model_build(out, &cfg, err, errlen);
}

// ---------------------------------------------------------------------------------------------
// Initialisation (OPS.md 4.6): tensor i draws from its own stream (seed, i), so the values do
// not depend on the order of construction or on threads.

void la_model_init(la_model * m, uint64_t seed) {
    const double std = m->cfg.initializer_range;
    for (int32_t i = 0; i < m->n_par; i++) {
        const la_param * p = &m->par[i];
        float * w = m->w + p->off;
        la_xrng r = la_rng_at(seed, (uint64_t)i);
        for (int64_t j = 0; j < p->numel; j++) {
            switch (p->init) {
            case LA_INIT_NORMAL: w[j] = (float)(std * la_rng_gauss(&r)); break;
            case LA_INIT_ZERO: w[j] = 0.0f; break;
            case LA_INIT_ONE: w[j] = 1.0f; break;
            case LA_INIT_A_LOG_GDN:  // A ~ U(0, 16), kept away from 0 so log is finite
                w[j] = (float)log(fmax(16.0 * la_rng_unif(&r), 1e-4));
                break;
            case LA_INIT_A_LOG_KDA: w[j] = (float)log(1.0 + 15.0 * la_rng_unif(&r)); break;
            case LA_INIT_DT_BIAS: {
                double dt = exp(log(1e-3) + (log(0.1) - log(1e-3)) * la_rng_unif(&r));
                dt = fmax(dt, 1e-4);
                w[j] = (float)(dt + log(-expm1(-dt)));  // inverse softplus
                break;
            }
            case LA_INIT_CUSTOM: break;
            }
        }
    }
    for (int32_t i = 0; i < m->n_seq; i++)
        if (m->seq[i]->vt && m->seq[i]->vt->init) m->seq[i]->vt->init(m, m->seq[i], seed);
}

int64_t la_model_num_params(const la_model * m) {
    int64_t n = 0;
    for (int32_t i = 0; i < m->n_par; i++) n += m->par[i].numel;
    return n;
}

// ---------------------------------------------------------------------------------------------
// Arenas for a batch shape
//
// Training keeps, per sublayer, its residual input h and its normed input xn (2 B T D floats)
// plus the mixer's own saved activations; then the tail: h_L, norm(h_L), dh and two gradient
// temporaries. Inference keeps h and two scratch rows of the same size, plus one mixer's worth.

#define HEAD_ROWS 256  // rows of logits formed at a time (the (rows, vocab) matrix never exists)

static size_t block_floats(const la_model * m, int64_t rows) { return (size_t)(rows * m->D); }

static size_t mixer_act(const la_layer * L, int64_t B, int64_t T) {
    if (!L->vt) return 0;
    return la_align_up(L->vt->act_floats(L, B, T) * sizeof(float)) / sizeof(float);
}

la_status la_model_reserve(la_model * m, int64_t B, int64_t T, bool train) {
    if (!m) return LA_STATUS_INVALID_ARG;
    if (B <= 0 || T <= 0) return LA_STATUS_SHAPE;
    const int64_t rows = B * T;
    const size_t bf = block_floats(m, rows);
    size_t act = 0, mix_max = 0, work = 0;
    for (int32_t i = 0; i < m->n_seq; i++) {
        const la_layer * L = m->seq[i];
        const size_t a = mixer_act(L, B, T);
        if (train) act += 2 * bf + a;
        mix_max = LA_MAX(mix_max, a);
        if (L->vt) work = LA_MAX(work, L->vt->work_bytes(L, B, T, train));
    }
    const size_t tail = train ? act : 0;
    act += train ? 5 * bf : 3 * bf + mix_max;
    // the LM head's blocks (head()), or the read-out's predictions and their gradient
    const size_t lm_head = la_align_up((size_t)HEAD_ROWS * (size_t)(m->vocab + 2 * m->D) *
                                       sizeof(float)) + 2 * (size_t)HEAD_ROWS * sizeof(int64_t) +
                           (size_t)HEAD_ROWS * sizeof(float) + 8 * LA_ALIGN;
    const size_t head = m->din > 0 ? 2 * la_align_up((size_t)rows * sizeof(float)) : lm_head;
    work = la_align_up(LA_MAX(work, head));
    const size_t sh = (size_t)rows * m->shared_floats;
    if (!m->act || act > m->act_floats || work > m->work_bytes ||
        (sh && sh > (size_t)(m->rB * m->rT) * m->shared_floats)) {
        float * a = NULL, *s1 = NULL, *s2 = NULL;
        void * w = NULL;
        const size_t na = LA_MAX(act, m->act_floats), nw = LA_MAX(work, m->work_bytes);
        const size_t ns = LA_MAX(sh, (size_t)(m->rB * m->rT) * m->shared_floats);
        if (posix_memalign((void **)&a, LA_ALIGN, na * sizeof(float)) ||
            posix_memalign(&w, LA_ALIGN, nw) ||
            (ns && (posix_memalign((void **)&s1, LA_ALIGN, ns * sizeof(float)) ||
                    posix_memalign((void **)&s2, LA_ALIGN, ns * sizeof(float))))) {
            free(a), free(w), free(s1), free(s2);
            return LA_STATUS_NOMEM;
        }
        free(m->act), free(m->work), free(m->shared), free(m->dshared);
        m->act = a;
        m->act_floats = na;
        m->work = w;
        m->work_bytes = nw;
        m->shared = s1;
        m->dshared = s2;
        m->rB = B, m->rT = T;
    }
    if (train && !m->g) {
        m->g = calloc(m->n_floats, sizeof(float));
        if (!m->g) return LA_STATUS_NOMEM;
    }
    // the layout for this shape
    size_t off = 0;
    for (int32_t i = 0; i < m->n_seq; i++) {
        la_layer * L = m->seq[i];
        if (train) {
            L->act_off = off + 2 * bf;
            off += 2 * bf + mixer_act(L, B, T);
        } else {
            L->act_off = 3 * bf;
        }
    }
    m->tail_off = tail;
    if ((size_t)(B * T) > (size_t)(m->rB * m->rT)) m->rB = B, m->rT = T;
    m->rtrain = train;
    return LA_STATUS_OK;
}

void la_model_zero_grad(la_model * m) {
    if (m->g) memset(m->g, 0, m->n_floats * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Forward pieces

static inline float * PW(const la_model * m, int32_t p) { return p >= 0 ? m->w + m->par[p].off : NULL; }
static inline float * PG(const la_model * m, int32_t p) { return p >= 0 ? m->g + m->par[p].off : NULL; }

static la_status check_ids(const la_model * m, const int64_t * ids, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->vocab) return LA_STATUS_INVALID_ARG;
    return LA_STATUS_OK;
}

static la_status norm_fwd(const la_model * m, la_norm_kind k, int32_t pw, int32_t pb, float * y,
                          const float * x, int64_t rows) {
    const float eps = (float)m->cfg.norm_eps;
    if (k == LA_NORM_LAYER) return la_layernorm_forward(y, x, PW(m, pw), PW(m, pb), eps, rows, m->D);
    return la_rmsnorm_forward(y, x, PW(m, pw), eps, rows, m->D);
}

// dx (overwritten) from dy; the weight (and bias) gradients are added.
static la_status norm_bwd(la_model * m, la_norm_kind k, int32_t pw, int32_t pb, float * dx,
                          const float * dy, const float * x, int64_t rows) {
    const float eps = (float)m->cfg.norm_eps;
    if (k == LA_NORM_LAYER)
        return la_layernorm_backward(dx, PG(m, pw), PG(m, pb), dy, x, PW(m, pw), eps, rows, m->D,
                                     true);
    return la_rmsnorm_backward(dx, PG(m, pw), dy, x, PW(m, pw), eps, rows, m->D, true);
}

// One sublayer: h_out = h + mixer(norm(h)) (h_out may equal h), or h_out = norm(h) without a
// mixer. xn: where norm(h) goes (saved in training); y: the mixer's output (scratch).
static la_status sub_forward(la_model * m, const la_layer * L, const la_call * c, float * h_out,
                             const float * h, float * xn, float * y) {
    const int64_t rows = c->B * c->T;
    if (!L->vt) return norm_fwd(m, L->norm, L->p_nw, L->p_nb, h_out, h, rows);
    la_status s = norm_fwd(m, L->norm, L->p_nw, L->p_nb, xn, h, rows);
    if (!s) s = L->vt->forward(m, L, c, y, xn);
    if (s) return s;
    if (h_out == y) {
        la_vec_add(h_out, h, rows * m->D);
    } else {
        if (h_out != h) memcpy(h_out, h, block_floats(m, rows) * sizeof(float));
        la_vec_add(h_out, y, rows * m->D);
    }
    return LA_STATUS_OK;
}

// Head over the rows listed in idx (n of them): logits (n, vocab) in blocks of HEAD_ROWS.
// With targets (LA_IGNORE_INDEX allowed): adds the summed loss of the counted rows to
// *loss_sum and, when dhn is given, writes d(weight * sum loss / count) into dhn's rows and
// adds to the head's gradient. l2warp > 0 adds fla's L2Wrap to d logits of every listed row:
// l2warp * max_v logits at the argmax (fla/modules/l2warp.py; it leaves the loss unchanged).
// correct (optional) counts counted rows whose argmax is the target (first maximum wins).
static la_status head(la_model * m, const float * hn, const int64_t * idx, int64_t n,
                      int64_t count, const int64_t * targets, float * logits_out,
                      double * loss_sum, float * dhn, float weight, float l2warp,
                      int64_t * correct) {
    const int64_t D = m->D, V = m->vocab;
    la_carver cv = { (char *)m->work, 0 };
    float * x = la_carve(&cv, (size_t)HEAD_ROWS * (size_t)D * sizeof(float));   // (HB, D)
    float * lg = la_carve(&cv, (size_t)HEAD_ROWS * (size_t)V * sizeof(float));  // (HB, V)
    float * dx = la_carve(&cv, (size_t)HEAD_ROWS * (size_t)D * sizeof(float));  // (HB, D)
    int64_t * tg = la_carve(&cv, (size_t)HEAD_ROWS * sizeof(int64_t));
    int64_t * am = la_carve(&cv, (size_t)HEAD_ROWS * sizeof(int64_t));       // argmax per row
    float * mxv = la_carve(&cv, (size_t)HEAD_ROWS * sizeof(float));           // its logit
    const float * W = PW(m, m->p_head);
    for (int64_t r0 = 0; r0 < n; r0 += HEAD_ROWS) {
        const int64_t nb = LA_MIN(HEAD_ROWS, n - r0);
        for (int64_t i = 0; i < nb; i++) memcpy(x + i * D, hn + idx[r0 + i] * D, (size_t)D * 4);
        float * out = logits_out ? logits_out + r0 * V : lg;
        la_status s = la_linear_forward(out, x, W, NULL, nb, D, V);
        if (s) return s;
        if (!targets) continue;
        int64_t cnt = 0;
        for (int64_t i = 0; i < nb; i++) {
            tg[i] = targets[idx[r0 + i]];
            cnt += tg[i] != LA_IGNORE_INDEX;
            const float * row = out + i * V;
            int64_t best = 0;
            for (int64_t v = 1; v < V; v++)
                if (row[v] > row[best]) best = v;
            am[i] = best;
            mxv[i] = row[best];
            if (correct && tg[i] != LA_IGNORE_INDEX) *correct += best == tg[i];
        }
        double l = 0;
        if (cnt) {
            s = la_cross_entropy(&l, dhn ? out : NULL, out, tg, nb, V, LA_IGNORE_INDEX);
            if (s) return s;
        }
        *loss_sum += l * (double)cnt;
        if (!dhn) continue;
        // la_cross_entropy divided by cnt; the wanted factor is weight / count.
        const float f = cnt ? weight * (float)cnt / (float)count : 0.0f;
        for (int64_t i = 0; i < nb; i++) {
            float * row = out + i * V;
            if (cnt && tg[i] != LA_IGNORE_INDEX) for (int64_t v = 0; v < V; v++) row[v] *= f;
            else memset(row, 0, (size_t)V * sizeof(float));
            if (l2warp > 0.0f) row[am[i]] += weight * l2warp * mxv[i];
        }
        la_lin_bwd(dx, 0.0f, PG(m, m->p_head), NULL, out, x, W, nb, D, V);
        for (int64_t i = 0; i < nb; i++) memcpy(dhn + idx[r0 + i] * D, dx + i * D, (size_t)D * 4);
    }
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// The forward pass shared by training, evaluation and decoding
//
// The input is ids (B, T) of a token model, or x (B, T, din) of a real-valued one (ids NULL).
// Returns norm(h_L) (rows, D) inside the activation arena. train: saves what backward needs
// (the read-in's input x stays the caller's). cache: every mixer starts from and updates its
// layer's cache (inference only).

static float * model_forward(la_model * m, const int64_t * ids, const float * x, int64_t B,
                             int64_t T, bool train, la_cache * cache, la_status * st) {
    const int64_t rows = B * T, D = m->D;
    const size_t bf = block_floats(m, rows);
    float * tail = m->act + m->tail_off;
    float * h = train ? m->act : tail;  // training: sublayer 0's saved input slot
    la_status s = ids ? la_embedding_forward(h, ids, PW(m, m->p_emb), rows, m->vocab, D)
                      : la_linear_forward(h, x, PW(m, m->p_in_w), PW(m, m->p_in_b), rows, m->din,
                                          D);
    for (int32_t i = 0; i < m->n_seq && !s; i++) {
        la_layer * L = m->seq[i];
        la_call c = { .B = B, .T = T, .act = m->act + L->act_off, .work = m->work,
                      .work_size = m->work_bytes, .cache = cache ? &cache->lc[i] : NULL };
        if (train) {
            float * base = m->act + L->act_off - 2 * bf;  // [h_in, xn] of this sublayer
            float * next = i + 1 < m->n_seq ? m->act + m->seq[i + 1]->act_off - 2 * bf : tail;
            // the mixer's output goes straight into the next slot, then the residual is added
            s = sub_forward(m, L, &c, next, base, base + bf, next);
        } else {
            // in place: norm(h) -> a, mixer -> b, h += b
            s = sub_forward(m, L, &c, tail, tail, tail + bf, tail + 2 * bf);
        }
    }
    float * hn = tail + bf;
    if (!s) s = norm_fwd(m, m->final_norm, m->p_norm, m->p_norm_b, hn, tail, rows);
    if (!s && cache)
        for (int32_t i = 0; i < m->n_seq; i++)
            for (int64_t n = 0; n < cache->N; n++) cache->lc[i].len[n] += T;
    *st = s;
    return s ? NULL : hn;
}

// Backward through the final norm and the sublayers (in reverse), after a training forward of
// the same (B, T): dh, the tail's third slot (rows, D), holds dL/d norm(h_L) on entry and
// dL/dh_0 (the gradient of the embeddings' or the read-in's output) on return. Parameter
// gradients are added to.
static la_status model_backward(la_model * m, int64_t B, int64_t T) {
    const int64_t rows = B * T, D = m->D;
    const size_t bf = block_floats(m, rows);
    float * hL = m->act + m->tail_off, *dh = hL + 2 * bf, *t1 = dh + bf, *t2 = t1 + bf;
    la_status s = norm_bwd(m, m->final_norm, m->p_norm, m->p_norm_b, t1, dh, hL, rows);
    if (s) return s;
    memcpy(dh, t1, bf * sizeof(float));  // dh = dL/dh_L
    if (m->dshared) memset(m->dshared, 0, (size_t)rows * m->shared_floats * sizeof(float));
    for (int32_t i = m->n_seq - 1; i >= 0 && !s; i--) {
        la_layer * L = m->seq[i];
        float * base = m->act + L->act_off - 2 * bf;
        float * h = base, *xn = base + bf;
        if (!L->vt) {  // h_out = norm(h)
            s = norm_bwd(m, L->norm, L->p_nw, L->p_nb, t1, dh, h, rows);
            if (!s) memcpy(dh, t1, bf * sizeof(float));
            continue;
        }
        la_call c = { .B = B, .T = T, .act = m->act + L->act_off, .work = m->work,
                      .work_size = m->work_bytes };
        // h_out = h + mixer(norm(h)):  dh += norm'(mixer'(dh))
        s = L->vt->backward(m, L, &c, t1, dh, xn);
        if (!s) s = norm_bwd(m, L->norm, L->p_nw, L->p_nb, t2, t1, h, rows);
        if (!s) la_vec_add(dh, t2, rows * D);
    }
    return s;
}

static la_status model_loss(la_model * m, double * loss, int64_t * count, int64_t * correct,
                            const int64_t * ids, const int64_t * labels, int64_t B, int64_t T,
                            bool backward, float weight) {
    if (!m || !ids || !labels || !loss || m->din > 0) return LA_STATUS_INVALID_ARG;
    if (B <= 0 || T <= 0) return LA_STATUS_SHAPE;
    const int64_t rows = B * T, D = m->D;
    if (check_ids(m, ids, rows)) return LA_STATUS_INVALID_ARG;
    for (int64_t i = 0; i < rows; i++)
        if (labels[i] != LA_IGNORE_INDEX && (labels[i] < 0 || labels[i] >= m->vocab))
            return LA_STATUS_INVALID_ARG;
    la_status s = la_model_reserve(m, B, T, backward);
    if (s) return s;
    const bool train = backward;
    float * hn = model_forward(m, ids, NULL, B, T, train, NULL, &s);
    if (s) return s;
    const size_t bf = block_floats(m, rows);
    float * dh = hn + bf;
    // The head projects the counted rows only, unless L2Wrap (training) needs every row's
    // maximum logit.
    const bool l2w = train && m->cfg.use_l2warp;
    int64_t n = 0, cnt = 0;
    int64_t * idx = malloc((size_t)rows * sizeof *idx);
    if (!idx) return LA_STATUS_NOMEM;
    for (int64_t i = 0; i < rows; i++) {
        cnt += labels[i] != LA_IGNORE_INDEX;
        if (l2w || labels[i] != LA_IGNORE_INDEX) idx[n++] = i;
    }
    double sum = 0;
    if (train) memset(dh, 0, bf * sizeof(float));
    if (n) s = head(m, hn, idx, n, cnt, labels, NULL, &sum, train ? dh : NULL, weight,
                    l2w ? 1e-4f / (float)rows : 0.0f, correct);
    free(idx);
    *loss = cnt ? sum / (double)cnt : 0.0;
    if (count) *count = cnt;
    if (s || !train) return s;
    s = model_backward(m, B, T);
    if (!s) s = la_embedding_backward(PG(m, m->p_emb), dh, ids, rows, m->vocab, D, true);
    return s;
}

la_status la_model_loss(la_model * m, double * loss, int64_t * count, const int64_t * ids,
                        const int64_t * labels, int64_t B, int64_t T, bool backward,
                        float weight) {
    return model_loss(m, loss, count, NULL, ids, labels, B, T, backward, weight);
}

la_status la_model_eval(la_model * m, double * loss, int64_t * count, int64_t * correct,
                        const int64_t * ids, const int64_t * labels, int64_t B, int64_t T) {
    if (!correct) return LA_STATUS_INVALID_ARG;
    *correct = 0;
    return model_loss(m, loss, count, correct, ids, labels, B, T, false, 0.0f);
}

// Logits of every position (last_only false: (B, T, vocab)) or of each row's last position
// ((B, vocab)); with a cache the rows are its N sequences and the cache advances by T.
la_status la_model_logits(la_model * m, float * logits, const int64_t * ids, int64_t B,
                          int64_t T, la_cache * cache, bool last_only) {
    if (!m || !logits || !ids || m->din > 0) return LA_STATUS_INVALID_ARG;
    if (B <= 0 || T <= 0 || (cache && (cache->N != B || cache->L != m->n_seq))) return LA_STATUS_SHAPE;
    if (check_ids(m, ids, B * T)) return LA_STATUS_INVALID_ARG;
    la_status s = la_model_reserve(m, B, T, false);
    if (s) return s;
    float * hn = model_forward(m, ids, NULL, B, T, false, cache, &s);
    if (s) return s;
    const int64_t n = last_only ? B : B * T;
    int64_t * idx = malloc((size_t)n * sizeof *idx);
    if (!idx) return LA_STATUS_NOMEM;
    for (int64_t i = 0; i < n; i++) idx[i] = last_only ? i * T + T - 1 : i;
    s = head(m, hn, idx, n, n, NULL, logits, NULL, NULL, 0.0f, 0.0f, NULL);
    free(idx);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Real-valued models (input_dim > 0): the read-in, the blocks, the read-out, a weighted MSE.

int64_t la_model_input_dim(const la_model * m) { return m->din; }

la_status la_model_regress(la_model * m, double * loss, float * pred, const float * x,
                           const float * y, const float * wt, int64_t B, int64_t T,
                           bool backward, float weight) {
    if (!m || !loss || !x || !y || !wt || m->din <= 0) return LA_STATUS_INVALID_ARG;
    if (B <= 0 || T <= 0 || B > INT64_MAX / T || B * T > INT64_MAX / m->din)
        return LA_STATUS_SHAPE;
    const int64_t rows = B * T, D = m->D;
    for (int64_t i = 0; i < rows * m->din; i++)
        if (!isfinite(x[i])) return LA_STATUS_INVALID_ARG;
    for (int64_t i = 0; i < rows; i++)
        if (!isfinite(y[i]) || !isfinite(wt[i]) || wt[i] < 0.0f) return LA_STATUS_INVALID_ARG;
    la_status s = la_model_reserve(m, B, T, backward);
    if (s) return s;
    float * hn = model_forward(m, NULL, x, B, T, backward, NULL, &s);
    if (s) return s;
    la_carver cv = { (char *)m->work, 0 };
    float * p = la_carve_f(&cv, rows);   // (rows) predictions
    float * dp = la_carve_f(&cv, rows);  // (rows) d(weight loss)/d pred
    // pred = norm(h_L) W_out^T + b_out
    s = la_linear_forward(p, hn, PW(m, m->p_out_w), PW(m, m->p_out_b), rows, D, 1);
    if (s) return s;
    double sw = 0.0, se = 0.0;
    for (int64_t i = 0; i < rows; i++) {
        const double e = (double)p[i] - (double)y[i];
        sw += (double)wt[i];
        se += (double)wt[i] * e * e;
    }
    *loss = sw > 0.0 ? se / sw : 0.0;
    // loss = sum wt (pred - y)^2 / sum wt:  dpred = weight 2 wt (pred - y) / sum wt
    for (int64_t i = 0; i < rows && backward; i++)
        dp[i] = sw > 0.0 ? (float)((double)weight * 2.0 * (double)wt[i] *
                                   ((double)p[i] - (double)y[i]) / sw)
                         : 0.0f;
    if (pred) memcpy(pred, p, (size_t)rows * sizeof(float));  // last: pred may be y or wt
    if (!backward) return LA_STATUS_OK;
    float * dh = hn + block_floats(m, rows);  // the tail's dh slot (model_backward)
    la_lin_bwd(dh, 0.0f, PG(m, m->p_out_w), PG(m, m->p_out_b), dp, hn, PW(m, m->p_out_w), rows, D,
               1);
    s = model_backward(m, B, T);
    // h_0 = x W_in^T + b_in: the weight and bias gradients (x is the caller's input, no dx)
    if (!s) la_lin_bwd(NULL, 0.0f, PG(m, m->p_in_w), PG(m, m->p_in_b), dh, x, PW(m, m->p_in_w),
                       rows, m->din, D);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Decode caches: one per sublayer (the MLP's is empty).

void la_cache_free(la_cache * c) {
    if (!c) return;
    free(c->f);
    free(c->len);
    free(c->lc);
    free(c);
}

static size_t sub_cache(const la_layer * L, int64_t N, int64_t cap) {
    if (!L->vt) return 0;
    return la_align_up((size_t)N * L->vt->cache_floats(L, cap) * 4) / 4;
}

la_status la_cache_new(la_cache ** out, const la_model * m, int64_t N, int64_t cap) {
    if (!out || !m) return LA_STATUS_INVALID_ARG;
    *out = NULL;
    if (m->din > 0) return LA_STATUS_INVALID_ARG;  // decoding emits tokens
    if (N <= 0 || cap <= 0) return LA_STATUS_SHAPE;
    la_cache * c = calloc(1, sizeof *c);
    if (!c) return LA_STATUS_NOMEM;
    c->N = N;
    c->cap = cap;
    c->L = m->n_seq;
    size_t total = 0;
    for (int32_t i = 0; i < m->n_seq; i++) total += sub_cache(m->seq[i], N, cap);
    c->f = calloc(total ? total : 1, sizeof(float));
    c->len = calloc((size_t)(m->n_seq * N), sizeof(int64_t));
    c->lc = calloc((size_t)m->n_seq, sizeof(la_lcache));
    if (!c->f || !c->len || !c->lc) {
        la_cache_free(c);
        return LA_STATUS_NOMEM;
    }
    size_t off = 0;
    for (int32_t i = 0; i < m->n_seq; i++) {
        c->lc[i] = (la_lcache){ .f = c->f + off, .len = c->len + i * N, .cap = cap };
        off += sub_cache(m->seq[i], N, cap);
    }
    *out = c;
    return LA_STATUS_OK;
}

// Floats of decode state per sequence: the fixed part (recurrent states, conv caches) and the
// part that grows with every cached token (attention K and V).
void la_model_state_size(const la_model * m, int64_t * fixed, int64_t * per_token) {
    int64_t f = 0, t = 0;
    for (int32_t i = 0; i < m->n_seq; i++) {
        const la_layer * L = m->seq[i];
        if (!L->vt) continue;
        const int64_t c1 = (int64_t)L->vt->cache_floats(L, 1), c2 = (int64_t)L->vt->cache_floats(L, 2);
        t += c2 - c1;
        f += c1 - (c2 - c1);
    }
    *fixed = f;
    *per_token = t;
}

// Saved activation floats of block l (its sublayers' mixers and inputs) for a (B, T) batch.
int64_t la_model_layer_act(const la_model * m, int64_t l, int64_t B, int64_t T) {
    int64_t n = 0;
    for (int32_t i = 0; i < m->n_seq; i++)
        if (m->seq[i]->idx == l) n += (int64_t)mixer_act(m->seq[i], B, T) + 2 * B * T * m->D;
    return n;
}

const char * la_model_layer_kind(const la_model * m, int64_t l) {
    return la_mixer_short(m->layers[l].kind);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: a directory with config.json and model.safetensors (fla's names), plus whatever
// the caller adds (the trainer's state). Written into DIR.tmp.XXXXXX, then swapped in with one
// atomic rename (renameat2 RENAME_EXCHANGE when DIR exists), so a crash at any moment leaves
// either the old checkpoint or the new one, never a mix.

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <stdio.h>
#include <sys/syscall.h>
#endif

static const char * const ckpt_files[] = { "config.json", "model.safetensors",
                                           "trainer_state.safetensors", "trainer_state.json" };

static bool is_ckpt_file(const char * name) {
    for (size_t i = 0; i < sizeof ckpt_files / sizeof ckpt_files[0]; i++)
        if (!strcmp(name, ckpt_files[i])) return true;
    return false;
}

// A directory may be replaced only when it holds checkpoint files and nothing else.
static la_status ckpt_replaceable(const char * dir, char * err, size_t errlen) {
    DIR * d = opendir(dir);
    if (!d) return la_fail(err, errlen, LA_STATUS_IO, "%s: exists and is not a directory", dir);
    struct dirent * e;
    la_status s = LA_STATUS_OK;
    bool has_weights = false, empty = true;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        empty = false;
        if (!strcmp(e->d_name, "model.safetensors")) has_weights = true;
        if (!is_ckpt_file(e->d_name)) {
            s = la_fail(err, errlen, LA_STATUS_IO,
                      "%s: refusing to replace a directory that holds '%s' (not a linattn "
                      "checkpoint)", dir, e->d_name);
            break;
        }
    }
    closedir(d);
    if (!s && !empty && !has_weights)
        s = la_fail(err, errlen, LA_STATUS_IO, "%s: refusing to replace a directory without "
                    "model.safetensors (not a linattn checkpoint)", dir);
    return s;
}

static void rm_ckpt_dir(const char * dir) {
    char p[8400];
    for (size_t i = 0; i < sizeof ckpt_files / sizeof ckpt_files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, ckpt_files[i]);
        unlink(p);
    }
    rmdir(dir);
}

la_status la_write_file_atomic(const char * path, const void * data, size_t n, char * err,
                               size_t errlen) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
        return la_fail(err, errlen, LA_STATUS_IO, "%s: path too long", path);
    const int fd = mkstemp(tmp);
    if (fd < 0) return la_fail(err, errlen, LA_STATUS_IO, "%s: cannot create: %s", path, strerror(errno));
    // a replaced file keeps its permissions; a new one gets the umask's (not mkstemp's 0600)
    struct stat st;
    (void)fchmod(fd, stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (st.st_mode & 07777)
                                                                 : (la_new_file_mode() & 0666));
    const char * p = data;
    size_t left = n;
    while (left) {
        const ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            unlink(tmp);
            return la_fail(err, errlen, LA_STATUS_IO, "%s: write failed: %s", path, strerror(errno));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) || close(fd) || rename(tmp, path)) {
        unlink(tmp);
        return la_fail(err, errlen, LA_STATUS_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    return LA_STATUS_OK;
}

la_status la_model_save(const la_model * m, const char * dir, la_save_hook hook, void * ctx,
                        char * err, size_t errlen) {
    if (!m || !dir || !*dir) return la_fail(err, errlen, LA_STATUS_INVALID_ARG, "save: no directory");
    struct stat st;
    if (lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
        return la_fail(err, errlen, LA_STATUS_IO, "%s: is a symbolic link; give the directory "
                       "it points to", dir);
    const bool exists = stat(dir, &st) == 0;
    if (exists) {
        la_status s = ckpt_replaceable(dir, err, errlen);
        if (s) return s;
    }
    char tmp[4096], path[4200];
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    if (snprintf(tmp, sizeof tmp, "%.*s.tmp.XXXXXX", (int)dl, dir) >= (int)sizeof tmp)
        return la_fail(err, errlen, LA_STATUS_IO, "%s: path too long", dir);
    if (!mkdtemp(tmp))
        return la_fail(err, errlen, LA_STATUS_IO, "%s: cannot create a directory next to it: %s",
                     dir, strerror(errno));
    (void)chmod(tmp, exists ? (st.st_mode & 07777) : la_new_file_mode());
    la_status s = LA_STATUS_OK;
    char * json = la_config_dump(&m->cfg);
    snprintf(path, sizeof path, "%s/config.json", tmp);
    if (!json) s = LA_STATUS_NOMEM;
    if (!s) {
        const size_t n = strlen(json);
        json[n] = 0;
        char * j2 = malloc(n + 2);
        if (!j2) s = LA_STATUS_NOMEM;
        else {
            memcpy(j2, json, n);
            j2[n] = '\n';
            s = la_write_file_atomic(path, j2, n + 1, err, errlen);
            free(j2);
        }
    }
    free(json);
    if (!s) {
        la_st_writer * w = la_st_writer_new();
        if (!w) s = LA_STATUS_NOMEM;
        for (int32_t i = 0; i < m->n_par && !s; i++) {
            const la_param * p = &m->par[i];
            s = la_st_writer_add(w, p->name, LA_DTYPE_F32, p->ndim, p->shape, m->w + p->off, err,
                                 errlen);
        }
        snprintf(path, sizeof path, "%s/model.safetensors", tmp);
        if (!s) s = la_st_writer_save(w, path, err, errlen);
        la_st_writer_free(w);
    }
    if (!s && hook) s = hook(ctx, tmp, err, errlen);
    if (!s) {
        // Swap in: exchange with the old directory (atomic), or rename when there is none.
        int rc;
        if (exists) {
#if defined(__linux__) && defined(SYS_renameat2)
            rc = (int)syscall(SYS_renameat2, AT_FDCWD, tmp, AT_FDCWD, dir, 2 /* RENAME_EXCHANGE */);
            if (rc == 0) {
                rm_ckpt_dir(tmp);  // now the old checkpoint
                return LA_STATUS_OK;
            }
#endif
            // No exchange on this filesystem: move the old one aside first.
            char old[4200];
            snprintf(old, sizeof old, "%s.old", tmp);
            rc = rename(dir, old);
            if (rc == 0) {
                rc = rename(tmp, dir);
                if (rc == 0) rm_ckpt_dir(old);
                else rename(old, dir);
            }
        } else {
            rc = rename(tmp, dir);
        }
        if (rc) s = la_fail(err, errlen, LA_STATUS_IO, "%s: cannot move the new checkpoint in: %s",
                          dir, strerror(errno));
    }
    if (s) rm_ckpt_dir(tmp);
    return s;
}

char * la_read_text_file(const char * path, size_t max, char * err, size_t errlen) {
    FILE * f = fopen(path, "rb");
    if (!f) {
        la_fail(err, errlen, LA_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char * buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    const bool bad = !buf || ferror(f) || n > max;
    fclose(f);
    if (bad) {
        la_fail(err, errlen, LA_STATUS_IO, "%s: %s", path,
              !buf ? "out of memory" : n > max ? "file too large" : "read error");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    if (memchr(buf, 0, n)) {
        la_fail(err, errlen, LA_STATUS_FORMAT, "%s: contains a NUL byte (not a text file)", path);
        free(buf);
        return NULL;
    }
    return buf;
}

// Tensors a checkpoint may hold that the model does not use (OPS.md 5.3).
static bool ignorable(const la_model * m, const char * name) {
    const char * a = strstr(name, ".attn.");
    if (m->cfg.mixer == LA_MIXER_GDN && a && !strcmp(a, ".attn.D")) return true;
    return m->din == 0 && m->cfg.tie_word_embeddings && !strcmp(name, "lm_head.weight");
}

la_status la_model_load(la_model ** out, const char * dir, char * err, size_t errlen) {
    if (!out || !dir) return la_fail(err, errlen, LA_STATUS_INVALID_ARG, "load: NULL argument");
    *out = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char * json = la_read_text_file(path, 1 << 20, err, errlen);
    if (!json) return LA_STATUS_IO;
    char e2[256] = "";
    la_model * m = NULL;
    la_status s = la_model_from_json(&m, json, e2, sizeof e2);
    free(json);
    if (s) return la_fail(err, errlen, s, "%s: %s", path, e2);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    la_st_file * f = NULL;
    s = la_st_open(&f, path, err, errlen);
    for (int32_t i = 0; i < m->n_par && !s; i++) {
        const la_param * p = &m->par[i];
        const la_st_tensor * t = la_st_find(f, p->name);
        if (!t) {
            s = la_fail(err, errlen, LA_STATUS_NOT_FOUND, "%s: tensor '%s' is missing", path, p->name);
            break;
        }
        bool same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            char a[96] = "", b[96] = "";
            for (int d = 0; d < t->ndim && d < 8; d++)
                snprintf(a + strlen(a), sizeof a - strlen(a), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            for (int d = 0; d < p->ndim; d++)
                snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", d ? ", " : "", (long long)p->shape[d]);
            s = la_fail(err, errlen, LA_STATUS_SHAPE, "%s: tensor '%s' has shape [%s]; the config "
                      "needs [%s]", path, p->name, a, b);
            break;
        }
        s = la_st_read_f32(f, t, m->w + p->off, p->numel, err, errlen);
        for (int64_t j = 0; j < p->numel && !s; j++)
            if (!isfinite(m->w[p->off + j]))
                s = la_fail(err, errlen, LA_STATUS_NONFINITE, "%s: tensor '%s' holds NaN or Inf",
                          path, p->name);
    }
    for (int64_t i = 0; f && !s && i < la_st_count(f); i++) {
        const la_st_tensor * t = la_st_get(f, i);
        bool known = ignorable(m, t->name);
        for (int32_t j = 0; j < m->n_par && !known; j++) known = !strcmp(m->par[j].name, t->name);
        if (!known)
            s = la_fail(err, errlen, LA_STATUS_FORMAT, "%s: unexpected tensor '%s' for this config",
                      path, t->name);
    }
    la_st_close(f);
    if (s) {
        la_model_free(m);
        return s;
    }
    *out = m;
    return LA_STATUS_OK;
}

char * la_model_config_json(const la_model * m) { return la_config_dump(&m->cfg); }

int64_t la_model_vocab(const la_model * m) { return m->vocab; }
int64_t la_model_layers(const la_model * m) { return m->L; }
int64_t la_model_hidden(const la_model * m) { return m->D; }
