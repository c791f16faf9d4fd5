/*
 * aegisctl policies push|list|promote|rollback against the scripted RPC fake.
 * A bad policy file is refused locally (exit 4) with the entry named.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ctl_cli_fake.h"

#include <aegis/grpc_status.h>
#include <aegis/v1/operator.pb-c.h>

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

/* Seed 004's example, plus a deny-list ingress. */
static const char GOOD[] =
    "{\n"
    "  \"version\": 4, \"service_id\": 101,\n"
    "  \"edges\": [\n"
    "    {\"dst_cidr\": \"10.10.20.0/24\", \"proto\": \"tcp\", \"port\": 5432},\n"
    "    {\"dst_cidr\": \"10.10.30.15/32\", \"proto\": \"tcp\", \"port\": 443}\n"
    "  ],\n"
    "  \"allow_cidrs\": [{\"cidr\": \"0.0.0.0/0\", \"proto\": \"tcp\", \"port\": 22}],\n"
    "  \"deny\": [{\"cidr\": \"192.0.2.0/24\"}],\n"
    "  \"ingress_mode\": \"deny\",\n"
    "  \"ttl_seconds\": 1800,\n"
    "  \"meta\": {\"note\": \"canary\"}\n"
    "}\n";

static char *write_file(const char *name, const char *text)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static int setup(void **state)
{
    (void)state;
    return fake_tmpdir(dir, "pol");
}

static int teardown(void **state)
{
    (void)state;
    return fake_rmtree(dir);
}

static void test_push(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    char *good = write_file("good.json", GOOD);
    Aegis__V1__Policy pol = AEGIS__V1__POLICY__INIT;
    Aegis__V1__MapSnapshot snap = AEGIS__V1__MAP_SNAPSHOT__INIT;
    snap.service_id = 101;
    pol.version = 4;
    pol.snapshot = &snap;
    pol.state = AEGIS__V1__POLICY_STATE__POLICY_STATE_DRAFT;
    Aegis__V1__PushPolicyResponse r = AEGIS__V1__PUSH_POLICY_RESPONSE__INIT;
    r.policy = &pol;
    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "policies", "push", good, "--selector", "svc=web", "--comment",
                              "open 5432", "--canary-agent", "a1", NULL),
                     0);
    Aegis__V1__PushPolicyRequest *q =
        (void *)fake_request(&f, 0, &aegis__v1__push_policy_request__descriptor);
    assert_non_null(q->snapshot);
    assert_int_equal(q->snapshot->version, 4);
    assert_int_equal(q->snapshot->service_id, 101);
    assert_int_equal(q->snapshot->ttl_seconds, 1800);
    assert_int_equal(q->snapshot->n_edges, 2);
    assert_string_equal(q->snapshot->edges[0]->cidr, "10.10.20.0/24");
    assert_int_equal(q->snapshot->edges[1]->port, 443);
    assert_int_equal(q->snapshot->edges[1]->proto, AEGIS__V1__RULE_PROTO__RULE_PROTO_TCP);
    assert_int_equal(q->snapshot->n_allow_cidrs, 1);
    assert_int_equal(q->snapshot->n_deny, 1);
    assert_int_equal(q->snapshot->egress_mode,
                     AEGIS__V1__ENFORCE_MODE__ENFORCE_MODE_ALLOW_LIST); /* seed 004 default */
    assert_int_equal(q->snapshot->ingress_mode, AEGIS__V1__ENFORCE_MODE__ENFORCE_MODE_DENY_LIST);
    assert_int_equal(q->snapshot->n_meta, 1);
    assert_string_equal(q->target->selector, "svc=web");
    assert_non_null(q->canary);
    assert_int_equal(q->canary->n_agent_ids, 1);
    assert_string_equal(q->comment, "open 5432");
    ctl_pb_free(&q->base);
    assert_string_equal(f.out, "stored service 101 version 4 (draft)\n");

    /* bad files: exit 4 naming the entry, nothing sent */
    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"{\"version\":1,\"service_id\":1,\"ttl_seconds\":30}", "ttl"},
        {"{\"version\":1,\"service_id\":1,\"ttl_seconds\":60,\"edges\":[{\"dst_cidr\":"
         "\"10.0.0.0/8\",\"proto\":\"tcp\",\"port\":70000}]}",
         "edges[0]"},
        {"{\"version\":1,\"service_id\":1,\"ttl_seconds\":60,\"egdes\":[]}", "egdes"},
        {"{\"version\":1,", "JSON"},
    };
    size_t calls = f.ncalls;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "bad%zu.json", i);
        char *p = write_file(name, bad[i].json);
        assert_int_equal(fake_run(&f, "policies", "push", p, NULL), CTL_EXIT_INPUT);
        if (!strstr(f.err, bad[i].msg) || !strstr(f.err, p) || !strstr(f.err, "nothing was pushed"))
            fail_msg("case %zu: %s", i, f.err);
        free(p);
    }
    assert_int_equal(fake_run(&f, "policies", "push", "/nonexistent.json", NULL), CTL_EXIT_INPUT);
    assert_non_null(strstr(f.err, "cannot read policy /nonexistent.json"));
    assert_int_equal(f.ncalls, calls);
    free(good);
    fake_free(&f);
}

static void test_list_promote_rollback(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    Aegis__V1__MapSnapshot s1 = AEGIS__V1__MAP_SNAPSHOT__INIT, s2 = AEGIS__V1__MAP_SNAPSHOT__INIT;
    Aegis__V1__Rule rule = AEGIS__V1__RULE__INIT;
    Aegis__V1__Rule *rules[] = {&rule, &rule};
    s1.service_id = 101;
    s1.n_edges = 2;
    s1.edges = rules;
    s2.service_id = 7;
    Aegis__V1__Policy p1 = AEGIS__V1__POLICY__INIT, p2 = AEGIS__V1__POLICY__INIT;
    p1.version = 4;
    p1.snapshot = &s1;
    p1.state = AEGIS__V1__POLICY_STATE__POLICY_STATE_PROMOTED;
    p1.created_unix_ns = (int64_t)FAKE_NOW_NS;
    p1.author = (char *)"alice";
    p1.comment = (char *)"open 5432";
    p2.version = 2;
    p2.snapshot = &s2;
    p2.state = AEGIS__V1__POLICY_STATE__POLICY_STATE_ROLLED_BACK;
    Aegis__V1__Policy *ps[] = {&p1, &p2};
    Aegis__V1__ListPoliciesResponse lr = AEGIS__V1__LIST_POLICIES_RESPONSE__INIT;
    lr.n_policies = 2;
    lr.policies = ps;
    fake_reply(&f, 0, NULL, &lr.base);
    assert_int_equal(fake_run(&f, "policies", "list", NULL), 0);
    const char *cells[] = {
        "SERVICE", "VERSION",   "STATE", "RULES",    "CREATED",     "AUTHOR",
        "COMMENT", "101",       "4",     "promoted", "2",           "2026-11-23T07:00:00Z",
        "alice",   "open 5432", "7",     "2",        "rolled_back", "0",
        "-",       "-",         "-"};
    char *want = fake_expect_table(7, cells, 3);
    assert_string_equal(f.out, want);
    free(want);

    /* promote without --service: looks the version up first */
    fake_reply(&f, 0, NULL, &lr.base);
    Aegis__V1__PromotePolicyResponse pr = AEGIS__V1__PROMOTE_POLICY_RESPONSE__INIT;
    pr.policy = &p1;
    pr.command_id = (char *)"cmd-p";
    pr.targeted_agents = 12;
    fake_reply(&f, 0, NULL, &pr.base);
    assert_int_equal(fake_run(&f, "policies", "promote", "4", NULL), 0);
    assert_string_equal(f.path[1], "/aegis.v1.OperatorService/ListPolicies");
    Aegis__V1__PromotePolicyRequest *q =
        (void *)fake_request(&f, 2, &aegis__v1__promote_policy_request__descriptor);
    assert_int_equal(q->service_id, 101);
    assert_int_equal(q->version, 4);
    ctl_pb_free(&q->base);
    assert_string_equal(f.out, "promoted service 101 version 4 (promoted); command cmd-p\n"
                               "sent to 12 agent(s) (follow with `aegisctl commands watch "
                               "cmd-p`)\n");
    /* with --service no lookup */
    fake_reply(&f, 0, NULL, &pr.base);
    assert_int_equal(fake_run(&f, "policies", "promote", "4", "--service", "101", "--json", NULL),
                     0);
    assert_string_equal(f.path[3], "/aegis.v1.OperatorService/PromotePolicy");
    struct json_object *o = fake_json(&f), *v;
    assert_true(json_object_object_get_ex(o, "targeted_agents", &v));
    assert_int_equal(json_object_get_int(v), 12);
    json_object_put(o);
    assert_int_equal(fake_run(&f, "policies", "promote", "four", NULL), 2);

    /* rollback: the single promoted service is found; several -> usage */
    Aegis__V1__Policy *one[] = {&p1};
    Aegis__V1__ListPoliciesResponse promoted = AEGIS__V1__LIST_POLICIES_RESPONSE__INIT;
    promoted.n_policies = 1;
    promoted.policies = one;
    fake_reply(&f, 0, NULL, &promoted.base);
    Aegis__V1__RollbackPolicyResponse rr = AEGIS__V1__ROLLBACK_POLICY_RESPONSE__INIT;
    rr.policy = &p2;
    rr.command_id = (char *)"cmd-r";
    fake_reply(&f, 0, NULL, &rr.base);
    assert_int_equal(fake_run(&f, "policies", "rollback", "--to", "3", NULL), 0);
    Aegis__V1__ListPoliciesRequest *lq =
        (void *)fake_request(&f, 4, &aegis__v1__list_policies_request__descriptor);
    assert_int_equal(lq->state, AEGIS__V1__POLICY_STATE__POLICY_STATE_PROMOTED);
    ctl_pb_free(&lq->base);
    Aegis__V1__RollbackPolicyRequest *rq =
        (void *)fake_request(&f, 5, &aegis__v1__rollback_policy_request__descriptor);
    assert_int_equal(rq->service_id, 101);
    assert_int_equal(rq->to_version, 3);
    ctl_pb_free(&rq->base);
    assert_non_null(strstr(f.out, "rolled back to service 7 version 2"));
    fake_reply(&f, 0, NULL, &lr.base); /* both services have a row */
    p2.state = AEGIS__V1__POLICY_STATE__POLICY_STATE_PROMOTED;
    assert_int_equal(fake_run(&f, "policies", "rollback", NULL), 2);
    assert_non_null(strstr(f.err, "several services"));
    fake_reply(&f, AEGIS_GRPC_FAILED_PRECONDITION, "nothing to roll back to", NULL);
    assert_int_equal(fake_run(&f, "policies", "rollback", "--service", "7", NULL), 1);
    assert_non_null(strstr(f.err, "RollbackPolicy: FAILED_PRECONDITION: nothing to roll back"));
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push),
        cmocka_unit_test(test_list_promote_rollback),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
