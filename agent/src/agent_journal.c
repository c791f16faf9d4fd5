#include "agent_journal.h"

#include "agent_bytes.h"
#include "agent_crc32c.h"

#include <aegis/err.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#define JOURNAL_MAGIC "AEGISJNL"
#define JOURNAL_VERSION 1u
#define COMPACT_SUFFIX ".compact"

struct agent_journal {
    const struct aegis_mem *mem;
    const struct agent_io *io;
    struct agent_journal_config cfg;
    char *path;
    char *dir;
    char *tmp_path;
    int fd;
    uint64_t end;      /* file size: where the next record goes */
    uint64_t next_seq; /* sequence of the next record */
    int poison;        /* non-zero: the error that made the file state unknown */
    uint8_t *buf;      /* one encoded record; grows up to overhead + max_record */
    size_t bufcap;
};

struct agent_journal_compactor {
    struct agent_journal *j;
    int fd;
    uint64_t end;
    uint64_t next_seq;
};

/* The buffer grows to the largest record seen rather than max_record up
 * front, so a journal of small records stays small in memory. */
static int ensure_buf(struct agent_journal *j, size_t need)
{
    if (need <= j->bufcap)
        return 0;
    size_t cap = j->bufcap ? j->bufcap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *b = aegis_realloc(j->mem, j->buf, cap);
    if (!b)
        return -ENOMEM;
    j->buf = b;
    j->bufcap = cap;
    return 0;
}

static void encode_header(uint8_t *h, uint32_t kind, uint64_t base_seq)
{
    memset(h, 0, AGENT_JOURNAL_HEADER_SIZE);
    memcpy(h, JOURNAL_MAGIC, 8);
    agent_put32(h + 8, JOURNAL_VERSION);
    agent_put32(h + 12, kind);
    agent_put64(h + 16, base_seq);
    /* h[24..28) reserved, zero */
    agent_put32(h + 28, agent_crc32c_update(0, h, 28));
}

/* The CRC covers the length and sequence as well as the payload, so a flipped
 * length or a record copied to the wrong place fails it. */
static uint32_t record_crc(const uint8_t *rec, const uint8_t *payload, size_t len)
{
    uint32_t crc = agent_crc32c_update(0, rec, 4);
    crc = agent_crc32c_update(crc, rec + 8, 8);
    return agent_crc32c_update(crc, payload, len);
}

static size_t encode_record(uint8_t *out, uint64_t seq, const void *payload, size_t len)
{
    agent_put32(out, (uint32_t)len);
    agent_put64(out + 8, seq);
    memcpy(out + AGENT_JOURNAL_RECORD_OVERHEAD, payload, len);
    agent_put32(out + 4, record_crc(out, out + AGENT_JOURNAL_RECORD_OVERHEAD, len));
    return AGENT_JOURNAL_RECORD_OVERHEAD + len;
}

static int apply_defaults(struct agent_journal_config *c)
{
    if (!c->max_bytes)
        c->max_bytes = AGENT_JOURNAL_DEFAULT_MAX_BYTES;
    if (!c->max_record)
        c->max_record = AGENT_JOURNAL_DEFAULT_MAX_RECORD;
    if (!c->compact_min_bytes)
        c->compact_min_bytes = AGENT_JOURNAL_DEFAULT_COMPACT_MIN;
    if (!c->compact_garbage_pct)
        c->compact_garbage_pct = AGENT_JOURNAL_DEFAULT_GARBAGE_PCT;
    if (c->max_record > AGENT_JOURNAL_MAX_RECORD_LIMIT || c->compact_garbage_pct > 100 ||
        c->max_bytes < AGENT_JOURNAL_HEADER_SIZE + AGENT_JOURNAL_RECORD_OVERHEAD)
        return -EINVAL;
    return 0;
}

static char *dup_dirname(const struct aegis_mem *mem, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return aegis_strdup(mem, ".");
    if (slash == path)
        return aegis_strdup(mem, "/");
    size_t n = (size_t)(slash - path);
    char *d = aegis_malloc(mem, n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

void agent_journal_del(struct agent_journal *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        j->io->close(j->fd, j->io->user_data);
    aegis_free(j->mem, j->buf);
    aegis_free(j->mem, j->tmp_path);
    aegis_free(j->mem, j->dir);
    aegis_free(j->mem, j->path);
    aegis_free(j->mem, j);
}

/* Write a fresh header-only file atomically, so a crash during creation never
 * leaves a half-written header behind. */
static int create_file(struct agent_journal *j, uint64_t base_seq)
{
    uint8_t h[AGENT_JOURNAL_HEADER_SIZE];
    encode_header(h, j->cfg.kind, base_seq);
    const char *base = strrchr(j->path, '/');
    base = base ? base + 1 : j->path;
    return agent_io_write_file_atomic(j->io, j->dir, base, h, sizeof(h), 0600);
}

/* Scan records from the header on; stops at the first invalid one. */
static int scan(struct agent_journal *j, uint64_t size, uint64_t base_seq,
                agent_journal_record_fn on_record, void *ud, struct agent_journal_recovery *rec)
{
    uint64_t off = AGENT_JOURNAL_HEADER_SIZE;
    uint64_t seq = base_seq;
    uint8_t hdr[AGENT_JOURNAL_RECORD_OVERHEAD];
    rec->tail = AGENT_JOURNAL_TAIL_CLEAN;
    while (off < size) {
        size_t got;
        int rv = agent_io_read_full(j->io, j->fd, hdr, sizeof(hdr), (off_t)off, &got);
        if (rv != 0)
            return rv;
        if (got < AGENT_JOURNAL_RECORD_OVERHEAD) {
            rec->tail = AGENT_JOURNAL_TAIL_TORN;
            break;
        }
        uint32_t len = agent_get32(hdr);
        if (len > j->cfg.max_record) {
            /* A length this reader would never have written: a damaged
             * length field (torn writes never damage a field in place). */
            rec->tail = AGENT_JOURNAL_TAIL_CORRUPT;
            break;
        }
        if (size - off < AGENT_JOURNAL_RECORD_OVERHEAD + (uint64_t)len) {
            rec->tail = AGENT_JOURNAL_TAIL_TORN;
            break;
        }
        rv = ensure_buf(j, sizeof(hdr) + len);
        if (rv != 0)
            return rv;
        uint8_t *b = j->buf;
        memcpy(b, hdr, sizeof(hdr));
        rv = agent_io_read_full(j->io, j->fd, b + AGENT_JOURNAL_RECORD_OVERHEAD, len,
                                (off_t)(off + AGENT_JOURNAL_RECORD_OVERHEAD), &got);
        if (rv != 0)
            return rv;
        if (got < len) { /* the file shrank under us */
            rec->tail = AGENT_JOURNAL_TAIL_TORN;
            break;
        }
        const uint8_t *payload = b + AGENT_JOURNAL_RECORD_OVERHEAD;
        if (agent_get32(b + 4) != record_crc(b, payload, len) || agent_get64(b + 8) != seq) {
            rec->tail = AGENT_JOURNAL_TAIL_CORRUPT;
            break;
        }
        if (on_record) {
            rv = on_record(seq, payload, len, ud);
            if (rv != 0)
                return rv;
        }
        rec->records++;
        seq++;
        off += AGENT_JOURNAL_RECORD_OVERHEAD + len;
    }
    j->end = off;
    j->next_seq = seq;
    return 0;
}

int agent_journal_open(const char *path, const struct agent_journal_config *cfg,
                       const struct agent_io *io, const struct aegis_mem *mem,
                       agent_journal_record_fn on_record, void *user_data,
                       struct agent_journal_recovery *precovery, char *errmsg, size_t errlen,
                       struct agent_journal **pjournal)
{
    if (!path || !*path || !cfg || !pjournal)
        return agent_errmsg(errmsg, errlen, -EINVAL, "journal: invalid arguments");
    struct agent_journal_config c = *cfg;
    if (apply_defaults(&c) != 0)
        return agent_errmsg(errmsg, errlen, -EINVAL,
                            "journal %s: invalid limits (max_record <= %u, garbage_pct <= 100)",
                            path, AGENT_JOURNAL_MAX_RECORD_LIMIT);
    if (!io)
        io = agent_io_default();
    if (!mem)
        mem = aegis_mem_default();

    struct agent_journal_recovery rec;
    memset(&rec, 0, sizeof(rec));
    int rv = -ENOMEM;
    struct agent_journal *j = aegis_calloc(mem, 1, sizeof(*j));
    if (!j)
        return agent_errmsg(errmsg, errlen, -ENOMEM, "journal %s: out of memory", path);
    j->mem = mem;
    j->io = io;
    j->cfg = c;
    j->fd = -1;
    size_t plen = strlen(path);
    j->path = aegis_strdup(mem, path);
    j->dir = dup_dirname(mem, path);
    j->tmp_path = aegis_malloc(mem, plen + sizeof(COMPACT_SUFFIX));
    if (!j->path || !j->dir || !j->tmp_path || ensure_buf(j, 256) != 0) {
        agent_errmsg(errmsg, errlen, rv, "journal %s: out of memory", path);
        goto fail;
    }
    memcpy(j->tmp_path, path, plen);
    memcpy(j->tmp_path + plen, COMPACT_SUFFIX, sizeof(COMPACT_SUFFIX));

    /* A leftover compaction file is never the journal: the rename that would
     * have made it one did not happen. */
    rv = io->unlink(j->tmp_path, io->user_data);
    if (rv != 0 && rv != -ENOENT) {
        agent_errmsg(errmsg, errlen, rv, "journal %s: cannot remove stale %s: %s", path,
                     j->tmp_path, aegis_strerror(rv));
        goto fail;
    }

    for (int attempt = 0; attempt < 2; attempt++) {
        j->fd = io->open(path, O_RDWR | O_NOFOLLOW, 0, io->user_data);
        if (j->fd == -ENOENT && attempt == 0) {
            rv = create_file(j, 1);
            if (rv != 0) {
                agent_errmsg(errmsg, errlen, rv, "journal %s: cannot create: %s", path,
                             aegis_strerror(rv));
                goto fail;
            }
            rec.created = 1;
            continue;
        }
        break;
    }
    if (j->fd < 0) {
        rv = j->fd;
        agent_errmsg(errmsg, errlen, rv, "journal %s: cannot open: %s", path, aegis_strerror(rv));
        goto fail;
    }

    struct stat st;
    rv = io->fstat(j->fd, &st, io->user_data);
    if (rv != 0) {
        agent_errmsg(errmsg, errlen, rv, "journal %s: cannot stat: %s", path, aegis_strerror(rv));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rv = AEGIS_ERR_MALFORMED;
        agent_errmsg(errmsg, errlen, rv, "journal %s: not a regular file; remove it", path);
        goto fail;
    }
    uint64_t size = (uint64_t)st.st_size;

    uint8_t h[AGENT_JOURNAL_HEADER_SIZE];
    size_t got = 0;
    if (size >= sizeof(h)) {
        rv = agent_io_read_full(io, j->fd, h, sizeof(h), 0, &got);
        if (rv != 0) {
            agent_errmsg(errmsg, errlen, rv, "journal %s: cannot read: %s", path,
                         aegis_strerror(rv));
            goto fail;
        }
    }
    if (got < sizeof(h)) {
        /* Shorter than a header: we create files atomically, so this is a
         * file truncated by something else. It holds no record; start over. */
        io->close(j->fd, io->user_data);
        j->fd = -1;
        rv = create_file(j, 1);
        if (rv == 0) {
            j->fd = io->open(path, O_RDWR | O_NOFOLLOW, 0, io->user_data);
            rv = j->fd < 0 ? j->fd : 0;
        }
        if (rv != 0) {
            agent_errmsg(errmsg, errlen, rv, "journal %s: cannot re-initialise: %s", path,
                         aegis_strerror(rv));
            goto fail;
        }
        rec.header_reset = !rec.created;
        encode_header(h, c.kind, 1);
        size = sizeof(h);
    }
    if (memcmp(h, JOURNAL_MAGIC, 8) != 0) {
        rv = AEGIS_ERR_MALFORMED;
        agent_errmsg(errmsg, errlen, rv,
                     "journal %s: not an aegis journal (bad magic); move it aside and restart",
                     path);
        goto fail;
    }
    if (agent_get32(h + 28) != agent_crc32c_update(0, h, 28)) {
        rv = AEGIS_ERR_MALFORMED;
        agent_errmsg(errmsg, errlen, rv,
                     "journal %s: damaged header (checksum mismatch); move it aside and restart",
                     path);
        goto fail;
    }
    if (agent_get32(h + 8) != JOURNAL_VERSION) {
        rv = AEGIS_ERR_UNSUPPORTED;
        agent_errmsg(errmsg, errlen, rv,
                     "journal %s: format version %u is not supported (this agent writes %u); "
                     "was the agent downgraded?",
                     path, agent_get32(h + 8), JOURNAL_VERSION);
        goto fail;
    }
    if (agent_get32(h + 12) != c.kind) {
        rv = AEGIS_ERR_MALFORMED;
        agent_errmsg(errmsg, errlen, rv,
                     "journal %s: holds records of kind 0x%08x, expected 0x%08x; "
                     "is another file in its place?",
                     path, agent_get32(h + 12), c.kind);
        goto fail;
    }

    rv = scan(j, size, agent_get64(h + 16), on_record, user_data, &rec);
    if (rv != 0) {
        agent_errmsg(errmsg, errlen, rv, "journal %s: recovery failed: %s", path,
                     aegis_strerror(rv));
        goto fail;
    }
    if (j->end < size) {
        rec.truncated_bytes = size - j->end;
        rv = io->ftruncate(j->fd, (off_t)j->end, io->user_data);
        if (rv == 0)
            rv = io->fdatasync(j->fd, io->user_data);
        if (rv != 0) {
            agent_errmsg(errmsg, errlen, rv, "journal %s: cannot truncate damaged tail: %s", path,
                         aegis_strerror(rv));
            goto fail;
        }
    }
    /* Make sure a rename done by a compaction that crashed before its own
     * directory fsync is durable before anything new is appended. */
    rv = agent_io_fsync_dir(io, j->dir);
    if (rv != 0) {
        agent_errmsg(errmsg, errlen, rv, "journal %s: cannot fsync directory %s: %s", path, j->dir,
                     aegis_strerror(rv));
        goto fail;
    }
    if (precovery)
        *precovery = rec;
    *pjournal = j;
    return 0;

fail:
    agent_journal_del(j);
    return rv;
}

int agent_journal_fits(const struct agent_journal *j, size_t len)
{
    return len <= j->cfg.max_record && j->end + agent_journal_record_size(len) <= j->cfg.max_bytes;
}

int agent_journal_append(struct agent_journal *j, const void *payload, size_t len, uint64_t *pseq)
{
    if (!j || (!payload && len))
        return -EINVAL;
    if (j->poison)
        return j->poison;
    if (len > j->cfg.max_record)
        return AEGIS_ERR_TOO_LARGE;
    if (!agent_journal_fits(j, len))
        return AEGIS_ERR_LIMIT;
    const struct agent_io *io = j->io;
    if (ensure_buf(j, AGENT_JOURNAL_RECORD_OVERHEAD + len) != 0)
        return -ENOMEM;
    size_t n = encode_record(j->buf, j->next_seq, payload, len);
    int rv = agent_io_write_all(io, j->fd, j->buf, n, (off_t)j->end);
    if (rv == 0) {
        rv = io->fdatasync(j->fd, io->user_data);
        if (rv != 0) {
            /* Best effort: take the record back so a later reopen does not
             * resurrect what we reported as failed. The journal stays
             * poisoned either way. */
            io->ftruncate(j->fd, (off_t)j->end, io->user_data);
            j->poison = rv;
            return rv;
        }
        j->end += n;
        if (pseq)
            *pseq = j->next_seq;
        j->next_seq++;
        return 0;
    }
    /* The write failed part-way (ENOSPC, EIO): cut the partial record off so
     * the next append starts on a record boundary. If even that fails, the
     * file's tail is unknown. */
    if (io->ftruncate(j->fd, (off_t)j->end, io->user_data) != 0)
        j->poison = rv;
    return rv;
}

int agent_journal_compactor_add(struct agent_journal_compactor *c, const void *payload, size_t len)
{
    if (!c || (!payload && len))
        return -EINVAL;
    struct agent_journal *j = c->j;
    if (len > j->cfg.max_record)
        return AEGIS_ERR_TOO_LARGE;
    if (c->end + agent_journal_record_size(len) > j->cfg.max_bytes)
        return AEGIS_ERR_LIMIT;
    if (ensure_buf(j, AGENT_JOURNAL_RECORD_OVERHEAD + len) != 0)
        return -ENOMEM;
    size_t n = encode_record(j->buf, c->next_seq, payload, len);
    int rv = agent_io_write_all(j->io, c->fd, j->buf, n, (off_t)c->end);
    if (rv != 0)
        return rv;
    c->end += n;
    c->next_seq++;
    return 0;
}

int agent_journal_compact(struct agent_journal *j, agent_journal_emit_fn emit, void *user_data)
{
    if (!j || !emit)
        return -EINVAL;
    if (j->poison)
        return j->poison;
    const struct agent_io *io = j->io;
    struct agent_journal_compactor c = {.j = j, .fd = -1, .end = 0, .next_seq = j->next_seq};
    int rv = io->unlink(j->tmp_path, io->user_data);
    if (rv != 0 && rv != -ENOENT)
        return rv;
    c.fd = io->open(j->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600, io->user_data);
    if (c.fd < 0)
        return c.fd;
    uint8_t h[AGENT_JOURNAL_HEADER_SIZE];
    encode_header(h, j->cfg.kind, c.next_seq);
    rv = agent_io_write_all(io, c.fd, h, sizeof(h), 0);
    if (rv != 0)
        goto abort;
    c.end = sizeof(h);
    rv = emit(&c, user_data);
    if (rv != 0)
        goto abort;
    rv = io->fdatasync(c.fd, io->user_data);
    if (rv != 0)
        goto abort;
    rv = io->rename(j->tmp_path, j->path, io->user_data);
    if (rv != 0)
        goto abort;
    /* From here on the path names the new file: switch to it whatever
     * happens next. */
    io->close(j->fd, io->user_data);
    j->fd = c.fd;
    j->end = c.end;
    j->next_seq = c.next_seq;
    rv = agent_io_fsync_dir(io, j->dir);
    if (rv != 0)
        j->poison = rv;
    return rv;

abort:
    io->close(c.fd, io->user_data);
    io->unlink(j->tmp_path, io->user_data);
    return rv;
}

int agent_journal_needs_compaction(const struct agent_journal *j, uint64_t live_bytes)
{
    if (j->end < j->cfg.compact_min_bytes)
        return 0;
    uint64_t body = j->end - AGENT_JOURNAL_HEADER_SIZE;
    uint64_t garbage = body - (live_bytes < body ? live_bytes : body);
    return garbage * 100 >= (uint64_t)j->cfg.compact_garbage_pct * body;
}

uint64_t agent_journal_size(const struct agent_journal *j)
{
    return j->end;
}

uint64_t agent_journal_next_seq(const struct agent_journal *j)
{
    return j->next_seq;
}

int agent_journal_poisoned(const struct agent_journal *j)
{
    return j->poison;
}
