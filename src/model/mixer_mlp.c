// fla's GatedMLP (SwiGLU, OPS.md 4.4) as the second sublayer of a block:
//   y = down_proj( SiLU(gate_proj x) o up_proj x ),  no biases; I = config's intermediate_size.
// Parameters: 0 gate_proj.weight (I, D), 1 up_proj.weight (I, D), 2 down_proj.weight (D, I).
// Saves nothing: the backward recomputes the (rows, I) intermediates from the block's x.
#include "model.h"

enum { P_GATE, P_UP, P_DOWN };

static la_status mlp_build(la_model * m, la_layer * L, char * err, size_t errlen) {
    (void)err, (void)errlen;
    const int64_t D = m->D, I = m->I;
    L->F = I;
    la_layer_param(m, L, "gate_proj.weight", 2, (int64_t[]){ I, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "up_proj.weight", 2, (int64_t[]){ I, D }, LA_INIT_NORMAL, true);
    la_layer_param(m, L, "down_proj.weight", 2, (int64_t[]){ D, I }, LA_INIT_NORMAL, true);
    return LA_STATUS_OK;
}

static size_t mlp_act(const la_layer * L, int64_t B, int64_t T) {
    (void)L, (void)B, (void)T;
    return 0;
}

static size_t mlp_work(const la_layer * L, int64_t B, int64_t T, bool backward) {
    (void)backward;
    return la_mlp_workspace_size(B * T, 1, L->F);
}

static size_t mlp_cache(const la_layer * L, int64_t cap) {
    (void)L, (void)cap;
    return 0;
}

static la_status mlp_forward(const la_model * m, const la_layer * L, const la_call * c,
                             float * y, const float * x) {
    return la_mlp_forward(y, x, la_pw(m, L, P_GATE), la_pw(m, L, P_UP), la_pw(m, L, P_DOWN),
                          c->B * c->T, m->D, L->F, c->work);
}

static la_status mlp_backward(la_model * m, const la_layer * L, const la_call * c, float * dx,
                              const float * dy, const float * x) {
    return la_mlp_backward(dx, la_pg(m, L, P_GATE), la_pg(m, L, P_UP), la_pg(m, L, P_DOWN), dy,
                           x, la_pw(m, L, P_GATE), la_pw(m, L, P_UP), la_pw(m, L, P_DOWN),
                           c->B * c->T, m->D, L->F, true, c->work);
}

const la_mixer_vt la_mixer_mlp_vt = {
    .name = "mlp",
    .build = mlp_build,
    .act_floats = mlp_act,
    .work_bytes = mlp_work,
    .cache_floats = mlp_cache,
    .forward = mlp_forward,
    .backward = mlp_backward,
};
