#include "CKernelsKronecker.h"
#include "simd_target.h"
#include <stdlib.h>
#include <string.h>

// Portable paths: plain loops over contiguous columns, which the compiler vectorises at the
// baseline ISA.
static void mix_portable(const float *m, size_t ss, size_t os, const float *in, float *out, size_t a, size_t b, size_t rows) {
    size_t n = a * b;
    for (size_t r = 0; r < rows; r++) {
        const float *x = in + r * n;
        float *y = out + r * n;
        memset(y, 0, n * sizeof(float));
        for (size_t o = 0; o < a; o++) {
            float *yo = y + o * b;
            for (size_t s = 0; s < a; s++) {
                float c = m[s * ss + o * os];
                const float *xs = x + s * b;
                for (size_t l = 0; l < b; l++) yo[l] += c * xs[l];
            }
        }
    }
}

static void outer_portable(const float *z, const float *dy, float *acc, size_t a, size_t b, size_t rows) {
    size_t n = a * b;
    for (size_t r = 0; r < rows; r++) {
        const float *zr = z + r * n, *dr = dy + r * n;
        for (size_t i = 0; i < a; i++) {
            for (size_t k = 0; k < a; k++) {
                float s = 0.0f;
                for (size_t l = 0; l < b; l++) s += zr[i * b + l] * dr[k * b + l];
                acc[i * a + k] += s;
            }
        }
    }
}

#if defined(__x86_64__)
// AVX2: each output row's 8-column strips stay in a register while the a inputs stream through
// (the rows of a factor product are a few dozen floats, so everything sits in L1).
__attribute__((target("avx2,fma")))
static void mix_avx2(const float *m, size_t ss, size_t os, const float *in, float *out, size_t a, size_t b, size_t rows) {
    size_t n = a * b, b8 = b & ~(size_t)7;
    for (size_t r = 0; r < rows; r++) {
        const float *x = in + r * n;
        float *y = out + r * n;
        for (size_t o = 0; o < a; o++) {
            float *yo = y + o * b;
            size_t l = 0;
            for (; l + 16 <= b8; l += 16) {
                __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
                for (size_t s = 0; s < a; s++) {
                    __m256 c = _mm256_broadcast_ss(m + s * ss + o * os);
                    s0 = _mm256_fmadd_ps(c, _mm256_loadu_ps(x + s * b + l), s0);
                    s1 = _mm256_fmadd_ps(c, _mm256_loadu_ps(x + s * b + l + 8), s1);
                }
                _mm256_storeu_ps(yo + l, s0);
                _mm256_storeu_ps(yo + l + 8, s1);
            }
            for (; l < b8; l += 8) {
                __m256 s0 = _mm256_setzero_ps();
                for (size_t s = 0; s < a; s++)
                    s0 = _mm256_fmadd_ps(_mm256_broadcast_ss(m + s * ss + o * os), _mm256_loadu_ps(x + s * b + l), s0);
                _mm256_storeu_ps(yo + l, s0);
            }
            for (; l < b; l++) {
                float s0 = 0.0f;
                for (size_t s = 0; s < a; s++) s0 += m[s * ss + o * os] * x[s * b + l];
                yo[l] = s0;
            }
        }
    }
}

__attribute__((target("avx2,fma")))
static void outer_avx2(const float *z, const float *dy, float *acc, size_t a, size_t b, size_t rows) {
    size_t n = a * b, b8 = b & ~(size_t)7;
    // One 8-lane partial sum per (i, k) over every row's 8-column strips, lanes added at the end;
    // row by row, so each row's two (a, b) matrices are read from L1 a times, not from memory.
    float *lanes = b8 == 0 ? NULL : calloc(a * a * 8, sizeof(float));
    if (!lanes) { outer_portable(z, dy, acc, a, b, rows); return; }
    for (size_t r = 0; r < rows; r++) {
        const float *zr = z + r * n, *dr = dy + r * n;
        for (size_t i = 0; i < a; i++) {
            const float *zi = zr + i * b;
            for (size_t k = 0; k < a; k++) {
                const float *dk = dr + k * b;
                __m256 s0 = _mm256_loadu_ps(lanes + (i * a + k) * 8);
                for (size_t l = 0; l < b8; l += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(zi + l), _mm256_loadu_ps(dk + l), s0);
                _mm256_storeu_ps(lanes + (i * a + k) * 8, s0);
                if (b8 < b) {
                    float tail = 0.0f;
                    for (size_t l = b8; l < b; l++) tail += zi[l] * dk[l];
                    acc[i * a + k] += tail;
                }
            }
        }
    }
    for (size_t ik = 0; ik < a * a; ik++) {
        float s = 0.0f;
        for (int t = 0; t < 8; t++) s += lanes[ik * 8 + t];
        acc[ik] += s;
    }
    free(lanes);
}

static int has_avx2(void) {
    static int known = -1;
    if (known < 0) known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return known;
}
#endif

void rqat_kron_mix(const float *m, size_t sum_stride, size_t out_stride, const float *in, float *out,
                   size_t a, size_t b, size_t rows) {
#if defined(__x86_64__)
    if (has_avx2()) { mix_avx2(m, sum_stride, out_stride, in, out, a, b, rows); return; }
#endif
    mix_portable(m, sum_stride, out_stride, in, out, a, b, rows);
}

void rqat_kron_outer_accumulate(const float *z, const float *dy, float *acc, size_t a, size_t b, size_t rows) {
#if defined(__x86_64__)
    if (has_avx2()) { outer_avx2(z, dy, acc, a, b, rows); return; }
#endif
    outer_portable(z, dy, acc, a, b, rows);
}
