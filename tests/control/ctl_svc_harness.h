/*
 * Harness for the aegis-control integration tests: a throwaway fleet PKI, the real daemon
 * binary started and stopped by PID, and a small synchronous client over the transport's
 * libev glue that acts as an agent or an operator. Every wait has a deadline.
 */
#ifndef CTL_SVC_HARNESS_H
#define CTL_SVC_HARNESS_H

#include <aegis/pki.h>
#include <aegis/proto.h>
#include <aegis/rpc.h>
#include <aegis/transport.h>

#include <aegis/v1/agent.pb-c.h>
#include <aegis/v1/operator.pb-c.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct th_daemon;

/* ---- PKI ---- */
struct th_pki {
    char dir[256];
    char server_pin[AEGIS_PIN_STRLEN];
    char *op_cert, *op_key;           /* operator "alice" */
    char *agentca_cert, *agentca_key; /* a CA-issued cert with OU aegis-agent, never enrolled */
    char artifact_pub[300];           /* path of the trusted artifact public key */
    struct aegis_key *artifact_key;
    char artifact_key_id[17];
    char *ca_pem;
};
void th_pki_make(struct th_pki *p);
/* th_write_pubkey writes key's public half as a "PUBLIC KEY" PEM file dir/name. */
void th_write_pubkey(const struct aegis_key *key, const char *dir, const char *name);
/* th_log_wait polls the daemon's log for text (deadline timeout); 1 if found. */
int th_log_wait(const struct th_daemon *d, const char *text, uint64_t timeout_ns);
void th_pki_free(struct th_pki *p);

/* ---- the daemon ---- */
struct th_daemon {
    pid_t pid;
    unsigned port, metrics_port;
    char addr[64];
    char instance[40];
    char log_path[300];
};
/* th_daemon_start runs aegis-control against dsn with the PKI and extra args (NULL-ended);
 * waits for its "ready" line (deadline 30 s) and fails the test otherwise. */
void th_daemon_start(struct th_daemon *d, const struct th_pki *p, const char *dsn,
                     const char *const *extra);
/* th_daemon_stop sends SIGTERM and waits (deadline 15 s, then SIGKILL); returns the exit status
 * (or -1 if it had to be killed). */
int th_daemon_stop(struct th_daemon *d);

/* th_daemon_reap runs the client loop until the daemon exits (after a signal the test sent to
 * d->pid); returns its exit status, -1 if killed by a signal, -2 on timeout (still running). */
int th_daemon_reap(struct th_daemon *d, uint64_t timeout_ns);

/* ---- client ---- */
struct th_client;
struct th_call;

/* th_connect connects with cert/key (PEM) pinning the server; waits for established or closed
 * (5 s). Returns NULL on refusal, with the close reason in why (if given). */
struct th_client *th_connect(const struct th_daemon *d, const struct th_pki *p, const char *cert,
                             const char *key, char *why, size_t whylen);
void th_close(struct th_client *c);
/* th_wait_closed runs the loop until the connection is closed (1 = closed) or timeout. */
int th_wait_closed(struct th_client *c, uint64_t timeout_ns, char *why, size_t whylen);
int th_is_closed(const struct th_client *c);

struct th_status {
    int code;
    char message[256];
    long retry_after_ms; /* -1 if absent */
};

/* th_unary: one request, one response (*presp NULL when the status is not OK). */
int th_unary(struct th_client *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **presp,
             struct th_status *st);

struct th_call *th_call_start(struct th_client *c, const char *method, enum aegis_rpc_shape shape);
int th_call_send(struct th_call *k, const ProtobufCMessage *msg);
int th_call_send_raw(struct th_call *k, const uint8_t *b, size_t n);
void th_call_close_send(struct th_call *k);
void th_call_cancel(struct th_call *k);
/* th_call_next: 1 with a message, 0 when the call ended without more, -1 on timeout. */
int th_call_next(struct th_call *k, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **pm,
                 uint64_t timeout_ns);
/* th_call_wait_end waits for the status; 1 ended, 0 timeout. */
int th_call_wait_end(struct th_call *k, uint64_t timeout_ns, struct th_status *st);
void th_call_free(struct th_call *k);
/* th_run runs the loop for up to ns or until cond(ud) (cond may be NULL). */
void th_run(uint64_t ns, int (*cond)(void *), void *ud);

void th_msg_free(ProtobufCMessage *m);

/* ---- agents ---- */
struct th_agent {
    struct aegis_key *key;
    char *self_cert, *self_key, *key_pem;
    char *cert;
    char agent_id[37];
    char host_id[64];
    uint8_t mid[32];
    char version[32];
    uint8_t command_pub[32];
};
void th_agent_new(struct th_agent *a, const char *host_id);
void th_agent_free(struct th_agent *a);
/* th_enroll enrolls with token over a self-signed connection; returns the status code. */
int th_enroll(struct th_agent *a, const struct th_daemon *d, const struct th_pki *p,
              const char *token, Aegis__V1__EnrollResponse **presp);
/* Authenticate variants. */
enum th_auth_flaw {
    TH_AUTH_OK = 0,
    TH_AUTH_BAD_SIG,   /* sign other bytes */
    TH_AUTH_WRONG_MID, /* other machine-id hash */
    TH_AUTH_SLOW,      /* wait past the challenge TTL (the daemon must run with a short one) */
    TH_AUTH_REPLAY,    /* sign the previous challenge's bytes */
};
int th_auth(struct th_client *c, struct th_agent *a, enum th_auth_flaw flaw, uint64_t slow_ns,
            uint64_t *packed);
struct th_client *th_agent_connect(struct th_agent *a, const struct th_daemon *d,
                                   const struct th_pki *p, char *why, size_t whylen);
/* th_op_token creates a token with the operator connection; returns the secret (static). */
const char *th_op_token(struct th_client *op, uint32_t max_uses, uint32_t ttl, const char *label_k,
                        const char *label_v, char token_id[37]);
/* th_audit_count counts audit rows with action (and target if not NULL) via ListAudit. */
int th_audit_count(struct th_client *op, const char *action, const char *target,
                   const char *detail_substr);
/* th_wait_audit polls ListAudit until at least min rows match (deadline timeout). Audit rows
 * are written beside the reply, so a test must wait for them rather than expect them at once. */
int th_wait_audit(struct th_client *op, const char *action, const char *target,
                  const char *detail_substr, int min, uint64_t timeout_ns);
/* th_http_get fetches http://127.0.0.1:port/path; returns the status code, body in buf. */
int th_http_get(unsigned port, const char *path, char *buf, size_t cap);
/* th_sql runs one query with psql-free libpq through ctl_test_util's test_query. */
long long th_sql_ll(const char *dsn, const char *sql);

#endif
