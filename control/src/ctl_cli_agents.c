/*
 * aegisctl agents list|show|revoke.
 */
#include "ctl_cli.h"

#include <aegis/v1/operator.pb-c.h>

#include <stdlib.h>
#include <string.h>

enum { SUB_LIST, SUB_SHOW, SUB_REVOKE };
enum { L_LABEL, L_STATUS, L_LIMIT };
enum { R_REASON };

static const struct ctl_optspec list_opts[] = {
    [L_LABEL] = {"label", 1, "K=V[,K=V]",
                 "only agents with these labels (repeatable; all must match)"},
    [L_STATUS] = {"status", 1, "S", "only agents in status online, offline or revoked"},
    [L_LIMIT] = {"limit", 1, "N", "show at most N agents (default: all, up to 100000)"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec revoke_opts[] = {
    [R_REASON] = {"reason", 1, "TEXT", "why (recorded in the audit log)"},
    {NULL, 0, NULL, NULL},
};

static int run_list(struct ctl_cli *cli, const struct ctl_args *a);
static int run_show(struct ctl_cli *cli, const struct ctl_args *a);
static int run_revoke(struct ctl_cli *cli, const struct ctl_args *a);

static const struct ctl_subcmd subs[] = {
    [SUB_LIST] = {"list", "list [--label K=V] [--status S] [--limit N]", "List enrolled agents.",
                  "Columns: ID, HOST, STATUS, VERSION, LAST SEEN, LABELS.", list_opts, 0, 0,
                  run_list},
    [SUB_SHOW] = {"show", "show ID", "Show one agent in detail.", NULL, NULL, 1, 1, run_show},
    [SUB_REVOKE] = {"revoke", "revoke ID [--reason R]",
                    "Revoke an agent (its connection closes at once).",
                    "Its certificate is refused from then on; the reason goes to the audit log.",
                    revoke_opts, 1, 1, run_revoke},
};

const struct ctl_family ctl_family_agents = {"agents", "List, inspect and revoke agents.", subs,
                                             sizeof(subs) / sizeof(subs[0])};

#define USAGE(s, ...) ctl_usage(cli, &ctl_family_agents, &subs[s], __VA_ARGS__)

/* Builds "k=v,k2=v2" from every --label flag (validated). */
static int selector_from_labels(struct ctl_cli *cli, const struct ctl_args *a, char **psel)
{
    struct ctl_kvlist l = {0};
    char err[256];
    for (size_t n = 0; n < ctl_args_count(a, L_LABEL); n++) {
        const char *v = ctl_args_nth(a, L_LABEL, n);
        if (ctl_parse_kvlist(v, &l, err, sizeof(err)) != 0) {
            ctl_kvlist_free(&l);
            return USAGE(SUB_LIST, "bad --label \"%s\": %s", v, err);
        }
    }
    size_t cap = 1;
    for (size_t i = 0; i < l.n; i++)
        cap += strlen(l.key[i]) + strlen(l.value[i]) + 2;
    char *sel = malloc(cap);
    if (!sel) {
        ctl_kvlist_free(&l);
        return CTL_EXIT_INPUT;
    }
    size_t off = 0;
    sel[0] = '\0';
    for (size_t i = 0; i < l.n; i++)
        off +=
            (size_t)snprintf(sel + off, cap - off, "%s%s=%s", i ? "," : "", l.key[i], l.value[i]);
    ctl_kvlist_free(&l);
    *psel = sel;
    return 0;
}

static void agent_row(struct ctl_table *t, const ProtobufCMessage *item, void *arg)
{
    (void)arg;
    const Aegis__V1__Agent *ag = (const Aegis__V1__Agent *)item;
    char st[32], seen[32], labels[512];
    const char *row[] = {
        ag->agent_id,
        ag->host && ag->host->hostname[0] ? ag->host->hostname : ag->host_id,
        ctl_enum_name(&aegis__v1__agent_status__descriptor, (int)ag->status, st, sizeof(st)),
        ag->version,
        ctl_fmt_time(ag->last_seen_unix_ns, seen, sizeof(seen)),
        ctl_fmt_labels(ag->labels ? &ag->labels->base : NULL, labels, sizeof(labels)),
    };
    ctl_table_add(t, row);
}

static int run_list(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__ListAgentsRequest req = AEGIS__V1__LIST_AGENTS_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    uint32_t limit = CTL_MAX_ROWS;
    const char *v;
    if ((v = ctl_args_get(a, L_LIMIT)) && ctl_parse_u32(v, 1, CTL_MAX_ROWS, &limit) != 0)
        return USAGE(SUB_LIST, "bad --limit \"%s\" (1..%u)", v, CTL_MAX_ROWS);
    if ((v = ctl_args_get(a, L_STATUS))) {
        int st;
        if (ctl_enum_parse(&aegis__v1__agent_status__descriptor, v, &st) != 0 || st == 0)
            return USAGE(SUB_LIST, "bad --status \"%s\" (online, offline or revoked)", v);
        req.status = (Aegis__V1__AgentStatus)st;
    }
    char *sel = NULL;
    if (ctl_args_count(a, L_LABEL)) {
        int rv = selector_from_labels(cli, a, &sel);
        if (rv != 0)
            return rv;
        req.selector = sel;
    }
    static const char *const hdr[] = {"ID", "HOST", "STATUS", "VERSION", "LAST SEEN", "LABELS"};
    struct ctl_table *t = cli->json ? NULL : ctl_table_new(6, hdr);
    int rv =
        ctl_list(cli, CTL_OPS_PATH("ListAgents"), &req.base, &page,
                 &aegis__v1__list_agents_response__descriptor, "agents", limit, t, agent_row, NULL);
    ctl_table_del(t);
    free(sel);
    return rv;
}

static int run_show(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__GetAgentRequest req = AEGIS__V1__GET_AGENT_REQUEST__INIT;
    req.agent_id = (char *)a->pos[0];
    Aegis__V1__GetAgentResponse *resp = NULL;
    int rv = ctl_call(cli, CTL_OPS_PATH("GetAgent"), &req.base,
                      &aegis__v1__get_agent_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0)
        return rv;
    const Aegis__V1__Agent *ag = resp->agent;
    if (cli->json) {
        ctl_json_print(cli->out, ag ? ctl_pb_to_json(&ag->base) : NULL, 0);
    } else if (ag) {
        char st[32], t1[32], t2[32], labels[1024], spki[65], mid[65];
        static const char *const hdr[] = {"FIELD", "VALUE"};
        struct ctl_table *t = ctl_table_new(2, hdr);
        const Aegis__V1__HostFacts *h = ag->host;
        char caps[512] = "";
        for (size_t i = 0, off = 0; i < ag->n_capabilities && off < sizeof(caps); i++)
            off += (size_t)snprintf(caps + off, sizeof(caps) - off, "%s%s", i ? "," : "",
                                    ag->capabilities[i]);
        char acked[24];
        snprintf(acked, sizeof(acked), "%llu", (unsigned long long)ag->acked_sequence);
        const char *rows[][2] = {
            {"id", ag->agent_id},
            {"host id", ag->host_id},
            {"hostname", h ? h->hostname : ""},
            {"os", h ? h->os_version : ""},
            {"kernel", h ? h->kernel_release : ""},
            {"status",
             ctl_enum_name(&aegis__v1__agent_status__descriptor, (int)ag->status, st, sizeof(st))},
            {"version", ag->version},
            {"labels",
             ctl_fmt_labels(ag->labels ? &ag->labels->base : NULL, labels, sizeof(labels))},
            {"enrolled", ctl_fmt_time(ag->enrolled_unix_ns, t1, sizeof(t1))},
            {"last seen", ctl_fmt_time(ag->last_seen_unix_ns, t2, sizeof(t2))},
            {"instance", ag->connected_instance},
            {"capabilities", caps},
            {"acked seq", acked},
            {"spki sha256",
             ctl_fmt_hex(ag->spki_sha256.data, ag->spki_sha256.len, spki, sizeof(spki))},
            {"machine id",
             ctl_fmt_hex(ag->machine_id_hash.data, ag->machine_id_hash.len, mid, sizeof(mid))},
        };
        for (size_t i = 0; t && i < sizeof(rows) / sizeof(rows[0]); i++)
            ctl_table_add(t, rows[i]);
        if (t)
            ctl_table_print(t, cli->out);
        ctl_table_del(t);
    }
    ctl_pb_free(&resp->base);
    return CTL_EXIT_OK;
}

static int run_revoke(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__RevokeAgentRequest req = AEGIS__V1__REVOKE_AGENT_REQUEST__INIT;
    req.agent_id = (char *)a->pos[0];
    const char *reason = ctl_args_get(a, R_REASON);
    req.reason = (char *)(reason ? reason : "");
    Aegis__V1__RevokeAgentResponse *resp = NULL;
    int rv = ctl_call(cli, CTL_OPS_PATH("RevokeAgent"), &req.base,
                      &aegis__v1__revoke_agent_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0)
        return rv;
    if (cli->json) {
        ctl_json_print(cli->out, ctl_pb_to_json(&resp->base), 0);
    } else if (resp->already_revoked) {
        fprintf(cli->out, "agent %s was already revoked\n", req.agent_id);
    } else {
        char t[32];
        fprintf(cli->out, "agent %s revoked at %s; %u live connection(s) closed\n", req.agent_id,
                ctl_fmt_time(resp->revoked_unix_ns, t, sizeof(t)), resp->connections_closed);
    }
    ctl_pb_free(&resp->base);
    return CTL_EXIT_OK;
}
