// Cross-entropy with a fused log-softmax (OPS.md 4.5), torch's F.cross_entropy with
// reduction='mean' and an ignore index (-100 in the models).
//
//   m_r = max_v x_rv ;  lse_r = m_r + log sum_v exp(x_rv - m_r) ;  loss_r = lse_r - x_r,t_r
//   loss = (1 / count) sum over counted rows of loss_r        (0 when no row counts)
//   dlogits_rv = (softmax(x_r)_v - [v == t_r]) / count ;  ignored rows: 0
//
// Subtracting the row maximum keeps every exponent <= 0, so logits of +-1e4 neither overflow
// nor lose the terms that matter. The exponentials are float (la_expf, within 2 ulp); their
// sum, the log and the loss are double, and the mean sums the rows in a fixed order.
//
// Dimensions: rows, vocab; logits and dlogits (rows, vocab); targets (rows).
// Threads: rows are cut into at most LA_CE_PARTS fixed blocks (sizes depend on rows only); a
// block sums its rows' losses in order, and the block sums are added in block order.
#include "nn.h"

#define LA_CE_PARTS 1024

// Max of x (n >= 1), in 16 lanes so the compiler can vectorise it.
LA_CLONES
static float row_max(const float * restrict x, int64_t n) {
    float m[16];
    for (int l = 0; l < 16; l++) m[l] = x[0];
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    for (int l = 0; j + l < n; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    float r = m[0];
    for (int l = 1; l < 16; l++) r = m[l] > r ? m[l] : r;
    return r;
}

// sum_v exp(x_v - m) in double (8 lanes); e_v into e when e is non-NULL (e may equal x).
LA_CLONES
static double row_sumexp(float * e, const float * x, float m, int64_t n) {
    double acc[8] = { 0 };
    int64_t j = 0;
    if (e) {
        for (; j + 8 <= n; j += 8)
            for (int l = 0; l < 8; l++) {
                const float v = la_expf(x[j + l] - m);
                e[j + l] = v;
                acc[l] += (double)v;
            }
        for (int l = 0; j + l < n; l++) {
            const float v = la_expf(x[j + l] - m);
            e[j + l] = v;
            acc[l] += (double)v;
        }
    } else {
        for (; j + 8 <= n; j += 8)
            for (int l = 0; l < 8; l++) acc[l] += (double)la_expf(x[j + l] - m);
        for (int l = 0; j + l < n; l++) acc[l] += (double)la_expf(x[j + l] - m);
    }
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// x (n) *= s
LA_CLONES
static void row_scale(float * restrict x, float s, int64_t n) {
    for (int64_t j = 0; j < n; j++) x[j] *= s;
}

// One counted row: returns loss_r; dl (vocab) or NULL receives (softmax - onehot) / count.
// dl may equal x: the target logit is read first, then each logit before its slot is written.
static double ce_row(float * dl, const float * x, int64_t vocab, int64_t tgt, double inv_count) {
    const float xt = x[tgt];
    const float m = row_max(x, vocab);
    const double sum = row_sumexp(dl, x, m, vocab);  // >= 1: the maximum contributes e^0
    if (dl) {
        const double pt = (double)dl[tgt] / sum;
        row_scale(dl, (float)(inv_count / sum), vocab);
        dl[tgt] = (float)((pt - 1.0) * inv_count);  // in double: p_t - 1 cancels near p_t = 1
    }
    return (double)m + log(sum) - (double)xt;
}

la_status la_cross_entropy(double * loss, float * dlogits, const float * logits,
                           const int64_t * targets, int64_t rows, int64_t vocab,
                           int64_t ignore_index) {
    if (rows <= 0 || vocab <= 0) return LA_STATUS_SHAPE;
    if (!loss || !logits || !targets) return LA_STATUS_INVALID_ARG;
    int64_t count = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t = targets[r];
        if (t == ignore_index) continue;
        if (t < 0 || t >= vocab) return LA_STATUS_INVALID_ARG;  // before anything is written
        count++;
    }
    const double inv_count = count > 0 ? 1.0 / (double)count : 0.0;
    const int64_t rb = (rows + LA_CE_PARTS - 1) / LA_CE_PARTS, nb = (rows + rb - 1) / rb;
    double part[LA_CE_PARTS];  // (nb) loss sum of each row block
#pragma omp parallel for schedule(static) num_threads(la_nn_threads(nb, rows * vocab))
    for (int64_t b = 0; b < nb; b++) {
        double s = 0.0;
        const int64_t r1 = LA_MIN(rows, (b + 1) * rb);
        for (int64_t r = b * rb; r < r1; r++) {
            float * dl = dlogits ? dlogits + r * vocab : NULL;
            if (targets[r] == ignore_index) {
                if (dl) memset(dl, 0, (size_t)vocab * sizeof(float));
                continue;
            }
            s += ce_row(dl, logits + r * vocab, vocab, targets[r], inv_count);
        }
        part[b] = s;
    }
    double total = 0.0;
    for (int64_t b = 0; b < nb; b++) total += part[b];
    *loss = count > 0 ? total / (double)count : 0.0;
    return LA_STATUS_OK;
}
