// linattn generate: chunked prefill of the prompt, then one token at a time on the decode
// caches (O(1) state per linear layer, a K/V cache per attention layer), streaming each token.
#include "cli.h"
#include "lm.h"

#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float   p;
    int64_t id;
} cand;

static int cand_desc(const void * a, const void * b) {
    const cand * x = a, *y = b;
    return x->p > y->p ? -1 : x->p < y->p ? 1 : (x->id > y->id) - (x->id < y->id);
}

// Samples from logits (V): greedy at temperature 0; else softmax(logits / temperature)
// restricted to the top_k most likely tokens (0 = all), then to the smallest set whose mass
// reaches top_p.
static int64_t sample(const float * logits, int64_t V, double temperature, int64_t top_k,
                      double top_p, la_xrng * r, cand * c) {
    if (temperature <= 0) {
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        return best;
    }
    float mx = logits[0];
    for (int64_t v = 1; v < V; v++) mx = fmaxf(mx, logits[v]);
    for (int64_t v = 0; v < V; v++) c[v] = (cand){ (float)exp((double)(logits[v] - mx) / temperature), v };
    qsort(c, (size_t)V, sizeof *c, cand_desc);
    int64_t n = top_k > 0 && top_k < V ? top_k : V;
    double z = 0;
    for (int64_t i = 0; i < n; i++) z += (double)c[i].p;
    if (top_p < 1.0) {
        double acc = 0;
        for (int64_t i = 0; i < n; i++) {
            acc += (double)c[i].p / z;
            if (acc >= top_p) {
                n = i + 1;
                break;
            }
        }
        z = 0;
        for (int64_t i = 0; i < n; i++) z += (double)c[i].p;
    }
    double u = la_rng_unif(r) * z;
    for (int64_t i = 0; i < n; i++) {
        u -= (double)c[i].p;
        if (u <= 0) return c[i].id;
    }
    return c[n - 1].id;
}

static char * read_stdin(void) {
    size_t cap = 4096, n = 0;
    char * b = malloc(cap);
    for (size_t k; b && (k = fread(b + n, 1, cap - n - 1, stdin)) > 0;) {
        n += k;
        if (n + 1 == cap) b = realloc(b, cap *= 2);
    }
    if (!b) cli_die("out of memory");
    b[n] = 0;
    return b;
}

int cmd_generate(int argc, char ** argv) {
    if (argc < 2 || argv[1][0] == '-')
        cli_die("usage: linattn generate CKPT_DIR (--prompt TEXT | --prompt - | --ids 1,2,3) "
                "[--max-new N] [--temperature X] [--top-k K] [--top-p P] [--seed N] [--chunk C]");
    const char * dir = argv[1];
    const char * prompt = NULL, *ids_arg = NULL;
    int64_t max_new = 200, top_k = 0, chunk = 1024;
    double temperature = 0.8, top_p = 1.0;
    uint64_t seed = 1;
    bool stats = false;
    for (int i = 2; i < argc; i++) {
        const char * f = argv[i];
        const char * v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--prompt")) prompt = v;
        else if (!strcmp(f, "--ids")) ids_arg = v;
        else if (!strcmp(f, "--max-new")) max_new = cli_parse_int(f, v, 0, 1 << 24);
        else if (!strcmp(f, "--temperature")) temperature = cli_parse_double(f, v, 0, 100);
        else if (!strcmp(f, "--top-k")) top_k = cli_parse_int(f, v, 0, 1 << 24);
        else if (!strcmp(f, "--top-p")) top_p = cli_parse_double(f, v, 1e-6, 1.0);
        else if (!strcmp(f, "--seed")) seed = (uint64_t)cli_parse_int(f, v, 0, INT64_MAX);
        else if (!strcmp(f, "--chunk")) chunk = cli_parse_int(f, v, 1, 1 << 20);
        else if (!strcmp(f, "--threads")) la_set_num_threads((int32_t)cli_parse_int(f, v, 1, 1024));
        else if (!strcmp(f, "--stats")) {
            stats = true;
            continue;
        } else cli_die("generate: unknown flag '%s'", f);
        if (!v) cli_die("%s needs a value", f);
        i++;
    }
    if (!!prompt == !!ids_arg) cli_die("generate: give exactly one of --prompt and --ids");
    la_model * m = lm_load(dir);
    if (la_model_input_dim(m)) {
        la_model_free(m);
        cli_die("generate: %s reads vectors (input_dim, in-context regression), not tokens; use "
                "linattn eval", dir);
    }
    const int64_t V = la_model_vocab(m);
    const bool bytes = V == LA_TEXT_VOCAB;  // a byte-level model: text in, text out
    if (prompt && !bytes)
        cli_die("generate: %s has vocab_size %lld, not the byte-level %d; give --ids", dir,
                (long long)V, LA_TEXT_VOCAB);
    // the prompt as tokens: BOS + bytes, or the given ids
    char * owned = prompt && !strcmp(prompt, "-") ? read_stdin() : NULL;
    if (owned) prompt = owned;
    int64_t n = 0;
    int64_t * toks;
    if (prompt) {
        const size_t len = strlen(prompt);
        toks = malloc((len + 1) * 8);
        if (!toks) cli_die("out of memory");
        toks[n++] = LA_TEXT_BOS;
        for (size_t i = 0; i < len; i++) toks[n++] = (unsigned char)prompt[i];
    } else {
        toks = malloc((strlen(ids_arg) / 2 + 2) * 8);
        if (!toks) cli_die("out of memory");
        char * copy = strdup(ids_arg);
        for (char * tok = strtok(copy, ", "); tok; tok = strtok(NULL, ", "))
            toks[n++] = cli_parse_int("--ids", tok, 0, V - 1);
        free(copy);
        if (n == 0) cli_die("--ids: no tokens");
    }
    la_cache * cache = NULL;
    if (la_cache_new(&cache, m, 1, n + max_new + 1)) cli_die("generate: cannot allocate the cache");
    float * logits = malloc((size_t)V * sizeof(float));
    cand * c = malloc((size_t)V * sizeof *c);
    if (!logits || !c) cli_die("out of memory");
    // chunked prefill: the chunk form over C tokens at a time, the caches carry the rest
    const double t0 = cli_now();
    for (int64_t p = 0; p < n; p += chunk) {
        const int64_t len = LA_MIN(chunk, n - p);
        const la_status s = la_model_logits(m, logits, toks + p, 1, len, cache, true);
        if (s) cli_die("generate: prefill: %s", la_status_str(s));
    }
    const double t1 = cli_now();
    int64_t made = 0;
    for (; made < max_new; made++) {
        la_xrng r = la_rng_at(seed, (uint64_t)made);
        const int64_t next = sample(logits, V, temperature, top_k, top_p, &r, c);
        if (bytes && next == LA_TEXT_EOS) break;
        if (bytes) {
            if (next < 256) fputc((int)next, stdout);
        } else {
            printf("%s%lld", made ? " " : "", (long long)next);
        }
        fflush(stdout);
        if (made + 1 == max_new) {
            made++;
            break;
        }
        const la_status s = la_model_logits(m, logits, &next, 1, 1, cache, true);
        if (s) cli_die("generate: decode: %s", la_status_str(s));
    }
    const double t2 = cli_now();
    fputc('\n', stdout);
    if (stats)
        fprintf(stderr, "prefill %lld tokens in %.3f s (%.0f tok/s); decoded %lld tokens in "
                "%.3f s (%.1f tok/s)\n", (long long)n, t1 - t0, (double)n / fmax(t1 - t0, 1e-9),
                (long long)made, t2 - t1, (double)made / fmax(t2 - t1, 1e-9));
    free(owned);
    free(toks);
    free(logits);
    free(c);
    la_cache_free(cache);
    la_model_free(m);
    return 0;
}
