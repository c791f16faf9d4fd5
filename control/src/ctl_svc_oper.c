/*
 * OperatorService, part 1: agents, enrollment tokens, commands, telemetry, audit. Operators
 * only (the dispatcher refuses every other role); every change writes an audit row.
 */
#include "ctl_svc_oper.h"
#include "ctl_kind.h"
#include "ctl_schema.h"
#include "ctl_svc_data.h"

#include <aegis/err.h>
#include <aegis/hex.h>
#include <aegis/pki.h>
#include <aegis/proto.h>

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned ctl_page_limit(const Aegis__V1__PageRequest *p)
{
    if (!p || p->limit == 0)
        return CTL_PAGE_DEFAULT;
    return p->limit > CTL_PAGE_MAX ? CTL_PAGE_MAX : p->limit;
}

const char *ctl_page_token(const Aegis__V1__PageRequest *p)
{
    return p && p->page_token ? p->page_token : "";
}

void ctl_page_params(const Aegis__V1__PageRequest *p, char lim[16], char off[24])
{
    snprintf(lim, 16, "%u", ctl_page_limit(p) + 1);
    if (off)
        snprintf(off, 24, "%lld", (long long)ctl_i64(ctl_page_token(p)));
}

/* The generated message layout (protobuf-c): a repeated field is a count at quantifier_offset
 * and an array pointer at offset; a message field is a pointer at offset. */
static void set_items(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, size_t n,
                      ProtobufCMessage **items)
{
    memcpy((char *)msg + f->quantifier_offset, &n, sizeof(n));
    memcpy((char *)msg + f->offset, &items, sizeof(items));
}

static void set_page(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                     Aegis__V1__PageResponse *page)
{
    memcpy((char *)msg + f->offset, &page, sizeof(page));
}

void ctl_page_reply(struct ctl_rpc *r, const struct ctl_db_result *res, int nrows,
                    const Aegis__V1__PageRequest *page, const struct ctl_page_spec *spec,
                    ProtobufCMessage *resp)
{
    struct ctl_server *srv = r->srv;
    const ProtobufCFieldDescriptor *fi =
        protobuf_c_message_descriptor_get_field_by_name(resp->descriptor, spec->items);
    const ProtobufCFieldDescriptor *fp =
        protobuf_c_message_descriptor_get_field_by_name(resp->descriptor, "page");
    assert(fi && fi->label == PROTOBUF_C_LABEL_REPEATED && fi->type == PROTOBUF_C_TYPE_MESSAGE);
    assert(fp && fp->descriptor == &aegis__v1__page_response__descriptor);
    unsigned limit = ctl_page_limit(page);
    int shown = nrows < 0 ? 0 : nrows > (int)limit ? (int)limit : nrows;
    uint8_t *rows = aegis_calloc(srv->mem, (size_t)shown + 1, spec->row_size);
    ProtobufCMessage **items = aegis_calloc(srv->mem, (size_t)shown + 1, sizeof(*items));
    if (!rows || !items) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        goto out;
    }
    for (int i = 0; i < shown; i++) {
        items[i] = spec->fill(srv, res, i, rows + (size_t)i * spec->row_size);
        if (!items[i]) {
            ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "%s", spec->fill_error);
            goto out;
        }
    }
    Aegis__V1__PageResponse pr = AEGIS__V1__PAGE_RESPONSE__INIT;
    char next[32];
    if (nrows > shown && spec->paging == CTL_PAGE_BY_KEY) {
        pr.next_page_token = (char *)ctl_db_result_value(res, shown - 1, spec->key_col);
    } else if (nrows > shown) {
        snprintf(next, sizeof(next), "%lld", (long long)(ctl_i64(ctl_page_token(page)) + shown));
        pr.next_page_token = next;
    }
    set_items(resp, fi, (size_t)shown, items);
    set_page(resp, fp, &pr);
    ctl_rpc_reply(r, resp);
    set_items(resp, fi, 0, NULL);
    set_page(resp, fp, NULL);
out:
    for (int i = 0; rows && spec->free_row && i < shown; i++)
        spec->free_row(srv, rows + (size_t)i * spec->row_size);
    aegis_free(srv->mem, rows);
    aegis_free(srv->mem, items);
}

int ctl_rpc_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res, const char *none)
{
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return -1;
    }
    int n = ctl_db_result_ntuples(res);
    if (n == 0 && none) {
        ctl_rpc_fail(r, AEGIS_GRPC_NOT_FOUND, "%s", none);
        return -1;
    }
    return n;
}

void ctl_page_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res,
                   const Aegis__V1__PageRequest *page, const struct ctl_page_spec *spec,
                   ProtobufCMessage *resp)
{
    int n = ctl_rpc_rows(r, rv, res, NULL);
    if (n >= 0)
        ctl_page_reply(r, res, n, page, spec, resp);
}

void *ctl_rpc_state_new(struct ctl_rpc *r, size_t size)
{
    void *st = aegis_calloc(r->srv->mem, 1, size);
    if (!st) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return NULL;
    }
    r->state = st;
    return st;
}

/* ---- agents --------------------------------------------------------------------------------- */

#define AGENT_COLS                                                                                 \
    "id::text, host_id, hostname, " CTL_SQL_LABELS_TEXT(                                           \
        "labels") ", version, status,"                                                             \
                  " encode(spki_sha256, 'hex'), encode(machine_id_hash, 'hex'), " CTL_SQL_NS(      \
                      "enrolled_at") ", " CTL_SQL_NS("last_seen") ", "                             \
                                                                  "coalesce(connected_instance::"  \
                                                                  "text, ''), capabilities,"       \
                                                                  " last_acked_sequence"

struct agent_row {
    Aegis__V1__Agent a;
    Aegis__V1__HostFacts host;
    struct ctl_labels labels;
    uint8_t spki[32], mid[32];
    char *caps[32];
    char capbuf[512];
};

static ProtobufCMessage *agent_fill(struct ctl_server *srv, const struct ctl_db_result *res, int i,
                                    void *row)
{
    struct agent_row *ar = row;
    aegis__v1__agent__init(&ar->a);
    aegis__v1__host_facts__init(&ar->host);
    ar->a.agent_id = (char *)ctl_db_result_value(res, i, 0);
    ar->a.host_id = (char *)ctl_db_result_value(res, i, 1);
    ar->host.host_id = ar->a.host_id;
    ar->host.hostname = (char *)ctl_db_result_value(res, i, 2);
    ar->a.host = &ar->host;
    if (ctl_labels_from_text(srv->mem, ctl_db_result_value(res, i, 3), &ar->labels) == 0)
        ar->a.labels = ar->labels.msg;
    ar->a.version = (char *)ctl_db_result_value(res, i, 4);
    const char *status = ctl_db_result_value(res, i, 5);
    const char *inst = ctl_db_result_value(res, i, 10);
    ar->a.status = strcmp(status, "revoked") == 0 ? AEGIS__V1__AGENT_STATUS__AGENT_STATUS_REVOKED
                   : inst[0]                      ? AEGIS__V1__AGENT_STATUS__AGENT_STATUS_ONLINE
                                                  : AEGIS__V1__AGENT_STATUS__AGENT_STATUS_OFFLINE;
    const char *spki = ctl_db_result_value(res, i, 6), *mid = ctl_db_result_value(res, i, 7);
    if (aegis_hex_decode(spki, strlen(spki), ar->spki, 32) == 32) {
        ar->a.spki_sha256.data = ar->spki;
        ar->a.spki_sha256.len = 32;
    }
    if (aegis_hex_decode(mid, strlen(mid), ar->mid, 32) == 32) {
        ar->a.machine_id_hash.data = ar->mid;
        ar->a.machine_id_hash.len = 32;
    }
    ar->a.enrolled_unix_ns = ctl_i64(ctl_db_result_value(res, i, 8));
    ar->a.last_seen_unix_ns = ctl_i64(ctl_db_result_value(res, i, 9));
    ar->a.connected_instance = (char *)inst;
    snprintf(ar->capbuf, sizeof(ar->capbuf), "%s", ctl_db_result_value(res, i, 11));
    size_t n = 0;
    for (char *p = ar->capbuf, *tok; n < 32 && (tok = strsep(&p, ",")) != NULL;)
        if (*tok)
            ar->caps[n++] = tok;
    ar->a.n_capabilities = n;
    ar->a.capabilities = ar->caps;
    ar->a.acked_sequence = (uint64_t)ctl_i64(ctl_db_result_value(res, i, 12));
    return &ar->a.base;
}

static void agent_row_free(struct ctl_server *srv, void *row)
{
    ctl_labels_free(srv->mem, &((struct agent_row *)row)->labels);
}

/* Agents page by id (column 0), so a page does not shift while agents enroll. */
static const struct ctl_page_spec agent_page = {
    .items = "agents",
    .row_size = sizeof(struct agent_row),
    .fill = agent_fill,
    .free_row = agent_row_free,
    .paging = CTL_PAGE_BY_KEY,
    .key_col = 0,
};

static void list_agents_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    Aegis__V1__ListAgentsRequest *req = (Aegis__V1__ListAgentsRequest *)r->req;
    Aegis__V1__ListAgentsResponse resp = AEGIS__V1__LIST_AGENTS_RESPONSE__INIT;
    ctl_page_rows(r, rv, res, req->page, &agent_page, &resp.base);
}

static void list_agents(struct ctl_rpc *r)
{
    Aegis__V1__ListAgentsRequest *req = (Aegis__V1__ListAgentsRequest *)r->req;
    char sel[2048], lim[16];
    if (ctl_selector_json(req->selector, sel, sizeof(sel)) != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "bad selector \"%s\": use name=value[,name=value...]", req->selector);
        return;
    }
    const char *token = ctl_page_token(req->page);
    if (token[0] && !ctl_uuid_valid(token)) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "bad page token");
        return;
    }
    const char *st = "";
    switch (req->status) {
    case AEGIS__V1__AGENT_STATUS__AGENT_STATUS_ONLINE:
        st = "online";
        break;
    case AEGIS__V1__AGENT_STATUS__AGENT_STATUS_OFFLINE:
        st = "offline";
        break;
    case AEGIS__V1__AGENT_STATUS__AGENT_STATUS_REVOKED:
        st = "revoked";
        break;
    default:
        break;
    }
    ctl_page_params(req->page, lim, NULL);
    const char *v[4] = {sel, token, st, lim};
    ctl_rpc_db(r,
               "SELECT " AGENT_COLS
               " FROM agents WHERE ($1 = '' OR labels @> nullif($1, '')::jsonb)"
               " AND ($2 = '' OR id > nullif($2, '')::uuid)"
               " AND ($3 = '' OR ($3 = 'revoked' AND status = 'revoked')"
               "  OR ($3 = 'online' AND status = 'enrolled' AND connected_instance IS NOT NULL)"
               "  OR ($3 = 'offline' AND status = 'enrolled' AND connected_instance IS NULL))"
               " ORDER BY id LIMIT $4::int",
               4, v, NULL, NULL, list_agents_rows);
}

static void get_agent_row(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    if (ctl_rpc_rows(r, rv, res, "no agent with that id (aegisctl agents list)") < 0)
        return;
    struct agent_row ar;
    memset(&ar, 0, sizeof(ar));
    agent_fill(r->srv, res, 0, &ar);
    Aegis__V1__GetAgentResponse resp = AEGIS__V1__GET_AGENT_RESPONSE__INIT;
    resp.agent = &ar.a;
    ctl_rpc_reply(r, &resp.base);
    agent_row_free(r->srv, &ar);
}

static void get_agent(struct ctl_rpc *r)
{
    Aegis__V1__GetAgentRequest *req = (Aegis__V1__GetAgentRequest *)r->req;
    if (!ctl_uuid_valid(req->agent_id)) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "agent id \"%.40s\" is not a UUID",
                     req->agent_id);
        return;
    }
    const char *v[1] = {req->agent_id};
    ctl_rpc_db(r, "SELECT " AGENT_COLS " FROM agents WHERE id = $1::uuid", 1, v, NULL, NULL,
               get_agent_row);
}

static void revoke_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    Aegis__V1__RevokeAgentRequest *req = (Aegis__V1__RevokeAgentRequest *)r->req;
    if (ctl_rpc_rows(r, rv, res, "no agent with that id") < 0)
        return;
    int already = strcmp(ctl_db_result_value(res, 0, 0), "t") == 0;
    Aegis__V1__RevokeAgentResponse resp = AEGIS__V1__REVOKE_AGENT_RESPONSE__INIT;
    resp.revoked_unix_ns = ctl_i64(ctl_db_result_value(res, 0, 1));
    resp.already_revoked = already;
    /* The status trigger NOTIFYs every instance, which closes the agent's connection wherever
     * it is; this one reports what it will close itself. */
    struct ctl_conn *cc = ctl_conn_for_agent(r->srv, req->agent_id);
    resp.connections_closed = (!already && (cc || ctl_db_result_value(res, 0, 2)[0])) ? 1 : 0;
    char detail[300];
    snprintf(detail, sizeof(detail), "%s%s", already ? "already revoked; " : "", req->reason);
    ctl_audit(r->srv, r->cc->name, "revoke", req->agent_id, "ok", detail);
    ctl_rpc_reply(r, &resp.base);
}

static void revoke_agent(struct ctl_rpc *r)
{
    Aegis__V1__RevokeAgentRequest *req = (Aegis__V1__RevokeAgentRequest *)r->req;
    if (!ctl_uuid_valid(req->agent_id)) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "agent id \"%.40s\" is not a UUID",
                     req->agent_id);
        return;
    }
    const char *v[1] = {req->agent_id};
    ctl_rpc_db(r,
               "WITH old AS (SELECT status, connected_instance FROM agents WHERE id = $1::uuid"
               "   FOR UPDATE),"
               " up AS (UPDATE agents SET status = 'revoked', revoked_at = now()"
               "   WHERE id = $1::uuid AND status <> 'revoked' RETURNING revoked_at)"
               " SELECT old.status = 'revoked', " CTL_SQL_NS(
                   "coalesce((SELECT revoked_at FROM up), (SELECT revoked_at FROM agents"
                   " WHERE id = $1::uuid))") ", coalesce(old.connected_instance::text, '')"
                                             " FROM old",
               1, v, NULL, NULL, revoke_done);
}

/* ---- tokens --------------------------------------------------------------------------------- */

struct token_state {
    char id[37];
    char secret[80]; /* "aegis_" + 64 hex + NUL */
};

static void token_free(struct ctl_rpc *r)
{
    if (r->state) {
        memset(r->state, 0, sizeof(struct token_state));
        aegis_free(r->srv->mem, r->state);
    }
}

#define TOKEN_COLS                                                                                 \
    "id::text, description, max_uses, CASE WHEN max_uses = 0 THEN 0 ELSE max_uses - uses_left"     \
    " END, " CTL_SQL_NS("expires_at") ", " CTL_SQL_NS(                                             \
        "created_at") ", created_by, revoked, " CTL_SQL_LABELS_TEXT("labels")

struct token_row {
    Aegis__V1__EnrollmentToken t;
    struct ctl_labels l;
};

static ProtobufCMessage *token_fill(struct ctl_server *srv, const struct ctl_db_result *res, int i,
                                    void *row)
{
    struct token_row *tr = row;
    Aegis__V1__EnrollmentToken *t = &tr->t;
    aegis__v1__enrollment_token__init(t);
    t->token_id = (char *)ctl_db_result_value(res, i, 0);
    t->description = (char *)ctl_db_result_value(res, i, 1);
    t->max_uses = (uint32_t)ctl_i64(ctl_db_result_value(res, i, 2));
    t->uses = (uint32_t)ctl_i64(ctl_db_result_value(res, i, 3));
    t->expires_unix_ns = ctl_i64(ctl_db_result_value(res, i, 4));
    t->created_unix_ns = ctl_i64(ctl_db_result_value(res, i, 5));
    t->created_by = (char *)ctl_db_result_value(res, i, 6);
    t->revoked = strcmp(ctl_db_result_value(res, i, 7), "t") == 0;
    if (ctl_labels_from_text(srv->mem, ctl_db_result_value(res, i, 8), &tr->l) == 0)
        t->labels = tr->l.msg;
    return &t->base;
}

static void token_row_free(struct ctl_server *srv, void *row)
{
    ctl_labels_free(srv->mem, &((struct token_row *)row)->l);
}

static void create_token_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct token_state *st = r->state;
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    struct token_row tr = {0};
    token_fill(r->srv, res, 0, &tr);
    tr.t.secret = st->secret; /* shown once; only its hash is stored */
    ctl_audit(r->srv, r->cc->name, "token_create", st->id, "ok", tr.t.description);
    Aegis__V1__CreateTokenResponse resp = AEGIS__V1__CREATE_TOKEN_RESPONSE__INIT;
    resp.token = &tr.t;
    ctl_rpc_reply(r, &resp.base);
    token_row_free(r->srv, &tr);
}

static void create_token(struct ctl_rpc *r)
{
    Aegis__V1__CreateTokenRequest *req = (Aegis__V1__CreateTokenRequest *)r->req;
    if (req->max_uses > INT32_MAX) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "max_uses over %d", INT32_MAX);
        return;
    }
    char labels[8192];
    size_t nl = req->labels ? req->labels->n_entries : 0;
    const char *keys[64], *vals[64];
    if (nl > 64) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "at most 64 labels");
        return;
    }
    for (size_t i = 0; i < nl; i++) {
        keys[i] = req->labels->entries[i]->key;
        vals[i] = req->labels->entries[i]->value;
    }
    if (ctl_labels_text(keys, vals, nl, labels, sizeof(labels)) != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "bad label: names 1..63 and values up to 255 characters, no ',' '=' or "
                     "control characters");
        return;
    }
    struct token_state *st = ctl_rpc_state_new(r, sizeof(*st));
    if (!st)
        return;
    ctl_uuid(st->id);
    uint8_t raw[32], h[32];
    if (ctl_random(raw, sizeof(raw)) != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "no randomness");
        return;
    }
    /* "aegis_" + 64 hex: recognizable in logs and secret scanners, 256 bits of entropy. */
    memcpy(st->secret, "aegis_", 6);
    aegis_hex_encode(raw, 32, st->secret + 6, sizeof(st->secret) - 6);
    if (aegis_sha256_hash(st->secret, strlen(st->secret), h) != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot hash the token");
        return;
    }
    char hhex[65], uses[16], left[16], ttl[16];
    aegis_hex_encode(h, 32, hhex, sizeof(hhex));
    snprintf(uses, sizeof(uses), "%u", req->max_uses);
    snprintf(left, sizeof(left), "%u", req->max_uses ? req->max_uses : (unsigned)INT32_MAX);
    snprintf(ttl, sizeof(ttl), "%u", req->ttl_seconds ? req->ttl_seconds : CTL_DEFAULT_TOKEN_TTL_S);
    const char *v[8] = {st->id, hhex, req->description, labels, r->cc->name, ttl, left, uses};
    ctl_rpc_db(r,
               "INSERT INTO enrollment_tokens (id, token_sha256, description, labels, created_by,"
               " expires_at, uses_left, max_uses) VALUES ($1::uuid, decode($2, 'hex'), "
               "$3, " CTL_SQL_LABELS_JSONB("4") ", $5, now() + make_interval(secs => $6::float8),"
                                                " $7::int, $8::int) RETURNING " TOKEN_COLS,
               8, v, NULL, NULL, create_token_done);
}

static const struct ctl_page_spec token_page = {
    .items = "tokens",
    .row_size = sizeof(struct token_row),
    .fill = token_fill,
    .free_row = token_row_free,
};

static void list_tokens_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    Aegis__V1__ListTokensRequest *req = (Aegis__V1__ListTokensRequest *)r->req;
    Aegis__V1__ListTokensResponse resp = AEGIS__V1__LIST_TOKENS_RESPONSE__INIT;
    ctl_page_rows(r, rv, res, req->page, &token_page, &resp.base);
}

static void list_tokens(struct ctl_rpc *r)
{
    Aegis__V1__ListTokensRequest *req = (Aegis__V1__ListTokensRequest *)r->req;
    char lim[16], off[24];
    ctl_page_params(req->page, lim, off);
    const char *v[3] = {req->include_inactive ? "t" : "f", lim, off};
    ctl_rpc_db(r,
               "SELECT " TOKEN_COLS " FROM enrollment_tokens WHERE $1::bool OR"
               " (NOT revoked AND expires_at > now() AND uses_left > 0)"
               " ORDER BY created_at DESC, id LIMIT $2::int OFFSET $3::int",
               3, v, NULL, NULL, list_tokens_rows);
}

static void revoke_token_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    Aegis__V1__RevokeTokenRequest *req = (Aegis__V1__RevokeTokenRequest *)r->req;
    if (ctl_rpc_rows(r, rv, res, "no token with that id (aegisctl tokens list)") < 0)
        return;
    Aegis__V1__RevokeTokenResponse resp = AEGIS__V1__REVOKE_TOKEN_RESPONSE__INIT;
    resp.already_revoked = strcmp(ctl_db_result_value(res, 0, 0), "t") == 0;
    ctl_audit(r->srv, r->cc->name, "token_revoke", req->token_id, "ok",
              resp.already_revoked ? "already revoked" : "");
    ctl_rpc_reply(r, &resp.base);
}

static void revoke_token(struct ctl_rpc *r)
{
    Aegis__V1__RevokeTokenRequest *req = (Aegis__V1__RevokeTokenRequest *)r->req;
    if (!ctl_uuid_valid(req->token_id)) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "token id is not a UUID");
        return;
    }
    const char *v[1] = {req->token_id};
    ctl_rpc_db(r,
               "WITH old AS (SELECT revoked FROM enrollment_tokens WHERE id = $1::uuid FOR UPDATE),"
               " up AS (UPDATE enrollment_tokens SET revoked = true WHERE id = $1::uuid)"
               " SELECT revoked FROM old",
               1, v, NULL, NULL, revoke_token_done);
}

/* ---- commands ---------------------------------------------------------------------------------
 */

const char *ctl_cmd_kind(const Aegis__V1__Command *c)
{
    if (c->payload_case == AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT && c->load_artifact &&
        c->load_artifact->fetch_only)
        return "fetch_artifact";
    return aegis_command_kind(c);
}

static void send_command_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res,
                              const char *id, unsigned n)
{
    if (rv == AEGIS_ERR_NOT_FOUND) {
        ctl_rpc_fail(r, AEGIS_GRPC_FAILED_PRECONDITION,
                     "no enrolled agent matches the target (check ids with aegisctl agents list)");
        return;
    }
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    Aegis__V1__SendCommandResponse resp = AEGIS__V1__SEND_COMMAND_RESPONSE__INIT;
    resp.command_id = (char *)id;
    resp.targeted_agents = n;
    ctl_rpc_reply(r, &resp.base);
}

int ctl_cmd_spec_fail(struct ctl_rpc *r, int rv)
{
    if (r->finished)
        return rv;
    switch (rv) {
    case -EINVAL:
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "target names no agent ids and no selector");
        break;
    case AEGIS_ERR_MALFORMED:
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "bad target: agent ids must be UUIDs, a selector name=value[,name=value]");
        break;
    case AEGIS_ERR_LIMIT:
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "more than %u agent ids; use a selector",
                     CTL_MAX_TARGET_IDS);
        break;
    default:
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot create the command: %s", aegis_strerror(rv));
    }
    return rv;
}

static void send_command(struct ctl_rpc *r)
{
    Aegis__V1__SendCommandRequest *req = (Aegis__V1__SendCommandRequest *)r->req;
    const char *kind = req->command ? ctl_cmd_kind(req->command) : NULL;
    if (!kind) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "SendCommandRequest.command has no payload");
        return;
    }
    if (!req->target) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "SendCommandRequest.target is missing");
        return;
    }
    struct ctl_cmd_spec spec = {
        .payload_cmd = &req->command->base,
        .agent_ids = (const char *const *)req->target->agent_ids,
        .n_agent_ids = req->target->n_agent_ids,
        .selector = req->target->selector,
        .lifetime_s = req->lifetime_seconds,
        .kind = kind,
        .created_by = r->cc->name,
    };
    int rv = ctl_cmd_create(r, &spec, send_command_done);
    if (rv != 0)
        ctl_cmd_spec_fail(r, rv);
}

#define DELIVERY_COLS                                                                              \
    "agent_id::text, sequence, status, attempts, " CTL_SQL_NS("next_retry_at") ", " CTL_SQL_NS(    \
        "updated_at") ", coalesce(detail, ''), encode(coalesce(result, ''::bytea), 'hex')"

struct delivery_row {
    Aegis__V1__CommandDelivery d;
    uint8_t *result;
};

static void delivery_fill(struct ctl_server *srv, const struct ctl_db_result *res, int i, int col,
                          struct delivery_row *dr)
{
    aegis__v1__command_delivery__init(&dr->d);
    dr->d.agent_id = (char *)ctl_db_result_value(res, i, col);
    dr->d.sequence = (uint64_t)ctl_i64(ctl_db_result_value(res, i, col + 1));
    dr->d.state = (Aegis__V1__CommandState)ctl_state_from_db(ctl_db_result_value(res, i, col + 2));
    dr->d.attempts = (uint32_t)ctl_i64(ctl_db_result_value(res, i, col + 3));
    dr->d.next_retry_unix_ns = ctl_i64(ctl_db_result_value(res, i, col + 4));
    dr->d.updated_unix_ns = ctl_i64(ctl_db_result_value(res, i, col + 5));
    dr->d.detail = (char *)ctl_db_result_value(res, i, col + 6);
    const char *hex = ctl_db_result_value(res, i, col + 7);
    size_t n;
    if (aegis_hex_decode_alloc(srv->mem, hex, strlen(hex), &dr->result, &n) == 0 && n) {
        dr->d.result.data = dr->result;
        dr->d.result.len = n;
    }
}

/* GetCommand rows carry the command in columns 0..3 and a delivery from column 4. */
static ProtobufCMessage *get_command_delivery(struct ctl_server *srv,
                                              const struct ctl_db_result *res, int i, void *row)
{
    struct delivery_row *dr = row;
    delivery_fill(srv, res, i, 4, dr);
    return &dr->d.base;
}

static void delivery_row_free(struct ctl_server *srv, void *row)
{
    aegis_free(srv->mem, ((struct delivery_row *)row)->result);
}

static const struct ctl_page_spec delivery_page = {
    .items = "deliveries",
    .row_size = sizeof(struct delivery_row),
    .fill = get_command_delivery,
    .free_row = delivery_row_free,
    .paging = CTL_PAGE_BY_KEY,
    .key_col = 4, /* agent id */
};

/* Per-state counts arrive as "0,q,d,a,r,s,f,e" (STATE_COUNTS_SQL), indexed by CommandState. */
static void parse_state_counts(const char *cstr, uint32_t counts[8])
{
    memset(counts, 0, 8 * sizeof(counts[0]));
    for (int s = 0; s < 8 && *cstr; s++) {
        counts[s] = (uint32_t)strtoul(cstr, (char **)&cstr, 10);
        if (*cstr == ',')
            cstr++;
    }
}

static void get_command_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct ctl_server *srv = r->srv;
    int n = ctl_rpc_rows(r, rv, res, "no command with that id");
    if (n < 0)
        return;
    Aegis__V1__GetCommandRequest *req = (Aegis__V1__GetCommandRequest *)r->req;
    Aegis__V1__Command *cmd = NULL;
    const char *phex = ctl_db_result_value(res, 0, 1);
    uint8_t *pb = NULL;
    size_t plen = 0;
    if (aegis_hex_decode_alloc(srv->mem, phex, strlen(phex), &pb, &plen) != 0 ||
        aegis_proto_unpack(&aegis__v1__command__descriptor, pb, plen, SIZE_MAX, srv->mem,
                           (ProtobufCMessage **)&cmd) != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot read the stored command");
        goto out;
    }
    uint32_t counts[8];
    parse_state_counts(ctl_db_result_value(res, 0, 12), counts);
    Aegis__V1__CommandInfo info = AEGIS__V1__COMMAND_INFO__INIT;
    Aegis__V1__AgentTarget tgt = AEGIS__V1__AGENT_TARGET__INIT;
    info.command_id = req->command_id;
    info.command = cmd;
    info.sent_by = (char *)ctl_db_result_value(res, 0, 2);
    tgt.selector = (char *)ctl_db_result_value(res, 0, 3);
    info.target = &tgt;
    info.n_state_counts = 8;
    info.state_counts = counts;
    Aegis__V1__GetCommandResponse resp = AEGIS__V1__GET_COMMAND_RESPONSE__INIT;
    resp.command = &info;
    /* Without deliveries the one row has NULL delivery columns. */
    int nd = ctl_db_result_isnull(res, 0, 4) ? 0 : n;
    ctl_page_reply(r, res, nd, req->page, &delivery_page, &resp.base);
out:
    aegis_free(srv->mem, pb);
    if (cmd)
        aegis_proto_free(&cmd->base, srv->mem);
}

/* Per-state counts as "q,d,a,r,s,f,e" indexed by CommandState (0 unused). */
#define STATE_COUNTS_SQL(cmd)                                                                      \
    "(SELECT concat_ws(',', 0, count(*) FILTER (WHERE status = 'queued'),"                         \
    " count(*) FILTER (WHERE status = 'delivered'), count(*) FILTER (WHERE status = 'acked'),"     \
    " count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'succeeded'),"   \
    " count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'expired'))"      \
    " FROM deliveries WHERE command_id = " cmd ")"

static void get_command(struct ctl_rpc *r)
{
    Aegis__V1__GetCommandRequest *req = (Aegis__V1__GetCommandRequest *)r->req;
    if (!ctl_uuid_valid(req->command_id)) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "command id is not a UUID");
        return;
    }
    const char *token = ctl_page_token(req->page);
    if (token[0] && !ctl_uuid_valid(token)) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "bad page token");
        return;
    }
    char lim[16];
    ctl_page_params(req->page, lim, NULL);
    const char *v[3] = {req->command_id, token, lim};
    ctl_rpc_db(
        r,
        "SELECT c.id::text, encode(c.payload, 'hex'), c.created_by, c.selector,"
        " d.agent_id::text, d.sequence, d.status, d.attempts, " CTL_SQL_NS(
            "d.next_retry_at") ", " CTL_SQL_NS("d.updated_at") ","
                                                               " coalesce(d.detail, ''), "
                                                               "encode(coalesce(d.result, "
                                                               "''::bytea), "
                                                               "'hex'), " STATE_COUNTS_SQL(
                                                                   "c.id") " FROM commands c LEFT "
                                                                           "JOIN LATERAL (SELECT * "
                                                                           "FROM deliveries x"
                                                                           "   WHERE x.command_id "
                                                                           "= c.id AND ($2 = '' OR "
                                                                           "x.agent_id > "
                                                                           "nullif($2, '')::uuid)"
                                                                           "   ORDER BY x.agent_id "
                                                                           "LIMIT $3::int) d ON "
                                                                           "true"
                                                                           " WHERE c.id = $1::uuid "
                                                                           "ORDER BY d.agent_id",
        3, v, NULL, NULL, get_command_rows);
}

/* WatchCommand: the current deliveries, then every change (NOTIFY aegis_deliveries), until all
 * are final or the call's deadline. */
struct watch_state {
    char since[40]; /* updated_at watermark (text, microseconds) */
    int busy, again;
    /* The done=true message did not fit the send queue: it goes out from
     * on_writable with these counts, then the call finishes. */
    int final_pending;
    uint32_t final_counts[8];
};

static void watch_free(struct ctl_rpc *r)
{
    aegis_free(r->srv->mem, r->state);
}

static void watch_query(struct ctl_rpc *r);

static void watch_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct watch_state *st = r->state;
    struct ctl_server *srv = r->srv;
    st->busy = 0;
    if (rv != 0) {
        if (rv == AEGIS_ERR_UNAVAILABLE || rv == AEGIS_ERR_CLOSED || rv == AEGIS_ERR_LIMIT)
            return; /* keep watching: the next change notification queries again */
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    int n = ctl_db_result_ntuples(res);
    if (n == 0 || ctl_db_result_isnull(res, 0, 0)) {
        if (n == 0)
            ctl_rpc_fail(r, AEGIS_GRPC_NOT_FOUND, "no command with that id");
        return;
    }
    uint32_t counts[8];
    parse_state_counts(ctl_db_result_value(res, 0, 8), counts);
    uint32_t total = 0, final = 0;
    for (int s = 1; s < 8; s++)
        total += counts[s];
    final = counts[5] + counts[6] + counts[7];
    int done = total > 0 && final == total;
    for (int i = 0; i < n; i++) {
        if (ctl_db_result_isnull(res, i, 1))
            continue; /* no changed delivery, only the counts row */
        struct delivery_row dr;
        memset(&dr, 0, sizeof(dr));
        delivery_fill(srv, res, i, 1, &dr);
        Aegis__V1__CommandProgress p = AEGIS__V1__COMMAND_PROGRESS__INIT;
        p.delivery = &dr.d;
        p.n_state_counts = 8;
        p.state_counts = counts;
        p.done = done && i == n - 1;
        int srv_rv = ctl_rpc_send(r, &p.base);
        delivery_row_free(srv, &dr);
        if (srv_rv != 0 && srv_rv != -EAGAIN) {
            ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot send progress");
            return;
        }
        /* -EAGAIN: a watcher that does not read loses intermediate events, but never the
         * final one (sent from on_writable below). */
        if (srv_rv == -EAGAIN && p.done) {
            st->final_pending = 1;
            memcpy(st->final_counts, counts, sizeof(counts));
        }
    }
    snprintf(st->since, sizeof(st->since), "%s", ctl_db_result_value(res, 0, 9));
    if (done) {
        if (!st->final_pending)
            ctl_rpc_finish(r, AEGIS_GRPC_OK, "");
        return;
    }
    if (st->again) {
        st->again = 0;
        watch_query(r);
    }
}

static void watch_query(struct ctl_rpc *r)
{
    struct watch_state *st = r->state;
    if (st->busy) {
        st->again = 1;
        return;
    }
    st->busy = 1;
    const char *v[2] = {r->watch_key, st->since};
    if (ctl_rpc_db_soft(
            r,
            "SELECT c.id::text, d.agent_id::text, d.sequence, d.status, "
            "d.attempts, " CTL_SQL_NS("d.next_retry_at") ", " CTL_SQL_NS(
                "d.updated_at") ","
                                " coalesce(d.detail, ''), " STATE_COUNTS_SQL(
                                    "c.id") ","
                                            " (SELECT coalesce(max(updated_at), "
                                            "'-infinity')::text FROM deliveries"
                                            "   WHERE command_id = c.id)"
                                            " FROM commands c LEFT JOIN deliveries d ON "
                                            "d.command_id = c.id"
                                            "   AND d.updated_at > $2::timestamptz"
                                            " WHERE c.id = $1::uuid ORDER BY d.updated_at, "
                                            "d.agent_id",
            2, v, NULL, NULL, watch_rows) != 0)
        st->busy = 0;
}

/* delivery_fill reads 8 columns from col; the watch query has 7 delivery columns + counts at 8:
 * its "result" column is the counts text, which is not hex and is ignored. */

static void watch_writable(struct ctl_rpc *r)
{
    struct watch_state *st = r->state;
    if (!st || !st->final_pending)
        return;
    Aegis__V1__CommandProgress p = AEGIS__V1__COMMAND_PROGRESS__INIT;
    p.n_state_counts = 8;
    p.state_counts = st->final_counts;
    p.done = 1;
    int rv = ctl_rpc_send(r, &p.base);
    if (rv == -EAGAIN)
        return; /* still full: the next on_writable tries again */
    st->final_pending = 0;
    if (rv != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot send progress");
        return;
    }
    ctl_rpc_finish(r, AEGIS_GRPC_OK, "");
}

static void watch_command(struct ctl_rpc *r)
{
    Aegis__V1__WatchCommandRequest *req = (Aegis__V1__WatchCommandRequest *)r->req;
    if (!ctl_uuid_valid(req->command_id)) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "command id is not a UUID");
        return;
    }
    struct watch_state *st = ctl_rpc_state_new(r, sizeof(*st));
    if (!st)
        return;
    snprintf(st->since, sizeof(st->since), "-infinity");
    snprintf(r->watch_key, sizeof(r->watch_key), "%s", req->command_id);
    ctl_rpc_add_watcher(r);
    watch_query(r);
}

/* ---- telemetry ---------------------------------------------------------------------------- */

#define TELEMETRY_COLS                                                                             \
    "agent_id::text, " CTL_SQL_NS(                                                                 \
        "received_at") ", kind, name, value,"                                                      \
                       " coalesce((SELECT string_agg(key || E'\\x1f' || value, E'\\x1e' ORDER BY " \
                       "key)"                                                                      \
                       " FROM jsonb_each_text(attrs)), ''), encode(coalesce(body, ''::bytea), "    \
                       "'hex'), batch_id, " CTL_SQL_NS("ts") ", " CTL_SQL_NS("received_at")

struct tel_row {
    Aegis__V1__TelemetryRecord rec;
    Aegis__V1__Event ev;
    Aegis__V1__Metric m;
    Aegis__V1__Event__AttrsEntry *attrs;
    Aegis__V1__Event__AttrsEntry **attrp;
    struct ctl_labels labels;
    uint8_t *body;
    char *text;
};

static ProtobufCMessage *tel_row_fill(struct ctl_server *srv, const struct ctl_db_result *res,
                                      int i, void *row)
{
    struct tel_row *t = row;
    aegis__v1__telemetry_record__init(&t->rec);
    t->rec.agent_id = (char *)ctl_db_result_value(res, i, 0);
    t->rec.received_unix_ns = ctl_i64(ctl_db_result_value(res, i, 1));
    t->rec.batch_id = (uint64_t)ctl_i64(ctl_db_result_value(res, i, 7));
    int64_t ts = ctl_i64(ctl_db_result_value(res, i, 8));
    const char *kv = ctl_db_result_value(res, i, 5);
    if (strcmp(ctl_db_result_value(res, i, 2), "metric") == 0) {
        aegis__v1__metric__init(&t->m);
        t->m.name = (char *)ctl_db_result_value(res, i, 3);
        t->m.value = strtod(ctl_db_result_value(res, i, 4), NULL);
        t->m.time_unix_ns = ts;
        if (ctl_labels_from_text(srv->mem, kv, &t->labels) == 0)
            t->m.labels = t->labels.msg;
        t->rec.item_case = AEGIS__V1__TELEMETRY_RECORD__ITEM_METRIC;
        t->rec.metric = &t->m;
        return &t->rec.base;
    }
    aegis__v1__event__init(&t->ev);
    t->ev.kind = (char *)ctl_db_result_value(res, i, 3);
    t->ev.time_unix_ns = ts;
    /* attrs: reuse the labels parser, then copy into Event's own entry type */
    if (ctl_labels_from_text(srv->mem, kv, &t->labels) == 0) {
        Aegis__V1__Labels *l = t->labels.msg;
        t->attrs = aegis_calloc(srv->mem, l->n_entries + 1, sizeof(*t->attrs));
        t->attrp = aegis_calloc(srv->mem, l->n_entries + 1, sizeof(*t->attrp));
        if (t->attrs && t->attrp) {
            for (size_t j = 0; j < l->n_entries; j++) {
                aegis__v1__event__attrs_entry__init(&t->attrs[j]);
                t->attrs[j].key = l->entries[j]->key;
                t->attrs[j].value = l->entries[j]->value;
                t->attrp[j] = &t->attrs[j];
            }
            t->ev.n_attrs = l->n_entries;
            t->ev.attrs = t->attrp;
        }
    }
    const char *hex = ctl_db_result_value(res, i, 6);
    size_t n;
    if (aegis_hex_decode_alloc(srv->mem, hex, strlen(hex), &t->body, &n) == 0 && n) {
        t->ev.body.data = t->body;
        t->ev.body.len = n;
    }
    t->rec.item_case = AEGIS__V1__TELEMETRY_RECORD__ITEM_EVENT;
    t->rec.event = &t->ev;
    return &t->rec.base;
}

static void tel_row_free(struct ctl_server *srv, void *row)
{
    struct tel_row *t = row;
    ctl_labels_free(srv->mem, &t->labels);
    aegis_free(srv->mem, t->attrs);
    aegis_free(srv->mem, t->attrp);
    aegis_free(srv->mem, t->body);
}

/* Builds the filter arrays as text[] literals; names must not contain '"', '\\' or ','. */
static int text_array(char *const *items, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    out[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (strpbrk(items[i], "\",\\{}") || !items[i][0])
            return AEGIS_ERR_MALFORMED;
        int w = snprintf(out + o, cap - o, "%s\"%s\"", i ? "," : "", items[i]);
        if (w < 0 || (size_t)w >= cap - o - 2)
            return AEGIS_ERR_TOO_LARGE;
        o += (size_t)w;
    }
    out[o++] = '}';
    out[o] = '\0';
    return 0;
}

#define TELEMETRY_WHERE                                                                            \
    " WHERE (cardinality($1::text[]) = 0 OR agent_id::text = ANY($1::text[]))"                     \
    " AND NOT ($4::bool AND kind = 'event') AND NOT ($5::bool AND kind = 'metric')"                \
    " AND (kind <> 'event' OR cardinality($2::text[]) = 0 OR name = ANY($2::text[]))"              \
    " AND (kind <> 'metric' OR cardinality($3::text[]) = 0 OR name = ANY($3::text[]))"

static int tel_filter(struct ctl_rpc *r, const Aegis__V1__TelemetryFilter *f, char *a, char *k,
                      char *m, size_t cap)
{
    static char *none[1];
    if (text_array(f ? f->agent_ids : none, f ? f->n_agent_ids : 0, a, cap) != 0 ||
        text_array(f ? f->event_kinds : none, f ? f->n_event_kinds : 0, k, cap) != 0 ||
        text_array(f ? f->metric_names : none, f ? f->n_metric_names : 0, m, cap) != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "bad telemetry filter: names must be non-empty without quotes, commas, "
                     "braces or backslashes");
        return -1;
    }
    return 0;
}

static const struct ctl_page_spec tel_page = {
    .items = "records",
    .row_size = sizeof(struct tel_row),
    .fill = tel_row_fill,
    .free_row = tel_row_free,
};

static void query_tel_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    Aegis__V1__QueryTelemetryRequest *req = (Aegis__V1__QueryTelemetryRequest *)r->req;
    Aegis__V1__QueryTelemetryResponse resp = AEGIS__V1__QUERY_TELEMETRY_RESPONSE__INIT;
    ctl_page_rows(r, rv, res, req->page, &tel_page, &resp.base);
}

static void query_telemetry(struct ctl_rpc *r)
{
    Aegis__V1__QueryTelemetryRequest *req = (Aegis__V1__QueryTelemetryRequest *)r->req;
    char a[4096], k[4096], m[4096], from[24], to[24], lim[16], off[24];
    if (tel_filter(r, req->filter, a, k, m, sizeof(a)) != 0)
        return;
    snprintf(from, sizeof(from), "%lld", (long long)(req->time ? req->time->from_unix_ns : 0));
    snprintf(to, sizeof(to), "%lld", (long long)(req->time ? req->time->to_unix_ns : 0));
    ctl_page_params(req->page, lim, off);
    const char *f = req->filter ? (req->filter->no_events ? "t" : "f") : "f";
    const char *g = req->filter ? (req->filter->no_metrics ? "t" : "f") : "f";
    const char *v[9] = {a, k, m, f, g, from, to, lim, off};
    ctl_rpc_db(r,
               "SELECT " TELEMETRY_COLS " FROM telemetry" TELEMETRY_WHERE
               " AND ($6::bigint = 0 OR ts >= to_timestamp($6::float8 / 1e9))"
               " AND ($7::bigint = 0 OR ts < to_timestamp($7::float8 / 1e9))"
               " ORDER BY ts, agent_id, batch_id, idx LIMIT $8::int OFFSET $9::int",
               9, v, NULL, NULL, query_tel_rows);
}

struct tail_state {
    char since[40];
    int busy, again;
    char a[4096], k[4096], m[4096];
    char no_ev[2], no_m[2];
};

static void tail_free(struct ctl_rpc *r)
{
    aegis_free(r->srv->mem, r->state);
}

static void tail_query(struct ctl_rpc *r);

static void tail_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct tail_state *st = r->state;
    st->busy = 0;
    if (rv != 0) {
        if (rv == AEGIS_ERR_UNAVAILABLE || rv == AEGIS_ERR_CLOSED)
            return; /* keep following; the next NOTIFY retries */
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    int n = ctl_db_result_ntuples(res);
    for (int i = 0; i < n; i++) {
        struct tel_row t;
        memset(&t, 0, sizeof(t));
        tel_row_fill(r->srv, res, i, &t);
        ctl_rpc_send(r, &t.rec.base); /* -EAGAIN: a stalled tail skips rows */
        tel_row_free(r->srv, &t);
        snprintf(st->since, sizeof(st->since), "%s", ctl_db_result_value(res, i, 10));
    }
    if (st->again) {
        st->again = 0;
        tail_query(r);
    }
}

static void tail_query(struct ctl_rpc *r)
{
    struct tail_state *st = r->state;
    if (st->busy || !st->since[0]) {
        st->again = 1;
        return;
    }
    st->busy = 1;
    const char *v[6] = {st->a, st->k, st->m, st->no_ev, st->no_m, st->since};
    /* received_at is not indexed: the ts bound lets PostgreSQL skip all but the last week's
     * partitions. A tail is for live data; older samples are for QueryTelemetry. */
    if (ctl_rpc_db_soft(r,
                        "SELECT " TELEMETRY_COLS
                        ", received_at::text FROM telemetry" TELEMETRY_WHERE
                        " AND received_at > $6::timestamptz AND ts > now() - interval '7 days'"
                        " ORDER BY received_at, agent_id, batch_id, idx LIMIT 1000",
                        6, v, NULL, NULL, tail_rows) != 0)
        st->busy = 0;
}

static void tail_started(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct tail_state *st = r->state;
    st->busy = 0;
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    snprintf(st->since, sizeof(st->since), "%s", ctl_db_result_value(res, 0, 0));
    if (st->again) {
        st->again = 0;
        tail_query(r);
    }
}

static void tail_telemetry(struct ctl_rpc *r)
{
    Aegis__V1__TailTelemetryRequest *req = (Aegis__V1__TailTelemetryRequest *)r->req;
    struct tail_state *st = ctl_rpc_state_new(r, sizeof(*st));
    if (!st)
        return;
    if (tel_filter(r, req->filter, st->a, st->k, st->m, sizeof(st->a)) != 0)
        return;
    snprintf(st->no_ev, sizeof(st->no_ev), "%s", req->filter && req->filter->no_events ? "t" : "f");
    snprintf(st->no_m, sizeof(st->no_m), "%s", req->filter && req->filter->no_metrics ? "t" : "f");
    snprintf(r->watch_key, sizeof(r->watch_key), "tail");
    ctl_rpc_add_watcher(r);
    /* From now on, by the database's clock (received_at is set by the database). */
    st->busy = 1;
    if (ctl_rpc_db(r, "SELECT now()::text", 0, NULL, NULL, NULL, tail_started) != 0)
        st->busy = 0;
}

static void on_deliveries_notify(const char *channel, const char *payload, void *ud)
{
    struct ctl_server *srv = ud;
    (void)channel;
    for (struct ctl_rpc *r = srv->watchers; r; r = r->wnext)
        if (r->call && !r->finished && r->state &&
            strcmp(r->h->path, "/aegis.v1.OperatorService/WatchCommand") == 0 &&
            strcmp(r->watch_key, payload) == 0)
            watch_query(r);
}

static void on_telemetry_notify(const char *channel, const char *payload, void *ud)
{
    struct ctl_server *srv = ud;
    (void)channel;
    (void)payload;
    for (struct ctl_rpc *r = srv->watchers; r; r = r->wnext)
        if (r->call && !r->finished && r->state &&
            strcmp(r->h->path, "/aegis.v1.OperatorService/TailTelemetry") == 0)
            tail_query(r);
}

void ctl_oper_listen(struct ctl_server *srv)
{
    ctl_db_listen(srv->db, CTL_CHANNEL_DELIVERIES, on_deliveries_notify, srv);
    ctl_db_listen(srv->db, CTL_CHANNEL_TELEMETRY, on_telemetry_notify, srv);
}

/* ---- audit ------------------------------------------------------------------------------------
 */

static ProtobufCMessage *audit_fill(struct ctl_server *srv, const struct ctl_db_result *res, int i,
                                    void *row)
{
    Aegis__V1__AuditEntry *e = row;
    (void)srv;
    aegis__v1__audit_entry__init(e);
    e->id = (uint64_t)ctl_i64(ctl_db_result_value(res, i, 0));
    e->time_unix_ns = ctl_i64(ctl_db_result_value(res, i, 1));
    e->actor = (char *)ctl_db_result_value(res, i, 2);
    e->action = (char *)ctl_db_result_value(res, i, 3);
    e->target = (char *)ctl_db_result_value(res, i, 4);
    e->success = strcmp(ctl_db_result_value(res, i, 5), "ok") == 0;
    e->detail = (char *)ctl_db_result_value(res, i, 6);
    return &e->base;
}

/* Newest first; the next page continues below the last id shown (column 0). */
static const struct ctl_page_spec audit_page = {
    .items = "entries",
    .row_size = sizeof(Aegis__V1__AuditEntry),
    .fill = audit_fill,
    .paging = CTL_PAGE_BY_KEY,
    .key_col = 0,
};

static void list_audit_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    Aegis__V1__ListAuditRequest *req = (Aegis__V1__ListAuditRequest *)r->req;
    Aegis__V1__ListAuditResponse resp = AEGIS__V1__LIST_AUDIT_RESPONSE__INIT;
    ctl_page_rows(r, rv, res, req->page, &audit_page, &resp.base);
}

static void list_audit(struct ctl_rpc *r)
{
    Aegis__V1__ListAuditRequest *req = (Aegis__V1__ListAuditRequest *)r->req;
    char from[24], to[24], lim[16], before[24];
    snprintf(from, sizeof(from), "%lld", (long long)(req->time ? req->time->from_unix_ns : 0));
    snprintf(to, sizeof(to), "%lld", (long long)(req->time ? req->time->to_unix_ns : 0));
    ctl_page_params(req->page, lim, before);
    const char *v[7] = {req->actor, req->action, req->target, from, to, lim, before};
    ctl_rpc_db(r,
               "SELECT id, " CTL_SQL_NS(
                   "ts") ", actor, action, target, outcome,"
                         " coalesce(detail->>'detail', detail::text) FROM audit_log"
                         " WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action = $2)"
                         " AND ($3 = '' OR target = $3)"
                         " AND ($4::bigint = 0 OR ts >= to_timestamp($4::float8 / 1e9))"
                         " AND ($5::bigint = 0 OR ts < to_timestamp($5::float8 / 1e9))"
                         " AND ($7::bigint = 0 OR id < $7::bigint)"
                         " ORDER BY id DESC LIMIT $6::int",
               7, v, NULL, NULL, list_audit_rows);
}

/* ---- table -------------------------------------------------------------------------------- */

#define OP(m) "/aegis.v1.OperatorService/" m

static const struct ctl_handler oper_handlers[] = {
    {.path = OP("ListAgents"), .roles = CTL_ROLE_OPERATOR, .start = list_agents},
    {.path = OP("GetAgent"), .roles = CTL_ROLE_OPERATOR, .start = get_agent},
    {.path = OP("RevokeAgent"), .roles = CTL_ROLE_OPERATOR, .start = revoke_agent},
    {.path = OP("CreateToken"),
     .roles = CTL_ROLE_OPERATOR,
     .start = create_token,
     .free_state = token_free},
    {.path = OP("ListTokens"), .roles = CTL_ROLE_OPERATOR, .start = list_tokens},
    {.path = OP("RevokeToken"), .roles = CTL_ROLE_OPERATOR, .start = revoke_token},
    {.path = OP("SendCommand"), .roles = CTL_ROLE_OPERATOR, .start = send_command},
    {.path = OP("GetCommand"), .roles = CTL_ROLE_OPERATOR, .start = get_command},
    {.path = OP("WatchCommand"),
     .roles = CTL_ROLE_OPERATOR,
     .start = watch_command,
     .on_writable = watch_writable,
     .free_state = watch_free},
    {.path = OP("UploadArtifact"),
     .roles = CTL_ROLE_OPERATOR,
     .on_msg = ctl_upload_msg,
     .on_half_close = ctl_upload_half_close,
     .free_state = ctl_upload_free},
    {.path = OP("ListArtifacts"), .roles = CTL_ROLE_OPERATOR, .start = ctl_list_artifacts},
    {.path = OP("AssignArtifact"),
     .roles = CTL_ROLE_OPERATOR,
     .start = ctl_assign_artifact,
     .free_state = ctl_assign_free},
    {.path = OP("UnassignArtifact"),
     .roles = CTL_ROLE_OPERATOR,
     .start = ctl_unassign_artifact,
     .free_state = ctl_assign_free},
    {.path = OP("GetArtifactStatus"), .roles = CTL_ROLE_OPERATOR, .start = ctl_artifact_status},
    {.path = OP("PushPolicy"),
     .roles = CTL_ROLE_OPERATOR,
     .start = ctl_push_policy,
     .free_state = ctl_policy_free},
    {.path = OP("ListPolicies"), .roles = CTL_ROLE_OPERATOR, .start = ctl_list_policies},
    {.path = OP("PromotePolicy"),
     .roles = CTL_ROLE_OPERATOR,
     .start = ctl_promote_policy,
     .free_state = ctl_policy_free},
    {.path = OP("RollbackPolicy"),
     .roles = CTL_ROLE_OPERATOR,
     .start = ctl_rollback_policy,
     .free_state = ctl_policy_free},
    {.path = OP("QueryTelemetry"), .roles = CTL_ROLE_OPERATOR, .start = query_telemetry},
    {.path = OP("TailTelemetry"),
     .roles = CTL_ROLE_OPERATOR,
     .start = tail_telemetry,
     .free_state = tail_free},
    {.path = OP("ListAudit"), .roles = CTL_ROLE_OPERATOR, .start = list_audit},
};

const struct ctl_handler *ctl_svc_oper_handlers(size_t *pn)
{
    *pn = sizeof(oper_handlers) / sizeof(oper_handlers[0]);
    return oper_handlers;
}
