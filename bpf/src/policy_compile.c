/*
 * Policy -> trie entries and slot configuration.
 */
#include <aegis/err.h>
#include <aegis/tstamp.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_compile.h"

void aegis_policy_rule_key(const struct aegis_policy_rule *rule, unsigned dir,
                           struct aegis_lpm_key *key)
{
    memset(key, 0, sizeof(*key));
    key->prefixlen = AEGIS_LPM_FIXED_BITS + rule->prefixlen;
    key->dir = (__u8)dir;
    key->proto = (__u8)rule->proto;
    key->port = (__u16)rule->port;
    key->family = rule->family;
    memcpy(key->addr, rule->addr, rule->family == 4 ? 4 : 16);
}

static int applies(enum aegis_policy_list list, const struct aegis_policy_rule *r, unsigned dir)
{
    return dir == AEGIS_ABI_EGRESS ? aegis_policy_rule_egress(list, r)
                                   : aegis_policy_rule_ingress(list, r);
}

int aegis_policy_compile(const struct aegis_policy *policy, uint64_t now_ns, uint64_t flow_idle_ns,
                         struct aegis_policy_compiled *out)
{
    memset(out, 0, sizeof(*out));
    size_t total = aegis_policy_rule_count(policy);
    struct aegis_slot_conf *conf = &out->conf;
    conf->version = policy->version;
    conf->service_id = policy->service_id;
    conf->expires_ns = now_ns + (uint64_t)policy->ttl_seconds * AEGIS_NS_PER_S;
    conf->flow_idle_ns = flow_idle_ns;
    conf->mode[AEGIS_ABI_EGRESS] = policy->egress_mode;
    conf->mode[AEGIS_ABI_INGRESS] = policy->ingress_mode;
    conf->expiry_action = policy->expiry_action;
    conf->nrules = (__u32)total;
    if (total == 0)
        return 0;
    out->keys = aegis_malloc(policy->mem, 2 * total * sizeof(*out->keys));
    out->vals = aegis_malloc(policy->mem, 2 * total * sizeof(*out->vals));
    if (!out->keys || !out->vals) {
        aegis_policy_compiled_free(policy->mem, out);
        return -ENOMEM;
    }
    for (unsigned dir = 0; dir < 2; dir++) {
        uint32_t mode = conf->mode[dir];
        if (mode == AEGIS_POLICY_MODE_OFF)
            continue;
        size_t g = 0;
        for (size_t l = 0; l < AEGIS_POLICY_NLISTS; l++) {
            int wanted =
                mode == AEGIS_POLICY_MODE_DENY ? l == AEGIS_POLICY_DENY : l != AEGIS_POLICY_DENY;
            for (size_t i = 0; i < policy->nrules[l]; i++, g++) {
                const struct aegis_policy_rule *r = &policy->rules[l][i];
                if (!wanted || !applies((enum aegis_policy_list)l, r, dir))
                    continue;
                aegis_policy_rule_key(r, dir, &out->keys[out->n]);
                struct aegis_lpm_val *v = &out->vals[out->n];
                memset(v, 0, sizeof(*v));
                v->rule = (__u32)g;
                if (r->ttl_seconds)
                    v->expires_ns = now_ns + (uint64_t)r->ttl_seconds * AEGIS_NS_PER_S;
                conf->classes[dir] |= AEGIS_CLASS_BIT(r->proto, r->port != 0);
                out->n++;
            }
        }
    }
    return 0;
}

void aegis_policy_compiled_free(const struct aegis_mem *mem, struct aegis_policy_compiled *c)
{
    if (!c)
        return;
    aegis_free(mem, c->keys);
    aegis_free(mem, c->vals);
    c->keys = NULL;
    c->vals = NULL;
    c->n = 0;
}

struct item {
    struct aegis_lpm_key key;
    uint32_t set; /* 0 allow (edges, allow_cidrs), 1 deny */
    uint32_t global;
};

static int cmp_item(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    if (x->set != y->set)
        return x->set < y->set ? -1 : 1;
    int c = memcmp(&x->key, &y->key, sizeof(x->key));
    if (c)
        return c;
    return x->global < y->global ? -1 : x->global > y->global;
}

int aegis_policy_check_overlap(const struct aegis_policy *policy, char *err, size_t errlen)
{
    size_t total = aegis_policy_rule_count(policy);
    if (total < 2)
        return 0;
    struct item *items = aegis_malloc(policy->mem, 2 * total * sizeof(*items));
    if (!items)
        return -ENOMEM;
    size_t n = 0, g = 0;
    for (size_t l = 0; l < AEGIS_POLICY_NLISTS; l++) {
        for (size_t i = 0; i < policy->nrules[l]; i++, g++) {
            const struct aegis_policy_rule *r = &policy->rules[l][i];
            for (unsigned dir = 0; dir < 2; dir++) {
                if (!applies((enum aegis_policy_list)l, r, dir))
                    continue;
                aegis_policy_rule_key(r, dir, &items[n].key);
                items[n].set = l == AEGIS_POLICY_DENY;
                items[n].global = (uint32_t)g;
                n++;
            }
        }
    }
    qsort(items, n, sizeof(*items), cmp_item);
    int rv = 0;
    for (size_t i = 1; i < n; i++) {
        if (items[i].set == items[i - 1].set &&
            memcmp(&items[i].key, &items[i - 1].key, sizeof(items[i].key)) == 0) {
            enum aegis_policy_list la = AEGIS_POLICY_EDGES, lb = AEGIS_POLICY_EDGES;
            size_t ia = 0, ib = 0;
            aegis_policy_rule_at(policy, items[i - 1].global, &la, &ia);
            aegis_policy_rule_at(policy, items[i].global, &lb, &ib);
            if (err && errlen)
                snprintf(err, errlen,
                         "%s[%zu]: same CIDR, protocol, port and direction (%s) as %s[%zu]; "
                         "merge or remove one",
                         aegis_policy_list_name(lb), ib,
                         items[i].key.dir == AEGIS_ABI_EGRESS ? "egress" : "ingress",
                         aegis_policy_list_name(la), ia);
            rv = AEGIS_ERR_CONFIG;
            break;
        }
    }
    aegis_free(policy->mem, items);
    return rv;
}
