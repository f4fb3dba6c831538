#ifndef RQAT_CKERNELS_GEMV_H
#define RQAT_CKERNELS_GEMV_H
#include <stddef.h>

// Y = X W^T (or Y += X W^T when accumulate) for a few rows of X, restricted to the weight rows
// [row_begin, row_end) so threads can split the work.
//   X: (n, cols) with row stride ldx;  W: (rows, cols) row-major;  Y: (n, rows) with row stride ldy.
// Decoding multiplies 1..8 activation rows by large weight matrices; this kernel streams each
// weight row from memory once and uses it for every activation row while it is in registers,
// so the batch costs about what one row costs. n must be <= RQAT_GEMV_MAX_ROWS.
#define RQAT_GEMV_MAX_ROWS 8
void rqat_gemv_rows(const float *x, size_t n, size_t ldx,
                    const float *w, size_t cols,
                    float *y, size_t ldy, int accumulate,
                    size_t row_begin, size_t row_end);

// Instruction-set levels of the kernel; rqat_gemv_rows uses the best this CPU supports.
#define RQAT_GEMV_PORTABLE 0
#define RQAT_GEMV_AVX2 1
#define RQAT_GEMV_AVX512 2
int rqat_gemv_best_isa(void);
// rqat_gemv_rows on a given level (capped at the best supported one), so tests and
// benchmarks can check every code path.
void rqat_gemv_rows_isa(int isa, const float *x, size_t n, size_t ldx,
                        const float *w, size_t cols,
                        float *y, size_t ldy, int accumulate,
                        size_t row_begin, size_t row_end);

#endif
