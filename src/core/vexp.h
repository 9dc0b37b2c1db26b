// exp(x) for float32 arrays, written so the compiler vectorises it (no libm call in the loop).
//
// Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then Cephes' degree-7 polynomial for
// e^r, then scaling by 2^n through the exponent bits. Accuracy: within 2 ulp of the correctly
// rounded result for x in [-87.3, 88.7] (tested against exp in double); x < -87.3 gives 0 (the
// true value is a float32 subnormal or smaller), x > 88.7 gives +inf, NaN stays NaN.
//
// The chunkwise algorithms with per-channel gates evaluate K exponentials per token several
// times over (q o e^b, k o e^{b_L - b}, the sub-chunk anchors); a scalar expf call per element
// would cost as much as their matrix products.
#ifndef LA_VEXP_H
#define LA_VEXP_H

#include <stdint.h>
#include <string.h>

static inline float la_expf(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    float xc = x > 88.7f ? 88.7f : x;
    xc = xc < -87.3f ? -87.3f : xc;
    xc = xc == xc ? xc : 0.0f;  // NaN: compute on 0 (float-to-int of NaN is undefined), fix below
    float n = (xc * log2e + shifter) - shifter;
    float r = xc - n * ln2_hi;
    r = r - n * ln2_lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    // 2^n in two halves, so n = 128 (x near 88.7) and n = -126 stay representable.
    const int32_t ni = (int32_t)n, h = ni >> 1;
    const uint32_t e1 = (uint32_t)(h + 127) << 23, e2 = (uint32_t)(ni - h + 127) << 23;
    float s1, s2;
    memcpy(&s1, &e1, sizeof s1);
    memcpy(&s2, &e2, sizeof s2);
    float y = p * s1 * s2;
    y = x < -87.3f ? 0.0f : y;
    y = x > 88.7f ? __builtin_inff() : y;
    return x != x ? x : y;
}

// y[i] = exp(x[i]); y may alias x.
static inline void la_expf_vec(float * y, const float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = la_expf(x[i]);
}

#endif
