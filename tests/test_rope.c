// RoPE (rotate-half, OPS.md 5.5): forward against a float64 oracle written here, at positions up
// to 10^6 (offsets) and with cu_seqlens restarting positions per sequence; backward against
// central finite differences of the oracle (it is the transpose of the rotation) and as the
// inverse of the forward; in place; determinism across thread counts; bad arguments.
//
// Tolerances: |got - ref| <= TOL * (max|ref| + |ref|) elementwise with TOL = 1e-6 (the result is
// the float32 rounding of a float64 rotation); finite differences of the (linear) oracle with
// step 1e-3, TOL_FD = 1e-6; backward(forward(x)) = x to TOL.
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL    1e-6
#define TOL_FD 1e-6

// y (B, T, H, D) = the rotation of x by pos * theta^(-2i/D), pos from cu (or the rows) and
// offsets, all in float64. sign -1 rotates backwards.
static void oracle(double * y, const double * x, double theta, const int64_t * offsets,
                   const int64_t * cu, int64_t nseq, int64_t B, int64_t T, int64_t H, int64_t D,
                   double sign) {
    const int64_t N = cu ? nseq : B, half = D / 2;
    for (int64_t n = 0; n < N; n++) {
        int64_t t0, t1;
        la_seq_range(cu, T, n, &t0, &t1);
        for (int64_t r = t0; r < t1; r++) {
            const double pos = (double)(r - t0) + (offsets ? (double)offsets[n] : 0.0);
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < half; i++) {
                    const double ang = pos * pow(theta, -2.0 * (double)i / (double)D);
                    const double c = cos(ang), s = sign * sin(ang);
                    const double * xr = x + (r * H + h) * D;
                    double * yr = y + (r * H + h) * D;
                    yr[i] = xr[i] * c - xr[i + half] * s;
                    yr[i + half] = xr[i + half] * c + xr[i] * s;
                }
        }
    }
}

typedef struct rcase {
    const char * name;
    int64_t      B, T, H, D;
    int          nseq;         // > 0: varlen with these lengths
    int64_t      lens[6];
    bool         offsets;
    int64_t      off[6];
    float        theta;
} rcase;

static const rcase k_cases[] = {
    { "plain",       2, 37, 3, 16,  0, { 0 },                false, { 0 },                        10000.0f },
    { "offsets_1e6", 3, 20, 2, 128, 0, { 0 },                true,  { 0, 999980, 123457 },        10000.0f },
    { "theta_1e6",   1, 50, 1, 64,  0, { 0 },                true,  { 1000000 },                  1.0e6f },
    { "varlen",      1, 0,  2, 8,   5, { 0, 1, 9, 0, 30 },   false, { 0 },                        10000.0f },
    { "varlen_off",  1, 0,  3, 10,  4, { 6, 0, 1, 25 },      true,  { 5, 7, 999999, 400000 },     500000.0f },
    { "D2",          1, 9,  4, 2,   0, { 0 },                false, { 0 },                        10.0f },
    { "D200",        1, 3,  1, 200, 0, { 0 },                true,  { 77 },                       10000.0f },
};

typedef struct rdata {
    int64_t   B, T, n, N;
    int64_t   cu[7];
    bool      varlen;
    float *   x, * dy;
    la_opts   o;
} rdata;

static void make(const rcase * c, rdata * d, la_rng * r) {
    memset(d, 0, sizeof(*d));
    d->B = c->B;
    d->T = c->T;
    d->N = c->B;
    if (c->nseq > 0) {
        d->T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->N = c->nseq;
        d->varlen = true;
    }
    d->n = d->B * d->T * c->H * c->D;
    d->x = la_new_normal(r, d->n + 1, 1.0);
    d->dy = la_new_normal(r, d->n + 1, 1.0);
    d->o = la_test_opts(LA_FORM_CHUNK, 0, 0.0f, d->varlen ? d->cu : NULL, d->N);
}

static void free_rdata(rdata * d) {
    free(d->x);
    free(d->dy);
}

// The oracle's loss L = sum(y * dy) for the finite differences.
typedef struct fd_ctx {
    const rcase * c;
    const rdata * d;
    double *      x, * y, * dy;
} fd_ctx;

static double fd_loss(void * p) {
    fd_ctx * f = p;
    oracle(f->y, f->x, (double)f->c->theta, f->c->offsets ? f->c->off : NULL,
           f->d->varlen ? f->d->cu : NULL, f->d->N, f->d->B, f->d->T, f->c->H, f->c->D, 1.0);
    return la_loss_dot(0.0, f->y, f->dy, f->d->n);
}

static void check_case(const rcase * c, la_rng * r) {
    rdata d;
    make(c, &d, r);
    char nm[128];
    const int64_t * off = c->offsets ? c->off : NULL;
    const int64_t * cu = d.varlen ? d.cu : NULL;
    double * xd = la_to_f64(d.x, d.n), * dyd = la_to_f64(d.dy, d.n);
    double * yref = la_test_alloc((size_t)d.n * 8 + 8), * dxref = la_test_alloc((size_t)d.n * 8 + 8);
    oracle(yref, xd, (double)c->theta, off, cu, d.N, d.B, d.T, c->H, c->D, 1.0);
    oracle(dxref, dyd, (double)c->theta, off, cu, d.N, d.B, d.T, c->H, c->D, -1.0);

    float * y = la_test_alloc((size_t)d.n * 4 + 4), * dx = la_test_alloc((size_t)d.n * 4 + 4);
    la_set_num_threads(2);
    la_status st = la_rope_forward(y, d.x, c->theta, off, d.B, d.T, c->H, c->D, &d.o);
    la_check(st == LA_STATUS_OK, "%s forward status %s", c->name, la_status_str(st));
    snprintf(nm, sizeof nm, "%s forward vs oracle", c->name);
    la_check_rel(nm, y, yref, d.n, TOL);
    st = la_rope_backward(dx, d.dy, c->theta, off, d.B, d.T, c->H, c->D, &d.o);
    la_check(st == LA_STATUS_OK, "%s backward status %s", c->name, la_status_str(st));
    snprintf(nm, sizeof nm, "%s backward vs oracle inverse rotation", c->name);
    la_check_rel(nm, dx, dxref, d.n, TOL);

    // Backward = transpose: against finite differences of the oracle's sum(y * dy) (small cases).
    if (d.n <= 4096) {
        double * fd = la_test_alloc((size_t)d.n * 8 + 8), * yy = la_test_alloc((size_t)d.n * 8 + 8);
        fd_ctx f = { c, &d, xd, yy, dyd };
        double * xs[1] = { xd }, * gs[1] = { fd };
        const int64_t ns[1] = { d.n };
        la_fd_grads(1, xs, ns, gs, 1e-3, fd_loss, &f);
        double * dxd = la_to_f64(dx, d.n);
        snprintf(nm, sizeof nm, "%s backward vs finite differences", c->name);
        la_check_fd(nm, dxd, fd, d.n, TOL_FD);
        free(fd); free(yy); free(dxd);
    }

    // backward(forward(x)) = x.
    float * back = la_test_alloc((size_t)d.n * 4 + 4);
    la_rope_backward(back, y, c->theta, off, d.B, d.T, c->H, c->D, &d.o);
    snprintf(nm, sizeof nm, "%s backward(forward(x)) = x", c->name);
    la_check_rel(nm, back, xd, d.n, TOL);

    // In place, and one thread: the same bits.
    float * ip = la_test_alloc((size_t)d.n * 4 + 4);
    memcpy(ip, d.x, (size_t)d.n * 4);
    la_set_num_threads(1);
    st = la_rope_forward(ip, ip, c->theta, off, d.B, d.T, c->H, c->D, &d.o);
    la_check(st == LA_STATUS_OK && memcmp(ip, y, (size_t)d.n * 4) == 0,
             "%s forward in place, 1 thread: same bits as out of place, 2 threads", c->name);
    memcpy(ip, d.dy, (size_t)d.n * 4);
    st = la_rope_backward(ip, ip, c->theta, off, d.B, d.T, c->H, c->D, &d.o);
    la_check(st == LA_STATUS_OK && memcmp(ip, dx, (size_t)d.n * 4) == 0,
             "%s backward in place, 1 thread: same bits", c->name);
    la_set_num_threads(0);

    // Varlen: each sequence equals its own B = 1 call with its offset.
    if (d.varlen) {
        bool same = true;
        for (int64_t n = 0; n < d.N; n++) {
            const int64_t L = d.cu[n + 1] - d.cu[n], row = c->H * c->D;
            if (L == 0) continue;
            float * ys = la_test_alloc((size_t)(L * row) * 4);
            la_opts o1 = la_opts_default();
            const int64_t o_n = off ? off[n] : 0;
            st = la_rope_forward(ys, d.x + d.cu[n] * row, c->theta, &o_n, 1, L, c->H, c->D, &o1);
            same = same && st == LA_STATUS_OK &&
                   memcmp(ys, y + d.cu[n] * row, (size_t)(L * row) * 4) == 0;
            free(ys);
        }
        la_check(same, "%s varlen == per-sequence calls", c->name);
    }
    free(xd); free(dyd); free(yref); free(dxref); free(y); free(dx); free(back); free(ip);
    free_rdata(&d);
}

static void bad_args(void) {
    float x[64] = { 0 }, y[64];
    la_opts o = la_opts_default();
#define ST(expr, want, what) \
    do { la_status s_ = (expr); la_check(s_ == (want), "bad args: %s -> %s", what, la_status_str(s_)); } while (0)
    ST(la_rope_forward(y, x, 10000.0f, NULL, 1, 4, 2, 8, &o), LA_STATUS_OK, "valid");
    ST(la_rope_forward(NULL, x, 10000.0f, NULL, 1, 4, 2, 8, &o), LA_STATUS_INVALID_ARG, "NULL y");
    ST(la_rope_forward(y, NULL, 10000.0f, NULL, 1, 4, 2, 8, &o), LA_STATUS_INVALID_ARG, "NULL x");
    ST(la_rope_backward(y, x, 10000.0f, NULL, 1, 4, 2, 8, NULL), LA_STATUS_INVALID_ARG, "NULL opts");
    ST(la_rope_forward(y, x, 10000.0f, NULL, 1, 4, 2, 7, &o), LA_STATUS_SHAPE, "odd D");
    ST(la_rope_forward(y, x, 10000.0f, NULL, 1, 4, 2, 0, &o), LA_STATUS_SHAPE, "D = 0");
    ST(la_rope_forward(y, x, 10000.0f, NULL, 0, 4, 2, 8, &o), LA_STATUS_SHAPE, "B = 0");
    ST(la_rope_forward(y, x, 10000.0f, NULL, 1, -1, 2, 8, &o), LA_STATUS_SHAPE, "T < 0");
    ST(la_rope_forward(y, x, 10000.0f, NULL, 1, 0, 2, 8, &o), LA_STATUS_OK, "T = 0");
    ST(la_rope_forward(y, x, 0.0f, NULL, 1, 4, 2, 8, &o), LA_STATUS_INVALID_ARG, "theta = 0");
    ST(la_rope_forward(y, x, -2.0f, NULL, 1, 4, 2, 8, &o), LA_STATUS_INVALID_ARG, "theta < 0");
    ST(la_rope_forward(y, x, NAN, NULL, 1, 4, 2, 8, &o), LA_STATUS_INVALID_ARG, "theta NaN");
    ST(la_rope_forward(y, x, INFINITY, NULL, 1, 4, 2, 8, &o), LA_STATUS_INVALID_ARG, "theta inf");
    const int64_t cu_bad[3] = { 0, 3, 2 }, cu_ok[3] = { 0, 1, 4 };
    la_opts ov = la_test_opts(LA_FORM_CHUNK, 0, 0.0f, cu_bad, 2);
    ST(la_rope_forward(y, x, 10000.0f, NULL, 1, 4, 2, 8, &ov), LA_STATUS_CU_SEQLENS, "bad cu_seqlens");
    ov = la_test_opts(LA_FORM_CHUNK, 0, 0.0f, cu_ok, 2);
    ST(la_rope_forward(y, x, 10000.0f, NULL, 2, 2, 2, 8, &ov), LA_STATUS_CU_SEQLENS, "varlen, B = 2");
    ST(la_rope_forward(y, x, 10000.0f, NULL, 1, 4, 2, 8, &ov), LA_STATUS_OK, "varlen");
#undef ST
}

int main(void) {
    la_rng r;
    la_rng_seed(&r, 2024);
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) check_case(&k_cases[i], &r);
    bad_args();
    return la_test_summary();
}
