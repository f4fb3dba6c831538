#ifndef RQAT_CKERNELS_SHUFFLE_H
#define RQAT_CKERNELS_SHUFFLE_H
#include <stddef.h>
#include <stdint.h>

// Byte-plane transposition ("shuffle") of `count` elements of `size` bytes each, so that a
// general-purpose compressor sees similar bytes together: all byte 0s, then all byte 1s, ...
//   shuffle:    dst[b * count + i] = src[i * size + b]
//   unshuffle:  the inverse.
// The exponent/sign bytes of fp16/fp32 values repeat a lot while their low mantissa bytes are
// noise; interleaved, the noise hides the repetition from zstd. src and dst must not overlap.
void rqat_byte_shuffle(const uint8_t *restrict src, uint8_t *restrict dst, size_t count, size_t size);
void rqat_byte_unshuffle(const uint8_t *restrict src, uint8_t *restrict dst, size_t count, size_t size);

#endif
