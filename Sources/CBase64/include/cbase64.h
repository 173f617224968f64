#ifndef CBASE64_H
#define CBASE64_H

#include <stddef.h>
#include <stdint.h>

/// Decodes whole blocks of 32 base64 characters (RFC 4648's standard
/// alphabet) from `text` into `out`, 24 bytes per block, with AVX2 where the
/// CPU has it. Reads at most `count` characters and writes 3/4 of what it
/// reads. Returns the characters decoded, a multiple of 32: it stops before
/// the first block holding a character outside the alphabet (padding
/// included) and before a block that would pass `count`, so the caller
/// decodes or refuses the rest. Returns 0 without AVX2.
size_t postduif_base64_decode_blocks(const uint8_t *text, size_t count, uint8_t *out);

/// The characters of whole blocks of 32 at the start of `text` (at most
/// `count`) that are all in the alphabet: where a check that the rest are
/// goes on. 0 without AVX2.
size_t postduif_base64_check_blocks(const uint8_t *text, size_t count);

/// 1 when the AVX2 path is in use (for tests and logs).
int postduif_base64_is_vector(void);

#endif
