/*
 * TLS 1.3 for QUIC through wolfSSL and ngtcp2_crypto_wolfssl. The only file
 * of the transport that includes wolfSSL.
 *
 * Trust model (DESIGN §4):
 *  - server: client certificate required and verified against the fleet CA;
 *    with accept_any_client_cert, errors on the LEAF (depth 0) are accepted
 *    and recorded so the handshake hook can decide (Enroll path). Errors at
 *    depth > 0 are never overridden: wolfSSL would add that unverified CA to
 *    its trust store for later connections.
 *  - client: no CA, no hostname: the server leaf's SPKI SHA-256 must match a
 *    pin. wolfSSL runs with VERIFY_NONE (TLS 1.3 still checks the
 *    CertificateVerify signature with the leaf key, which proves possession);
 *    the pin is checked when the handshake completes, inside ngtcp2's read,
 *    before any packet carrying our certificate or Finished is sent.
 */
#include <wolfssl/options.h>

#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

#include "transport_int.h"

#include <aegis/err.h>
#include <aegis/pki.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_PINS 2

struct tls_ctx {
    const struct aegis_mem *mem;
    WOLFSSL_CTX *ctx;
    int is_server;
    int accept_any;
    uint8_t pins[MAX_PINS][32];
    size_t npins;
    FILE *keylog;
};

struct tls_conn {
    /* First member: wolfSSL's app data points here and ngtcp2_crypto reads
     * it as its conn_ref. */
    ngtcp2_crypto_conn_ref ref;
    struct tls_ctx *ctx;
    struct aegis_conn *conn;
    WOLFSSL *ssl;
    int verify_err;
    int verify_depth;
    char verify_msg[64];
};

static int wolfssl_inited;

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    struct tls_conn *t = ref->user_data;
    return qconn_ngtcp2(t->conn);
}

static const char *verify_error_text(int err)
{
    switch (err) {
    case ASN_AFTER_DATE_E:
        return "certificate expired";
    case ASN_BEFORE_DATE_E:
        return "certificate not yet valid";
    case ASN_NO_SIGNER_E:
        return "certificate not issued by the trusted CA";
    case ASN_SELF_SIGNED_E:
        return "self-signed certificate";
    case ASN_SIG_CONFIRM_E:
        return "certificate signature invalid";
    default:
        return "certificate verification failed";
    }
}

static int verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
    WOLFSSL *ssl =
        wolfSSL_X509_STORE_CTX_get_ex_data(store, wolfSSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_conn *t = ssl ? wolfSSL_get_app_data(ssl) : NULL;
    if (preverify)
        return 1;
    if (!t)
        return 0;
    t->verify_err = store->error;
    t->verify_depth = store->error_depth;
    snprintf(t->verify_msg, sizeof(t->verify_msg), "%s", verify_error_text(store->error));
    /* Leaf only (see the top of the file). */
    if (t->ctx->accept_any && store->error_depth == 0)
        return 1;
    return 0;
}

static int load_pins(struct tls_ctx *c, const struct aegis_tls_config *cfg)
{
    if (cfg->npins < 1 || cfg->npins > MAX_PINS)
        return AEGIS_ERR_CONFIG;
    for (size_t i = 0; i < cfg->npins; i++) {
        if (!cfg->pins[i] || aegis_pin_parse(cfg->pins[i], c->pins[i]) != 0)
            return AEGIS_ERR_MALFORMED;
    }
    c->npins = cfg->npins;
    return 0;
}

#ifdef HAVE_SECRET_CALLBACK
/* wolfSSL hands every TLS 1.3 secret of a connection to this callback as a
 * ready NSS key log line ("CLIENT_HANDSHAKE_TRAFFIC_SECRET <random> <secret>"),
 * the SSLKEYLOGFILE format Wireshark reads. Only installed when the
 * application asked for a key log file. */
static void keylog_line(const WOLFSSL *ssl, const char *line)
{
    const ngtcp2_crypto_conn_ref *ref = wolfSSL_get_app_data(ssl);
    /* ref is the first member of struct tls_conn. */
    const struct tls_conn *t = (const struct tls_conn *)(const void *)ref;
    if (!t || !t->ctx || !t->ctx->keylog)
        return;
    fputs(line, t->ctx->keylog);
    fputc('\n', t->ctx->keylog);
    fflush(t->ctx->keylog);
}

static int keylog_open(struct tls_ctx *c, const char *path)
{
    /* Secrets: created 0600, appended to (several processes may share one
     * file, as browsers do). */
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    c->keylog = fdopen(fd, "a");
    if (!c->keylog) {
        int e = errno;
        close(fd);
        return -e;
    }
    wolfSSL_CTX_set_keylog_callback(c->ctx, keylog_line);
    return 0;
}
#endif

int tls_ctx_new(const struct aegis_mem *mem, int is_server, const struct aegis_tls_config *cfg,
                struct tls_ctx **pctx)
{
    int rv;
    if (is_server ? (!cfg->cert_pem || !cfg->key_pem) : (!cfg->cert_pem != !cfg->key_pem))
        return AEGIS_ERR_CONFIG;
#ifndef HAVE_SECRET_CALLBACK
    if (cfg->keylog_path)
        return AEGIS_ERR_UNSUPPORTED; /* wolfSSL built without HAVE_SECRET_CALLBACK */
#endif
    if (!wolfssl_inited) {
        if (wolfSSL_Init() != WOLFSSL_SUCCESS)
            return AEGIS_ERR_TLS;
        wolfssl_inited = 1;
    }
    struct tls_ctx *c = aegis_calloc(mem, 1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->mem = mem;
    c->is_server = is_server;
    c->accept_any = cfg->accept_any_client_cert;
    c->ctx = wolfSSL_CTX_new(is_server ? wolfTLSv1_3_server_method() : wolfTLSv1_3_client_method());
    if (!c->ctx) {
        rv = -ENOMEM;
        goto fail;
    }
    if ((is_server ? ngtcp2_crypto_wolfssl_configure_server_context(c->ctx)
                   : ngtcp2_crypto_wolfssl_configure_client_context(c->ctx)) != 0) {
        rv = AEGIS_ERR_TLS;
        goto fail;
    }
    if (cfg->cert_pem && (wolfSSL_CTX_use_certificate_chain_buffer_format(
                              c->ctx, (const unsigned char *)cfg->cert_pem, (long)cfg->cert_len,
                              WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS ||
                          wolfSSL_CTX_use_PrivateKey_buffer(
                              c->ctx, (const unsigned char *)cfg->key_pem, (long)cfg->key_len,
                              WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS ||
                          wolfSSL_CTX_check_private_key(c->ctx) != WOLFSSL_SUCCESS)) {
        rv = AEGIS_ERR_CERT;
        goto fail;
    }
#ifdef HAVE_SECRET_CALLBACK
    if (cfg->keylog_path) {
        rv = keylog_open(c, cfg->keylog_path);
        if (rv != 0)
            goto fail;
    }
#endif
    /* X25519 first (cheapest), P-256 for peers that need it. */
    int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
    if (wolfSSL_CTX_set_groups(c->ctx, groups, 2) != WOLFSSL_SUCCESS) {
        rv = AEGIS_ERR_TLS;
        goto fail;
    }
    if (is_server) {
        if (!cfg->ca_pem) {
            rv = AEGIS_ERR_CONFIG;
            goto fail;
        }
        if (wolfSSL_CTX_load_verify_buffer(c->ctx, (const unsigned char *)cfg->ca_pem,
                                           (long)cfg->ca_len,
                                           WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
            rv = AEGIS_ERR_CERT;
            goto fail;
        }
        wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                               verify_cb);
        /* No resumption: tickets would cost a post-handshake flight and
         * per-connection memory for nothing (agents keep one connection). */
        wolfSSL_CTX_no_ticket_TLSv13(c->ctx);
    } else {
        rv = load_pins(c, cfg);
        if (rv != 0)
            goto fail;
        wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_NONE, NULL);
    }
    *pctx = c;
    return 0;
fail:
    tls_ctx_del(c);
    return rv;
}

void tls_ctx_del(struct tls_ctx *c)
{
    if (!c)
        return;
    if (c->ctx)
        wolfSSL_CTX_free(c->ctx);
    if (c->keylog)
        fclose(c->keylog);
    aegis_free(c->mem, c);
}

int tls_conn_new(struct tls_ctx *c, struct aegis_conn *conn, const char *sni,
                 struct tls_conn **ptls)
{
    struct tls_conn *t = aegis_calloc(c->mem, 1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->ref.get_conn = get_conn;
    t->ref.user_data = t;
    t->ctx = c;
    t->conn = conn;
    t->ssl = wolfSSL_new(c->ctx);
    if (!t->ssl) {
        aegis_free(c->mem, t);
        return -ENOMEM;
    }
    wolfSSL_set_app_data(t->ssl, &t->ref);
    /* The ALPN select callback is ignored by this wolfSSL build: set the
     * list on every connection, on both sides. */
    char alpn[] = "h3";
    if (wolfSSL_UseALPN(t->ssl, alpn, 2, WOLFSSL_ALPN_FAILED_ON_MISMATCH) != WOLFSSL_SUCCESS)
        goto fail;
    if (c->is_server) {
        wolfSSL_set_accept_state(t->ssl);
    } else {
        wolfSSL_set_connect_state(t->ssl);
        if (sni && *sni &&
            wolfSSL_UseSNI(t->ssl, WOLFSSL_SNI_HOST_NAME, sni, (unsigned short)strlen(sni)) !=
                WOLFSSL_SUCCESS)
            goto fail;
    }
    *ptls = t;
    return 0;
fail:
    wolfSSL_free(t->ssl);
    aegis_free(c->mem, t);
    return AEGIS_ERR_TLS;
}

void tls_conn_del(struct tls_conn *t)
{
    if (!t)
        return;
    wolfSSL_free(t->ssl);
    aegis_free(t->ctx->mem, t);
}

void *tls_conn_native(struct tls_conn *t)
{
    return t->ssl;
}

const char *tls_conn_verify_error(const struct tls_conn *t)
{
    return t->verify_msg;
}

void tls_conn_identity(struct tls_conn *t, struct aegis_peer_identity *id)
{
    memset(id, 0, sizeof(*id));
    WOLFSSL_X509 *x = wolfSSL_get_peer_certificate(t->ssl);
    if (!x)
        return;
    int derlen = 0;
    const unsigned char *der = wolfSSL_X509_get_der(x, &derlen);
    struct aegis_cert_info info;
    /* aegis_pki reads certificates the same way aegis-certs prints pins. */
    if (der && derlen > 0 && aegis_cert_info_der(der, (size_t)derlen, &info) == 0) {
        id->has_cert = 1;
        memcpy(id->spki_sha256, info.spki_sha256, sizeof(id->spki_sha256));
        memcpy(id->pin, info.pin, sizeof(id->pin));
        memcpy(id->subject_cn, info.subject_cn, sizeof(id->subject_cn));
        memcpy(id->issuer_cn, info.issuer_cn, sizeof(id->issuer_cn));
        id->self_signed = info.self_signed;
        memcpy(id->subject_ou, info.subject_ou, sizeof(id->subject_ou));
        int spki_len = (int)sizeof(id->spki_der);
        if (wolfSSL_X509_get_pubkey_buffer(x, id->spki_der, &spki_len) == WOLFSSL_SUCCESS &&
            spki_len > 0)
            id->spki_der_len = (size_t)spki_len;
    }
    snprintf(id->verify_error, sizeof(id->verify_error), "%s", t->verify_msg);
    if (t->ctx->is_server)
        id->chains_to_ca = id->has_cert && t->verify_err == 0;
    else
        id->chains_to_ca = id->has_cert && tls_conn_check_pins(t, id) == 0;
    wolfSSL_X509_free(x);
}

int tls_conn_check_pins(struct tls_conn *t, const struct aegis_peer_identity *id)
{
    if (!id->has_cert)
        return AEGIS_ERR_PIN_MISMATCH;
    for (size_t i = 0; i < t->ctx->npins; i++) {
        /* Not secret: a plain compare is fine. */
        if (memcmp(t->ctx->pins[i], id->spki_sha256, 32) == 0)
            return 0;
    }
    return AEGIS_ERR_PIN_MISMATCH;
}

int tls_random(uint8_t *buf, size_t len)
{
    if (!wolfssl_inited) {
        if (wolfSSL_Init() != WOLFSSL_SUCCESS)
            return AEGIS_ERR_CRYPTO;
        wolfssl_inited = 1;
    }
    return wolfSSL_RAND_bytes(buf, (int)len) == WOLFSSL_SUCCESS ? 0 : AEGIS_ERR_CRYPTO;
}

const char *tls_alert_name(uint8_t alert)
{
    switch (alert) {
    case 0:
        return "close notify";
    case 10:
        return "unexpected message";
    case 40:
        return "handshake failure";
    case 42:
        return "bad certificate";
    case 43:
        return "unsupported certificate";
    case 44:
        return "certificate revoked";
    case 45:
        return "certificate expired";
    case 46:
        return "certificate unknown";
    case 47:
        return "illegal parameter";
    case 48:
        return "unknown CA";
    case 49:
        return "access denied";
    case 50:
        return "decode error";
    case 51:
        return "decrypt error";
    case 70:
        return "protocol version";
    case 80:
        return "internal error";
    case 109:
        return "missing extension";
    case 110:
        return "unsupported extension";
    case 116:
        return "certificate required";
    case 120:
        return "no application protocol";
    default:
        return "alert";
    }
}
