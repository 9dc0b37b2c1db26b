// Shared pieces of linattn train / eval / generate / info / demo.
#ifndef LA_LM_H
#define LA_LM_H

#include "linattn.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#ifndef LA_MIN
#define LA_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LA_MAX(a, b) ((a) > (b) ? (a) : (b))
#endif
#define LM_NAN ((double)NAN)

// The tasks of ALGORITHMS.md 9: token tasks (MQAR, selective copying, passkey, text) and the
// real-valued in-context regression. seq_len is the model's T for all of them; task_open
// derives each generator's length from it.
typedef enum { TASK_MQAR = 0, TASK_TEXT, TASK_SELCOPY, TASK_PASSKEY, TASK_ICR } task_kind;

typedef struct lm_task {
    task_kind      kind;
    la_mqar_cfg    mqar;
    la_selcopy_cfg selcopy;  // noise_len = seq_len - 2 num_tokens
    la_passkey_cfg passkey;
    la_icr_cfg     icr;      // points = seq_len / 2
    char           data[4096];     // text file
    double         val_frac;
    la_text *      text;
    int64_t        seq_len;        // T
    int64_t        eval_examples;  // evaluation set size (examples; text windows, 0 = all)
    int64_t        data_tokens;    // text: tokens the checkpoint was trained on (0: unknown)
    uint64_t       seed;
} lm_task;

typedef struct lm_hparams {
    int64_t  steps, batch, grad_accum, warmup;
    double   lr, min_lr, clip;
    la_adamw opt;
    double   last_val_loss, last_val_acc;  // read from a checkpoint
} lm_hparams;

// One batch of B rows: token ids and labels (B, T), or for in-context regression the inputs
// x (B, T, d), targets y and weights wt (B, T) and the predictions pred (B, T).
typedef struct lm_batch {
    int64_t   B, T;
    int64_t * ids, *lab;
    float *   x, *y, *wt, *pred;
} lm_batch;

void        task_defaults(lm_task * t);
void        task_open(lm_task * t);
const char * task_name(const lm_task * t);
int64_t     task_vocab(const lm_task * t);  // tokens the model must cover (0 for icr)
bool        task_flag(lm_task * t, const char * a, const char * v);
// The model must fit the task: vocabulary or input dimension (one-line error otherwise).
void        task_check_model(const lm_task * t, const la_model * m, const char * who);
lm_batch    batch_new(const lm_task * t, int64_t B);
void        batch_free(lm_batch * b);
// Training batch `index` or evaluation batch `index` of the validation set.
void        task_batch(const lm_task * t, lm_batch * b, int64_t index, bool val);
int64_t     batch_count(const lm_batch * b);  // positions that carry loss
// Loss of a batch (cross-entropy or MSE); with backward, adds weight * its gradient. correct
// (optional) counts the positions whose argmax is the label (token tasks).
la_status   batch_loss(la_model * m, const lm_task * t, lm_batch * b, bool backward,
                       float weight, double * loss, int64_t * count, int64_t * correct);
int64_t     task_eval_batches(const lm_task * t, int64_t B);
// Loss and accuracy over the evaluation set (acc: NaN for icr, whose loss is the MSE).
void        lm_evaluate(la_model * m, const lm_task * t, int64_t B, double * loss, double * acc);
// icr: the least-squares baseline's MSE on the same evaluation set.
double      lm_icr_baseline(const lm_task * t, int64_t B);
char *  lm_state_json(const lm_task * t, const lm_hparams * h, int64_t step, double val_loss,
                      double val_acc);
bool    lm_state_read(const char * dir, lm_task * t, lm_hparams * h, int64_t * step);
la_model * lm_load(const char * dir);

// Training run options beyond the hyperparameters.
typedef struct lm_run {
    const char * out;        // checkpoint directory (NULL: none)
    const char * log;        // CSV log (NULL: none)
    int64_t      eval_every, save_every;
    int64_t      stop_after;  // > 0: checkpoint and stop after this step (an interrupted run)
    bool         quiet;      // no progress bar
    const char * label;      // shown in the progress bar
    // called after every step (a sweep draws its own progress from it)
    void (*on_step)(void * ctx, int64_t step, int64_t total, double loss);
    void *       ctx;
} lm_run;
// Trains m (already initialised or loaded) from step `start`; returns the final evaluation.
void lm_train(la_model * m, lm_task * t, lm_hparams * h, const lm_run * r, int64_t start,
              double * val_loss, double * val_acc);
// config.json text for a model from the shorthand flags.
typedef struct lm_arch {
    const char * layers;     // "gdn,gdn,gdn,attn" or NULL
    const char * model;      // mixer of every layer when layers is NULL
    int64_t      num_layers, hidden, heads, head_dim, attn_heads, attn_kv_heads, window, vocab;
    int64_t      input_dim;  // > 0: a real-valued model (in-context regression)
    double       expand_v;
    bool         tie;
    int          short_conv;  // 0: the mixer's fla default; 1: use_short_conv on; -1: off
} lm_arch;
char * lm_arch_json(const lm_arch * a);

// Everything `linattn train` takes from its flags.
typedef struct lm_setup {
    lm_task      t;
    lm_hparams   h;
    lm_arch      a;
    lm_run       r;
    const char * config, *resume;
    int          n_hparam_flags, n_arch_flags;
    bool         steps_given;
} lm_setup;
// Defaults, then the train flags argv[first .. argc) (one-line error and exit on a bad one);
// false when --help was asked for.
bool       lm_setup_parse(lm_setup * s, int argc, char ** argv, int first);
// The model the flags describe (--config, or the architecture flags fitted to the opened
// task), not initialised; a one-line error and exit when the config is refused.
la_model * lm_setup_build(lm_setup * s);
// Opens the task and builds and initialises the model (or loads the run to resume, *start =
// its step); checks that the model fits the task.
la_model * lm_setup_model(lm_setup * s, int64_t * start);

int cmd_train(int argc, char ** argv);
int cmd_eval(int argc, char ** argv);
int cmd_generate(int argc, char ** argv);
int cmd_info(int argc, char ** argv);
int cmd_sweep(int argc, char ** argv);

#endif
