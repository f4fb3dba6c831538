#ifndef RQAT_CKERNELS_SIMD_TARGET_H
#define RQAT_CKERNELS_SIMD_TARGET_H
// Internal to CKernels: what the hand-vectorised x86 kernels (gemv, attention) share.
#if defined(__x86_64__)
#include <immintrin.h>

// The target of the AVX-512 paths (the package builds C without -march).
#define AVX512 "avx512f,avx512vl,avx512dq,avx2,fma"

// Loops over accumulators have constant trip counts after inlining; unrolling them fully lets
// the compiler keep the accumulator arrays in registers.
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 32")
#endif
#endif

#endif
