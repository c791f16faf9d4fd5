/*
 * Aegis error codes.
 *
 * Functions that can fail return int: 0 on success, -errno for operating
 * system type failures (-ENOMEM, -EINVAL, -EAGAIN, ...) or one of the
 * AEGIS_ERR_* values below (all <= -1000) for domain failures. Wire status
 * (gRPC codes) is a different thing and never travels in these integers.
 */
#ifndef AEGIS_ERR_H
#define AEGIS_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message). Values are stable: append, never renumber. */
#define AEGIS_ERR_LIST(X)                                                                          \
    X(AEGIS_ERR_INTERNAL, -1000, "internal error")                                                 \
    X(AEGIS_ERR_MALFORMED, -1001, "malformed input")                                               \
    X(AEGIS_ERR_TOO_LARGE, -1002, "input exceeds its size limit")                                  \
    X(AEGIS_ERR_LIMIT, -1003, "a configured limit was reached")                                    \
    X(AEGIS_ERR_STATE, -1004, "operation not valid in the current state")                          \
    X(AEGIS_ERR_NOT_FOUND, -1005, "not found")                                                     \
    X(AEGIS_ERR_EXISTS, -1006, "already exists")                                                   \
    X(AEGIS_ERR_CRYPTO, -1007, "cryptographic operation failed")                                   \
    X(AEGIS_ERR_SIGNATURE, -1008, "signature verification failed")                                 \
    X(AEGIS_ERR_CERT, -1009, "certificate is invalid or unacceptable")                             \
    X(AEGIS_ERR_PIN_MISMATCH, -1010, "server key does not match the pinned SPKI hash")             \
    X(AEGIS_ERR_TLS, -1011, "TLS handshake failed")                                                \
    X(AEGIS_ERR_QUIC, -1012, "QUIC protocol error")                                                \
    X(AEGIS_ERR_HTTP3, -1013, "HTTP/3 protocol error")                                             \
    X(AEGIS_ERR_CLOSED, -1014, "connection or stream closed")                                      \
    X(AEGIS_ERR_TIMEOUT, -1015, "timed out")                                                       \
    X(AEGIS_ERR_REFUSED, -1016, "refused by the peer")                                             \
    X(AEGIS_ERR_UNSUPPORTED, -1017, "not supported")                                               \
    X(AEGIS_ERR_DECOMPRESS, -1018, "decompression failed")                                         \
    X(AEGIS_ERR_DATABASE, -1019, "database error")                                                 \
    X(AEGIS_ERR_BPF, -1020, "BPF operation failed")                                                \
    X(AEGIS_ERR_CONFIG, -1021, "invalid configuration")                                            \
    X(AEGIS_ERR_UNAUTHENTICATED, -1022, "not authenticated")                                       \
    X(AEGIS_ERR_PERMISSION, -1023, "permission denied by policy")                                  \
    X(AEGIS_ERR_EXPIRED, -1024, "expired")                                                         \
    X(AEGIS_ERR_REPLAY, -1025, "replayed message")                                                 \
    X(AEGIS_ERR_UNAVAILABLE, -1026, "temporarily unavailable, retry later")

enum aegis_err {
#define AEGIS_ERR_ENUM_(name, value, msg) name = (value),
    AEGIS_ERR_LIST(AEGIS_ERR_ENUM_)
#undef AEGIS_ERR_ENUM_
};

/*
 * aegis_strerror returns a static, human-readable description of rv: an
 * AEGIS_ERR_* value, a negative errno value, or 0 ("success"). Unknown values
 * give "unknown error". Thread-safe; never returns NULL.
 */
const char *aegis_strerror(int rv);

/* aegis_errname returns the symbolic name ("AEGIS_ERR_LIMIT", "ENOMEM") or NULL. */
const char *aegis_errname(int rv);

#ifdef __cplusplus
}
#endif
#endif
