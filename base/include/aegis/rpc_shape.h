/*
 * The four gRPC call shapes. Shared by proto/ (the method table says which
 * shape each method has) and transport/ (a handler is registered with one),
 * so that neither library has to depend on the other.
 */
#ifndef AEGIS_RPC_SHAPE_H
#define AEGIS_RPC_SHAPE_H

enum aegis_rpc_shape {
    AEGIS_RPC_UNARY = 0,            /* one request, one response */
    AEGIS_RPC_CLIENT_STREAMING = 1, /* request stream, one response */
    AEGIS_RPC_SERVER_STREAMING = 2, /* one request, response stream */
    AEGIS_RPC_BIDI = 3,             /* both stream */
};

#endif
