/*
 * Policy JSON parser: seed 004's example, mode fields, every error class
 * with the entry it names, limits, allocation failures.
 */
#include <aegis/err.h>
#include <aegis/policy.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Seed 004's example request, verbatim. */
static const char *SEED004 =
    "{\n"
    "  \"version\": 1,\n"
    "  \"service_id\": 101,\n"
    "  \"edges\": [\n"
    "    {\"dst_cidr\": \"10.10.20.0/24\", \"proto\": \"tcp\", \"port\": 5432},\n"
    "    {\"dst_cidr\": \"10.10.30.15/32\", \"proto\": \"tcp\", \"port\": 443}\n"
    "  ],\n"
    "  \"allow_cidrs\": [\n"
    "    {\"cidr\": \"0.0.0.0/0\", \"proto\": \"tcp\", \"port\": 22}\n"
    "  ],\n"
    "  \"ttl_seconds\": 1800,\n"
    "  \"meta\": {\"note\": \"canary segmentation for service:web\"}\n"
    "}\n";

static int parse(const char *json, struct aegis_policy **pp, char *err, size_t errlen)
{
    return aegis_policy_from_json(json, strlen(json), NULL, NULL, pp, err, errlen);
}

static void test_seed004(void **state)
{
    (void)state;
    struct aegis_policy *p = NULL;
    char err[256] = "";
    assert_int_equal(parse(SEED004, &p, err, sizeof(err)), 0);
    assert_int_equal(p->version, 1);
    assert_int_equal(p->service_id, 101);
    assert_int_equal(p->ttl_seconds, 1800);
    assert_int_equal(p->egress_mode, AEGIS_POLICY_MODE_ALLOW); /* default for seed 004 */
    assert_int_equal(p->ingress_mode, AEGIS_POLICY_MODE_OFF);
    assert_int_equal(p->expiry_action, AEGIS_POLICY_FAIL_OPEN);
    assert_int_equal(p->nrules[AEGIS_POLICY_EDGES], 2);
    assert_int_equal(p->nrules[AEGIS_POLICY_ALLOW_CIDRS], 1);
    const struct aegis_policy_rule *e = &p->rules[AEGIS_POLICY_EDGES][1];
    assert_int_equal(e->prefixlen, 32);
    assert_int_equal(e->addr[3], 15);
    assert_int_equal(e->proto, AEGIS_POLICY_PROTO_TCP);
    assert_int_equal(e->port, 443);
    assert_int_equal(p->nmeta, 1);
    assert_string_equal(p->meta[0].key, "note");
    assert_string_equal(p->meta[0].value, "canary segmentation for service:web");
    aegis_policy_del(p);
}

static void test_mode_fields(void **state)
{
    (void)state;
    const char *j = "{\"version\":9,\"service_id\":0,\"ttl_seconds\":60,"
                    "\"egress_mode\":\"deny\",\"ingress_mode\":\"allow\","
                    "\"expiry_action\":\"fail_closed\","
                    "\"deny\":[{\"cidr\":\"2001:db8::/32\",\"proto\":\"udp\",\"port\":53,"
                    "\"direction\":\"egress\",\"id\":4,\"ttl_seconds\":120}],"
                    "\"allow_cidrs\":[{\"cidr\":\"10.0.0.0/8\",\"proto\":\"icmp\",\"port\":0,"
                    "\"direction\":\"ingress\"}],"
                    "\"meta\":{\"n\":5,\"b\":true}}";
    struct aegis_policy *p = NULL;
    char err[256] = "";
    assert_int_equal(parse(j, &p, err, sizeof(err)), 0);
    assert_int_equal(p->egress_mode, AEGIS_POLICY_MODE_DENY);
    assert_int_equal(p->ingress_mode, AEGIS_POLICY_MODE_ALLOW);
    assert_int_equal(p->expiry_action, AEGIS_POLICY_FAIL_CLOSED);
    const struct aegis_policy_rule *d = &p->rules[AEGIS_POLICY_DENY][0];
    assert_int_equal(d->family, 6);
    assert_int_equal(d->direction, AEGIS_POLICY_DIR_EGRESS);
    assert_int_equal(d->id, 4);
    assert_int_equal(d->ttl_seconds, 120);
    assert_int_equal(p->rules[AEGIS_POLICY_ALLOW_CIDRS][0].proto, AEGIS_POLICY_PROTO_ICMP);
    assert_string_equal(p->meta[0].value, "5");
    assert_string_equal(p->meta[1].value, "true");
    assert_int_equal(aegis_policy_rule_egress(AEGIS_POLICY_DENY, d), 1);
    assert_int_equal(aegis_policy_rule_ingress(AEGIS_POLICY_DENY, d), 0);
    aegis_policy_del(p);
}

struct bad_case {
    const char *json;
    int rv;
    const char *needle;
};

#define HDR "{\"version\":1,\"service_id\":1,\"ttl_seconds\":600,"

static void test_errors(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {HDR "\"edges\":[{\"dst_cidr\":\"10.0.0.0/8\",\"proto\":\"tcp\",\"port\":1},"
             "{\"dst_cidr\":\"10.0.0.0/8\",\"proto\":\"tcp\",\"port\":2},"
             "{\"dst_cidr\":\"10.0.0.0/8\",\"proto\":\"tcp\",\"port\":3},"
             "{\"dst_cidr\":\"10.0.0.300/24\",\"proto\":\"tcp\",\"port\":4}]}",
         AEGIS_ERR_CONFIG, "edges[3]: bad CIDR \"10.0.0.300/24\""},
        {HDR "\"edges\":[{\"dst_cidr\":\"10.0.0.0/8\",\"proto\":\"sctp\",\"port\":1}]}",
         AEGIS_ERR_CONFIG, "edges[0]: proto: unknown value \"sctp\""},
        {HDR "\"allow_cidrs\":[{\"cidr\":\"10.0.0.0/8\",\"proto\":\"tcp\",\"port\":65536}]}",
         AEGIS_ERR_CONFIG, "allow_cidrs[0]: port 65536 out of range"},
        {HDR "\"deny\":[{\"cidr\":\"10.0.0.0/8\",\"port\":-1}]}", AEGIS_ERR_CONFIG,
         "deny[0]: port -1 out of range"},
        {HDR "\"deny\":[{\"cidr\":\"10.0.0.0/8\",\"port\":\"80\"}]}", AEGIS_ERR_MALFORMED,
         "deny[0]: port: must be an integer"},
        {HDR "\"deny\":[{\"cidr\":\"1.0.0.0/8\",\"id\":5},{\"cidr\":\"2.0.0.0/8\",\"id\":5}]}",
         AEGIS_ERR_CONFIG, "deny[1]: duplicate rule id 5 (also used by deny[0])"},
        {"{\"version\":1,\"service_id\":1,\"ttl_seconds\":59}", AEGIS_ERR_CONFIG,
         "ttl_seconds: 59 is below the minimum 60"},
        {HDR "\"edges\":[{\"dst_cidr\":\"10.0.0.0/8\",\"ttl_seconds\":30}]}", AEGIS_ERR_CONFIG,
         "edges[0]: ttl_seconds 30 below the minimum"},
        {"{\"version\":1,\"service_id\":1}", AEGIS_ERR_CONFIG,
         "missing required key \"ttl_seconds\""},
        {"{\"service_id\":1,\"ttl_seconds\":60}", AEGIS_ERR_CONFIG, "\"version\""},
        {HDR "\"egress_mod\":\"deny\"}", AEGIS_ERR_MALFORMED, "unknown key \"egress_mod\""},
        {HDR "\"egress_mode\":\"block\"}", AEGIS_ERR_CONFIG,
         "egress_mode: unknown value \"block\""},
        {HDR "\"expiry_action\":1}", AEGIS_ERR_MALFORMED, "expiry_action: must be a string"},
        {HDR "\"edges\":[{\"cidr\":\"10.0.0.0/8\",\"colour\":1}]}", AEGIS_ERR_MALFORMED,
         "edges[0]: unknown key \"colour\""},
        {HDR "\"edges\":[{\"proto\":\"tcp\"}]}", AEGIS_ERR_CONFIG, "edges[0]: missing dst_cidr"},
        {HDR "\"deny\":[{\"dst_cidr\":\"10.0.0.0/8\"}]}", AEGIS_ERR_MALFORMED,
         "deny[0]: unknown key \"dst_cidr\""},
        {HDR "\"edges\":{}}", AEGIS_ERR_MALFORMED, "edges: must be an array"},
        {HDR "\"edges\":[5]}", AEGIS_ERR_MALFORMED, "edges[0]: must be an object"},
        {HDR "\"edges\":[{\"dst_cidr\":\"10.0.0.0/8\",\"direction\":\"up\"}]}", AEGIS_ERR_CONFIG,
         "edges[0]: direction: unknown value"},
        {HDR "\"edges\":[{\"dst_cidr\":\"10.0.0.0/8\",\"proto\":\"icmp\",\"port\":8}]}",
         AEGIS_ERR_CONFIG, "edges[0]: icmp has no ports"},
        {HDR "\"edges\":[{\"dst_cidr\":\"10.0.0.0/8\"},{\"cidr\":\"10.0.0.0/8\"}]}",
         AEGIS_ERR_CONFIG, "edges[1]: same CIDR"},
        {HDR "\"version\":-3}", AEGIS_ERR_CONFIG, "version -3 out of range"},
        {"[1,2]", AEGIS_ERR_MALFORMED, "must be a JSON object"},
        {"{\"version\":1,", AEGIS_ERR_MALFORMED, "not valid JSON"},
        {"{\"version\":1} x", AEGIS_ERR_MALFORMED, "trailing data"},
        {"{\"a\":[[[[[[[[[[1]]]]]]]]]]}", AEGIS_ERR_MALFORMED, "not valid JSON"},
        {"", AEGIS_ERR_MALFORMED, "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct aegis_policy *p = NULL;
        char err[256] = "";
        int rv = parse(cases[i].json, &p, err, sizeof(err));
        if (rv != cases[i].rv || !strstr(err, cases[i].needle))
            fail_msg("case %zu: rv %d err \"%s\", expected %d \"%s\"", i, rv, err, cases[i].rv,
                     cases[i].needle);
        assert_null(p);
    }
}

static void test_limits(void **state)
{
    (void)state;
    struct aegis_policy_limits lim;
    aegis_policy_limits_default(&lim);
    lim.max_json_bytes = 16;
    struct aegis_policy *p = NULL;
    char err[256] = "";
    assert_int_equal(
        aegis_policy_from_json(SEED004, strlen(SEED004), &lim, NULL, &p, err, sizeof(err)),
        AEGIS_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "over the limit of 16"));
    aegis_policy_limits_default(&lim);
    lim.max_rules = 2;
    assert_int_equal(
        aegis_policy_from_json(SEED004, strlen(SEED004), &lim, NULL, &p, err, sizeof(err)),
        AEGIS_ERR_LIMIT);
    assert_non_null(strstr(err, "3 rules exceed the limit of 2"));
    aegis_policy_limits_default(&lim);
    lim.max_meta = 0;
    assert_int_equal(
        aegis_policy_from_json(SEED004, strlen(SEED004), &lim, NULL, &p, err, sizeof(err)),
        AEGIS_ERR_LIMIT);
    assert_null(p);
    /* Not NUL-terminated: the parser honours len. */
    char buf[64];
    const char *j = "{\"version\":1,\"service_id\":1,\"ttl_seconds\":60}";
    memcpy(buf, j, strlen(j));
    memset(buf + strlen(j), '}', sizeof(buf) - strlen(j));
    assert_int_equal(aegis_policy_from_json(buf, strlen(j), NULL, NULL, &p, err, sizeof(err)), 0);
    aegis_policy_del(p);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    for (unsigned long n = 1; n < 30; n++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, n, 0);
        struct aegis_policy *p = NULL;
        int rv = aegis_policy_from_json(SEED004, strlen(SEED004), NULL, &fm.mem, &p, NULL, 0);
        assert_true(rv == 0 || rv == -ENOMEM);
        aegis_policy_del(p);
        assert_int_equal(fm.live, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed004),        cmocka_unit_test(test_mode_fields),
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_limits),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
