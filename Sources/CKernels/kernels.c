#include "CKernels.h"
#include "fast_exp.h"
#include <math.h>

float rqat_rmsnorm(const float *restrict x, const float *restrict w, float *restrict y,
                   size_t n, float eps) {
    float ss = 0.0f;
    for (size_t i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (size_t i = 0; i < n; i++) y[i] = x[i] * r * w[i];
    return r;
}

// The sampler runs this over the whole vocabulary for every sequence at every step, so it is
// built for each instruction set (the package compiles C without -march) and its loops
// vectorise: the max and the sum run in 16 lanes, each lane in order and the lanes then added
// in a fixed order, so the result does not depend on the vector width; fast_expf is exact to
// 1.2e-7 relative, and entries more than 87 below the max (masked ones among them) get 0.
__attribute__((target_clones("avx512f", "avx2", "default")))
float rqat_softmax(float *restrict x, size_t n) {
    float m = max_in_lanes(x, n);
    if (m == -INFINITY) { // every entry masked: define the result as all zeros
        for (size_t j = 0; j < n; j++) x[j] = 0.0f;
        return -INFINITY;
    }
    for (size_t j = 0; j < n; j++) {
        float d = x[j] - m;
        x[j] = d < -87.0f ? 0.0f : fast_expf(d);
    }
    float lanes[16];
    for (int k = 0; k < 16; k++) lanes[k] = 0.0f;
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) lanes[k] += x[i + k];
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += lanes[k];
    for (; i < n; i++) s += x[i];
    float inv = 1.0f / s;
    for (size_t j = 0; j < n; j++) x[j] *= inv;
    return m + logf(s);
}

void rqat_silu_mul(const float *restrict gate, const float *restrict up, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + fast_expf(-g)) * up[i];
    }
}

void rqat_axpy(float alpha, const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

void rqat_rope_rotate_half(float *restrict x, const float *restrict cos, const float *restrict sin, size_t D) {
    size_t h = D / 2;
    for (size_t i = 0; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = a * cos[i] - b * sin[i];
        x[i + h] = b * cos[i] + a * sin[i];
    }
}
