/*
 * Unit tests of control/src/ctl_util.c: selectors, versions, label text, JSON helpers, hex,
 * UUIDs, key ids and the hash map the identity set lives in.
 */
#include "ctl_server.h"

#include <aegis/err.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <aegis/v1/common.pb-c.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void test_selector(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(ctl_selector_json("env=prod,role=db", out, sizeof(out)), 0);
    assert_string_equal(out, "{\"env\":\"prod\",\"role\":\"db\"}");
    assert_int_equal(ctl_selector_json("", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(ctl_selector_json(NULL, out, sizeof(out)), 0);
    const char *bad[] = {"env",    "=prod",    "env=",  "env=prod,", "a=b=c",
                         "a\"x=1", "a=1,,b=2", "a=\\1", "k=v\n",     ",a=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ctl_selector_json(bad[i], out, sizeof(out)), AEGIS_ERR_MALFORMED);
    char longname[80];
    memset(longname, 'a', 64);
    memcpy(longname + 64, "=1", 3);
    assert_int_equal(ctl_selector_json(longname, out, sizeof(out)), AEGIS_ERR_MALFORMED);
    /* output bound */
    assert_int_equal(ctl_selector_json("env=prod", out, 8), AEGIS_ERR_TOO_LARGE);
}

static void test_version_cmp(void **state)
{
    (void)state;
    assert_int_equal(ctl_version_cmp("0.1.0", "0.1.0"), 0);
    assert_int_equal(ctl_version_cmp("0.10.0", "0.9.9"), 1);
    assert_int_equal(ctl_version_cmp("0.9.9", "0.10.0"), -1);
    assert_int_equal(ctl_version_cmp("1.2", "1.2.0"), 0);
    assert_int_equal(ctl_version_cmp("1.2.1", "1.2"), 1);
    assert_int_equal(ctl_version_cmp("1.2.0-rc1", "1.2.0"), 0);
    assert_int_equal(ctl_version_cmp("x.1", "0.1"), -2);
    assert_int_equal(ctl_version_cmp("1..2", "1.2"), -2);
    assert_int_equal(ctl_version_cmp("1.2a", "1.2"), -2);
}

static void test_labels(void **state)
{
    (void)state;
    const char *k[2] = {"env", "role"}, *v[2] = {"prod", "db"};
    char out[128];
    assert_int_equal(ctl_labels_text(k, v, 2, out, sizeof(out)), 0);
    assert_string_equal(out, "env\x1fprod\x1erole\x1f"
                             "db");
    struct ctl_labels l;
    assert_int_equal(ctl_labels_from_text(NULL, out, &l), 0);
    Aegis__V1__Labels *lab = l.msg;
    assert_int_equal(lab->n_entries, 2);
    assert_string_equal(lab->entries[1]->key, "role");
    assert_string_equal(lab->entries[1]->value, "db");
    ctl_labels_free(NULL, &l);
    assert_int_equal(ctl_labels_from_text(NULL, "", &l), 0);
    assert_int_equal(((Aegis__V1__Labels *)l.msg)->n_entries, 0);
    ctl_labels_free(NULL, &l);
    const char *bk[1] = {"a,b"};
    assert_int_equal(ctl_labels_text(bk, v, 1, out, sizeof(out)), AEGIS_ERR_MALFORMED);
    const char *ck[1] = {"a\x1f"};
    assert_int_equal(ctl_labels_text(ck, v, 1, out, sizeof(out)), AEGIS_ERR_MALFORMED);
    assert_int_equal(ctl_labels_text(k, v, 2, out, 8), AEGIS_ERR_TOO_LARGE);
}

static void test_json(void **state)
{
    (void)state;
    char out[64];
    long n = ctl_json_escape("a\"b\\c\n", out, 0, sizeof(out));
    assert_true(n > 0);
    assert_string_equal(out, "\"a\\\"b\\\\c\\u000a\"");
    assert_true(ctl_json_escape("0123456789", out, 0, 8) < 0);
    const char *payload = "{\"id\" : \"3f0c\", \"op\" : \"update\", \"status\" : \"revoked\","
                          " \"connected_instance\" : null}";
    char v[40];
    assert_int_equal(ctl_json_str(payload, "op", v, sizeof(v)), 0);
    assert_string_equal(v, "update");
    assert_int_equal(ctl_json_str(payload, "status", v, sizeof(v)), 0);
    assert_string_equal(v, "revoked");
    assert_int_equal(ctl_json_str(payload, "connected_instance", v, sizeof(v)), 0);
    assert_string_equal(v, "null");
    assert_int_equal(ctl_json_str(payload, "missing", v, sizeof(v)), -ENOENT);
}

static void test_hex_uuid_keys(void **state)
{
    (void)state;
    uint8_t b[4] = {0x00, 0xab, 0x10, 0xff}, back[4];
    char h[9];
    ctl_hex(b, 4, h);
    assert_string_equal(h, "00ab10ff");
    assert_int_equal(ctl_unhex(h, back, 4), 0);
    assert_memory_equal(b, back, 4);
    assert_int_equal(ctl_unhex("00ab10f", back, 4), AEGIS_ERR_MALFORMED);
    assert_int_equal(ctl_unhex("00ab10fg", back, 4), AEGIS_ERR_MALFORMED);
    char u1[37], u2[37];
    ctl_uuid(u1);
    ctl_uuid(u2);
    assert_true(ctl_uuid_valid(u1));
    assert_string_not_equal(u1, u2);
    assert_int_equal(u1[14], '4');
    assert_false(ctl_uuid_valid("not-a-uuid"));
    assert_false(ctl_uuid_valid("6b0c7f7e-9f51-4b8e-9a41-2f2f1b0c0d0"));
    assert_false(ctl_uuid_valid("6b0c7f7e-9f51-4b8e-9a41x2f2f1b0c0d0e"));
    /* Ed25519 SPKI: fixed prefix + 32 bytes; anything else is refused. */
    uint8_t spki[44] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
    for (int i = 0; i < 32; i++)
        spki[12 + i] = (uint8_t)i;
    uint8_t raw[32];
    assert_int_equal(ctl_ed25519_raw(spki, 44, raw), 0);
    assert_int_equal(raw[31], 31);
    spki[7] = 0x71;
    assert_int_equal(ctl_ed25519_raw(spki, 44, raw), AEGIS_ERR_UNSUPPORTED);
    char t[32];
    ctl_rfc3339(1764000000ull * AEGIS_NS_PER_S + 5, t);
    assert_string_equal(t, "2025-11-24T16:00:00Z");
}

static void test_map(void **state)
{
    (void)state;
    struct ctl_map m = {0};
    char key[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        struct ctl_map_entry *e;
        assert_int_equal(ctl_map_put(&m, key, strlen(key), &e), 0);
        e->revoked = i;
    }
    assert_int_equal(m.count, 1000);
    for (int i = 0; i < 1000; i += 2) {
        snprintf(key, sizeof(key), "k%d", i);
        ctl_map_del(&m, key, strlen(key));
    }
    assert_int_equal(m.count, 500);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        struct ctl_map_entry *e = ctl_map_get(&m, key, strlen(key));
        if (i % 2)
            assert_true(e && e->revoked == i);
        else
            assert_null(e);
    }
    /* re-insert after delete reuses slots */
    struct ctl_map_entry *e;
    assert_int_equal(ctl_map_put(&m, "k0", 2, &e), 0);
    assert_int_equal(e->revoked, 0);
    assert_int_equal(m.count, 501);
    assert_int_equal(ctl_map_put(&m, "", 0, &e), -EINVAL);
    char big[40] = {0};
    assert_int_equal(ctl_map_put(&m, big, sizeof(big), &e), -EINVAL);
    ctl_map_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selector),      cmocka_unit_test(test_version_cmp),
        cmocka_unit_test(test_labels),        cmocka_unit_test(test_json),
        cmocka_unit_test(test_hex_uuid_keys), cmocka_unit_test(test_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
