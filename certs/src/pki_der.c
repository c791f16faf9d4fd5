/*
 * DER, PEM and base64 for the fleet PKI, and the small X.509 reader that
 * aegis_cert_info / aegis_cert_verify use. No third-party code here: it only
 * walks bytes, so it is easy to fuzz and to reason about. Everything is
 * bounds-checked against the enclosing element (X.690 §8.1).
 */
#include "pki_int.h"

#include <aegis/base64.h>
#include <aegis/err.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

const uint8_t aegis_pki_oid_ed25519[3] = {0x2b, 0x65, 0x70}; /* 1.3.101.112, RFC 8410 §3 */
const uint8_t aegis_pki_oid_ec_public_key[7] = {0x2a, 0x86, 0x48, 0xce,
                                                0x3d, 0x02, 0x01}; /* RFC 5480 §2.1.1 */
const uint8_t aegis_pki_oid_prime256v1[8] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
const uint8_t aegis_pki_oid_ecdsa_sha256[8] = {0x2a, 0x86, 0x48, 0xce,
                                               0x3d, 0x04, 0x03, 0x02}; /* RFC 5758 §3.2 */

/* X.500 attribute types 2.5.4.x (RFC 5280 Appendix A). */
#define OID_ATTR_PREFIX0 0x55
#define OID_ATTR_PREFIX1 0x04
#define ATTR_CN 3
#define ATTR_OU 11

/* Extension OIDs 2.5.29.x (RFC 5280 §4.2.1). */
static const uint8_t oid_ext_skid[3] = {0x55, 0x1d, 0x0e};
static const uint8_t oid_ext_san[3] = {0x55, 0x1d, 0x11};
static const uint8_t oid_ext_bc[3] = {0x55, 0x1d, 0x13};

int aegis_pki_bytes_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

int aegis_pki_der_read(struct der *cur, struct der_tlv *t)
{
    const uint8_t *p = cur->p;
    size_t n = cur->len, len, hdr;

    if (n < 2)
        return AEGIS_ERR_MALFORMED;
    /* High-tag-number form (low five bits all set) never occurs in what we
     * read, so it is refused rather than parsed. */
    if ((p[0] & 0x1f) == 0x1f)
        return AEGIS_ERR_MALFORMED;
    if (p[1] < 0x80) {
        len = p[1];
        hdr = 2;
    } else {
        size_t nb = p[1] & 0x7fu, i;
        /* 0x80 is the indefinite form (BER only); more than 4 length bytes
         * would exceed anything this module accepts. */
        if (nb == 0 || nb > 4 || n < 2 + nb)
            return AEGIS_ERR_MALFORMED;
        len = 0;
        for (i = 0; i < nb; i++)
            len = (len << 8) | p[2 + i];
        hdr = 2 + nb;
    }
    if (len > n - hdr)
        return AEGIS_ERR_MALFORMED;
    t->tag = p[0];
    t->all = p;
    t->all_len = hdr + len;
    t->val = p + hdr;
    t->len = len;
    cur->p += hdr + len;
    cur->len -= hdr + len;
    return 0;
}

int aegis_pki_der_expect(struct der *cur, uint8_t tag, struct der_tlv *t)
{
    struct der save = *cur;
    int rv = aegis_pki_der_read(cur, t);

    if (rv == 0 && t->tag != tag) {
        *cur = save;
        return AEGIS_ERR_MALFORMED;
    }
    return rv;
}

void aegis_pki_dbuf_put(struct dbuf *b, uint8_t tag, const void *val, size_t len)
{
    uint8_t hdr[6];
    size_t hl = 0;

    if (b->err)
        return;
    hdr[hl++] = tag;
    if (len < 0x80) {
        hdr[hl++] = (uint8_t)len;
    } else if (len <= 0xff) {
        hdr[hl++] = 0x81;
        hdr[hl++] = (uint8_t)len;
    } else if (len <= 0xffff) {
        hdr[hl++] = 0x82;
        hdr[hl++] = (uint8_t)(len >> 8);
        hdr[hl++] = (uint8_t)len;
    } else {
        b->err = AEGIS_ERR_TOO_LARGE;
        return;
    }
    if (b->cap - b->len < hl + len) {
        b->err = AEGIS_ERR_TOO_LARGE;
        return;
    }
    memcpy(b->p + b->len, hdr, hl);
    if (len)
        memcpy(b->p + b->len + hl, val, len);
    b->len += hl + len;
}

int aegis_pki_spki_parse(const uint8_t *der, size_t len, struct pki_spki *out)
{
    struct der cur = {der, len}, seq, alg;
    struct der_tlv t, a, oid, bits;
    int rv;

    if ((rv = aegis_pki_der_expect(&cur, DER_SEQUENCE, &t)) != 0 || cur.len != 0)
        return AEGIS_ERR_MALFORMED;
    seq = (struct der){t.val, t.len};
    if ((rv = aegis_pki_der_expect(&seq, DER_SEQUENCE, &a)) != 0)
        return rv;
    if ((rv = aegis_pki_der_expect(&seq, DER_BIT_STRING, &bits)) != 0 || seq.len != 0)
        return AEGIS_ERR_MALFORMED;
    /* subjectPublicKey is a whole number of bytes: unused-bits octet 0. */
    if (bits.len < 1 || bits.val[0] != 0)
        return AEGIS_ERR_MALFORMED;
    alg = (struct der){a.val, a.len};
    if ((rv = aegis_pki_der_expect(&alg, DER_OID, &oid)) != 0)
        return rv;
    if (aegis_pki_bytes_eq(oid.val, oid.len, aegis_pki_oid_ed25519,
                           sizeof(aegis_pki_oid_ed25519))) {
        /* RFC 8410 §3: parameters absent; key is 32 bytes. */
        if (alg.len != 0)
            return AEGIS_ERR_MALFORMED;
        if (bits.len - 1 != 32)
            return AEGIS_ERR_MALFORMED;
        out->algo = AEGIS_KEY_ED25519;
    } else if (aegis_pki_bytes_eq(oid.val, oid.len, aegis_pki_oid_ec_public_key,
                                  sizeof(aegis_pki_oid_ec_public_key))) {
        struct der_tlv curve;
        /* RFC 5480 §2.1.1: namedCurve parameters; only P-256 here. */
        if (aegis_pki_der_expect(&alg, DER_OID, &curve) != 0 || alg.len != 0)
            return AEGIS_ERR_UNSUPPORTED;
        if (!aegis_pki_bytes_eq(curve.val, curve.len, aegis_pki_oid_prime256v1,
                                sizeof(aegis_pki_oid_prime256v1)))
            return AEGIS_ERR_UNSUPPORTED;
        /* RFC 5480 §2.2: we accept the uncompressed form only. */
        if (bits.len - 1 != 65 || bits.val[1] != 0x04)
            return AEGIS_ERR_UNSUPPORTED;
        out->algo = AEGIS_KEY_P256;
    } else {
        return AEGIS_ERR_UNSUPPORTED;
    }
    out->pub = bits.val + 1;
    out->pub_len = bits.len - 1;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil construction). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *py, unsigned *pm, unsigned *pd)
{
    int64_t era, y;
    unsigned doe, yoe, doy, mp, d, m;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = (int64_t)yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    *py = y + (m <= 2);
    *pm = m;
    *pd = d;
}

static void put_digits(uint8_t *out, unsigned v, int n)
{
    while (n-- > 0) {
        out[n] = (uint8_t)('0' + v % 10);
        v /= 10;
    }
}

int aegis_pki_time_encode(int64_t t, uint8_t out[17], size_t *plen)
{
    int64_t days, secs, y;
    unsigned mo, d;
    size_t n = 0;

    if (t < AEGIS_PKI_TIME_MIN || t > AEGIS_PKI_TIME_MAX)
        return -EINVAL;
    days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    secs = t - days * 86400;
    civil_from_days(days, &y, &mo, &d);
    if (y < 2050) {
        out[n++] = DER_UTCTIME;
        out[n++] = 13;
        put_digits(out + n, (unsigned)(y % 100), 2);
        n += 2;
    } else {
        out[n++] = DER_GENERALIZEDTIME;
        out[n++] = 15;
        put_digits(out + n, (unsigned)y, 4);
        n += 4;
    }
    put_digits(out + n, mo, 2);
    put_digits(out + n + 2, d, 2);
    put_digits(out + n + 4, (unsigned)(secs / 3600), 2);
    put_digits(out + n + 6, (unsigned)(secs / 60 % 60), 2);
    put_digits(out + n + 8, (unsigned)(secs % 60), 2);
    n += 10;
    out[n++] = 'Z';
    *plen = n;
    return 0;
}

static int get_digits(const uint8_t *p, int n, unsigned *out)
{
    unsigned v = 0;
    int i;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    *out = v;
    return 0;
}

int aegis_pki_time_decode(const struct der_tlv *t, int64_t *out)
{
    const uint8_t *p = t->val;
    unsigned y, mo, d, h, mi, s;
    int64_t year;

    /* RFC 5280 §4.1.2.5.1/2: seconds present, always Zulu. */
    if (t->tag == DER_UTCTIME && t->len == 13) {
        if (get_digits(p, 2, &y))
            return AEGIS_ERR_MALFORMED;
        year = y >= 50 ? 1900 + y : 2000 + y;
        p += 2;
    } else if (t->tag == DER_GENERALIZEDTIME && t->len == 15) {
        if (get_digits(p, 4, &y))
            return AEGIS_ERR_MALFORMED;
        year = y;
        p += 4;
    } else {
        return AEGIS_ERR_MALFORMED;
    }
    if (get_digits(p, 2, &mo) || get_digits(p + 2, 2, &d) || get_digits(p + 4, 2, &h) ||
        get_digits(p + 6, 2, &mi) || get_digits(p + 8, 2, &s) || p[10] != 'Z')
        return AEGIS_ERR_MALFORMED;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
        return AEGIS_ERR_MALFORMED;
    *out = days_from_civil(year, mo, d) * 86400 + (int64_t)(h * 3600 + mi * 60 + s);
    return 0;
}

/* Reads the Extensions of a TBSCertificate (RFC 5280 §4.2). */
static int parse_extensions(const struct der_tlv *ctx3, struct pki_cert *c)
{
    struct der cur = {ctx3->val, ctx3->len}, exts;
    struct der_tlv seq;
    int rv;

    if ((rv = aegis_pki_der_expect(&cur, DER_SEQUENCE, &seq)) != 0 || cur.len != 0)
        return AEGIS_ERR_MALFORMED;
    exts = (struct der){seq.val, seq.len};
    while (exts.len > 0) {
        struct der_tlv ext, oid, val, b;
        struct der e, v;

        if ((rv = aegis_pki_der_expect(&exts, DER_SEQUENCE, &ext)) != 0)
            return rv;
        e = (struct der){ext.val, ext.len};
        if ((rv = aegis_pki_der_expect(&e, DER_OID, &oid)) != 0)
            return rv;
        if (e.len > 0 && e.p[0] == DER_BOOLEAN && (rv = aegis_pki_der_read(&e, &b)) != 0)
            return rv;
        if ((rv = aegis_pki_der_expect(&e, DER_OCTET_STRING, &val)) != 0 || e.len != 0)
            return AEGIS_ERR_MALFORMED;
        v = (struct der){val.val, val.len};
        if (aegis_pki_bytes_eq(oid.val, oid.len, oid_ext_bc, sizeof(oid_ext_bc))) {
            struct der_tlv bc, ca;
            struct der in;
            if ((rv = aegis_pki_der_expect(&v, DER_SEQUENCE, &bc)) != 0)
                return rv;
            in = (struct der){bc.val, bc.len};
            if (in.len > 0 && in.p[0] == DER_BOOLEAN) {
                if ((rv = aegis_pki_der_read(&in, &ca)) != 0 || ca.len != 1)
                    return AEGIS_ERR_MALFORMED;
                c->is_ca = ca.val[0] != 0;
            }
        } else if (aegis_pki_bytes_eq(oid.val, oid.len, oid_ext_skid, sizeof(oid_ext_skid))) {
            struct der_tlv kid;
            if ((rv = aegis_pki_der_expect(&v, DER_OCTET_STRING, &kid)) != 0)
                return rv;
            c->skid = kid.val;
            c->skid_len = kid.len;
        } else if (aegis_pki_bytes_eq(oid.val, oid.len, oid_ext_san, sizeof(oid_ext_san))) {
            struct der_tlv names;
            if ((rv = aegis_pki_der_expect(&v, DER_SEQUENCE, &names)) != 0)
                return rv;
            c->san = names.val;
            c->san_len = names.len;
        }
    }
    return 0;
}

int aegis_pki_cert_parse(const uint8_t *der, size_t len, struct pki_cert *c)
{
    struct der cur = {der, len}, outer, tbs, val;
    struct der_tlv cert, t, sigalg, sigoid, sigbits, nb, na;
    struct pki_spki spki;
    int rv;

    memset(c, 0, sizeof(*c));
    if (len > AEGIS_PKI_MAX_DER)
        return AEGIS_ERR_MALFORMED;
    /* Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm,
     * signatureValue } (RFC 5280 §4.1) */
    if (aegis_pki_der_expect(&cur, DER_SEQUENCE, &cert) != 0 || cur.len != 0)
        return AEGIS_ERR_MALFORMED;
    outer = (struct der){cert.val, cert.len};
    if (aegis_pki_der_expect(&outer, DER_SEQUENCE, &t) != 0)
        return AEGIS_ERR_MALFORMED;
    c->tbs = t.all;
    c->tbs_len = t.all_len;
    tbs = (struct der){t.val, t.len};
    if (aegis_pki_der_expect(&outer, DER_SEQUENCE, &sigalg) != 0 ||
        aegis_pki_der_expect(&outer, DER_BIT_STRING, &sigbits) != 0 || outer.len != 0)
        return AEGIS_ERR_MALFORMED;
    val = (struct der){sigalg.val, sigalg.len};
    if (aegis_pki_der_expect(&val, DER_OID, &sigoid) != 0)
        return AEGIS_ERR_MALFORMED;
    c->sig_oid = sigoid.val;
    c->sig_oid_len = sigoid.len;
    if (sigbits.len < 1 || sigbits.val[0] != 0)
        return AEGIS_ERR_MALFORMED;
    c->sig = sigbits.val + 1;
    c->sig_len = sigbits.len - 1;

    /* version [0] EXPLICIT (optional), serialNumber, signature */
    if (tbs.len > 0 && tbs.p[0] == DER_CTX(0) && aegis_pki_der_read(&tbs, &t) != 0)
        return AEGIS_ERR_MALFORMED;
    if (aegis_pki_der_expect(&tbs, DER_INTEGER, &t) != 0 ||
        aegis_pki_der_expect(&tbs, DER_SEQUENCE, &t) != 0)
        return AEGIS_ERR_MALFORMED;
    /* issuer, validity, subject, subjectPublicKeyInfo */
    if (aegis_pki_der_expect(&tbs, DER_SEQUENCE, &t) != 0)
        return AEGIS_ERR_MALFORMED;
    c->issuer = t.all;
    c->issuer_len = t.all_len;
    if (aegis_pki_der_expect(&tbs, DER_SEQUENCE, &t) != 0)
        return AEGIS_ERR_MALFORMED;
    val = (struct der){t.val, t.len};
    if (aegis_pki_der_read(&val, &nb) != 0 || aegis_pki_der_read(&val, &na) != 0 || val.len != 0)
        return AEGIS_ERR_MALFORMED;
    if (aegis_pki_time_decode(&nb, &c->not_before) != 0 ||
        aegis_pki_time_decode(&na, &c->not_after) != 0)
        return AEGIS_ERR_MALFORMED;
    if (aegis_pki_der_expect(&tbs, DER_SEQUENCE, &t) != 0)
        return AEGIS_ERR_MALFORMED;
    c->subject = t.all;
    c->subject_len = t.all_len;
    if (aegis_pki_der_expect(&tbs, DER_SEQUENCE, &t) != 0)
        return AEGIS_ERR_MALFORMED;
    c->spki = t.all;
    c->spki_len = t.all_len;
    /* The SPKI must at least be well-formed; an unsupported algorithm is
     * still a readable certificate. */
    rv = aegis_pki_spki_parse(c->spki, c->spki_len, &spki);
    if (rv == AEGIS_ERR_MALFORMED)
        return rv;
    /* issuerUniqueID [1], subjectUniqueID [2], extensions [3] */
    while (tbs.len > 0) {
        if (aegis_pki_der_read(&tbs, &t) != 0)
            return AEGIS_ERR_MALFORMED;
        if (t.tag == DER_CTX(3)) {
            if ((rv = parse_extensions(&t, c)) != 0)
                return rv;
        } else if (t.tag != DER_CTX_P(1) && t.tag != DER_CTX_P(2)) {
            return AEGIS_ERR_MALFORMED;
        }
    }
    return 0;
}

int aegis_pki_name_attr(const uint8_t *name, size_t len, uint8_t attr, char *out, size_t cap)
{
    struct der cur = {name, len}, rdns;
    struct der_tlv seq;

    if (cap == 0)
        return -EINVAL;
    out[0] = '\0';
    if (aegis_pki_der_expect(&cur, DER_SEQUENCE, &seq) != 0)
        return AEGIS_ERR_MALFORMED;
    rdns = (struct der){seq.val, seq.len};
    while (rdns.len > 0) {
        struct der_tlv set;
        struct der atvs;

        if (aegis_pki_der_expect(&rdns, DER_SET, &set) != 0)
            return AEGIS_ERR_MALFORMED;
        atvs = (struct der){set.val, set.len};
        while (atvs.len > 0) {
            struct der_tlv atv, oid, v;
            struct der a;

            if (aegis_pki_der_expect(&atvs, DER_SEQUENCE, &atv) != 0)
                return AEGIS_ERR_MALFORMED;
            a = (struct der){atv.val, atv.len};
            if (aegis_pki_der_expect(&a, DER_OID, &oid) != 0 || aegis_pki_der_read(&a, &v) != 0)
                return AEGIS_ERR_MALFORMED;
            if (oid.len == 3 && oid.val[0] == OID_ATTR_PREFIX0 && oid.val[1] == OID_ATTR_PREFIX1 &&
                oid.val[2] == attr) {
                if (v.len >= cap || memchr(v.val, 0, v.len) != NULL)
                    return AEGIS_ERR_MALFORMED;
                memcpy(out, v.val, v.len);
                out[v.len] = '\0';
                return 0;
            }
        }
    }
    return 0;
}

static void put_atv(struct dbuf *b, uint8_t attr, const char *value)
{
    uint8_t in_buf[128], atv_buf[132];
    uint8_t oid[3] = {OID_ATTR_PREFIX0, OID_ATTR_PREFIX1, attr};
    struct dbuf in = {in_buf, sizeof(in_buf), 0, 0}, atv = {atv_buf, sizeof(atv_buf), 0, 0};

    /* RelativeDistinguishedName ::= SET OF AttributeTypeAndValue, each a
     * SEQUENCE { type, value } (RFC 5280 §4.1.2.4). */
    aegis_pki_dbuf_put(&in, DER_OID, oid, sizeof(oid));
    aegis_pki_dbuf_put(&in, DER_UTF8STRING, value, strlen(value));
    if (in.err) {
        b->err = in.err;
        return;
    }
    aegis_pki_dbuf_put(&atv, DER_SEQUENCE, in.p, in.len);
    if (atv.err) {
        b->err = atv.err;
        return;
    }
    aegis_pki_dbuf_put(b, DER_SET, atv.p, atv.len);
}

int aegis_pki_name_encode(const char *ou, const char *cn, struct dbuf *b)
{
    uint8_t rdns[400];
    struct dbuf r = {rdns, sizeof(rdns), 0, 0};

    /* Most significant first, as in every X.500 name: OU then CN. */
    if (ou && ou[0])
        put_atv(&r, ATTR_OU, ou);
    put_atv(&r, ATTR_CN, cn);
    if (r.err)
        return r.err;
    aegis_pki_dbuf_put(b, DER_SEQUENCE, r.p, r.len);
    return b->err;
}

size_t aegis_pki_b64_encode(const uint8_t *in, size_t len, char *out)
{
    /* Callers size out for the padded encoding and its NUL. */
    return aegis_base64_encode(in, len, AEGIS_BASE64_PAD, out,
                               aegis_base64_encoded_len(len, AEGIS_BASE64_PAD) + 1);
}

int aegis_pki_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *plen)
{
    /* PEM bodies wrap lines; pins and PEM must be canonical. */
    long n = aegis_base64_decode(in, len, AEGIS_BASE64_SKIP_SPACE | AEGIS_BASE64_STRICT, out, cap);
    if (n < 0)
        return (int)n;
    *plen = (size_t)n;
    return 0;
}

static const char *find_str(const char *hay, size_t len, const char *needle)
{
    size_t nl = strlen(needle);

    if (nl > len)
        return NULL;
    return memmem(hay, len, needle, nl);
}

int aegis_pki_pem_decode(const struct aegis_mem *mem, const char *pem, size_t len,
                         const char *label, char found[32], uint8_t **pder, size_t *plen)
{
    static const char begin[] = "-----BEGIN ", dashes[] = "-----";
    const char *p = pem, *end = pem + len, *lab, *body, *stop;
    char endline[64];
    size_t lablen, cap, n = 0;
    uint8_t *der;
    int rv;

    if (!pem || !pder || !plen)
        return -EINVAL;
    if (len > AEGIS_PKI_MAX_PEM)
        return AEGIS_ERR_TOO_LARGE;
    for (;;) {
        const char *b = find_str(p, (size_t)(end - p), begin), *e;
        if (!b)
            return AEGIS_ERR_NOT_FOUND;
        lab = b + sizeof(begin) - 1;
        e = find_str(lab, (size_t)(end - lab), dashes);
        if (!e)
            return AEGIS_ERR_MALFORMED;
        lablen = (size_t)(e - lab);
        if (lablen == 0 || lablen >= 32 || memchr(lab, '\n', lablen))
            return AEGIS_ERR_MALFORMED;
        p = e + sizeof(dashes) - 1;
        if (!label || (strlen(label) == lablen && memcmp(label, lab, lablen) == 0))
            break;
    }
    body = p;
    snprintf(endline, sizeof(endline), "-----END %.*s-----", (int)lablen, lab);
    stop = find_str(body, (size_t)(end - body), endline);
    if (!stop)
        return AEGIS_ERR_MALFORMED;
    cap = (size_t)(stop - body) / 4 * 3 + 3;
    if (cap > AEGIS_PKI_MAX_DER)
        return AEGIS_ERR_TOO_LARGE;
    der = aegis_malloc(mem, cap);
    if (!der)
        return -ENOMEM;
    rv = aegis_pki_b64_decode(body, (size_t)(stop - body), der, cap, &n);
    if (rv == 0 && n == 0)
        rv = AEGIS_ERR_MALFORMED;
    if (rv != 0) {
        explicit_bzero(der, cap);
        aegis_free(mem, der);
        return rv == AEGIS_ERR_TOO_LARGE ? AEGIS_ERR_MALFORMED : rv;
    }
    if (found) {
        memcpy(found, lab, lablen);
        found[lablen] = '\0';
    }
    *pder = der;
    *plen = n;
    return 0;
}

int aegis_pki_pem_encode(const struct aegis_mem *mem, const char *label, const uint8_t *der,
                         size_t len, char **ppem, size_t *plen)
{
    size_t b64len = (len + 2) / 3 * 4, lines = (b64len + 63) / 64, cap, n, i;
    char *out, *b64;

    if (len == 0 || len > AEGIS_PKI_MAX_DER)
        return -EINVAL;
    cap = 2 * (strlen(label) + 16) + b64len + lines + 1;
    out = aegis_malloc(mem, cap);
    b64 = aegis_malloc(mem, b64len + 1);
    if (!out || !b64) {
        aegis_free(mem, out);
        aegis_free(mem, b64);
        return -ENOMEM;
    }
    aegis_pki_b64_encode(der, len, b64);
    n = (size_t)snprintf(out, cap, "-----BEGIN %s-----\n", label);
    for (i = 0; i < b64len; i += 64) {
        size_t chunk = b64len - i < 64 ? b64len - i : 64;
        memcpy(out + n, b64 + i, chunk);
        n += chunk;
        out[n++] = '\n';
    }
    n += (size_t)snprintf(out + n, cap - n, "-----END %s-----\n", label);
    /* The base64 of a private key is as secret as the key. */
    explicit_bzero(b64, b64len + 1);
    aegis_free(mem, b64);
    *ppem = out;
    *plen = n;
    return 0;
}

static int dns_name_ok(const char *s)
{
    size_t n = strlen(s), i, label = 0;

    if (n == 0 || n > AEGIS_PKI_MAX_DNS_LEN)
        return 0;
    /* A leading "*." wildcard label is allowed (RFC 6125 §6.4.3). */
    i = (n > 2 && s[0] == '*' && s[1] == '.') ? 2 : 0;
    for (; i < n; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-'))
            return 0;
        /* RFC 1035 §2.3.4: labels of 1..63 characters, no leading hyphen. */
        if ((label == 0 && ch == '-') || ++label > 63)
            return 0;
    }
    return label > 0 && s[n - 1] != '-';
}

int aegis_pki_san_encode(const struct aegis_cert_spec *spec, struct dbuf *b)
{
    /* Worst case: every name at its maximum length plus a 4-byte header. */
    uint8_t buf[(AEGIS_PKI_MAX_DNS_LEN + 4) * AEGIS_PKI_MAX_SANS];
    struct dbuf names = {buf, sizeof(buf), 0, 0};
    size_t i;

    if (spec->n_dns + spec->n_ips > AEGIS_PKI_MAX_SANS)
        return -EINVAL;
    /* GeneralName: dNSName [2] IA5String, iPAddress [7] OCTET STRING
     * (RFC 5280 §4.2.1.6). */
    for (i = 0; i < spec->n_dns; i++) {
        const char *d = spec->dns_names ? spec->dns_names[i] : NULL;
        if (!d || !dns_name_ok(d))
            return -EINVAL;
        aegis_pki_dbuf_put(&names, DER_CTX_P(2), d, strlen(d));
    }
    for (i = 0; i < spec->n_ips; i++) {
        const char *ip = spec->ips ? spec->ips[i] : NULL;
        uint8_t addr[16];
        if (!ip)
            return -EINVAL;
        if (inet_pton(AF_INET, ip, addr) == 1)
            aegis_pki_dbuf_put(&names, DER_CTX_P(7), addr, 4);
        else if (inet_pton(AF_INET6, ip, addr) == 1)
            aegis_pki_dbuf_put(&names, DER_CTX_P(7), addr, 16);
        else
            return -EINVAL;
    }
    if (names.err)
        return names.err;
    aegis_pki_dbuf_put(b, DER_SEQUENCE, names.p, names.len);
    return b->err;
}
