/*
 * aegis-bpf-probe: bounded traffic probes for the netns end-to-end tests
 * (no netcat or ping needed). Every wait has a deadline.
 *
 *   serve SECONDS PORT...        TCP and UDP echo on each PORT (v4 and v6),
 *                                exits after SECONDS at the latest
 *   tcp HOST PORT TIMEOUT_MS     connect, send, expect the echo; exit 0/1
 *   udp HOST PORT TIMEOUT_MS     one datagram, expect the echo; exit 0/1
 *   ping HOST TIMEOUT_MS         ICMP/ICMPv6 echo (raw socket); exit 0/1
 *   udpstream HOST PORT STOPFILE MAX_SECONDS
 *                                request/response datagrams back to back
 *                                (500 ms timeout each) until STOPFILE exists;
 *                                prints "sent=N lost=M", exit 0 if M == 0
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 16

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int resolve(const char *host, const char *port, int type, struct sockaddr_storage *ss,
                   socklen_t *len)
{
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = type;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int wait_fd(int fd, short ev, long long deadline)
{
    long long left = deadline - now_ms();
    if (left <= 0)
        return 0;
    struct pollfd p = {.fd = fd, .events = ev};
    return poll(&p, 1, (int)left) == 1;
}

static int do_tcp(const char *host, const char *port, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(host, port, SOCK_STREAM, &ss, &len))
        return 2;
    long long deadline = now_ms() + timeout_ms;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 2;
    int rv = connect(fd, (struct sockaddr *)&ss, len);
    if (rv != 0 && errno != EINPROGRESS)
        goto fail;
    if (!wait_fd(fd, POLLOUT, deadline))
        goto fail;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr)
        goto fail;
    if (send(fd, "probe", 5, MSG_NOSIGNAL) != 5)
        goto fail;
    char buf[16];
    if (!wait_fd(fd, POLLIN, deadline) || recv(fd, buf, sizeof(buf), 0) != 5)
        goto fail;
    close(fd);
    return 0;
fail:
    close(fd);
    return 1;
}

static int udp_once(int fd, const struct sockaddr_storage *ss, socklen_t len, uint32_t seq,
                    int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    if (sendto(fd, &seq, sizeof(seq), 0, (const struct sockaddr *)ss, len) != sizeof(seq))
        return 1;
    while (wait_fd(fd, POLLIN, deadline)) {
        uint32_t got;
        if (recv(fd, &got, sizeof(got), 0) == sizeof(got) && got == seq)
            return 0;
    }
    return 1;
}

static int do_udp(const char *host, const char *port, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(host, port, SOCK_DGRAM, &ss, &len))
        return 2;
    int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
    if (fd < 0)
        return 2;
    int rv = udp_once(fd, &ss, len, (uint32_t)getpid(), timeout_ms);
    close(fd);
    return rv;
}

static int do_udpstream(const char *host, const char *port, const char *stopfile, int max_s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(host, port, SOCK_DGRAM, &ss, &len))
        return 2;
    int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
    if (fd < 0)
        return 2;
    long long end = now_ms() + (long long)max_s * 1000;
    unsigned long sent = 0, lost = 0;
    while (now_ms() < end && access(stopfile, F_OK) != 0) {
        sent++;
        if (udp_once(fd, &ss, len, (uint32_t)sent, 500))
            lost++;
    }
    close(fd);
    printf("sent=%lu lost=%lu\n", sent, lost);
    return lost == 0 && sent > 0 ? 0 : 1;
}

static uint16_t csum(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)(p[n - 1] << 8);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return htons((uint16_t)~s);
}

static int do_ping(const char *host, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(host, NULL, SOCK_RAW, &ss, &len))
        return 2;
    int v6 = ss.ss_family == AF_INET6;
    int fd = socket(ss.ss_family, SOCK_RAW, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
    if (fd < 0)
        return 2;
    uint16_t id = (uint16_t)getpid();
    uint8_t pkt[16] = {0};
    pkt[0] = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;
    memcpy(pkt + 4, &id, 2);
    pkt[7] = 1;
    if (!v6) {
        uint16_t c = csum(pkt, sizeof(pkt));
        memcpy(pkt + 2, &c, 2);
    } /* the kernel fills the ICMPv6 checksum on raw ICMPv6 sockets */
    long long deadline = now_ms() + timeout_ms;
    if (sendto(fd, pkt, sizeof(pkt), 0, (struct sockaddr *)&ss, len) != sizeof(pkt)) {
        close(fd);
        return 1;
    }
    while (wait_fd(fd, POLLIN, deadline)) {
        uint8_t buf[256];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        const uint8_t *icmp = buf;
        if (!v6) {
            if (n < 20)
                continue;
            size_t ihl = (size_t)(buf[0] & 0xf) * 4;
            if ((size_t)n < ihl + 8)
                continue;
            icmp = buf + ihl;
            if (icmp[0] == ICMP_ECHOREPLY && memcmp(icmp + 4, &id, 2) == 0)
                break;
        } else if (n >= 8 && icmp[0] == ICMP6_ECHO_REPLY && memcmp(icmp + 4, &id, 2) == 0) {
            break;
        }
    }
    int ok = now_ms() < deadline;
    close(fd);
    return ok ? 0 : 1;
}

static int do_serve(int seconds, int nports, char **ports)
{
    int fds[2 * MAX_PORTS];
    int types[2 * MAX_PORTS];
    int n = 0;
    for (int i = 0; i < nports && i < MAX_PORTS; i++) {
        for (int t = 0; t < 2; t++) {
            int type = t ? SOCK_DGRAM : SOCK_STREAM;
            int fd = socket(AF_INET6, type, 0);
            if (fd < 0)
                return 2;
            int zero = 0, one = 1;
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                                     .sin6_addr = in6addr_any,
                                     .sin6_port = htons((uint16_t)atoi(ports[i]))};
            if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
                (type == SOCK_STREAM && listen(fd, 64) != 0)) {
                perror("bind/listen");
                return 2;
            }
            fds[n] = fd;
            types[n] = type;
            n++;
        }
    }
    printf("ready\n");
    fflush(stdout);
    long long end = now_ms() + (long long)seconds * 1000;
    struct pollfd p[2 * MAX_PORTS];
    while (now_ms() < end) {
        for (int i = 0; i < n; i++) {
            p[i].fd = fds[i];
            p[i].events = POLLIN;
            p[i].revents = 0;
        }
        if (poll(p, (nfds_t)n, 200) <= 0)
            continue;
        for (int i = 0; i < n; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            char buf[512];
            if (types[i] == SOCK_DGRAM) {
                struct sockaddr_storage from;
                socklen_t fl = sizeof(from);
                ssize_t r = recvfrom(fds[i], buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
                if (r > 0)
                    sendto(fds[i], buf, (size_t)r, 0, (struct sockaddr *)&from, fl);
            } else {
                int c = accept(fds[i], NULL, NULL);
                if (c < 0)
                    continue;
                struct pollfd cp = {.fd = c, .events = POLLIN};
                if (poll(&cp, 1, 1000) == 1) {
                    ssize_t r = recv(c, buf, sizeof(buf), 0);
                    if (r > 0)
                        send(c, buf, (size_t)r, MSG_NOSIGNAL);
                }
                close(c);
            }
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "serve") == 0)
        return do_serve(atoi(argv[2]), argc - 3, argv + 3);
    if (argc == 5 && strcmp(argv[1], "tcp") == 0)
        return do_tcp(argv[2], argv[3], atoi(argv[4]));
    if (argc == 5 && strcmp(argv[1], "udp") == 0)
        return do_udp(argv[2], argv[3], atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "ping") == 0)
        return do_ping(argv[2], atoi(argv[3]));
    if (argc == 6 && strcmp(argv[1], "udpstream") == 0)
        return do_udpstream(argv[2], argv[3], argv[4], atoi(argv[5]));
    fprintf(stderr, "usage: see the comment at the top of bpf_probe.c\n");
    return 2;
}
