/*
 * Policy model: CIDR parsing, validation errors naming the entry, overlap
 * detection, compilation into trie entries, allocation failures.
 */
#include <aegis/err.h>
#include <aegis/policy.h>
#include <aegis/tstamp.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy_compile.h"

static struct aegis_policy_rule rule(const char *cidr, uint32_t proto, uint32_t port)
{
    struct aegis_policy_rule r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(aegis_policy_parse_cidr(cidr, &r, NULL, 0), 0);
    r.proto = proto;
    r.port = port;
    return r;
}

static struct aegis_policy *base_policy(const struct aegis_mem *mem)
{
    struct aegis_policy *p = NULL;
    assert_int_equal(aegis_policy_new(mem, &p), 0);
    p->version = 1;
    p->ttl_seconds = 600;
    p->egress_mode = AEGIS_POLICY_MODE_ALLOW;
    return p;
}

static void test_cidr_parse(void **state)
{
    (void)state;
    struct aegis_policy_rule r;
    char why[80];
    assert_int_equal(aegis_policy_parse_cidr("10.0.0.0/8", &r, why, sizeof(why)), 0);
    assert_int_equal(r.family, 4);
    assert_int_equal(r.prefixlen, 8);
    assert_int_equal(r.addr[0], 10);
    assert_int_equal(aegis_policy_parse_cidr("2001:db8::/32", &r, why, sizeof(why)), 0);
    assert_int_equal(r.family, 6);
    assert_int_equal(r.prefixlen, 32);
    assert_int_equal(aegis_policy_parse_cidr("192.0.2.7", &r, why, sizeof(why)), 0);
    assert_int_equal(r.prefixlen, 32);
    assert_int_equal(aegis_policy_parse_cidr("::1", &r, why, sizeof(why)), 0);
    assert_int_equal(r.prefixlen, 128);
    assert_int_equal(aegis_policy_parse_cidr("0.0.0.0/0", &r, why, sizeof(why)), 0);
    assert_int_equal(r.prefixlen, 0);

    static const char *const bad[] = {
        "10.0.0.300/24", "10.0.0.0/33",   "10.0.0.1/24",    "",
        "10.0.0.0/",     "10.0.0.0/8x",   "2001:db8::/129", "2001:db8::1/32",
        "hello",         "10.0.0.0/0008", "1.2.3.4/-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(aegis_policy_parse_cidr(bad[i], &r, why, sizeof(why)), -EINVAL);
        assert_true(why[0] != '\0');
    }
    assert_int_equal(aegis_policy_parse_cidr("10.0.0.1/24", &r, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "host bits"));
    char buf[64];
    r = rule("2001:db8::/32", 0, 0);
    aegis_policy_format_cidr(&r, buf, sizeof(buf));
    assert_string_equal(buf, "2001:db8::/32");
}

static void expect_invalid(struct aegis_policy *p, int code, const char *needle)
{
    char err[256] = "";
    assert_int_equal(aegis_policy_validate(p, NULL, err, sizeof(err)), code);
    if (!strstr(err, needle))
        fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static void test_validate_errors_name_entry(void **state)
{
    (void)state;
    struct aegis_policy *p = base_policy(NULL);
    assert_int_equal(aegis_policy_validate(p, NULL, NULL, 0), 0);
    struct aegis_policy_rule r = rule("10.0.0.0/8", AEGIS_POLICY_PROTO_TCP, 80);
    for (int i = 0; i < 4; i++) {
        r.addr[1] = (uint8_t)i;
        r.prefixlen = 16;
        assert_int_equal(aegis_policy_add_rule(p, AEGIS_POLICY_EDGES, &r), 0);
    }
    assert_int_equal(aegis_policy_validate(p, NULL, NULL, 0), 0);

    p->rules[AEGIS_POLICY_EDGES][3].port = 70000;
    expect_invalid(p, AEGIS_ERR_CONFIG, "edges[3]: port 70000 out of range");
    p->rules[AEGIS_POLICY_EDGES][3].port = 80;
    p->rules[AEGIS_POLICY_EDGES][2].proto = 9;
    expect_invalid(p, AEGIS_ERR_CONFIG, "edges[2]: unknown protocol 9");
    p->rules[AEGIS_POLICY_EDGES][2].proto = AEGIS_POLICY_PROTO_ICMP;
    expect_invalid(p, AEGIS_ERR_CONFIG, "edges[2]: icmp has no ports");
    p->rules[AEGIS_POLICY_EDGES][2].proto = AEGIS_POLICY_PROTO_TCP;
    p->rules[AEGIS_POLICY_EDGES][1].ttl_seconds = 59;
    expect_invalid(p, AEGIS_ERR_CONFIG, "edges[1]: ttl_seconds 59 below the minimum 60");
    p->rules[AEGIS_POLICY_EDGES][1].ttl_seconds = 60;
    p->rules[AEGIS_POLICY_EDGES][0].direction = 7;
    expect_invalid(p, AEGIS_ERR_CONFIG, "edges[0]: unknown direction");
    p->rules[AEGIS_POLICY_EDGES][0].direction = 0;
    p->rules[AEGIS_POLICY_EDGES][0].family = 5;
    expect_invalid(p, AEGIS_ERR_CONFIG, "edges[0]: bad CIDR");
    p->rules[AEGIS_POLICY_EDGES][0].family = 4;

    p->rules[AEGIS_POLICY_EDGES][0].id = 7;
    struct aegis_policy_rule d = rule("1.2.3.4/32", AEGIS_POLICY_PROTO_ANY, 0);
    d.id = 7;
    assert_int_equal(aegis_policy_add_rule(p, AEGIS_POLICY_DENY, &d), 0);
    expect_invalid(p, AEGIS_ERR_CONFIG, "deny[0]: duplicate rule id 7 (also used by edges[0])");
    p->rules[AEGIS_POLICY_DENY][0].id = 8;
    assert_int_equal(aegis_policy_validate(p, NULL, NULL, 0), 0);

    p->ttl_seconds = 59;
    expect_invalid(p, AEGIS_ERR_CONFIG, "ttl_seconds: 59 is below the minimum 60");
    p->ttl_seconds = 60;
    p->version = 0;
    expect_invalid(p, AEGIS_ERR_CONFIG, "version");
    p->version = 1;
    p->ingress_mode = 3;
    expect_invalid(p, AEGIS_ERR_CONFIG, "ingress_mode");
    p->ingress_mode = 0;
    p->expiry_action = 2;
    expect_invalid(p, AEGIS_ERR_CONFIG, "expiry_action");
    p->expiry_action = 0;
    assert_int_equal(aegis_policy_validate(p, NULL, NULL, 0), 0);
    aegis_policy_del(p);
}

static void test_limits(void **state)
{
    (void)state;
    struct aegis_policy *p = base_policy(NULL);
    struct aegis_policy_rule r = rule("10.0.0.0/24", AEGIS_POLICY_PROTO_UDP, 53);
    for (int i = 0; i < 5; i++) {
        r.addr[2] = (uint8_t)i;
        assert_int_equal(aegis_policy_add_rule(p, AEGIS_POLICY_ALLOW_CIDRS, &r), 0);
    }
    struct aegis_policy_limits lim;
    aegis_policy_limits_default(&lim);
    lim.max_rules = 4;
    char err[200] = "";
    assert_int_equal(aegis_policy_validate(p, &lim, err, sizeof(err)), AEGIS_ERR_LIMIT);
    assert_non_null(strstr(err, "5 rules exceed the limit of 4"));
    lim.max_rules = 5;
    assert_int_equal(aegis_policy_validate(p, &lim, err, sizeof(err)), 0);
    lim.min_ttl_seconds = 601;
    assert_int_equal(aegis_policy_validate(p, &lim, err, sizeof(err)), AEGIS_ERR_CONFIG);
    lim.min_ttl_seconds = 60;
    lim.max_meta = 1;
    assert_int_equal(aegis_policy_add_meta(p, "a", "1"), 0);
    assert_int_equal(aegis_policy_add_meta(p, "b", "2"), 0);
    assert_int_equal(aegis_policy_validate(p, &lim, err, sizeof(err)), AEGIS_ERR_LIMIT);
    assert_non_null(strstr(err, "meta"));
    aegis_policy_del(p);

    /* The hard cap stops growth whatever the configured limit. */
    p = base_policy(NULL);
    r = rule("10.0.0.0/32", AEGIS_POLICY_PROTO_TCP, 1);
    int rv = 0;
    for (unsigned i = 0; i <= AEGIS_POLICY_RULES_HARD_MAX && rv == 0; i++)
        rv = aegis_policy_add_rule(p, AEGIS_POLICY_EDGES, &r);
    assert_int_equal(rv, AEGIS_ERR_LIMIT);
    assert_int_equal(aegis_policy_rule_count(p), AEGIS_POLICY_RULES_HARD_MAX);
    aegis_policy_del(p);
}

static void test_overlap(void **state)
{
    (void)state;
    struct aegis_policy *p = base_policy(NULL);
    struct aegis_policy_rule a = rule("0.0.0.0/0", AEGIS_POLICY_PROTO_TCP, 22);
    assert_int_equal(aegis_policy_add_rule(p, AEGIS_POLICY_EDGES, &a), 0);
    /* allow_cidrs default is both directions: overlaps the egress edge. */
    assert_int_equal(aegis_policy_add_rule(p, AEGIS_POLICY_ALLOW_CIDRS, &a), 0);
    expect_invalid(p, AEGIS_ERR_CONFIG,
                   "allow_cidrs[0]: same CIDR, protocol, port and direction "
                   "(egress) as edges[0]");
    /* Ingress only: no overlap with the egress edge. */
    p->rules[AEGIS_POLICY_ALLOW_CIDRS][0].direction = AEGIS_POLICY_DIR_INGRESS;
    assert_int_equal(aegis_policy_validate(p, NULL, NULL, 0), 0);
    /* The same match in deny is a different set. */
    assert_int_equal(aegis_policy_add_rule(p, AEGIS_POLICY_DENY, &a), 0);
    assert_int_equal(aegis_policy_validate(p, NULL, NULL, 0), 0);
    aegis_policy_del(p);
}

static void test_compile(void **state)
{
    (void)state;
    struct aegis_policy *p = base_policy(NULL);
    p->ingress_mode = AEGIS_POLICY_MODE_DENY;
    struct aegis_policy_rule e = rule("10.10.20.0/24", AEGIS_POLICY_PROTO_TCP, 5432);
    e.ttl_seconds = 120;
    assert_int_equal(aegis_policy_add_rule(p, AEGIS_POLICY_EDGES, &e), 0);
    struct aegis_policy_rule a = rule("2001:db8::/32", AEGIS_POLICY_PROTO_ANY, 0);
    assert_int_equal(aegis_policy_add_rule(p, AEGIS_POLICY_ALLOW_CIDRS, &a), 0);
    struct aegis_policy_rule d = rule("1.2.3.4/32", AEGIS_POLICY_PROTO_ICMP, 0);
    assert_int_equal(aegis_policy_add_rule(p, AEGIS_POLICY_DENY, &d), 0);
    struct aegis_policy_compiled c;
    uint64_t now = 1000 * AEGIS_NS_PER_S;
    assert_int_equal(aegis_policy_compile(p, now, 5, &c), 0);
    /* egress allow: edge + allow_cidr; ingress deny: deny only. */
    assert_int_equal(c.n, 3);
    assert_int_equal(c.conf.nrules, 3);
    assert_int_equal(c.conf.mode[AEGIS_ABI_EGRESS], AEGIS_ABI_MODE_ALLOW);
    assert_int_equal(c.conf.mode[AEGIS_ABI_INGRESS], AEGIS_ABI_MODE_DENY);
    assert_int_equal(c.conf.expires_ns, now + 600 * AEGIS_NS_PER_S);
    assert_int_equal(c.conf.flow_idle_ns, 5);
    assert_int_equal(c.keys[0].prefixlen, AEGIS_LPM_FIXED_BITS + 24);
    assert_int_equal(c.keys[0].dir, AEGIS_ABI_EGRESS);
    assert_int_equal(c.keys[0].proto, AEGIS_ABI_PROTO_TCP);
    assert_int_equal(c.keys[0].port, 5432);
    assert_int_equal(c.keys[0].family, 4);
    assert_int_equal(c.vals[0].rule, 0);
    assert_int_equal(c.vals[0].expires_ns, now + 120 * AEGIS_NS_PER_S);
    assert_int_equal(c.keys[1].family, 6);
    assert_int_equal(c.keys[1].prefixlen, AEGIS_LPM_FIXED_BITS + 32);
    assert_int_equal(c.vals[1].rule, 1);
    assert_int_equal(c.vals[1].expires_ns, 0);
    assert_int_equal(c.keys[2].dir, AEGIS_ABI_INGRESS);
    assert_int_equal(c.vals[2].rule, 2);
    assert_int_equal(c.conf.classes[AEGIS_ABI_EGRESS], AEGIS_CLASS_BIT(AEGIS_ABI_PROTO_TCP, 1) |
                                                           AEGIS_CLASS_BIT(AEGIS_ABI_PROTO_ANY, 0));
    assert_int_equal(c.conf.classes[AEGIS_ABI_INGRESS], AEGIS_CLASS_BIT(AEGIS_ABI_PROTO_ICMP, 0));
    aegis_policy_compiled_free(NULL, &c);

    enum aegis_policy_list l;
    size_t idx;
    assert_int_equal(aegis_policy_rule_at(p, 2, &l, &idx), 0);
    assert_int_equal(l, AEGIS_POLICY_DENY);
    assert_int_equal(idx, 0);
    assert_int_equal(aegis_policy_rule_at(p, 3, &l, &idx), -ENOENT);
    aegis_policy_del(p);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    /* Fail each allocation in turn: every path returns -ENOMEM, none leaks. */
    for (unsigned long n = 1; n < 40; n++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, n, 0);
        struct aegis_policy *p = NULL;
        int rv = aegis_policy_new(&fm.mem, &p);
        if (rv == 0) {
            p->version = 1;
            p->ttl_seconds = 60;
            struct aegis_policy_rule r = rule("10.0.0.0/8", AEGIS_POLICY_PROTO_TCP, 1);
            for (int i = 0; i < 20 && rv == 0; i++) {
                r.port = (uint32_t)i + 1;
                rv = aegis_policy_add_rule(p, AEGIS_POLICY_EDGES, &r);
            }
            if (rv == 0)
                rv = aegis_policy_add_meta(p, "k", "v");
            if (rv == 0)
                rv = aegis_policy_validate(p, NULL, NULL, 0);
            struct aegis_policy_compiled c;
            if (rv == 0)
                rv = aegis_policy_compile(p, 0, 0, &c);
            if (rv == 0)
                aegis_policy_compiled_free(&fm.mem, &c);
            aegis_policy_del(p);
        }
        assert_true(rv == 0 || rv == -ENOMEM);
        assert_int_equal(fm.live, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_parse), cmocka_unit_test(test_validate_errors_name_entry),
        cmocka_unit_test(test_limits),     cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_compile),    cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
