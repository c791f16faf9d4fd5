/*
 * aegisctl tokens create|list|revoke: enrollment tokens.
 */
#include "ctl_cli.h"

#include <aegis/v1/operator.pb-c.h>

#include <stdlib.h>
#include <string.h>

enum { SUB_CREATE, SUB_LIST, SUB_REVOKE };
enum { C_TTL, C_USES, C_LABELS, C_DESCRIPTION };
enum { L_ALL, L_LIMIT };

/* The server caps token lifetimes in seconds (uint32); a year is plenty. */
#define MAX_TTL_NS (366ull * 86400ull * 1000000000ull)

static const struct ctl_optspec create_opts[] = {
    [C_TTL] = {"ttl", 1, "DURATION", "lifetime, e.g. 24h (default: the server's, 24h)"},
    [C_USES] = {"uses", 1, "N", "enrollments allowed (default 0 = unlimited until expiry)"},
    [C_LABELS] = {"labels", 1, "K=V,...", "labels for agents that enroll with it (repeatable)"},
    [C_DESCRIPTION] = {"description", 1, "TEXT", "what the token is for"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec list_opts[] = {
    [L_ALL] = {"all", 0, NULL, "include revoked and expired tokens"},
    [L_LIMIT] = {"limit", 1, "N", "show at most N tokens"},
    {NULL, 0, NULL, NULL},
};

static int run_create(struct ctl_cli *cli, const struct ctl_args *a);
static int run_list(struct ctl_cli *cli, const struct ctl_args *a);
static int run_revoke(struct ctl_cli *cli, const struct ctl_args *a);

static const struct ctl_subcmd subs[] = {
    [SUB_CREATE] = {"create", "create [--ttl 24h] [--uses N] [--labels K=V,...] [--description T]",
                    "Create an enrollment token; its secret is printed once.",
                    "Give the secret to `aegis-agent enroll --token`. It is never shown again.",
                    create_opts, 0, 0, run_create},
    [SUB_LIST] = {"list", "list [--all] [--limit N]", "List enrollment tokens (no secrets).",
                  "Columns: ID, DESCRIPTION, USES, EXPIRES, STATE, LABELS.", list_opts, 0, 0,
                  run_list},
    [SUB_REVOKE] = {"revoke", "revoke ID", "Revoke a token; agents can no longer enroll with it.",
                    NULL, NULL, 1, 1, run_revoke},
};

const struct ctl_family ctl_family_tokens = {"tokens", "Create, list and revoke enrollment tokens.",
                                             subs, sizeof(subs) / sizeof(subs[0])};

#define USAGE(s, ...) ctl_usage(cli, &ctl_family_tokens, &subs[s], __VA_ARGS__)

static int run_create(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__CreateTokenRequest req = AEGIS__V1__CREATE_TOKEN_REQUEST__INIT;
    Aegis__V1__Labels labels = AEGIS__V1__LABELS__INIT;
    Aegis__V1__Labels__EntriesEntry ents[CTL_MAX_LABELS];
    Aegis__V1__Labels__EntriesEntry *entp[CTL_MAX_LABELS];
    const char *v;
    if ((v = ctl_args_get(a, C_TTL))) {
        uint64_t ns;
        if (ctl_parse_duration(v, &ns) != 0 || ns < 1000000000ull || ns > MAX_TTL_NS)
            return USAGE(SUB_CREATE, "bad --ttl \"%s\" (a duration from 1s to 366d, e.g. 24h)", v);
        req.ttl_seconds = (uint32_t)(ns / 1000000000ull);
    }
    if ((v = ctl_args_get(a, C_USES)) && ctl_parse_u32(v, 0, UINT32_MAX, &req.max_uses) != 0)
        return USAGE(SUB_CREATE, "bad --uses \"%s\" (a count, 0 = unlimited)", v);
    v = ctl_args_get(a, C_DESCRIPTION);
    req.description = (char *)(v ? v : "");
    struct ctl_kvlist l = {0};
    char err[256];
    for (size_t n = 0; n < ctl_args_count(a, C_LABELS); n++) {
        v = ctl_args_nth(a, C_LABELS, n);
        if (ctl_parse_kvlist(v, &l, err, sizeof(err)) != 0) {
            ctl_kvlist_free(&l);
            return USAGE(SUB_CREATE, "bad --labels \"%s\": %s", v, err);
        }
    }
    if (l.n) {
        for (size_t i = 0; i < l.n; i++) {
            Aegis__V1__Labels__EntriesEntry e = AEGIS__V1__LABELS__ENTRIES_ENTRY__INIT;
            e.key = l.key[i];
            e.value = l.value[i];
            ents[i] = e;
            entp[i] = &ents[i];
        }
        labels.n_entries = l.n;
        labels.entries = entp;
        req.labels = &labels;
    }
    Aegis__V1__CreateTokenResponse *resp = NULL;
    int rv = ctl_call(cli, CTL_OPS_PATH("CreateToken"), &req.base,
                      &aegis__v1__create_token_response__descriptor, (ProtobufCMessage **)&resp);
    ctl_kvlist_free(&l);
    if (rv != 0)
        return rv;
    const Aegis__V1__EnrollmentToken *t = resp->token;
    if (cli->json) {
        ctl_json_print(cli->out, t ? ctl_pb_to_json(&t->base) : NULL, 0);
    } else if (t) {
        char exp[32], uses[16];
        if (t->max_uses)
            snprintf(uses, sizeof(uses), "%u", t->max_uses);
        else
            snprintf(uses, sizeof(uses), "unlimited");
        fprintf(cli->out, "token id: %s\nsecret:   %s\nexpires:  %s\nuses:     %s\n", t->token_id,
                t->secret, ctl_fmt_time(t->expires_unix_ns, exp, sizeof(exp)), uses);
        fprintf(cli->err, "aegisctl: the secret is shown only now; give it to `aegis-agent "
                          "enroll --token`\n");
    }
    ctl_pb_free(&resp->base);
    return CTL_EXIT_OK;
}

static void token_row(struct ctl_table *tb, const ProtobufCMessage *item, void *arg)
{
    const Aegis__V1__EnrollmentToken *t = (const Aegis__V1__EnrollmentToken *)item;
    uint64_t now = *(const uint64_t *)arg;
    char uses[48], exp[32], labels[512];
    if (t->max_uses)
        snprintf(uses, sizeof(uses), "%u/%u", t->uses, t->max_uses);
    else
        snprintf(uses, sizeof(uses), "%u/unlimited", t->uses);
    const char *state = t->revoked ? "revoked"
                        : (t->expires_unix_ns > 0 && (uint64_t)t->expires_unix_ns <= now)
                            ? "expired"
                        : (t->max_uses && t->uses >= t->max_uses) ? "used up"
                                                                  : "active";
    const char *row[] = {
        t->token_id, t->description,
        uses,        ctl_fmt_time(t->expires_unix_ns, exp, sizeof(exp)),
        state,       ctl_fmt_labels(t->labels ? &t->labels->base : NULL, labels, sizeof(labels))};
    ctl_table_add(tb, row);
}

static int run_list(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__ListTokensRequest req = AEGIS__V1__LIST_TOKENS_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    req.include_inactive = ctl_args_count(a, L_ALL) > 0;
    uint32_t limit = CTL_MAX_ROWS;
    const char *v;
    if ((v = ctl_args_get(a, L_LIMIT)) && ctl_parse_u32(v, 1, CTL_MAX_ROWS, &limit) != 0)
        return USAGE(SUB_LIST, "bad --limit \"%s\" (1..%u)", v, CTL_MAX_ROWS);
    static const char *const hdr[] = {"ID", "DESCRIPTION", "USES", "EXPIRES", "STATE", "LABELS"};
    struct ctl_table *t = cli->json ? NULL : ctl_table_new(6, hdr);
    uint64_t now = cli->wallclock();
    int rv =
        ctl_list(cli, CTL_OPS_PATH("ListTokens"), &req.base, &page,
                 &aegis__v1__list_tokens_response__descriptor, "tokens", limit, t, token_row, &now);
    ctl_table_del(t);
    return rv;
}

static int run_revoke(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__RevokeTokenRequest req = AEGIS__V1__REVOKE_TOKEN_REQUEST__INIT;
    req.token_id = (char *)a->pos[0];
    Aegis__V1__RevokeTokenResponse *resp = NULL;
    int rv = ctl_call(cli, CTL_OPS_PATH("RevokeToken"), &req.base,
                      &aegis__v1__revoke_token_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0)
        return rv;
    if (cli->json)
        ctl_json_print(cli->out, ctl_pb_to_json(&resp->base), 0);
    else
        fprintf(cli->out, "token %s %s\n", req.token_id,
                resp->already_revoked ? "was already revoked" : "revoked");
    ctl_pb_free(&resp->base);
    return CTL_EXIT_OK;
}
