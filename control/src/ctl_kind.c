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
