/*
 * agent_msg: protobuf (un)packing for the agent's files, kept in one place
 * so that files using the transport (<aegis/rpc.h>) need not include
 * <aegis/proto.h> as well. Thin wrappers over aegis_proto_unpack/pack with
 * the same contracts; the generated message headers are included directly.
 */
#ifndef AGENT_MSG_H
#define AGENT_MSG_H

#include <aegis/mem.h>
#include <aegis/v1/agent.pb-c.h>
#include <aegis/v1/command.pb-c.h>

#include <stddef.h>
#include <stdint.h>

/* Largest message the agent accepts from the wire (DESIGN §8). */
#define AGENT_MSG_MAX (4u << 20)

/* agent_msg_unpack: see aegis_proto_unpack (max_len AGENT_MSG_MAX). */
int agent_msg_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                     const struct aegis_mem *mem, void **pmsg);
/* agent_msg_free: see aegis_proto_free. NULL is fine. */
void agent_msg_free(void *msg, const struct aegis_mem *mem);
/* agent_msg_pack: see aegis_proto_pack; free *pbuf with aegis_free(mem, .). */
int agent_msg_pack(const void *msg, const struct aegis_mem *mem, uint8_t **pbuf, size_t *plen);

#endif
