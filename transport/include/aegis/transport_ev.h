/*
 * libev glue: one aegis_endpoint on one UDP socket driven by a libev loop.
 *
 * Reads are batched with recvmmsg, writes with sendmmsg and, where the
 * kernel supports it, UDP GSO (one sendmsg carries up to 10 datagrams of a
 * connection); buffers are allocated once per socket, never per packet.
 * There is one flush point per loop iteration (an ev_prepare watcher):
 * everything the application did since (calls started, messages sent,
 * resumes) goes out then, and the timer is re-armed to the endpoint's next
 * expiry. API calls on the endpoint's objects therefore need no explicit
 * flush, from callbacks or from the application's own watchers.
 *
 * Lifecycle: aegis_ev_new ... aegis_ev_del. The endpoint inside is owned by
 * the aegis_ev; connections and calls follow <aegis/transport.h>.
 */
#ifndef AEGIS_TRANSPORT_EV_H
#define AEGIS_TRANSPORT_EV_H

#include <aegis/transport.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;
struct aegis_ev;

/*
 * aegis_ev_new creates the endpoint from cfg (see aegis_endpoint_new; cfg
 * is copied) and binds a UDP socket to `bind_addr` ("127.0.0.1:4433",
 * "[::1]:0"; port 0 = ephemeral; NULL = "0.0.0.0:0" for clients). Borrows
 * loop for its lifetime. Errors: those of aegis_endpoint_new, -EINVAL (bad
 * address text), -errno from socket/bind. Not callable from callbacks.
 */
int aegis_ev_new(struct ev_loop *loop, const struct aegis_endpoint_config *cfg,
                 const char *bind_addr, struct aegis_ev **pev);

/* aegis_ev_del stops the watchers, closes the socket and deletes the
 * endpoint (no callbacks). NULL is fine. Not callable from callbacks. */
void aegis_ev_del(struct aegis_ev *ev);

/* aegis_ev_endpoint returns the endpoint (borrowed). */
struct aegis_endpoint *aegis_ev_endpoint(const struct aegis_ev *ev);

/* aegis_ev_port returns the bound UDP port (host order). */
unsigned aegis_ev_port(const struct aegis_ev *ev);

/*
 * aegis_ev_connect (client endpoints) resolves "host:port" numerically
 * (IPv4 or [IPv6]) and connects; server_name goes into SNI and :authority
 * (NULL = host). Errors: -EINVAL, plus those of aegis_endpoint_connect.
 */
int aegis_ev_connect(struct aegis_ev *ev, const char *target, const char *server_name,
                     struct aegis_conn **pconn);

/* aegis_ev_gso returns 1 if UDP GSO is in use on the socket. */
int aegis_ev_gso(const struct aegis_ev *ev);

/* aegis_parse_addr parses "1.2.3.4:5" / "[::1]:5" into ss. -EINVAL else. */
int aegis_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *plen);

#ifdef __cplusplus
}
#endif
#endif
