/*
 * Prometheus exposition (text format 0.0.4) and /healthz over libmicrohttpd.
 *
 * The loop thread renders the page (ctl_metrics_tick, once per sweep interval) into a buffer
 * under a mutex; MHD's thread only copies that buffer. No counter is read across threads.
 */
#include "ctl_metrics.h"
#include "ctl_server.h"

#include <aegis/err.h>
#include <aegis/transport_ev.h>

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Command latency buckets in seconds: from a fast LAN round trip to an agent that was offline
 * for hours. */
static const double buckets[12] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600};

/* The page is built into a fixed buffer: its size is bounded by the number of methods. */
#define METRICS_PAGE_MAX (256u * 1024u)

struct ctl_metrics {
    struct MHD_Daemon *d;
    unsigned port;
    char page[METRICS_PAGE_MAX]; /* loop thread only */
    size_t len;
    pthread_mutex_t lock; /* guards shown, shown_len, healthy, health */
    char shown[METRICS_PAGE_MAX];
    size_t shown_len;
    int healthy;
    char health[32];
};

void ctl_metrics_cmd_latency(struct ctl_server *srv, double seconds)
{
    for (size_t i = 0; i < 12; i++)
        if (seconds <= buckets[i])
            srv->cmd_latency_buckets[i]++;
    srv->cmd_latency_count++;
    srv->cmd_latency_sum += seconds;
}

__attribute__((format(printf, 2, 3))) static void put(struct ctl_metrics *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m->page + m->len, sizeof(m->page) - m->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        m->len = (size_t)n < sizeof(m->page) - m->len ? m->len + (size_t)n : sizeof(m->page) - 1;
}

static void render(struct ctl_server *srv, struct ctl_metrics *m)
{
    m->len = 0;
    m->page[0] = '\0';
    put(m,
        "# HELP aegis_connected_agents Authenticated agent connections on this instance.\n"
        "# TYPE aegis_connected_agents gauge\naegis_connected_agents %zu\n",
        srv->agents_here.count);
    if (srv->tev) {
        /* The transport's handshake limits (DESIGN §5, §8): state held and Retries sent. */
        const struct aegis_transport_stats *ts = aegis_endpoint_stats(aegis_ev_endpoint(srv->tev));
        put(m,
            "# HELP aegis_quic_handshakes_in_progress QUIC handshakes holding server state.\n"
            "# TYPE aegis_quic_handshakes_in_progress gauge\n"
            "aegis_quic_handshakes_in_progress %llu\n"
            "# HELP aegis_quic_retries_sent_total QUIC Retry packets sent (address validation).\n"
            "# TYPE aegis_quic_retries_sent_total counter\naegis_quic_retries_sent_total %llu\n",
            (unsigned long long)ts->handshakes_in_progress, (unsigned long long)ts->retries_sent);
    }
    put(m, "# HELP aegis_handshakes_total Handshakes decided by the identity hook.\n"
           "# TYPE aegis_handshakes_total counter\n");
    put(m, "aegis_handshakes_total{outcome=\"agent\"} %llu\n",
        (unsigned long long)srv->hs_ok_agent);
    put(m, "aegis_handshakes_total{outcome=\"operator\"} %llu\n",
        (unsigned long long)srv->hs_ok_operator);
    put(m, "aegis_handshakes_total{outcome=\"enroll\"} %llu\n",
        (unsigned long long)srv->hs_ok_enroll);
    put(m, "aegis_handshakes_total{outcome=\"refused_unknown\"} %llu\n",
        (unsigned long long)srv->hs_refused_unknown);
    put(m, "aegis_handshakes_total{outcome=\"refused_revoked\"} %llu\n",
        (unsigned long long)srv->hs_refused_revoked);
    put(m, "aegis_handshakes_total{outcome=\"refused_other\"} %llu\n",
        (unsigned long long)srv->hs_refused_other);
    put(m, "# HELP aegis_rpcs_total Finished RPCs by method and gRPC status code.\n"
           "# TYPE aegis_rpcs_total counter\n");
    for (size_t i = 0; i < srv->nhandlers; i++)
        for (unsigned c = 0; c <= AEGIS_GRPC_STATUS_MAX; c++) {
            uint64_t v = srv->rpc_counts[i * (AEGIS_GRPC_STATUS_MAX + 1) + c];
            if (v)
                put(m, "aegis_rpcs_total{method=\"%s\",code=\"%u\"} %llu\n", srv->handlers[i].path,
                    c, (unsigned long long)v);
        }
    put(m, "# HELP aegis_command_latency_seconds Command issue to final ack.\n"
           "# TYPE aegis_command_latency_seconds histogram\n");
    for (size_t i = 0; i < 12; i++)
        put(m, "aegis_command_latency_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
            (unsigned long long)srv->cmd_latency_buckets[i]);
    put(m, "aegis_command_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
        (unsigned long long)srv->cmd_latency_count);
    put(m, "aegis_command_latency_seconds_sum %g\naegis_command_latency_seconds_count %llu\n",
        srv->cmd_latency_sum, (unsigned long long)srv->cmd_latency_count);
    struct ctl_db_stats st;
    ctl_db_stats(srv->db, &st);
    put(m,
        "# HELP aegis_db_queue_depth Database requests waiting or running.\n"
        "# TYPE aegis_db_queue_depth gauge\naegis_db_queue_depth %zu\n",
        st.queued + st.in_flight);
    put(m,
        "# HELP aegis_db_up 1 while a database connection is ready.\n"
        "# TYPE aegis_db_up gauge\naegis_db_up %d\n",
        ctl_db_is_up(srv->db) ? 1 : 0);
    /* Per-loop-turn statement batches: items / statements is the batching factor. */
    static const char *const names[] = {"audit",       "disconnect", "auth_load",
                                        "auth_update", "pump",       "ack"};
    const struct ctl_batch *const batches[] = {srv->batch.audit,     srv->batch.disconnect,
                                               srv->batch.auth_load, srv->batch.auth_update,
                                               srv->batch.pump,      srv->batch.ack};
    put(m, "# HELP aegis_db_batch_items_total Requests run through a statement batch.\n"
           "# TYPE aegis_db_batch_items_total counter\n"
           "# HELP aegis_db_batch_statements_total Statements that ran those requests.\n"
           "# TYPE aegis_db_batch_statements_total counter\n"
           "# HELP aegis_db_batch_failed_total Requests whose statement failed.\n"
           "# TYPE aegis_db_batch_failed_total counter\n"
           "# HELP aegis_db_batch_rejected_total Requests refused (batch queue full).\n"
           "# TYPE aegis_db_batch_rejected_total counter\n");
    for (size_t i = 0; i < sizeof(batches) / sizeof(batches[0]); i++) {
        struct ctl_batch_stats bs;
        if (!batches[i])
            continue;
        ctl_batch_stats(batches[i], &bs);
        put(m,
            "aegis_db_batch_items_total{batch=\"%s\"} %llu\n"
            "aegis_db_batch_statements_total{batch=\"%s\"} %llu\n"
            "aegis_db_batch_failed_total{batch=\"%s\"} %llu\n"
            "aegis_db_batch_rejected_total{batch=\"%s\"} %llu\n",
            names[i], (unsigned long long)bs.items, names[i], (unsigned long long)bs.statements,
            names[i], (unsigned long long)bs.failed, names[i], (unsigned long long)bs.rejected);
    }
    if (srv->artcache) {
        struct ctl_artcache_stats as;
        ctl_artcache_stats(srv->artcache, &as);
        put(m,
            "# HELP aegis_artifact_cache_hits_total Artifact chunks served from memory.\n"
            "# TYPE aegis_artifact_cache_hits_total counter\n"
            "aegis_artifact_cache_hits_total %llu\n"
            "# HELP aegis_artifact_cache_misses_total Artifact chunks not in memory.\n"
            "# TYPE aegis_artifact_cache_misses_total counter\n"
            "aegis_artifact_cache_misses_total %llu\n"
            "# HELP aegis_artifact_cache_bytes Artifact chunk bytes held in memory.\n"
            "# TYPE aegis_artifact_cache_bytes gauge\naegis_artifact_cache_bytes %zu\n",
            (unsigned long long)as.hits, (unsigned long long)as.misses, as.bytes);
    }
    put(m,
        "# HELP aegis_telemetry_rows_total Telemetry rows committed (rate() gives rows/s).\n"
        "# TYPE aegis_telemetry_rows_total counter\naegis_telemetry_rows_total %llu\n",
        (unsigned long long)srv->telemetry_rows);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **con_cls)
{
    struct ctl_metrics *m = cls;
    (void)version;
    (void)upload;
    (void)upload_len;
    (void)con_cls;
    unsigned code = MHD_HTTP_OK;
    const char *ctype = "text/plain; version=0.0.4";
    struct MHD_Response *resp = NULL;
    if (strcmp(method, "GET") != 0) {
        static const char msg[] = "method not allowed\n";
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
        resp = MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_PERSISTENT);
    } else if (strcmp(url, "/metrics") == 0) {
        pthread_mutex_lock(&m->lock);
        resp = MHD_create_response_from_buffer(m->shown_len, m->shown, MHD_RESPMEM_MUST_COPY);
        pthread_mutex_unlock(&m->lock);
    } else if (strcmp(url, "/healthz") == 0) {
        char body[40];
        pthread_mutex_lock(&m->lock);
        code = m->healthy ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
        snprintf(body, sizeof(body), "%s\n", m->health);
        pthread_mutex_unlock(&m->lock);
        resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    } else {
        static const char msg[] = "not found: try /metrics or /healthz\n";
        code = MHD_HTTP_NOT_FOUND;
        resp = MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_PERSISTENT);
    }
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    enum MHD_Result r = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    return r;
}

int ctl_metrics_start(struct ctl_server *srv)
{
    if (!srv->cfg.metrics_listen[0])
        return 0;
    struct sockaddr_storage ss;
    socklen_t sl;
    if (aegis_parse_addr(srv->cfg.metrics_listen, &ss, &sl) != 0)
        return -EINVAL;
    struct ctl_metrics *m = aegis_calloc(srv->mem, 1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    srv->metrics = m;
    pthread_mutex_init(&m->lock, NULL);
    ctl_metrics_tick(srv);
    /* One internal thread, select-based: a scrape every few seconds needs nothing more. The
     * page is rendered in that thread from counters the loop thread writes (see header). */
    m->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0), 0, NULL,
        NULL, answer, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)16, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!m->d) {
        pthread_mutex_destroy(&m->lock);
        aegis_free(srv->mem, m);
        srv->metrics = NULL;
        return AEGIS_ERR_UNAVAILABLE;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : 0;
    return 0;
}

void ctl_metrics_tick(struct ctl_server *srv)
{
    struct ctl_metrics *m = srv->metrics;
    if (!m)
        return;
    render(srv, m);
    int ok = ctl_db_is_up(srv->db) && !srv->draining;
    pthread_mutex_lock(&m->lock);
    memcpy(m->shown, m->page, m->len);
    m->shown_len = m->len;
    m->healthy = ok;
    snprintf(m->health, sizeof(m->health), "%s",
             ok              ? "ok"
             : srv->draining ? "draining"
                             : "database unavailable");
    pthread_mutex_unlock(&m->lock);
}

unsigned ctl_metrics_port(const struct ctl_server *srv)
{
    return srv->metrics ? srv->metrics->port : 0;
}

void ctl_metrics_stop(struct ctl_server *srv)
{
    if (!srv->metrics)
        return;
    MHD_stop_daemon(srv->metrics->d);
    pthread_mutex_destroy(&srv->metrics->lock);
    aegis_free(srv->mem, srv->metrics);
    srv->metrics = NULL;
}
