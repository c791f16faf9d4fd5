/*
 * Internals shared by the loader files (bpf_loader.c, bpf_attach.c,
 * bpf_apply.c). Only these files include libbpf.
 */
#ifndef AEGIS_BPF_INTERNAL_H
#define AEGIS_BPF_INTERNAL_H

#include <aegis/bpf.h>

#include <limits.h>
#include <stdio.h>

#include "aegis_tc.skel.h"
#include "bpf_abi.h"

struct aegis_bpf {
    const struct aegis_mem *mem;
    struct aegis_tc *skel;
    char pin_dir[PATH_MAX - 64];
    struct aegis_policy_limits limits;
    uint64_t flow_idle_ns;
    int prog_fd[2]; /* by aegis_abi_dir: the pinned programs attachments use */
    int ncpus;
    int force_tc;
    uint64_t last_publish_ns;
    uint64_t last_swap_ns;
};

/* bpf_seterr formats into err and returns rv; appends libbpf's last message
 * when there is one. */
int aegis_bpf__fail(char *err, size_t errlen, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Points every attachment of direction dir at prog_fd (program upgrade). */
int aegis_bpf__retarget(struct aegis_bpf *bpf, unsigned dir, int prog_fd, char *err, size_t errlen);

/* Path of the pinned tcx link for ifindex/dir. */
void aegis_bpf__link_path(const struct aegis_bpf *bpf, unsigned ifindex, unsigned dir, char *buf,
                          size_t len);

#endif
