#ifndef RQAT_CKERNELS_LAPACK_H
#define RQAT_CKERNELS_LAPACK_H

// The few LAPACK routines GPTQ needs, exported by OpenBLAS (libopenblas) with the Fortran
// calling convention: column-major, every argument by pointer, trailing underscore.
// Declared here because the system OpenBLAS package may ship no lapack.h / lapacke.h.
// The executable links OpenBLAS through the COpenBLAS module.

// Cholesky factorisation of a symmetric positive definite matrix in place:
// uplo 'L': A = L L^T (lower triangle written), 'U': A = U^T U. info > 0: not positive definite.
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);

// Inverse of a symmetric positive definite matrix from its Cholesky factor (same uplo),
// written to the same triangle.
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);

#endif
