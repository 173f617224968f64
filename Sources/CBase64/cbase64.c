// Base64 decoding 32 characters at a time. A REST Proxy binary body is
// almost all base64 (a 1 KiB record is 1,368 characters), and decoding it a
// quad at a time was the largest single part of the broker's work for
// batched HTTP produce (Docs/benchmarks.md). The method is the known
// nibble-table one: two byte shuffles classify each character by its high
// and low nibble (any character outside the alphabet sets a bit both
// tables agree on), a third gives the offset from character to six-bit
// value, and two multiply-adds pack four values into three bytes.
#include "cbase64.h"

#if defined(__x86_64__)
#include <immintrin.h>

// Bit flags by low nibble and by high nibble: a character is in the
// alphabet exactly when its two flags share no bit. `high` is each
// character's high nibble.
__attribute__((target("avx2")))
static inline int in_alphabet(__m256i characters, __m256i *high) {
    const __m256i by_low = _mm256_setr_epi8(
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A,
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A);
    const __m256i by_high = _mm256_setr_epi8(
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    *high = _mm256_and_si256(_mm256_srli_epi32(characters, 4), nibble);
    const __m256i low = _mm256_and_si256(characters, nibble);
    return _mm256_testz_si256(_mm256_shuffle_epi8(by_low, low), _mm256_shuffle_epi8(by_high, *high));
}

__attribute__((target("avx2")))
static size_t check_avx2(const uint8_t *text, size_t count) {
    size_t done = 0;
    __m256i high;
    while (count - done >= 32 && in_alphabet(_mm256_loadu_si256((const __m256i *)(text + done)), &high)) done += 32;
    return done;
}

__attribute__((target("avx2")))
static size_t decode_avx2(const uint8_t *text, size_t count, uint8_t *out) {
    // What to add to a character, by its high nibble ('/' moved to slot 1):
    // '+' 43 → 62, '/' 47 → 63, digits → 52..61, 'A'..'Z' → 0..25, 'a'..'z' → 26..51.
    const __m256i shift = _mm256_setr_epi8(
        0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i slash = _mm256_set1_epi8('/');
    // Pairs of six bits into twelve, then pairs of twelve into 24.
    const __m256i six = _mm256_set1_epi32(0x01400140);
    const __m256i twelve = _mm256_set1_epi32(0x00011000);
    // Each 32-bit lane holds its three bytes low first: reverse and gather
    // them, twelve per 128-bit half, then the two halves' 24 together.
    const __m256i order = _mm256_setr_epi8(
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    const __m256i together = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7);

    size_t done = 0;
    while (count - done >= 32) {
        const __m256i characters = _mm256_loadu_si256((const __m256i *)(text + done));
        __m256i high;
        if (!in_alphabet(characters, &high)) break;
        const __m256i is_slash = _mm256_cmpeq_epi8(characters, slash);
        const __m256i values = _mm256_add_epi8(characters, _mm256_shuffle_epi8(shift, _mm256_add_epi8(is_slash, high)));
        const __m256i packed = _mm256_madd_epi16(_mm256_maddubs_epi16(values, six), twelve);
        const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(packed, order), together);
        uint8_t *to = out + done / 4 * 3;
        _mm_storeu_si128((__m128i *)to, _mm256_castsi256_si128(bytes));
        _mm_storel_epi64((__m128i *)(to + 16), _mm256_extracti128_si256(bytes, 1));
        done += 32;
    }
    return done;
}

static int vector_state = -1;

int postduif_base64_is_vector(void) {
    int state = __atomic_load_n(&vector_state, __ATOMIC_RELAXED);
    if (state < 0) {
        __builtin_cpu_init();
        state = __builtin_cpu_supports("avx2") ? 1 : 0;
        __atomic_store_n(&vector_state, state, __ATOMIC_RELAXED);
    }
    return state;
}

size_t postduif_base64_decode_blocks(const uint8_t *text, size_t count, uint8_t *out) {
    return postduif_base64_is_vector() ? decode_avx2(text, count, out) : 0;
}

size_t postduif_base64_check_blocks(const uint8_t *text, size_t count) {
    return postduif_base64_is_vector() ? check_avx2(text, count) : 0;
}

#else

int postduif_base64_is_vector(void) { return 0; }

size_t postduif_base64_decode_blocks(const uint8_t *text, size_t count, uint8_t *out) {
    (void)text;
    (void)count;
    (void)out;
    return 0;
}

size_t postduif_base64_check_blocks(const uint8_t *text, size_t count) {
    (void)text;
    (void)count;
    return 0;
}

#endif
