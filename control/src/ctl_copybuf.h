/*
 * ctl_copybuf: builds PostgreSQL COPY ... FROM STDIN data in text format (PostgreSQL docs,
 * "COPY", File Formats / Text Format): fields separated by tabs, rows by newlines, \N for
 * NULL, and backslash escapes for backslash, newline, carriage return and tab. Pure; bounded
 * by a byte cap so one telemetry batch cannot grow without limit.
 */
#ifndef CTL_COPYBUF_H
#define CTL_COPYBUF_H

#include <aegis/mem.h>
#include <aegis/tstamp.h>

#include <stddef.h>
#include <stdint.h>

/* Default cap: one RPC message is at most 4 MiB (DESIGN §8); escaping can double text, and a
 * batch of such messages is loaded at once. */
#define CTL_COPYBUF_DEFAULT_MAX (64u * 1024u * 1024u)

struct ctl_copybuf {
    const struct aegis_mem *mem;
    unsigned char *data;
    size_t len;
    size_t cap;
    size_t max;  /* hard cap on len */
    size_t rows; /* complete rows */
    int fields;  /* fields in the current row */
    int err;     /* first error; sticky until reset */
};

/* ctl_copybuf_init prepares b (allocates nothing); max 0 = CTL_COPYBUF_DEFAULT_MAX. */
void ctl_copybuf_init(struct ctl_copybuf *b, const struct aegis_mem *mem, size_t max);
/* ctl_copybuf_free releases the buffer; b can be re-initialized. */
void ctl_copybuf_free(struct ctl_copybuf *b);
/* ctl_copybuf_reset empties b (keeps the allocation) and clears the error. */
void ctl_copybuf_reset(struct ctl_copybuf *b);

/*
 * Field appenders. Each returns 0 or the buffer's sticky error: AEGIS_ERR_TOO_LARGE (the row
 * would pass max), AEGIS_ERR_MALFORMED (a NUL byte in text, which PostgreSQL text cannot
 * hold), -ENOMEM. After an error the buffer must be reset before reuse.
 */
int ctl_copybuf_text(struct ctl_copybuf *b, const char *s, size_t len);
int ctl_copybuf_cstr(struct ctl_copybuf *b, const char *s); /* NULL = SQL NULL */
int ctl_copybuf_null(struct ctl_copybuf *b);
int ctl_copybuf_int(struct ctl_copybuf *b, int64_t v);
int ctl_copybuf_double(struct ctl_copybuf *b, double v);
/* ctl_copybuf_bytea writes bytea hex input ("\x0aff"), escaped for COPY. */
int ctl_copybuf_bytea(struct ctl_copybuf *b, const void *p, size_t len);
/* ctl_copybuf_timestamp writes wall-clock ns since the epoch as a UTC timestamptz with
 * microseconds (PostgreSQL's precision). */
int ctl_copybuf_timestamp(struct ctl_copybuf *b, aegis_tstamp wall_ns);
/* ctl_copybuf_end_row terminates the row. A row with no field is refused (-EINVAL). */
int ctl_copybuf_end_row(struct ctl_copybuf *b);

#endif
