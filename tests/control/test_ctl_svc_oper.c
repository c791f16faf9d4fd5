/*
 * Paging of the OperatorService lists (ctl_svc_oper.c, ctl_svc_oper_art.c: ctl_page_reply)
 * with the real daemon: for each list, following next_page_token with small pages must give
 * exactly the items of one big page, in the same order, no page larger than asked, and an
 * empty token on the last page only. Covers offset paging (tokens, policies), keyset paging
 * by UUID (agents, a command's deliveries, with the command as the reply's head) and by
 * number (audit).
 */
#include "ctl_svc_harness.h"
#include "ctl_test_util.h"

#include <aegis/err.h>
#include <aegis/hex.h>
#include <aegis/proto.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAGENTS 5
#define NTOKENS 7
#define NPOLICIES 5
/* Every list here stays far below this; the loop bound of the pager. */
#define MAX_ITEMS 200

static struct th_pki pki;
static struct th_daemon dmn;
static struct th_client *op;
static struct th_agent agents[NAGENTS];
static char command_id[37];

/* Items of a list as the hex of their packed bytes, in order. */
struct listing {
    size_t n;
    char *item[MAX_ITEMS];
    size_t pages;
};

static void listing_free(struct listing *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->item[i]);
    memset(l, 0, sizeof(*l));
}

/* Collects the `items` of one reply into l; returns the next page token (malloc'd, "" at the
 * end) and checks the page is not over limit. */
static char *take_page(const ProtobufCMessage *resp, const char *items, uint32_t limit,
                       struct listing *l)
{
    const ProtobufCFieldDescriptor *fi =
        protobuf_c_message_descriptor_get_field_by_name(resp->descriptor, items);
    const ProtobufCFieldDescriptor *fp =
        protobuf_c_message_descriptor_get_field_by_name(resp->descriptor, "page");
    assert_non_null(fi);
    assert_non_null(fp);
    size_t n;
    ProtobufCMessage **arr;
    memcpy(&n, (const char *)resp + fi->quantifier_offset, sizeof(n));
    memcpy(&arr, (const char *)resp + fi->offset, sizeof(arr));
    assert_true(n <= limit);
    for (size_t i = 0; i < n; i++) {
        assert_true(l->n < MAX_ITEMS);
        uint8_t *b = NULL;
        size_t bl = 0;
        assert_int_equal(aegis_proto_pack(arr[i], NULL, &b, &bl), 0);
        char *hex = malloc(2 * bl + 1);
        assert_non_null(hex);
        aegis_hex_encode(b, bl, hex, 2 * bl + 1);
        aegis_free(NULL, b);
        l->item[l->n++] = hex;
    }
    Aegis__V1__PageResponse *page;
    memcpy(&page, (const char *)resp + fp->offset, sizeof(page));
    assert_non_null(page);
    char *next = strdup(page->next_page_token ? page->next_page_token : "");
    assert_non_null(next);
    return next;
}

/* list_all runs method with req (whose PageRequest is page) page by page at `limit`. */
static void list_all(const char *method, const ProtobufCMessage *req, Aegis__V1__PageRequest *page,
                     const ProtobufCMessageDescriptor *resp_desc, const char *items, uint32_t limit,
                     struct listing *l)
{
    char *token = strdup("");
    assert_non_null(token);
    memset(l, 0, sizeof(*l));
    for (int guard = 0; guard <= MAX_ITEMS; guard++) {
        page->limit = limit;
        page->page_token = token;
        ProtobufCMessage *resp = NULL;
        struct th_status st;
        assert_int_equal(th_unary(op, method, req, resp_desc, &resp, &st), AEGIS_GRPC_OK);
        char *next = take_page(resp, items, limit, l);
        th_msg_free(resp);
        l->pages++;
        free(token);
        token = next;
        if (!token[0])
            break;
    }
    free(token);
    page->page_token = (char *)"";
}

/* The same items, in the same order, in small pages as in one big page. */
static void check_paging(const char *method, const ProtobufCMessage *req,
                         Aegis__V1__PageRequest *page, const ProtobufCMessageDescriptor *resp_desc,
                         const char *items, size_t want_at_least)
{
    struct listing all, small;
    list_all(method, req, page, resp_desc, items, 1000, &all);
    assert_int_equal(all.pages, 1);
    assert_true(all.n >= want_at_least);
    for (uint32_t limit = 1; limit <= 3; limit++) {
        list_all(method, req, page, resp_desc, items, limit, &small);
        assert_int_equal(small.n, all.n);
        for (size_t i = 0; i < all.n; i++)
            assert_string_equal(small.item[i], all.item[i]);
        /* The query fetches one row more than the page, so the last full page already
         * knows it is the last: no empty page at the end. */
        size_t want_pages = all.n ? (all.n + limit - 1) / limit : 1;
        assert_int_equal(small.pages, want_pages);
        listing_free(&small);
    }
    listing_free(&all);
}

static void push_policy(uint32_t port)
{
    Aegis__V1__PushPolicyRequest req = AEGIS__V1__PUSH_POLICY_REQUEST__INIT;
    Aegis__V1__MapSnapshot s = AEGIS__V1__MAP_SNAPSHOT__INIT;
    Aegis__V1__Rule r = AEGIS__V1__RULE__INIT;
    Aegis__V1__Rule *rp[1] = {&r};
    r.id = 1;
    r.cidr = (char *)"10.10.20.0/24";
    r.proto = AEGIS__V1__RULE_PROTO__RULE_PROTO_TCP;
    r.port = port;
    s.service_id = 9;
    s.n_edges = 1;
    s.edges = rp;
    s.egress_mode = AEGIS__V1__ENFORCE_MODE__ENFORCE_MODE_ALLOW_LIST;
    s.ttl_seconds = 300;
    req.snapshot = &s;
    req.comment = (char *)"paging";
    Aegis__V1__PushPolicyResponse *resp = NULL;
    struct th_status st;
    if (th_unary(op, "/aegis.v1.OperatorService/PushPolicy", &req.base,
                 &aegis__v1__push_policy_response__descriptor, (ProtobufCMessage **)&resp,
                 &st) != AEGIS_GRPC_OK)
        fail_msg("PushPolicy: %d %s", st.code, st.message);
    th_msg_free(&resp->base);
}

static int setup(void **state)
{
    (void)state;
    const char *dsn = test_dsn();
    th_pki_make(&pki);
    th_daemon_start(&dmn, &pki, dsn, NULL);
    char why[160];
    op = th_connect(&dmn, &pki, pki.op_cert, pki.op_key, why, sizeof(why));
    if (!op)
        fail_msg("operator refused: %s", why);
    for (int i = 0; i < NTOKENS; i++)
        th_op_token(op, 1, 3600, "env", "paging", NULL);
    char *ids[NAGENTS];
    for (int i = 0; i < NAGENTS; i++) {
        char host[32];
        snprintf(host, sizeof(host), "page-host-%d", i);
        th_agent_new(&agents[i], host);
        const char *tok = th_op_token(op, 1, 3600, "env", "paging", NULL);
        assert_int_equal(th_enroll(&agents[i], &dmn, &pki, tok, NULL), AEGIS_GRPC_OK);
        ids[i] = agents[i].agent_id;
    }
    /* One command to every agent: NAGENTS deliveries to page through. */
    Aegis__V1__SendCommandRequest req = AEGIS__V1__SEND_COMMAND_REQUEST__INIT;
    Aegis__V1__AgentTarget t = AEGIS__V1__AGENT_TARGET__INIT;
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RunAction ra = AEGIS__V1__RUN_ACTION__INIT;
    ra.name = (char *)"noop";
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION;
    c.run_action = &ra;
    t.agent_ids = ids;
    t.n_agent_ids = NAGENTS;
    t.selector = (char *)"";
    req.target = &t;
    req.command = &c;
    Aegis__V1__SendCommandResponse *resp = NULL;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/SendCommand", &req.base,
                              &aegis__v1__send_command_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(resp->targeted_agents, NAGENTS);
    snprintf(command_id, sizeof(command_id), "%s", resp->command_id);
    th_msg_free(&resp->base);
    for (uint32_t i = 0; i < NPOLICIES; i++)
        push_policy(8000 + i);
    /* Audit rows are written beside the replies: wait until all are there. */
    if (th_wait_audit(op, "token_create", NULL, NULL, NTOKENS + NAGENTS, 10 * AEGIS_NS_PER_S) <
        NTOKENS + NAGENTS)
        fail_msg("the token_create audit rows did not all arrive");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_close(op);
    int st = th_daemon_stop(&dmn);
    for (int i = 0; i < NAGENTS; i++)
        th_agent_free(&agents[i]);
    th_pki_free(&pki);
    assert_int_equal(st, 0);
    return 0;
}

static void test_tokens_by_offset(void **state)
{
    (void)state;
    Aegis__V1__ListTokensRequest req = AEGIS__V1__LIST_TOKENS_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    req.include_inactive = 1; /* the enrollment tokens are used up */
    check_paging("/aegis.v1.OperatorService/ListTokens", &req.base, &page,
                 &aegis__v1__list_tokens_response__descriptor, "tokens", NTOKENS + NAGENTS);
}

static void test_agents_by_id(void **state)
{
    (void)state;
    Aegis__V1__ListAgentsRequest req = AEGIS__V1__LIST_AGENTS_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    check_paging("/aegis.v1.OperatorService/ListAgents", &req.base, &page,
                 &aegis__v1__list_agents_response__descriptor, "agents", NAGENTS);
}

static void test_audit_by_id(void **state)
{
    (void)state;
    Aegis__V1__ListAuditRequest req = AEGIS__V1__LIST_AUDIT_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    req.action = (char *)"token_create"; /* rows nothing else adds while the test pages */
    check_paging("/aegis.v1.OperatorService/ListAudit", &req.base, &page,
                 &aegis__v1__list_audit_response__descriptor, "entries", NTOKENS + NAGENTS);
}

static void test_policies_by_offset(void **state)
{
    (void)state;
    Aegis__V1__ListPoliciesRequest req = AEGIS__V1__LIST_POLICIES_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    req.service_id = 9;
    check_paging("/aegis.v1.OperatorService/ListPolicies", &req.base, &page,
                 &aegis__v1__list_policies_response__descriptor, "policies", NPOLICIES);
}

/* GetCommand pages its deliveries; every page carries the command itself too. */
static void test_command_deliveries_by_agent(void **state)
{
    (void)state;
    Aegis__V1__GetCommandRequest req = AEGIS__V1__GET_COMMAND_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    req.command_id = command_id;
    check_paging("/aegis.v1.OperatorService/GetCommand", &req.base, &page,
                 &aegis__v1__get_command_response__descriptor, "deliveries", NAGENTS);
    page.limit = 2;
    Aegis__V1__GetCommandResponse *resp = NULL;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/GetCommand", &req.base,
                              &aegis__v1__get_command_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(resp->n_deliveries, 2);
    assert_non_null(resp->command);
    assert_non_null(resp->command->command);
    assert_int_equal(resp->command->command->payload_case, AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION);
    assert_string_equal(resp->page->next_page_token, resp->deliveries[1]->agent_id);
    th_msg_free(&resp->base);
}

static void test_bad_page_tokens(void **state)
{
    (void)state;
    Aegis__V1__ListAgentsRequest req = AEGIS__V1__LIST_AGENTS_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    page.page_token = (char *)"not-a-uuid";
    ProtobufCMessage *resp = NULL;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/ListAgents", &req.base,
                              &aegis__v1__list_agents_response__descriptor, &resp, &st),
                     AEGIS_GRPC_INVALID_ARGUMENT);
    assert_null(resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_by_offset),
        cmocka_unit_test(test_agents_by_id),
        cmocka_unit_test(test_audit_by_id),
        cmocka_unit_test(test_policies_by_offset),
        cmocka_unit_test(test_command_deliveries_by_agent),
        cmocka_unit_test(test_bad_page_tokens),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
