/*
 * aegisctl telemetry query|tail against the scripted RPC fake.
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

static void records(Aegis__V1__TelemetryRecord *ev, Aegis__V1__TelemetryRecord *mt,
                    Aegis__V1__Event *e, Aegis__V1__Metric *m, Aegis__V1__Event__AttrsEntry *at,
                    Aegis__V1__Event__AttrsEntry **atp)
{
    at->key = (char *)"rule_id";
    at->value = (char *)"7";
    atp[0] = at;
    e->kind = (char *)"flow_denied";
    e->time_unix_ns = (int64_t)FAKE_NOW_NS;
    e->n_attrs = 1;
    e->attrs = atp;
    ev->agent_id = (char *)"a1";
    ev->item_case = AEGIS__V1__TELEMETRY_RECORD__ITEM_EVENT;
    ev->event = e;
    m->name = (char *)"aegis_rule_packets_total";
    m->value = 42;
    m->time_unix_ns = (int64_t)FAKE_NOW_NS + 1000000000LL;
    mt->agent_id = (char *)"a2";
    mt->item_case = AEGIS__V1__TELEMETRY_RECORD__ITEM_METRIC;
    mt->metric = m;
}

static void test_query(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    Aegis__V1__TelemetryRecord ev = AEGIS__V1__TELEMETRY_RECORD__INIT,
                               mt = AEGIS__V1__TELEMETRY_RECORD__INIT;
    Aegis__V1__Event e = AEGIS__V1__EVENT__INIT;
    Aegis__V1__Metric m = AEGIS__V1__METRIC__INIT;
    Aegis__V1__Event__AttrsEntry at = AEGIS__V1__EVENT__ATTRS_ENTRY__INIT, *atp[1];
    records(&ev, &mt, &e, &m, &at, atp);
    Aegis__V1__TelemetryRecord *rs[] = {&ev, &mt};
    Aegis__V1__QueryTelemetryResponse r = AEGIS__V1__QUERY_TELEMETRY_RESPONSE__INIT;
    r.n_records = 2;
    r.records = rs;
    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "telemetry", "query", "--agent", "a1", "--agent", "a2", "--since",
                              "30m", "--kind", "flow_denied", NULL),
                     0);
    Aegis__V1__QueryTelemetryRequest *q =
        (void *)fake_request(&f, 0, &aegis__v1__query_telemetry_request__descriptor);
    assert_int_equal(q->filter->n_agent_ids, 2);
    assert_string_equal(q->filter->agent_ids[1], "a2");
    assert_int_equal(q->filter->n_event_kinds, 1);
    assert_true(q->filter->no_metrics); /* asking for event kinds only */
    assert_false(q->filter->no_events);
    assert_true(q->time->from_unix_ns == (int64_t)(FAKE_NOW_NS - 1800ull * 1000000000ull));
    ctl_pb_free(&q->base);
    const char *cells[] = {"TIME",
                           "AGENT",
                           "TYPE",
                           "NAME",
                           "VALUE",
                           "2026-11-23T07:00:00Z",
                           "a1",
                           "event",
                           "flow_denied",
                           "rule_id=7",
                           "2026-11-23T07:00:01Z",
                           "a2",
                           "metric",
                           "aegis_rule_packets_total",
                           "42"};
    char *want = fake_expect_table(5, cells, 3);
    assert_string_equal(f.out, want);
    free(want);
    /* default window 1h */
    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "telemetry", "query", "--metric", "x", "--json", NULL), 0);
    q = (void *)fake_request(&f, 1, &aegis__v1__query_telemetry_request__descriptor);
    assert_true(q->time->from_unix_ns == (int64_t)(FAKE_NOW_NS - 3600ull * 1000000000ull));
    assert_true(q->filter->no_events);
    ctl_pb_free(&q->base);
    struct json_object *o = fake_json(&f), *arr, *v;
    assert_true(json_object_object_get_ex(o, "records", &arr));
    assert_true(json_object_object_get_ex(json_object_array_get_idx(arr, 0), "event", &v));
    assert_false(json_object_object_get_ex(json_object_array_get_idx(arr, 0), "metric", &v));
    json_object_put(o);
    assert_int_equal(fake_run(&f, "telemetry", "query", "--since", "-1h", NULL), 2);
    assert_int_equal(fake_run(&f, "telemetry", "tail", "--since", "1h", NULL), 2);
    fake_free(&f);
}

static void test_tail(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    Aegis__V1__TelemetryRecord ev = AEGIS__V1__TELEMETRY_RECORD__INIT,
                               mt = AEGIS__V1__TELEMETRY_RECORD__INIT;
    Aegis__V1__Event e = AEGIS__V1__EVENT__INIT;
    Aegis__V1__Metric m = AEGIS__V1__METRIC__INIT;
    Aegis__V1__Event__AttrsEntry at = AEGIS__V1__EVENT__ATTRS_ENTRY__INIT, *atp[1];
    records(&ev, &mt, &e, &m, &at, atp);
    struct fake_reply *r = fake_reply(&f, 0, NULL, NULL);
    fake_stream(r, &ev.base);
    fake_stream(r, &mt.base);
    assert_int_equal(fake_run(&f, "telemetry", "tail", "--agent", "a1", NULL), 0);
    assert_string_equal(f.path[0], "/aegis.v1.OperatorService/TailTelemetry");
    assert_string_equal(f.out, "2026-11-23T07:00:00Z  a1  event  flow_denied  rule_id=7\n"
                               "2026-11-23T07:00:01Z  a2  metric  aegis_rule_packets_total  42\n");
    r = fake_reply(&f, 0, NULL, NULL);
    fake_stream(r, &ev.base);
    fake_stream(r, &mt.base);
    assert_int_equal(fake_run(&f, "telemetry", "tail", "--json", NULL), 0);
    /* JSON Lines: each line is a document */
    char *nl = strchr(f.out, '\n');
    *nl = '\0';
    struct json_object *o1 = json_tokener_parse(f.out), *o2 = json_tokener_parse(nl + 1), *v;
    assert_non_null(o1);
    assert_non_null(o2);
    assert_true(json_object_object_get_ex(o2, "agent_id", &v));
    assert_string_equal(json_object_get_string(v), "a2");
    json_object_put(o1);
    json_object_put(o2);
    fake_reply(&f, AEGIS_GRPC_UNAVAILABLE, "shutting down", NULL);
    assert_int_equal(fake_run(&f, "telemetry", "tail", NULL), 1);
    assert_non_null(strstr(f.err, "TailTelemetry: UNAVAILABLE: shutting down"));
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
