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

// Prints "N passed, N failed" and returns the process exit status (0 iff nothing failed).
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

#endif
