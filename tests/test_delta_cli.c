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

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// Good runs.

// delta_rule: chunk C = 16 with the l2norm flag; and without beta (recurrent, forward only).
static void good_delta_rule(void) {
    la_rng r;
    la_rng_seed(&r, 1);
    const int64_t B = 2, T = 21, H = 2, K = 8, V = 5, nq = B * T * H * K, nv = B * T * H * V;
    const int64_t nb = B * T * H, ns = B * H * K * V;
    float * q = la_new_normal(&r, nq, 1), * k = la_new_normal(&r, nq, 1);
    float * v = la_new_normal(&r, nv, 1);
    float * beta = la_new_uniform(&r, nb, 0.05, 1.0), * s0 = la_new_normal(&r, ns, 0.5);
    float * dout = la_new_normal(&r, nv, 1), * dfs = la_new_normal(&r, ns, 1);
    la_tin in[7] = { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, q },
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
    if (la_expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "delta_rule library call failed")) {
        la_want_out w[7] = { { "o", ro, nv }, { "final_state", rf, ns }, { "dq", dq, nq },
                          { "dk", dk, nq }, { "dv", dv, nv }, { "dbeta", db, nb },
                          { "dinitial_state", ds, ns } };
        la_good_run("runner delta_rule chunk16 l2norm backward", "delta_rule",
                 "--form chunk --chunk-size 16 --use-qk-l2norm-in-kernel --backward", in, 7, w, 7);
    }
    // without beta (beta = 1), recurrent form, forward only
    la_opts o2 = la_opts_default();
    o2.form = LA_FORM_RECURRENT;
    la_l2norm_rows(k, B * T * H, K);
    s1 = la_delta_rule_forward(ro, rf, q, k, v, NULL, s0, sh, &o2);
    if (la_expect(s1 == LA_STATUS_OK, "delta_rule library call without beta failed")) {
        la_tin in2[4] = { in[0], in[1], in[2], in[4] };
        la_want_out w[2] = { { "o", ro, nv }, { "final_state", rf, ns } };
        la_good_run("runner delta_rule recurrent without beta", "delta_rule", "--form recurrent", in2,
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
    float * q = la_new_normal(&r, nq, 1), * k = la_new_normal(&r, nq, 1);
    float * v = la_new_normal(&r, nv, 1);
    float * g = la_new_normal(&r, ng, 1), * beta = la_new_normal(&r, nb, 1.5);
    float * A_log = la_new_uniform(&r, HV, 0.0, 2.0), * dtb = la_new_normal(&r, ndt, 0.5);
    float * s0 = la_new_normal(&r, ns, 0.5), * dout = la_new_normal(&r, nv, 1);
    float * dfs = la_new_normal(&r, ns, 1);
    la_tin in[11];
    int n = 0;
    in[n++] = (la_tin){ "q", LA_DTYPE_F32, 4, { 1, T, H, K }, q };
    in[n++] = (la_tin){ "k", LA_DTYPE_F32, 4, { 1, T, H, K }, k };
    in[n++] = (la_tin){ "v", LA_DTYPE_F32, 4, { 1, T, HV, V }, v };
    in[n++] = kda ? (la_tin){ "g", LA_DTYPE_F32, 4, { 1, T, HV, K }, g }
                  : (la_tin){ "g", LA_DTYPE_F32, 3, { 1, T, HV }, g };
    in[n++] = (la_tin){ "beta", LA_DTYPE_F32, 3, { 1, T, HV }, beta };
    if (!kda) in[n++] = (la_tin){ "A_log", LA_DTYPE_F32, 1, { HV }, A_log };
    in[n++] = (la_tin){ "dt_bias", LA_DTYPE_F32, 1, { ndt }, dtb };
    in[n++] = (la_tin){ "initial_state", LA_DTYPE_F32, 4, { N, HV, K, V }, s0 };
    in[n++] = (la_tin){ "cu_seqlens", LA_DTYPE_I64, 1, { N + 1 }, cu };
    in[n++] = (la_tin){ "do", LA_DTYPE_F32, 4, { 1, T, HV, V }, dout };
    in[n++] = (la_tin){ "dfinal_state", LA_DTYPE_F32, 4, { N, HV, K, V }, dfs };
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
    if (la_expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s library call failed (%s, %s)", op,
                  la_status_str(s1), la_status_str(s2))) {
        la_want_out w[10];
        int nw = 0;
        w[nw++] = (la_want_out){ "o", ro, nv };
        w[nw++] = (la_want_out){ "final_state", rf, ns };
        w[nw++] = (la_want_out){ "dq", dq, nq };
        w[nw++] = (la_want_out){ "dk", dk, nq };
        w[nw++] = (la_want_out){ "dv", dv, nv };
        w[nw++] = (la_want_out){ "dg", dg, ng };
        w[nw++] = (la_want_out){ "dbeta", db, nb };
        if (!kda) w[nw++] = (la_want_out){ "dA_log", dA, HV };
        w[nw++] = (la_want_out){ "ddt_bias", ddt, ndt };
        w[nw++] = (la_want_out){ "dinitial_state", ds, ns };
        if (kda)
            la_good_run("runner kda recurrent varlen GVA lower-bound gate without A_log backward",
                     "kda",
                     "--form recurrent --use-qk-l2norm-in-kernel --use-beta-sigmoid-in-kernel "
                     "--use-gate-in-kernel --lower-bound -5 --backward", in, n, w, nw);
        else
            la_good_run("runner gated_delta_rule chunk varlen GVA all flags backward",
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
        if (la_expect(s1 == LA_STATUS_OK, "kda library call (softplus gate) failed: %s",
                      la_status_str(s1))) {
            la_tin in2[9] = { in[0], in[1], in[2], in[3], in[4],
                              { "A_log", LA_DTYPE_F32, 1, { HV }, A_log }, in[5], in[6], in[7] };
            la_want_out w[2] = { { "o", ro, nv }, { "final_state", rf, ns } };
            la_good_run("runner kda chunk24 softplus gate", "kda",
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
    float * q = la_new_normal(&r, nq, 1), * k = la_new_l2rows(&r, B * T * H, K);
    float * v = la_new_normal(&r, nv, 1);
    float * kk = la_new_l2rows(&r, B * T * H, K), * gk = la_new_logsigmoid(&r, nq);
    float * a = la_test_alloc(nq * 4), * b = la_test_alloc(nq * 4);
    for (int64_t e = 0; e < nq; e++) {
        a[e] = -kk[e];
        b[e] = kk[e] * (float)la_rng_uniform(&r);
    }
    float * s0 = la_new_normal(&r, ns, 0.5), * dout = la_new_normal(&r, nv, 1);
    float * dfs = la_new_normal(&r, ns, 1);
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
        if (!la_expect(s1 == LA_STATUS_OK && s2 == LA_STATUS_OK, "%s library call failed (%s, %s)",
                       name, la_status_str(s1), la_status_str(s2)))
            continue;
        la_tin in[10];
        int n = 0;
        in[n++] = (la_tin){ rw ? "r" : "q", LA_DTYPE_F32, 4, { B, T, H, K }, q };
        if (!ip) in[n++] = (la_tin){ rw ? "w" : "gk", LA_DTYPE_F32, 4, { B, T, H, K }, gk };
        in[n++] = (la_tin){ "k", LA_DTYPE_F32, 4, { B, T, H, K }, k };
        in[n++] = (la_tin){ "v", LA_DTYPE_F32, 4, { B, T, H, V }, v };
        in[n++] = (la_tin){ "a", LA_DTYPE_F32, 4, { B, T, H, K }, a };
        in[n++] = (la_tin){ "b", LA_DTYPE_F32, 4, { B, T, H, K }, b };
        in[n++] = (la_tin){ "initial_state", LA_DTYPE_F32, 4, { B, H, K, V }, s0 };
        in[n++] = (la_tin){ "do", LA_DTYPE_F32, 4, { B, T, H, V }, dout };
        in[n++] = (la_tin){ "dfinal_state", LA_DTYPE_F32, 4, { B, H, K, V }, dfs };
        la_want_out w[9];
        int nw = 0;
        w[nw++] = (la_want_out){ "o", ro, nv };
        w[nw++] = (la_want_out){ "final_state", rf, ns };
        w[nw++] = (la_want_out){ rw ? "dr" : "dq", dq, nq };
        if (!ip) w[nw++] = (la_want_out){ rw ? "dw" : "dgk", dg, nq };
        w[nw++] = (la_want_out){ "dk", dk, nq };
        w[nw++] = (la_want_out){ "dv", dv, nv };
        w[nw++] = (la_want_out){ "da", da, nq };
        w[nw++] = (la_want_out){ "db", db, nq };
        w[nw++] = (la_want_out){ "dinitial_state", ds, ns };
        char tag[160];
        snprintf(tag, sizeof tag, "runner %s backward", name);
        la_good_run(tag, name,
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

// The tensors of one op's IN file, to be written with some of them dropped or changed.
typedef struct tset {
    la_tin t[12];
    int n;
} tset;

static void tset_write(const tset * s, const char * file) { la_write_st(la_tmp(file), s->t, s->n); }

static int tset_find(const tset * s, const char * name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return i;
    fprintf(stderr, "no tensor %s\n", name);
    exit(1);
}

static tset tset_without(const tset * s, const char * name) {
    tset r = *s;
    const int i = tset_find(s, name);
    memmove(&r.t[i], &r.t[i + 1], (size_t)(r.n - i - 1) * sizeof(la_tin));
    r.n--;
    return r;
}

static tset tset_with(const tset * s, la_tin t) {
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

    // delta_rule
    tset dr = { { { "q", LA_DTYPE_F32, 4, { B, T, H, K }, pool },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, kk },
                  { "v", LA_DTYPE_F32, 4, { B, T, H, V }, pool },
                  { "beta", LA_DTYPE_F32, 3, { B, T, H }, pool } }, 4 };
    tset_write(&dr, "dr.safetensors");
    tset s = tset_without(&dr, "v");
    tset_write(&s, "dr_nov.safetensors");
    la_bad_call("delta_rule without v", "delta_rule --in %s", la_tmp("dr_nov.safetensors"));
    s = dr;
    s.t[2].shape[2] = HV;   // v with 2H heads, beta still H
    tset_write(&s, "dr_hv.safetensors");
    la_bad_call("delta_rule v with HV = 2H", "delta_rule --in %s", la_tmp("dr_hv.safetensors"));
    s.t[3].shape[2] = HV;   // beta with 2H heads too
    tset_write(&s, "dr_hv2.safetensors");
    la_bad_call("delta_rule v, beta with HV = 2H", "delta_rule --in %s",
                la_tmp("dr_hv2.safetensors"));
    s = tset_with(&dr, (la_tin){ "g", LA_DTYPE_F32, 3, { B, T, H }, logp });
    tset_write(&s, "dr_g.safetensors");
    la_bad_call("delta_rule with g", "delta_rule --in %s", la_tmp("dr_g.safetensors"));
    la_bad_call("--use-beta-sigmoid-in-kernel on delta_rule",
                "delta_rule --in %s --use-beta-sigmoid-in-kernel", la_tmp("dr.safetensors"));
    la_bad_call("--use-gate-in-kernel on delta_rule", "delta_rule --in %s --use-gate-in-kernel",
                la_tmp("dr.safetensors"));
    la_bad_call("--lower-bound on delta_rule", "delta_rule --in %s --lower-bound -5",
                la_tmp("dr.safetensors"));
    la_bad_call("--backward without do on delta_rule", "delta_rule --in %s --backward",
                la_tmp("dr.safetensors"));
    s = dr;
    s.t[0].data = nanp;
    tset_write(&s, "dr_nan.safetensors");
    la_bad_call("NaN in delta_rule q", "delta_rule --in %s", la_tmp("dr_nan.safetensors"));

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
    la_bad_call("gated_delta_rule without beta", "gated_delta_rule --in %s %s",
                la_tmp("gd_nobeta.safetensors"), gflags);
    s = tset_without(&gd, "g");
    tset_write(&s, "gd_nog.safetensors");
    la_bad_call("gated_delta_rule without g", "gated_delta_rule --in %s %s",
                la_tmp("gd_nog.safetensors"), gflags);
    s = tset_without(&gd, "A_log");
    tset_write(&s, "gd_noA.safetensors");
    la_bad_call("gated_delta_rule gate flag without A_log", "gated_delta_rule --in %s %s",
                la_tmp("gd_noA.safetensors"), gflags);
    la_bad_call("gated_delta_rule A_log, dt_bias without the gate flag", "gated_delta_rule --in %s",
                la_tmp("gd.safetensors"));
    s = tset_without(&gd, "dt_bias");
    tset_write(&s, "gd_Aonly.safetensors");
    la_bad_call("gated_delta_rule A_log without the gate flag", "gated_delta_rule --in %s",
                la_tmp("gd_Aonly.safetensors"));
    s = gd;
    for (int i = 2; i <= 6; i++)   // v, g, beta, A_log, dt_bias with HV = 3, H = 2
        s.t[i].shape[i == 2 ? 2 : i <= 4 ? 2 : 0] = 3;
    tset_write(&s, "gd_hv3.safetensors");
    la_bad_call("gated_delta_rule HV = 3 with H = 2", "gated_delta_rule --in %s %s",
                la_tmp("gd_hv3.safetensors"), gflags);
    s = gd;
    s.t[6].shape[0] = HV + 1;
    tset_write(&s, "gd_dtb.safetensors");
    la_bad_call("gated_delta_rule dt_bias of HV + 1", "gated_delta_rule --in %s %s",
                la_tmp("gd_dtb.safetensors"), gflags);
    s = gd;
    s.t[5].shape[0] = H;
    tset_write(&s, "gd_A.safetensors");
    la_bad_call("gated_delta_rule A_log of H (not HV)", "gated_delta_rule --in %s %s",
                la_tmp("gd_A.safetensors"), gflags);
    s = gd;
    s.t[3] = (la_tin){ "g", LA_DTYPE_F32, 4, { B, T, HV, K }, pool };
    tset_write(&s, "gd_gk.safetensors");
    la_bad_call("gated_delta_rule with a per-channel g", "gated_delta_rule --in %s %s",
                la_tmp("gd_gk.safetensors"), gflags);
    la_bad_call("--lower-bound on gated_delta_rule", "gated_delta_rule --in %s %s --lower-bound -5",
                la_tmp("gd.safetensors"), gflags);
    la_bad_call("--normalize on gated_delta_rule", "gated_delta_rule --in %s %s --normalize",
                la_tmp("gd.safetensors"), gflags);
    la_bad_call("unknown flag on gated_delta_rule", "gated_delta_rule --in %s %s --frobnicate",
                la_tmp("gd.safetensors"), gflags);
    s = gd;
    s.t[0].data = nanp;
    tset_write(&s, "gd_nan.safetensors");
    la_bad_call("NaN in gated_delta_rule q", "gated_delta_rule --in %s %s",
                la_tmp("gd_nan.safetensors"), gflags);
    s = gd;
    s.t[5].data = nanp + 4;   // A_log[1] = NaN
    tset_write(&s, "gd_nanA.safetensors");
    la_bad_call("NaN in gated_delta_rule A_log", "gated_delta_rule --in %s %s",
                la_tmp("gd_nanA.safetensors"), gflags);
    s = tset_with(&gd, (la_tin){ "initial_state", LA_DTYPE_F32, 4, { B, H, K, V }, pool });
    tset_write(&s, "gd_s0.safetensors");
    la_bad_call("gated_delta_rule initial_state with H (not HV) heads",
                "gated_delta_rule --in %s %s", la_tmp("gd_s0.safetensors"), gflags);

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
    la_bad_call("kda g with K + 1 channels", "kda --in %s %s", la_tmp("kd_gK.safetensors"), gflags);
    s = kd;
    s.t[3] = (la_tin){ "g", LA_DTYPE_F32, 3, { B, T, HV }, pool };
    tset_write(&s, "kd_g3.safetensors");
    la_bad_call("kda g without the K axis", "kda --in %s %s", la_tmp("kd_g3.safetensors"), gflags);
    s = kd;
    s.t[6].shape[0] = HV;
    tset_write(&s, "kd_dtb.safetensors");
    la_bad_call("kda dt_bias of HV (not HV*K)", "kda --in %s %s", la_tmp("kd_dtb.safetensors"),
                gflags);
    s = kd;
    s.t[6].ndim = 2;
    s.t[6].shape[0] = HV;
    s.t[6].shape[1] = K;
    tset_write(&s, "kd_dtb2.safetensors");
    la_bad_call("kda dt_bias as [HV, K]", "kda --in %s %s", la_tmp("kd_dtb2.safetensors"), gflags);
    s = kd;
    s.t[2].shape[2] = 3;
    s.t[3].shape[2] = 3;
    s.t[4].shape[2] = 3;
    s.t[5].shape[0] = 3;
    s.t[6].shape[0] = 3 * K;
    tset_write(&s, "kd_hv3.safetensors");
    la_bad_call("kda HV = 3 with H = 2", "kda --in %s %s", la_tmp("kd_hv3.safetensors"), gflags);
    s = tset_without(&kd, "A_log");
    tset_write(&s, "kd_noA.safetensors");
    la_bad_call("kda softplus gate without A_log", "kda --in %s %s", la_tmp("kd_noA.safetensors"),
                gflags);
    la_bad_call("kda A_log, dt_bias without the gate flag", "kda --in %s",
                la_tmp("kd.safetensors"));
    la_bad_call("--normalize on kda", "kda --in %s %s --normalize", la_tmp("kd.safetensors"),
                gflags);
    la_bad_call("--delta-softplus on kda", "kda --in %s %s --delta-softplus",
                la_tmp("kd.safetensors"), gflags);
    la_bad_call("--lower-bound abc", "kda --in %s %s --lower-bound abc", la_tmp("kd.safetensors"),
                gflags);
    la_bad_call("--lower-bound 2 (positive)", "kda --in %s %s --lower-bound 2",
                la_tmp("kd.safetensors"), gflags);
    la_bad_call("--lower-bound 0", "kda --in %s %s --lower-bound 0", la_tmp("kd.safetensors"),
                gflags);
    la_bad_call("--lower-bound nan", "kda --in %s %s --lower-bound nan", la_tmp("kd.safetensors"),
                gflags);
    la_bad_call("--lower-bound without a value", "kda --in %s %s --lower-bound",
                la_tmp("kd.safetensors"), gflags);
    la_bad_call("--lower-bound given twice", "kda --in %s %s --lower-bound -5 --lower-bound -4",
                la_tmp("kd.safetensors"), gflags);
    s = tset_without(&kd, "A_log");
    s = tset_without(&s, "dt_bias");
    tset_write(&s, "kd_plain.safetensors");
    la_bad_call("--lower-bound without --use-gate-in-kernel", "kda --in %s --lower-bound -5",
                la_tmp("kd_plain.safetensors"));
    s = kd;
    s.t[3].data = nanp;
    tset_write(&s, "kd_nan.safetensors");
    la_bad_call("NaN in kda g", "kda --in %s %s", la_tmp("kd_nan.safetensors"), gflags);
    s = tset_with(&kd, (la_tin){ "do", LA_DTYPE_F32, 4, { B, T, H, V }, pool });
    tset_write(&s, "kd_do.safetensors");
    la_bad_call("kda do with H (not HV) heads", "kda --in %s %s --backward",
                la_tmp("kd_do.safetensors"), gflags);
    la_bad_call("kda 'do' without --backward", "kda --in %s %s", la_tmp("kd_do.safetensors"),
                gflags);

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
    la_bad_call("dplr_delta_rule without gk", "dplr_delta_rule --in %s", la_tmp("ip.safetensors"));
    la_bad_call("iplr_delta_rule with gk", "iplr_delta_rule --in %s", la_tmp("dp.safetensors"));
    s = tset_without(&dp, "a");
    tset_write(&s, "dp_noa.safetensors");
    la_bad_call("dplr_delta_rule without a", "dplr_delta_rule --in %s",
                la_tmp("dp_noa.safetensors"));
    s = tset_without(&s, "gk");
    tset_write(&s, "ip_noa.safetensors");
    la_bad_call("iplr_delta_rule without a", "iplr_delta_rule --in %s",
                la_tmp("ip_noa.safetensors"));
    s = tset_without(&dp, "b");
    s = tset_without(&s, "gk");
    tset_write(&s, "ip_nob.safetensors");
    la_bad_call("iplr_delta_rule without b", "iplr_delta_rule --in %s",
                la_tmp("ip_nob.safetensors"));
    s = dp;
    s.t[2].shape[2] = HV;
    tset_write(&s, "dp_hv.safetensors");
    la_bad_call("dplr_delta_rule v with HV = 2H", "dplr_delta_rule --in %s",
                la_tmp("dp_hv.safetensors"));
    s = dp;
    s.t[5].shape[3] = K + 1;
    tset_write(&s, "dp_gkK.safetensors");
    la_bad_call("dplr_delta_rule gk with K + 1", "dplr_delta_rule --in %s",
                la_tmp("dp_gkK.safetensors"));
    la_bad_call("--use-qk-l2norm-in-kernel on dplr_delta_rule",
                "dplr_delta_rule --in %s --use-qk-l2norm-in-kernel", la_tmp("dp.safetensors"));
    la_bad_call("--use-gate-in-kernel on dplr_delta_rule",
                "dplr_delta_rule --in %s --use-gate-in-kernel", la_tmp("dp.safetensors"));
    la_bad_call("--lower-bound on dplr_delta_rule", "dplr_delta_rule --in %s --lower-bound -5",
                la_tmp("dp.safetensors"));
    la_bad_call("--use-beta-sigmoid-in-kernel on iplr_delta_rule",
                "iplr_delta_rule --in %s --use-beta-sigmoid-in-kernel", la_tmp("ip.safetensors"));
    s = dp;
    s.t[3].data = nanp;
    tset_write(&s, "dp_nan.safetensors");
    la_bad_call("NaN in dplr_delta_rule a", "dplr_delta_rule --in %s",
                la_tmp("dp_nan.safetensors"));

    tset rw = { { { "r", LA_DTYPE_F32, 4, { B, T, H, K }, pool },
                  { "w", LA_DTYPE_F32, 4, { B, T, H, K }, logp },
                  { "k", LA_DTYPE_F32, 4, { B, T, H, K }, kk },
                  { "v", LA_DTYPE_F32, 4, { B, T, H, V }, pool },
                  { "a", LA_DTYPE_F32, 4, { B, T, H, K }, kk },
                  { "b", LA_DTYPE_F32, 4, { B, T, H, K }, kk } }, 6 };
    tset_write(&rw, "rw.safetensors");
    s = tset_without(&rw, "w");
    tset_write(&s, "rw_now.safetensors");
    la_bad_call("rwkv7 without w", "rwkv7 --in %s", la_tmp("rw_now.safetensors"));
    s = rw;
    s.t[0].name = "q";
    tset_write(&s, "rw_q.safetensors");
    la_bad_call("rwkv7 with q instead of r", "rwkv7 --in %s", la_tmp("rw_q.safetensors"));
    s = tset_with(&rw, (la_tin){ "u", LA_DTYPE_F32, 2, { H, K }, pool });
    tset_write(&s, "rw_u.safetensors");
    la_bad_call("rwkv7 with u (an rwkv6 input)", "rwkv7 --in %s", la_tmp("rw_u.safetensors"));
    s = rw;
    s.t[4].shape[3] = K - 1;
    tset_write(&s, "rw_aK.safetensors");
    la_bad_call("rwkv7 a with K - 1", "rwkv7 --in %s", la_tmp("rw_aK.safetensors"));
    la_bad_call("--allow-neg-eigval on rwkv7", "rwkv7 --in %s --allow-neg-eigval",
                la_tmp("rw.safetensors"));
    s = rw;
    s.t[1].data = nanp;
    tset_write(&s, "rw_nan.safetensors");
    la_bad_call("NaN in rwkv7 w", "rwkv7 --in %s", la_tmp("rw_nan.safetensors"));
    s = tset_with(&rw, (la_tin){ "initial_state", LA_DTYPE_F32, 4, { B, H, V, K }, pool });
    tset_write(&s, "rw_s0.safetensors");
    la_bad_call("rwkv7 initial_state V-major [N,H,V,K]", "rwkv7 --in %s",
                la_tmp("rw_s0.safetensors"));
}

int main(void) {
    if (!la_runner_init("delta_cli")) return 1;
    good_delta_rule();
    good_gdn_kda(false);
    good_gdn_kda(true);
    good_dplr_family();
    bad_inputs();
    la_runner_cleanup();
    return la_test_summary();
}
