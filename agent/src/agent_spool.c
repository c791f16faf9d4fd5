#include "agent_spool.h"

#include "agent_bytes.h"
#include "agent_crc32c.h"
#include "agent_state_dir.h"

#include <aegis/err.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAGIC "AEGSPL01"
#define STATE_MAGIC "AEGSPST1"
#define STATE_NAME "spool.state"
#define STATE_SIZE 52u
#define BATCH_SUFFIX ".batch"
#define TMP_SUFFIX ".tmp"
#define ID_HEX 16
/* Batch ids are reserved in blocks so the state file is rewritten once per
 * 1024 batches, not per batch; a crash wastes at most one block of ids. */
#define ID_BLOCK 1024u

struct index_entry {
    uint64_t id;
    aegis_tstamp created;
    uint32_t len;
};

struct agent_spool {
    const struct aegis_mem *mem;
    const struct agent_io *io;
    struct agent_spool_config cfg;
    char *dir;
    struct index_entry *idx; /* sorted by id */
    size_t n, cap;
    uint64_t bytes;
    uint64_t next_id;
    uint64_t reserved; /* ids below this may have been handed out */
    uint64_t dropped_batches, dropped_bytes;
    uint64_t corrupt_batches, corrupt_bytes;
    int state_reset;
};

static uint64_t file_size(uint32_t len)
{
    return AGENT_SPOOL_HEADER_SIZE + (uint64_t)len;
}

static int save_state(struct agent_spool *sp)
{
    uint8_t b[STATE_SIZE];
    memcpy(b, STATE_MAGIC, 8);
    agent_put64(b + 8, sp->reserved);
    agent_put64(b + 16, sp->dropped_batches);
    agent_put64(b + 24, sp->dropped_bytes);
    agent_put64(b + 32, sp->corrupt_batches);
    agent_put64(b + 40, sp->corrupt_bytes);
    agent_put32(b + 48, agent_crc32c_update(0, b, 48));
    return agent_io_write_file_atomic(sp->io, sp->dir, STATE_NAME, b, sizeof(b), 0600);
}

static int load_state(struct agent_spool *sp)
{
    char path[PATH_MAX];
    if (agent_io_path(path, sizeof(path), sp->dir, STATE_NAME) != 0)
        return -ENAMETOOLONG;
    uint8_t b[STATE_SIZE + 1];
    size_t len = 0;
    int rv = agent_io_read_file(sp->io, path, b, sizeof(b), &len);
    if (rv == -ENOENT)
        return 0;
    if (rv != 0 && rv != AEGIS_ERR_TOO_LARGE)
        return rv;
    if (rv != 0 || len != STATE_SIZE || memcmp(b, STATE_MAGIC, 8) != 0 ||
        agent_get32(b + 48) != agent_crc32c_update(0, b, 48)) {
        /* Counters are diagnostics: losing them must not stop telemetry.
         * Batch ids stay unique because they also resume after the highest
         * batch file present. */
        sp->state_reset = 1;
        return 0;
    }
    sp->reserved = agent_get64(b + 8);
    sp->dropped_batches = agent_get64(b + 16);
    sp->dropped_bytes = agent_get64(b + 24);
    sp->corrupt_batches = agent_get64(b + 32);
    sp->corrupt_bytes = agent_get64(b + 40);
    return 0;
}

static int batch_path(const struct agent_spool *sp, uint64_t id, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%016" PRIx64 BATCH_SUFFIX, sp->dir, id);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int reserve_one(struct agent_spool *sp)
{
    if (sp->n < sp->cap)
        return 0;
    size_t cap = sp->cap ? sp->cap * 2 : 64;
    struct index_entry *p = aegis_realloc(sp->mem, sp->idx, cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    sp->idx = p;
    sp->cap = cap;
    return 0;
}

/* Index of the first entry with id >= key. */
static size_t lower_bound(const struct agent_spool *sp, uint64_t key)
{
    size_t lo = 0, hi = sp->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sp->idx[mid].id < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int find(const struct agent_spool *sp, uint64_t id, size_t *pi)
{
    size_t i = lower_bound(sp, id);
    if (i < sp->n && sp->idx[i].id == id) {
        *pi = i;
        return 1;
    }
    return 0;
}

static void remove_at(struct agent_spool *sp, size_t i)
{
    sp->bytes -= file_size(sp->idx[i].len);
    memmove(&sp->idx[i], &sp->idx[i + 1], (sp->n - i - 1) * sizeof(*sp->idx));
    sp->n--;
}

/* Delete batch file i and account it as dropped (corrupt = 0) or corrupt. */
static int discard(struct agent_spool *sp, size_t i, int corrupt)
{
    char path[PATH_MAX];
    int rv = batch_path(sp, sp->idx[i].id, path, sizeof(path));
    if (rv == 0)
        rv = sp->io->unlink(path, sp->io->user_data);
    if (rv != 0 && rv != -ENOENT)
        return rv;
    uint64_t size = file_size(sp->idx[i].len);
    if (corrupt) {
        sp->corrupt_batches++;
        sp->corrupt_bytes += size;
    } else {
        sp->dropped_batches++;
        sp->dropped_bytes += size;
    }
    remove_at(sp, i);
    return 0;
}

/* Drop oldest batches until `need` more bytes and one more batch fit. */
static int make_room(struct agent_spool *sp, uint64_t need, size_t more, int *pdropped)
{
    while (sp->n > 0 &&
           (sp->bytes + need > sp->cfg.max_bytes || sp->n + more > sp->cfg.max_batches)) {
        int rv = discard(sp, 0, 0);
        if (rv != 0)
            return rv;
        *pdropped = 1;
    }
    return 0;
}

static int parse_name(const char *name, uint64_t *pid)
{
    size_t len = strlen(name);
    if (len != ID_HEX + sizeof(BATCH_SUFFIX) - 1 || strcmp(name + ID_HEX, BATCH_SUFFIX) != 0)
        return 0;
    uint64_t id = 0;
    for (int i = 0; i < ID_HEX; i++) {
        char c = name[i];
        unsigned v;
        if (c >= '0' && c <= '9')
            v = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = (unsigned)(c - 'a' + 10);
        else
            return 0;
        id = (id << 4) | v;
    }
    *pid = id;
    return id != 0;
}

/* Check a batch file's header against its name and size. */
static int check_header(const uint8_t *h, uint64_t id, uint64_t size)
{
    return memcmp(h, BATCH_MAGIC, 8) == 0 && agent_get64(h + 8) == id &&
           file_size(agent_get32(h + 24)) == size;
}

static void encode_header(uint8_t *h, uint64_t id, aegis_tstamp created, const void *data,
                          uint32_t len)
{
    memcpy(h, BATCH_MAGIC, 8);
    agent_put64(h + 8, id);
    agent_put64(h + 16, created);
    agent_put32(h + 24, len);
    uint32_t crc = agent_crc32c_update(0, h, 28);
    agent_put32(h + 28, agent_crc32c_update(crc, data, len));
}

/* Index one batch file found at open; damaged ones are deleted and counted. */
static int scan_one(struct agent_spool *sp, const char *name, uint64_t id)
{
    const struct agent_io *io = sp->io;
    char path[PATH_MAX];
    int rv = agent_io_path(path, sizeof(path), sp->dir, name);
    if (rv != 0)
        return rv;
    int fd = io->open(path, O_RDONLY | O_NOFOLLOW, 0, io->user_data);
    if (fd == -ENOENT)
        return 0;
    if (fd < 0)
        return fd;
    struct stat st;
    uint8_t h[AGENT_SPOOL_HEADER_SIZE];
    size_t got = 0;
    rv = io->fstat(fd, &st, io->user_data);
    if (rv == 0)
        rv = agent_io_read_full(io, fd, h, sizeof(h), 0, &got);
    io->close(fd, io->user_data);
    if (rv != 0)
        return rv;
    uint64_t size = (uint64_t)st.st_size;
    if (!S_ISREG(st.st_mode) || got < sizeof(h) || !check_header(h, id, size)) {
        rv = io->unlink(path, io->user_data);
        if (rv != 0 && rv != -ENOENT)
            return rv;
        sp->corrupt_batches++;
        sp->corrupt_bytes += size;
        return 1; /* state changed */
    }
    rv = reserve_one(sp);
    if (rv != 0)
        return rv;
    sp->idx[sp->n++] = (struct index_entry){id, agent_get64(h + 16), agent_get32(h + 24)};
    sp->bytes += size;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    uint64_t x = ((const struct index_entry *)a)->id, y = ((const struct index_entry *)b)->id;
    return x < y ? -1 : x > y;
}

static int scan_dir(struct agent_spool *sp, int *pchanged)
{
    DIR *d = opendir(sp->dir);
    if (!d)
        return -errno;
    int rv = 0;
    struct dirent *e;
    while (rv == 0 && (e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        size_t len = strlen(name);
        uint64_t id;
        if (len > sizeof(TMP_SUFFIX) - 1 &&
            strcmp(name + len - (sizeof(TMP_SUFFIX) - 1), TMP_SUFFIX) == 0) {
            /* An append or state write that never reached its rename. */
            char path[PATH_MAX];
            rv = agent_io_path(path, sizeof(path), sp->dir, name);
            if (rv == 0) {
                rv = sp->io->unlink(path, sp->io->user_data);
                if (rv == -ENOENT)
                    rv = 0;
            }
        } else if (parse_name(name, &id)) {
            rv = scan_one(sp, name, id);
            if (rv > 0) {
                *pchanged = 1;
                rv = 0;
            }
        }
    }
    closedir(d);
    if (rv == 0 && sp->n > 1)
        qsort(sp->idx, sp->n, sizeof(*sp->idx), cmp_entry);
    return rv;
}

int agent_spool_open(const char *dir, const struct agent_spool_config *cfg,
                     const struct agent_io *io, const struct aegis_mem *mem, char *errmsg,
                     size_t errlen, struct agent_spool **pspool)
{
    if (!dir || !*dir || !pspool)
        return agent_errmsg(errmsg, errlen, -EINVAL, "spool: invalid arguments");
    if (!io)
        io = agent_io_default();
    if (!mem)
        mem = aegis_mem_default();
    struct agent_spool_config c = {0, 0, 0};
    if (cfg)
        c = *cfg;
    if (!c.max_bytes)
        c.max_bytes = AGENT_SPOOL_DEFAULT_MAX_BYTES;
    if (!c.max_batch)
        c.max_batch = AGENT_SPOOL_DEFAULT_MAX_BATCH;
    if (!c.max_batches)
        c.max_batches = AGENT_SPOOL_DEFAULT_MAX_BATCHES;
    int rv = agent_state_dir_ensure(dir, AGENT_STATE_DIR_CREATE, io, errmsg, errlen);
    if (rv != 0)
        return rv;
    struct agent_spool *sp = aegis_calloc(mem, 1, sizeof(*sp));
    if (!sp || !(sp->dir = aegis_strdup(mem, dir))) {
        aegis_free(mem, sp);
        return agent_errmsg(errmsg, errlen, -ENOMEM, "spool %s: out of memory", dir);
    }
    sp->mem = mem;
    sp->io = io;
    sp->cfg = c;
    rv = load_state(sp);
    if (rv != 0) {
        agent_errmsg(errmsg, errlen, rv, "spool %s: cannot read %s: %s", dir, STATE_NAME,
                     aegis_strerror(rv));
        goto fail;
    }
    int changed = sp->state_reset;
    rv = scan_dir(sp, &changed);
    if (rv != 0) {
        agent_errmsg(errmsg, errlen, rv, "spool %s: cannot scan: %s", dir, aegis_strerror(rv));
        goto fail;
    }
    uint64_t next = sp->n ? sp->idx[sp->n - 1].id + 1 : 1;
    sp->next_id = next > sp->reserved ? next : sp->reserved;
    rv = make_room(sp, 0, 0, &changed);
    if (rv == 0 && changed)
        rv = save_state(sp);
    if (rv != 0) {
        agent_errmsg(errmsg, errlen, rv, "spool %s: cannot update: %s", dir, aegis_strerror(rv));
        goto fail;
    }
    *pspool = sp;
    return 0;
fail:
    agent_spool_del(sp);
    return rv;
}

void agent_spool_del(struct agent_spool *sp)
{
    if (!sp)
        return;
    aegis_free(sp->mem, sp->idx);
    aegis_free(sp->mem, sp->dir);
    aegis_free(sp->mem, sp);
}

static int write_batch(struct agent_spool *sp, uint64_t id, const uint8_t *h, const void *data,
                       size_t len)
{
    const struct agent_io *io = sp->io;
    char path[PATH_MAX], tmp[PATH_MAX];
    int rv = batch_path(sp, id, path, sizeof(path));
    if (rv != 0 || snprintf(tmp, sizeof(tmp), "%s" TMP_SUFFIX, path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int fd = io->open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600, io->user_data);
    if (fd < 0)
        return fd;
    rv = agent_io_write_all(io, fd, h, AGENT_SPOOL_HEADER_SIZE, 0);
    if (rv == 0)
        rv = agent_io_write_all(io, fd, data, len, AGENT_SPOOL_HEADER_SIZE);
    if (rv == 0)
        rv = io->fdatasync(fd, io->user_data);
    int crv = io->close(fd, io->user_data);
    if (rv == 0)
        rv = crv;
    if (rv == 0)
        rv = io->rename(tmp, path, io->user_data);
    if (rv != 0) {
        io->unlink(tmp, io->user_data);
        return rv;
    }
    rv = agent_io_fsync_dir(io, sp->dir);
    if (rv != 0) {
        /* Not known to be durable: take it back rather than report it. */
        io->unlink(path, io->user_data);
    }
    return rv;
}

int agent_spool_append(struct agent_spool *sp, const void *data, size_t len, aegis_tstamp created,
                       uint64_t *pid)
{
    if (!sp || (!data && len) || !pid)
        return -EINVAL;
    if (len > sp->cfg.max_batch || file_size((uint32_t)len) > sp->cfg.max_bytes)
        return AEGIS_ERR_TOO_LARGE;
    int rv = reserve_one(sp);
    if (rv != 0)
        return rv;
    int dirty = 0;
    rv = make_room(sp, file_size((uint32_t)len), 1, &dirty);
    uint64_t id = sp->next_id;
    if (rv == 0 && id >= sp->reserved) {
        sp->reserved = id + ID_BLOCK;
        dirty = 1;
    }
    /* Persist drops and the id reservation before the batch exists, so no
     * id can be handed out twice and no drop goes uncounted. */
    if (dirty) {
        int srv = save_state(sp);
        if (rv == 0)
            rv = srv;
    }
    if (rv != 0)
        return rv;
    uint8_t h[AGENT_SPOOL_HEADER_SIZE];
    encode_header(h, id, created, data, (uint32_t)len);
    /* Never reuse an id, even one whose write failed: a file we could not
     * take back might still surface after a crash. */
    sp->next_id = id + 1;
    rv = write_batch(sp, id, h, data, len);
    if (rv != 0)
        return rv;
    sp->idx[sp->n++] = (struct index_entry){id, created, (uint32_t)len};
    sp->bytes += file_size((uint32_t)len);
    *pid = id;
    return 0;
}

int agent_spool_next(const struct agent_spool *sp, uint64_t after, struct agent_spool_batch *pbatch)
{
    if (!sp || !pbatch)
        return -EINVAL;
    if (after == UINT64_MAX)
        return AEGIS_ERR_NOT_FOUND;
    size_t i = lower_bound(sp, after + 1);
    if (i >= sp->n)
        return AEGIS_ERR_NOT_FOUND;
    pbatch->id = sp->idx[i].id;
    pbatch->created = sp->idx[i].created;
    pbatch->len = sp->idx[i].len;
    return 0;
}

int agent_spool_read(struct agent_spool *sp, uint64_t id, void *buf, size_t cap, size_t *plen)
{
    if (!sp || !plen || (!buf && cap))
        return -EINVAL;
    size_t i;
    if (!find(sp, id, &i))
        return AEGIS_ERR_NOT_FOUND;
    uint32_t len = sp->idx[i].len;
    if (len > cap)
        return AEGIS_ERR_TOO_LARGE;
    const struct agent_io *io = sp->io;
    char path[PATH_MAX];
    int rv = batch_path(sp, id, path, sizeof(path));
    if (rv != 0)
        return rv;
    int fd = io->open(path, O_RDONLY | O_NOFOLLOW, 0, io->user_data);
    int bad = 0;
    if (fd == -ENOENT) {
        bad = 1; /* deleted behind our back: nothing to send */
    } else if (fd < 0) {
        return fd;
    } else {
        struct stat st;
        uint8_t h[AGENT_SPOOL_HEADER_SIZE];
        size_t got_h = 0, got = 0;
        rv = io->fstat(fd, &st, io->user_data);
        if (rv == 0)
            rv = agent_io_read_full(io, fd, h, sizeof(h), 0, &got_h);
        if (rv == 0 && got_h == sizeof(h) && check_header(h, id, (uint64_t)st.st_size) &&
            agent_get32(h + 24) == len)
            rv = agent_io_read_full(io, fd, buf, len, AGENT_SPOOL_HEADER_SIZE, &got);
        else if (rv == 0)
            bad = 1;
        io->close(fd, io->user_data);
        if (rv != 0)
            return rv;
        if (!bad) {
            uint32_t crc = agent_crc32c_update(0, h, 28);
            bad = got != len || agent_get32(h + 28) != agent_crc32c_update(crc, buf, len);
        }
    }
    if (bad) {
        rv = discard(sp, i, 1);
        if (rv == 0)
            rv = save_state(sp);
        return rv != 0 ? rv : AEGIS_ERR_MALFORMED;
    }
    *plen = len;
    return 0;
}

int agent_spool_commit(struct agent_spool *sp, uint64_t id)
{
    if (!sp)
        return -EINVAL;
    size_t i;
    if (!find(sp, id, &i))
        return AEGIS_ERR_NOT_FOUND;
    char path[PATH_MAX];
    int rv = batch_path(sp, id, path, sizeof(path));
    if (rv == 0)
        rv = sp->io->unlink(path, sp->io->user_data);
    if (rv != 0 && rv != -ENOENT)
        return rv;
    /* No directory fsync: if the unlink is lost in a crash, the batch is sent
     * again and the server deduplicates it by batch id. */
    remove_at(sp, i);
    return 0;
}

void agent_spool_stats(const struct agent_spool *sp, struct agent_spool_stats *pstats)
{
    memset(pstats, 0, sizeof(*pstats));
    if (!sp)
        return;
    pstats->batches = sp->n;
    pstats->bytes = sp->bytes;
    pstats->dropped_batches = sp->dropped_batches;
    pstats->dropped_bytes = sp->dropped_bytes;
    pstats->corrupt_batches = sp->corrupt_batches;
    pstats->corrupt_bytes = sp->corrupt_bytes;
    pstats->state_reset = sp->state_reset;
}
