// The op runner (`linattn op`) on attn, based, rebased, rope, short_conv and the non-causal
// linear_attn / simple_gla:
//  * one good run per op and variant (forward and backward): every tensor of OUT equals a
//    direct library call on the same inputs, bitwise (same code, one thread), and OUT holds
//    exactly the outputs and the gradients "d" + name of every floating input;
//  * bad calls: misshaped tensors, inputs the variant does not read, flags the op does not
//    take, bad flag values; each must exit with status 2, print one stderr line and leave an
//    existing OUT byte-identical (la_bad_call).
// Correctness of the ops themselves is tested against float64 oracles in test_attn, test_rope,
// test_based, test_noncausal and test_nn; here the program's plumbing is.
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>

#define F32(nm, nd, a, b, c, d, p) { nm, LA_DTYPE_F32, nd, { a, b, c, d, 0 }, p }

static la_opts opts1(void) {
    la_set_num_threads(1);
    return la_opts_default();
}

// attn with GQA (H = 4 query heads on 2 kv heads), a window of 5 and the forgetting gate.
static void good_attn(void) {
    la_rng r;
    la_rng_seed(&r, 3);
    const int64_t B = 2, T = 13, H = 4, J = 2, K = 8, V = 6;
    const int64_t nq = B * T * H * K, nk = B * T * J * K, nv = B * T * J * V, no = B * T * H * V;
    float * q = la_new_normal(&r, nq, 1), * k = la_new_normal(&r, nk, 1);
    float * v = la_new_normal(&r, nv, 1), * g = la_new_logsigmoid(&r, B * T * H);
    float * dout = la_new_normal(&r, no, 1);
    float * o = la_test_alloc((size_t)no * 4), * lse = la_test_alloc((size_t)(B * T * H) * 4);
    float * dq = la_test_alloc((size_t)nq * 4), * dk = la_test_alloc((size_t)nk * 4);
    float * dv = la_test_alloc((size_t)nv * 4), * dg = la_test_alloc((size_t)(B * T * H) * 4);
    la_opts o1 = opts1();
    la_shape sh = { B, T, H, K, V, J };
    la_expect_status(la_attn_forward(o, lse, q, k, v, g, 5, true, sh, &o1), LA_STATUS_OK,
                     "attn forward");
    la_expect_status(la_attn_backward(dq, dk, dv, dg, dout, q, k, v, g, o, lse, 5, true, sh, &o1),
                     LA_STATUS_OK, "attn backward");
    const la_tin in[] = { F32("q", 4, B, T, H, K, q), F32("k", 4, B, T, J, K, k),
                          F32("v", 4, B, T, J, V, v), F32("g", 3, B, T, H, 0, g),
                          F32("do", 4, B, T, H, V, dout) };
    const la_want_out w[] = { { "o", o, no }, { "lse", lse, B * T * H }, { "dq", dq, nq },
                              { "dk", dk, nk }, { "dv", dv, nv }, { "dg", dg, B * T * H } };
    la_good_run("attn gqa window gate", "attn", "--backward --window-size 5", in, 5, w, 6);

    // Non-causal (encoder) without the gate, forward only: OUT is o and lse.
    la_expect_status(la_attn_forward(o, lse, q, k, v, NULL, 0, false, sh, &o1), LA_STATUS_OK,
                     "attn non-causal");
    la_good_run("attn non-causal", "attn", "--non-causal", in, 3, w, 2);

    // Bad calls.
    la_write_st(la_tmp("attn_in.safetensors"), in, 5);
    la_bad_call("attn --window-size 0", "attn --in %s --backward --window-size 0",
                la_tmp("attn_in.safetensors"));
    la_bad_call("attn gate with --non-causal", "attn --in %s --backward --non-causal",
                la_tmp("attn_in.safetensors"));
    la_bad_call("attn --chunk-size", "attn --in %s --backward --chunk-size 16",
                la_tmp("attn_in.safetensors"));
    const la_tin bad_heads[] = { F32("q", 4, B, T, 3, K, q), F32("k", 4, B, T, J, K, k),
                                 F32("v", 4, B, T, J, V, v) };
    la_write_st(la_tmp("attn_heads.safetensors"), bad_heads, 3);
    la_bad_call("attn H not a multiple of HKV", "attn --in %s", la_tmp("attn_heads.safetensors"));
    free(q), free(k), free(v), free(g), free(dout), free(o), free(lse), free(dq), free(dk);
    free(dv), free(dg);
}

// based (default scale, normalised) and rebased (--eps, --no-norm, --scale).
static void good_poly(void) {
    la_rng r;
    la_rng_seed(&r, 4);
    const int64_t B = 1, T = 11, H = 2, F = 4, V = 5, nq = B * T * H * F, nv = B * T * H * V;
    float * q = la_new_normal(&r, nq, 1), * k = la_new_normal(&r, nq, 1);
    float * v = la_new_normal(&r, nv, 1), * dout = la_new_normal(&r, nv, 1);
    float * o = la_test_alloc((size_t)nv * 4), * dq = la_test_alloc((size_t)nq * 4);
    float * dk = la_test_alloc((size_t)nq * 4), * dv = la_test_alloc((size_t)nv * 4);
    la_opts o1 = opts1();
    la_shape sh = { B, T, H, F, V };
    const la_tin in[] = { F32("q", 4, B, T, H, F, q), F32("k", 4, B, T, H, F, k),
                          F32("v", 4, B, T, H, V, v), F32("do", 4, B, T, H, V, dout) };
    const la_want_out w[] = { { "o", o, nv }, { "dq", dq, nq }, { "dk", dk, nq },
                              { "dv", dv, nv } };
    la_expect_status(la_based_forward(o, q, k, v, true, sh, &o1), LA_STATUS_OK, "based fwd");
    la_expect_status(la_based_backward(dq, dk, dv, dout, q, k, v, true, sh, &o1), LA_STATUS_OK,
                     "based bwd");
    la_good_run("based", "based", "--backward", in, 4, w, 4);

    la_opts o2 = o1;
    o2.scale = 0.5f;
    la_expect_status(la_rebased_forward(o, q, k, v, 1e-3f, false, sh, &o2), LA_STATUS_OK,
                     "rebased fwd");
    la_expect_status(la_rebased_backward(dq, dk, dv, dout, q, k, v, 1e-3f, false, sh, &o2),
                     LA_STATUS_OK, "rebased bwd");
    la_good_run("rebased", "rebased", "--backward --eps 1e-3 --no-norm --scale 0.5", in, 4, w, 4);

    la_write_st(la_tmp("poly_in.safetensors"), in, 3);
    la_bad_call("based --eps", "based --in %s --eps 1e-3", la_tmp("poly_in.safetensors"));
    la_bad_call("rebased --eps 0", "rebased --in %s --eps 0", la_tmp("poly_in.safetensors"));
    la_bad_call("rebased --eps abc", "rebased --in %s --eps abc", la_tmp("poly_in.safetensors"));
    const la_tin with_state[] = { in[0], in[1], in[2],
                                  F32("initial_state", 4, B, H, F, V, v) };
    la_write_st(la_tmp("poly_state.safetensors"), with_state, 4);
    la_bad_call("based with initial_state", "based --in %s", la_tmp("poly_state.safetensors"));
    free(q), free(k), free(v), free(dout), free(o), free(dq), free(dk), free(dv);
}

// rope with per-sequence offsets under varlen.
static void good_rope(void) {
    la_rng r;
    la_rng_seed(&r, 5);
    const int64_t T = 9, H = 2, D = 6, n = T * H * D;
    float * x = la_new_normal(&r, n, 1), * dout = la_new_normal(&r, n, 1);
    float * o = la_test_alloc((size_t)n * 4), * dx = la_test_alloc((size_t)n * 4);
    const int64_t cu[] = { 0, 4, 9 }, off[] = { 100, 7 };
    la_opts o1 = opts1();
    o1.cu_seqlens = cu;
    o1.n_seqs = 2;
    la_expect_status(la_rope_forward(o, x, 500.0f, off, 1, T, H, D, &o1), LA_STATUS_OK, "rope");
    la_expect_status(la_rope_backward(dx, dout, 500.0f, off, 1, T, H, D, &o1), LA_STATUS_OK,
                     "rope bwd");
    const la_tin in[] = { F32("x", 4, 1, T, H, D, x), F32("do", 4, 1, T, H, D, dout),
                          { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu },
                          { "offsets", LA_DTYPE_I64, 1, { 2 }, off } };
    const la_want_out w[] = { { "o", o, n }, { "dx", dx, n } };
    la_good_run("rope varlen offsets", "rope", "--backward --theta 500", in, 4, w, 2);

    const la_tin odd[] = { F32("x", 4, 1, T, H, 5, x) };
    la_write_st(la_tmp("rope_odd.safetensors"), odd, 1);
    la_bad_call("rope odd D", "rope --in %s", la_tmp("rope_odd.safetensors"));
    const int64_t off3[] = { 0, 1, 2 };
    const la_tin bad_off[] = { F32("x", 4, 1, T, H, D, x),
                               { "cu_seqlens", LA_DTYPE_I64, 1, { 3 }, cu },
                               { "offsets", LA_DTYPE_I64, 1, { 3 }, off3 } };
    la_write_st(la_tmp("rope_off.safetensors"), bad_off, 3);
    la_bad_call("rope offsets per sequence", "rope --in %s", la_tmp("rope_off.safetensors"));
    la_write_st(la_tmp("rope_ok.safetensors"), in, 1);
    la_bad_call("rope --theta 0", "rope --in %s --theta 0", la_tmp("rope_ok.safetensors"));
    free(x), free(dout), free(o), free(dx);
}

// short_conv with SiLU, bias, an initial cache and torch's (D, 1, W) weight.
static void good_short_conv(void) {
    la_rng r;
    la_rng_seed(&r, 6);
    const int64_t B = 2, T = 3, D = 5, W = 4, nx = B * T * D, nc = B * D * W;
    float * x = la_new_normal(&r, nx, 1), * w = la_new_normal(&r, D * W, 0.5);
    float * bias = la_new_normal(&r, D, 0.5), * c0 = la_new_normal(&r, nc, 1);
    float * dout = la_new_normal(&r, nx, 1), * dfc = la_new_normal(&r, nc, 1);
    float * o = la_test_alloc((size_t)nx * 4), * fc = la_test_alloc((size_t)nc * 4);
    float * dx = la_test_alloc((size_t)nx * 4), * dw = la_test_alloc((size_t)(D * W) * 4);
    float * db = la_test_alloc((size_t)D * 4), * dc0 = la_test_alloc((size_t)nc * 4);
    la_opts o1 = opts1();
    la_expect_status(la_short_conv_forward(o, fc, x, w, bias, c0, LA_ACT_SILU, B, T, D, W, &o1),
                     LA_STATUS_OK, "conv fwd");
    la_expect_status(la_short_conv_backward(dx, dw, db, dc0, dout, dfc, x, w, bias, c0,
                                            LA_ACT_SILU, B, T, D, W, false, &o1),
                     LA_STATUS_OK, "conv bwd");
    const la_tin in[] = { F32("x", 3, B, T, D, 0, x), F32("weight", 3, D, 1, W, 0, w),
                          F32("bias", 1, D, 0, 0, 0, bias), F32("initial_cache", 3, B, D, W, 0, c0),
                          F32("do", 3, B, T, D, 0, dout), F32("dfinal_cache", 3, B, D, W, 0, dfc) };
    const la_want_out wo[] = { { "o", o, nx }, { "final_cache", fc, nc }, { "dx", dx, nx },
                               { "dweight", dw, D * W }, { "dbias", db, D },
                               { "dinitial_cache", dc0, nc } };
    la_good_run("short_conv silu", "short_conv", "--backward --activation silu", in, 6, wo, 6);

    la_write_st(la_tmp("conv_in.safetensors"), in, 4);
    la_bad_call("short_conv --activation relu", "short_conv --in %s --activation relu",
                la_tmp("conv_in.safetensors"));
    float * c1 = la_new_normal(&r, B * D * (W + 1), 1);
    const la_tin bad_cache[] = { in[0], in[1], F32("initial_cache", 3, B, D, W + 1, 0, c1) };
    la_write_st(la_tmp("conv_cache.safetensors"), bad_cache, 3);
    free(c1);
    la_bad_call("short_conv cache width", "short_conv --in %s", la_tmp("conv_cache.safetensors"));
    la_bad_call("short_conv --scale", "short_conv --in %s --scale 2", la_tmp("conv_in.safetensors"));
    free(x), free(w), free(bias), free(c0), free(dout), free(dfc), free(o), free(fc), free(dx);
    free(dw), free(db), free(dc0);
}

// Non-causal linear_attn (normalised) and simple_gla (gate).
static void good_noncausal(void) {
    la_rng r;
    la_rng_seed(&r, 7);
    const int64_t B = 1, T = 10, H = 2, K = 4, V = 3, nq = B * T * H * K, nv = B * T * H * V;
    float * q = la_new_uniform(&r, nq, 0, 1), * k = la_new_uniform(&r, nq, 0, 1);
    float * v = la_new_normal(&r, nv, 1), * g = la_new_logsigmoid(&r, B * T * H);
    float * dout = la_new_normal(&r, nv, 1);
    float * o = la_test_alloc((size_t)nv * 4), * dq = la_test_alloc((size_t)nq * 4);
    float * dk = la_test_alloc((size_t)nq * 4), * dv = la_test_alloc((size_t)nv * 4);
    float * dg = la_test_alloc((size_t)(B * T * H) * 4);
    la_opts o1 = opts1();
    la_shape sh = { B, T, H, K, V };
    la_expect_status(la_linear_attn_noncausal_forward(o, q, k, v, true, sh, &o1), LA_STATUS_OK,
                     "la nc fwd");
    la_expect_status(la_linear_attn_noncausal_backward(dq, dk, dv, dout, q, k, v, true, sh, &o1),
                     LA_STATUS_OK, "la nc bwd");
    const la_tin in[] = { F32("q", 4, B, T, H, K, q), F32("k", 4, B, T, H, K, k),
                          F32("v", 4, B, T, H, V, v), F32("do", 4, B, T, H, V, dout),
                          F32("g", 3, B, T, H, 0, g) };
    const la_want_out w[] = { { "o", o, nv }, { "dq", dq, nq }, { "dk", dk, nq },
                              { "dv", dv, nv }, { "dg", dg, B * T * H } };
    la_good_run("linear_attn non-causal", "linear_attn", "--backward --non-causal --normalize",
                in, 4, w, 4);
    la_expect_status(la_simple_gla_noncausal_forward(o, q, k, v, g, NULL, sh, &o1), LA_STATUS_OK,
                     "sg nc fwd");
    la_expect_status(
        la_simple_gla_noncausal_backward(dq, dk, dv, dg, dout, q, k, v, g, NULL, sh, &o1),
        LA_STATUS_OK, "sg nc bwd");
    la_good_run("simple_gla non-causal", "simple_gla", "--backward --non-causal", in, 5, w, 5);

    const la_tin with_state[] = { in[0], in[1], in[2],
                                  F32("initial_state", 4, B, H, K, V, q) };
    la_write_st(la_tmp("nc_state.safetensors"), with_state, 4);
    la_bad_call("non-causal with initial_state", "linear_attn --in %s --non-causal",
                la_tmp("nc_state.safetensors"));
    la_write_st(la_tmp("nc_in.safetensors"), in, 3);
    la_bad_call("--non-causal on gla", "gla --in %s --non-causal", la_tmp("nc_in.safetensors"));
    free(q), free(k), free(v), free(g), free(dout), free(o), free(dq), free(dk), free(dv), free(dg);
}

int main(void) {
    if (!la_runner_init("layers_cli")) return 1;
    good_attn();
    good_poly();
    good_rope();
    good_short_conv();
    good_noncausal();
    la_runner_cleanup();
    return la_test_summary();
}
