/*
 * One QUIC connection on ngtcp2: creation (client and server), ngtcp2
 * callbacks, the read and write paths, timers and the close state machine
 * (RFC 9000 §10.2: closing and draining periods of three PTOs).
 *
 * Callbacks from ngtcp2 never free anything and never call the
 * application's connection callbacks; they record state, and qconn_after()
 * acts on it at a safe point (after ngtcp2 returned).
 */
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "transport_int.h"

#include <aegis/err.h>
#include <aegis/log.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SCID_LEN 16
/* Unidirectional stream credit: HTTP/3 control and QPACK streams only
 * carry SETTINGS/GOAWAY (we use no dynamic QPACK table). */
#define UNI_STREAM_WINDOW (16u * 1024u)
/* How often we answer packets in the closing period with our
 * CONNECTION_CLOSE again (RFC 9000 §10.2.1 asks for rate limiting). */
#define CLOSE_REPLAYS_MAX 8

_Static_assert(sizeof(ngtcp2_vec) == sizeof(struct tvec), "vec layout");
_Static_assert(sizeof(ngtcp2_mem) == sizeof(struct aegis_mem), "mem layout");

struct ngtcp2_conn *qconn_ngtcp2(struct aegis_conn *conn)
{
    return conn->q;
}

static void set_why(struct aegis_conn *c, enum aegis_close_kind kind, int err, int by_peer,
                    uint64_t code, uint8_t alert, const char *reason, size_t reasonlen)
{
    if (c->why_set)
        return;
    c->why_set = 1;
    c->why.kind = kind;
    c->why.err = err;
    c->why.by_peer = by_peer;
    c->why.code = code;
    c->why.tls_alert = alert;
    if (reasonlen >= sizeof(c->why.reason))
        reasonlen = sizeof(c->why.reason) - 1;
    /* reason phrases come from the network: keep printable ASCII only */
    for (size_t i = 0; i < reasonlen; i++) {
        char ch = reason[i];
        c->why.reason[i] = (ch >= 0x20 && ch < 0x7f) ? ch : '?';
    }
    c->why.reason[reasonlen] = '\0';
}

static void why_from_peer(struct aegis_conn *c)
{
    const ngtcp2_ccerr *e = ngtcp2_conn_get_ccerr(c->q);
    const char *r = (const char *)e->reason;
    if (c->reset_recv) {
        set_why(c, AEGIS_CLOSE_RESET, AEGIS_ERR_CLOSED, 1, 0, 0, "stateless reset", 15);
        return;
    }
    switch (e->type) {
    case NGTCP2_CCERR_TYPE_APPLICATION:
        set_why(c, AEGIS_CLOSE_PEER_APP, AEGIS_ERR_CLOSED, 1, e->error_code, 0, r, e->reasonlen);
        break;
    case NGTCP2_CCERR_TYPE_IDLE_CLOSE:
        set_why(c, AEGIS_CLOSE_IDLE, AEGIS_ERR_TIMEOUT, 0, 0, 0, "idle timeout", 12);
        break;
    default:
        if (e->error_code >= NGTCP2_CRYPTO_ERROR && e->error_code <= NGTCP2_CRYPTO_ERROR + 0xff)
            set_why(c, AEGIS_CLOSE_TLS_ALERT, AEGIS_ERR_TLS, 1, e->error_code,
                    (uint8_t)(e->error_code - NGTCP2_CRYPTO_ERROR), r, e->reasonlen);
        else
            set_why(c, AEGIS_CLOSE_PEER_QUIC, AEGIS_ERR_QUIC, 1, e->error_code, 0, r, e->reasonlen);
    }
}

static void path_from_ngtcp2(struct aegis_path *out, const ngtcp2_path *p)
{
    memset(out, 0, sizeof(*out));
    if (p->local.addrlen <= sizeof(out->local)) {
        memcpy(&out->local, p->local.addr, p->local.addrlen);
        out->local_len = (socklen_t)p->local.addrlen;
    }
    if (p->remote.addrlen <= sizeof(out->remote)) {
        memcpy(&out->remote, p->remote.addr, p->remote.addrlen);
        out->remote_len = (socklen_t)p->remote.addrlen;
    }
}

static void path_to_ngtcp2(ngtcp2_path *out, const struct aegis_path *p)
{
    out->local.addr = (ngtcp2_sockaddr *)(uintptr_t)&p->local;
    out->local.addrlen = (ngtcp2_socklen)p->local_len;
    out->remote.addr = (ngtcp2_sockaddr *)(uintptr_t)&p->remote;
    out->remote.addrlen = (ngtcp2_socklen)p->remote_len;
    out->user_data = NULL;
}

/* ---- ngtcp2 callbacks ---- */

static int cb_handshake_completed(ngtcp2_conn *q, void *user_data)
{
    (void)q;
    struct aegis_conn *c = user_data;
    struct aegis_endpoint *ep = c->ep;
    tls_conn_identity(c->tls, &c->peer);
    if (c->hs_counted) {
        c->hs_counted = 0;
        ep->stats.handshakes_in_progress--;
    }
    if (h3_ensure(c) != 0) {
        qconn_request_close(c, 1, H3_INTERNAL_ERROR, 0, "cannot set up HTTP/3");
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    if (!c->is_server) {
        /* Pin check before anything we wrote in this flight leaves. */
        if (tls_conn_check_pins(c->tls, &c->peer) != 0) {
            ep->stats.handshakes_failed++;
            ep->stats.handshakes_failed_tls++;
            qconn_request_close(c, 0, 0, 42, "server key does not match the pinned SPKI");
            return NGTCP2_ERR_CALLBACK_FAILURE;
        }
        c->pins_ok = 1;
        c->state = CS_ESTABLISHED;
        call_open_waiting(c);
        return 0;
    }
    c->state = CS_ESTABLISHED;
    if (ep->cbs.on_handshake) {
        char reason[101] = "";
        if (ep->cbs.on_handshake(c, &c->peer, reason, sizeof(reason), ep->user_data) != 0) {
            reason[sizeof(reason) - 1] = '\0';
            ep->stats.handshakes_failed++;
            ep->stats.handshakes_failed_refused++;
            qconn_request_close(c, 1, AEGIS_CLOSE_CODE_REFUSED, 0,
                                reason[0] ? reason : "refused by server");
            return 0;
        }
    }
    c->hook_ok = 1;
    ep->stats.handshakes_ok++;
    return 0;
}

/*
 * Once the handshake is confirmed the TLS object has nothing left to do in
 * QUIC (no tickets: disabled; no KeyUpdate message: QUIC updates keys
 * itself; no post-handshake authentication), so it is freed to save ~20 KiB
 * per connection. A peer that still sends CRYPTO data after that is
 * ignored rather than handed to a TLS object that no longer exists.
 */
static int cb_recv_crypto_data(ngtcp2_conn *q, ngtcp2_encryption_level level, uint64_t offset,
                               const uint8_t *data, size_t len, void *user_data)
{
    struct aegis_conn *c = user_data;
    if (!c->tls)
        return 0;
    return ngtcp2_crypto_recv_crypto_data_cb(q, level, offset, data, len, user_data);
}

static void release_tls(struct aegis_conn *c)
{
    if (!c->tls || !c->established_cb || !ngtcp2_conn_get_handshake_completed(c->q))
        return;
    if (!c->is_server && !c->confirmed)
        return;
    ngtcp2_conn_set_tls_native_handle(c->q, NULL);
    tls_conn_del(c->tls);
    c->tls = NULL;
}

static int cb_handshake_confirmed(ngtcp2_conn *q, void *user_data)
{
    (void)q;
    struct aegis_conn *c = user_data;
    if (!c->is_server) {
        c->confirmed = 1;
        if (c->pins_ok)
            c->ep->stats.handshakes_ok++;
    }
    return 0;
}

static int cb_recv_stream_data(ngtcp2_conn *q, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t len, void *user_data,
                               void *stream_user_data)
{
    (void)offset;
    (void)stream_user_data;
    struct aegis_conn *c = user_data;
    long n = h3_read_stream(c, sid, data, len, (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
    if (n < 0) {
        qconn_request_close(c, 1, (uint64_t)-n, 0, "HTTP/3 error");
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    /* HTTP/3 framing bytes are credited at once; message bytes only when
     * the application consumed them (rpc_call.c). */
    ngtcp2_conn_extend_max_stream_offset(q, sid, (uint64_t)n);
    ngtcp2_conn_extend_max_offset(q, (uint64_t)n);
    return 0;
}

static int cb_acked_stream_data_offset(ngtcp2_conn *q, int64_t sid, uint64_t offset,
                                       uint64_t datalen, void *user_data, void *stream_user_data)
{
    (void)q;
    (void)offset;
    (void)stream_user_data;
    return h3_add_ack_offset(user_data, sid, datalen) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int cb_stream_close(ngtcp2_conn *q, uint32_t flags, int64_t sid, uint64_t code,
                           void *user_data, void *stream_user_data)
{
    (void)stream_user_data;
    struct aegis_conn *c = user_data;
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        code = H3_NO_ERROR;
    if (c->is_server && ngtcp2_is_bidi_stream(sid) && !ngtcp2_conn_is_local_stream(q, sid))
        ngtcp2_conn_extend_max_streams_bidi(q, 1);
    return h3_close_stream(c, sid, code) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int cb_stream_reset(ngtcp2_conn *q, int64_t sid, uint64_t final_size, uint64_t code,
                           void *user_data, void *stream_user_data)
{
    (void)q;
    (void)final_size;
    struct aegis_conn *c = user_data;
    if (stream_user_data)
        call_stream_reset(stream_user_data, code);
    return h3_shutdown_stream_read(c, sid) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int cb_stream_stop_sending(ngtcp2_conn *q, int64_t sid, uint64_t code, void *user_data,
                                  void *stream_user_data)
{
    (void)q;
    struct aegis_conn *c = user_data;
    if (stream_user_data)
        call_stream_reset(stream_user_data, code);
    return h3_shutdown_stream_read(c, sid) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int cb_extend_max_local_streams_bidi(ngtcp2_conn *q, uint64_t max_streams, void *user_data)
{
    (void)q;
    (void)max_streams;
    struct aegis_conn *c = user_data;
    if (!c->is_server)
        call_open_waiting(c);
    return 0;
}

static int cb_extend_max_stream_data(ngtcp2_conn *q, int64_t sid, uint64_t max_data,
                                     void *user_data, void *stream_user_data)
{
    (void)q;
    (void)max_data;
    (void)stream_user_data;
    return h3_unblock_stream(user_data, sid) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static void cb_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
    (void)ctx;
    if (tls_random(dest, len) != 0)
        memset(dest, 0, len); /* wolfSSL's DRBG does not fail once seeded */
}

static int cb_get_new_connection_id(ngtcp2_conn *q, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                                    void *user_data)
{
    (void)q;
    struct aegis_conn *c = user_data;
    if (tls_random(cid->data, cidlen) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    cid->datalen = cidlen;
    if (ngtcp2_crypto_generate_stateless_reset_token(token, c->ep->secret, sizeof(c->ep->secret),
                                                     cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    if (ep_cid_add(c->ep, cid->data, cid->datalen, c) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_remove_connection_id(ngtcp2_conn *q, const ngtcp2_cid *cid, void *user_data)
{
    (void)q;
    struct aegis_conn *c = user_data;
    ep_cid_remove(c->ep, cid->data, cid->datalen);
    return 0;
}

static int cb_recv_stateless_reset(ngtcp2_conn *q, const ngtcp2_pkt_stateless_reset *sr,
                                   void *user_data)
{
    (void)q;
    (void)sr;
    struct aegis_conn *c = user_data;
    c->reset_recv = 1;
    return 0;
}

static void qlog_write(void *user_data, uint32_t flags, const void *data, size_t len)
{
    struct aegis_conn *c = user_data;
    if (!c->qlog)
        return;
    fwrite(data, 1, len, c->qlog);
    if (flags & NGTCP2_QLOG_WRITE_FLAG_FIN) {
        fclose(c->qlog);
        c->qlog = NULL;
    }
}

static void fill_callbacks(ngtcp2_callbacks *cb, int is_server)
{
    memset(cb, 0, sizeof(*cb));
    if (is_server) {
        cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    } else {
        cb->client_initial = ngtcp2_crypto_client_initial_cb;
        cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
        cb->extend_max_local_streams_bidi = cb_extend_max_local_streams_bidi;
        cb->recv_stateless_reset = cb_recv_stateless_reset;
    }
    cb->recv_crypto_data = cb_recv_crypto_data;
    cb->encrypt = ngtcp2_crypto_encrypt_cb;
    cb->decrypt = ngtcp2_crypto_decrypt_cb;
    cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb->update_key = ngtcp2_crypto_update_key_cb;
    cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb->handshake_completed = cb_handshake_completed;
    cb->handshake_confirmed = cb_handshake_confirmed;
    cb->recv_stream_data = cb_recv_stream_data;
    cb->acked_stream_data_offset = cb_acked_stream_data_offset;
    cb->stream_close = cb_stream_close;
    cb->stream_reset = cb_stream_reset;
    cb->stream_stop_sending = cb_stream_stop_sending;
    cb->extend_max_stream_data = cb_extend_max_stream_data;
    cb->rand = cb_rand;
    cb->get_new_connection_id = cb_get_new_connection_id;
    cb->remove_connection_id = cb_remove_connection_id;
}

static void fill_settings(struct aegis_endpoint *ep, struct aegis_conn *c, ngtcp2_settings *s,
                          ngtcp2_transport_params *p, aegis_tstamp now)
{
    ngtcp2_settings_default(s);
    s->initial_ts = now;
    s->max_tx_udp_payload_size = ep->max_udp_payload;
    s->handshake_timeout = ep->handshake_timeout_ns;
    /* No window auto-tuning: the windows are the bounds we promise. */
    s->max_window = ep->conn_window;
    s->max_stream_window = ep->stream_window;
    if (c->qlog)
        s->qlog_write = qlog_write;
    ngtcp2_transport_params_default(p);
    p->initial_max_stream_data_bidi_local = ep->stream_window;
    p->initial_max_stream_data_bidi_remote = ep->stream_window;
    p->initial_max_stream_data_uni = UNI_STREAM_WINDOW;
    p->initial_max_data = ep->conn_window;
    p->initial_max_streams_bidi = ep->is_server ? ep->max_streams : 0;
    p->initial_max_streams_uni = 3;
    p->max_idle_timeout = ep->idle_timeout_ns;
}

static struct aegis_conn *conn_alloc(struct aegis_endpoint *ep, int is_server)
{
    struct aegis_conn *c = aegis_calloc(ep->mem, 1, sizeof(*c));
    if (!c)
        return NULL;
    c->ep = ep;
    c->is_server = is_server;
    c->heap_idx = SIZE_MAX;
    c->state = CS_HANDSHAKE;
    return c;
}

static void open_qlog(struct aegis_conn *c, const uint8_t *scid, size_t len)
{
    if (!c->ep->qlog_dir)
        return;
    char name[512];
    int off = snprintf(name, sizeof(name), "%s/", c->ep->qlog_dir);
    for (size_t i = 0; i < len && off > 0 && (size_t)off + 3 < sizeof(name); i++)
        off += snprintf(name + off, sizeof(name) - (size_t)off, "%02x", scid[i]);
    if (off > 0 && (size_t)off + 8 < sizeof(name))
        snprintf(name + off, sizeof(name) - (size_t)off, ".sqlog");
    c->qlog = fopen(name, "we");
}

static int conn_finish_setup(struct aegis_conn *c, const ngtcp2_cid *scid, const char *sni)
{
    struct aegis_endpoint *ep = c->ep;
    int rv = tls_conn_new(ep->tls, c, sni, &c->tls);
    if (rv != 0)
        return rv;
    ngtcp2_conn_set_tls_native_handle(c->q, tls_conn_native(c->tls));
    if (ep->keepalive_ns != UINT64_MAX)
        ngtcp2_conn_set_keep_alive_timeout(c->q, ep->keepalive_ns);
    rv = ep_cid_add(ep, scid->data, scid->datalen, c);
    if (rv != 0)
        return rv;
    return h3_new(c);
}

int qconn_server_new(struct aegis_endpoint *ep, const struct aegis_path *path, const uint8_t *pkt,
                     size_t len, const uint8_t *odcid, size_t odcidlen, int retried,
                     aegis_tstamp now, struct aegis_conn **pconn)
{
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, pkt, len) != 0)
        return AEGIS_ERR_QUIC;
    struct aegis_conn *c = conn_alloc(ep, 1);
    if (!c)
        return -ENOMEM;
    c->path = *path;
    ngtcp2_cid scid;
    scid.datalen = SCID_LEN;
    int rv = tls_random(scid.data, SCID_LEN);
    if (rv != 0)
        goto fail;
    open_qlog(c, scid.data, scid.datalen);
    ngtcp2_settings s;
    ngtcp2_transport_params p;
    fill_settings(ep, c, &s, &p, now);
    s.token = hd.token;
    s.tokenlen = hd.tokenlen;
    if (retried) {
        s.token_type = NGTCP2_TOKEN_TYPE_RETRY;
        ngtcp2_cid_init(&p.original_dcid, odcid, odcidlen);
        p.retry_scid = hd.dcid;
        p.retry_scid_present = 1;
    } else {
        p.original_dcid = hd.dcid;
    }
    p.original_dcid_present = 1;
    p.stateless_reset_token_present = 1;
    if (ngtcp2_crypto_generate_stateless_reset_token(p.stateless_reset_token, ep->secret,
                                                     sizeof(ep->secret), &scid) != 0) {
        rv = AEGIS_ERR_CRYPTO;
        goto fail;
    }
    ngtcp2_callbacks cb;
    fill_callbacks(&cb, 1);
    ngtcp2_path np;
    path_to_ngtcp2(&np, &c->path);
    rv = ngtcp2_conn_server_new(&c->q, &hd.scid, &scid, &np, hd.version, &cb, &s, &p,
                                (const ngtcp2_mem *)ep->mem, c);
    if (rv != 0) {
        c->q = NULL;
        rv = rv == NGTCP2_ERR_NOMEM ? -ENOMEM : AEGIS_ERR_QUIC;
        goto fail;
    }
    rv = conn_finish_setup(c, &scid, NULL);
    if (rv != 0)
        goto fail;
    /* Retransmitted Initials still carry the client's first DCID. */
    memcpy(c->odcid, hd.dcid.data, hd.dcid.datalen);
    c->odcidlen = hd.dcid.datalen;
    rv = ep_cid_add(ep, c->odcid, c->odcidlen, c);
    if (rv != 0)
        goto fail;
    c->hs_counted = 1;
    ep->stats.handshakes_in_progress++;
    *pconn = c;
    return 0;
fail:
    qconn_del(c);
    return rv;
}

int qconn_client_new(struct aegis_endpoint *ep, const struct aegis_path *path, const char *sni,
                     aegis_tstamp now, struct aegis_conn **pconn)
{
    struct aegis_conn *c = conn_alloc(ep, 0);
    if (!c)
        return -ENOMEM;
    c->path = *path;
    ngtcp2_cid scid, dcid;
    scid.datalen = SCID_LEN;
    dcid.datalen = 18;
    int rv = tls_random(scid.data, scid.datalen);
    if (rv == 0)
        rv = tls_random(dcid.data, dcid.datalen);
    if (rv != 0)
        goto fail;
    open_qlog(c, scid.data, scid.datalen);
    ngtcp2_settings s;
    ngtcp2_transport_params p;
    fill_settings(ep, c, &s, &p, now);
    ngtcp2_callbacks cb;
    fill_callbacks(&cb, 0);
    ngtcp2_path np;
    path_to_ngtcp2(&np, &c->path);
    rv = ngtcp2_conn_client_new(&c->q, &dcid, &scid, &np, NGTCP2_PROTO_VER_V1, &cb, &s, &p,
                                (const ngtcp2_mem *)ep->mem, c);
    if (rv != 0) {
        c->q = NULL;
        rv = rv == NGTCP2_ERR_NOMEM ? -ENOMEM : AEGIS_ERR_QUIC;
        goto fail;
    }
    rv = conn_finish_setup(c, &scid, sni);
    if (rv != 0)
        goto fail;
    if (sni && *sni && !(c->authority = aegis_strdup(ep->mem, sni))) {
        rv = -ENOMEM;
        goto fail;
    }
    c->hs_counted = 1;
    ep->stats.handshakes_in_progress++;
    *pconn = c;
    return 0;
fail:
    qconn_del(c);
    return rv;
}

void qconn_del(struct aegis_conn *c)
{
    if (!c)
        return;
    struct aegis_endpoint *ep = c->ep;
    while (c->calls)
        call_free(c->calls);
    call_conn_cleanup(c);
    if (c->hs_counted)
        ep->stats.handshakes_in_progress--;
    ep_cid_remove_conn(ep, c);
    h3_del(c);
    ngtcp2_conn_del(c->q);
    tls_conn_del(c->tls);
    if (c->qlog)
        fclose(c->qlog);
    aegis_free(ep->mem, c->close_pkt);
    aegis_free(ep->mem, c);
}

void qconn_request_close(struct aegis_conn *c, int app, uint64_t code, uint8_t alert,
                         const char *reason)
{
    if (c->want_close || c->state >= CS_CLOSING)
        return;
    c->want_close = 1;
    c->want_close_app = app;
    c->want_close_code = code;
    c->want_close_alert = alert;
    snprintf(c->want_close_reason, sizeof(c->want_close_reason), "%s", reason ? reason : "");
    ep_mark_dirty(c);
}

/* Enters the closing period with one CONNECTION_CLOSE built from ccerr. */
static void enter_closing(struct aegis_conn *c, const ngtcp2_ccerr *ccerr, aegis_tstamp now)
{
    struct aegis_endpoint *ep = c->ep;
    if (c->state >= CS_CLOSING)
        return;
    uint8_t buf[1500];
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->q, &ps.path, &pi, buf,
                                                        ep->max_udp_payload, ccerr, now);
    c->state = CS_CLOSING;
    c->close_deadline = now + 3 * ngtcp2_conn_get_pto(c->q);
    if (n > 0) {
        uint8_t *p = aegis_malloc(ep->mem, (size_t)n);
        if (p) {
            memcpy(p, buf, (size_t)n);
            c->close_pkt = p;
            c->close_pktlen = (size_t)n;
            c->close_pending_send = 1;
            ep_mark_dirty(c);
        }
    } else {
        c->state = CS_DEAD;
    }
}

static void close_with_liberr(struct aegis_conn *c, int liberr, aegis_tstamp now)
{
    ngtcp2_ccerr e;
    if (liberr == NGTCP2_ERR_CRYPTO) {
        uint8_t alert = ngtcp2_conn_get_tls_alert(c->q);
        const char *r = c->tls ? tls_conn_verify_error(c->tls) : "";
        if (!*r && alert == 116)
            r = "client presented no certificate";
        else if (!*r)
            r = tls_alert_name(alert);
        ngtcp2_ccerr_set_tls_alert(&e, alert, (const uint8_t *)r, strlen(r));
        set_why(c, AEGIS_CLOSE_TLS_ALERT, AEGIS_ERR_TLS, 0, NGTCP2_CRYPTO_ERROR + alert, alert, r,
                strlen(r));
        if (c->hs_counted) {
            c->ep->stats.handshakes_failed++;
            c->ep->stats.handshakes_failed_tls++;
        }
    } else {
        ngtcp2_ccerr_set_liberr(&e, liberr, NULL, 0);
        const char *r = ngtcp2_strerror(liberr);
        set_why(c, AEGIS_CLOSE_LOCAL, AEGIS_ERR_QUIC, 0, e.error_code, 0, r, strlen(r));
    }
    enter_closing(c, &e, now);
}

static void do_requested_close(struct aegis_conn *c, aegis_tstamp now)
{
    ngtcp2_ccerr e;
    const char *r = c->want_close_reason;
    size_t rl = strlen(r);
    c->want_close = 0;
    if (c->want_close_app) {
        ngtcp2_ccerr_set_application_error(&e, c->want_close_code, (const uint8_t *)r, rl);
        set_why(c, AEGIS_CLOSE_LOCAL,
                c->want_close_code == AEGIS_CLOSE_CODE_REFUSED ? AEGIS_ERR_REFUSED : 0, 0,
                c->want_close_code, 0, r, rl);
    } else {
        ngtcp2_ccerr_set_tls_alert(&e, c->want_close_alert, (const uint8_t *)r, rl);
        set_why(c, AEGIS_CLOSE_TLS_ALERT,
                c->want_close_alert == 42 ? AEGIS_ERR_PIN_MISMATCH : AEGIS_ERR_TLS, 0,
                NGTCP2_CRYPTO_ERROR + c->want_close_alert, c->want_close_alert, r, rl);
    }
    enter_closing(c, &e, now);
}

int qconn_read(struct aegis_conn *c, const struct aegis_path *path, const uint8_t *pkt, size_t len,
               aegis_tstamp now)
{
    if (c->state == CS_CLOSING) {
        if (c->close_pkt && c->close_replays < CLOSE_REPLAYS_MAX) {
            c->close_replays++;
            c->close_pending_send = 1;
        }
        return 0;
    }
    if (c->state >= CS_DRAINING)
        return 0;
    ngtcp2_path np;
    path_to_ngtcp2(&np, path);
    ngtcp2_pkt_info pi = {0};
    int rv = ngtcp2_conn_read_pkt(c->q, &np, &pi, pkt, len, now);
    if (rv == 0)
        return 0;
    switch (rv) {
    case NGTCP2_ERR_DRAINING:
        why_from_peer(c);
        c->state = CS_DRAINING;
        c->close_deadline = now + 3 * ngtcp2_conn_get_pto(c->q);
        if (c->hs_counted) {
            c->ep->stats.handshakes_failed++;
            c->ep->stats.handshakes_failed_tls++;
        }
        return 0;
    case NGTCP2_ERR_DROP_CONN:
        set_why(c, AEGIS_CLOSE_LOCAL, AEGIS_ERR_QUIC, 0, 0, 0, "dropped", 7);
        c->state = CS_DEAD;
        return 0;
    case NGTCP2_ERR_CALLBACK_FAILURE:
        if (c->want_close) {
            do_requested_close(c, now);
            return 0;
        }
        break;
    default:
        break;
    }
    close_with_liberr(c, rv, now);
    return 0;
}

long qconn_write(struct aegis_conn *c, uint8_t *buf, size_t cap, size_t max_segments,
                 struct aegis_path *path, size_t *psegsize, aegis_tstamp now)
{
    struct aegis_endpoint *ep = c->ep;
    if (c->want_close && c->state < CS_CLOSING)
        do_requested_close(c, now);
    if (c->state == CS_CLOSING) {
        if (!c->close_pending_send || !c->close_pkt)
            return 0;
        c->close_pending_send = 0;
        memcpy(buf, c->close_pkt, c->close_pktlen);
        *path = c->path;
        *psegsize = c->close_pktlen;
        return (long)c->close_pktlen;
    }
    if (c->state >= CS_DRAINING)
        return 0;
    size_t mtu = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->q);
    if (mtu > ep->max_udp_payload)
        mtu = ep->max_udp_payload;
    size_t off = 0, nseg = 0, segsize = 0;
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    /* Bounded: each round either writes a packet or stops. */
    for (int guard = 0; guard < 4096; guard++) {
        if (nseg == max_segments || cap - off < mtu)
            break;
        struct tvec vec[16];
        int64_t sid = -1;
        int fin = 0;
        long nvec = 0;
        if (c->h3 && ngtcp2_conn_get_max_data_left(c->q)) {
            nvec = h3_writev(c, &sid, &fin, vec, 16);
            if (nvec < 0) {
                qconn_request_close(c, 1, H3_INTERNAL_ERROR, 0, "HTTP/3 write failed");
                do_requested_close(c, now);
                break;
            }
        }
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
        if (fin)
            flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        ngtcp2_ssize ndatalen = -1;
        ngtcp2_pkt_info pi;
        ngtcp2_ssize n =
            ngtcp2_conn_writev_stream(c->q, &ps.path, &pi, buf + off, mtu, &ndatalen, flags, sid,
                                      (const ngtcp2_vec *)vec, (size_t)nvec, now);
        if (n < 0) {
            if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
                h3_block_stream(c, sid);
                continue;
            }
            if (n == NGTCP2_ERR_STREAM_SHUT_WR) {
                h3_shutdown_stream_write(c, sid);
                continue;
            }
            if (n == NGTCP2_ERR_WRITE_MORE) {
                if (h3_add_write_offset(c, sid, (size_t)ndatalen) != 0)
                    break;
                continue;
            }
            close_with_liberr(c, (int)n, now);
            break;
        }
        if (ndatalen >= 0 && sid >= 0 && h3_add_write_offset(c, sid, (size_t)ndatalen) != 0)
            break;
        if (n == 0)
            break;
        if (nseg == 0) {
            path_from_ngtcp2(&c->path, &ps.path);
            segsize = (size_t)n;
        }
        off += (size_t)n;
        nseg++;
        /* A short packet ends a GSO batch. */
        if ((size_t)n < segsize)
            break;
    }
    ngtcp2_conn_update_pkt_tx_time(c->q, now);
    if (c->state == CS_CLOSING && off == 0)
        return qconn_write(c, buf, cap, max_segments, path, psegsize, now);
    if (off) {
        *path = c->path;
        *psegsize = segsize;
    }
    return (long)off;
}

aegis_tstamp qconn_expiry(struct aegis_conn *c)
{
    if (c->state == CS_DEAD)
        return 0;
    if (c->state >= CS_CLOSING)
        return c->close_deadline;
    aegis_tstamp e = ngtcp2_conn_get_expiry(c->q);
    aegis_tstamp d = call_next_deadline(c);
    return d < e ? d : e;
}

int qconn_handle_expiry(struct aegis_conn *c, aegis_tstamp now)
{
    if (c->state >= CS_CLOSING) {
        if (now >= c->close_deadline)
            c->state = CS_DEAD;
        return 0;
    }
    if (ngtcp2_conn_get_expiry(c->q) <= now) {
        int rv = ngtcp2_conn_handle_expiry(c->q, now);
        if (rv == NGTCP2_ERR_IDLE_CLOSE) {
            set_why(c, AEGIS_CLOSE_IDLE, AEGIS_ERR_TIMEOUT, 0, 0, 0, "idle timeout", 12);
            c->state = CS_DEAD;
            return 0;
        }
        if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
            set_why(c, AEGIS_CLOSE_HANDSHAKE_TIMEOUT, AEGIS_ERR_TIMEOUT, 0, 0, 0,
                    "handshake timeout", 17);
            if (c->hs_counted) {
                c->ep->stats.handshakes_failed++;
                c->ep->stats.handshakes_failed_timeout++;
            }
            c->state = CS_DEAD;
            return 0;
        }
        if (rv != 0) {
            close_with_liberr(c, rv, now);
            return 0;
        }
    }
    call_handle_deadlines(c, now);
    return 0;
}

void qconn_after(struct aegis_conn *c, aegis_tstamp now)
{
    struct aegis_endpoint *ep = c->ep;
    if (c->want_close && c->state < CS_CLOSING)
        do_requested_close(c, now);
    if (c->state == CS_ESTABLISHED && !c->established_cb &&
        (c->is_server ? c->hook_ok : (c->confirmed && c->pins_ok))) {
        c->established_cb = 1;
        AEGIS_LOG(ep->log, AEGIS_LOG_DEBUG,
                  "conn=%p side=%s event=established peer_cn=\"%s\" pin=%s", (void *)c,
                  c->is_server ? "server" : "client", c->peer.subject_cn, c->peer.pin);
        if (ep->cbs.on_established)
            ep->cbs.on_established(c, &c->peer, ep->user_data);
    }
    if (c->state >= CS_CLOSING) {
        if (!c->why_set)
            set_why(c, AEGIS_CLOSE_LOCAL, AEGIS_ERR_CLOSED, 0, 0, 0, "closed", 6);
        if (c->ncalls) {
            /* A client that closes its connection without error has given
             * up on its calls: the server's open calls end CANCELLED, as
             * with a cancelled stream (the close may overtake the
             * client's STOP_SENDING). Anything else lost the connection. */
            int gone =
                c->is_server && c->why.kind == AEGIS_CLOSE_PEER_APP && c->why.code == H3_NO_ERROR;
            call_conn_failed(c, gone ? AEGIS_GRPC_CANCELLED : AEGIS_GRPC_UNAVAILABLE,
                             c->why.reason);
        }
    }
    release_tls(c);
    if (c->goaway_recv == 1) {
        c->goaway_recv = 2;
        if (ep->cbs.on_goaway)
            ep->cbs.on_goaway(c, ep->user_data);
    }
    call_reap(c);
    if (c->state >= CS_CLOSING && !c->ncalls && c->why_set != 2) {
        c->why_set = 2; /* reported */
        ep->stats.conns_closed++;
        ep->stats.conns_active--;
        if (AEGIS_LOG_ENABLED(ep->log, AEGIS_LOG_INFO)) {
            char buf[256];
            aegis_log_emit(ep->log, AEGIS_LOG_INFO, "conn=%p side=%s event=closed %s", (void *)c,
                           c->is_server ? "server" : "client",
                           aegis_close_reason_format(&c->why, buf, sizeof(buf)));
        }
        if (ep->cbs.on_closed)
            ep->cbs.on_closed(c, &c->why, ep->user_data);
    }
    if (c->state == CS_ESTABLISHED && c->shutdown_started && c->ncalls == 0 && h3_is_drained(c))
        qconn_request_close(c, 1, H3_NO_ERROR, 0, "graceful shutdown");
    if (c->want_close && c->state < CS_CLOSING)
        do_requested_close(c, now);
}

void qconn_credit(struct aegis_conn *c, int64_t sid, uint64_t n)
{
    if (!n || c->state >= CS_CLOSING)
        return;
    ngtcp2_conn_extend_max_stream_offset(c->q, sid, n);
    ngtcp2_conn_extend_max_offset(c->q, n);
    ep_mark_dirty(c);
}

int qconn_open_stream(struct aegis_conn *c, int64_t *psid, void *user)
{
    int rv = ngtcp2_conn_open_bidi_stream(c->q, psid, user);
    if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED)
        return -EAGAIN;
    if (rv != 0)
        return AEGIS_ERR_QUIC;
    return 0;
}

void qconn_shutdown_stream(struct aegis_conn *c, int64_t sid, uint64_t code)
{
    if (c->state < CS_CLOSING)
        ngtcp2_conn_shutdown_stream(c->q, 0, sid, code);
    ep_mark_dirty(c);
}

void qconn_shutdown_stream_read(struct aegis_conn *c, int64_t sid, uint64_t code)
{
    if (c->state < CS_CLOSING)
        ngtcp2_conn_shutdown_stream_read(c->q, 0, sid, code);
    ep_mark_dirty(c);
}

void qconn_shutdown_stream_write(struct aegis_conn *c, int64_t sid, uint64_t code)
{
    if (c->state < CS_CLOSING)
        ngtcp2_conn_shutdown_stream_write(c->q, 0, sid, code);
    ep_mark_dirty(c);
}

int qconn_migrate(struct aegis_conn *c, const struct aegis_path *path, aegis_tstamp now)
{
    if (c->is_server || c->state != CS_ESTABLISHED)
        return AEGIS_ERR_STATE;
    struct aegis_path copy = *path;
    ngtcp2_path np;
    path_to_ngtcp2(&np, &copy);
    int rv = ngtcp2_conn_initiate_immediate_migration(c->q, &np, now);
    if (rv != 0)
        return AEGIS_ERR_QUIC;
    c->path = copy;
    ep_mark_dirty(c);
    return 0;
}

int qconn_open_uni(struct aegis_conn *c, int64_t *psid)
{
    return ngtcp2_conn_open_uni_stream(c->q, psid, NULL) == 0 ? 0 : AEGIS_ERR_QUIC;
}

void qconn_set_stream_data(struct aegis_conn *c, int64_t sid, void *data)
{
    ngtcp2_conn_set_stream_user_data(c->q, sid, data);
}

/* ---- public connection API ---- */

void aegis_conn_set_data(struct aegis_conn *conn, void *data)
{
    conn->app_data = data;
}

void *aegis_conn_get_data(const struct aegis_conn *conn)
{
    return conn->app_data;
}

const struct aegis_peer_identity *aegis_conn_peer(const struct aegis_conn *conn)
{
    return &conn->peer;
}

const struct aegis_path *aegis_conn_path(const struct aegis_conn *conn)
{
    return &conn->path;
}

int aegis_conn_is_established(const struct aegis_conn *conn)
{
    return conn->established_cb && conn->state == CS_ESTABLISHED;
}

size_t aegis_conn_call_count(const struct aegis_conn *conn)
{
    return conn->ncalls;
}

int aegis_conn_close(struct aegis_conn *conn, uint64_t code, const char *reason)
{
    if (!conn)
        return -EINVAL;
    if (conn->want_close || conn->state >= CS_CLOSING)
        return AEGIS_ERR_STATE;
    qconn_request_close(conn, 1, code, 0, reason);
    return 0;
}

int aegis_conn_shutdown(struct aegis_conn *conn)
{
    if (!conn)
        return -EINVAL;
    if (conn->state >= CS_CLOSING || conn->shutdown_started)
        return 0;
    conn->shutdown_started = 1;
    if (conn->state == CS_HANDSHAKE) {
        qconn_request_close(conn, 1, H3_NO_ERROR, 0, "shutting down");
        return 0;
    }
    h3_shutdown(conn);
    ep_mark_dirty(conn);
    return 0;
}

int aegis_conn_migrate(struct aegis_conn *conn, const struct aegis_path *path, aegis_tstamp now)
{
    if (!conn || !path)
        return -EINVAL;
    return qconn_migrate(conn, path, now);
}
