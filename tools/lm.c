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
    // Mamba's selective-copying setting: vocabulary 16, 16 tokens to copy
    t->selcopy = (la_selcopy_cfg){ .vocab = 16, .num_tokens = 16, .noise_len = 96 };
    t->passkey = (la_passkey_cfg){ .vocab = 64, .seq_len = 128, .value_len = 1, .depth = -1 };
    t->icr = (la_icr_cfg){ .dim = 8, .points = 64, .noise = 0 };
    t->val_frac = 0.1;
    t->seq_len = 128;
    t->eval_examples = 1024;
}

static const char * const task_names[] = { "mqar", "text", "selcopy", "passkey", "icr" };

const char * task_name(const lm_task * t) { return task_names[t->kind]; }

void task_open(lm_task * t) {
    char err[512];
    if (t->kind != TASK_TEXT && t->eval_examples < 1)
        cli_die("--eval-examples: %s needs at least 1 example", task_name(t));
    la_status s = LA_STATUS_OK;
    switch (t->kind) {
    case TASK_TEXT: {
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
        return;
    }
    case TASK_MQAR:
        t->mqar.seq_len = t->seq_len;
        s = la_mqar_check(&t->mqar, err, sizeof err);
        break;
    case TASK_SELCOPY:
        // seq_len = L + 2M (M data tokens among L + M positions, then M markers)
        if (t->seq_len < 2 * t->selcopy.num_tokens)
            cli_die("selcopy: --seq-len %lld is shorter than twice --selcopy-tokens (%lld)",
                    (long long)t->seq_len, (long long)t->selcopy.num_tokens);
        t->selcopy.noise_len = t->seq_len - 2 * t->selcopy.num_tokens;
        s = la_selcopy_check(&t->selcopy, err, sizeof err);
        break;
    case TASK_PASSKEY:
        t->passkey.seq_len = t->seq_len;
        s = la_passkey_check(&t->passkey, err, sizeof err);
        break;
    case TASK_ICR:
        if (t->seq_len % 2) cli_die("icr: --seq-len %lld must be even (x, y pairs)", (long long)t->seq_len);
        t->icr.points = t->seq_len / 2;
        s = la_icr_check(&t->icr, err, sizeof err);
        break;
    }
    if (s) cli_die("%s", err);
}

int64_t task_vocab(const lm_task * t) {
    switch (t->kind) {
    case TASK_TEXT: return LA_TEXT_VOCAB;
    case TASK_SELCOPY: return t->selcopy.vocab;
    case TASK_PASSKEY: return t->passkey.vocab;
    case TASK_ICR: return 0;
    default: return t->mqar.vocab;
    }
}

void task_check_model(const lm_task * t, const la_model * m, const char * who) {
    const int64_t d = la_model_input_dim(m);
    if (t->kind == TASK_ICR) {
        if (d != t->icr.dim)
            cli_die("%s: the icr task has inputs of %lld, the model %s %lld", who,
                    (long long)t->icr.dim, d ? "reads inputs of" : "reads tokens, input_dim",
                    (long long)d);
    } else if (d) {
        cli_die("%s: the model reads vectors (input_dim %lld); the %s task is tokens", who,
                (long long)d, task_name(t));
    } else if (task_vocab(t) > la_model_vocab(m)) {
        cli_die("%s: the task's vocabulary (%lld) exceeds the model's (%lld)", who,
                (long long)task_vocab(t), (long long)la_model_vocab(m));
    }
}

lm_batch batch_new(const lm_task * t, int64_t B) {
    const int64_t T = t->seq_len;
    lm_batch b = { .B = B, .T = T };
    bool ok;
    if (t->kind == TASK_ICR) {
        b.x = malloc((size_t)(B * T * t->icr.dim) * sizeof(float));
        b.y = malloc((size_t)(B * T) * sizeof(float));
        b.wt = malloc((size_t)(B * T) * sizeof(float));
        b.pred = malloc((size_t)(B * T) * sizeof(float));
        ok = b.x && b.y && b.wt && b.pred;
    } else {
        b.ids = malloc((size_t)(B * T) * sizeof(int64_t));
        b.lab = malloc((size_t)(B * T) * sizeof(int64_t));
        ok = b.ids && b.lab;
    }
    if (!ok) cli_die("out of memory (a batch of %lld x %lld)", (long long)B, (long long)T);
    return b;
}

void batch_free(lm_batch * b) {
    free(b->ids);
    free(b->lab);
    free(b->x);
    free(b->y);
    free(b->wt);
    free(b->pred);
    memset(b, 0, sizeof *b);
}

void task_batch(const lm_task * t, lm_batch * b, int64_t index, bool val) {
    const int64_t B = b->B, T = b->T;
    // the test set is another seed's stream, as Zoology draws its test split separately
    const uint64_t seed = val ? t->seed ^ 0x7e57da7aull : t->seed;
    const int64_t first = index * B;
    la_status s = LA_STATUS_OK;
    switch (t->kind) {
    case TASK_MQAR: s = la_mqar_generate(b->ids, b->lab, &t->mqar, seed, first, B); break;
    case TASK_SELCOPY: s = la_selcopy_generate(b->ids, b->lab, &t->selcopy, seed, first, B); break;
    case TASK_PASSKEY: s = la_passkey_generate(b->ids, b->lab, &t->passkey, seed, first, B); break;
    case TASK_ICR: s = la_icr_generate(b->x, b->y, b->wt, &t->icr, seed, first, B); break;
    case TASK_TEXT:
        if (!val) {
            s = la_text_sample(t->text, false, b->ids, b->lab, T, t->seed, first, B);
            break;
        }
        const int64_t nw = la_text_windows(t->text, true, T), n = LA_MIN(B, nw - first);
        s = n > 0 ? la_text_window(t->text, true, b->ids, b->lab, T, first, n) : LA_STATUS_OK;
        for (int64_t i = LA_MAX(n, 0) * T; i < B * T; i++) b->ids[i] = 0, b->lab[i] = LA_IGNORE_INDEX;
        break;
    }
    if (s) cli_die("task: cannot make a batch (%s)", la_status_str(s));
}

int64_t batch_count(const lm_batch * b) {
    int64_t c = 0;
    for (int64_t i = 0; i < b->B * b->T; i++)
        c += b->lab ? b->lab[i] != LA_IGNORE_INDEX : b->wt[i] > 0;
    return c;
}

la_status batch_loss(la_model * m, const lm_task * t, lm_batch * b, bool backward, float weight,
                     double * loss, int64_t * count, int64_t * correct) {
    if (t->kind == TASK_ICR) {
        *count = batch_count(b);
        return la_model_regress(m, loss, b->pred, b->x, b->y, b->wt, b->B, b->T, backward, weight);
    }
    if (correct) return la_model_eval(m, loss, count, correct, b->ids, b->lab, b->B, b->T);
    return la_model_loss(m, loss, count, b->ids, b->lab, b->B, b->T, backward, weight);
}

int64_t task_eval_batches(const lm_task * t, int64_t B) {
    if (t->kind != TASK_TEXT) return (t->eval_examples + B - 1) / B;
    const int64_t nw = la_text_windows(t->text, true, t->seq_len);
    const int64_t nb = (nw + B - 1) / B;
    return t->eval_examples > 0 ? LA_MIN(nb, (t->eval_examples + B - 1) / B) : nb;
}

void lm_evaluate(la_model * m, const lm_task * t, int64_t B, double * loss, double * acc) {
    const int64_t nb = task_eval_batches(t, B);
    lm_batch b = batch_new(t, B);
    double sum = 0;
    int64_t cnt = 0, ok = 0;
    for (int64_t i = 0; i < nb; i++) {
        task_batch(t, &b, i, true);
        double l;
        int64_t c, k = 0;
        const la_status s = batch_loss(m, t, &b, false, 0.0f, &l, &c, &k);
        if (s) cli_die("eval: %s", la_status_str(s));
        sum += l * (double)c;
        cnt += c;
        ok += k;
    }
    batch_free(&b);
    *loss = cnt ? sum / (double)cnt : LM_NAN;
    *acc = cnt && t->kind != TASK_ICR ? (double)ok / (double)cnt : LM_NAN;
}

double lm_icr_baseline(const lm_task * t, int64_t B) {
    const int64_t nb = task_eval_batches(t, B);
    lm_batch b = batch_new(t, B);
    double sum = 0, cnt = 0;
    for (int64_t i = 0; i < nb; i++) {
        task_batch(t, &b, i, true);
        if (la_icr_least_squares(b.pred, b.x, b.y, &t->icr, B)) cli_die("icr: least squares failed");
        for (int64_t r = 0; r < B * t->seq_len; r++) {
            const double e = (double)b.pred[r] - (double)b.y[r];
            sum += (double)b.wt[r] * e * e;
            cnt += (double)b.wt[r];
        }
    }
    batch_free(&b);
    return cnt > 0 ? sum / cnt : LM_NAN;
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
    cJSON_AddStringToObject(o, "task", task_name(t));
    if (t->kind == TASK_TEXT) {
        cJSON_AddStringToObject(o, "data", t->data);
        cJSON_AddNumberToObject(o, "data_tokens", (double)t->data_tokens);
        cJSON_AddNumberToObject(o, "val_frac", t->val_frac);
    } else if (t->kind == TASK_MQAR) {
        put_mqar(o, &t->mqar);
    } else if (t->kind == TASK_SELCOPY) {
        cJSON_AddNumberToObject(o, "selcopy_vocab", (double)t->selcopy.vocab);
        cJSON_AddNumberToObject(o, "selcopy_tokens", (double)t->selcopy.num_tokens);
        cJSON_AddBoolToObject(o, "selcopy_plain", t->selcopy.plain);
    } else if (t->kind == TASK_PASSKEY) {
        cJSON_AddNumberToObject(o, "passkey_vocab", (double)t->passkey.vocab);
        cJSON_AddNumberToObject(o, "passkey_value_len", (double)t->passkey.value_len);
        cJSON_AddNumberToObject(o, "passkey_depth", t->passkey.depth);
    } else {
        cJSON_AddNumberToObject(o, "icr_dim", (double)t->icr.dim);
        cJSON_AddNumberToObject(o, "icr_noise", t->icr.noise);
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
    } else if (!strcmp(task->valuestring, "selcopy")) {
        t->kind = TASK_SELCOPY;
        t->selcopy.vocab = (int64_t)jnum(o, "selcopy_vocab", path);
        t->selcopy.num_tokens = (int64_t)jnum(o, "selcopy_tokens", path);
        t->selcopy.plain = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "selcopy_plain"));
    } else if (!strcmp(task->valuestring, "passkey")) {
        t->kind = TASK_PASSKEY;
        t->passkey.vocab = (int64_t)jnum(o, "passkey_vocab", path);
        t->passkey.value_len = (int64_t)jnum(o, "passkey_value_len", path);
        t->passkey.depth = jnum(o, "passkey_depth", path);
    } else if (!strcmp(task->valuestring, "icr")) {
        t->kind = TASK_ICR;
        t->icr.dim = (int64_t)jnum(o, "icr_dim", path);
        t->icr.noise = jnum(o, "icr_noise", path);
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
    task_check_model(&t, m, "eval");
    const double t0 = cli_now();
    double loss, acc;
    lm_evaluate(m, &t, B, &loss, &acc);
    const long long n_ex = (long long)(task_eval_batches(&t, B) * B);
    switch (t.kind) {
    case TASK_MQAR:
        printf("%s: mqar (N=%lld, D=%lld, vocab %lld, %lld examples): loss %.4f  accuracy %.4f",
               dir, (long long)t.mqar.seq_len, (long long)t.mqar.num_kv_pairs,
               (long long)t.mqar.vocab, n_ex, loss, acc);
        break;
    case TASK_SELCOPY:
        printf("%s: selcopy (%lld tokens among %lld, vocab %lld, %lld examples): loss %.4f  "
               "accuracy %.4f", dir, (long long)t.selcopy.num_tokens,
               (long long)(t.selcopy.noise_len + t.selcopy.num_tokens), (long long)t.selcopy.vocab,
               n_ex, loss, acc);
        break;
    case TASK_PASSKEY:
        printf("%s: passkey (N=%lld, %lld value token(s), vocab %lld, %lld examples): loss %.4f  "
               "accuracy %.4f", dir, (long long)t.passkey.seq_len, (long long)t.passkey.value_len,
               (long long)t.passkey.vocab, n_ex, loss, acc);
        break;
    case TASK_ICR: {
        // Garg et al. report the squared error divided by d (the variance of y)
        const double d = (double)t.icr.dim;
        printf("%s: icr (d=%lld, %lld points, noise %g, %lld examples): mse/d %.4f  least squares "
               "%.4f", dir, (long long)t.icr.dim, (long long)t.icr.points, t.icr.noise, n_ex,
               loss / d, lm_icr_baseline(&t, B) / d);
        break;
    }
    case TASK_TEXT:
        printf("%s: text %s (validation split, %lld of %lld windows of %lld tokens): loss %.4f  "
               "perplexity %.3f  bits/byte %.4f", dir, t.data,
               (long long)LA_MIN(n_ex, la_text_windows(t.text, true, t.seq_len)),
               (long long)la_text_windows(t.text, true, t.seq_len), (long long)t.seq_len, loss,
               exp(loss), loss / log(2.0));
        break;
    }
    printf("  (%.1f s)\n", cli_now() - t0);
    la_text_close(t.text);
    la_model_free(m);
    return 0;
}

// Task flags shared by train and eval; returns true when flag a (with value v) was one.
bool task_flag(lm_task * t, const char * a, const char * v) {
    if (!strcmp(a, "--task")) {
        const size_t n = sizeof task_names / sizeof task_names[0];
        size_t k = 0;
        while (v && k < n && strcmp(v, task_names[k])) k++;
        if (!v || k == n)
            cli_die("--task: '%s' is not mqar, text, selcopy, passkey or icr", v ? v : "");
        t->kind = (task_kind)k;
    } else if (!strcmp(a, "--data")) {
        if (!v || strlen(v) >= sizeof t->data) cli_die("--data needs a file path");
        snprintf(t->data, sizeof t->data, "%s", v);
        t->kind = TASK_TEXT;
    } else if (!strcmp(a, "--seq-len")) {
        t->seq_len = cli_parse_int(a, v, 2, 1 << 22);
    } else if (!strcmp(a, "--selcopy-vocab")) {
        t->selcopy.vocab = cli_parse_int(a, v, 3, 1 << 24);
    } else if (!strcmp(a, "--selcopy-tokens")) {
        t->selcopy.num_tokens = cli_parse_int(a, v, 1, 1 << 20);
    } else if (!strcmp(a, "--selcopy-plain")) {  // 1: the data tokens first (plain copying)
        t->selcopy.plain = cli_parse_int(a, v, 0, 1);
    } else if (!strcmp(a, "--passkey-vocab")) {
        t->passkey.vocab = cli_parse_int(a, v, 6, 1 << 24);
    } else if (!strcmp(a, "--passkey-value-len")) {
        t->passkey.value_len = cli_parse_int(a, v, 1, 1 << 20);
    } else if (!strcmp(a, "--passkey-depth")) {  // < 0: uniform per example
        t->passkey.depth = cli_parse_double(a, v, -1.0, 1.0);
    } else if (!strcmp(a, "--icr-dim")) {
        t->icr.dim = cli_parse_int(a, v, 1, 4096);
    } else if (!strcmp(a, "--icr-noise")) {
        t->icr.noise = cli_parse_double(a, v, 0.0, 1e6);
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
               (long long)step, (long long)h.steps, task_name(&t),
               h.last_val_loss, h.last_val_acc);
    la_model_free(m);
    return 0;
}
