// linattn train / eval / generate / info: language models from the command line.
//
// A run is a checkpoint directory (config.json + model.safetensors in fla's names, plus the
// trainer's state: trainer_state.safetensors with the AdamW moments and step, and
// trainer_state.json with the task and hyperparameters), and a CSV log.
#include "cli.h"
#include "lm.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

// ---------------------------------------------------------------------------------------------
// Tasks

void task_defaults(lm_task * t) {
    memset(t, 0, sizeof *t);
    t->kind = TASK_MQAR;
    t->mqar = la_mqar_default();
    t->mqar.vocab = 256;
    t->mqar.seq_len = 128;
    t->mqar.num_kv_pairs = 16;
    t->val_frac = 0.1;
    t->seq_len = 128;
    t->eval_examples = 1024;
}

void task_open(lm_task * t) {
    if (t->kind == TASK_TEXT) {
        char err[512];
        if (!t->data[0]) cli_die("--task text needs --data FILE");
        if (la_text_open(&t->text, t->data, t->val_frac, err, sizeof err)) cli_die("%s", err);
        // the checkpoint records the absolute path and the size, so a resume from another
        // directory reads the same file and a changed file is noticed
        char abs[PATH_MAX];
        if (realpath(t->data, abs) && strlen(abs) < sizeof t->data)
            snprintf(t->data, sizeof t->data, "%s", abs);
        const int64_t n = la_text_tokens(t->text, false) + la_text_tokens(t->text, true);
        if (t->data_tokens && t->data_tokens != n)
            cli_die("%s: holds %lld tokens, the checkpoint was trained on %lld (the file changed)",
                    t->data, (long long)n, (long long)t->data_tokens);
        t->data_tokens = n;
        if (la_text_tokens(t->text, false) < t->seq_len + 1)
            cli_die("%s: the training split has %lld tokens; --seq-len %lld needs at least %lld",
                    t->data, (long long)la_text_tokens(t->text, false), (long long)t->seq_len,
                    (long long)t->seq_len + 1);
    } else {
        char err[256];
        if (la_mqar_check(&t->mqar, err, sizeof err)) cli_die("%s", err);
        if (t->eval_examples < 1) cli_die("--eval-examples: mqar needs at least 1 example");
        t->seq_len = t->mqar.seq_len;
    }
}

int64_t task_vocab(const lm_task * t) {
    return t->kind == TASK_TEXT ? LA_TEXT_VOCAB : t->mqar.vocab;
}

// Training batch `index` (B rows) or evaluation batch `index` of the validation set.
void task_batch(const lm_task * t, int64_t * ids, int64_t * lab, int64_t B, int64_t index,
                bool val) {
    la_status s;
    if (t->kind == TASK_MQAR) {
        // the test set is another seed's stream, as Zoology draws its test split separately
        const uint64_t seed = val ? t->seed ^ 0x7e57da7aull : t->seed;
        s = la_mqar_generate(ids, lab, &t->mqar, seed, index * B, B);
    } else if (!val) {
        s = la_text_sample(t->text, false, ids, lab, t->seq_len, t->seed, index * B, B);
    } else {
        const int64_t nw = la_text_windows(t->text, true, t->seq_len);
        const int64_t first = index * B, n = LA_MIN(B, nw - first);
        s = n > 0 ? la_text_window(t->text, true, ids, lab, t->seq_len, first, n) : LA_STATUS_OK;
        for (int64_t i = LA_MAX(n, 0) * t->seq_len; i < B * t->seq_len; i++)
            ids[i] = 0, lab[i] = LA_IGNORE_INDEX;
    }
    if (s) cli_die("task: cannot make a batch (%s)", la_status_str(s));
}

int64_t task_eval_batches(const lm_task * t, int64_t B) {
    if (t->kind == TASK_MQAR) return (t->eval_examples + B - 1) / B;
    const int64_t nw = la_text_windows(t->text, true, t->seq_len);
    const int64_t nb = (nw + B - 1) / B;
    return t->eval_examples > 0 ? LA_MIN(nb, (t->eval_examples + B - 1) / B) : nb;
}

// Loss and accuracy over the evaluation set.
void lm_evaluate(la_model * m, const lm_task * t, int64_t B, double * loss, double * acc) {
    const int64_t T = t->seq_len, nb = task_eval_batches(t, B);
    int64_t * ids = malloc((size_t)(B * T) * 8), *lab = malloc((size_t)(B * T) * 8);
    if (!ids || !lab) cli_die("out of memory");
    double sum = 0;
    int64_t cnt = 0, ok = 0;
    for (int64_t b = 0; b < nb; b++) {
        task_batch(t, ids, lab, B, b, true);
        double l;
        int64_t c, k;
        const la_status s = la_model_eval(m, &l, &c, &k, ids, lab, B, T);
        if (s) cli_die("eval: %s", la_status_str(s));
        sum += l * (double)c;
        cnt += c;
        ok += k;
    }
    free(ids);
    free(lab);
    *loss = cnt ? sum / (double)cnt : LM_NAN;
    *acc = cnt ? (double)ok / (double)cnt : LM_NAN;
}

// ---------------------------------------------------------------------------------------------
// trainer_state.json

static void put_mqar(cJSON * o, const la_mqar_cfg * q) {
    cJSON_AddNumberToObject(o, "mqar_vocab", (double)q->vocab);
    cJSON_AddNumberToObject(o, "mqar_seq_len", (double)q->seq_len);
    cJSON_AddNumberToObject(o, "mqar_num_kv_pairs", (double)q->num_kv_pairs);
    cJSON_AddNumberToObject(o, "mqar_power_a", q->power_a);
    cJSON_AddNumberToObject(o, "mqar_num_passes", (double)q->num_passes);
    cJSON_AddBoolToObject(o, "mqar_random_non_queries", q->random_non_queries);
}

char * lm_state_json(const lm_task * t, const lm_hparams * h, int64_t step, double val_loss,
                     double val_acc) {
    cJSON * o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddStringToObject(o, "task", t->kind == TASK_TEXT ? "text" : "mqar");
    if (t->kind == TASK_TEXT) {
        cJSON_AddStringToObject(o, "data", t->data);
        cJSON_AddNumberToObject(o, "data_tokens", (double)t->data_tokens);
        cJSON_AddNumberToObject(o, "val_frac", t->val_frac);
    } else {
        put_mqar(o, &t->mqar);
    }
    cJSON_AddNumberToObject(o, "seq_len", (double)t->seq_len);
    cJSON_AddNumberToObject(o, "eval_examples", (double)t->eval_examples);
    cJSON_AddNumberToObject(o, "seed", (double)t->seed);
    cJSON_AddNumberToObject(o, "steps", (double)h->steps);
    cJSON_AddNumberToObject(o, "batch", (double)h->batch);
    cJSON_AddNumberToObject(o, "grad_accum", (double)h->grad_accum);
    cJSON_AddNumberToObject(o, "lr", h->lr);
    cJSON_AddNumberToObject(o, "min_lr", h->min_lr);
    cJSON_AddNumberToObject(o, "warmup", (double)h->warmup);
    cJSON_AddNumberToObject(o, "weight_decay", h->opt.weight_decay);
    cJSON_AddNumberToObject(o, "beta1", h->opt.beta1);
    cJSON_AddNumberToObject(o, "beta2", h->opt.beta2);
    cJSON_AddNumberToObject(o, "adam_eps", h->opt.eps);
    cJSON_AddNumberToObject(o, "clip", h->clip);
    if (isfinite(val_loss)) cJSON_AddNumberToObject(o, "val_loss", val_loss);
    if (isfinite(val_acc)) cJSON_AddNumberToObject(o, "val_accuracy", val_acc);
    char * s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

static double jnum(const cJSON * o, const char * k, const char * path) {
    const cJSON * v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        cli_die("%s: '%s' is missing or not a number", path, k);
    return v->valuedouble;
}

// Reads DIR/trainer_state.json into t and h; false when the file does not exist.
bool lm_state_read(const char * dir, lm_task * t, lm_hparams * h, int64_t * step) {
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    if (access(path, F_OK) != 0) return false;
    char * txt = la_read_text_file(path, 1 << 20, err, sizeof err);
    if (!txt) cli_die("%s", err);
    cJSON * o = cJSON_Parse(txt);
    free(txt);
    if (!cJSON_IsObject(o)) cli_die("%s: not a JSON object", path);
    const cJSON * task = cJSON_GetObjectItemCaseSensitive(o, "task");
    if (!cJSON_IsString(task)) cli_die("%s: 'task' is missing", path);
    task_defaults(t);
    if (!strcmp(task->valuestring, "text")) {
        t->kind = TASK_TEXT;
        const cJSON * d = cJSON_GetObjectItemCaseSensitive(o, "data");
        if (!cJSON_IsString(d) || strlen(d->valuestring) >= sizeof t->data)
            cli_die("%s: 'data' is missing", path);
        snprintf(t->data, sizeof t->data, "%s", d->valuestring);
        t->val_frac = jnum(o, "val_frac", path);
        const cJSON * dt = cJSON_GetObjectItemCaseSensitive(o, "data_tokens");
        t->data_tokens = cJSON_IsNumber(dt) ? (int64_t)dt->valuedouble : 0;
    } else if (!strcmp(task->valuestring, "mqar")) {
        t->kind = TASK_MQAR;
        t->mqar.vocab = (int64_t)jnum(o, "mqar_vocab", path);
        t->mqar.seq_len = (int64_t)jnum(o, "mqar_seq_len", path);
        t->mqar.num_kv_pairs = (int64_t)jnum(o, "mqar_num_kv_pairs", path);
        t->mqar.power_a = jnum(o, "mqar_power_a", path);
        t->mqar.num_passes = (int64_t)jnum(o, "mqar_num_passes", path);
        const cJSON * r = cJSON_GetObjectItemCaseSensitive(o, "mqar_random_non_queries");
        t->mqar.random_non_queries = cJSON_IsTrue(r);
    } else {
        cli_die("%s: unknown task '%s'", path, task->valuestring);
    }
    t->seq_len = (int64_t)jnum(o, "seq_len", path);
    t->eval_examples = (int64_t)jnum(o, "eval_examples", path);
    t->seed = (uint64_t)jnum(o, "seed", path);
    h->steps = (int64_t)jnum(o, "steps", path);
    h->batch = (int64_t)jnum(o, "batch", path);
    h->grad_accum = (int64_t)jnum(o, "grad_accum", path);
    h->lr = jnum(o, "lr", path);
    h->min_lr = jnum(o, "min_lr", path);
    h->warmup = (int64_t)jnum(o, "warmup", path);
    h->opt.weight_decay = jnum(o, "weight_decay", path);
    h->opt.beta1 = jnum(o, "beta1", path);
    h->opt.beta2 = jnum(o, "beta2", path);
    h->opt.eps = jnum(o, "adam_eps", path);
    h->clip = jnum(o, "clip", path);
    *step = (int64_t)jnum(o, "step", path);
    const cJSON * va = cJSON_GetObjectItemCaseSensitive(o, "val_accuracy");
    h->last_val_acc = cJSON_IsNumber(va) ? va->valuedouble : LM_NAN;
    const cJSON * vl = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
    h->last_val_loss = cJSON_IsNumber(vl) ? vl->valuedouble : LM_NAN;
    cJSON_Delete(o);
    if (h->batch < 1 || h->steps < 1 || h->grad_accum < 1 || t->seq_len < 2 || *step < 0)
        cli_die("%s: inconsistent values", path);
    return true;
}

la_model * lm_load(const char * dir) {
    char err[512];
    la_model * m = NULL;
    if (la_model_load(&m, dir, err, sizeof err)) cli_die("%s", err);
    return m;
}

// ---------------------------------------------------------------------------------------------
// eval

int cmd_eval(int argc, char ** argv) {
    if (argc < 2 || argv[1][0] == '-') cli_die("usage: linattn eval CKPT_DIR [--batch B] [--threads N] [task flags]");
    const char * dir = argv[1];
    lm_task t;
    lm_hparams h = { 0 };
    int64_t step = 0;
    const bool have = lm_state_read(dir, &t, &h, &step);
    if (!have) task_defaults(&t);
    int64_t B = have ? h.batch : 32;
    for (int i = 2; i < argc; i++) {
        const char * a = argv[i];
        const char * v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--batch")) B = cli_parse_int(a, v, 1, 1 << 20), i++;
        else if (!strcmp(a, "--threads")) la_set_num_threads((int32_t)cli_parse_int(a, v, 1, 1024)), i++;
        else if (task_flag(&t, a, v)) i++;
        else cli_die("eval: unknown flag '%s'", a);
    }
    task_open(&t);
    la_model * m = lm_load(dir);
    if (task_vocab(&t) > la_model_vocab(m))
        cli_die("eval: the task's vocabulary (%lld) exceeds the model's (%lld)",
                (long long)task_vocab(&t), (long long)la_model_vocab(m));
    const double t0 = cli_now();
    double loss, acc;
    lm_evaluate(m, &t, B, &loss, &acc);
    if (t.kind == TASK_MQAR)
        printf("%s: mqar (N=%lld, D=%lld, vocab %lld, %lld examples): loss %.4f  accuracy %.4f  "
               "(%.1f s)\n", dir, (long long)t.mqar.seq_len, (long long)t.mqar.num_kv_pairs,
               (long long)t.mqar.vocab, (long long)task_eval_batches(&t, B) * B, loss, acc,
               cli_now() - t0);
    else
        printf("%s: text %s (validation split, %lld of %lld windows of %lld tokens): loss %.4f  "
               "perplexity %.3f  bits/byte %.4f  (%.1f s)\n", dir, t.data,
               (long long)LA_MIN(task_eval_batches(&t, B) * B, la_text_windows(t.text, true, t.seq_len)),
               (long long)la_text_windows(t.text, true, t.seq_len), (long long)t.seq_len, loss,
               exp(loss), loss / log(2.0), cli_now() - t0);
    la_text_close(t.text);
    la_model_free(m);
    return 0;
}

// Task flags shared by train and eval; returns true when flag a (with value v) was one.
bool task_flag(lm_task * t, const char * a, const char * v) {
    if (!strcmp(a, "--task")) {
        if (!v) cli_die("--task needs a value (mqar or text)");
        if (!strcmp(v, "mqar")) t->kind = TASK_MQAR;
        else if (!strcmp(v, "text")) t->kind = TASK_TEXT;
        else cli_die("--task: '%s' is not mqar or text", v);
    } else if (!strcmp(a, "--data")) {
        if (!v || strlen(v) >= sizeof t->data) cli_die("--data needs a file path");
        snprintf(t->data, sizeof t->data, "%s", v);
        t->kind = TASK_TEXT;
    } else if (!strcmp(a, "--seq-len")) {
        t->seq_len = cli_parse_int(a, v, 2, 1 << 22);
        t->mqar.seq_len = t->seq_len;
    } else if (!strcmp(a, "--mqar-vocab")) {
        t->mqar.vocab = cli_parse_int(a, v, 4, 1 << 24);
    } else if (!strcmp(a, "--mqar-pairs")) {
        t->mqar.num_kv_pairs = cli_parse_int(a, v, 1, 1 << 20);
    } else if (!strcmp(a, "--mqar-power")) {
        t->mqar.power_a = cli_parse_double(a, v, 1e-6, 1.0);
    } else if (!strcmp(a, "--mqar-passes")) {
        t->mqar.num_passes = cli_parse_int(a, v, 1, 64);
    } else if (!strcmp(a, "--mqar-fillers")) {
        if (!v || (strcmp(v, "random") && strcmp(v, "zero"))) cli_die("--mqar-fillers: random or zero");
        t->mqar.random_non_queries = !strcmp(v, "random");
    } else if (!strcmp(a, "--val-frac")) {
        t->val_frac = cli_parse_double(a, v, 0.0, 0.5);
    } else if (!strcmp(a, "--eval-examples")) {  // text: 0 = the whole validation split
        t->eval_examples = cli_parse_int(a, v, 0, 1 << 24);
    } else {
        return false;
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// info

int cmd_info(int argc, char ** argv) {
    if (argc < 2 || argv[1][0] == '-') cli_die("usage: linattn info CKPT_DIR [--batch B] [--seq-len T]");
    const char * dir = argv[1];
    lm_task t;
    lm_hparams h = { 0 };
    int64_t step = 0;
    const bool have = lm_state_read(dir, &t, &h, &step);
    int64_t B = have ? h.batch : 1, T = have ? t.seq_len : 2048;
    for (int i = 2; i < argc; i++) {
        const char * v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--batch")) B = cli_parse_int("--batch", v, 1, 1 << 20), i++;
        else if (!strcmp(argv[i], "--seq-len")) T = cli_parse_int("--seq-len", v, 1, 1 << 24), i++;
        else cli_die("info: unknown flag '%s'", argv[i]);
    }
    la_model * m = lm_load(dir);
    char * cfg = la_model_config_json(m);
    printf("%s\nconfig.json:\n%s\n", dir, cfg);
    free(cfg);
    const int64_t L = la_model_layers(m), D = la_model_hidden(m);
    printf("parameters: %lld (%.2f M)\n", (long long)la_model_num_params(m),
           (double)la_model_num_params(m) / 1e6);
    printf("layers: ");
    for (int64_t l = 0; l < L; l++) printf("%s%s", l ? "," : "", la_model_layer_kind(m, l));
    printf("\n");
    int64_t fixed, per_tok;
    la_model_state_size(m, &fixed, &per_tok);
    // a softmax layer in every layer's place: K and V of D channels per token
    const int64_t kv_all = 2 * D * L;
    printf("decode state per sequence: %.1f KiB fixed (recurrent states, conv caches) + %lld "
           "bytes per token (attention K/V)\n", (double)fixed * 4 / 1024, (long long)per_tok * 4);
    printf("  a pure-attention model of this width and depth caches %lld bytes per token; at "
           "T=%lld: this model %.2f MiB, pure attention %.2f MiB per sequence\n",
           (long long)kv_all * 4, (long long)T, (double)(fixed + per_tok * T) * 4 / 1048576,
           (double)(kv_all * T) * 4 / 1048576);
    printf("training activations per layer at B=%lld, T=%lld:\n", (long long)B, (long long)T);
    double total = 0;
    for (int64_t l = 0; l < L; l++) {
        const double mib = (double)la_model_layer_act(m, l, B, T) * 4 / 1048576;
        total += mib;
        printf("  layer %3lld %-12s %9.2f MiB\n", (long long)l, la_model_layer_kind(m, l), mib);
    }
    printf("  total %.2f MiB (plus the head's %d-row blocks)\n", total, 256);
    if (have)
        printf("trainer state: step %lld of %lld, task %s, val loss %.4f, val accuracy %.4f\n",
               (long long)step, (long long)h.steps, t.kind == TASK_TEXT ? "text" : "mqar",
               h.last_val_loss, h.last_val_acc);
    la_model_free(m);
    return 0;
}
