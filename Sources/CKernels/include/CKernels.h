#ifndef RQAT_CKERNELS_H
#define RQAT_CKERNELS_H
#include <stddef.h>
#include "CKernelsGemv.h"
#include "CKernelsPool.h"
#include "CKernelsTrain.h"
#include "CKernelsLapack.h"
#include "CKernelsChecksum.h"
#include "CKernelsShuffle.h"
#include "CKernelsAttention.h"
#include "CKernelsKronecker.h"

// Small fp32 kernels the model calls per row. Plain C loops written so the compiler
// vectorises them (restrict pointers, no aliasing).

// y[i] = x[i] * w[i] / sqrt(mean(x^2) + eps); returns the reciprocal RMS (backward needs it).
float rqat_rmsnorm(const float *restrict x, const float *restrict w, float *restrict y,
                   size_t n, float eps);

// In place: x = softmax(x) over n entries; returns the log of the normaliser
// (max + log(sum(exp(x - max)))), i.e. the log-sum-exp.
float rqat_softmax(float *restrict x, size_t n);

// out[i] = silu(gate[i]) * up[i], with a vectorisable exp (within ~2 ulp of expf).
void rqat_silu_mul(const float *restrict gate, const float *restrict up, float *restrict out, size_t n);

// y += alpha * x.
void rqat_axpy(float alpha, const float *restrict x, float *restrict y, size_t n);

// RoPE, rotate-half convention (as transformers): for i < D/2 the pair (x[i], x[i + D/2]) is
// rotated by the angle whose cosine and sine are cos[i], sin[i].
void rqat_rope_rotate_half(float *restrict x, const float *restrict cos, const float *restrict sin, size_t D);

#endif
