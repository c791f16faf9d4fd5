#include "agent_version.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static int parse(const char *s, uint32_t parts[AGENT_VERSION_MAX_PARTS], int *pn)
{
    if (s == NULL || *s == '\0' || strlen(s) >= AGENT_VERSION_MAX)
        return -EINVAL;
    int n = 0;
    const char *p = s;
    for (;;) {
        if (n == AGENT_VERSION_MAX_PARTS)
            return -EINVAL;
        uint32_t v = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (++digits > 9)
                return -EINVAL;
            v = v * 10 + (uint32_t)(*p - '0');
            p++;
        }
        if (digits == 0)
            return -EINVAL;
        parts[n++] = v;
        if (*p == '\0')
            break;
        if (*p != '.')
            return -EINVAL;
        p++;
    }
    for (int i = n; i < AGENT_VERSION_MAX_PARTS; i++)
        parts[i] = 0;
    *pn = n;
    return 0;
}

int agent_version_cmp(const char *a, const char *b, int *pcmp)
{
    uint32_t pa[AGENT_VERSION_MAX_PARTS], pb[AGENT_VERSION_MAX_PARTS];
    int na, nb;
    if (pcmp == NULL || parse(a, pa, &na) != 0 || parse(b, pb, &nb) != 0)
        return -EINVAL;
    for (int i = 0; i < AGENT_VERSION_MAX_PARTS; i++) {
        if (pa[i] != pb[i]) {
            *pcmp = pa[i] < pb[i] ? -1 : 1;
            return 0;
        }
    }
    *pcmp = 0;
    return 0;
}
