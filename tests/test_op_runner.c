// The op runner (`linattn op`), end to end through the program:
//  * round trips: inputs written with the safetensors writer, the program's OUT compared with a
//    direct library call on the same inputs (bitwise: same code, same thread count), for every
//    op, forward and backward, varlen with int32 and int64 cu_seqlens, bf16/f16/f64 inputs;
//  * a corpus of bad calls and bad files, each of which must exit with status 2, print exactly
//    one line on stderr that starts with "linattn: error:", and leave an existing OUT intact
//    (LA_TEST_VERBOSE=1 prints each case's message).
// The program path comes from $LA_BIN (set by CTest).
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// --- OUT against the library -------------------------------------------------------------------

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
    la_tin in[9] = {
        { "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
        { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
        { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v },
        { "g", LA_DTYPE_F32, 3, { B, T, H }, g },
        { "initial_state", LA_DTYPE_F32, 4, { N, H, K, V }, s0 },
    };
    int n = 5;
    if (varlen) in[n++] = (la_tin){ "cu_seqlens", LA_DTYPE_I32, 1, { 4 }, cu32 };
    if (backward) {
        in[n++] = (la_tin){ "do", LA_DTYPE_F32, 4, { B, T, H, V }, dout };
        in[n++] = (la_tin){ "dfinal_state", LA_DTYPE_F32, 4, { N, H, K, V }, dfin };
    }
    la_write_st(la_tmp("in.safetensors"), in, n);
    char args[1024];
    snprintf(args, sizeof args, "simple_gla --in %s --out %s --form %s --threads 2 %s",
             la_tmp("in.safetensors"), la_tmp("out.safetensors"), form,
             backward ? "--backward" : "");
    int nl;
    char first[256];
    int st = la_run_op(args, &nl, first, sizeof first);
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
    if (!la_check(la_st_open(&f, la_tmp("out.safetensors"), err, sizeof err) == LA_STATUS_OK,
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
    la_tin in[4] = { { "q", LA_DTYPE_BF16, 4, { B, T, H, K }, qb },
                     { "k", LA_DTYPE_BF16, 4, { B, T, H, K }, kb },
                     { "v", LA_DTYPE_BF16, 4, { B, T, H, V }, vb },
                     { "initial_z", LA_DTYPE_F32, 4, { 1, 1, H, K }, z0 } };
    la_write_st(la_tmp("in.safetensors"), in, 4);
    char args[1024];
    snprintf(args, sizeof args, "linear_attn --normalize --in %s --out %s",
             la_tmp("in.safetensors"), la_tmp("out.safetensors"));
    int nl;
    char first[256];
    int st = la_run_op(args, &nl, first, sizeof first);
    if (!la_check(st == 0, "runner linear_attn bf16 --normalize exits 0 (%s)", first)) return;
    float o[27], fin[12], fz[4];
    la_opts opts = la_opts_default();
    la_shape sh = { B, T, H, K, V };
    la_linear_attn_forward(o, fin, fz, qf, kf, vf, NULL, z0, true, sh, &opts);
    la_st_file * f;
    la_st_open(&f, la_tmp("out.safetensors"), NULL, 0);
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
        la_tin in[6] = { { rw ? "r" : "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
                         { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
                         { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v },
                         { rw ? "w" : "gk", LA_DTYPE_F32, 4, { B, T, H, K }, gk },
                         rw ? (la_tin){ "u", LA_DTYPE_F32, 2, { H, K }, u }
                            : (la_tin){ "gv", LA_DTYPE_F32, 4, { B, T, H, V }, gv },
                         { "do", LA_DTYPE_F32, 4, { B, T, H, V }, dout } };
        la_write_st(la_tmp("in.safetensors"), in, 6);
        char args[1024];
        snprintf(args, sizeof args, "%s --in %s --out %s --form %s --backward --threads 1",
                 rw ? "rwkv6" : "gla", la_tmp("in.safetensors"), la_tmp("out.safetensors"),
                 rw ? "chunk" : "recurrent");
        int nl;
        char first[256];
        const char * tag = rw ? "runner rwkv6 chunk backward" : "runner gla recurrent gv backward";
        if (!la_check(la_run_op(args, &nl, first, sizeof first) == 0, "%s exits 0 (%s)", tag,
                      first))
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
        if (la_check(la_st_open(&f, la_tmp("out.safetensors"), NULL, 0) == LA_STATUS_OK, "%s OUT opens", tag)) {
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
    la_tin g2[5] = { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
                     { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
                     { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v },
                     { "gk", LA_DTYPE_F32, 4, { B, T, H, K }, gk },
                     { "gv", LA_DTYPE_F32, 4, { B, T, H, V }, gv } };
    la_write_st(la_tmp("gla_gv.safetensors"), g2, 5);
    la_write_st(la_tmp("gla_nogk.safetensors"), g2, 3);
    la_tin r2[4] = { { "r", LA_DTYPE_F32, 4, { B, T, H, K }, q },
                     { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
                     { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v },
                     { "w", LA_DTYPE_F32, 4, { B, T, H, K }, gk } };
    la_write_st(la_tmp("rwkv_nou.safetensors"), r2, 4);
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
    la_tin h[5] = { { "x", LA_DTYPE_F32, 3, { 1, T, D }, x },
                    { "g", LA_DTYPE_F32, 3, { 1, T, D }, g },
                    { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu },
                    { "initial_state", LA_DTYPE_F32, 2, { 2, D }, s0 },
                    { "do", LA_DTYPE_F32, 3, { 1, T, D }, dout } };
    la_write_st(la_tmp("hgrn.safetensors"), h, 5);
    char args[1024];
    int nl;
    char first[256];
    snprintf(args, sizeof args, "hgrn --in %s --out %s --backward --chunk-size 4",
             la_tmp("hgrn.safetensors"), la_tmp("out.safetensors"));
    if (la_check(la_run_op(args, &nl, first, sizeof first) == 0, "runner hgrn exits 0 (%s)",
                 first)) {
        la_opts o = la_opts_default();
        o.chunk_size = 4;
        o.cu_seqlens = cu;
        o.n_seqs = 2;
        float ro[19 * 6], rf[12], dx[19 * 6], dg[19 * 6], ds[12];
        la_hgrn_forward(ro, rf, x, g, s0, 1, T, D, &o);
        la_hgrn_backward(dx, dg, ds, dout, NULL, x, g, s0, 1, T, D, &o);
        la_st_file * f;
        la_st_open(&f, la_tmp("out.safetensors"), NULL, 0);
        expect_equal(f, "runner hgrn", "o", ro, T * D);
        expect_equal(f, "runner hgrn", "final_state", rf, 2 * D);
        expect_equal(f, "runner hgrn", "dx", dx, T * D);
        expect_equal(f, "runner hgrn", "dg", dg, T * D);
        expect_equal(f, "runner hgrn", "dinitial_state", ds, 2 * D);
        la_st_close(f);
    }
    la_tin sc[8] = { { "u", LA_DTYPE_F32, 3, { 1, T, D }, x },
                     { "delta", LA_DTYPE_F32, 3, { 1, T, D }, g },
                     { "A", LA_DTYPE_F32, 2, { D, M }, A },
                     { "B", LA_DTYPE_F32, 3, { 1, T, M }, Bm },
                     { "C", LA_DTYPE_F32, 3, { 1, T, M }, Cm },
                     { "D", LA_DTYPE_F32, 1, { D }, Dp },
                     { "delta_bias", LA_DTYPE_F32, 1, { D }, bias },
                     { "do", LA_DTYPE_F32, 3, { 1, T, D }, dout } };
    la_write_st(la_tmp("scan.safetensors"), sc, 8);
    sc[2].shape[1] = M - 1;  // A (D, M-1) disagrees with B, C (.., M)
    la_write_st(la_tmp("scan_badA.safetensors"), sc, 7);
    sc[2].shape[1] = M;
    snprintf(args, sizeof args,
             "selective_scan --in %s --out %s --backward --delta-softplus --form recurrent",
             la_tmp("scan.safetensors"), la_tmp("out.safetensors"));
    if (la_check(la_run_op(args, &nl, first, sizeof first) == 0,
                 "runner selective_scan exits 0 (%s)", first)) {
        la_opts o = la_opts_default();
        o.form = LA_FORM_RECURRENT;
        float ro[19 * 6], rf[6 * 5], du[19 * 6], dd[19 * 6], dA[6 * 5], dB[19 * 5], dC[19 * 5];
        float dD[6], db[6];
        la_selective_scan_forward(ro, rf, x, g, A, Bm, Cm, Dp, bias, true, NULL, 1, T, D, M, &o);
        la_selective_scan_backward(du, dd, dA, dB, dC, dD, db, NULL, dout, NULL, x, g, A, Bm, Cm,
                                   Dp, bias, true, NULL, 1, T, D, M, &o);
        la_st_file * f;
        la_st_open(&f, la_tmp("out.safetensors"), NULL, 0);
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
    char good[512];  // la_tmp's buffers rotate: keep a copy
    snprintf(good, sizeof good, "%s", la_tmp("good.safetensors"));
    la_tin base[3] = { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
                       { "k", LA_DTYPE_F32, 4, { B, T, H, K }, k },
                       { "v", LA_DTYPE_F32, 4, { B, T, H, V }, v } };
    la_write_st(good, base, 3);
    la_bad_call("unknown op", "no_such_op --in %s", good);
    la_bad_call("unknown flag", "simple_gla --in %s --frobnicate", good);
    la_bad_call("flag the op does not take", "simple_gla --in %s --normalize", good);
    la_bad_call("flag of a later op", "simple_gla --in %s --use-qk-l2norm-in-kernel", good);
    la_bad_call("--chunk-size with recurrent",
                "simple_gla --in %s --form recurrent --chunk-size 16", good);
    la_bad_call("--chunk-size 0", "simple_gla --in %s --chunk-size 0", good);
    la_bad_call("--chunk-size 10000", "simple_gla --in %s --chunk-size 10000", good);
    la_bad_call("--form bogus", "simple_gla --in %s --form bogus", good);
    la_bad_call("--threads 0", "simple_gla --in %s --threads 0", good);
    la_bad_call("--threads abc", "simple_gla --in %s --threads abc", good);
    la_bad_call("--scale nan", "simple_gla --in %s --scale nan", good);
    la_bad_call("--scale 0", "simple_gla --in %s --scale 0", good);
    la_bad_call("--scale missing value", "simple_gla --in %s --scale", good);
    la_bad_call("flag given twice", "linear_attn --in %s --normalize --normalize", good);
    la_bad_call("--form given twice", "simple_gla --in %s --form chunk --form ref", good);
    la_bad_call("--threads given twice", "simple_gla --in %s --threads 1 --threads 2", good);
    la_bad_call("no op name", "%s", "");
    la_bad_call("missing --in", "simple_gla");
    la_bad_call("missing input file", "simple_gla --in %s", la_tmp("does_not_exist.safetensors"));
    la_bad_call("input is a directory", "simple_gla --in %s", la_tmp_dir());

    // Malformed files.
    la_write_bytes(la_tmp("empty.safetensors"), "", 0);
    la_bad_call("empty file", "simple_gla --in %s", la_tmp("empty.safetensors"));
    size_t n;
    char * bytes = la_read_file(good, &n);
    la_write_bytes(la_tmp("trunc.safetensors"), bytes, n - 7);
    la_bad_call("truncated data", "simple_gla --in %s", la_tmp("trunc.safetensors"));
    la_write_bytes(la_tmp("trunc2.safetensors"), bytes, 20);
    la_bad_call("truncated header", "simple_gla --in %s", la_tmp("trunc2.safetensors"));
    char * junk = la_test_alloc(n);
    memcpy(junk, bytes, n);
    junk[9] = '[';  // header JSON no longer an object
    la_write_bytes(la_tmp("junk.safetensors"), junk, n);
    la_bad_call("header JSON not an object", "simple_gla --in %s", la_tmp("junk.safetensors"));
    memcpy(junk, bytes, 8);
    junk[7] = 0x7f;  // absurd header length
    la_write_bytes(la_tmp("hlen.safetensors"), junk, n);
    la_bad_call("header length beyond file", "simple_gla --in %s", la_tmp("hlen.safetensors"));
    free(bytes);
    free(junk);

    // Missing, misshaped, mistyped tensors.
    la_write_st(la_tmp("noq.safetensors"), base + 1, 2);
    la_bad_call("missing q", "simple_gla --in %s", la_tmp("noq.safetensors"));
    la_tin t[8];
    memcpy(t, base, sizeof base);
    t[2].shape[3] = 2;
    t[2].shape[2] = 3;
    la_write_st(la_tmp("badv.safetensors"), t, 3);
    la_bad_call("v with wrong H", "simple_gla --in %s", la_tmp("badv.safetensors"));
    memcpy(t, base, sizeof base);
    t[1].ndim = 3;
    t[1].shape[2] = H * K;
    la_write_st(la_tmp("badk.safetensors"), t, 3);
    la_bad_call("k with 3 axes", "simple_gla --in %s", la_tmp("badk.safetensors"));
    memcpy(t, base, sizeof base);
    int64_t qi[48] = { 0 };
    t[0] = (la_tin){ "q", LA_DTYPE_I64, 4, { B, T, H, K }, qi };
    la_write_st(la_tmp("intq.safetensors"), t, 3);
    la_bad_call("integer q", "simple_gla --in %s", la_tmp("intq.safetensors"));
    memcpy(t, base, sizeof base);
    float qn[48];
    memcpy(qn, q, sizeof q);
    qn[17] = NAN;
    t[0].data = qn;
    la_write_st(la_tmp("nanq.safetensors"), t, 3);
    la_bad_call("NaN in q", "simple_gla --in %s", la_tmp("nanq.safetensors"));
    qn[17] = INFINITY;
    la_write_st(la_tmp("infq.safetensors"), t, 3);
    la_bad_call("Inf in q", "simple_gla --in %s", la_tmp("infq.safetensors"));
    memcpy(t, base, sizeof base);
    t[3] = (la_tin){ "g", LA_DTYPE_F32, 3, { B, T, H }, g };
    t[4] = (la_tin){ "g_gamma", LA_DTYPE_F32, 1, { H }, gg };
    la_write_st(la_tmp("gboth.safetensors"), t, 5);
    la_bad_call("g and g_gamma together", "simple_gla --in %s", la_tmp("gboth.safetensors"));
    la_bad_call("g to retention", "retention --in %s", la_tmp("gboth.safetensors"));
    t[3] = (la_tin){ "foo", LA_DTYPE_F32, 1, { 2 }, gg };
    la_write_st(la_tmp("extra.safetensors"), t, 4);
    la_bad_call("tensor the op does not read", "simple_gla --in %s", la_tmp("extra.safetensors"));
    t[3] = (la_tin){ "do", LA_DTYPE_F32, 4, { B, T, H, V }, v };
    la_write_st(la_tmp("dofwd.safetensors"), t, 4);
    la_bad_call("'do' without --backward", "simple_gla --in %s", la_tmp("dofwd.safetensors"));
    la_bad_call("--backward without 'do'", "simple_gla --in %s --backward", good);
    memcpy(t, base, sizeof base);
    t[3] = (la_tin){ "initial_state", LA_DTYPE_F32, 4, { 1, H, K + 1, V }, q };  // 30 of q's 48
    la_write_st(la_tmp("bads0.safetensors"), t, 4);
    la_bad_call("initial_state with wrong K", "simple_gla --in %s", la_tmp("bads0.safetensors"));

    // cu_seqlens.
    int64_t cu_bad[3] = { 0, 4, 3 }, cu_end[3] = { 0, 2, 5 }, cu_start[3] = { 1, 2, 6 };
    uint16_t cu_f16[3] = { 0, 0x4000, 0x4600 };
    const struct { const char * what; la_tin t; } cus[] = {
        { "decreasing cu_seqlens", { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu_bad } },
        { "cu_seqlens not ending at T", { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu_end } },
        { "cu_seqlens not starting at 0", { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu_start } },
        { "float16 cu_seqlens", { "cu_seqlens", LA_DTYPE_F16, 1, { 3 }, cu_f16 } },
        { "2-D cu_seqlens", { "cu_seqlens", LA_DTYPE_I64, 2, { 1, 3 }, cu_end } },
    };
    for (size_t i = 0; i < sizeof cus / sizeof cus[0]; i++) {
        memcpy(t, base, sizeof base);
        t[3] = cus[i].t;
        la_write_st(la_tmp("cu.safetensors"), t, 4);
        la_bad_call(cus[i].what, "simple_gla --in %s", la_tmp("cu.safetensors"));
    }
    // cu_seqlens with B = 2.
    float q2[96], k2[96], v2[72];
    memset(q2, 0, sizeof q2); memset(k2, 0, sizeof k2); memset(v2, 0, sizeof v2);
    int64_t cu_ok[3] = { 0, 2, 6 };
    la_tin b2[4] = { { "q", LA_DTYPE_F32, 4, { 2, T, H, K }, q2 },
                     { "k", LA_DTYPE_F32, 4, { 2, T, H, K }, k2 },
                     { "v", LA_DTYPE_F32, 4, { 2, T, H, V }, v2 },
                     { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu_ok } };
    la_write_st(la_tmp("b2.safetensors"), b2, 4);
    la_bad_call("cu_seqlens with B = 2", "simple_gla --in %s", la_tmp("b2.safetensors"));

    // mamba2: heads not a multiple of groups.
    float x[36], dt[12], al[2], Bm[3 * 6 * 4];
    memset(x, 0, sizeof x); memset(dt, 0, sizeof dt); memset(al, 0, sizeof al);
    memset(Bm, 0, sizeof Bm);
    la_tin m[5] = { { "x", LA_DTYPE_F32, 4, { 1, T, H, V }, x },
                    { "dt", LA_DTYPE_F32, 3, { 1, T, H }, dt },
                    { "A_log", LA_DTYPE_F32, 1, { H }, al },
                    { "B", LA_DTYPE_F32, 4, { 1, T, 3, K }, Bm },
                    { "C", LA_DTYPE_F32, 4, { 1, T, 3, K }, Bm } };
    la_write_st(la_tmp("m2.safetensors"), m, 5);
    la_bad_call("mamba2 H % G != 0", "mamba2 --in %s", la_tmp("m2.safetensors"));
    la_bad_call("mamba2 --scale", "mamba2 --in %s --scale 2", la_tmp("m2.safetensors"));
    la_bad_call("gla gv with the chunk form", "gla --in %s", la_tmp("gla_gv.safetensors"));
    la_bad_call("gla chunk without gk", "gla --in %s", la_tmp("gla_nogk.safetensors"));
    la_bad_call("rwkv6 without u", "rwkv6 --in %s", la_tmp("rwkv_nou.safetensors"));
    la_bad_call("--delta-softplus on hgrn", "hgrn --in %s --delta-softplus",
                la_tmp("hgrn.safetensors"));
    la_bad_call("selective_scan A with wrong d_state", "selective_scan --in %s",
                la_tmp("scan_badA.safetensors"));
}

int main(void) {
    if (!la_runner_init("op_runner")) return 1;
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
    la_runner_cleanup();
    return la_test_summary();
}
