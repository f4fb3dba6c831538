#include "CKernelsGemv.h"

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2,fma")))
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// AVX2 + FMA: each weight row is loaded 8 floats at a time and multiplied into the
// accumulators of all n activation rows. With n <= 2 two weight rows run side by side so
// enough independent FMA chains hide the FMA latency.
__attribute__((target("avx2,fma")))
static void gemv_rows_avx2(const float *x, size_t n, size_t ldx, const float *w, size_t cols,
                           float *y, size_t ldy, int accumulate, size_t r0, size_t r1) {
    size_t vec = cols & ~(size_t)7;
    size_t r = r0;
    if (n <= 2) {
        for (; r + 2 <= r1; r += 2) {
            const float *wa = w + r * cols, *wb = wa + cols;
            __m256 acc[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {_mm256_setzero_ps(), _mm256_setzero_ps()}};
            for (size_t c = 0; c < vec; c += 8) {
                __m256 va = _mm256_loadu_ps(wa + c), vb = _mm256_loadu_ps(wb + c);
                for (size_t i = 0; i < n; i++) {
                    __m256 xv = _mm256_loadu_ps(x + i * ldx + c);
                    acc[i][0] = _mm256_fmadd_ps(va, xv, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(vb, xv, acc[i][1]);
                }
            }
            for (size_t i = 0; i < n; i++) {
                float sa = hsum256(acc[i][0]), sb = hsum256(acc[i][1]);
                for (size_t c = vec; c < cols; c++) { sa += wa[c] * x[i * ldx + c]; sb += wb[c] * x[i * ldx + c]; }
                float *yi = y + i * ldy;
                if (accumulate) { yi[r] += sa; yi[r + 1] += sb; } else { yi[r] = sa; yi[r + 1] = sb; }
            }
        }
    }
    for (; r < r1; r++) {
        const float *wr = w + r * cols;
        __m256 acc[RQAT_GEMV_MAX_ROWS];
        for (size_t i = 0; i < n; i++) acc[i] = _mm256_setzero_ps();
        for (size_t c = 0; c < vec; c += 8) {
            __m256 wv = _mm256_loadu_ps(wr + c);
            for (size_t i = 0; i < n; i++)
                acc[i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i * ldx + c), acc[i]);
        }
        for (size_t i = 0; i < n; i++) {
            float s = hsum256(acc[i]);
            for (size_t c = vec; c < cols; c++) s += wr[c] * x[i * ldx + c];
            if (accumulate) y[i * ldy + r] += s; else y[i * ldy + r] = s;
        }
    }
}
#endif

// Portable version for machines without AVX2.
static void gemv_rows_generic(const float *x, size_t n, size_t ldx, const float *w, size_t cols,
                              float *y, size_t ldy, int accumulate, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
        const float *wr = w + r * cols;
        for (size_t i = 0; i < n; i++) {
            const float *xi = x + i * ldx;
            float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            size_t c = 0;
            for (; c + 8 <= cols; c += 8)
                for (int j = 0; j < 8; j++) acc[j] += wr[c + j] * xi[c + j];
            float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (; c < cols; c++) s += wr[c] * xi[c];
            if (accumulate) y[i * ldy + r] += s; else y[i * ldy + r] = s;
        }
    }
}

void rqat_gemv_rows(const float *x, size_t n, size_t ldx, const float *w, size_t cols,
                    float *y, size_t ldy, int accumulate, size_t row_begin, size_t row_end) {
#if defined(__x86_64__)
    static int has_avx2 = -1;
    if (has_avx2 < 0) has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (has_avx2) { gemv_rows_avx2(x, n, ldx, w, cols, y, ldy, accumulate, row_begin, row_end); return; }
#endif
    gemv_rows_generic(x, n, ldx, w, cols, y, ldy, accumulate, row_begin, row_end);
}
