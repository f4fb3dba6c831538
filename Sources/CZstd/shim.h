#ifndef RQAT_CZSTD_SHIM_H
#define RQAT_CZSTD_SHIM_H
#include <zstd.h>
#endif
