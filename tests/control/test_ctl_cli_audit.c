/*
 * aegisctl audit list against the scripted RPC fake.
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

static void test_audit_list(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    Aegis__V1__AuditEntry e1 = AEGIS__V1__AUDIT_ENTRY__INIT, e2 = AEGIS__V1__AUDIT_ENTRY__INIT;
    e1.id = 2;
    e1.time_unix_ns = (int64_t)FAKE_NOW_NS;
    e1.actor = (char *)"alice";
    e1.action = (char *)"revoke";
    e1.target = (char *)"agent-9";
    e1.success = 1;
    e2.id = 1;
    e2.actor = (char *)"system";
    e2.action = (char *)"auth_failed";
    e2.detail = (char *)"machine-id mismatch";
    Aegis__V1__AuditEntry *es[] = {&e1, &e2};
    Aegis__V1__ListAuditResponse r = AEGIS__V1__LIST_AUDIT_RESPONSE__INIT;
    r.n_entries = 2;
    r.entries = es;
    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "audit", "list", "--since", "2h", "--actor", "alice", "--action",
                              "revoke", NULL),
                     0);
    Aegis__V1__ListAuditRequest *q =
        (void *)fake_request(&f, 0, &aegis__v1__list_audit_request__descriptor);
    assert_non_null(q->time);
    assert_true(q->time->from_unix_ns == (int64_t)(FAKE_NOW_NS - 7200ull * 1000000000ull));
    assert_true(q->time->to_unix_ns == 0);
    assert_string_equal(q->actor, "alice");
    assert_string_equal(q->action, "revoke");
    assert_string_equal(q->target, "");
    assert_int_equal(q->page->limit, CTL_PAGE_SIZE);
    ctl_pb_free(&q->base);
    const char *cells[] = {"TIME",
                           "ACTOR",
                           "ACTION",
                           "TARGET",
                           "RESULT",
                           "DETAIL",
                           "2026-11-23T07:00:00Z",
                           "alice",
                           "revoke",
                           "agent-9",
                           "ok",
                           "-",
                           "-",
                           "system",
                           "auth_failed",
                           "-",
                           "refused",
                           "machine-id mismatch"};
    char *want = fake_expect_table(6, cells, 3);
    assert_string_equal(f.out, want);
    free(want);

    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "audit", "list", "--json", NULL), 0);
    q = (void *)fake_request(&f, 1, &aegis__v1__list_audit_request__descriptor);
    assert_null(q->time); /* no --since: no time filter */
    ctl_pb_free(&q->base);
    struct json_object *o = fake_json(&f), *arr, *v;
    assert_true(json_object_object_get_ex(o, "entries", &arr));
    assert_int_equal(json_object_array_length(arr), 2);
    assert_true(json_object_object_get_ex(json_object_array_get_idx(arr, 1), "success", &v));
    assert_false(json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(json_object_array_get_idx(arr, 0), "id", &v));
    assert_int_equal(json_object_get_int(v), 2);
    json_object_put(o);

    assert_int_equal(fake_run(&f, "audit", "list", "--since", "yesterday", NULL), 2);
    assert_int_equal(fake_run(&f, "audit", "list", "--limit", "100001", NULL), 2);
    assert_int_equal(f.ncalls, 2);
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_audit_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
