#include "CKernelsShuffle.h"

// Each element is read once, front to back, and its bytes go to `size` sequential output
// streams: both sides stream through memory. The switch gives the compiler a constant `size`
// for the common 2- and 4-byte elements so it can unroll and vectorise the inner loop.

static inline void shuffle_sized(const uint8_t *restrict src, uint8_t *restrict dst,
                                 size_t count, size_t size) {
    for (size_t i = 0; i < count; i++)
        for (size_t b = 0; b < size; b++) dst[b * count + i] = src[i * size + b];
}

static inline void unshuffle_sized(const uint8_t *restrict src, uint8_t *restrict dst,
                                   size_t count, size_t size) {
    for (size_t i = 0; i < count; i++)
        for (size_t b = 0; b < size; b++) dst[i * size + b] = src[b * count + i];
}

void rqat_byte_shuffle(const uint8_t *restrict src, uint8_t *restrict dst, size_t count, size_t size) {
    switch (size) {
    case 2: shuffle_sized(src, dst, count, 2); break;
    case 4: shuffle_sized(src, dst, count, 4); break;
    default: shuffle_sized(src, dst, count, size); break;
    }
}

void rqat_byte_unshuffle(const uint8_t *restrict src, uint8_t *restrict dst, size_t count, size_t size) {
    switch (size) {
    case 2: unshuffle_sized(src, dst, count, 2); break;
    case 4: unshuffle_sized(src, dst, count, 4); break;
    default: unshuffle_sized(src, dst, count, size); break;
    }
}
