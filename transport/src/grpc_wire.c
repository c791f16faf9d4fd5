/*
 * gRPC wire details independent of QUIC/HTTP/3: message framing, header and
 * trailer value grammars (gRPC PROTOCOL-HTTP2, "Requests" and "Responses"),
 * percent-encoding of grpc-message and base64 of -bin metadata. Every input
 * here is untrusted peer data; each parser is bounded by its input length and
 * covered by tests/fuzz/fuzz_grpc_deframer.c or fuzz_grpc_headers.c.
 */
#include "grpc_wire.h"

#include <aegis/base64.h>
#include <aegis/err.h>

#include <errno.h>
#include <limits.h>
#include <string.h>

/*
 * The deframer grows its buffer with the bytes that actually arrived rather
 * than to the declared length at once: a peer declaring 4 MiB and sending one
 * byte must not make us allocate 4 MiB per stream. Start at this size and
 * double.
 */
#define DEFRAMER_MIN_ALLOC 256
/*
 * A buffer this large is released when the next message is much smaller, so
 * one big message does not pin its buffer for the life of a long stream.
 */
#define DEFRAMER_RETAIN_MAX (64 * 1024)

/* in_body value marking a deframer that has failed (the header says it is
 * unusable after an error; later feeds get AEGIS_ERR_STATE). */
#define DEFRAMER_FAILED (-1)

/* The timeout value is at most 8 digits (PROTOCOL-HTTP2: TimeoutValue). */
#define TIMEOUT_MAX_DIGITS 8
#define TIMEOUT_MAX_VALUE UINT64_C(99999999)
/* UINT64_MAX is AEGIS_TSTAMP_NEVER; a parsed timeout saturates just below it. */
#define TIMEOUT_SATURATED (UINT64_MAX - 1)

#define PATH_MAX_LEN 256

static const uint8_t empty_msg[1];

void grpc_frame_header(uint8_t out[GRPC_FRAME_HEADER_LEN], int compressed, uint32_t len)
{
    out[0] = compressed ? 1 : 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

void grpc_deframer_init(struct grpc_deframer *d, const struct aegis_mem *mem, size_t max_message)
{
    memset(d, 0, sizeof(*d));
    d->mem = mem;
    d->max_message = max_message;
}

void grpc_deframer_free(struct grpc_deframer *d)
{
    if (!d)
        return;
    aegis_free(d->mem, d->buf);
    d->buf = NULL;
    d->buf_cap = 0;
}

static int fail(struct grpc_deframer *d, int rv)
{
    d->in_body = DEFRAMER_FAILED;
    return rv;
}

/* Make room for `need` bytes of the current message (need <= d->want). */
static int reserve(struct grpc_deframer *d, size_t need)
{
    if (need <= d->buf_cap)
        return 0;
    size_t cap = d->buf_cap ? d->buf_cap : DEFRAMER_MIN_ALLOC;
    while (cap < need && cap <= SIZE_MAX / 2)
        cap *= 2;
    if (cap < need || cap > d->want)
        cap = d->want > need ? d->want : need;
    uint8_t *p = aegis_realloc(d->mem, d->buf, cap);
    if (!p)
        return -ENOMEM;
    d->buf = p;
    d->buf_cap = cap;
    return 0;
}

/* gRPC PROTOCOL-HTTP2 "Length-Prefixed-Message": flag 0 or 1, 32-bit length. */
static int start_message(struct grpc_deframer *d)
{
    if (d->hdr[0] > 1)
        return AEGIS_ERR_MALFORMED;
    uint32_t len = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
                   (uint32_t)d->hdr[3] << 8 | (uint32_t)d->hdr[4];
    if ((uint64_t)len > (uint64_t)d->max_message)
        return AEGIS_ERR_TOO_LARGE;
    if (d->buf_cap > DEFRAMER_RETAIN_MAX && (size_t)len < d->buf_cap / 4) {
        aegis_free(d->mem, d->buf);
        d->buf = NULL;
        d->buf_cap = 0;
    }
    d->compressed = d->hdr[0];
    d->want = len;
    d->have = 0;
    d->hdr_have = 0;
    d->in_body = 1;
    return 0;
}

long grpc_deframer_feed(struct grpc_deframer *d, const uint8_t *data, size_t len, int *pdone,
                        const uint8_t **pmsg, size_t *pmsglen, int *pcompressed)
{
    if (!d || !pdone || !pmsg || !pmsglen || !pcompressed || (!data && len))
        return -EINVAL;
    *pdone = 0;
    if (d->in_body == DEFRAMER_FAILED)
        return AEGIS_ERR_STATE;
    if (len > LONG_MAX)
        len = LONG_MAX;

    size_t used = 0;
    if (!d->in_body) {
        size_t take = GRPC_FRAME_HEADER_LEN - d->hdr_have;
        if (take > len)
            take = len;
        if (take)
            memcpy(d->hdr + d->hdr_have, data, take);
        d->hdr_have += take;
        used = take;
        if (d->hdr_have < GRPC_FRAME_HEADER_LEN)
            return (long)used;
        int rv = start_message(d);
        if (rv != 0)
            return fail(d, rv);
    }

    size_t take = d->want - d->have;
    if (take > len - used)
        take = len - used;
    if (take) {
        int rv = reserve(d, d->have + take);
        if (rv != 0)
            return fail(d, rv);
        memcpy(d->buf + d->have, data + used, take);
        d->have += take;
        used += take;
    }
    if (d->have == d->want) {
        d->in_body = 0;
        *pdone = 1;
        *pmsg = d->buf ? d->buf : empty_msg;
        *pmsglen = d->want;
        *pcompressed = d->compressed;
    }
    return (long)used;
}

int grpc_deframer_partial(const struct grpc_deframer *d)
{
    return d->in_body == 1 || d->hdr_have > 0;
}

/* --- grpc-timeout -------------------------------------------------------- */

struct timeout_unit {
    char c;
    uint64_t ns;
};

/* Coarse to fine (PROTOCOL-HTTP2: TimeoutUnit). */
static const struct timeout_unit timeout_units[] = {
    {'H', UINT64_C(3600) * AEGIS_NS_PER_S},
    {'M', UINT64_C(60) * AEGIS_NS_PER_S},
    {'S', AEGIS_NS_PER_S},
    {'m', AEGIS_NS_PER_MS},
    {'u', AEGIS_NS_PER_US},
    {'n', 1},
};
#define NUNITS (sizeof(timeout_units) / sizeof(timeout_units[0]))

int grpc_timeout_parse(const char *v, size_t len, uint64_t *pns)
{
    if (!v || !pns || len < 2 || len > TIMEOUT_MAX_DIGITS + 1)
        return AEGIS_ERR_MALFORMED;
    uint64_t unit = 0;
    for (size_t i = 0; i < NUNITS; i++) {
        if (v[len - 1] == timeout_units[i].c)
            unit = timeout_units[i].ns;
    }
    if (!unit)
        return AEGIS_ERR_MALFORMED;
    uint64_t val = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return AEGIS_ERR_MALFORMED;
        val = val * 10 + (uint64_t)(v[i] - '0'); /* <= 8 digits: no overflow */
    }
    *pns = val > TIMEOUT_SATURATED / unit ? TIMEOUT_SATURATED : val * unit;
    return 0;
}

static size_t put_timeout(uint64_t val, char unit, char out[16])
{
    char tmp[TIMEOUT_MAX_DIGITS];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + val % 10);
        val /= 10;
    } while (val && n < sizeof(tmp));
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = unit;
    out[n + 1] = '\0';
    return n + 1;
}

size_t grpc_timeout_format(uint64_t ns, char out[16])
{
    if (ns == 0)
        return put_timeout(0, 'n', out);
    /* An exact value in the coarsest unit has the fewest digits. */
    for (size_t i = 0; i < NUNITS; i++) {
        const struct timeout_unit *u = &timeout_units[i];
        if (ns % u->ns == 0 && ns / u->ns <= TIMEOUT_MAX_VALUE)
            return put_timeout(ns / u->ns, u->c, out);
    }
    /* Otherwise the finest unit that fits, rounded up so the peer never sees
     * a shorter deadline than ours. UINT64_MAX ns is ~5.1e6 hours, so 'H'
     * always fits. */
    for (size_t i = NUNITS; i-- > 0;) {
        const struct timeout_unit *u = &timeout_units[i];
        uint64_t val = ns / u->ns + (ns % u->ns != 0);
        if (val <= TIMEOUT_MAX_VALUE)
            return put_timeout(val, u->c, out);
    }
    return put_timeout(TIMEOUT_MAX_VALUE, 'H', out); /* not reached */
}

/* --- grpc-status --------------------------------------------------------- */

/*
 * PROTOCOL-HTTP2: Status -> "grpc-status" 1*DIGIT. Leading zeros ("01") are
 * accepted because the grammar allows them (grpc-go's strconv.Atoi does too);
 * signs, spaces and values above 16 are not.
 */
int grpc_status_parse(const char *v, size_t len, int *pstatus)
{
    if (!v || !pstatus || len == 0)
        return AEGIS_ERR_MALFORMED;
    int val = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return AEGIS_ERR_MALFORMED;
        val = val * 10 + (v[i] - '0');
        if (val > 16)
            return AEGIS_ERR_MALFORMED;
    }
    *pstatus = val;
    return 0;
}

/* --- grpc-message percent-encoding -------------------------------------- */

static const char hexdig[] = "0123456789ABCDEF";

/* PROTOCOL-HTTP2: Percent-Byte-Unencoded is 0x20-0x24 and 0x26-0x7E. */
static int pct_plain(uint8_t c)
{
    return c >= 0x20 && c <= 0x7E && c != '%';
}

size_t grpc_percent_encode(const char *in, size_t len, char *out, size_t outcap)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)in[i];
        char enc[3];
        size_t k = 1;
        enc[0] = (char)c;
        if (!pct_plain(c)) {
            enc[0] = '%';
            enc[1] = hexdig[c >> 4];
            enc[2] = hexdig[c & 0xF];
            k = 3;
        }
        for (size_t j = 0; j < k; j++, n++) {
            if (n < outcap)
                out[n] = enc[j];
        }
    }
    return n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/*
 * PROTOCOL-HTTP2 asks decoders never to fail on a bad grpc-message: a '%'
 * not followed by two hex digits is kept literally and decoding goes on.
 */
size_t grpc_percent_decode(const char *in, size_t len, char *out, size_t outcap)
{
    size_t n = 0;
    for (size_t i = 0; i < len; n++) {
        char c = in[i++];
        if (c == '%' && len - i >= 2) {
            int hi = hexval(in[i]), lo = hexval(in[i + 1]);
            if (hi >= 0 && lo >= 0) {
                c = (char)(uint8_t)(hi << 4 | lo);
                i += 2;
            }
        }
        if (n < outcap)
            out[n] = c;
    }
    if (n < outcap)
        out[n] = '\0';
    return n;
}

/* --- content-type, :path, metadata -------------------------------------- */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Case-insensitive prefix match (media types are, RFC 9110 §8.3.1). */
static int has_prefix_ci(const char *v, size_t len, const char *p)
{
    size_t plen = strlen(p);
    if (len < plen)
        return 0;
    for (size_t i = 0; i < plen; i++) {
        if (lower((unsigned char)v[i]) != p[i])
            return 0;
    }
    return 1;
}

int grpc_content_type_ok(const char *v, size_t len)
{
    static const char base[] = "application/grpc";
    static const char proto[] = "+proto";
    if (!v || !has_prefix_ci(v, len, base))
        return 0;
    size_t i = sizeof(base) - 1;
    if (has_prefix_ci(v + i, len - i, proto))
        i += sizeof(proto) - 1;
    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    if (i == len)
        return i == sizeof(base) - 1 || i == sizeof(base) + sizeof(proto) - 2;
    if (v[i] != ';')
        return 0;
    for (i++; i < len; i++) {
        uint8_t c = (uint8_t)v[i];
        if ((c < 0x20 || c > 0x7E) && c != '\t')
            return 0;
    }
    return 1;
}

/* "/" Service-Name "/" method-name; no spaces or controls anywhere. */
int grpc_path_ok(const char *v, size_t len)
{
    if (!v || len < 4 || len > PATH_MAX_LEN || v[0] != '/')
        return 0;
    size_t slash = 0;
    for (size_t i = 1; i < len; i++) {
        uint8_t c = (uint8_t)v[i];
        if (c <= 0x20 || c > 0x7E)
            return 0;
        if (c == '/') {
            if (slash)
                return 0;
            slash = i;
        }
    }
    return slash > 1 && slash < len - 1;
}

/* PROTOCOL-HTTP2: Header-Name -> 1*( %x30-39 / %x61-7A / "_" / "-" / "." ),
 * and names starting with "grpc-" are reserved for gRPC itself. */
int grpc_metadata_key_ok(const char *k, size_t len)
{
    if (!k || len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = k[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return !(len >= 5 && memcmp(k, "grpc-", 5) == 0);
}

int grpc_metadata_key_is_bin(const char *k, size_t len)
{
    return k && len >= 4 && memcmp(k + len - 4, "-bin", 4) == 0;
}

/*
 * ASCII-Value -> 1*( %x20-%x7E ). Leading or trailing spaces are refused too:
 * RFC 9110 §5.5 field values exclude them and nghttp3 resets a stream that
 * carries them, so the sender should learn it here instead.
 */
int grpc_metadata_value_ok(const char *v, size_t len)
{
    if (len == 0)
        return 1;
    if (!v || v[0] == ' ' || v[len - 1] == ' ')
        return 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)v[i];
        if (c < 0x20 || c > 0x7E)
            return 0;
    }
    return 1;
}

/* --- base64 for -bin metadata (RFC 4648 §4, standard alphabet) ---------- */

size_t grpc_base64_encode(const uint8_t *in, size_t len, char *out, size_t outcap)
{
    /* gRPC emits -bin values unpadded. */
    return aegis_base64_encode(in, len, 0, out, outcap);
}

/*
 * gRPC asks receivers to accept padded and unpadded -bin values. Non-zero
 * bits in the last character are tolerated like grpc-go's default decoder
 * does (no AEGIS_BASE64_STRICT).
 */
long grpc_base64_decode(const char *in, size_t len, uint8_t *out, size_t outcap)
{
    long n = aegis_base64_decode(in, len, 0, out, outcap);
    return n == AEGIS_ERR_TOO_LARGE ? -EINVAL : n;
}

/* --- grpc-encoding / grpc-accept-encoding ------------------------------- */

static int token_eq_ci(const char *v, size_t len, const char *tok)
{
    return strlen(tok) == len && has_prefix_ci(v, len, tok);
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Content-coding names are case-insensitive (RFC 9110 §8.4.1). */
enum grpc_encoding grpc_encoding_parse(const char *v, size_t len)
{
    if (!v)
        return GRPC_ENC_UNKNOWN;
    while (len && is_ows(v[0])) {
        v++;
        len--;
    }
    while (len && is_ows(v[len - 1]))
        len--;
    if (token_eq_ci(v, len, "identity"))
        return GRPC_ENC_IDENTITY;
    if (token_eq_ci(v, len, "zstd"))
        return GRPC_ENC_ZSTD;
    return GRPC_ENC_UNKNOWN;
}

unsigned grpc_accept_encoding_parse(const char *v, size_t len)
{
    unsigned mask = 0;
    if (!v)
        return 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && v[i] != ',')
            continue;
        enum grpc_encoding e = grpc_encoding_parse(v + start, i - start);
        if (e != GRPC_ENC_UNKNOWN)
            mask |= 1u << (unsigned)e;
        start = i + 1;
    }
    return mask;
}
