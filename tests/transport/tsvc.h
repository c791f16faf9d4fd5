/*
 * A test service for the transport tests: handlers for every RPC shape and
 * status path, and client-side bookkeeping of call outcomes.
 */
#ifndef AEGIS_TEST_TSVC_H
#define AEGIS_TEST_TSVC_H

#include "tnet.h"

#include <aegis/rpc.h>

#define TSVC_NHANDLERS 8

/* Server-side observations. */
struct tsvc {
    int calls;          /* on_call invocations */
    int closed;         /* on_close invocations */
    int last_status;    /* status seen by the server's on_close */
    int deadline_seen;  /* server calls that ended DEADLINE_EXCEEDED */
    int cancelled_seen; /* server calls that ended CANCELLED */
    int handshakes;
    int refuse; /* on_handshake refuses when set */
    struct aegis_peer_identity last_peer;
    int srv_closed; /* server on_closed count */
    struct aegis_close_reason srv_why;
    struct aegis_call *held;      /* the last Slow call (for server-side cancel) */
    struct aegis_conn *last_conn; /* the last connection seen by on_handshake */
    size_t stream_total;          /* bytes the server streamed in Download */
    size_t download_size, download_chunk;
    size_t max_queued;     /* largest aegis_call_queued seen by Download */
    int compress_download; /* Download asks for zstd responses in on_call */
    int compress_rv;       /* what aegis_call_set_compress returned there */
};

/* Client-side result of one call. */
struct tres {
    int done;
    int status;
    char message[256];
    int nmsgs;
    size_t bytes;
    int headers;
    char trailer[64]; /* value of trailer "x-echo" */
    int pause_after;  /* pause after this many messages (0 = never) */
    uint32_t hash;    /* FNV-1a over every received message, in order */
    struct aegis_call *call;
};

extern const struct aegis_call_callbacks tres_callbacks;

void tsvc_handlers(struct tsvc *s, struct aegis_rpc_handler out[TSVC_NHANDLERS]);
/* server endpoint callbacks recording into s */
void tsvc_conn_callbacks(struct tsvc *s, struct aegis_conn_callbacks *cbs);

/* Client connection observations. */
struct tcli {
    int established;
    int closed;
    int goaway;
    struct aegis_peer_identity peer;
    struct aegis_close_reason why;
};
void tcli_conn_callbacks(struct tcli *c, struct aegis_conn_callbacks *cbs);

/* A client + server fixture over the in-memory network. */
struct tfx {
    struct tnet net;
    struct tsvc svc;
    struct tcli cli;
    struct aegis_rpc_handler handlers[TSVC_NHANDLERS];
    struct aegis_endpoint_config scfg, ccfg;
    struct aegis_conn *conn;
};

/* tfx_config fills both configs (tweak them before tfx_start). */
void tfx_config(struct tfx *f, const struct tpki *pki, const struct tcred *client_cred);
void tfx_start(struct tfx *f, uint64_t seed);
/* tfx_connect: 1 when established within limit. */
int tfx_connect(struct tfx *f, aegis_tstamp limit);
void tfx_free(struct tfx *f);
int tres_cond_done(void *arg);

#endif
