/*
 * Tables generated at build time by proto/cmake/gen_methods.cmake into
 * ${CMAKE_BINARY_DIR}/proto-gen/proto_methods_gen.c. Private to aegis_proto.
 */
#ifndef AEGIS_PROTO_GEN_H
#define AEGIS_PROTO_GEN_H

#include <aegis/proto.h>

/* Every RPC, sorted by path (byte order). */
extern const struct aegis_method aegis_proto_gen_methods[];
extern const size_t aegis_proto_gen_nmethods;
/* Every generated message descriptor. */
extern const ProtobufCMessageDescriptor *const aegis_proto_gen_messages[];
extern const size_t aegis_proto_gen_nmessages;
/* sizeof the largest generated message struct. */
extern const size_t aegis_proto_gen_max_struct;

#endif
