// Training pieces: the learning-rate schedule, global-norm clipping, AdamW, and the optimizer
// state of a checkpoint. Every reduction runs in a fixed order, so a run is a function of its
// seed and data only, and a resumed run continues bit for bit.
#include "model.h"

#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double la_lr_schedule(int64_t step, int64_t total, int64_t warmup, double lr, double min_lr) {
    if (step < warmup) return lr * (double)(step + 1) / (double)warmup;
    const int64_t span = total - warmup;
    if (span <= 1) return lr;
    const double p = fmin(1.0, (double)(step - warmup) / (double)(span - 1));
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(3.141592653589793 * p));
}

// Sum of squares over fixed blocks, blocks summed in order.
#define CLIP_BLOCK 65536
double la_model_clip_grad(la_model * m, double clip) {
    if (!m->g) return 0.0;
    const int64_t n = (int64_t)m->n_floats, nb = (n + CLIP_BLOCK - 1) / CLIP_BLOCK;
    double * part = malloc((size_t)nb * sizeof *part);
    if (!part) return NAN;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(nb, n))
    for (int64_t b = 0; b < nb; b++) {
        double s = 0;
        const int64_t e = LA_MIN(n, (b + 1) * CLIP_BLOCK);
        for (int64_t i = b * CLIP_BLOCK; i < e; i++) s += (double)m->g[i] * (double)m->g[i];
        part[b] = s;
    }
    double ss = 0;
    for (int64_t b = 0; b < nb; b++) ss += part[b];
    free(part);
    const double norm = sqrt(ss);
    if (clip > 0 && norm > clip && isfinite(norm)) {
        const float f = (float)(clip / (norm + 1e-6));
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(nb, n))
        for (int64_t b = 0; b < nb; b++) {
            const int64_t e = LA_MIN(n, (b + 1) * CLIP_BLOCK);
            for (int64_t i = b * CLIP_BLOCK; i < e; i++) m->g[i] *= f;
        }
    }
    return norm;
}

// Both moment arenas or neither (a failed allocation leaves none behind).
static bool alloc_moments(la_model * m) {
    m->m1 = calloc(m->n_floats, sizeof(float));
    m->m2 = calloc(m->n_floats, sizeof(float));
    if (m->m1 && m->m2) return true;
    free(m->m1), free(m->m2);
    m->m1 = m->m2 = NULL;
    return false;
}

la_status la_model_adamw(la_model * m, double lr, const la_adamw * o, int64_t t) {
    if (!m || !o || !m->g || t < 1) return LA_STATUS_INVALID_ARG;
    if (!m->m1 && !alloc_moments(m)) return LA_STATUS_NOMEM;
    // torch.optim.AdamW: w <- w (1 - lr wd); m, v moments; w <- w - lr mhat / (sqrt(vhat) + eps)
    const double bc1 = 1.0 - pow(o->beta1, (double)t), bc2 = 1.0 - pow(o->beta2, (double)t);
    const float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    const float step = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
#pragma omp parallel for schedule(dynamic, 1) num_threads(la_nn_threads(m->n_par, (int64_t)m->n_floats))
    for (int32_t p = 0; p < m->n_par; p++) {
        const la_param * P = &m->par[p];
        float * w = m->w + P->off, *g = m->g + P->off, *m1 = m->m1 + P->off, *m2 = m->m2 + P->off;
        const float keep = P->decay ? (float)(1.0 - lr * o->weight_decay) : 1.0f;
        for (int64_t i = 0; i < P->numel; i++) {
            m1[i] = b1 * m1[i] + (1.0f - b1) * g[i];
            m2[i] = b2 * m2[i] + (1.0f - b2) * g[i] * g[i];
            w[i] = w[i] * keep - step * m1[i] / (sqrtf(m2[i]) * rbc2 + eps);
        }
    }
    return LA_STATUS_OK;
}

bool la_model_params_finite(const la_model * m) {
    for (size_t i = 0; i < m->n_floats; i++)
        if (!isfinite(m->w[i])) return false;
    return true;
}

// trainer_state.safetensors: the two AdamW moment arenas and the step, in the arena layout
// of this config (the loader checks the length).
la_status la_model_optim_save(const la_model * m, const char * path, int64_t step, char * err,
                              size_t errlen) {
    la_st_writer * w = la_st_writer_new();
    if (!w) return LA_STATUS_NOMEM;
    float * zero = NULL;
    const float * m1 = m->m1, *m2 = m->m2;
    if (!m1) {
        zero = calloc(m->n_floats, sizeof(float));
        if (!zero) {
            la_st_writer_free(w);
            return LA_STATUS_NOMEM;
        }
        m1 = m2 = zero;
    }
    const int64_t n[1] = { (int64_t)m->n_floats }, one[1] = { 1 };
    la_status s = la_st_writer_add(w, "adamw.exp_avg", LA_DTYPE_F32, 1, n, m1, err, errlen);
    if (!s) s = la_st_writer_add(w, "adamw.exp_avg_sq", LA_DTYPE_F32, 1, n, m2, err, errlen);
    if (!s) s = la_st_writer_add(w, "step", LA_DTYPE_I64, 1, one, &step, err, errlen);
    if (!s) s = la_st_writer_save(w, path, err, errlen);
    la_st_writer_free(w);
    free(zero);
    return s;
}

la_status la_model_optim_load(la_model * m, const char * path, int64_t * step, char * err,
                              size_t errlen) {
    la_st_file * f = NULL;
    la_status s = la_st_open(&f, path, err, errlen);
    if (s) return s;
    const la_st_tensor * a = la_st_find(f, "adamw.exp_avg"), *b = la_st_find(f, "adamw.exp_avg_sq");
    const la_st_tensor * t = la_st_find(f, "step");
    if (!a || !b || !t || a->numel != (int64_t)m->n_floats || b->numel != a->numel || t->numel != 1) {
        la_st_close(f);
        if (err && errlen)
            snprintf(err, errlen, "%s: not the optimizer state of this model (missing tensors or "
                     "a different parameter layout)", path);
        return LA_STATUS_FORMAT;
    }
    s = m->m1 || alloc_moments(m) ? LA_STATUS_OK : LA_STATUS_NOMEM;
    if (!s) s = la_st_read_f32(f, a, m->m1, a->numel, err, errlen);
    if (!s) s = la_st_read_f32(f, b, m->m2, b->numel, err, errlen);
    if (!s) s = la_st_read_i64(f, t, step, 1, err, errlen);
    la_st_close(f);
    if (!s && *step < 0) {
        if (err && errlen) snprintf(err, errlen, "%s: negative step", path);
        s = LA_STATUS_FORMAT;
    }
    return s;
}
