/*
 * libev and UDP sockets for an endpoint: the only file that includes ev.h
 * and touches sockets. See <aegis/transport_ev.h>.
 */
#include <aegis/transport_ev.h>

#include <aegis/err.h>
#include <aegis/tstamp.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Datagrams per recvmmsg/sendmmsg: enough to amortise the syscall, small
 * enough to keep the buffers (BATCH * 1500 bytes, x GSO) modest. */
#define BATCH 32
/* Datagrams per GSO send (kernel maximum is 64; 10 keeps bursts gentle). */
#define GSO_SEGS 10
#define MTU 1500
/* Socket buffers: a burst of a few hundred datagrams without drops. */
#define SOCK_BUF (4 * 1024 * 1024)
/* Flush budget per loop turn, so one busy endpoint cannot starve the loop. */
#define SEND_BUDGET 1024

struct out_slot {
    struct aegis_path path;
    size_t len, segsize;
};

struct aegis_ev {
    struct ev_loop *loop;
    struct aegis_endpoint *ep;
    const struct aegis_mem *mem;
    int fd;
    int gso;
    struct sockaddr_storage local;
    socklen_t local_len;
    ev_io rio, wio;
    ev_timer timer;
    ev_prepare prep;
    /* receive batch */
    uint8_t *rbuf; /* BATCH * MTU */
    struct mmsghdr rmsg[BATCH];
    struct iovec riov[BATCH];
    struct sockaddr_storage rname[BATCH];
    /* send batch (slots of GSO_SEGS * MTU) */
    uint8_t *sbuf;
    struct out_slot slot[BATCH];
    size_t nslot, sent_slot; /* pending slots not yet accepted by the kernel */
    int blocked;
    aegis_tstamp armed; /* expiry the timer is set for (NEVER: stopped) */
};

/* split_host splits "host:port" or "[v6]:port": the host (brackets removed)
 * into host, *pcolon at the ':' before the port. -EINVAL if malformed. */
static int split_host(const char *text, char host[128], const char **pcolon)
{
    const char *colon;
    const char *start = text;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        start = text + 1;
        colon = end + 1;
        if ((size_t)(end - start) >= 128)
            return -EINVAL;
        memcpy(host, start, (size_t)(end - start));
        host[end - start] = 0;
    } else {
        colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= 128)
            return -EINVAL;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = 0;
    }
    *pcolon = colon;
    return 0;
}

int aegis_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *plen)
{
    if (!text || !ss || !plen)
        return -EINVAL;
    char host[128];
    const char *colon;
    memset(ss, 0, sizeof(*ss));
    if (split_host(text, host, &colon) != 0)
        return -EINVAL;
    char *e;
    long port = strtol(colon + 1, &e, 10);
    if (*e || port < 0 || port > 65535 || colon[1] == 0)
        return -EINVAL;
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *plen = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *plen = sizeof(*a6);
        return 0;
    }
    return -EINVAL;
}

/* rearm runs after every loop turn (ev_prepare): the timer is only touched
 * when the endpoint's next expiry moved, which with thousands of idle
 * connections is the exception (one clock read and two libev heap
 * operations saved per turn). */
static void rearm(struct aegis_ev *ev)
{
    aegis_tstamp e = aegis_endpoint_expiry(ev->ep);
    if (e == ev->armed && (e == AEGIS_TSTAMP_NEVER || ev_is_active(&ev->timer)))
        return;
    ev->armed = e;
    ev_timer_stop(ev->loop, &ev->timer);
    if (e == AEGIS_TSTAMP_NEVER)
        return;
    aegis_tstamp now = aegis_now();
    double after = e > now ? (double)(e - now) / 1e9 : 0.0;
    ev_timer_set(&ev->timer, after, 0.0);
    ev_timer_start(ev->loop, &ev->timer);
}

/* Hands pending slots to the kernel; 1 if everything went, 0 if blocked. */
static int push(struct aegis_ev *ev)
{
    while (ev->sent_slot < ev->nslot) {
        struct mmsghdr m[BATCH];
        struct iovec iov[BATCH];
        union {
            char buf[CMSG_SPACE(sizeof(uint16_t))];
            struct cmsghdr align;
        } ctl[BATCH];
        size_t n = 0;
        for (size_t i = ev->sent_slot; i < ev->nslot; i++, n++) {
            struct out_slot *s = &ev->slot[i];
            iov[n].iov_base = ev->sbuf + i * GSO_SEGS * MTU;
            iov[n].iov_len = s->len;
            memset(&m[n], 0, sizeof(m[n]));
            m[n].msg_hdr.msg_name = &s->path.remote;
            m[n].msg_hdr.msg_namelen = s->path.remote_len;
            m[n].msg_hdr.msg_iov = &iov[n];
            m[n].msg_hdr.msg_iovlen = 1;
            if (ev->gso && s->len > s->segsize) {
                memset(&ctl[n], 0, sizeof(ctl[n]));
                m[n].msg_hdr.msg_control = ctl[n].buf;
                m[n].msg_hdr.msg_controllen = sizeof(ctl[n].buf);
                struct cmsghdr *cm = CMSG_FIRSTHDR(&m[n].msg_hdr);
                cm->cmsg_level = SOL_UDP;
                cm->cmsg_type = UDP_SEGMENT;
                cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t seg = (uint16_t)s->segsize;
                memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
            }
        }
        int r = sendmmsg(ev->fd, m, (unsigned)n, 0);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
                return 0;
            if ((errno == EIO || errno == EINVAL) && ev->gso) {
                /* the device refused GSO: fall back for good (the
                 * datagrams of this slot are lost; QUIC retransmits) */
                ev->gso = 0;
            }
            ev->sent_slot++; /* drop the datagram; QUIC recovers */
            continue;
        }
        ev->sent_slot += (size_t)r;
    }
    ev->nslot = ev->sent_slot = 0;
    return 1;
}

static void flush(struct aegis_ev *ev)
{
    if (ev->blocked)
        return;
    aegis_tstamp now = aegis_now();
    for (int budget = 0; budget < SEND_BUDGET; budget++) {
        if (ev->nslot == BATCH && !push(ev)) {
            ev->blocked = 1;
            ev_io_start(ev->loop, &ev->wio);
            return;
        }
        struct out_slot *s = &ev->slot[ev->nslot];
        size_t seg = 0;
        long n = aegis_endpoint_send(ev->ep, ev->sbuf + ev->nslot * GSO_SEGS * MTU, GSO_SEGS * MTU,
                                     ev->gso ? GSO_SEGS : 1, &s->path, &seg, now);
        if (n <= 0)
            break;
        s->len = (size_t)n;
        s->segsize = seg;
        ev->nslot++;
    }
    if (ev->nslot && !push(ev)) {
        ev->blocked = 1;
        ev_io_start(ev->loop, &ev->wio);
    }
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct aegis_ev *ev = w->data;
    /* Bounded: at most a few batches per wake-up, then let others run. */
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < BATCH; i++) {
            ev->riov[i].iov_base = ev->rbuf + (size_t)i * MTU;
            ev->riov[i].iov_len = MTU;
            memset(&ev->rmsg[i].msg_hdr, 0, sizeof(ev->rmsg[i].msg_hdr));
            ev->rmsg[i].msg_hdr.msg_name = &ev->rname[i];
            ev->rmsg[i].msg_hdr.msg_namelen = sizeof(ev->rname[i]);
            ev->rmsg[i].msg_hdr.msg_iov = &ev->riov[i];
            ev->rmsg[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(ev->fd, ev->rmsg, BATCH, 0, NULL);
        if (n <= 0)
            break;
        aegis_tstamp now = aegis_now();
        for (int i = 0; i < n; i++) {
            struct aegis_path path;
            path.local = ev->local;
            path.local_len = ev->local_len;
            path.remote = ev->rname[i];
            path.remote_len = ev->rmsg[i].msg_hdr.msg_namelen;
            aegis_endpoint_recv(ev->ep, &path, ev->rbuf + (size_t)i * MTU, ev->rmsg[i].msg_len,
                                now);
        }
        if (n < BATCH)
            break;
        /* Send what this batch produced before reading the next: the endpoint's ring of
         * stateless answers holds more than a batch, not eight. */
        flush(ev);
    }
    flush(ev);
    rearm(ev);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct aegis_ev *ev = w->data;
    if (!push(ev))
        return;
    ev->blocked = 0;
    ev_io_stop(loop, &ev->wio);
    flush(ev);
    rearm(ev);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct aegis_ev *ev = w->data;
    aegis_endpoint_handle_expiry(ev->ep, aegis_now());
    flush(ev);
    rearm(ev);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct aegis_ev *ev = w->data;
    flush(ev);
    rearm(ev);
}

int aegis_ev_new(struct ev_loop *loop, const struct aegis_endpoint_config *cfg,
                 const char *bind_addr, struct aegis_ev **pev)
{
    if (!loop || !cfg || !pev)
        return -EINVAL;
    struct sockaddr_storage ss;
    socklen_t sl;
    if (aegis_parse_addr(bind_addr ? bind_addr : "0.0.0.0:0", &ss, &sl) != 0)
        return -EINVAL;
    const struct aegis_mem *mem = cfg->mem ? cfg->mem : aegis_mem_default();
    struct aegis_ev *ev = aegis_calloc(mem, 1, sizeof(*ev));
    if (!ev)
        return -ENOMEM;
    ev->mem = mem;
    ev->loop = loop;
    ev->fd = -1;
    ev->armed = AEGIS_TSTAMP_NEVER;
    int rv = aegis_endpoint_new(cfg, &ev->ep);
    if (rv != 0)
        goto fail;
    ev->rbuf = aegis_malloc(mem, (size_t)BATCH * MTU);
    ev->sbuf = aegis_malloc(mem, (size_t)BATCH * GSO_SEGS * MTU);
    if (!ev->rbuf || !ev->sbuf) {
        rv = -ENOMEM;
        goto fail;
    }
    ev->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ev->fd < 0) {
        rv = -errno;
        goto fail;
    }
    int one = 1, bufsz = SOCK_BUF;
    setsockopt(ev->fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
    setsockopt(ev->fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz));
    if (ss.ss_family == AF_INET6)
        setsockopt(ev->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(ev->fd, (struct sockaddr *)&ss, sl) != 0) {
        rv = -errno;
        goto fail;
    }
    ev->local_len = sizeof(ev->local);
    if (getsockname(ev->fd, (struct sockaddr *)&ev->local, &ev->local_len) != 0) {
        rv = -errno;
        goto fail;
    }
    /* GSO if the kernel knows UDP_SEGMENT (Linux >= 4.18). */
    int seg = 0;
    socklen_t segl = sizeof(seg);
    ev->gso = getsockopt(ev->fd, SOL_UDP, UDP_SEGMENT, &seg, &segl) == 0;
    ev_io_init(&ev->rio, on_read, ev->fd, EV_READ);
    ev_io_init(&ev->wio, on_write, ev->fd, EV_WRITE);
    ev_timer_init(&ev->timer, on_timer, 0.0, 0.0);
    ev_prepare_init(&ev->prep, on_prepare);
    ev->rio.data = ev->wio.data = ev->timer.data = ev->prep.data = ev;
    ev_io_start(loop, &ev->rio);
    ev_prepare_start(loop, &ev->prep);
    *pev = ev;
    return 0;
fail:
    aegis_ev_del(ev);
    return rv;
}

void aegis_ev_del(struct aegis_ev *ev)
{
    if (!ev)
        return;
    if (ev->fd >= 0) {
        ev_io_stop(ev->loop, &ev->rio);
        ev_io_stop(ev->loop, &ev->wio);
        ev_timer_stop(ev->loop, &ev->timer);
        ev_prepare_stop(ev->loop, &ev->prep);
        close(ev->fd);
    }
    aegis_endpoint_del(ev->ep);
    aegis_free(ev->mem, ev->rbuf);
    aegis_free(ev->mem, ev->sbuf);
    aegis_free(ev->mem, ev);
}

struct aegis_endpoint *aegis_ev_endpoint(const struct aegis_ev *ev)
{
    return ev->ep;
}

unsigned aegis_ev_port(const struct aegis_ev *ev)
{
    if (ev->local.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&ev->local)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&ev->local)->sin_port);
}

int aegis_ev_gso(const struct aegis_ev *ev)
{
    return ev->gso;
}

int aegis_ev_connect(struct aegis_ev *ev, const char *target, const char *server_name,
                     struct aegis_conn **pconn)
{
    if (!ev || !target || !pconn)
        return -EINVAL;
    struct aegis_path path;
    memset(&path, 0, sizeof(path));
    if (aegis_parse_addr(target, &path.remote, &path.remote_len) != 0)
        return -EINVAL;
    path.local = ev->local;
    path.local_len = ev->local_len;
    char host[128];
    const char *colon;
    if (!server_name) /* cannot fail: aegis_parse_addr accepted target */
        server_name = split_host(target, host, &colon) == 0 ? host : "localhost";
    int rv = aegis_endpoint_connect(ev->ep, &path, server_name, aegis_now(), pconn);
    if (rv == 0) {
        flush(ev);
        rearm(ev);
    }
    return rv;
}
