/*
 * aegisctl output: table alignment (expected text built here from the cell
 * widths), protobuf -> JSON shape (keys, enums, bytes, maps, oneofs), enum
 * names, time and size formatting, progress lines without a terminal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ctl_cli_fake.h"

#include <aegis/v1/operator.pb-c.h>

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

static char *print_table(struct ctl_table *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ctl_table_print(t, f);
    fclose(f);
    return buf;
}

/* Expected rendering: each column padded to its widest cell + 2, the last
 * column not padded. widths[] are in characters. */
static void append_row(char *out, size_t cap, const char *const *cells, const size_t *widths,
                       const size_t *charlen, size_t n)
{
    size_t off = strlen(out);
    for (size_t c = 0; c < n; c++) {
        off += (size_t)snprintf(out + off, cap - off, "%s", cells[c]);
        if (c + 1 < n)
            for (size_t k = charlen[c]; k < widths[c] + 2; k++)
                out[off++] = ' ';
    }
    out[off++] = '\n';
    out[off] = '\0';
}

static void test_table_alignment(void **state)
{
    (void)state;
    const char *hdr[] = {"ID", "HOST", "STATUS"};
    const char *r1[] = {"a", "web-01.example", "online"};
    const char *r2[] = {"agent-with-long-id", "db", "offline"};
    const char *r3[] = {"ü-host", NULL, ""}; /* UTF-8 width 6; NULL/empty print "-" */
    struct ctl_table *t = ctl_table_new(3, hdr);
    assert_non_null(t);
    assert_int_equal(ctl_table_add(t, r1), 0);
    assert_int_equal(ctl_table_add(t, r2), 0);
    assert_int_equal(ctl_table_add(t, r3), 0);
    assert_int_equal(ctl_table_rows(t), 3);
    char *got = print_table(t);

    const char *r3p[] = {"ü-host", "-", "-"};
    const char *const *rows[] = {hdr, r1, r2, r3p};
    size_t widths[3] = {0, 0, 0};
    size_t clen[4][3];
    for (size_t r = 0; r < 4; r++) {
        for (size_t c = 0; c < 3; c++) {
            size_t w = strlen(rows[r][c]);
            if (strcmp(rows[r][c], "ü-host") == 0)
                w = 6; /* 7 bytes, 6 characters */
            clen[r][c] = w;
            if (w > widths[c])
                widths[c] = w;
        }
    }
    assert_int_equal(widths[0], strlen("agent-with-long-id"));
    char want[1024] = "";
    for (size_t r = 0; r < 4; r++)
        append_row(want, sizeof(want), rows[r], widths, clen[r], 3);
    assert_string_equal(got, want);
    free(got);
    ctl_table_del(t);

    /* a newline inside a cell must not break the row */
    const char *h1[] = {"A"};
    const char *c1[] = {"two\nlines"};
    t = ctl_table_new(1, h1);
    ctl_table_add(t, c1);
    got = print_table(t);
    assert_string_equal(got, "A\ntwo lines\n");
    free(got);
    ctl_table_del(t);
}

static void test_json_shape(void **state)
{
    (void)state;
    Aegis__V1__Agent ag = AEGIS__V1__AGENT__INIT;
    Aegis__V1__Labels labels = AEGIS__V1__LABELS__INIT;
    Aegis__V1__Labels__EntriesEntry e1 = AEGIS__V1__LABELS__ENTRIES_ENTRY__INIT;
    Aegis__V1__Labels__EntriesEntry *ents[] = {&e1};
    e1.key = (char *)"env";
    e1.value = (char *)"prod";
    labels.n_entries = 1;
    labels.entries = ents;
    uint8_t spki[4] = {0xde, 0xad, 0x01, 0xff};
    char *caps[] = {(char *)"bpf", (char *)"zstd"};
    ag.agent_id = (char *)"a-1";
    ag.status = AEGIS__V1__AGENT_STATUS__AGENT_STATUS_REVOKED;
    ag.labels = &labels;
    ag.spki_sha256.data = spki;
    ag.spki_sha256.len = sizeof(spki);
    ag.last_seen_unix_ns = 1795417200123456789LL;
    ag.n_capabilities = 2;
    ag.capabilities = caps;
    ag.acked_sequence = UINT64_MAX;
    struct json_object *o = ctl_pb_to_json(&ag.base);
    assert_non_null(o);
    /* every field, in declaration order */
    const char *keys[] = {"agent_id",
                          "host_id",
                          "host",
                          "labels",
                          "version",
                          "status",
                          "spki_sha256",
                          "machine_id_hash",
                          "enrolled_unix_ns",
                          "last_seen_unix_ns",
                          "connected_instance",
                          "capabilities",
                          "acked_sequence"};
    size_t i = 0;
    json_object_object_foreach(o, k, val)
    {
        (void)val;
        assert_true(i < sizeof(keys) / sizeof(keys[0]));
        assert_string_equal(k, keys[i]);
        i++;
    }
    assert_int_equal(i, sizeof(keys) / sizeof(keys[0]));
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, "host", &v));
    assert_null(v); /* unset sub-message: null */
    assert_true(json_object_object_get_ex(o, "status", &v));
    assert_string_equal(json_object_get_string(v), "revoked");
    assert_true(json_object_object_get_ex(o, "spki_sha256", &v));
    assert_string_equal(json_object_get_string(v), "dead01ff");
    assert_true(json_object_object_get_ex(o, "machine_id_hash", &v));
    assert_string_equal(json_object_get_string(v), "");
    assert_true(json_object_object_get_ex(o, "labels", &v));
    struct json_object *ent, *env;
    assert_true(json_object_object_get_ex(v, "entries", &ent));
    assert_true(json_object_object_get_ex(ent, "env", &env)); /* map -> object */
    assert_string_equal(json_object_get_string(env), "prod");
    assert_true(json_object_object_get_ex(o, "last_seen_unix_ns", &v));
    assert_true(json_object_get_int64(v) == 1795417200123456789LL);
    assert_true(json_object_object_get_ex(o, "acked_sequence", &v));
    assert_true(json_object_get_uint64(v) == UINT64_MAX);
    assert_true(json_object_object_get_ex(o, "capabilities", &v));
    assert_int_equal(json_object_array_length(v), 2);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(v, 1)), "zstd");
    assert_true(json_object_object_get_ex(o, "version", &v));
    assert_string_equal(json_object_get_string(v), "");
    json_object_put(o);

    /* oneof: only the member that is set appears */
    Aegis__V1__Command cmd = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RestartAgent ra = AEGIS__V1__RESTART_AGENT__INIT;
    ra.delay_seconds = 2;
    cmd.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RESTART_AGENT;
    cmd.restart_agent = &ra;
    o = ctl_pb_to_json(&cmd.base);
    assert_true(json_object_object_get_ex(o, "restart_agent", &v));
    assert_false(json_object_object_get_ex(o, "apply_policy", &v));
    assert_false(json_object_object_get_ex(o, "run_action", &v));
    json_object_put(o);

    /* printed: compact is one line, pretty parses back to the same document */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ctl_json_print(f, ctl_pb_to_json(&ag.base), 1);
    fclose(f);
    assert_non_null(strchr(buf, '\n'));
    assert_true(strchr(buf, '\n') == buf + len - 1);
    assert_non_null(strstr(buf, "\"agent_id\":\"a-1\""));
    free(buf);
}

static void test_enums_and_formats(void **state)
{
    (void)state;
    char b[64];
    assert_string_equal(ctl_enum_name(&aegis__v1__command_state__descriptor, 5, b, sizeof(b)),
                        "succeeded");
    assert_string_equal(ctl_enum_name(&aegis__v1__artifact_kind__descriptor, 4, b, sizeof(b)),
                        "agent_binary");
    assert_string_equal(ctl_enum_name(&aegis__v1__policy_state__descriptor, 4, b, sizeof(b)),
                        "rolled_back");
    assert_string_equal(ctl_enum_name(&aegis__v1__agent_status__descriptor, 99, b, sizeof(b)),
                        "99");
    int v = -1;
    assert_int_equal(ctl_enum_parse(&aegis__v1__artifact_kind__descriptor, "BPF_Object", &v), 0);
    assert_int_equal(v, AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_BPF_OBJECT);
    assert_int_equal(ctl_enum_parse(&aegis__v1__artifact_kind__descriptor, "bpf", &v), -22);

    assert_string_equal(ctl_fmt_time(0, b, sizeof(b)), "-");
    assert_string_equal(ctl_fmt_time((int64_t)FAKE_NOW_NS, b, sizeof(b)), "2026-11-23T07:00:00Z");
    assert_string_equal(ctl_fmt_bytes(512, b, sizeof(b)), "512 B");
    assert_string_equal(ctl_fmt_bytes(1536, b, sizeof(b)), "1.5 KiB");
    assert_string_equal(ctl_fmt_bytes(3ull << 30, b, sizeof(b)), "3.0 GiB");
    const uint8_t h[] = {0x00, 0xab, 0x10};
    assert_string_equal(ctl_fmt_hex(h, 3, b, sizeof(b)), "00ab10");
    /* A short buffer keeps whole bytes only. */
    assert_string_equal(ctl_fmt_hex(h, 3, b, 6), "00ab");
    assert_string_equal(ctl_fmt_hex(h, 3, b, 2), "");
}

static void test_progress_plain(void **state)
{
    (void)state;
    struct ctl_cli cli;
    ctl_cli_init(&cli);
    char *buf = NULL;
    size_t len = 0;
    cli.err = open_memstream(&buf, &len);
    cli.progress_tty = 0;
    struct ctl_progress p;
    ctl_progress_start(&p, &cli, "upload", 400);
    for (uint64_t d = 0; d <= 400; d += 10)
        ctl_progress_update(&p, d, NULL);
    ctl_progress_finish(&p);
    fclose(cli.err);
    /* one plain line at 0 and at each quarter, no escape sequences */
    assert_string_equal(buf, "upload: 0/400 (0%)\n"
                             "upload: 100/400 (25%)\n"
                             "upload: 200/400 (50%)\n"
                             "upload: 300/400 (75%)\n"
                             "upload: 400/400 (100%)\n");
    free(buf);

    /* on a terminal: carriage-return redraws and a final newline */
    buf = NULL;
    cli.err = open_memstream(&buf, &len);
    cli.progress_tty = 1;
    ctl_progress_start(&p, &cli, "deliveries", 4);
    ctl_progress_update(&p, 4, "4 succeeded");
    ctl_progress_finish(&p);
    fclose(cli.err);
    assert_non_null(strstr(buf, "\r\033[Kdeliveries ["));
    assert_non_null(strstr(buf, "100% 4/4  4 succeeded"));
    assert_true(buf[len - 1] == '\n');
    free(buf);
    ctl_cli_free(&cli);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_alignment),
        cmocka_unit_test(test_json_shape),
        cmocka_unit_test(test_enums_and_formats),
        cmocka_unit_test(test_progress_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
