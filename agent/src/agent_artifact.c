#include "agent_artifact.h"
#include "agent_io.h"
#include "agent_msg.h"
#include "agent_unzstd.h"

#include <aegis/err.h>
#include <aegis/hex.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Read size when hashing a file: big enough to amortise syscalls, small
 * enough for the agent's memory budget. */
#define HASH_CHUNK (64u << 10)

int agent_artifact_verify_header(const Aegis__V1__ArtifactHeader *hdr,
                                 const struct agent_artifact_key *keys, size_t nkeys,
                                 const uint8_t *expect_sha, int expect_kind,
                                 const struct aegis_mem *mem, struct agent_artifact_meta *meta,
                                 char *reason, size_t reasonlen)
{
    if (hdr == NULL || meta == NULL || (keys == NULL && nkeys > 0))
        return -EINVAL;
    const struct agent_artifact_key *key = NULL;
    for (size_t i = 0; i < nkeys; i++)
        if (strcmp(keys[i].id, hdr->signing_key_id) == 0)
            key = &keys[i];
    if (key == NULL)
        return agent_errmsg(reason, reasonlen, AEGIS_ERR_SIGNATURE,
                            "artifact refused: signed by unknown key id \"%.32s\" (this agent "
                            "trusts %zu artifact key(s) from enrollment)",
                            hdr->signing_key_id, nkeys);
    if (agent_ed25519_verify(key->pub, hdr->statement.data, hdr->statement.len, hdr->signature.data,
                             hdr->signature.len) != 0)
        return agent_errmsg(reason, reasonlen, AEGIS_ERR_SIGNATURE,
                            "artifact refused: bad signature over the statement (key %s)", key->id);
    Aegis__V1__ArtifactStatement *st = NULL;
    int rv = agent_msg_unpack(&aegis__v1__artifact_statement__descriptor, hdr->statement.data,
                              hdr->statement.len, mem, (void **)&st);
    if (rv != 0)
        return agent_errmsg(reason, reasonlen, rv == -ENOMEM ? rv : AEGIS_ERR_MALFORMED,
                            "artifact refused: signed statement does not parse (%s)",
                            aegis_strerror(rv));
    struct agent_artifact_meta m;
    memset(&m, 0, sizeof(m));
    snprintf(m.name, sizeof(m.name), "%s", st->name);
    snprintf(m.version, sizeof(m.version), "%s", st->version);
    snprintf(m.key_id, sizeof(m.key_id), "%s", key->id);
    m.kind = (int)st->kind;
    m.compression = (int)st->compression;
    m.size = st->size;
    m.uncompressed_size = st->uncompressed_size;
    if (st->sha256.len != AGENT_SHA256_LEN) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_MALFORMED,
                          "artifact refused: statement sha256 is %zu bytes, want 32",
                          st->sha256.len);
        goto out;
    }
    memcpy(m.sha256, st->sha256.data, AGENT_SHA256_LEN);
    if (expect_sha && memcmp(expect_sha, m.sha256, AGENT_SHA256_LEN) != 0) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_PERMISSION,
                          "artifact refused: the signed statement is for another artifact "
                          "(sha256 differs from the one the command names)");
        goto out;
    }
    if (m.kind <= AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_UNSPECIFIED ||
        m.kind > AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_FILE) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_MALFORMED,
                          "artifact refused: kind %d is not one this agent knows", m.kind);
        goto out;
    }
    if (expect_kind != 0 && expect_kind != m.kind) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_PERMISSION,
                          "artifact refused: signed kind %d differs from the command's kind %d",
                          m.kind, expect_kind);
        goto out;
    }
    if (m.size > AGENT_ARTIFACT_MAX_SIZE || m.uncompressed_size > AGENT_ARTIFACT_MAX_SIZE) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_TOO_LARGE,
                          "artifact refused: size %llu / uncompressed %llu over the 1 GiB cap",
                          (unsigned long long)m.size, (unsigned long long)m.uncompressed_size);
        goto out;
    }
    if (m.compression == AEGIS__V1__COMPRESSION__COMPRESSION_NONE) {
        if (m.uncompressed_size != 0 && m.uncompressed_size != m.size) {
            rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_MALFORMED,
                              "artifact refused: uncompressed but sizes differ (%llu vs %llu)",
                              (unsigned long long)m.size, (unsigned long long)m.uncompressed_size);
            goto out;
        }
        m.uncompressed_size = m.size;
    } else if (m.compression != AEGIS__V1__COMPRESSION__COMPRESSION_ZSTD) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_UNSUPPORTED,
                          "artifact refused: unknown compression %d", m.compression);
        goto out;
    }
    *meta = m;
    rv = 0;
out:
    agent_msg_free(st, mem);
    return rv;
}

int agent_artifact_verify_file(const struct agent_artifact_meta *meta, const char *path,
                               char *reason, size_t reasonlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return agent_errmsg(reason, reasonlen, -errno, "cannot open artifact %s: %s", path,
                            strerror(errno));
    struct stat st;
    int rv = 0;
    if (fstat(fd, &st) != 0) {
        rv = agent_errmsg(reason, reasonlen, -errno, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if ((uint64_t)st.st_size < meta->size) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_MALFORMED,
                          "artifact refused: truncated (%llu of %llu bytes)",
                          (unsigned long long)st.st_size, (unsigned long long)meta->size);
        goto out;
    }
    if ((uint64_t)st.st_size > meta->size) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_MALFORMED,
                          "artifact refused: too long (%llu bytes, statement says %llu)",
                          (unsigned long long)st.st_size, (unsigned long long)meta->size);
        goto out;
    }
    static uint8_t buf[HASH_CHUNK];
    struct agent_sha256 ctx;
    if ((rv = agent_sha256_init(&ctx)) != 0)
        goto out;
    uint64_t off = 0;
    while (off < meta->size) {
        ssize_t n = pread(fd, buf, sizeof(buf), (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rv = agent_errmsg(reason, reasonlen, n < 0 ? -errno : AEGIS_ERR_MALFORMED,
                              "cannot read artifact %s at %llu", path, (unsigned long long)off);
            uint8_t junk[AGENT_SHA256_LEN];
            agent_sha256_final(&ctx, junk);
            goto out;
        }
        agent_sha256_update(&ctx, buf, (size_t)n);
        off += (uint64_t)n;
    }
    uint8_t h[AGENT_SHA256_LEN];
    if ((rv = agent_sha256_final(&ctx, h)) != 0)
        goto out;
    if (memcmp(h, meta->sha256, AGENT_SHA256_LEN) != 0)
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_SIGNATURE,
                          "artifact refused: SHA-256 of the content does not match the signed "
                          "statement (tampered or corrupted)");
out:
    close(fd);
    return rv;
}

int agent_artifact_paths(const char *dir, const uint8_t sha[AGENT_SHA256_LEN], char *part,
                         char *blob, size_t len)
{
    char hex[2 * AGENT_SHA256_LEN + 1];
    aegis_hex_encode(sha, AGENT_SHA256_LEN, hex, sizeof(hex));
    int n1 = snprintf(part, len, "%s/%s.part", dir, hex);
    int n2 = snprintf(blob, len, "%s/%s.blob", dir, hex);
    return (n1 < 0 || (size_t)n1 >= len || n2 < 0 || (size_t)n2 >= len) ? -ENAMETOOLONG : 0;
}

uint64_t agent_artifact_part_size(const char *part)
{
    struct stat st;
    return stat(part, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
}

int agent_artifact_append(const char *part, uint64_t off, const uint8_t *data, size_t len,
                          uint64_t limit)
{
    if (off + len > limit || off + len < off)
        return AEGIS_ERR_TOO_LARGE;
    int fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rv = 0;
    if (fstat(fd, &st) != 0)
        rv = -errno;
    else if ((uint64_t)st.st_size != off)
        rv = AEGIS_ERR_MALFORMED;
    else
        rv = agent_io_write_all(NULL, fd, data, len, (off_t)off);
    close(fd);
    return rv;
}

int agent_artifact_decompress(const struct agent_artifact_meta *meta, const char *in,
                              const char *out, mode_t mode, char *reason, size_t reasonlen)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", out) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int ifd = open(in, O_RDONLY | O_CLOEXEC);
    if (ifd < 0)
        return agent_errmsg(reason, reasonlen, -errno, "cannot open %s: %s", in, strerror(errno));
    int ofd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (ofd < 0) {
        int e = errno;
        close(ifd);
        return agent_errmsg(reason, reasonlen, -e, "cannot create %s: %s", tmp, strerror(e));
    }
    int rv;
    if (meta->compression == AEGIS__V1__COMPRESSION__COMPRESSION_ZSTD)
        rv = agent_unzstd_fd(ifd, ofd, meta->uncompressed_size, AGENT_ARTIFACT_MAX_SIZE, reason,
                             reasonlen);
    else if (meta->compression == AEGIS__V1__COMPRESSION__COMPRESSION_NONE)
        rv = agent_copy_fd(ifd, ofd, meta->size, reason, reasonlen);
    else
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_UNSUPPORTED, "unknown compression %d",
                          meta->compression);
    if (rv == 0 && fchmod(ofd, mode) != 0)
        rv = -errno;
    if (rv == 0 && fsync(ofd) != 0)
        rv = agent_errmsg(reason, reasonlen, -errno, "cannot fsync %s: %s", tmp, strerror(errno));
    close(ifd);
    close(ofd);
    if (rv == 0 && rename(tmp, out) != 0)
        rv = agent_errmsg(reason, reasonlen, -errno, "cannot rename %s: %s", tmp, strerror(errno));
    if (rv != 0)
        unlink(tmp);
    return rv;
}
