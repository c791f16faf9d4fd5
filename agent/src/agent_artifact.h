/*
 * agent_artifact: verification and on-disk handling of artifacts (seed 001,
 * DESIGN §4): the signed statement is verified with a trusted artifact key
 * over its exact bytes, then parsed; the downloaded content is checked for
 * size and SHA-256 before anything decompresses or loads it.
 *
 * Downloads go to <dir>/<sha256 hex>.part, appended chunk by chunk; a
 * restarted fetch resumes from the partial file's size. A verified file is
 * renamed to <dir>/<sha256 hex>.blob; a failed one is deleted.
 *
 * No network and no clock; file I/O through plain libc.
 */
#ifndef AGENT_ARTIFACT_H
#define AGENT_ARTIFACT_H

#include "agent_crypto.h"

#include <aegis/mem.h>
#include <aegis/v1/artifact.pb-c.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* DESIGN §8: decompressed size is the declared size, hard cap 1 GiB; the
 * stored size is held to the same cap. */
#define AGENT_ARTIFACT_MAX_SIZE (UINT64_C(1) << 30)
/* Trusted artifact keys an agent holds (rotation needs two or three). */
#define AGENT_ARTIFACT_MAX_KEYS 16u
#define AGENT_ARTIFACT_NAME_MAX 128u

struct agent_artifact_key {
    char id[AGENT_KEY_ID_LEN + 1];
    uint8_t pub[AGENT_ED25519_PUB_LEN];
};

/* The parsed, verified statement. */
struct agent_artifact_meta {
    char name[AGENT_ARTIFACT_NAME_MAX];
    int kind;        /* Aegis__V1__ArtifactKind */
    int compression; /* Aegis__V1__Compression */
    uint64_t size;
    uint64_t uncompressed_size;
    uint8_t sha256[AGENT_SHA256_LEN];
    char version[64];
    char key_id[AGENT_KEY_ID_LEN + 1];
};

/*
 * agent_artifact_verify_header checks hdr: its signing key is one of keys,
 * the signature verifies over hdr->statement, the statement parses, its
 * SHA-256 equals expect_sha (the command's; NULL = don't check), its kind is
 * set (and equals expect_kind unless that is 0), sizes are within
 * AGENT_ARTIFACT_MAX_SIZE and consistent with the compression. Fills *meta.
 * Errors (reason gets a sentence): AEGIS_ERR_SIGNATURE (unknown key, bad
 * signature), AEGIS_ERR_MALFORMED (statement unparsable or inconsistent),
 * AEGIS_ERR_TOO_LARGE, AEGIS_ERR_PERMISSION (sha256 or kind differ from
 * what the command asked for), -EINVAL, -ENOMEM.
 */
int agent_artifact_verify_header(const Aegis__V1__ArtifactHeader *hdr,
                                 const struct agent_artifact_key *keys, size_t nkeys,
                                 const uint8_t *expect_sha, int expect_kind,
                                 const struct aegis_mem *mem, struct agent_artifact_meta *meta,
                                 char *reason, size_t reasonlen);

/*
 * agent_artifact_verify_file checks that the file at path has exactly
 * meta->size bytes and SHA-256 meta->sha256. Errors: AEGIS_ERR_MALFORMED
 * ("truncated": shorter; "too long"), AEGIS_ERR_SIGNATURE (hash mismatch:
 * tampered content), -errno.
 */
int agent_artifact_verify_file(const struct agent_artifact_meta *meta, const char *path,
                               char *reason, size_t reasonlen);

/* agent_artifact_paths writes <dir>/<hex>.part and <dir>/<hex>.blob. */
int agent_artifact_paths(const char *dir, const uint8_t sha[AGENT_SHA256_LEN], char *part,
                         char *blob, size_t len);

/* agent_artifact_part_size returns the size of the partial file (0 if
 * none): the offset a resumed FetchArtifact starts at. */
uint64_t agent_artifact_part_size(const char *part);

/*
 * agent_artifact_append writes data at offset off of the partial file
 * (created 0600). off must equal the current size (the server resends from
 * the offset we asked for); the file must stay within limit bytes.
 * Errors: AEGIS_ERR_MALFORMED (offset gap/overlap), AEGIS_ERR_TOO_LARGE,
 * -errno.
 */
int agent_artifact_append(const char *part, uint64_t off, const uint8_t *data, size_t len,
                          uint64_t limit);

/*
 * agent_artifact_decompress turns the verified stored file `in` into `out`
 * (mode 0600, fsync'd; written via out.tmp and renamed): a copy for
 * COMPRESSION_NONE, a bounded zstd decode for COMPRESSION_ZSTD that fails
 * as soon as the output would exceed meta->uncompressed_size (itself capped
 * at 1 GiB) and unless it ends exactly there. Errors: AEGIS_ERR_DECOMPRESS,
 * AEGIS_ERR_TOO_LARGE, AEGIS_ERR_UNSUPPORTED (unknown compression), -errno.
 */
int agent_artifact_decompress(const struct agent_artifact_meta *meta, const char *in,
                              const char *out, mode_t mode, char *reason, size_t reasonlen);

#endif
