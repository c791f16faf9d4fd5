/*
 * aegisctl commands send|show|watch against the scripted RPC fake: every
 * payload kind, targeting, usage errors, the lookups --policy/--artifact/
 * --update make first, progress output and exit codes of watch.
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

static const char SHA_HEX[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static void reply_sent(struct fake *f, const char *id, uint32_t n)
{
    Aegis__V1__SendCommandResponse r = AEGIS__V1__SEND_COMMAND_RESPONSE__INIT;
    r.command_id = (char *)id;
    r.targeted_agents = n;
    fake_reply(f, 0, NULL, &r.base);
}

static Aegis__V1__SendCommandRequest *sent(struct fake *f, size_t i)
{
    assert_string_equal(f->path[i], "/aegis.v1.OperatorService/SendCommand");
    Aegis__V1__SendCommandRequest *q =
        (void *)fake_request(f, i, &aegis__v1__send_command_request__descriptor);
    assert_non_null(q);
    assert_non_null(q->command);
    assert_non_null(q->target);
    return q;
}

static void test_send_action_restart_inventory(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    reply_sent(&f, "cmd-1", 2);
    assert_int_equal(fake_run(&f, "commands", "send", "--agent", "a1", "--agent", "a2", "--action",
                              "flush_conntrack", "--arg", "zone=3", "--arg", "force=yes",
                              "--expires", "1h", NULL),
                     0);
    assert_string_equal(f.out, "command cmd-1 queued for 2 agent(s)\n");
    Aegis__V1__SendCommandRequest *q = sent(&f, 0);
    assert_int_equal(q->target->n_agent_ids, 2);
    assert_string_equal(q->target->agent_ids[1], "a2");
    assert_string_equal(q->target->selector, "");
    assert_int_equal(q->lifetime_seconds, 3600);
    assert_int_equal(q->command->payload_case, AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION);
    assert_string_equal(q->command->run_action->name, "flush_conntrack");
    assert_int_equal(q->command->run_action->n_args, 2);
    assert_string_equal(q->command->run_action->args[0]->key, "zone");
    assert_string_equal(q->command->run_action->args[1]->value, "yes");
    /* the server assigns id, sequence, scope, times and nonce */
    assert_string_equal(q->command->id, "");
    assert_int_equal(q->command->nonce.len, 0);
    ctl_pb_free(&q->base);

    reply_sent(&f, "cmd-2", 10);
    assert_int_equal(
        fake_run(&f, "commands", "send", "--selector", "env=prod,role=web", "--restart", NULL), 0);
    q = sent(&f, 1);
    assert_string_equal(q->target->selector, "env=prod,role=web");
    assert_int_equal(q->target->n_agent_ids, 0);
    assert_int_equal(q->lifetime_seconds, 0); /* server default */
    assert_int_equal(q->command->payload_case, AEGIS__V1__COMMAND__PAYLOAD_RESTART_AGENT);
    assert_true(q->command->restart_agent->delay_seconds > 0);
    ctl_pb_free(&q->base);

    reply_sent(&f, "cmd-3", 1);
    assert_int_equal(fake_run(&f, "commands", "send", "--agent", "a1", "--inventory", "--packages",
                              "--json", NULL),
                     0);
    q = sent(&f, 2);
    assert_int_equal(q->command->payload_case, AEGIS__V1__COMMAND__PAYLOAD_COLLECT_INVENTORY);
    assert_true(q->command->collect_inventory->include_packages);
    ctl_pb_free(&q->base);
    struct json_object *o = fake_json(&f), *v;
    assert_true(json_object_object_get_ex(o, "command_id", &v));
    assert_string_equal(json_object_get_string(v), "cmd-3");
    json_object_put(o);
    fake_free(&f);
}

static void test_send_usage_errors(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    static const struct {
        const char *args[8];
        const char *msg;
    } cases[] = {
        {{"--restart", NULL}, "say which agents"},
        {{"--agent", "a", NULL}, "say what to do"},
        {{"--agent", "a", "--restart", "--inventory", NULL}, "give only one of"},
        {{"--agent", "a", "--restart", "--arg", "k=v", NULL}, "--arg goes with --action"},
        {{"--agent", "a", "--restart", "--expires", "25h", NULL}, "bad --expires"},
        {{"--agent", "a", "--artifact", "xyz", NULL}, "bad SHA-256 \"xyz\""},
        {{"--agent", "a", "--policy", "0", NULL}, "bad --policy version"},
        {{"--selector", "env", "--restart", NULL}, "bad --selector"},
        {{"--agent", "a", "--action", "x", "--arg", "novalue", NULL}, "bad --arg"},
        {{"--agent", "a", "--inventory", "--fetch-only", NULL}, "--fetch-only goes with"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *const *a = cases[i].args;
        int rv = fake_run(&f, "commands", "send", a[0], a[1], a[2], a[3], a[4], a[5], a[6], NULL);
        assert_int_equal(rv, CTL_EXIT_USAGE);
        if (!strstr(f.err, cases[i].msg))
            fail_msg("case %zu: \"%s\" not in: %s", i, cases[i].msg, f.err);
    }
    assert_int_equal(f.ncalls, 0);
    fake_free(&f);
}

static void test_send_policy_artifact_update(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    /* --policy 3: looked up first, then sent with its snapshot */
    Aegis__V1__MapSnapshot snap = AEGIS__V1__MAP_SNAPSHOT__INIT;
    snap.version = 3;
    snap.service_id = 7;
    snap.ttl_seconds = 600;
    Aegis__V1__Policy p3 = AEGIS__V1__POLICY__INIT, p2 = AEGIS__V1__POLICY__INIT;
    p3.version = 3;
    p3.snapshot = &snap;
    Aegis__V1__MapSnapshot snap2 = snap;
    snap2.version = 2;
    p2.version = 2;
    p2.snapshot = &snap2;
    Aegis__V1__Policy *ps[] = {&p3, &p2};
    Aegis__V1__ListPoliciesResponse lr = AEGIS__V1__LIST_POLICIES_RESPONSE__INIT;
    lr.n_policies = 2;
    lr.policies = ps;
    fake_reply(&f, 0, NULL, &lr.base);
    reply_sent(&f, "cmd-p", 4);
    assert_int_equal(fake_run(&f, "commands", "send", "--selector", "svc=7", "--policy", "3", NULL),
                     0);
    assert_string_equal(f.path[0], "/aegis.v1.OperatorService/ListPolicies");
    Aegis__V1__SendCommandRequest *q = sent(&f, 1);
    assert_int_equal(q->command->payload_case, AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY);
    assert_int_equal(q->command->apply_policy->policy_version, 3);
    assert_int_equal(q->command->apply_policy->snapshot->service_id, 7);
    assert_int_equal(q->command->apply_policy->snapshot->ttl_seconds, 600);
    assert_false(q->command->apply_policy->rollback);
    ctl_pb_free(&q->base);
    /* an unknown version: exit 1, nothing sent */
    fake_reply(&f, 0, NULL, &lr.base);
    assert_int_equal(fake_run(&f, "commands", "send", "--agent", "a", "--policy", "9", NULL), 1);
    assert_non_null(strstr(f.err, "no stored policy has version 9"));
    assert_int_equal(f.ncalls, 3);

    /* --artifact: kind and name from the stored artifact */
    uint8_t sha[32];
    assert_int_equal(ctl_parse_sha256(SHA_HEX, sha), 0);
    Aegis__V1__ArtifactInfo ai = AEGIS__V1__ARTIFACT_INFO__INIT;
    ai.name = (char *)"bundle";
    ai.kind = AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_BPF_OBJECT;
    ai.sha256.data = sha;
    ai.sha256.len = 32;
    Aegis__V1__GetArtifactStatusResponse gr = AEGIS__V1__GET_ARTIFACT_STATUS_RESPONSE__INIT;
    gr.artifact = &ai;
    fake_reply(&f, 0, NULL, &gr.base);
    reply_sent(&f, "cmd-a", 1);
    assert_int_equal(fake_run(&f, "commands", "send", "--agent", "a", "--artifact", SHA_HEX,
                              "--fetch-only", NULL),
                     0);
    assert_string_equal(f.path[3], "/aegis.v1.OperatorService/GetArtifactStatus");
    q = sent(&f, 4);
    assert_int_equal(q->command->payload_case, AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT);
    assert_memory_equal(q->command->load_artifact->sha256.data, sha, 32);
    assert_int_equal(q->command->load_artifact->kind,
                     AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_BPF_OBJECT);
    assert_string_equal(q->command->load_artifact->name, "bundle");
    assert_true(q->command->load_artifact->fetch_only);
    ctl_pb_free(&q->base);

    /* --update refuses an artifact that is not an agent binary (exit 4) */
    fake_reply(&f, 0, NULL, &gr.base);
    assert_int_equal(fake_run(&f, "commands", "send", "--agent", "a", "--update", SHA_HEX, NULL),
                     CTL_EXIT_INPUT);
    assert_non_null(strstr(f.err, "is a bpf_object, not an agent binary"));
    assert_int_equal(f.ncalls, 6);
    /* ...and takes the version from the signed statement of a binary */
    Aegis__V1__ArtifactStatement st = AEGIS__V1__ARTIFACT_STATEMENT__INIT;
    st.version = (char *)"0.3.1";
    Aegis__V1__ArtifactHeader hdr = AEGIS__V1__ARTIFACT_HEADER__INIT;
    assert_int_equal(ctl_pack(&st.base, &hdr.statement.data, &hdr.statement.len), 0);
    ai.kind = AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY;
    ai.header = &hdr;
    fake_reply(&f, 0, NULL, &gr.base);
    reply_sent(&f, "cmd-u", 1);
    assert_int_equal(fake_run(&f, "commands", "send", "--agent", "a", "--update", SHA_HEX, NULL),
                     0);
    q = sent(&f, 7);
    assert_int_equal(q->command->payload_case, AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT);
    assert_string_equal(q->command->update_agent->version, "0.3.1");
    assert_memory_equal(q->command->update_agent->sha256.data, sha, 32);
    ctl_pb_free(&q->base);
    free(hdr.statement.data);
    fake_free(&f);
}

static void progress(struct fake_reply *r, const char *agent, int state, uint32_t queued,
                     uint32_t ok, uint32_t bad, int done)
{
    Aegis__V1__CommandDelivery d = AEGIS__V1__COMMAND_DELIVERY__INIT;
    d.agent_id = (char *)agent;
    d.state = (Aegis__V1__CommandState)state;
    d.attempts = 1;
    uint32_t counts[8] = {0};
    counts[AEGIS__V1__COMMAND_STATE__COMMAND_STATE_QUEUED] = queued;
    counts[AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED] = ok;
    counts[AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED] = bad;
    Aegis__V1__CommandProgress p = AEGIS__V1__COMMAND_PROGRESS__INIT;
    p.delivery = &d;
    p.n_state_counts = 8;
    p.state_counts = counts;
    p.done = done;
    fake_stream(r, &p.base);
}

static void test_watch(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    reply_sent(&f, "cmd-w", 2);
    struct fake_reply *r = fake_reply(&f, 0, NULL, NULL);
    progress(r, "a1", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_QUEUED, 2, 0, 0, 0);
    progress(r, "a1", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED, 1, 1, 0, 0);
    progress(r, "a2", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED, 0, 2, 0, 1);
    /* a message after done is never read */
    progress(r, "zz", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED, 0, 2, 1, 1);
    assert_int_equal(fake_run(&f, "commands", "send", "--agent", "a1", "--agent", "a2", "--restart",
                              "--watch", NULL),
                     0);
    assert_string_equal(f.path[1], "/aegis.v1.OperatorService/WatchCommand");
    Aegis__V1__WatchCommandRequest *w =
        (void *)fake_request(&f, 1, &aegis__v1__watch_command_request__descriptor);
    assert_string_equal(w->command_id, "cmd-w");
    ctl_pb_free(&w->base);
    assert_string_equal(f.out, "command cmd-w queued for 2 agent(s)\n"
                               "a1 queued attempts=1 (0/2 final)\n"
                               "a1 succeeded attempts=1 (1/2 final)\n"
                               "a2 succeeded attempts=1 (2/2 final)\n"
                               "command cmd-w: 2 of 2 agent(s) succeeded, 0 failed or expired\n");

    /* on a terminal: a progress bar on stderr, only the summary on stdout */
    f.tty = 1;
    r = fake_reply(&f, 0, NULL, NULL);
    progress(r, "a1", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED, 1, 1, 0, 0);
    progress(r, "a2", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED, 0, 2, 0, 1);
    assert_int_equal(fake_run(&f, "commands", "watch", "cmd-w", NULL), 0);
    assert_string_equal(f.out, "command cmd-w: 2 of 2 agent(s) succeeded, 0 failed or expired\n");
    assert_non_null(strstr(f.err, "\r\033[Kdeliveries ["));
    assert_non_null(strstr(f.err, "100% 2/2  2 succeeded, 0 failed/expired\n"));
    f.tty = 0;

    /* a failure makes watch exit 1; --json gives one object per line */
    r = fake_reply(&f, 0, NULL, NULL);
    progress(r, "a1", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED, 0, 1, 0, 0);
    progress(r, "a2", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED, 0, 1, 1, 1);
    assert_int_equal(fake_run(&f, "commands", "watch", "cmd-w", "--json", NULL), 1);
    char *nl = strchr(f.out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    struct json_object *o = json_tokener_parse(f.out), *v;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "done", &v));
    assert_false(json_object_get_boolean(v));
    json_object_put(o);
    o = json_tokener_parse(nl + 1);
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "done", &v));
    assert_true(json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(o, "state_counts", &v));
    assert_int_equal(json_object_get_int(json_object_array_get_idx(v, 6)), 1);
    json_object_put(o);

    /* the stream fails: the status is reported */
    fake_reply(&f, AEGIS_GRPC_NOT_FOUND, "no command cmd-x", NULL);
    assert_int_equal(fake_run(&f, "commands", "watch", "cmd-x", NULL), 1);
    assert_non_null(strstr(f.err, "WatchCommand: NOT_FOUND: no command cmd-x"));
    fake_free(&f);
}

static void test_show(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RunAction ra = AEGIS__V1__RUN_ACTION__INIT;
    ra.name = (char *)"flush";
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION;
    c.run_action = &ra;
    c.issued_unix_ns = (int64_t)FAKE_NOW_NS;
    Aegis__V1__AgentTarget tg = AEGIS__V1__AGENT_TARGET__INIT;
    tg.selector = (char *)"env=prod";
    uint32_t counts[8] = {0, 0, 0, 0, 0, 1, 1, 0};
    Aegis__V1__CommandInfo ci = AEGIS__V1__COMMAND_INFO__INIT;
    ci.command_id = (char *)"cmd-s";
    ci.command = &c;
    ci.sent_by = (char *)"alice";
    ci.target = &tg;
    ci.n_state_counts = 8;
    ci.state_counts = counts;
    Aegis__V1__CommandDelivery d1 = AEGIS__V1__COMMAND_DELIVERY__INIT,
                               d2 = AEGIS__V1__COMMAND_DELIVERY__INIT;
    d1.agent_id = (char *)"a1";
    d1.sequence = 12;
    d1.state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED;
    d1.attempts = 1;
    d2.agent_id = (char *)"a2";
    d2.sequence = 9;
    d2.state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED;
    d2.attempts = 3;
    d2.detail = (char *)"unknown action";
    d2.updated_unix_ns = (int64_t)FAKE_NOW_NS;
    Aegis__V1__CommandDelivery *ds[] = {&d1, &d2};
    Aegis__V1__GetCommandResponse r = AEGIS__V1__GET_COMMAND_RESPONSE__INIT;
    r.command = &ci;
    r.n_deliveries = 2;
    r.deliveries = ds;
    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "commands", "show", "cmd-s", NULL), 0);
    const char *head = "command:  cmd-s\npayload:  run_action\nsent by:  alice\n"
                       "issued:   2026-11-23T07:00:00Z\nexpires:  -\ntarget:   selector env=prod\n"
                       "states:   1 succeeded, 1 failed\n\n";
    assert_true(strncmp(f.out, head, strlen(head)) == 0);
    const char *cells[] = {"AGENT",
                           "SEQ",
                           "STATE",
                           "ATTEMPTS",
                           "UPDATED",
                           "DETAIL",
                           "a1",
                           "12",
                           "succeeded",
                           "1",
                           "-",
                           "-",
                           "a2",
                           "9",
                           "failed",
                           "3",
                           "2026-11-23T07:00:00Z",
                           "unknown action"};
    char *want = fake_expect_table(6, cells, 3);
    assert_string_equal(f.out + strlen(head), want);
    free(want);

    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "commands", "show", "cmd-s", "--json", NULL), 0);
    struct json_object *o = fake_json(&f), *v, *cmd;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "command", &cmd));
    assert_true(json_object_object_get_ex(cmd, "sent_by", &v));
    assert_string_equal(json_object_get_string(v), "alice");
    assert_true(json_object_object_get_ex(o, "deliveries", &v));
    assert_int_equal(json_object_array_length(v), 2);
    json_object_put(o);
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_send_action_restart_inventory),
        cmocka_unit_test(test_send_usage_errors),
        cmocka_unit_test(test_send_policy_artifact_update),
        cmocka_unit_test(test_watch),
        cmocka_unit_test(test_show),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
