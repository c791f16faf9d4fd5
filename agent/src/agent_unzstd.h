/*
 * agent_unzstd: the agent's only zstd user. Streaming, bounded decoding of
 * one artifact file into another.
 */
#ifndef AGENT_UNZSTD_H
#define AGENT_UNZSTD_H

#include <stddef.h>
#include <stdint.h>

/*
 * agent_unzstd_fd decodes the zstd data readable from ifd into ofd. The
 * output must be exactly expect bytes (checked while writing, so a
 * decompression bomb stops at expect + 1, never later) and expect must not
 * exceed cap. Trailing garbage after the frame(s) is refused. Errors:
 * AEGIS_ERR_TOO_LARGE (expect > cap or output longer than expect),
 * AEGIS_ERR_DECOMPRESS (corrupt input, shorter output), -ENOMEM, -errno.
 */
int agent_unzstd_fd(int ifd, int ofd, uint64_t expect, uint64_t cap, char *reason,
                    size_t reasonlen);

/* agent_copy_fd copies exactly n bytes from ifd to ofd (both from the
 * current offsets). AEGIS_ERR_DECOMPRESS if ifd ends early; -errno. */
int agent_copy_fd(int ifd, int ofd, uint64_t n, char *reason, size_t reasonlen);

#endif
