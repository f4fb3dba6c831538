#ifndef RQAT_CKERNELS_KRONECKER_H
#define RQAT_CKERNELS_KRONECKER_H
#include <stddef.h>

// The small-factor side of a Kronecker product x (L ⊗ R) (Tensors/Kronecker.swift), over rows
// of n = a * b floats, each read as an (a, b) row-major matrix. The other side (X R) is a GEMM.

// For every row: out[o, :] = sum_s m[s * sum_stride + o * out_stride] * in[s, :], o, s < a.
// (L^T Z: sum_stride a, out_stride 1; L dY: sum_stride 1, out_stride a.) out must not overlap in.
void rqat_kron_mix(const float *m, size_t sum_stride, size_t out_stride, const float *in, float *out,
                   size_t a, size_t b, size_t rows);

// acc[i * a + k] += sum over rows and l of z[i, l] * dy[k, l] (the factor's gradient, Z dY^T).
void rqat_kron_outer_accumulate(const float *z, const float *dy, float *acc, size_t a, size_t b, size_t rows);

#endif
