#include "CKernelsTrain.h"
#include "fast_exp.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

void rqat_softmax_fast(float *restrict x, size_t n) {
    float inv = 1.0f / exp_shifted_by_max(x, n, 1.0f);
    for (size_t i = 0; i < n; i++) x[i] *= inv;
}

void rqat_rmsnorm_backward(const float *dy, const float *restrict x, const float *restrict w,
                           float rstd, size_t n, float *dx, int accumulate, float *restrict dw) {
    float dot = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float g = dy[i];
        dot += g * w[i] * x[i];
        dw[i] += g * x[i] * rstd;
    }
    float c = dot * rstd * rstd * rstd / (float)n;
    if (accumulate) {
        for (size_t i = 0; i < n; i++) dx[i] += dy[i] * w[i] * rstd - c * x[i];
    } else {
        for (size_t i = 0; i < n; i++) dx[i] = dy[i] * w[i] * rstd - c * x[i];
    }
}

void rqat_softmax_backward(const float *restrict p, float *restrict g, size_t n, float scale) {
    float s = 0.0f;
    for (size_t j = 0; j < n; j++) s += p[j] * g[j];
    for (size_t j = 0; j < n; j++) g[j] = scale * p[j] * (g[j] - s);
}

void rqat_silu_mul_backward(const float *restrict gate, const float *restrict up, const float *restrict dout,
                            float *restrict dgate, float *restrict dup, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float s = 1.0f / (1.0f + fast_expf(-g));
        float silu = g * s;
        dup[i] = dout[i] * silu;
        dgate[i] = dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

void rqat_rope_rotate_half_inverse(float *restrict x, const float *restrict cos, const float *restrict sin, size_t D) {
    size_t h = D / 2;
    for (size_t i = 0; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = a * cos[i] + b * sin[i];
        x[i + h] = b * cos[i] - a * sin[i];
    }
}
