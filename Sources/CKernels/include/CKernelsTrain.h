#ifndef RQAT_CKERNELS_TRAIN_H
#define RQAT_CKERNELS_TRAIN_H
#include <stddef.h>

// Backward kernels for training, one row (or one head vector) per call. fp32 throughout.

// Backward of y = x * rstd * w (rstd = 1/sqrt(mean(x^2) + eps), as saved by rqat_rmsnorm).
//   dx  = rstd * (dy * w) - x * rstd^3 / n * sum(dy * w * x)   (written, or added when accumulate)
//   dw += dy * x * rstd
// dx may be the same array as dy (in place); nothing else may overlap.
void rqat_rmsnorm_backward(const float *dy, const float *restrict x, const float *restrict w,
                           float rstd, size_t n, float *dx, int accumulate, float *restrict dw);

// Backward of a softmax row p (n entries) followed by a scale: in place,
//   g[j] = scale * p[j] * (g[j] - sum_k p[k] g[k]).
void rqat_softmax_backward(const float *restrict p, float *restrict g, size_t n, float scale);

// Backward of out = silu(gate) * up:
//   dgate = dout * up * s * (1 + gate * (1 - s)),  dup = dout * silu(gate),  s = sigmoid(gate).
void rqat_silu_mul_backward(const float *restrict gate, const float *restrict up, const float *restrict dout,
                            float *restrict dgate, float *restrict dup, size_t n);

// In place, the inverse of rqat_rope_rotate_half (rotation by the negative angle); it is also
// the backward of the rotation (the transpose of a rotation is its inverse).
void rqat_rope_rotate_half_inverse(float *restrict x, const float *restrict cos, const float *restrict sin, size_t D);

// In place softmax over n entries (n >= 1): the training-side variant of rqat_softmax, with an
// inlined, vectorisable exp (range reduction + degree-6 polynomial, within ~2 ulp of expf over
// the float range; rqat_silu_mul and attention use it too) instead of a scalar libm call per
// element. Same results as rqat_softmax to ~1e-7 relative.
void rqat_softmax_fast(float *restrict x, size_t n);

#endif
