#include "ctl_kind.h"

#include <stddef.h>
#include <strings.h>

static const char *const names[CTL_KIND_MAX + 1] = {
    "", "policy_bundle", "network_block", "bpf_object", "agent_binary", "file",
};

const char *ctl_kind_name(int kind)
{
    return kind >= 1 && kind <= CTL_KIND_MAX ? names[kind] : "";
}

int ctl_kind_from_name(const char *name)
{
    if (!name)
        return 0;
    for (int k = 1; k <= CTL_KIND_MAX; k++)
        if (strcasecmp(names[k], name) == 0)
            return k;
    return 0;
}

const char *ctl_command_kind(const Aegis__V1__Command *c)
{
    if (!c || c->payload_case == AEGIS__V1__COMMAND__PAYLOAD__NOT_SET)
        return NULL;
    /* The oneof's case value is the member's field number. */
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &aegis__v1__command__descriptor, (unsigned)c->payload_case);
    return f && (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ? f->name : NULL;
}
