// linattn: linear-attention sequence models in C.
//
// This header is the whole public API and doubles as its manual.
//
// ---------------------------------------------------------------------------------------------
// Tutorial
//
// Every token mixer is a function of q, k, v (and gates) laid out [B, T, H, D] in float32,
// D fastest, and of an optional recurrent state [N, H, K, V]. Each op comes in three forms
// that compute the same function (OPS.md is the contract):
//   LA_FORM_REF        a plain per-token recurrence (the oracle, also built in float64 for tests)
//   LA_FORM_RECURRENT  the fast token loop used for decoding (T = 1 steps)
//   LA_FORM_CHUNK      the chunkwise-parallel algorithm used for training and prefill
// and each has a backward pass that returns the gradient of
//   L = sum(o * do) + sum(final_state * dfinal_state)
// with respect to every floating input.
//
//     la_opts opts = la_opts_default();            // chunk form, scale K^-1/2, C = 64
//     la_shape sh  = { .B = 1, .T = 4096, .H = 8, .K = 128, .V = 128 };
//     la_simple_gla_forward(o, final_state, q, k, v, g, NULL, NULL, sh, &opts);
//     la_simple_gla_backward(dq, dk, dv, dg, NULL, dout, NULL, q, k, v, g, NULL, NULL, sh, &opts);
//
// Scratch memory is caller-owned: la_<op>_workspace_size() tells how many bytes a call needs
// for the current thread count (64 bytes of it are slack, so the block may have any
// alignment); pass it in opts.work / opts.work_size. With opts.work == NULL the op allocates
// (and frees) its own.
//
// Variable-length batches: set opts.cu_seqlens (int64 [N+1], cu[0] = 0, non-decreasing,
// cu[N] = T) and opts.n_seqs = N; B must then be 1. States then have N rows.
//
// Threads: la_set_num_threads(n). Work is split over (sequence, head) pairs (hgrn and
// selective_scan: sequence and channel blocks), each computed by one thread in a fixed order,
// and reductions run in a fixed order, so results are bitwise identical for any thread count.
//
// The library never prints and never exits. Fallible calls return la_status; violated
// contracts that the caller cannot have meant (NULL required pointers) are reported as
// LA_STATUS_INVALID_ARG as well.
// ---------------------------------------------------------------------------------------------

#ifndef LINATTN_H
#define LINATTN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LA_API
#else
#define LA_API __attribute__((visibility("default")))
#endif

#define LA_VERSION_MAJOR 0
#define LA_VERSION_MINOR 1
#define LA_VERSION_PATCH 0
#define LA_VERSION_STRING "0.1.0"

// ---------------------------------------------------------------------------------------------
// Status

typedef enum la_status {
    LA_STATUS_OK = 0,
    LA_STATUS_INVALID_ARG,     // a NULL required pointer, a bad option value
    LA_STATUS_SHAPE,           // dimensions that do not fit together
    LA_STATUS_CU_SEQLENS,      // cu_seqlens not [0 .. T] non-decreasing, or B != 1 with varlen
    LA_STATUS_NONFINITE,       // NaN or Inf where the op cannot accept it
    LA_STATUS_NOMEM,           // an allocation failed
    LA_STATUS_WORKSPACE,       // opts.work_size smaller than the workspace query says
    LA_STATUS_IO,              // a file could not be opened, read, written or renamed
    LA_STATUS_FORMAT,          // a file is malformed
    LA_STATUS_DTYPE,           // a tensor has a dtype the call does not accept
    LA_STATUS_NOT_FOUND,       // a named tensor is absent
    LA_STATUS_UNSUPPORTED,     // a valid request this build or op does not implement
} la_status;

LA_API const char * la_status_str(la_status s);

// ---------------------------------------------------------------------------------------------
// Runtime: threads, CPU dispatch

// Number of threads the ops use (OpenMP). n <= 0 restores the default (all cores).
LA_API void    la_set_num_threads(int32_t n);
LA_API int32_t la_get_num_threads(void);

// Force the portable reference matrix kernels (also: environment LA_FORCE_REF=1). The token
// loops are compiled for AVX-512, AVX2 and baseline x86-64 and chosen by the loader.
LA_API void la_set_use_ref(bool use_ref);

// The instruction set the matrix kernels dispatch to: "avx512", "avx2" or "portable".
LA_API const char * la_cpu_isa(void);

// sgemm through CBLAS (OpenBLAS loaded at run time when present, linattn's own kernel
// otherwise); row-major C[M,N] = alpha * op(A) op(B) + beta * C. Used by the layers and as the
// speed reference of the benchmarks. la_blas_backend() names the backend ("openblas",
// "linattn").
LA_API void la_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
                     const float * A, int64_t lda, const float * B, int64_t ldb, float beta,
                     float * C, int64_t ldc);
LA_API const char * la_blas_backend(void);

// ---------------------------------------------------------------------------------------------
// Op options and shapes

typedef enum la_form {
    LA_FORM_CHUNK = 0,
    LA_FORM_RECURRENT,
    LA_FORM_REF,
} la_form;

LA_API const char * la_form_str(la_form f);

typedef struct la_shape {
    int64_t B;  // batch rows (1 in varlen mode)
    int64_t T;  // tokens per row
    int64_t H;  // heads
    int64_t K;  // key (query) head dim
    int64_t V;  // value head dim
    int64_t HV; // value heads of grouped-value ops (gated_delta_rule, kda; OPS.md 1.8):
                // 0 means H. Other ops require 0 or H.
} la_shape;

typedef struct la_opts {
    la_form         form;        // algorithm; all forms compute the same function
    float           scale;       // attention scale; 0 selects the op's default (K^-1/2)
    int32_t         chunk_size;  // C for the chunk form; 0 selects 64 (dplr family: 32); 1 .. 256
    const int64_t * cu_seqlens;  // (N+1) sequence starts for varlen mode, or NULL
    int64_t         n_seqs;      // N when cu_seqlens is set
    void *          work;        // caller-owned scratch (any alignment), or NULL: the op allocates
    size_t          work_size;   // bytes at work
    // In-kernel conveniences of the delta-rule family (OPS.md 1.7); every other op rejects
    // them. Backward differentiates through them, back to the raw inputs.
    bool            use_qk_l2norm_in_kernel;     // delta_rule, gated_delta_rule, kda
    bool            use_beta_sigmoid_in_kernel;  // gated_delta_rule, kda: beta = sigmoid(raw)
    bool            allow_neg_eigval;            // with the sigmoid: beta = 2 sigmoid(raw)
    bool            use_gate_in_kernel;          // gated_delta_rule, kda: g from raw + A_log, dt_bias
    float           lower_bound;                 // kda with the gate flag: < 0 selects the
                                                 // lower-bound gate; 0 = off
} la_opts;

LA_API la_opts la_opts_default(void);

// ---------------------------------------------------------------------------------------------
// simple_gla: scalar per-head decay (Gated RetNet, Lightning, Mamba2-SSD)
//
//   S_t = exp(g_t) S_{t-1} + k_t v_t^T ;   o_t = s S_t^T q_t        (OPS.md 2.2)
//
//   o, v, do, dv         (B, T, H, V)      q, k, dq, dk   (B, T, H, K)
//   g, dg                (B, T, H)  log gate, or NULL
//   g_gamma              (H)  constant log gate, or NULL (at most one of g, g_gamma;
//                        neither gives plain linear attention)
//   initial_state, dinitial_state, final_state, dfinal_state   (N, H, K, V), each optional
//
// Forward overwrites o and final_state. final_state may be the same tensor as initial_state
// (a decode step then updates the state in place, touching it once); otherwise the two must not
// overlap. Backward overwrites every non-NULL gradient it is given; dg must be non-NULL exactly
// when g is. The chunk backward keeps one K x V state per chunk per thread up to 256 chunks,
// and beyond that a checkpoint every sqrt(T/C) chunks plus one replayed group (16 MiB instead
// of 1 GiB per thread at T = 10^6, K = V = 128; gla and rwkv6 alike): the workspace query
// reports it. The backward saves nothing from the forward:
// it recomputes the chunk-boundary states (every C tokens) and works inside each chunk.
LA_API size_t la_simple_gla_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_simple_gla_forward(float * o, float * final_state,
                                       const float * q, const float * k, const float * v,
                                       const float * g, const float * g_gamma,
                                       const float * initial_state,
                                       la_shape sh, const la_opts * opts);
LA_API la_status la_simple_gla_backward(float * dq, float * dk, float * dv, float * dg,
                                        float * dinitial_state,
                                        const float * dout, const float * dfinal_state,
                                        const float * q, const float * k, const float * v,
                                        const float * g, const float * g_gamma,
                                        const float * initial_state,
                                        la_shape sh, const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// retention (RetNet): simple_gla with g_gamma[h] = log(1 - 2^(-5-h))     (OPS.md 2.3)

LA_API void   la_retention_gamma(float * g_gamma, int64_t H);  // (H)
LA_API size_t la_retention_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_retention_forward(float * o, float * final_state,
                                      const float * q, const float * k, const float * v,
                                      const float * initial_state,
                                      la_shape sh, const la_opts * opts);
LA_API la_status la_retention_backward(float * dq, float * dk, float * dv, float * dinitial_state,
                                       const float * dout, const float * dfinal_state,
                                       const float * q, const float * k, const float * v,
                                       const float * initial_state,
                                       la_shape sh, const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// linear_attn: S_t = S_{t-1} + k_t v_t^T ; o_t = s S_t^T q_t                 (OPS.md 2.1)
// With normalize, z_t = z_{t-1} + k_t and o_t <- o_t / (s q_t . z_t + 1e-10); the state is
// the pair (S, z) with z (N, H, K) (fla: (N, 1, H, K)). initial_z NULL means z_0 = 0.
// Without normalize the z arguments must be NULL.

LA_API size_t la_linear_attn_workspace_size(bool backward, bool normalize, la_shape sh,
                                            const la_opts * opts);
LA_API la_status la_linear_attn_forward(float * o, float * final_state, float * final_z,
                                        const float * q, const float * k, const float * v,
                                        const float * initial_state, const float * initial_z,
                                        bool normalize, la_shape sh, const la_opts * opts);
LA_API la_status la_linear_attn_backward(float * dq, float * dk, float * dv,
                                         float * dinitial_state, float * dinitial_z,
                                         const float * dout, const float * dfinal_state,
                                         const float * dfinal_z,
                                         const float * q, const float * k, const float * v,
                                         const float * initial_state, const float * initial_z,
                                         bool normalize, la_shape sh, const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// mamba2: Mamba2's SSD recurrence computed through simple_gla                (OPS.md 2.16)
//
//   dt_t = softplus(dt_raw_t + dt_bias[h]),  A_h = -exp(A_log[h])
//   h_t  = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T       (h in R^{P x Nst} per head)
//   y_t  = h_t C_t + D[h] x_t
// mapped exactly to simple_gla(q = C, k = B, v = dt x, g = dt A, scale = 1) plus D x.
//
//   x, y, dx, dy          (B, T, H, P)     here sh.V = P (head dim), sh.K = Nst (d_state)
//   dt, ddt               (B, T, H)        raw, before dt_bias and softplus
//   A_log, dA_log         (H)
//   Bm, Cm, dBm, dCm      (B, T, G, Nst)   head h uses group h / (H / G); H % G == 0
//   D, dD                 (H) or NULL      skip connection
//   dt_bias, ddt_bias     (H) or NULL
//   state                 (N, H, Nst, P)   = h^T, the simple_gla layout (mamba_ssm stores
//                                            (N, H, P, Nst): transpose the last two axes)
// opts.scale is ignored (SSD has none). Parameter gradients are overwritten.
LA_API size_t la_mamba2_workspace_size(bool backward, la_shape sh, int64_t G,
                                       const la_opts * opts);
LA_API la_status la_mamba2_forward(float * y, float * final_state,
                                   const float * x, const float * dt, const float * A_log,
                                   const float * Bm, const float * Cm, const float * D,
                                   const float * dt_bias, const float * initial_state,
                                   la_shape sh, int64_t G, const la_opts * opts);
LA_API la_status la_mamba2_backward(float * dx, float * ddt, float * dA_log, float * dBm,
                                    float * dCm, float * dD, float * ddt_bias,
                                    float * dinitial_state,
                                    const float * dy, const float * dfinal_state,
                                    const float * x, const float * dt, const float * A_log,
                                    const float * Bm, const float * Cm, const float * D,
                                    const float * dt_bias, const float * initial_state,
                                    la_shape sh, int64_t G, const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// gla: per-key-channel decay (GLA, HGRN2, LightNet)                          (OPS.md 2.5)
//
//   S_t = Diag(exp(gk_t)) S_{t-1} Diag(exp(gv_t)) + k_t v_t^T ;   o_t = s S_t^T q_t
//
//   q, k, dq, dk, gk, dgk   (B, T, H, K)     gk: log decay; may be NULL (no key decay) except
//                                            in the chunk form, which requires it (as fla)
//   v, o, dv, do, gv, dgv   (B, T, H, V)     gv: optional value-side log decay; recurrent and
//                                            ref forms only (fla's chunk_gla has none): the
//                                            chunk form returns LA_STATUS_UNSUPPORTED with gv
//   states                  (N, H, K, V)
// The chunk form uses secondary chunking (ALGORITHMS.md 3.2): every exponential it forms has a
// non-positive argument, so in-chunk cumulative log decays of -1000 and below are safe. The
// backward saves nothing; it recomputes the chunk-boundary states. Gradients are overwritten;
// dgk (dgv) must be non-NULL exactly when gk (gv) is. final_state may alias initial_state (an
// in-place decode step), as for simple_gla.
LA_API size_t la_gla_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_gla_forward(float * o, float * final_state,
                                const float * q, const float * k, const float * v,
                                const float * gk, const float * gv,
                                const float * initial_state, la_shape sh, const la_opts * opts);
LA_API la_status la_gla_backward(float * dq, float * dk, float * dv, float * dgk, float * dgv,
                                 float * dinitial_state,
                                 const float * dout, const float * dfinal_state,
                                 const float * q, const float * k, const float * v,
                                 const float * gk, const float * gv,
                                 const float * initial_state, la_shape sh,
                                 const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// rwkv6: reads the previous state plus a bonus for the current token        (OPS.md 2.11)
//
//   o_t = s (S_{t-1}^T r_t + (r_t . (u o k_t)) v_t) ;   S_t = Diag(exp(w_t)) S_{t-1} + k_t v_t^T
//
//   r, k, w, dr, dk, dw     (B, T, H, K)     w: log decay (the RWKV6 layer passes -exp(w_raw))
//   v, o, dv, do            (B, T, H, V)
//   u, du                   (H, K)           bonus; du is overwritten (a sum over B and T)
//   states                  (N, H, K, V)     scale default K^-1/2 (the layer passes 1)
// Same algorithms as gla (the read sees the cumulative gate of the previous token); final_state
// may alias initial_state.
LA_API size_t la_rwkv6_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_rwkv6_forward(float * o, float * final_state,
                                  const float * r, const float * k, const float * v,
                                  const float * w, const float * u,
                                  const float * initial_state, la_shape sh,
                                  const la_opts * opts);
LA_API la_status la_rwkv6_backward(float * dr, float * dk, float * dv, float * dw, float * du,
                                   float * dinitial_state,
                                   const float * dout, const float * dfinal_state,
                                   const float * r, const float * k, const float * v,
                                   const float * w, const float * u,
                                   const float * initial_state, la_shape sh,
                                   const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// hgrn: HGRN v1 element-wise recurrence                                      (OPS.md 2.13)
//
//   h_t = exp(g_t) o h_{t-1} + x_t ;   o_t = h_t
//
//   x, g, o, dx, dg, do     (B, T, D)        g: log forget gate
//   states                  (N, D)
// No heads and no scale: opts.scale must be 0. The chunk form splits time into chunks that
// are scanned in parallel and then joined by a carry pass (ALGORITHMS.md 1). final_state may
// alias initial_state (an in-place decode step).
LA_API size_t la_hgrn_workspace_size(bool backward, int64_t B, int64_t T, int64_t D,
                                     const la_opts * opts);
LA_API la_status la_hgrn_forward(float * o, float * final_state, const float * x,
                                 const float * g, const float * initial_state, int64_t B,
                                 int64_t T, int64_t D, const la_opts * opts);
LA_API la_status la_hgrn_backward(float * dx, float * dg, float * dinitial_state,
                                  const float * dout, const float * dfinal_state,
                                  const float * x, const float * g, const float * initial_state,
                                  int64_t B, int64_t T, int64_t D, const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// selective_scan: Mamba (v1) S6                                              (ALGORITHMS.md 6)
//
//   dt_t[d]  = delta_t[d] + delta_bias[d], then softplus(dt) when delta_softplus
//   h_t[d,n] = exp(dt_t[d] A[d,n]) h_{t-1}[d,n] + dt_t[d] B_t[n] u_t[d]
//   y_t[d]   = sum_n C_t[n] h_t[d,n] + D[d] u_t[d]
//
//   u, delta, y, du, ddelta, dy   (B, T, Dm)   NB: mamba_ssm lays these out (B, Dm, T)
//   A, dA                         (Dm, Nst)
//   Bm, Cm, dBm, dCm              (B, T, Nst)  (mamba_ssm: (B, Nst, T))
//   D, dD, delta_bias, ddelta_bias  (Dm) or NULL
//   states                        (N, Dm, Nst)
// opts.scale must be 0. Parameter gradients (dA, dD, ddelta_bias) are overwritten; dD
// (ddelta_bias) must be non-NULL exactly when D (delta_bias) is. final_state may alias
// initial_state (an in-place decode step). The chunk form keeps 128 channels' states
// channel-fastest and fuses exp(dt A), the update and the read per token; the backward replays
// each chunk from checkpoints and reduces dBm, dCm over fixed channel blocks in a fixed order.
LA_API size_t la_selective_scan_workspace_size(bool backward, int64_t B, int64_t T, int64_t Dm,
                                               int64_t Nst, const la_opts * opts);
LA_API la_status la_selective_scan_forward(float * y, float * final_state,
                                           const float * u, const float * delta,
                                           const float * A, const float * Bm, const float * Cm,
                                           const float * D, const float * delta_bias,
                                           bool delta_softplus, const float * initial_state,
                                           int64_t B, int64_t T, int64_t Dm, int64_t Nst,
                                           const la_opts * opts);
LA_API la_status la_selective_scan_backward(float * du, float * ddelta, float * dA, float * dBm,
                                            float * dCm, float * dD, float * ddelta_bias,
                                            float * dinitial_state,
                                            const float * dy, const float * dfinal_state,
                                            const float * u, const float * delta,
                                            const float * A, const float * Bm, const float * Cm,
                                            const float * D, const float * delta_bias,
                                            bool delta_softplus, const float * initial_state,
                                            int64_t B, int64_t T, int64_t Dm, int64_t Nst,
                                            const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// The delta-rule family (OPS.md 2.6-2.12; chunk forms ALGORITHMS.md 3.3-3.6)
//
//   delta_rule        u_t = beta_t (v_t - S_{t-1}^T k_t) ;        S_t = S_{t-1} + k_t u_t^T
//   gated_delta_rule  P = exp(g_t) S_{t-1} ;  u_t = beta_t (v_t - P^T k_t) ;  S_t = P + k_t u_t^T
//   kda               P = Diag(exp(g_t)) S_{t-1} ; then as gated_delta_rule
//   dplr_delta_rule   S_t = Diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T
//   iplr_delta_rule   dplr with gk = 0
//   rwkv7             dplr(q = r, gk = w), default scale 1.0
//   every op          o_t = s S_t^T q_t
//
//   q, k, dq, dk                  (B, T, H, K)
//   v, o, dv, do                  (B, T, HV, V)   HV = sh.HV (0: H); only gated_delta_rule and
//                                                 kda accept HV != H, with HV % H == 0 (value
//                                                 head hv reads q/k head hv / (HV/H))
//   beta, dbeta                   (B, T, HV)      NULL for delta_rule means beta = 1 (as fla)
//   g, dg                         gated_delta_rule (B, T, HV); kda (B, T, HV, K)   log gates,
//                                 or raw gate inputs with opts.use_gate_in_kernel
//   A_log, dA_log                 (HV)            with use_gate_in_kernel (A_log may be NULL
//                                                 only for kda's lower-bound gate)
//   dt_bias, ddt_bias             gated_delta_rule (HV); kda (HV * K); optional
//   a, b, gk, da, db, dgk         (B, T, H, K)    dplr (gk NULL selects iplr semantics)
//   states                        (N, HV, K, V)
// With the flags off, beta and g are used as given (post-sigmoid beta, log gate g <= 0).
// Gradients are overwritten; a gradient pointer must be non-NULL exactly when its input is
// (dA_log, ddt_bias likewise). The forms: REF (plain recurrence), RECURRENT (decode and
// reference-speed prefill, state tiles kept in L1) and CHUNK (WY/UT transform: one triangular
// solve per chunk, the rest matrix products; per-channel gates by secondary chunking).
LA_API size_t la_delta_rule_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_delta_rule_forward(float * o, float * final_state, const float * q,
                                       const float * k, const float * v, const float * beta,
                                       const float * initial_state, la_shape sh,
                                       const la_opts * opts);
LA_API la_status la_delta_rule_backward(float * dq, float * dk, float * dv, float * dbeta,
                                        float * dinitial_state, const float * dout,
                                        const float * dfinal_state, const float * q,
                                        const float * k, const float * v, const float * beta,
                                        const float * initial_state, la_shape sh,
                                        const la_opts * opts);

LA_API size_t la_gated_delta_rule_workspace_size(bool backward, la_shape sh,
                                                 const la_opts * opts);
LA_API la_status la_gated_delta_rule_forward(float * o, float * final_state, const float * q,
                                             const float * k, const float * v, const float * g,
                                             const float * beta, const float * A_log,
                                             const float * dt_bias, const float * initial_state,
                                             la_shape sh, const la_opts * opts);
LA_API la_status la_gated_delta_rule_backward(float * dq, float * dk, float * dv, float * dg,
                                              float * dbeta, float * dA_log, float * ddt_bias,
                                              float * dinitial_state, const float * dout,
                                              const float * dfinal_state, const float * q,
                                              const float * k, const float * v, const float * g,
                                              const float * beta, const float * A_log,
                                              const float * dt_bias, const float * initial_state,
                                              la_shape sh, const la_opts * opts);

LA_API size_t la_kda_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_kda_forward(float * o, float * final_state, const float * q, const float * k,
                                const float * v, const float * g, const float * beta,
                                const float * A_log, const float * dt_bias,
                                const float * initial_state, la_shape sh, const la_opts * opts);
LA_API la_status la_kda_backward(float * dq, float * dk, float * dv, float * dg, float * dbeta,
                                 float * dA_log, float * ddt_bias, float * dinitial_state,
                                 const float * dout, const float * dfinal_state, const float * q,
                                 const float * k, const float * v, const float * g,
                                 const float * beta, const float * A_log, const float * dt_bias,
                                 const float * initial_state, la_shape sh, const la_opts * opts);

LA_API size_t la_dplr_delta_rule_workspace_size(bool backward, la_shape sh,
                                                const la_opts * opts);
LA_API la_status la_dplr_delta_rule_forward(float * o, float * final_state, const float * q,
                                            const float * k, const float * v, const float * a,
                                            const float * b, const float * gk,
                                            const float * initial_state, la_shape sh,
                                            const la_opts * opts);
LA_API la_status la_dplr_delta_rule_backward(float * dq, float * dk, float * dv, float * da,
                                             float * db, float * dgk, float * dinitial_state,
                                             const float * dout, const float * dfinal_state,
                                             const float * q, const float * k, const float * v,
                                             const float * a, const float * b, const float * gk,
                                             const float * initial_state, la_shape sh,
                                             const la_opts * opts);

LA_API size_t la_iplr_delta_rule_workspace_size(bool backward, la_shape sh,
                                                const la_opts * opts);
LA_API la_status la_iplr_delta_rule_forward(float * o, float * final_state, const float * q,
                                            const float * k, const float * v, const float * a,
                                            const float * b, const float * initial_state,
                                            la_shape sh, const la_opts * opts);
LA_API la_status la_iplr_delta_rule_backward(float * dq, float * dk, float * dv, float * da,
                                             float * db, float * dinitial_state,
                                             const float * dout, const float * dfinal_state,
                                             const float * q, const float * k, const float * v,
                                             const float * a, const float * b,
                                             const float * initial_state, la_shape sh,
                                             const la_opts * opts);

// dplr, iplr and rwkv7 default to chunk size 32 (opts.chunk_size 0).
// rwkv7: fla's argument order (r, w, k, v, a, b); opts.scale 0 selects 1.0 here.
LA_API size_t la_rwkv7_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_rwkv7_forward(float * o, float * final_state, const float * r,
                                  const float * w, const float * k, const float * v,
                                  const float * a, const float * b, const float * initial_state,
                                  la_shape sh, const la_opts * opts);
LA_API la_status la_rwkv7_backward(float * dr, float * dw, float * dk, float * dv, float * da,
                                   float * db, float * dinitial_state, const float * dout,
                                   const float * dfinal_state, const float * r, const float * w,
                                   const float * k, const float * v, const float * a,
                                   const float * b, const float * initial_state, la_shape sh,
                                   const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// attn: softmax attention                                        (OPS.md 2.17-2.18, ALGORITHMS 3.8)
//
//   o_t = sum_{j in W(t)} softmax_j( s q_t . k_j + G_t - G_j ) v_j ,   G = cumsum(g) (or 0)
//   W(t) = {j <= t} (causal), {t - w < j <= t} (causal, window_size w > 0),
//          all j (causal = false, encoders), {|t - j| < w} (non-causal with a window)
//
//   q, o, dq, dout      (B, T, HQ, K)  with HQ = sh.H; o has V columns per head: (B, T, HQ, V)
//   k, dk               (B, T, HKV, K) with HKV = sh.HV (0: HQ) and HQ % HKV == 0 (GQA: query
//                                      head h reads kv head h / (HQ / HKV))
//   v, dv               (B, T, HKV, V)
//   g, dg               (B, T, HQ) log gate (forgetting attention, causal only), or NULL
//   lse                 (B, T, HQ) natural-log sum of exp of each row's logits: written by the
//                       forward (optional there), read by the backward (required there)
// opts.scale 0 selects K^-1/2; cu_seqlens: each sequence attends within itself. A row with no
// key (T = 0 only) does not occur. Forms: CHUNK (FlashAttention-2 tiling with an online
// softmax; O(T) memory, the T x T matrix is never formed), REF (row by row); RECURRENT is
// CHUNK. Backward recomputes the probabilities from q, k and lse, as FlashAttention does, and
// takes the forward's o for the row terms rowsum(dout o o).
LA_API size_t la_attn_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_attn_forward(float * o, float * lse, const float * q, const float * k,
                                 const float * v, const float * g, int64_t window_size,
                                 bool causal, la_shape sh, const la_opts * opts);
LA_API la_status la_attn_backward(float * dq, float * dk, float * dv, float * dg,
                                  const float * dout, const float * q, const float * k,
                                  const float * v, const float * g, const float * o,
                                  const float * lse, int64_t window_size, bool causal,
                                  la_shape sh, const la_opts * opts);
// One decode step per sequence with a KV cache: appends (k, v) of the new token at position
// cache_len[n], then attends over positions max(0, len + 1 - w) .. len (all with w = 0) and
// increments cache_len[n]. sh.B = N sequences, sh.T = 1; q (N, HQ, K); k (N, HKV, K);
// v (N, HKV, V); o (N, HQ, V); k_cache (N, capacity, HKV, K), v_cache (N, capacity, HKV, V):
// position p lives in slot p % capacity, so with a window a ring of capacity >= w suffices;
// without one, capacity must exceed cache_len[n] (else LA_STATUS_INVALID_ARG, nothing
// written). A gate is not supported in decode. Decode needs no workspace (opts.work is unused).
LA_API la_status la_attn_decode(float * o, const float * q, const float * k, const float * v,
                                float * k_cache, float * v_cache, int64_t * cache_len,
                                int64_t capacity, int64_t window_size, la_shape sh,
                                const la_opts * opts);

// RoPE, rotate-half (non-interleaved) form (OPS.md 5.5): for i < D/2,
//   theta_i = pos * theta^(-2i/D);  y_i = x_i cos - x_{i+D/2} sin;  y_{i+D/2} = x_{i+D/2} cos + x_i sin
// x, y (B, T, H, D), D even; y may equal x. pos = offsets[n] (0 when offsets is NULL) plus the
// token's index inside its sequence n (opts->cu_seqlens, or the batch rows). Backward is the
// inverse rotation: dx (may equal dy) from dy.
LA_API la_status la_rope_forward(float * y, const float * x, float theta, const int64_t * offsets,
                                 int64_t B, int64_t T, int64_t H, int64_t D, const la_opts * opts);
LA_API la_status la_rope_backward(float * dx, const float * dy, float theta,
                                  const int64_t * offsets, int64_t B, int64_t T, int64_t H,
                                  int64_t D, const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// based and rebased: normalised polynomial-kernel attention          (OPS.md 2.14-2.15, ALG. 3.7)
//
//   based:    phi(s) = 1 + s + s^2/2,  o_t = sum_{i<=t} phi(s_ti) v_i / (sum_{i<=t} phi(s_ti) + 1e-6)
//   rebased:  phi(s) = s^2,            o_t = sum_{i<=t} phi(s_ti) v_i / (sum_{i<=t} phi(s_ti) + eps)
//   with s_ti = s q_t . k_i; use_norm = false returns the numerator only.
//   q, k, dq, dk (B, T, H, F) with F = sh.K; v, o, dv, dout (B, T, H, V). opts.scale 0: F^-1/2.
// Forms compute the same function: REF (quadratic, row by row), CHUNK (the parallel form, tiled
// like attention), RECURRENT (linear attention on the Taylor / quadratic features of
// la_fmap_forward, numerator and denominator carried separately, the same eps). cu_seqlens
// supported; no state (as fla).
LA_API size_t la_based_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_based_forward(float * o, const float * q, const float * k, const float * v,
                                  bool use_norm, la_shape sh, const la_opts * opts);
LA_API la_status la_based_backward(float * dq, float * dk, float * dv, const float * dout,
                                   const float * q, const float * k, const float * v,
                                   bool use_norm, la_shape sh, const la_opts * opts);
LA_API size_t la_rebased_workspace_size(bool backward, la_shape sh, const la_opts * opts);
LA_API la_status la_rebased_forward(float * o, const float * q, const float * k, const float * v,
                                    float eps, bool use_norm, la_shape sh, const la_opts * opts);
LA_API la_status la_rebased_backward(float * dq, float * dk, float * dv, const float * dout,
                                     const float * q, const float * k, const float * v,
                                     float eps, bool use_norm, la_shape sh,
                                     const la_opts * opts);

// Feature maps for linear attention (ALGORITHMS.md 7), per head of F features:
//   IDENTITY  x                                                     F outputs
//   ELU1      elu(x) + 1                                            F
//   RELU      max(x, 0)                                             F
//   TAYLOR2   [1, x / F^(1/4), x_i^2 / (sqrt2 sqrt F), x_i x_j / sqrt F (i < j)]
//             so phi(q).phi(k) = 1 + q.k/sqrt F + (q.k)^2/(2F)      1 + F + F(F+1)/2
//   QUADRATIC [x_i^2, sqrt2 x_i x_j (i < j)]: phi(q).phi(k) = (q.k)^2   F(F+1)/2 (rebased)
//   HEDGEHOG  softmax over [2z, -2z] with z = x W_h^T + b_h         2F (learnable, as fla's
//             HedgehogFeatureMap; W (H, F, F), bias (H, F) or NULL; fla shares one map over the
//             heads: pass it repeated; W = identity is its initialisation)
// x (rows, H, F) -> y (rows, H, la_fmap_dim(kind, F)). Backward: dx (overwritten); dW, dbias
// (HEDGEHOG; NULL to skip) overwritten, or added to when accumulate.
typedef enum la_fmap {
    LA_FMAP_IDENTITY = 0,
    LA_FMAP_ELU1,
    LA_FMAP_RELU,
    LA_FMAP_TAYLOR2,
    LA_FMAP_QUADRATIC,
    LA_FMAP_HEDGEHOG,
} la_fmap;
LA_API int64_t   la_fmap_dim(la_fmap kind, int64_t F);
LA_API la_status la_fmap_forward(float * y, const float * x, const float * W, const float * bias,
                                 la_fmap kind, int64_t rows, int64_t H, int64_t F);
LA_API la_status la_fmap_backward(float * dx, float * dW, float * dbias, const float * dy,
                                  const float * x, const float * W, const float * bias,
                                  la_fmap kind, int64_t rows, int64_t H, int64_t F,
                                  bool accumulate);

// Non-causal (bidirectional) linear attention for encoders: global sums instead of prefix sums.
//   linear_attn:  o_t = s q_t^T sum_j k_j v_j^T   (normalize: / (s q_t . sum_j k_j + 1e-10))
//   simple_gla:   o_t = s sum_j D_tj (q_t . k_j) v_j with D_tj = exp(G_t - G_j) for j <= t and
//                 exp(G_j - G_t) for j > t (G = cumsum(g) per sequence; g_gamma: constant g),
//                 i.e. the causal pass plus the anti-causal one (the bidirectional decay
//                 gamma^|t-j| of vision RetNets when g is constant)
// Shapes as the causal ops, no states. Forms: REF (quadratic), RECURRENT (a forward and a
// reverse token loop), CHUNK (a forward and a reverse chunked pass).
LA_API size_t la_linear_attn_noncausal_workspace_size(bool backward, la_shape sh,
                                                      const la_opts * opts);
LA_API la_status la_linear_attn_noncausal_forward(float * o, const float * q, const float * k,
                                                  const float * v, bool normalize, la_shape sh,
                                                  const la_opts * opts);
LA_API la_status la_linear_attn_noncausal_backward(float * dq, float * dk, float * dv,
                                                   const float * dout, const float * q,
                                                   const float * k, const float * v,
                                                   bool normalize, la_shape sh,
                                                   const la_opts * opts);
LA_API size_t la_simple_gla_noncausal_workspace_size(bool backward, la_shape sh,
                                                     const la_opts * opts);
LA_API la_status la_simple_gla_noncausal_forward(float * o, const float * q, const float * k,
                                                 const float * v, const float * g,
                                                 const float * g_gamma, la_shape sh,
                                                 const la_opts * opts);
LA_API la_status la_simple_gla_noncausal_backward(float * dq, float * dk, float * dv,
                                                  float * dg, const float * dout,
                                                  const float * q, const float * k,
                                                  const float * v, const float * g,
                                                  const float * g_gamma, la_shape sh,
                                                  const la_opts * opts);

// ---------------------------------------------------------------------------------------------
// Layer toolkit (OPS.md 4): forward and backward of the pieces models are built from.
// Shapes are explicit; rows = every leading axis flattened. Activation gradients are
// overwritten; parameter gradients (dW, db, dw, dtable, ...) are overwritten, or added to when
// `accumulate` is true (gradient accumulation over micro-batches). NULL skips a gradient.
// Errors: LA_STATUS_SHAPE for non-positive sizes, LA_STATUS_INVALID_ARG for NULL required
// pointers, out-of-range token ids or a bad enum. Threads split rows; every reduction over rows
// runs in a fixed order, so results do not depend on the thread count.

typedef enum la_act {
    LA_ACT_IDENTITY = 0,
    LA_ACT_SILU,      // x sigma(x) ("swish")
    LA_ACT_SIGMOID,
    LA_ACT_SOFTPLUS,  // x if x > 20 else log(1 + e^x)
} la_act;
// y = act(x) elementwise (n values); y may equal x. Backward: dx = dy act'(x) (dx may equal dy).
LA_API la_status la_act_forward(float * y, const float * x, la_act act, int64_t n);
LA_API la_status la_act_backward(float * dx, const float * dy, const float * x, la_act act,
                                 int64_t n);

// Linear: y (rows, out) = x (rows, in) W^T + b, W (out, in) as torch, b (out) or NULL; through
// BLAS (or linattn's GEMM). Backward: dx = dy W; dW = dy^T x; db = sum over rows of dy.
LA_API la_status la_linear_forward(float * y, const float * x, const float * W, const float * b,
                                   int64_t rows, int64_t in, int64_t out);
LA_API la_status la_linear_backward(float * dx, float * dW, float * db, const float * dy,
                                    const float * x, const float * W, int64_t rows, int64_t in,
                                    int64_t out, bool accumulate);

// Embedding: y (n, dim) = table[ids] with table (vocab, dim); ids out of [0, vocab) are an
// error. Backward scatters dy into dtable in token order (deterministic).
LA_API la_status la_embedding_forward(float * y, const int64_t * ids, const float * table,
                                      int64_t n, int64_t vocab, int64_t dim);
LA_API la_status la_embedding_backward(float * dtable, const float * dy, const int64_t * ids,
                                       int64_t n, int64_t vocab, int64_t dim, bool accumulate);

// RMSNorm (OPS.md 4.2): y = x / sqrt(mean(x^2) + eps) o w over the last axis D; w (D) or NULL
// (no affine weight). Gated (OPS.md 4.3, fla's FusedRMSNormGated): norm first, then
// y <- y o act(gate) with act LA_ACT_SILU or LA_ACT_SIGMOID; gate has x's shape.
LA_API la_status la_rmsnorm_forward(float * y, const float * x, const float * w, float eps,
                                    int64_t rows, int64_t D);
LA_API la_status la_rmsnorm_backward(float * dx, float * dw, const float * dy, const float * x,
                                     const float * w, float eps, int64_t rows, int64_t D,
                                     bool accumulate);
LA_API la_status la_rmsnorm_gated_forward(float * y, const float * x, const float * gate,
                                          const float * w, float eps, la_act act, int64_t rows,
                                          int64_t D);
LA_API la_status la_rmsnorm_gated_backward(float * dx, float * dgate, float * dw,
                                           const float * dy, const float * x, const float * gate,
                                           const float * w, float eps, la_act act, int64_t rows,
                                           int64_t D, bool accumulate);

// LayerNorm over the last axis D (torch's nn.LayerNorm, biased variance):
//   y = (x - mean(x)) / sqrt(var(x) + eps) o w + b;  w, b (D) or NULL. Backward: dx, dw, db.
LA_API la_status la_layernorm_forward(float * y, const float * x, const float * w,
                                      const float * b, float eps, int64_t rows, int64_t D);
LA_API la_status la_layernorm_backward(float * dx, float * dw, float * db, const float * dy,
                                       const float * x, const float * w, float eps, int64_t rows,
                                       int64_t D, bool accumulate);

// L2 norm over the last axis D (OPS.md 0): y = x / sqrt(sum x^2 + eps), eps = 1e-6 as fla.
LA_API la_status la_l2norm_forward(float * y, const float * x, float eps, int64_t rows, int64_t D);
LA_API la_status la_l2norm_backward(float * dx, const float * dy, const float * x, float eps,
                                    int64_t rows, int64_t D);

// SwiGLU MLP (OPS.md 4.4): y = (SiLU(x Wg^T) o (x Wu^T)) Wd^T; x, y (rows, D); Wg, Wu (I, D);
// Wd (D, I). The workspace holds the (rows, I) intermediates: la_mlp_workspace_size bytes
// (forward and backward alike), or NULL to allocate.
LA_API size_t    la_mlp_workspace_size(int64_t rows, int64_t D, int64_t I);
LA_API la_status la_mlp_forward(float * y, const float * x, const float * Wg, const float * Wu,
                                const float * Wd, int64_t rows, int64_t D, int64_t I, void * work);
LA_API la_status la_mlp_backward(float * dx, float * dWg, float * dWu, float * dWd,
                                 const float * dy, const float * x, const float * Wg,
                                 const float * Wu, const float * Wd, int64_t rows, int64_t D,
                                 int64_t I, bool accumulate, void * work);

// Short causal depthwise convolution (OPS.md 4.1):
//   y_t[d] = act( sum_{i<W} w[d, i] x_{t-W+1+i}[d] + bias[d] ),  act IDENTITY or SILU
// x, y (B, T, D); w (D, W) (torch's (D, 1, W)); bias (D) or NULL; caches (N, D, W): the last W
// raw inputs, newest at slot W-1; initial_cache NULL means zeros. final_cache (optional) may
// equal initial_cache, so a T = 1 call is the decode step. cu_seqlens: no leakage across
// sequences. Backward: dx, dw, dbias (accumulate as above), dinitial_cache (when
// initial_cache is given) from dy and dfinal_cache (optional).
LA_API la_status la_short_conv_forward(float * y, float * final_cache, const float * x,
                                       const float * w, const float * bias,
                                       const float * initial_cache, la_act act, int64_t B,
                                       int64_t T, int64_t D, int64_t W, const la_opts * opts);
LA_API la_status la_short_conv_backward(float * dx, float * dw, float * dbias,
                                        float * dinitial_cache, const float * dy,
                                        const float * dfinal_cache, const float * x,
                                        const float * w, const float * bias,
                                        const float * initial_cache, la_act act, int64_t B,
                                        int64_t T, int64_t D, int64_t W, bool accumulate,
                                        const la_opts * opts);

// Cross-entropy with a fused log-softmax: for each row r with targets[r] != ignore_index,
// loss_r = logsumexp(logits_r) - logits_r[targets[r]]; *loss = mean over counted rows (0 when
// none). dlogits (optional, may equal logits) = (softmax(logits_r) - onehot) / count, zero rows
// for ignored ones. logits (rows, vocab); targets in [0, vocab) or ignore_index.
LA_API la_status la_cross_entropy(double * loss, float * dlogits, const float * logits,
                                  const int64_t * targets, int64_t rows, int64_t vocab,
                                  int64_t ignore_index);

// ---------------------------------------------------------------------------------------------
// Models (OPS.md 4-8): fla's causal LM (embeddings, pre-norm blocks of token mixer and SwiGLU
// MLP, final RMSNorm, LM head), built from a config.json text and saved as a directory with
// config.json and model.safetensors under fla's tensor names. Hybrids are the config's `attn`
// spec (which layers are softmax attention).
//
// Memory: the parameters, their gradients and AdamW's moments are each one arena; the
// activations of a (B, T) batch and the scratch of every call are two more, sized by
// la_model_reserve (called implicitly with the shape of each call, growing only).

typedef struct la_model la_model;
typedef struct la_cache la_cache;

LA_API la_status la_model_from_json(la_model ** out, const char * config_json, char * err,
                                    size_t errlen);
LA_API void      la_model_free(la_model * m);
// Initialises every parameter as fla does (OPS.md 4.6); tensor i draws from stream (seed, i).
LA_API void      la_model_init(la_model * m, uint64_t seed);
LA_API int64_t   la_model_num_params(const la_model * m);
LA_API int64_t   la_model_vocab(const la_model * m);
LA_API int64_t   la_model_layers(const la_model * m);
LA_API int64_t   la_model_hidden(const la_model * m);
LA_API char *    la_model_config_json(const la_model * m);  // malloc'd config.json text
LA_API la_status la_model_reserve(la_model * m, int64_t B, int64_t T, bool train);
LA_API void      la_model_zero_grad(la_model * m);

// Loss of a batch: ids, labels (B, T) (labels LA_IGNORE_INDEX where no loss); *loss = mean
// cross-entropy over the counted positions (*count of them). backward: adds the gradient of
// weight * loss to the model's gradient arena (weight = count / total count when micro-batches
// are accumulated).
LA_API la_status la_model_loss(la_model * m, double * loss, int64_t * count, const int64_t * ids,
                               const int64_t * labels, int64_t B, int64_t T, bool backward,
                               float weight);
// Evaluation: the loss as above and *correct = counted positions whose argmax is the label.
LA_API la_status la_model_eval(la_model * m, double * loss, int64_t * count, int64_t * correct,
                               const int64_t * ids, const int64_t * labels, int64_t B,
                               int64_t T);
// Logits (B, T, vocab), or (B, vocab) of each row's last token with last_only. With a cache,
// B is its N sequences, the mixers start from it (chunk form for T > 1, the recurrent step for
// T = 1) and it advances by T tokens.
LA_API la_status la_model_logits(la_model * m, float * logits, const int64_t * ids, int64_t B,
                                 int64_t T, la_cache * cache, bool last_only);
// Training: warmup + cosine learning rate at 0-based step of total (linear warmup to lr over
// `warmup` steps, then cosine down to min_lr at the last step).
LA_API double    la_lr_schedule(int64_t step, int64_t total, int64_t warmup, double lr,
                                double min_lr);
// Global gradient norm (fixed-order sum); with clip > 0, scales the gradients by
// clip / (norm + 1e-6) when the norm exceeds clip. Returns the norm before clipping.
LA_API double    la_model_clip_grad(la_model * m, double clip);
typedef struct la_adamw {
    double beta1, beta2, eps, weight_decay;  // torch defaults 0.9, 0.999, 1e-8; wd decoupled
} la_adamw;
// One AdamW step at 1-based step t (bias correction), torch.optim.AdamW semantics; weight
// decay skips 1-D tensors (norms, biases, A_log, dt_bias).
LA_API la_status la_model_adamw(la_model * m, double lr, const la_adamw * opt, int64_t t);
LA_API bool      la_model_params_finite(const la_model * m);
// The optimizer state (AdamW moments and step) as safetensors, for exact resume.
LA_API la_status la_model_optim_save(const la_model * m, const char * path, int64_t step,
                                     char * err, size_t errlen);
LA_API la_status la_model_optim_load(la_model * m, const char * path, int64_t * step, char * err,
                                     size_t errlen);
// Real-valued models (a linattn extension of the config: "input_dim" d > 0): a linear read-in
// (model.read_in, backbone.read_in for Mamba; (hidden, d) + bias) takes the place of the token
// embeddings and a linear read-out (read_out, (1, hidden) + bias) the place of the LM head, for
// tasks whose inputs are vectors (in-context regression); tie_word_embeddings does not apply.
// The token calls (loss, eval, logits, caches) refuse such a model, and la_model_regress
// refuses a token model (LA_STATUS_INVALID_ARG).
LA_API int64_t   la_model_input_dim(const la_model * m);  // 0 for a token model
// x (B, T, d), y and wt (B, T): *loss = sum wt (pred - y)^2 / sum wt (0 when sum wt = 0);
// pred (optional, (B, T)) receives the predictions. backward: adds the gradient of
// weight * loss to the gradients. NaN or Inf in x, y or wt, or a negative wt:
// LA_STATUS_INVALID_ARG; B or T <= 0: LA_STATUS_SHAPE.
LA_API la_status la_model_regress(la_model * m, double * loss, float * pred, const float * x,
                                  const float * y, const float * wt, int64_t B, int64_t T,
                                  bool backward, float weight);
// Decode caches for N sequences: recurrent states and conv caches of the linear layers, and
// K/V of the attention layers with room for `capacity` tokens (a windowed layer keeps a ring
// of min(capacity, window) slots).
LA_API la_status la_cache_new(la_cache ** out, const la_model * m, int64_t N, int64_t capacity);
LA_API void      la_cache_free(la_cache * c);
// Decode state per sequence in floats: fixed (recurrent states, conv caches) and per cached
// token (attention K/V).
LA_API void      la_model_state_size(const la_model * m, int64_t * fixed, int64_t * per_token);
LA_API int64_t   la_model_layer_act(const la_model * m, int64_t layer, int64_t B, int64_t T);
LA_API const char * la_model_layer_kind(const la_model * m, int64_t layer);

// Checkpoints. la_model_save writes DIR.tmp.XXXXXX (config.json, model.safetensors, then the
// hook's files) and swaps it in atomically; an existing DIR is replaced only when it holds
// nothing but checkpoint files. la_model_load checks every tensor's presence, shape and
// finiteness and rejects tensors the config does not explain.
typedef la_status (*la_save_hook)(void * ctx, const char * tmp_dir, char * err, size_t errlen);
LA_API la_status la_model_save(const la_model * m, const char * dir, la_save_hook hook,
                               void * ctx, char * err, size_t errlen);
LA_API la_status la_model_load(la_model ** out, const char * dir, char * err, size_t errlen);
// Writes PATH.tmp.XXXXXX, fsyncs and renames it over PATH.
LA_API la_status la_write_file_atomic(const char * path, const void * data, size_t n, char * err,
                                      size_t errlen);
// Reads a text file of at most max bytes (NUL-terminated, malloc'd), or NULL with err set.
LA_API char *    la_read_text_file(const char * path, size_t max, char * err, size_t errlen);

// ---------------------------------------------------------------------------------------------
// Data: synthetic tasks and byte-level text                                (ALGORITHMS.md 9)
//
// Every generator is a pure function of (seed, example index): example i is the same whatever
// was generated before it and whatever the batch size, so a resumed run sees exactly the
// batches it would have seen, and a test set is a different seed.

#define LA_IGNORE_INDEX (-100)  // label of positions that carry no loss (fla, torch)

// MQAR, multi-query associative recall (Zoology's multiquery_ar, ALGORITHMS.md 9.1):
// key-value pairs, then queries of the keys placed with power-law gaps; the label at a query's
// position is its value, every other label is LA_IGNORE_INDEX.
typedef struct la_mqar_cfg {
    int64_t vocab;               // Vc > seq_len; keys in [1, Vc/2), values in [Vc/2, Vc), 0 filler
    int64_t seq_len;             // N, even
    int64_t num_kv_pairs;        // D >= 1, with 2 D p + 2 D <= N
    double  power_a;             // a in (0, 1]: P(gap = i) ~ a (i + 1)^(a - 1); Zoology 0.01
    int64_t num_passes;          // p >= 1: the pairs are repeated p times
    bool    random_non_queries;  // fillers become uniform tokens in [0, Vc) (Zoology's default)
} la_mqar_cfg;
// Zoology's defaults at the smallest Fig. 2 point: Vc 8192, N 64, D 4, a 0.01, p 1, random
// non-queries on.
LA_API la_mqar_cfg la_mqar_default(void);
// LA_STATUS_INVALID_ARG with a one-line reason naming the field when cfg is unusable.
LA_API la_status la_mqar_check(const la_mqar_cfg * cfg, char * err, size_t errlen);
// Examples first .. first + n - 1: inputs, labels (n, seq_len) int64.
LA_API la_status la_mqar_generate(int64_t * inputs, int64_t * labels, const la_mqar_cfg * cfg,
                                  uint64_t seed, int64_t first, int64_t n);

// Selective copying (ALGORITHMS.md 9.2, Gu & Dao 2023): M data tokens uniform in [1, A-2] at M
// sorted distinct random positions among the first L + M (the rest 0 = noise), then M markers
// (A - 1). At marker j the label is data token j (in order); every other label is
// LA_IGNORE_INDEX. plain: the data tokens come first (the copying task). seq_len = L + 2 M.
typedef struct la_selcopy_cfg {
    int64_t vocab;       // A >= 3
    int64_t num_tokens;  // M >= 1
    int64_t noise_len;   // L >= 0
    bool    plain;
} la_selcopy_cfg;
LA_API la_status la_selcopy_check(const la_selcopy_cfg * cfg, char * err, size_t errlen);
LA_API int64_t   la_selcopy_len(const la_selcopy_cfg * cfg);  // L + 2 M; -1 when cfg is invalid
LA_API la_status la_selcopy_generate(int64_t * inputs, int64_t * labels,
                                     const la_selcopy_cfg * cfg, uint64_t seed, int64_t first,
                                     int64_t n);

// Passkey retrieval without a tokenizer (ALGORITHMS.md 9.4): filler tokens uniform in the key
// vocabulary [1, Vc/2) except the key, one key token followed by value_len value tokens (from
// [Vc/2, Vc)) at relative depth `depth` of the context, and at the end the key again followed
// by the value: the labels are the value tokens at the positions that predict them (the final
// key and the value's first value_len - 1 tokens); every other label is LA_IGNORE_INDEX.
// With F = N - 2 value_len - 1 filler tokens, the needle starts at p = floor(depth F + 1/2)
// (depth 0: first in the sequence; 1: right before the final key); depth < 0 draws p uniformly
// from [0, F] per example.
typedef struct la_passkey_cfg {
    int64_t vocab;      // Vc >= 6 (a key and at least one other filler token in [1, Vc/2))
    int64_t seq_len;    // N >= 2 (value_len + 1) + 1
    int64_t value_len;  // >= 1
    double  depth;      // [0, 1], or < 0 for uniform per example
} la_passkey_cfg;
LA_API la_status la_passkey_check(const la_passkey_cfg * cfg, char * err, size_t errlen);
LA_API la_status la_passkey_generate(int64_t * inputs, int64_t * labels,
                                     const la_passkey_cfg * cfg, uint64_t seed, int64_t first,
                                     int64_t n);

// In-context linear regression (ALGORITHMS.md 9.5, Garg et al. 2022). Per example a task
// w ~ N(0, I_d), points x_i ~ N(0, I_d) and y_i = w^T x_i + noise * N(0, 1), i < P. The
// sequence is 2P vectors of d: (x_1, yv_1, x_2, yv_2, ...) with yv_i = (y_i, 0, ..., 0); the
// model predicts y_i at x_i's position 2i (from the i earlier pairs and x_i), where the target
// weight is 1; every other weight is 0.
typedef struct la_icr_cfg {
    int64_t dim;     // d in [1, 4096]
    int64_t points;  // P in [1, 2^21]; the sequence length is 2P
    double  noise;   // label noise standard deviation, finite, >= 0
} la_icr_cfg;
// LA_STATUS_INVALID_ARG with a one-line reason naming the field when cfg is unusable.
LA_API la_status la_icr_check(const la_icr_cfg * cfg, char * err, size_t errlen);
// Examples first .. first + n - 1: x (n, 2P, d), y (n, 2P) (y_i at 2i, 0 at the odd
// positions), wt (n, 2P) float32. The same (seed, index) gives the same w and x_i at every
// noise level.
LA_API la_status la_icr_generate(float * x, float * y, float * wt, const la_icr_cfg * cfg,
                                 uint64_t seed, int64_t first, int64_t n);
// The least-squares baseline on the same contexts, in float64: pred (n, 2P) holds at position
// 2i the minimum-norm least-squares fit of the first i pairs (x_j at 2j, y_j = y[2j])
// evaluated at x_i (0 for i = 0); the odd positions are 0. Rank-deficient contexts get a tiny
// ridge (1e-10 relative), whose limit is the minimum-norm fit. NaN or Inf in x or y:
// LA_STATUS_INVALID_ARG. Time O(P d^3) per example.
LA_API la_status la_icr_least_squares(float * pred, const float * x, const float * y,
                                      const la_icr_cfg * cfg, int64_t n);

// Byte-level text: tokens are the file's bytes (0..255) after one BOS; the file must be valid
// UTF-8 (checked, the error names the byte offset). The first (1 - val_frac) of the tokens
// are the training split, the rest the validation split.
#define LA_TEXT_BOS   256
#define LA_TEXT_EOS   257
#define LA_TEXT_VOCAB 258
typedef struct la_text la_text;
LA_API la_status la_text_open(la_text ** out, const char * path, double val_frac, char * err,
                              size_t errlen);
LA_API la_status la_text_from_memory(la_text ** out, const void * bytes, size_t n,
                                     double val_frac, char * err, size_t errlen);
LA_API void      la_text_close(la_text * t);
LA_API int64_t   la_text_tokens(const la_text * t, bool val);  // tokens in the split
// Training windows: window i (first <= i < first + n) starts at a position drawn from
// (seed, i) in the split; inputs (n, T) and labels (n, T) = the next token. The split must
// hold at least T + 1 tokens (else LA_STATUS_SHAPE).
LA_API la_status la_text_sample(const la_text * t, bool val, int64_t * inputs, int64_t * labels,
                                int64_t T, uint64_t seed, int64_t first, int64_t n);
// Evaluation windows: window i covers tokens [i T, (i + 1) T] of the split (labels shifted by
// one), i < la_text_windows(); the last partial window is padded with LA_IGNORE_INDEX labels.
LA_API int64_t   la_text_windows(const la_text * t, bool val, int64_t T);
LA_API la_status la_text_window(const la_text * t, bool val, int64_t * inputs, int64_t * labels,
                                int64_t T, int64_t first, int64_t n);

// ---------------------------------------------------------------------------------------------
// safetensors I/O
//
// The reader maps the file and validates it strictly before returning: header length within
// the file, valid JSON, known dtypes, shapes whose byte size matches the offsets, offsets in
// range and not overlapping, no duplicate names, data section fully covered. Every error
// message names the file and, where one is involved, the tensor.
// The writer collects borrowed tensors and writes them to PATH.tmp.XXXXXX, fsyncs, then
// renames it over PATH, so a failed write never destroys an existing file.

typedef enum la_dtype {
    LA_DTYPE_F32 = 0,
    LA_DTYPE_F64,
    LA_DTYPE_F16,
    LA_DTYPE_BF16,
    LA_DTYPE_I64,
    LA_DTYPE_I32,
} la_dtype;

#define LA_ST_MAX_DIMS 8

LA_API const char * la_dtype_str(la_dtype d);   // "F32", "BF16", ...
LA_API size_t       la_dtype_size(la_dtype d);  // bytes per element

typedef struct la_st_file la_st_file;  // an open, validated file

typedef struct la_st_tensor {
    const char * name;
    la_dtype     dtype;
    int32_t      ndim;
    int64_t      shape[LA_ST_MAX_DIMS];
    int64_t      numel;
    const void * data;    // raw little-endian bytes inside the mapping
    size_t       nbytes;
} la_st_tensor;

// err receives a one-line message (may be NULL; errlen bytes including the terminator).
LA_API la_status la_st_open(la_st_file ** out, const char * path, char * err, size_t errlen);
LA_API void      la_st_close(la_st_file * f);
LA_API int64_t   la_st_count(const la_st_file * f);
LA_API const la_st_tensor * la_st_get(const la_st_file * f, int64_t i);
LA_API const la_st_tensor * la_st_find(const la_st_file * f, const char * name);  // NULL if absent
// Copy a floating tensor into dst as float32 (F32, F64, F16, BF16); n must equal numel.
LA_API la_status la_st_read_f32(const la_st_file * f, const la_st_tensor * t, float * dst,
                                int64_t n, char * err, size_t errlen);
// Copy an integer tensor into dst as int64 (I64, I32); n must equal numel.
LA_API la_status la_st_read_i64(const la_st_file * f, const la_st_tensor * t, int64_t * dst,
                                int64_t n, char * err, size_t errlen);

typedef struct la_st_writer la_st_writer;
LA_API la_st_writer * la_st_writer_new(void);
// Adds a tensor; data is borrowed and must stay valid until la_st_writer_save returns.
LA_API la_status la_st_writer_add(la_st_writer * w, const char * name, la_dtype dtype,
                                  int32_t ndim, const int64_t * shape, const void * data,
                                  char * err, size_t errlen);
LA_API la_status la_st_writer_save(la_st_writer * w, const char * path, char * err,
                                   size_t errlen);
LA_API void      la_st_writer_free(la_st_writer * w);

#ifdef __cplusplus
}
#endif

#endif  // LINATTN_H
