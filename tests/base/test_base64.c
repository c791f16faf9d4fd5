#include <aegis/base64.h>
#include <aegis/err.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* cmocka needs the headers above first. */
#include <cmocka.h>

/* RFC 4648 §10 test vectors. */
static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *const padded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                     "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
static const char *const unpadded[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};

static void rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        const uint8_t *in = (const uint8_t *)plain[i];
        size_t len = strlen(plain[i]);
        char out[16];
        assert_int_equal(aegis_base64_encode(in, len, AEGIS_BASE64_PAD, out, sizeof(out)),
                         strlen(padded[i]));
        assert_string_equal(out, padded[i]);
        assert_int_equal(aegis_base64_encoded_len(len, AEGIS_BASE64_PAD), strlen(padded[i]));
        assert_int_equal(aegis_base64_encode(in, len, 0, out, sizeof(out)), strlen(unpadded[i]));
        assert_string_equal(out, unpadded[i]);
        assert_int_equal(aegis_base64_encoded_len(len, 0), strlen(unpadded[i]));
        uint8_t dec[16];
        for (unsigned strict = 0; strict <= AEGIS_BASE64_STRICT; strict += AEGIS_BASE64_STRICT) {
            assert_int_equal(aegis_base64_decode(padded[i], strlen(padded[i]), strict, dec, 16),
                             (long)len);
            assert_memory_equal(dec, plain[i], len);
            assert_int_equal(aegis_base64_decode(unpadded[i], strlen(unpadded[i]), strict, dec, 16),
                             (long)len);
            assert_memory_equal(dec, plain[i], len);
        }
    }
}

static void encode_truncates_like_snprintf(void **state)
{
    (void)state;
    char out[5];
    memset(out, 'X', sizeof(out));
    assert_int_equal(aegis_base64_encode((const uint8_t *)"foobar", 6, 0, out, 4), 8);
    assert_memory_equal(out, "Zm9v", 4);
    assert_int_equal(out[4], 'X'); /* nothing past outcap */
    assert_int_equal(aegis_base64_encode((const uint8_t *)"f", 1, 0, NULL, 0), 2);
}

static void every_byte_round_trips(void **state)
{
    (void)state;
    uint8_t all[256], back[256];
    char enc[400];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    for (size_t len = 0; len <= 256; len += 37) {
        size_t n = aegis_base64_encode(all, len, AEGIS_BASE64_PAD, enc, sizeof(enc));
        assert_int_equal(aegis_base64_decode(enc, n, AEGIS_BASE64_STRICT, back, sizeof(back)),
                         (long)len);
        assert_memory_equal(back, all, len);
    }
}

static void malformed_inputs(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Z",        /* a lone character in the last quantum */
        "Zg=",      /* padding that does not complete the quantum */
        "Zg===",    /* too much padding */
        "Zm8==",    /* two pads where one belongs */
        "Zg==Zg==", /* data after padding */
        "Zm9v!",    /* not in the alphabet */
        "Zm 9v",    /* space without SKIP_SPACE */
        "====",
    };
    uint8_t out[16];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(aegis_base64_decode(bad[i], strlen(bad[i]), 0, out, sizeof(out)),
                         AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_base64_decode(NULL, 3, 0, out, sizeof(out)), AEGIS_ERR_MALFORMED);
}

static void strict_and_space_flags(void **state)
{
    (void)state;
    uint8_t out[16];
    /* "Zh" decodes to 'f' with non-zero leftover bits: lenient accepts it
     * (as grpc-go does), strict (canonical, for PEM and pins) refuses it. */
    assert_int_equal(aegis_base64_decode("Zh", 2, 0, out, sizeof(out)), 1);
    assert_int_equal(out[0], 'f');
    assert_int_equal(aegis_base64_decode("Zh", 2, AEGIS_BASE64_STRICT, out, sizeof(out)),
                     AEGIS_ERR_MALFORMED);
    /* PEM bodies wrap lines. */
    const char *pem = "Zm9v\r\nYmFy\n";
    assert_int_equal(aegis_base64_decode(pem, strlen(pem), AEGIS_BASE64_SKIP_SPACE, out, 16), 6);
    assert_memory_equal(out, "foobar", 6);
}

static void output_capacity(void **state)
{
    (void)state;
    uint8_t out[5];
    assert_int_equal(aegis_base64_decode("Zm9vYmFy", 8, 0, out, 5), AEGIS_ERR_TOO_LARGE);
    uint8_t six[6];
    assert_int_equal(aegis_base64_decode("Zm9vYmFy", 8, 0, six, 6), 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc4648_vectors),        cmocka_unit_test(encode_truncates_like_snprintf),
        cmocka_unit_test(every_byte_round_trips), cmocka_unit_test(malformed_inputs),
        cmocka_unit_test(strict_and_space_flags), cmocka_unit_test(output_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
