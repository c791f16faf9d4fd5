#include <aegis/err.h>

#include <errno.h>
#include <string.h>

struct entry {
    int value;
    const char *name;
    const char *msg;
};

static const struct entry domain[] = {
#define ENTRY(name, value, msg) {value, #name, msg},
    AEGIS_ERR_LIST(ENTRY)
#undef ENTRY
};

static const struct entry *find(int rv)
{
    for (size_t i = 0; i < sizeof(domain) / sizeof(domain[0]); i++) {
        if (domain[i].value == rv)
            return &domain[i];
    }
    return NULL;
}

const char *aegis_strerror(int rv)
{
    if (rv == 0)
        return "success";
    if (rv <= -1000) {
        const struct entry *e = find(rv);
        return e ? e->msg : "unknown error";
    }
    if (rv < 0 && rv > -4096) {
        /* strerrordesc_np is thread-safe and static, unlike strerror(). */
        const char *s = strerrordesc_np(-rv);
        return s ? s : "unknown error";
    }
    return "unknown error";
}

const char *aegis_errname(int rv)
{
    if (rv <= -1000) {
        const struct entry *e = find(rv);
        return e ? e->name : NULL;
    }
    if (rv < 0 && rv > -4096)
        return strerrorname_np(-rv);
    return NULL;
}
