#ifndef RQAT_CKERNELS_CHECKSUM_H
#define RQAT_CKERNELS_CHECKSUM_H
#include <stddef.h>
#include <stdint.h>

// CRC-32C (Castagnoli; reflected polynomial 0x82F63B78, as in iSCSI, ext4 and SSE4.2's crc32
// instruction) of n bytes, continuing from a previous result: start with crc = 0, and
// rqat_crc32c(rqat_crc32c(0, a), b) is the CRC of a followed by b. The check value of
// "123456789" is 0xE3069283.
//
// rqat_crc32c uses the SSE4.2 instruction when the CPU has it (several GB/s) and the table
// version otherwise; both always give the same value, which the tests check.
uint32_t rqat_crc32c(uint32_t crc, const void *data, size_t n);
uint32_t rqat_crc32c_portable(uint32_t crc, const void *data, size_t n);

// 1 when rqat_crc32c runs on the SSE4.2 instruction on this machine, else 0.
int rqat_crc32c_is_hardware(void);

#endif
