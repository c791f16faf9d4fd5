/*
 * Internals shared by the pki_*.c files of aegis_pki.
 *
 * pki_der.c is plain C (DER reader/writer, PEM, base64, X.509 field parser);
 * pki_key.c, pki_issue.c and pki_inspect.c hold the wolfSSL calls. Nothing
 * here is exported from the library's public header.
 */
#ifndef AEGIS_PKI_INT_H
#define AEGIS_PKI_INT_H

#include <aegis/mem.h>
#include <aegis/pki.h>

#include <stddef.h>
#include <stdint.h>

/* DER tags used here (X.690 §8). */
#define DER_BOOLEAN 0x01
#define DER_INTEGER 0x02
#define DER_BIT_STRING 0x03
#define DER_OCTET_STRING 0x04
#define DER_NULL 0x05
#define DER_OID 0x06
#define DER_UTF8STRING 0x0c
#define DER_PRINTABLESTRING 0x13
#define DER_IA5STRING 0x16
#define DER_UTCTIME 0x17
#define DER_GENERALIZEDTIME 0x18
#define DER_SEQUENCE 0x30
#define DER_SET 0x31
#define DER_CTX(n) (0xa0 | (n))   /* constructed, context-specific */
#define DER_CTX_P(n) (0x80 | (n)) /* primitive, context-specific */

/* Largest DER object accepted anywhere in this module: certificates and keys
 * we handle are a few hundred bytes; a server certificate with the maximum SAN
 * list stays well under this. */
#define AEGIS_PKI_MAX_DER (64 * 1024)
/* Largest PEM text accepted (base64 of AEGIS_PKI_MAX_DER plus line breaks and
 * whatever precedes the block in a file). */
#define AEGIS_PKI_MAX_PEM (256 * 1024)
/* Subject alternative names per certificate: a server has a handful of
 * names; the cap keeps the encoded extension far below wolfSSL's 16 KiB. */
#define AEGIS_PKI_MAX_SANS 32
/* RFC 1035 §2.3.4: a DNS name is at most 253 characters in text form. */
#define AEGIS_PKI_MAX_DNS_LEN 253
/* Subject key identifier length: RFC 7093 §2 method 1 (leftmost 160 bits
 * of the SHA-256 of the subjectPublicKey bits). */
#define AEGIS_PKI_KEYID_LEN 20
/* Earliest and latest validity we encode: UTCTime starts in 1950 and
 * GeneralizedTime's four-digit year ends in 9999 (RFC 5280 §4.1.2.5). */
#define AEGIS_PKI_TIME_MIN (-631152000LL)   /* 1950-01-01T00:00:00Z */
#define AEGIS_PKI_TIME_MAX (253402300799LL) /* 9999-12-31T23:59:59Z */

/* A read cursor over DER bytes. */
struct der {
    const uint8_t *p;
    size_t len;
};

/* One TLV: `all`/`all_len` span the whole element, `val`/`len` its contents. */
struct der_tlv {
    uint8_t tag;
    const uint8_t *all;
    size_t all_len;
    const uint8_t *val;
    size_t len;
};

/* aegis_pki_der_read takes the next TLV off cur (any tag). Single-byte tags
 * and definite lengths only (DER). AEGIS_ERR_MALFORMED otherwise. */
int aegis_pki_der_read(struct der *cur, struct der_tlv *t);
/* aegis_pki_der_expect is der_read plus a tag check. */
int aegis_pki_der_expect(struct der *cur, uint8_t tag, struct der_tlv *t);

/* A bounded append-only DER writer; `err` sticks at the first overflow. */
struct dbuf {
    uint8_t *p;
    size_t cap, len;
    int err;
};
void aegis_pki_dbuf_put(struct dbuf *b, uint8_t tag, const void *val, size_t len);

/* Well-known object identifiers (contents octets only). */
extern const uint8_t aegis_pki_oid_ed25519[3];
extern const uint8_t aegis_pki_oid_ec_public_key[7];
extern const uint8_t aegis_pki_oid_prime256v1[8];
extern const uint8_t aegis_pki_oid_ecdsa_sha256[8];

/* A parsed SubjectPublicKeyInfo: algorithm and the raw public key bits
 * (Ed25519: 32 bytes; P-256: 65-byte uncompressed point). */
struct pki_spki {
    enum aegis_key_algo algo;
    const uint8_t *pub;
    size_t pub_len;
};
/* aegis_pki_spki_parse: AEGIS_ERR_MALFORMED, AEGIS_ERR_UNSUPPORTED. */
int aegis_pki_spki_parse(const uint8_t *der, size_t len, struct pki_spki *out);

/* The X.509 fields this module reads (RFC 5280 §4.1). All pointers borrow
 * from the certificate DER. */
struct pki_cert {
    const uint8_t *tbs; /* whole TBSCertificate TLV: the signed bytes */
    size_t tbs_len;
    const uint8_t *sig_oid; /* signatureAlgorithm OID contents */
    size_t sig_oid_len;
    const uint8_t *sig; /* signatureValue bits (unused-bits byte removed) */
    size_t sig_len;
    const uint8_t *issuer; /* whole Name TLV */
    size_t issuer_len;
    const uint8_t *subject;
    size_t subject_len;
    const uint8_t *spki; /* whole SubjectPublicKeyInfo TLV */
    size_t spki_len;
    int64_t not_before, not_after;
    int is_ca;
    const uint8_t *skid; /* subjectKeyIdentifier value, NULL if absent */
    size_t skid_len;
    const uint8_t *san; /* GeneralNames contents, NULL if absent */
    size_t san_len;
};
/* aegis_pki_cert_parse: AEGIS_ERR_MALFORMED on anything it cannot read. */
int aegis_pki_cert_parse(const uint8_t *der, size_t len, struct pki_cert *c);
/* aegis_pki_name_attr copies the first attribute `oid` (2.5.4.x: 3 = CN,
 * 11 = OU) of a Name as a NUL-terminated string; "" if absent.
 * AEGIS_ERR_MALFORMED if the value does not fit `cap` or holds a NUL. */
int aegis_pki_name_attr(const uint8_t *name, size_t len, uint8_t attr, char *out, size_t cap);
/* aegis_pki_name_encode writes Name { OU=ou, CN=cn } (UTF8String). */
int aegis_pki_name_encode(const char *ou, const char *cn, struct dbuf *b);

/* Unix seconds <-> X.509 Time (UTCTime before 2050, GeneralizedTime from
 * 2050 on, RFC 5280 §4.1.2.5). encode writes the whole TLV into out[17]. */
int aegis_pki_time_encode(int64_t t, uint8_t out[17], size_t *plen);
int aegis_pki_time_decode(const struct der_tlv *t, int64_t *out);

/* Base64 (RFC 4648 §4, with padding). */
size_t aegis_pki_b64_encode(const uint8_t *in, size_t len, char *out); /* out: 4*ceil(len/3)+1 */
int aegis_pki_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *plen);

/* aegis_pki_pem_decode finds the first "-----BEGIN <label>-----" block
 * (any label if label is NULL; its name is copied to found[32] if found is
 * not NULL) and decodes it. AEGIS_ERR_NOT_FOUND if there is no such block,
 * AEGIS_ERR_MALFORMED for a broken one, -ENOMEM. */
int aegis_pki_pem_decode(const struct aegis_mem *mem, const char *pem, size_t len,
                         const char *label, char found[32], uint8_t **pder, size_t *plen);
/* aegis_pki_pem_encode writes a PEM block with 64-column lines. */
int aegis_pki_pem_encode(const struct aegis_mem *mem, const char *label, const uint8_t *der,
                         size_t len, char **ppem, size_t *plen);

/* aegis_pki_san_encode builds GeneralNames (dNSName, iPAddress) for spec.
 * -EINVAL for a bad DNS name or IP address or too many names. */
int aegis_pki_san_encode(const struct aegis_cert_spec *spec, struct dbuf *b);

/* Constant-time-irrelevant helper: equal lengths and bytes. */
int aegis_pki_bytes_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

/* --- wolfSSL-backed helpers (pki_key.c) --- */

/* aegis_pki_wc_err maps a wolfCrypt return code to an Aegis error. */
int aegis_pki_wc_err(int wc_ret);
/* aegis_pki_random fills out from the system RNG through wolfCrypt's DRBG. */
int aegis_pki_random(uint8_t *out, size_t len);
/* aegis_pki_verify_raw checks sig over msg with a parsed public key; sig_oid
 * (may be NULL) must fit the key's algorithm. 0, AEGIS_ERR_SIGNATURE,
 * AEGIS_ERR_UNSUPPORTED, -ENOMEM. */
int aegis_pki_verify_raw(const struct pki_spki *spki, const uint8_t *sig_oid, size_t sig_oid_len,
                         const uint8_t *msg, size_t len, const uint8_t *sig, size_t siglen);
/* aegis_pki_keyid computes the RFC 7093 §2 method 1 key identifier. */
int aegis_pki_keyid(const struct pki_spki *spki, uint8_t out[AEGIS_PKI_KEYID_LEN]);

#endif
