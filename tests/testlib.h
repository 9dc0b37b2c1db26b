// Test harness: one comparison function, random inputs, a pass/fail tally and the summary line.
#ifndef LA_TESTLIB_H
#define LA_TESTLIB_H

#include "linattn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Deterministic generator (splitmix64 seeding an xorshift); one per test.
typedef struct la_rng { uint64_t s; } la_rng;
void   la_rng_seed(la_rng * r, uint64_t seed);
double la_rng_uniform(la_rng * r);                 // [0, 1)
double la_rng_normal(la_rng * r);                  // N(0, 1)
void   la_fill_normal(la_rng * r, float * x, int64_t n, double std);
void   la_fill_uniform(la_rng * r, float * x, int64_t n, double lo, double hi);
void   la_fill_logsigmoid(la_rng * r, float * x, int64_t n);  // log(sigmoid(N(0,1))) gates
void   la_l2norm_rows(float * x, int64_t rows, int64_t d);
// Fresh la_test_alloc buffers of n floats, filled as la_fill_normal / la_fill_uniform.
float * la_new_normal(la_rng * r, int64_t n, double std);
float * la_new_uniform(la_rng * r, int64_t n, double lo, double hi);

// Passes when |got - ref| <= atol + rtol * |ref| everywhere and nothing is NaN/Inf.
// Prints the first 5 mismatches, the max abs difference and its index, and the NMSE.
// Records the result in the tally; returns true on pass.
bool la_check_close(const char * name, const float * got, const float * ref, int64_t n,
                    double atol, double rtol);
bool la_check_close_d(const char * name, const float * got, const double * ref, int64_t n,
                      double atol, double rtol);
// The float forms against a float64 reference, relative to the tensor's scale: passes when
// |got - ref| <= tol * (max|ref| + |ref|) everywhere and nothing is NaN/Inf (la_check_close_d
// with atol = tol * (max|ref| + 1e-30), rtol = tol).
bool la_check_rel(const char * name, const float * got, const double * ref, int64_t n,
                  double tol);
// la_check_rel of a float64 result (e.g. an analytic gradient against finite differences),
// rounded to float32 first; for use where float32 rounding is far below tol.
bool la_check_rel_as_f32(const char * name, const double * got, const double * ref, int64_t n,
                         double tol);
// Records a plain condition.
bool la_check(bool ok, const char * fmt, ...);

// Prints "N passed, N failed" (after la_note_worst's table under LA_TEST_VERBOSE) and returns
// the process exit status (0 iff nothing failed).
int la_test_summary(void);

double la_maxabs_d(const double * x, int64_t n);  // max |x[i]| (0 for n == 0; NaN skipped)

void * la_test_alloc(size_t bytes);  // zeroed, aborts the test on failure
double * la_to_f64(const float * x, int64_t n);  // fresh copy (NULL for NULL)
float  * la_to_f32(const double * x, int64_t n); // fresh copy

// --- Shared fixtures of the op tests -----------------------------------------------------------

// Gate patterns for (rows, H, D) tensors of n = rows * H * D log decays, token t = row % T:
// mix1000: per channel c, c % 3 == 0: -16 always; 1: U[-1e-6, 0]; 2: -16 on tokens [10, 80),
//          logsigmoid(N(0,1)) elsewhere (in-chunk cumulative log decays near -1000 next to ~0);
// tail:    -16 on the first 40 tokens of every 64, then U[-0.05, 0].
void la_fill_gate_mix1000(la_rng * r, float * x, int64_t n, int64_t D, int64_t H, int64_t T);
void la_fill_gate_tail(la_rng * r, float * x, int64_t n, int64_t D, int64_t H, int64_t T);

// Varlen batches: cu[0] = 0, cu[i + 1] = cu[i] + lens[i] for i < nseq; returns cu[nseq] (the
// packed T). la_seq_range gives sequence n's token rows [t0, t1): from cu, or [n*T, (n+1)*T)
// when cu is NULL (fixed length).
int64_t la_cu_from_lens(int64_t * cu, const int64_t * lens, int nseq);
void    la_seq_range(const int64_t * cu, int64_t T, int64_t n, int64_t * t0, int64_t * t1);

// la_opts_default() with form, chunk size and scale (0 = the op's default), and varlen
// cu_seqlens / n_seqs when cu is non-NULL.
la_opts la_test_opts(la_form form, int32_t C, float scale, const int64_t * cu, int64_t n_seqs);

// --- float64 comparisons and finite differences -------------------------------------------------

// float64 against float64, without rounding to float32: passes when
// |got - ref| <= tol * (max|ref| + |ref|) everywhere (NaN fails); prints the first 5 mismatches.
bool la_check_rel_dd(const char * name, const double * got, const double * ref, int64_t n,
                     double tol);
// An analytic gradient against finite differences: passes when |an - fd| <= tol * (1 + |fd|)
// everywhere (NaN fails).
bool la_check_fd(const char * name, const double * an, const double * fd, int64_t n, double tol);

// Central finite differences of a float64 loss: for every input p < np with x[p] != NULL and
// every i < n[p], grad[p][i] = (L(x[p][i] + h) - L(x[p][i] - h)) / (2h), x restored afterwards.
// The loss reads the inputs through ctx (the x[p] arrays are perturbed in place).
typedef double (*la_loss_fn)(void * ctx);
// L + sum_i y[i] * dy[i], accumulated in index order onto L (the loss sum(out * dout) of an
// FD check, term by term); L itself when dy is NULL.
double la_loss_dot(double L, const double * y, const double * dy, int64_t n);
void la_fd_grads(int np, double * const * x, const int64_t * n, double * const * grad, double h,
                 la_loss_fn loss, void * ctx);

// --- Quiet checks -------------------------------------------------------------------------------
// For tests with thousands of checks: la_expect records a condition in la_check's tally but
// prints a line only on failure (la_test_summary's line counts both kinds).
bool la_expect(bool ok, const char * fmt, ...) __attribute__((format(printf, 2, 3)));
// got == want; on failure a line naming both statuses.
bool la_expect_status(la_status got, la_status want, const char * what);
// The worst |diff| / allowed seen per tolerance class (up to 8 classes; the la_expect_rel family
// notes every comparison). la_test_summary prints them first when LA_TEST_VERBOSE is set.
void la_note_worst(const char * name, double tol, double ratio);
// Quiet comparisons against a float64 reference: pass when |got - ref| <= tol * (m + |ref|)
// everywhere with m = max(max|ref|, scale), i.e. relative to the tensor's largest entry
// (la_check_rel's rule), or to `scale` where that is larger (a sum of terms of both signs is
// judged on the largest sum of |terms|, its condition); NaN/Inf fail. On failure: the first 3
// mismatches on stderr and one line.
bool la_expect_rel(const char * name, const float * got, const double * ref, int64_t n,
                   double tol);
bool la_expect_rel_s(const char * name, const float * got, const double * ref, int64_t n,
                     double tol, double scale);
bool la_expect_rel_d(const char * name, const double * got, const double * ref, int64_t n,
                     double tol);
// Two float32 results against each other (an identity), ref taken as exact.
bool la_expect_rel_ff(const char * name, const float * got, const float * ref, int64_t n,
                      double tol);
bool la_all_finite(const float * x, int64_t n);
// n floats bitwise equal; two NULLs are equal, one NULL is not.
bool la_same_bits(const float * a, const float * b, int64_t n);

// --- Test data by spec string ------------------------------------------------------------------

// Whether spec (space-separated tokens; NULL = none) holds the token t.
bool   la_spec_has(const char * spec, const char * t);
double la_sigmoid_d(double x);
// Fresh la_test_alloc buffers: logsigmoid(N(0,1)) gates; N(0,1) rows of d scaled to norm ~1
// (la_l2norm_rows).
float * la_new_logsigmoid(la_rng * r, int64_t n);
float * la_new_l2rows(la_rng * r, int64_t rows, int64_t d);
// Log decays of a (rows, H, D) tensor by the spec's gate token: g:logsig (logsigmoid(N(0,1))),
// g:uni (U[-20, -1e-6]), g:zero, g:small (U[-1e-6, 0]), g:mix, g:tail (la_fill_gate_mix1000,
// la_fill_gate_tail); false, with x and r untouched, when spec names none of them.
bool la_fill_gate_spec(la_rng * r, float * x, int64_t n, const char * spec, int64_t D,
                       int64_t H, int64_t T);

// A test case: a shape (B, T, H heads, K, V; nseq > 0: varlen with these lengths, B = 1), the
// test's op (its own enum) and spec tokens, the scale (0: the op's default), and HV, the value
// heads where the op has grouped value heads (0: H; last, so that the other ops' tables leave it
// out).
typedef struct la_case {
    const char * name;
    int          op;
    int64_t      B, T, H, K, V;
    int          nseq;
    int64_t      lens[8];
    const char * spec;
    float        scale;
    int64_t      HV;
} la_case;
// The sequences of case c: returns their number, with *T the tokens of the batch (c->T, or with
// nseq > 0 the lengths' sum, cu filled).
int64_t la_case_seqs(const la_case * c, int64_t * cu, int64_t * T);

// --- Forms ------------------------------------------------------------------------------------

typedef struct la_form_c { la_form form; int32_t C; } la_form_c;
// Every form: ref, recurrent, chunk with C = 64, 32, 16 and 24 (T not a multiple of C).
#define LA_N_FORMS 6
extern const la_form_c LA_FORMS[LA_N_FORMS];
// "PRE/ref", "PRE/recurrent", "PRE/chunk64".
void    la_form_name(char * buf, size_t n, const char * pre, la_form_c fc);
la_opts la_opts_form(la_opts o, la_form_c fc);  // o with fc's form and chunk size

// --- Sets of tensors (cnt of them, n[i] entries each; NULL where n[i] = 0) ----------------------

void la_alloc_f(float ** p, const int64_t * n, int cnt);   // zeroed
void la_alloc_d(double ** p, const int64_t * n, int cnt);
void la_free_f(float ** p, int cnt);                         // and sets them NULL
void la_free_d(double ** p, int cnt);
void la_to_f64_all(double ** y, float * const * x, const int64_t * n, int cnt);  // la_to_f64
bool la_same_bits_all(float * const * a, float * const * b, const int64_t * n, int cnt);

// --- The op harness: the checks every state-passing op's test runs alike ------------------------
//
// An op under test, seen through callbacks on the test's own data (ctx):
//   inputs   in[0, nin): the ntok per-token ones first (in_w[i] floats per token row, B * T
//            rows), the floating inputs of the gradients in[0, npar) (initial_state among them,
//            last), then do and dfinal_state; in_n[i] entries, NULL where absent;
//   results  res[0] o (o_w floats per token row), res[1] final_state, res[2 + i] the gradient of
//            in[i] (i < npar, dinitial_state last); res_n[i] entries, 0 where absent (the
//            gradient of an absent input);
//   oracle   the test's float64 reference: from the inputs x (in, in float64) the results res
//            (forward only unless bwd), and scale[i], the scale floor of result i for the
//            comparisons (la_expect_rel_s; 0 when none).
// A call on other data (chaining, decode, argument rules) hands the callbacks a copy of the
// la_optest with sh or inputs changed: they run the op on the copy's shape and inputs. All checks
// are quiet (la_expect).
#define LA_OP_MAXT 12

typedef struct la_optest la_optest;
struct la_optest {
    const void *  ctx;
    const char *  name;                  // the op, for messages
    la_opts       opts;                  // every call's options; each check sets form and C
    la_shape      sh;
    int64_t       N;                     // sequences
    int           nin, ntok, npar;
    float *       in[LA_OP_MAXT];        // read only
    int64_t       in_n[LA_OP_MAXT], in_w[LA_OP_MAXT];
    int64_t       o_w;
    int           nres;                  // 2 + npar
    const char * const * res_name;
    int64_t       res_n[LA_OP_MAXT];
    la_status (*fwd)(const la_optest * t, float * o, float * fs, const float * s0,
                     const la_opts * op);
    la_status (*bwd)(const la_optest * t, float * const * res, const la_opts * op);
    size_t    (*ws)(const la_optest * t, bool backward, const la_opts * op);
    void      (*oracle)(const la_optest * t, double * const * x, double * const * res,
                        double * scale, bool bwd);
};

// nres and res_n from npar, the inputs present, and the sizes of o and final_state.
void la_op_sizes(la_optest * t, int64_t n_o, int64_t n_fs);

// Forward and backward on `threads` threads into res; true when both return LA_STATUS_OK.
bool la_op_run(const la_optest * t, float * const * res, const la_opts * op, int threads,
               const char * nm);
// Two float32 result sets on the same inputs, every tensor present in both (la_expect_rel_ff):
// o and final_state within tol_fwd, the gradients within tol_bwd.
void la_op_compare_ff(const la_optest * t, float * const * a, float * const * b, const char * nm,
                      double tol_fwd, double tol_bwd);
// Forward and backward with op both return want.
void la_op_want_both(const la_optest * t, const la_opts * op, la_status want, const char * what);
// The argument rules every op shares (B = 2, T = 10): the call with op succeeds; in each of the
// forms ref, recurrent and chunk, NULL o, NULL q (in[0]), NULL dq (res[2]) or NULL do are
// LA_STATUS_INVALID_ARG; then, forward and backward, K = 0 is LA_STATUS_SHAPE, chunk_size 300
// LA_STATUS_INVALID_ARG and cu_seqlens with B = 2 LA_STATUS_CU_SEQLENS.
void la_op_api(const la_optest * t, const la_opts * op);

// The tolerances of the float32 forms against the float64 oracle (relative to each tensor's scale,
// la_expect_rel_s): fwd for o and final_state, bwd for the gradients, id_fwd and id_bwd for two
// float32 computations of the same thing, longseq for the 10^5-token sequences; fd for the
// oracle's gradients against central finite differences of step fd_step.
typedef struct la_tols { double fwd, bwd, id_fwd, id_bwd, longseq, fd, fd_step; } la_tols;

// The shared cases, built by the test through a maker: make_data builds case c in data from the
// generator r, optest gives its la_optest, free_data frees it again.
typedef struct la_opmaker {
    void *    data;
    void      (*make_data)(const la_case * c, void * data, la_rng * r);
    la_optest (*optest)(const void * data);
    void      (*free_data)(void * data);
} la_opmaker;

// Every case of cases[0, n) (seeds seed, seed + 1, ...), named "OP/case/form":
//   without fd: every form of LA_FORMS, forward and backward, on 1 thread against the oracle, on
//     2 threads bitwise equal to 1 thread;
//   with fd: central finite differences of the oracle's loss sum(o do) + sum(final_state
//     dfinal_state) with respect to every present floating input; the oracle's gradients against
//     them; then ref, recurrent and chunk with C = 64, 16, 5, 2: o and final_state against the
//     oracle, the gradients against the finite differences.
void la_op_cases(const la_opmaker * m, const la_case * cases, size_t n, uint64_t seed, bool fd,
                 const la_tols * tol);
// The state-passing contract of op under spec (seeds seed, seed + 10, ...; H = 2, HV = 4, K = 8,
// V = 6 unless said):
//   * the chaining law, B = 1, forms ref, recurrent, chunk with C = 64, 16, 24: tokens [0, t)
//     then [t, T) from the first call's final state equal one call (id_fwd) and the oracle's o
//     and final_state (fwd), for (T, t) = (100, 37), (128, 64), (10, 1);
//   * decode, B = 2, T = 20, forms ref, recurrent, chunk 64: T = 1 calls token by token, the state
//     updated in place (final_state == initial_state), against the full pass (id_fwd);
//   * final_state == initial_state in place (varlen, lengths 5, 0, 70, 1, 0, K = 6, V = 7),
//     every form: the same o and final state, bitwise, as separate buffers; the state rows of the
//     zero-length sequences pass through unchanged;
//   * workspaces (B = 2, T = 45, V = 5), every form on 2 threads: caller-owned workspaces of the
//     reported sizes at any alignment give the results of NULL, bitwise, one byte short is
//     rejected; final_state and dinitial_state are optional outputs.
// spec must give an initial_state.
void la_op_contract(const la_opmaker * m, int op, const char * spec, uint64_t seed,
                    const la_tols * tol);
// A 10^5-token sequence (B = 1, H = 1, K = V = 16), chunk form C = 64 on 2 threads, forward and
// backward: every result finite and within longseq of the oracle.
void la_op_long(const la_opmaker * m, int op, const char * spec, uint64_t seed,
                const la_tols * tol);

// --- The float64 oracles' token loop -------------------------------------------------------------
//
// For every sequence and state head: the forward recurrence (step) from initial_state (zeros when
// NULL) with a state checkpoint every LA_ORACLE_SEG tokens, then with bwd the reverse-time
// adjoint, newest token first, replaying one segment at a time from its checkpoint (so the
// 10^5-token sequences fit). step and adjoint, the op's own recurrence, stay in its test.
#define LA_ORACLE_SEG 64

typedef struct la_oracle_scan {
    int64_t         N, T;        // sequences: [cu[n], cu[n + 1]), or [n T, (n + 1) T) if cu NULL
    const int64_t * cu;
    int64_t         nh, K, V;    // state heads; a (K, V) state each; o has V per (token, head)
    const double *  s0, * dfs;   // (N, nh, K, V), NULL: zeros
    double *        o, * fs, * ds0;  // ds0 may be NULL
    void *          ctx;
    // One token: Sn from Sp, and o_t (V) when o != NULL.
    void (*step)(void * ctx, int64_t row, int64_t h, const double * Sp, double * Sn, double * o);
    // Its adjoint: G holds dL/dS_t on entry and dL/dS_{t-1} on return.
    void (*adjoint)(void * ctx, int64_t row, int64_t h, const double * Sp, const double * Sn,
                    double * G);
} la_oracle_scan;
void la_oracle_run(const la_oracle_scan * s, bool bwd);

// --- The program's op runner ("$LA_BIN op ...") ------------------------------------------------

typedef struct la_tin {            // one tensor of an input file
    const char * name;
    la_dtype     dtype;
    int32_t      ndim;
    int64_t      shape[5];
    const void * data;
} la_tin;

void   la_write_st(const char * path, const la_tin * t, int n);  // exits on failure
void   la_write_bytes(const char * path, const void * p, size_t n);
char * la_read_file(const char * path, size_t * n);  // NULL (n = 0) when it does not open
// $LA_BIN and a fresh folder /tmp/la_TAG_XXXXXX; false, with a message, without them.
bool         la_runner_init(const char * tag);
const char * la_tmp_dir(void);
char *       la_tmp(const char * name);  // DIR/name, in one of 8 rotating buffers
void         la_runner_cleanup(void);            // removes the folder
// Runs "$LA_BIN op ARGS" (stdout and stderr to files in the folder); returns the exit status
// (-1 if it did not exit), the number of stderr lines and the first one.
int la_run_op(const char * args, int * nlines, char * first, size_t nfirst);
// A bad call, "$LA_BIN op ARGS --out DIR/keep.safetensors" with ARGS formatted from fmt, over an
// existing file: must exit with status 2, print exactly one stderr line starting
// "linattn: error:" and leave the file byte-identical (la_expect; LA_TEST_VERBOSE=1 prints each
// case's message).
void la_bad_call(const char * what, const char * fmt, ...)
    __attribute__((format(printf, 2, 3)));
// A good run: "$LA_BIN op OP --in DIR/in.safetensors --out DIR/out.safetensors --threads 1
// FLAGS" on the tensors `in`; OUT must hold exactly the tensors of `w`, each bitwise equal to
// the library's result (la_expect).
typedef struct la_want_out {
    const char *  name;
    const float * ref;
    int64_t       n;
} la_want_out;
void la_good_run(const char * tag, const char * op, const char * flags, const la_tin * in,
                 int nin, const la_want_out * w, int nw);

// --- Models (tests/testlib.c) -------------------------------------------------------------------
// A model from config.json text, initialised with seed (exits on a rejected config).
struct la_model * la_test_model(const char * json, uint64_t seed);
// Every parameter tensor's gradient against central differences of the loss along a random
// unit direction (rng seed), for a (2, 19) batch with ignored labels: tolerance 3e-2 |an| +
// 2e-4, eps 2e-3. halvings > 1 retries each direction with eps halved each time and passes
// when one agrees, the tolerance then adding the loss's float32 rounding over the step
// (2e-7 |loss| / eps): for functions with kinks (relu), where a step across a kink is off.
// want_nonzero: every tensor's gradient must also be non-zero.
void la_model_grad_check_m(struct la_model * m, const char * tag, int ci, uint64_t seed,
                           int halvings, bool want_nonzero);
// The same on la_test_model(json, 11 + ci), seed 100 + ci, one step.
void la_model_grad_check(const char * json, int ci);
// A scalar loss of m on data the test holds in ctx: *loss, and with backward its gradient
// added to m's gradients (e.g. through la_model_regress).
typedef la_status (*la_model_loss_cb)(struct la_model * m, void * ctx, bool backward,
                                      double * loss);
// la_model_grad_check_m's check (directions, eps, tolerances, halvings, want_nonzero) for any
// such loss: every parameter tensor's gradient along a random unit direction (rng seed) against
// central differences.
void la_model_grad_check_cb(struct la_model * m, la_model_loss_cb loss, void * ctx,
                            const char * tag, int ci, uint64_t seed, int halvings,
                            bool want_nonzero);
// Prefill in chunks of lens[0..nlens) tokens (then single decode steps) from a cache of
// capacity cap, for 2 random sequences of T tokens, against one full forward (2e-4 relative to
// the logits' scale).
void la_model_decode_check_m(struct la_model * m, const char * tag, int ci, uint64_t seed,
                             int64_t T, const int64_t * lens, int nlens, int64_t cap);
// la_test_model(json, 21 + ci), T = 30: chunks of 11 and 9, then decode steps.
void la_model_decode_check(const char * json, int ci);
// Save into dir and load: identical layout, parameters (bitwise), config.json and logits.
void la_model_round_trip_check(struct la_model * m, const char * dir, const char * tag, int ci);
bool la_same_file(const char * a, const char * b);
// Runs `BIN ARGS` (ARGS from fmt) through the shell; stdout and stderr go to files in the test
// directory. Returns the exit status; *out gets stdout (malloc'd) when out is non-NULL,
// first_err the first line of stderr, *err_lines its line count.
int la_run_cli(char ** out, char * first_err, size_t nerr, int * err_lines, const char * bin,
               const char * fmt, ...) __attribute__((format(printf, 6, 7)));

#endif
