// The causal LM: parameter table and arenas, initialisation, the training pass (loss and
// gradients), the inference pass with decode caches, and checkpoint I/O.
#include "model.h"

#include "nn.h"
#include "rng.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static la_status mfail(char * err, size_t errlen, la_status s, const char * fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return s;
}

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

// NULL when the mixer's file is not linked in (weak symbols resolve to address 0).
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
    if (L && L->np == LA_MAX_LAYER_PARAMS) return -1;
    la_param * p = &m->par[m->n_par];
    memset(p, 0, sizeof *p);
    const int n = L ? snprintf(p->name, sizeof p->name, "model.layers.%d.attn.%s", L->idx, suffix)
                    : snprintf(p->name, sizeof p->name, "%s", suffix);
    if (n < 0 || n >= (int)sizeof p->name || ndim < 1 || ndim > 4) return -1;
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

static int32_t add_named(la_model * m, const char * fmt, int idx, int32_t ndim,
                         const int64_t * shape, la_init init, bool decay) {
    char name[LA_NAME_MAX];
    snprintf(name, sizeof name, fmt, idx);
    return la_layer_param(m, NULL, name, ndim, shape, init, decay);
}

// ---------------------------------------------------------------------------------------------
// Build

void la_model_free(la_model * m) {
    if (!m) return;
    la_config_free(&m->cfg);
    free(m->layers);
    free(m->par);
    free(m->w);
    free(m->g);
    free(m->m1);
    free(m->m2);
    free(m->act);
    free(m->work);
    free(m);
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
    m->L = c->num_hidden_layers;
    m->D = c->hidden_size;
    m->vocab = c->vocab_size;
    m->I = c->intermediate_size;
    m->layers = calloc((size_t)m->L, sizeof *m->layers);
    la_status s = m->layers ? LA_STATUS_OK : LA_STATUS_NOMEM;
    const int64_t D = m->D, I = m->I;
    if (!s) m->p_emb = add_named(m, "model.embeddings.weight", 0, 2, (int64_t[]){ m->vocab, D },
                                 LA_INIT_NORMAL, true);
    const la_mixer_vt * fam = la_mixer_vtable(c->mixer);
    for (int i = 0; i < 4; i++) m->p_root[i] = -1;
    if (!s && fam && fam->root_params) s = fam->root_params(m, err, errlen);
    for (int64_t l = 0; l < m->L && !s; l++) {
        la_layer * L = &m->layers[l];
        L->idx = (int32_t)l;
        L->kind = c->attn_of[l] >= 0 ? LA_MIXER_ATTN : c->mixer;
        L->spec = c->attn_of[l] >= 0 ? &c->attn[c->attn_of[l]] : NULL;
        L->vt = la_mixer_vtable(L->kind);
        if (!L->vt) {
            s = mfail(err, errlen, LA_STATUS_UNSUPPORTED,
                      "model: layer %lld: mixer '%s' is not built into this linattn", (long long)l,
                      la_mixer_short(L->kind));
            break;
        }
        L->p_attn_norm = add_named(m, "model.layers.%d.attn_norm.weight", (int)l, 1,
                                   (int64_t[]){ D }, LA_INIT_ONE, false);
        if ((s = L->vt->build(m, L, err, errlen))) break;
        L->p_mlp_norm = add_named(m, "model.layers.%d.mlp_norm.weight", (int)l, 1,
                                  (int64_t[]){ D }, LA_INIT_ONE, false);
        L->p_gate = add_named(m, "model.layers.%d.mlp.gate_proj.weight", (int)l, 2,
                              (int64_t[]){ I, D }, LA_INIT_NORMAL, true);
        L->p_up = add_named(m, "model.layers.%d.mlp.up_proj.weight", (int)l, 2,
                            (int64_t[]){ I, D }, LA_INIT_NORMAL, true);
        L->p_down = add_named(m, "model.layers.%d.mlp.down_proj.weight", (int)l, 2,
                              (int64_t[]){ D, I }, LA_INIT_NORMAL, true);
        if (L->p_attn_norm < 0 || L->p_mlp_norm < 0 || L->p_gate < 0 || L->p_up < 0 ||
            L->p_down < 0 || L->np < 0)
            s = LA_STATUS_NOMEM;
        for (int i = 0; i < L->np && !s; i++)
            if (L->p[i] < 0) s = LA_STATUS_NOMEM;
    }
    if (!s) {
        m->p_norm = add_named(m, "model.norm.weight", 0, 1, (int64_t[]){ D }, LA_INIT_ONE, false);
        m->p_head = c->tie_word_embeddings
                        ? m->p_emb
                        : add_named(m, "lm_head.weight", 0, 2, (int64_t[]){ m->vocab, D },
                                    LA_INIT_NORMAL, true);
        if (m->p_emb < 0 || m->p_norm < 0 || m->p_head < 0) s = LA_STATUS_NOMEM;
    }
    if (!s && !(m->w = calloc(m->n_floats, sizeof(float)))) s = LA_STATUS_NOMEM;
    if (s) {
        if (s == LA_STATUS_NOMEM) mfail(err, errlen, s, "model: out of memory");
        la_model_free(m);
        return s;
    }
    *out = m;
    return LA_STATUS_OK;
}

la_status la_model_from_json(la_model ** out, const char * json, char * err, size_t errlen) {
    if (!out || !json) return mfail(err, errlen, LA_STATUS_INVALID_ARG, "model: NULL argument");
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
    for (int64_t l = 0; l < m->L; l++)
        if (m->layers[l].vt->init) m->layers[l].vt->init(m, &m->layers[l], seed);
}

int64_t la_model_num_params(const la_model * m) {
    int64_t n = 0;
    for (int32_t i = 0; i < m->n_par; i++) n += m->par[i].numel;
    return n;
}

// ---------------------------------------------------------------------------------------------
// Arenas for a batch shape
//
// Training keeps, per layer, the block's residual input h_l, the normed inputs xn_l and xn2_l
// and the mid-block residual hm_l (4 B T D floats) plus the mixer's own saved activations; the
// head keeps norm(h_L). Inference keeps one layer's worth and reuses it.

#define HEAD_ROWS 256  // rows of logits formed at a time (the (rows, vocab) matrix never exists)

static size_t block_floats(const la_model * m, int64_t rows) { return (size_t)(rows * m->D); }

la_status la_model_reserve(la_model * m, int64_t B, int64_t T, bool train) {
    if (!m) return LA_STATUS_INVALID_ARG;
    if (B <= 0 || T <= 0) return LA_STATUS_SHAPE;
    const int64_t rows = B * T;
    const size_t bf = block_floats(m, rows);
    size_t act = 0, mix_max = 0, work = 0;
    for (int64_t l = 0; l < m->L; l++) {
        const la_layer * L = &m->layers[l];
        const size_t a = la_align_up(L->vt->act_floats(L, B, T) * sizeof(float)) / sizeof(float);
        if (train) act += 4 * bf + a;
        mix_max = LA_MAX(mix_max, a);
        work = LA_MAX(work, L->vt->work_bytes(L, B, T, train));
    }
    // training: + h_L, norm(h_L), dh, two gradient temporaries; inference: h, a, b + one mixer
    const size_t tail = train ? act : 0;
    act += train ? 5 * bf : 3 * bf + mix_max;
    work = LA_MAX(work, la_mlp_workspace_size(rows, m->D, m->I));
    const size_t head = la_align_up((size_t)HEAD_ROWS * (size_t)(m->vocab + 2 * m->D) *
                                    sizeof(float)) + 2 * (size_t)HEAD_ROWS * sizeof(int64_t) +
                        4 * LA_ALIGN;
    work = la_align_up(LA_MAX(work, head));
    if (!m->act || act > m->act_floats || work > m->work_bytes) {
        float * a = NULL;
        void * w = NULL;
        const size_t na = LA_MAX(act, m->act_floats), nw = LA_MAX(work, m->work_bytes);
        if (posix_memalign((void **)&a, LA_ALIGN, na * sizeof(float)) ||
            posix_memalign(&w, LA_ALIGN, nw)) {
            free(a);
            free(w);
            return LA_STATUS_NOMEM;
        }
        free(m->act);
        free(m->work);
        m->act = a;
        m->act_floats = na;
        m->work = w;
        m->work_bytes = nw;
    }
    if (train && !m->g) {
        m->g = calloc(m->n_floats, sizeof(float));
        if (!m->g) return LA_STATUS_NOMEM;
    }
    // the layout for this shape
    size_t off = 0;
    for (int64_t l = 0; l < m->L; l++) {
        la_layer * L = &m->layers[l];
        if (train) {
            L->act_off = off + 4 * bf;
            off += 4 * bf + la_align_up(L->vt->act_floats(L, B, T) * sizeof(float)) / sizeof(float);
        } else {
            L->act_off = 3 * bf;
        }
    }
    m->tail_off = tail;
    m->rB = B;
    m->rT = T;
    m->rtrain = train;
    return LA_STATUS_OK;
}

void la_model_zero_grad(la_model * m) {
    if (m->g) memset(m->g, 0, m->n_floats * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Forward pieces

static inline float * PW(const la_model * m, int32_t p) { return m->w + m->par[p].off; }
static inline float * PG(const la_model * m, int32_t p) { return m->g + m->par[p].off; }

static la_status check_ids(const la_model * m, const int64_t * ids, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->vocab) return LA_STATUS_INVALID_ARG;
    return LA_STATUS_OK;
}

// One block, h_out = h + mixer(norm(h)) + mlp(norm(...)). xn, hm, xn2 (rows, D) are where the
// intermediates go (saved in training, scratch otherwise).
static la_status block_forward(la_model * m, const la_layer * L, const la_call * c, float * h_out,
                               const float * h, float * xn, float * hm, float * xn2) {
    const int64_t rows = c->B * c->T, D = m->D;
    const float eps = (float)m->cfg.norm_eps;
    la_status s = la_rmsnorm_forward(xn, h, PW(m, L->p_attn_norm), eps, rows, D);
    if (!s) s = L->vt->forward(m, L, c, hm, xn);
    if (s) return s;
    la_vec_add(hm, h, rows * D);
    s = la_rmsnorm_forward(xn2, hm, PW(m, L->p_mlp_norm), eps, rows, D);
    if (!s) s = la_mlp_forward(h_out, xn2, PW(m, L->p_gate), PW(m, L->p_up), PW(m, L->p_down),
                               rows, D, m->I, m->work);
    if (!s && h_out != hm) la_vec_add(h_out, hm, rows * D);
    return s;
}

// Head over the rows listed in idx (n of them): logits (n, vocab) in blocks of HEAD_ROWS.
// With targets: adds the summed loss to *loss_sum and, when dhn is given, writes
// d(weight * sum loss / count) into dhn's rows and adds to the head's gradient.
// correct (optional) counts rows whose argmax is the target (first maximum wins).
static la_status head(la_model * m, const float * hn, const int64_t * idx, int64_t n,
                      const int64_t * targets, float * logits_out, double * loss_sum,
                      float * dhn, float weight, int64_t * correct) {
    const int64_t D = m->D, V = m->vocab;
    la_carver cv = { (char *)m->work, 0 };
    float * x = la_carve(&cv, (size_t)HEAD_ROWS * (size_t)D * sizeof(float));   // (HB, D)
    float * lg = la_carve(&cv, (size_t)HEAD_ROWS * (size_t)V * sizeof(float));  // (HB, V)
    float * dx = la_carve(&cv, (size_t)HEAD_ROWS * (size_t)D * sizeof(float));  // (HB, D)
    int64_t * tg = la_carve(&cv, (size_t)HEAD_ROWS * sizeof(int64_t));
    const float * W = PW(m, m->p_head);
    for (int64_t r0 = 0; r0 < n; r0 += HEAD_ROWS) {
        const int64_t nb = LA_MIN(HEAD_ROWS, n - r0);
        for (int64_t i = 0; i < nb; i++) memcpy(x + i * D, hn + idx[r0 + i] * D, (size_t)D * 4);
        float * out = logits_out ? logits_out + r0 * V : lg;
        la_status s = la_linear_forward(out, x, W, NULL, nb, D, V);
        if (s) return s;
        if (!targets) continue;
        for (int64_t i = 0; i < nb; i++) tg[i] = targets[idx[r0 + i]];
        for (int64_t i = 0; correct && i < nb; i++) {
            const float * row = out + i * V;
            int64_t best = 0;
            for (int64_t v = 1; v < V; v++)
                if (row[v] > row[best]) best = v;
            *correct += best == tg[i];
        }
        double l;
        s = la_cross_entropy(&l, dhn ? out : NULL, out, tg, nb, V, LA_IGNORE_INDEX);
        if (s) return s;
        *loss_sum += l * (double)nb;  // every listed row is counted
        if (!dhn) continue;
        // la_cross_entropy divided by nb; the wanted factor is weight / n.
        const float f = weight * (float)nb / (float)n;
        for (int64_t i = 0; i < nb * V; i++) out[i] *= f;
        la_lin_bwd(dx, 0.0f, PG(m, m->p_head), NULL, out, x, W, nb, D, V);
        for (int64_t i = 0; i < nb; i++) memcpy(dhn + idx[r0 + i] * D, dx + i * D, (size_t)D * 4);
    }
    return LA_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// The forward pass shared by training, evaluation and decoding
//
// Returns norm(h_L) (rows, D) inside the activation arena. train: saves what backward needs.
// cache: every mixer starts from and updates its layer's cache (inference only).

static float * model_forward(la_model * m, const int64_t * ids, int64_t B, int64_t T, bool train,
                             la_cache * cache, la_status * st) {
    const int64_t rows = B * T, D = m->D;
    const size_t bf = block_floats(m, rows);
    float * tail = m->act + m->tail_off;
    la_status s = la_embedding_forward(train ? m->act : tail, ids, PW(m, m->p_emb), rows,
                                       m->vocab, D);
    for (int64_t l = 0; l < m->L && !s; l++) {
        la_layer * L = &m->layers[l];
        la_call c = { .B = B, .T = T, .act = m->act + L->act_off, .work = m->work,
                      .work_size = m->work_bytes, .cache = cache ? &cache->lc[l] : NULL };
        if (train) {
            float * base = m->act + L->act_off - 4 * bf;
            float * next = l + 1 < m->L ? m->act + m->layers[l + 1].act_off - 4 * bf : tail;
            s = block_forward(m, L, &c, next, base, base + bf, base + 2 * bf, base + 3 * bf);
        } else {
            // h in place: norm(h) -> a, mixer -> b, b += h, norm(b) -> a, mlp(a) -> h, h += b
            s = block_forward(m, L, &c, tail, tail, tail + bf, tail + 2 * bf, tail + bf);
        }
    }
    float * hn = tail + bf;
    if (!s) s = la_rmsnorm_forward(hn, tail, PW(m, m->p_norm), (float)m->cfg.norm_eps, rows, D);
    if (!s && cache)
        for (int64_t l = 0; l < m->L; l++)
            for (int64_t n = 0; n < cache->N; n++) cache->lc[l].len[n] += T;
    *st = s;
    return s ? NULL : hn;
}

static la_status model_loss(la_model * m, double * loss, int64_t * count, int64_t * correct,
                            const int64_t * ids, const int64_t * labels, int64_t B, int64_t T,
                            bool backward, float weight) {
    if (!m || !ids || !labels || !loss) return LA_STATUS_INVALID_ARG;
    if (B <= 0 || T <= 0) return LA_STATUS_SHAPE;
    const int64_t rows = B * T, D = m->D;
    if (check_ids(m, ids, rows)) return LA_STATUS_INVALID_ARG;
    for (int64_t i = 0; i < rows; i++)
        if (labels[i] != LA_IGNORE_INDEX && (labels[i] < 0 || labels[i] >= m->vocab))
            return LA_STATUS_INVALID_ARG;
    la_status s = la_model_reserve(m, B, T, backward);
    if (s) return s;
    const bool train = backward;
    float * hn = model_forward(m, ids, B, T, train, NULL, &s);
    if (s) return s;
    const size_t bf = block_floats(m, rows);
    float * hL = hn - bf, *dh = hn + bf, *t1 = dh + bf, *t2 = t1 + bf;
    int64_t n = 0;
    int64_t * idx = malloc((size_t)rows * sizeof *idx);
    if (!idx) return LA_STATUS_NOMEM;
    for (int64_t i = 0; i < rows; i++)
        if (labels[i] != LA_IGNORE_INDEX) idx[n++] = i;
    double sum = 0;
    if (train) memset(dh, 0, bf * sizeof(float));
    if (n) s = head(m, hn, idx, n, labels, NULL, &sum, train ? dh : NULL, weight, correct);
    free(idx);
    *loss = n ? sum / (double)n : 0.0;
    if (count) *count = n;
    if (s || !train) return s;
    // Backward through the final norm, the blocks (in reverse) and the embedding.
    const float eps = (float)m->cfg.norm_eps;
    s = la_rmsnorm_backward(t1, PG(m, m->p_norm), dh, hL, PW(m, m->p_norm), eps, rows, D, true);
    if (s) return s;
    memcpy(dh, t1, bf * sizeof(float));  // dh = dL/dh_L
    for (int64_t l = m->L - 1; l >= 0 && !s; l--) {
        la_layer * L = &m->layers[l];
        float * base = m->act + L->act_off - 4 * bf;
        float * h = base, *xn = base + bf, *hm = base + 2 * bf, *xn2 = base + 3 * bf;
        la_call c = { .B = B, .T = T, .act = m->act + L->act_off, .work = m->work,
                      .work_size = m->work_bytes };
        // h_{l+1} = hm + mlp(norm(hm)):  dhm = dh + norm'(mlp'(dh))
        s = la_mlp_backward(t1, PG(m, L->p_gate), PG(m, L->p_up), PG(m, L->p_down), dh, xn2,
                            PW(m, L->p_gate), PW(m, L->p_up), PW(m, L->p_down), rows, D, m->I,
                            true, m->work);
        if (!s) s = la_rmsnorm_backward(t2, PG(m, L->p_mlp_norm), t1, hm, PW(m, L->p_mlp_norm),
                                        eps, rows, D, true);
        if (s) break;
        la_vec_add(dh, t2, rows * D);
        // hm = h + mixer(norm(h)):  dh = dhm + norm'(mixer'(dhm))
        s = L->vt->backward(m, L, &c, t1, dh, xn);
        if (!s) s = la_rmsnorm_backward(t2, PG(m, L->p_attn_norm), t1, h, PW(m, L->p_attn_norm),
                                        eps, rows, D, true);
        if (!s) la_vec_add(dh, t2, rows * D);
    }
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
    if (!m || !logits || !ids) return LA_STATUS_INVALID_ARG;
    if (B <= 0 || T <= 0 || (cache && cache->N != B)) return LA_STATUS_SHAPE;
    if (check_ids(m, ids, B * T)) return LA_STATUS_INVALID_ARG;
    la_status s = la_model_reserve(m, B, T, false);
    if (s) return s;
    float * hn = model_forward(m, ids, B, T, false, cache, &s);
    if (s) return s;
    const int64_t n = last_only ? B : B * T;
    int64_t * idx = malloc((size_t)n * sizeof *idx);
    if (!idx) return LA_STATUS_NOMEM;
    for (int64_t i = 0; i < n; i++) idx[i] = last_only ? i * T + T - 1 : i;
    s = head(m, hn, idx, n, NULL, logits, NULL, NULL, 0.0f, NULL);
    free(idx);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Decode caches

void la_cache_free(la_cache * c) {
    if (!c) return;
    free(c->f);
    free(c->len);
    free(c->lc);
    free(c);
}

la_status la_cache_new(la_cache ** out, const la_model * m, int64_t N, int64_t cap) {
    if (!out || !m) return LA_STATUS_INVALID_ARG;
    *out = NULL;
    if (N <= 0 || cap <= 0) return LA_STATUS_SHAPE;
    la_cache * c = calloc(1, sizeof *c);
    if (!c) return LA_STATUS_NOMEM;
    c->N = N;
    c->cap = cap;
    c->L = m->L;
    size_t total = 0;
    for (int64_t l = 0; l < m->L; l++)
        total += la_align_up((size_t)N * m->layers[l].vt->cache_floats(&m->layers[l], cap) * 4) / 4;
    c->f = calloc(total ? total : 1, sizeof(float));
    c->len = calloc((size_t)(m->L * N), sizeof(int64_t));
    c->lc = calloc((size_t)m->L, sizeof(la_lcache));
    if (!c->f || !c->len || !c->lc) {
        la_cache_free(c);
        return LA_STATUS_NOMEM;
    }
    size_t off = 0;
    for (int64_t l = 0; l < m->L; l++) {
        c->lc[l] = (la_lcache){ .f = c->f + off, .len = c->len + l * N, .cap = cap };
        off += la_align_up((size_t)N * m->layers[l].vt->cache_floats(&m->layers[l], cap) * 4) / 4;
    }
    *out = c;
    return LA_STATUS_OK;
}

// Floats of decode state per sequence: the fixed part (recurrent states, conv caches) and the
// part that grows with every cached token (attention K and V).
void la_model_state_size(const la_model * m, int64_t * fixed, int64_t * per_token) {
    int64_t f = 0, t = 0;
    for (int64_t l = 0; l < m->L; l++) {
        const la_layer * L = &m->layers[l];
        const int64_t c1 = (int64_t)L->vt->cache_floats(L, 1), c2 = (int64_t)L->vt->cache_floats(L, 2);
        t += c2 - c1;
        f += c1 - (c2 - c1);
    }
    *fixed = f;
    *per_token = t;
}

// Saved activation floats of layer l (mixer and block) for a (B, T) training batch.
int64_t la_model_layer_act(const la_model * m, int64_t l, int64_t B, int64_t T) {
    const la_layer * L = &m->layers[l];
    return (int64_t)L->vt->act_floats(L, B, T) + 4 * B * T * m->D;
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
    if (!d) return mfail(err, errlen, LA_STATUS_IO, "%s: exists and is not a directory", dir);
    struct dirent * e;
    la_status s = LA_STATUS_OK;
    bool has_config = false;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!strcmp(e->d_name, "config.json")) has_config = true;
        if (!is_ckpt_file(e->d_name)) {
            s = mfail(err, errlen, LA_STATUS_IO,
                      "%s: refusing to replace a directory that holds '%s' (not a linattn "
                      "checkpoint)", dir, e->d_name);
            break;
        }
    }
    closedir(d);
    (void)has_config;
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
        return mfail(err, errlen, LA_STATUS_IO, "%s: path too long", path);
    const int fd = mkstemp(tmp);
    if (fd < 0) return mfail(err, errlen, LA_STATUS_IO, "%s: cannot create: %s", path, strerror(errno));
    const char * p = data;
    size_t left = n;
    while (left) {
        const ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            unlink(tmp);
            return mfail(err, errlen, LA_STATUS_IO, "%s: write failed: %s", path, strerror(errno));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) || close(fd) || rename(tmp, path)) {
        unlink(tmp);
        return mfail(err, errlen, LA_STATUS_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    return LA_STATUS_OK;
}

la_status la_model_save(const la_model * m, const char * dir, la_save_hook hook, void * ctx,
                        char * err, size_t errlen) {
    if (!m || !dir || !*dir) return mfail(err, errlen, LA_STATUS_INVALID_ARG, "save: no directory");
    struct stat st;
    const bool exists = stat(dir, &st) == 0;
    if (exists) {
        la_status s = ckpt_replaceable(dir, err, errlen);
        if (s) return s;
    }
    char tmp[4096], path[4200];
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    if (snprintf(tmp, sizeof tmp, "%.*s.tmp.XXXXXX", (int)dl, dir) >= (int)sizeof tmp)
        return mfail(err, errlen, LA_STATUS_IO, "%s: path too long", dir);
    if (!mkdtemp(tmp))
        return mfail(err, errlen, LA_STATUS_IO, "%s: cannot create a directory next to it: %s",
                     dir, strerror(errno));
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
        if (rc) s = mfail(err, errlen, LA_STATUS_IO, "%s: cannot move the new checkpoint in: %s",
                          dir, strerror(errno));
    }
    if (s) rm_ckpt_dir(tmp);
    return s;
}

char * la_read_text_file(const char * path, size_t max, char * err, size_t errlen) {
    FILE * f = fopen(path, "rb");
    if (!f) {
        mfail(err, errlen, LA_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char * buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    const bool bad = !buf || ferror(f) || n > max;
    fclose(f);
    if (bad) {
        mfail(err, errlen, LA_STATUS_IO, "%s: %s", path,
              !buf ? "out of memory" : n > max ? "file too large" : "read error");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    if (memchr(buf, 0, n)) {
        mfail(err, errlen, LA_STATUS_FORMAT, "%s: contains a NUL byte (not a text file)", path);
        free(buf);
        return NULL;
    }
    return buf;
}

// Tensors a checkpoint may hold that the model does not use (OPS.md 5.3).
static bool ignorable(const la_model * m, const char * name) {
    const char * a = strstr(name, ".attn.");
    if (m->cfg.mixer == LA_MIXER_GDN && a && !strcmp(a, ".attn.D")) return true;
    return m->cfg.tie_word_embeddings && !strcmp(name, "lm_head.weight");
}

la_status la_model_load(la_model ** out, const char * dir, char * err, size_t errlen) {
    if (!out || !dir) return mfail(err, errlen, LA_STATUS_INVALID_ARG, "load: NULL argument");
    *out = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char * json = la_read_text_file(path, 1 << 20, err, errlen);
    if (!json) return LA_STATUS_IO;
    char e2[256] = "";
    la_model * m = NULL;
    la_status s = la_model_from_json(&m, json, e2, sizeof e2);
    free(json);
    if (s) return mfail(err, errlen, s, "%s: %s", path, e2);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    la_st_file * f = NULL;
    s = la_st_open(&f, path, err, errlen);
    for (int32_t i = 0; i < m->n_par && !s; i++) {
        const la_param * p = &m->par[i];
        const la_st_tensor * t = la_st_find(f, p->name);
        if (!t) {
            s = mfail(err, errlen, LA_STATUS_NOT_FOUND, "%s: tensor '%s' is missing", path, p->name);
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
            s = mfail(err, errlen, LA_STATUS_SHAPE, "%s: tensor '%s' has shape [%s]; the config "
                      "needs [%s]", path, p->name, a, b);
            break;
        }
        s = la_st_read_f32(f, t, m->w + p->off, p->numel, err, errlen);
        for (int64_t j = 0; j < p->numel && !s; j++)
            if (!isfinite(m->w[p->off + j]))
                s = mfail(err, errlen, LA_STATUS_NONFINITE, "%s: tensor '%s' holds NaN or Inf",
                          path, p->name);
    }
    for (int64_t i = 0; f && !s && i < la_st_count(f); i++) {
        const la_st_tensor * t = la_st_get(f, i);
        bool known = ignorable(m, t->name);
        for (int32_t j = 0; j < m->n_par && !known; j++) known = !strcmp(m->par[j].name, t->name);
        if (!known)
            s = mfail(err, errlen, LA_STATUS_FORMAT, "%s: unexpected tensor '%s' for this config",
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
