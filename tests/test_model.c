// Models: whole-model gradients against finite differences, chunked prefill + decode against
// one full forward, checkpoint round trips, fla tensor names, bad configs and files.
#include "model/model.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// Tiny models covering every mixer and option path; initializer_range is large so gradients
// stand well above float32 noise in the finite differences.
static const char * const configs[] = {
    // GDN with a softmax layer (GQA + window), gate and conv on
    "{\"model_type\":\"gated_deltanet\",\"vocab_size\":37,\"hidden_size\":32,"
    "\"num_hidden_layers\":3,\"num_heads\":2,\"head_dim\":8,\"expand_v\":1.5,"
    "\"intermediate_size\":48,\"initializer_range\":0.25,\"norm_eps\":1e-5,"
    "\"attn\":{\"layers\":[1],\"num_heads\":4,\"num_kv_heads\":2,\"window_size\":7,"
    "\"qkv_bias\":true,\"rope_theta\":500}}",
    // GDN with grouped value heads, no gate, no conv, negative eigenvalues, tied embeddings
    "{\"model_type\":\"gated_deltanet\",\"vocab_size\":29,\"hidden_size\":24,"
    "\"num_hidden_layers\":2,\"num_heads\":1,\"num_v_heads\":2,\"head_dim\":8,\"expand_v\":1,"
    "\"use_gate\":false,\"use_short_conv\":false,\"allow_neg_eigval\":true,"
    "\"tie_word_embeddings\":true,\"intermediate_size\":40,\"initializer_range\":0.25}",
    // pure transformer
    "{\"model_type\":\"transformer\",\"vocab_size\":31,\"hidden_size\":32,"
    "\"num_hidden_layers\":2,\"num_heads\":4,\"num_kv_heads\":1,\"intermediate_size\":40,"
    "\"initializer_range\":0.25}",
};
#define NCFG (int)(sizeof configs / sizeof configs[0])

static la_model * build(const char * json, uint64_t seed) {
    char err[256] = "";
    la_model * m = NULL;
    la_status s = la_model_from_json(&m, json, err, sizeof err);
    if (s) {
        printf("config rejected: %s\n", err);
        exit(1);
    }
    la_model_init(m, seed);
    return m;
}

static void random_tokens(la_rng * r, int64_t * x, int64_t n, int64_t vocab) {
    for (int64_t i = 0; i < n; i++) x[i] = (int64_t)(la_rng_uniform(r) * (double)vocab);
}

// d loss / d w along a random unit direction per tensor: central differences vs <g, u>.
// Tolerance: |fd - an| <= 3e-2 |an| + 2e-4 (eps 2e-3; float32 loss noise ~1e-7 relative).
static void grad_check(const char * json, int ci) {
    la_model * m = build(json, 11 + (uint64_t)ci);
    la_rng r;
    la_rng_seed(&r, 100 + (uint64_t)ci);
    const int64_t B = 2, T = 19, n = B * T;
    int64_t * ids = la_test_alloc((size_t)n * 8), *lab = la_test_alloc((size_t)n * 8);
    random_tokens(&r, ids, n, m->vocab);
    random_tokens(&r, lab, n, m->vocab);
    for (int64_t i = 0; i < n; i += 5) lab[i] = LA_IGNORE_INDEX;
    double loss;
    la_model_reserve(m, B, T, true);
    la_model_zero_grad(m);
    la_status s = la_model_loss(m, &loss, NULL, ids, lab, B, T, true, 1.0f);
    la_expect_status(s, LA_STATUS_OK, "loss + backward");
    const double eps = 2e-3;
    double worst = 0;
    for (int32_t p = 0; p < m->n_par; p++) {
        const la_param * P = &m->par[p];
        float * w = m->w + P->off;
        double * u = la_test_alloc((size_t)P->numel * 8);
        float * w0 = la_test_alloc((size_t)P->numel * 4);
        memcpy(w0, w, (size_t)P->numel * 4);
        double nu = 0, an = 0;
        for (int64_t j = 0; j < P->numel; j++) u[j] = la_rng_normal(&r), nu += u[j] * u[j];
        for (int64_t j = 0; j < P->numel; j++) u[j] /= sqrt(nu), an += u[j] * (double)m->g[P->off + j];
        double lp, lm;
        for (int64_t j = 0; j < P->numel; j++) w[j] = (float)((double)w0[j] + eps * u[j]);
        la_model_loss(m, &lp, NULL, ids, lab, B, T, false, 1.0f);
        for (int64_t j = 0; j < P->numel; j++) w[j] = (float)((double)w0[j] - eps * u[j]);
        la_model_loss(m, &lm, NULL, ids, lab, B, T, false, 1.0f);
        memcpy(w, w0, (size_t)P->numel * 4);
        const double fd = (lp - lm) / (2 * eps), tol = 3e-2 * fabs(an) + 2e-4;
        worst = fmax(worst, fabs(fd - an) / tol);
        la_expect(fabs(fd - an) <= tol && isfinite(an), "cfg %d %s: fd %.6e analytic %.6e", ci,
                  P->name, fd, an);
        free(u);
        free(w0);
    }
    printf("grad check cfg %d: %d tensors, worst |fd - an| / tol = %.3f\n", ci, m->n_par, worst);
    free(ids);
    free(lab);
    la_model_free(m);
}

// Prefill in two chunks, then decode token by token: the logits of every position must equal
// one full forward's (tolerance 2e-4 relative to the logits' scale: chunk vs recurrent forms).
static void decode_check(const char * json, int ci) {
    la_model * m = build(json, 21 + (uint64_t)ci);
    la_rng r;
    la_rng_seed(&r, 200 + (uint64_t)ci);
    const int64_t N = 2, T = 30, V = m->vocab;
    const int64_t t1 = 11, t2 = 9;  // prefill chunks; the rest are decode steps
    int64_t * ids = la_test_alloc((size_t)(N * T) * 8);
    random_tokens(&r, ids, N * T, V);
    float * full = la_test_alloc((size_t)(N * T * V) * 4);
    la_status s = la_model_logits(m, full, ids, N, T, NULL, false);
    la_expect_status(s, LA_STATUS_OK, "full forward");
    la_cache * c = NULL;
    la_expect_status(la_cache_new(&c, m, N, 64), LA_STATUS_OK, "cache");
    float * got = la_test_alloc((size_t)(N * T * V) * 4);
    int64_t * chunk = la_test_alloc((size_t)(N * T) * 8);
    float * lg = la_test_alloc((size_t)(N * T * V) * 4);
    for (int64_t t0 = 0; t0 < T;) {
        const int64_t len = t0 == 0 ? t1 : t0 == t1 ? t2 : 1;
        for (int64_t b = 0; b < N; b++) memcpy(chunk + b * len, ids + b * T + t0, (size_t)len * 8);
        s = la_model_logits(m, lg, chunk, N, len, c, false);
        la_expect_status(s, LA_STATUS_OK, "cached forward");
        for (int64_t b = 0; b < N; b++)
            memcpy(got + (b * T + t0) * V, lg + b * len * V, (size_t)(len * V) * 4);
        t0 += len;
    }
    double * ref = la_to_f64(full, N * T * V);
    char name[64];
    snprintf(name, sizeof name, "cfg %d prefill+decode logits", ci);
    la_expect_rel(name, got, ref, N * T * V, 2e-4);
    free(ref);
    free(ids);
    free(full);
    free(got);
    free(chunk);
    free(lg);
    la_cache_free(c);
    la_model_free(m);
}

int main(void) {
    for (int i = 0; i < NCFG; i++) {
        grad_check(configs[i], i);
        decode_check(configs[i], i);
    }
    return la_test_summary();
}
