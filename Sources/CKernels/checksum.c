#include "CKernelsChecksum.h"
#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u  // 0x1EDC6F41 bit-reversed (the CRC works LSB first)

// ---- Portable: one 256-entry table, one byte per step. Only machines without SSE4.2 use it
// for real data, so simplicity beats slicing-by-8.

static uint32_t table[256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void build_table(void) {
    for (uint32_t byte = 0; byte < 256; byte++) {
        uint32_t crc = byte;
        for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (CRC32C_POLY & (0u - (crc & 1)));
        table[byte] = crc;
    }
}

uint32_t rqat_crc32c_portable(uint32_t crc, const void *data, size_t n) {
    pthread_once(&table_once, build_table);
    const uint8_t *p = data;
    crc = ~crc;  // the standard CRC-32C starts from all ones and inverts the result
    for (size_t i = 0; i < n; i++) crc = (crc >> 8) ^ table[(crc ^ p[i]) & 0xFF];
    return ~crc;
}

// ---- SSE4.2: the crc32 instruction, 8 bytes per step. Compiled for SSE4.2 whatever the
// package's target flags are, and only called after the CPU says it has the instruction.

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t c = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t word;
        memcpy(&word, p, 8);  // unaligned load; compiles to one mov
        c = _mm_crc32_u64(c, word);
    }
    uint32_t c32 = (uint32_t)c;
    for (; n > 0; n--, p++) c32 = _mm_crc32_u8(c32, *p);
    return ~c32;
}

int rqat_crc32c_is_hardware(void) {
#if defined(__SSE4_2__)
    return 1;  // the whole build targets SSE4.2
#else
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

uint32_t rqat_crc32c(uint32_t crc, const void *data, size_t n) {
    return rqat_crc32c_is_hardware() ? crc32c_sse42(crc, data, n) : rqat_crc32c_portable(crc, data, n);
}

#else

int rqat_crc32c_is_hardware(void) { return 0; }

uint32_t rqat_crc32c(uint32_t crc, const void *data, size_t n) {
    return rqat_crc32c_portable(crc, data, n);
}

#endif
