/*
 * Fuzz target: arbitrary bytes as an agent journal file. Opening must never
 * crash, and whatever it recovers must be exactly a valid journal: a good
 * header, records with valid CRCs and consecutive sequences, handed to the
 * callback in order, and nothing after them left in the file. Appending
 * after recovery must then work and survive a reopen.
 */
#include "agent_bytes.h"
#include "agent_crc32c.h"
#include "agent_journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KIND 0x5a5a4655u /* "UFZZ" */
#define MAX_RECORD 4096u
/* Inputs are files; keep them to a size a journal could plausibly be. */
#define MAX_INPUT (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];
static char path[320];
static char compact[340];

static void cleanup(void)
{
    unlink(path);
    unlink(compact);
    rmdir(dir);
}

static void init_paths(void)
{
    if (dir[0])
        return;
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/aegis-fuzz-journal-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof(path), "%s/j", dir);
    snprintf(compact, sizeof(compact), "%s.compact", path);
    atexit(cleanup);
}

struct collected {
    uint64_t n;
    uint64_t first_seq, last_seq;
    uint32_t crc; /* running CRC over every payload, in order */
};

static int collect(uint64_t seq, const uint8_t *p, size_t len, void *ud)
{
    struct collected *c = ud;
    if (c->n == 0)
        c->first_seq = seq;
    else if (seq != c->last_seq + 1)
        abort();
    c->last_seq = seq;
    c->n++;
    c->crc = agent_crc32c_update(c->crc, p, len);
    return 0;
}

/* Independent check of the file left behind: returns the record count, or
 * aborts if anything is off. */
static uint64_t verify_file(uint32_t *pcrc)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        abort();
    static uint8_t buf[MAX_INPUT + AGENT_JOURNAL_HEADER_SIZE + 8192];
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n < (ssize_t)AGENT_JOURNAL_HEADER_SIZE)
        abort();
    size_t size = (size_t)n;
    if (memcmp(buf, "AEGISJNL", 8) != 0 || agent_get32(buf + 12) != KIND ||
        agent_get32(buf + 28) != agent_crc32c_update(0, buf, 28))
        abort();
    uint64_t seq = agent_get64(buf + 16), count = 0;
    uint32_t crc = 0;
    size_t off = AGENT_JOURNAL_HEADER_SIZE;
    while (off < size) {
        if (size - off < AGENT_JOURNAL_RECORD_OVERHEAD)
            abort(); /* a torn tail was left behind */
        uint32_t len = agent_get32(buf + off);
        if (len > MAX_RECORD || size - off - AGENT_JOURNAL_RECORD_OVERHEAD < len)
            abort();
        const uint8_t *p = buf + off + AGENT_JOURNAL_RECORD_OVERHEAD;
        uint32_t c = agent_crc32c_update(0, buf + off, 4);
        c = agent_crc32c_update(c, buf + off + 8, 8);
        c = agent_crc32c_update(c, p, len);
        if (c != agent_get32(buf + off + 4) || agent_get64(buf + off + 8) != seq)
            abort();
        crc = agent_crc32c_update(crc, p, len);
        seq++;
        count++;
        off += AGENT_JOURNAL_RECORD_OVERHEAD + len;
    }
    *pcrc = crc;
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    init_paths();
    unlink(compact);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();

    struct agent_journal_config cfg = {
        .kind = KIND, .max_record = MAX_RECORD, .max_bytes = 2 * MAX_INPUT};
    struct collected c = {0, 0, 0, 0};
    struct agent_journal_recovery rec;
    struct agent_journal *j = NULL;
    char err[256];
    int rv = agent_journal_open(path, &cfg, NULL, NULL, collect, &c, &rec, err, sizeof(err), &j);
    if (rv != 0) {
        /* Refusing is fine (not a journal, wrong kind, newer version), but
         * only with an explanation, and only for a file that has a header. */
        if (!err[0] || size < AGENT_JOURNAL_HEADER_SIZE)
            abort();
        return 0;
    }
    if (rec.records != c.n)
        abort();
    uint32_t crc;
    if (verify_file(&crc) != c.n || crc != c.crc)
        abort();

    /* The recovered journal accepts appends that survive a reopen. */
    static const uint8_t extra[] = "appended after recovery";
    rv = agent_journal_append(j, extra, sizeof(extra), NULL);
    agent_journal_del(j);
    if (rv != 0) /* max_bytes is twice the largest input: always room */
        abort();
    struct collected c2 = {0, 0, 0, 0};
    j = NULL;
    if (agent_journal_open(path, &cfg, NULL, NULL, collect, &c2, &rec, err, sizeof(err), &j) != 0)
        abort();
    if (c2.n != c.n + 1 || rec.tail != AGENT_JOURNAL_TAIL_CLEAN)
        abort();
    agent_journal_del(j);
    return 0;
}
