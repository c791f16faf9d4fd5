/*
 * FetchArtifact with resume, then verification and loading (seed 001).
 *
 * Bytes go to artifacts/<sha>.part as they arrive; any interruption (lost
 * connection, server restart, agent restart) resumes from the partial
 * file's size. Only when the stream ends is the whole file checked against
 * the signed statement (size, SHA-256); only then is it decompressed
 * (bounded) and used. A failed check deletes the partial file, so the next
 * attempt starts clean.
 */
#include "agent_cmd.h"
#include "agent_daemon.h"
#include "agent_msg.h"

#include <aegis/err.h>
#include <aegis/hex.h>
#include <aegis/rpc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_FETCH "/aegis.v1.AgentService/FetchArtifact"
/* Pause before retrying a fetch the server answered UNAVAILABLE. */
#define FETCH_RETRY_S 2.0
/* Policy bundles are parsed in memory: the RPC message cap. */
#define POLICY_BUNDLE_MAX (4u << 20)

static const uint8_t *job_sha(const struct agent_job *job, int *pkind, int *pfetch_only)
{
    const Aegis__V1__Command *c = job->cmd;
    if (c->payload_case == AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT) {
        *pkind = AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY;
        *pfetch_only = 0;
        return c->update_agent->sha256.len == AGENT_SHA256_LEN ? c->update_agent->sha256.data
                                                               : NULL;
    }
    *pkind = (int)c->load_artifact->kind;
    *pfetch_only = c->load_artifact->fetch_only;
    return c->load_artifact->sha256.len == AGENT_SHA256_LEN ? c->load_artifact->sha256.data : NULL;
}

/* Fails the job with detail prefix + why ("failed: ..."). */
static void fail(struct agent *a, struct agent_job *job, const char *prefix, const char *why)
{
    char d[AGENT_ACKS_DETAIL_MAX];
    snprintf(d, sizeof(d), "%s%.900s", prefix, why);
    agent_telemetry_event(a, "artifact_failed", "command", job->cmd->id, "reason", d);
    agent_exec_job_done(a, job, 0, d, NULL, 0);
}

static void load_policy(struct agent *a, struct agent_job *job, const char *data_path)
{
    char d[AGENT_ACKS_DETAIL_MAX];
    uint8_t *buf = malloc(POLICY_BUNDLE_MAX);
    size_t n = 0;
    int rv = buf ? agent_io_read_file(NULL, data_path, buf, POLICY_BUNDLE_MAX, &n) : -ENOMEM;
    Aegis__V1__MapSnapshot *snap = NULL;
    if (rv == 0)
        rv = agent_msg_unpack(&aegis__v1__map_snapshot__descriptor, buf, n, NULL, (void **)&snap);
    free(buf);
    if (rv != 0) {
        fail(a, job, "failed: downloaded and verified, but the policy bundle is unusable: ",
             aegis_strerror(rv));
        return;
    }
    char pd[512];
    rv = agent_policy_apply(a, snap, snap->version, 0, pd, sizeof(pd));
    agent_msg_free(snap, NULL);
    if (rv != 0) {
        fail(a, job, "failed: downloaded and verified, not loaded: ", pd);
        return;
    }
    snprintf(d, sizeof(d), "loaded: %s (%s)", job->meta.name, pd);
    agent_telemetry_event(a, "artifact_loaded", "command", job->cmd->id, "name", job->meta.name);
    agent_exec_job_done(a, job, 1, d, NULL, 0);
}

/* The whole stored file is here: verify, keep, decompress, use. */
static void finish(struct agent *a, struct agent_job *job, const char *part, const char *blob)
{
    char why[512], d[AGENT_ACKS_DETAIL_MAX];
    int rv = agent_artifact_verify_file(&job->meta, part, why, sizeof(why));
    if (rv != 0) {
        unlink(part);
        fail(a, job, "failed: ", why);
        return;
    }
    if (rename(part, blob) != 0) {
        fail(a, job, "failed: cannot keep the verified artifact: ", strerror(errno));
        return;
    }
    agent_io_fsync_dir(NULL, a->artifacts_dir);
    int kind = 0, fetch_only = 0;
    job_sha(job, &kind, &fetch_only);
    char hex8[17];
    aegis_hex_encode(job->meta.sha256, 8, hex8, sizeof(hex8));
    agent_telemetry_event(a, "artifact_downloaded", "command", job->cmd->id, "name",
                          job->meta.name);
    int k = job->meta.kind;
    int is_update = job->cmd->payload_case == AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT;
    if (fetch_only || (!is_update && (k == AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY ||
                                      k == AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_BPF_OBJECT))) {
        snprintf(d, sizeof(d), "downloaded: %s (%llu bytes, sha256 %s..., key %s)%s",
                 job->meta.name, (unsigned long long)job->meta.size, hex8, job->meta.key_id,
                 fetch_only ? ""
                 : k == AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY
                     ? "; agent binaries are installed with UpdateAgent"
                     : "; BPF objects are kept, enforcement uses the agent's built-in programs");
        agent_exec_job_done(a, job, 1, d, NULL, 0);
        return;
    }
    char data[4200];
    snprintf(data, sizeof(data), "%.4090s.data", blob);
    rv = agent_artifact_decompress(&job->meta, blob, data, 0600, why, sizeof(why));
    if (rv != 0) {
        fail(a, job, "failed: verified but cannot decompress: ", why);
        return;
    }
    if (is_update) {
        agent_update_install(a, job, data);
        return;
    }
    if (k == AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_POLICY_BUNDLE ||
        k == AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_NETWORK_BLOCK) {
        load_policy(a, job, data);
        return;
    }
    snprintf(d, sizeof(d), "loaded: %s stored as %.200s (%llu bytes)", job->meta.name, data,
             (unsigned long long)job->meta.uncompressed_size);
    agent_telemetry_event(a, "artifact_loaded", "command", job->cmd->id, "name", job->meta.name);
    agent_exec_job_done(a, job, 1, d, NULL, 0);
}

static struct agent_job *fetch_job(struct agent *a)
{
    struct agent_job *j = a->queue;
    if (j && a->job_running && !j->done &&
        (j->cmd->payload_case == AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT ||
         j->cmd->payload_case == AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT))
        return j;
    return NULL;
}

static int fetch_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct agent *a = ud;
    struct agent_job *job = aegis_call_get_data(call);
    if (job == NULL)
        return 1; /* its job is gone: cancel the call */
    Aegis__V1__ArtifactChunk *ch = NULL;
    int rv = agent_msg_unpack(&aegis__v1__artifact_chunk__descriptor, msg, len, NULL, (void **)&ch);
    if (rv != 0) {
        fail(a, job, "failed: malformed ArtifactChunk: ", aegis_strerror(rv));
        return 1;
    }
    int kind = 0, fetch_only = 0;
    const uint8_t *sha = job_sha(job, &kind, &fetch_only);
    char why[512];
    if (ch->header) {
        struct agent_artifact_meta m;
        rv = agent_artifact_verify_header(ch->header, a->id.artifact_keys, a->id.nartifact_keys,
                                          sha, kind, NULL, &m, why, sizeof(why));
        if (rv != 0) {
            agent_msg_free(ch, NULL);
            fail(a, job, "failed: ", why);
            return 1;
        }
        if (job->have_meta && memcmp(&m, &job->meta, sizeof(m)) != 0) {
            agent_msg_free(ch, NULL);
            fail(a, job, "failed: ", "the artifact's statement changed between attempts");
            return 1;
        }
        job->meta = m;
        job->have_meta = 1;
    }
    if (!job->have_meta) {
        agent_msg_free(ch, NULL);
        fail(a, job, "failed: ", "the server sent data before the signed header");
        return 1;
    }
    if (ch->data.len > 0) {
        char part[4096], blob[4096];
        agent_artifact_paths(a->artifacts_dir, job->meta.sha256, part, blob, sizeof(part));
        rv = agent_artifact_append(part, ch->offset, ch->data.data, ch->data.len, job->meta.size);
        if (rv != 0) {
            agent_msg_free(ch, NULL);
            if (rv == AEGIS_ERR_TOO_LARGE)
                unlink(part);
            fail(a, job, "failed: cannot store chunk: ",
                 rv == AEGIS_ERR_TOO_LARGE   ? "more bytes than the signed size"
                 : rv == AEGIS_ERR_MALFORMED ? "chunk offset does not continue the file"
                                             : aegis_strerror(rv));
            return 1;
        }
        job->fetch_offset = ch->offset + ch->data.len;
    }
    agent_msg_free(ch, NULL);
    return 0;
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    struct agent_job *job = fetch_job(a);
    if (job && &job->timer == w && a->fetch_call == NULL)
        agent_fetch_start(a, job);
}

static void fetch_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    struct agent *a = ud;
    struct agent_job *job = aegis_call_get_data(call);
    if (call == a->fetch_call)
        a->fetch_call = NULL;
    if (job == NULL || a->stopping)
        return;
    if (st->code == AEGIS_GRPC_OK) {
        if (!job->have_meta) {
            fail(a, job, "failed: ", "the server sent no artifact header");
            return;
        }
        char part[4096], blob[4096];
        agent_artifact_paths(a->artifacts_dir, job->meta.sha256, part, blob, sizeof(part));
        finish(a, job, part, blob);
        return;
    }
    char why[256];
    snprintf(why, sizeof(why), "%s %.160s", aegis_grpc_status_name(st->code), st->message);
    int retryable = st->code == AEGIS_GRPC_UNAVAILABLE || st->code == AEGIS_GRPC_CANCELLED ||
                    st->code == AEGIS_GRPC_DEADLINE_EXCEEDED || st->code == AEGIS_GRPC_ABORTED ||
                    st->code == AEGIS_GRPC_RESOURCE_EXHAUSTED || st->code == AEGIS_GRPC_INTERNAL;
    if (!retryable || (unsigned)job->fetch_attempts >= AGENT_FETCH_MAX_ATTEMPTS) {
        fail(a, job, "failed: artifact not available: ", why);
        return;
    }
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO,
              "event=fetch_interrupted command=%s offset=%llu status=\"%s\"", job->cmd->id,
              (unsigned long long)job->fetch_offset, why);
    if (a->conn && a->state == AGENT_CONN_READY) {
        ev_timer_stop(a->loop, &job->timer);
        ev_timer_init(&job->timer, retry_cb, FETCH_RETRY_S, 0);
        job->timer.data = a;
        ev_timer_start(a->loop, &job->timer);
    } else {
        job->wait_conn = 1; /* agent_fetch_on_ready resumes it */
    }
}

static const struct aegis_call_callbacks fetch_cbs = {
    .on_message = fetch_msg,
    .on_close = fetch_close,
};

void agent_fetch_start(struct agent *a, struct agent_job *job)
{
    int kind = 0, fetch_only = 0;
    const uint8_t *sha = job_sha(job, &kind, &fetch_only);
    if (sha == NULL) {
        fail(a, job, "failed: ", "the command's sha256 is not 32 bytes");
        return;
    }
    if (job->cmd->payload_case == AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT &&
        agent_update_precheck(a, job) != 0)
        return; /* precheck finished the job */
    if (a->state != AGENT_CONN_READY || a->conn == NULL) {
        job->wait_conn = 1;
        return;
    }
    job->wait_conn = 0;
    job->fetch_attempts++;
    char part[4096], blob[4096];
    agent_artifact_paths(a->artifacts_dir, sha, part, blob, sizeof(part));
    /* A complete earlier download is re-verified rather than fetched again:
     * move it back to .part and ask only for the header. */
    struct stat st;
    if (stat(blob, &st) == 0 && agent_artifact_part_size(part) == 0)
        rename(blob, part);
    uint64_t off = agent_artifact_part_size(part);
    job->fetch_offset = off;
    Aegis__V1__FetchArtifactRequest req = AEGIS__V1__FETCH_ARTIFACT_REQUEST__INIT;
    req.sha256.data = (uint8_t *)sha;
    req.sha256.len = AGENT_SHA256_LEN;
    req.offset = off;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv = agent_msg_pack(&req, NULL, &buf, &len);
    if (rv == 0)
        rv = aegis_call_start(a->conn, PATH_FETCH, AEGIS_RPC_SERVER_STREAMING, NULL, &fetch_cbs, a,
                              &a->fetch_call);
    if (rv == 0) {
        aegis_call_set_data(a->fetch_call, job);
        rv = aegis_call_send(a->fetch_call, buf, len);
        if (rv == 0)
            aegis_call_close_send(a->fetch_call);
    }
    aegis_free(NULL, buf);
    if (rv != 0) {
        agent_fetch_detach(a, job);
        job->wait_conn = 1;
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=fetch_start_failed error=\"%s\"",
                  aegis_strerror(rv));
        return;
    }
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=fetch_started command=%s offset=%llu attempt=%d",
              job->cmd->id, (unsigned long long)off, job->fetch_attempts);
}

void agent_fetch_detach(struct agent *a, struct agent_job *job)
{
    if (a->fetch_call && aegis_call_get_data(a->fetch_call) == job) {
        aegis_call_set_data(a->fetch_call, NULL);
        aegis_call_cancel(a->fetch_call);
        a->fetch_call = NULL;
    }
}

void agent_fetch_on_ready(struct agent *a)
{
    struct agent_job *job = fetch_job(a);
    if (job && job->wait_conn && a->fetch_call == NULL && a->state == AGENT_CONN_READY)
        agent_fetch_start(a, job);
}
