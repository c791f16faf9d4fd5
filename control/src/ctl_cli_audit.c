/*
 * aegisctl audit list: the audit log, newest first.
 */
#include "ctl_cli.h"

#include <aegis/v1/operator.pb-c.h>

#include <string.h>

enum { SUB_LIST };
enum { A_SINCE, A_ACTOR, A_ACTION, A_TARGET, A_LIMIT };

static const struct ctl_optspec list_opts[] = {
    [A_SINCE] = {"since", 1, "DURATION", "only rows from the last DURATION, e.g. 1h"},
    [A_ACTOR] = {"actor", 1, "WHO", "only this actor (operator name, agent id, \"system\")"},
    [A_ACTION] = {"action", 1, "ACTION", "only this action, e.g. revoke, enroll, auth_failed"},
    [A_TARGET] = {"target", 1, "ID", "only rows about this agent/token/command id"},
    [A_LIMIT] = {"limit", 1, "N", "show at most N rows (default 1000)"},
    {NULL, 0, NULL, NULL},
};

static int run_list(struct ctl_cli *cli, const struct ctl_args *a);

static const struct ctl_subcmd subs[] = {
    [SUB_LIST] = {"list", "list [--since 1h] [--actor WHO] [--action A] [--target ID] [--limit N]",
                  "List audit-log rows, newest first.",
                  "Columns: TIME, ACTOR, ACTION, TARGET, RESULT, DETAIL.", list_opts, 0, 0,
                  run_list},
};

const struct ctl_family ctl_family_audit = {"audit", "Read the audit log.", subs,
                                            sizeof(subs) / sizeof(subs[0])};

#define USAGE(s, ...) ctl_usage(cli, &ctl_family_audit, &subs[s], __VA_ARGS__)

/* Audit logs grow without bound; a default cap keeps an idle `audit list`
 * from paging through years of rows. */
#define DEFAULT_LIMIT 1000u

static void audit_row(struct ctl_table *t, const ProtobufCMessage *item, void *arg)
{
    (void)arg;
    const Aegis__V1__AuditEntry *e = (const Aegis__V1__AuditEntry *)item;
    char tm[32];
    const char *row[] = {ctl_fmt_time(e->time_unix_ns, tm, sizeof(tm)),
                         e->actor,
                         e->action,
                         e->target,
                         e->success ? "ok" : "refused",
                         e->detail};
    ctl_table_add(t, row);
}

static int run_list(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__ListAuditRequest req = AEGIS__V1__LIST_AUDIT_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    Aegis__V1__TimeRange tr = AEGIS__V1__TIME_RANGE__INIT;
    req.page = &page;
    const char *v;
    uint32_t limit = DEFAULT_LIMIT;
    if ((v = ctl_args_get(a, A_LIMIT)) && ctl_parse_u32(v, 1, CTL_MAX_ROWS, &limit) != 0)
        return USAGE(SUB_LIST, "bad --limit \"%s\" (1..%u)", v, CTL_MAX_ROWS);
    if ((v = ctl_args_get(a, A_SINCE))) {
        uint64_t ns, now = cli->wallclock();
        if (ctl_parse_duration(v, &ns) != 0 || ns == 0)
            return USAGE(SUB_LIST, "bad --since \"%s\" (a duration such as 90s, 1h, 7d)", v);
        tr.from_unix_ns = ns < now ? (int64_t)(now - ns) : 1;
        req.time = &tr;
    }
    v = ctl_args_get(a, A_ACTOR);
    req.actor = (char *)(v ? v : "");
    v = ctl_args_get(a, A_ACTION);
    req.action = (char *)(v ? v : "");
    v = ctl_args_get(a, A_TARGET);
    req.target = (char *)(v ? v : "");
    static const char *const hdr[] = {"TIME", "ACTOR", "ACTION", "TARGET", "RESULT", "DETAIL"};
    struct ctl_table *t = cli->json ? NULL : ctl_table_new(6, hdr);
    int rv =
        ctl_list(cli, CTL_OPS_PATH("ListAudit"), &req.base, &page,
                 &aegis__v1__list_audit_response__descriptor, "entries", limit, t, audit_row, NULL);
    ctl_table_del(t);
    return rv;
}
