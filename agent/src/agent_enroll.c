/*
 * `aegis-agent enroll` (DESIGN §3, §4, FLEET_CONTRACT): generate the host's
 * Ed25519 key, present it in a self-signed bootstrap certificate to the
 * pinned server, call Enroll with the token, check what comes back (the
 * certificate is for OUR key and chains to the returned CA), then store
 * everything. agent.id is written last: it marks a complete enrollment.
 */
#include "agent_cmd.h"
#include "agent_daemon.h"
#include "agent_facts.h"
#include "agent_msg.h"
#include "agent_version.h"

#include <aegis/err.h>
#include <aegis/hex.h>
#include <aegis/pki.h>
#include <aegis/rpc.h>
#include <aegis/transport_ev.h>

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATH_ENROLL "/aegis.v1.AgentService/Enroll"
/* The whole enrollment (handshake + one RPC) must finish in this time. */
#define ENROLL_TIMEOUT_NS (30 * AEGIS_NS_PER_S)

struct enroll_ctx {
    struct ev_loop *loop;
    struct aegis_log log;
    uint8_t *req;
    size_t reqlen;
    uint8_t *resp;
    size_t resplen;
    int done;
    int status;
    char message[256];
    char closed[256];
    struct aegis_call *call;
};

static int en_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    struct enroll_ctx *e = ud;
    if (e->resp == NULL && (e->resp = malloc(len ? len : 1)) != NULL) {
        memcpy(e->resp, msg, len);
        e->resplen = len;
    }
    return 0;
}

static void en_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct enroll_ctx *e = ud;
    e->call = NULL;
    e->done = 1;
    e->status = st->code;
    snprintf(e->message, sizeof(e->message), "%s", st->message);
}

static const struct aegis_call_callbacks en_cbs = {.on_message = en_msg, .on_close = en_close};

static void en_established(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                           void *ud)
{
    (void)peer;
    struct enroll_ctx *e = ud;
    struct aegis_call_opts o = {.deadline = aegis_now() + ENROLL_TIMEOUT_NS};
    int rv = aegis_call_start(conn, PATH_ENROLL, AEGIS_RPC_UNARY, &o, &en_cbs, e, &e->call);
    if (rv == 0 && (rv = aegis_call_send(e->call, e->req, e->reqlen)) == 0)
        aegis_call_close_send(e->call);
    if (rv != 0) {
        e->done = 1;
        e->status = AEGIS_GRPC_INTERNAL;
        snprintf(e->message, sizeof(e->message), "cannot start Enroll: %s", aegis_strerror(rv));
    }
}

static void en_closed(struct aegis_conn *conn, const struct aegis_close_reason *why, void *ud)
{
    (void)conn;
    struct enroll_ctx *e = ud;
    aegis_close_reason_format(why, e->closed, sizeof(e->closed));
    if (!e->done) {
        e->done = 1;
        e->status = AEGIS_GRPC_UNAVAILABLE;
        snprintf(e->message, sizeof(e->message), "connection closed: %.200s", e->closed);
    }
}

static void tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void make_uuid(char out[37])
{
    uint8_t r[16];
    if (agent_random(r, sizeof(r)) != 0)
        memset(r, 0, sizeof(r));
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    char hex[33];
    aegis_hex_encode(r, 16, hex, sizeof(hex));
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "aegis-agent enroll: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

/* Checks the response and writes the state files; agent.id last. */
static int store(struct agent_state_dir *sd, const struct agent_enroll_opts *o,
                 const Aegis__V1__EnrollResponse *r, const struct aegis_key *key,
                 const char *host_id)
{
    char tmp[600];
    const char *dir = agent_state_dir_path(sd);
    if (r->agent_id[0] == '\0' || strlen(r->agent_id) > AGENT_IDENT_ID_MAX ||
        strpbrk(r->agent_id, "/\n\r \t") != NULL)
        return fail("the server returned a bad agent id \"%.64s\"%s", r->agent_id, "");
    if (r->command_signing_public_key.len != AGENT_ED25519_PUB_LEN)
        return fail("the server's command key is %s bytes%s, want 32 (raw Ed25519)",
                    (snprintf(tmp, sizeof(tmp), "%zu", r->command_signing_public_key.len), tmp),
                    "");
    /* The certificate must certify the key we generated, under the CA. */
    uint8_t *mine = NULL, *theirs = NULL;
    size_t ml = 0, tl = 0;
    int rv = aegis_key_spki_der(key, &mine, &ml);
    if (rv == 0)
        rv =
            aegis_cert_spki_der(NULL, r->certificate_pem, strlen(r->certificate_pem), &theirs, &tl);
    int same = rv == 0 && ml == tl && memcmp(mine, theirs, ml) == 0;
    aegis_free(NULL, theirs);
    if (!same) {
        aegis_free(NULL, mine);
        return fail("the issued certificate is not for this host's key (%s)%s",
                    rv ? aegis_strerror(rv) : "SPKI differs", "");
    }
    rv = aegis_cert_verify(r->certificate_pem, strlen(r->certificate_pem), r->ca_pem,
                           strlen(r->ca_pem), (int64_t)time(NULL));
    if (rv != 0) {
        aegis_free(NULL, mine);
        return fail("the issued certificate does not verify against the returned CA: %s%s",
                    aegis_strerror(rv), "");
    }
    aegis_free(NULL, mine);
    char pins[256] = "";
    size_t pl = 0;
    for (size_t i = 0; i < r->n_server_pins && i < AGENT_IDENT_MAX_PINS; i++) {
        uint8_t h[32];
        if (aegis_pin_parse(r->server_pins[i], h) != 0)
            return fail("the server returned a malformed pin \"%.60s\"%s", r->server_pins[i], "");
        agent_json_raw(pins, sizeof(pins), &pl, "%s\n", r->server_pins[i]);
    }
    if (pl == 0)
        agent_json_raw(pins, sizeof(pins), &pl, "%s\n", o->pin);

    /* With --force the old identity goes away first: no mix of the two. */
    char path[4096];
    agent_state_dir_path_of(sd, AGENT_FILE_ID, path, sizeof(path));
    unlink(path);
    const char *stale[] = {AGENT_FILE_SEEN,   AGENT_FILE_ACKS,   AGENT_FILE_INFLIGHT,
                           AGENT_FILE_UPDATE, AGENT_FILE_STATUS, AGENT_FILE_LABELS};
    for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
        agent_state_dir_path_of(sd, stale[i], path, sizeof(path));
        unlink(path);
    }
    char kdir[4096];
    agent_io_path(kdir, sizeof(kdir), dir, AGENT_DIR_ARTKEYS);
    DIR *d = opendir(kdir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        agent_io_path(path, sizeof(path), kdir, de->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    if ((rv = agent_state_dir_ensure(kdir, AGENT_STATE_DIR_CREATE, NULL, tmp, sizeof(tmp))) != 0)
        return fail("%s%s", tmp, "");

    char *kpem = NULL;
    size_t kl = 0;
    if ((rv = aegis_key_to_pem(key, &kpem, &kl)) != 0)
        return fail("cannot encode the key: %s%s", aegis_strerror(rv), "");
    rv = agent_state_dir_write(sd, AGENT_FILE_KEY, kpem, kl, 0600);
    explicit_bzero(kpem, kl);
    aegis_free(NULL, kpem);
    char cmdpem[128];
    agent_pubkey_pem(r->command_signing_public_key.data, cmdpem);
    char label[600];
    size_t lp = 0;
    char *labels = calloc(1, 65536);
    for (size_t i = 0; labels && r->labels && i < r->labels->n_entries; i++) {
        snprintf(label, sizeof(label), "%s=%s\n", r->labels->entries[i]->key,
                 r->labels->entries[i]->value);
        if (strchr(r->labels->entries[i]->key, '=') == NULL)
            agent_json_raw(labels, 65536, &lp, "%s", label);
    }
    if (rv == 0)
        rv = agent_state_dir_write(sd, AGENT_FILE_CERT, r->certificate_pem,
                                   strlen(r->certificate_pem), 0644);
    if (rv == 0)
        rv = agent_state_dir_write(sd, AGENT_FILE_CA, r->ca_pem, strlen(r->ca_pem), 0644);
    if (rv == 0)
        rv = agent_state_dir_write(sd, AGENT_FILE_PINS, pins, pl, 0644);
    if (rv == 0)
        rv = agent_state_dir_write(sd, AGENT_FILE_CMDKEY, cmdpem, strlen(cmdpem), 0644);
    if (rv == 0)
        rv = agent_state_dir_write(sd, AGENT_FILE_SERVER, o->server, strlen(o->server), 0644);
    if (rv == 0)
        rv = agent_state_dir_write(sd, AGENT_FILE_HOSTID, host_id, strlen(host_id), 0644);
    if (rv == 0 && labels)
        rv = agent_state_dir_write(sd, AGENT_FILE_LABELS, labels, lp, 0644);
    free(labels);
    for (size_t i = 0; rv == 0 && i < r->n_artifact_signing_keys; i++) {
        const Aegis__V1__ArtifactSigningKey *k = r->artifact_signing_keys[i];
        if (k->public_key.len != AGENT_ED25519_PUB_LEN) {
            fprintf(stderr, "aegis-agent enroll: skipping artifact key %.32s: not 32 bytes\n",
                    k->key_id);
            continue;
        }
        char id[AGENT_KEY_ID_LEN + 1], pem[128], name[64];
        agent_key_id(k->public_key.data, id);
        if (k->key_id[0] && strcmp(k->key_id, id) != 0)
            fprintf(stderr,
                    "aegis-agent enroll: artifact key id %.32s differs from its "
                    "computed id %s; stored as %s\n",
                    k->key_id, id, id);
        agent_pubkey_pem(k->public_key.data, pem);
        snprintf(name, sizeof(name), "%s.pub", id);
        char kd[4096];
        agent_io_path(kd, sizeof(kd), dir, AGENT_DIR_ARTKEYS);
        rv = agent_io_write_file_atomic(NULL, kd, name, pem, strlen(pem), 0644);
    }
    if (rv == 0)
        rv = agent_state_dir_write(sd, AGENT_FILE_ID, r->agent_id, strlen(r->agent_id), 0644);
    if (rv != 0)
        return fail("cannot write the enrollment into %s: %s", dir, aegis_strerror(rv));
    return 0;
}

int agent_enroll(const struct agent_enroll_opts *o)
{
    char err[512] = "";
    uint8_t pinhash[32];
    if (o->server == NULL || o->pin == NULL || o->token == NULL)
        return fail("--server, --pin and --token are required%s%s", "", "");
    if (aegis_pin_parse(o->pin, pinhash) != 0)
        return fail("bad --pin \"%s\": want sha256//<base64 of the SPKI hash> (aegis-certs "
                    "prints it)%s",
                    o->pin, "");
    struct sockaddr_storage ss;
    socklen_t sl;
    if (aegis_parse_addr(o->server, &ss, &sl) != 0)
        return fail("bad --server \"%s\": want IPv4:PORT or [IPv6]:PORT%s", o->server, "");
    struct agent_state_dir *sd = NULL;
    int rv = agent_state_dir_open(o->state_dir, AGENT_STATE_DIR_CREATE, NULL, NULL, err,
                                  sizeof(err), &sd);
    if (rv == 0)
        rv = agent_state_dir_lock(sd, getpid(), err, sizeof(err));
    if (rv != 0) {
        agent_state_dir_del(sd);
        return fail("%s%s", err, "");
    }
    char existing[AGENT_IDENT_ID_MAX + 1];
    if (!o->force &&
        agent_read_small(o->state_dir, AGENT_FILE_ID, existing, sizeof(existing)) == 0) {
        agent_state_dir_del(sd);
        return fail("%s is already enrolled as %s; use --force to re-enroll", o->state_dir,
                    existing);
    }
    uint8_t mh[32];
    if ((rv = agent_machine_hash(o->machine_id_file, mh, err, sizeof(err))) != 0) {
        agent_state_dir_del(sd);
        return fail("%s%s", err, "");
    }
    char host_id[AGENT_IDENT_ID_MAX + 1];
    if (agent_read_small(o->state_dir, AGENT_FILE_HOSTID, host_id, sizeof(host_id)) != 0 ||
        host_id[0] == '\0')
        make_uuid(host_id);

    struct aegis_key *key = NULL;
    char *cert = NULL, *kpem = NULL;
    size_t certlen = 0, kl = 0;
    uint8_t *spki = NULL;
    size_t spkil = 0;
    struct enroll_ctx e;
    memset(&e, 0, sizeof(e));
    struct aegis_ev *ev = NULL;
    struct aegis_conn *conn = NULL;
    int ret = 1;
    rv = aegis_key_generate(NULL, AEGIS_KEY_ED25519, &key);
    if (rv == 0)
        rv = aegis_key_spki_der(key, &spki, &spkil);
    struct aegis_cert_spec spec = {.role = AEGIS_ROLE_SELF, .common_name = host_id};
    if (rv == 0)
        rv = aegis_cert_issue(NULL, &spec, spki, spkil, key, NULL, &cert, &certlen);
    if (rv == 0)
        rv = aegis_key_to_pem(key, &kpem, &kl);
    if (rv != 0) {
        fail("cannot make the host key and bootstrap certificate: %s%s", aegis_strerror(rv), "");
        goto out;
    }
    struct agent_facts f;
    char *addrs[AGENT_FACTS_MAX_ADDRS];
    Aegis__V1__HostFacts hf;
    agent_facts_collect(&f, "", (int64_t)aegis_wallclock());
    agent_facts_to_pb(&f, host_id, addrs, &hf);
    Aegis__V1__EnrollRequest req = AEGIS__V1__ENROLL_REQUEST__INIT;
    req.token = (char *)o->token;
    req.host = &hf;
    req.machine_id_hash.data = mh;
    req.machine_id_hash.len = sizeof(mh);
    req.agent_version = (char *)agent_version_string();
    if ((rv = agent_msg_pack(&req, NULL, &e.req, &e.reqlen)) != 0) {
        fail("cannot encode EnrollRequest: %s%s", aegis_strerror(rv), "");
        goto out;
    }
    e.loop = ev_loop_new(EVFLAG_AUTO);
    e.log.level = o->log_level;
    e.log.write = agent_log_sink;
    struct aegis_endpoint_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.log = &e.log;
    cfg.tls.cert_pem = cert;
    cfg.tls.cert_len = certlen;
    cfg.tls.key_pem = kpem;
    cfg.tls.key_len = kl;
    cfg.tls.pins[0] = o->pin;
    cfg.tls.npins = 1;
    cfg.callbacks.on_established = en_established;
    cfg.callbacks.on_closed = en_closed;
    cfg.user_data = &e;
    rv = aegis_ev_new(e.loop, &cfg, ss.ss_family == AF_INET6 ? "[::]:0" : "0.0.0.0:0", &ev);
    if (rv == 0)
        rv = aegis_ev_connect(ev, o->server, NULL, &conn);
    if (rv != 0) {
        fail("cannot connect to %s: %s", o->server, aegis_strerror(rv));
        goto out;
    }
    ev_timer t;
    ev_timer_init(&t, tick, 0.25, 0.25); /* bounds each loop turn for the deadline check */
    ev_timer_start(e.loop, &t);
    aegis_tstamp end = aegis_now() + ENROLL_TIMEOUT_NS;
    while (!e.done && aegis_now() < end)
        ev_run(e.loop, EVRUN_ONCE);
    ev_timer_stop(e.loop, &t);
    if (!e.done) {
        fail("no answer from %s within 30 s%s (is aegis-control running there and reachable "
             "over UDP?)",
             o->server, "");
        goto out;
    }
    if (e.status != AEGIS_GRPC_OK || e.resp == NULL) {
        char st[300];
        snprintf(st, sizeof(st), "%s %s", aegis_grpc_status_name(e.status), e.message);
        fail("enrollment refused by %s: %s", o->server, st);
        goto out;
    }
    Aegis__V1__EnrollResponse *r = NULL;
    if ((rv = agent_msg_unpack(&aegis__v1__enroll_response__descriptor, e.resp, e.resplen, NULL,
                               (void **)&r)) != 0) {
        fail("malformed EnrollResponse from %s: %s", o->server, aegis_strerror(rv));
        goto out;
    }
    if (store(sd, o, r, key, host_id) == 0) {
        printf("enrolled as %s (host id %s) with %s; state in %s\n", r->agent_id, host_id,
               o->server, o->state_dir);
        ret = 0;
    }
    agent_msg_free(r, NULL);
out:
    if (conn && ev)
        aegis_conn_close(conn, 0, "enrolled");
    aegis_ev_del(ev);
    if (e.loop)
        ev_loop_destroy(e.loop);
    free(e.resp);
    aegis_free(NULL, e.req);
    if (kpem) {
        explicit_bzero(kpem, kl);
        aegis_free(NULL, kpem);
    }
    aegis_free(NULL, cert);
    aegis_free(NULL, spki);
    aegis_key_del(key);
    agent_state_dir_del(sd);
    return ret;
}
