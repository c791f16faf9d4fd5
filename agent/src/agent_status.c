/*
 * status.json: the daemon's local view for `aegis-agent status`, rewritten
 * atomically on every state change (connection, command, policy, telemetry
 * send) -- never on a timer of its own.
 */
#include "agent_daemon.h"
#include "agent_facts.h"
#include "agent_version.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define STATUS_MAX 4096u

static const char *state_name(enum agent_conn_state s)
{
    switch (s) {
    case AGENT_CONN_CONNECTING:
        return "connecting";
    case AGENT_CONN_AUTHENTICATING:
        return "authenticating";
    case AGENT_CONN_READY:
        return "connected";
    default:
        return "disconnected";
    }
}

void agent_status_write(struct agent *a)
{
    if (a->sd == NULL || a->spool == NULL)
        return;
    char buf[STATUS_MAX];
    size_t p = 0;
    struct agent_spool_stats ss;
    agent_spool_stats(a->spool, &ss);
    agent_json_raw(buf, sizeof(buf), &p, "{\n  \"connection\": ");
    agent_json_str(buf, sizeof(buf), &p, state_name(a->state));
    agent_json_raw(buf, sizeof(buf), &p, ",\n  \"server\": ");
    agent_json_str(buf, sizeof(buf), &p, a->id.server);
    agent_json_raw(buf, sizeof(buf), &p, ",\n  \"agent_id\": ");
    agent_json_str(buf, sizeof(buf), &p, a->id.agent_id);
    agent_json_raw(buf, sizeof(buf), &p, ",\n  \"version\": ");
    agent_json_str(buf, sizeof(buf), &p, agent_version_string());
    agent_json_raw(buf, sizeof(buf), &p, ",\n  \"pid\": %d,\n  \"last_error\": ", (int)getpid());
    agent_json_str(buf, sizeof(buf), &p, a->last_error);
    agent_json_raw(buf, sizeof(buf), &p, ",\n  \"last_command\": ");
    agent_json_str(buf, sizeof(buf), &p, a->last_command);
    agent_json_raw(buf, sizeof(buf), &p, ",\n  \"last_command_state\": ");
    agent_json_str(buf, sizeof(buf), &p, a->last_command_state);
    agent_json_raw(buf, sizeof(buf), &p,
                   ",\n  \"commands_run\": %llu,\n  \"queued_commands\": %zu,\n"
                   "  \"policy_version\": %llu,\n  \"pending_acks\": %zu,\n"
                   "  \"spool_batches\": %llu,\n  \"spool_bytes\": %llu,\n"
                   "  \"spool_dropped_batches\": %llu,\n  \"batches_committed\": %llu,\n"
                   "  \"authentications\": %llu,\n  \"connects\": %llu,\n"
                   "  \"acked_sequence\": %llu,\n  \"updated_unix_ns\": %llu\n}\n",
                   (unsigned long long)a->commands_run, a->nqueue,
                   (unsigned long long)a->policy_version, agent_acks_count(a->acks),
                   (unsigned long long)ss.batches, (unsigned long long)ss.bytes,
                   (unsigned long long)ss.dropped_batches, (unsigned long long)a->batches_committed,
                   (unsigned long long)a->auth_count, (unsigned long long)a->connects,
                   (unsigned long long)a->acked_sequence, (unsigned long long)aegis_wallclock());
    int rv = agent_state_dir_write(a->sd, AGENT_FILE_STATUS, buf, p, 0644);
    if (rv != 0)
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=status_write_failed error=\"%s\"",
                  aegis_strerror(rv));
}

int agent_status_print(const char *state_dir, int json)
{
    char buf[STATUS_MAX];
    int rv = agent_read_small(state_dir, AGENT_FILE_STATUS, buf, sizeof(buf));
    if (rv != 0) {
        fprintf(stderr,
                "aegis-agent: cannot read %s/%s: %s (is `aegis-agent run` running with this "
                "--state-dir?)\n",
                state_dir, AGENT_FILE_STATUS, aegis_strerror(rv));
        return 1;
    }
    if (json) {
        printf("%s\n", buf);
        return 0;
    }
    /* The file is ours: one "key": value per line. Print it as key: value. */
    char *save = NULL;
    for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *q1 = strchr(l, '"');
        if (q1 == NULL)
            continue;
        char *q2 = strchr(q1 + 1, '"');
        if (q2 == NULL || q2[1] != ':')
            continue;
        *q2 = '\0';
        char *v = q2 + 2;
        while (*v == ' ')
            v++;
        size_t n = strlen(v);
        if (n && v[n - 1] == ',')
            v[--n] = '\0';
        if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
            v[n - 1] = '\0';
            v++;
        }
        printf("%-22s %s\n", q1 + 1, v);
    }
    return 0;
}
