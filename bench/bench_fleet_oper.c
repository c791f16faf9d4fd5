/*
 * The operator side of the fleet benchmark: one connection with an operator certificate
 * (OU aegis-operator, made by `aegis-certs operator`), unary OperatorService calls run to
 * completion on the shared loop (the agents keep running meanwhile).
 */
#include "bench_fleet.h"

#include <aegis/err.h>
#include <aegis/transport_ev.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fleet_oper {
    struct ev_loop *loop;
    struct aegis_ev *ev;
    struct aegis_conn *conn;
    char target[64];
    int established, closed;
};

struct oper_call {
    int done, code;
    char msg[256];
    uint8_t *out;
    size_t outlen;
};

static void op_established(struct aegis_conn *c, const struct aegis_peer_identity *p, void *ud)
{
    (void)c;
    (void)p;
    ((struct fleet_oper *)ud)->established = 1;
}

static void op_closed(struct aegis_conn *c, const struct aegis_close_reason *why, void *ud)
{
    struct fleet_oper *op = ud;
    char b[256];
    if (c != op->conn)
        return;
    op->conn = NULL;
    op->established = 0;
    op->closed = 1;
    fprintf(stderr, "aegis-bench-fleet: operator connection closed: %s\n",
            aegis_close_reason_format(why, b, sizeof(b)));
}

int fleet_oper_new(struct ev_loop *loop, const char *server, const char *pin, const char *pki_dir,
                   const char *name, struct fleet_oper **pop)
{
    char cf[128], kf[128];
    snprintf(cf, sizeof(cf), "operator-%s.pem", name);
    snprintf(kf, sizeof(kf), "operator-%s.key", name);
    size_t cl, kl;
    char *cert = fleet_slurp(pki_dir, cf, &cl), *key = fleet_slurp(pki_dir, kf, &kl);
    struct fleet_oper *op = calloc(1, sizeof(*op));
    if (!cert || !key || !op) {
        fprintf(stderr,
                "aegis-bench-fleet: cannot read %s/%s and %s (run aegis-certs operator --dir %s "
                "--name %s)\n",
                pki_dir, cf, kf, pki_dir, name);
        free(cert);
        free(key);
        free(op);
        return -ENOENT;
    }
    struct aegis_endpoint_config cfg = {0};
    cfg.tls.cert_pem = cert;
    cfg.tls.cert_len = cl;
    cfg.tls.key_pem = key;
    cfg.tls.key_len = kl;
    cfg.tls.pins[0] = pin;
    cfg.tls.npins = 1;
    cfg.callbacks.on_established = op_established;
    cfg.callbacks.on_closed = op_closed;
    cfg.user_data = op;
    op->loop = loop;
    snprintf(op->target, sizeof(op->target), "%s", server);
    int rv = aegis_ev_new(loop, &cfg, "127.0.0.1:0", &op->ev);
    memset(key, 0, kl);
    free(key);
    free(cert);
    if (rv != 0) {
        free(op);
        return rv;
    }
    *pop = op;
    return 0;
}

void fleet_oper_del(struct fleet_oper *op)
{
    if (!op)
        return;
    aegis_ev_del(op->ev);
    free(op);
}

static int oc_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    struct oper_call *oc = ud;
    free(oc->out);
    oc->out = malloc(len ? len : 1);
    if (!oc->out)
        return 1;
    memcpy(oc->out, msg, len);
    oc->outlen = len;
    return 0;
}

static void oc_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct oper_call *oc = ud;
    oc->done = 1;
    oc->code = st->code;
    snprintf(oc->msg, sizeof(oc->msg), "%s", st->message ? st->message : "");
}

/* ensure_conn (re)connects after a control restart; bounded by the caller's deadline. */
static int ensure_conn(struct fleet_oper *op, uint64_t deadline)
{
    if (op->conn && op->established)
        return 0;
    if (!op->conn) {
        op->closed = 0;
        int rv = aegis_ev_connect(op->ev, op->target, "localhost", &op->conn);
        if (rv != 0)
            return rv;
    }
    while (!op->established && op->conn && aegis_now() < deadline)
        ev_run(op->loop, EVRUN_ONCE);
    return op->established ? 0 : AEGIS_ERR_UNAVAILABLE;
}

void fleet_oper_reset(struct fleet_oper *op)
{
    /* After a kill -9 the old connection looks alive until its idle timeout: drop it. */
    if (op->conn)
        aegis_conn_close(op->conn, 0, "server restarted");
    op->conn = NULL;
    op->established = 0;
}

int fleet_oper_call(struct fleet_oper *op, const char *method, const uint8_t *req, size_t len,
                    double seconds, uint8_t **pout, size_t *plen, char *err, size_t errlen)
{
    static const struct aegis_call_callbacks cbs = {.on_message = oc_msg, .on_close = oc_close};
    uint64_t deadline = aegis_now() + (uint64_t)(seconds * 1e9);
    int rv = ensure_conn(op, deadline);
    if (rv != 0) {
        snprintf(err, errlen, "no operator connection: %s", aegis_strerror(rv));
        return rv;
    }
    char path[128];
    snprintf(path, sizeof(path), "/aegis.v1.OperatorService/%s", method);
    struct oper_call oc = {0};
    struct aegis_call *call;
    struct aegis_call_opts opts = {.deadline = deadline};
    rv = aegis_call_start(op->conn, path, AEGIS_RPC_UNARY, &opts, &cbs, &oc, &call);
    if (rv != 0) {
        snprintf(err, errlen, "%s: cannot start: %s", method, aegis_strerror(rv));
        return rv;
    }
    aegis_call_send(call, req, len);
    aegis_call_close_send(call);
    /* The call's own deadline ends it; this bound only guards against a stuck loop. */
    while (!oc.done && aegis_now() < deadline + AEGIS_NS_PER_S)
        ev_run(op->loop, EVRUN_ONCE);
    if (!oc.done) {
        aegis_call_cancel(call);
        uint64_t end = aegis_now() + 5 * AEGIS_NS_PER_S;
        while (!oc.done && aegis_now() < end)
            ev_run(op->loop, EVRUN_ONCE);
        if (!oc.done)
            fleet_die("%s: the call did not end after cancel", method);
    }
    if (oc.code != AEGIS_GRPC_OK || !oc.out) {
        snprintf(err, errlen, "%s: %s %s", method, aegis_grpc_status_name(oc.code), oc.msg);
        free(oc.out);
        return AEGIS_ERR_REFUSED;
    }
    *pout = oc.out;
    *plen = oc.outlen;
    return 0;
}
