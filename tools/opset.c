// The op set of the benchmark and the demo (see opset.h).
#include "opset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    OP_LINEAR_ATTN, OP_LINEAR_ATTN_NORM, OP_SIMPLE_GLA, OP_RETENTION, OP_MAMBA2, OP_GLA, OP_RWKV6,
    OP_HGRN, OP_SELECTIVE_SCAN, OP_DELTA_RULE, OP_GDN, OP_KDA, OP_DPLR, OP_RWKV7, OP_ATTN
};

const op_entry la_opset[] = {
    { "linear_attn", "" },
    { "linear_attn", "normalize" },
    { "simple_gla", "g [B,T,H]" },
    { "retention", "" },
    { "mamba2", "G=1" },
    { "gla", "gk [B,T,H,K]" },
    { "rwkv6", "" },
    { "hgrn", "D=H*V" },
    { "selective_scan", "D=H*V N=K" },
    { "delta_rule", "beta [B,T,H]" },
    { "gated_delta_rule", "g [B,T,H]" },
    { "kda", "g [B,T,H,K]" },
    { "dplr_delta_rule", "gk [B,T,H,K]" },
    { "rwkv7", "w [B,T,H,K]" },
    { "attn", "causal", true },
};
const int la_opset_count = sizeof la_opset / sizeof la_opset[0];

struct op_inst {
    int      which;
    la_shape sh;
    int64_t  nq, nv, ng;
    float *  q, * k, * v, * g, * o, * dout;   // mamba2: q = C, k = B (per group), v = x, g = dt
    float *  dq, * dk, * dv, * dg;
    float *  A_log, * D, * dA, * dD;
    float *  gk, * dgk;                       // gla gk, rwkv6 w (B,T,H,K)
    float *  u, * du;                         // rwkv6 bonus (H,K)
    float *  state;                           // (B,H,K,V) decode state, allocated on first use
    // hgrn and selective_scan see (B, T, D = H*V) channels, selective_scan with d_state N = K:
    // x / u = v, o = o; B = k and C = q (their first B*T*K entries).
    float *  xg, * dxg;                       // (B,T,D) hgrn gate / selective_scan delta
    float *  Am, * dAm;                       // (D, N) selective_scan A
    float *  beta, * dbeta;                   // (B,T,H) delta family
    float *  a, * b, * da, * db;              // (B,T,H,K) dplr / rwkv7 low-rank vectors
    float *  lse;                             // (B,T,H) attn row log-sum-exp
};

static bool is_delta(int w) { return w == OP_DELTA_RULE || w == OP_GDN || w == OP_KDA; }
static bool is_dplr(int w) { return w == OP_DPLR || w == OP_RWKV7; }

static uint64_t rng_next(uint64_t * s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}
static float urand(uint64_t * s) { return (float)((double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0)); }
static void fill(float * x, int64_t n, uint64_t * s, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * urand(s);
}

op_inst * op_inst_new(int which, la_shape sh, uint64_t seed) {
    op_inst * x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->which = which;
    x->sh = sh;
    const int64_t ntok = sh.B * sh.T;
    x->nq = ntok * sh.H * sh.K;
    x->nv = ntok * sh.H * sh.V;
    x->ng = ntok * sh.H;
    size_t fq = (size_t)x->nq * 4, fv = (size_t)x->nv * 4, fg = (size_t)x->ng * 4;
    x->q = malloc(fq); x->k = malloc(fq); x->v = malloc(fv); x->o = malloc(fv);
    x->dout = malloc(fv); x->dq = malloc(fq); x->dk = malloc(fq); x->dv = malloc(fv);
    x->g = malloc(fg); x->dg = malloc(fg);
    x->gk = malloc(fq); x->dgk = malloc(fq);
    x->u = malloc((size_t)(sh.H * sh.K) * 4); x->du = malloc((size_t)(sh.H * sh.K) * 4);
    x->A_log = malloc((size_t)sh.H * 4); x->D = malloc((size_t)sh.H * 4);
    x->dA = malloc((size_t)sh.H * 4); x->dD = malloc((size_t)sh.H * 4);
    x->xg = malloc(fv); x->dxg = malloc(fv);
    x->Am = malloc((size_t)(sh.H * sh.V * sh.K) * 4); x->dAm = malloc((size_t)(sh.H * sh.V * sh.K) * 4);
    x->beta = malloc(fg); x->dbeta = malloc(fg); x->lse = malloc(fg);
    x->a = malloc(fq); x->b = malloc(fq); x->da = malloc(fq); x->db = malloc(fq);
    if (!x->beta || !x->dbeta || !x->lse || !x->a || !x->b || !x->da || !x->db) {
        op_inst_free(x);
        return NULL;
    }
    if (!x->q || !x->k || !x->v || !x->o || !x->dout || !x->dq || !x->dk || !x->dv || !x->g ||
        !x->dg || !x->A_log || !x->D || !x->dA || !x->dD || !x->gk || !x->dgk || !x->u || !x->du ||
        !x->xg || !x->dxg || !x->Am || !x->dAm) {
        op_inst_free(x);
        return NULL;
    }
    uint64_t s = seed * 2654435761u + 1;
    // Keys scaled like l2-normalised rows, positive features for the normalised variant.
    const float ks = 1.0f / sqrtf((float)sh.K);
    if (which == OP_LINEAR_ATTN_NORM) {
        fill(x->q, x->nq, &s, 0.0f, 1.0f);
        fill(x->k, x->nq, &s, 0.0f, 2.0f * ks);
    } else {
        fill(x->q, x->nq, &s, -1.0f, 1.0f);
        fill(x->k, x->nq, &s, -ks * 1.7f, ks * 1.7f);
    }
    fill(x->v, x->nv, &s, -1.0f, 1.0f);
    fill(x->dout, x->nv, &s, -1.0f, 1.0f);
    if (which == OP_MAMBA2) fill(x->g, x->ng, &s, -3.0f, 1.0f);       // dt_raw
    else fill(x->g, x->ng, &s, -0.2f, -0.001f);                          // log gates
    fill(x->gk, x->nq, &s, -0.3f, -0.001f);                             // per-channel log gates
    fill(x->u, sh.H * sh.K, &s, -1.0f, 1.0f);
    fill(x->A_log, sh.H, &s, 0.0f, 1.0f);
    fill(x->D, sh.H, &s, -1.0f, 1.0f);
    if (which == OP_SELECTIVE_SCAN) fill(x->xg, x->nv, &s, 0.001f, 0.1f);  // delta (dt)
    else fill(x->xg, x->nv, &s, -0.3f, -0.001f);                          // hgrn log gate
    fill(x->Am, sh.H * sh.V * sh.K, &s, -4.0f, -0.5f);
    fill(x->beta, x->ng, &s, 0.05f, 0.95f);
    if (is_delta(which) || is_dplr(which)) {
        // The delta rule expects l2-normalised keys (OPS.md 2.6); dplr gets rwkv7's form
        // a = -kk, b = kk o a_r with kk = l2norm(k), a_r in (0, 1) (OPS.md 2.12).
        for (int64_t r = 0; r < x->nq / sh.K; r++) {
            float * kr = x->k + r * sh.K;
            double n2 = 0;
            for (int64_t i = 0; i < sh.K; i++) n2 += (double)kr[i] * (double)kr[i];
            const float inv = (float)(1.0 / sqrt(n2 + 1e-6));
            for (int64_t i = 0; i < sh.K; i++) {
                kr[i] *= inv;
                x->a[r * sh.K + i] = -kr[i];
                x->b[r * sh.K + i] = kr[i] * urand(&s);
            }
        }
        if (which == OP_RWKV7) fill(x->gk, x->nq, &s, -0.6f, -0.001f);
    }
    return x;
}

void op_inst_free(op_inst * x) {
    if (!x) return;
    free(x->q); free(x->k); free(x->v); free(x->g); free(x->o); free(x->dout);
    free(x->dq); free(x->dk); free(x->dv); free(x->dg);
    free(x->A_log); free(x->D); free(x->dA); free(x->dD); free(x->gk); free(x->dgk); free(x->u); free(x->du); free(x->state);
    free(x->xg); free(x->dxg); free(x->Am); free(x->dAm);
    free(x->beta); free(x->dbeta); free(x->lse); free(x->a); free(x->b); free(x->da); free(x->db);
    free(x);
}

static la_opts mk_opts(la_form form, int32_t C) {
    la_opts o = la_opts_default();
    o.form = form;
    o.chunk_size = form == LA_FORM_CHUNK ? C : 0;
    return o;
}

la_status op_inst_forward(op_inst * x, la_form form, int32_t C) {
    la_opts o = mk_opts(form, C);
    switch (x->which) {
    case OP_LINEAR_ATTN:
        return la_linear_attn_forward(x->o, NULL, NULL, x->q, x->k, x->v, NULL, NULL, false, x->sh, &o);
    case OP_LINEAR_ATTN_NORM:
        return la_linear_attn_forward(x->o, NULL, NULL, x->q, x->k, x->v, NULL, NULL, true, x->sh, &o);
    case OP_SIMPLE_GLA:
        return la_simple_gla_forward(x->o, NULL, x->q, x->k, x->v, x->g, NULL, NULL, x->sh, &o);
    case OP_RETENTION:
        return la_retention_forward(x->o, NULL, x->q, x->k, x->v, NULL, x->sh, &o);
    case OP_MAMBA2:
        // B and C shared by all heads (G = 1): the first H-row of q/k serves as (B,T,1,Nst).
        return la_mamba2_forward(x->o, NULL, x->v, x->g, x->A_log, x->k, x->q, x->D, NULL, NULL,
                                 x->sh, 1, &o);
    case OP_GLA:
        return la_gla_forward(x->o, NULL, x->q, x->k, x->v, x->gk, NULL, NULL, x->sh, &o);
    case OP_RWKV6:
        return la_rwkv6_forward(x->o, NULL, x->q, x->k, x->v, x->gk, x->u, NULL, x->sh, &o);
    case OP_HGRN:
        return la_hgrn_forward(x->o, NULL, x->v, x->xg, NULL, x->sh.B, x->sh.T, x->sh.H * x->sh.V, &o);
    case OP_SELECTIVE_SCAN:
        return la_selective_scan_forward(x->o, NULL, x->v, x->xg, x->Am, x->k, x->q, NULL, NULL,
                                         false, NULL, x->sh.B, x->sh.T, x->sh.H * x->sh.V,
                                         x->sh.K, &o);
    case OP_DELTA_RULE:
        return la_delta_rule_forward(x->o, NULL, x->q, x->k, x->v, x->beta, NULL, x->sh, &o);
    case OP_GDN:
        return la_gated_delta_rule_forward(x->o, NULL, x->q, x->k, x->v, x->g, x->beta, NULL,
                                           NULL, NULL, x->sh, &o);
    case OP_KDA:
        return la_kda_forward(x->o, NULL, x->q, x->k, x->v, x->gk, x->beta, NULL, NULL, NULL,
                              x->sh, &o);
    case OP_DPLR:
        return la_dplr_delta_rule_forward(x->o, NULL, x->q, x->k, x->v, x->a, x->b, x->gk, NULL,
                                          x->sh, &o);
    case OP_RWKV7:
        return la_rwkv7_forward(x->o, NULL, x->q, x->gk, x->k, x->v, x->a, x->b, NULL, x->sh, &o);
    case OP_ATTN:
        return la_attn_forward(x->o, x->lse, x->q, x->k, x->v, NULL, 0, true, x->sh, &o);
    }
    return LA_STATUS_INVALID_ARG;
}

la_status op_inst_decode(op_inst * x, double * state_bytes) {
    const la_shape sh = x->sh;
    const size_t ns = (size_t)(sh.B * sh.H * sh.K * sh.V);
    if (!x->state && !(x->state = calloc(ns, sizeof(float)))) return LA_STATUS_NOMEM;
    *state_bytes = 2.0 * (double)ns * sizeof(float);
    la_opts o = mk_opts(LA_FORM_RECURRENT, 0);
    float * S = x->state;
    switch (x->which) {
    case OP_LINEAR_ATTN:
        return la_linear_attn_forward(x->o, S, NULL, x->q, x->k, x->v, S, NULL, false, sh, &o);
    case OP_SIMPLE_GLA:
        return la_simple_gla_forward(x->o, S, x->q, x->k, x->v, x->g, NULL, S, sh, &o);
    case OP_RETENTION:
        return la_retention_forward(x->o, S, x->q, x->k, x->v, S, sh, &o);
    case OP_MAMBA2:
        return la_mamba2_forward(x->o, S, x->v, x->g, x->A_log, x->k, x->q, x->D, NULL, S, sh, 1,
                                 &o);
    case OP_GLA:
        return la_gla_forward(x->o, S, x->q, x->k, x->v, x->gk, NULL, S, sh, &o);
    case OP_RWKV6:
        return la_rwkv6_forward(x->o, S, x->q, x->k, x->v, x->gk, x->u, S, sh, &o);
    case OP_HGRN:
        *state_bytes = 2.0 * (double)(sh.B * sh.H * sh.V) * sizeof(float);
        return la_hgrn_forward(x->o, S, x->v, x->xg, S, sh.B, sh.T, sh.H * sh.V, &o);
    case OP_SELECTIVE_SCAN:
        return la_selective_scan_forward(x->o, S, x->v, x->xg, x->Am, x->k, x->q, NULL, NULL,
                                         false, S, sh.B, sh.T, sh.H * sh.V, sh.K, &o);
    case OP_DELTA_RULE:
        return la_delta_rule_forward(x->o, S, x->q, x->k, x->v, x->beta, S, sh, &o);
    case OP_GDN:
        return la_gated_delta_rule_forward(x->o, S, x->q, x->k, x->v, x->g, x->beta, NULL, NULL,
                                           S, sh, &o);
    case OP_KDA:
        return la_kda_forward(x->o, S, x->q, x->k, x->v, x->gk, x->beta, NULL, NULL, S, sh, &o);
    case OP_DPLR:
        return la_dplr_delta_rule_forward(x->o, S, x->q, x->k, x->v, x->a, x->b, x->gk, S, sh,
                                          &o);
    case OP_RWKV7:
        return la_rwkv7_forward(x->o, S, x->q, x->gk, x->k, x->v, x->a, x->b, S, sh, &o);
    }
    return LA_STATUS_UNSUPPORTED;  // normalised linear_attn carries (S, z) through copies
}

la_status op_inst_backward(op_inst * x, la_form form, int32_t C) {
    la_status st = op_inst_forward(x, form, C);
    if (st != LA_STATUS_OK) return st;
    la_opts o = mk_opts(form, C);
    switch (x->which) {
    case OP_LINEAR_ATTN:
    case OP_LINEAR_ATTN_NORM:
        return la_linear_attn_backward(x->dq, x->dk, x->dv, NULL, NULL, x->dout, NULL, NULL, x->q,
                                       x->k, x->v, NULL, NULL, x->which == OP_LINEAR_ATTN_NORM,
                                       x->sh, &o);
    case OP_SIMPLE_GLA:
        return la_simple_gla_backward(x->dq, x->dk, x->dv, x->dg, NULL, x->dout, NULL, x->q, x->k,
                                      x->v, x->g, NULL, NULL, x->sh, &o);
    case OP_RETENTION:
        return la_retention_backward(x->dq, x->dk, x->dv, NULL, x->dout, NULL, x->q, x->k, x->v,
                                     NULL, x->sh, &o);
    case OP_MAMBA2:
        return la_mamba2_backward(x->dv, x->dg, x->dA, x->dk, x->dq, x->dD, NULL, NULL, x->dout,
                                  NULL, x->v, x->g, x->A_log, x->k, x->q, x->D, NULL, NULL, x->sh,
                                  1, &o);
    case OP_GLA:
        return la_gla_backward(x->dq, x->dk, x->dv, x->dgk, NULL, NULL, x->dout, NULL, x->q, x->k,
                               x->v, x->gk, NULL, NULL, x->sh, &o);
    case OP_RWKV6:
        return la_rwkv6_backward(x->dq, x->dk, x->dv, x->dgk, x->du, NULL, x->dout, NULL, x->q,
                                 x->k, x->v, x->gk, x->u, NULL, x->sh, &o);
    case OP_HGRN:
        return la_hgrn_backward(x->dv, x->dxg, NULL, x->dout, NULL, x->v, x->xg, NULL, x->sh.B,
                                x->sh.T, x->sh.H * x->sh.V, &o);
    case OP_SELECTIVE_SCAN:
        return la_selective_scan_backward(x->dv, x->dxg, x->dAm, x->dk, x->dq, NULL, NULL, NULL,
                                          x->dout, NULL, x->v, x->xg, x->Am, x->k, x->q, NULL,
                                          NULL, false, NULL, x->sh.B, x->sh.T, x->sh.H * x->sh.V,
                                          x->sh.K, &o);
    case OP_DELTA_RULE:
        return la_delta_rule_backward(x->dq, x->dk, x->dv, x->dbeta, NULL, x->dout, NULL, x->q,
                                      x->k, x->v, x->beta, NULL, x->sh, &o);
    case OP_GDN:
        return la_gated_delta_rule_backward(x->dq, x->dk, x->dv, x->dg, x->dbeta, NULL, NULL,
                                            NULL, x->dout, NULL, x->q, x->k, x->v, x->g, x->beta,
                                            NULL, NULL, NULL, x->sh, &o);
    case OP_KDA:
        return la_kda_backward(x->dq, x->dk, x->dv, x->dgk, x->dbeta, NULL, NULL, NULL, x->dout,
                               NULL, x->q, x->k, x->v, x->gk, x->beta, NULL, NULL, NULL, x->sh,
                               &o);
    case OP_DPLR:
        return la_dplr_delta_rule_backward(x->dq, x->dk, x->dv, x->da, x->db, x->dgk, NULL,
                                           x->dout, NULL, x->q, x->k, x->v, x->a, x->b, x->gk,
                                           NULL, x->sh, &o);
    case OP_RWKV7:
        return la_rwkv7_backward(x->dq, x->dgk, x->dk, x->dv, x->da, x->db, NULL, x->dout, NULL,
                                 x->q, x->gk, x->k, x->v, x->a, x->b, NULL, x->sh, &o);
    case OP_ATTN:
        return la_attn_backward(x->dq, x->dk, x->dv, NULL, x->dout, x->q, x->k, x->v, NULL, x->o,
                                x->lse, 0, true, x->sh, &o);
    }
    return LA_STATUS_INVALID_ARG;
}

const float * op_inst_out(const op_inst * x, int64_t * n) {
    *n = x->nv;
    return x->o;
}

const float * op_inst_grad(const op_inst * x, int64_t * n) {
    if (x->which == OP_HGRN || x->which == OP_SELECTIVE_SCAN) {  // dg / ddelta
        *n = x->nv;
        return x->dxg;
    }
    if (x->which == OP_GLA || x->which == OP_RWKV6 || x->which == OP_KDA || is_dplr(x->which)) {
        // the per-channel gate gradient
        *n = x->nq;
        return x->dgk;
    }
    if (x->which == OP_MAMBA2) {  // dx
        *n = x->nv;
        return x->dv;
    }
    *n = x->nq;
    return x->dk;
}

double op_flops_per_token(int which, la_form form, la_shape sh, int32_t C) {
    const double K = (double)sh.K, V = (double)(which == OP_LINEAR_ATTN_NORM ? sh.V + 1 : sh.V);
    // Element-wise scans (ALGORITHMS.md 11.2), per token and per V channels: hgrn 2 per channel,
    // selective_scan 6 per (channel, state) (the exponential not counted), in every form.
    if (which == OP_HGRN) return 2 * V;
    if (which == OP_SELECTIVE_SCAN) return 6 * V * K;
    if (which == OP_ATTN)  // causal: token t meets t + 1 keys; (T + 1)(K + V) on average
        return ((double)sh.T + 1.0) * (K + V);
    const double c = (double)(C > 0 ? C : is_dplr(which) ? 32 : 64);  // the ops' defaults
    if (is_delta(which)) {  // ALGORITHMS.md 11.2 / 11.3 (dense)
        if (form != LA_FORM_CHUNK) return (which == OP_DELTA_RULE ? 6 : 7) * K * V;
        return 6 * K * V + 2 * c * (3 * K + 2 * V) + c * c / 3;
    }
    if (is_dplr(which)) {
        if (form != LA_FORM_CHUNK) return 9 * K * V;
        return 8 * K * V + 2 * c * (5 * K + 4 * V) + c * c / 3;
    }
    if (form != LA_FORM_CHUNK) {
        // recurrent: k v^T update + S^T q (4KV), plus the decay of S for gated ops (5KV).
        return which == OP_LINEAR_ATTN || which == OP_LINEAR_ATTN_NORM ? 4 * K * V : 5 * K * V;
    }
    return 4 * K * V + 2 * c * (K + V);  // inter-chunk 4KV + dense intra-chunk 2C(K+V)
    // (gla and rwkv6 use the same count, ALGORITHMS.md 11.3)
}

double op_fwdbwd_factor(int which) { return which == OP_ATTN ? 3.5 : 3.0; }
