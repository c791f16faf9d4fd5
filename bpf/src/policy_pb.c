/*
 * MapSnapshot protobuf <-> struct aegis_policy (the only protobuf-c user in
 * bpf/). Enum numbers are the same on both sides by construction.
 */
#include <aegis/err.h>
#include <aegis/policy_pb.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int rule_from_pb(struct aegis_policy *p, enum aegis_policy_list list, size_t idx,
                        const Aegis__V1__Rule *in, char *err, size_t errlen)
{
    struct aegis_policy_rule r;
    memset(&r, 0, sizeof(r));
    char why[80];
    const char *cidr = in->cidr ? in->cidr : "";
    if (aegis_policy_parse_cidr(cidr, &r, why, sizeof(why)) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s[%zu]: bad CIDR \"%.60s\": %s", aegis_policy_list_name(list),
                     idx, cidr, why);
        return AEGIS_ERR_CONFIG;
    }
    r.id = in->id;
    r.proto = (uint32_t)in->proto;
    r.port = in->port;
    r.ttl_seconds = in->ttl_seconds;
    r.direction = (uint32_t)in->direction;
    int rv = aegis_policy_add_rule(p, list, &r);
    if (rv == AEGIS_ERR_LIMIT && err && errlen)
        snprintf(err, errlen, "%s[%zu]: more than %u rules", aegis_policy_list_name(list), idx,
                 AEGIS_POLICY_RULES_HARD_MAX);
    return rv;
}

int aegis_policy_from_pb(const Aegis__V1__MapSnapshot *snap,
                         const struct aegis_policy_limits *limits, const struct aegis_mem *mem,
                         struct aegis_policy **ppolicy, char *err, size_t errlen)
{
    if (!snap || !ppolicy)
        return -EINVAL;
    struct aegis_policy *p;
    int rv = aegis_policy_new(mem, &p);
    if (rv)
        return rv;
    p->version = snap->version;
    p->service_id = snap->service_id;
    p->ttl_seconds = snap->ttl_seconds;
    p->egress_mode = (uint32_t)snap->egress_mode;
    p->ingress_mode = (uint32_t)snap->ingress_mode;
    p->expiry_action = (uint32_t)snap->expiry_action;
    Aegis__V1__Rule **lists[AEGIS_POLICY_NLISTS] = {snap->edges, snap->allow_cidrs, snap->deny};
    size_t counts[AEGIS_POLICY_NLISTS] = {snap->n_edges, snap->n_allow_cidrs, snap->n_deny};
    for (size_t l = 0; l < AEGIS_POLICY_NLISTS && !rv; l++) {
        if (counts[l] > AEGIS_POLICY_RULES_HARD_MAX) {
            if (err && errlen)
                snprintf(err, errlen, "%s: %zu entries exceed the hard limit %u",
                         aegis_policy_list_name((enum aegis_policy_list)l), counts[l],
                         AEGIS_POLICY_RULES_HARD_MAX);
            rv = AEGIS_ERR_LIMIT;
            break;
        }
        for (size_t i = 0; i < counts[l] && !rv; i++)
            rv = rule_from_pb(p, (enum aegis_policy_list)l, i, lists[l][i], err, errlen);
    }
    for (size_t i = 0; i < snap->n_meta && !rv; i++) {
        const Aegis__V1__MapSnapshot__MetaEntry *m = snap->meta[i];
        rv = aegis_policy_add_meta(p, m->key ? m->key : "", m->value ? m->value : "");
    }
    if (!rv)
        rv = aegis_policy_validate(p, limits, err, errlen);
    if (rv) {
        aegis_policy_del(p);
        return rv;
    }
    *ppolicy = p;
    return 0;
}

void aegis_policy_pb_free(const struct aegis_policy *policy, Aegis__V1__MapSnapshot *snap)
{
    if (!snap)
        return;
    const struct aegis_mem *mem = policy ? policy->mem : NULL;
    Aegis__V1__Rule **lists[AEGIS_POLICY_NLISTS] = {snap->edges, snap->allow_cidrs, snap->deny};
    size_t counts[AEGIS_POLICY_NLISTS] = {snap->n_edges, snap->n_allow_cidrs, snap->n_deny};
    for (size_t l = 0; l < AEGIS_POLICY_NLISTS; l++) {
        for (size_t i = 0; lists[l] && i < counts[l]; i++) {
            if (lists[l][i])
                aegis_free(mem, lists[l][i]->cidr);
            aegis_free(mem, lists[l][i]);
        }
        aegis_free(mem, lists[l]);
    }
    for (size_t i = 0; snap->meta && i < snap->n_meta; i++) {
        if (snap->meta[i]) {
            aegis_free(mem, snap->meta[i]->key);
            aegis_free(mem, snap->meta[i]->value);
        }
        aegis_free(mem, snap->meta[i]);
    }
    aegis_free(mem, snap->meta);
    aegis_free(mem, snap);
}

int aegis_policy_to_pb(const struct aegis_policy *policy, Aegis__V1__MapSnapshot **psnap)
{
    if (!policy || !psnap)
        return -EINVAL;
    const struct aegis_mem *mem = policy->mem;
    Aegis__V1__MapSnapshot *s = aegis_calloc(mem, 1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    aegis__v1__map_snapshot__init(s);
    s->version = policy->version;
    s->service_id = policy->service_id;
    s->ttl_seconds = policy->ttl_seconds;
    s->egress_mode = (Aegis__V1__EnforceMode)policy->egress_mode;
    s->ingress_mode = (Aegis__V1__EnforceMode)policy->ingress_mode;
    s->expiry_action = (Aegis__V1__ExpiryAction)policy->expiry_action;
    Aegis__V1__Rule ***lists[AEGIS_POLICY_NLISTS] = {&s->edges, &s->allow_cidrs, &s->deny};
    size_t *counts[AEGIS_POLICY_NLISTS] = {&s->n_edges, &s->n_allow_cidrs, &s->n_deny};
    for (size_t l = 0; l < AEGIS_POLICY_NLISTS; l++) {
        size_t n = policy->nrules[l];
        if (n == 0)
            continue;
        *lists[l] = aegis_calloc(mem, n, sizeof(Aegis__V1__Rule *));
        if (!*lists[l])
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            const struct aegis_policy_rule *r = &policy->rules[l][i];
            Aegis__V1__Rule *o = aegis_calloc(mem, 1, sizeof(*o));
            if (!o)
                goto nomem;
            aegis__v1__rule__init(o);
            (*lists[l])[i] = o;
            *counts[l] = i + 1;
            char cidr[64];
            aegis_policy_format_cidr(r, cidr, sizeof(cidr));
            o->cidr = aegis_strdup(mem, cidr);
            if (!o->cidr)
                goto nomem;
            o->id = r->id;
            o->proto = (Aegis__V1__RuleProto)r->proto;
            o->port = r->port;
            o->ttl_seconds = r->ttl_seconds;
            o->direction = (Aegis__V1__RuleDirection)r->direction;
        }
    }
    if (policy->nmeta) {
        s->meta = aegis_calloc(mem, policy->nmeta, sizeof(*s->meta));
        if (!s->meta)
            goto nomem;
        for (size_t i = 0; i < policy->nmeta; i++) {
            Aegis__V1__MapSnapshot__MetaEntry *m = aegis_calloc(mem, 1, sizeof(*m));
            if (!m)
                goto nomem;
            aegis__v1__map_snapshot__meta_entry__init(m);
            s->meta[i] = m;
            s->n_meta = i + 1;
            m->key = aegis_strdup(mem, policy->meta[i].key);
            m->value = aegis_strdup(mem, policy->meta[i].value);
            if (!m->key || !m->value)
                goto nomem;
        }
    }
    *psnap = s;
    return 0;
nomem:
    aegis_policy_pb_free(policy, s);
    return -ENOMEM;
}
