/*
 * aegisctl policies push|list|promote|rollback: versioned MapSnapshots
 * (seed 004). A policy file is parsed and validated locally with aegis_policy
 * before anything is sent, so a typo is reported with the entry it is in.
 */
#include "ctl_cli.h"

#include <aegis/err.h>
#include <aegis/policy.h>
#include <aegis/policy_pb.h>
#include <aegis/v1/operator.pb-c.h>

#include <stdlib.h>
#include <string.h>

enum { SUB_PUSH, SUB_LIST, SUB_PROMOTE, SUB_ROLLBACK };
enum { P_AGENT, P_SELECTOR, P_COMMENT, P_CANARY_AGENT, P_CANARY_SELECTOR };
enum { L_SERVICE, L_STATE, L_LIMIT };
enum { PR_SERVICE };
enum { RB_SERVICE, RB_TO };

static const struct ctl_optspec push_opts[] = {
    [P_AGENT] = {"agent", 1, "ID", "the policy is for this agent (repeatable)"},
    [P_SELECTOR] = {"selector", 1, "K=V,...", "the policy is for agents whose labels match"},
    [P_COMMENT] = {"comment", 1, "TEXT", "note for the audit log"},
    [P_CANARY_AGENT] = {"canary-agent", 1, "ID", "also apply it now to this agent (repeatable)"},
    [P_CANARY_SELECTOR] = {"canary-selector", 1, "K=V,...", "also apply it now to these agents"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec list_opts[] = {
    [L_SERVICE] = {"service", 1, "ID", "only this service"},
    [L_STATE] = {"state", 1, "S", "only draft, active, promoted or rolled_back"},
    [L_LIMIT] = {"limit", 1, "N", "show at most N versions"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec promote_opts[] = {
    [PR_SERVICE] = {"service", 1, "ID", "service id (needed if several have this version)"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec rollback_opts[] = {
    [RB_SERVICE] = {"service", 1, "ID", "service id (needed if several services are promoted)"},
    [RB_TO] = {"to", 1, "VERSION", "version to restore (default: the previous promoted one)"},
    {NULL, 0, NULL, NULL},
};

static int run_push(struct ctl_cli *cli, const struct ctl_args *a);
static int run_list(struct ctl_cli *cli, const struct ctl_args *a);
static int run_promote(struct ctl_cli *cli, const struct ctl_args *a);
static int run_rollback(struct ctl_cli *cli, const struct ctl_args *a);

static const struct ctl_subcmd subs[] = {
    [SUB_PUSH] = {"push",
                  "push FILE.json [--agent ID... | --selector K=V,...] [--comment T] "
                  "[--canary-agent ID... | --canary-selector K=V,...]",
                  "Validate a MapSnapshot JSON file and store it as a new policy version.",
                  "The file follows seed 004 (edges, allow_cidrs, ttl_seconds >= 60, meta) plus "
                  "deny, egress_mode/ingress_mode and expiry_action. Version 0 or absent = the "
                  "next version of its service. Nothing reaches agents until `promote`, except "
                  "the canaries.",
                  push_opts, 1, 1, run_push},
    [SUB_LIST] = {"list", "list [--service ID] [--state S] [--limit N]",
                  "List policy versions, newest first.",
                  "Columns: SERVICE, VERSION, STATE, RULES, CREATED, AUTHOR, COMMENT.", list_opts,
                  0, 0, run_list},
    [SUB_PROMOTE] = {"promote", "promote VERSION [--service ID]",
                     "Send a policy version to every agent it targets.", NULL, promote_opts, 1, 1,
                     run_promote},
    [SUB_ROLLBACK] = {"rollback", "rollback [--service ID] [--to VERSION]",
                      "Restore an earlier version (default: the previously promoted one).", NULL,
                      rollback_opts, 0, 0, run_rollback},
};

const struct ctl_family ctl_family_policies = {
    "policies", "Push, list, promote and roll back segmentation policies.", subs,
    sizeof(subs) / sizeof(subs[0])};

#define USAGE(s, ...) ctl_usage(cli, &ctl_family_policies, &subs[s], __VA_ARGS__)

static void fill_target(Aegis__V1__AgentTarget *pt, const struct ctl_target *t)
{
    pt->n_agent_ids = t->nids;
    pt->agent_ids = (char **)t->ids;
    pt->selector = (char *)(t->selector ? t->selector : "");
}

static void print_policy(struct ctl_cli *cli, const char *what, const Aegis__V1__Policy *p,
                         const char *command_id)
{
    char st[32];
    fprintf(cli->out, "%s service %llu version %llu (%s)%s%s\n", what,
            (unsigned long long)(p && p->snapshot ? p->snapshot->service_id : 0),
            (unsigned long long)(p ? p->version : 0),
            p ? ctl_enum_name(&aegis__v1__policy_state__descriptor, (int)p->state, st, sizeof(st))
              : "-",
            command_id && command_id[0] ? "; command " : "",
            command_id && command_id[0] ? command_id : "");
}

static int run_push(struct ctl_cli *cli, const struct ctl_args *a)
{
    const char *path = a->pos[0];
    struct ctl_target tgt, canary;
    int rv = ctl_target_from_args(cli, &ctl_family_policies, &subs[SUB_PUSH], a, P_AGENT,
                                  P_SELECTOR, 0, &tgt);
    if (rv == 0)
        rv = ctl_target_from_args(cli, &ctl_family_policies, &subs[SUB_PUSH], a, P_CANARY_AGENT,
                                  P_CANARY_SELECTOR, 0, &canary);
    if (rv != 0)
        return rv;
    char *json = NULL;
    size_t len = 0;
    rv = ctl_read_file(path, AEGIS_POLICY_DEFAULT_MAX_JSON, &json, &len);
    if (rv != 0) {
        fprintf(cli->err, "aegisctl: cannot read policy %s: %s\n", path, aegis_strerror(rv));
        return CTL_EXIT_INPUT;
    }
    struct aegis_policy *pol = NULL;
    char err[256] = "";
    rv = aegis_policy_from_json(json, len, NULL, NULL, &pol, err, sizeof(err));
    free(json);
    if (rv != 0) {
        fprintf(cli->err, "aegisctl: %s: %s (nothing was pushed)\n", path,
                err[0] ? err : aegis_strerror(rv));
        return CTL_EXIT_INPUT;
    }
    Aegis__V1__MapSnapshot *snap = NULL;
    rv = aegis_policy_to_pb(pol, &snap);
    if (rv != 0) {
        aegis_policy_del(pol);
        fprintf(cli->err, "aegisctl: %s: %s\n", path, aegis_strerror(rv));
        return CTL_EXIT_INPUT;
    }
    Aegis__V1__PushPolicyRequest req = AEGIS__V1__PUSH_POLICY_REQUEST__INIT;
    Aegis__V1__AgentTarget t1 = AEGIS__V1__AGENT_TARGET__INIT, t2 = AEGIS__V1__AGENT_TARGET__INIT;
    fill_target(&t1, &tgt);
    fill_target(&t2, &canary);
    req.snapshot = snap;
    req.target = &t1;
    if (canary.nids || canary.selector)
        req.canary = &t2;
    const char *c = ctl_args_get(a, P_COMMENT);
    req.comment = (char *)(c ? c : "");
    Aegis__V1__PushPolicyResponse *resp = NULL;
    rv = ctl_call(cli, CTL_OPS_PATH("PushPolicy"), &req.base,
                  &aegis__v1__push_policy_response__descriptor, (ProtobufCMessage **)&resp);
    aegis_policy_pb_free(pol, snap);
    aegis_policy_del(pol);
    if (rv != 0)
        return rv;
    if (cli->json)
        ctl_json_print(cli->out, ctl_pb_to_json(&resp->base), 0);
    else
        print_policy(cli, "stored", resp->policy, resp->command_id);
    ctl_pb_free(&resp->base);
    return CTL_EXIT_OK;
}

static void policy_row(struct ctl_table *t, const ProtobufCMessage *item, void *arg)
{
    (void)arg;
    const Aegis__V1__Policy *p = (const Aegis__V1__Policy *)item;
    char svc[24], ver[24], st[32], rules[24], created[32];
    const Aegis__V1__MapSnapshot *s = p->snapshot;
    snprintf(svc, sizeof(svc), "%llu", (unsigned long long)(s ? s->service_id : 0));
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)p->version);
    snprintf(rules, sizeof(rules), "%zu", s ? s->n_edges + s->n_allow_cidrs + s->n_deny : 0);
    const char *row[] = {
        svc,
        ver,
        ctl_enum_name(&aegis__v1__policy_state__descriptor, (int)p->state, st, sizeof(st)),
        rules,
        ctl_fmt_time(p->created_unix_ns, created, sizeof(created)),
        p->author,
        p->comment,
    };
    ctl_table_add(t, row);
}

static int run_list(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__ListPoliciesRequest req = AEGIS__V1__LIST_POLICIES_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    const char *v;
    uint32_t limit = CTL_MAX_ROWS;
    if ((v = ctl_args_get(a, L_LIMIT)) && ctl_parse_u32(v, 1, CTL_MAX_ROWS, &limit) != 0)
        return USAGE(SUB_LIST, "bad --limit \"%s\" (1..%u)", v, CTL_MAX_ROWS);
    if ((v = ctl_args_get(a, L_SERVICE)) && ctl_parse_u64(v, &req.service_id) != 0)
        return USAGE(SUB_LIST, "bad --service \"%s\" (a number)", v);
    if ((v = ctl_args_get(a, L_STATE))) {
        int s;
        if (ctl_enum_parse(&aegis__v1__policy_state__descriptor, v, &s) != 0 || s == 0)
            return USAGE(SUB_LIST, "bad --state \"%s\" (draft, active, promoted, rolled_back)", v);
        req.state = (Aegis__V1__PolicyState)s;
    }
    static const char *const hdr[] = {"SERVICE", "VERSION", "STATE",  "RULES",
                                      "CREATED", "AUTHOR",  "COMMENT"};
    struct ctl_table *t = cli->json ? NULL : ctl_table_new(7, hdr);
    int rv = ctl_list(cli, CTL_OPS_PATH("ListPolicies"), &req.base, &page,
                      &aegis__v1__list_policies_response__descriptor, "policies", limit, t,
                      policy_row, NULL);
    ctl_table_del(t);
    return rv;
}

/* The server's page cap: policy versions are few, one page is enough to
 * find a version or the promoted services. */
#define POLICY_LOOKUP_PAGE 1000u

int ctl_policy_find(struct ctl_cli *cli, uint64_t service, uint64_t version,
                    Aegis__V1__ListPoliciesResponse **presp, const Aegis__V1__Policy **ppol)
{
    Aegis__V1__ListPoliciesRequest req = AEGIS__V1__LIST_POLICIES_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    page.limit = POLICY_LOOKUP_PAGE;
    req.page = &page;
    req.service_id = service;
    Aegis__V1__ListPoliciesResponse *resp = NULL;
    int rv = ctl_call(cli, CTL_OPS_PATH("ListPolicies"), &req.base,
                      &aegis__v1__list_policies_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0)
        return rv;
    const Aegis__V1__Policy *found = NULL;
    size_t matches = 0;
    for (size_t i = 0; i < resp->n_policies; i++) {
        const Aegis__V1__Policy *p = resp->policies[i];
        if (p->version == version && p->snapshot) {
            found = p;
            matches++;
        }
    }
    if (matches != 1) {
        ctl_pb_free(&resp->base);
        if (matches == 0)
            fprintf(cli->err,
                    "aegisctl: no stored policy has version %llu%s (see `aegisctl policies "
                    "list`)\n",
                    (unsigned long long)version, service ? " in that service" : "");
        else
            fprintf(cli->err,
                    "aegisctl: version %llu exists in several services; add --service ID\n",
                    (unsigned long long)version);
        return matches == 0 ? CTL_EXIT_SERVER : CTL_EXIT_USAGE;
    }
    *presp = resp;
    *ppol = found;
    return 0;
}

static int run_promote(struct ctl_cli *cli, const struct ctl_args *a)
{
    uint64_t version = 0, service = 0;
    const char *v = a->pos[0];
    if (ctl_parse_u64(v, &version) != 0 || version == 0)
        return USAGE(SUB_PROMOTE, "bad VERSION \"%s\" (a number >= 1)", v);
    if ((v = ctl_args_get(a, PR_SERVICE)) && ctl_parse_u64(v, &service) != 0)
        return USAGE(SUB_PROMOTE, "bad --service \"%s\" (a number)", v);
    if (!v) { /* find the service that has this version */
        Aegis__V1__ListPoliciesResponse *pols = NULL;
        const Aegis__V1__Policy *p = NULL;
        int rv = ctl_policy_find(cli, 0, version, &pols, &p);
        if (rv != 0)
            return rv;
        service = p->snapshot->service_id;
        ctl_pb_free(&pols->base);
    }
    Aegis__V1__PromotePolicyRequest req = AEGIS__V1__PROMOTE_POLICY_REQUEST__INIT;
    req.service_id = service;
    req.version = version;
    Aegis__V1__PromotePolicyResponse *resp = NULL;
    int rv = ctl_call(cli, CTL_OPS_PATH("PromotePolicy"), &req.base,
                      &aegis__v1__promote_policy_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0)
        return rv;
    if (cli->json) {
        ctl_json_print(cli->out, ctl_pb_to_json(&resp->base), 0);
    } else {
        print_policy(cli, "promoted", resp->policy, resp->command_id);
        fprintf(cli->out, "sent to %u agent(s) (follow with `aegisctl commands watch %s`)\n",
                resp->targeted_agents, resp->command_id);
    }
    ctl_pb_free(&resp->base);
    return CTL_EXIT_OK;
}

static int run_rollback(struct ctl_cli *cli, const struct ctl_args *a)
{
    uint64_t service = 0, to = 0;
    const char *v;
    if ((v = ctl_args_get(a, RB_TO)) && (ctl_parse_u64(v, &to) != 0 || to == 0))
        return USAGE(SUB_ROLLBACK, "bad --to \"%s\" (a version >= 1)", v);
    if ((v = ctl_args_get(a, RB_SERVICE)) && ctl_parse_u64(v, &service) != 0)
        return USAGE(SUB_ROLLBACK, "bad --service \"%s\" (a number)", v);
    if (!v) {
        /* Without --service: the one service with a promoted version. */
        Aegis__V1__ListPoliciesRequest lreq = AEGIS__V1__LIST_POLICIES_REQUEST__INIT;
        Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
        page.limit = POLICY_LOOKUP_PAGE;
        lreq.page = &page;
        lreq.state = AEGIS__V1__POLICY_STATE__POLICY_STATE_PROMOTED;
        Aegis__V1__ListPoliciesResponse *lr = NULL;
        int rv = ctl_call(cli, CTL_OPS_PATH("ListPolicies"), &lreq.base,
                          &aegis__v1__list_policies_response__descriptor, (ProtobufCMessage **)&lr);
        if (rv != 0)
            return rv;
        int have = 0, several = 0;
        for (size_t i = 0; i < lr->n_policies; i++) {
            const Aegis__V1__MapSnapshot *s = lr->policies[i]->snapshot;
            if (!s)
                continue;
            if (!have)
                service = s->service_id;
            else if (s->service_id != service)
                several = 1;
            have = 1;
        }
        ctl_pb_free(&lr->base);
        if (!have || several)
            return USAGE(SUB_ROLLBACK, "%s; give --service ID",
                         several ? "several services have promoted policies"
                                 : "no service has a promoted policy");
    }
    Aegis__V1__RollbackPolicyRequest req = AEGIS__V1__ROLLBACK_POLICY_REQUEST__INIT;
    req.service_id = service;
    req.to_version = to;
    Aegis__V1__RollbackPolicyResponse *resp = NULL;
    int rv = ctl_call(cli, CTL_OPS_PATH("RollbackPolicy"), &req.base,
                      &aegis__v1__rollback_policy_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0)
        return rv;
    if (cli->json)
        ctl_json_print(cli->out, ctl_pb_to_json(&resp->base), 0);
    else
        print_policy(cli, "rolled back to", resp->policy, resp->command_id);
    ctl_pb_free(&resp->base);
    return CTL_EXIT_OK;
}
