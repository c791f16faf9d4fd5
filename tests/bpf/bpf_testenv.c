#include "bpf_testenv.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

int tenv_setup(char *pin_dir, size_t len)
{
    if (geteuid() != 0) {
        printf("SKIP: needs root (loads BPF programs); CI runs this as root\n");
        exit(77);
    }
    if (unshare(CLONE_NEWNS) != 0) {
        if (errno == EPERM) {
            printf("SKIP: root but no CAP_SYS_ADMIN for a private mount namespace (container?)\n");
            exit(77);
        }
        fprintf(stderr, "unshare(CLONE_NEWNS): %s\n", strerror(errno));
        return -1;
    }
    /* In a chroot "/" is not a mount point (EINVAL): then keep the bpffs
     * from propagating by making /sys, where it goes, private instead. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 &&
        (errno != EINVAL || mount(NULL, "/sys", NULL, MS_REC | MS_PRIVATE, NULL) != 0)) {
        fprintf(stderr, "make / (or, in a chroot, /sys) private: %s\n", strerror(errno));
        return -1;
    }
    /* A fresh bpffs over /sys/fs/bpf, visible only in this namespace. */
    if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0) {
        fprintf(stderr, "mount bpffs on /sys/fs/bpf (private namespace): %s\n", strerror(errno));
        return -1;
    }
    snprintf(pin_dir, len, "/sys/fs/bpf/aegis-test");
    return 0;
}

static uint16_t csum_fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

size_t frame_arp(uint8_t *buf)
{
    memset(buf, 0, 60);
    memset(buf, 0xff, 6);
    buf[6] = 0x02;
    buf[12] = 0x08;
    buf[13] = 0x06;
    buf[14] = 0x00;
    buf[15] = 0x01;
    buf[16] = 0x08;
    return 60;
}

size_t frame_build(const struct frame_spec *s, uint8_t *buf)
{
    memset(buf, 0, 256);
    uint8_t *p = buf;
    p[0] = 0x02;
    p[6] = 0x02;
    p[11] = 1;
    p[12] = s->v6 ? 0x86 : 0x08;
    p[13] = s->v6 ? 0xdd : 0x00;
    p += 14;
    uint8_t *ip = p;
    uint8_t *nh_field;
    if (!s->v6) {
        ip[0] = 0x45;
        ip[8] = 64;
        ip[9] = s->proto;
        inet_pton(AF_INET, s->src, ip + 12);
        inet_pton(AF_INET, s->dst, ip + 16);
        uint16_t id = (uint16_t)s->frag_id;
        ip[4] = (uint8_t)(id >> 8);
        ip[5] = (uint8_t)id;
        if (s->frag == 1) {
            ip[6] = 0x20; /* MF, offset 0 */
        } else if (s->frag == 2) {
            ip[6] = 0x00;
            ip[7] = 185; /* offset 1480 */
        }
        p += 20;
        nh_field = NULL;
    } else {
        ip[0] = 0x60;
        ip[7] = 64;
        inet_pton(AF_INET6, s->src, ip + 8);
        inet_pton(AF_INET6, s->dst, ip + 24);
        nh_field = ip + 6;
        p += 40;
        for (int i = 0; i < s->v6_ext; i++) {
            *nh_field = i % 2 ? 60 : 0; /* destination options / hop-by-hop */
            nh_field = p;
            p[1] = 0; /* 8 bytes */
            p[2] = 1; /* PadN */
            p[3] = 4;
            p += 8;
        }
        if (s->frag) {
            *nh_field = 44;
            nh_field = p;
            uint16_t off = s->frag == 2 ? (uint16_t)(1448 / 8) << 3 : 1; /* M flag on first */
            p[2] = (uint8_t)(off >> 8);
            p[3] = (uint8_t)off;
            p[4] = (uint8_t)(s->frag_id >> 24);
            p[5] = (uint8_t)(s->frag_id >> 16);
            p[6] = (uint8_t)(s->frag_id >> 8);
            p[7] = (uint8_t)s->frag_id;
            p += 8;
        }
        *nh_field = s->proto;
    }
    uint8_t *l4 = p;
    if (s->frag != 2) {
        if (s->proto == F_TCP) {
            l4[0] = (uint8_t)(s->sport >> 8);
            l4[1] = (uint8_t)s->sport;
            l4[2] = (uint8_t)(s->dport >> 8);
            l4[3] = (uint8_t)s->dport;
            l4[12] = 0x50;
            l4[13] = 0x02; /* SYN */
            p += 20;
        } else if (s->proto == F_UDP) {
            l4[0] = (uint8_t)(s->sport >> 8);
            l4[1] = (uint8_t)s->sport;
            l4[2] = (uint8_t)(s->dport >> 8);
            l4[3] = (uint8_t)s->dport;
            l4[5] = 8 + 16;
            p += 8 + 16;
        } else if (s->proto == F_ICMP || s->proto == F_ICMP6) {
            l4[0] = s->icmp_type;
            l4[4] = (uint8_t)(s->sport >> 8);
            l4[5] = (uint8_t)s->sport;
            p += 8 + 24;
        } else {
            p += 16;
        }
    } else {
        p += 32; /* payload of a later fragment */
    }
    size_t len = (size_t)(p - buf);
    if (!s->v6) {
        uint16_t tot = (uint16_t)(len - 14);
        ip[2] = (uint8_t)(tot >> 8);
        ip[3] = (uint8_t)tot;
        uint32_t sum = 0;
        for (int i = 0; i < 20; i += 2)
            sum += (uint32_t)(ip[i] << 8 | ip[i + 1]);
        uint16_t c = csum_fold(sum);
        ip[10] = (uint8_t)(c >> 8);
        ip[11] = (uint8_t)c;
    } else {
        uint16_t pl = (uint16_t)(len - 14 - 40);
        ip[4] = (uint8_t)(pl >> 8);
        ip[5] = (uint8_t)pl;
    }
    if (len < 60)
        len = 60;
    if (s->truncate && s->truncate < len)
        len = s->truncate;
    return len;
}

int prog_run(int prog_fd, const uint8_t *frame, size_t len, uint32_t repeat, uint32_t *pns)
{
    uint8_t out[512];
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame, .data_size_in = (uint32_t)len,
                .data_out = out, .data_size_out = sizeof(out), .repeat = repeat ? (int)repeat : 1);
    int rv = bpf_prog_test_run_opts(prog_fd, &o);
    if (rv) {
        fprintf(stderr, "bpf_prog_test_run_opts: %s\n", strerror(-rv));
        return -1000;
    }
    if (pns)
        *pns = o.duration;
    return (int)o.retval;
}
