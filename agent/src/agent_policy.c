/*
 * ApplyPolicy through libaegis_bpf (DESIGN §7): MapSnapshot -> struct
 * aegis_policy (aegis_policy_pb, which validates) -> aegis_bpf_apply, which
 * swaps the whole version in atomically. The enforcement state is pinned in
 * bpffs, so it survives agent restarts; the agent keeps only the version
 * number (policy.state) for status and the downgrade check.
 */
#include "agent_daemon.h"

#include <aegis/bpf.h>
#include <aegis/err.h>
#include <aegis/policy_pb.h>
#include <aegis/tstamp.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Per-rule counters reported per sample at most (the rest are summed in
 * the global counters): keeps one batch well under the message cap. */
#define RULE_METRICS_MAX 256u

struct agent_bpf {
    struct aegis_bpf *h;
    struct aegis_policy *active; /* for counter -> rule id mapping */
};

void agent_policy_init(struct agent *a)
{
    char buf[64];
    if (agent_read_small(agent_state_dir_path(a->sd), AGENT_FILE_POLICY, buf, sizeof(buf)) == 0)
        a->policy_version = strtoull(buf, NULL, 10);
}

static int ensure_bpf(struct agent *a, char *detail, size_t len)
{
    if (a->bpf && a->bpf->h)
        return 0;
    if (a->opts->nifaces == 0)
        return agent_errmsg(detail, len, AEGIS_ERR_CONFIG,
                            "failed: no interface to enforce on (start the agent with "
                            "`aegis-agent run --iface IF`)");
    if (a->bpf == NULL && (a->bpf = calloc(1, sizeof(*a->bpf))) == NULL)
        return agent_errmsg(detail, len, -ENOMEM, "failed: out of memory");
    struct aegis_bpf_config cfg;
    aegis_bpf_config_default(&cfg);
    if (a->opts->bpf_pin_dir)
        cfg.pin_dir = a->opts->bpf_pin_dir;
    char err[256] = "";
    int rv = aegis_bpf_open(&cfg, &a->bpf->h, err, sizeof(err));
    if (rv != 0)
        return agent_errmsg(detail, len, rv, "failed: cannot load enforcement: %s", err);
    for (size_t i = 0; i < a->opts->nifaces; i++) {
        rv = aegis_bpf_attach(a->bpf->h, a->opts->ifaces[i], AEGIS_BPF_BOTH, err, sizeof(err));
        if (rv != 0) {
            aegis_bpf_close(a->bpf->h);
            a->bpf->h = NULL;
            return agent_errmsg(detail, len, rv, "failed: cannot attach to %s: %s",
                                a->opts->ifaces[i], err);
        }
    }
    return 0;
}

int agent_policy_apply(struct agent *a, const Aegis__V1__MapSnapshot *snap, uint64_t version,
                       int rollback, char *detail, size_t len)
{
    if (version == 0)
        version = snap->version;
    if (!rollback && a->policy_version != 0 && version < a->policy_version)
        return agent_errmsg(detail, len, AEGIS_ERR_STATE,
                            "failed: policy version %llu is older than the enforced %llu (send "
                            "it as a rollback to restore it)",
                            (unsigned long long)version, (unsigned long long)a->policy_version);
    struct aegis_policy_limits lim;
    aegis_policy_limits_default(&lim);
    struct aegis_policy *pol = NULL;
    char err[256] = "";
    int rv = aegis_policy_from_pb(snap, &lim, NULL, &pol, err, sizeof(err));
    if (rv != 0)
        return agent_errmsg(detail, len, rv, "failed: invalid policy: %s", err);
    if ((rv = ensure_bpf(a, detail, len)) != 0) {
        aegis_policy_del(pol);
        return rv;
    }
    rv = aegis_bpf_apply(a->bpf->h, pol, aegis_now(), err, sizeof(err));
    if (rv != 0) {
        aegis_policy_del(pol);
        return agent_errmsg(detail, len, rv, "failed: apply: %s", err);
    }
    aegis_policy_del(a->bpf->active);
    a->bpf->active = pol;
    a->policy_version = version;
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%llu\n", (unsigned long long)version);
    agent_state_dir_write(a->sd, AGENT_FILE_POLICY, buf, (size_t)n, 0600);
    char v[24];
    snprintf(v, sizeof(v), "%llu", (unsigned long long)version);
    agent_telemetry_event(a, "policy_applied", "version", v, "rollback", rollback ? "1" : "0");
    snprintf(detail, len, "applied policy version %llu (%zu rules, egress %s, ingress %s)%s",
             (unsigned long long)version, aegis_policy_rule_count(pol),
             aegis_policy_mode_name(pol->egress_mode), aegis_policy_mode_name(pol->ingress_mode),
             rollback ? " as a rollback" : "");
    return 0;
}

int agent_policy_flush_flows(struct agent *a, char *detail, size_t len)
{
    int rv = ensure_bpf(a, detail, len);
    if (rv != 0)
        return rv;
    rv = aegis_bpf_flush_flows(a->bpf->h);
    snprintf(detail, len, rv == 0 ? "flow table flushed" : "failed: flush: %s", aegis_strerror(rv));
    return rv;
}

void agent_policy_close(struct agent *a)
{
    if (a->bpf == NULL)
        return;
    aegis_bpf_close(a->bpf->h); /* enforcement stays pinned */
    aegis_policy_del(a->bpf->active);
    free(a->bpf);
    a->bpf = NULL;
}

static void put(struct agent_metric *m, const char *name, const char *k0, const char *v0,
                const char *k1, const char *v1, double value)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->name, sizeof(m->name), "%s", name);
    snprintf(m->lk[0], sizeof(m->lk[0]), "%s", k0 ? k0 : "");
    snprintf(m->lv[0], sizeof(m->lv[0]), "%s", v0 ? v0 : "");
    snprintf(m->lk[1], sizeof(m->lk[1]), "%s", k1 ? k1 : "");
    snprintf(m->lv[1], sizeof(m->lv[1]), "%s", v1 ? v1 : "");
    m->value = value;
    m->counter = 1;
}

size_t agent_policy_metrics(struct agent *a, struct agent_metric *out, size_t cap)
{
    if (a->bpf == NULL || a->bpf->h == NULL || cap < 6)
        return 0;
    size_t n = 0;
    struct aegis_bpf_stats st;
    if (aegis_bpf_stats(a->bpf->h, &st) == 0) {
        static const char *dirs[2] = {"egress", "ingress"};
        for (int d = 0; d < 2; d++) {
            put(&out[n++], "aegis_bpf_packets_total", "direction", dirs[d], NULL, NULL,
                (double)st.packets[d]);
            put(&out[n++], "aegis_bpf_dropped_total", "direction", dirs[d], NULL, NULL,
                (double)st.drop[d]);
            put(&out[n++], "aegis_bpf_passed_total", "direction", dirs[d], NULL, NULL,
                (double)st.pass[d]);
        }
    }
    struct aegis_policy *pol = a->bpf->active;
    size_t nr = pol ? aegis_policy_rule_count(pol) : 0;
    if (nr > RULE_METRICS_MAX)
        nr = RULE_METRICS_MAX;
    if (nr == 0 || n + 2 * nr > cap)
        return n;
    uint64_t *pk = calloc(nr, sizeof(uint64_t)), *by = calloc(nr, sizeof(uint64_t));
    if (pk && by && aegis_bpf_rule_counters(a->bpf->h, pk, by, nr) == 0) {
        for (size_t i = 0; i < nr; i++) {
            enum aegis_policy_list list;
            size_t idx;
            if (aegis_policy_rule_at(pol, i, &list, &idx) != 0)
                continue;
            char id[16];
            snprintf(id, sizeof(id), "%u", pol->rules[list][idx].id);
            put(&out[n++], "aegis_rule_packets_total", "rule_id", id, "list",
                aegis_policy_list_name(list), (double)pk[i]);
            put(&out[n++], "aegis_rule_bytes_total", "rule_id", id, "list",
                aegis_policy_list_name(list), (double)by[i]);
        }
    }
    free(pk);
    free(by);
    return n;
}
