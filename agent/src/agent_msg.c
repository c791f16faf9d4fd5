#include "agent_msg.h"

#include <aegis/proto.h>

int agent_msg_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                     const struct aegis_mem *mem, void **pmsg)
{
    ProtobufCMessage *m = NULL;
    int rv = aegis_proto_unpack(desc, buf, len, AGENT_MSG_MAX, mem, &m);
    if (rv == 0)
        *pmsg = m;
    return rv;
}

void agent_msg_free(void *msg, const struct aegis_mem *mem)
{
    aegis_proto_free(msg, mem);
}

int agent_msg_pack(const void *msg, const struct aegis_mem *mem, uint8_t **pbuf, size_t *plen)
{
    return aegis_proto_pack(msg, mem, pbuf, plen);
}
