/*
 * aegisctl argument parsing: durations, numbers, digests, k=v lists, the
 * option parser, and the top-level command table (--help at every level,
 * usage errors exit 2 before anything is sent).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ctl_cli_fake.h"

#include <aegis/v1/operator.pb-c.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define S_NS 1000000000ull

static void test_duration(void **state)
{
    (void)state;
    uint64_t ns = 0;
    assert_int_equal(ctl_parse_duration("24h", &ns), 0);
    assert_true(ns == 24ull * 3600 * S_NS);
    assert_int_equal(ctl_parse_duration("90s", &ns), 0);
    assert_true(ns == 90ull * S_NS);
    assert_int_equal(ctl_parse_duration("1h30m", &ns), 0);
    assert_true(ns == 5400ull * S_NS);
    assert_int_equal(ctl_parse_duration("7d", &ns), 0);
    assert_true(ns == 7ull * 86400 * S_NS);
    assert_int_equal(ctl_parse_duration("250ms", &ns), 0);
    assert_true(ns == 250000000ull);
    assert_int_equal(ctl_parse_duration("45", &ns), 0); /* bare number = seconds */
    assert_true(ns == 45ull * S_NS);
    assert_int_equal(ctl_parse_duration("0s", &ns), 0);
    assert_true(ns == 0);
    static const char *const bad[] = {
        "",      "h",  "24x", "-5s", "1.5h", "5s5", "1h 2m", "s5", "99999999999999999999s",
        "4000d", "24H"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ns = 12345;
        assert_int_equal(ctl_parse_duration(bad[i], &ns), -EINVAL);
        assert_true(ns == 12345); /* untouched on failure */
    }
}

static void test_numbers_and_digests(void **state)
{
    (void)state;
    uint32_t v;
    assert_int_equal(ctl_parse_u32("17", 1, 100, &v), 0);
    assert_int_equal(v, 17);
    assert_int_equal(ctl_parse_u32("0", 1, 100, &v), -EINVAL);
    assert_int_equal(ctl_parse_u32("101", 1, 100, &v), -EINVAL);
    assert_int_equal(ctl_parse_u32("1e3", 0, 10000, &v), -EINVAL);
    assert_int_equal(ctl_parse_u32("-1", 0, 10, &v), -EINVAL);
    assert_int_equal(ctl_parse_u32("4294967296", 0, UINT32_MAX, &v), -EINVAL);
    uint64_t w;
    assert_int_equal(ctl_parse_u64("18446744073709551615", &w), 0);
    assert_true(w == UINT64_MAX);
    assert_int_equal(ctl_parse_u64("18446744073709551616", &w), -EINVAL);

    uint8_t sha[32];
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02X", i * 7);
    assert_int_equal(ctl_parse_sha256(hex, sha), 0);
    for (int i = 0; i < 32; i++)
        assert_int_equal(sha[i], (uint8_t)(i * 7));
    hex[10] = 'g';
    assert_int_equal(ctl_parse_sha256(hex, sha), -EINVAL);
    assert_int_equal(ctl_parse_sha256("abcd", sha), -EINVAL);
}

static void test_kvlist(void **state)
{
    (void)state;
    struct ctl_kvlist l = {0};
    char err[256];
    assert_int_equal(ctl_parse_kvlist("env=prod,role=db", &l, err, sizeof(err)), 0);
    assert_int_equal(ctl_parse_kvlist("zone=eu-1", &l, err, sizeof(err)), 0); /* appends */
    assert_int_equal(l.n, 3);
    assert_string_equal(l.key[0], "env");
    assert_string_equal(l.value[0], "prod");
    assert_string_equal(l.key[1], "role");
    assert_string_equal(l.value[1], "db");
    assert_string_equal(l.key[2], "zone");
    assert_string_equal(l.value[2], "eu-1");
    /* a failing call leaves the list as it was */
    assert_int_equal(ctl_parse_kvlist("a=1,env=dev", &l, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "\"env\" given twice"));
    assert_int_equal(l.n, 3);
    ctl_kvlist_free(&l);
    assert_int_equal(l.n, 0);

    static const struct {
        const char *in, *msg;
    } bad[] = {
        {"", "empty list"},   {"novalue", "is not key=value"},       {"=v", "is not key=value"},
        {"k y=v", "has ' '"}, {"k=v=w", "control character or '='"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ctl_kvlist b = {0};
        assert_int_equal(ctl_parse_kvlist(bad[i].in, &b, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, bad[i].msg));
        assert_int_equal(b.n, 0);
        ctl_kvlist_free(&b);
    }
    char longkey[80];
    memset(longkey, 'k', 64);
    strcpy(longkey + 64, "=v");
    struct ctl_kvlist b = {0};
    assert_int_equal(ctl_parse_kvlist(longkey, &b, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "too long"));
    ctl_kvlist_free(&b);
}

static void test_help_everywhere(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    assert_int_equal(fake_run(&f, "--help", NULL), CTL_EXIT_OK);
    assert_non_null(strstr(f.out, "usage: aegisctl"));
    assert_non_null(strstr(f.out, "Exit codes"));
    assert_int_equal(fake_run(&f, NULL), CTL_EXIT_USAGE); /* nothing: usage on stderr */
    assert_non_null(strstr(f.err, "usage: aegisctl"));
    assert_int_equal(fake_run(&f, "frobnicate", NULL), CTL_EXIT_USAGE);
    assert_non_null(strstr(f.err, "unknown command \"frobnicate\""));

    const struct ctl_family *fams[] = {
        &ctl_family_agents,   &ctl_family_tokens,    &ctl_family_commands, &ctl_family_artifacts,
        &ctl_family_policies, &ctl_family_telemetry, &ctl_family_audit};
    for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
        const struct ctl_family *fam = fams[i];
        assert_int_equal(fake_run(&f, fam->name, "--help", NULL), CTL_EXIT_OK);
        for (size_t k = 0; k < fam->nsubs; k++)
            assert_non_null(strstr(f.out, fam->subs[k].name));
        assert_int_equal(fake_run(&f, fam->name, NULL), CTL_EXIT_USAGE);
        assert_int_equal(fake_run(&f, fam->name, "nope", NULL), CTL_EXIT_USAGE);
        assert_non_null(strstr(f.err, "unknown"));
        for (size_t k = 0; k < fam->nsubs; k++) {
            const struct ctl_subcmd *sub = &fam->subs[k];
            char want[160];
            snprintf(want, sizeof(want), "usage: aegisctl %s %s", fam->name, sub->name);
            assert_int_equal(fake_run(&f, fam->name, sub->name, "--help", NULL), CTL_EXIT_OK);
            assert_non_null(strstr(f.out, want));
            /* -h works too, and help wins over missing arguments */
            assert_int_equal(fake_run(&f, fam->name, sub->name, "-h", NULL), CTL_EXIT_OK);
            /* an unknown option is a usage error naming it */
            assert_int_equal(fake_run(&f, fam->name, sub->name, "--no-such-flag", NULL),
                             CTL_EXIT_USAGE);
            assert_non_null(strstr(f.err, "unknown option --no-such-flag"));
            assert_non_null(strstr(f.err, want + 7)); /* the synopsis follows */
            /* missing positional arguments / too many */
            if (sub->min_pos > 0) {
                assert_int_equal(fake_run(&f, fam->name, sub->name, NULL), CTL_EXIT_USAGE);
                assert_non_null(strstr(f.err, "missing argument"));
            }
            assert_int_equal(fake_run(&f, fam->name, sub->name, "a1", "a2", "a3", "a4", NULL),
                             CTL_EXIT_USAGE);
            assert_non_null(strstr(f.err, "unexpected argument"));
        }
    }
    assert_int_equal(f.ncalls, 0); /* no usage error ever reached the server */
    fake_free(&f);
}

static void test_option_forms(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    /* a value option at the end without its value */
    assert_int_equal(fake_run(&f, "agents", "list", "--status", NULL), CTL_EXIT_USAGE);
    assert_non_null(strstr(f.err, "--status needs a value"));
    /* a flag given a value */
    assert_int_equal(fake_run(&f, "tokens", "list", "--all=yes", NULL), CTL_EXIT_USAGE);
    assert_non_null(strstr(f.err, "--all takes no value"));
    /* short options do not exist */
    assert_int_equal(fake_run(&f, "agents", "list", "-s", "x", NULL), CTL_EXIT_USAGE);
    /* a bad --timeout is a usage error, wherever it is */
    assert_int_equal(fake_run(&f, "--timeout", "soon", "agents", "list", NULL), CTL_EXIT_USAGE);
    assert_int_equal(fake_run(&f, "agents", "list", "--timeout=0s", NULL), CTL_EXIT_USAGE);
    assert_int_equal(f.ncalls, 0);

    /* --opt=value, global options before and after the command, "--" */
    Aegis__V1__ListAgentsResponse empty = AEGIS__V1__LIST_AGENTS_RESPONSE__INIT;
    fake_reply(&f, 0, NULL, &empty.base);
    assert_int_equal(fake_run(&f, "--json", "agents", "list", "--status=offline", NULL), 0);
    fake_reply(&f, 0, NULL, &empty.base);
    assert_int_equal(fake_run(&f, "agents", "list", "--status", "online", "--json", NULL), 0);
    assert_int_equal(f.ncalls, 2);
    Aegis__V1__ListAgentsRequest *r = (Aegis__V1__ListAgentsRequest *)fake_request(
        &f, 0, &aegis__v1__list_agents_request__descriptor);
    assert_non_null(r);
    assert_int_equal(r->status, AEGIS__V1__AGENT_STATUS__AGENT_STATUS_OFFLINE);
    ctl_pb_free(&r->base);
    r = (Aegis__V1__ListAgentsRequest *)fake_request(&f, 1,
                                                     &aegis__v1__list_agents_request__descriptor);
    assert_int_equal(r->status, AEGIS__V1__AGENT_STATUS__AGENT_STATUS_ONLINE);
    ctl_pb_free(&r->base);
    /* after "--" an option-looking word is an argument */
    Aegis__V1__GetAgentResponse ga = AEGIS__V1__GET_AGENT_RESPONSE__INIT;
    fake_reply(&f, 0, NULL, &ga.base);
    assert_int_equal(fake_run(&f, "agents", "show", "--", "--weird-id", NULL), 0);
    Aegis__V1__GetAgentRequest *g = (Aegis__V1__GetAgentRequest *)fake_request(
        &f, 2, &aegis__v1__get_agent_request__descriptor);
    assert_string_equal(g->agent_id, "--weird-id");
    ctl_pb_free(&g->base);
    fake_free(&f);
}

static void test_connect_error_exit_code(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    f.connect_error = CTL_EXIT_CONNECT;
    assert_int_equal(fake_run(&f, "agents", "list", NULL), CTL_EXIT_CONNECT);
    assert_non_null(strstr(f.err, "cannot connect to fake:4433"));
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration),     cmocka_unit_test(test_numbers_and_digests),
        cmocka_unit_test(test_kvlist),       cmocka_unit_test(test_help_everywhere),
        cmocka_unit_test(test_option_forms), cmocka_unit_test(test_connect_error_exit_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
