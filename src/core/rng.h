// Deterministic random numbers for initialisation and data generation.
//
// A stream is a function of (seed, index) only: la_rng_at(seed, i) starts a fresh xoshiro256**
// generator from splitmix64(seed) mixed with i, so example i of a task, or parameter tensor i
// of a model, is the same whatever was drawn before it. That is what makes batches
// reproducible across a resumed run and across thread counts.
#ifndef LA_RNG_H
#define LA_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct la_xrng { uint64_t s[4]; } la_xrng;

static inline uint64_t la_splitmix64(uint64_t * x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline la_xrng la_rng_at(uint64_t seed, uint64_t index) {
    uint64_t x = seed ^ (0xD1B54A32D192ED03ull * (index + 1));
    la_xrng r;
    for (int i = 0; i < 4; i++) r.s[i] = la_splitmix64(&x);
    return r;
}

static inline uint64_t la_rng_u64(la_xrng * r) {
    uint64_t * s = r->s;
    const uint64_t x = s[1] * 5;
    const uint64_t out = ((x << 7) | (x >> 57)) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return out;
}

// Uniform in [0, 1) with 53 random bits.
static inline double la_rng_unif(la_xrng * r) {
    return (double)(la_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

// Uniform integer in [0, n), n >= 1, without modulo bias (Lemire's rejection).
static inline uint64_t la_rng_below(la_xrng * r, uint64_t n) {
    __uint128_t m = (__uint128_t)la_rng_u64(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        const uint64_t thr = (0 - n) % n;
        while (lo < thr) {
            m = (__uint128_t)la_rng_u64(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

// Standard normal (Box-Muller; one value per call, the second is dropped for simplicity).
static inline double la_rng_gauss(la_xrng * r) {
    double u1 = la_rng_unif(r), u2 = la_rng_unif(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif  // LA_RNG_H
