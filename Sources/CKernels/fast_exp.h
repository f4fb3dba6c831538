#ifndef RQAT_CKERNELS_FAST_EXP_H
#define RQAT_CKERNELS_FAST_EXP_H
// Internal to CKernels: an exp that loops can vectorise, and the softmax core built on it (shared
// by the training kernels, silu and attention).
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// exp(x) = 2^k * e^r with k = round(x / ln 2), |r| <= ln2 / 2, e^r by its Taylor polynomial to
// degree 6 (truncation error < 1.2e-7 relative). Written with adds, multiplies and integer
// shifts only so the loops that call it vectorise.
static inline float fast_expf(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    float k = (x * 1.44269504088896341f + magic) - magic;
    float r = x - k * 0.693145751953125f;   // ln 2 split in a high part exact in float ...
    r = r - k * 1.428606765330187e-06f;     // ... and the remainder
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// max x[i] over i < n (-inf for n = 0), in 16 running lanes so that the loop vectorises; a max
// is exact in any order, so this equals the plain loop's result.
__attribute__((always_inline)) static inline float max_in_lanes(const float *restrict x, size_t n) {
    float lanes[16];
    for (int k = 0; k < 16; k++) lanes[k] = -__builtin_inff();
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) lanes[k] = x[i + k] > lanes[k] ? x[i + k] : lanes[k];
    float m = lanes[0];
    for (int k = 1; k < 16; k++) m = lanes[k] > m ? lanes[k] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

// The unnormalised core of a softmax: x[i] = exp(scale * (x[i] - max x)) for i < n (n >= 1);
// returns their sum. Callers divide by it where it costs least.
// The exps run in a loop of their own, so that it vectorises; the sum stays one sequential
// loop (a float sum in another order rounds differently), so the result is the same on every
// instruction set and vector width.
__attribute__((always_inline)) static inline float exp_shifted_by_max(float *restrict x, size_t n, float scale) {
    float m = max_in_lanes(x, n);
    for (size_t j = 0; j < n; j++) x[j] = fast_expf(scale * (x[j] - m));
    float sum = 0.0f;
    for (size_t j = 0; j < n; j++) sum += x[j];
    return sum;
}

#endif
