#include "CKernelsGemv.h"

#if defined(__x86_64__)
#include <immintrin.h>

// The loops over activation rows and weight rows have constant trip counts after inlining;
// unrolling them fully lets the compiler keep the accumulator arrays in registers.
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 32")
#endif

__attribute__((target("avx2,fma")))
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// One kernel body for both instruction sets. Each weight row is loaded WIDTH floats at a time
// and multiplied into the accumulators of all n activation rows; R weight rows run side by
// side so more independent loads and FMA chains are in flight. Bodies are inlined with
// constant n and R (the switch at the end) so the accumulators live in registers.
//   ROWS_AT_ONCE(n): the largest R with n*R accumulators + R weights + 1 activation fitting the
//   register file (16 for AVX2, 32 for AVX-512).
#define DEFINE_GEMV_KERNEL(NAME, TARGET, VEC, WIDTH, LOAD, ZERO, FMA, REDUCE, ROWS_AT_ONCE)          \
__attribute__((target(TARGET), always_inline))                                                        \
static inline void NAME##_block(const float *x, const size_t n, size_t ldx, const float *w,           \
                                size_t cols, float *y, size_t ldy, int accumulate, size_t r,          \
                                const size_t R) {                                                     \
    size_t vec = cols - cols % WIDTH;                                                                 \
    VEC acc[RQAT_GEMV_MAX_ROWS][4];                                                                   \
    UNROLL for (size_t i = 0; i < n; i++)                                                             \
        UNROLL for (size_t k = 0; k < R; k++) acc[i][k] = ZERO();                                     \
    for (size_t c = 0; c < vec; c += WIDTH) {                                                         \
        /* With much FMA work per weight byte (n > 2) the hardware prefetcher falls behind. */        \
        if (n > 2)                                                                                    \
            UNROLL for (size_t k = 0; k < R; k++)                                                     \
                _mm_prefetch((const char *)(w + (r + k) * cols + c + 512), _MM_HINT_T0);              \
        VEC wv[4];                                                                                    \
        UNROLL for (size_t k = 0; k < R; k++) wv[k] = LOAD(w + (r + k) * cols + c);                   \
        UNROLL for (size_t i = 0; i < n; i++) {                                                       \
            VEC xv = LOAD(x + i * ldx + c);                                                           \
            UNROLL for (size_t k = 0; k < R; k++) acc[i][k] = FMA(wv[k], xv, acc[i][k]);              \
        }                                                                                             \
    }                                                                                                 \
    /* Reduce in unrolled loops: a run-time index into acc would force it into memory. */           \
    float sums[RQAT_GEMV_MAX_ROWS][4];                                                                \
    UNROLL for (size_t i = 0; i < n; i++)                                                             \
        UNROLL for (size_t k = 0; k < R; k++) sums[i][k] = REDUCE(acc[i][k]);                         \
    for (size_t i = 0; i < n; i++)                                                                    \
        for (size_t k = 0; k < R; k++) {                                                              \
            const float *wr = w + (r + k) * cols;                                                     \
            float s = sums[i][k];                                                                     \
            for (size_t c = vec; c < cols; c++) s += wr[c] * x[i * ldx + c];                          \
            if (accumulate) y[i * ldy + r + k] += s; else y[i * ldy + r + k] = s;                     \
        }                                                                                             \
}                                                                                                     \
                                                                                                      \
__attribute__((target(TARGET), always_inline))                                                        \
static inline void NAME##_rows_n(const float *x, const size_t n, size_t ldx, const float *w,          \
                                 size_t cols, float *y, size_t ldy, int accumulate,                   \
                                 size_t r0, size_t r1) {                                              \
    const size_t R = ROWS_AT_ONCE(n);                                                                 \
    size_t r = r0;                                                                                    \
    for (; r + R <= r1; r += R) NAME##_block(x, n, ldx, w, cols, y, ldy, accumulate, r, R);           \
    for (; r < r1; r++) NAME##_block(x, n, ldx, w, cols, y, ldy, accumulate, r, 1);                   \
}                                                                                                     \
                                                                                                      \
__attribute__((target(TARGET)))                                                                       \
static void NAME(const float *x, size_t n, size_t ldx, const float *w, size_t cols,                  \
                 float *y, size_t ldy, int accumulate, size_t r0, size_t r1) {                        \
    switch (n) {                                                                                      \
    case 1: NAME##_rows_n(x, 1, ldx, w, cols, y, ldy, accumulate, r0, r1); break;                     \
    case 2: NAME##_rows_n(x, 2, ldx, w, cols, y, ldy, accumulate, r0, r1); break;                     \
    case 3: NAME##_rows_n(x, 3, ldx, w, cols, y, ldy, accumulate, r0, r1); break;                     \
    case 4: NAME##_rows_n(x, 4, ldx, w, cols, y, ldy, accumulate, r0, r1); break;                     \
    case 5: NAME##_rows_n(x, 5, ldx, w, cols, y, ldy, accumulate, r0, r1); break;                     \
    case 6: NAME##_rows_n(x, 6, ldx, w, cols, y, ldy, accumulate, r0, r1); break;                     \
    case 7: NAME##_rows_n(x, 7, ldx, w, cols, y, ldy, accumulate, r0, r1); break;                     \
    default: NAME##_rows_n(x, 8, ldx, w, cols, y, ldy, accumulate, r0, r1); break;                    \
    }                                                                                                 \
}

#define AVX2_ROWS_AT_ONCE(n) ((n) == 1 ? 4 : (n) <= 4 ? 2 : 1)
#define AVX512_ROWS_AT_ONCE(n) ((n) <= 5 ? 4 : 3)

DEFINE_GEMV_KERNEL(gemv_rows_avx2, "avx2,fma", __m256, 8, _mm256_loadu_ps, _mm256_setzero_ps,
                   _mm256_fmadd_ps, hsum256, AVX2_ROWS_AT_ONCE)
DEFINE_GEMV_KERNEL(gemv_rows_avx512, "avx512f", __m512, 16, _mm512_loadu_ps, _mm512_setzero_ps,
                   _mm512_fmadd_ps, _mm512_reduce_add_ps, AVX512_ROWS_AT_ONCE)
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
    static int level = -1;   // 2: AVX-512, 1: AVX2 + FMA, 0: portable C
    if (level < 0)
        level = __builtin_cpu_supports("avx512f") ? 2
              : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
    // Measured on Zen 4: AVX-512 streams fastest for 1-4 activation rows, AVX2 for 5-8
    // (its narrower FMAs keep more loads in flight per cycle when the FMA work per byte is high).
    if (level == 2 && n <= 4) { gemv_rows_avx512(x, n, ldx, w, cols, y, ldy, accumulate, row_begin, row_end); return; }
    if (level >= 1) { gemv_rows_avx2(x, n, ldx, w, cols, y, ldy, accumulate, row_begin, row_end); return; }
#endif
    gemv_rows_generic(x, n, ldx, w, cols, y, ldy, accumulate, row_begin, row_end);
}
