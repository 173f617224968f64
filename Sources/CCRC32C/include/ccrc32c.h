#ifndef CCRC32C_H
#define CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// Extends a CRC-32C (Castagnoli) checksum over `length` bytes. Start with 0.
/// Uses the SSE 4.2 crc32 instruction when the CPU has it, a table otherwise.
uint32_t postduif_crc32c_extend(uint32_t crc, const void *bytes, size_t length);

/// The table implementation alone, so tests can check the hardware path against it.
uint32_t postduif_crc32c_extend_portable(uint32_t crc, const void *bytes, size_t length);

/// 1 when the hardware instruction is in use (for benchmarks and logs).
int postduif_crc32c_is_hardware(void);

#endif
