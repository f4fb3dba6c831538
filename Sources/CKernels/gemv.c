#include "CKernelsGemv.h"

// Decode multiplies 1..8 activation rows by every weight matrix of the model (538 MB of fp32
// weights per step for SmolLM2-135M), so this kernel must stream W at memory speed for every n.
// Per 64-byte line of weights it needs n FMAs; a Zen 4 core retires one 512-bit FMA per cycle,
// so at n = 8 one core tops out near 28 GB/s of weights (measured with W in L2), not far above
// the share of memory bandwidth it gets. Hence (measured on the project machine with a
// standalone microbenchmark, see docs/PERFORMANCE.md):
//   - register blocking: each loaded weight vector feeds the accumulators of all n activation
//     rows, and R weight rows run side by side (R = 4, or 3 for n = 7..8: n*R accumulators + R
//     weights + 1 activation within the 32 AVX-512 registers) so each activation vector loaded
//     from L1 serves R FMAs. Except for n = 1 (AVX-512): there the work per byte is so small
//     that reading one weight row after another, strictly in address order with a prefetch a
//     fixed 4 KiB ahead, streams 5-10% faster than 4 interleaved rows (about the rate of a plain
//     parallel sum over one buffer; 2-8 KiB were within noise of each other);
//   - software prefetch into L2 (not L1, where the activations live and where fewer misses can
//     be outstanding) of the block of R rows one block ahead, in address order. This is what
//     makes streaming fast for every n: with two threads about 1.5x (n = 1) to 1.9x (n = 8)
//     the rate of the same kernel without it, which leaves the stream to the hardware
//     prefetcher;
//   - the n x R accumulators are reduced eight at a time by a transposing add tree (about 3
//     instructions per sum instead of 8 for a separate horizontal sum of each);
//   - column tails run under a mask, so odd widths need no scalar loop.
// Machines with AVX2 but no AVX-512 get the same scheme with 8-float vectors and 16 registers
// (fewer rows at once); others a portable C loop. rqat_gemv_rows_isa picks a path explicitly
// (tests cover all three).

#include <stdint.h>

#include "simd_target.h"

#if defined(__x86_64__)

// Calls fn(args..., N) with N the constant equal to n (1..8, larger n as 8), so each row count
// gets its own fully unrolled instance of fn.
#define FOR_CONSTANT_ROWS(n, fn, ...)                          \
    switch (n) {                                               \
    case 1: fn(__VA_ARGS__, 1); break;                         \
    case 2: fn(__VA_ARGS__, 2); break;                         \
    case 3: fn(__VA_ARGS__, 3); break;                         \
    case 4: fn(__VA_ARGS__, 4); break;                         \
    case 5: fn(__VA_ARGS__, 5); break;                         \
    case 6: fn(__VA_ARGS__, 6); break;                         \
    case 7: fn(__VA_ARGS__, 7); break;                         \
    default: fn(__VA_ARGS__, 8); break;                        \
    }

// ---------------------------------------------------------------------------------------------
// AVX-512

// Eight vectors -> one 8-lane vector of their horizontal sums, in order.
__attribute__((target(AVX512), always_inline))
static inline __m256 reduce8_avx512(const __m512 *v) {
    __m256 h[8];
    UNROLL for (int j = 0; j < 8; j++)
        h[j] = _mm256_add_ps(_mm512_castps512_ps256(v[j]), _mm512_extractf32x8_ps(v[j], 1));
    __m256 a0 = _mm256_hadd_ps(h[0], h[1]), a1 = _mm256_hadd_ps(h[2], h[3]);
    __m256 a2 = _mm256_hadd_ps(h[4], h[5]), a3 = _mm256_hadd_ps(h[6], h[7]);
    __m256 b0 = _mm256_hadd_ps(a0, a1), b1 = _mm256_hadd_ps(a2, a3);
    // b0 = [sums of h0..h3 over the low 128-bit halves | over the high halves], b1 for h4..h7.
    return _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31));
}

// Weight rows r .. r+R-1 against activation rows 0 .. N-1 (N, R constants after inlining).
// prefetch: distance in floats of the prefetches (0: none).
__attribute__((target(AVX512), always_inline))
static inline void gemv_block_avx512(const float *x, size_t ldx, const float *w, size_t cols,
                                     float *y, size_t ldy, int accumulate, size_t r,
                                     const int N, const int R, size_t prefetch) {
    __m512 acc[RQAT_GEMV_MAX_ROWS * 4];
    UNROLL for (int j = 0; j < N * R; j++) acc[j] = _mm512_setzero_ps();
    const float *wr = w + r * cols;
    size_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        // The R rows of a block are contiguous: while this block is read R lines per step,
        // fetch the block `prefetch` floats ahead in address order, R lines per step too.
        // (Past the last block this touches addresses beyond W: prefetches never fault, and the
        // address is formed as an integer.)
        if (prefetch)
            UNROLL for (int k = 0; k < R; k++)
                _mm_prefetch((const char *)((uintptr_t)wr + 4 * (prefetch + c * R + k * 16)), _MM_HINT_T1);
        __m512 wv[4];
        UNROLL for (int k = 0; k < R; k++) wv[k] = _mm512_loadu_ps(wr + k * cols + c);
        UNROLL for (int i = 0; i < N; i++) {
            __m512 xv = _mm512_loadu_ps(x + i * ldx + c);
            UNROLL for (int k = 0; k < R; k++) acc[i * R + k] = _mm512_fmadd_ps(wv[k], xv, acc[i * R + k]);
        }
    }
    if (c < cols) {
        __mmask16 m = (__mmask16)((1u << (cols - c)) - 1);
        __m512 wv[4];
        UNROLL for (int k = 0; k < R; k++) wv[k] = _mm512_maskz_loadu_ps(m, wr + k * cols + c);
        UNROLL for (int i = 0; i < N; i++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + c);
            UNROLL for (int k = 0; k < R; k++) acc[i * R + k] = _mm512_fmadd_ps(wv[k], xv, acc[i * R + k]);
        }
    }
    // Reduce in unrolled loops: a run-time index into acc would force it into memory.
    float s[RQAT_GEMV_MAX_ROWS * 4];
    int j = 0;
    UNROLL for (; j + 8 <= N * R; j += 8) _mm256_storeu_ps(s + j, reduce8_avx512(acc + j));
    UNROLL for (; j < N * R; j++) s[j] = _mm512_reduce_add_ps(acc[j]);
    UNROLL for (int i = 0; i < N; i++)
        UNROLL for (int k = 0; k < R; k++) {
            float *o = y + i * ldy + r + k;
            if (accumulate) *o += s[i * R + k]; else *o = s[i * R + k];
        }
}

// Weight rows side by side: N*R accumulators + R weight vectors + 1 activation vector within
// the 32 registers (N = 8, R = 3: 28).
#define AVX512_ROWS_AT_ONCE(n) ((n) <= 6 ? 4 : 3)

// For one activation row: how far ahead (floats) of the weights being read to prefetch.
#define SINGLE_ROW_PREFETCH_FLOATS 1024

__attribute__((target(AVX512), always_inline))
static inline void gemv_rows_n_avx512(const float *x, size_t ldx, const float *w, size_t cols,
                                      float *y, size_t ldy, int accumulate, size_t r0, size_t r1,
                                      const int N) {
    if (N == 1) {
        // One FMA per weight vector is far below what a core can issue, so one activation row
        // needs no blocking: weight rows are read one after another, strictly in address order,
        // and prefetched 4 KiB ahead of the read position (into the next row at a row's end).
        for (size_t r = r0; r < r1; r++)
            gemv_block_avx512(x, ldx, w, cols, y, ldy, accumulate, r, 1, 1, SINGLE_ROW_PREFETCH_FLOATS);
        return;
    }
    const int R = AVX512_ROWS_AT_ONCE(N);
    // Prefetch one block (R rows) ahead.
    size_t prefetch = (size_t)R * cols;
    size_t r = r0;
    for (; r + R <= r1; r += R) gemv_block_avx512(x, ldx, w, cols, y, ldy, accumulate, r, N, R, prefetch);
    for (; r < r1; r++) gemv_block_avx512(x, ldx, w, cols, y, ldy, accumulate, r, N, 1, 0);
}

__attribute__((target(AVX512)))
static void gemv_rows_avx512(const float *x, size_t n, size_t ldx, const float *w, size_t cols,
                             float *y, size_t ldy, int accumulate, size_t r0, size_t r1) {
    FOR_CONSTANT_ROWS(n, gemv_rows_n_avx512, x, ldx, w, cols, y, ldy, accumulate, r0, r1);
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA (machines without AVX-512): same scheme, 8-float vectors, 16 registers.

__attribute__((target("avx2,fma"), always_inline))
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"), always_inline))
static inline void gemv_block_avx2(const float *x, size_t ldx, const float *w, size_t cols,
                                   float *y, size_t ldy, int accumulate, size_t r,
                                   const int N, const int R, size_t prefetch) {
    __m256 acc[RQAT_GEMV_MAX_ROWS * 4];
    UNROLL for (int j = 0; j < N * R; j++) acc[j] = _mm256_setzero_ps();
    const float *wr = w + r * cols;
    size_t vec = cols - cols % 8;
    for (size_t c = 0; c < vec; c += 8) {
        if (prefetch)
            UNROLL for (int k = 0; k < R; k++)
                _mm_prefetch((const char *)((uintptr_t)wr + 4 * (prefetch + c * R + k * 8)), _MM_HINT_T1);
        __m256 wv[4];
        UNROLL for (int k = 0; k < R; k++) wv[k] = _mm256_loadu_ps(wr + k * cols + c);
        UNROLL for (int i = 0; i < N; i++) {
            __m256 xv = _mm256_loadu_ps(x + i * ldx + c);
            UNROLL for (int k = 0; k < R; k++) acc[i * R + k] = _mm256_fmadd_ps(wv[k], xv, acc[i * R + k]);
        }
    }
    float s[RQAT_GEMV_MAX_ROWS * 4];
    UNROLL for (int j = 0; j < N * R; j++) s[j] = hsum256(acc[j]);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < R; k++) {
            const float *wk = wr + k * cols;
            float t = s[i * R + k];
            for (size_t c = vec; c < cols; c++) t += wk[c] * x[i * ldx + c];
            float *o = y + i * ldy + r + k;
            if (accumulate) *o += t; else *o = t;
        }
}

// N*R accumulators + R weights + 1 activation within 16 registers.
#define AVX2_ROWS_AT_ONCE(n) ((n) == 1 ? 4 : (n) <= 4 ? 2 : 1)

__attribute__((target("avx2,fma"), always_inline))
static inline void gemv_rows_n_avx2(const float *x, size_t ldx, const float *w, size_t cols,
                                    float *y, size_t ldy, int accumulate, size_t r0, size_t r1,
                                    const int N) {
    const int R = AVX2_ROWS_AT_ONCE(N);
    size_t prefetch = (size_t)R * cols;
    size_t r = r0;
    for (; r + R <= r1; r += R) gemv_block_avx2(x, ldx, w, cols, y, ldy, accumulate, r, N, R, prefetch);
    for (; r < r1; r++) gemv_block_avx2(x, ldx, w, cols, y, ldy, accumulate, r, N, 1, 0);
}

__attribute__((target("avx2,fma")))
static void gemv_rows_avx2(const float *x, size_t n, size_t ldx, const float *w, size_t cols,
                           float *y, size_t ldy, int accumulate, size_t r0, size_t r1) {
    FOR_CONSTANT_ROWS(n, gemv_rows_n_avx2, x, ldx, w, cols, y, ldy, accumulate, r0, r1);
}
#endif

// ---------------------------------------------------------------------------------------------
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

int rqat_gemv_best_isa(void) {
#if defined(__x86_64__)
    static int level = -1;
    if (level < 0)
        level = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                        && __builtin_cpu_supports("avx512dq") ? RQAT_GEMV_AVX512
              : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? RQAT_GEMV_AVX2
              : RQAT_GEMV_PORTABLE;
    return level;
#else
    return RQAT_GEMV_PORTABLE;
#endif
}

void rqat_gemv_rows_isa(int isa, const float *x, size_t n, size_t ldx, const float *w, size_t cols,
                        float *y, size_t ldy, int accumulate, size_t row_begin, size_t row_end) {
    if (n == 0 || row_begin >= row_end) return;
    int best = rqat_gemv_best_isa();
    if (isa > best) isa = best;
#if defined(__x86_64__)
    if (isa == RQAT_GEMV_AVX512) { gemv_rows_avx512(x, n, ldx, w, cols, y, ldy, accumulate, row_begin, row_end); return; }
    if (isa == RQAT_GEMV_AVX2) { gemv_rows_avx2(x, n, ldx, w, cols, y, ldy, accumulate, row_begin, row_end); return; }
#endif
    gemv_rows_generic(x, n, ldx, w, cols, y, ldy, accumulate, row_begin, row_end);
}

void rqat_gemv_rows(const float *x, size_t n, size_t ldx, const float *w, size_t cols,
                    float *y, size_t ldy, int accumulate, size_t row_begin, size_t row_end) {
    rqat_gemv_rows_isa(rqat_gemv_best_isa(), x, n, ldx, w, cols, y, ldy, accumulate, row_begin, row_end);
}
