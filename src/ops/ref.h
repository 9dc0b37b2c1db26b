// The reference kernels: plain per-token recurrences written in la_real, which is float in the
// library and double when the file is compiled with -DLA_REF_F64 (the tests' oracles).
// LA_REF(name) gives the float symbol `name` or the double symbol `name_f64`; both sets of
// prototypes are declared here so the tests can call either.
//
// Reference kernels are single-threaded and loop over (sequence, head) in order. They take a
// caller-provided workspace of la_<op>_ref_ws_elems(...) elements of their type.
#ifndef LA_REF_H
#define LA_REF_H

#include "linattn.h"

#ifdef LA_REF_F64
typedef double la_real;
#define LA_REF(name) name##_f64
#define la_rexp exp
#else
typedef float la_real;
#define LA_REF(name) name
#define la_rexp expf
#endif

// Dimensions of one call: sh as in linattn.h; N sequences (cu = cu_seqlens or NULL).
typedef struct la_ref_dims {
    la_shape        sh;
    int64_t         N;
    const int64_t * cu;     // (N+1) or NULL
    double          scale;
} la_ref_dims;

// Backward passes replay the forward from a checkpoint every LA_REF_SEG tokens.
#define LA_REF_SEG 64

// Longest sequence of a call (T, or the longest cu_seqlens segment).
static inline int64_t la_ref_max_len(la_ref_dims d) {
    if (!d.cu) return d.sh.T;
    int64_t m = 0;
    for (int64_t n = 0; n < d.N; n++) {
        const int64_t l = d.cu[n + 1] - d.cu[n];
        if (l > m) m = l;
    }
    return m;
}

// Tokens [bos, eos) of sequence n on the flat B*T axis.
static inline void la_ref_bounds(la_ref_dims d, int64_t n, int64_t * bos, int64_t * eos) {
    *bos = d.cu ? d.cu[n] : n * d.sh.T;
    *eos = d.cu ? d.cu[n + 1] : (n + 1) * d.sh.T;
}

// simple_gla (OPS.md 2.2). g (B,T,H) or g_gamma (H) or neither. Shapes as in linattn.h.
#define LA_REF_DECLARE_SIMPLE_GLA(R, SFX)                                                      \
    int64_t la_simple_gla_ref_ws_elems##SFX(la_ref_dims d);                                    \
    void la_simple_gla_fwd_ref##SFX(R * o, R * final_state, const R * q, const R * k,          \
                                    const R * v, const R * g, const R * g_gamma,               \
                                    const R * initial_state, la_ref_dims d, R * ws);           \
    void la_simple_gla_bwd_ref##SFX(R * dq, R * dk, R * dv, R * dg, R * dinitial_state,        \
                                    const R * dout, const R * dfinal_state, const R * q,       \
                                    const R * k, const R * v, const R * g, const R * g_gamma,  \
                                    const R * initial_state, la_ref_dims d, R * ws);

LA_REF_DECLARE_SIMPLE_GLA(float, )
LA_REF_DECLARE_SIMPLE_GLA(double, _f64)

// gla (OPS.md 2.5): gk (B,T,H,K) or NULL, gv (B,T,H,V) or NULL. States (N,H,K,V).
#define LA_REF_DECLARE_GLA(R, SFX)                                                             \
    int64_t la_gla_ref_ws_elems##SFX(la_ref_dims d);                                           \
    void la_gla_fwd_ref##SFX(R * o, R * final_state, const R * q, const R * k, const R * v,    \
                             const R * gk, const R * gv, const R * initial_state,              \
                             la_ref_dims d, R * ws);                                           \
    void la_gla_bwd_ref##SFX(R * dq, R * dk, R * dv, R * dgk, R * dgv, R * dinitial_state,     \
                             const R * dout, const R * dfinal_state, const R * q, const R * k, \
                             const R * v, const R * gk, const R * gv,                          \
                             const R * initial_state, la_ref_dims d, R * ws);

LA_REF_DECLARE_GLA(float, )
LA_REF_DECLARE_GLA(double, _f64)

// rwkv6 (OPS.md 2.11): r, k, w (B,T,H,K); v (B,T,H,V); u (H,K). States (N,H,K,V).
#define LA_REF_DECLARE_RWKV6(R, SFX)                                                           \
    int64_t la_rwkv6_ref_ws_elems##SFX(la_ref_dims d);                                         \
    void la_rwkv6_fwd_ref##SFX(R * o, R * final_state, const R * r, const R * k, const R * v,  \
                               const R * w, const R * u, const R * initial_state,              \
                               la_ref_dims d, R * ws);                                         \
    void la_rwkv6_bwd_ref##SFX(R * dr, R * dk, R * dv, R * dw, R * du, R * dinitial_state,     \
                               const R * dout, const R * dfinal_state, const R * r,            \
                               const R * k, const R * v, const R * w, const R * u,             \
                               const R * initial_state, la_ref_dims d, R * ws);

LA_REF_DECLARE_RWKV6(float, )
LA_REF_DECLARE_RWKV6(double, _f64)

// hgrn (OPS.md 2.13): x, g (B,T,D) with D = d.sh.H (d.sh.K = d.sh.V = 1). States (N,D).
#define LA_REF_DECLARE_HGRN(R, SFX)                                                            \
    int64_t la_hgrn_ref_ws_elems##SFX(la_ref_dims d);                                          \
    void la_hgrn_fwd_ref##SFX(R * o, R * final_state, const R * x, const R * g,                \
                              const R * initial_state, la_ref_dims d, R * ws);                 \
    void la_hgrn_bwd_ref##SFX(R * dx, R * dg, R * dinitial_state, const R * dout,              \
                              const R * dfinal_state, const R * x, const R * g,                \
                              const R * initial_state, la_ref_dims d, R * ws);

LA_REF_DECLARE_HGRN(float, )
LA_REF_DECLARE_HGRN(double, _f64)

// selective_scan (Mamba S6): u, delta (B,T,Dm) with Dm = d.sh.H and Nst = d.sh.K (d.sh.V = 1);
// A (Dm,Nst); Bm, Cm (B,T,Nst); D, delta_bias (Dm) or NULL. States (N,Dm,Nst).
#define LA_REF_DECLARE_SELECTIVE_SCAN(R, SFX)                                                  \
    int64_t la_selective_scan_ref_ws_elems##SFX(la_ref_dims d);                                \
    void la_selective_scan_fwd_ref##SFX(R * y, R * final_state, const R * u, const R * delta,  \
                                        const R * A, const R * Bm, const R * Cm, const R * D,  \
                                        const R * delta_bias, bool delta_softplus,             \
                                        const R * initial_state, la_ref_dims d, R * ws);       \
    void la_selective_scan_bwd_ref##SFX(R * du, R * ddelta, R * dA, R * dBm, R * dCm, R * dD,  \
                                        R * ddelta_bias, R * dinitial_state, const R * dy,     \
                                        const R * dfinal_state, const R * u, const R * delta,  \
                                        const R * A, const R * Bm, const R * Cm, const R * D,  \
                                        const R * delta_bias, bool delta_softplus,             \
                                        const R * initial_state, la_ref_dims d, R * ws);

LA_REF_DECLARE_SELECTIVE_SCAN(float, )
LA_REF_DECLARE_SELECTIVE_SCAN(double, _f64)

// Delta family (OPS.md 2.6-2.8) on effective inputs (after the in-kernel conveniences):
// gate = LA_DN_GATE_NONE / SCALAR / CHANNEL (delta.h); HV = d.sh.HV value heads (> 0), value
// head hv reads q/k head hv / (HV / H). q, k (B,T,H,K); v, o (B,T,HV,V); beta (B,T,HV);
// g (B,T,HV) or (B,T,HV,K); dq, dk per value head (B,T,HV,K). States (N,HV,K,V).
#define LA_REF_DECLARE_DELTA(R, SFX)                                                           \
    int64_t la_delta_ref_ws_elems##SFX(la_ref_dims d);                                         \
    void la_delta_fwd_ref##SFX(R * o, R * final_state, const R * q, const R * k, const R * v,  \
                               const R * beta, const R * g, int gate,                          \
                               const R * initial_state, la_ref_dims d, R * ws);                \
    void la_delta_bwd_ref##SFX(R * dq, R * dk, R * dv, R * dbeta, R * dg, R * dinitial_state,  \
                               const R * dout, const R * dfinal_state, const R * q,            \
                               const R * k, const R * v, const R * beta, const R * g,          \
                               int gate, const R * initial_state, la_ref_dims d, R * ws);

LA_REF_DECLARE_DELTA(float, )
LA_REF_DECLARE_DELTA(double, _f64)

// dplr (OPS.md 2.9): q, k, a, b, gk (B,T,H,K), gk may be NULL (iplr); v, o (B,T,H,V).
// States (N,H,K,V).
#define LA_REF_DECLARE_DPLR(R, SFX)                                                            \
    int64_t la_dplr_ref_ws_elems##SFX(la_ref_dims d);                                          \
    void la_dplr_fwd_ref##SFX(R * o, R * final_state, const R * q, const R * k, const R * v,   \
                              const R * a, const R * b, const R * gk, const R * initial_state, \
                              la_ref_dims d, R * ws);                                          \
    void la_dplr_bwd_ref##SFX(R * dq, R * dk, R * dv, R * da, R * db, R * dgk,                 \
                              R * dinitial_state, const R * dout, const R * dfinal_state,      \
                              const R * q, const R * k, const R * v, const R * a, const R * b, \
                              const R * gk, const R * initial_state, la_ref_dims d, R * ws);

LA_REF_DECLARE_DPLR(float, )
LA_REF_DECLARE_DPLR(double, _f64)

#endif
