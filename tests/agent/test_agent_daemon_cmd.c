/*
 * Command verification: signature over the exact bytes, scope, expiry,
 * nonce, and replay through the durable seen-id journal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include "agent_cmd.h"
#include "agent_test_util.h"
#include "agentd_test_keys.h"

#include <aegis/err.h>

#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define AGENT "11111111-2222-3333-4444-555555555555"
#define NOW ((aegis_tstamp)1800000000 * AEGIS_NS_PER_S)

static struct tkey ck, other;

struct signed_buf {
    uint8_t *buf;
    size_t len;
};

/* Builds a SignedCommand (RunAction ping) and signs it with k. mutate: 1
 * flips a byte of the command after signing. */
static struct signed_buf make(const struct tkey *k, const char *id, const char *agent,
                              const char *selector, int64_t expires, size_t nonce_len, int mutate)
{
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RunAction ra = AEGIS__V1__RUN_ACTION__INIT;
    ra.name = "ping";
    char *ids[1] = {(char *)agent};
    c.id = (char *)id;
    c.sequence = 7;
    c.agent_ids = ids;
    c.n_agent_ids = agent ? 1 : 0;
    c.selector = (char *)(selector ? selector : "");
    c.issued_unix_ns = (int64_t)NOW - 1000;
    c.expires_unix_ns = expires;
    uint8_t nonce[32] = {1, 2, 3};
    c.nonce.data = nonce;
    c.nonce.len = nonce_len;
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION;
    c.run_action = &ra;
    uint8_t *cb = NULL;
    size_t cl = 0;
    assert_int_equal(agent_msg_pack(&c, NULL, &cb, &cl), 0);
    uint8_t sig[64];
    tkey_sign(k, cb, cl, sig);
    if (mutate)
        cb[cl - 1] ^= 1;
    Aegis__V1__SignedCommand sc = AEGIS__V1__SIGNED_COMMAND__INIT;
    sc.command.data = cb;
    sc.command.len = cl;
    sc.signature.data = sig;
    sc.signature.len = 64;
    sc.key_id = (char *)k->id;
    struct signed_buf out;
    assert_int_equal(agent_msg_pack(&sc, NULL, &out.buf, &out.len), 0);
    aegis_free(NULL, cb);
    return out;
}

static struct agent_cmd_trust trust(void)
{
    static struct agent_label labels[] = {{"env", "prod"}, {"role", "db"}};
    struct agent_cmd_trust t;
    memset(&t, 0, sizeof(t));
    memcpy(t.command_pub, ck.pub, 32);
    t.command_key_id = ck.id;
    t.agent_id = AGENT;
    t.labels = labels;
    t.nlabels = 2;
    return t;
}

static int verify(struct signed_buf sb, Aegis__V1__Command **pc, char *reason)
{
    struct agent_cmd_trust t = trust();
    *pc = NULL;
    int rv = agent_cmd_verify(&t, sb.buf, sb.len, NOW, NULL, pc, reason, 512);
    aegis_free(NULL, sb.buf);
    return rv;
}

static void test_good(void **state)
{
    (void)state;
    Aegis__V1__Command *c;
    char reason[512] = "";
    assert_int_equal(verify(make(&ck, "cmd-1", AGENT, NULL, (int64_t)NOW + 60, 16, 0), &c, reason),
                     0);
    assert_non_null(c);
    assert_string_equal(c->id, "cmd-1");
    assert_int_equal(c->sequence, 7);
    assert_string_equal(c->run_action->name, "ping");
    agent_msg_free(c, NULL);
}

static void test_bad_signature(void **state)
{
    (void)state;
    Aegis__V1__Command *c;
    char reason[512] = "";
    /* content changed after signing */
    assert_int_equal(verify(make(&ck, "cmd-1", AGENT, NULL, (int64_t)NOW + 60, 16, 1), &c, reason),
                     AEGIS_ERR_SIGNATURE);
    assert_null(c);
    assert_non_null(strstr(reason, "bad signature"));
    /* signed by another key that claims the trusted key's id */
    struct signed_buf sb = make(&other, "cmd-1", AGENT, NULL, (int64_t)NOW + 60, 16, 0);
    Aegis__V1__SignedCommand *sc = NULL;
    assert_int_equal(agent_msg_unpack(&aegis__v1__signed_command__descriptor, sb.buf, sb.len, NULL,
                                      (void **)&sc),
                     0);
    aegis_free(NULL, sb.buf);
    char *orig = sc->key_id;
    sc->key_id = ck.id;
    assert_int_equal(agent_msg_pack(sc, NULL, &sb.buf, &sb.len), 0);
    sc->key_id = orig;
    agent_msg_free(sc, NULL);
    assert_int_equal(verify(sb, &c, reason), AEGIS_ERR_SIGNATURE);
    assert_null(c);
    /* an unknown key id */
    assert_int_equal(
        verify(make(&other, "cmd-1", AGENT, NULL, (int64_t)NOW + 60, 16, 0), &c, reason),
        AEGIS_ERR_SIGNATURE);
    assert_non_null(strstr(reason, "unknown key id"));
    /* garbage */
    uint8_t junk[] = {0xff, 0xff, 0xff};
    struct signed_buf g = {aegis_memdup(NULL, junk, 3), 3};
    assert_int_equal(verify(g, &c, reason), AEGIS_ERR_MALFORMED);
}

static void test_scope(void **state)
{
    (void)state;
    Aegis__V1__Command *c;
    char reason[512] = "";
    assert_int_equal(verify(make(&ck, "cmd-2", "99999999-0000-0000-0000-000000000000", NULL,
                                 (int64_t)NOW + 60, 16, 0),
                            &c, reason),
                     AEGIS_ERR_PERMISSION);
    assert_non_null(c); /* verified: the caller may ack it FAILED */
    assert_non_null(strstr(reason, "not addressed to this agent"));
    agent_msg_free(c, NULL);
    /* selector-only commands match on the enrolled labels */
    assert_int_equal(
        verify(make(&ck, "cmd-3", NULL, "env=prod,role=db", (int64_t)NOW + 60, 16, 0), &c, reason),
        0);
    agent_msg_free(c, NULL);
    assert_int_equal(
        verify(make(&ck, "cmd-4", NULL, "env=dev", (int64_t)NOW + 60, 16, 0), &c, reason),
        AEGIS_ERR_PERMISSION);
    agent_msg_free(c, NULL);
    struct agent_label l[] = {{"env", "prod"}};
    assert_false(agent_selector_match("", l, 1));
    assert_false(agent_selector_match("=prod", l, 1));
    assert_false(agent_selector_match("env", l, 1));
    assert_true(agent_selector_match("env=prod", l, 1));
    assert_false(agent_selector_match("env=prodx", l, 1));
}

static void test_expired_and_nonce(void **state)
{
    (void)state;
    Aegis__V1__Command *c;
    char reason[512] = "";
    assert_int_equal(verify(make(&ck, "cmd-5", AGENT, NULL, (int64_t)NOW, 16, 0), &c, reason),
                     AEGIS_ERR_EXPIRED);
    assert_non_null(strstr(reason, "expired"));
    agent_msg_free(c, NULL);
    assert_int_equal(verify(make(&ck, "cmd-6", AGENT, NULL, 0, 16, 0), &c, reason),
                     AEGIS_ERR_EXPIRED);
    agent_msg_free(c, NULL);
    assert_int_equal(verify(make(&ck, "cmd-7", AGENT, NULL, (int64_t)NOW + 60, 8, 0), &c, reason),
                     AEGIS_ERR_MALFORMED);
    agent_msg_free(c, NULL);
    assert_int_equal(verify(make(&ck, "../etc", AGENT, NULL, (int64_t)NOW + 60, 16, 0), &c, reason),
                     AEGIS_ERR_MALFORMED);
    assert_null(c);
}

static void test_replay(void **state)
{
    (void)state;
    char dir[256], path[300];
    agent_test_mkdtemp(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/seen", dir);
    struct agent_seen *seen = NULL;
    assert_int_equal(agent_seen_open(path, NULL, NULL, NULL, NOW, NULL, 0, &seen), 0);
    Aegis__V1__Command *c;
    char reason[512];
    assert_int_equal(verify(make(&ck, "cmd-8", AGENT, NULL, (int64_t)NOW + 60, 16, 0), &c, reason),
                     0);
    enum agent_cmd_admission adm;
    uint32_t out = 0;
    assert_int_equal(agent_cmd_admit(seen, c, NOW, &adm, &out), 0);
    assert_int_equal(adm, AGENT_CMD_RUN);
    /* redelivered before it finished (e.g. after a crash): never run twice */
    assert_int_equal(agent_cmd_admit(seen, c, NOW, &adm, &out), 0);
    assert_int_equal(adm, AGENT_CMD_INTERRUPTED);
    assert_int_equal(agent_seen_mark_finished(seen, c->id, 5, NOW), 0);
    agent_seen_del(seen);
    /* the journal survives a restart: the replay is a duplicate */
    assert_int_equal(agent_seen_open(path, NULL, NULL, NULL, NOW, NULL, 0, &seen), 0);
    assert_int_equal(agent_cmd_admit(seen, c, NOW, &adm, &out), 0);
    assert_int_equal(adm, AGENT_CMD_DUPLICATE);
    assert_int_equal(out, 5);
    agent_seen_del(seen);
    agent_msg_free(c, NULL);
    agent_test_rmtree(dir);
}

int main(void)
{
    tkey_make(&ck);
    tkey_make(&other);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),   cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_scope),  cmocka_unit_test(test_expired_and_nonce),
        cmocka_unit_test(test_replay),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    tkey_free(&ck);
    tkey_free(&other);
    return rv;
}
