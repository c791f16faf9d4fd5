/*
 * Command creation (DESIGN §4-§5): resolve targets, hand out per-agent sequences, sign one
 * Command per agent with the command key, store command + deliveries in one statement and
 * NOTIFY so whichever instance holds each agent pushes it at once.
 *
 * Sequences are taken (and committed) before the signed rows are inserted, because the
 * signature covers the sequence and the key lives here, not in the database. A failed insert
 * therefore leaves a gap in an agent's sequence, which is harmless; and two concurrent
 * commands may store their rows out of sequence order, which Subscribe covers by always
 * sending never-sent (queued) rows, whatever their sequence.
 */
#include "ctl_server.h"

#include <aegis/err.h>
#include <aegis/proto.h>

#include <aegis/v1/command.pb-c.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A command for an agent whose Subscribe stream is on this instance: stored as delivered and
 * written to the stream straight from memory once the rows are committed (no NOTIFY, no
 * query per agent). */
struct cmd_push {
    char agent_id[37];
    uint64_t seq;
    uint8_t *signed_cmd;
    size_t len;
};

struct cmd_job {
    char id[37];
    char kind[32];
    char created_by[65];
    char *selector_text;
    char *ids_array; /* text[] literal of explicit ids */
    uint8_t *tmpl;   /* packed template Command (payload, id, times) */
    size_t tmpl_len;
    int64_t issued_ns, expires_ns;
    ctl_cmd_done_cb done;
    struct cmd_push *push;
    size_t npush;
};

void ctl_cmd_job_free(struct ctl_rpc *r)
{
    struct cmd_job *j = r->cmd_job;
    if (!j)
        return;
    aegis_free(r->srv->mem, j->selector_text);
    aegis_free(r->srv->mem, j->ids_array);
    aegis_free(r->srv->mem, j->tmpl);
    for (size_t i = 0; i < j->npush; i++)
        aegis_free(r->srv->mem, j->push[i].signed_cmd);
    aegis_free(r->srv->mem, j->push);
    aegis_free(r->srv->mem, j);
    r->cmd_job = NULL;
}

static void job_end(struct ctl_rpc *r, int rv, const struct ctl_db_result *res, unsigned n)
{
    struct cmd_job *j = r->cmd_job;
    ctl_cmd_done_cb done = j->done;
    char id[37];
    memcpy(id, j->id, sizeof(id));
    done(r, rv, res, id, n);
}

static void stored(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct cmd_job *j = r->cmd_job;
    if (rv == 0) {
        for (size_t i = 0; i < j->npush; i++)
            ctl_sub_push(r->srv, j->push[i].agent_id, j->push[i].seq, j->push[i].signed_cmd,
                         j->push[i].len);
        char detail[160];
        snprintf(detail, sizeof(detail), "%s to %llu agents", j->kind,
                 (unsigned long long)ctl_db_result_ntuples(res));
        ctl_audit(r->srv, j->created_by, "command", j->id, "ok", detail);
    }
    job_end(r, rv, res, rv == 0 ? (unsigned)ctl_db_result_ntuples(res) : 0);
}

static void sequenced(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct ctl_server *srv = r->srv;
    struct cmd_job *j = r->cmd_job;
    if (rv != 0) {
        job_end(r, rv, res, 0);
        return;
    }
    int n = ctl_db_result_ntuples(res);
    if (n == 0) {
        job_end(r, AEGIS_ERR_NOT_FOUND, NULL, 0);
        return;
    }
    Aegis__V1__Command *tmpl = NULL;
    rv = aegis_proto_unpack(&aegis__v1__command__descriptor, j->tmpl, j->tmpl_len, SIZE_MAX,
                            srv->mem, (ProtobufCMessage **)&tmpl);
    if (rv != 0) {
        job_end(r, rv, NULL, 0);
        return;
    }
    /* Arrays for unnest(): agent ids, sequences, hex of each SignedCommand. */
    size_t cap_ids = (size_t)n * 40 + 4, cap_seq = (size_t)n * 22 + 4, cap_sig = 4, off_sig = 0;
    char *ids = aegis_malloc(srv->mem, cap_ids), *seqs = aegis_malloc(srv->mem, cap_seq);
    char *local = aegis_malloc(srv->mem, (size_t)n * 2 + 4);
    char *sigs = NULL;
    size_t oi = 0, os = 0, ol = 0;
    j->push = aegis_calloc(srv->mem, (size_t)n, sizeof(*j->push));
    if (!ids || !seqs || !local || !j->push) {
        rv = -ENOMEM;
        goto out;
    }
    ids[oi++] = '{';
    seqs[os++] = '{';
    local[ol++] = '{';
    for (int i = 0; i < n; i++) {
        const char *agent = ctl_db_result_value(res, i, 0);
        Aegis__V1__Command c = *tmpl;
        char *scope[1] = {(char *)agent};
        uint8_t nonce[16];
        ctl_random(nonce, sizeof(nonce));
        c.sequence = (uint64_t)ctl_i64(ctl_db_result_value(res, i, 1));
        c.n_agent_ids = 1;
        c.agent_ids = scope;
        c.selector = (char *)"";
        c.nonce.data = nonce;
        c.nonce.len = sizeof(nonce);
        uint8_t *cb = NULL, *sig = NULL, *sb = NULL;
        size_t cl = 0, sl = 0, sbl = 0;
        if ((rv = aegis_proto_pack(&c.base, srv->mem, &cb, &cl)) != 0)
            goto out;
        if ((rv = aegis_key_sign(srv->command_key, cb, cl, &sig, &sl)) != 0) {
            aegis_free(srv->mem, cb);
            goto out;
        }
        Aegis__V1__SignedCommand sc = AEGIS__V1__SIGNED_COMMAND__INIT;
        sc.command.data = cb;
        sc.command.len = cl;
        sc.signature.data = sig;
        sc.signature.len = sl;
        sc.key_id = srv->command_key_id;
        rv = aegis_proto_pack(&sc.base, srv->mem, &sb, &sbl);
        aegis_free(srv->mem, cb);
        aegis_free(NULL, sig);
        if (rv != 0)
            goto out;
        int here = ctl_sub_live(srv, agent);
        if (i)
            local[ol++] = ',';
        local[ol++] = here ? 't' : 'f';
        if (off_sig + sbl * 2 + 4 > cap_sig) {
            size_t ncap = (off_sig + sbl * 2 + 4) * 2;
            char *ns = aegis_realloc(srv->mem, sigs, ncap);
            if (!ns) {
                aegis_free(srv->mem, sb);
                rv = -ENOMEM;
                goto out;
            }
            sigs = ns;
            cap_sig = ncap;
            if (off_sig == 0)
                sigs[off_sig++] = '{';
        }
        if (i)
            sigs[off_sig++] = ',';
        ctl_hex(sb, sbl, sigs + off_sig);
        off_sig += sbl * 2;
        if (here) {
            struct cmd_push *p = &j->push[j->npush++];
            snprintf(p->agent_id, sizeof(p->agent_id), "%s", agent);
            p->seq = c.sequence;
            p->signed_cmd = sb;
            p->len = sbl;
        } else {
            aegis_free(srv->mem, sb);
        }
        oi += (size_t)snprintf(ids + oi, cap_ids - oi, "%s%s", i ? "," : "", agent);
        os += (size_t)snprintf(seqs + os, cap_seq - os, "%s%s", i ? "," : "",
                               ctl_db_result_value(res, i, 1));
    }
    ids[oi++] = '}';
    ids[oi] = '\0';
    seqs[os++] = '}';
    seqs[os] = '\0';
    sigs[off_sig++] = '}';
    sigs[off_sig] = '\0';
    local[ol++] = '}';
    local[ol] = '\0';
    {
        char *thex = aegis_malloc(srv->mem, j->tmpl_len * 2 + 1);
        if (!thex) {
            rv = -ENOMEM;
            goto out;
        }
        ctl_hex(j->tmpl, j->tmpl_len, thex);
        char iss[32], exp[32], base[32];
        snprintf(iss, sizeof(iss), "%lld", (long long)j->issued_ns);
        snprintf(exp, sizeof(exp), "%lld", (long long)j->expires_ns);
        snprintf(base, sizeof(base), "%.3f", (double)srv->cfg.redeliver_base / 1e9);
        const char *v[12] = {j->id, j->kind, thex, iss,   exp, j->created_by, j->selector_text,
                             ids,   seqs,    sigs, local, base};
        /* Rows of agents subscribed here are stored as delivered and pushed from memory
         * after the commit (stored()); the others are queued and their instance is woken by
         * NOTIFY, delivered at commit to every instance. */
        ctl_rpc_db(
            r,
            "WITH c AS (INSERT INTO commands (id, kind, payload, issued_at, expires_at,"
            "   created_by, selector, target_ids) VALUES ($1::uuid, $2, decode($3, 'hex'),"
            "   to_timestamp($4::float8 / 1e9), to_timestamp($5::float8 / 1e9), $6, $7,"
            "   (SELECT coalesce(array_agg(x), '{}') FROM unnest($8::text[]) x)) RETURNING id),"
            " d AS (INSERT INTO deliveries (agent_id, sequence, command_id, expires_at,"
            "   signed, status, attempts, delivered_at, next_retry_at)"
            "   SELECT t.a, t.q, (SELECT id FROM c), to_timestamp($5::float8 / 1e9),"
            "   decode(t.s, 'hex'), CASE WHEN t.l THEN 'delivered' ELSE 'queued' END,"
            "   CASE WHEN t.l THEN 1 ELSE 0 END, CASE WHEN t.l THEN now() END,"
            "   CASE WHEN t.l THEN now() + make_interval(secs => $12::float8) END"
            "   FROM unnest($8::uuid[], $9::bigint[], $10::text[], $11::boolean[])"
            "   AS t(a, q, s, l) RETURNING agent_id, status)"
            " SELECT agent_id, CASE WHEN status = 'queued' THEN"
            "   pg_notify('" CTL_CHANNEL_COMMANDS "', agent_id::text) END FROM d",
            12, v, NULL, NULL, stored);
        aegis_free(srv->mem, thex);
        rv = 0;
    }
out:
    aegis_free(srv->mem, ids);
    aegis_free(srv->mem, seqs);
    aegis_free(srv->mem, local);
    aegis_free(srv->mem, sigs);
    aegis_proto_free(&tmpl->base, srv->mem);
    if (rv != 0)
        job_end(r, rv, NULL, 0);
}

int ctl_cmd_create(struct ctl_rpc *r, const struct ctl_cmd_spec *spec, ctl_cmd_done_cb done)
{
    struct ctl_server *srv = r->srv;
    if (spec->n_agent_ids > CTL_MAX_TARGET_IDS)
        return AEGIS_ERR_LIMIT;
    for (size_t i = 0; i < spec->n_agent_ids; i++)
        if (!ctl_uuid_valid(spec->agent_ids[i]))
            return AEGIS_ERR_MALFORMED;
    char sel[2048];
    int rv = ctl_selector_json(spec->selector, sel, sizeof(sel));
    if (rv != 0)
        return rv;
    if (!spec->n_agent_ids && !sel[0])
        return -EINVAL;
    struct cmd_job *j = aegis_calloc(srv->mem, 1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    r->cmd_job = j;
    j->done = done;
    ctl_uuid(j->id);
    snprintf(j->kind, sizeof(j->kind), "%s", spec->kind);
    snprintf(j->created_by, sizeof(j->created_by), "%s", spec->created_by);
    j->selector_text = aegis_memdup(srv->mem, sel, strlen(sel) + 1);
    size_t cap = spec->n_agent_ids * 38 + 3;
    j->ids_array = aegis_malloc(srv->mem, cap);
    if (!j->selector_text || !j->ids_array) {
        ctl_cmd_job_free(r);
        return -ENOMEM;
    }
    size_t o = 0;
    j->ids_array[o++] = '{';
    for (size_t i = 0; i < spec->n_agent_ids; i++)
        o += (size_t)snprintf(j->ids_array + o, cap - o, "%s%s", i ? "," : "", spec->agent_ids[i]);
    j->ids_array[o++] = '}';
    j->ids_array[o] = '\0';

    unsigned life = spec->lifetime_s ? spec->lifetime_s : srv->cfg.command_lifetime_s;
    if (life > CTL_DEFAULT_COMMAND_LIFETIME_S)
        life = CTL_DEFAULT_COMMAND_LIFETIME_S; /* DESIGN §8: capped at 24 h */
    j->issued_ns = (int64_t)aegis_wallclock();
    j->expires_ns = j->issued_ns + (int64_t)life * (int64_t)AEGIS_NS_PER_S;
    Aegis__V1__Command c = *(const Aegis__V1__Command *)spec->payload_cmd;
    c.id = j->id;
    c.sequence = 0;
    c.n_agent_ids = 0;
    c.agent_ids = NULL;
    c.selector = (char *)"";
    c.issued_unix_ns = j->issued_ns;
    c.expires_unix_ns = j->expires_ns;
    c.nonce.data = NULL;
    c.nonce.len = 0;
    if ((rv = aegis_proto_pack(&c.base, srv->mem, &j->tmpl, &j->tmpl_len)) != 0) {
        ctl_cmd_job_free(r);
        return rv;
    }
    const char *v[2] = {j->ids_array, j->selector_text};
    /* The target rows are locked in id order, like every statement that updates many agents
     * (the Ack and Authenticate batches), so they queue behind each other instead of
     * deadlocking. */
    return ctl_rpc_db(r,
                      "WITH lk AS (SELECT id FROM agents WHERE status = 'enrolled'"
                      " AND (id::text = ANY($1::text[])"
                      " OR ($2 <> '' AND labels @> nullif($2, '')::jsonb))"
                      " ORDER BY id FOR NO KEY UPDATE)"
                      " UPDATE agents g SET next_sequence = g.next_sequence + 1 FROM lk"
                      " WHERE g.id = lk.id RETURNING g.id::text, g.next_sequence - 1",
                      2, v, NULL, NULL, sequenced);
}
