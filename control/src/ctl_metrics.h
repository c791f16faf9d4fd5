/*
 * ctl_metrics: Prometheus text metrics and /healthz on a local HTTP port (libmicrohttpd, used
 * only in ctl_metrics.c). The HTTP server runs in MHD's own thread and serves a page the loop
 * thread renders once per sweep interval, so it never reads live server state.
 */
#ifndef CTL_METRICS_H
#define CTL_METRICS_H

struct ctl_server;

/* ctl_metrics_start listens on srv->cfg.metrics_listen ("127.0.0.1:9464"); "" = off.
 * Errors: -EINVAL (bad address), AEGIS_ERR_UNAVAILABLE (cannot bind). */
int ctl_metrics_start(struct ctl_server *srv);
void ctl_metrics_stop(struct ctl_server *srv);
/* ctl_metrics_tick re-renders the page from the loop thread (called by the sweep timer). */
void ctl_metrics_tick(struct ctl_server *srv);
/* ctl_metrics_port returns the bound port (0 if off). */
unsigned ctl_metrics_port(const struct ctl_server *srv);
/* ctl_metrics_cmd_latency records one command's issue-to-completion time in seconds. */
void ctl_metrics_cmd_latency(struct ctl_server *srv, double seconds);

#endif
