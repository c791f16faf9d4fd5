/*
 * libFuzzer target: policy JSON parser and validator (untrusted input from
 * operators' files and the control server).
 */
#include <aegis/policy.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct aegis_policy_limits lim;
    aegis_policy_limits_default(&lim);
    lim.max_json_bytes = 1u << 20;
    struct aegis_policy *p = NULL;
    char err[256];
    int rv = aegis_policy_from_json((const char *)data, size, &lim, NULL, &p, err, sizeof(err));
    if (rv == 0) {
        /* Whatever parses must also validate and describe itself. */
        if (aegis_policy_validate(p, &lim, err, sizeof(err)) != 0)
            __builtin_trap();
        for (size_t l = 0; l < AEGIS_POLICY_NLISTS; l++) {
            for (size_t i = 0; i < p->nrules[l]; i++) {
                char buf[64];
                aegis_policy_format_cidr(&p->rules[l][i], buf, sizeof(buf));
                struct aegis_policy_rule r;
                memset(&r, 0, sizeof(r));
                if (aegis_policy_parse_cidr(buf, &r, NULL, 0) != 0 ||
                    r.prefixlen != p->rules[l][i].prefixlen)
                    __builtin_trap();
            }
        }
        aegis_policy_del(p);
    } else if (p != NULL) {
        __builtin_trap(); /* must not be set on failure */
    }
    return 0;
}
