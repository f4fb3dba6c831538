#ifndef RQAT_COPENBLAS_SHIM_H
#define RQAT_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
