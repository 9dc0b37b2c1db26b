// Layer toolkit (OPS.md 4, linattn.h "Layer toolkit"): activations, Linear, Embedding,
// RMSNorm, gated RMSNorm, L2 norm, the SwiGLU MLP, the short convolution and cross-entropy.
//
// Each function has an independent float64 oracle written here, straight from the formulas
// (the convolution's oracle runs on the cache-extended sequence [cache, x] instead of the
// library's case analysis). Each oracle's backward is checked against central finite
// differences of its forward on small shapes (every input and parameter), and the library's
// float32 forward and backward against the oracle on odd shapes (rows 1, 7, 33; D 1, 5, 130;
// vocab 3, 1000). Also: parameter gradients overwritten (the buffers start as NaN) or added
// to (accumulate); NULL gradients skipped without changing the others; 1 vs 2 threads
// bitwise; the convolution's decode steps against the full pass, varlen batches with
// sequences of length 0, 1, 2 (< W - 1) and long ones, cache gradients; cross-entropy with
// ignored rows, all rows ignored and logits of +-1e4; bad arguments.
//
// Tolerances (float32 vs the float64 oracle): |got - ref| <= TOL * (max|ref| + |ref|)
// elementwise (la_check_rel), TOL_ELEM = 2e-6 for elementwise and row-wise functions (a few
// float roundings per value), TOL_SUM = 2e-5 for sums over rows or over a GEMM's inner
// dimension (up to 1000 terms). Cancellation-sensitive values (sigmoid and its derivative
// at |x| up to 80): relative error <= 1e-5 per element. Finite differences: float64, step
// 1e-6, |analytic - fd| <= 1e-6 (1 + |fd|). Cross-entropy loss: |got - ref| <= 1e-6 (1 + |ref|).
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_ELEM 2e-6
#define TOL_SUM  2e-5
#define TOL_REL  1e-5
#define TOL_FD   1e-6
#define FD_STEP  1e-6

static la_rng g_rng;
static char g_nm[256];
#define NM(...) (snprintf(g_nm, sizeof g_nm, __VA_ARGS__), g_nm)

// ---------------------------------------------------------------------------------------------
// Helpers

static float * nan_buf(int64_t n) {
    float * p = la_test_alloc((size_t)n * 4 + 4);
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static float * copy_f(const float * x, int64_t n) {
    if (!x) return NULL;
    float * p = la_test_alloc((size_t)n * 4 + 4);
    memcpy(p, x, (size_t)n * 4);
    return p;
}

static double * new_d(int64_t n) { return la_test_alloc((size_t)n * 8 + 8); }

// prefill + ref, the expected result of accumulate = true
static double * plus_d(const float * pre, const double * ref, int64_t n) {
    double * s = new_d(n);
    for (int64_t i = 0; i < n; i++) s[i] = (double)pre[i] + ref[i];
    return s;
}

static bool same(const float * a, const float * b, int64_t n) {
    return (!a && !b) || (a && b && memcmp(a, b, (size_t)n * 4) == 0);
}

static bool expect_status(la_status got, la_status want, const char * what) {
    return la_check(got == want, "%-60s status %s (want %s)", what, la_status_str(got),
                    la_status_str(want));
}

static void fill_ids(int64_t * ids, int64_t n, int64_t vocab) {
    for (int64_t i = 0; i < n; i++) ids[i] = (int64_t)(la_rng_uniform(&g_rng) * (double)vocab);
}

// ---------------------------------------------------------------------------------------------
// Activations. Oracle: sigma(x) = 1 / (1 + e^-x) and sigma(-x) = 1 / (1 + e^x), each computed
// directly in double (no 1 - sigma).

static double o_act(double x, la_act act, double * d) {
    const double sp = 1.0 / (1.0 + exp(-x)), sm = 1.0 / (1.0 + exp(x));
    switch (act) {
    case LA_ACT_SILU:    *d = sp * (1.0 + x * sm); return x * sp;
    case LA_ACT_SIGMOID: *d = sp * sm;             return sp;
    case LA_ACT_SOFTPLUS:
        *d = x > 20.0 ? 1.0 : sp;
        return x > 20.0 ? x : log1p(exp(x));
    default:             *d = 1.0;                 return x;
    }
}

static const char * act_name(la_act a) {
    return a == LA_ACT_SILU ? "silu" : a == LA_ACT_SIGMOID ? "sigmoid"
         : a == LA_ACT_SOFTPLUS ? "softplus" : "identity";
}

typedef struct act_fd { double * x, * dy; int64_t n; la_act act; } act_fd;
static double act_loss(void * c) {
    const act_fd * f = c;
    double L = 0, d;
    for (int64_t i = 0; i < f->n; i++) L += o_act(f->x[i], f->act, &d) * f->dy[i];
    return L;
}

static void test_act(void) {
    const la_act acts[4] = { LA_ACT_IDENTITY, LA_ACT_SILU, LA_ACT_SIGMOID, LA_ACT_SOFTPLUS };
    const int64_t sizes[4] = { 1, 7, 33, 40000 };
    const float special[] = { 0.0f, -0.0f, 19.99f, 20.0f, 20.01f, 30.0f, -30.0f, 100.0f,
                              -100.0f, 88.5f, -88.5f, 1e-8f, -1e-8f };
    for (int a = 0; a < 4; a++) {
        const la_act act = acts[a];
        for (int s = 0; s < 4; s++) {
            const int64_t n = sizes[s];
            float * x = la_new_normal(&g_rng, n, 3.0), * dy = la_new_normal(&g_rng, n, 1.0);
            for (int64_t i = 0; i < n && i < (int64_t)(sizeof special / 4); i++)
                if (n >= 33) x[i] = special[i];
            double * yr = new_d(n), * dxr = new_d(n);
            for (int64_t i = 0; i < n; i++) {
                double d;
                yr[i] = o_act((double)x[i], act, &d);
                dxr[i] = d * (double)dy[i];
            }
            float * y = nan_buf(n), * dx = nan_buf(n);
            la_status s1 = la_act_forward(y, x, act, n);
            la_status s2 = la_act_backward(dx, dy, x, act, n);
            if (la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "act %s n=%lld status",
                         act_name(act), (long long)n)) {
                la_check_rel(NM("act %s n=%lld y", act_name(act), (long long)n), y, yr, n,
                             TOL_ELEM);
                la_check_rel(NM("act %s n=%lld dx", act_name(act), (long long)n), dx, dxr, n,
                             TOL_ELEM);
            }
            // In place: y = x and dx = dy give the same bits.
            float * xi = copy_f(x, n), * di = copy_f(dy, n);
            la_act_forward(xi, xi, act, n);
            la_act_backward(di, di, x, act, n);
            la_check(same(xi, y, n) && same(di, dx, n), "act %s n=%lld in place == out of place",
                     act_name(act), (long long)n);
            if (n == 40000) {  // 3 blocks of 16384: 1 vs 2 threads
                float * y1 = nan_buf(n), * d1 = nan_buf(n), * y2 = nan_buf(n), * d2 = nan_buf(n);
                la_set_num_threads(1);
                la_act_forward(y1, x, act, n);
                la_act_backward(d1, dy, x, act, n);
                la_set_num_threads(2);
                la_act_forward(y2, x, act, n);
                la_act_backward(d2, dy, x, act, n);
                la_set_num_threads(0);
                la_check(same(y1, y2, n) && same(d1, d2, n), "act %s 1 vs 2 threads bitwise",
                         act_name(act));
                free(y1); free(d1); free(y2); free(d2);
            }
            free(x); free(dy); free(yr); free(dxr); free(y); free(dx); free(xi); free(di);
        }
        // The oracle's derivative against finite differences.
        {
            const int64_t n = 9;
            act_fd f = { new_d(n), new_d(n), n, act };
            for (int64_t i = 0; i < n; i++) {
                f.x[i] = 3.0 * la_rng_normal(&g_rng);
                f.dy[i] = la_rng_normal(&g_rng);
            }
            double * an = new_d(n), * fd = new_d(n), d;
            for (int64_t i = 0; i < n; i++) {
                o_act(f.x[i], act, &d);
                an[i] = d * f.dy[i];
            }
            double * xs[1] = { f.x }, * gs[1] = { fd };
            int64_t ns[1] = { n };
            la_fd_grads(1, xs, ns, gs, FD_STEP, act_loss, &f);
            la_check_fd(NM("act %s oracle dx vs finite differences", act_name(act)), an, fd, n,
                        TOL_FD);
            free(f.x); free(f.dy); free(an); free(fd);
        }
    }
    // Values a subtraction 1 - sigma(x) would destroy, checked per element to 1e-5.
    {
        const float xs[] = { 10, 15, 17, 20, 25, 30, 40, 60, 80, -10, -15, -20, -30, -60, -80 };
        const int64_t n = sizeof xs / sizeof xs[0];
        float * ones = la_test_alloc((size_t)n * 4), * g = la_test_alloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) ones[i] = 1.0f;
        double * ref = new_d(n), d;
        const la_act tails[3] = { LA_ACT_SIGMOID, LA_ACT_SILU, LA_ACT_SOFTPLUS };
        for (int a = 0; a < 3; a++) {
            for (int64_t i = 0; i < n; i++) {
                o_act((double)xs[i], tails[a], &d);
                ref[i] = d;
            }
            la_act_backward(g, ones, xs, tails[a], n);
            la_check_close_d(NM("act %s derivative in the tails (relative)", act_name(tails[a])),
                             g, ref, n, 0.0, TOL_REL);
        }
        for (int64_t i = 0; i < n; i++) ref[i] = o_act((double)xs[i], LA_ACT_SIGMOID, &d);
        la_act_forward(g, xs, LA_ACT_SIGMOID, n);
        la_check_close_d("act sigmoid in the tails (relative)", g, ref, n, 0.0, TOL_REL);
        free(ones); free(g); free(ref);
    }
    float v = 1.0f, o;
    expect_status(la_act_forward(&o, &v, LA_ACT_SILU, 0), LA_STATUS_SHAPE, "act n = 0");
    expect_status(la_act_forward(&o, &v, (la_act)7, 1), LA_STATUS_INVALID_ARG, "act bad enum");
    expect_status(la_act_forward(NULL, &v, LA_ACT_SILU, 1), LA_STATUS_INVALID_ARG, "act y NULL");
    expect_status(la_act_backward(&o, &v, NULL, LA_ACT_SILU, 1), LA_STATUS_INVALID_ARG,
                  "act backward x NULL");
    expect_status(la_act_backward(&o, &v, &v, (la_act)-1, 1), LA_STATUS_INVALID_ARG,
                  "act backward bad enum");
}

// ---------------------------------------------------------------------------------------------
// Linear: y = x W^T + b

typedef struct lin_fd {
    double * x, * W, * b, * dy;
    int64_t rows, in, out;
} lin_fd;

static void o_linear(double * y, const double * x, const double * W, const double * b,
                     int64_t rows, int64_t in, int64_t out) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int64_t i = 0; i < in; i++) s += x[r * in + i] * W[o * in + i];
            y[r * out + o] = s;
        }
}

static void o_linear_bwd(double * dx, double * dW, double * db, const double * dy,
                         const double * x, const double * W, int64_t rows, int64_t in,
                         int64_t out) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < in; i++) {
            double s = 0;
            for (int64_t o = 0; o < out; o++) s += dy[r * out + o] * W[o * in + i];
            dx[r * in + i] = s;
        }
    for (int64_t o = 0; o < out; o++) {
        for (int64_t i = 0; i < in; i++) {
            double s = 0;
            for (int64_t r = 0; r < rows; r++) s += dy[r * out + o] * x[r * in + i];
            dW[o * in + i] = s;
        }
        double s = 0;
        for (int64_t r = 0; r < rows; r++) s += dy[r * out + o];
        db[o] = s;
    }
}

static double lin_loss(void * c) {
    const lin_fd * f = c;
    double * y = new_d(f->rows * f->out);
    o_linear(y, f->x, f->W, f->b, f->rows, f->in, f->out);
    const double L = la_loss_dot(0, y, f->dy, f->rows * f->out);
    free(y);
    return L;
}

static void test_linear_fd(void) {
    lin_fd f = { .rows = 3, .in = 4, .out = 5 };
    const int64_t nx = 12, nw = 20, nb = 5, ny = 15;
    f.x = new_d(nx); f.W = new_d(nw); f.b = new_d(nb); f.dy = new_d(ny);
    for (int64_t i = 0; i < nx; i++) f.x[i] = la_rng_normal(&g_rng);
    for (int64_t i = 0; i < nw; i++) f.W[i] = la_rng_normal(&g_rng);
    for (int64_t i = 0; i < nb; i++) f.b[i] = la_rng_normal(&g_rng);
    for (int64_t i = 0; i < ny; i++) f.dy[i] = la_rng_normal(&g_rng);
    double * dx = new_d(nx), * dW = new_d(nw), * db = new_d(nb);
    double * fx = new_d(nx), * fW = new_d(nw), * fb = new_d(nb);
    o_linear_bwd(dx, dW, db, f.dy, f.x, f.W, f.rows, f.in, f.out);
    double * xs[3] = { f.x, f.W, f.b }, * gs[3] = { fx, fW, fb };
    int64_t ns[3] = { nx, nw, nb };
    la_fd_grads(3, xs, ns, gs, FD_STEP, lin_loss, &f);
    la_check_fd("linear oracle dx vs finite differences", dx, fx, nx, TOL_FD);
    la_check_fd("linear oracle dW vs finite differences", dW, fW, nw, TOL_FD);
    la_check_fd("linear oracle db vs finite differences", db, fb, nb, TOL_FD);
    free(f.x); free(f.W); free(f.b); free(f.dy);
    free(dx); free(dW); free(db); free(fx); free(fW); free(fb);
}

// Library vs oracle; with threads > 0 returns the outputs for the thread comparison.
typedef struct lin_out { float * y, * dx, * dW, * db; } lin_out;

static void linear_case(int64_t rows, int64_t in, int64_t out, bool bias, int threads,
                        lin_out * keep) {
    const int64_t nx = rows * in, nw = out * in, ny = rows * out;
    float * x = la_new_normal(&g_rng, nx, 1.0), * W = la_new_normal(&g_rng, nw, 0.3);
    float * b = bias ? la_new_normal(&g_rng, out, 1.0) : NULL;
    float * dy = la_new_normal(&g_rng, ny, 1.0);
    double * xd = la_to_f64(x, nx), * Wd = la_to_f64(W, nw), * bd = la_to_f64(b, out);
    double * dyd = la_to_f64(dy, ny);
    double * yr = new_d(ny), * dxr = new_d(nx), * dWr = new_d(nw), * dbr = new_d(out);
    o_linear(yr, xd, Wd, bd, rows, in, out);
    o_linear_bwd(dxr, dWr, dbr, dyd, xd, Wd, rows, in, out);
    if (threads) la_set_num_threads(threads);
    char tag[96];
    snprintf(tag, sizeof tag, "linear rows=%lld in=%lld out=%lld%s t%d", (long long)rows,
             (long long)in, (long long)out, bias ? " bias" : "", threads);
    float * y = nan_buf(ny), * dx = nan_buf(nx), * dW = nan_buf(nw), * db = nan_buf(out);
    la_status s1 = la_linear_forward(y, x, W, b, rows, in, out);
    la_status s2 = la_linear_backward(dx, dW, db, dy, x, W, rows, in, out, false);
    la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s status", tag);
    la_check_rel(NM("%s y", tag), y, yr, ny, TOL_SUM);
    la_check_rel(NM("%s dx", tag), dx, dxr, nx, TOL_SUM);
    la_check_rel(NM("%s dW (overwritten)", tag), dW, dWr, nw, TOL_SUM);
    la_check_rel(NM("%s db (overwritten)", tag), db, dbr, out, TOL_SUM);
    // accumulate: dW, db are added to
    float * pW = la_new_normal(&g_rng, nw, 1.0), * pb = la_new_normal(&g_rng, out, 1.0);
    float * aW = copy_f(pW, nw), * ab = copy_f(pb, out);
    la_linear_backward(NULL, aW, ab, dy, x, W, rows, in, out, true);
    double * eW = plus_d(pW, dWr, nw), * eb = plus_d(pb, dbr, out);
    la_check_rel(NM("%s dW (accumulated)", tag), aW, eW, nw, TOL_SUM);
    la_check_rel(NM("%s db (accumulated)", tag), ab, eb, out, TOL_SUM);
    // NULL gradients are skipped; the others are unchanged (and x / W may then be NULL).
    float * dx2 = nan_buf(nx), * dW2 = nan_buf(nw), * db2 = nan_buf(out);
    la_status s3 = la_linear_backward(dx2, NULL, NULL, dy, NULL, W, rows, in, out, false);
    la_status s4 = la_linear_backward(NULL, dW2, NULL, dy, x, NULL, rows, in, out, false);
    la_status s5 = la_linear_backward(NULL, NULL, db2, dy, NULL, NULL, rows, in, out, false);
    la_check(s3 == LA_STATUS_OK && s4 == LA_STATUS_OK && s5 == LA_STATUS_OK &&
             same(dx2, dx, nx) && same(dW2, dW, nw) && same(db2, db, out),
             "%s NULL gradients skipped, others bitwise equal", tag);
    if (keep) *keep = (lin_out){ y, dx, dW, db };
    else { free(y); free(dx); free(dW); free(db); }
    if (threads) la_set_num_threads(0);
    free(x); free(W); free(b); free(dy); free(xd); free(Wd); free(bd); free(dyd);
    free(yr); free(dxr); free(dWr); free(dbr); free(pW); free(pb); free(aW); free(ab);
    free(eW); free(eb); free(dx2); free(dW2); free(db2);
}

static void test_linear(void) {
    test_linear_fd();
    linear_case(1, 5, 1, true, 0, NULL);
    linear_case(1, 130, 7, false, 0, NULL);
    linear_case(7, 130, 5, true, 0, NULL);
    linear_case(33, 5, 130, true, 0, NULL);
    linear_case(33, 130, 130, false, 0, NULL);
    linear_case(7, 1000, 3, true, 0, NULL);
    // Threads: several row tiles (256) and weight tiles (512).
    lin_out a, b;
    la_rng save = g_rng;
    linear_case(300, 33, 600, true, 1, &a);
    g_rng = save;
    linear_case(300, 33, 600, true, 2, &b);
    la_check(same(a.y, b.y, 300 * 600) && same(a.dx, b.dx, 300 * 33) &&
             same(a.dW, b.dW, 600 * 33) && same(a.db, b.db, 600),
             "linear 1 vs 2 threads bitwise (y, dx, dW, db)");
    free(a.y); free(a.dx); free(a.dW); free(a.db); free(b.y); free(b.dx); free(b.dW); free(b.db);
    // Up to 4 rows (decode steps) take the dot-product path: against the float64 reference
    // above, and bitwise across thread counts over several 64-column blocks.
    linear_case(4, 300, 700, true, 0, NULL);
    save = g_rng;
    linear_case(3, 200, 900, true, 1, &a);
    g_rng = save;
    linear_case(3, 200, 900, true, 2, &b);
    la_check(same(a.y, b.y, 3 * 900), "linear, 3 rows: 1 vs 2 threads bitwise");
    free(a.y); free(a.dx); free(a.dW); free(a.db); free(b.y); free(b.dx); free(b.dW); free(b.db);
    float v[4] = { 0 };
    expect_status(la_linear_forward(v, v, v, NULL, 0, 1, 1), LA_STATUS_SHAPE, "linear rows = 0");
    expect_status(la_linear_forward(v, v, v, NULL, 1, -1, 1), LA_STATUS_SHAPE, "linear in < 0");
    expect_status(la_linear_forward(v, NULL, v, NULL, 1, 1, 1), LA_STATUS_INVALID_ARG,
                  "linear x NULL");
    expect_status(la_linear_backward(v, NULL, NULL, v, v, NULL, 1, 1, 1, false),
                  LA_STATUS_INVALID_ARG, "linear backward dx without W");
    expect_status(la_linear_backward(NULL, v, NULL, v, NULL, v, 1, 1, 1, false),
                  LA_STATUS_INVALID_ARG, "linear backward dW without x");
    expect_status(la_linear_backward(v, v, v, NULL, v, v, 1, 1, 1, false),
                  LA_STATUS_INVALID_ARG, "linear backward dy NULL");
}

// ---------------------------------------------------------------------------------------------
// Embedding

static void embedding_case(int64_t n, int64_t vocab, int64_t dim, int threads, float ** keep) {
    int64_t * ids = la_test_alloc((size_t)n * 8);
    fill_ids(ids, n, vocab);
    float * table = la_new_normal(&g_rng, vocab * dim, 1.0);
    float * dy = la_new_normal(&g_rng, n * dim, 1.0);
    double * dtr = new_d(vocab * dim);
    float * dtf = la_test_alloc((size_t)(vocab * dim) * 4);  // float scatter in token order
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < dim; c++) {
            dtr[ids[r] * dim + c] += (double)dy[r * dim + c];
            dtf[ids[r] * dim + c] += dy[r * dim + c];
        }
    if (threads) la_set_num_threads(threads);
    char tag[96];
    snprintf(tag, sizeof tag, "embedding n=%lld vocab=%lld dim=%lld t%d", (long long)n,
             (long long)vocab, (long long)dim, threads);
    float * y = nan_buf(n * dim), * dt = nan_buf(vocab * dim);
    la_status s1 = la_embedding_forward(y, ids, table, n, vocab, dim);
    la_status s2 = la_embedding_backward(dt, dy, ids, n, vocab, dim, false);
    bool gather = true;
    for (int64_t r = 0; r < n; r++)
        gather = gather && memcmp(y + r * dim, table + ids[r] * dim, (size_t)dim * 4) == 0;
    la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK && gather, "%s y = table[ids] exactly",
             tag);
    la_check_rel(NM("%s dtable (overwritten)", tag), dt, dtr, vocab * dim, TOL_ELEM);
    la_check(same(dt, dtf, vocab * dim), "%s dtable bitwise = float scatter in token order", tag);
    float * pre = la_new_normal(&g_rng, vocab * dim, 1.0), * acc = copy_f(pre, vocab * dim);
    la_embedding_backward(acc, dy, ids, n, vocab, dim, true);
    double * e = plus_d(pre, dtr, vocab * dim);
    la_check_rel(NM("%s dtable (accumulated)", tag), acc, e, vocab * dim, TOL_ELEM);
    if (keep) {
        keep[0] = y;
        keep[1] = dt;
    } else {
        free(y); free(dt);
    }
    if (threads) la_set_num_threads(0);
    free(ids); free(table); free(dy); free(dtr); free(dtf); free(pre); free(acc); free(e);
}

typedef struct emb_fd { double * table, * dy; const int64_t * ids; int64_t n, dim; } emb_fd;
static double emb_loss(void * p) {
    const emb_fd * f = p;
    double L = 0;
    for (int64_t r = 0; r < f->n; r++)
        for (int64_t c = 0; c < f->dim; c++)
            L += f->table[f->ids[r] * f->dim + c] * f->dy[r * f->dim + c];
    return L;
}

static void test_embedding(void) {
    {   // the oracle's scatter against finite differences (ids repeat)
        const int64_t ids[5] = { 2, 0, 2, 3, 2 }, n = 5, vocab = 4, dim = 3;
        emb_fd f = { new_d(vocab * dim), new_d(n * dim), ids, n, dim };
        for (int64_t i = 0; i < vocab * dim; i++) f.table[i] = la_rng_normal(&g_rng);
        for (int64_t i = 0; i < n * dim; i++) f.dy[i] = la_rng_normal(&g_rng);
        double * an = new_d(vocab * dim), * fd = new_d(vocab * dim);
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < dim; c++) an[ids[r] * dim + c] += f.dy[r * dim + c];
        double * xs[1] = { f.table }, * gs[1] = { fd };
        int64_t ns[1] = { vocab * dim };
        la_fd_grads(1, xs, ns, gs, FD_STEP, emb_loss, &f);
        la_check_fd("embedding oracle dtable vs finite differences", an, fd, vocab * dim, TOL_FD);
        free(f.table); free(f.dy); free(an); free(fd);
    }
    embedding_case(1, 3, 1, 0, NULL);
    embedding_case(33, 3, 5, 0, NULL);     // every row hit many times
    embedding_case(7, 1000, 130, 0, NULL);
    embedding_case(33, 1000, 5, 0, NULL);
    float * a[2], * b[2];
    la_rng save = g_rng;
    embedding_case(2000, 50, 300, 1, a);
    g_rng = save;
    embedding_case(2000, 50, 300, 2, b);
    la_check(same(a[0], b[0], 2000 * 300) && same(a[1], b[1], 50 * 300),
             "embedding 1 vs 2 threads bitwise (y, dtable)");
    free(a[0]); free(a[1]); free(b[0]); free(b[1]);
    // Out-of-range ids: an error, and nothing is written.
    const int64_t bad_hi[3] = { 0, 3, 1 }, bad_lo[3] = { 0, -1, 1 };
    float table[6] = { 1, 2, 3, 4, 5, 6 }, y[6], dt[6], dy[6] = { 1, 1, 1, 1, 1, 1 };
    for (int i = 0; i < 6; i++) y[i] = dt[i] = 42.0f;
    expect_status(la_embedding_forward(y, bad_hi, table, 3, 3, 2), LA_STATUS_INVALID_ARG,
                  "embedding id = vocab");
    expect_status(la_embedding_forward(y, bad_lo, table, 3, 3, 2), LA_STATUS_INVALID_ARG,
                  "embedding id = -1");
    expect_status(la_embedding_backward(dt, dy, bad_hi, 3, 3, 2, false), LA_STATUS_INVALID_ARG,
                  "embedding backward id = vocab");
    bool untouched = true;
    for (int i = 0; i < 6; i++) untouched = untouched && y[i] == 42.0f && dt[i] == 42.0f;
    la_check(untouched, "embedding bad ids: nothing written");
    expect_status(la_embedding_forward(y, bad_hi, table, 3, 0, 2), LA_STATUS_SHAPE,
                  "embedding vocab = 0");
    expect_status(la_embedding_forward(y, NULL, table, 3, 3, 2), LA_STATUS_INVALID_ARG,
                  "embedding ids NULL");
}

// ---------------------------------------------------------------------------------------------
// RMSNorm, gated RMSNorm, L2 norm. Oracle backward from the Jacobian of x_d r(x):
//   d(x_d r)/dx_j = delta_dj r + x_d dr/dx_j,  dr/dx_j = -r^3 x_j / D  (rmsnorm)
//                                              dr/dx_j = -r^3 x_j      (l2norm)

enum { NORM_RMS, NORM_GATED, NORM_L2 };

typedef struct norm_cfg {
    int     kind;
    la_act  act;     // gated: SILU or SIGMOID
    bool    weight;
    float   eps;
    int64_t rows, D;
} norm_cfg;

static const char * norm_name(const norm_cfg * c) {
    return c->kind == NORM_RMS ? "rmsnorm"
         : c->kind == NORM_L2  ? "l2norm"
         : c->act == LA_ACT_SILU ? "rmsnorm_gated silu" : "rmsnorm_gated sigmoid";
}

static void o_norm(const norm_cfg * c, double * y, const double * x, const double * g,
                   const double * w) {
    const int64_t D = c->D;
    for (int64_t r = 0; r < c->rows; r++) {
        const double * xr = x + r * D;
        double ss = 0;
        for (int64_t d = 0; d < D; d++) ss += xr[d] * xr[d];
        const double eps = (double)c->eps;
        const double rs = c->kind == NORM_L2 ? 1.0 / sqrt(ss + eps)
                                             : 1.0 / sqrt(ss / (double)D + eps);
        for (int64_t d = 0; d < D; d++) {
            double v = xr[d] * rs * (w && c->kind != NORM_L2 ? w[d] : 1.0);
            if (c->kind == NORM_GATED) {
                double dd;
                v *= o_act(g[r * D + d], c->act, &dd);
            }
            y[r * D + d] = v;
        }
    }
}

static void o_norm_bwd(const norm_cfg * c, double * dx, double * dg, double * dw,
                       const double * dy, const double * x, const double * g, const double * w) {
    const int64_t D = c->D;
    if (dw) memset(dw, 0, (size_t)D * 8);
    for (int64_t r = 0; r < c->rows; r++) {
        const double * xr = x + r * D;
        double ss = 0;
        for (int64_t d = 0; d < D; d++) ss += xr[d] * xr[d];
        const bool l2 = c->kind == NORM_L2;
        const double eps = (double)c->eps;
        const double rs = l2 ? 1.0 / sqrt(ss + eps) : 1.0 / sqrt(ss / (double)D + eps);
        const double k = l2 ? 1.0 : 1.0 / (double)D;  // dr/dx_j = -r^3 x_j k
        // e_d = dL/d(x_d r): through the weight and the gate
        double * e = new_d(D);
        for (int64_t d = 0; d < D; d++) {
            const double wd = w && !l2 ? w[d] : 1.0;
            double a = 1.0, da = 0.0;
            if (c->kind == NORM_GATED) a = o_act(g[r * D + d], c->act, &da);
            e[d] = dy[r * D + d] * a * wd;
            if (dg) dg[r * D + d] = dy[r * D + d] * xr[d] * rs * wd * da;
            if (dw) dw[d] += dy[r * D + d] * a * xr[d] * rs;
        }
        for (int64_t j = 0; j < D; j++) {
            double s = e[j] * rs;
            for (int64_t d = 0; d < D; d++) s += e[d] * xr[d] * (-rs * rs * rs * xr[j] * k);
            dx[r * D + j] = s;
        }
        free(e);
    }
}

typedef struct norm_fd { const norm_cfg * c; double * x, * g, * w, * dy; } norm_fd;
static double norm_loss(void * p) {
    const norm_fd * f = p;
    const int64_t n = f->c->rows * f->c->D;
    double * y = new_d(n);
    o_norm(f->c, y, f->x, f->g, f->w);
    const double L = la_loss_dot(0, y, f->dy, n);
    free(y);
    return L;
}

static void norm_fd_check(const norm_cfg * c) {
    const int64_t n = c->rows * c->D, D = c->D;
    const bool gated = c->kind == NORM_GATED, hasw = c->weight && c->kind != NORM_L2;
    norm_fd f = { c, new_d(n), gated ? new_d(n) : NULL, hasw ? new_d(D) : NULL, new_d(n) };
    for (int64_t i = 0; i < n; i++) {
        f.x[i] = la_rng_normal(&g_rng);
        f.dy[i] = la_rng_normal(&g_rng);
        if (f.g) f.g[i] = 2.0 * la_rng_normal(&g_rng);
    }
    for (int64_t i = 0; f.w && i < D; i++) f.w[i] = 1.0 + 0.5 * la_rng_normal(&g_rng);
    double * dx = new_d(n), * dg = new_d(n), * dw = new_d(D);
    double * fx = new_d(n), * fg = new_d(n), * fw = new_d(D);
    o_norm_bwd(c, dx, f.g ? dg : NULL, f.w ? dw : NULL, f.dy, f.x, f.g, f.w);
    double * xs[3] = { f.x, f.g, f.w }, * gs[3] = { fx, fg, fw };
    int64_t ns[3] = { n, n, D };
    la_fd_grads(3, xs, ns, gs, FD_STEP, norm_loss, &f);
    la_check_fd(NM("%s oracle dx vs finite differences", norm_name(c)), dx, fx, n, TOL_FD);
    if (f.g)
        la_check_fd(NM("%s oracle dgate vs finite differences", norm_name(c)), dg, fg, n, TOL_FD);
    if (f.w) la_check_fd(NM("%s oracle dw vs finite differences", norm_name(c)), dw, fw, D, TOL_FD);
    free(f.x); free(f.g); free(f.w); free(f.dy);
    free(dx); free(dg); free(dw); free(fx); free(fg); free(fw);
}

static la_status norm_fwd(const norm_cfg * c, float * y, const float * x, const float * g,
                          const float * w) {
    switch (c->kind) {
    case NORM_RMS:   return la_rmsnorm_forward(y, x, w, c->eps, c->rows, c->D);
    case NORM_GATED: return la_rmsnorm_gated_forward(y, x, g, w, c->eps, c->act, c->rows, c->D);
    default:         return la_l2norm_forward(y, x, c->eps, c->rows, c->D);
    }
}

static la_status norm_bwd(const norm_cfg * c, float * dx, float * dg, float * dw,
                          const float * dy, const float * x, const float * g, const float * w,
                          bool accumulate) {
    switch (c->kind) {
    case NORM_RMS:
        return la_rmsnorm_backward(dx, dw, dy, x, w, c->eps, c->rows, c->D, accumulate);
    case NORM_GATED:
        return la_rmsnorm_gated_backward(dx, dg, dw, dy, x, g, w, c->eps, c->act, c->rows,
                                         c->D, accumulate);
    default:
        return la_l2norm_backward(dx, dy, x, c->eps, c->rows, c->D);
    }
}

static void norm_case(const norm_cfg * c, int threads, float ** keep) {
    const int64_t n = c->rows * c->D, D = c->D;
    const bool gated = c->kind == NORM_GATED, hasw = c->weight && c->kind != NORM_L2;
    float * x = la_new_normal(&g_rng, n, 1.0), * dy = la_new_normal(&g_rng, n, 1.0);
    float * g = gated ? la_new_normal(&g_rng, n, 2.0) : NULL;
    float * w = hasw ? la_new_uniform(&g_rng, D, 0.5, 1.5) : NULL;
    if (c->kind == NORM_L2 && c->rows > 1) memset(x, 0, (size_t)D * 4);  // a zero row: eps
    double * xd = la_to_f64(x, n), * dyd = la_to_f64(dy, n), * gd = la_to_f64(g, n);
    double * wd = la_to_f64(w, D);
    double * yr = new_d(n), * dxr = new_d(n), * dgr = new_d(n), * dwr = new_d(D);
    o_norm(c, yr, xd, gd, wd);
    o_norm_bwd(c, dxr, gated ? dgr : NULL, dwr, dyd, xd, gd, wd);
    if (threads) la_set_num_threads(threads);
    char tag[128];
    snprintf(tag, sizeof tag, "%s rows=%lld D=%lld%s eps=%g t%d", norm_name(c),
             (long long)c->rows, (long long)D, c->kind == NORM_L2 ? "" : hasw ? " w" : " no-w",
             (double)c->eps, threads);
    float * y = nan_buf(n), * dx = nan_buf(n), * dg = gated ? nan_buf(n) : NULL;
    float * dw = c->kind == NORM_L2 ? NULL : nan_buf(D);
    la_status s1 = norm_fwd(c, y, x, g, w);
    la_status s2 = norm_bwd(c, dx, dg, dw, dy, x, g, w, false);
    la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s status", tag);
    la_check_rel(NM("%s y", tag), y, yr, n, TOL_ELEM);
    la_check_rel(NM("%s dx", tag), dx, dxr, n, TOL_ELEM * 5);  // r^3 x (e . x) / D cancels
    if (dg) la_check_rel(NM("%s dgate", tag), dg, dgr, n, TOL_ELEM);
    if (dw) {
        la_check_rel(NM("%s dw (overwritten)", tag), dw, dwr, D, TOL_SUM);
        float * pre = la_new_normal(&g_rng, D, 1.0), * acc = copy_f(pre, D);
        norm_bwd(c, NULL, NULL, acc, dy, x, g, w, true);
        double * e = plus_d(pre, dwr, D);
        la_check_rel(NM("%s dw (accumulated)", tag), acc, e, D, TOL_SUM);
        // NULL gradients skipped, the others unchanged to the bit.
        float * dx2 = nan_buf(n), * dg2 = gated ? nan_buf(n) : NULL, * dw2 = nan_buf(D);
        norm_bwd(c, dx2, NULL, NULL, dy, x, g, w, false);
        norm_bwd(c, NULL, dg2, NULL, dy, x, g, w, false);
        norm_bwd(c, NULL, NULL, dw2, dy, x, g, w, false);
        la_check(same(dx2, dx, n) && same(dg2, dg, n) && same(dw2, dw, D),
                 "%s NULL gradients skipped, others bitwise equal", tag);
        free(pre); free(acc); free(e); free(dx2); free(dg2); free(dw2);
    }
    // dx computed in place of dy gives the same bits.
    float * di = copy_f(dy, n);
    norm_bwd(c, di, NULL, NULL, di, x, g, w, false);
    la_check(same(di, dx, n), "%s dx in place of dy", tag);
    if (keep) {
        keep[0] = y; keep[1] = dx; keep[2] = dg; keep[3] = dw;
    } else {
        free(y); free(dx); free(dg); free(dw);
    }
    if (threads) la_set_num_threads(0);
    free(x); free(dy); free(g); free(w); free(xd); free(dyd); free(gd); free(wd);
    free(yr); free(dxr); free(dgr); free(dwr); free(di);
}

static void test_norms(void) {
    const int kinds[4] = { NORM_RMS, NORM_GATED, NORM_GATED, NORM_L2 };
    const la_act acts[4] = { LA_ACT_IDENTITY, LA_ACT_SILU, LA_ACT_SIGMOID, LA_ACT_IDENTITY };
    const int64_t rows[3] = { 1, 7, 33 }, Ds[3] = { 1, 5, 130 };
    for (int k = 0; k < 4; k++) {
        for (int wi = 0; wi < 2; wi++) {
            if (kinds[k] == NORM_L2 && wi == 1) continue;
            norm_cfg c = { kinds[k], acts[k], wi == 0, 1e-6f, 3, 5 };
            norm_fd_check(&c);
            for (int r = 0; r < 3; r++)
                for (int d = 0; d < 3; d++) {
                    c.rows = rows[r];
                    c.D = Ds[d];
                    c.eps = (r + d) % 2 ? 1e-5f : 1e-6f;
                    norm_case(&c, 0, NULL);
                }
        }
        // Threads: 257 rows in 17 blocks of 16.
        norm_cfg c = { kinds[k], acts[k], true, 1e-6f, 257, 130 };
        float * a[4], * b[4];
        la_rng save = g_rng;
        norm_case(&c, 1, a);
        g_rng = save;
        norm_case(&c, 2, b);
        const int64_t n = c.rows * c.D;
        la_check(same(a[0], b[0], n) && same(a[1], b[1], n) && same(a[2], b[2], n) &&
                 same(a[3], b[3], c.D), "%s 1 vs 2 threads bitwise", norm_name(&c));
        for (int i = 0; i < 4; i++) { free(a[i]); free(b[i]); }
    }
    float v[4] = { 1, 2, 3, 4 }, o[4];
    expect_status(la_rmsnorm_forward(o, v, v, 1e-6f, 0, 4), LA_STATUS_SHAPE, "rmsnorm rows = 0");
    expect_status(la_rmsnorm_forward(o, v, v, 1e-6f, 1, 0), LA_STATUS_SHAPE, "rmsnorm D = 0");
    expect_status(la_rmsnorm_forward(o, NULL, v, 1e-6f, 1, 4), LA_STATUS_INVALID_ARG,
                  "rmsnorm x NULL");
    expect_status(la_rmsnorm_forward(o, v, v, -1.0f, 1, 4), LA_STATUS_INVALID_ARG,
                  "rmsnorm eps < 0");
    expect_status(la_rmsnorm_backward(o, o, NULL, v, v, 1e-6f, 1, 4, false),
                  LA_STATUS_INVALID_ARG, "rmsnorm backward dy NULL");
    expect_status(la_rmsnorm_gated_forward(o, v, v, v, 1e-6f, LA_ACT_IDENTITY, 1, 4),
                  LA_STATUS_INVALID_ARG, "rmsnorm_gated act identity");
    expect_status(la_rmsnorm_gated_forward(o, v, NULL, v, 1e-6f, LA_ACT_SILU, 1, 4),
                  LA_STATUS_INVALID_ARG, "rmsnorm_gated gate NULL");
    expect_status(la_rmsnorm_gated_backward(o, o, o, v, v, v, v, 1e-6f, LA_ACT_SOFTPLUS, 1, 4,
                                            false),
                  LA_STATUS_INVALID_ARG, "rmsnorm_gated backward act softplus");
    expect_status(la_l2norm_forward(o, v, NAN, 1, 4), LA_STATUS_INVALID_ARG, "l2norm eps NaN");
    expect_status(la_l2norm_backward(o, v, v, 1e-6f, 1, -4), LA_STATUS_SHAPE, "l2norm D < 0");
}

// ---------------------------------------------------------------------------------------------
// SwiGLU MLP

typedef struct mlp_fd {
    double * x, * Wg, * Wu, * Wd, * dy;
    int64_t rows, D, I;
} mlp_fd;

static void o_mlp(double * y, double * G, double * U, const double * x, const double * Wg,
                  const double * Wu, const double * Wd, int64_t rows, int64_t D, int64_t I) {
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < I; i++) {
            double g = 0, u = 0;
            for (int64_t d = 0; d < D; d++) {
                g += x[r * D + d] * Wg[i * D + d];
                u += x[r * D + d] * Wu[i * D + d];
            }
            G[r * I + i] = g;
            U[r * I + i] = u;
        }
        for (int64_t d = 0; d < D; d++) {
            double s = 0, dd;
            for (int64_t i = 0; i < I; i++)
                s += o_act(G[r * I + i], LA_ACT_SILU, &dd) * U[r * I + i] * Wd[d * I + i];
            y[r * D + d] = s;
        }
    }
}

static void o_mlp_bwd(double * dx, double * dWg, double * dWu, double * dWd, const double * dy,
                      const double * x, const double * Wg, const double * Wu, const double * Wd,
                      int64_t rows, int64_t D, int64_t I) {
    double * y = new_d(rows * D), * G = new_d(rows * I), * U = new_d(rows * I);
    double * dG = new_d(rows * I), * dU = new_d(rows * I);
    o_mlp(y, G, U, x, Wg, Wu, Wd, rows, D, I);
    memset(dWd, 0, (size_t)(D * I) * 8);
    memset(dWg, 0, (size_t)(D * I) * 8);
    memset(dWu, 0, (size_t)(D * I) * 8);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < I; i++) {
            double dsilu, da = 0;
            const double s = o_act(G[r * I + i], LA_ACT_SILU, &dsilu);
            for (int64_t d = 0; d < D; d++) {
                da += dy[r * D + d] * Wd[d * I + i];
                dWd[d * I + i] += dy[r * D + d] * s * U[r * I + i];
            }
            dG[r * I + i] = da * U[r * I + i] * dsilu;
            dU[r * I + i] = da * s;
        }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t d = 0; d < D; d++) {
            double s = 0;
            for (int64_t i = 0; i < I; i++) {
                s += dG[r * I + i] * Wg[i * D + d] + dU[r * I + i] * Wu[i * D + d];
                dWg[i * D + d] += dG[r * I + i] * x[r * D + d];
                dWu[i * D + d] += dU[r * I + i] * x[r * D + d];
            }
            dx[r * D + d] = s;
        }
    free(y); free(G); free(U); free(dG); free(dU);
}

static double mlp_loss(void * p) {
    const mlp_fd * f = p;
    double * y = new_d(f->rows * f->D), * G = new_d(f->rows * f->I), * U = new_d(f->rows * f->I);
    o_mlp(y, G, U, f->x, f->Wg, f->Wu, f->Wd, f->rows, f->D, f->I);
    const double L = la_loss_dot(0, y, f->dy, f->rows * f->D);
    free(y); free(G); free(U);
    return L;
}

static void test_mlp_fd(void) {
    mlp_fd f = { .rows = 3, .D = 4, .I = 5 };
    const int64_t nx = 12, nw = 20;
    f.x = new_d(nx); f.dy = new_d(nx); f.Wg = new_d(nw); f.Wu = new_d(nw); f.Wd = new_d(nw);
    for (int64_t i = 0; i < nx; i++) {
        f.x[i] = la_rng_normal(&g_rng);
        f.dy[i] = la_rng_normal(&g_rng);
    }
    for (int64_t i = 0; i < nw; i++) {
        f.Wg[i] = la_rng_normal(&g_rng);
        f.Wu[i] = la_rng_normal(&g_rng);
        f.Wd[i] = la_rng_normal(&g_rng);
    }
    double * an[4] = { new_d(nx), new_d(nw), new_d(nw), new_d(nw) };
    double * fd[4] = { new_d(nx), new_d(nw), new_d(nw), new_d(nw) };
    o_mlp_bwd(an[0], an[1], an[2], an[3], f.dy, f.x, f.Wg, f.Wu, f.Wd, f.rows, f.D, f.I);
    double * xs[4] = { f.x, f.Wg, f.Wu, f.Wd };
    int64_t ns[4] = { nx, nw, nw, nw };
    la_fd_grads(4, xs, ns, fd, FD_STEP, mlp_loss, &f);
    const char * names[4] = { "dx", "dWg", "dWu", "dWd" };
    for (int p = 0; p < 4; p++) {
        la_check_fd(NM("mlp oracle %s vs finite differences", names[p]), an[p], fd[p], ns[p],
                    TOL_FD);
        free(an[p]); free(fd[p]);
    }
    free(f.x); free(f.dy); free(f.Wg); free(f.Wu); free(f.Wd);
}

static void mlp_case(int64_t rows, int64_t D, int64_t I, int threads, float ** keep) {
    const int64_t nx = rows * D, nw = D * I;
    float * x = la_new_normal(&g_rng, nx, 1.0), * dy = la_new_normal(&g_rng, nx, 1.0);
    const double ws = 1.0 / sqrt((double)D), wd = 1.0 / sqrt((double)I);
    float * Wg = la_new_normal(&g_rng, nw, ws), * Wu = la_new_normal(&g_rng, nw, ws);
    float * Wd = la_new_normal(&g_rng, nw, wd);
    double * xd = la_to_f64(x, nx), * dyd = la_to_f64(dy, nx), * Wgd = la_to_f64(Wg, nw);
    double * Wud = la_to_f64(Wu, nw), * Wdd = la_to_f64(Wd, nw);
    double * yr = new_d(nx), * G = new_d(rows * I), * U = new_d(rows * I);
    double * r[4] = { new_d(nx), new_d(nw), new_d(nw), new_d(nw) };
    o_mlp(yr, G, U, xd, Wgd, Wud, Wdd, rows, D, I);
    o_mlp_bwd(r[0], r[1], r[2], r[3], dyd, xd, Wgd, Wud, Wdd, rows, D, I);
    if (threads) la_set_num_threads(threads);
    char tag[96];
    snprintf(tag, sizeof tag, "mlp rows=%lld D=%lld I=%lld t%d", (long long)rows, (long long)D,
             (long long)I, threads);
    float * y = nan_buf(nx), * g[4] = { nan_buf(nx), nan_buf(nw), nan_buf(nw), nan_buf(nw) };
    la_status s1 = la_mlp_forward(y, x, Wg, Wu, Wd, rows, D, I, NULL);
    la_status s2 = la_mlp_backward(g[0], g[1], g[2], g[3], dy, x, Wg, Wu, Wd, rows, D, I, false,
                                   NULL);
    la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s status", tag);
    la_check_rel(NM("%s y", tag), y, yr, nx, TOL_SUM);
    const char * names[4] = { "dx", "dWg (overwritten)", "dWu (overwritten)", "dWd (overwritten)" };
    const int64_t ns[4] = { nx, nw, nw, nw };
    for (int p = 0; p < 4; p++)
        la_check_rel(NM("%s %s", tag, names[p]), g[p], r[p], ns[p], TOL_SUM);
    // Caller workspace at an odd address (the size has 64 bytes of slack): same bits.
    const size_t wsz = la_mlp_workspace_size(rows, D, I);
    char * work = la_test_alloc(wsz + 8);
    float * y2 = nan_buf(nx), * g2[4] = { nan_buf(nx), nan_buf(nw), nan_buf(nw), nan_buf(nw) };
    la_mlp_forward(y2, x, Wg, Wu, Wd, rows, D, I, work + 4);
    la_mlp_backward(g2[0], g2[1], g2[2], g2[3], dy, x, Wg, Wu, Wd, rows, D, I, false, work + 4);
    bool eq = same(y2, y, nx);
    for (int p = 0; p < 4; p++) eq = eq && same(g2[p], g[p], ns[p]);
    la_check(eq, "%s caller workspace (misaligned) bitwise equal", tag);
    // Accumulate into the weight gradients; NULL gradients skipped.
    float * pre[4], * acc[4];
    for (int p = 1; p < 4; p++) {
        pre[p] = la_new_normal(&g_rng, nw, 1.0);
        acc[p] = copy_f(pre[p], nw);
    }
    la_mlp_backward(NULL, acc[1], acc[2], acc[3], dy, x, Wg, Wu, Wd, rows, D, I, true, NULL);
    const char * an[4] = { "", "dWg", "dWu", "dWd" };
    for (int p = 1; p < 4; p++) {
        double * e = plus_d(pre[p], r[p], nw);
        la_check_rel(NM("%s %s (accumulated)", tag, an[p]), acc[p], e, nw, TOL_SUM);
        free(e); free(pre[p]); free(acc[p]);
    }
    float * s[4] = { nan_buf(nx), nan_buf(nw), nan_buf(nw), nan_buf(nw) };
    la_mlp_backward(s[0], NULL, NULL, NULL, dy, x, Wg, Wu, Wd, rows, D, I, false, NULL);
    la_mlp_backward(NULL, s[1], NULL, NULL, dy, x, Wg, Wu, Wd, rows, D, I, false, NULL);
    la_mlp_backward(NULL, NULL, s[2], NULL, dy, x, Wg, Wu, Wd, rows, D, I, false, NULL);
    la_mlp_backward(NULL, NULL, NULL, s[3], dy, x, Wg, Wu, Wd, rows, D, I, false, NULL);
    eq = true;
    for (int p = 0; p < 4; p++) eq = eq && same(s[p], g[p], ns[p]);
    la_check(eq, "%s one gradient at a time: bitwise equal", tag);
    if (keep) {
        keep[0] = y;
        for (int p = 0; p < 4; p++) keep[1 + p] = g[p];
    } else {
        free(y);
        for (int p = 0; p < 4; p++) free(g[p]);
    }
    if (threads) la_set_num_threads(0);
    for (int p = 0; p < 4; p++) { free(r[p]); free(g2[p]); free(s[p]); }
    free(x); free(dy); free(Wg); free(Wu); free(Wd); free(xd); free(dyd); free(Wgd); free(Wud);
    free(Wdd); free(yr); free(G); free(U); free(work); free(y2);
}

static void test_mlp(void) {
    test_mlp_fd();
    mlp_case(1, 5, 7, 0, NULL);
    mlp_case(7, 130, 33, 0, NULL);
    mlp_case(33, 5, 130, 0, NULL);
    mlp_case(33, 1, 1, 0, NULL);
    float * a[5], * b[5];
    la_rng save = g_rng;
    mlp_case(300, 64, 600, 1, a);
    g_rng = save;
    mlp_case(300, 64, 600, 2, b);
    const int64_t ns[5] = { 300 * 64, 300 * 64, 64 * 600, 64 * 600, 64 * 600 };
    bool eq = true;
    for (int p = 0; p < 5; p++) eq = eq && same(a[p], b[p], ns[p]);
    la_check(eq, "mlp 1 vs 2 threads bitwise (y, dx, dWg, dWu, dWd)");
    for (int p = 0; p < 5; p++) { free(a[p]); free(b[p]); }
    save = g_rng;  // 2 rows: the dot-product path of the forward GEMMs
    mlp_case(2, 64, 600, 1, a);
    g_rng = save;
    mlp_case(2, 64, 600, 2, b);
    la_check(same(a[0], b[0], 2 * 64), "mlp, 2 rows: 1 vs 2 threads bitwise");
    for (int p = 0; p < 5; p++) { free(a[p]); free(b[p]); }
    float v[4] = { 0 };
    la_check(la_mlp_workspace_size(0, 4, 4) == 0 &&
             la_mlp_workspace_size(3, 4, 5) >= 3 * 3 * 5 * 4 + 64, "mlp workspace size");
    expect_status(la_mlp_forward(v, v, v, v, v, 1, 0, 1, NULL), LA_STATUS_SHAPE, "mlp D = 0");
    expect_status(la_mlp_forward(v, v, NULL, v, v, 1, 1, 1, NULL), LA_STATUS_INVALID_ARG,
                  "mlp Wg NULL");
    expect_status(la_mlp_backward(v, v, v, v, NULL, v, v, v, v, 1, 1, 1, false, NULL),
                  LA_STATUS_INVALID_ARG, "mlp backward dy NULL");
}

// ---------------------------------------------------------------------------------------------
// Short convolution. The oracle works on the extended sequence e = [cache slots 0 .. W-1,
// x_0 .. x_{L-1}] of each (sequence, channel): y_p = act(b + sum_i w_i e[p + 1 + i]), final
// slot j = e[L + j]; its adjoint scatters into de and reads dx = de[W ..], dinit = de[0 .. W).

typedef struct conv_cfg {
    const char * name;
    int64_t      B, T, D, W;
    int          nseq;          // > 0: varlen with these lengths (B = 1)
    int64_t      lens[8];
    la_act       act;
    bool         bias, init, dfinal;
} conv_cfg;

typedef struct conv_dat {
    int64_t  B, T, D, W, N, nx, nc;
    int64_t  cu[9];
    bool     varlen;
    la_act   act;
    float *  x, * w, * b, * c0, * dy, * dfin;
} conv_dat;

static void conv_make(const conv_cfg * c, conv_dat * d) {
    memset(d, 0, sizeof *d);
    d->B = c->B; d->T = c->T; d->D = c->D; d->W = c->W; d->N = c->B; d->act = c->act;
    if (c->nseq > 0) {
        d->B = 1;
        d->N = c->nseq;
        d->T = la_cu_from_lens(d->cu, c->lens, c->nseq);
        d->varlen = true;
    }
    d->nx = d->B * d->T * d->D;
    d->nc = d->N * d->D * d->W;
    d->x = la_new_normal(&g_rng, d->nx, 1.0);
    d->dy = la_new_normal(&g_rng, d->nx, 1.0);
    d->w = la_new_normal(&g_rng, d->D * d->W, 0.5);
    if (c->bias) d->b = la_new_normal(&g_rng, d->D, 0.5);
    if (c->init) d->c0 = la_new_normal(&g_rng, d->nc, 1.0);
    if (c->dfinal) d->dfin = la_new_normal(&g_rng, d->nc, 1.0);
}

static void conv_free(conv_dat * d) {
    free(d->x); free(d->dy); free(d->w); free(d->b); free(d->c0); free(d->dfin);
}

static la_opts conv_opts(const conv_dat * d) {
    la_opts o = la_opts_default();
    if (d->varlen) {
        o.cu_seqlens = d->cu;
        o.n_seqs = d->N;
    }
    return o;
}

// Oracle forward (y, fin) and, when dx is non-NULL, backward; every array float64.
static void o_conv(const conv_dat * d, const double * x, const double * w, const double * b,
                   const double * c0, double * y, double * fin, const double * dy,
                   const double * dfin, double * dx, double * dw, double * db, double * dc0) {
    const int64_t D = d->D, W = d->W;
    if (dx) {
        memset(dw, 0, (size_t)(D * W) * 8);
        memset(db, 0, (size_t)D * 8);
    }
    for (int64_t n = 0; n < d->N; n++) {
        int64_t bos, eos;
        la_seq_range(d->varlen ? d->cu : NULL, d->T, n, &bos, &eos);
        const int64_t L = eos - bos;
        double * e = new_d(W + L), * de = new_d(W + L);
        for (int64_t ch = 0; ch < D; ch++) {
            for (int64_t s = 0; s < W; s++) e[s] = c0 ? c0[(n * D + ch) * W + s] : 0.0;
            for (int64_t p = 0; p < L; p++) e[W + p] = x[(bos + p) * D + ch];
            for (int64_t j = 0; j < W; j++) fin[(n * D + ch) * W + j] = e[L + j];
            memset(de, 0, (size_t)(W + L) * 8);
            for (int64_t j = 0; dx && dfin && j < W; j++) de[L + j] += dfin[(n * D + ch) * W + j];
            for (int64_t p = 0; p < L; p++) {
                double z = b ? b[ch] : 0.0, da;
                for (int64_t i = 0; i < W; i++) z += w[ch * W + i] * e[p + 1 + i];
                y[(bos + p) * D + ch] = o_act(z, d->act, &da);
                if (!dx) continue;
                const double dz = dy[(bos + p) * D + ch] * da;
                db[ch] += dz;
                for (int64_t i = 0; i < W; i++) {
                    dw[ch * W + i] += dz * e[p + 1 + i];
                    de[p + 1 + i] += dz * w[ch * W + i];
                }
            }
            if (!dx) continue;
            for (int64_t p = 0; p < L; p++) dx[(bos + p) * D + ch] = de[W + p];
            for (int64_t s = 0; s < W; s++) dc0[(n * D + ch) * W + s] = de[s];
        }
        free(e); free(de);
    }
}

typedef struct conv_fdc { const conv_dat * d; double * x, * w, * b, * c0, * dy, * dfin; } conv_fdc;
static double conv_loss(void * p) {
    const conv_fdc * f = p;
    double * y = new_d(f->d->nx), * fin = new_d(f->d->nc);
    o_conv(f->d, f->x, f->w, f->b, f->c0, y, fin, NULL, NULL, NULL, NULL, NULL, NULL);
    double L = la_loss_dot(0, y, f->dy, f->d->nx);
    L = la_loss_dot(L, fin, f->dfin, f->d->nc);
    free(y); free(fin);
    return L;
}

static void conv_fd_check(const conv_cfg * c) {
    conv_dat d;
    conv_make(c, &d);
    const int64_t nw = d.D * d.W;
    conv_fdc f = { &d, la_to_f64(d.x, d.nx), la_to_f64(d.w, nw), la_to_f64(d.b, d.D),
                   la_to_f64(d.c0, d.nc), la_to_f64(d.dy, d.nx), la_to_f64(d.dfin, d.nc) };
    double * y = new_d(d.nx), * fin = new_d(d.nc);
    double * an[4] = { new_d(d.nx), new_d(nw), new_d(d.D), new_d(d.nc) };
    double * fd[4] = { new_d(d.nx), new_d(nw), new_d(d.D), new_d(d.nc) };
    o_conv(&d, f.x, f.w, f.b, f.c0, y, fin, f.dy, f.dfin, an[0], an[1], an[2], an[3]);
    double * xs[4] = { f.x, f.w, f.b, f.c0 };
    const int64_t ns[4] = { d.nx, nw, d.D, d.nc };
    la_fd_grads(4, xs, ns, fd, FD_STEP, conv_loss, &f);
    const char * names[4] = { "dx", "dw", "dbias", "dinitial_cache" };
    for (int p = 0; p < 4; p++) {
        if (xs[p]) la_check_fd(NM("conv %s oracle %s vs finite differences", c->name, names[p]),
                               an[p], fd[p], ns[p], TOL_FD);
        free(an[p]); free(fd[p]);
    }
    free(f.x); free(f.w); free(f.b); free(f.c0); free(f.dy); free(f.dfin); free(y); free(fin);
    conv_free(&d);
}

// Outputs of one library run: y, fin, dx, dw, db, dc0.
typedef struct conv_res { float * t[6]; } conv_res;

static void conv_res_free(conv_res * r) {
    for (int i = 0; i < 6; i++) free(r->t[i]);
}

static void conv_case(const conv_cfg * c, int threads, conv_res * keep) {
    conv_dat d;
    conv_make(c, &d);
    const int64_t nw = d.D * d.W, D = d.D, W = d.W;
    double * xd = la_to_f64(d.x, d.nx), * wd = la_to_f64(d.w, nw), * bd = la_to_f64(d.b, D);
    double * cd = la_to_f64(d.c0, d.nc), * dyd = la_to_f64(d.dy, d.nx);
    double * dfd = la_to_f64(d.dfin, d.nc);
    double * yr = new_d(d.nx), * fr = new_d(d.nc), * dxr = new_d(d.nx), * dwr = new_d(nw);
    double * dbr = new_d(D), * dcr = new_d(d.nc);
    o_conv(&d, xd, wd, bd, cd, yr, fr, dyd, dfd, dxr, dwr, dbr, dcr);
    const la_opts o = conv_opts(&d);
    if (threads) la_set_num_threads(threads);
    char tag[128];
    snprintf(tag, sizeof tag, "conv %s t%d", c->name, threads);
    float * y = nan_buf(d.nx), * fin = nan_buf(d.nc), * dx = nan_buf(d.nx), * dw = nan_buf(nw);
    float * db = nan_buf(D), * dc = nan_buf(d.nc);
    la_status s1 = la_short_conv_forward(y, fin, d.x, d.w, d.b, d.c0, d.act, d.B, d.T, D, W, &o);
    la_status s2 = la_short_conv_backward(dx, dw, db, dc, d.dy, d.dfin, d.x, d.w, d.b, d.c0,
                                          d.act, d.B, d.T, D, W, false, &o);
    la_check(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s status %s %s", tag,
             la_status_str(s1), la_status_str(s2));
    la_check_rel(NM("%s y", tag), y, yr, d.nx, TOL_ELEM);
    la_check_rel(NM("%s final_cache", tag), fin, fr, d.nc, 0.0);  // copies of inputs: exact
    la_check_rel(NM("%s dx", tag), dx, dxr, d.nx, TOL_ELEM);
    la_check_rel(NM("%s dw (overwritten)", tag), dw, dwr, nw, TOL_SUM);
    la_check_rel(NM("%s dbias (overwritten)", tag), db, dbr, D, TOL_SUM);
    la_check_rel(NM("%s dinitial_cache", tag), dc, dcr, d.nc, TOL_ELEM);
    // accumulate into dw, dbias
    float * pw = la_new_normal(&g_rng, nw, 1.0), * pb = la_new_normal(&g_rng, D, 1.0);
    float * aw = copy_f(pw, nw), * ab = copy_f(pb, D);
    la_short_conv_backward(NULL, aw, ab, NULL, d.dy, d.dfin, d.x, d.w, d.b, d.c0, d.act, d.B,
                           d.T, D, W, true, &o);
    double * ew = plus_d(pw, dwr, nw), * eb = plus_d(pb, dbr, D);
    la_check_rel(NM("%s dw (accumulated)", tag), aw, ew, nw, TOL_SUM);
    la_check_rel(NM("%s dbias (accumulated)", tag), ab, eb, D, TOL_SUM);
    // One gradient at a time, dx in place of dy, dinitial_cache in place of dfinal_cache.
    float * s[4] = { nan_buf(d.nx), nan_buf(nw), nan_buf(D), nan_buf(d.nc) };
    la_short_conv_backward(s[0], NULL, NULL, NULL, d.dy, d.dfin, d.x, d.w, d.b, d.c0, d.act,
                           d.B, d.T, D, W, false, &o);
    la_short_conv_backward(NULL, s[1], NULL, NULL, d.dy, d.dfin, d.x, d.w, d.b, d.c0, d.act,
                           d.B, d.T, D, W, false, &o);
    la_short_conv_backward(NULL, NULL, s[2], NULL, d.dy, d.dfin, d.x, d.w, d.b, d.c0, d.act,
                           d.B, d.T, D, W, false, &o);
    la_short_conv_backward(NULL, NULL, NULL, s[3], d.dy, d.dfin, d.x, d.w, d.b, d.c0, d.act,
                           d.B, d.T, D, W, false, &o);
    la_check(same(s[0], dx, d.nx) && same(s[1], dw, nw) && same(s[2], db, D) &&
             same(s[3], dc, d.nc), "%s one gradient at a time: bitwise equal", tag);
    float * dxi = copy_f(d.dy, d.nx), * dci = d.dfin ? copy_f(d.dfin, d.nc) : nan_buf(d.nc);
    la_short_conv_backward(dxi, NULL, NULL, dci, dxi, d.dfin ? dci : NULL, d.x, d.w, d.b, d.c0,
                           d.act, d.B, d.T, D, W, false, &o);
    la_check(same(dxi, dx, d.nx) && same(dci, dc, d.nc),
             "%s dx = dy and dinitial_cache = dfinal_cache in place: bitwise equal", tag);
    // final_cache = initial_cache (in place)
    if (d.c0) {
        float * cache = copy_f(d.c0, d.nc), * y2 = nan_buf(d.nx);
        la_short_conv_forward(y2, cache, d.x, d.w, d.b, cache, d.act, d.B, d.T, D, W, &o);
        la_check(same(y2, y, d.nx) && same(cache, fin, d.nc),
                 "%s final_cache = initial_cache in place: bitwise equal", tag);
        free(cache); free(y2);
    }
    if (keep) {
        float * t[6] = { y, fin, dx, dw, db, dc };
        memcpy(keep->t, t, sizeof t);
    } else {
        free(y); free(fin); free(dx); free(dw); free(db); free(dc);
    }
    if (threads) la_set_num_threads(0);
    for (int p = 0; p < 4; p++) free(s[p]);
    free(xd); free(wd); free(bd); free(cd); free(dyd); free(dfd); free(yr); free(fr); free(dxr);
    free(dwr); free(dbr); free(dcr); free(pw); free(pb); free(aw); free(ab); free(ew); free(eb);
    free(dxi); free(dci);
    conv_free(&d);
}

// Decode: T = 1 calls from a cache updated in place equal the full pass and its final cache,
// after a prefill of `pre` tokens (0: decode from the initial cache alone). varlen: the same
// with the batch rows as cu_seqlens sequences.
static void conv_decode(int64_t pre, bool varlen, la_act act) {
    const int64_t B = 3, T = 9, D = 130, W = 4;
    conv_cfg c = { "decode", B, T, D, W, 0, { 0 }, act, true, true, false };
    conv_dat d;
    conv_make(&c, &d);
    float * yf = nan_buf(d.nx), * ff = nan_buf(d.nc);
    la_short_conv_forward(yf, ff, d.x, d.w, d.b, d.c0, act, B, T, D, W, NULL);
    float * cache = copy_f(d.c0, d.nc), * y = nan_buf(d.nx);
    la_status st = LA_STATUS_OK;
    if (pre > 0) {  // prefill tokens [0, pre) of every row
        float * xp = la_test_alloc((size_t)(B * pre * D) * 4), * yp = nan_buf(B * pre * D);
        for (int64_t b = 0; b < B; b++)
            memcpy(xp + b * pre * D, d.x + b * T * D, (size_t)(pre * D) * 4);
        st = la_short_conv_forward(yp, cache, xp, d.w, d.b, cache, act, B, pre, D, W, NULL);
        for (int64_t b = 0; b < B; b++)
            memcpy(y + b * T * D, yp + b * pre * D, (size_t)(pre * D) * 4);
        free(xp); free(yp);
    }
    int64_t cu[4] = { 0, 1, 2, 3 };
    la_opts o = la_opts_default();
    o.cu_seqlens = cu;
    o.n_seqs = B;
    float * xt = la_test_alloc((size_t)(B * D) * 4), * yt = la_test_alloc((size_t)(B * D) * 4);
    for (int64_t t = pre; t < T && st == LA_STATUS_OK; t++) {
        for (int64_t b = 0; b < B; b++) memcpy(xt + b * D, d.x + (b * T + t) * D, (size_t)D * 4);
        st = varlen ? la_short_conv_forward(yt, cache, xt, d.w, d.b, cache, act, 1, B, D, W, &o)
                    : la_short_conv_forward(yt, cache, xt, d.w, d.b, cache, act, B, 1, D, W, NULL);
        for (int64_t b = 0; b < B; b++) memcpy(y + (b * T + t) * D, yt + b * D, (size_t)D * 4);
    }
    double * yfd = la_to_f64(yf, d.nx);
    la_check(st == LA_STATUS_OK, "conv decode status");
    la_check_rel(NM("conv decode %s prefill %lld%s: y == full pass", act_name(act),
                    (long long)pre, varlen ? " varlen" : ""), y, yfd, d.nx, TOL_ELEM);
    la_check(same(cache, ff, d.nc), "conv decode %s prefill %lld%s: cache == full final cache",
             act_name(act), (long long)pre, varlen ? " varlen" : "");
    free(yf); free(ff); free(cache); free(y); free(xt); free(yt); free(yfd);
    conv_free(&d);
}

static void test_conv(void) {
    const conv_cfg fd_cases[] = {
        { "fd B2 T7 D3 W4 silu", 2, 7, 3, 4, 0, { 0 }, LA_ACT_SILU, true, true, true },
        { "fd varlen 0,1,2,6,0 W4", 1, 0, 2, 4, 5, { 0, 1, 2, 6, 0 }, LA_ACT_SILU, true, true,
          true },
        { "fd varlen 3,0,1,8 W6 identity", 1, 0, 3, 6, 4, { 3, 0, 1, 8 }, LA_ACT_IDENTITY, false,
          true, true },
        { "fd W1", 2, 3, 2, 1, 0, { 0 }, LA_ACT_SILU, true, true, true },
    };
    for (size_t i = 0; i < sizeof fd_cases / sizeof fd_cases[0]; i++) conv_fd_check(&fd_cases[i]);
    const conv_cfg cases[] = {
        { "B2 T7 D5 W4 silu bias cache dfinal", 2, 7, 5, 4, 0, { 0 }, LA_ACT_SILU, true, true,
          true },
        { "B1 T1 D1 W4 identity", 1, 1, 1, 4, 0, { 0 }, LA_ACT_IDENTITY, false, false, false },
        { "B3 T2 D130 W4 silu cache (T < W-1)", 3, 2, 130, 4, 0, { 0 }, LA_ACT_SILU, false, true,
          true },
        { "B2 T33 D130 W4 silu no cache", 2, 33, 130, 4, 0, { 0 }, LA_ACT_SILU, true, false, true },
        { "varlen 0,1,2,9,3,0 D5 W4 silu", 1, 0, 5, 4, 6, { 0, 1, 2, 9, 3, 0 }, LA_ACT_SILU, true,
          true, true },
        { "varlen 2,1,40 D300 W3 identity", 1, 0, 300, 3, 3, { 2, 1, 40 }, LA_ACT_IDENTITY, true,
          true, false },
        { "varlen 4,0,13,1 D33 W6 silu", 1, 0, 33, 6, 4, { 4, 0, 13, 1 }, LA_ACT_SILU, false,
          true, true },
        { "varlen 1,1,1 D7 W4 decode-like", 1, 0, 7, 4, 3, { 1, 1, 1 }, LA_ACT_SILU, true, true,
          true },
        { "B2 T5 D7 W1 silu", 2, 5, 7, 1, 0, { 0 }, LA_ACT_SILU, true, true, true },
        { "B1 T7 D300 W2 silu", 1, 7, 300, 2, 0, { 0 }, LA_ACT_SILU, true, true, true },
        { "varlen 3,80,0 D5 W70 silu", 1, 0, 5, 70, 3, { 3, 80, 0 }, LA_ACT_SILU, true, true,
          true },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) conv_case(&cases[i], 0, NULL);
    conv_decode(0, false, LA_ACT_SILU);
    conv_decode(5, false, LA_ACT_SILU);
    conv_decode(2, true, LA_ACT_IDENTITY);
    // Threads: three channel blocks of 256.
    const conv_cfg big = { "B2 T64 D600 W4 silu", 2, 64, 600, 4, 0, { 0 }, LA_ACT_SILU, true,
                           true, true };
    conv_res a, b;
    la_rng save = g_rng;
    conv_case(&big, 1, &a);
    g_rng = save;
    conv_case(&big, 2, &b);
    const int64_t nx = 2 * 64 * 600, nc = 2 * 600 * 4, ns[6] = { nx, nc, nx, 2400, 600, nc };
    bool eq = true;
    for (int i = 0; i < 6; i++) eq = eq && same(a.t[i], b.t[i], ns[i]);
    la_check(eq, "conv 1 vs 2 threads bitwise (y, final, dx, dw, dbias, dinitial)");
    conv_res_free(&a);
    conv_res_free(&b);
    // Bad arguments.
    float v[64] = { 0 };
    int64_t cu_bad[3] = { 0, 3, 2 }, cu_end[3] = { 0, 1, 3 };
    la_opts o = la_opts_default();
    expect_status(la_short_conv_forward(v, NULL, v, v, NULL, NULL, LA_ACT_SILU, 1, 2, 2, 0, NULL),
                  LA_STATUS_SHAPE, "conv W = 0");
    expect_status(la_short_conv_forward(v, NULL, v, v, NULL, NULL, LA_ACT_SILU, 1, 0, 2, 4, NULL),
                  LA_STATUS_SHAPE, "conv T = 0");
    expect_status(la_short_conv_forward(v, NULL, v, v, NULL, NULL, LA_ACT_SIGMOID, 1, 2, 2, 4,
                                        NULL), LA_STATUS_INVALID_ARG, "conv act sigmoid");
    expect_status(la_short_conv_forward(v, NULL, NULL, v, NULL, NULL, LA_ACT_SILU, 1, 2, 2, 4,
                                        NULL), LA_STATUS_INVALID_ARG, "conv x NULL");
    expect_status(la_short_conv_backward(v, v, v, v, v, NULL, v, NULL, NULL, NULL, LA_ACT_SILU, 1,
                                         2, 2, 4, false, NULL),
                  LA_STATUS_INVALID_ARG, "conv backward w NULL");
    o.cu_seqlens = cu_bad;
    o.n_seqs = 2;
    expect_status(la_short_conv_forward(v, NULL, v, v, NULL, NULL, LA_ACT_SILU, 1, 2, 2, 4, &o),
                  LA_STATUS_CU_SEQLENS, "conv cu_seqlens decreasing");
    o.cu_seqlens = cu_end;
    expect_status(la_short_conv_forward(v, NULL, v, v, NULL, NULL, LA_ACT_SILU, 1, 2, 2, 4, &o),
                  LA_STATUS_CU_SEQLENS, "conv cu_seqlens[N] != T");
    expect_status(la_short_conv_backward(v, v, v, v, v, NULL, v, v, NULL, NULL, LA_ACT_SILU, 2,
                                         3, 2, 4, false, &o),
                  LA_STATUS_CU_SEQLENS, "conv cu_seqlens with B = 2");
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

static double o_ce(double * dl, const double * x, const int64_t * tg, int64_t rows,
                   int64_t vocab, int64_t ignore) {
    int64_t count = 0;
    for (int64_t r = 0; r < rows; r++) count += tg[r] != ignore;
    double L = 0;
    for (int64_t r = 0; r < rows; r++) {
        const double * xr = x + r * vocab;
        if (tg[r] == ignore) {
            if (dl) memset(dl + r * vocab, 0, (size_t)vocab * 8);
            continue;
        }
        double m = xr[0], s = 0;
        for (int64_t v = 1; v < vocab; v++) m = fmax(m, xr[v]);
        for (int64_t v = 0; v < vocab; v++) s += exp(xr[v] - m);
        L += m + log(s) - xr[tg[r]];
        for (int64_t v = 0; dl && v < vocab; v++)
            dl[r * vocab + v] = (exp(xr[v] - m) / s - (v == tg[r])) / (double)count;
    }
    return count ? L / (double)count : 0.0;
}

typedef struct ce_fd { double * x; const int64_t * tg; int64_t rows, vocab; } ce_fd;
static double ce_loss(void * p) {
    const ce_fd * f = p;
    return o_ce(NULL, f->x, f->tg, f->rows, f->vocab, -100);
}

typedef enum { CE_NORMAL, CE_HUGE, CE_ALL_IGNORED } ce_kind;

static void ce_case(int64_t rows, int64_t vocab, ce_kind kind, int threads, float ** keep,
                    double * keep_loss) {
    const int64_t n = rows * vocab;
    float * x = la_new_normal(&g_rng, n, 2.0);
    int64_t * tg = la_test_alloc((size_t)rows * 8);
    fill_ids(tg, rows, vocab);
    for (int64_t r = 0; r < rows; r++)
        if (kind == CE_ALL_IGNORED || (rows > 1 && r % 3 == 1)) tg[r] = -100;
    if (kind == CE_HUGE)
        for (int64_t i = 0; i < n; i++) {
            const double u = la_rng_uniform(&g_rng);
            x[i] = u < 0.3 ? 1e4f : u < 0.6 ? -1e4f : x[i];
        }
    double * xd = la_to_f64(x, n), * dlr = new_d(n);
    const double Lr = o_ce(dlr, xd, tg, rows, vocab, -100);
    if (threads) la_set_num_threads(threads);
    char tag[96];
    snprintf(tag, sizeof tag, "cross_entropy rows=%lld vocab=%lld%s t%d", (long long)rows,
             (long long)vocab, kind == CE_HUGE ? " logits +-1e4" : kind == CE_ALL_IGNORED
                                                  ? " all ignored" : "", threads);
    double L = (double)NAN, L2 = L, L3 = L;
    float * dl = nan_buf(n);
    la_status st = la_cross_entropy(&L, dl, x, tg, rows, vocab, -100);
    la_check(st == LA_STATUS_OK && fabs(L - Lr) <= 1e-6 * (1 + fabs(Lr)),
             "%s loss %.12g ref %.12g", tag, L, Lr);
    la_check_rel(NM("%s dlogits", tag), dl, dlr, n, TOL_ELEM);
    if (kind == CE_ALL_IGNORED) {
        bool zero = L == 0.0;
        for (int64_t i = 0; i < n; i++) zero = zero && dl[i] == 0.0f;
        la_check(zero, "%s: loss 0 and dlogits all zero", tag);
    }
    // dlogits in place of logits, and without dlogits: the same bits.
    float * xi = copy_f(x, n);
    la_cross_entropy(&L2, xi, xi, tg, rows, vocab, -100);
    la_cross_entropy(&L3, NULL, x, tg, rows, vocab, -100);
    la_check(same(xi, dl, n) && L2 == L && L3 == L,
             "%s in place and loss-only: bitwise equal", tag);
    if (keep) {
        *keep = dl;
        *keep_loss = L;
    } else {
        free(dl);
    }
    if (threads) la_set_num_threads(0);
    free(x); free(tg); free(xd); free(dlr); free(xi);
}

static void test_ce(void) {
    {   // the oracle's gradient against finite differences of its loss
        const int64_t rows = 5, vocab = 4, tg[5] = { 2, -100, 0, 3, 3 };
        ce_fd f = { new_d(rows * vocab), tg, rows, vocab };
        for (int64_t i = 0; i < rows * vocab; i++) f.x[i] = 2.0 * la_rng_normal(&g_rng);
        double * an = new_d(rows * vocab), * fd = new_d(rows * vocab);
        o_ce(an, f.x, tg, rows, vocab, -100);
        double * xs[1] = { f.x }, * gs[1] = { fd };
        int64_t ns[1] = { rows * vocab };
        la_fd_grads(1, xs, ns, gs, FD_STEP, ce_loss, &f);
        la_check_fd("cross_entropy oracle dlogits vs finite differences", an, fd, rows * vocab,
                    TOL_FD);
        free(f.x); free(an); free(fd);
    }
    ce_case(1, 3, CE_NORMAL, 0, NULL, NULL);
    ce_case(7, 3, CE_NORMAL, 0, NULL, NULL);
    ce_case(33, 1000, CE_NORMAL, 0, NULL, NULL);
    ce_case(7, 1000, CE_ALL_IGNORED, 0, NULL, NULL);
    ce_case(7, 1000, CE_HUGE, 0, NULL, NULL);
    ce_case(1, 1, CE_NORMAL, 0, NULL, NULL);
    float * a, * b;
    double La, Lb;
    la_rng save = g_rng;
    ce_case(200, 1000, CE_NORMAL, 1, &a, &La);
    g_rng = save;
    ce_case(200, 1000, CE_NORMAL, 2, &b, &Lb);
    la_check(same(a, b, 200 * 1000) && La == Lb, "cross_entropy 1 vs 2 threads bitwise");
    free(a); free(b);
    float x[6] = { 1, 2, 3, 4, 5, 6 }, dl[6];
    for (int i = 0; i < 6; i++) dl[i] = 42.0f;
    double L = 42.0;
    const int64_t bad[2] = { 1, 3 }, neg[2] = { -1, 0 };
    expect_status(la_cross_entropy(&L, dl, x, bad, 2, 3, -100), LA_STATUS_INVALID_ARG,
                  "cross_entropy target = vocab");
    expect_status(la_cross_entropy(&L, dl, x, neg, 2, 3, -100), LA_STATUS_INVALID_ARG,
                  "cross_entropy target = -1");
    bool untouched = L == 42.0;
    for (int i = 0; i < 6; i++) untouched = untouched && dl[i] == 42.0f;
    la_check(untouched, "cross_entropy bad targets: nothing written");
    expect_status(la_cross_entropy(&L, dl, x, neg, 0, 3, -100), LA_STATUS_SHAPE,
                  "cross_entropy rows = 0");
    expect_status(la_cross_entropy(&L, dl, NULL, neg, 2, 3, -1), LA_STATUS_INVALID_ARG,
                  "cross_entropy logits NULL");
    expect_status(la_cross_entropy(NULL, dl, x, neg, 2, 3, -1), LA_STATUS_INVALID_ARG,
                  "cross_entropy loss NULL");
}

int main(void) {
    la_rng_seed(&g_rng, 20240611);
    test_act();
    test_linear();
    test_embedding();
    test_norms();
    test_mlp();
    test_conv();
    test_ce();
    return la_test_summary();
}
