// Pieces shared by the token mixers: the projection + short conv + activation path, op
// options, and workspace arithmetic.
#include "model.h"

#include "nn.h"

la_opts la_mixer_opts(const la_call * c, void * work, size_t work_size) {
    la_opts o = la_opts_default();
    o.form = c->cache && c->T == 1 ? LA_FORM_RECURRENT : LA_FORM_CHUNK;
    o.work = work;
    o.work_size = work_size;
    return o;
}

size_t la_floats_bytes(int n, const int64_t * counts) {
    size_t b = LA_ALIGN;
    for (int i = 0; i < n; i++) b += la_align_up((size_t)counts[i] * sizeof(float));
    return b;
}

la_status la_proj_conv_forward(const la_call * c, float * y, float * y_pre, const float * x,
                               const float * W, const float * conv_w, float * conv_cache,
                               la_act act, int64_t D, int64_t n, int64_t Wc) {
    const int64_t rows = c->B * c->T;
    la_status s = la_linear_forward(y_pre, x, W, NULL, rows, D, n);
    if (s) return s;
    if (!conv_w) return la_act_forward(y, y_pre, act, rows * n);
    const la_opts o = la_opts_default();
    return la_short_conv_forward(y, conv_cache, y_pre, conv_w, NULL, conv_cache, act, c->B, c->T,
                                 n, Wc, &o);
}

la_status la_proj_conv_backward(const la_call * c, float * dx, float dx_beta, float * dW,
                                float * dconv_w, float * dy, float * tmp, const float * y_pre,
                                const float * x, const float * W, const float * conv_w,
                                la_act act, int64_t D, int64_t n, int64_t Wc) {
    const int64_t rows = c->B * c->T;
    la_status s;
    if (conv_w) {
        const la_opts o = la_opts_default();
        s = la_short_conv_backward(tmp, dconv_w, NULL, NULL, dy, NULL, y_pre, conv_w, NULL, NULL,
                                   act, c->B, c->T, n, Wc, true, &o);
        if (s) return s;
        memcpy(dy, tmp, (size_t)(rows * n) * sizeof(float));
    } else {
        s = la_act_backward(dy, dy, y_pre, act, rows * n);
        if (s) return s;
    }
    la_lin_bwd(dx, dx_beta, dW, NULL, dy, x, W, rows, D, n);
    return LA_STATUS_OK;
}
