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
        char * save = NULL;
        for (char * tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            // NAME*K repeats a mixer K times: "gdn*6,attn" is six GDN layers, then attention
            int64_t rep = 1;
            char * star = strchr(tok, '*');
            if (star) {
                *star = 0;
                rep = cli_parse_int("--layers (the count after '*')", star + 1, 1, 1024);
            }
            model_type_of(tok);
            for (int64_t k = 0; k < rep; k++, n++) {
                if (n >= 1024) cli_die("--layers: more than 1024 layers");
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
        }
        if (n == 0) cli_die("--layers: empty list");
        L = n;
    } else {
        snprintf(lin, sizeof lin, "%s", a->model);
        model_type_of(lin);
        if (!strcmp(lin, "attn")) lin[0] = 0;
    }
    const bool pure_attn = !lin[0];
    // head_dim 0: hidden / heads for GDN and KDA (key width = model width), 64 for the
    // families whose head count follows from it
    const int64_t hd = a->head_dim ? a->head_dim
                       : (!strcmp(lin, "mamba2") || !strcmp(lin, "rwkv7")) ? 64
                                                                            : LA_MAX(1, a->hidden / a->heads);
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
            k += snprintf(j + k, 16384 - (size_t)k, ", \"head_dim\": %lld", (long long)hd);
        } else if (strcmp(lin, "mamba")) {
            k += snprintf(j + k, 16384 - (size_t)k, ", \"num_heads\": %lld", (long long)a->heads);
        }
        if (!strcmp(lin, "gdn") || !strcmp(lin, "kda"))
            k += snprintf(j + k, 16384 - (size_t)k, ", \"head_dim\": %lld, \"expand_v\": %g",
                          (long long)hd, a->expand_v);
        if (!strcmp(lin, "hgrn2"))  // expand_ratio = hidden / num_heads (fla's fallback)
            k += snprintf(j + k, 16384 - (size_t)k, ", \"expand_ratio\": null");
        if (!strcmp(lin, "deltanet") || !strcmp(lin, "gla"))
            k += snprintf(j + k, 16384 - (size_t)k, ", \"expand_v\": %g", a->expand_v);
        if (a->short_conv) {
            if (strcmp(lin, "gdn") && strcmp(lin, "kda") && strcmp(lin, "deltanet") && strcmp(lin, "gla"))
                cli_die("--short-conv: %s has no short convolution (gdn, kda, deltanet, gla do)", lin);
            k += snprintf(j + k, 16384 - (size_t)k, ", \"use_short_conv\": %s",
                          a->short_conv > 0 ? "true" : "false");
        }
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
    if (a->input_dim)
        k += snprintf(j + k, 16384 - (size_t)k, ", \"input_dim\": %lld", (long long)a->input_dim);
    snprintf(j + k, 16384 - (size_t)k, "}");
    return j;
}

// ---------------------------------------------------------------------------------------------
// The loop

#define CSV_HEADER "step,tokens,loss,lr,grad_norm,tokens_per_s,elapsed_s,val_loss,val_accuracy\n"

// Keeps the rows of an existing log up to `step` (a resumed run continues its own log).
static void log_resume(cli_buf * b, const char * path, int64_t step) {
    char err[512];
    char * txt = access(path, F_OK) == 0 ? la_read_text_file(path, 1 << 28, err, sizeof err) : NULL;
    cli_buf_add(b, "%s", CSV_HEADER);
    if (!txt) return;
    char * save = NULL;
    bool header = true;
    for (char * line = strtok_r(txt, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (header) {
            header = false;
            continue;
        }
        const long long s = strtoll(line, NULL, 10);
        if (s >= 1 && s <= step) cli_buf_add(b, "%s\n", line);
    }
    free(txt);
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
    cli_fmt_duration(e, sizeof e, eta);
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
                       const lm_run * r, int64_t step, double vl, double va, const cli_buf * log) {
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
    lm_batch b = batch_new(t, B);
    int64_t * counts = malloc((size_t)A * sizeof *counts);  // labelled positions per micro-batch
    if (!counts) cli_die("out of memory");
    if (la_model_reserve(m, B, T, true)) cli_die("train: cannot reserve memory for B=%lld T=%lld",
                                                  (long long)B, (long long)T);
    cli_buf log = { 0 };
    if (r->log) log_resume(&log, r->log, start);
    double vl = h->last_val_loss, va = h->last_val_acc;
    const double t0 = cli_now();
    int64_t tokens = 0;
    for (int64_t step = start; step < h->steps; step++) {
        la_model_zero_grad(m);
        // micro-batches: the loss is the mean over every counted position of the step
        int64_t total = 0;
        for (int64_t a = 0; a < A; a++) {
            task_batch(t, &b, step * A + a, false);
            counts[a] = batch_count(&b);
            total += counts[a];
        }
        double loss = 0;
        for (int64_t a = 0; a < A; a++) {
            if (A > 1) task_batch(t, &b, step * A + a, false);
            const float wgt = total ? (float)((double)counts[a] / (double)total) : 0.0f;
            double l;
            int64_t c;
            const la_status s = batch_loss(m, t, &b, true, wgt, &l, &c, NULL);
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
            cli_buf_add(&log, "%lld,%lld,%.9g,%.6g,%.6g,%.1f,%.2f,", (long long)done,
                   (long long)(done * A * B * T), loss, lr, gn, tps, el);
            if (evaluated && isfinite(va)) cli_buf_add(&log, "%.6g,%.6g\n", vl, va);
            else if (evaluated) cli_buf_add(&log, "%.6g,\n", vl);
            else cli_buf_add(&log, ",\n");
        }
        progress(r, done, h->steps, loss, tps, el / (double)(done - start) * (double)(h->steps - done),
                 t->kind != TASK_TEXT ? va : LM_NAN);
        if (r->on_step) r->on_step(r->ctx, done, h->steps, loss);
        const bool stop = r->stop_after > 0 && done == r->stop_after;
        if ((r->save_every > 0 && done % r->save_every == 0) || done == h->steps || stop)
            checkpoint(m, t, h, r, done, vl, va, &log);
        if (stop) break;
    }
    if (start >= h->steps) lm_evaluate(m, t, B, &vl, &va);
    free(log.buf);
    batch_free(&b);
    free(counts);
    *val_loss = vl;
    *val_acc = va;
}

// ---------------------------------------------------------------------------------------------
// linattn train

static void usage_train(void) {
    printf("usage: linattn train [--config FILE.json | architecture flags] [task flags] [options]\n"
           "\narchitecture (when no --config):\n"
           "  --layers LIST        e.g. gdn,gdn,gdn,attn or gdn*3,attn (one linear mixer plus attn\n"
           "                       layers; NAME*K repeats a layer K times)\n"
           "  --model NAME         mixer of every layer: gdn kda deltanet gla retnet linear_attn hgrn2\n"
           "                       mamba2 mamba rwkv7 attn (gdn)\n"
           "  --num-layers N (4)  --hidden D (128)  --heads H (2)  --expand-v X (1)\n"
           "  --head-dim K         GDN/KDA key width per head (hidden/heads); Mamba2/RWKV-7 (64)\n"
           "  --attn-heads H (hidden/64)  --attn-kv-heads H  --window W (0 = full)  --tie\n"
           "  --short-conv 0|1     the short convolution of gdn/kda/deltanet/gla (fla's default:\n"
           "                       on, off for gla)\n"
           "task:\n"
           "  --task mqar|selcopy|passkey|icr|text (mqar)  --seq-len T (128)  --eval-examples N (1024)\n"
           "  mqar     --mqar-vocab V (256) --mqar-pairs D (16) --mqar-power A (0.01)\n"
           "           --mqar-passes P (1) --mqar-fillers random|zero\n"
           "  selcopy  --selcopy-vocab A (16) --selcopy-tokens M (16) --selcopy-plain 0|1 (0)\n"
           "  passkey  --passkey-vocab V (64) --passkey-value-len K (1) --passkey-depth X (-1: uniform)\n"
           "  icr      --icr-dim d (8) --icr-noise S (0); T = 2 x points\n"
           "  text     --data FILE --val-frac F (0.1)\n"
           "  (docs/TASKS.md describes every task)\n"
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

bool lm_setup_parse(lm_setup * S, int argc, char ** argv, int first) {
    memset(S, 0, sizeof *S);
    lm_task * t = &S->t;
    task_defaults(t);
    t->seed = 1;
    S->h = (lm_hparams){ .steps = 1000, .batch = 32, .grad_accum = 1, .warmup = -1, .lr = 1e-3,
                         .min_lr = -1, .clip = 1.0,
                         .opt = { .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1 },
                         .last_val_loss = LM_NAN, .last_val_acc = LM_NAN };
    S->a = (lm_arch){ .model = "gdn", .num_layers = 4, .hidden = 128, .heads = 2, .expand_v = 1 };
    S->r = (lm_run){ .eval_every = -1, .save_every = -1 };
    lm_hparams * h = &S->h;
    lm_arch * a = &S->a;
    lm_run * r = &S->r;
    for (int i = first; i < argc; i++) {
        const char * f = argv[i];
        const char * v = i + 1 < argc ? argv[i + 1] : NULL;
        bool val = true;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            return false;
        } else if (!strcmp(f, "--config")) S->config = v;
        else if (!strcmp(f, "--resume")) S->resume = v;
        else if (!strcmp(f, "--layers")) a->layers = v, S->n_arch_flags++;
        else if (!strcmp(f, "--model")) a->model = v, S->n_arch_flags++;
        else if (!strcmp(f, "--num-layers")) a->num_layers = cli_parse_int(f, v, 1, 1024), S->n_arch_flags++;
        else if (!strcmp(f, "--hidden")) a->hidden = cli_parse_int(f, v, 1, 65536), S->n_arch_flags++;
        else if (!strcmp(f, "--heads")) a->heads = cli_parse_int(f, v, 1, 4096), S->n_arch_flags++;
        else if (!strcmp(f, "--head-dim")) a->head_dim = cli_parse_int(f, v, 1, 4096), S->n_arch_flags++;
        else if (!strcmp(f, "--expand-v")) a->expand_v = cli_parse_double(f, v, 0.01, 64), S->n_arch_flags++;
        else if (!strcmp(f, "--attn-heads")) a->attn_heads = cli_parse_int(f, v, 1, 4096), S->n_arch_flags++;
        else if (!strcmp(f, "--attn-kv-heads")) a->attn_kv_heads = cli_parse_int(f, v, 1, 4096), S->n_arch_flags++;
        else if (!strcmp(f, "--window")) a->window = cli_parse_int(f, v, 0, 1 << 30), S->n_arch_flags++;
        else if (!strcmp(f, "--tie")) a->tie = true, val = false, S->n_arch_flags++;
        else if (!strcmp(f, "--short-conv")) a->short_conv = cli_parse_int(f, v, 0, 1) ? 1 : -1, S->n_arch_flags++;
        else if (!strcmp(f, "--out")) r->out = v;
        else if (!strcmp(f, "--log")) r->log = v;
        else if (!strcmp(f, "--eval-every")) r->eval_every = cli_parse_int(f, v, 0, INT64_MAX);
        else if (!strcmp(f, "--save-every")) r->save_every = cli_parse_int(f, v, 0, INT64_MAX);
        else if (!strcmp(f, "--threads")) la_set_num_threads((int32_t)cli_parse_int(f, v, 1, 1024));
        else if (!strcmp(f, "--quiet")) r->quiet = true, val = false;
        else if (!strcmp(f, "--stop-after")) r->stop_after = cli_parse_int(f, v, 1, INT64_MAX);
        else if (!strcmp(f, "--steps")) h->steps = cli_parse_int(f, v, 1, INT64_MAX / 1024), S->steps_given = true;
        else {
            S->n_hparam_flags++;
            if (!strcmp(f, "--batch")) h->batch = cli_parse_int(f, v, 1, 1 << 20);
            else if (!strcmp(f, "--grad-accum")) h->grad_accum = cli_parse_int(f, v, 1, 1 << 20);
            else if (!strcmp(f, "--lr")) h->lr = cli_parse_double(f, v, 0, 10);
            else if (!strcmp(f, "--min-lr")) h->min_lr = cli_parse_double(f, v, 0, 10);
            else if (!strcmp(f, "--warmup")) h->warmup = cli_parse_int(f, v, 0, INT64_MAX / 1024);
            else if (!strcmp(f, "--weight-decay")) h->opt.weight_decay = cli_parse_double(f, v, 0, 10);
            else if (!strcmp(f, "--beta1")) h->opt.beta1 = cli_parse_double(f, v, 0, 0.999999);
            else if (!strcmp(f, "--beta2")) h->opt.beta2 = cli_parse_double(f, v, 0, 0.9999999);
            else if (!strcmp(f, "--clip")) h->clip = cli_parse_double(f, v, 0, 1e9);
            // at most 2^53: trainer_state.json keeps the seed as a JSON number (a double)
            else if (!strcmp(f, "--seed")) t->seed = (uint64_t)cli_parse_int(f, v, 0, 1LL << 53);
            else if (task_flag(t, f, v)) {
            } else cli_die("train: unknown flag '%s' (see linattn train --help)", f);
        }
        if (val) {
            if (!v) cli_die("%s needs a value", f);
            i++;
        }
    }
    if (S->config && S->n_arch_flags)
        cli_die("train: --config %s gives the architecture; drop --layers/--model/--hidden/... "
                "(or drop --config)", S->config);
    // a log inside the checkpoint directory would make it not a checkpoint (never replaced)
    if (r->log && (r->out || S->resume)) {
        const char * o = r->out ? r->out : S->resume;
        const size_t n = strlen(o);
        if (!strncmp(r->log, o, n) && (r->log[n] == '/' || (n && o[n - 1] == '/')))
            cli_die("train: --log %s is inside the checkpoint directory %s; put it next to it",
                    r->log, o);
    }
    if (S->resume && (S->config || S->n_hparam_flags || S->n_arch_flags))
        cli_die("train: --resume takes the model, task and hyperparameters from %s; only "
                "--steps, --out, --log, --eval-every, --save-every, --stop-after, --threads, --quiet "
                "apply",
                S->resume);
    return true;
}

la_model * lm_setup_build(lm_setup * S) {
    const lm_task * t = &S->t;
    char err[512];
    char * json = NULL;
    if (S->config) {
        json = la_read_text_file(S->config, 1 << 20, err, sizeof err);
        if (!json) cli_die("%s", err);
    } else {
        lm_arch * a = &S->a;
        // A real-valued task has no tokens, but fla's config still needs a vocab_size that
        // holds its default bos/eos ids (1, 2); no embedding is built from it.
        a->vocab = t->kind == TASK_ICR ? 3 : task_vocab(t);
        a->input_dim = t->kind == TASK_ICR ? t->icr.dim : 0;
        if (!a->attn_heads) a->attn_heads = LA_MAX(1, a->hidden / 64);
        if (!a->attn_kv_heads) a->attn_kv_heads = a->attn_heads;
        json = lm_arch_json(a);
    }
    la_model * m = NULL;
    const la_status st = la_model_from_json(&m, json, err, sizeof err);
    free(json);
    if (st) cli_die("%s%s%s", S->config ? S->config : "", S->config ? ": " : "", err);
    return m;
}

la_model * lm_setup_model(lm_setup * S, int64_t * start) {
    lm_task * t = &S->t;
    lm_hparams * h = &S->h;
    la_model * m = NULL;
    char err[512];
    *start = 0;
    if (S->resume) {
        const int64_t steps = h->steps;
        if (!lm_state_read(S->resume, t, h, start))
            cli_die("%s: no trainer_state.json (not a training checkpoint)", S->resume);
        if (S->steps_given) h->steps = steps;
        m = lm_load(S->resume);
        char path[4200];
        snprintf(path, sizeof path, "%s/trainer_state.safetensors", S->resume);
        int64_t st;
        if (la_model_optim_load(m, path, &st, err, sizeof err)) {
            la_model_free(m);
            cli_die("%s", err);
        }
        if (st != *start) cli_die("%s: trainer_state.json says step %lld, the optimizer state %lld",
                                  S->resume, (long long)*start, (long long)st);
        if (!S->r.out) S->r.out = S->resume;
        task_open(t);
    } else {
        task_open(t);
        m = lm_setup_build(S);
        la_model_init(m, t->seed);
        if (h->min_lr < 0) h->min_lr = h->lr / 10;
        if (h->warmup < 0) h->warmup = h->steps / 20;
    }
    task_check_model(t, m, "train");
    lm_run * r = &S->r;
    if (r->eval_every < 0) r->eval_every = LA_MAX(1, h->steps / 10);
    if (r->save_every < 0) r->save_every = r->eval_every > 0 ? r->eval_every : LA_MAX(1, h->steps / 10);
    if (r->stop_after > 0 && r->stop_after <= *start)
        cli_die("train: --stop-after %lld is not after the checkpoint's step %lld",
                (long long)r->stop_after, (long long)*start);
    return m;
}

int cmd_train(int argc, char ** argv) {
    lm_setup S;
    if (!lm_setup_parse(&S, argc, argv, 1)) {
        usage_train();
        return 0;
    }
    int64_t start;
    la_model * m = lm_setup_model(&S, &start);
    const lm_task * t = &S.t;
    if (!S.r.quiet)
        fprintf(stderr, "model: %.2f M parameters, %lld layers; task %s, T=%lld, batch %lld x %lld\n",
                (double)la_model_num_params(m) / 1e6, (long long)la_model_layers(m), task_name(t),
                (long long)t->seq_len, (long long)S.h.batch, (long long)S.h.grad_accum);
    double vl, va;
    lm_train(m, &S.t, &S.h, &S.r, start, &vl, &va);
    if (t->kind == TASK_TEXT) printf("final: val loss %.4f, perplexity %.3f\n", vl, exp(vl));
    else if (t->kind == TASK_ICR)
        printf("final: val mse/d %.4f (least squares %.4f)\n", vl / (double)t->icr.dim,
               lm_icr_baseline(t, S.h.batch) / (double)t->icr.dim);
    else printf("final: val loss %.4f, accuracy %.4f\n", vl, va);
    la_text_close(S.t.text);
    la_model_free(m);
    return 0;
}
