/*
 * aegis_pki hashing: SHA-256 against the FIPS 180-2 vectors, the incremental
 * API against the one-shot one, and key ids (FLEET_CONTRACT) against a
 * digest computed by an independent tool (sha256sum).
 */
#include <aegis/err.h>
#include <aegis/hex.h>
#include <aegis/mem.h>
#include <aegis/pki.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void hex_of(const uint8_t h[AEGIS_SHA256_LEN], char out[2 * AEGIS_SHA256_LEN + 1])
{
    aegis_hex_encode(h, AEGIS_SHA256_LEN, out, 2 * AEGIS_SHA256_LEN + 1);
}

/* FIPS 180-2 appendix B.1 and the empty message. */
static void one_shot_vectors(void **state)
{
    (void)state;
    uint8_t h[AEGIS_SHA256_LEN];
    char hx[65];
    assert_int_equal(aegis_sha256_hash("abc", 3, h), 0);
    hex_of(h, hx);
    assert_string_equal(hx, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(aegis_sha256_hash(NULL, 0, h), 0);
    hex_of(h, hx);
    assert_string_equal(hx, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(aegis_sha256_hash(NULL, 1, h), -EINVAL);
    assert_int_equal(aegis_sha256_hash("abc", 3, NULL), -EINVAL);
}

/* FIPS 180-2 appendix B.3 (a million 'a') fed in uneven pieces, twice: final
 * starts the context over. */
static void incremental_matches(void **state)
{
    (void)state;
    const size_t total = 1000000;
    uint8_t *a = malloc(total);
    assert_non_null(a);
    memset(a, 'a', total);
    struct aegis_sha256 *ctx = NULL;
    assert_int_equal(aegis_sha256_new(NULL, &ctx), 0);
    for (int round = 0; round < 2; round++) {
        size_t off = 0, step = 1;
        while (off < total) {
            size_t n = total - off < step ? total - off : step;
            assert_int_equal(aegis_sha256_update(ctx, a + off, n), 0);
            off += n;
            step = step * 3 + 1; /* 1, 4, 13, ...: crosses every block boundary kind */
        }
        uint8_t h[AEGIS_SHA256_LEN], one[AEGIS_SHA256_LEN];
        char hx[65];
        assert_int_equal(aegis_sha256_final(ctx, h), 0);
        hex_of(h, hx);
        assert_string_equal(hx, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        assert_int_equal(aegis_sha256_hash(a, total, one), 0);
        assert_memory_equal(h, one, sizeof(h));
    }
    assert_int_equal(aegis_sha256_update(ctx, NULL, 0), 0);
    assert_int_equal(aegis_sha256_update(ctx, NULL, 1), -EINVAL);
    assert_int_equal(aegis_sha256_update(NULL, a, 1), -EINVAL);
    assert_int_equal(aegis_sha256_final(NULL, (uint8_t[32]){0}), -EINVAL);
    assert_int_equal(aegis_sha256_new(NULL, NULL), -EINVAL);
    aegis_sha256_del(ctx);
    aegis_sha256_del(NULL);
    free(a);
}

static void new_out_of_memory(void **state)
{
    (void)state;
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, 1, 0);
    struct aegis_sha256 *ctx = NULL;
    assert_int_equal(aegis_sha256_new(&fm.mem, &ctx), -ENOMEM);
    assert_null(ctx);
    /* The context frees with the allocator it came from. */
    aegis_failmem_init(&fm, NULL, 0, 0);
    assert_int_equal(aegis_sha256_new(&fm.mem, &ctx), 0);
    assert_int_equal(fm.live, 1);
    aegis_sha256_del(ctx);
    assert_int_equal(fm.live, 0);
}

/* RFC 8410 §10.1's Ed25519 public key as SPKI DER; sha256sum of these 44
 * bytes is a1e9156054e04fac899ae9f275132cdc07a5dbc4ea2c2ad3a1ffc6e0d253681f. */
static const uint8_t rfc8410_spki[44] = {
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x19, 0xbf, 0x44,
    0x09, 0x69, 0x84, 0xcd, 0xfe, 0x85, 0x41, 0xba, 0xc1, 0x67, 0xdc, 0x3b, 0x96, 0xc8, 0x50,
    0x86, 0xaa, 0x30, 0xb6, 0xb6, 0xcb, 0x0c, 0x5c, 0x38, 0xad, 0x70, 0x31, 0x66, 0xe1};

static void key_id_known_answer(void **state)
{
    (void)state;
    char id[AEGIS_KEY_ID_STRLEN];
    memset(id, 'X', sizeof(id));
    assert_int_equal(aegis_key_id_from_spki(rfc8410_spki, sizeof(rfc8410_spki), id), 0);
    assert_string_equal(id, "a1e9156054e04fac");
    assert_int_equal(aegis_key_id_from_spki(NULL, 44, id), -EINVAL);
    assert_int_equal(aegis_key_id_from_spki(rfc8410_spki, 0, id), -EINVAL);
    assert_int_equal(aegis_key_id_from_spki(rfc8410_spki, 44, NULL), -EINVAL);
}

/* A generated key's id is the prefix of the hex SHA-256 of its SPKI. */
static void key_id_of_generated_key(void **state)
{
    (void)state;
    struct aegis_key *key = NULL;
    uint8_t *spki = NULL;
    size_t len = 0;
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_ED25519, &key), 0);
    assert_int_equal(aegis_key_spki_der(key, &spki, &len), 0);
    char id[AEGIS_KEY_ID_STRLEN], hx[65];
    uint8_t h[AEGIS_SHA256_LEN];
    assert_int_equal(aegis_key_id_from_spki(spki, len, id), 0);
    assert_int_equal(aegis_sha256_hash(spki, len, h), 0);
    hex_of(h, hx);
    assert_int_equal(strlen(id), 16);
    assert_memory_equal(id, hx, 16);
    aegis_free(NULL, spki);
    aegis_key_del(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_shot_vectors),        cmocka_unit_test(incremental_matches),
        cmocka_unit_test(new_out_of_memory),       cmocka_unit_test(key_id_known_answer),
        cmocka_unit_test(key_id_of_generated_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
