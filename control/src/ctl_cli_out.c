/*
 * aegisctl output: aligned tables for people, JSON (json-c) for scripts, and
 * progress bars. json-c is used only here.
 */
#include "ctl_cli.h"

#include <aegis/hex.h>
#include <aegis/tstamp.h>

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- tables --------------------------------------------------------------- */

struct ctl_table {
    size_t ncols;
    size_t nrows, caprows;
    char **cells; /* (nrows + 1) * ncols, row 0 = headers */
};

struct ctl_table *ctl_table_new(size_t ncols, const char *const *headers)
{
    struct ctl_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ncols = ncols;
    t->caprows = 16;
    t->cells = calloc(t->caprows * ncols, sizeof(char *));
    if (!t->cells || ctl_table_add(t, headers) != 0) {
        ctl_table_del(t);
        return NULL;
    }
    return t;
}

int ctl_table_add(struct ctl_table *t, const char *const *cells)
{
    if (t->nrows == t->caprows) {
        size_t cap = t->caprows * 2;
        char **c = realloc(t->cells, cap * t->ncols * sizeof(char *));
        if (!c)
            return -ENOMEM;
        t->cells = c;
        t->caprows = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] && cells[i][0] ? cells[i] : "-");
        if (!row[i]) {
            for (size_t j = 0; j < i; j++)
                free(row[j]);
            return -ENOMEM;
        }
        /* one line per row: a newline or tab in a value would break alignment */
        for (char *p = row[i]; *p; p++) {
            if (*p == '\n' || *p == '\t' || *p == '\r')
                *p = ' ';
        }
    }
    t->nrows++;
    return 0;
}

size_t ctl_table_rows(const struct ctl_table *t)
{
    return t ? t->nrows - 1 : 0;
}

/* Display width in characters: UTF-8 continuation bytes do not count. */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

void ctl_table_print(const struct ctl_table *t, FILE *f)
{
    size_t *w = calloc(t->ncols, sizeof(size_t));
    if (!w)
        return;
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            size_t cw = text_width(t->cells[r * t->ncols + c]);
            if (cw > w[c])
                w[c] = cw;
        }
    }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            fputs(cell, f);
            if (c + 1 < t->ncols) {
                for (size_t k = text_width(cell); k < w[c] + 2; k++)
                    fputc(' ', f);
            }
        }
        fputc('\n', f);
    }
    free(w);
}

void ctl_table_del(struct ctl_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

/* ---- enums ---------------------------------------------------------------- */

/* protobuf-c names enum values "AGENT_STATUS_ONLINE"; the type prefix is the
 * enum's short name in UPPER_SNAKE ("AgentStatus" -> "AGENT_STATUS_"). */
static size_t enum_prefix(const ProtobufCEnumDescriptor *desc, char *buf, size_t len)
{
    size_t n = 0;
    for (const char *p = desc->short_name; *p && n + 3 < len; p++) {
        if (isupper((unsigned char)*p) && p != desc->short_name)
            buf[n++] = '_';
        buf[n++] = (char)toupper((unsigned char)*p);
    }
    buf[n++] = '_';
    buf[n] = '\0';
    return n;
}

const char *ctl_enum_name(const ProtobufCEnumDescriptor *desc, int value, char *buf, size_t len)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(desc, value);
    if (!v) {
        snprintf(buf, len, "%d", value);
        return buf;
    }
    char pre[128];
    size_t pl = enum_prefix(desc, pre, sizeof(pre));
    const char *name = v->name;
    if (strncmp(name, pre, pl) == 0)
        name += pl;
    size_t i = 0;
    for (; name[i] && i + 1 < len; i++)
        buf[i] = (char)tolower((unsigned char)name[i]);
    buf[i] = '\0';
    return buf;
}

int ctl_enum_parse(const ProtobufCEnumDescriptor *desc, const char *name, int *pvalue)
{
    char buf[128];
    for (unsigned i = 0; i < desc->n_values; i++) {
        ctl_enum_name(desc, desc->values[i].value, buf, sizeof(buf));
        if (strcasecmp(buf, name) == 0) {
            *pvalue = desc->values[i].value;
            return 0;
        }
    }
    return -EINVAL;
}

/* ---- formatting ------------------------------------------------------------- */

const char *ctl_fmt_time(int64_t unix_ns, char *buf, size_t len)
{
    if (unix_ns <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    time_t s = (time_t)(unix_ns / 1000000000);
    struct tm tm;
    if (!gmtime_r(&s, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%lld", (long long)unix_ns);
    return buf;
}

const char *ctl_fmt_hex(const uint8_t *p, size_t n, char *buf, size_t len)
{
    /* Whole bytes only: a digest cut short never ends in half a byte. */
    size_t fit = len ? (len - 1) / 2 : 0;
    aegis_hex_encode(p, n < fit ? n : fit, buf, len);
    return buf;
}

const char *ctl_fmt_bytes(uint64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

const char *ctl_fmt_labels(const ProtobufCMessage *labels, char *buf, size_t len)
{
    buf[0] = '\0';
    if (!labels)
        return buf;
    /* Labels has one map field: repeated entries with key/value strings. */
    const ProtobufCFieldDescriptor *f = &labels->descriptor->fields[0];
    size_t n = *(const size_t *)((const char *)labels + f->quantifier_offset);
    ProtobufCMessage *const *e =
        *(ProtobufCMessage *const *const *)((const char *)labels + f->offset);
    size_t off = 0;
    for (size_t i = 0; i < n && off < len; i++) {
        const ProtobufCMessageDescriptor *d = e[i]->descriptor;
        const char *k = *(char *const *)((const char *)e[i] + d->fields[0].offset);
        const char *v = *(char *const *)((const char *)e[i] + d->fields[1].offset);
        int w = snprintf(buf + off, len - off, "%s%s=%s", i ? "," : "", k, v);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    return buf;
}

/* ---- protobuf -> JSON ------------------------------------------------------- */

static struct json_object *value_to_json(const ProtobufCFieldDescriptor *f, const void *p);

static struct json_object *bytes_to_json(const ProtobufCBinaryData *b)
{
    char *hex = malloc(b->len * 2 + 1);
    if (!hex)
        return NULL;
    ctl_fmt_hex(b->data, b->len, hex, b->len * 2 + 1);
    struct json_object *o = json_object_new_string(hex);
    free(hex);
    return o;
}

static int is_map_entry(const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED)
        return 0;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t nl = strlen(d->short_name);
    return nl > 5 && strcmp(d->short_name + nl - 5, "Entry") == 0 && d->n_fields == 2 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static struct json_object *value_to_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    char buf[128];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_object_new_int64(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_object_new_int64(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_object_new_int64(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_object_new_uint64(*(const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return json_object_new_double(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_object_new_double(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_object_new_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM:
        return json_object_new_string(
            ctl_enum_name(f->descriptor, *(const int *)p, buf, sizeof(buf)));
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_object_new_string(s ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES:
        return bytes_to_json((const ProtobufCBinaryData *)p);
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? ctl_pb_to_json(m) : NULL; /* NULL is JSON null */
    }
    }
    return NULL;
}

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    }
    return 0;
}

struct json_object *ctl_pb_to_json(const ProtobufCMessage *msg)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const char *base = (const char *)msg;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        struct json_object *v = NULL;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
            if (which != f->id)
                continue;
            v = value_to_json(f, base + f->offset);
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(const char *const *)(base + f->offset);
            if (is_map_entry(f)) {
                v = json_object_new_object();
                for (size_t k = 0; v && k < n; k++) {
                    const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[k];
                    const ProtobufCFieldDescriptor *kf = &e->descriptor->fields[0];
                    const ProtobufCFieldDescriptor *vf = &e->descriptor->fields[1];
                    const char *key = *(char *const *)((const char *)e + kf->offset);
                    json_object_object_add(v, key ? key : "",
                                           value_to_json(vf, (const char *)e + vf->offset));
                }
            } else {
                v = json_object_new_array();
                size_t es = elem_size(f);
                for (size_t k = 0; v && k < n; k++)
                    json_object_array_add(v, value_to_json(f, arr + k * es));
            }
        } else {
            v = value_to_json(f, base + f->offset);
        }
        json_object_object_add(o, f->name, v);
    }
    return o;
}

void ctl_json_print(FILE *f, struct json_object *obj, int compact)
{
    if (!obj) {
        fputs("null\n", f);
        return;
    }
    int flags =
        JSON_C_TO_STRING_NOSLASHESCAPE |
        (compact ? JSON_C_TO_STRING_PLAIN : JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
    fputs(json_object_to_json_string_ext(obj, flags), f);
    fputc('\n', f);
    fflush(f);
    json_object_put(obj);
}

/* ---- progress ----------------------------------------------------------------- */

/* Redraw a TTY bar at most this often: smooth to the eye, cheap on a slow
 * terminal. */
#define PROGRESS_REDRAW_NS (100ull * 1000000ull)
#define PROGRESS_WIDTH 30

void ctl_progress_start(struct ctl_progress *p, struct ctl_cli *cli, const char *label,
                        uint64_t total)
{
    memset(p, 0, sizeof(*p));
    p->cli = cli;
    p->label = label;
    p->total = total;
}

static void draw(struct ctl_progress *p, const char *suffix)
{
    FILE *f = p->cli->err;
    unsigned pct = p->total ? (unsigned)(p->done * 100 / p->total) : 100;
    if (pct > 100)
        pct = 100;
    if (p->cli->progress_tty) {
        char bar[PROGRESS_WIDTH + 1];
        size_t fill = (size_t)pct * PROGRESS_WIDTH / 100;
        for (size_t i = 0; i < PROGRESS_WIDTH; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[PROGRESS_WIDTH] = '\0';
        fprintf(f, "\r\033[K%s [%s] %3u%% %llu/%llu%s%s", p->label, bar, pct,
                (unsigned long long)p->done, (unsigned long long)p->total, suffix ? "  " : "",
                suffix ? suffix : "");
        p->drawn = 1;
    } else {
        fprintf(f, "%s: %llu/%llu (%u%%)%s%s\n", p->label, (unsigned long long)p->done,
                (unsigned long long)p->total, pct, suffix ? " " : "", suffix ? suffix : "");
    }
    fflush(f);
}

void ctl_progress_update(struct ctl_progress *p, uint64_t done, const char *suffix)
{
    p->done = done;
    if (p->cli->progress_tty) {
        uint64_t now = aegis_now();
        if (p->drawn && now - p->last_draw_ns < PROGRESS_REDRAW_NS && done < p->total)
            return;
        p->last_draw_ns = now;
        draw(p, suffix);
        return;
    }
    /* Plain lines: one per quarter reached, so logs stay short. */
    unsigned step = p->total ? (unsigned)(done * 4 / p->total) : 4;
    if (step > p->last_step || (!p->drawn && done == 0)) {
        p->last_step = step;
        p->drawn = 1;
        draw(p, suffix);
    }
}

void ctl_progress_finish(struct ctl_progress *p)
{
    if (p->cli->progress_tty && p->drawn) {
        fputc('\n', p->cli->err);
        fflush(p->cli->err);
    }
}
