// The op runner (`linattn op`) on the delta-rule family: delta_rule, gated_delta_rule, kda,
// dplr_delta_rule, iplr_delta_rule, rwkv7.
//  * one good run per op (forward and backward, with the op's flags, GVA and varlen where the
//    op has them): every tensor of OUT equals a direct library call on the same inputs,
//    bitwise (same code, one thread), and OUT holds exactly o, final_state and, with
//    --backward, "d" + the name of every floating input;
//  * bad calls: missing and misshaped tensors, parameters without their flag, flags the op
//    does not take, non-finite inputs, bad --lower-bound values; each must exit with status 2,
//    print exactly one line on stderr starting with "linattn: error:", and leave an existing
//    OUT byte-identical (LA_TEST_VERBOSE=1 prints each case's message).
// Inputs are named like fla's keyword arguments. The program path comes from $LA_BIN.
#include "testlib.h"

#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char * g_bin;
static char g_dir[256];

// ---------------------------------------------------------------------------------------------
// Checks: a line only on failure (passes are handed to testlib's tally at the end, muted).

static int64_t g_passed;

static bool expect(bool ok, const char * fmt, ...) __attribute__((format(printf, 2, 3)));
static bool expect(bool ok, const char * fmt, ...) {
    if (ok) {
        g_passed++;
        return true;
    }
    char buf[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    la_check(false, "%s", buf);
    return false;
}

static int finish(void) {
    fflush(stdout);
    const int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY);
    const bool mute = saved >= 0 && null >= 0 && dup2(null, STDOUT_FILENO) >= 0;
    for (int64_t i = 0; i < g_passed; i++) la_check(true, "-");
    fflush(stdout);
    if (mute) dup2(saved, STDOUT_FILENO);
    if (null >= 0) close(null);
    if (saved >= 0) close(saved);
    return la_test_summary();
}

// ---------------------------------------------------------------------------------------------
// Files and the program.

typedef struct tin {
    const char * name;
    la_dtype     dtype;
    int32_t      ndim;
    int64_t      shape[5];
    const void * data;
} tin;

static void write_st(const char * path, const tin * t, int n) {
    la_st_writer * w = la_st_writer_new();
    char err[512];
    for (int i = 0; i < n; i++)
        if (la_st_writer_add(w, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, t[i].data, err,
                             sizeof err) != LA_STATUS_OK) {
            fprintf(stderr, "writer: %s\n", err);
            exit(1);
        }
    if (la_st_writer_save(w, path, err, sizeof err) != LA_STATUS_OK) {
        fprintf(stderr, "save: %s\n", err);
        exit(1);
    }
    la_st_writer_free(w);
}

static char * read_all(const char * path, size_t * n) {
    FILE * f = fopen(path, "rb");
    if (!f) { *n = 0; return NULL; }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char * b = la_test_alloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static char * path_of(const char * name) {
    static char buf[8][512];
    static int k;
    char * p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

// Runs "$LA_BIN op ARGS"; returns the exit status, the number of stderr lines and the first.
static int run(const char * args, int * nlines, char * first, size_t nfirst) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s op %s >%s 2>%s", g_bin, args, path_of("stdout.txt"),
             path_of("stderr.txt"));
    int st = system(cmd);
    size_t n;
    char * e = read_all(path_of("stderr.txt"), &n);
    *nlines = 0;
    first[0] = 0;
    for (size_t i = 0; e && i < n; i++)
        if (e[i] == '\n') (*nlines)++;
    if (e) {
        size_t l = strcspn(e, "\n");
        snprintf(first, nfirst, "%.*s", (int)(l < nfirst - 1 ? l : nfirst - 1), e);
    }
    free(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// ---------------------------------------------------------------------------------------------
// Good runs.

typedef struct want_out {
    const char *  name;
    const float * ref;
    int64_t       n;
} want_out;

// Runs the op on `in` and compares OUT with the library's results `w` (exactly these tensors).
static void good_run(const char * tag, const char * op, const char * flags, const tin * in,
                     int nin, const want_out * w, int nw) {
    write_st(path_of("in.safetensors"), in, nin);
    char args[2048];
    snprintf(args, sizeof args, "%s --in %s --out %s --threads 1 %s", op,
             path_of("in.safetensors"), path_of("out.safetensors"), flags);
    remove(path_of("out.safetensors"));
    int nl;
    char first[512];
    const int st = run(args, &nl, first, sizeof first);
    if (!expect(st == 0 && nl == 0, "%s: exit %d, %d stderr lines: %s", tag, st, nl, first))
        return;
    la_st_file * f;
    char err[512];
    if (!expect(la_st_open(&f, path_of("out.safetensors"), err, sizeof err) == LA_STATUS_OK,
                "%s: OUT does not open: %s", tag, err))
        return;
    expect(la_st_count(f) == nw, "%s: OUT holds %lld tensors, want %d", tag,
           (long long)la_st_count(f), nw);
    for (int i = 0; i < nw; i++) {
        const la_st_tensor * t = la_st_find(f, w[i].name);
        if (!expect(t != NULL && t->dtype == LA_DTYPE_F32 && t->numel == w[i].n,
                    "%s: OUT lacks '%s' (float32, %lld entries)", tag, w[i].name,
                    (long long)w[i].n))
            continue;
        float * x = la_test_alloc((size_t)w[i].n * 4);
        la_st_read_f32(f, t, x, w[i].n, NULL, 0);
        int64_t bad = 0;
        for (int64_t e = 0; e < w[i].n; e++)
            if (memcmp(&x[e], &w[i].ref[e], 4) != 0) bad++;
        expect(bad == 0, "%s: OUT '%s' differs from the library call in %lld of %lld entries",
               tag, w[i].name, (long long)bad, (long long)w[i].n);
        free(x);
    }
    la_st_close(f);
}

static float * normal(la_rng * r, int64_t n, double std) { return la_new_normal(r, n, std); }
static float * unit_rows(la_rng * r, int64_t rows, int64_t d) {
    float * x = la_new_normal(r, rows * d, 1.0);
    la_l2norm_rows(x, rows, d);
    return x;
}
static float * logsig(la_rng * r, int64_t n) {
    float * x = la_test_alloc((size_t)n * 4);
    la_fill_logsigmoid(r, x, n);
    return x;
}

// delta_rule: chunk C = 16 with the l2norm flag; and without beta (recurrent, forward only).
static void good_delta_rule(void) {
    la_rng r;
    la_rng_seed(&r, 1);
    const int64_t B = 2, T = 21, H = 2, K = 8, V = 5, nq = B * T * H * K, nv = B * T * H * V;
    const int64_t nb = B * T * H, ns = B * H * K * V;
    float * q = normal(&r, nq, 1), * k = normal(&r, nq, 1), * v = normal(&r, nv, 1);
    float * beta = la_new_uniform(&r, nb, 0.05, 1.0), * s0 = normal(&r, ns, 0.5);
    float * dout = normal(&r, nv, 1), * dfs = normal(&r, ns, 1);
    tin in[7] = { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
                  { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v },
                  { "beta", LA_DTYPE_F32, 3, { B, T, H }, beta },
                  { "initial_state", LA_DTYPE_F32, 4, { B, H, K, V }, s0 },
                  { "do", LA_DTYPE_F32, 4, { B, T, H, V }, dout },
                  { "dfinal_state", LA_DTYPE_F32, 4, { B, H, K, V }, dfs } };
    la_set_num_threads(1);
    la_opts o = la_opts_default();
    o.chunk_size = 16;
    o.use_qk_l2norm_in_kernel = true;
    la_shape sh = { B, T, H, K, V, 0 };
    float * ro = la_test_alloc(nv * 4), * rf = la_test_alloc(ns * 4);
    float * dq = la_test_alloc(nq * 4), * dk = la_test_alloc(nq * 4), * dv = la_test_alloc(nv * 4);
    float * db = la_test_alloc(nb * 4), * ds = la_test_alloc(ns * 4);
    la_status s1 = la_delta_rule_forward(ro, rf, q, k, v, beta, s0, sh, &o);
    la_status s2 = la_delta_rule_backward(dq, dk, dv, db, ds, dout, dfs, q, k, v, beta, s0, sh, &o);
    if (expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "delta_rule library call failed")) {
        want_out w[7] = { { "o", ro, nv }, { "final_state", rf, ns }, { "dq", dq, nq },
                          { "dk", dk, nq }, { "dv", dv, nv }, { "dbeta", db, nb },
                          { "dinitial_state", ds, ns } };
        good_run("runner delta_rule chunk16 l2norm backward", "delta_rule",
                 "--form chunk --chunk-size 16 --use-qk-l2norm-in-kernel --backward", in, 7, w, 7);
    }
    // without beta (beta = 1), recurrent form, forward only
    la_opts o2 = la_opts_default();
    o2.form = LA_FORM_RECURRENT;
    la_l2norm_rows(k, B * T * H, K);
    s1 = la_delta_rule_forward(ro, rf, q, k, v, NULL, s0, sh, &o2);
    if (expect(s1 == LA_STATUS_OK, "delta_rule library call without beta failed")) {
        tin in2[4] = { in[0], in[1], in[2], in[4] };
        want_out w[2] = { { "o", ro, nv }, { "final_state", rf, ns } };
        good_run("runner delta_rule recurrent without beta", "delta_rule", "--form recurrent", in2,
                 4, w, 2);
    }
    la_set_num_threads(0);
    free(q); free(k); free(v); free(beta); free(s0); free(dout); free(dfs);
    free(ro); free(rf); free(dq); free(dk); free(dv); free(db); free(ds);
}

// gated_delta_rule and kda: GVA (H = 2, HV = 4), varlen, raw gates through the gate flag.
// kda runs the lower-bound gate without A_log (recurrent form) and the softplus gate (chunk,
// forward only).
static void good_gdn_kda(bool kda) {
    la_rng r;
    la_rng_seed(&r, kda ? 3 : 2);
    const int64_t T = 23, H = 2, HV = 4, K = 6, V = 5, N = 3, GK = kda ? K : 1;
    const int64_t nq = T * H * K, nv = T * HV * V, nb = T * HV, ng = nb * GK, ns = N * HV * K * V;
    const int64_t ndt = HV * GK;
    int64_t cu[4] = { 0, 9, 9, T };
    float * q = normal(&r, nq, 1), * k = normal(&r, nq, 1), * v = normal(&r, nv, 1);
    float * g = normal(&r, ng, 1), * beta = normal(&r, nb, 1.5);
    float * A_log = la_new_uniform(&r, HV, 0.0, 2.0), * dtb = normal(&r, ndt, 0.5);
    float * s0 = normal(&r, ns, 0.5), * dout = normal(&r, nv, 1), * dfs = normal(&r, ns, 1);
    tin in[11];
    int n = 0;
    in[n++] = (tin){ "q", LA_DTYPE_F32, 4, { 1, T, H, K }, q };
    in[n++] = (tin){ "k", LA_DTYPE_F32, 4, { 1, T, H, K }, k };
    in[n++] = (tin){ "v", LA_DTYPE_F32, 4, { 1, T, HV, V }, v };
    in[n++] = kda ? (tin){ "g", LA_DTYPE_F32, 4, { 1, T, HV, K }, g }
                  : (tin){ "g", LA_DTYPE_F32, 3, { 1, T, HV }, g };
    in[n++] = (tin){ "beta", LA_DTYPE_F32, 3, { 1, T, HV }, beta };
    if (!kda) in[n++] = (tin){ "A_log", LA_DTYPE_F32, 1, { HV }, A_log };
    in[n++] = (tin){ "dt_bias", LA_DTYPE_F32, 1, { ndt }, dtb };
    in[n++] = (tin){ "initial_state", LA_DTYPE_F32, 4, { N, HV, K, V }, s0 };
    in[n++] = (tin){ "cu_seqlens", LA_DTYPE_I64, 1, { N + 1 }, cu };
    in[n++] = (tin){ "do", LA_DTYPE_F32, 4, { 1, T, HV, V }, dout };
    in[n++] = (tin){ "dfinal_state", LA_DTYPE_F32, 4, { N, HV, K, V }, dfs };
    la_set_num_threads(1);
    la_opts o = la_opts_default();
    o.cu_seqlens = cu;
    o.n_seqs = N;
    o.use_qk_l2norm_in_kernel = true;
    o.use_beta_sigmoid_in_kernel = true;
    o.use_gate_in_kernel = true;
    if (kda) {
        o.form = LA_FORM_RECURRENT;
        o.lower_bound = -5.0f;
    } else {
        o.allow_neg_eigval = true;
        o.scale = 0.5f;
    }
    la_shape sh = { 1, T, H, K, V, HV };
    float * ro = la_test_alloc(nv * 4), * rf = la_test_alloc(ns * 4);
    float * dq = la_test_alloc(nq * 4), * dk = la_test_alloc(nq * 4), * dv = la_test_alloc(nv * 4);
    float * dg = la_test_alloc(ng * 4), * db = la_test_alloc(nb * 4), * dA = la_test_alloc(HV * 4);
    float * ddt = la_test_alloc(ndt * 4), * ds = la_test_alloc(ns * 4);
    const float * al = kda ? NULL : A_log;
    la_status s1, s2;
    if (kda) {
        s1 = la_kda_forward(ro, rf, q, k, v, g, beta, al, dtb, s0, sh, &o);
        s2 = la_kda_backward(dq, dk, dv, dg, db, NULL, ddt, ds, dout, dfs, q, k, v, g, beta, al,
                             dtb, s0, sh, &o);
    } else {
        s1 = la_gated_delta_rule_forward(ro, rf, q, k, v, g, beta, al, dtb, s0, sh, &o);
        s2 = la_gated_delta_rule_backward(dq, dk, dv, dg, db, dA, ddt, ds, dout, dfs, q, k, v, g,
                                          beta, al, dtb, s0, sh, &o);
    }
    const char * op = kda ? "kda" : "gated_delta_rule";
    if (expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s library call failed (%s, %s)", op,
               la_status_str(s1), la_status_str(s2))) {
        want_out w[10];
        int nw = 0;
        w[nw++] = (want_out){ "o", ro, nv };
        w[nw++] = (want_out){ "final_state", rf, ns };
        w[nw++] = (want_out){ "dq", dq, nq };
        w[nw++] = (want_out){ "dk", dk, nq };
        w[nw++] = (want_out){ "dv", dv, nv };
        w[nw++] = (want_out){ "dg", dg, ng };
        w[nw++] = (want_out){ "dbeta", db, nb };
        if (!kda) w[nw++] = (want_out){ "dA_log", dA, HV };
        w[nw++] = (want_out){ "ddt_bias", ddt, ndt };
        w[nw++] = (want_out){ "dinitial_state", ds, ns };
        if (kda)
            good_run("runner kda recurrent varlen GVA lower-bound gate without A_log backward",
                     "kda",
                     "--form recurrent --use-qk-l2norm-in-kernel --use-beta-sigmoid-in-kernel "
                     "--use-gate-in-kernel --lower-bound -5 --backward", in, n, w, nw);
        else
            good_run("runner gated_delta_rule chunk varlen GVA all flags backward",
                     "gated_delta_rule",
                     "--use-qk-l2norm-in-kernel --use-beta-sigmoid-in-kernel --allow-neg-eigval "
                     "--use-gate-in-kernel --scale 0.5 --backward", in, n, w, nw);
    }
    if (kda) {   // the softplus gate with A_log, chunk form C = 24, forward only
        la_opts o2 = la_opts_default();
        o2.chunk_size = 24;
        o2.cu_seqlens = cu;
        o2.n_seqs = N;
        o2.use_gate_in_kernel = true;
        la_l2norm_rows(k, T * H, K);   // no l2norm flag here
        s1 = la_kda_forward(ro, rf, q, k, v, g, beta, A_log, dtb, s0, sh, &o2);
        if (expect(s1 == LA_STATUS_OK, "kda library call (softplus gate) failed: %s",
                   la_status_str(s1))) {
            tin in2[9] = { in[0], in[1], in[2], in[3], in[4],
                           { "A_log", LA_DTYPE_F32, 1, { HV }, A_log }, in[5], in[6], in[7] };
            want_out w[2] = { { "o", ro, nv }, { "final_state", rf, ns } };
            good_run("runner kda chunk24 softplus gate", "kda",
                     "--form chunk --chunk-size 24 --use-gate-in-kernel", in2, 9, w, 2);
        }
    }
    la_set_num_threads(0);
    free(q); free(k); free(v); free(g); free(beta); free(A_log); free(dtb); free(s0); free(dout);
    free(dfs); free(ro); free(rf); free(dq); free(dk); free(dv); free(dg); free(db); free(dA);
    free(ddt); free(ds);
}

// dplr_delta_rule (chunk C = 24), iplr_delta_rule (ref), rwkv7 (chunk, default scale 1).
static void good_dplr_family(void) {
    la_rng r;
    la_rng_seed(&r, 4);
    const int64_t B = 2, T = 19, H = 2, K = 8, V = 5, nq = B * T * H * K, nv = B * T * H * V;
    const int64_t ns = B * H * K * V;
    float * q = normal(&r, nq, 1), * k = unit_rows(&r, B * T * H, K), * v = normal(&r, nv, 1);
    float * kk = unit_rows(&r, B * T * H, K), * gk = logsig(&r, nq);
    float * a = la_test_alloc(nq * 4), * b = la_test_alloc(nq * 4);
    for (int64_t e = 0; e < nq; e++) {
        a[e] = -kk[e];
        b[e] = kk[e] * (float)la_rng_uniform(&r);
    }
    float * s0 = normal(&r, ns, 0.5), * dout = normal(&r, nv, 1), * dfs = normal(&r, ns, 1);
    float * ro = la_test_alloc(nv * 4), * rf = la_test_alloc(ns * 4);
    float * dq = la_test_alloc(nq * 4), * dk = la_test_alloc(nq * 4), * dv = la_test_alloc(nv * 4);
    float * da = la_test_alloc(nq * 4), * db = la_test_alloc(nq * 4), * dg = la_test_alloc(nq * 4);
    float * ds = la_test_alloc(ns * 4);
    la_shape sh = { B, T, H, K, V, 0 };
    la_set_num_threads(1);
    for (int op = 0; op < 3; op++) {
        const bool rw = op == 2, ip = op == 1;
        la_opts o = la_opts_default();
        if (op == 0) o.chunk_size = 24;
        if (ip) o.form = LA_FORM_REF;
        la_status s1, s2;
        if (op == 0) {
            s1 = la_dplr_delta_rule_forward(ro, rf, q, k, v, a, b, gk, s0, sh, &o);
            s2 = la_dplr_delta_rule_backward(dq, dk, dv, da, db, dg, ds, dout, dfs, q, k, v, a, b,
                                             gk, s0, sh, &o);
        } else if (ip) {
            s1 = la_iplr_delta_rule_forward(ro, rf, q, k, v, a, b, s0, sh, &o);
            s2 = la_iplr_delta_rule_backward(dq, dk, dv, da, db, ds, dout, dfs, q, k, v, a, b, s0,
                                             sh, &o);
        } else {
            s1 = la_rwkv7_forward(ro, rf, q, gk, k, v, a, b, s0, sh, &o);
            s2 = la_rwkv7_backward(dq, dg, dk, dv, da, db, ds, dout, dfs, q, gk, k, v, a, b, s0,
                                   sh, &o);
        }
        const char * name = rw ? "rwkv7" : ip ? "iplr_delta_rule" : "dplr_delta_rule";
        if (!expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s library call failed (%s, %s)",
                    name, la_status_str(s1), la_status_str(s2)))
            continue;
        tin in[10];
        int n = 0;
        in[n++] = (tin){ rw ? "r" : "q", LA_DTYPE_F32, 4, { B, T, H, K }, q };
        if (!ip) in[n++] = (tin){ rw ? "w" : "gk", LA_DTYPE_F32, 4, { B, T, H, K }, gk };
        in[n++] = (tin){ "k", LA_DTYPE_F32, 4, { B, T, H, K }, k };
        in[n++] = (tin){ "v", LA_DTYPE_F32, 4, { B, T, H, V }, v };
        in[n++] = (tin){ "a", LA_DTYPE_F32, 4, { B, T, H, K }, a };
        in[n++] = (tin){ "b", LA_DTYPE_F32, 4, { B, T, H, K }, b };
        in[n++] = (tin){ "initial_state", LA_DTYPE_F32, 4, { B, H, K, V }, s0 };
        in[n++] = (tin){ "do", LA_DTYPE_F32, 4, { B, T, H, V }, dout };
        in[n++] = (tin){ "dfinal_state", LA_DTYPE_F32, 4, { B, H, K, V }, dfs };
        want_out w[9];
        int nw = 0;
        w[nw++] = (want_out){ "o", ro, nv };
        w[nw++] = (want_out){ "final_state", rf, ns };
        w[nw++] = (want_out){ rw ? "dr" : "dq", dq, nq };
        if (!ip) w[nw++] = (want_out){ rw ? "dw" : "dgk", dg, nq };
        w[nw++] = (want_out){ "dk", dk, nq };
        w[nw++] = (want_out){ "dv", dv, nv };
        w[nw++] = (want_out){ "da", da, nq };
        w[nw++] = (want_out){ "db", db, nq };
        w[nw++] = (want_out){ "dinitial_state", ds, ns };
        char tag[160];
        snprintf(tag, sizeof tag, "runner %s backward", name);
        good_run(tag, name,
                 op == 0 ? "--form chunk --chunk-size 24 --backward"
                 : ip    ? "--form ref --backward"
                         : "--backward",
                 in, n, w, nw);
    }
    la_set_num_threads(0);
    free(q); free(k); free(v); free(kk); free(gk); free(a); free(b); free(s0); free(dout);
    free(dfs); free(ro); free(rf); free(dq); free(dk); free(dv); free(da); free(db); free(dg);
    free(ds);
}

// ---------------------------------------------------------------------------------------------
// Bad calls: status 2, one stderr line "linattn: error: ...", an existing OUT untouched.

static void expect_fail(const char * what, const char * args) {
    static const char sentinel[] = "an existing OUT must survive a failed run";
    FILE * f = fopen(path_of("keep.safetensors"), "wb");
    if (!f || fwrite(sentinel, 1, sizeof sentinel, f) != sizeof sentinel) {
        perror("keep.safetensors");
        exit(1);
    }
    fclose(f);
    char full[3072];
    snprintf(full, sizeof full, "%s --out %s", args, path_of("keep.safetensors"));
    int nl;
    char first[512];
    const int st = run(full, &nl, first, sizeof first);
    size_t n;
    char * after = read_all(path_of("keep.safetensors"), &n);
    const bool intact = after && n == sizeof sentinel && !memcmp(after, sentinel, n);
    free(after);
    if (getenv("LA_TEST_VERBOSE")) printf("%-58s -> %s\n", what, first);
    expect(st == 2 && nl == 1 && !strncmp(first, "linattn: error:", 15) && intact,
           "bad input %s -> status %d, %d stderr line(s), OUT %s: %s", what, st, nl,
           intact ? "intact" : "CHANGED", first);
}

// The tensors of one op's IN file, to be written with some of them dropped or changed.
typedef struct tset {
    tin t[12];
    int n;
} tset;

static void tset_write(const tset * s, const char * file) { write_st(path_of(file), s->t, s->n); }

static int tset_find(const tset * s, const char * name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return i;
    fprintf(stderr, "no tensor %s\n", name);
    exit(1);
}

static tset tset_without(const tset * s, const char * name) {
    tset r = *s;
    const int i = tset_find(s, name);
    memmove(&r.t[i], &r.t[i + 1], (size_t)(r.n - i - 1) * sizeof(tin));
    r.n--;
    return r;
}

static tset tset_with(const tset * s, tin t) {
    tset r = *s;
    r.t[r.n++] = t;
    return r;
}

static void bad_inputs(void) {
    const int64_t B = 1, T = 6, H = 2, HV = 4, K = 4, V = 3;
    // one pool of finite values, large enough for every tensor below
    la_rng r;
    la_rng_seed(&r, 9);
    static float pool[4096], nanp[4096], logp[4096], kk[4096];
    la_fill_normal(&r, pool, 4096, 1.0);
    la_fill_logsigmoid(&r, logp, 4096);
    memcpy(kk, pool, sizeof kk);
    la_l2norm_rows(kk, 1024, K);
    memcpy(nanp, pool, sizeof nanp);
    nanp[5] = NAN;
    char a[2048];
    char in[512];
#define FAIL_WITH(what, ...) do { snprintf(a, sizeof a, __VA_ARGS__); expect_fail(what, a); } while (0)
#define IN(file) (snprintf(in, sizeof in, "%s", path_of(file)), in)

    // delta_rule
    tset dr = { { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, pool },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, kk },
                  { "v", LA_DTYPE_F32, 4, { B, T, H, V }, pool },
                  { "beta", LA_DTYPE_F32, 3, { B, T, H }, pool } }, 4 };
    tset_write(&dr, "dr.safetensors");
    tset s = tset_without(&dr, "v");
    tset_write(&s, "dr_nov.safetensors");
    FAIL_WITH("delta_rule without v", "delta_rule --in %s", IN("dr_nov.safetensors"));
    s = dr;
    s.t[2].shape[2] = HV;   // v with 2H heads, beta still H
    tset_write(&s, "dr_hv.safetensors");
    FAIL_WITH("delta_rule v with HV = 2H", "delta_rule --in %s", IN("dr_hv.safetensors"));
    s.t[3].shape[2] = HV;   // beta with 2H heads too
    tset_write(&s, "dr_hv2.safetensors");
    FAIL_WITH("delta_rule v, beta with HV = 2H", "delta_rule --in %s", IN("dr_hv2.safetensors"));
    s = tset_with(&dr, (tin){ "g", LA_DTYPE_F32, 3, { B, T, H }, logp });
    tset_write(&s, "dr_g.safetensors");
    FAIL_WITH("delta_rule with g", "delta_rule --in %s", IN("dr_g.safetensors"));
    FAIL_WITH("--use-beta-sigmoid-in-kernel on delta_rule",
              "delta_rule --in %s --use-beta-sigmoid-in-kernel", IN("dr.safetensors"));
    FAIL_WITH("--use-gate-in-kernel on delta_rule", "delta_rule --in %s --use-gate-in-kernel",
              IN("dr.safetensors"));
    FAIL_WITH("--lower-bound on delta_rule", "delta_rule --in %s --lower-bound -5",
              IN("dr.safetensors"));
    FAIL_WITH("--backward without do on delta_rule", "delta_rule --in %s --backward",
              IN("dr.safetensors"));
    s = dr;
    s.t[0].data = nanp;
    tset_write(&s, "dr_nan.safetensors");
    FAIL_WITH("NaN in delta_rule q", "delta_rule --in %s", IN("dr_nan.safetensors"));

    // gated_delta_rule (GVA), raw gate through the flag
    tset gd = { { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, pool },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, pool },
                  { "v", LA_DTYPE_F32, 4, { B, T, HV, V }, pool },
                  { "g", LA_DTYPE_F32, 3, { B, T, HV }, pool },
                  { "beta", LA_DTYPE_F32, 3, { B, T, HV }, pool },
                  { "A_log", LA_DTYPE_F32, 1, { HV }, pool },
                  { "dt_bias", LA_DTYPE_F32, 1, { HV }, pool } }, 7 };
    const char * gflags = "--use-gate-in-kernel --use-beta-sigmoid-in-kernel";
    tset_write(&gd, "gd.safetensors");
    s = tset_without(&gd, "beta");
    tset_write(&s, "gd_nobeta.safetensors");
    FAIL_WITH("gated_delta_rule without beta", "gated_delta_rule --in %s %s",
              IN("gd_nobeta.safetensors"), gflags);
    s = tset_without(&gd, "g");
    tset_write(&s, "gd_nog.safetensors");
    FAIL_WITH("gated_delta_rule without g", "gated_delta_rule --in %s %s", IN("gd_nog.safetensors"),
              gflags);
    s = tset_without(&gd, "A_log");
    tset_write(&s, "gd_noA.safetensors");
    FAIL_WITH("gated_delta_rule gate flag without A_log", "gated_delta_rule --in %s %s",
              IN("gd_noA.safetensors"), gflags);
    FAIL_WITH("gated_delta_rule A_log, dt_bias without the gate flag", "gated_delta_rule --in %s",
              IN("gd.safetensors"));
    s = tset_without(&gd, "dt_bias");
    tset_write(&s, "gd_Aonly.safetensors");
    FAIL_WITH("gated_delta_rule A_log without the gate flag", "gated_delta_rule --in %s",
              IN("gd_Aonly.safetensors"));
    s = gd;
    for (int i = 2; i <= 6; i++)   // v, g, beta, A_log, dt_bias with HV = 3, H = 2
        s.t[i].shape[i == 2 ? 2 : i <= 4 ? 2 : 0] = 3;
    tset_write(&s, "gd_hv3.safetensors");
    FAIL_WITH("gated_delta_rule HV = 3 with H = 2", "gated_delta_rule --in %s %s",
              IN("gd_hv3.safetensors"), gflags);
    s = gd;
    s.t[6].shape[0] = HV + 1;
    tset_write(&s, "gd_dtb.safetensors");
    FAIL_WITH("gated_delta_rule dt_bias of HV + 1", "gated_delta_rule --in %s %s",
              IN("gd_dtb.safetensors"), gflags);
    s = gd;
    s.t[5].shape[0] = H;
    tset_write(&s, "gd_A.safetensors");
    FAIL_WITH("gated_delta_rule A_log of H (not HV)", "gated_delta_rule --in %s %s",
              IN("gd_A.safetensors"), gflags);
    s = gd;
    s.t[3] = (tin){ "g", LA_DTYPE_F32, 4, { B, T, HV, K }, pool };
    tset_write(&s, "gd_gk.safetensors");
    FAIL_WITH("gated_delta_rule with a per-channel g", "gated_delta_rule --in %s %s",
              IN("gd_gk.safetensors"), gflags);
    FAIL_WITH("--lower-bound on gated_delta_rule", "gated_delta_rule --in %s %s --lower-bound -5",
              IN("gd.safetensors"), gflags);
    FAIL_WITH("--normalize on gated_delta_rule", "gated_delta_rule --in %s %s --normalize",
              IN("gd.safetensors"), gflags);
    FAIL_WITH("unknown flag on gated_delta_rule", "gated_delta_rule --in %s %s --frobnicate",
              IN("gd.safetensors"), gflags);
    s = gd;
    s.t[0].data = nanp;
    tset_write(&s, "gd_nan.safetensors");
    FAIL_WITH("NaN in gated_delta_rule q", "gated_delta_rule --in %s %s",
              IN("gd_nan.safetensors"), gflags);
    s = gd;
    s.t[5].data = nanp + 4;   // A_log[1] = NaN
    tset_write(&s, "gd_nanA.safetensors");
    FAIL_WITH("NaN in gated_delta_rule A_log", "gated_delta_rule --in %s %s",
              IN("gd_nanA.safetensors"), gflags);
    s = tset_with(&gd, (tin){ "initial_state", LA_DTYPE_F32, 4, { B, H, K, V }, pool });
    tset_write(&s, "gd_s0.safetensors");
    FAIL_WITH("gated_delta_rule initial_state with H (not HV) heads",
              "gated_delta_rule --in %s %s", IN("gd_s0.safetensors"), gflags);

    // kda
    tset kd = { { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, pool },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, pool },
                  { "v", LA_DTYPE_F32, 4, { B, T, HV, V }, pool },
                  { "g", LA_DTYPE_F32, 4, { B, T, HV, K }, pool },
                  { "beta", LA_DTYPE_F32, 3, { B, T, HV }, pool },
                  { "A_log", LA_DTYPE_F32, 1, { HV }, pool },
                  { "dt_bias", LA_DTYPE_F32, 1, { HV * K }, pool } }, 7 };
    tset_write(&kd, "kd.safetensors");
    s = kd;
    s.t[3].shape[3] = K + 1;
    tset_write(&s, "kd_gK.safetensors");
    FAIL_WITH("kda g with K + 1 channels", "kda --in %s %s", IN("kd_gK.safetensors"), gflags);
    s = kd;
    s.t[3] = (tin){ "g", LA_DTYPE_F32, 3, { B, T, HV }, pool };
    tset_write(&s, "kd_g3.safetensors");
    FAIL_WITH("kda g without the K axis", "kda --in %s %s", IN("kd_g3.safetensors"), gflags);
    s = kd;
    s.t[6].shape[0] = HV;
    tset_write(&s, "kd_dtb.safetensors");
    FAIL_WITH("kda dt_bias of HV (not HV*K)", "kda --in %s %s", IN("kd_dtb.safetensors"), gflags);
    s = kd;
    s.t[6].ndim = 2;
    s.t[6].shape[0] = HV;
    s.t[6].shape[1] = K;
    tset_write(&s, "kd_dtb2.safetensors");
    FAIL_WITH("kda dt_bias as [HV, K]", "kda --in %s %s", IN("kd_dtb2.safetensors"), gflags);
    s = kd;
    s.t[2].shape[2] = 3;
    s.t[3].shape[2] = 3;
    s.t[4].shape[2] = 3;
    s.t[5].shape[0] = 3;
    s.t[6].shape[0] = 3 * K;
    tset_write(&s, "kd_hv3.safetensors");
    FAIL_WITH("kda HV = 3 with H = 2", "kda --in %s %s", IN("kd_hv3.safetensors"), gflags);
    s = tset_without(&kd, "A_log");
    tset_write(&s, "kd_noA.safetensors");
    FAIL_WITH("kda softplus gate without A_log", "kda --in %s %s", IN("kd_noA.safetensors"),
              gflags);
    FAIL_WITH("kda A_log, dt_bias without the gate flag", "kda --in %s", IN("kd.safetensors"));
    FAIL_WITH("--normalize on kda", "kda --in %s %s --normalize", IN("kd.safetensors"), gflags);
    FAIL_WITH("--delta-softplus on kda", "kda --in %s %s --delta-softplus", IN("kd.safetensors"),
              gflags);
    FAIL_WITH("--lower-bound abc", "kda --in %s %s --lower-bound abc", IN("kd.safetensors"),
              gflags);
    FAIL_WITH("--lower-bound 2 (positive)", "kda --in %s %s --lower-bound 2", IN("kd.safetensors"),
              gflags);
    FAIL_WITH("--lower-bound 0", "kda --in %s %s --lower-bound 0", IN("kd.safetensors"), gflags);
    FAIL_WITH("--lower-bound nan", "kda --in %s %s --lower-bound nan", IN("kd.safetensors"),
              gflags);
    FAIL_WITH("--lower-bound without a value", "kda --in %s %s --lower-bound",
              IN("kd.safetensors"), gflags);
    FAIL_WITH("--lower-bound given twice", "kda --in %s %s --lower-bound -5 --lower-bound -4",
              IN("kd.safetensors"), gflags);
    s = tset_without(&kd, "A_log");
    s = tset_without(&s, "dt_bias");
    tset_write(&s, "kd_plain.safetensors");
    FAIL_WITH("--lower-bound without --use-gate-in-kernel", "kda --in %s --lower-bound -5",
              IN("kd_plain.safetensors"));
    s = kd;
    s.t[3].data = nanp;
    tset_write(&s, "kd_nan.safetensors");
    FAIL_WITH("NaN in kda g", "kda --in %s %s", IN("kd_nan.safetensors"), gflags);
    s = tset_with(&kd, (tin){ "do", LA_DTYPE_F32, 4, { B, T, H, V }, pool });
    tset_write(&s, "kd_do.safetensors");
    FAIL_WITH("kda do with H (not HV) heads", "kda --in %s %s --backward", IN("kd_do.safetensors"),
              gflags);
    FAIL_WITH("kda 'do' without --backward", "kda --in %s %s", IN("kd_do.safetensors"), gflags);

    // dplr_delta_rule, iplr_delta_rule, rwkv7
    tset dp = { { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, pool },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, kk },
                  { "v", LA_DTYPE_F32, 4, { B, T, H, V }, pool },
                  { "a", LA_DTYPE_F32, 4, { B, T, H, K }, kk },
                  { "b", LA_DTYPE_F32, 4, { B, T, H, K }, kk },
                  { "gk", LA_DTYPE_F32, 4, { B, T, H, K }, logp } }, 6 };
    tset_write(&dp, "dp.safetensors");
    s = tset_without(&dp, "gk");
    tset_write(&s, "ip.safetensors");
    FAIL_WITH("dplr_delta_rule without gk", "dplr_delta_rule --in %s", IN("ip.safetensors"));
    FAIL_WITH("iplr_delta_rule with gk", "iplr_delta_rule --in %s", IN("dp.safetensors"));
    s = tset_without(&dp, "a");
    tset_write(&s, "dp_noa.safetensors");
    FAIL_WITH("dplr_delta_rule without a", "dplr_delta_rule --in %s", IN("dp_noa.safetensors"));
    s = tset_without(&s, "gk");
    tset_write(&s, "ip_noa.safetensors");
    FAIL_WITH("iplr_delta_rule without a", "iplr_delta_rule --in %s", IN("ip_noa.safetensors"));
    s = tset_without(&dp, "b");
    s = tset_without(&s, "gk");
    tset_write(&s, "ip_nob.safetensors");
    FAIL_WITH("iplr_delta_rule without b", "iplr_delta_rule --in %s", IN("ip_nob.safetensors"));
    s = dp;
    s.t[2].shape[2] = HV;
    tset_write(&s, "dp_hv.safetensors");
    FAIL_WITH("dplr_delta_rule v with HV = 2H", "dplr_delta_rule --in %s", IN("dp_hv.safetensors"));
    s = dp;
    s.t[5].shape[3] = K + 1;
    tset_write(&s, "dp_gkK.safetensors");
    FAIL_WITH("dplr_delta_rule gk with K + 1", "dplr_delta_rule --in %s",
              IN("dp_gkK.safetensors"));
    FAIL_WITH("--use-qk-l2norm-in-kernel on dplr_delta_rule",
              "dplr_delta_rule --in %s --use-qk-l2norm-in-kernel", IN("dp.safetensors"));
    FAIL_WITH("--use-gate-in-kernel on dplr_delta_rule",
              "dplr_delta_rule --in %s --use-gate-in-kernel", IN("dp.safetensors"));
    FAIL_WITH("--lower-bound on dplr_delta_rule", "dplr_delta_rule --in %s --lower-bound -5",
              IN("dp.safetensors"));
    FAIL_WITH("--use-beta-sigmoid-in-kernel on iplr_delta_rule",
              "iplr_delta_rule --in %s --use-beta-sigmoid-in-kernel", IN("ip.safetensors"));
    s = dp;
    s.t[3].data = nanp;
    tset_write(&s, "dp_nan.safetensors");
    FAIL_WITH("NaN in dplr_delta_rule a", "dplr_delta_rule --in %s", IN("dp_nan.safetensors"));

    tset rw = { { { "r", LA_DTYPE_F32, 4, { B, T, H, K }, pool },
                  { "w", LA_DTYPE_F32, 4, { B, T, H, K }, logp },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, kk },
                  { "v", LA_DTYPE_F32, 4, { B, T, H, V }, pool },
                  { "a", LA_DTYPE_F32, 4, { B, T, H, K }, kk },
                  { "b", LA_DTYPE_F32, 4, { B, T, H, K }, kk } }, 6 };
    tset_write(&rw, "rw.safetensors");
    s = tset_without(&rw, "w");
    tset_write(&s, "rw_now.safetensors");
    FAIL_WITH("rwkv7 without w", "rwkv7 --in %s", IN("rw_now.safetensors"));
    s = rw;
    s.t[0].name = "q";
    tset_write(&s, "rw_q.safetensors");
    FAIL_WITH("rwkv7 with q instead of r", "rwkv7 --in %s", IN("rw_q.safetensors"));
    s = tset_with(&rw, (tin){ "u", LA_DTYPE_F32, 2, { H, K }, pool });
    tset_write(&s, "rw_u.safetensors");
    FAIL_WITH("rwkv7 with u (an rwkv6 input)", "rwkv7 --in %s", IN("rw_u.safetensors"));
    s = rw;
    s.t[4].shape[3] = K - 1;
    tset_write(&s, "rw_aK.safetensors");
    FAIL_WITH("rwkv7 a with K - 1", "rwkv7 --in %s", IN("rw_aK.safetensors"));
    FAIL_WITH("--allow-neg-eigval on rwkv7", "rwkv7 --in %s --allow-neg-eigval",
              IN("rw.safetensors"));
    s = rw;
    s.t[1].data = nanp;
    tset_write(&s, "rw_nan.safetensors");
    FAIL_WITH("NaN in rwkv7 w", "rwkv7 --in %s", IN("rw_nan.safetensors"));
    s = tset_with(&rw, (tin){ "initial_state", LA_DTYPE_F32, 4, { B, H, V, K }, pool });
    tset_write(&s, "rw_s0.safetensors");
    FAIL_WITH("rwkv7 initial_state V-major [N,H,V,K]", "rwkv7 --in %s", IN("rw_s0.safetensors"));
#undef IN
#undef FAIL_WITH
}

int main(void) {
    g_bin = getenv("LA_BIN");
    if (!g_bin) {
        fprintf(stderr, "LA_BIN must name the linattn program\n");
        return 1;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/la_delta_cli_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    good_delta_rule();
    good_gdn_kda(false);
    good_gdn_kda(true);
    good_dplr_family();
    bad_inputs();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return finish();
}
