/*
 * Shared by the privileged BPF tests and the bench: a private bpffs in a
 * private mount namespace (nothing leaks into the host's /sys/fs/bpf; the
 * pins, and with them tcx links, vanish when the process exits), frame
 * builders and a bpf_prog_test_run wrapper.
 */
#ifndef AEGIS_BPF_TESTENV_H
#define AEGIS_BPF_TESTENV_H

#include <stddef.h>
#include <stdint.h>

/* Test run return values of the TC programs. */
#define TV_PASS (-1) /* TC_ACT_UNSPEC */
#define TV_DROP 2    /* TC_ACT_SHOT */

/* tenv_setup: exits 77 with the reason if not root; otherwise unshares the
 * mount namespace and mounts a fresh bpffs on /sys/fs/bpf there (private),
 * writing the pin directory into pin_dir. Returns 0 or -1 (message on stderr). */

int tenv_setup(char *pin_dir, size_t len);

enum { F_TCP = 6, F_UDP = 17, F_ICMP = 1, F_ICMP6 = 58, F_GRE = 47 };

struct frame_spec {
    int v6;
    const char *src; /* text address */
    const char *dst;
    uint8_t proto;  /* IP protocol number */
    uint16_t sport; /* or ICMP echo id */
    uint16_t dport;
    uint8_t icmp_type;
    /* IPv4: 0 none, 1 first fragment (MF), 2 later fragment. IPv6: same,
     * with a fragment header. */
    int frag;
    uint32_t frag_id;
    int v6_ext;      /* number of hop-by-hop/dest-opts headers before L4 (0..9) */
    size_t truncate; /* if non-zero, cut the frame to this many bytes */
};

/* frame_build writes an Ethernet frame into buf (>= 256 bytes); returns its length. */
size_t frame_build(const struct frame_spec *s, uint8_t *buf);
size_t frame_arp(uint8_t *buf);

/* prog_run runs prog_fd once (or repeat times) on the frame and returns the
 * program's return value; *pns gets the average duration when non-NULL. */
int prog_run(int prog_fd, const uint8_t *frame, size_t len, uint32_t repeat, uint32_t *pns);

#endif
