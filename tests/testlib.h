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
double * la_to_f64(const float * x, int64_t n);  // fresh copy
float  * la_to_f32(const double * x, int64_t n); // fresh copy

#endif
