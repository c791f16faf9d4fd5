/*
 * Mutual TLS and pinning (tls_wolfssl.c): every refusal must fail with its
 * specific reason visible on both sides.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "tnet.h"
#include "tsvc.h"

#include <aegis/err.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct tpki pki;

static void dump(const char *what, const struct aegis_close_reason *why)
{
    char buf[256];
    print_message("%s: %s\n", what, aegis_close_reason_format(why, buf, sizeof(buf)));
}

/* Runs a handshake that must fail; returns with both close reasons set. */
static void must_fail(struct tfx *f)
{
    tfx_start(f, 21);
    assert_false(tfx_connect(f, 10 * AEGIS_NS_PER_S));
    tnet_run(&f->net, 5 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(f->cli.established, 0);
    assert_int_equal(f->cli.closed, 1);
    assert_int_equal(f->svc.srv_closed, 1);
    dump("client", &f->cli.why);
    dump("server", &f->svc.srv_why);
    assert_int_equal(aegis_endpoint_conn_count(f->net.cli), 0);
    assert_int_equal(aegis_endpoint_conn_count(f->net.srv), 0);
}

static void test_ok_identity(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    tfx_start(&f, 20);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    assert_true(f.svc.last_peer.has_cert);
    assert_true(f.svc.last_peer.chains_to_ca);
    assert_false(f.svc.last_peer.self_signed);
    assert_string_equal(f.svc.last_peer.subject_cn, "agent-1");
    assert_string_equal(f.svc.last_peer.issuer_cn, "Test Fleet CA");
    assert_string_equal(f.svc.last_peer.pin, pki.client_pin);
    assert_string_equal(f.cli.peer.pin, pki.server_pin);
    assert_int_equal(aegis_endpoint_stats(f.net.srv)->handshakes_ok, 1);
    tfx_free(&f);
}

static void test_no_client_cert(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.ccfg.tls.cert_pem = f.ccfg.tls.key_pem = NULL;
    f.ccfg.tls.cert_len = f.ccfg.tls.key_len = 0;
    must_fail(&f);
    assert_int_equal(f.svc.handshakes, 0); /* the hook never ran */
    assert_int_equal(f.svc.srv_why.kind, AEGIS_CLOSE_TLS_ALERT);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_TLS_ALERT);
    assert_true(f.cli.why.by_peer);
    assert_int_equal(f.cli.why.tls_alert, f.svc.srv_why.tls_alert);
    assert_int_equal(f.cli.why.tls_alert, 116); /* certificate_required (TLS 1.3) */
    assert_string_equal(f.cli.why.reason, "client presented no certificate");
    assert_int_equal(aegis_endpoint_stats(f.net.srv)->handshakes_failed_tls, 1);
    tfx_free(&f);
}

static void test_rogue_ca(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.rogue_client);
    must_fail(&f);
    assert_int_equal(f.svc.handshakes, 0);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_TLS_ALERT);
    assert_string_equal(f.cli.why.reason, "certificate not issued by the trusted CA");
    assert_string_equal(f.svc.srv_why.reason, "certificate not issued by the trusted CA");
    tfx_free(&f);
}

static void test_expired_cert(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.expired_client);
    must_fail(&f);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_TLS_ALERT);
    assert_string_equal(f.cli.why.reason, "certificate expired");
    assert_string_equal(f.svc.srv_why.reason, "certificate expired");
    tfx_free(&f);
}

static void test_wrong_pin(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.ccfg.tls.pins[0] = pki.server2_pin; /* not the key the server has */
    must_fail(&f);
    assert_int_equal(f.svc.handshakes, 0);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_TLS_ALERT);
    assert_int_equal(f.cli.why.err, AEGIS_ERR_PIN_MISMATCH);
    assert_false(f.cli.why.by_peer);
    assert_int_equal(f.svc.srv_why.kind, AEGIS_CLOSE_TLS_ALERT);
    assert_true(f.svc.srv_why.by_peer);
    assert_int_equal(f.svc.srv_why.tls_alert, 42);
    assert_string_equal(f.svc.srv_why.reason, "server key does not match the pinned SPKI");
    tfx_free(&f);
}

static void test_other_server_cert_same_ca(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    /* a valid certificate of the same CA, but not the pinned key */
    f.scfg.tls.cert_pem = pki.server2.cert;
    f.scfg.tls.cert_len = strlen(pki.server2.cert);
    f.scfg.tls.key_pem = pki.server2.key;
    f.scfg.tls.key_len = strlen(pki.server2.key);
    must_fail(&f);
    assert_int_equal(f.cli.why.err, AEGIS_ERR_PIN_MISMATCH);
    assert_int_equal(f.svc.srv_why.tls_alert, 42);
    assert_string_equal(f.svc.srv_why.reason, "server key does not match the pinned SPKI");
    tfx_free(&f);
}

static void test_two_pins_rotation(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.ccfg.tls.pins[0] = pki.server2_pin;
    f.ccfg.tls.pins[1] = pki.server_pin;
    f.ccfg.tls.npins = 2;
    tfx_start(&f, 22);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    tfx_free(&f);
}

static void test_hook_refuses(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.svc.refuse = 1;
    must_fail(&f);
    assert_int_equal(f.svc.handshakes, 1);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_PEER_APP);
    assert_int_equal(f.cli.why.code, AEGIS_CLOSE_CODE_REFUSED);
    assert_string_equal(f.cli.why.reason, "agent agent-1 is revoked");
    assert_int_equal(f.svc.srv_why.kind, AEGIS_CLOSE_LOCAL);
    assert_int_equal(f.svc.srv_why.err, AEGIS_ERR_REFUSED);
    assert_string_equal(f.svc.srv_why.reason, "agent agent-1 is revoked");
    assert_int_equal(aegis_endpoint_stats(f.net.srv)->handshakes_failed_refused, 1);
    tfx_free(&f);
}

/* Enroll mode: any client certificate passes TLS; the hook sees whether
 * it is self-signed and whether it chains to the CA. A rogue CA is never
 * learned (two connections in a row stay unverified). */
static void test_accept_any_identity(void **state)
{
    (void)state;
    const struct tcred *who[] = {&pki.self_client, &pki.client, &pki.rogue_client,
                                 &pki.rogue_client};
    int self[] = {1, 0, 0, 0};
    int chains[] = {0, 1, 0, 0};
    for (int i = 0; i < 4; i++) {
        struct tfx f;
        tfx_config(&f, &pki, who[i]);
        f.scfg.tls.accept_any_client_cert = 1;
        tfx_start(&f, (uint64_t)(30 + i));
        assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
        assert_true(f.svc.last_peer.has_cert);
        assert_int_equal(f.svc.last_peer.self_signed, self[i]);
        assert_int_equal(f.svc.last_peer.chains_to_ca, chains[i]);
        if (!chains[i])
            assert_true(f.svc.last_peer.verify_error[0] != '\0');
        tfx_free(&f);
    }
    /* same server endpoint, rogue twice: still not trusted the second time */
    struct tfx f;
    tfx_config(&f, &pki, &pki.rogue_client);
    f.scfg.tls.accept_any_client_cert = 1;
    tfx_start(&f, 40);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    assert_false(f.svc.last_peer.chains_to_ca);
    f.cli.established = 0;
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    assert_false(f.svc.last_peer.chains_to_ca);
    assert_int_equal(f.svc.handshakes, 2);
    tfx_free(&f);
}

/* Reads a key log file into lines "LABEL RANDOM SECRET"; returns the count. */
static int read_keylog(const char *path, char lines[][256], int max)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    int n = 0;
    while (n < max && fgets(lines[n], 256, fp)) {
        lines[n][strcspn(lines[n], "\n")] = 0;
        n++;
    }
    fclose(fp);
    return n;
}

static const char *find_label(char lines[][256], int n, const char *label)
{
    size_t len = strlen(label);
    for (int i = 0; i < n; i++) {
        if (strncmp(lines[i], label, len) == 0 && lines[i][len] == ' ')
            return lines[i];
    }
    return NULL;
}

/* SSLKEYLOGFILE: both sides write the NSS key log format, 0600, and agree
 * on every secret (what Wireshark needs to decrypt a capture). */
static void test_keylog(void **state)
{
    (void)state;
    char dir[] = "/tmp/aegis-keylog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cpath[64], spath[64];
    snprintf(cpath, sizeof(cpath), "%s/client.keys", dir);
    snprintf(spath, sizeof(spath), "%s/server.keys", dir);
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.ccfg.tls.keylog_path = cpath;
    f.scfg.tls.keylog_path = spath;
    tfx_start(&f, 24);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    tfx_free(&f);

    struct stat st;
    assert_int_equal(stat(cpath, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    static char cl[16][256], sl[16][256];
    int nc = read_keylog(cpath, cl, 16), ns = read_keylog(spath, sl, 16);
    static const char *const labels[] = {"CLIENT_HANDSHAKE_TRAFFIC_SECRET",
                                         "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                                         "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"};
    for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
        const char *c = find_label(cl, nc, labels[i]);
        const char *s2 = find_label(sl, ns, labels[i]);
        assert_non_null(c);
        assert_non_null(s2);
        /* "LABEL <64 hex client random> <hex secret>" and identical on both sides */
        const char *rnd = strchr(c, ' ') + 1;
        const char *sec = strchr(rnd, ' ');
        assert_non_null(sec);
        assert_int_equal(sec - rnd, 64);
        assert_true(strlen(sec + 1) >= 64);
        assert_string_equal(c, s2);
    }
    unlink(cpath);
    unlink(spath);
    rmdir(dir);
}

static void test_bad_config(void **state)
{
    (void)state;
    struct aegis_endpoint_config c = {0};
    struct aegis_endpoint *ep = NULL;
    tpki_client_tls(&pki, &pki.client, &c.tls);
    c.tls.pins[0] = "sha256//short";
    assert_int_equal(aegis_endpoint_new(&c, &ep), AEGIS_ERR_MALFORMED);
    c.tls.npins = 0;
    assert_int_equal(aegis_endpoint_new(&c, &ep), AEGIS_ERR_CONFIG);
    tpki_client_tls(&pki, &pki.client, &c.tls);
    c.tls.key_pem = pki.server.key; /* key of another certificate */
    c.tls.key_len = strlen(pki.server.key);
    assert_int_equal(aegis_endpoint_new(&c, &ep), AEGIS_ERR_CERT);
    struct aegis_endpoint_config s = {.is_server = 1};
    tpki_server_tls(&pki, &s.tls);
    s.tls.ca_pem = NULL;
    assert_int_equal(aegis_endpoint_new(&s, &ep), AEGIS_ERR_CONFIG);
    assert_null(ep);
}

int main(void)
{
    tpki_make(&pki);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_identity),
        cmocka_unit_test(test_no_client_cert),
        cmocka_unit_test(test_rogue_ca),
        cmocka_unit_test(test_expired_cert),
        cmocka_unit_test(test_wrong_pin),
        cmocka_unit_test(test_other_server_cert_same_ca),
        cmocka_unit_test(test_two_pins_rotation),
        cmocka_unit_test(test_hook_refuses),
        cmocka_unit_test(test_accept_any_identity),
        cmocka_unit_test(test_keylog),
        cmocka_unit_test(test_bad_config),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    tpki_free(&pki);
    return rv;
}
