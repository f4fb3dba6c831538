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

float rqat_softmax(float *restrict x, size_t n) {
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY) { // every entry masked: define the result as all zeros
        for (size_t i = 0; i < n; i++) x[i] = 0.0f;
        return -INFINITY;
    }
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) { x[i] = expf(x[i] - m); s += x[i]; }
    float inv = 1.0f / s;
    for (size_t i = 0; i < n; i++) x[i] *= inv;
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
