/*
 * ctl_batch: items collected per loop turn, run as one statement with array parameters
 * (see ctl_batch.h for the contract).
 *
 * The arrays are PostgreSQL array literals built as items arrive ({"a","b",NULL}), so adding
 * an item costs a copy of its values and no allocation once the buffers have grown; the
 * statement copies them once more into its request (ctl_db_exec_params).
 */
#include "ctl_batch.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct item {
    ctl_batch_cb cb;
    void *user_data;
};

struct colbuf {
    char *p;
    size_t len, cap;
};

struct stmt {
    struct ctl_batch *b; /* NULL once the batch is gone (in flight at ctl_batch_del) */
    const struct aegis_mem *mem;
    struct stmt *next;
    struct stmt *fprev, *fnext; /* b->flight, while running */
    struct item *items;
    size_t n, cap;
    size_t bytes;
    int closed; /* arrays terminated with '}' */
    int retries;
    struct colbuf cols[CTL_BATCH_MAX_COLS];
};

struct ctl_batch {
    struct ctl_db *db;
    const struct aegis_mem *mem;
    struct ctl_timer *kick;
    char *sql;
    int ncols;
    int binary;
    size_t max_items, queue_max, bytes_max;
    unsigned max_in_flight;
    struct stmt *cur;                     /* collecting */
    struct stmt *ready_head, *ready_tail; /* full or closed, not yet sent */
    struct stmt *flight;                  /* running */
    size_t waiting, waiting_bytes;
    struct ctl_batch_stats st;
};

static void stmt_free(struct stmt *s)
{
    if (!s)
        return;
    for (int i = 0; i < CTL_BATCH_MAX_COLS; i++)
        aegis_free(s->mem, s->cols[i].p);
    aegis_free(s->mem, s->items);
    aegis_free(s->mem, s);
}

/* fail_items calls every item of s with rv (items with a NULL callback are skipped). */
static void fail_items(struct stmt *s, int rv, const struct ctl_db_result *res)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i].cb)
            s->items[i].cb(rv, res, 0, 0, s->items[i].user_data);
}

static int col_reserve(const struct aegis_mem *mem, struct colbuf *c, size_t more)
{
    if (c->len + more <= c->cap)
        return 0;
    size_t ncap = c->cap ? c->cap : 256;
    while (ncap < c->len + more)
        ncap *= 2;
    char *p = aegis_realloc(mem, c->p, ncap);
    if (!p)
        return -ENOMEM;
    c->p = p;
    c->cap = ncap;
    return 0;
}

/* col_append adds one element to an array literal: NULL, or the value double-quoted with
 * '"' and '\' escaped (PostgreSQL "Array Value Input"). */
static void col_append(struct colbuf *c, const char *v, int first)
{
    c->p[c->len++] = first ? '{' : ',';
    if (!v) {
        memcpy(c->p + c->len, "NULL", 4);
        c->len += 4;
        return;
    }
    c->p[c->len++] = '"';
    for (const char *q = v; *q; q++) {
        if (*q == '"' || *q == '\\')
            c->p[c->len++] = '\\';
        c->p[c->len++] = *q;
    }
    c->p[c->len++] = '"';
}

static void ready_push(struct ctl_batch *b, struct stmt *s)
{
    s->next = NULL;
    if (b->ready_tail)
        b->ready_tail->next = s;
    else
        b->ready_head = s;
    b->ready_tail = s;
}

static void kick_soon(struct ctl_batch *b)
{
    if (!ctl_timer_active(b->kick))
        ctl_timer_start(b->kick, 0);
}

static void stmt_done(int rv, const struct ctl_db_result *res, void *user_data);

/* submit sends s; on a refusal every item fails at once (we are on the loop, in the timer or
 * a completion, never inside ctl_batch_add). */
static void submit(struct ctl_batch *b, struct stmt *s)
{
    const char *values[CTL_BATCH_MAX_COLS];
    if (!s->closed) {
        for (int i = 0; i < b->ncols; i++) {
            s->cols[i].p[s->cols[i].len++] = '}';
            s->cols[i].p[s->cols[i].len] = '\0';
        }
        s->closed = 1;
    }
    for (int i = 0; i < b->ncols; i++)
        values[i] = s->cols[i].p;
    int rv =
        ctl_db_exec_params(b->db, b->sql, b->ncols, values, NULL, NULL, b->binary, stmt_done, s);
    if (rv != 0) {
        b->st.statements++;
        b->st.failed += s->n;
        fail_items(s, rv, NULL);
        stmt_free(s);
        return;
    }
    s->fprev = NULL;
    s->fnext = b->flight;
    if (b->flight)
        b->flight->fprev = s;
    b->flight = s;
    b->st.in_flight++;
}

static void pump(struct ctl_batch *b)
{
    /* The statement being collected is sent only when a slot is free: while every slot is
     * busy it keeps growing, so a busy database gets fewer, bigger statements. */
    while (b->st.in_flight < b->max_in_flight) {
        if (!b->ready_head) {
            if (!b->cur || !b->cur->n)
                break;
            ready_push(b, b->cur);
            b->cur = NULL;
        }
        struct stmt *s = b->ready_head;
        b->ready_head = s->next;
        if (!b->ready_head)
            b->ready_tail = NULL;
        b->waiting -= s->n;
        b->waiting_bytes -= s->bytes;
        submit(b, s);
    }
}

static void kick_cb(struct ctl_timer *t, void *user_data)
{
    (void)t;
    pump(user_data);
}

static int retryable(int rv, const struct ctl_db_result *res)
{
    if (rv != AEGIS_ERR_DATABASE || !res)
        return 0;
    const char *state = ctl_db_result_sqlstate(res);
    return strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0;
}

static void dispatch(struct ctl_batch *b, struct stmt *s, const struct ctl_db_result *res)
{
    int nt = ctl_db_result_ntuples(res);
    int row = 0;
    for (size_t i = 0; i < s->n; i++) {
        int64_t want = (int64_t)i + 1;
        /* Rows of unknown or earlier ordinals (a statement not ordered as documented) are
         * skipped rather than given to the wrong item. */
        while (row < nt && ctl_batch_ordinal(b, res, row) < want)
            row++;
        int first = row;
        while (row < nt && ctl_batch_ordinal(b, res, row) == want)
            row++;
        if (s->items[i].cb)
            s->items[i].cb(0, res, first, row - first, s->items[i].user_data);
    }
}

static void stmt_done(int rv, const struct ctl_db_result *res, void *user_data)
{
    struct stmt *s = user_data;
    struct ctl_batch *b = s->b;
    if (!b) { /* the batch was deleted while this ran */
        fail_items(s, rv == 0 ? -ECANCELED : rv, NULL);
        stmt_free(s);
        return;
    }
    if (s->fprev)
        s->fprev->fnext = s->fnext;
    else
        b->flight = s->fnext;
    if (s->fnext)
        s->fnext->fprev = s->fprev;
    b->st.in_flight--;
    if (retryable(rv, res) && s->retries < CTL_BATCH_RETRIES) {
        /* The whole statement rolled back: run it again, ahead of newer work. */
        s->retries++;
        b->st.retries++;
        s->next = b->ready_head;
        b->ready_head = s;
        if (!b->ready_tail)
            b->ready_tail = s;
        b->waiting += s->n;
        b->waiting_bytes += s->bytes;
        kick_soon(b);
        return;
    }
    b->st.statements++;
    if (rv != 0) {
        b->st.failed += s->n;
        fail_items(s, rv, res);
    } else {
        dispatch(b, s, res);
    }
    stmt_free(s);
    pump(b);
}

int ctl_batch_new(struct ctl_db *db, struct ctl_loop *loop, const struct ctl_batch_config *cfg,
                  const struct aegis_mem *mem, struct ctl_batch **pb)
{
    if (!db || !loop || !cfg || !cfg->sql || !pb || cfg->ncols < 1 ||
        cfg->ncols > CTL_BATCH_MAX_COLS || cfg->ncols > (int)CTL_DB_MAX_PARAMS)
        return -EINVAL;
    struct ctl_batch *b = aegis_calloc(mem, 1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->db = db;
    b->mem = mem;
    b->ncols = cfg->ncols;
    b->binary = cfg->binary_result ? 1 : 0;
    b->max_items = cfg->max_items ? cfg->max_items : CTL_BATCH_DEFAULT_MAX_ITEMS;
    b->queue_max = cfg->queue_max ? cfg->queue_max : CTL_BATCH_DEFAULT_QUEUE_MAX;
    b->bytes_max = cfg->bytes_max ? cfg->bytes_max : CTL_BATCH_DEFAULT_BYTES_MAX;
    b->max_in_flight = cfg->max_in_flight ? cfg->max_in_flight : 1;
    b->sql = aegis_memdup(mem, cfg->sql, strlen(cfg->sql) + 1);
    if (!b->sql || ctl_timer_new(loop, kick_cb, b, &b->kick) != 0) {
        aegis_free(mem, b->sql);
        aegis_free(mem, b);
        return -ENOMEM;
    }
    *pb = b;
    return 0;
}

void ctl_batch_del(struct ctl_batch *b)
{
    if (!b)
        return;
    ctl_timer_del(b->kick);
    b->kick = NULL;
    /* Running statements complete later through ctl_db (cancelled at ctl_db_del). */
    for (struct stmt *s = b->flight; s; s = s->fnext)
        s->b = NULL;
    while (b->ready_head) {
        struct stmt *s = b->ready_head;
        b->ready_head = s->next;
        fail_items(s, -ECANCELED, NULL);
        stmt_free(s);
    }
    if (b->cur) {
        fail_items(b->cur, -ECANCELED, NULL);
        stmt_free(b->cur);
    }
    aegis_free(b->mem, b->sql);
    aegis_free(b->mem, b);
}

int ctl_batch_add(struct ctl_batch *b, const char *const *values, ctl_batch_cb cb, void *user_data)
{
    size_t need = 0;
    for (int i = 0; i < b->ncols; i++) {
        size_t l = values[i] ? strlen(values[i]) : 0;
        if (l > CTL_BATCH_MAX_VALUE)
            return -E2BIG;
        need += 2 * l + 8; /* worst case: every byte escaped, quotes, separator, "}\0" */
    }
    if (b->waiting >= b->queue_max || b->waiting_bytes + need > b->bytes_max) {
        b->st.rejected++;
        return AEGIS_ERR_LIMIT;
    }
    struct stmt *s = b->cur;
    if (!s) {
        s = aegis_calloc(b->mem, 1, sizeof(*s));
        if (!s)
            return -ENOMEM;
        s->b = b;
        s->mem = b->mem;
        b->cur = s;
    }
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 16;
        if (ncap > b->max_items)
            ncap = b->max_items;
        struct item *it = aegis_realloc(b->mem, s->items, ncap * sizeof(*it));
        if (!it)
            return -ENOMEM;
        s->items = it;
        s->cap = ncap;
    }
    for (int i = 0; i < b->ncols; i++) {
        size_t l = values[i] ? strlen(values[i]) : 0;
        if (col_reserve(b->mem, &s->cols[i], 2 * l + 8) != 0)
            return -ENOMEM; /* nothing of this item was appended yet for columns >= i */
    }
    size_t before = 0, after = 0;
    for (int i = 0; i < b->ncols; i++) {
        before += s->cols[i].len;
        col_append(&s->cols[i], values[i], s->n == 0);
        after += s->cols[i].len;
    }
    s->items[s->n].cb = cb;
    s->items[s->n].user_data = user_data;
    s->n++;
    s->bytes += after - before;
    b->waiting++;
    b->waiting_bytes += after - before;
    b->st.items++;
    if (s->n >= b->max_items || s->bytes >= CTL_BATCH_STMT_BYTES) {
        ready_push(b, s);
        b->cur = NULL;
    }
    kick_soon(b);
    return 0;
}

int64_t ctl_batch_i64(const struct ctl_batch *b, const struct ctl_db_result *res, int row, int col)
{
    if (row < 0 || row >= ctl_db_result_ntuples(res) || ctl_db_result_isnull(res, row, col))
        return -1;
    const char *v = ctl_db_result_value(res, row, col);
    if (!b->binary)
        return strtoll(v, NULL, 10);
    if (ctl_db_result_length(res, row, col) != 8)
        return -1;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = (x << 8) | (uint8_t)v[i];
    return (int64_t)x;
}

int64_t ctl_batch_ordinal(const struct ctl_batch *b, const struct ctl_db_result *res, int row)
{
    return ctl_batch_i64(b, res, row, 0);
}

void ctl_batch_stats(const struct ctl_batch *b, struct ctl_batch_stats *st)
{
    *st = b->st;
    st->waiting = b->waiting;
}
