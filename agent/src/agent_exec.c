/*
 * Command intake and execution (DESIGN §4, §5).
 *
 * Intake: verify (signature over the exact bytes, then scope, expiry,
 * nonce), then admit through the seen-id journal -- a new id is marked
 * started durably before anything runs -- then journal the RECEIVED ack
 * (sent only if the job does not finish at once, see agent_run.c). Execution: one job at a time
 * from a bounded FIFO; the outcome is acked (durably) before the id is marked finished, so a crash
 * in between reports "interrupted" rather than losing the ack.
 *
 * Built-in actions are a fixed allow-list implemented here in C; nothing
 * ever reaches a shell.
 */
#include "agent_cmd.h"
#include "agent_daemon.h"
#include "agent_facts.h"
#include "agent_msg.h"
#include "agent_version.h"

#include <aegis/err.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Inventory/ping results: well under AckRequest.result's 1 MiB. */
#define RESULT_MAX (256u << 10)
/* Inventory with packages may be larger; still under 1 MiB. */
#define RESULT_PKG_MAX (900u << 10)
/* dpkg's status file on a large host is ~10 MiB. */
#define DPKG_STATUS_MAX (32u << 20)

/* Journals an ack (durably) without sending it yet. */
static int ack_record(struct agent *a, const char *id, uint64_t seq, uint32_t state, uint32_t flags,
                      const char *detail, const void *result, size_t result_len)
{
    char d[AGENT_ACKS_DETAIL_MAX];
    snprintf(d, sizeof(d), "%s", detail ? detail : "");
    int rv = agent_acks_append(a->acks, id, seq, state, flags, d, result, result_len);
    if (rv == AEGIS_ERR_LIMIT) {
        agent_acks_compact(a->acks);
        rv = agent_acks_append(a->acks, id, seq, state, flags, d, result, result_len);
    }
    if (rv != 0)
        AEGIS_LOG(&a->log, AEGIS_LOG_ERROR,
                  "event=ack_journal_failed command=%s state=%u error=\"%s\"", id, state,
                  aegis_strerror(rv));
    return rv;
}

int agent_ack(struct agent *a, const char *id, uint64_t seq, uint32_t state, uint32_t flags,
              const char *detail, const void *result, size_t result_len)
{
    int rv = ack_record(a, id, seq, state, flags, detail, result, result_len);
    agent_pump(a);
    return rv;
}

static void write_inflight(struct agent *a)
{
    char buf[AGENT_CMD_QUEUE_MAX * 96 + 1];
    size_t pos = 0;
    buf[0] = '\0';
    for (struct agent_job *j = a->queue; j; j = j->next)
        agent_json_raw(buf, sizeof(buf), &pos, "%s %llu\n", j->cmd->id,
                       (unsigned long long)j->cmd->sequence);
    int rv = agent_state_dir_write(a->sd, AGENT_FILE_INFLIGHT, buf, pos, 0600);
    if (rv != 0)
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=inflight_write_failed error=\"%s\"",
                  aegis_strerror(rv));
}

/* The sequence a previous run recorded for id in the inflight file. */
static uint64_t inflight_seq(struct agent *a, const char *id)
{
    char buf[AGENT_CMD_QUEUE_MAX * 96 + 1];
    if (agent_read_small(agent_state_dir_path(a->sd), AGENT_FILE_INFLIGHT, buf, sizeof(buf)) != 0)
        return 0;
    size_t il = strlen(id);
    for (char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, id, il) == 0 && p[il] == ' ')
            return strtoull(p + il + 1, NULL, 10);
    return 0;
}

static void refuse(struct agent *a, Aegis__V1__Command *c, const char *reason)
{
    AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=command_refused command=%s reason=\"%s\"",
              c ? c->id : "?", reason);
    agent_telemetry_event(a, "command_refused", "command", c ? c->id : "", "reason", reason);
    /* Only a verified command is acked: its id and sequence are the
     * server's. An unverified one is dropped without a word to anyone but
     * the log (answering it would let a forger probe the agent). */
    if (c != NULL && agent_seen_check(a->seen, c->id, NULL) == AGENT_SEEN_NEW)
        agent_ack(a, c->id, c->sequence, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED, 0, reason,
                  NULL, 0);
}

void agent_exec_on_command(struct agent *a, const uint8_t *msg, size_t len)
{
    struct agent_cmd_trust t;
    memset(&t, 0, sizeof(t));
    memcpy(t.command_pub, a->id.command_pub, sizeof(t.command_pub));
    t.command_key_id = a->id.command_key_id;
    t.agent_id = a->id.agent_id;
    t.labels = a->id.labels;
    t.nlabels = a->id.nlabels;
    Aegis__V1__Command *c = NULL;
    char reason[512] = "";
    aegis_tstamp now = aegis_wallclock();
    int rv = agent_cmd_verify(&t, msg, len, now, NULL, &c, reason, sizeof(reason));
    if (rv != 0) {
        refuse(a, c, reason);
        agent_msg_free(c, NULL);
        return;
    }
    for (struct agent_job *j = a->queue; j; j = j->next) {
        if (strcmp(j->cmd->id, c->id) == 0) { /* redelivered while queued or running */
            agent_msg_free(c, NULL);
            return;
        }
    }
    if (a->update_trial && strcmp(c->id, a->update_cmd) == 0) {
        agent_msg_free(c, NULL); /* the update that started this process */
        return;
    }
    if (a->nqueue >= AGENT_CMD_QUEUE_MAX) {
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=command_deferred command=%s queued=%zu", c->id,
                  a->nqueue);
        agent_msg_free(c, NULL);
        return;
    }
    enum agent_cmd_admission adm;
    uint32_t outcome = 0;
    rv = agent_cmd_admit(a->seen, c, now, &adm, &outcome);
    if (rv != 0) {
        snprintf(reason, sizeof(reason), "command %s refused: cannot record it (%s)", c->id,
                 aegis_strerror(rv));
        refuse(a, c, reason);
        agent_msg_free(c, NULL);
        return;
    }
    if (adm == AGENT_CMD_DUPLICATE) {
        AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=command_duplicate command=%s outcome=%u", c->id,
                  outcome);
        agent_ack(a, c->id, c->sequence,
                  outcome ? outcome : AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED,
                  AGENT_ACK_DUPLICATE, "duplicate: already executed, not run again", NULL, 0);
        agent_msg_free(c, NULL);
        return;
    }
    if (adm == AGENT_CMD_INTERRUPTED) {
        const char *d = "failed: interrupted (the agent stopped while running it); not re-run";
        agent_ack(a, c->id, c->sequence, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED,
                  AGENT_ACK_DUPLICATE, d, NULL, 0);
        agent_seen_mark_finished(a->seen, c->id, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED,
                                 now);
        agent_msg_free(c, NULL);
        return;
    }
    struct agent_job *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        /* Marked started but cannot run: report it as failed now. */
        agent_ack(a, c->id, c->sequence, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED, 0,
                  "failed: out of memory", NULL, 0);
        agent_seen_mark_finished(a->seen, c->id, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED,
                                 now);
        agent_msg_free(c, NULL);
        return;
    }
    job->cmd = c;
    struct agent_job **pp = &a->queue;
    while (*pp)
        pp = &(*pp)->next;
    *pp = job;
    a->nqueue++;
    write_inflight(a);
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=command_received command=%s seq=%llu payload=%s",
              c->id, (unsigned long long)c->sequence, agent_cmd_payload_name(c));
    /* RECEIVED is durable before the job starts, but sent only after the kick: a job that
     * finishes at once (most built-in actions) has its outcome journaled by then, and the ack
     * pump sends only the furthest pending state of a command -- one Ack, not two. */
    ack_record(a, c->id, c->sequence, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED, 0,
               "received", NULL, 0);
    agent_exec_kick(a);
    agent_pump(a);
}

void agent_exec_job_done(struct agent *a, struct agent_job *job, int ok, const char *detail,
                         const void *result, size_t result_len)
{
    if (job->done)
        return;
    job->done = 1;
    agent_fetch_detach(a, job);
    uint32_t state = ok ? AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED
                        : AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED;
    const Aegis__V1__Command *c = job->cmd;
    AEGIS_LOG(&a->log, ok ? AEGIS_LOG_INFO : AEGIS_LOG_WARN,
              "event=command_done command=%s payload=%s ok=%d detail=\"%s\"", c->id,
              agent_cmd_payload_name(c), ok, detail ? detail : "");
    /* Ack first (durable), then mark finished: see the file comment. */
    agent_ack(a, c->id, c->sequence, state, 0, detail, result, result_len);
    int rv = agent_seen_mark_finished(a->seen, c->id, state, aegis_wallclock());
    if (rv != 0)
        AEGIS_LOG(&a->log, AEGIS_LOG_ERROR, "event=seen_finish_failed command=%s error=\"%s\"",
                  c->id, aegis_strerror(rv));
    snprintf(a->last_command, sizeof(a->last_command), "%s %s", c->id, agent_cmd_payload_name(c));
    snprintf(a->last_command_state, sizeof(a->last_command_state), "%s",
             ok ? "succeeded" : "failed");
    a->commands_run++;
    agent_telemetry_event(a, ok ? "command_succeeded" : "command_failed", "command", c->id,
                          "payload", agent_cmd_payload_name(c));
    /* Unlink from the queue (it is the head) unless it still owns a live
     * call or timer; then the owner finishes the removal. */
    if (a->queue == job) {
        a->queue = job->next;
        a->nqueue--;
        a->job_running = 0;
        ev_timer_stop(a->loop, &job->timer);
        agent_msg_free(job->cmd, NULL);
        free(job);
        write_inflight(a);
    }
    agent_status_write(a);
    agent_exec_kick(a);
}

/* ---- built-in actions ---- */

static void facts_json(struct agent *a, char *buf, size_t cap, size_t *pos)
{
    struct agent_facts f;
    agent_facts_collect(&f, "", (int64_t)aegis_wallclock());
    agent_json_raw(buf, cap, pos, "{\"agent_id\":");
    agent_json_str(buf, cap, pos, a->id.agent_id);
    agent_json_raw(buf, cap, pos, ",\"host_id\":");
    agent_json_str(buf, cap, pos, a->id.host_id);
    agent_json_raw(buf, cap, pos, ",\"agent_version\":");
    agent_json_str(buf, cap, pos, agent_version_string());
    agent_json_raw(buf, cap, pos, ",\"hostname\":");
    agent_json_str(buf, cap, pos, f.hostname);
    agent_json_raw(buf, cap, pos, ",\"os\":\"linux\",\"os_version\":");
    agent_json_str(buf, cap, pos, f.os_version);
    agent_json_raw(buf, cap, pos, ",\"kernel\":");
    agent_json_str(buf, cap, pos, f.kernel);
    agent_json_raw(buf, cap, pos, ",\"arch\":");
    agent_json_str(buf, cap, pos, f.arch);
    agent_json_raw(buf, cap, pos,
                   ",\"cpu_count\":%u,\"memory_bytes\":%llu,\"memory_available_bytes\":%llu,"
                   "\"load\":[%.2f,%.2f,%.2f],\"uptime_seconds\":%.0f,\"policy_version\":%llu,"
                   "\"interfaces\":[",
                   f.cpu_count, (unsigned long long)f.mem_total,
                   (unsigned long long)f.mem_available, f.load[0], f.load[1], f.load[2], f.uptime_s,
                   (unsigned long long)a->policy_version);
    for (size_t i = 0; i < f.naddrs; i++) {
        agent_json_raw(buf, cap, pos, "%s{\"name\":", i ? "," : "");
        agent_json_str(buf, cap, pos, f.ifnames[i]);
        agent_json_raw(buf, cap, pos, ",\"address\":");
        agent_json_str(buf, cap, pos, f.addrs[i]);
        agent_json_raw(buf, cap, pos, "}");
    }
    agent_json_raw(buf, cap, pos, "],\"artifacts\":[");
    DIR *d = opendir(a->artifacts_dir);
    int first = 1;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 5 && strcmp(e->d_name + n - 5, ".blob") == 0) {
            agent_json_raw(buf, cap, pos, "%s\"%.*s\"", first ? "" : ",", (int)(n - 5), e->d_name);
            first = 0;
        }
    }
    if (d)
        closedir(d);
    agent_json_raw(buf, cap, pos, "]");
}

/* Installed dpkg packages as "name version" pairs (Status: install ok
 * installed). Parsing text; nothing is executed. */
static void packages_json(char *buf, size_t cap, size_t *pos)
{
    char *st = malloc(DPKG_STATUS_MAX);
    size_t n = 0;
    agent_json_raw(buf, cap, pos, ",\"packages\":[");
    if (st && agent_io_read_file(NULL, "/var/lib/dpkg/status", st, DPKG_STATUS_MAX - 1, &n) == 0) {
        st[n] = '\0';
        int first = 1;
        char *save = NULL;
        char name[128] = "", ver[128] = "";
        int installed = 0;
        for (char *l = strtok_r(st, "\n", &save);; l = strtok_r(NULL, "\n", &save)) {
            if (l == NULL || strncmp(l, "Package: ", 9) == 0) {
                if (name[0] && installed && *pos + 300 < cap) {
                    agent_json_raw(buf, cap, pos, "%s[", first ? "" : ",");
                    agent_json_str(buf, cap, pos, name);
                    agent_json_raw(buf, cap, pos, ",");
                    agent_json_str(buf, cap, pos, ver);
                    agent_json_raw(buf, cap, pos, "]");
                    first = 0;
                }
                if (l == NULL)
                    break;
                snprintf(name, sizeof(name), "%s", l + 9);
                ver[0] = '\0';
                installed = 0;
            } else if (strncmp(l, "Version: ", 9) == 0) {
                snprintf(ver, sizeof(ver), "%s", l + 9);
            } else if (strncmp(l, "Status: ", 8) == 0) {
                installed = strstr(l, " installed") != NULL;
            }
        }
    }
    free(st);
    agent_json_raw(buf, cap, pos, "]");
}

static void sleep_done(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    if (a->queue && &a->queue->timer == w)
        agent_exec_job_done(a, a->queue, 1, "slept", NULL, 0);
}

static const char *arg_of(const Aegis__V1__RunAction *ra, const char *key)
{
    for (size_t i = 0; i < ra->n_args; i++)
        if (ra->args[i]->key && strcmp(ra->args[i]->key, key) == 0)
            return ra->args[i]->value;
    return NULL;
}

/* Action names are lower_snake_case ("collect_facts"); the hyphenated
 * spelling is accepted as the same name. */
static int action_is(const char *name, const char *want)
{
    for (; *name && *want; name++, want++)
        if (*name != *want && !(*name == '-' && *want == '_'))
            return 0;
    return *name == '\0' && *want == '\0';
}

static void run_action(struct agent *a, struct agent_job *job, const Aegis__V1__RunAction *ra)
{
    char detail[512];
    if (action_is(ra->name, "ping")) {
        char res[2048];
        size_t pos = 0;
        agent_json_raw(res, sizeof(res), &pos, "{\"pong\":true,\"version\":");
        agent_json_str(res, sizeof(res), &pos, agent_version_string());
        agent_json_raw(res, sizeof(res), &pos, ",\"args\":{");
        for (size_t i = 0; i < ra->n_args && i < 16; i++) {
            agent_json_raw(res, sizeof(res), &pos, "%s", i ? "," : "");
            agent_json_str(res, sizeof(res), &pos, ra->args[i]->key);
            agent_json_raw(res, sizeof(res), &pos, ":");
            agent_json_str(res, sizeof(res), &pos, ra->args[i]->value);
        }
        agent_json_raw(res, sizeof(res), &pos, "}}");
        agent_exec_job_done(a, job, 1, "pong", res, pos);
    } else if (action_is(ra->name, "collect_facts")) {
        char *res = malloc(RESULT_MAX);
        size_t pos = 0;
        if (res == NULL) {
            agent_exec_job_done(a, job, 0, "failed: out of memory", NULL, 0);
            return;
        }
        facts_json(a, res, RESULT_MAX, &pos);
        agent_json_raw(res, RESULT_MAX, &pos, "}");
        agent_exec_job_done(a, job, 1, "facts collected", res, pos);
        free(res);
    } else if (action_is(ra->name, "flush_flows")) {
        int rv = agent_policy_flush_flows(a, detail, sizeof(detail));
        agent_exec_job_done(a, job, rv == 0, detail, NULL, 0);
    } else if (action_is(ra->name, "compact_journals")) {
        int r1 = agent_seen_compact(a->seen), r2 = agent_acks_compact(a->acks);
        snprintf(detail, sizeof(detail), "seen: %s; acks: %s", aegis_strerror(r1),
                 aegis_strerror(r2));
        agent_exec_job_done(a, job, r1 == 0 && r2 == 0, detail, NULL, 0);
    } else if (action_is(ra->name, "sleep")) {
        const char *s = arg_of(ra, "seconds");
        char *end = NULL;
        unsigned long secs = s ? strtoul(s, &end, 10) : 0;
        if (s == NULL || *end != '\0' || secs == 0 || secs > AGENT_SLEEP_MAX_S) {
            snprintf(detail, sizeof(detail), "failed: action sleep needs args seconds=1..%u",
                     AGENT_SLEEP_MAX_S);
            agent_exec_job_done(a, job, 0, detail, NULL, 0);
            return;
        }
        ev_timer_init(&job->timer, sleep_done, (double)secs, 0);
        job->timer.data = a;
        ev_timer_start(a->loop, &job->timer);
    } else {
        snprintf(detail, sizeof(detail),
                 "failed: unknown action \"%.64s\" (built-in actions: ping, collect_facts, "
                 "flush_flows, compact_journals, sleep)",
                 ra->name);
        agent_exec_job_done(a, job, 0, detail, NULL, 0);
    }
}

static void collect_inventory(struct agent *a, struct agent_job *job,
                              const Aegis__V1__CollectInventory *ci)
{
    size_t cap = ci->include_packages ? RESULT_PKG_MAX : RESULT_MAX;
    char *res = malloc(cap);
    if (res == NULL) {
        agent_exec_job_done(a, job, 0, "failed: out of memory", NULL, 0);
        return;
    }
    size_t pos = 0;
    facts_json(a, res, cap, &pos);
    if (ci->include_packages)
        packages_json(res, cap, &pos);
    agent_json_raw(res, cap, &pos, "}");
    agent_exec_job_done(a, job, 1, "inventory collected", res, pos);
    free(res);
}

static void unload_artifact(struct agent *a, struct agent_job *job,
                            const Aegis__V1__UnloadArtifact *ua)
{
    char part[4096], blob[4096], detail[256];
    if (ua->sha256.len != AGENT_SHA256_LEN ||
        agent_artifact_paths(a->artifacts_dir, ua->sha256.data, part, blob, sizeof(part)) != 0) {
        agent_exec_job_done(a, job, 0, "failed: sha256 must be 32 bytes", NULL, 0);
        return;
    }
    int removed = (unlink(blob) == 0) + (unlink(part) == 0);
    char data[4200];
    snprintf(data, sizeof(data), "%.4090s.data", blob);
    removed += unlink(data) == 0;
    snprintf(detail, sizeof(detail),
             removed ? "unloaded: stored files removed"
                     : "unloaded: nothing stored for this artifact");
    agent_exec_job_done(a, job, 1, detail, NULL, 0);
}

static void restart_later(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    agent_restart(w->data);
}

void agent_exec_kick(struct agent *a)
{
    if (a->job_running || a->queue == NULL || a->stopping)
        return;
    struct agent_job *job = a->queue;
    Aegis__V1__Command *c = job->cmd;
    a->job_running = 1;
    snprintf(a->last_command, sizeof(a->last_command), "%s %s", c->id, agent_cmd_payload_name(c));
    snprintf(a->last_command_state, sizeof(a->last_command_state), "running");
    if ((aegis_tstamp)c->expires_unix_ns <= aegis_wallclock()) {
        agent_exec_job_done(a, job, 0, "failed: expired while queued", NULL, 0);
        return;
    }
    char detail[512];
    switch (c->payload_case) {
    case AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION:
        run_action(a, job, c->run_action);
        break;
    case AEGIS__V1__COMMAND__PAYLOAD_COLLECT_INVENTORY:
        collect_inventory(a, job, c->collect_inventory);
        break;
    case AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY: {
        const Aegis__V1__ApplyPolicy *ap = c->apply_policy;
        int rv = ap->snapshot ? agent_policy_apply(a, ap->snapshot, ap->policy_version,
                                                   ap->rollback, detail, sizeof(detail))
                              : (snprintf(detail, sizeof(detail), "failed: no snapshot"), -1);
        agent_exec_job_done(a, job, rv == 0, detail, NULL, 0);
        break;
    }
    case AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT:
    case AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT:
        agent_fetch_start(a, job);
        break;
    case AEGIS__V1__COMMAND__PAYLOAD_UNLOAD_ARTIFACT:
        unload_artifact(a, job, c->unload_artifact);
        break;
    case AEGIS__V1__COMMAND__PAYLOAD_RESTART_AGENT: {
        uint32_t delay = c->restart_agent->delay_seconds;
        if (delay > 3600)
            delay = 3600;
        agent_exec_job_done(a, job, 1, "restarting", NULL, 0);
        /* The ack is durable already; give it a moment to reach the server
         * (it is re-sent after the restart if it did not). */
        static ev_timer restart_timer;
        ev_timer_init(&restart_timer, restart_later, delay ? (double)delay : 1.0, 0);
        restart_timer.data = a;
        ev_timer_start(a->loop, &restart_timer);
        break;
    }
    default:
        agent_exec_job_done(a, job, 0, "failed: unsupported payload", NULL, 0);
    }
}

struct started {
    char ids[64][AGENT_SEEN_ID_MAX + 1];
    size_t n;
};

static int collect_started(const char *id, aegis_tstamp expiry, void *ud)
{
    (void)expiry;
    struct started *s = ud;
    if (s->n < 64)
        snprintf(s->ids[s->n++], sizeof(s->ids[0]), "%s", id);
    return 0;
}

int agent_exec_recover(struct agent *a)
{
    static struct started s;
    s.n = 0;
    agent_seen_foreach_started(a->seen, collect_started, &s);
    for (size_t i = 0; i < s.n; i++) {
        if (a->update_cmd[0] && strcmp(s.ids[i], a->update_cmd) == 0)
            continue; /* agent_update owns its outcome */
        uint64_t seq = inflight_seq(a, s.ids[i]);
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=command_interrupted command=%s seq=%llu",
                  s.ids[i], (unsigned long long)seq);
        agent_ack(a, s.ids[i], seq, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED, 0,
                  "failed: interrupted (the agent stopped while running it); not re-run", NULL, 0);
        agent_seen_mark_finished(a->seen, s.ids[i], AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED,
                                 aegis_wallclock());
    }
    return 0;
}

void agent_exec_free(struct agent *a)
{
    while (a->queue) {
        struct agent_job *j = a->queue;
        a->queue = j->next;
        if (a->loop)
            ev_timer_stop(a->loop, &j->timer);
        agent_msg_free(j->cmd, NULL);
        free(j);
    }
    a->nqueue = 0;
}
