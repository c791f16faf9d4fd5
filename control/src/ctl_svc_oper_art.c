/*
 * OperatorService, part 2: artifacts (list, assign, unassign, per-host status) and policies
 * (push, list, promote, roll back). Assignments and policy changes reach agents as commands.
 */
#include "ctl_kind.h"
#include "ctl_svc_oper.h"

#include <aegis/err.h>
#include <aegis/hex.h>
#include <aegis/pki.h>
#include <aegis/policy_pb.h>
#include <aegis/proto.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- artifacts ---------------------------------------------------------------------------- */

#define ARTIFACT_COLS                                                                              \
    "encode(a.sha256, 'hex'), a.name, a.kind, a.size, encode(coalesce(a.statement, ''::bytea),"    \
    " 'hex'), encode(a.signature, 'hex'), a.key_id, a.uploaded_by, " CTL_SQL_NS(                   \
        "a.created_at") ", (SELECT count(*) FROM artifact_assignments x WHERE x.artifact = "       \
                        "a.sha256)"

struct art_row {
    Aegis__V1__ArtifactInfo info;
    Aegis__V1__ArtifactHeader hdr;
    uint8_t sha[32];
    uint8_t *stmt, *sig;
};

/* hexdup decodes a hex text column into a new buffer (see aegis_hex_decode_alloc); NULL if
 * it is not hex or memory ran out. */
static uint8_t *hexdup(const struct aegis_mem *mem, const char *hex, size_t *plen)
{
    uint8_t *b = NULL;
    return aegis_hex_decode_alloc(mem, hex, strlen(hex), &b, plen) == 0 ? b : NULL;
}

static ProtobufCMessage *art_fill(struct ctl_server *srv, const struct ctl_db_result *res, int i,
                                  void *row)
{
    struct art_row *a = row;
    aegis__v1__artifact_info__init(&a->info);
    aegis__v1__artifact_header__init(&a->hdr);
    const char *sha = ctl_db_result_value(res, i, 0);
    aegis_hex_decode(sha, strlen(sha), a->sha, 32);
    a->info.sha256.data = a->sha;
    a->info.sha256.len = 32;
    a->info.name = (char *)ctl_db_result_value(res, i, 1);
    a->info.kind = (Aegis__V1__ArtifactKind)ctl_kind_from_name(ctl_db_result_value(res, i, 2));
    a->info.size = (uint64_t)ctl_i64(ctl_db_result_value(res, i, 3));
    size_t l;
    if ((a->stmt = hexdup(srv->mem, ctl_db_result_value(res, i, 4), &l)) != NULL) {
        a->hdr.statement.data = a->stmt;
        a->hdr.statement.len = l;
    }
    if ((a->sig = hexdup(srv->mem, ctl_db_result_value(res, i, 5), &l)) != NULL) {
        a->hdr.signature.data = a->sig;
        a->hdr.signature.len = l;
    }
    a->hdr.signing_key_id = (char *)ctl_db_result_value(res, i, 6);
    a->info.header = &a->hdr;
    a->info.uploaded_by = (char *)ctl_db_result_value(res, i, 7);
    a->info.uploaded_unix_ns = ctl_i64(ctl_db_result_value(res, i, 8));
    a->info.assigned_hosts = (uint32_t)ctl_i64(ctl_db_result_value(res, i, 9));
    return &a->info.base;
}

static void art_free(struct ctl_server *srv, void *row)
{
    struct art_row *a = row;
    aegis_free(srv->mem, a->stmt);
    aegis_free(srv->mem, a->sig);
}

static const struct ctl_page_spec art_page = {
    .items = "artifacts",
    .row_size = sizeof(struct art_row),
    .fill = art_fill,
    .free_row = art_free,
};

static void list_artifacts_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    Aegis__V1__ListArtifactsRequest *req = (Aegis__V1__ListArtifactsRequest *)r->req;
    Aegis__V1__ListArtifactsResponse resp = AEGIS__V1__LIST_ARTIFACTS_RESPONSE__INIT;
    ctl_page_rows(r, rv, res, req->page, &art_page, &resp.base);
}

void ctl_list_artifacts(struct ctl_rpc *r)
{
    Aegis__V1__ListArtifactsRequest *req = (Aegis__V1__ListArtifactsRequest *)r->req;
    char lim[16], off[24];
    ctl_page_params(req->page, lim, off);
    const char *v[4] = {ctl_kind_name(req->kind), req->name_prefix, lim, off};
    ctl_rpc_db(r,
               "SELECT " ARTIFACT_COLS " FROM artifacts a WHERE a.complete"
               " AND ($1 = '' OR a.kind = $1) AND starts_with(a.name, $2)"
               " ORDER BY a.created_at DESC, a.sha256 LIMIT $3::int OFFSET $4::int",
               4, v, NULL, NULL, list_artifacts_rows);
}

struct assign_state {
    char sha_hex[65];
    char name[256];
    int kind;
    int unassign; /* UnassignArtifact, else AssignArtifact */
};

void ctl_assign_free(struct ctl_rpc *r)
{
    aegis_free(r->srv->mem, r->state);
    r->state = NULL;
}

/* The assignment rows changed: one per agent the command went to. */
static void assign_recorded(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    int n = ctl_rpc_rows(r, rv, res, NULL);
    if (n < 0)
        return;
    struct assign_state *st = r->state;
    char *id = (char *)(n ? ctl_db_result_value(res, 0, 0) : "");
    ctl_audit(r->srv, r->cc->name, st->unassign ? "artifact_unassign" : "artifact_assign",
              st->sha_hex, "ok", st->name);
    if (st->unassign) {
        Aegis__V1__UnassignArtifactResponse resp = AEGIS__V1__UNASSIGN_ARTIFACT_RESPONSE__INIT;
        resp.unassigned = (uint32_t)n;
        resp.command_id = id;
        ctl_rpc_reply(r, &resp.base);
    } else {
        Aegis__V1__AssignArtifactResponse resp = AEGIS__V1__ASSIGN_ARTIFACT_RESPONSE__INIT;
        resp.assigned = (uint32_t)n;
        resp.command_id = id;
        ctl_rpc_reply(r, &resp.base);
    }
}

/* The (un)load command exists: record which agents it went to. */
static void assign_cmd_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res,
                            const char *id, unsigned n)
{
    struct assign_state *st = r->state;
    (void)n;
    if (rv == AEGIS_ERR_NOT_FOUND) {
        ctl_rpc_fail(r, AEGIS_GRPC_FAILED_PRECONDITION, "no enrolled agent matches the target");
        return;
    }
    if (ctl_rpc_rows(r, rv, res, NULL) < 0)
        return;
    if (st->unassign) {
        const char *v[2] = {st->sha_hex, id};
        ctl_rpc_db(r,
                   "DELETE FROM artifact_assignments a USING deliveries d"
                   " WHERE a.artifact = decode($1, 'hex') AND d.command_id = $2::uuid"
                   " AND a.agent_id = d.agent_id RETURNING $2",
                   2, v, NULL, NULL, assign_recorded);
        return;
    }
    const char *v[3] = {st->sha_hex, r->cc->name, id};
    ctl_rpc_db(r,
               "INSERT INTO artifact_assignments (artifact, agent_id, assigned_by, command_id)"
               " SELECT decode($1, 'hex'), d.agent_id, $2, $3::uuid FROM deliveries d"
               " WHERE d.command_id = $3::uuid ON CONFLICT (artifact, agent_id) DO UPDATE SET"
               " status = 'pending', detail = '', command_id = EXCLUDED.command_id,"
               " assigned_by = EXCLUDED.assigned_by, updated_at = now(), bytes_fetched = 0"
               " RETURNING $3",
               3, v, NULL, NULL, assign_recorded);
}

/* The artifact exists: send the agents a LoadArtifact (or UnloadArtifact). */
static void assign_found(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct assign_state *st = r->state;
    if (ctl_rpc_rows(r, rv, res,
                     "no complete artifact with that sha256 (aegisctl artifacts list)") < 0)
        return;
    snprintf(st->name, sizeof(st->name), "%s", ctl_db_result_value(res, 0, 0));
    st->kind = ctl_kind_from_name(ctl_db_result_value(res, 0, 1));
    Aegis__V1__AgentTarget *t;
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__LoadArtifact la = AEGIS__V1__LOAD_ARTIFACT__INIT;
    Aegis__V1__UnloadArtifact ua = AEGIS__V1__UNLOAD_ARTIFACT__INIT;
    uint8_t sha[32];
    aegis_hex_decode(st->sha_hex, strlen(st->sha_hex), sha, sizeof(sha));
    if (st->unassign) {
        t = ((Aegis__V1__UnassignArtifactRequest *)r->req)->target;
        ua.sha256.data = sha;
        ua.sha256.len = 32;
        c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_UNLOAD_ARTIFACT;
        c.unload_artifact = &ua;
    } else {
        Aegis__V1__AssignArtifactRequest *req = (Aegis__V1__AssignArtifactRequest *)r->req;
        t = req->target;
        la.sha256.data = sha;
        la.sha256.len = 32;
        la.name = st->name;
        la.kind = (Aegis__V1__ArtifactKind)st->kind;
        la.fetch_only = req->fetch_only;
        c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT;
        c.load_artifact = &la;
    }
    if (!t) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "target is missing");
        return;
    }
    struct ctl_cmd_spec spec = {
        .payload_cmd = &c.base,
        .agent_ids = (const char *const *)t->agent_ids,
        .n_agent_ids = t->n_agent_ids,
        .selector = t->selector,
        .kind = ctl_cmd_kind(&c),
        .created_by = r->cc->name,
    };
    rv = ctl_cmd_create(r, &spec, assign_cmd_done);
    if (rv != 0)
        ctl_cmd_spec_fail(r, rv);
}

static void assign_common(struct ctl_rpc *r, int unassign, const ProtobufCBinaryData *sha)
{
    if (sha->len != 32) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "sha256 must be 32 bytes");
        return;
    }
    struct assign_state *st = ctl_rpc_state_new(r, sizeof(*st));
    if (!st)
        return;
    st->unassign = unassign;
    aegis_hex_encode(sha->data, 32, st->sha_hex, sizeof(st->sha_hex));
    const char *v[1] = {st->sha_hex};
    ctl_rpc_db(r, "SELECT name, kind FROM artifacts WHERE sha256 = decode($1, 'hex') AND complete",
               1, v, NULL, NULL, assign_found);
}

void ctl_assign_artifact(struct ctl_rpc *r)
{
    assign_common(r, 0, &((Aegis__V1__AssignArtifactRequest *)r->req)->sha256);
}

void ctl_unassign_artifact(struct ctl_rpc *r)
{
    assign_common(r, 1, &((Aegis__V1__UnassignArtifactRequest *)r->req)->sha256);
}

static const char *art_state_text(int s)
{
    switch (s) {
    case AEGIS__V1__ARTIFACT_STATE__ARTIFACT_STATE_PENDING:
        return "pending";
    case AEGIS__V1__ARTIFACT_STATE__ARTIFACT_STATE_DOWNLOADED:
        return "downloaded";
    case AEGIS__V1__ARTIFACT_STATE__ARTIFACT_STATE_LOADED:
        return "loaded";
    case AEGIS__V1__ARTIFACT_STATE__ARTIFACT_STATE_FAILED:
        return "failed";
    default:
        return "";
    }
}

static int art_state_from(const char *s)
{
    for (int i = 1; i <= 4; i++)
        if (strcmp(art_state_text(i), s) == 0)
            return i;
    return 0;
}

/* GetArtifactStatus rows: the artifact in columns 0..9, one host from column 10. */
static ProtobufCMessage *host_fill(struct ctl_server *srv, const struct ctl_db_result *res, int i,
                                   void *row)
{
    Aegis__V1__ArtifactHostStatus *h = row;
    (void)srv;
    aegis__v1__artifact_host_status__init(h);
    h->agent_id = (char *)ctl_db_result_value(res, i, 10);
    h->host_id = (char *)ctl_db_result_value(res, i, 11);
    h->state = (Aegis__V1__ArtifactState)art_state_from(ctl_db_result_value(res, i, 12));
    h->detail = (char *)ctl_db_result_value(res, i, 13);
    h->updated_unix_ns = ctl_i64(ctl_db_result_value(res, i, 14));
    h->bytes_fetched = (uint64_t)ctl_i64(ctl_db_result_value(res, i, 15));
    return &h->base;
}

static const struct ctl_page_spec host_page = {
    .items = "hosts",
    .row_size = sizeof(Aegis__V1__ArtifactHostStatus),
    .fill = host_fill,
    .paging = CTL_PAGE_BY_KEY,
    .key_col = 10, /* agent id */
};

static void status_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct ctl_server *srv = r->srv;
    int n = ctl_rpc_rows(r, rv, res, "no complete artifact with that sha256");
    if (n < 0)
        return;
    Aegis__V1__GetArtifactStatusRequest *req = (Aegis__V1__GetArtifactStatusRequest *)r->req;
    struct art_row a;
    memset(&a, 0, sizeof(a));
    art_fill(srv, res, 0, &a);
    Aegis__V1__GetArtifactStatusResponse resp = AEGIS__V1__GET_ARTIFACT_STATUS_RESPONSE__INIT;
    resp.artifact = &a.info;
    /* Without assignments the one row has NULL host columns. */
    int nh = ctl_db_result_isnull(res, 0, 10) ? 0 : n;
    ctl_page_reply(r, res, nh, req->page, &host_page, &resp.base);
    art_free(srv, &a);
}

void ctl_artifact_status(struct ctl_rpc *r)
{
    Aegis__V1__GetArtifactStatusRequest *req = (Aegis__V1__GetArtifactStatusRequest *)r->req;
    if (req->sha256.len != 32) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "sha256 must be 32 bytes");
        return;
    }
    const char *token = ctl_page_token(req->page);
    if (token[0] && !ctl_uuid_valid(token)) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "bad page token");
        return;
    }
    char sha[65], lim[16];
    aegis_hex_encode(req->sha256.data, 32, sha, sizeof(sha));
    ctl_page_params(req->page, lim, NULL);
    const char *v[4] = {sha, art_state_text(req->state), token, lim};
    ctl_rpc_db(
        r,
        "SELECT " ARTIFACT_COLS ", s.agent_id::text, s.host_id, s.status, s.detail, " CTL_SQL_NS(
            "s.updated_at") ", s.bytes_fetched FROM artifacts a"
                            " LEFT JOIN LATERAL (SELECT x.*, g.host_id FROM artifact_assignments x"
                            "   JOIN agents g ON g.id = x.agent_id WHERE x.artifact = a.sha256"
                            "   AND ($2 = '' OR x.status = $2)"
                            "   AND ($3 = '' OR x.agent_id > nullif($3, '')::uuid)"
                            "   ORDER BY x.agent_id LIMIT $4::int) s ON true"
                            " WHERE a.sha256 = decode($1, 'hex') AND a.complete ORDER BY "
                            "s.agent_id",
        4, v, NULL, NULL, status_rows);
}

/* ---- policies ------------------------------------------------------------------------------- */

/* Database states (0003/0005) to PolicyState: 'active' is the promoted version in force;
 * 'superseded' was promoted before a newer one replaced it (shown as DRAFT with its
 * promoted time, since it is no longer sent anywhere). */
static int policy_state(const char *s)
{
    if (strcmp(s, "active") == 0)
        return AEGIS__V1__POLICY_STATE__POLICY_STATE_PROMOTED;
    if (strcmp(s, "rolled_back") == 0)
        return AEGIS__V1__POLICY_STATE__POLICY_STATE_ROLLED_BACK;
    return AEGIS__V1__POLICY_STATE__POLICY_STATE_DRAFT;
}

#define POLICY_COLS                                                                                \
    "p.service_version, encode(p.snapshot, 'hex'), p.state, " CTL_SQL_NS(                          \
        "p.created_at") ","                                                                        \
                        " p.author, p.comment, " CTL_SQL_NS(                                       \
                            "p.promoted_at") ", p.target_selector,"                                \
                                             " array_to_string(p.target_ids, ','), p.service_id"

struct policy_row {
    Aegis__V1__Policy p;
    Aegis__V1__AgentTarget t;
    Aegis__V1__MapSnapshot *snap;
    uint8_t *bytes;
    char *ids_buf;
    char **ids;
    char *author, *comment, *selector; /* copies: the row outlives its database result */
};

struct policy_state {
    uint64_t service_id, version;
    char *snap_hex;
    struct policy_row row;
    int have_row;
    int rollback;
};

static void policy_row_free(struct ctl_server *srv, void *row)
{
    struct policy_row *pr = row;
    if (pr->snap)
        aegis_proto_free(&pr->snap->base, srv->mem);
    aegis_free(srv->mem, pr->bytes);
    aegis_free(srv->mem, pr->ids_buf);
    aegis_free(srv->mem, pr->ids);
    aegis_free(srv->mem, pr->author);
    aegis_free(srv->mem, pr->comment);
    aegis_free(srv->mem, pr->selector);
    memset(pr, 0, sizeof(*pr));
}

void ctl_policy_free(struct ctl_rpc *r)
{
    struct policy_state *st = r->state;
    if (!st)
        return;
    policy_row_free(r->srv, &st->row);
    aegis_free(r->srv->mem, st->snap_hex);
    aegis_free(r->srv->mem, st);
}

static int policy_fill(struct ctl_server *srv, const struct ctl_db_result *res, int i,
                       struct policy_row *pr)
{
    aegis__v1__policy__init(&pr->p);
    aegis__v1__agent_target__init(&pr->t);
    pr->p.version = (uint64_t)ctl_i64(ctl_db_result_value(res, i, 0));
    size_t len;
    pr->bytes = hexdup(srv->mem, ctl_db_result_value(res, i, 1), &len);
    if (!pr->bytes || aegis_proto_unpack(&aegis__v1__map_snapshot__descriptor, pr->bytes, len,
                                         SIZE_MAX, srv->mem, (ProtobufCMessage **)&pr->snap) != 0)
        return AEGIS_ERR_MALFORMED;
    pr->p.snapshot = pr->snap;
    pr->p.state = (Aegis__V1__PolicyState)policy_state(ctl_db_result_value(res, i, 2));
    pr->p.created_unix_ns = ctl_i64(ctl_db_result_value(res, i, 3));
    const char *au = ctl_db_result_value(res, i, 4), *co = ctl_db_result_value(res, i, 5);
    const char *se = ctl_db_result_value(res, i, 7);
    pr->author = aegis_memdup(srv->mem, au, strlen(au) + 1);
    pr->comment = aegis_memdup(srv->mem, co, strlen(co) + 1);
    pr->selector = aegis_memdup(srv->mem, se, strlen(se) + 1);
    if (!pr->author || !pr->comment || !pr->selector)
        return -ENOMEM;
    pr->p.author = pr->author;
    pr->p.comment = pr->comment;
    pr->p.promoted_unix_ns = ctl_i64(ctl_db_result_value(res, i, 6));
    pr->t.selector = pr->selector;
    const char *ids = ctl_db_result_value(res, i, 8);
    size_t n = *ids ? 1 : 0;
    for (const char *q = ids; *q; q++)
        n += *q == ',';
    pr->ids_buf = aegis_memdup(srv->mem, ids, strlen(ids) + 1);
    pr->ids = aegis_calloc(srv->mem, n + 1, sizeof(char *));
    if (!pr->ids_buf || !pr->ids)
        return -ENOMEM;
    size_t k = 0;
    for (char *p = pr->ids_buf, *tok; k < n && (tok = strsep(&p, ",")) != NULL;)
        pr->ids[k++] = tok;
    pr->t.n_agent_ids = k;
    pr->t.agent_ids = pr->ids;
    pr->p.target = &pr->t;
    return 0;
}

static void push_cmd_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res,
                          const char *id, unsigned n)
{
    struct policy_state *st = r->state;
    if (rv != 0 && rv != AEGIS_ERR_NOT_FOUND) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    const char *path = r->h->path;
    char detail[96];
    snprintf(detail, sizeof(detail), "service %llu version %llu to %u agents",
             (unsigned long long)st->service_id, (unsigned long long)st->row.p.version, n);
    if (strstr(path, "Promote")) {
        Aegis__V1__PromotePolicyResponse resp = AEGIS__V1__PROMOTE_POLICY_RESPONSE__INIT;
        resp.policy = &st->row.p;
        resp.command_id = rv == 0 ? (char *)id : (char *)"";
        resp.targeted_agents = rv == 0 ? n : 0;
        ctl_audit(r->srv, r->cc->name, "policy_promote", id, "ok", detail);
        ctl_rpc_reply(r, &resp.base);
    } else if (strstr(path, "Rollback")) {
        Aegis__V1__RollbackPolicyResponse resp = AEGIS__V1__ROLLBACK_POLICY_RESPONSE__INIT;
        resp.policy = &st->row.p;
        resp.command_id = rv == 0 ? (char *)id : (char *)"";
        ctl_audit(r->srv, r->cc->name, "policy_rollback", id, "ok", detail);
        ctl_rpc_reply(r, &resp.base);
    } else {
        Aegis__V1__PushPolicyResponse resp = AEGIS__V1__PUSH_POLICY_RESPONSE__INIT;
        resp.policy = &st->row.p;
        resp.command_id = rv == 0 ? (char *)id : (char *)"";
        ctl_rpc_reply(r, &resp.base);
    }
}

/* Sends an ApplyPolicy for st->row to target (or its stored target). */
static void policy_send(struct ctl_rpc *r, const Aegis__V1__AgentTarget *target)
{
    struct policy_state *st = r->state;
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__ApplyPolicy ap = AEGIS__V1__APPLY_POLICY__INIT;
    ap.snapshot = st->row.snap;
    ap.policy_version = st->row.p.version;
    ap.rollback = st->rollback;
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY;
    c.apply_policy = &ap;
    const Aegis__V1__AgentTarget *t = target ? target : &st->row.t;
    if (t->n_agent_ids == 0 && !t->selector[0]) {
        push_cmd_done(r, AEGIS_ERR_NOT_FOUND, NULL, "", 0);
        return;
    }
    struct ctl_cmd_spec spec = {
        .payload_cmd = &c.base,
        .agent_ids = (const char *const *)t->agent_ids,
        .n_agent_ids = t->n_agent_ids,
        .selector = t->selector,
        .kind = ctl_cmd_kind(&c),
        .created_by = r->cc->name,
    };
    int rv = ctl_cmd_create(r, &spec, push_cmd_done);
    if (rv != 0)
        ctl_cmd_spec_fail(r, rv);
}

static void push_stored(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct policy_state *st = r->state;
    Aegis__V1__PushPolicyRequest *req = (Aegis__V1__PushPolicyRequest *)r->req;
    if (rv == AEGIS_ERR_DATABASE && strcmp(ctl_db_result_sqlstate(res), "23505") == 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_ALREADY_EXISTS,
                     "service %llu already has version %llu (push with version 0 for the next)",
                     (unsigned long long)st->service_id, (unsigned long long)st->version);
        return;
    }
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    if (policy_fill(r->srv, res, 0, &st->row) != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot read the stored policy");
        return;
    }
    char detail[96];
    snprintf(detail, sizeof(detail), "service %llu version %llu",
             (unsigned long long)st->service_id, (unsigned long long)st->row.p.version);
    ctl_audit(r->srv, r->cc->name, "policy_push", detail, "ok", req->comment);
    if (req->canary && (req->canary->n_agent_ids || req->canary->selector[0]))
        policy_send(r, req->canary);
    else
        push_cmd_done(r, AEGIS_ERR_NOT_FOUND, NULL, "", 0);
}

void ctl_push_policy(struct ctl_rpc *r)
{
    Aegis__V1__PushPolicyRequest *req = (Aegis__V1__PushPolicyRequest *)r->req;
    struct ctl_server *srv = r->srv;
    if (!req->snapshot) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "PushPolicyRequest.snapshot is missing");
        return;
    }
    struct aegis_policy *pol = NULL;
    char err[256] = "";
    /* Version 0 asks for the next version: validate it as version 1. */
    Aegis__V1__MapSnapshot probe = *req->snapshot;
    if (probe.version == 0)
        probe.version = 1;
    int rv = aegis_policy_from_pb(&probe, NULL, srv->mem, &pol, err, sizeof(err));
    if (rv != 0) {
        ctl_audit(srv, r->cc->name, "policy_push", "", "denied", err);
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "invalid policy: %s", err);
        return;
    }
    aegis_policy_del(pol);
    Aegis__V1__AgentTarget *t = req->target;
    size_t nids = t ? t->n_agent_ids : 0;
    char sel[2048];
    if (ctl_selector_json(t ? t->selector : "", sel, sizeof(sel)) != 0 || nids > 1000) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "bad target (ids must be UUIDs, at most "
                     "1000; selector name=value[,...])");
        return;
    }
    struct policy_state *st = ctl_rpc_state_new(r, sizeof(*st));
    if (!st)
        return;
    char *ids = aegis_malloc(srv->mem, nids * 38 + 3);
    if (!ids) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    size_t o = 0;
    ids[o++] = '{';
    for (size_t i = 0; i < nids; i++) {
        if (!ctl_uuid_valid(t->agent_ids[i])) {
            aegis_free(srv->mem, ids);
            ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "target id %zu is not a UUID", i);
            return;
        }
        o += (size_t)snprintf(ids + o, 40, "%s%s", i ? "," : "", t->agent_ids[i]);
    }
    ids[o++] = '}';
    ids[o] = '\0';
    st->service_id = req->snapshot->service_id;
    st->version = req->snapshot->version;
    /* Agents compare MapSnapshot.version, so the stored bytes must carry the version, which
     * SQL assigns when it is 0: pack the snapshot as given and let SQL append field 1 with
     * the final version (protobuf: the last occurrence of a scalar field wins). */
    Aegis__V1__MapSnapshot snap = *req->snapshot;
    uint8_t *b = NULL;
    size_t bl = 0;
    char svc[24], ver[24];
    snprintf(svc, sizeof(svc), "%llu", (unsigned long long)st->service_id);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)st->version);
    if ((rv = aegis_proto_pack(&snap.base, srv->mem, &b, &bl)) != 0) {
        aegis_free(srv->mem, ids);
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot pack the snapshot");
        return;
    }
    st->snap_hex = aegis_malloc(srv->mem, bl * 2 + 1);
    if (!st->snap_hex) {
        aegis_free(srv->mem, ids);
        aegis_free(srv->mem, b);
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    aegis_hex_encode(b, bl, st->snap_hex, bl * 2 + 1);
    aegis_free(srv->mem, b);
    uint8_t h[32];
    char hh[65];
    if (aegis_sha256_hash(st->snap_hex, strlen(st->snap_hex), h) != 0) {
        aegis_free(srv->mem, ids);
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot hash the snapshot");
        return;
    }
    aegis_hex_encode(h, 32, hh, sizeof(hh));
    const char *v[8] = {svc,         ver,          st->snap_hex,         hh,
                        r->cc->name, req->comment, t ? t->selector : "", ids};
    /* The version: as given, or the next of the service (the unique index serializes two
     * concurrent pushes: the loser gets ALREADY_EXISTS and may push again). */
    rv = ctl_rpc_db(r,
                    "WITH v AS (SELECT CASE WHEN $2::bigint > 0 THEN $2::bigint ELSE"
                    "   coalesce((SELECT max(service_version) FROM policies"
                    "   WHERE service_id = $1::bigint), 0) + 1 END AS ver)"
                    " INSERT INTO policies AS p (selector, snapshot, snapshot_sha256, author,"
                    "  service_id, service_version, comment, target_selector, target_ids)"
                    " SELECT 'service:' || $1, decode($3, 'hex') || aegis_pb_varint_field(1,"
                    "  v.ver), decode($4, 'hex'), $5, $1::bigint, v.ver, $6, $7, $8::text[]"
                    " FROM v RETURNING " POLICY_COLS,
                    8, v, NULL, NULL, push_stored);
    aegis_free(srv->mem, ids);
}

static ProtobufCMessage *policy_item(struct ctl_server *srv, const struct ctl_db_result *res, int i,
                                     void *row)
{
    struct policy_row *pr = row;
    return policy_fill(srv, res, i, pr) == 0 ? &pr->p.base : NULL;
}

static const struct ctl_page_spec policy_page = {
    .items = "policies",
    .row_size = sizeof(struct policy_row),
    .fill = policy_item,
    .free_row = policy_row_free,
    .fill_error = "cannot read a stored policy",
};

static void list_policies_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    Aegis__V1__ListPoliciesRequest *req = (Aegis__V1__ListPoliciesRequest *)r->req;
    Aegis__V1__ListPoliciesResponse resp = AEGIS__V1__LIST_POLICIES_RESPONSE__INIT;
    ctl_page_rows(r, rv, res, req->page, &policy_page, &resp.base);
}

void ctl_list_policies(struct ctl_rpc *r)
{
    Aegis__V1__ListPoliciesRequest *req = (Aegis__V1__ListPoliciesRequest *)r->req;
    char svc[24], lim[16], off[24];
    const char *state = "";
    switch (req->state) {
    case AEGIS__V1__POLICY_STATE__POLICY_STATE_DRAFT:
        state = "draft";
        break;
    case AEGIS__V1__POLICY_STATE__POLICY_STATE_PROMOTED:
        state = "active";
        break;
    case AEGIS__V1__POLICY_STATE__POLICY_STATE_ROLLED_BACK:
        state = "rolled_back";
        break;
    default:
        break;
    }
    snprintf(svc, sizeof(svc), "%llu", (unsigned long long)req->service_id);
    ctl_page_params(req->page, lim, off);
    const char *v[4] = {svc, state, lim, off};
    ctl_rpc_db(r,
               "SELECT " POLICY_COLS " FROM policies p WHERE ($1::bigint = 0 OR"
               " p.service_id = $1::bigint) AND ($2 = '' OR p.state = $2 OR"
               " ($2 = 'draft' AND p.state = 'superseded'))"
               " ORDER BY p.service_id, p.service_version DESC LIMIT $3::int OFFSET $4::int",
               4, v, NULL, NULL, list_policies_rows);
}

static void promote_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct policy_state *st = r->state;
    if (ctl_rpc_rows(r, rv, res,
                     st->rollback ? "no earlier promoted version of that service to roll back to"
                                  : "no such policy version (aegisctl policies list)") < 0)
        return;
    if (policy_fill(r->srv, res, 0, &st->row) != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot read the stored policy");
        return;
    }
    policy_send(r, NULL);
}

/* Promote and roll back are one SQL function call each, so one transaction: the old version
 * steps down before the new one becomes active (the one-active index is checked per row). */
static void policy_switch(struct ctl_rpc *r, int rollback, uint64_t service_id, uint64_t version)
{
    struct policy_state *st = ctl_rpc_state_new(r, sizeof(*st));
    if (!st)
        return;
    st->rollback = rollback;
    st->service_id = service_id;
    st->version = version;
    char svc[24], ver[24];
    snprintf(svc, sizeof(svc), "%llu", (unsigned long long)service_id);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)version);
    const char *v[2] = {svc, ver};
    ctl_rpc_db(r,
               rollback
                   ? "SELECT " POLICY_COLS " FROM aegis_policy_rollback($1::bigint, $2::bigint) p"
                   : "SELECT " POLICY_COLS " FROM aegis_policy_promote($1::bigint, $2::bigint) p",
               2, v, NULL, NULL, promote_done);
}

void ctl_promote_policy(struct ctl_rpc *r)
{
    Aegis__V1__PromotePolicyRequest *req = (Aegis__V1__PromotePolicyRequest *)r->req;
    policy_switch(r, 0, req->service_id, req->version);
}

void ctl_rollback_policy(struct ctl_rpc *r)
{
    Aegis__V1__RollbackPolicyRequest *req = (Aegis__V1__RollbackPolicyRequest *)r->req;
    policy_switch(r, 1, req->service_id, req->to_version);
}
