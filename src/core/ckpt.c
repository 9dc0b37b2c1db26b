// Chunk-boundary states for the chunkwise backward passes: all of them for short sequences,
// sqrt-spaced checkpoints with group replay for long ones (see la_ckpt_group in internal.h).
#include "internal.h"

#include <string.h>

void la_ckpt_run(la_ckpt * c, float * S, la_chunk_step_fn step, const void * ctx) {
    const size_t bytes = (size_t)c->KV * sizeof(float);
    for (int64_t ch = 0; ch < c->nch; ch++) {
        float * keep = c->nch <= c->M ? c->grp + ch * c->KV
                       : ch % c->M == 0 ? c->ckpt + (ch / c->M) * c->KV
                                        : NULL;
        if (keep) memcpy(keep, S, bytes);
        step(ctx, ch, S);
    }
}

const float * la_ckpt_state(la_ckpt * c, int64_t chunk, la_chunk_step_fn step, const void * ctx) {
    const int64_t M = c->M, KV = c->KV;
    if (c->nch > M && (chunk == c->nch - 1 || chunk % M == M - 1)) {
        const int64_t c0 = chunk / M * M;
        memcpy(c->grp, c->ckpt + (chunk / M) * KV, (size_t)KV * sizeof(float));
        for (int64_t r = c0; r < chunk; r++) {
            float * Sr = c->grp + (r - c0 + 1) * KV;
            memcpy(Sr, Sr - KV, (size_t)KV * sizeof(float));
            step(ctx, r, Sr);
        }
    }
    return c->grp + (chunk % M) * KV;
}
