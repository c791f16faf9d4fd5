/*
 * Policy model: construction, CIDR text, validation, names.
 */
#include <aegis/err.h>
#include <aegis/policy.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_compile.h"

void aegis_policy_limits_default(struct aegis_policy_limits *limits)
{
    limits->max_rules = AEGIS_POLICY_DEFAULT_MAX_RULES;
    limits->min_ttl_seconds = AEGIS_POLICY_MIN_TTL_SECONDS;
    limits->max_json_bytes = AEGIS_POLICY_DEFAULT_MAX_JSON;
    limits->max_meta = AEGIS_POLICY_DEFAULT_MAX_META;
    limits->max_meta_bytes = AEGIS_POLICY_DEFAULT_MAX_META_BYTES;
}

int aegis_policy_new(const struct aegis_mem *mem, struct aegis_policy **ppolicy)
{
    if (!ppolicy)
        return -EINVAL;
    struct aegis_policy *p = aegis_calloc(mem, 1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->mem = mem;
    *ppolicy = p;
    return 0;
}

void aegis_policy_del(struct aegis_policy *policy)
{
    if (!policy)
        return;
    const struct aegis_mem *mem = policy->mem;
    for (size_t i = 0; i < AEGIS_POLICY_NLISTS; i++)
        aegis_free(mem, policy->rules[i]);
    for (size_t i = 0; i < policy->nmeta; i++) {
        aegis_free(mem, policy->meta[i].key);
        aegis_free(mem, policy->meta[i].value);
    }
    aegis_free(mem, policy->meta);
    aegis_free(mem, policy);
}

int aegis_policy_add_rule(struct aegis_policy *policy, enum aegis_policy_list list,
                          const struct aegis_policy_rule *rule)
{
    if (!policy || !rule || (unsigned)list >= AEGIS_POLICY_NLISTS)
        return -EINVAL;
    if (aegis_policy_rule_count(policy) >= AEGIS_POLICY_RULES_HARD_MAX)
        return AEGIS_ERR_LIMIT;
    if (policy->nrules[list] == policy->caprules[list]) {
        size_t cap = policy->caprules[list] ? policy->caprules[list] * 2 : 16;
        struct aegis_policy_rule *n =
            aegis_realloc(policy->mem, policy->rules[list], cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        policy->rules[list] = n;
        policy->caprules[list] = cap;
    }
    policy->rules[list][policy->nrules[list]++] = *rule;
    return 0;
}

int aegis_policy_add_meta(struct aegis_policy *policy, const char *key, const char *value)
{
    if (!policy || !key || !value)
        return -EINVAL;
    if (policy->nmeta == policy->capmeta) {
        size_t cap = policy->capmeta ? policy->capmeta * 2 : 4;
        struct aegis_policy_meta *n = aegis_realloc(policy->mem, policy->meta, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        policy->meta = n;
        policy->capmeta = cap;
    }
    char *k = aegis_strdup(policy->mem, key);
    char *v = aegis_strdup(policy->mem, value);
    if (!k || !v) {
        aegis_free(policy->mem, k);
        aegis_free(policy->mem, v);
        return -ENOMEM;
    }
    policy->meta[policy->nmeta].key = k;
    policy->meta[policy->nmeta].value = v;
    policy->nmeta++;
    return 0;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int aegis_policy_parse_cidr(const char *text, struct aegis_policy_rule *rule, char *err,
                            size_t errlen)
{
    char buf[64];
    if (!text || !rule)
        return -EINVAL;
    size_t len = strlen(text);
    if (len == 0 || len >= sizeof(buf)) {
        seterr(err, errlen, "empty or overlong");
        return -EINVAL;
    }
    memcpy(buf, text, len + 1);
    char *slash = strchr(buf, '/');
    long plen = -1;
    if (slash) {
        *slash = '\0';
        const char *d = slash + 1;
        if (*d == '\0' || strlen(d) > 3) {
            seterr(err, errlen, "bad prefix length");
            return -EINVAL;
        }
        plen = 0;
        for (; *d; d++) {
            if (*d < '0' || *d > '9') {
                seterr(err, errlen, "bad prefix length");
                return -EINVAL;
            }
            plen = plen * 10 + (*d - '0');
        }
    }
    uint8_t addr[16] = {0};
    uint8_t family;
    long maxlen;
    if (strchr(buf, ':')) {
        if (inet_pton(AF_INET6, buf, addr) != 1) {
            seterr(err, errlen, "not an IPv6 address");
            return -EINVAL;
        }
        family = 6;
        maxlen = 128;
    } else {
        if (inet_pton(AF_INET, buf, addr) != 1) {
            seterr(err, errlen, "not an IPv4 address");
            return -EINVAL;
        }
        family = 4;
        maxlen = 32;
    }
    if (plen < 0)
        plen = maxlen;
    if (plen > maxlen) {
        seterr(err, errlen, "prefix length %ld exceeds %ld", plen, maxlen);
        return -EINVAL;
    }
    for (long bit = plen; bit < maxlen; bit++) {
        if (addr[bit / 8] & (0x80u >> (bit % 8))) {
            seterr(err, errlen, "host bits set below the /%ld prefix", plen);
            return -EINVAL;
        }
    }
    rule->family = family;
    rule->prefixlen = (uint8_t)plen;
    memcpy(rule->addr, addr, sizeof(addr));
    return 0;
}

void aegis_policy_format_cidr(const struct aegis_policy_rule *rule, char *buf, size_t buflen)
{
    char a[INET6_ADDRSTRLEN] = "?";
    inet_ntop(rule->family == 6 ? AF_INET6 : AF_INET, rule->addr, a, sizeof(a));
    snprintf(buf, buflen, "%s/%u", a, rule->prefixlen);
}

size_t aegis_policy_rule_count(const struct aegis_policy *policy)
{
    size_t n = 0;
    for (size_t i = 0; i < AEGIS_POLICY_NLISTS; i++)
        n += policy->nrules[i];
    return n;
}

int aegis_policy_rule_at(const struct aegis_policy *policy, size_t global,
                         enum aegis_policy_list *plist, size_t *pindex)
{
    for (size_t i = 0; i < AEGIS_POLICY_NLISTS; i++) {
        if (global < policy->nrules[i]) {
            *plist = (enum aegis_policy_list)i;
            *pindex = global;
            return 0;
        }
        global -= policy->nrules[i];
    }
    return -ENOENT;
}

const char *aegis_policy_list_name(enum aegis_policy_list list)
{
    static const char *const names[] = {"edges", "allow_cidrs", "deny"};
    return (unsigned)list < AEGIS_POLICY_NLISTS ? names[list] : "?";
}

const char *aegis_policy_proto_name(uint32_t proto)
{
    static const char *const names[] = {"any", "tcp", "udp", "icmp"};
    return proto < 4 ? names[proto] : "?";
}

const char *aegis_policy_mode_name(uint32_t mode)
{
    static const char *const names[] = {"off", "deny", "allow"};
    return mode < 3 ? names[mode] : "?";
}

const char *aegis_policy_expiry_name(uint32_t action)
{
    static const char *const names[] = {"fail_open", "fail_closed"};
    return action < 2 ? names[action] : "?";
}

const char *aegis_policy_dir_name(uint32_t dir)
{
    static const char *const names[] = {"default", "egress", "ingress", "both"};
    return dir < 4 ? names[dir] : "?";
}

int aegis_policy_rule_egress(enum aegis_policy_list list, const struct aegis_policy_rule *rule)
{
    (void)list; /* DEFAULT includes egress for every list */
    return rule->direction != AEGIS_POLICY_DIR_INGRESS;
}

int aegis_policy_rule_ingress(enum aegis_policy_list list, const struct aegis_policy_rule *rule)
{
    if (rule->direction == AEGIS_POLICY_DIR_DEFAULT)
        return list != AEGIS_POLICY_EDGES;
    return rule->direction == AEGIS_POLICY_DIR_INGRESS || rule->direction == AEGIS_POLICY_DIR_BOTH;
}

static int check_rule(const struct aegis_policy_rule *r, const char *list, size_t i,
                      const struct aegis_policy_limits *lim, char *err, size_t errlen)
{
    if ((r->family != 4 && r->family != 6) || r->prefixlen > (r->family == 4 ? 32 : 128)) {
        seterr(err, errlen, "%s[%zu]: bad CIDR (family %u, prefix /%u)", list, i, r->family,
               r->prefixlen);
        return AEGIS_ERR_CONFIG;
    }
    if (r->proto > AEGIS_POLICY_PROTO_ICMP) {
        seterr(err, errlen, "%s[%zu]: unknown protocol %u (use tcp, udp, icmp or any)", list, i,
               r->proto);
        return AEGIS_ERR_CONFIG;
    }
    if (r->port > 65535) {
        seterr(err, errlen, "%s[%zu]: port %u out of range 0..65535 (0 = any)", list, i, r->port);
        return AEGIS_ERR_CONFIG;
    }
    if (r->port && r->proto == AEGIS_POLICY_PROTO_ICMP) {
        seterr(err, errlen, "%s[%zu]: icmp has no ports (set port 0)", list, i);
        return AEGIS_ERR_CONFIG;
    }
    if (r->direction > AEGIS_POLICY_DIR_BOTH) {
        seterr(err, errlen, "%s[%zu]: unknown direction %u", list, i, r->direction);
        return AEGIS_ERR_CONFIG;
    }
    if (r->ttl_seconds && r->ttl_seconds < lim->min_ttl_seconds) {
        seterr(err, errlen, "%s[%zu]: ttl_seconds %u below the minimum %u (0 = the snapshot's)",
               list, i, r->ttl_seconds, lim->min_ttl_seconds);
        return AEGIS_ERR_CONFIG;
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int aegis_policy_validate(const struct aegis_policy *policy,
                          const struct aegis_policy_limits *limits, char *err, size_t errlen)
{
    struct aegis_policy_limits defl;
    if (!limits) {
        aegis_policy_limits_default(&defl);
        limits = &defl;
    }
    if (!policy)
        return -EINVAL;
    if (policy->version < 1) {
        seterr(err, errlen, "version: must be >= 1");
        return AEGIS_ERR_CONFIG;
    }
    if (policy->ttl_seconds < limits->min_ttl_seconds) {
        seterr(err, errlen, "ttl_seconds: %u is below the minimum %u", policy->ttl_seconds,
               limits->min_ttl_seconds);
        return AEGIS_ERR_CONFIG;
    }
    if (policy->egress_mode > AEGIS_POLICY_MODE_ALLOW ||
        policy->ingress_mode > AEGIS_POLICY_MODE_ALLOW) {
        seterr(err, errlen, "%s: unknown mode (use off, deny or allow)",
               policy->egress_mode > AEGIS_POLICY_MODE_ALLOW ? "egress_mode" : "ingress_mode");
        return AEGIS_ERR_CONFIG;
    }
    if (policy->expiry_action > AEGIS_POLICY_FAIL_CLOSED) {
        seterr(err, errlen, "expiry_action: unknown (use fail_open or fail_closed)");
        return AEGIS_ERR_CONFIG;
    }
    size_t total = aegis_policy_rule_count(policy);
    size_t max = limits->max_rules < AEGIS_POLICY_RULES_HARD_MAX ? limits->max_rules
                                                                 : AEGIS_POLICY_RULES_HARD_MAX;
    if (total > max) {
        seterr(err, errlen,
               "%zu rules exceed the limit of %zu (split the policy or raise the limit)", total,
               max);
        return AEGIS_ERR_LIMIT;
    }
    if (policy->nmeta > limits->max_meta) {
        seterr(err, errlen, "meta: %zu entries exceed the limit of %zu", policy->nmeta,
               limits->max_meta);
        return AEGIS_ERR_LIMIT;
    }
    for (size_t i = 0; i < policy->nmeta; i++) {
        if (strlen(policy->meta[i].key) > limits->max_meta_bytes ||
            strlen(policy->meta[i].value) > limits->max_meta_bytes) {
            seterr(err, errlen, "meta[\"%.32s\"]: key or value longer than %zu bytes",
                   policy->meta[i].key, limits->max_meta_bytes);
            return AEGIS_ERR_LIMIT;
        }
    }
    for (size_t l = 0; l < AEGIS_POLICY_NLISTS; l++) {
        for (size_t i = 0; i < policy->nrules[l]; i++) {
            int rv =
                check_rule(&policy->rules[l][i], aegis_policy_list_name((enum aegis_policy_list)l),
                           i, limits, err, errlen);
            if (rv)
                return rv;
        }
    }
    if (total == 0)
        return 0;
    /* Unique ids: sort (id << 32 | global index) and compare neighbours. */
    uint64_t *ids = aegis_malloc(policy->mem, total * sizeof(*ids));
    if (!ids)
        return -ENOMEM;
    size_t n = 0, g = 0;
    for (size_t l = 0; l < AEGIS_POLICY_NLISTS; l++)
        for (size_t i = 0; i < policy->nrules[l]; i++, g++)
            if (policy->rules[l][i].id)
                ids[n++] = ((uint64_t)policy->rules[l][i].id << 32) | g;
    qsort(ids, n, sizeof(*ids), cmp_u32);
    int rv = 0;
    for (size_t i = 1; i < n; i++) {
        if (ids[i] >> 32 == ids[i - 1] >> 32) {
            enum aegis_policy_list la = AEGIS_POLICY_EDGES, lb = AEGIS_POLICY_EDGES;
            size_t ia = 0, ib = 0;
            aegis_policy_rule_at(policy, (size_t)(ids[i - 1] & 0xffffffffu), &la, &ia);
            aegis_policy_rule_at(policy, (size_t)(ids[i] & 0xffffffffu), &lb, &ib);
            seterr(err, errlen, "%s[%zu]: duplicate rule id %u (also used by %s[%zu])",
                   aegis_policy_list_name(lb), ib, (unsigned)(ids[i] >> 32),
                   aegis_policy_list_name(la), ia);
            rv = AEGIS_ERR_CONFIG;
            break;
        }
    }
    aegis_free(policy->mem, ids);
    if (rv)
        return rv;
    return aegis_policy_check_overlap(policy, err, errlen);
}
