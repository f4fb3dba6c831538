#include "CKernelsAttention.h"
#include "CKernelsGemv.h"
#include "fast_exp.h"
#include "simd_target.h"

// out[h] = inv[h] * sum_j p[h][j] V[j] for each of the heads, one head at a time, the sum in
// order of j (one fused multiply-add per term where the instruction set has it: the compiler
// contracts the expression).
__attribute__((always_inline))
static inline void weighted_values(const float *restrict scores, size_t L, const float *restrict inv,
                                   const float *restrict values, size_t D, float *restrict out, size_t heads) {
    for (size_t h = 0; h < heads; h++) {
        const float *restrict p = scores + h * L;
        float *restrict o = out + h * D;
        for (size_t d = 0; d < D; d++) o[d] = 0.0f;
        for (size_t j = 0; j < L; j++) {
            const float *restrict v = values + j * D;
            float pj = p[j];
            for (size_t d = 0; d < D; d++) o[d] += pj * v[d];
        }
        for (size_t d = 0; d < D; d++) o[d] *= inv[h];
    }
}

#if defined(__x86_64__)
// weighted_values for G heads at once with D = 16 * DV (constants after inlining): the
// G * DV accumulators stay in registers and each row of V is loaded once for all G heads,
// where one head at a time re-reads V per head and keeps its output in memory. The same
// terms in the same order, so the results are those of weighted_values bit for bit.
__attribute__((target(AVX512), always_inline))
static inline void weighted_values_block_avx512(const float *scores, size_t L, const float *inv, const float *values,
                                                float *out, size_t h0, const int G, const int DV) {
    __m512 acc[32];
    UNROLL for (int k = 0; k < G * DV; k++) acc[k] = _mm512_setzero_ps();
    for (size_t j = 0; j < L; j++) {
        __m512 v[8];
        UNROLL for (int k = 0; k < DV; k++) v[k] = _mm512_loadu_ps(values + (j * DV + k) * 16);
        UNROLL for (int g = 0; g < G; g++) {
            __m512 p = _mm512_set1_ps(scores[(h0 + g) * L + j]);
            UNROLL for (int k = 0; k < DV; k++) acc[g * DV + k] = _mm512_fmadd_ps(p, v[k], acc[g * DV + k]);
        }
    }
    UNROLL for (int g = 0; g < G; g++) {
        __m512 s = _mm512_set1_ps(inv[h0 + g]);
        UNROLL for (int k = 0; k < DV; k++) _mm512_storeu_ps(out + ((h0 + g) * DV + k) * 16, _mm512_mul_ps(acc[g * DV + k], s));
    }
}

// Heads per block for D = 16 * DV: G * DV accumulators + DV rows of V + 1 broadcast within
// the 32 registers.
#define VALUE_HEADS_AT_ONCE(dv) ((dv) <= 4 ? 4 : 2)

#define WEIGHTED_VALUES_DV(DV)                                                                       \
    for (; h + VALUE_HEADS_AT_ONCE(DV) <= heads; h += VALUE_HEADS_AT_ONCE(DV))                          \
        weighted_values_block_avx512(scores, L, inv, values, out, h, VALUE_HEADS_AT_ONCE(DV), DV);      \
    switch (heads - h) {  /* the rest, fewer than a block, together */                               \
    case 3: weighted_values_block_avx512(scores, L, inv, values, out, h, 3, DV); break;               \
    case 2: weighted_values_block_avx512(scores, L, inv, values, out, h, 2, DV); break;               \
    case 1: weighted_values_block_avx512(scores, L, inv, values, out, h, 1, DV); break;               \
    }

__attribute__((target(AVX512)))
static void weighted_values_avx512(const float *scores, size_t L, const float *inv, const float *values,
                                   size_t D, float *out, size_t heads) {
    size_t h = 0;
    switch (D) {
    case 32: WEIGHTED_VALUES_DV(2) break;
    case 64: WEIGHTED_VALUES_DV(4) break;
    case 128: WEIGHTED_VALUES_DV(8) break;
    default: weighted_values(scores, L, inv, values, D, out, heads);
    }
}
#endif

// Heads of one query group, enough for any model's heads per KV head.
#define MAX_GROUP 64

// One body, compiled once per instruction-set level below so the compiler vectorises its loops
// with that level's registers (the package builds C without -march).
__attribute__((always_inline))
static inline void attend_group(int isa, const float *q, size_t heads, const float *keys, const float *values,
                                size_t L, size_t D, float scale, float *restrict scores, float *restrict out) {
    // scores (heads, L) = q K^T, at most RQAT_GEMV_MAX_ROWS heads per pass over the keys.
    for (size_t h0 = 0; h0 < heads; h0 += RQAT_GEMV_MAX_ROWS) {
        size_t n = heads - h0 < RQAT_GEMV_MAX_ROWS ? heads - h0 : RQAT_GEMV_MAX_ROWS;
        rqat_gemv_rows_isa(isa, q + h0 * D, n, D, keys, D, scores + h0 * L, L, 0, 0, L);
    }
    // out[h] = sum_j p[j] V[j] with p the unnormalised softmax, normalised once at the end.
    for (size_t g0 = 0; g0 < heads; g0 += MAX_GROUP) {
        size_t g1 = heads - g0 < MAX_GROUP ? heads : g0 + MAX_GROUP;
        float inv[MAX_GROUP];
        for (size_t h = g0; h < g1; h++) inv[h - g0] = 1.0f / exp_shifted_by_max(scores + h * L, L, scale);
#if defined(__x86_64__)
        if (isa == RQAT_GEMV_AVX512) {
            weighted_values_avx512(scores + g0 * L, L, inv, values, D, out + g0 * D, g1 - g0);
            continue;
        }
#endif
        weighted_values(scores + g0 * L, L, inv, values, D, out + g0 * D, g1 - g0);
    }
}

#if defined(__x86_64__)
__attribute__((target(AVX512)))
static void attend_group_avx512(const float *q, size_t heads, const float *keys, const float *values,
                                size_t L, size_t D, float scale, float *scores, float *out) {
    attend_group(RQAT_GEMV_AVX512, q, heads, keys, values, L, D, scale, scores, out);
}

__attribute__((target("avx2,fma")))
static void attend_group_avx2(const float *q, size_t heads, const float *keys, const float *values,
                              size_t L, size_t D, float scale, float *scores, float *out) {
    attend_group(RQAT_GEMV_AVX2, q, heads, keys, values, L, D, scale, scores, out);
}
#endif

void rqat_attend_group_isa(int isa, const float *q, size_t heads, const float *keys, const float *values,
                           size_t L, size_t D, float scale, float *scores, float *out) {
    if (heads == 0 || L == 0) return;
    int best = rqat_gemv_best_isa();
    if (isa > best) isa = best;
#if defined(__x86_64__)
    if (isa == RQAT_GEMV_AVX512) { attend_group_avx512(q, heads, keys, values, L, D, scale, scores, out); return; }
    if (isa == RQAT_GEMV_AVX2) { attend_group_avx2(q, heads, keys, values, L, D, scale, scores, out); return; }
#endif
    attend_group(RQAT_GEMV_PORTABLE, q, heads, keys, values, L, D, scale, scores, out);
}

void rqat_attend_group(const float *q, size_t heads, const float *keys, const float *values,
                       size_t L, size_t D, float scale, float *scores, float *out) {
    rqat_attend_group_isa(rqat_gemv_best_isa(), q, heads, keys, values, L, D, scale, scores, out);
}
