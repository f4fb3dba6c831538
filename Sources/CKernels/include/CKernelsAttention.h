#ifndef RQAT_CKERNELS_ATTENTION_H
#define RQAT_CKERNELS_ATTENTION_H
#include <stddef.h>

// Inference attention (one token row of a prefill or decode step) of the query heads that share
// one key/value head (grouped-query attention) against the row's L cached positions:
//   out[h] = softmax(scale * q[h] . K^T) V      for h < heads
//   q: (heads, D) and out: (heads, D), both with row stride D;  keys, values: (L, D) row-major;
//   scores: scratch of heads * L floats.
// The group is handled together so the keys and values are read once for all its heads: the
// scores are one gemv of the heads against the keys (see CKernelsGemv.h), the softmax uses a
// vectorisable exp (within ~2 ulp of expf), and the weighted sum of values is vectorised.
void rqat_attend_group(const float *q, size_t heads, const float *keys, const float *values,
                       size_t L, size_t D, float scale, float *scores, float *out);

// The same on a given instruction-set level (RQAT_GEMV_*), capped at the best supported one.
void rqat_attend_group_isa(int isa, const float *q, size_t heads, const float *keys, const float *values,
                           size_t L, size_t D, float scale, float *scores, float *out);

#endif
