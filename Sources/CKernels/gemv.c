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

// AVX2 + FMA: each weight row is loaded 8 floats at a time and multiplied into the
// accumulators of all n activation rows; R weight rows run side by side so there are enough
// independent FMA chains to hide the FMA latency. The body is inlined with constant n and R
// (see the switch below) so the accumulators live in registers, not on the stack.
__attribute__((target("avx2,fma"), always_inline))
static inline void gemv_block_avx2(const float *x, const size_t n, size_t ldx, const float *w, size_t cols,
                                   float *y, size_t ldy, int accumulate, size_t r, const size_t R) {
    size_t vec = cols & ~(size_t)7;
    __m256 acc[RQAT_GEMV_MAX_ROWS][4];
    UNROLL for (size_t i = 0; i < n; i++)
        UNROLL for (size_t k = 0; k < R; k++) acc[i][k] = _mm256_setzero_ps();
    for (size_t c = 0; c < vec; c += 8) {
        // Ask for weights ~2 KB ahead: the hardware prefetcher alone leaves the loads waiting
        // when each weight row is short (576 floats) and the FMA work per row is large (n = 8).
        if (n > 2)
            UNROLL for (size_t k = 0; k < R; k++) _mm_prefetch((const char *)(w + (r + k) * cols + c + 512), _MM_HINT_T0);
        __m256 wv[4];
        UNROLL for (size_t k = 0; k < R; k++) wv[k] = _mm256_loadu_ps(w + (r + k) * cols + c);
        UNROLL for (size_t i = 0; i < n; i++) {
            __m256 xv = _mm256_loadu_ps(x + i * ldx + c);
            UNROLL for (size_t k = 0; k < R; k++) acc[i][k] = _mm256_fmadd_ps(wv[k], xv, acc[i][k]);
        }
    }
    // Reduce in a fully unrolled loop first: indexing acc with a run-time index would force
    // the whole accumulator array into memory, hot loop included.
    float sums[RQAT_GEMV_MAX_ROWS][4];
    UNROLL for (size_t i = 0; i < n; i++)
        UNROLL for (size_t k = 0; k < R; k++) sums[i][k] = hsum256(acc[i][k]);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < R; k++) {
            const float *wr = w + (r + k) * cols;
            float s = sums[i][k];
            for (size_t c = vec; c < cols; c++) s += wr[c] * x[i * ldx + c];
            if (accumulate) y[i * ldy + r + k] += s; else y[i * ldy + r + k] = s;
        }
    }
}

__attribute__((target("avx2,fma"), always_inline))
static inline void gemv_rows_avx2_n(const float *x, const size_t n, size_t ldx, const float *w, size_t cols,
                                    float *y, size_t ldy, int accumulate, size_t r0, size_t r1) {
    size_t r = r0;
    // One activation row: four weight rows at a time, four independent streams in flight.
    if (n == 1)
        for (; r + 4 <= r1; r += 4) gemv_block_avx2(x, n, ldx, w, cols, y, ldy, accumulate, r, 4);
    // Up to 4 activation rows: two weight rows at a time (at most 8 accumulators).
    if (n <= 4)
        for (; r + 2 <= r1; r += 2) gemv_block_avx2(x, n, ldx, w, cols, y, ldy, accumulate, r, 2);
    for (; r < r1; r++) gemv_block_avx2(x, n, ldx, w, cols, y, ldy, accumulate, r, 1);
}

__attribute__((target("avx2,fma")))
static void gemv_rows_avx2(const float *x, size_t n, size_t ldx, const float *w, size_t cols,
                           float *y, size_t ldy, int accumulate, size_t r0, size_t r1) {
    switch (n) {
    case 1: gemv_rows_avx2_n(x, 1, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 2: gemv_rows_avx2_n(x, 2, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 3: gemv_rows_avx2_n(x, 3, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 4: gemv_rows_avx2_n(x, 4, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 5: gemv_rows_avx2_n(x, 5, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 6: gemv_rows_avx2_n(x, 6, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 7: gemv_rows_avx2_n(x, 7, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    default: gemv_rows_avx2_n(x, 8, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    }
}

// AVX-512: 32 vector registers leave room for two weight rows side by side even with eight
// activation rows (16 accumulators), which AVX2's 16 registers cannot hold.
__attribute__((target("avx512f"), always_inline))
static inline void gemv_block_avx512(const float *x, const size_t n, size_t ldx, const float *w, size_t cols,
                                     float *y, size_t ldy, int accumulate, size_t r, const size_t R) {
    size_t vec = cols & ~(size_t)15;
    __m512 acc[RQAT_GEMV_MAX_ROWS][4];
    UNROLL for (size_t i = 0; i < n; i++)
        UNROLL for (size_t k = 0; k < R; k++) acc[i][k] = _mm512_setzero_ps();
    for (size_t c = 0; c < vec; c += 16) {
        if (n > 2)
            UNROLL for (size_t k = 0; k < R; k++) _mm_prefetch((const char *)(w + (r + k) * cols + c + 512), _MM_HINT_T0);
        __m512 wv[4];
        UNROLL for (size_t k = 0; k < R; k++) wv[k] = _mm512_loadu_ps(w + (r + k) * cols + c);
        UNROLL for (size_t i = 0; i < n; i++) {
            __m512 xv = _mm512_loadu_ps(x + i * ldx + c);
            UNROLL for (size_t k = 0; k < R; k++) acc[i][k] = _mm512_fmadd_ps(wv[k], xv, acc[i][k]);
        }
    }
    // Reduce in a fully unrolled loop first: indexing acc with a run-time index would force
    // the whole accumulator array into memory, hot loop included.
    float sums[RQAT_GEMV_MAX_ROWS][4];
    UNROLL for (size_t i = 0; i < n; i++)
        UNROLL for (size_t k = 0; k < R; k++) sums[i][k] = _mm512_reduce_add_ps(acc[i][k]);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < R; k++) {
            const float *wr = w + (r + k) * cols;
            float s = sums[i][k];
            for (size_t c = vec; c < cols; c++) s += wr[c] * x[i * ldx + c];
            if (accumulate) y[i * ldy + r + k] += s; else y[i * ldy + r + k] = s;
        }
    }
}

__attribute__((target("avx512f"), always_inline))
static inline void gemv_rows_avx512_n(const float *x, const size_t n, size_t ldx, const float *w, size_t cols,
                                      float *y, size_t ldy, int accumulate, size_t r0, size_t r1) {
    size_t r = r0;
    // As many weight rows side by side as the registers allow (n*R accumulators + R weights
    // + 1 activation <= 32): more independent streams keep more memory requests in flight.
    if (n <= 5)
        for (; r + 4 <= r1; r += 4) gemv_block_avx512(x, n, ldx, w, cols, y, ldy, accumulate, r, 4);
    else
        for (; r + 3 <= r1; r += 3) gemv_block_avx512(x, n, ldx, w, cols, y, ldy, accumulate, r, 3);
    for (; r + 2 <= r1; r += 2) gemv_block_avx512(x, n, ldx, w, cols, y, ldy, accumulate, r, 2);
    for (; r < r1; r++) gemv_block_avx512(x, n, ldx, w, cols, y, ldy, accumulate, r, 1);
}

__attribute__((target("avx512f")))
static void gemv_rows_avx512(const float *x, size_t n, size_t ldx, const float *w, size_t cols,
                             float *y, size_t ldy, int accumulate, size_t r0, size_t r1) {
    switch (n) {
    case 1: gemv_rows_avx512_n(x, 1, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 2: gemv_rows_avx512_n(x, 2, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 3: gemv_rows_avx512_n(x, 3, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 4: gemv_rows_avx512_n(x, 4, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 5: gemv_rows_avx512_n(x, 5, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 6: gemv_rows_avx512_n(x, 6, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    case 7: gemv_rows_avx512_n(x, 7, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
    default: gemv_rows_avx512_n(x, 8, ldx, w, cols, y, ldy, accumulate, r0, r1); break;
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
