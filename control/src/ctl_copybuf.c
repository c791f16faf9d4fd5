#include "ctl_copybuf.h"

#include <aegis/err.h>
#include <aegis/hex.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void ctl_copybuf_init(struct ctl_copybuf *b, const struct aegis_mem *mem, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->mem = mem;
    b->max = max ? max : CTL_COPYBUF_DEFAULT_MAX;
}

void ctl_copybuf_free(struct ctl_copybuf *b)
{
    aegis_free(b->mem, b->data);
    b->data = NULL;
    b->len = b->cap = b->rows = 0;
    b->fields = 0;
    b->err = 0;
}

void ctl_copybuf_reset(struct ctl_copybuf *b)
{
    b->len = 0;
    b->rows = 0;
    b->fields = 0;
    b->err = 0;
}

/* reserve makes room for n more bytes within max. */
static int reserve(struct ctl_copybuf *b, size_t n)
{
    size_t ncap;
    unsigned char *nd;

    if (b->err)
        return b->err;
    if (n > b->max - b->len)
        return b->err = AEGIS_ERR_TOO_LARGE;
    if (b->len + n <= b->cap)
        return 0;
    ncap = b->cap ? b->cap : 4096;
    while (ncap < b->len + n)
        ncap = ncap > b->max / 2 ? b->max : ncap * 2;
    nd = aegis_realloc(b->mem, b->data, ncap);
    if (!nd)
        return b->err = -ENOMEM;
    b->data = nd;
    b->cap = ncap;
    return 0;
}

static int sep(struct ctl_copybuf *b)
{
    int rv;

    if (b->fields == 0)
        return reserve(b, 0);
    if ((rv = reserve(b, 1)) != 0)
        return rv;
    b->data[b->len++] = '\t';
    return 0;
}

static int raw(struct ctl_copybuf *b, const char *s, size_t n)
{
    int rv;

    if ((rv = sep(b)) != 0 || (rv = reserve(b, n)) != 0)
        return rv;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->fields++;
    return 0;
}

int ctl_copybuf_text(struct ctl_copybuf *b, const char *s, size_t len)
{
    size_t i, extra = 0;
    unsigned char *o;
    int rv;

    if (!s && len)
        return -EINVAL;
    for (i = 0; i < len; i++) {
        if (s[i] == '\0')
            return b->err = AEGIS_ERR_MALFORMED;
        if (s[i] == '\\' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')
            extra++;
    }
    if (len > SIZE_MAX - extra)
        return b->err = AEGIS_ERR_TOO_LARGE;
    if ((rv = sep(b)) != 0 || (rv = reserve(b, len + extra)) != 0)
        return rv;
    o = b->data + b->len;
    for (i = 0; i < len; i++) {
        switch (s[i]) {
        case '\\':
            *o++ = '\\';
            *o++ = '\\';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\';
            *o++ = 'r';
            break;
        case '\t':
            *o++ = '\\';
            *o++ = 't';
            break;
        default:
            *o++ = (unsigned char)s[i];
        }
    }
    b->len += len + extra;
    b->fields++;
    return 0;
}

int ctl_copybuf_cstr(struct ctl_copybuf *b, const char *s)
{
    return s ? ctl_copybuf_text(b, s, strlen(s)) : ctl_copybuf_null(b);
}

int ctl_copybuf_null(struct ctl_copybuf *b)
{
    return raw(b, "\\N", 2);
}

int ctl_copybuf_int(struct ctl_copybuf *b, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

    return raw(b, tmp, (size_t)n);
}

int ctl_copybuf_double(struct ctl_copybuf *b, double v)
{
    char tmp[32];
    int n;

    /* float8in spells the special values this way. */
    if (isnan(v))
        return raw(b, "NaN", 3);
    if (isinf(v))
        return v > 0 ? raw(b, "Infinity", 8) : raw(b, "-Infinity", 9);
    /* 17 significant digits round-trip every double. */
    n = snprintf(tmp, sizeof(tmp), "%.17g", v);
    return raw(b, tmp, (size_t)n);
}

int ctl_copybuf_bytea(struct ctl_copybuf *b, const void *p, size_t len)
{
    unsigned char *o;
    int rv;

    if (!p && len)
        return -EINVAL;
    if (len > (SIZE_MAX - 4) / 2)
        return b->err = AEGIS_ERR_TOO_LARGE;
    /* bytea hex input is \x...; COPY text needs that backslash doubled. One byte more for the
     * NUL aegis_hex_encode writes (not counted in len). */
    if ((rv = sep(b)) != 0 || (rv = reserve(b, 4 + 2 * len)) != 0)
        return rv;
    o = b->data + b->len;
    *o++ = '\\';
    *o++ = '\\';
    *o++ = 'x';
    aegis_hex_encode(p, len, (char *)o, 2 * len + 1);
    b->len += 3 + 2 * len;
    b->fields++;
    return 0;
}

int ctl_copybuf_timestamp(struct ctl_copybuf *b, aegis_tstamp wall_ns)
{
    time_t secs = (time_t)(wall_ns / AEGIS_NS_PER_S);
    unsigned long usec = (unsigned long)((wall_ns % AEGIS_NS_PER_S) / AEGIS_NS_PER_US);
    struct tm tm;
    char tmp[48];
    int n;

    if (!gmtime_r(&secs, &tm))
        return b->err = AEGIS_ERR_MALFORMED;
    n = snprintf(tmp, sizeof(tmp), "%04d-%02d-%02d %02d:%02d:%02d.%06lu+00", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, usec);
    return raw(b, tmp, (size_t)n);
}

int ctl_copybuf_end_row(struct ctl_copybuf *b)
{
    int rv;

    if (b->err)
        return b->err;
    if (b->fields == 0)
        return -EINVAL;
    if ((rv = reserve(b, 1)) != 0)
        return rv;
    b->data[b->len++] = '\n';
    b->rows++;
    b->fields = 0;
    return 0;
}
