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


// ---------------------------------------------------------------------------------------------
// Checkpoints

static char g_dir[256];

static char * tmp_path(const char * name) {
    static char buf[4][512];
    static int k;
    char * p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}


// Save, load: identical parameters (bitwise), config text and logits.
static void round_trip(const char * json, int ci) {
    la_model * m = la_test_model(json, 31 + (uint64_t)ci);
    char dir[600], keep[600], cmd[1400], err[512] = "";
    snprintf(dir, sizeof dir, "%s", tmp_path("ckpt"));
    la_model_round_trip_check(m, dir, "cfg", ci);
    // saving again over the checkpoint replaces it with the same bytes
    snprintf(keep, sizeof keep, "%s", tmp_path("first.safetensors"));
    snprintf(cmd, sizeof cmd, "cp %s/model.safetensors %s", dir, keep);
    la_expect(system(cmd) == 0, "copy");
    la_expect_status(la_model_save(m, dir, NULL, NULL, err, sizeof err), LA_STATUS_OK, err);
    snprintf(cmd, sizeof cmd, "%s/model.safetensors", dir);
    la_expect(la_same_file(cmd, keep), "cfg %d: re-saved checkpoint differs", ci);
    la_model_free(m);
}

// fla's names and shapes (OPS.md 8) for a GDN + attention hybrid.
static void fla_names(void) {
    la_model * m = la_test_model(
        "{\"model_type\":\"gated_deltanet\",\"vocab_size\":50,\"hidden_size\":16,"
        "\"num_hidden_layers\":2,\"num_heads\":2,\"head_dim\":4,\"expand_v\":2,\"conv_size\":3,"
        "\"hidden_ratio\":4,\"attn\":{\"layers\":[1],\"num_heads\":2,\"num_kv_heads\":1}}", 1);
    // I = 256 ceil(floor(16 * 4 * 2/3) / 256) = 256 (OPS.md 4.4)
    static const struct { const char * name; int nd; int64_t s[3]; } want[] = {
        { "model.embeddings.weight", 2, { 50, 16 } },
        { "model.layers.0.attn_norm.weight", 1, { 16 } },
        { "model.layers.0.attn.q_proj.weight", 2, { 8, 16 } },
        { "model.layers.0.attn.k_proj.weight", 2, { 8, 16 } },
        { "model.layers.0.attn.v_proj.weight", 2, { 16, 16 } },
        { "model.layers.0.attn.a_proj.weight", 2, { 2, 16 } },
        { "model.layers.0.attn.b_proj.weight", 2, { 2, 16 } },
        { "model.layers.0.attn.A_log", 1, { 2 } },
        { "model.layers.0.attn.dt_bias", 1, { 2 } },
        { "model.layers.0.attn.o_norm.weight", 1, { 8 } },
        { "model.layers.0.attn.o_proj.weight", 2, { 16, 16 } },
        { "model.layers.0.attn.g_proj.weight", 2, { 16, 16 } },
        { "model.layers.0.attn.q_conv1d.weight", 3, { 8, 1, 3 } },
        { "model.layers.0.attn.k_conv1d.weight", 3, { 8, 1, 3 } },
        { "model.layers.0.attn.v_conv1d.weight", 3, { 16, 1, 3 } },
        { "model.layers.0.mlp_norm.weight", 1, { 16 } },
        { "model.layers.0.mlp.gate_proj.weight", 2, { 256, 16 } },
        { "model.layers.0.mlp.up_proj.weight", 2, { 256, 16 } },
        { "model.layers.0.mlp.down_proj.weight", 2, { 16, 256 } },
        { "model.layers.1.attn_norm.weight", 1, { 16 } },
        { "model.layers.1.attn.q_proj.weight", 2, { 16, 16 } },
        { "model.layers.1.attn.k_proj.weight", 2, { 8, 16 } },
        { "model.layers.1.attn.v_proj.weight", 2, { 8, 16 } },
        { "model.layers.1.attn.o_proj.weight", 2, { 16, 16 } },
        { "model.layers.1.mlp_norm.weight", 1, { 16 } },
        { "model.layers.1.mlp.gate_proj.weight", 2, { 256, 16 } },
        { "model.layers.1.mlp.up_proj.weight", 2, { 256, 16 } },
        { "model.layers.1.mlp.down_proj.weight", 2, { 16, 256 } },
        { "model.norm.weight", 1, { 16 } },
        { "lm_head.weight", 2, { 50, 16 } },
    };
    const int nw = (int)(sizeof want / sizeof want[0]);
    la_expect(m->n_par == nw, "GDN hybrid: %d tensors, want %d", m->n_par, nw);
    for (int i = 0; i < nw; i++) {
        int found = -1;
        for (int j = 0; j < m->n_par; j++)
            if (!strcmp(m->par[j].name, want[i].name)) found = j;
        if (!la_expect(found >= 0, "tensor '%s' missing", want[i].name)) continue;
        bool same = m->par[found].ndim == want[i].nd;
        for (int d = 0; same && d < want[i].nd; d++) same = m->par[found].shape[d] == want[i].s[d];
        la_expect(same, "tensor '%s': shape differs", want[i].name);
    }
    // the saved file holds exactly these names
    char err[512] = "";
    la_expect_status(la_model_save(m, tmp_path("names"), NULL, NULL, err, sizeof err),
                     LA_STATUS_OK, err);
    la_st_file * f = NULL;
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", tmp_path("names"));
    la_expect_status(la_st_open(&f, p, err, sizeof err), LA_STATUS_OK, err);
    la_expect(f && la_st_count(f) == nw, "saved file holds %lld tensors", f ? (long long)la_st_count(f) : -1LL);
    la_st_close(f);
    la_model_free(m);
}

// Bad configs: each is rejected with a message naming the key.
static void bad_configs(void) {
    static const struct { const char * json, *key; } bad[] = {
        { "not json", "JSON" },
        { "[1,2]", "object" },
        { "{\"hidden_size\":8}", "model_type" },
        { "{\"model_type\":\"nope\"}", "model_type" },
        { "{\"model_type\":\"gated_deltanet\",\"hidden_szie\":8}", "hidden_szie" },
        { "{\"model_type\":\"gated_deltanet\",\"hidden_size\":\"8\"}", "hidden_size" },
        { "{\"model_type\":\"gated_deltanet\",\"hidden_size\":8.5}", "hidden_size" },
        { "{\"model_type\":\"gated_deltanet\",\"hidden_size\":-8}", "hidden_size" },
        { "{\"model_type\":\"gated_deltanet\",\"num_heads\":0}", "num_heads" },
        { "{\"model_type\":\"gated_deltanet\",\"norm_eps\":0}", "norm_eps" },
        { "{\"model_type\":\"gated_deltanet\",\"hidden_act\":\"gelu\"}", "hidden_act" },
        { "{\"model_type\":\"gated_deltanet\",\"use_l2warp\":1}", "use_l2warp" },
        { "{\"model_type\":\"gated_deltanet\",\"use_gate\":1}", "use_gate" },
        { "{\"model_type\":\"gated_deltanet\",\"expand_k\":1}", "expand_k" },
        { "{\"model_type\":\"gated_deltanet\",\"hidden_size\":64,\"head_dim\":8,\"expand_v\":0.3}", "expand_v" },
        { "{\"model_type\":\"gated_deltanet\",\"hidden_size\":64,\"num_heads\":2,\"num_v_heads\":3}", "num_v_heads" },
        { "{\"model_type\":\"gated_deltanet\",\"num_hidden_layers\":2,\"attn\":{\"layers\":[2],\"num_heads\":2}}", "attn.layers" },
        { "{\"model_type\":\"gated_deltanet\",\"num_hidden_layers\":2,\"attn\":{\"layers\":[0,0],\"num_heads\":2}}", "attn.layers" },
        { "{\"model_type\":\"gated_deltanet\",\"num_hidden_layers\":2,\"attn\":{\"layers\":[0]}}", "attn.num_heads" },
        { "{\"model_type\":\"gated_deltanet\",\"hidden_size\":64,\"attn\":{\"layers\":[0],\"num_heads\":3}}", "attn.num_heads" },
        { "{\"model_type\":\"gated_deltanet\",\"attn\":{\"layers\":[0],\"num_heads\":4,\"num_kv_heads\":3}}", "attn.num_kv_heads" },
        { "{\"model_type\":\"gated_deltanet\",\"attn\":{\"layers\":[0],\"num_heads\":4,\"window_size\":0}}", "attn.window_size" },
        { "{\"model_type\":\"gated_deltanet\",\"attn\":{\"layers\":[0],\"num_heads\":4,\"rope_theta\":-1}}", "attn.rope_theta" },
        { "{\"model_type\":\"gated_deltanet\",\"attn\":5}", "attn" },
        { "{\"model_type\":\"transformer\",\"hidden_size\":30,\"num_heads\":4}", "num_heads" },
        { "{\"model_type\":\"gated_deltanet\",\"bos_token_id\":99999999}", "bos_token_id" },
        { "{\"model_type\":\"gated_deltanet\",\"num_heads\":6,\"num_v_heads\":-6}", "num_v_heads" },
        { "{\"model_type\":\"transformer\",\"num_kv_heads\":-1}", "num_kv_heads" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512] = "";
        la_model * m = NULL;
        const la_status s = la_model_from_json(&m, bad[i].json, err, sizeof err);
        la_expect(s != LA_STATUS_OK && !m && strstr(err, bad[i].key) && !strchr(err, '\n'),
                  "bad config %zu (%s): status %d, message '%s'", i, bad[i].key, (int)s, err);
        la_model_free(m);
    }
}

// Corrupt, truncated and mismatched checkpoints fail with one line naming the file or tensor;
// a failed save leaves the previous checkpoint as it was.
static la_status failing_hook(void * ctx, const char * tmp, char * err, size_t errlen) {
    (void)ctx, (void)tmp;
    snprintf(err, errlen, "simulated failure");
    return LA_STATUS_IO;
}

static void bad_checkpoints(void) {
    const char * json = "{\"model_type\":\"gated_deltanet\",\"vocab_size\":20,\"hidden_size\":16,"
                        "\"num_hidden_layers\":1,\"num_heads\":2,\"head_dim\":4}";
    la_model * m = la_test_model(json, 5);
    char err[512] = "", p[700], cmd[1600], dir[600];
    snprintf(dir, sizeof dir, "%s", tmp_path("bad"));
    la_expect_status(la_model_save(m, dir, NULL, NULL, err, sizeof err), LA_STATUS_OK, err);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    char good[700];
    snprintf(good, sizeof good, "%s", tmp_path("good.safetensors"));
    snprintf(cmd, sizeof cmd, "cp %s %s", p, good);
    la_expect(system(cmd) == 0, "copy");
    la_model * r = NULL;
    // a failed save keeps the old checkpoint and leaves no temporary directory behind
    la_expect(la_model_save(m, dir, failing_hook, NULL, err, sizeof err) != LA_STATUS_OK,
              "failing hook must fail the save");
    la_expect(la_same_file(p, good), "failed save changed the previous checkpoint");
    snprintf(cmd, sizeof cmd, "ls -d %s/bad.tmp.* 2>/dev/null | grep -q .", g_dir);
    la_expect(system(cmd) != 0, "failed save left a temporary directory");
    // truncated weights
    snprintf(cmd, sizeof cmd, "head -c 300 %s > %s", good, p);
    la_expect(system(cmd) == 0, "truncate");
    la_expect(la_model_load(&r, dir, err, sizeof err) != LA_STATUS_OK && !r && strstr(err, "model.safetensors"),
              "truncated weights: %s", err);
    // weights of another config: a missing tensor / a wrong shape
    la_model * other = la_test_model("{\"model_type\":\"gated_deltanet\",\"vocab_size\":20,"
                                     "\"hidden_size\":16,\"num_hidden_layers\":1,\"num_heads\":2,"
                                     "\"head_dim\":4,\"use_gate\":false}", 5);
    la_expect_status(la_model_save(other, tmp_path("other"), NULL, NULL, err, sizeof err), LA_STATUS_OK, err);
    snprintf(cmd, sizeof cmd, "cp %s/model.safetensors %s", tmp_path("other"), p);
    la_expect(system(cmd) == 0, "copy");
    la_expect(la_model_load(&r, dir, err, sizeof err) == LA_STATUS_NOT_FOUND && strstr(err, "g_proj"),
              "missing tensor: %s", err);
    la_model * wide = la_test_model("{\"model_type\":\"gated_deltanet\",\"vocab_size\":21,"
                                    "\"hidden_size\":16,\"num_hidden_layers\":1,\"num_heads\":2,"
                                    "\"head_dim\":4}", 5);
    la_expect_status(la_model_save(wide, tmp_path("wide"), NULL, NULL, err, sizeof err), LA_STATUS_OK, err);
    snprintf(cmd, sizeof cmd, "cp %s/model.safetensors %s", tmp_path("wide"), p);
    la_expect(system(cmd) == 0, "copy");
    la_expect(la_model_load(&r, dir, err, sizeof err) == LA_STATUS_SHAPE && strstr(err, "embeddings"),
              "wrong shape: %s", err);
    // NaN in a tensor
    m->w[m->par[3].off] = NAN;
    la_expect_status(la_model_save(m, tmp_path("nan"), NULL, NULL, err, sizeof err), LA_STATUS_OK, err);
    la_expect(la_model_load(&r, tmp_path("nan"), err, sizeof err) == LA_STATUS_NONFINITE &&
              strstr(err, m->par[3].name), "NaN tensor: %s", err);
    // missing config.json / missing directory
    la_expect(la_model_load(&r, tmp_path("does-not-exist"), err, sizeof err) == LA_STATUS_IO &&
              strstr(err, "config.json"), "missing checkpoint: %s", err);
    // a directory that is not a checkpoint is never replaced
    snprintf(cmd, sizeof cmd, "mkdir -p %s && echo precious > %s/notes.txt", tmp_path("mine"), tmp_path("mine"));
    la_expect(system(cmd) == 0, "mkdir");
    la_expect(la_model_save(m, tmp_path("mine"), NULL, NULL, err, sizeof err) == LA_STATUS_IO &&
              strstr(err, "notes.txt"), "non-checkpoint directory: %s", err);
    snprintf(cmd, sizeof cmd, "grep -q precious %s/notes.txt", tmp_path("mine"));
    la_expect(system(cmd) == 0, "the user's file must survive");
    la_model_free(other);
    la_model_free(wide);
    la_model_free(m);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/la_model_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    fla_names();
    bad_configs();
    bad_checkpoints();
    for (int i = 0; i < NCFG; i++) {
        la_model_grad_check(configs[i], i);
        la_model_decode_check(configs[i], i);
        round_trip(configs[i], i);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) printf("could not remove %s\n", g_dir);
    return la_test_summary();
}
