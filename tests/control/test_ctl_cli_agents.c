/*
 * aegisctl agents list|show|revoke against the scripted RPC fake: requests,
 * paging, table and JSON output, server errors and exit codes.
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

static void test_list_table_and_paging(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    Aegis__V1__Agent a1 = AEGIS__V1__AGENT__INIT, a2 = AEGIS__V1__AGENT__INIT;
    Aegis__V1__HostFacts h1 = AEGIS__V1__HOST_FACTS__INIT;
    Aegis__V1__Labels l1 = AEGIS__V1__LABELS__INIT;
    Aegis__V1__Labels__EntriesEntry e1 = AEGIS__V1__LABELS__ENTRIES_ENTRY__INIT,
                                    e2 = AEGIS__V1__LABELS__ENTRIES_ENTRY__INIT;
    Aegis__V1__Labels__EntriesEntry *ents[] = {&e1, &e2};
    e1.key = (char *)"env";
    e1.value = (char *)"prod";
    e2.key = (char *)"role";
    e2.value = (char *)"db";
    l1.n_entries = 2;
    l1.entries = ents;
    h1.hostname = (char *)"db-01.example";
    a1.agent_id = (char *)"11111111-aaaa";
    a1.host = &h1;
    a1.labels = &l1;
    a1.version = (char *)"0.1.0";
    a1.status = AEGIS__V1__AGENT_STATUS__AGENT_STATUS_ONLINE;
    a1.last_seen_unix_ns = (int64_t)FAKE_NOW_NS;
    a2.agent_id = (char *)"2";
    a2.host_id = (char *)"host-two";
    a2.version = (char *)"0.0.9";
    a2.status = AEGIS__V1__AGENT_STATUS__AGENT_STATUS_OFFLINE;

    /* page 1 has a next token; page 2 is the last */
    Aegis__V1__Agent *p1[] = {&a1};
    Aegis__V1__Agent *p2[] = {&a2};
    Aegis__V1__PageResponse pr1 = AEGIS__V1__PAGE_RESPONSE__INIT;
    pr1.next_page_token = (char *)"tok-2";
    Aegis__V1__ListAgentsResponse r1 = AEGIS__V1__LIST_AGENTS_RESPONSE__INIT,
                                  r2 = AEGIS__V1__LIST_AGENTS_RESPONSE__INIT;
    r1.n_agents = 1;
    r1.agents = p1;
    r1.page = &pr1;
    r2.n_agents = 1;
    r2.agents = p2;
    fake_reply(&f, 0, NULL, &r1.base);
    fake_reply(&f, 0, NULL, &r2.base);
    assert_int_equal(fake_run(&f, "agents", "list", "--label", "env=prod", "--label", "role=db",
                              "--status", "online", NULL),
                     0);
    assert_int_equal(f.ncalls, 2);
    assert_string_equal(f.path[0], "/aegis.v1.OperatorService/ListAgents");
    Aegis__V1__ListAgentsRequest *q =
        (void *)fake_request(&f, 0, &aegis__v1__list_agents_request__descriptor);
    assert_string_equal(q->selector, "env=prod,role=db");
    assert_int_equal(q->status, AEGIS__V1__AGENT_STATUS__AGENT_STATUS_ONLINE);
    assert_string_equal(q->page->page_token, "");
    assert_int_equal(q->page->limit, CTL_PAGE_SIZE);
    ctl_pb_free(&q->base);
    q = (void *)fake_request(&f, 1, &aegis__v1__list_agents_request__descriptor);
    assert_string_equal(q->page->page_token, "tok-2"); /* followed the token */
    ctl_pb_free(&q->base);

    const char *cells[] = {
        "ID",
        "HOST",
        "STATUS",
        "VERSION",
        "LAST SEEN",
        "LABELS",
        "11111111-aaaa",
        "db-01.example",
        "online",
        "0.1.0",
        "2026-11-23T07:00:00Z",
        "env=prod,role=db",
        "2",
        "host-two",
        "offline",
        "0.0.9",
        "-",
        "-",
    };
    char *want = fake_expect_table(6, cells, 3);
    assert_string_equal(f.out, want);
    free(want);

    /* --json: one document {"agents": [...]} with the protocol's keys */
    fake_free(&f);
    fake_init(&f);
    fake_reply(&f, 0, NULL, &r2.base);
    assert_int_equal(fake_run(&f, "agents", "list", "--json", "--limit", "5", NULL), 0);
    q = (void *)fake_request(&f, 0, &aegis__v1__list_agents_request__descriptor);
    assert_int_equal(q->page->limit, 5);
    ctl_pb_free(&q->base);
    struct json_object *o = fake_json(&f), *arr, *ag, *v;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "agents", &arr));
    assert_int_equal(json_object_array_length(arr), 1);
    ag = json_object_array_get_idx(arr, 0);
    assert_true(json_object_object_get_ex(ag, "agent_id", &v));
    assert_string_equal(json_object_get_string(v), "2");
    assert_true(json_object_object_get_ex(ag, "status", &v));
    assert_string_equal(json_object_get_string(v), "offline");
    assert_true(json_object_object_get_ex(ag, "host_id", &v));
    assert_string_equal(json_object_get_string(v), "host-two");
    json_object_put(o);
    fake_free(&f);
}

static void test_list_errors(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    assert_int_equal(fake_run(&f, "agents", "list", "--status", "sleeping", NULL), 2);
    assert_non_null(strstr(f.err, "bad --status \"sleeping\""));
    assert_int_equal(fake_run(&f, "agents", "list", "--label", "env", NULL), 2);
    assert_non_null(strstr(f.err, "bad --label \"env\""));
    assert_int_equal(fake_run(&f, "agents", "list", "--limit", "0", NULL), 2);
    assert_int_equal(f.ncalls, 0);
    /* the server refuses: exit 1 with the status name, its message and a hint */
    fake_reply(&f, AEGIS_GRPC_PERMISSION_DENIED, "operators only", NULL);
    assert_int_equal(fake_run(&f, "agents", "list", NULL), CTL_EXIT_SERVER);
    assert_non_null(strstr(f.err, "ListAgents: PERMISSION_DENIED: operators only"));
    assert_non_null(strstr(f.err, "operator certificate"));
    assert_string_equal(f.out, ""); /* nothing half-printed */
    fake_free(&f);
}

static void test_show_and_revoke(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    Aegis__V1__Agent a = AEGIS__V1__AGENT__INIT;
    a.agent_id = (char *)"abc";
    a.version = (char *)"0.2.0";
    a.status = AEGIS__V1__AGENT_STATUS__AGENT_STATUS_REVOKED;
    uint8_t spki[32];
    memset(spki, 0x11, sizeof(spki));
    a.spki_sha256.data = spki;
    a.spki_sha256.len = 32;
    Aegis__V1__GetAgentResponse gr = AEGIS__V1__GET_AGENT_RESPONSE__INIT;
    gr.agent = &a;
    fake_reply(&f, 0, NULL, &gr.base);
    assert_int_equal(fake_run(&f, "agents", "show", "abc", NULL), 0);
    Aegis__V1__GetAgentRequest *g =
        (void *)fake_request(&f, 0, &aegis__v1__get_agent_request__descriptor);
    assert_string_equal(g->agent_id, "abc");
    ctl_pb_free(&g->base);
    assert_non_null(strstr(f.out, "status        revoked\n"));
    assert_non_null(strstr(f.out, "spki sha256   1111111111111111"));
    fake_reply(&f, AEGIS_GRPC_NOT_FOUND, "no agent abc", NULL);
    assert_int_equal(fake_run(&f, "agents", "show", "abc", NULL), 1);
    assert_non_null(strstr(f.err, "GetAgent: NOT_FOUND: no agent abc"));

    Aegis__V1__RevokeAgentResponse rr = AEGIS__V1__REVOKE_AGENT_RESPONSE__INIT;
    rr.revoked_unix_ns = (int64_t)FAKE_NOW_NS;
    rr.connections_closed = 1;
    fake_reply(&f, 0, NULL, &rr.base);
    assert_int_equal(fake_run(&f, "agents", "revoke", "abc", "--reason", "stolen laptop", NULL), 0);
    Aegis__V1__RevokeAgentRequest *rq =
        (void *)fake_request(&f, 2, &aegis__v1__revoke_agent_request__descriptor);
    assert_string_equal(rq->agent_id, "abc");
    assert_string_equal(rq->reason, "stolen laptop");
    ctl_pb_free(&rq->base);
    assert_string_equal(f.out, "agent abc revoked at 2026-11-23T07:00:00Z; 1 live connection(s) "
                               "closed\n");
    rr.already_revoked = 1;
    fake_reply(&f, 0, NULL, &rr.base);
    assert_int_equal(fake_run(&f, "agents", "revoke", "abc", "--json", NULL), 0);
    struct json_object *o = fake_json(&f), *v;
    assert_true(json_object_object_get_ex(o, "already_revoked", &v));
    assert_true(json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(o, "connections_closed", &v));
    assert_int_equal(json_object_get_int(v), 1);
    json_object_put(o);
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_table_and_paging),
        cmocka_unit_test(test_list_errors),
        cmocka_unit_test(test_show_and_revoke),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
