// RoPE, rotate-half (non-interleaved) form (OPS.md 5.5), forward and backward.
//
//   theta_i = pos * theta^(-2i/D),  i < D/2
//   y_i       = x_i cos theta_i - x_{i+D/2} sin theta_i
//   y_{i+D/2} = x_{i+D/2} cos theta_i + x_i sin theta_i
//
// pos = offsets[n] (0 without offsets) + the token's index inside its sequence n (cu_seqlens,
// or the batch row). The backward is the transpose of this rotation, i.e. the rotation by
// -theta_i: dx_i = dy_i cos + dy_{i+D/2} sin, dx_{i+D/2} = dy_{i+D/2} cos - dy_i sin.
//
// Precision: the frequencies, the angles pos * theta^(-2i/D) and their cos and sin are computed
// in double, and the rotation too, so that long positions stay accurate: in float32 the angle
// of position 10^6 alone would be off by up to 0.03 rad (torch and HF form pos * inv_freq in
// float32; linattn's results are the more accurate ones there and agree to rounding elsewhere).
//
// Dimensions: B, T, H as in OPS.md; D the rotated head dim (even). x, y (B, T, H, D); y may be
// x (each pair is read before it is written). Threads split blocks of token rows; each row is
// computed independently, so results do not depend on the thread count.
#include "internal.h"

#include <math.h>

enum {
    ROPE_ROWS = 32,  // token rows per task
    ROPE_FREQ = 64,  // frequencies whose cos and sin are formed at a time (stack arrays)
};

typedef struct rope_args {
    float *         y;        // (B, T, H, D)
    const float *   x;        // (B, T, H, D)
    const int64_t * offsets;  // (N) or NULL
    const la_opts * opts;
    la_shape        sh;       // B, T, H; K = D
    int64_t         N;
    double          log_theta;
    double          sign;     // +1 forward, -1 backward (the inverse rotation)
} rope_args;

// Sequence index and position of flat token row r.
static int64_t rope_pos(const rope_args * a, int64_t r) {
    int64_t n, idx;
    if (a->opts->cu_seqlens) {
        // The last n with cu[n] <= r and cu[n + 1] > r (empty sequences share their start).
        const int64_t * cu = a->opts->cu_seqlens;
        int64_t lo = 0, hi = a->N - 1;
        while (lo < hi) {
            const int64_t mid = (lo + hi + 1) / 2;
            if (cu[mid] <= r) lo = mid;
            else hi = mid - 1;
        }
        n = lo;
        idx = r - cu[n];
    } else {
        n = r / a->sh.T;
        idx = r % a->sh.T;
    }
    return idx + (a->offsets ? a->offsets[n] : 0);
}

LA_CLONES
static void rope_task(const void * ctx, int64_t task, void * scratch) {
    (void)scratch;
    const rope_args * a = ctx;
    const int64_t H = a->sh.H, D = a->sh.K, half = D / 2;
    const int64_t r0 = task * ROPE_ROWS, r1 = LA_MIN(a->sh.B * a->sh.T, r0 + ROPE_ROWS);
    double inv[ROPE_FREQ], cs[ROPE_FREQ], sn[ROPE_FREQ];
    for (int64_t i0 = 0; i0 < half; i0 += ROPE_FREQ) {
        const int64_t L = LA_MIN(ROPE_FREQ, half - i0);
        // theta^(-2i/D) = exp(-(2i/D) log theta)
        for (int64_t i = 0; i < L; i++)
            inv[i] = exp(-(double)(2 * (i0 + i)) / (double)D * a->log_theta);
        for (int64_t r = r0; r < r1; r++) {
            const double pos = (double)rope_pos(a, r);
            for (int64_t i = 0; i < L; i++) {
                const double ang = pos * inv[i];
                cs[i] = cos(ang);
                sn[i] = a->sign * sin(ang);
            }
            for (int64_t h = 0; h < H; h++) {
                // No restrict: y may be x. Each pair (i, i + D/2) is read before it is written.
                const float * xr = a->x + (r * H + h) * D + i0;
                float * yr = a->y + (r * H + h) * D + i0;
                for (int64_t i = 0; i < L; i++) {
                    const double x1 = (double)xr[i], x2 = (double)xr[i + half];
                    yr[i] = (float)(x1 * cs[i] - x2 * sn[i]);
                    yr[i + half] = (float)(x2 * cs[i] + x1 * sn[i]);
                }
            }
        }
    }
}

static la_status rope_run(float * y, const float * x, float theta, const int64_t * offsets,
                          int64_t B, int64_t T, int64_t H, int64_t D, const la_opts * opts,
                          double sign) {
    if (!opts) return LA_STATUS_INVALID_ARG;
    const la_shape sh = { B, T, H, D, 1, 0 };
    int64_t N;
    la_status st = la_check_base(sh, opts, &N);
    if (st != LA_STATUS_OK) return st;
    if (D % 2 != 0) return LA_STATUS_SHAPE;
    if (!y || !x) return LA_STATUS_INVALID_ARG;
    if (!(theta > 0.0f) || !isfinite(theta)) return LA_STATUS_INVALID_ARG;
    const rope_args a = { y, x, offsets, opts, sh, N, log((double)theta), sign };
    char dummy[LA_ALIGN];
    la_run_tasks((B * T + ROPE_ROWS - 1) / ROPE_ROWS, dummy, 0, rope_task, &a);
    return LA_STATUS_OK;
}

la_status la_rope_forward(float * y, const float * x, float theta, const int64_t * offsets,
                          int64_t B, int64_t T, int64_t H, int64_t D, const la_opts * opts) {
    return rope_run(y, x, theta, offsets, B, T, H, D, opts, 1.0);
}

la_status la_rope_backward(float * dx, const float * dy, float theta, const int64_t * offsets,
                           int64_t B, int64_t T, int64_t H, int64_t D, const la_opts * opts) {
    return rope_run(dx, dy, theta, offsets, B, T, H, D, opts, -1.0);
}
