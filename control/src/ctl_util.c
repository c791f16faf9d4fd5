/*
 * Small pure helpers of aegis-control: ids, fixed-size hex, versions, label text. Randomness
 * from getrandom(2); hashing and key ids are aegis_pki's (aegis/pki.h).
 */
#include "ctl_server.h"

#include <aegis/err.h>
#include <aegis/hex.h>

#include <aegis/v1/common.pb-c.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int ctl_random(void *buf, size_t len)
{
    uint8_t *p = buf;
    size_t got = 0;
    for (int tries = 0; got < len && tries < 100; tries++) {
        ssize_t n = getrandom(p + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return got == len ? 0 : -EIO;
}

void ctl_hex(const uint8_t *p, size_t len, char *out)
{
    aegis_hex_encode(p, len, out, 2 * len + 1);
}

int ctl_unhex(const char *s, uint8_t *out, size_t outlen)
{
    size_t n = strlen(s);
    if (n != 2 * outlen || aegis_hex_decode(s, n, out, outlen) != (long)outlen)
        return AEGIS_ERR_MALFORMED;
    return 0;
}

void ctl_uuid(char out[37])
{
    uint8_t b[16];
    if (ctl_random(b, sizeof(b)) != 0) {
        /* getrandom on Linux >= 3.17 does not fail for 16 bytes; keep ids unique anyway. */
        uint64_t t = aegis_wallclock() ^ ((uint64_t)getpid() << 32);
        memcpy(b, &t, 8);
        t = aegis_now();
        memcpy(b + 8, &t, 8);
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* RFC 9562 §5.4: version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10 */
    char h[33];
    ctl_hex(b, 16, h);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

int ctl_uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

int ctl_ed25519_raw(const uint8_t *spki, size_t len, uint8_t out[32])
{
    /* RFC 8410 §4: SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (0 unused) key }. */
    static const uint8_t prefix[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                       0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
    if (len != 44 || memcmp(spki, prefix, sizeof(prefix)) != 0)
        return AEGIS_ERR_UNSUPPORTED;
    memcpy(out, spki + 12, 32);
    return 0;
}

void ctl_rfc3339(aegis_tstamp wall_ns, char out[32])
{
    time_t t = (time_t)(wall_ns / AEGIS_NS_PER_S);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int ctl_version_cmp(const char *a, const char *b)
{
    /* Dotted numbers, compared field by field; a missing field counts as 0 ("1.2" == "1.2.0").
     * Anything after a '-' or '+' (pre-release, build) is ignored. */
    for (int i = 0; i < 8; i++) {
        unsigned long long x = 0, y = 0;
        int ha = *a && *a != '-' && *a != '+', hb = *b && *b != '-' && *b != '+';
        if (!ha && !hb)
            return 0;
        if (ha) {
            if (!isdigit((unsigned char)*a))
                return -2;
            char *end;
            x = strtoull(a, &end, 10);
            a = end;
            if (*a == '.')
                a++;
            else if (*a && *a != '-' && *a != '+')
                return -2;
        }
        if (hb) {
            if (!isdigit((unsigned char)*b))
                return -2;
            char *end;
            y = strtoull(b, &end, 10);
            b = end;
            if (*b == '.')
                b++;
            else if (*b && *b != '-' && *b != '+')
                return -2;
        }
        if (x != y)
            return x < y ? -1 : 1;
    }
    return -2;
}

int ctl_read_file(const struct aegis_mem *mem, const char *path, size_t max, char **pbuf,
                  size_t *plen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        return AEGIS_ERR_TOO_LARGE;
    }
    size_t sz = (size_t)st.st_size;
    char *buf = aegis_malloc(mem, sz + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < sz) {
        ssize_t n = read(fd, buf + got, sz - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *pbuf = buf;
    *plen = got;
    return 0;
}

int ctl_json_str(const char *json, const char *key, char *out, size_t outlen)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = strstr(json, pat);
    if (!p)
        return -ENOENT;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p++ != ':')
        return -ENOENT;
    while (*p == ' ')
        p++;
    if (*p != '"') { /* null or a number */
        size_t n = 0;
        while (p[n] && p[n] != ',' && p[n] != '}' && p[n] != ' ' && n + 1 < outlen)
            n++;
        memcpy(out, p, n);
        out[n] = '\0';
        return 0;
    }
    p++;
    size_t n = 0;
    while (p[n] && p[n] != '"' && n + 1 < outlen)
        n++;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

static int label_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == ',' || s[i] == '=')
            return 0;
    return 1;
}

int ctl_labels_text(const char *const *keys, const char *const *values, size_t n, char *out,
                    size_t outlen)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!label_ok(keys[i], 63) || (values[i][0] && !label_ok(values[i], 255)))
            return AEGIS_ERR_MALFORMED;
        int w = snprintf(out + o, outlen - o, "%s%s\x1f%s", i ? "\x1e" : "", keys[i], values[i]);
        if (w < 0 || (size_t)w >= outlen - o)
            return AEGIS_ERR_TOO_LARGE;
        o += (size_t)w;
    }
    return 0;
}

int ctl_selector_json(const char *sel, char *out, size_t outlen)
{
    /* "env=prod,role=db" -> {"env":"prod","role":"db"}; names/values without quotes, commas,
     * equals signs, backslashes or control characters (a selector is not a query language). */
    size_t o = 0;
    out[0] = '\0';
    if (!sel || !*sel)
        return 0;
    if (outlen < 3)
        return AEGIS_ERR_TOO_LARGE;
    out[o++] = '{';
    const char *p = sel;
    int first = 1;
    while (*p) {
        const char *eq = strchr(p, '=');
        const char *comma = strchr(p, ',');
        if (!comma)
            comma = p + strlen(p);
        if (!eq || eq > comma || eq == p || eq + 1 == comma)
            return AEGIS_ERR_MALFORMED;
        for (const char *q = p; q < comma; q++) {
            if ((unsigned char)*q < 0x20 || *q == '"' || *q == '\\')
                return AEGIS_ERR_MALFORMED;
            if (q != eq && *q == '=')
                return AEGIS_ERR_MALFORMED;
        }
        if ((size_t)(eq - p) > 63 || (size_t)(comma - eq - 1) > 255)
            return AEGIS_ERR_MALFORMED;
        int w = snprintf(out + o, outlen - o, "%s\"%.*s\":\"%.*s\"", first ? "" : ",",
                         (int)(eq - p), p, (int)(comma - eq - 1), eq + 1);
        if (w < 0 || (size_t)w >= outlen - o)
            return AEGIS_ERR_TOO_LARGE;
        o += (size_t)w;
        first = 0;
        p = *comma ? comma + 1 : comma;
        if (*comma && !*p)
            return AEGIS_ERR_MALFORMED; /* trailing comma */
    }
    if (o + 2 > outlen)
        return AEGIS_ERR_TOO_LARGE;
    out[o++] = '}';
    out[o] = '\0';
    return 0;
}

int64_t ctl_i64(const char *s)
{
    return s && *s ? strtoll(s, NULL, 10) : 0;
}

struct labels_arena {
    Aegis__V1__Labels labels;
    Aegis__V1__Labels__EntriesEntry *ents;
    Aegis__V1__Labels__EntriesEntry **ptrs;
    char *text;
};

int ctl_labels_from_text(const struct aegis_mem *mem, const char *text, struct ctl_labels *out)
{
    struct labels_arena *a = aegis_calloc(mem, 1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    aegis__v1__labels__init(&a->labels);
    size_t n = 0;
    if (*text) {
        n = 1;
        for (const char *p = text; *p; p++)
            n += *p == '\x1e';
    }
    a->text = aegis_memdup(mem, text, strlen(text) + 1);
    a->ents = aegis_calloc(mem, n ? n : 1, sizeof(*a->ents));
    a->ptrs = aegis_calloc(mem, n ? n : 1, sizeof(*a->ptrs));
    if (!a->text || !a->ents || !a->ptrs) {
        out->arena = a;
        ctl_labels_free(mem, out);
        return -ENOMEM;
    }
    char *p = a->text;
    size_t i = 0;
    while (n && i < n) {
        char *rec_end = strchr(p, '\x1e');
        if (rec_end)
            *rec_end = '\0';
        char *sep = strchr(p, '\x1f');
        aegis__v1__labels__entries_entry__init(&a->ents[i]);
        if (sep) {
            *sep = '\0';
            a->ents[i].value = sep + 1;
        }
        a->ents[i].key = p;
        a->ptrs[i] = &a->ents[i];
        i++;
        if (!rec_end)
            break;
        p = rec_end + 1;
    }
    a->labels.n_entries = i;
    a->labels.entries = a->ptrs;
    out->arena = a;
    out->msg = &a->labels;
    return 0;
}

void ctl_labels_free(const struct aegis_mem *mem, struct ctl_labels *l)
{
    struct labels_arena *a = l->arena;
    if (!a)
        return;
    aegis_free(mem, a->text);
    aegis_free(mem, a->ents);
    aegis_free(mem, a->ptrs);
    aegis_free(mem, a);
    l->arena = NULL;
    l->msg = NULL;
}

/* ---- the hash map ---- */

static uint64_t map_hash(const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int map_grow(struct ctl_map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    struct ctl_map_entry *ns = aegis_calloc(m->mem, ncap, sizeof(*ns));
    if (!ns)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct ctl_map_entry *e = &m->slots[i];
        if (!e->keylen || e->tomb)
            continue;
        size_t j = map_hash(e->key, e->keylen) & (ncap - 1);
        while (ns[j].keylen)
            j = (j + 1) & (ncap - 1);
        ns[j] = *e;
    }
    aegis_free(m->mem, m->slots);
    m->slots = ns;
    m->cap = ncap;
    m->used = m->count;
    return 0;
}

struct ctl_map_entry *ctl_map_get(const struct ctl_map *m, const void *key, size_t keylen)
{
    if (!m->cap)
        return NULL;
    size_t j = map_hash(key, keylen) & (m->cap - 1);
    for (size_t n = 0; n < m->cap && m->slots[j].keylen; n++) {
        struct ctl_map_entry *e = &m->slots[j];
        if (!e->tomb && e->keylen == keylen && memcmp(e->key, key, keylen) == 0)
            return e;
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

int ctl_map_put(struct ctl_map *m, const void *key, size_t keylen, struct ctl_map_entry **pe)
{
    if (keylen == 0 || keylen > sizeof(m->slots[0].key))
        return -EINVAL;
    struct ctl_map_entry *e = ctl_map_get(m, key, keylen);
    if (e) {
        *pe = e;
        return 0;
    }
    if ((m->used + 1) * 4 >= m->cap * 3) {
        int rv = map_grow(m);
        if (rv != 0)
            return rv;
    }
    size_t j = map_hash(key, keylen) & (m->cap - 1);
    while (m->slots[j].keylen && !m->slots[j].tomb)
        j = (j + 1) & (m->cap - 1);
    e = &m->slots[j];
    if (!e->keylen)
        m->used++;
    memset(e, 0, sizeof(*e));
    memcpy(e->key, key, keylen);
    e->keylen = (uint8_t)keylen;
    m->count++;
    *pe = e;
    return 0;
}

void ctl_map_del(struct ctl_map *m, const void *key, size_t keylen)
{
    struct ctl_map_entry *e = ctl_map_get(m, key, keylen);
    if (e) {
        e->tomb = 1;
        e->value = NULL;
        m->count--;
    }
}

void ctl_map_free(struct ctl_map *m)
{
    aegis_free(m->mem, m->slots);
    m->slots = NULL;
    m->cap = m->count = m->used = 0;
}

long ctl_json_escape(const char *s, char *out, size_t off, size_t cap)
{
    if (off + 2 >= cap)
        return AEGIS_ERR_TOO_LARGE;
    out[off++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (off + 8 >= cap)
            return AEGIS_ERR_TOO_LARGE;
        if (*p == '"' || *p == '\\') {
            out[off++] = '\\';
            out[off++] = (char)*p;
        } else if (*p < 0x20) {
            off += (size_t)snprintf(out + off, cap - off, "\\u%04x", *p);
        } else {
            out[off++] = (char)*p;
        }
    }
    out[off++] = '"';
    out[off] = '\0';
    return (long)off;
}
