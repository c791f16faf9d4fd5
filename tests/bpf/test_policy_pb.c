/*
 * MapSnapshot protobuf <-> policy: round trip through the wire encoding,
 * CIDR errors naming the entry, allocation failures.
 */
#include <aegis/err.h>
#include <aegis/policy.h>
#include <aegis/policy_pb.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *J =
    "{\"version\":42,\"service_id\":7,\"ttl_seconds\":900,\"egress_mode\":\"allow\","
    "\"ingress_mode\":\"deny\",\"expiry_action\":\"fail_closed\","
    "\"edges\":[{\"dst_cidr\":\"10.10.20.0/24\",\"proto\":\"tcp\",\"port\":5432,\"id\":1,"
    "\"ttl_seconds\":300}],"
    "\"allow_cidrs\":[{\"cidr\":\"2001:db8::/32\",\"proto\":\"udp\",\"port\":53,\"id\":2,"
    "\"direction\":\"egress\"}],"
    "\"deny\":[{\"cidr\":\"1.2.3.4/32\",\"proto\":\"icmp\",\"id\":3}],"
    "\"meta\":{\"note\":\"x\"}}";

static void test_roundtrip(void **state)
{
    (void)state;
    struct aegis_policy *p = NULL, *q = NULL;
    char err[256] = "";
    assert_int_equal(aegis_policy_from_json(J, strlen(J), NULL, NULL, &p, err, sizeof(err)), 0);
    Aegis__V1__MapSnapshot *s = NULL;
    assert_int_equal(aegis_policy_to_pb(p, &s), 0);
    assert_int_equal(s->n_edges, 1);
    assert_string_equal(s->edges[0]->cidr, "10.10.20.0/24");
    assert_int_equal(s->egress_mode, AEGIS__V1__ENFORCE_MODE__ENFORCE_MODE_ALLOW_LIST);
    assert_int_equal(s->ingress_mode, AEGIS__V1__ENFORCE_MODE__ENFORCE_MODE_DENY_LIST);
    assert_int_equal(s->deny[0]->proto, AEGIS__V1__RULE_PROTO__RULE_PROTO_ICMP);
    assert_int_equal(s->allow_cidrs[0]->direction,
                     AEGIS__V1__RULE_DIRECTION__RULE_DIRECTION_EGRESS);
    /* Through the wire format and back. */
    size_t n = aegis__v1__map_snapshot__get_packed_size(s);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(aegis__v1__map_snapshot__pack(s, buf), n);
    aegis_policy_pb_free(p, s);
    Aegis__V1__MapSnapshot *u = aegis__v1__map_snapshot__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(u);
    assert_int_equal(aegis_policy_from_pb(u, NULL, NULL, &q, err, sizeof(err)), 0);
    aegis__v1__map_snapshot__free_unpacked(u, NULL);
    assert_int_equal(q->version, 42);
    assert_int_equal(q->service_id, 7);
    assert_int_equal(q->ttl_seconds, 900);
    assert_int_equal(q->expiry_action, AEGIS_POLICY_FAIL_CLOSED);
    for (int l = 0; l < AEGIS_POLICY_NLISTS; l++) {
        assert_int_equal(q->nrules[l], p->nrules[l]);
        assert_memory_equal(q->rules[l], p->rules[l], p->nrules[l] * sizeof(*p->rules[l]));
    }
    assert_int_equal(q->nmeta, 1);
    assert_string_equal(q->meta[0].value, "x");
    aegis_policy_del(p);
    aegis_policy_del(q);
}

static void test_bad_cidr_named(void **state)
{
    (void)state;
    Aegis__V1__Rule r0 = AEGIS__V1__RULE__INIT, r1 = AEGIS__V1__RULE__INIT;
    r0.cidr = (char *)"10.0.0.0/8";
    r1.cidr = (char *)"10.0.0.300/24";
    Aegis__V1__Rule *edges[] = {&r0, &r1};
    Aegis__V1__MapSnapshot s = AEGIS__V1__MAP_SNAPSHOT__INIT;
    s.version = 1;
    s.ttl_seconds = 60;
    s.n_edges = 2;
    s.edges = edges;
    struct aegis_policy *p = NULL;
    char err[256] = "";
    assert_int_equal(aegis_policy_from_pb(&s, NULL, NULL, &p, err, sizeof(err)), AEGIS_ERR_CONFIG);
    assert_non_null(strstr(err, "edges[1]: bad CIDR \"10.0.0.300/24\""));
    assert_null(p);
    r1.cidr = (char *)"10.1.0.0/16";
    r1.port = 70000;
    assert_int_equal(aegis_policy_from_pb(&s, NULL, NULL, &p, err, sizeof(err)), AEGIS_ERR_CONFIG);
    assert_non_null(strstr(err, "edges[1]: port 70000"));
    r1.port = 80;
    s.ttl_seconds = 0; /* seed 004: minimum 60 */
    assert_int_equal(aegis_policy_from_pb(&s, NULL, NULL, &p, err, sizeof(err)), AEGIS_ERR_CONFIG);
    assert_non_null(strstr(err, "ttl_seconds"));
    s.ttl_seconds = 60;
    assert_int_equal(aegis_policy_from_pb(&s, NULL, NULL, &p, err, sizeof(err)), 0);
    aegis_policy_del(p);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    for (unsigned long n = 1; n < 40; n++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, n, 0);
        struct aegis_policy *p = NULL;
        int rv = aegis_policy_from_json(J, strlen(J), NULL, &fm.mem, &p, NULL, 0);
        if (rv == 0) {
            Aegis__V1__MapSnapshot *s = NULL;
            rv = aegis_policy_to_pb(p, &s);
            if (rv == 0) {
                struct aegis_policy *q = NULL;
                rv = aegis_policy_from_pb(s, NULL, &fm.mem, &q, NULL, 0);
                aegis_policy_del(q);
                aegis_policy_pb_free(p, s);
            }
            aegis_policy_del(p);
        }
        assert_true(rv == 0 || rv == -ENOMEM);
        assert_int_equal(fm.live, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_bad_cidr_named),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
