/*
 * aegisctl commands send|show|watch: signed commands to agents (the server
 * signs them per agent; DESIGN §4) and their per-agent delivery progress.
 */
#include "ctl_cli.h"
#include "ctl_kind.h"

#include <aegis/proto.h>
#include <aegis/v1/operator.pb-c.h>

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

enum { SUB_SEND, SUB_SHOW, SUB_WATCH };
enum {
    S_AGENT,
    S_SELECTOR,
    S_ACTION,
    S_ARG,
    S_RESTART,
    S_INVENTORY,
    S_POLICY,
    S_ARTIFACT,
    S_UPDATE,
    S_SERVICE,
    S_FETCH_ONLY,
    S_PACKAGES,
    S_EXPIRES,
    S_WATCH,
};
enum { SH_LIMIT };

/* Commands live at most 24 h (DESIGN §8); the server caps it too. */
#define MAX_LIFETIME_NS (24ull * 3600ull * 1000000000ull)
/* Restart delay: long enough for the agent's Ack to leave first. */
#define RESTART_DELAY_S 2u
/* Action arguments per command; more is certainly a mistake. */
#define MAX_ACTION_ARGS 64u

static const struct ctl_optspec send_opts[] = {
    [S_AGENT] = {"agent", 1, "ID", "target this agent (repeatable)"},
    [S_SELECTOR] = {"selector", 1, "K=V,...", "target agents whose labels all match"},
    [S_ACTION] = {"action", 1, "NAME", "run a built-in action, e.g. flush_conntrack"},
    [S_ARG] = {"arg", 1, "K=V", "argument of --action (repeatable)"},
    [S_RESTART] = {"restart", 0, NULL, "restart the agent process"},
    [S_INVENTORY] = {"inventory", 0, NULL, "collect host inventory (result in `commands show`)"},
    [S_POLICY] = {"policy", 1, "VERSION", "apply this stored policy version"},
    [S_ARTIFACT] = {"artifact", 1, "SHA256", "fetch and load this artifact"},
    [S_UPDATE] = {"update", 1, "SHA256", "replace the agent binary with this artifact"},
    [S_SERVICE] = {"service", 1, "ID", "with --policy: the policy's service id"},
    [S_FETCH_ONLY] = {"fetch-only", 0, NULL, "with --artifact: download and verify only"},
    [S_PACKAGES] = {"packages", 0, NULL, "with --inventory: also list installed packages"},
    [S_EXPIRES] = {"expires", 1, "DURATION", "lifetime (default and maximum 24h)"},
    [S_WATCH] = {"watch", 0, NULL, "then follow its progress like `commands watch`"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec show_opts[] = {
    [SH_LIMIT] = {"limit", 1, "N", "show at most N deliveries"},
    {NULL, 0, NULL, NULL},
};

static int run_send(struct ctl_cli *cli, const struct ctl_args *a);
static int run_show(struct ctl_cli *cli, const struct ctl_args *a);
static int run_watch(struct ctl_cli *cli, const struct ctl_args *a);

static const struct ctl_subcmd subs[] = {
    [SUB_SEND] = {"send",
                  "send (--agent ID... | --selector K=V,...) (--action NAME [--arg K=V...] | "
                  "--restart | --inventory | --policy VERSION | --artifact SHA256 | --update "
                  "SHA256) [--expires 24h] [--watch]",
                  "Send a command to agents; the server signs and queues it per agent.",
                  "Exactly one of --action, --restart, --inventory, --policy, --artifact and "
                  "--update. Offline agents get it when they reconnect, until it expires.",
                  send_opts, 0, 0, run_send},
    [SUB_SHOW] = {"show", "show ID [--limit N]", "Show a command and its per-agent deliveries.",
                  "Columns: AGENT, SEQ, STATE, ATTEMPTS, UPDATED, DETAIL.", show_opts, 1, 1,
                  run_show},
    [SUB_WATCH] = {"watch", "watch ID", "Follow a command until every delivery is final.",
                   "A progress bar on a terminal, one line per change otherwise (--json: one "
                   "object per line). Exits 0 when every agent succeeded, 1 if any failed or "
                   "expired.",
                   NULL, 1, 1, run_watch},
};

const struct ctl_family ctl_family_commands = {
    "commands", "Send commands to agents and follow them.", subs, sizeof(subs) / sizeof(subs[0])};

#define USAGE(s, ...) ctl_usage(cli, &ctl_family_commands, &subs[s], __VA_ARGS__)

/* ---- send ------------------------------------------------------------------- */

/* Looks up a stored artifact (GetArtifactStatus) for --artifact/--update. */
static int find_artifact(struct ctl_cli *cli, const uint8_t sha[32],
                         Aegis__V1__GetArtifactStatusResponse **presp)
{
    Aegis__V1__GetArtifactStatusRequest req = AEGIS__V1__GET_ARTIFACT_STATUS_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    page.limit = 1;
    req.page = &page;
    req.sha256.data = (uint8_t *)sha;
    req.sha256.len = 32;
    int rv =
        ctl_call(cli, CTL_OPS_PATH("GetArtifactStatus"), &req.base,
                 &aegis__v1__get_artifact_status_response__descriptor, (ProtobufCMessage **)presp);
    if (rv == 0 && !(*presp)->artifact) {
        ctl_pb_free(&(*presp)->base);
        fprintf(cli->err, "aegisctl: the server returned no artifact for that SHA-256\n");
        return CTL_EXIT_SERVER;
    }
    return rv;
}

struct watch_ctx {
    struct ctl_cli *cli;
    struct ctl_progress bar;
    int started;
    uint32_t failed, succeeded, total;
};

static int watch_command(struct ctl_cli *cli, const char *id);

static int run_send(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__SendCommandRequest req = AEGIS__V1__SEND_COMMAND_REQUEST__INIT;
    Aegis__V1__AgentTarget target = AEGIS__V1__AGENT_TARGET__INIT;
    Aegis__V1__Command cmd = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RunAction act = AEGIS__V1__RUN_ACTION__INIT;
    Aegis__V1__RestartAgent restart = AEGIS__V1__RESTART_AGENT__INIT;
    Aegis__V1__CollectInventory inv = AEGIS__V1__COLLECT_INVENTORY__INIT;
    Aegis__V1__ApplyPolicy apply = AEGIS__V1__APPLY_POLICY__INIT;
    Aegis__V1__LoadArtifact load = AEGIS__V1__LOAD_ARTIFACT__INIT;
    Aegis__V1__UpdateAgent upd = AEGIS__V1__UPDATE_AGENT__INIT;
    Aegis__V1__RunAction__ArgsEntry argent[MAX_ACTION_ARGS];
    Aegis__V1__RunAction__ArgsEntry *argp[MAX_ACTION_ARGS];
    Aegis__V1__ArtifactStatement *stmt = NULL;
    Aegis__V1__GetArtifactStatusResponse *art = NULL;
    Aegis__V1__ListPoliciesResponse *pols = NULL;
    struct ctl_kvlist args = {0};
    uint8_t sha[32];
    int rv;

    struct ctl_target t;
    rv = ctl_target_from_args(cli, &ctl_family_commands, &subs[SUB_SEND], a, S_AGENT, S_SELECTOR, 1,
                              &t);
    if (rv != 0)
        return rv;
    target.n_agent_ids = t.nids;
    target.agent_ids = (char **)t.ids;
    target.selector = (char *)(t.selector ? t.selector : "");
    req.target = &target;
    req.command = &cmd;

    static const int kinds[] = {S_ACTION, S_RESTART, S_INVENTORY, S_POLICY, S_ARTIFACT, S_UPDATE};
    size_t nkinds = 0;
    int kind = -1;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (ctl_args_count(a, kinds[i])) {
            nkinds++;
            kind = kinds[i];
        }
    }
    if (nkinds != 1)
        return USAGE(SUB_SEND,
                     "%s one of --action, --restart, --inventory, --policy, --artifact, "
                     "--update",
                     nkinds ? "give only" : "say what to do with");
    if (ctl_args_count(a, S_ARG) && kind != S_ACTION)
        return USAGE(SUB_SEND, "--arg goes with --action");
    if (ctl_args_count(a, S_SERVICE) && kind != S_POLICY)
        return USAGE(SUB_SEND, "--service goes with --policy");
    if (ctl_args_count(a, S_FETCH_ONLY) && kind != S_ARTIFACT)
        return USAGE(SUB_SEND, "--fetch-only goes with --artifact");
    if (ctl_args_count(a, S_PACKAGES) && kind != S_INVENTORY)
        return USAGE(SUB_SEND, "--packages goes with --inventory");
    const char *v;
    if ((v = ctl_args_get(a, S_EXPIRES))) {
        uint64_t ns;
        if (ctl_parse_duration(v, &ns) != 0 || ns < 1000000000ull || ns > MAX_LIFETIME_NS)
            return USAGE(SUB_SEND, "bad --expires \"%s\" (1s to 24h)", v);
        req.lifetime_seconds = (uint32_t)(ns / 1000000000ull);
    }

    switch (kind) {
    case S_ACTION: {
        v = ctl_args_get(a, S_ACTION);
        if (!*v || strlen(v) > 128)
            return USAGE(SUB_SEND, "bad --action name \"%s\"", v);
        act.name = (char *)v;
        char err[256];
        for (size_t n = 0; n < ctl_args_count(a, S_ARG); n++) {
            const char *kv = ctl_args_nth(a, S_ARG, n);
            if (ctl_parse_kvlist(kv, &args, err, sizeof(err)) != 0) {
                ctl_kvlist_free(&args);
                return USAGE(SUB_SEND, "bad --arg \"%s\": %s", kv, err);
            }
        }
        for (size_t i = 0; i < args.n; i++) {
            Aegis__V1__RunAction__ArgsEntry e = AEGIS__V1__RUN_ACTION__ARGS_ENTRY__INIT;
            e.key = args.key[i];
            e.value = args.value[i];
            argent[i] = e;
            argp[i] = &argent[i];
        }
        act.n_args = args.n;
        act.args = argp;
        cmd.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION;
        cmd.run_action = &act;
        break;
    }
    case S_RESTART:
        restart.delay_seconds = RESTART_DELAY_S;
        cmd.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RESTART_AGENT;
        cmd.restart_agent = &restart;
        break;
    case S_INVENTORY:
        inv.include_packages = ctl_args_count(a, S_PACKAGES) > 0;
        cmd.payload_case = AEGIS__V1__COMMAND__PAYLOAD_COLLECT_INVENTORY;
        cmd.collect_inventory = &inv;
        break;
    case S_POLICY: {
        uint64_t version = 0, service = 0;
        v = ctl_args_get(a, S_POLICY);
        if (ctl_parse_u64(v, &version) != 0 || version == 0)
            return USAGE(SUB_SEND, "bad --policy version \"%s\" (a number >= 1)", v);
        if ((v = ctl_args_get(a, S_SERVICE)) && ctl_parse_u64(v, &service) != 0)
            return USAGE(SUB_SEND, "bad --service \"%s\" (a number)", v);
        const Aegis__V1__Policy *pol = NULL;
        rv = ctl_policy_find(cli, service, version, &pols, &pol);
        if (rv != 0)
            return rv;
        apply.snapshot = pol->snapshot;
        apply.policy_version = pol->version;
        cmd.payload_case = AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY;
        cmd.apply_policy = &apply;
        break;
    }
    case S_ARTIFACT:
    case S_UPDATE: {
        v = ctl_args_get(a, kind);
        if (ctl_parse_sha256(v, sha) != 0)
            return USAGE(SUB_SEND,
                         "bad SHA-256 \"%s\" (64 hex digits, see `aegisctl artifacts "
                         "list`)",
                         v);
        rv = find_artifact(cli, sha, &art);
        if (rv != 0)
            return rv;
        const Aegis__V1__ArtifactInfo *ai = art->artifact;
        if (kind == S_ARTIFACT) {
            load.sha256.data = sha;
            load.sha256.len = 32;
            load.name = ai->name;
            load.kind = ai->kind;
            load.fetch_only = ctl_args_count(a, S_FETCH_ONLY) > 0;
            cmd.payload_case = AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT;
            cmd.load_artifact = &load;
            break;
        }
        if (ai->kind != AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY) {
            char kb[32];
            fprintf(cli->err,
                    "aegisctl: artifact %s is a %s, not an agent binary (upload the "
                    "new aegis-agent with --kind agent_binary)\n",
                    v,
                    ctl_enum_name(&aegis__v1__artifact_kind__descriptor, (int)ai->kind, kb,
                                  sizeof(kb)));
            ctl_pb_free(&art->base);
            return CTL_EXIT_INPUT;
        }
        /* The version travels signed in the statement; the agent checks it. */
        if (ai->header &&
            ctl_unpack(&aegis__v1__artifact_statement__descriptor, ai->header->statement.data,
                       ai->header->statement.len, (ProtobufCMessage **)&stmt) == 0)
            upd.version = stmt->version;
        else
            upd.version = (char *)"";
        upd.sha256.data = sha;
        upd.sha256.len = 32;
        cmd.payload_case = AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT;
        cmd.update_agent = &upd;
        break;
    }
    }

    Aegis__V1__SendCommandResponse *resp = NULL;
    rv = ctl_call(cli, CTL_OPS_PATH("SendCommand"), &req.base,
                  &aegis__v1__send_command_response__descriptor, (ProtobufCMessage **)&resp);
    ctl_kvlist_free(&args);
    if (stmt)
        ctl_pb_free(&stmt->base);
    if (art)
        ctl_pb_free(&art->base);
    if (pols)
        ctl_pb_free(&pols->base);
    if (rv != 0)
        return rv;
    char *id = strdup(resp->command_id);
    if (cli->json)
        ctl_json_print(cli->out, ctl_pb_to_json(&resp->base), ctl_args_count(a, S_WATCH) > 0);
    else
        fprintf(cli->out, "command %s queued for %u agent(s)\n", resp->command_id,
                resp->targeted_agents);
    uint32_t n = resp->targeted_agents;
    ctl_pb_free(&resp->base);
    if (!id)
        return CTL_EXIT_INPUT;
    rv = CTL_EXIT_OK;
    if (ctl_args_count(a, S_WATCH) && n > 0)
        rv = watch_command(cli, id);
    free(id);
    return rv;
}

/* ---- show ------------------------------------------------------------------- */

static void delivery_row(struct ctl_table *t, const Aegis__V1__CommandDelivery *d)
{
    char seq[24], st[32], att[16], upd[32];
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)d->sequence);
    snprintf(att, sizeof(att), "%u", d->attempts);
    const char *row[] = {
        d->agent_id,
        seq,
        ctl_enum_name(&aegis__v1__command_state__descriptor, (int)d->state, st, sizeof(st)),
        att,
        ctl_fmt_time(d->updated_unix_ns, upd, sizeof(upd)),
        d->detail,
    };
    ctl_table_add(t, row);
}

static const char *payload_name(const Aegis__V1__Command *c)
{
    const char *k = aegis_command_kind(c);
    return k ? k : "-";
}

static void print_counts(FILE *f, const uint32_t *counts, size_t n)
{
    char st[32];
    int first = 1;
    for (size_t i = 1; i < n; i++) {
        if (!counts[i])
            continue;
        fprintf(f, "%s%u %s", first ? "" : ", ", counts[i],
                ctl_enum_name(&aegis__v1__command_state__descriptor, (int)i, st, sizeof(st)));
        first = 0;
    }
    if (first)
        fprintf(f, "none");
}

static int run_show(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__GetCommandRequest req = AEGIS__V1__GET_COMMAND_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.command_id = (char *)a->pos[0];
    req.page = &page;
    uint32_t limit = CTL_MAX_ROWS;
    const char *v;
    if ((v = ctl_args_get(a, SH_LIMIT)) && ctl_parse_u32(v, 1, CTL_MAX_ROWS, &limit) != 0)
        return USAGE(SUB_SHOW, "bad --limit \"%s\" (1..%u)", v, CTL_MAX_ROWS);
    static const char *const hdr[] = {"AGENT", "SEQ", "STATE", "ATTEMPTS", "UPDATED", "DETAIL"};
    struct ctl_table *t = cli->json ? NULL : ctl_table_new(6, hdr);
    struct json_object *arr = cli->json ? json_object_new_array() : NULL;
    struct json_object *info = NULL;
    char *token = NULL;
    size_t rows = 0;
    int rv = 0, first = 1;
    for (unsigned pages = 0; pages < CTL_MAX_ROWS; pages++) {
        page.limit = limit - rows < CTL_PAGE_SIZE ? (uint32_t)(limit - rows) : CTL_PAGE_SIZE;
        page.page_token = token ? token : (char *)"";
        Aegis__V1__GetCommandResponse *resp = NULL;
        rv = ctl_call(cli, CTL_OPS_PATH("GetCommand"), &req.base,
                      &aegis__v1__get_command_response__descriptor, (ProtobufCMessage **)&resp);
        if (rv != 0)
            break;
        if (first) {
            first = 0;
            const Aegis__V1__CommandInfo *ci = resp->command;
            if (cli->json) {
                info = ci ? ctl_pb_to_json(&ci->base) : NULL;
            } else if (ci) {
                char t1[32], t2[32];
                fprintf(
                    cli->out,
                    "command:  %s\npayload:  %s\nsent by:  %s\nissued:   %s\n"
                    "expires:  %s\n",
                    ci->command_id, payload_name(ci->command), ci->sent_by,
                    ctl_fmt_time(ci->command ? ci->command->issued_unix_ns : 0, t1, sizeof(t1)),
                    ctl_fmt_time(ci->command ? ci->command->expires_unix_ns : 0, t2, sizeof(t2)));
                if (ci->target) {
                    fprintf(cli->out, "target:   ");
                    for (size_t i = 0; i < ci->target->n_agent_ids; i++)
                        fprintf(cli->out, "%s%s", i ? "," : "", ci->target->agent_ids[i]);
                    if (ci->target->selector[0])
                        fprintf(cli->out, "%sselector %s", ci->target->n_agent_ids ? " + " : "",
                                ci->target->selector);
                    fputc('\n', cli->out);
                }
                fprintf(cli->out, "states:   ");
                print_counts(cli->out, ci->state_counts, ci->n_state_counts);
                fprintf(cli->out, "\n\n");
            }
        }
        for (size_t i = 0; i < resp->n_deliveries && rows < limit; i++, rows++) {
            if (arr)
                json_object_array_add(arr, ctl_pb_to_json(&resp->deliveries[i]->base));
            else
                delivery_row(t, resp->deliveries[i]);
        }
        free(token);
        token = NULL;
        if (resp->page && resp->page->next_page_token[0] && rows < limit && resp->n_deliveries)
            token = strdup(resp->page->next_page_token);
        ctl_pb_free(&resp->base);
        if (!token)
            break;
    }
    free(token);
    if (rv == 0) {
        if (cli->json) {
            struct json_object *o = json_object_new_object();
            json_object_object_add(o, "command", info);
            json_object_object_add(o, "deliveries", arr);
            info = arr = NULL;
            ctl_json_print(cli->out, o, 0);
        } else {
            ctl_table_print(t, cli->out);
        }
    }
    json_object_put(info);
    json_object_put(arr);
    ctl_table_del(t);
    return rv;
}

/* ---- watch -------------------------------------------------------------------- */

static int on_progress(ProtobufCMessage *m, void *arg)
{
    struct watch_ctx *w = arg;
    struct ctl_cli *cli = w->cli;
    const Aegis__V1__CommandProgress *p = (const Aegis__V1__CommandProgress *)m;
    uint32_t total = 0, fin = 0, ok = 0, bad = 0;
    for (size_t i = 1; i < p->n_state_counts; i++) {
        total += p->state_counts[i];
        if (i == AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED)
            ok += p->state_counts[i];
        if (i == AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED ||
            i == AEGIS__V1__COMMAND_STATE__COMMAND_STATE_EXPIRED)
            bad += p->state_counts[i];
    }
    fin = ok + bad;
    w->total = total;
    w->succeeded = ok;
    w->failed = bad;
    if (cli->json) {
        ctl_json_print(cli->out, ctl_pb_to_json(m), 1);
    } else if (cli->progress_tty) {
        if (!w->started) {
            ctl_progress_start(&w->bar, cli, "deliveries", total);
            w->started = 1;
        }
        w->bar.total = total;
        char suffix[96];
        snprintf(suffix, sizeof(suffix), "%u succeeded, %u failed/expired", ok, bad);
        ctl_progress_update(&w->bar, fin, suffix);
    } else if (p->delivery) {
        const Aegis__V1__CommandDelivery *d = p->delivery;
        char st[32];
        fprintf(cli->out, "%s %s attempts=%u%s%s (%u/%u final)\n", d->agent_id,
                ctl_enum_name(&aegis__v1__command_state__descriptor, (int)d->state, st, sizeof(st)),
                d->attempts, d->detail[0] ? " detail=" : "", d->detail, fin, total);
        fflush(cli->out);
    }
    return p->done ? CTL_STREAM_STOP : 0;
}

static int watch_command(struct ctl_cli *cli, const char *id)
{
    Aegis__V1__WatchCommandRequest req = AEGIS__V1__WATCH_COMMAND_REQUEST__INIT;
    req.command_id = (char *)id;
    struct watch_ctx w = {.cli = cli};
    int rv = ctl_call_stream(cli, CTL_OPS_PATH("WatchCommand"), &req.base,
                             &aegis__v1__command_progress__descriptor, on_progress, &w);
    if (w.started)
        ctl_progress_finish(&w.bar);
    if (rv != 0)
        return rv;
    if (!cli->json)
        fprintf(cli->out, "command %s: %u of %u agent(s) succeeded, %u failed or expired\n", id,
                w.succeeded, w.total, w.failed);
    return w.failed ? CTL_EXIT_SERVER : CTL_EXIT_OK;
}

static int run_watch(struct ctl_cli *cli, const struct ctl_args *a)
{
    return watch_command(cli, a->pos[0]);
}
