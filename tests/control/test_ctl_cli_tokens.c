/*
 * aegisctl tokens create|list|revoke against the scripted RPC fake.
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

static void test_create(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    Aegis__V1__EnrollmentToken t = AEGIS__V1__ENROLLMENT_TOKEN__INIT;
    t.token_id = (char *)"tok1";
    t.secret = (char *)"s3cret";
    t.max_uses = 5;
    t.expires_unix_ns = (int64_t)FAKE_NOW_NS;
    Aegis__V1__CreateTokenResponse r = AEGIS__V1__CREATE_TOKEN_RESPONSE__INIT;
    r.token = &t;
    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "tokens", "create", "--ttl", "36h", "--uses", "5", "--labels",
                              "env=prod,site=par", "--labels", "tier=1", "--description", "rack 7",
                              NULL),
                     0);
    Aegis__V1__CreateTokenRequest *q =
        (void *)fake_request(&f, 0, &aegis__v1__create_token_request__descriptor);
    assert_int_equal(q->ttl_seconds, 36 * 3600);
    assert_int_equal(q->max_uses, 5);
    assert_string_equal(q->description, "rack 7");
    assert_non_null(q->labels);
    assert_int_equal(q->labels->n_entries, 3);
    assert_string_equal(q->labels->entries[0]->key, "env");
    assert_string_equal(q->labels->entries[1]->value, "par");
    assert_string_equal(q->labels->entries[2]->key, "tier");
    ctl_pb_free(&q->base);
    assert_string_equal(f.out, "token id: tok1\nsecret:   s3cret\nexpires:  2026-11-23T07:00:00Z\n"
                               "uses:     5\n");
    assert_non_null(strstr(f.err, "shown only now"));

    /* unlimited uses print as such */
    t.max_uses = 0;
    t.expires_unix_ns = 0;
    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "tokens", "create", NULL), 0);
    assert_string_equal(f.out,
                        "token id: tok1\nsecret:   s3cret\nexpires:  -\nuses:     unlimited\n");

    /* defaults: server TTL, unlimited uses, no labels */
    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "tokens", "create", "--json", NULL), 0);
    q = (void *)fake_request(&f, 2, &aegis__v1__create_token_request__descriptor);
    assert_int_equal(q->ttl_seconds, 0);
    assert_int_equal(q->max_uses, 0);
    assert_null(q->labels);
    ctl_pb_free(&q->base);
    struct json_object *o = fake_json(&f), *v;
    assert_true(json_object_object_get_ex(o, "secret", &v));
    assert_string_equal(json_object_get_string(v), "s3cret");
    json_object_put(o);

    /* bad values: usage, nothing sent */
    size_t calls = f.ncalls;
    assert_int_equal(fake_run(&f, "tokens", "create", "--ttl", "forever", NULL), 2);
    assert_non_null(strstr(f.err, "bad --ttl \"forever\""));
    assert_int_equal(fake_run(&f, "tokens", "create", "--ttl", "400d", NULL), 2);
    assert_int_equal(fake_run(&f, "tokens", "create", "--uses", "-3", NULL), 2);
    assert_int_equal(fake_run(&f, "tokens", "create", "--labels", "a=1,a=2", NULL), 2);
    assert_non_null(strstr(f.err, "given twice"));
    assert_int_equal(f.ncalls, calls);
    fake_free(&f);
}

static void test_list_and_revoke(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    Aegis__V1__EnrollmentToken t1 = AEGIS__V1__ENROLLMENT_TOKEN__INIT,
                               t2 = AEGIS__V1__ENROLLMENT_TOKEN__INIT,
                               t3 = AEGIS__V1__ENROLLMENT_TOKEN__INIT;
    t1.token_id = (char *)"a";
    t1.description = (char *)"lab";
    t1.uses = 1;
    t1.max_uses = 3;
    t1.expires_unix_ns = (int64_t)FAKE_NOW_NS + 1000000000LL;
    t2.token_id = (char *)"bb";
    t2.uses = 2;
    t2.revoked = 1;
    t3.token_id = (char *)"ccc";
    t3.expires_unix_ns = (int64_t)FAKE_NOW_NS - 1; /* past */
    Aegis__V1__EnrollmentToken *ts[] = {&t1, &t2, &t3};
    Aegis__V1__ListTokensResponse r = AEGIS__V1__LIST_TOKENS_RESPONSE__INIT;
    r.n_tokens = 3;
    r.tokens = ts;
    fake_reply(&f, 0, NULL, &r.base);
    assert_int_equal(fake_run(&f, "tokens", "list", "--all", NULL), 0);
    Aegis__V1__ListTokensRequest *q =
        (void *)fake_request(&f, 0, &aegis__v1__list_tokens_request__descriptor);
    assert_true(q->include_inactive);
    ctl_pb_free(&q->base);
    const char *cells[] = {"ID",          "DESCRIPTION",
                           "USES",        "EXPIRES",
                           "STATE",       "LABELS",
                           "a",           "lab",
                           "1/3",         "2026-11-23T07:00:01Z",
                           "active",      "-",
                           "bb",          "-",
                           "2/unlimited", "-",
                           "revoked",     "-",
                           "ccc",         "-",
                           "0/unlimited", "2026-11-23T06:59:59Z",
                           "expired",     "-"};
    char *want = fake_expect_table(6, cells, 4);
    assert_string_equal(f.out, want);
    free(want);

    Aegis__V1__RevokeTokenResponse rr = AEGIS__V1__REVOKE_TOKEN_RESPONSE__INIT;
    fake_reply(&f, 0, NULL, &rr.base);
    assert_int_equal(fake_run(&f, "tokens", "revoke", "bb", NULL), 0);
    Aegis__V1__RevokeTokenRequest *rq =
        (void *)fake_request(&f, 1, &aegis__v1__revoke_token_request__descriptor);
    assert_string_equal(rq->token_id, "bb");
    ctl_pb_free(&rq->base);
    assert_string_equal(f.out, "token bb revoked\n");
    fake_reply(&f, AEGIS_GRPC_UNAVAILABLE, "database down", NULL)->code = AEGIS_GRPC_UNAVAILABLE;
    assert_int_equal(fake_run(&f, "tokens", "revoke", "bb", NULL), 1);
    assert_non_null(strstr(f.err, "RevokeToken: UNAVAILABLE: database down"));
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_list_and_revoke),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
