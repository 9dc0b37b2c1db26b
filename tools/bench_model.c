// linattn bench-model: model-level speed (issue figures in docs/BENCHMARKS.md).
//   1. training tokens/s (forward + backward + AdamW) of a ~10M-parameter GDN hybrid at T=2048;
//   2. decode tokens/s of the same model after a 2048-token prompt, for 1 and 8 sequences;
//   3. prefill time vs T for a pure GDN model and a pure-attention model of the same size.
// sgemm GFLOP/s measured in the same run is printed as the machine's yardstick.
#include "cli.h"
#include "lm.h"

#include <stdlib.h>
#include <string.h>

static double sgemm_gflops(void) {
    const int64_t n = 1024;
    float * a = calloc((size_t)(n * n), 4), *b = calloc((size_t)(n * n), 4), *c = calloc((size_t)(n * n), 4);
    if (!a || !b || !c) cli_die("out of memory");
    for (int64_t i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    la_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        const double t0 = cli_now();
        la_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        best = fmin(best, cli_now() - t0);
    }
    free(a), free(b), free(c);
    return 2.0 * (double)(n * n * n) / best / 1e9;
}

static la_model * make(const char * layers, int64_t hidden) {
    lm_arch a = { .layers = layers, .hidden = hidden, .heads = hidden / 128, .head_dim = 128,
                  .expand_v = 1, .attn_heads = hidden / 64, .attn_kv_heads = hidden / 64,
                  .vocab = LA_TEXT_VOCAB };
    char * json = lm_arch_json(&a);
    char err[512];
    la_model * m = NULL;
    if (la_model_from_json(&m, json, err, sizeof err)) cli_die("bench-model: %s", err);
    free(json);
    la_model_init(m, 1);
    return m;
}

static void fill(int64_t * ids, int64_t n) {
    for (int64_t i = 0; i < n; i++) ids[i] = (i * 2654435761u) % 256;
}

int cmd_bench_model(int argc, char ** argv) {
    int64_t maxT = 65536, attn_maxT = 65536;
    for (int i = 1; i < argc; i++) {
        const char * v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--max-T")) maxT = cli_parse_int("--max-T", v, 1024, 1 << 22), i++;
        else if (!strcmp(argv[i], "--attn-max-T")) attn_maxT = cli_parse_int("--attn-max-T", v, 1024, 1 << 22), i++;
        else if (!strcmp(argv[i], "--threads")) la_set_num_threads((int32_t)cli_parse_int("--threads", v, 1, 1024)), i++;
        else cli_die("bench-model: unknown flag '%s' (--max-T, --attn-max-T, --threads)", argv[i]);
    }
    printf("linattn bench-model: %d threads, kernels %s, blas %s; sgemm 1024^3: %.1f GFLOP/s\n",
           la_get_num_threads(), la_cpu_isa(), la_blas_backend(), sgemm_gflops());
    // 1. training
    const char * hyb = "gdn,gdn,gdn,attn,gdn,gdn,gdn,attn";
    la_model * m = make(hyb, 320);
    printf("\nmodel: %s, hidden 320, GDN 2 heads x 128, attention 5 heads x 64, byte vocab: "
           "%.2f M parameters\n", hyb, (double)la_model_num_params(m) / 1e6);
    const int64_t T = 2048, B = 2;
    int64_t * ids = malloc((size_t)LA_MAX(maxT, 8 * T) * 8), *lab = malloc((size_t)(B * T) * 8);
    if (!ids || !lab) cli_die("out of memory");
    fill(ids, B * T);
    fill(lab, B * T);
    la_adamw opt = { 0.9, 0.95, 1e-8, 0.1 };
    double best = 1e30, loss;
    for (int r = 0; r < 4; r++) {
        const double t0 = cli_now();
        la_model_zero_grad(m);
        if (la_model_loss(m, &loss, NULL, ids, lab, B, T, true, 1.0f)) cli_die("train step failed");
        la_model_clip_grad(m, 1.0);
        la_model_adamw(m, 1e-4, &opt, r + 1);
        if (r) best = fmin(best, cli_now() - t0);
    }
    printf("training  B=%lld T=%lld: %.3f s/step, %.0f tokens/s (forward + backward + AdamW)\n",
           (long long)B, (long long)T, best, (double)(B * T) / best);
    // 2. decode
    float * lg = malloc((size_t)(8 * LA_TEXT_VOCAB) * 4);
    for (int64_t N = 1; N <= 8; N *= 8) {
        la_cache * c = NULL;
        if (la_cache_new(&c, m, N, T + 300)) cli_die("cache");
        fill(ids, N * T);
        double t0 = cli_now();
        if (la_model_logits(m, lg, ids, N, T, c, true)) cli_die("prefill failed");
        const double tp = cli_now() - t0;
        const int steps = 256;
        t0 = cli_now();
        for (int s = 0; s < steps; s++)
            if (la_model_logits(m, lg, ids, N, 1, c, true)) cli_die("decode failed");
        const double td = cli_now() - t0;
        printf("decode    N=%lld after a %lld-token prompt: %.1f tokens/s (%.2f ms per step); "
               "prompt prefill %.0f tokens/s\n", (long long)N, (long long)T,
               (double)(N * steps) / td, 1e3 * td / steps, (double)(N * T) / tp);
        la_cache_free(c);
    }
    la_model_free(m);
    // 3. prefill vs T
    la_model * g = make("gdn,gdn,gdn,gdn,gdn,gdn,gdn,gdn", 320);
    la_model * a = make("attn,attn,attn,attn,attn,attn,attn,attn", 320);
    printf("\nprefill of one sequence (forward with caches, chunk form), 8 layers, hidden 320:\n"
           "  pure GDN %.2f M parameters, pure attention %.2f M\n%8s %12s %12s %10s\n",
           (double)la_model_num_params(g) / 1e6, (double)la_model_num_params(a) / 1e6, "T",
           "GDN s", "attn s", "attn/GDN");
    for (int64_t t = 1024; t <= maxT; t *= 2) {
        fill(ids, t);
        double tg, ta = -1;
        la_cache * c = NULL;
        if (la_cache_new(&c, g, 1, t + 1)) cli_die("cache");
        double t0 = cli_now();
        if (la_model_logits(g, lg, ids, 1, t, c, true)) cli_die("prefill failed");
        tg = cli_now() - t0;
        la_cache_free(c);
        if (t <= attn_maxT) {
            if (la_cache_new(&c, a, 1, t + 1)) cli_die("cache");
            t0 = cli_now();
            if (la_model_logits(a, lg, ids, 1, t, c, true)) cli_die("prefill failed");
            ta = cli_now() - t0;
            la_cache_free(c);
        }
        if (ta > 0) printf("%8lld %12.3f %12.3f %10.2f\n", (long long)t, tg, ta, ta / tg);
        else printf("%8lld %12.3f %12s %10s\n", (long long)t, tg, "-", "-");
        fflush(stdout);
    }
    la_model_free(g);
    la_model_free(a);
    free(ids), free(lab), free(lg);
    return 0;
}
