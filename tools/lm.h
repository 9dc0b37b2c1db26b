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

typedef enum { TASK_MQAR = 0, TASK_TEXT } task_kind;

typedef struct lm_task {
    task_kind   kind;
    la_mqar_cfg mqar;
    char        data[4096];     // text file
    double      val_frac;
    la_text *   text;
    int64_t     seq_len;        // T (MQAR: its N)
    int64_t     eval_examples;  // evaluation set size (MQAR examples; text windows, 0 = all)
    int64_t     data_tokens;    // text: tokens the checkpoint was trained on (0: unknown)
    uint64_t    seed;
} lm_task;

typedef struct lm_hparams {
    int64_t  steps, batch, grad_accum, warmup;
    double   lr, min_lr, clip;
    la_adamw opt;
    double   last_val_loss, last_val_acc;  // read from a checkpoint
} lm_hparams;

void    task_defaults(lm_task * t);
void    task_open(lm_task * t);
int64_t task_vocab(const lm_task * t);
void    task_batch(const lm_task * t, int64_t * ids, int64_t * lab, int64_t B, int64_t index,
                   bool val);
int64_t task_eval_batches(const lm_task * t, int64_t B);
bool    task_flag(lm_task * t, const char * a, const char * v);
void    lm_evaluate(la_model * m, const lm_task * t, int64_t B, double * loss, double * acc);
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
} lm_run;
// Trains m (already initialised or loaded) from step `start`; returns the final evaluation.
void lm_train(la_model * m, lm_task * t, lm_hparams * h, const lm_run * r, int64_t start,
              double * val_loss, double * val_acc);
// config.json text for a model from the shorthand flags.
typedef struct lm_arch {
    const char * layers;     // "gdn,gdn,gdn,attn" or NULL
    const char * model;      // mixer of every layer when layers is NULL
    int64_t      num_layers, hidden, heads, head_dim, attn_heads, attn_kv_heads, window, vocab;
    double       expand_v;
    bool         tie;
} lm_arch;
char * lm_arch_json(const lm_arch * a);

int cmd_train(int argc, char ** argv);
int cmd_eval(int argc, char ** argv);
int cmd_generate(int argc, char ** argv);
int cmd_info(int argc, char ** argv);

#endif
