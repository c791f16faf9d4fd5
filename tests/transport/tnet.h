/*
 * Test helpers for the transport: a throwaway PKI made in memory with
 * aegis_pki, and an in-memory packet network with a fake clock that drives
 * a client and a server endpoint in one process (seeded loss, reordering,
 * delay, NAT rebinding).
 */
#ifndef AEGIS_TEST_TNET_H
#define AEGIS_TEST_TNET_H

#include <aegis/rpc.h>
#include <aegis/transport.h>

#include <stddef.h>
#include <stdint.h>

/* PEM strings (heap, default allocator). */
struct tcred {
    char *cert;
    char *key;
};

struct tpki {
    struct tcred ca, server, server2, client, rogue_ca, rogue_client, expired_client, self_client;
    char server_pin[64];
    char server2_pin[64];
    char client_pin[64];
};

/* tpki_make builds everything; aborts the test process on failure. */
void tpki_make(struct tpki *pki);
void tpki_free(struct tpki *pki);

void tpki_server_tls(const struct tpki *pki, struct aegis_tls_config *tls);
/* client credentials from `cred`, pinning the server key */
void tpki_client_tls(const struct tpki *pki, const struct tcred *cred,
                     struct aegis_tls_config *tls);

struct tpkt;

struct tnet {
    struct aegis_endpoint *srv, *cli;
    aegis_tstamp now;
    uint64_t rng;
    unsigned loss_pct;          /* drop this percentage of datagrams (both ways) */
    unsigned reorder_pct;       /* delay this percentage by an extra random amount */
    aegis_tstamp delay;         /* one-way latency */
    int drop_all;               /* blackhole (idle timeout tests) */
    struct aegis_path cli_path; /* client's view: local = client, remote = server */
    /* NAT: when set, the server sees client packets coming from nat_addr */
    int nat_on;
    struct sockaddr_storage nat_addr;
    socklen_t nat_len;
    struct tpkt *q; /* in flight, unsorted */
    size_t nq;
    uint64_t delivered, dropped;
};

/* tnet_init: endpoints from the configs (their is_server fields are set
 * here); client path 10.0.0.1:40000 -> 10.0.0.2:443. */
void tnet_init(struct tnet *n, struct aegis_endpoint_config *scfg,
               struct aegis_endpoint_config *ccfg, uint64_t seed);
void tnet_free(struct tnet *n);

/* tnet_connect opens a client connection. */
struct aegis_conn *tnet_connect(struct tnet *n);

/* tnet_run advances the network until cond(arg) is true or `limit` of fake
 * time passed or the step bound is hit. Returns 1 if cond became true. */
int tnet_run(struct tnet *n, aegis_tstamp limit, int (*cond)(void *), void *arg);

/* The endpoint tnet is calling into right now (NULL between calls), so a
 * process-wide allocator hook can tell the client's work from the server's. */
extern struct aegis_endpoint *tnet_active;

/* tnet_set_nat makes the client appear from a new address (port). */
void tnet_set_nat(struct tnet *n, uint16_t port);

#endif
