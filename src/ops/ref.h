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

#endif
