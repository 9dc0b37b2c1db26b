// A uniform handle on every op, for the benchmark and the demo: random inputs of a given shape,
// one forward call, one forward+backward call, and the op's cost model (ALGORITHMS.md 11).
#ifndef LA_OPSET_H
#define LA_OPSET_H


#include "linattn.h"

typedef struct op_inst op_inst;  // inputs, outputs and gradients of one op at one shape

typedef struct op_entry {
    const char * name;
    const char * note;       // shown in tables (e.g. "normalize")
    bool         quadratic;  // softmax attention: cost grows with T per token, no fixed state
                             // (no decode bench; the demo's long-sequence ref form is skipped)
} op_entry;

extern const op_entry la_opset[];
extern const int      la_opset_count;

// Allocates and fills inputs with a fixed seed. NULL on allocation failure.
op_inst * op_inst_new(int which, la_shape sh, uint64_t seed);
void      op_inst_free(op_inst * x);
// Runs the op in `form` (chunk size C); backward also runs the forward first.
la_status op_inst_forward(op_inst * x, la_form form, int32_t C);
la_status op_inst_backward(op_inst * x, la_form form, int32_t C);
// One decode step: forward over the instance's T tokens (use T = 1) from its recurrent state
// (N = B sequences, zero at creation), updating the state in place. Returns the bytes of state
// the step reads and writes in *state_bytes.
la_status op_inst_decode(op_inst * x, double * state_bytes);
// Output o and dq-like first gradient after the calls above (for agreement checks).
const float * op_inst_out(const op_inst * x, int64_t * n);
const float * op_inst_grad(const op_inst * x, int64_t * n);
// Forward FLOPs per token per head of the op in a form (ALGORITHMS.md 11.2-11.3, dense counts);
// the forward+backward model count is 3x this.
double op_flops_per_token(int which, la_form form, la_shape sh, int32_t C);
// Forward+backward model FLOPs over forward FLOPs: 3 for the linear mixers (ALGORITHMS.md 11.5),
// 3.5 for softmax attention (FlashAttention's convention: backward = 2.5x forward).
double op_fwdbwd_factor(int which);

#endif
