// The op runner (`linattn op`), end to end through the program:
//  * round trips: inputs written with the safetensors writer, the program's OUT compared with a
//    direct library call on the same inputs (bitwise: same code, same thread count), for every
//    op, forward and backward, varlen with int32 and int64 cu_seqlens, bf16/f16/f64 inputs;
//  * a corpus of bad calls and bad files, each of which must exit with status 2, print exactly
//    one line on stderr that starts with "linattn: error:", and leave an existing OUT intact.
// The program path comes from $LA_BIN (set by CTest).
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char * g_bin;
static char g_dir[256];

// --- files ------------------------------------------------------------------------------------

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

static void write_bytes(const char * path, const void * p, size_t n) {
    FILE * f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { perror(path); exit(1); }
    fclose(f);
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

// Runs the program with `args` (appended to "$LA_BIN op"); returns the exit status and the
// number of stderr lines and the first line.
static int run(const char * args, int * nlines, char * first, size_t nfirst) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s op %s >%s 2>%s", g_bin, args, path_of("stdout.txt"),
             path_of("stderr.txt"));
    int st = system(cmd);
    size_t n;
    char * e = read_all(path_of("stderr.txt"), &n);
    *nlines = 0;
    if (first && nfirst) first[0] = 0;
    for (size_t i = 0; e && i < n; i++)
        if (e[i] == '\n') (*nlines)++;
    if (e && first) {
        size_t l = strcspn(e, "\n");
        snprintf(first, nfirst, "%.*s", (int)(l < nfirst - 1 ? l : nfirst - 1), e);
    }
    free(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static float * get_out(la_st_file * f, const char * name, int64_t n) {
    const la_st_tensor * t = la_st_find(f, name);
    if (!la_check(t != NULL, "OUT holds '%s'", name) || t->numel != n) return NULL;
    float * x = la_test_alloc((size_t)n * 4);
    la_st_read_f32(f, t, x, n, NULL, 0);
    return x;
}

static void expect_equal(la_st_file * f, const char * tag, const char * name, const float * ref,
                         int64_t n) {
    float * x = get_out(f, name, n);
    char nm[128];
    snprintf(nm, sizeof nm, "%s %s", tag, name);
    if (x) la_check_close(nm, x, ref, n, 0, 0);
    free(x);
}

// --- round trips ------------------------------------------------------------------------------

static void roundtrip_simple_gla(bool varlen, bool backward, const char * form) {
    la_rng r;
    la_rng_seed(&r, 42);
    const int64_t B = varlen ? 1 : 2, T = 37, H = 2, K = 8, V = 5;
    const int64_t N = varlen ? 3 : B, nq = B * T * H * K, nv = B * T * H * V, ng = B * T * H;
    const int64_t ns = N * H * K * V;
    float * q = la_test_alloc(nq * 4), * k = la_test_alloc(nq * 4), * v = la_test_alloc(nv * 4);
    float * g = la_test_alloc(ng * 4), * s0 = la_test_alloc(ns * 4);
    float * dout = la_test_alloc(nv * 4), * dfin = la_test_alloc(ns * 4);
    la_fill_normal(&r, q, nq, 1);
    la_fill_normal(&r, k, nq, 0.3);
    la_fill_normal(&r, v, nv, 1);
    la_fill_logsigmoid(&r, g, ng);
    la_fill_normal(&r, s0, ns, 0.5);
    la_fill_normal(&r, dout, nv, 1);
    la_fill_normal(&r, dfin, ns, 1);
    int32_t cu32[4] = { 0, 10, 10, 37 };
    int64_t cu64[4] = { 0, 10, 10, 37 };
    tin in[9] = {
        { "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
        { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
        { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v },
        { "g", LA_DTYPE_F32, 3, { B, T, H }, g },
        { "initial_state", LA_DTYPE_F32, 4, { N, H, K, V }, s0 },
    };
    int n = 5;
    if (varlen) in[n++] = (tin){ "cu_seqlens", LA_DTYPE_I32, 1, { 4 }, cu32 };
    if (backward) {
        in[n++] = (tin){ "do", LA_DTYPE_F32, 4, { B, T, H, V }, dout };
        in[n++] = (tin){ "dfinal_state", LA_DTYPE_F32, 4, { N, H, K, V }, dfin };
    }
    write_st(path_of("in.safetensors"), in, n);
    char args[1024];
    snprintf(args, sizeof args, "simple_gla --in %s --out %s --form %s --threads 2 %s",
             path_of("in.safetensors"), path_of("out.safetensors"), form,
             backward ? "--backward" : "");
    int nl;
    char first[256];
    int st = run(args, &nl, first, sizeof first);
    char tag[128];
    snprintf(tag, sizeof tag, "runner simple_gla %s%s%s", form, varlen ? " varlen" : "",
             backward ? " backward" : "");
    if (!la_check(st == 0, "%s exits 0 (got %d: %s)", tag, st, first)) return;

    la_set_num_threads(2);
    la_opts o = la_opts_default();
    o.form = !strcmp(form, "ref") ? LA_FORM_REF : !strcmp(form, "recurrent") ? LA_FORM_RECURRENT
                                                                               : LA_FORM_CHUNK;
    if (varlen) {
        o.cu_seqlens = cu64;
        o.n_seqs = 3;
    }
    la_shape sh = { B, T, H, K, V };
    float * ro = la_test_alloc(nv * 4), * rf = la_test_alloc(ns * 4);
    la_simple_gla_forward(ro, rf, q, k, v, g, NULL, s0, sh, &o);
    la_st_file * f;
    char err[512];
    if (!la_check(la_st_open(&f, path_of("out.safetensors"), err, sizeof err) == LA_STATUS_OK,
                  "%s OUT opens (%s)", tag, err))
        return;
    expect_equal(f, tag, "o", ro, nv);
    expect_equal(f, tag, "final_state", rf, ns);
    if (backward) {
        float * dq = la_test_alloc(nq * 4), * dk = la_test_alloc(nq * 4);
        float * dv = la_test_alloc(nv * 4), * dg = la_test_alloc(ng * 4);
        float * ds = la_test_alloc(ns * 4);
        la_simple_gla_backward(dq, dk, dv, dg, ds, dout, dfin, q, k, v, g, NULL, s0, sh, &o);
        expect_equal(f, tag, "dq", dq, nq);
        expect_equal(f, tag, "dk", dk, nq);
        expect_equal(f, tag, "dv", dv, nv);
        expect_equal(f, tag, "dg", dg, ng);
        expect_equal(f, tag, "dinitial_state", ds, ns);
        la_check(la_st_count(f) == 7, "%s OUT holds exactly o, final_state and 5 gradients", tag);
        free(dq); free(dk); free(dv); free(dg); free(ds);
    } else {
        la_check(la_st_count(f) == 2, "%s OUT holds exactly o and final_state", tag);
    }
    la_st_close(f);
    la_set_num_threads(0);
    free(q); free(k); free(v); free(g); free(s0); free(dout); free(dfin); free(ro); free(rf);
}

// BF16 inputs are converted to float32 on load; linear_attn --normalize writes final_z.
static void roundtrip_bf16_normalize(void) {
    const int64_t B = 1, T = 9, H = 1, K = 4, V = 3;
    uint16_t qb[36], kb[36], vb[27];
    float qf[36], kf[36], vf[27];
    la_rng r;
    la_rng_seed(&r, 3);
    for (int i = 0; i < 36; i++) {
        float a = (float)la_rng_uniform(&r), b = (float)la_rng_uniform(&r);
        uint32_t ua, ub;
        memcpy(&ua, &a, 4);
        memcpy(&ub, &b, 4);
        qb[i] = (uint16_t)(ua >> 16);
        kb[i] = (uint16_t)(ub >> 16);
        ua = (uint32_t)qb[i] << 16;
        ub = (uint32_t)kb[i] << 16;
        memcpy(&qf[i], &ua, 4);
        memcpy(&kf[i], &ub, 4);
    }
    for (int i = 0; i < 27; i++) {
        float a = (float)la_rng_normal(&r);
        uint32_t u;
        memcpy(&u, &a, 4);
        vb[i] = (uint16_t)(u >> 16);
        u = (uint32_t)vb[i] << 16;
        memcpy(&vf[i], &u, 4);
    }
    float z0[4] = { 0.5f, 1.0f, 2.0f, 0.25f };  // fla's z layout (N, 1, H, K)
    tin in[4] = { { "q", LA_DTYPE_BF16, 4, { B, T, H, K }, qb },
                  { "k", LA_DTYPE_BF16, 4, { B, T, H, K }, kb },
                  { "v", LA_DTYPE_BF16, 4, { B, T, H, V }, vb },
                  { "initial_z", LA_DTYPE_F32, 4, { 1, 1, H, K }, z0 } };
    write_st(path_of("in.safetensors"), in, 4);
    char args[1024];
    snprintf(args, sizeof args, "linear_attn --normalize --in %s --out %s",
             path_of("in.safetensors"), path_of("out.safetensors"));
    int nl;
    char first[256];
    int st = run(args, &nl, first, sizeof first);
    if (!la_check(st == 0, "runner linear_attn bf16 --normalize exits 0 (%s)", first)) return;
    float o[27], fin[12], fz[4];
    la_opts opts = la_opts_default();
    la_shape sh = { B, T, H, K, V };
    la_linear_attn_forward(o, fin, fz, qf, kf, vf, NULL, z0, true, sh, &opts);
    la_st_file * f;
    la_st_open(&f, path_of("out.safetensors"), NULL, 0);
    expect_equal(f, "runner linear_attn bf16 normalize", "o", o, 27);
    expect_equal(f, "runner linear_attn bf16 normalize", "final_z", fz, 4);
    la_st_close(f);
}

// gla (recurrent, with gv) and rwkv6 (chunk), forward and backward, against the library.
static void roundtrip_gla_rwkv6(void) {
    la_rng r;
    la_rng_seed(&r, 8);
    const int64_t B = 1, T = 21, H = 2, K = 6, V = 5, nq = B * T * H * K, nv = B * T * H * V;
    float * q = la_test_alloc(nq * 4), * k = la_test_alloc(nq * 4), * v = la_test_alloc(nv * 4);
    float * gk = la_test_alloc(nq * 4), * gv = la_test_alloc(nv * 4), * u = la_test_alloc(H * K * 4);
    float * dout = la_test_alloc(nv * 4);
    la_fill_normal(&r, q, nq, 1);
    la_fill_normal(&r, k, nq, 0.4);
    la_fill_normal(&r, v, nv, 1);
    la_fill_logsigmoid(&r, gk, nq);
    la_fill_logsigmoid(&r, gv, nv);
    la_fill_normal(&r, u, H * K, 1);
    la_fill_normal(&r, dout, nv, 1);
    la_shape sh = { B, T, H, K, V };
    for (int which = 0; which < 2; which++) {
        const bool rw = which == 1;
        tin in[6] = { { rw ? "r" : "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
                      { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
                      { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v },
                      { rw ? "w" : "gk", LA_DTYPE_F32, 4, { B, T, H, K }, gk },
                      rw ? (tin){ "u", LA_DTYPE_F32, 2, { H, K }, u }
                         : (tin){ "gv", LA_DTYPE_F32, 4, { B, T, H, V }, gv },
                      { "do", LA_DTYPE_F32, 4, { B, T, H, V }, dout } };
        write_st(path_of("in.safetensors"), in, 6);
        char args[1024];
        snprintf(args, sizeof args, "%s --in %s --out %s --form %s --backward --threads 1",
                 rw ? "rwkv6" : "gla", path_of("in.safetensors"), path_of("out.safetensors"),
                 rw ? "chunk" : "recurrent");
        int nl;
        char first[256];
        const char * tag = rw ? "runner rwkv6 chunk backward" : "runner gla recurrent gv backward";
        if (!la_check(run(args, &nl, first, sizeof first) == 0, "%s exits 0 (%s)", tag, first))
            continue;
        la_set_num_threads(1);
        la_opts o = la_opts_default();
        o.form = rw ? LA_FORM_CHUNK : LA_FORM_RECURRENT;
        float * ro = la_test_alloc(nv * 4), * rf = la_test_alloc(H * K * V * 4);
        float * dq = la_test_alloc(nq * 4), * dk = la_test_alloc(nq * 4), * dv = la_test_alloc(nv * 4);
        float * dg = la_test_alloc(nq * 4), * dgv = la_test_alloc(nv * 4), * du = la_test_alloc(H * K * 4);
        if (rw) {
            la_rwkv6_forward(ro, rf, q, k, v, gk, u, NULL, sh, &o);
            la_rwkv6_backward(dq, dk, dv, dg, du, NULL, dout, NULL, q, k, v, gk, u, NULL, sh, &o);
        } else {
            la_gla_forward(ro, rf, q, k, v, gk, gv, NULL, sh, &o);
            la_gla_backward(dq, dk, dv, dg, dgv, NULL, dout, NULL, q, k, v, gk, gv, NULL, sh, &o);
        }
        la_st_file * f;
        if (la_check(la_st_open(&f, path_of("out.safetensors"), NULL, 0) == LA_STATUS_OK, "%s OUT opens", tag)) {
            expect_equal(f, tag, "o", ro, nv);
            expect_equal(f, tag, "final_state", rf, H * K * V);
            expect_equal(f, tag, rw ? "dr" : "dq", dq, nq);
            expect_equal(f, tag, "dk", dk, nq);
            expect_equal(f, tag, "dv", dv, nv);
            expect_equal(f, tag, rw ? "dw" : "dgk", dg, nq);
            if (rw) expect_equal(f, tag, "du", du, H * K);
            else expect_equal(f, tag, "dgv", dgv, nv);
            la_st_close(f);
        }
        la_set_num_threads(0);
        free(ro); free(rf); free(dq); free(dk); free(dv); free(dg); free(dgv); free(du);
    }
    // gv is a recurrent/ref-form input only; rwkv6 needs u.
    tin g2[5] = { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
                  { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v },
                  { "gk", LA_DTYPE_F32, 4, { B, T, H, K }, gk },
                  { "gv", LA_DTYPE_F32, 4, { B, T, H, V }, gv } };
    write_st(path_of("gla_gv.safetensors"), g2, 5);
    write_st(path_of("gla_nogk.safetensors"), g2, 3);
    tin r2[4] = { { "r", LA_DTYPE_F32, 4, { B, T, H, K }, q },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
                  { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v },
                  { "w", LA_DTYPE_F32, 4, { B, T, H, K }, gk } };
    write_st(path_of("rwkv_nou.safetensors"), r2, 4);
    free(q); free(k); free(v); free(gk); free(gv); free(u); free(dout);
}

// hgrn (chunk, varlen) and selective_scan (recurrent, --delta-softplus, D, delta_bias), with
// backward, against the library.
static void roundtrip_hgrn_scan(void) {
    la_rng r;
    la_rng_seed(&r, 12);
    const int64_t T = 19, D = 6, M = 5;
    float x[19 * 6], g[19 * 6], dout[19 * 6], A[6 * 5], Bm[19 * 5], Cm[19 * 5], Dp[6], bias[6];
    float s0[2 * 6];
    la_fill_normal(&r, x, T * D, 1);
    la_fill_logsigmoid(&r, g, T * D);
    la_fill_normal(&r, dout, T * D, 1);
    la_fill_uniform(&r, A, D * M, -2, -0.1);
    la_fill_normal(&r, Bm, T * M, 1);
    la_fill_normal(&r, Cm, T * M, 1);
    la_fill_normal(&r, Dp, D, 1);
    la_fill_normal(&r, bias, D, 0.5);
    la_fill_normal(&r, s0, 2 * D, 1);
    int64_t cu[3] = { 0, 7, 19 };
    tin h[5] = { { "x", LA_DTYPE_F32, 3, { 1, T, D }, x },
                 { "g", LA_DTYPE_F32, 3, { 1, T, D }, g },
                 { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu },
                 { "initial_state", LA_DTYPE_F32, 2, { 2, D }, s0 },
                 { "do", LA_DTYPE_F32, 3, { 1, T, D }, dout } };
    write_st(path_of("hgrn.safetensors"), h, 5);
    char args[1024];
    int nl;
    char first[256];
    snprintf(args, sizeof args, "hgrn --in %s --out %s --backward --chunk-size 4",
             path_of("hgrn.safetensors"), path_of("out.safetensors"));
    if (la_check(run(args, &nl, first, sizeof first) == 0, "runner hgrn exits 0 (%s)", first)) {
        la_opts o = la_opts_default();
        o.chunk_size = 4;
        o.cu_seqlens = cu;
        o.n_seqs = 2;
        float ro[19 * 6], rf[12], dx[19 * 6], dg[19 * 6], ds[12];
        la_hgrn_forward(ro, rf, x, g, s0, 1, T, D, &o);
        la_hgrn_backward(dx, dg, ds, dout, NULL, x, g, s0, 1, T, D, &o);
        la_st_file * f;
        la_st_open(&f, path_of("out.safetensors"), NULL, 0);
        expect_equal(f, "runner hgrn", "o", ro, T * D);
        expect_equal(f, "runner hgrn", "final_state", rf, 2 * D);
        expect_equal(f, "runner hgrn", "dx", dx, T * D);
        expect_equal(f, "runner hgrn", "dg", dg, T * D);
        expect_equal(f, "runner hgrn", "dinitial_state", ds, 2 * D);
        la_st_close(f);
    }
    tin sc[8] = { { "u", LA_DTYPE_F32, 3, { 1, T, D }, x },
                  { "delta", LA_DTYPE_F32, 3, { 1, T, D }, g },
                  { "A", LA_DTYPE_F32, 2, { D, M }, A },
                  { "B", LA_DTYPE_F32, 3, { 1, T, M }, Bm },
                  { "C", LA_DTYPE_F32, 3, { 1, T, M }, Cm },
                  { "D", LA_DTYPE_F32, 1, { D }, Dp },
                  { "delta_bias", LA_DTYPE_F32, 1, { D }, bias },
                  { "do", LA_DTYPE_F32, 3, { 1, T, D }, dout } };
    write_st(path_of("scan.safetensors"), sc, 8);
    sc[2].shape[1] = M - 1;  // A (D, M-1) disagrees with B, C (.., M)
    write_st(path_of("scan_badA.safetensors"), sc, 7);
    sc[2].shape[1] = M;
    snprintf(args, sizeof args,
             "selective_scan --in %s --out %s --backward --delta-softplus --form recurrent",
             path_of("scan.safetensors"), path_of("out.safetensors"));
    if (la_check(run(args, &nl, first, sizeof first) == 0, "runner selective_scan exits 0 (%s)",
                 first)) {
        la_opts o = la_opts_default();
        o.form = LA_FORM_RECURRENT;
        float ro[19 * 6], rf[6 * 5], du[19 * 6], dd[19 * 6], dA[6 * 5], dB[19 * 5], dC[19 * 5];
        float dD[6], db[6];
        la_selective_scan_forward(ro, rf, x, g, A, Bm, Cm, Dp, bias, true, NULL, 1, T, D, M, &o);
        la_selective_scan_backward(du, dd, dA, dB, dC, dD, db, NULL, dout, NULL, x, g, A, Bm, Cm,
                                   Dp, bias, true, NULL, 1, T, D, M, &o);
        la_st_file * f;
        la_st_open(&f, path_of("out.safetensors"), NULL, 0);
        const char * tag = "runner selective_scan";
        expect_equal(f, tag, "o", ro, T * D);
        expect_equal(f, tag, "final_state", rf, D * M);
        expect_equal(f, tag, "du", du, T * D);
        expect_equal(f, tag, "ddelta", dd, T * D);
        expect_equal(f, tag, "dA", dA, D * M);
        expect_equal(f, tag, "dB", dB, T * M);
        expect_equal(f, tag, "dC", dC, T * M);
        expect_equal(f, tag, "dD", dD, D);
        expect_equal(f, tag, "ddelta_bias", db, D);
        la_st_close(f);
    }
}

// --- bad input corpus -------------------------------------------------------------------------

static void expect_fail(const char * what, const char * args) {
    static const char sentinel[] = "existing OUT must survive";
    write_bytes(path_of("keep.safetensors"), sentinel, sizeof sentinel);
    char full[2048];
    snprintf(full, sizeof full, "%s --out %s", args, path_of("keep.safetensors"));
    int nl;
    char first[512];
    int st = run(full, &nl, first, sizeof first);
    size_t n;
    char * after = read_all(path_of("keep.safetensors"), &n);
    bool intact = after && n == sizeof sentinel && !memcmp(after, sentinel, n);
    free(after);
    la_check(st == 2 && nl == 1 && !strncmp(first, "linattn: error:", 15) && intact,
             "bad input %-38s -> status %d, %d stderr line(s), OUT %s: %s", what, st, nl,
             intact ? "intact" : "CHANGED", first);
}

static void bad_inputs(void) {
    const int64_t B = 1, T = 6, H = 2, K = 4, V = 3;
    float q[48], k[48], v[36], g[12], gg[2];
    la_rng r;
    la_rng_seed(&r, 1);
    la_fill_normal(&r, q, 48, 1);
    la_fill_normal(&r, k, 48, 1);
    la_fill_normal(&r, v, 36, 1);
    la_fill_logsigmoid(&r, g, 12);
    la_fill_logsigmoid(&r, gg, 2);
    char good[512];  // path_of's buffers rotate: keep a copy
    snprintf(good, sizeof good, "%s", path_of("good.safetensors"));
    tin base[3] = { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
                    { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
                    { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v } };
    write_st(good, base, 3);
    char a[1024];
#define FAIL_WITH(what, ...) do { snprintf(a, sizeof a, __VA_ARGS__); expect_fail(what, a); } while (0)
    FAIL_WITH("unknown op", "no_such_op --in %s", good);
    FAIL_WITH("unknown flag", "simple_gla --in %s --frobnicate", good);
    FAIL_WITH("flag the op does not take", "simple_gla --in %s --normalize", good);
    FAIL_WITH("flag of a later op", "simple_gla --in %s --use-qk-l2norm-in-kernel", good);
    FAIL_WITH("--chunk-size with recurrent", "simple_gla --in %s --form recurrent --chunk-size 16", good);
    FAIL_WITH("--chunk-size 0", "simple_gla --in %s --chunk-size 0", good);
    FAIL_WITH("--chunk-size 10000", "simple_gla --in %s --chunk-size 10000", good);
    FAIL_WITH("--form bogus", "simple_gla --in %s --form bogus", good);
    FAIL_WITH("--threads 0", "simple_gla --in %s --threads 0", good);
    FAIL_WITH("--threads abc", "simple_gla --in %s --threads abc", good);
    FAIL_WITH("--scale nan", "simple_gla --in %s --scale nan", good);
    FAIL_WITH("--scale 0", "simple_gla --in %s --scale 0", good);
    FAIL_WITH("--scale missing value", "simple_gla --in %s --scale", good);
    FAIL_WITH("flag given twice", "linear_attn --in %s --normalize --normalize", good);
    FAIL_WITH("--form given twice", "simple_gla --in %s --form chunk --form ref", good);
    FAIL_WITH("--threads given twice", "simple_gla --in %s --threads 1 --threads 2", good);
    FAIL_WITH("no op name", "%s", "");
    FAIL_WITH("missing --in", "simple_gla");
    FAIL_WITH("missing input file", "simple_gla --in %s", path_of("does_not_exist.safetensors"));
    FAIL_WITH("input is a directory", "simple_gla --in %s", g_dir);

    // Malformed files.
    write_bytes(path_of("empty.safetensors"), "", 0);
    FAIL_WITH("empty file", "simple_gla --in %s", path_of("empty.safetensors"));
    size_t n;
    char * bytes = read_all(good, &n);
    write_bytes(path_of("trunc.safetensors"), bytes, n - 7);
    FAIL_WITH("truncated data", "simple_gla --in %s", path_of("trunc.safetensors"));
    write_bytes(path_of("trunc2.safetensors"), bytes, 20);
    FAIL_WITH("truncated header", "simple_gla --in %s", path_of("trunc2.safetensors"));
    char * junk = la_test_alloc(n);
    memcpy(junk, bytes, n);
    junk[9] = '[';  // header JSON no longer an object
    write_bytes(path_of("junk.safetensors"), junk, n);
    FAIL_WITH("header JSON not an object", "simple_gla --in %s", path_of("junk.safetensors"));
    memcpy(junk, bytes, 8);
    junk[7] = 0x7f;  // absurd header length
    write_bytes(path_of("hlen.safetensors"), junk, n);
    FAIL_WITH("header length beyond file", "simple_gla --in %s", path_of("hlen.safetensors"));
    free(bytes);
    free(junk);

    // Missing, misshaped, mistyped tensors.
    write_st(path_of("noq.safetensors"), base + 1, 2);
    FAIL_WITH("missing q", "simple_gla --in %s", path_of("noq.safetensors"));
    tin t[8];
    memcpy(t, base, sizeof base);
    t[2].shape[3] = 2;
    t[2].shape[2] = 3;
    write_st(path_of("badv.safetensors"), t, 3);
    FAIL_WITH("v with wrong H", "simple_gla --in %s", path_of("badv.safetensors"));
    memcpy(t, base, sizeof base);
    t[1].ndim = 3;
    t[1].shape[2] = H * K;
    write_st(path_of("badk.safetensors"), t, 3);
    FAIL_WITH("k with 3 axes", "simple_gla --in %s", path_of("badk.safetensors"));
    memcpy(t, base, sizeof base);
    int64_t qi[48] = { 0 };
    t[0] = (tin){ "q", LA_DTYPE_I64, 4, { B, T, H, K }, qi };
    write_st(path_of("intq.safetensors"), t, 3);
    FAIL_WITH("integer q", "simple_gla --in %s", path_of("intq.safetensors"));
    memcpy(t, base, sizeof base);
    float qn[48];
    memcpy(qn, q, sizeof q);
    qn[17] = NAN;
    t[0].data = qn;
    write_st(path_of("nanq.safetensors"), t, 3);
    FAIL_WITH("NaN in q", "simple_gla --in %s", path_of("nanq.safetensors"));
    qn[17] = INFINITY;
    write_st(path_of("infq.safetensors"), t, 3);
    FAIL_WITH("Inf in q", "simple_gla --in %s", path_of("infq.safetensors"));
    memcpy(t, base, sizeof base);
    t[3] = (tin){ "g", LA_DTYPE_F32, 3, { B, T, H }, g };
    t[4] = (tin){ "g_gamma", LA_DTYPE_F32, 1, { H }, gg };
    write_st(path_of("gboth.safetensors"), t, 5);
    FAIL_WITH("g and g_gamma together", "simple_gla --in %s", path_of("gboth.safetensors"));
    FAIL_WITH("g to retention", "retention --in %s", path_of("gboth.safetensors"));
    t[3] = (tin){ "foo", LA_DTYPE_F32, 1, { 2 }, gg };
    write_st(path_of("extra.safetensors"), t, 4);
    FAIL_WITH("tensor the op does not read", "simple_gla --in %s", path_of("extra.safetensors"));
    t[3] = (tin){ "do", LA_DTYPE_F32, 4, { B, T, H, V }, v };
    write_st(path_of("dofwd.safetensors"), t, 4);
    FAIL_WITH("'do' without --backward", "simple_gla --in %s", path_of("dofwd.safetensors"));
    FAIL_WITH("--backward without 'do'", "simple_gla --in %s --backward", good);
    memcpy(t, base, sizeof base);
    t[3] = (tin){ "initial_state", LA_DTYPE_F32, 4, { 1, H, K + 1, V }, q };  // 30 of q's 48
    write_st(path_of("bads0.safetensors"), t, 4);
    FAIL_WITH("initial_state with wrong K", "simple_gla --in %s", path_of("bads0.safetensors"));

    // cu_seqlens.
    int64_t cu_bad[3] = { 0, 4, 3 }, cu_end[3] = { 0, 2, 5 }, cu_start[3] = { 1, 2, 6 };
    uint16_t cu_f16[3] = { 0, 0x4000, 0x4600 };
    const struct { const char * what; tin t; } cus[] = {
        { "decreasing cu_seqlens", { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu_bad } },
        { "cu_seqlens not ending at T", { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu_end } },
        { "cu_seqlens not starting at 0", { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu_start } },
        { "float16 cu_seqlens", { "cu_seqlens", LA_DTYPE_F16, 1, { 3 }, cu_f16 } },
        { "2-D cu_seqlens", { "cu_seqlens", LA_DTYPE_I64, 2, { 1, 3 }, cu_end } },
    };
    for (size_t i = 0; i < sizeof cus / sizeof cus[0]; i++) {
        memcpy(t, base, sizeof base);
        t[3] = cus[i].t;
        write_st(path_of("cu.safetensors"), t, 4);
        FAIL_WITH(cus[i].what, "simple_gla --in %s", path_of("cu.safetensors"));
    }
    // cu_seqlens with B = 2.
    float q2[96], k2[96], v2[72];
    memset(q2, 0, sizeof q2); memset(k2, 0, sizeof k2); memset(v2, 0, sizeof v2);
    int64_t cu_ok[3] = { 0, 2, 6 };
    tin b2[4] = { { "q", LA_DTYPE_F32, 4, { 2, T, H, K }, q2 },
                  { "k", LA_DTYPE_F32, 4, { 2, T, H, K }, k2 },
                  { "v", LA_DTYPE_F32, 4, { 2, T, H, V }, v2 },
                  { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu_ok } };
    write_st(path_of("b2.safetensors"), b2, 4);
    FAIL_WITH("cu_seqlens with B = 2", "simple_gla --in %s", path_of("b2.safetensors"));

    // mamba2: heads not a multiple of groups.
    float x[36], dt[12], al[2], Bm[3 * 6 * 4];
    memset(x, 0, sizeof x); memset(dt, 0, sizeof dt); memset(al, 0, sizeof al);
    memset(Bm, 0, sizeof Bm);
    tin m[5] = { { "x", LA_DTYPE_F32, 4, { 1, T, H, V }, x },
                 { "dt", LA_DTYPE_F32, 3, { 1, T, H }, dt },
                 { "A_log", LA_DTYPE_F32, 1, { H }, al },
                 { "B", LA_DTYPE_F32, 4, { 1, T, 3, K }, Bm },
                 { "C", LA_DTYPE_F32, 4, { 1, T, 3, K }, Bm } };
    write_st(path_of("m2.safetensors"), m, 5);
    FAIL_WITH("mamba2 H % G != 0", "mamba2 --in %s", path_of("m2.safetensors"));
    FAIL_WITH("mamba2 --scale", "mamba2 --in %s --scale 2", path_of("m2.safetensors"));
    FAIL_WITH("gla gv with the chunk form", "gla --in %s", path_of("gla_gv.safetensors"));
    FAIL_WITH("gla chunk without gk", "gla --in %s", path_of("gla_nogk.safetensors"));
    FAIL_WITH("rwkv6 without u", "rwkv6 --in %s", path_of("rwkv_nou.safetensors"));
    FAIL_WITH("--delta-softplus on hgrn", "hgrn --in %s --delta-softplus", path_of("hgrn.safetensors"));
    FAIL_WITH("selective_scan A with wrong d_state", "selective_scan --in %s",
              path_of("scan_badA.safetensors"));
#undef FAIL_WITH
}

int main(void) {
    g_bin = getenv("LA_BIN");
    if (!g_bin) {
        fprintf(stderr, "LA_BIN must name the linattn program\n");
        return 1;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/la_op_runner_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    const char * forms[3] = { "chunk", "recurrent", "ref" };
    for (int f = 0; f < 3; f++) {
        roundtrip_simple_gla(false, false, forms[f]);
        roundtrip_simple_gla(true, true, forms[f]);
    }
    roundtrip_simple_gla(false, true, "chunk");
    roundtrip_bf16_normalize();
    roundtrip_gla_rwkv6();
    roundtrip_hgrn_scan();
    bad_inputs();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return la_test_summary();
}
