/* Test helpers: in-memory PKI and packet network (see tnet.h). */
#include "tnet.h"

#include <aegis/err.h>
#include <aegis/pki.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DIE(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

/* Bound on in-flight datagrams in the fake network. */
#define TNET_QMAX 4096
/* Bound on steps of one tnet_run (each step moves time or packets). */
#define TNET_STEPS 2000000

struct tpkt {
    aegis_tstamp at;
    uint64_t seq;
    int to_server;
    struct aegis_path path; /* as the receiver sees it */
    size_t len;
    uint8_t data[1500];
};

static void make_cred(struct tcred *out, const struct aegis_cert_spec *spec,
                      const struct tcred *issuer)
{
    struct aegis_key *key = NULL, *ikey = NULL;
    int rv = aegis_key_generate(NULL, AEGIS_KEY_ED25519, &key);
    if (rv)
        DIE("key: %s", aegis_strerror(rv));
    size_t len;
    uint8_t *spki;
    size_t spkilen;
    if ((rv = aegis_key_spki_der(key, &spki, &spkilen)) != 0)
        DIE("spki: %s", aegis_strerror(rv));
    if (issuer && (rv = aegis_key_from_pem(NULL, issuer->key, strlen(issuer->key), &ikey)) != 0)
        DIE("issuer key: %s", aegis_strerror(rv));
    rv = aegis_cert_issue(NULL, spec, spki, spkilen, issuer ? ikey : key,
                          issuer ? issuer->cert : NULL, &out->cert, &len);
    if (rv)
        DIE("issue %s: %s", spec->common_name, aegis_strerror(rv));
    if ((rv = aegis_key_to_pem(key, &out->key, &len)) != 0)
        DIE("key pem: %s", aegis_strerror(rv));
    aegis_free(NULL, spki);
    aegis_key_del(key);
    aegis_key_del(ikey);
}

static void pin_of(const struct tcred *c, char *out)
{
    struct aegis_cert_info info;
    int rv = aegis_cert_info_pem(c->cert, strlen(c->cert), &info);
    if (rv)
        DIE("cert info: %s", aegis_strerror(rv));
    memcpy(out, info.pin, sizeof(info.pin));
}

void tpki_make(struct tpki *p)
{
    memset(p, 0, sizeof(*p));
    int64_t now = (int64_t)time(NULL);
    static const char *const dns[] = {"localhost"};
    static const char *const ips[] = {"127.0.0.1"};
    struct aegis_cert_spec s = {.role = AEGIS_ROLE_CA, .common_name = "Test Fleet CA"};
    make_cred(&p->ca, &s, NULL);
    s = (struct aegis_cert_spec){.role = AEGIS_ROLE_SERVER,
                                 .common_name = "control",
                                 .dns_names = dns,
                                 .n_dns = 1,
                                 .ips = ips,
                                 .n_ips = 1};
    make_cred(&p->server, &s, &p->ca);
    s.common_name = "control-2";
    make_cred(&p->server2, &s, &p->ca);
    s = (struct aegis_cert_spec){.role = AEGIS_ROLE_AGENT, .common_name = "agent-1"};
    make_cred(&p->client, &s, &p->ca);
    s.common_name = "agent-expired";
    s.not_before = now - 3 * 86400;
    s.not_after = now - 86400;
    make_cred(&p->expired_client, &s, &p->ca);
    s = (struct aegis_cert_spec){.role = AEGIS_ROLE_CA, .common_name = "Rogue CA"};
    make_cred(&p->rogue_ca, &s, NULL);
    s = (struct aegis_cert_spec){.role = AEGIS_ROLE_AGENT, .common_name = "agent-rogue"};
    make_cred(&p->rogue_client, &s, &p->rogue_ca);
    s = (struct aegis_cert_spec){.role = AEGIS_ROLE_SELF, .common_name = "agent-new"};
    make_cred(&p->self_client, &s, NULL);
    pin_of(&p->server, p->server_pin);
    pin_of(&p->server2, p->server2_pin);
    pin_of(&p->client, p->client_pin);
}

static void cred_free(struct tcred *c)
{
    aegis_free(NULL, c->cert);
    aegis_free(NULL, c->key);
}

void tpki_free(struct tpki *p)
{
    cred_free(&p->ca);
    cred_free(&p->server);
    cred_free(&p->server2);
    cred_free(&p->client);
    cred_free(&p->rogue_ca);
    cred_free(&p->rogue_client);
    cred_free(&p->expired_client);
    cred_free(&p->self_client);
}

void tpki_server_tls(const struct tpki *p, struct aegis_tls_config *tls)
{
    memset(tls, 0, sizeof(*tls));
    tls->cert_pem = p->server.cert;
    tls->cert_len = strlen(p->server.cert);
    tls->key_pem = p->server.key;
    tls->key_len = strlen(p->server.key);
    tls->ca_pem = p->ca.cert;
    tls->ca_len = strlen(p->ca.cert);
}

void tpki_client_tls(const struct tpki *p, const struct tcred *c, struct aegis_tls_config *tls)
{
    memset(tls, 0, sizeof(*tls));
    tls->cert_pem = c->cert;
    tls->cert_len = strlen(c->cert);
    tls->key_pem = c->key;
    tls->key_len = strlen(c->key);
    tls->pins[0] = p->server_pin;
    tls->npins = 1;
}

/* ---- network ---- */

static uint64_t rnd(struct tnet *n)
{
    /* xorshift64*: seeded, reproducible */
    n->rng ^= n->rng >> 12;
    n->rng ^= n->rng << 25;
    n->rng ^= n->rng >> 27;
    return n->rng * 2685821657736338717ull;
}

static void set4(struct sockaddr_storage *ss, socklen_t *len, const char *ip, uint16_t port)
{
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof(*ss));
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, ip, &a->sin_addr);
    *len = sizeof(*a);
}

void tnet_init(struct tnet *n, struct aegis_endpoint_config *scfg,
               struct aegis_endpoint_config *ccfg, uint64_t seed)
{
    memset(n, 0, sizeof(*n));
    n->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
    n->now = 1000 * AEGIS_NS_PER_S;
    n->delay = 5 * AEGIS_NS_PER_MS;
    n->q = calloc(TNET_QMAX, sizeof(*n->q));
    if (!n->q)
        DIE("oom");
    set4(&n->cli_path.local, &n->cli_path.local_len, "10.0.0.1", 40000);
    set4(&n->cli_path.remote, &n->cli_path.remote_len, "10.0.0.2", 443);
    int rv;
    if (scfg) {
        scfg->is_server = 1;
        if ((rv = aegis_endpoint_new(scfg, &n->srv)) != 0)
            DIE("server endpoint: %s", aegis_strerror(rv));
    }
    if (ccfg) {
        ccfg->is_server = 0;
        if ((rv = aegis_endpoint_new(ccfg, &n->cli)) != 0)
            DIE("client endpoint: %s", aegis_strerror(rv));
    }
}

void tnet_free(struct tnet *n)
{
    aegis_endpoint_del(n->cli);
    aegis_endpoint_del(n->srv);
    free(n->q);
    memset(n, 0, sizeof(*n));
}

struct aegis_conn *tnet_connect(struct tnet *n)
{
    struct aegis_conn *c = NULL;
    int rv = aegis_endpoint_connect(n->cli, &n->cli_path, "localhost", n->now, &c);
    if (rv)
        DIE("connect: %s", aegis_strerror(rv));
    return c;
}

void tnet_set_nat(struct tnet *n, uint16_t port)
{
    n->nat_on = 1;
    set4(&n->nat_addr, &n->nat_len, "10.0.0.1", port);
}

static void enqueue(struct tnet *n, int to_server, const struct aegis_path *sent, const uint8_t *d,
                    size_t len)
{
    if (n->drop_all || (n->loss_pct && rnd(n) % 100 < n->loss_pct)) {
        n->dropped++;
        return;
    }
    if (n->nq >= TNET_QMAX) {
        n->dropped++;
        return;
    }
    struct tpkt *p = &n->q[n->nq++];
    p->to_server = to_server;
    p->seq = n->delivered + n->nq;
    p->at = n->now + n->delay;
    if (n->reorder_pct && rnd(n) % 100 < n->reorder_pct)
        p->at += rnd(n) % (2 * n->delay + 1);
    /* the receiver sees the path mirrored */
    p->path.local = sent->remote;
    p->path.local_len = sent->remote_len;
    p->path.remote = sent->local;
    p->path.remote_len = sent->local_len;
    if (to_server && n->nat_on) {
        p->path.remote = n->nat_addr;
        p->path.remote_len = n->nat_len;
    }
    if (!to_server && n->nat_on) {
        /* the NAT maps its public address back to the client's real one */
        p->path.local = n->cli_path.local;
        p->path.local_len = n->cli_path.local_len;
    }
    p->len = len;
    memcpy(p->data, d, len);
}

struct aegis_endpoint *tnet_active;

static void flush(struct tnet *n, struct aegis_endpoint *ep, int to_server)
{
    tnet_active = ep;
    uint8_t buf[1500];
    struct aegis_path path;
    size_t seg;
    for (int i = 0; i < 10000; i++) {
        long r = aegis_endpoint_send(ep, buf, sizeof(buf), 1, &path, &seg, n->now);
        if (r <= 0)
            return;
        enqueue(n, to_server, &path, buf, (size_t)r);
    }
    tnet_active = NULL;
}

int tnet_run(struct tnet *n, aegis_tstamp limit, int (*cond)(void *), void *arg)
{
    aegis_tstamp end = n->now + limit;
    for (long step = 0; step < TNET_STEPS; step++) {
        if (n->srv)
            flush(n, n->srv, 0);
        if (n->cli)
            flush(n, n->cli, 1);
        if (cond && cond(arg))
            return 1;
        /* next event: earliest packet or timer */
        aegis_tstamp next = AEGIS_TSTAMP_NEVER;
        size_t pi = SIZE_MAX;
        for (size_t i = 0; i < n->nq; i++)
            if (n->q[i].at < next ||
                (n->q[i].at == next && pi != SIZE_MAX && n->q[i].seq < n->q[pi].seq)) {
                next = n->q[i].at;
                pi = i;
            }
        aegis_tstamp te = AEGIS_TSTAMP_NEVER;
        if (n->srv) {
            aegis_tstamp e = aegis_endpoint_expiry(n->srv);
            te = e < te ? e : te;
        }
        if (n->cli) {
            aegis_tstamp e = aegis_endpoint_expiry(n->cli);
            te = e < te ? e : te;
        }
        if (te < next) {
            if (te > end) {
                n->now = end;
                return cond ? cond(arg) : 0;
            }
            if (te > n->now)
                n->now = te;
            tnet_active = n->srv;
            if (n->srv)
                aegis_endpoint_handle_expiry(n->srv, n->now);
            tnet_active = n->cli;
            if (n->cli)
                aegis_endpoint_handle_expiry(n->cli, n->now);
            tnet_active = NULL;
            continue;
        }
        if (pi == SIZE_MAX || next > end) {
            n->now = end;
            return cond ? cond(arg) : 0;
        }
        if (next > n->now)
            n->now = next;
        struct tpkt p = n->q[pi];
        n->q[pi] = n->q[--n->nq];
        n->delivered++;
        struct aegis_endpoint *to = p.to_server ? n->srv : n->cli;
        tnet_active = to;
        if (to)
            aegis_endpoint_recv(to, &p.path, p.data, p.len, n->now);
        tnet_active = NULL;
    }
    return cond ? cond(arg) : 0;
}
