// Chunk backward passes over more than LA_CKPT_ALL (256) chunks keep sqrt-spaced checkpoints
// and replay each group of boundary states (src/core/ckpt.c). gla and rwkv6 (their chunk form,
// C = 64, T = 20,000: 313 chunks, fixed length and varlen) against their recurrent form, every
// gradient. Tolerance 1e-4 relative to the largest entry: float32 sums over 20,000 tokens in two
// different orders. (simple_gla's grouped backward is checked in test_simple_gla.)
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>

static void run(bool rwkv, bool varlen) {
    la_rng r;
    la_rng_seed(&r, 700 + 2 * rwkv + varlen);
    const int64_t T = 20000, H = 2, K = 8, V = 8, nq = T * H * K, nv = T * H * V;
    int64_t cu[5] = { 0, 17000, 17001, 17001, 20000 };
    const int64_t N = varlen ? 4 : 1, ns = N * H * K * V;
    float * q = la_new_normal(&r, nq, 1.0), * k = la_new_normal(&r, nq, 1.0);
    float * v = la_new_normal(&r, nv, 1.0), * dout = la_new_normal(&r, nv, 1.0);
    float * s0 = la_new_normal(&r, ns, 0.5), * dfin = la_new_normal(&r, ns, 1.0);
    float * u = la_new_normal(&r, H * K, 1.0);
    float * g = la_test_alloc((size_t)nq * 4);
    la_l2norm_rows(k, T * H, K);
    la_fill_logsigmoid(&r, g, nq);
    la_shape sh = { 1, T, H, K, V };
    float * out[2][6];
    const int64_t n[6] = { nq, nq, nv, nq, ns, H * K };
    for (int f = 0; f < 2; f++) {
        la_opts o = la_test_opts(f == 0 ? LA_FORM_CHUNK : LA_FORM_RECURRENT, 64, 0,
                                 varlen ? cu : NULL, varlen ? 4 : 0);
        for (int i = 0; i < 6; i++) out[f][i] = la_test_alloc((size_t)n[i] * 4);
        la_status st = rwkv ? la_rwkv6_backward(out[f][0], out[f][1], out[f][2], out[f][3],
                                                out[f][5], out[f][4], dout, dfin, q, k, v, g, u,
                                                s0, sh, &o)
                            : la_gla_backward(out[f][0], out[f][1], out[f][2], out[f][3], NULL,
                                              out[f][4], dout, dfin, q, k, v, g, NULL, s0, sh, &o);
        la_check(st == LA_STATUS_OK, "%s %s backward status %s", rwkv ? "rwkv6" : "gla",
                 f == 0 ? "chunk" : "recurrent", la_status_str(st));
    }
    const char * names[6] = { "dq", "dk", "dv", "dgk", "dinitial_state", "du" };
    for (int i = 0; i < (rwkv ? 6 : 5); i++) {
        char nm[96];
        snprintf(nm, sizeof nm, "%s long backward%s %s", rwkv ? "rwkv6" : "gla",
                 varlen ? " varlen" : "", names[i]);
        double * ref = la_to_f64(out[1][i], n[i]);
        la_check_rel(nm, out[0][i], ref, n[i], 1e-4);
        free(ref);
    }
    for (int f = 0; f < 2; f++)
        for (int i = 0; i < 6; i++) free(out[f][i]);
    free(q); free(k); free(v); free(dout); free(s0); free(dfin); free(u); free(g);
}

int main(void) {
    for (int rw = 0; rw < 2; rw++)
        for (int vl = 0; vl < 2; vl++) run(rw, vl);
    return la_test_summary();
}
