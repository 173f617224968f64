// CRC-32C as Kafka's record batch v2 uses it (the Castagnoli polynomial,
// reflected 0x82F63B78). Kafka checks every batch it stores, so this sits on
// the append path: x86-64 gets the SSE 4.2 instruction, everything else a
// slicing-by-8 table.
#include "ccrc32c.h"

#include <string.h>

static uint32_t table[8][256];
static int table_ready = 0;

static void build_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int k = 1; k < 8; k++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[k][n] = c;
        }
    }
    __atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t extend_table(uint32_t crc, const uint8_t *p, size_t n) {
    if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE)) build_table();
    crc = ~crc;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        word ^= crc;
        crc = table[7][word & 0xff] ^ table[6][(word >> 8) & 0xff] ^
              table[5][(word >> 16) & 0xff] ^ table[4][(word >> 24) & 0xff] ^
              table[3][(word >> 32) & 0xff] ^ table[2][(word >> 40) & 0xff] ^
              table[1][(word >> 48) & 0xff] ^ table[0][word >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

// Multiplies a and b modulo the (reflected) polynomial: the GF(2) arithmetic
// that lets CRCs of adjacent pieces be combined.
static uint32_t multiply_modulo(uint32_t a, uint32_t b) {
    uint32_t m = 1u << 31, product = 0;
    for (;;) {
        if (a & m) {
            product ^= b;
            if ((a & (m - 1)) == 0) break;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ 0x82F63B78u : b >> 1;
    }
    return product;
}

// x^(8 * count) modulo the polynomial: multiplying a CRC register by it
// shifts the register over `count` zero bytes.
static uint32_t shift_operator(size_t count) {
    uint32_t result = 1u << 31;  // x^0
    uint32_t power = 1u << 23;   // x^8 (a byte)
    while (count) {
        if (count & 1) result = multiply_modulo(power, result);
        power = multiply_modulo(power, power);
        count >>= 1;
    }
    return result;
}

#if defined(__x86_64__)
// The crc32 instruction takes 3 cycles but can start one every cycle, so
// three independent streams over three thirds of a long block run about
// three times as fast as one; the thirds are then combined with shifts.
#define STRIPE_BYTES 4096
static uint32_t stripe_shift = 0;

__attribute__((target("sse4.2")))
static uint32_t extend_hardware(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c0 = (uint32_t)~crc;
    if (n >= 3 * STRIPE_BYTES) {
        uint32_t shift = __atomic_load_n(&stripe_shift, __ATOMIC_ACQUIRE);
        if (shift == 0) {
            shift = shift_operator(STRIPE_BYTES);
            __atomic_store_n(&stripe_shift, shift, __ATOMIC_RELEASE);
        }
        while (n >= 3 * STRIPE_BYTES) {
            uint64_t c1 = 0, c2 = 0;
            const uint8_t *a = p, *b = p + STRIPE_BYTES, *c = p + 2 * STRIPE_BYTES;
            for (size_t i = 0; i < STRIPE_BYTES; i += 8) {
                uint64_t wa, wb, wc;
                memcpy(&wa, a + i, 8);
                memcpy(&wb, b + i, 8);
                memcpy(&wc, c + i, 8);
                c0 = __builtin_ia32_crc32di(c0, wa);
                c1 = __builtin_ia32_crc32di(c1, wb);
                c2 = __builtin_ia32_crc32di(c2, wc);
            }
            // The register is linear in its start value: state after A|B|C =
            // shift(shift(A) ^ B) ^ C, where B and C were computed from zero.
            c0 = multiply_modulo(shift, (uint32_t)c0) ^ (uint32_t)c1;
            c0 = multiply_modulo(shift, (uint32_t)c0) ^ (uint32_t)c2;
            p += 3 * STRIPE_BYTES;
            n -= 3 * STRIPE_BYTES;
        }
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c0 = __builtin_ia32_crc32di(c0, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c0;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}

static int hardware_available(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    }
    return cached;
}
#endif

uint32_t postduif_crc32c_extend(uint32_t crc, const void *bytes, size_t length) {
#if defined(__x86_64__)
    if (hardware_available()) return extend_hardware(crc, (const uint8_t *)bytes, length);
#endif
    return extend_table(crc, (const uint8_t *)bytes, length);
}

uint32_t postduif_crc32c_extend_portable(uint32_t crc, const void *bytes, size_t length) {
    return extend_table(crc, (const uint8_t *)bytes, length);
}

int postduif_crc32c_is_hardware(void) {
#if defined(__x86_64__)
    return hardware_available();
#else
    return 0;
#endif
}
