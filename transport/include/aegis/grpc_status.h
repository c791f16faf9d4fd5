/*
 * gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
 * These travel on the wire in `grpc-status`; they are not Aegis error codes.
 */
#ifndef AEGIS_GRPC_STATUS_H
#define AEGIS_GRPC_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

enum aegis_grpc_status {
    AEGIS_GRPC_OK = 0,
    AEGIS_GRPC_CANCELLED = 1,
    AEGIS_GRPC_UNKNOWN = 2,
    AEGIS_GRPC_INVALID_ARGUMENT = 3,
    AEGIS_GRPC_DEADLINE_EXCEEDED = 4,
    AEGIS_GRPC_NOT_FOUND = 5,
    AEGIS_GRPC_ALREADY_EXISTS = 6,
    AEGIS_GRPC_PERMISSION_DENIED = 7,
    AEGIS_GRPC_RESOURCE_EXHAUSTED = 8,
    AEGIS_GRPC_FAILED_PRECONDITION = 9,
    AEGIS_GRPC_ABORTED = 10,
    AEGIS_GRPC_OUT_OF_RANGE = 11,
    AEGIS_GRPC_UNIMPLEMENTED = 12,
    AEGIS_GRPC_INTERNAL = 13,
    AEGIS_GRPC_UNAVAILABLE = 14,
    AEGIS_GRPC_DATA_LOSS = 15,
    AEGIS_GRPC_UNAUTHENTICATED = 16,
};

#define AEGIS_GRPC_STATUS_MAX 16

/* aegis_grpc_status_name returns "OK", "CANCELLED", ... or "UNKNOWN_STATUS"
 * for values outside 0..16. Static string. */
const char *aegis_grpc_status_name(int status);

#ifdef __cplusplus
}
#endif
#endif
