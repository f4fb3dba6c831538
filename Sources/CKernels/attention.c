#include "CKernelsAttention.h"
#include "CKernelsGemv.h"
#include "fast_exp.h"

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
    for (size_t h = 0; h < heads; h++) {
        float *restrict p = scores + h * L;
        float inv = 1.0f / exp_shifted_by_max(p, L, scale);
        // out[h] = sum_j p[j] V[j], normalised once at the end.
        float *restrict o = out + h * D;
        for (size_t d = 0; d < D; d++) o[d] = 0.0f;
        for (size_t j = 0; j < L; j++) {
            const float *restrict v = values + j * D;
            float pj = p[j];
            for (size_t d = 0; d < D; d++) o[d] += pj * v[d];
        }
        for (size_t d = 0; d < D; d++) o[d] *= inv;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
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
