// la_expf (src/core/vexp.h) against exp in double: within 2 ulp of the correctly rounded
// float result on [-87.3, 88.7] (every 97th float bit pattern in that range plus edges),
// exactly 0 below -87.3 down to -inf, +inf above 88.7, NaN for NaN.
#include "testlib.h"
#include "vexp.h"

#include <math.h>
#include <stdio.h>

static int64_t ulp_diff(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return ia > ib ? (int64_t)ia - ib : (int64_t)ib - ia;
}

int main(void) {
    int64_t worst = 0, n = 0;
    float worst_x = 0;
    // Positive and negative halves, walking bit patterns.
    for (int sgn = 0; sgn < 2; sgn++) {
        for (uint32_t bits = 0; bits < 0x42b20000u; bits += 97) {  // |x| < 89
            uint32_t b = bits | (sgn ? 0x80000000u : 0);
            float x;
            memcpy(&x, &b, 4);
            if (x < -87.3f || x > 88.7f) continue;
            float want = (float)exp((double)x);
            if (want < 1.17549435e-38f) continue;  // subnormal results are not promised
            float got = la_expf(x);
            int64_t d = ulp_diff(got, want);
            if (d > worst) { worst = d; worst_x = x; }
            n++;
        }
    }
    la_check(worst <= 2, "la_expf within 2 ulp on %lld points (worst %lld ulp at x = %.9g)",
             (long long)n, (long long)worst, (double)worst_x);
    la_check(la_expf(0.0f) == 1.0f, "exp(0) == 1 exactly");
    la_check(la_expf(-87.31f) == 0.0f && la_expf(-1000.0f) == 0.0f && la_expf(-INFINITY) == 0.0f,
             "exp of x < -87.3 (and -inf) is 0");
    la_check(isinf(la_expf(89.0f)) && isinf(la_expf(INFINITY)), "exp of x > 88.7 is +inf");
    volatile float nan_v = NAN;  // not a constant the compiler could fold
    la_check(isnan(la_expf(nan_v)), "exp(NaN) is NaN");
    float xs[37], ys[37];
    for (int i = 0; i < 37; i++) xs[i] = -20.0f + (float)i * 0.61f;
    la_expf_vec(ys, xs, 37);
    int64_t w2 = 0;
    for (int i = 0; i < 37; i++) {
        int64_t d = ulp_diff(ys[i], (float)exp((double)xs[i]));
        if (d > w2) w2 = d;
    }
    la_check(w2 <= 2, "la_expf_vec on a 37-element array within 2 ulp (worst %lld)", (long long)w2);
    return la_test_summary();
}
