/*
 * Telemetry (DESIGN §5, §8): collectors sample system facts and metrics
 * (/proc load, memory, uptime; statvfs storage; the agent's own footprint;
 * BPF counters when enforcing) every metrics interval; each sample and each
 * event becomes one TelemetryBatch in the on-disk spool. Every telemetry
 * interval (and after each reconnect) unsent batches are streamed with
 * ReportTelemetry; a batch leaves the spool only when the summary lists it
 * as committed.
 *
 * The batch id is the spool's id, which is only known once the batch is
 * stored; protobuf merges concatenated encodings, so at send time the id
 * (and the drop count) are appended as extra fields instead of re-encoding.
 */
#include "agent_daemon.h"
#include "agent_facts.h"
#include "agent_msg.h"
#include "agent_version.h"

#include <aegis/err.h>
#include <aegis/rpc.h>
#include <aegis/v1/telemetry.pb-c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PATH_TELEMETRY "/aegis.v1.AgentService/ReportTelemetry"
/* Metrics in one sample: ~20 system ones plus BPF counters. */
#define SAMPLE_MAX 560u
/* Deadline of one ReportTelemetry stream. */
#define TELEMETRY_DEADLINE_NS (60 * AEGIS_NS_PER_S)

static struct agent_metric sample[SAMPLE_MAX];

static void add(size_t *pn, const char *name, const char *k, const char *v, double value,
                int counter)
{
    if (*pn >= SAMPLE_MAX)
        return;
    struct agent_metric *m = &sample[(*pn)++];
    memset(m, 0, sizeof(*m));
    snprintf(m->name, sizeof(m->name), "%s", name);
    if (k) {
        snprintf(m->lk[0], sizeof(m->lk[0]), "%s", k);
        snprintf(m->lv[0], sizeof(m->lv[0]), "%s", v);
    }
    m->value = value;
    m->counter = counter;
}

static int store_batch(struct agent *a, Aegis__V1__TelemetryBatch *b)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv = agent_msg_pack(b, NULL, &buf, &len);
    uint64_t id = 0;
    if (rv == 0)
        rv = agent_spool_append(a->spool, buf, len, aegis_wallclock(), &id);
    aegis_free(NULL, buf);
    if (rv != 0)
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=spool_append_failed error=\"%s\"",
                  aegis_strerror(rv));
    return rv;
}

static void collect(struct agent *a)
{
    size_t n = 0;
    struct agent_facts f;
    int64_t now = (int64_t)aegis_wallclock();
    agent_facts_collect(&f, "", now);
    add(&n, "system_load1", NULL, NULL, f.load[0], 0);
    add(&n, "system_load5", NULL, NULL, f.load[1], 0);
    add(&n, "system_load15", NULL, NULL, f.load[2], 0);
    add(&n, "system_memory_total_bytes", NULL, NULL, (double)f.mem_total, 0);
    add(&n, "system_memory_available_bytes", NULL, NULL, (double)f.mem_available, 0);
    add(&n, "system_uptime_seconds", NULL, NULL, f.uptime_s, 0);
    add(&n, "system_cpu_count", NULL, NULL, (double)f.cpu_count, 0);
    const char *mounts[2] = {"/", agent_state_dir_path(a->sd)};
    for (int i = 0; i < 2; i++) {
        struct statvfs sv;
        if (statvfs(mounts[i], &sv) != 0)
            continue;
        add(&n, "storage_total_bytes", "path", mounts[i], (double)sv.f_blocks * (double)sv.f_frsize,
            0);
        add(&n, "storage_available_bytes", "path", mounts[i],
            (double)sv.f_bavail * (double)sv.f_frsize, 0);
    }
    char statm[128];
    if (agent_read_small("/proc/self", "statm", statm, sizeof(statm)) == 0) {
        unsigned long pages = 0, rss = 0;
        if (sscanf(statm, "%lu %lu", &pages, &rss) == 2)
            add(&n, "agent_rss_bytes", NULL, NULL, (double)rss * (double)sysconf(_SC_PAGESIZE), 0);
    }
    struct agent_spool_stats ss;
    agent_spool_stats(a->spool, &ss);
    add(&n, "agent_spool_bytes", NULL, NULL, (double)ss.bytes, 0);
    add(&n, "agent_spool_dropped_batches_total", NULL, NULL, (double)ss.dropped_batches, 1);
    add(&n, "agent_pending_acks", NULL, NULL, (double)agent_acks_count(a->acks), 0);
    add(&n, "agent_policy_version", NULL, NULL, (double)a->policy_version, 0);
    n += agent_policy_metrics(a, sample + n, SAMPLE_MAX - n);

    static Aegis__V1__Metric pm[SAMPLE_MAX];
    static Aegis__V1__Metric *pp[SAMPLE_MAX];
    static Aegis__V1__Labels lab[SAMPLE_MAX];
    static Aegis__V1__Labels__EntriesEntry ent[SAMPLE_MAX][2];
    static Aegis__V1__Labels__EntriesEntry *entp[SAMPLE_MAX][2];
    for (size_t i = 0; i < n; i++) {
        aegis__v1__metric__init(&pm[i]);
        pm[i].name = sample[i].name;
        pm[i].value = sample[i].value;
        pm[i].time_unix_ns = now;
        pm[i].kind = sample[i].counter ? AEGIS__V1__METRIC_KIND__METRIC_KIND_COUNTER
                                       : AEGIS__V1__METRIC_KIND__METRIC_KIND_GAUGE;
        size_t ne = 0;
        for (int k = 0; k < 2; k++) {
            if (sample[i].lk[k][0] == '\0')
                continue;
            aegis__v1__labels__entries_entry__init(&ent[i][ne]);
            ent[i][ne].key = sample[i].lk[k];
            ent[i][ne].value = sample[i].lv[k];
            entp[i][ne] = &ent[i][ne];
            ne++;
        }
        if (ne) {
            aegis__v1__labels__init(&lab[i]);
            lab[i].n_entries = ne;
            lab[i].entries = entp[i];
            pm[i].labels = &lab[i];
        }
        pp[i] = &pm[i];
    }
    Aegis__V1__TelemetryBatch b = AEGIS__V1__TELEMETRY_BATCH__INIT;
    b.metrics = pp;
    b.n_metrics = n;
    b.created_unix_ns = now;
    store_batch(a, &b);
}

void agent_telemetry_event(struct agent *a, const char *kind, const char *k1, const char *v1,
                           const char *k2, const char *v2)
{
    if (a->spool == NULL)
        return;
    Aegis__V1__Event ev = AEGIS__V1__EVENT__INIT;
    Aegis__V1__Event__AttrsEntry at[2], *atp[2];
    size_t na = 0;
    const char *ks[2] = {k1, k2}, *vs[2] = {v1, v2};
    char vbuf[2][256];
    for (int i = 0; i < 2; i++) {
        if (ks[i] == NULL || vs[i] == NULL)
            continue;
        aegis__v1__event__attrs_entry__init(&at[na]);
        snprintf(vbuf[na], sizeof(vbuf[na]), "%s", vs[i]);
        at[na].key = (char *)ks[i];
        at[na].value = vbuf[na];
        atp[na] = &at[na];
        na++;
    }
    ev.kind = (char *)kind;
    ev.time_unix_ns = (int64_t)aegis_wallclock();
    ev.attrs = atp;
    ev.n_attrs = na;
    Aegis__V1__Event *evp = &ev;
    Aegis__V1__TelemetryBatch b = AEGIS__V1__TELEMETRY_BATCH__INIT;
    b.events = &evp;
    b.n_events = 1;
    b.created_unix_ns = ev.time_unix_ns;
    store_batch(a, &b);
}

/* ---- ReportTelemetry ---- */

static int tel_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    struct agent *a = ud;
    Aegis__V1__TelemetrySummary *s = NULL;
    if (agent_msg_unpack(&aegis__v1__telemetry_summary__descriptor, msg, len, NULL, (void **)&s) !=
        0) {
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=telemetry_summary_malformed");
        return 0;
    }
    /* Only ids we sent on this stream may leave the spool. */
    for (size_t i = 0; i < s->n_committed_batch_ids; i++) {
        uint64_t id = s->committed_batch_ids[i];
        if (id <= a->tel_sent_upto && agent_spool_commit(a->spool, id) == 0)
            a->batches_committed++;
    }
    for (size_t i = 0; i < s->n_rejected; i++) {
        const Aegis__V1__RejectedBatch *r = s->rejected[i];
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN,
                  "event=telemetry_rejected batch=%llu retryable=%d reason=\"%s\"",
                  (unsigned long long)r->batch_id, (int)r->retryable, r->reason);
        if (!r->retryable && r->batch_id <= a->tel_sent_upto)
            agent_spool_commit(a->spool, r->batch_id); /* the server says drop it */
    }
    agent_msg_free(s, NULL);
    return 0;
}

static void tel_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct agent *a = ud;
    a->tel_call = NULL;
    if (st->code != AEGIS_GRPC_OK) {
        AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=telemetry_send_failed status=%s message=\"%s\"",
                  aegis_grpc_status_name(st->code), st->message);
        return; /* the next tick retries */
    }
    agent_status_write(a);
    struct agent_spool_batch b;
    if (!a->stopping && agent_spool_next(a->spool, a->tel_sent_upto, &b) == 0)
        agent_telemetry_pump(a); /* more than one stream's worth was waiting */
}

static const struct aegis_call_callbacks tel_cbs = {
    .on_message = tel_msg,
    .on_close = tel_close,
};

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

void agent_telemetry_pump(struct agent *a)
{
    if (a->state != AGENT_CONN_READY || a->tel_call || a->conn == NULL)
        return;
    struct agent_spool_batch b;
    if (agent_spool_next(a->spool, 0, &b) != 0)
        return;
    struct aegis_call_opts o = {.deadline = aegis_now() + TELEMETRY_DEADLINE_NS};
    if (aegis_call_start(a->conn, PATH_TELEMETRY, AEGIS_RPC_CLIENT_STREAMING, &o, &tel_cbs, a,
                         &a->tel_call) != 0)
        return;
    struct agent_spool_stats ss;
    agent_spool_stats(a->spool, &ss);
    uint64_t dropped = ss.dropped_batches - a->drops_reported;
    size_t nb = 0, bytes = 0;
    uint64_t after = 0;
    a->tel_sent_upto = 0;
    while (nb < AGENT_TELEMETRY_STREAM_BATCHES && bytes < AGENT_TELEMETRY_STREAM_BYTES &&
           agent_spool_next(a->spool, after, &b) == 0) {
        after = b.id;
        uint8_t *buf = malloc((size_t)b.len + 32);
        if (buf == NULL)
            break;
        size_t n = 0;
        int rv = agent_spool_read(a->spool, b.id, buf, b.len, &n);
        if (rv == AEGIS_ERR_MALFORMED) { /* deleted and counted by the spool */
            free(buf);
            continue;
        }
        if (rv != 0) {
            free(buf);
            break;
        }
        /* field 1 batch_id, field 2 agent_seq, field 5 dropped (varints) */
        buf[n++] = 0x08;
        n += put_varint(buf + n, b.id);
        buf[n++] = 0x10;
        n += put_varint(buf + n, b.id);
        if (nb == 0 && dropped) {
            buf[n++] = 0x28;
            n += put_varint(buf + n, dropped);
        }
        rv = aegis_call_send(a->tel_call, buf, n);
        free(buf);
        if (rv != 0)
            break;
        if (nb == 0)
            a->drops_reported = ss.dropped_batches;
        a->tel_sent_upto = b.id;
        nb++;
        bytes += n;
    }
    aegis_call_close_send(a->tel_call);
    AEGIS_LOG(&a->log, AEGIS_LOG_DEBUG, "event=telemetry_sent batches=%zu bytes=%zu", nb, bytes);
}

/* ---- timers ---- */

static void metrics_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    collect(w->data);
}

static void telemetry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    agent_telemetry_pump(a);
    agent_status_write(a);
}

void agent_telemetry_start(struct agent *a)
{
    struct agent_spool_stats ss;
    agent_spool_stats(a->spool, &ss);
    a->drops_reported = ss.dropped_batches;
    ev_timer_init(&a->metrics_timer, metrics_cb, (double)a->metrics_interval_s,
                  (double)a->metrics_interval_s);
    ev_timer_init(&a->telemetry_timer, telemetry_cb, (double)a->telemetry_interval_s,
                  (double)a->telemetry_interval_s);
    a->metrics_timer.data = a->telemetry_timer.data = a;
    ev_timer_start(a->loop, &a->metrics_timer);
    ev_timer_start(a->loop, &a->telemetry_timer);
}

void agent_telemetry_reschedule(struct agent *a)
{
    if (a->metrics_timer.repeat != (double)a->metrics_interval_s) {
        a->metrics_timer.repeat = (double)a->metrics_interval_s;
        ev_timer_again(a->loop, &a->metrics_timer);
    }
    if (a->telemetry_timer.repeat != (double)a->telemetry_interval_s) {
        a->telemetry_timer.repeat = (double)a->telemetry_interval_s;
        ev_timer_again(a->loop, &a->telemetry_timer);
    }
}

void agent_telemetry_stop(struct agent *a)
{
    if (a->loop == NULL)
        return;
    ev_timer_stop(a->loop, &a->metrics_timer);
    ev_timer_stop(a->loop, &a->telemetry_timer);
}
