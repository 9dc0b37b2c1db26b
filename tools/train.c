// linattn train: AdamW with warmup + cosine, clipping, gradient accumulation, periodic
// evaluation, atomic checkpoints and exact resume.
//
// Exactness: batch i of a run is a pure function of (seed, i), the kernels reduce in a fixed
// order whatever the thread count, and a checkpoint holds the parameters, both AdamW moments
// and the step; so a run resumed at step k computes the same losses, bit for bit, as one that
// never stopped.
#include "cli.h"
#include "lm.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------
// Architecture shorthand -> config.json

static const struct {
    const char * name;
    const char * model_type;
} kinds[] = {
    { "gdn", "gated_deltanet" }, { "kda", "kda" },       { "deltanet", "delta_net" },
    { "gla", "gla" },            { "retnet", "retnet" }, { "linear_attn", "linear_attn" },
    { "hgrn2", "hgrn2" },        { "mamba2", "mamba2" },     { "mamba", "mamba" },
    { "rwkv7", "rwkv7" },        { "attn", "transformer" },
};

static const char * model_type_of(const char * name) {
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(kinds[i].name, name)) return kinds[i].model_type;
    cli_die("unknown mixer '%s' (gdn, kda, deltanet, gla, retnet, linear_attn, hgrn2, mamba2, "
            "mamba, rwkv7, attn)", name);
}

char * lm_arch_json(const lm_arch * a) {
    char lin[32] = "";
    char attn_layers[4096] = "";
    int64_t L = a->num_layers, n = 0;
    if (a->layers) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", a->layers);
        for (char * tok = strtok(buf, ","); tok; tok = strtok(NULL, ","), n++) {
            model_type_of(tok);
            if (!strcmp(tok, "attn")) {
                snprintf(attn_layers + strlen(attn_layers), sizeof attn_layers - strlen(attn_layers),
                         "%s%lld", attn_layers[0] ? "," : "", (long long)n);
            } else if (!lin[0]) {
                snprintf(lin, sizeof lin, "%s", tok);
            } else if (strcmp(lin, tok)) {
                cli_die("--layers: '%s' and '%s' in one model; an fla config has one linear "
                        "mixer (model_type) plus softmax layers", lin, tok);
            }
        }
        if (n == 0) cli_die("--layers: empty list");
        L = n;
    } else {
        snprintf(lin, sizeof lin, "%s", a->model);
        model_type_of(lin);
        if (!strcmp(lin, "attn")) lin[0] = 0;
    }
    const bool pure_attn = !lin[0];
    const char * mt = pure_attn ? "transformer" : model_type_of(lin);
    char * j = malloc(16384);
    if (!j) cli_die("out of memory");
    int k = snprintf(j, 16384,
                     "{\"model_type\": \"%s\", \"vocab_size\": %lld, \"hidden_size\": %lld, "
                     "\"num_hidden_layers\": %lld, \"tie_word_embeddings\": %s",
                     mt, (long long)a->vocab, (long long)a->hidden, (long long)L,
                     a->tie ? "true" : "false");
    if (pure_attn) {
        k += snprintf(j + k, 16384 - (size_t)k, ", \"num_heads\": %lld, \"num_kv_heads\": %lld",
                      (long long)a->attn_heads, (long long)a->attn_kv_heads);
        if (a->window) k += snprintf(j + k, 16384 - (size_t)k, ", \"window_size\": %lld", (long long)a->window);
    } else {
        if (!strcmp(lin, "mamba2") || !strcmp(lin, "rwkv7")) {
            // heads follow from the width: Mamba2 expand * hidden / head_dim, RWKV-7 hidden /
            // head_dim
            k += snprintf(j + k, 16384 - (size_t)k, ", \"head_dim\": %lld", (long long)a->head_dim);
        } else if (strcmp(lin, "mamba")) {
            k += snprintf(j + k, 16384 - (size_t)k, ", \"num_heads\": %lld", (long long)a->heads);
        }
        if (!strcmp(lin, "gdn") || !strcmp(lin, "kda"))
            k += snprintf(j + k, 16384 - (size_t)k, ", \"head_dim\": %lld, \"expand_v\": %g",
                          (long long)a->head_dim, a->expand_v);
        if (!strcmp(lin, "hgrn2"))  // expand_ratio = hidden / num_heads (fla's fallback)
            k += snprintf(j + k, 16384 - (size_t)k, ", \"expand_ratio\": null");
        if (!strcmp(lin, "deltanet") || !strcmp(lin, "gla"))
            k += snprintf(j + k, 16384 - (size_t)k, ", \"expand_v\": %g", a->expand_v);
        // every linear family gets the hybrid spec (a family that cannot run it says so)
        if (attn_layers[0]) {
            k += snprintf(j + k, 16384 - (size_t)k,
                          ", \"attn\": {\"layers\": [%s], \"num_heads\": %lld, \"num_kv_heads\": %lld",
                          attn_layers, (long long)a->attn_heads, (long long)a->attn_kv_heads);
            if (a->window)
                k += snprintf(j + k, 16384 - (size_t)k, ", \"window_size\": %lld", (long long)a->window);
            k += snprintf(j + k, 16384 - (size_t)k, "}");
        }
    }
    snprintf(j + k, 16384 - (size_t)k, "}");
    return j;
}

// ---------------------------------------------------------------------------------------------
// The loop

typedef struct {
    char * buf;
    size_t len, cap;
} strbuf;

static void sb_add(strbuf * b, const char * fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(strbuf * b, const char * fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(b->buf ? b->buf + b->len : NULL, b->buf ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n >= 0 && b->buf && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        b->cap = 2 * (b->cap + (size_t)n + 64);
        b->buf = realloc(b->buf, b->cap);
        if (!b->buf) cli_die("out of memory");
    }
}

#define CSV_HEADER "step,tokens,loss,lr,grad_norm,tokens_per_s,elapsed_s,val_loss,val_accuracy\n"

// Keeps the rows of an existing log up to `step` (a resumed run continues its own log).
static void log_resume(strbuf * b, const char * path, int64_t step) {
    char err[512];
    char * txt = access(path, F_OK) == 0 ? la_read_text_file(path, 1 << 28, err, sizeof err) : NULL;
    sb_add(b, "%s", CSV_HEADER);
    if (!txt) return;
    char * save = NULL;
    bool header = true;
    for (char * line = strtok_r(txt, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (header) {
            header = false;
            continue;
        }
        const long long s = strtoll(line, NULL, 10);
        if (s >= 1 && s <= step) sb_add(b, "%s\n", line);
    }
    free(txt);
}

static void fmt_time(char * out, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(out, n, "--");
    else if (s < 60) snprintf(out, n, "%.0fs", s);
    else if (s < 3600) snprintf(out, n, "%.0fm%02.0fs", floor(s / 60), fmod(s, 60));
    else snprintf(out, n, "%.0fh%02.0fm", floor(s / 3600), fmod(s / 60, 60));
}

static void progress(const lm_run * r, int64_t step, int64_t total, double loss, double tps,
                     double eta, double acc) {
    if (r->quiet) return;
    const bool tty = isatty(2);
    // without a terminal: a line at every tenth of the run
    if (!tty && step != total && step % LA_MAX(1, total / 10)) return;
    char bar[32], e[32];
    const int w = 24, f = (int)((double)w * (double)step / (double)total);
    for (int i = 0; i < w; i++) bar[i] = i < f ? '#' : '.';
    bar[w] = 0;
    fmt_time(e, sizeof e, eta);
    fprintf(stderr, "%s%s [%s] %lld/%lld loss %.4f", tty ? "\r" : "", r->label ? r->label : "train",
            bar, (long long)step, (long long)total, loss);
    if (isfinite(acc)) fprintf(stderr, " acc %.3f", acc);
    fprintf(stderr, " %.0f tok/s ETA %s%s", tps, e, tty ? "   " : "\n");
    if (tty && step == total) fputc('\n', stderr);
    fflush(stderr);
}

typedef struct {
    const la_model * m;
    const lm_task *  t;
    const lm_hparams * h;
    int64_t          step;
    double           val_loss, val_acc;
} save_ctx;

static la_status save_hook(void * ctx, const char * tmp, char * err, size_t errlen) {
    const save_ctx * c = ctx;
    char path[4200];
    snprintf(path, sizeof path, "%s/trainer_state.safetensors", tmp);
    la_status s = la_model_optim_save(c->m, path, c->step, err, errlen);
    if (s) return s;
    char * js = lm_state_json(c->t, c->h, c->step, c->val_loss, c->val_acc);
    snprintf(path, sizeof path, "%s/trainer_state.json", tmp);
    s = la_write_file_atomic(path, js, strlen(js), err, errlen);
    free(js);
    return s;
}

static void checkpoint(const la_model * m, const lm_task * t, const lm_hparams * h,
                       const lm_run * r, int64_t step, double vl, double va, const strbuf * log) {
    char err[512];
    if (r->out) {
        save_ctx c = { m, t, h, step, vl, va };
        if (la_model_save(m, r->out, save_hook, &c, err, sizeof err)) cli_die("%s", err);
    }
    if (r->log && la_write_file_atomic(r->log, log->buf, log->len, err, sizeof err))
        cli_die("%s", err);
}

void lm_train(la_model * m, lm_task * t, lm_hparams * h, const lm_run * r, int64_t start,
              double * val_loss, double * val_acc) {
    const int64_t B = h->batch, T = t->seq_len, A = h->grad_accum;
    int64_t * ids = malloc((size_t)(B * T) * 8), *lab = malloc((size_t)(B * T) * 8);
    int64_t * counts = malloc((size_t)A * sizeof *counts);  // labelled positions per micro-batch
    if (!ids || !lab || !counts) cli_die("out of memory");
    if (la_model_reserve(m, B, T, true)) cli_die("train: cannot reserve memory for B=%lld T=%lld",
                                                  (long long)B, (long long)T);
    strbuf log = { 0 };
    if (r->log) log_resume(&log, r->log, start);
    double vl = h->last_val_loss, va = h->last_val_acc;
    const double t0 = cli_now();
    int64_t tokens = 0;
    for (int64_t step = start; step < h->steps; step++) {
        la_model_zero_grad(m);
        // micro-batches: the loss is the mean over every counted position of the step
        int64_t total = 0;
        for (int64_t a = 0; a < A; a++) {
            task_batch(t, ids, lab, B, step * A + a, false);
            int64_t c = 0;
            for (int64_t i = 0; i < B * T; i++) c += lab[i] != LA_IGNORE_INDEX;
            counts[a] = c;
            total += c;
        }
        double loss = 0;
        for (int64_t a = 0; a < A; a++) {
            if (A > 1) task_batch(t, ids, lab, B, step * A + a, false);
            const float wgt = total ? (float)((double)counts[a] / (double)total) : 0.0f;
            double l;
            int64_t c;
            const la_status s = la_model_loss(m, &l, &c, ids, lab, B, T, true, wgt);
            if (s) cli_die("train: step %lld: %s", (long long)step + 1, la_status_str(s));
            loss += l * (double)c;
        }
        loss = total ? loss / (double)total : 0.0;
        if (!isfinite(loss))
            cli_die("train: step %lld: the loss is %g; the last checkpoint is kept (lower --lr?)",
                    (long long)step + 1, loss);
        const double gn = la_model_clip_grad(m, h->clip);
        if (!isfinite(gn))
            cli_die("train: step %lld: the gradient norm is %g; the last checkpoint is kept "
                    "(lower --lr?)", (long long)step + 1, gn);
        const double lr = la_lr_schedule(step, h->steps, h->warmup, h->lr, h->min_lr);
        if (la_model_adamw(m, lr, &h->opt, step + 1)) cli_die("train: optimizer failed");
        tokens += A * B * T;
        const double el = cli_now() - t0, tps = (double)tokens / fmax(el, 1e-9);
        const int64_t done = step + 1;
        bool evaluated = false;
        if ((r->eval_every > 0 && done % r->eval_every == 0) || done == h->steps) {
            lm_evaluate(m, t, B, &vl, &va);
            evaluated = true;
        }
        if (r->log) {
            sb_add(&log, "%lld,%lld,%.9g,%.6g,%.6g,%.1f,%.2f,", (long long)done,
                   (long long)(done * A * B * T), loss, lr, gn, tps, el);
            if (evaluated) sb_add(&log, "%.6g,%.6g\n", vl, va);
            else sb_add(&log, ",\n");
        }
        progress(r, done, h->steps, loss, tps, el / (double)(done - start) * (double)(h->steps - done),
                 isfinite(va) && t->kind == TASK_MQAR ? va : LM_NAN);
        const bool stop = r->stop_after > 0 && done == r->stop_after;
        if ((r->save_every > 0 && done % r->save_every == 0) || done == h->steps || stop)
            checkpoint(m, t, h, r, done, vl, va, &log);
        if (stop) break;
    }
    if (start >= h->steps) lm_evaluate(m, t, B, &vl, &va);
    free(log.buf);
    free(ids);
    free(lab);
    free(counts);
    *val_loss = vl;
    *val_acc = va;
}

// ---------------------------------------------------------------------------------------------
// linattn train

static void usage_train(void) {
    printf("usage: linattn train [--config FILE.json | architecture flags] [task flags] [options]\n"
           "\narchitecture (when no --config):\n"
           "  --layers LIST        e.g. gdn,gdn,gdn,attn (one linear mixer plus attn layers)\n"
           "  --model NAME         mixer of every layer: gdn kda deltanet gla retnet linear_attn hgrn2\n"
           "                       mamba2 mamba rwkv7 attn (gdn)\n"
           "  --num-layers N (4)  --hidden D (128)  --heads H (2)  --head-dim K (64)  --expand-v X (1)\n"
           "  --attn-heads H (hidden/64)  --attn-kv-heads H  --window W (0 = full)  --tie\n"
           "task:\n"
           "  --task mqar|text (mqar)  --data FILE (text)  --seq-len T  --val-frac F (0.1)\n"
           "  --mqar-vocab V (256) --mqar-pairs D (16) --mqar-power A (0.01) --mqar-passes P (1)\n"
           "  --mqar-fillers random|zero  --eval-examples N (1024)\n"
           "optimisation:\n"
           "  --steps N (1000)  --batch B (32)  --grad-accum A (1)  --lr X (1e-3)  --min-lr X (lr/10)\n"
           "  --warmup N (steps/20)  --weight-decay X (0.1)  --beta1 X (0.9)  --beta2 X (0.95)\n"
           "  --clip X (1.0, 0 = off)  --seed N (1)\n"
           "run:\n"
           "  --out DIR            checkpoint directory (replaced atomically at every save)\n"
           "  --resume DIR         continue the run saved in DIR (hyperparameters come from it; the\n"
           "                       loss curve continues bit for bit unless --steps changes the\n"
           "                       schedule's length)\n"
           "  --log FILE.csv       per-step log    --eval-every N (steps/10)  --save-every N (eval-every)\n"
           "  --stop-after N       checkpoint and stop after step N (resume later with --resume)\n"
           "  --threads N          --quiet\n");
}

int cmd_train(int argc, char ** argv) {
    lm_task t;
    task_defaults(&t);
    t.seed = 1;
    lm_hparams h = { .steps = 1000, .batch = 32, .grad_accum = 1, .warmup = -1, .lr = 1e-3,
                     .min_lr = -1, .clip = 1.0,
                     .opt = { .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1 },
                     .last_val_loss = LM_NAN, .last_val_acc = LM_NAN };
    lm_arch a = { .model = "gdn", .num_layers = 4, .hidden = 128, .heads = 2, .head_dim = 64,
                  .expand_v = 1, .attn_heads = 0, .attn_kv_heads = 0 };
    lm_run r = { .eval_every = -1, .save_every = -1 };
    const char * config = NULL, *resume = NULL;
    int n_hparam_flags = 0, n_arch_flags = 0;
    for (int i = 1; i < argc; i++) {
        const char * f = argv[i];
        const char * v = i + 1 < argc ? argv[i + 1] : NULL;
        bool val = true;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage_train();
            return 0;
        } else if (!strcmp(f, "--config")) config = v;
        else if (!strcmp(f, "--resume")) resume = v;
        else if (!strcmp(f, "--layers")) a.layers = v, n_arch_flags++;
        else if (!strcmp(f, "--model")) a.model = v, n_arch_flags++;
        else if (!strcmp(f, "--num-layers")) a.num_layers = cli_parse_int(f, v, 1, 1024), n_arch_flags++;
        else if (!strcmp(f, "--hidden")) a.hidden = cli_parse_int(f, v, 1, 65536), n_arch_flags++;
        else if (!strcmp(f, "--heads")) a.heads = cli_parse_int(f, v, 1, 4096), n_arch_flags++;
        else if (!strcmp(f, "--head-dim")) a.head_dim = cli_parse_int(f, v, 1, 4096), n_arch_flags++;
        else if (!strcmp(f, "--expand-v")) a.expand_v = cli_parse_double(f, v, 0.01, 64), n_arch_flags++;
        else if (!strcmp(f, "--attn-heads")) a.attn_heads = cli_parse_int(f, v, 1, 4096), n_arch_flags++;
        else if (!strcmp(f, "--attn-kv-heads")) a.attn_kv_heads = cli_parse_int(f, v, 1, 4096), n_arch_flags++;
        else if (!strcmp(f, "--window")) a.window = cli_parse_int(f, v, 0, 1 << 30), n_arch_flags++;
        else if (!strcmp(f, "--tie")) a.tie = true, val = false, n_arch_flags++;
        else if (!strcmp(f, "--out")) r.out = v;
        else if (!strcmp(f, "--log")) r.log = v;
        else if (!strcmp(f, "--eval-every")) r.eval_every = cli_parse_int(f, v, 0, INT64_MAX);
        else if (!strcmp(f, "--save-every")) r.save_every = cli_parse_int(f, v, 0, INT64_MAX);
        else if (!strcmp(f, "--threads")) la_set_num_threads((int32_t)cli_parse_int(f, v, 1, 1024));
        else if (!strcmp(f, "--quiet")) r.quiet = true, val = false;
        else if (!strcmp(f, "--stop-after")) r.stop_after = cli_parse_int(f, v, 1, INT64_MAX);
        else if (!strcmp(f, "--steps")) h.steps = cli_parse_int(f, v, 1, INT64_MAX / 1024);
        else {
            n_hparam_flags++;
            if (!strcmp(f, "--batch")) h.batch = cli_parse_int(f, v, 1, 1 << 20);
            else if (!strcmp(f, "--grad-accum")) h.grad_accum = cli_parse_int(f, v, 1, 1 << 20);
            else if (!strcmp(f, "--lr")) h.lr = cli_parse_double(f, v, 0, 10);
            else if (!strcmp(f, "--min-lr")) h.min_lr = cli_parse_double(f, v, 0, 10);
            else if (!strcmp(f, "--warmup")) h.warmup = cli_parse_int(f, v, 0, INT64_MAX / 1024);
            else if (!strcmp(f, "--weight-decay")) h.opt.weight_decay = cli_parse_double(f, v, 0, 10);
            else if (!strcmp(f, "--beta1")) h.opt.beta1 = cli_parse_double(f, v, 0, 0.999999);
            else if (!strcmp(f, "--beta2")) h.opt.beta2 = cli_parse_double(f, v, 0, 0.9999999);
            else if (!strcmp(f, "--clip")) h.clip = cli_parse_double(f, v, 0, 1e9);
            // at most 2^53: trainer_state.json keeps the seed as a JSON number (a double)
            else if (!strcmp(f, "--seed")) t.seed = (uint64_t)cli_parse_int(f, v, 0, 1LL << 53);
            else if (task_flag(&t, f, v)) {
            } else cli_die("train: unknown flag '%s' (see linattn train --help)", f);
        }
        if (val) {
            if (!v) cli_die("%s needs a value", f);
            i++;
        }
    }
    if (config && n_arch_flags)
        cli_die("train: --config %s gives the architecture; drop --layers/--model/--hidden/... "
                "(or drop --config)", config);
    // a log inside the checkpoint directory would make it not a checkpoint (never replaced)
    if (r.log && (r.out || resume)) {
        const char * o = r.out ? r.out : resume;
        const size_t n = strlen(o);
        if (!strncmp(r.log, o, n) && (r.log[n] == '/' || (n && o[n - 1] == '/')))
            cli_die("train: --log %s is inside the checkpoint directory %s; put it next to it",
                    r.log, o);
    }
    la_model * m = NULL;
    int64_t start = 0;
    char err[512];
    if (resume) {
        if (config || n_hparam_flags || n_arch_flags)
            cli_die("train: --resume takes the model, task and hyperparameters from %s; only "
                    "--steps, --out, --log, --eval-every, --save-every, --stop-after, --threads, --quiet "
                    "apply",
                    resume);
        const int64_t steps = h.steps;
        bool steps_given = false;
        for (int i = 1; i < argc; i++) steps_given |= !strcmp(argv[i], "--steps");
        if (!lm_state_read(resume, &t, &h, &start))
            cli_die("%s: no trainer_state.json (not a training checkpoint)", resume);
        if (steps_given) h.steps = steps;
        m = lm_load(resume);
        char path[4200];
        snprintf(path, sizeof path, "%s/trainer_state.safetensors", resume);
        int64_t st;
        if (la_model_optim_load(m, path, &st, err, sizeof err)) cli_die("%s", err);
        if (st != start) cli_die("%s: trainer_state.json says step %lld, the optimizer state %lld",
                                 resume, (long long)start, (long long)st);
        if (!r.out) r.out = resume;
        task_open(&t);
    } else {
        task_open(&t);
        char * json = NULL;
        if (config) {
            json = la_read_text_file(config, 1 << 20, err, sizeof err);
            if (!json) cli_die("%s", err);
        } else {
            a.vocab = task_vocab(&t);
            if (!a.attn_heads) a.attn_heads = LA_MAX(1, a.hidden / 64);
            if (!a.attn_kv_heads) a.attn_kv_heads = a.attn_heads;
            json = lm_arch_json(&a);
        }
        const la_status st = la_model_from_json(&m, json, err, sizeof err);
        free(json);
        if (st) cli_die("%s%s%s", config ? config : "", config ? ": " : "", err);
        la_model_init(m, t.seed);
        if (h.min_lr < 0) h.min_lr = h.lr / 10;
        if (h.warmup < 0) h.warmup = h.steps / 20;
    }
    if (task_vocab(&t) > la_model_vocab(m))
        cli_die("train: the task's vocabulary (%lld) exceeds the model's vocab_size (%lld)",
                (long long)task_vocab(&t), (long long)la_model_vocab(m));
    if (r.eval_every < 0) r.eval_every = LA_MAX(1, h.steps / 10);
    if (r.save_every < 0) r.save_every = r.eval_every > 0 ? r.eval_every : LA_MAX(1, h.steps / 10);
    if (r.stop_after > 0 && r.stop_after <= start)
        cli_die("train: --stop-after %lld is not after the checkpoint's step %lld",
                (long long)r.stop_after, (long long)start);
    if (!r.quiet)
        fprintf(stderr, "model: %.2f M parameters, %lld layers; task %s, T=%lld, batch %lld x %lld\n",
                (double)la_model_num_params(m) / 1e6, (long long)la_model_layers(m),
                t.kind == TASK_TEXT ? "text" : "mqar", (long long)t.seq_len, (long long)h.batch,
                (long long)h.grad_accum);
    double vl, va;
    lm_train(m, &t, &h, &r, start, &vl, &va);
    if (t.kind == TASK_MQAR) printf("final: val loss %.4f, accuracy %.4f\n", vl, va);
    else printf("final: val loss %.4f, perplexity %.3f\n", vl, exp(vl));
    la_text_close(t.text);
    la_model_free(m);
    return 0;
}
