// Elementwise activations and their derivatives (OPS.md 0):
//
//   identity  y = x                          y' = 1
//   silu      y = x sigma(x)                 y' = sigma(x) (1 + x sigma(-x))
//   sigmoid   y = sigma(x)                   y' = sigma(x) sigma(-x)
//   softplus  y = x (x > 20), log(1 + e^x)   y' = 1 (x > 20), sigma(x)
//
// sigma(x) and sigma(-x) = 1 - sigma(x) come as a pair from one exp(-|x|) (nn.h), so neither
// the sigmoid of a large |x| nor the derivatives subtract nearly equal numbers. The softplus
// threshold is torch's (beta = 1, threshold = 20): above it the result is x itself, and the
// derivative is exactly 1 there, as in torch's softplus_backward.
//
// Threads: fixed blocks of LA_ACT_BLOCK values; every value is computed independently, so the
// split cannot change a result.
#include "nn.h"

#define LA_ACT_BLOCK 16384

static bool act_valid(la_act act) {
    return act == LA_ACT_IDENTITY || act == LA_ACT_SILU || act == LA_ACT_SIGMOID ||
           act == LA_ACT_SOFTPLUS;
}

static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// y (n) = act(x) (n); y may equal x (each value is read before it is written).
LA_CLONES
static void act_fwd_block(float * y, const float * x, la_act act, int64_t n) {
    switch (act) {
    case LA_ACT_IDENTITY:
        if (y != x) memcpy(y, x, (size_t)n * sizeof(float));
        break;
    case LA_ACT_SILU:
        for (int64_t i = 0; i < n; i++) y[i] = la_nn_silu(x[i]);
        break;
    case LA_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) {
            float s, sm;
            la_nn_sigmoid2(x[i], &s, &sm);
            y[i] = s;
        }
        break;
    case LA_ACT_SOFTPLUS:
        for (int64_t i = 0; i < n; i++) y[i] = softplus(x[i]);
        break;
    }
}

// dx (n) = dy (n) act'(x) (n); dx may equal dy.
LA_CLONES
static void act_bwd_block(float * dx, const float * dy, const float * x, la_act act, int64_t n) {
    switch (act) {
    case LA_ACT_IDENTITY:
        if (dx != dy) memcpy(dx, dy, (size_t)n * sizeof(float));
        break;
    case LA_ACT_SILU:
        for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * la_nn_silu_grad(x[i]);
        break;
    case LA_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) {
            float s, sm;
            la_nn_sigmoid2(x[i], &s, &sm);
            dx[i] = dy[i] * (s * sm);
        }
        break;
    case LA_ACT_SOFTPLUS:
        // torch: x > threshold passes dy through; below it dy * e^x / (1 + e^x) = dy sigma(x).
        for (int64_t i = 0; i < n; i++) {
            float s, sm;
            la_nn_sigmoid2(x[i], &s, &sm);
            dx[i] = x[i] > 20.0f ? dy[i] : dy[i] * s;
        }
        break;
    }
}

la_status la_act_forward(float * y, const float * x, la_act act, int64_t n) {
    if (n <= 0) return LA_STATUS_SHAPE;
    if (!y || !x || !act_valid(act)) return LA_STATUS_INVALID_ARG;
    const int64_t nb = (n + LA_ACT_BLOCK - 1) / LA_ACT_BLOCK;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(nb, n))
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * LA_ACT_BLOCK, m = LA_MIN(LA_ACT_BLOCK, n - i0);
        act_fwd_block(y + i0, x + i0, act, m);
    }
    return LA_STATUS_OK;
}

la_status la_act_backward(float * dx, const float * dy, const float * x, la_act act,
                          int64_t n) {
    if (n <= 0) return LA_STATUS_SHAPE;
    if (!dx || !dy || !act_valid(act) || (!x && act != LA_ACT_IDENTITY))
        return LA_STATUS_INVALID_ARG;  // identity's derivative does not read x
    const int64_t nb = (n + LA_ACT_BLOCK - 1) / LA_ACT_BLOCK;
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(nb, n))
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * LA_ACT_BLOCK, m = LA_MIN(LA_ACT_BLOCK, n - i0);
        act_bwd_block(dx + i0, dy + i0, x + i0, act, m);
    }
    return LA_STATUS_OK;
}
