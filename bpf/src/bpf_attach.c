/*
 * Attach / detach: tcx links where the kernel has them (6.6+), clsact
 * filters otherwise. Every attachment is recorded in the pinned aegis_attach
 * map, so detach (from any process) removes exactly what was attached.
 */
#include <aegis/err.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <net/if.h>
#include <string.h>
#include <unistd.h>

#include "bpf_internal.h"

/* libbpf 1.1's uapi copy predates tcx (kernel 6.6); the values are ABI. */
#define AEGIS_BPF_TCX_INGRESS 46
#define AEGIS_BPF_TCX_EGRESS 47

/* clsact fallback: our filter's handle and priority. Fixed values make a
 * stale filter from a crashed run findable; "ae" for aegis. */
#define TC_HANDLE 0xae91u
#define TC_PRIORITY 0xaeu

static unsigned abi_dir(unsigned d)
{
    return d == AEGIS_BPF_EGRESS ? AEGIS_ABI_EGRESS : AEGIS_ABI_INGRESS;
}

void aegis_bpf__link_path(const struct aegis_bpf *bpf, unsigned ifindex, unsigned dir, char *buf,
                          size_t len)
{
    snprintf(buf, len, "%s/link_%u_%s", bpf->pin_dir, ifindex,
             dir == AEGIS_ABI_EGRESS ? "egress" : "ingress");
}

static int rec_get(struct aegis_bpf *b, __u32 i, struct aegis_attach_rec *r)
{
    return bpf_map__lookup_elem(b->skel->maps.aegis_attach, &i, sizeof(i), r, sizeof(*r), 0);
}

static int rec_put(struct aegis_bpf *b, __u32 i, const struct aegis_attach_rec *r)
{
    return bpf_map__update_elem(b->skel->maps.aegis_attach, &i, sizeof(i), r, sizeof(*r), 0);
}

static void tc_hook(struct bpf_tc_hook *h, __u32 ifindex, __u32 dir)
{
    memset(h, 0, sizeof(*h));
    h->sz = sizeof(*h);
    h->ifindex = (int)ifindex;
    h->attach_point = dir == AEGIS_ABI_EGRESS ? BPF_TC_EGRESS : BPF_TC_INGRESS;
}

int aegis_bpf__retarget(struct aegis_bpf *bpf, unsigned dir, int prog_fd, char *err, size_t errlen)
{
    for (__u32 i = 0; i < AEGIS_ATTACH_MAX; i++) {
        struct aegis_attach_rec r;
        if (rec_get(bpf, i, &r) || r.kind == AEGIS_ATTACH_FREE || r.dir != dir)
            continue;
        if (r.kind == AEGIS_ATTACH_TCX) {
            char path[PATH_MAX];
            aegis_bpf__link_path(bpf, r.ifindex, r.dir, path, sizeof(path));
            int lfd = bpf_obj_get(path);
            if (lfd < 0)
                continue; /* device gone: the kernel dropped the link */
            int rv = bpf_link_update(lfd, prog_fd, NULL);
            close(lfd);
            if (rv)
                return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF,
                                       "cannot switch tcx link %s to the new program: %s", path,
                                       strerror(-rv));
        } else {
            struct bpf_tc_hook h;
            tc_hook(&h, r.ifindex, r.dir);
            LIBBPF_OPTS(bpf_tc_opts, o, .handle = r.handle, .priority = r.priority,
                        .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE);
            int rv = bpf_tc_attach(&h, &o);
            if (rv && rv != -ENODEV)
                return aegis_bpf__fail(
                    err, errlen, AEGIS_ERR_BPF,
                    "cannot switch tc filter on ifindex %u to the new program: %s", r.ifindex,
                    strerror(-rv));
        }
    }
    return 0;
}

static int attach_one(struct aegis_bpf *b, const char *ifname, __u32 ifindex, __u32 dir, char *err,
                      size_t errlen)
{
    int free_slot = -1;
    for (__u32 i = 0; i < AEGIS_ATTACH_MAX; i++) {
        struct aegis_attach_rec r;
        if (rec_get(b, i, &r))
            return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot read aegis_attach");
        if (r.kind == AEGIS_ATTACH_FREE) {
            if (free_slot < 0)
                free_slot = (int)i;
        } else if (r.ifindex == ifindex && r.dir == dir) {
            return 0; /* already ours */
        }
    }
    if (free_slot < 0)
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_LIMIT,
                               "already attached at %u places; detach some first",
                               AEGIS_ATTACH_MAX);
    struct aegis_attach_rec rec;
    memset(&rec, 0, sizeof(rec));
    rec.ifindex = ifindex;
    rec.dir = dir;
    int prog_fd = b->prog_fd[dir];
    int lfd = -EOPNOTSUPP;
    if (!b->force_tc)
        lfd = bpf_link_create(
            prog_fd, (int)ifindex,
            dir == AEGIS_ABI_EGRESS ? AEGIS_BPF_TCX_EGRESS : AEGIS_BPF_TCX_INGRESS, NULL);
    if (lfd >= 0) {
        char path[PATH_MAX];
        aegis_bpf__link_path(b, ifindex, dir, path, sizeof(path));
        unlink(path); /* a stale pin of a link whose device is gone */
        if (bpf_obj_pin(lfd, path) != 0) {
            int e = errno;
            bpf_link_detach(lfd);
            close(lfd);
            return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot pin tcx link %s: %s", path,
                                   strerror(e));
        }
        close(lfd);
        rec.kind = AEGIS_ATTACH_TCX;
    } else {
        /* Older kernel (no tcx): clsact + direct-action filter. */
        struct bpf_tc_hook h;
        tc_hook(&h, ifindex, dir);
        int rv = bpf_tc_hook_create(&h);
        if (rv && rv != -EEXIST)
            return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF,
                                   "cannot attach to %s: tcx failed (%s) and creating the clsact "
                                   "qdisc failed (%s)",
                                   ifname, strerror(-lfd), strerror(-rv));
        rec.made_qdisc = rv == 0;
        LIBBPF_OPTS(bpf_tc_opts, o, .handle = TC_HANDLE, .priority = TC_PRIORITY,
                    .prog_fd = prog_fd);
        rv = bpf_tc_attach(&h, &o);
        if (rv)
            return aegis_bpf__fail(
                err, errlen, AEGIS_ERR_BPF,
                "cannot attach a tc filter to %s %s (handle 0x%x prio %u taken?): %s", ifname,
                dir == AEGIS_ABI_EGRESS ? "egress" : "ingress", TC_HANDLE, TC_PRIORITY,
                strerror(-rv));
        rec.kind = AEGIS_ATTACH_TC;
        rec.handle = TC_HANDLE;
        rec.priority = TC_PRIORITY;
    }
    if (rec_put(b, (__u32)free_slot, &rec))
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot record the attachment");
    return 0;
}

int aegis_bpf_attach(struct aegis_bpf *bpf, const char *ifname, unsigned dirs, char *err,
                     size_t errlen)
{
    if (!bpf || !ifname || !dirs || (dirs & ~(unsigned)AEGIS_BPF_BOTH))
        return -EINVAL;
    unsigned ifindex = if_nametoindex(ifname);
    if (!ifindex)
        return aegis_bpf__fail(err, errlen, -ENODEV,
                               "interface \"%s\" not found (`ip link` lists interfaces)", ifname);
    for (unsigned d = AEGIS_BPF_EGRESS; d <= AEGIS_BPF_INGRESS; d <<= 1) {
        if (!(dirs & d))
            continue;
        int rv = attach_one(bpf, ifname, ifindex, abi_dir(d), err, errlen);
        if (rv)
            return rv;
    }
    return 0;
}

static int detach_rec(struct aegis_bpf *b, __u32 slot, const struct aegis_attach_rec *r, char *err,
                      size_t errlen)
{
    if (r->kind == AEGIS_ATTACH_TCX) {
        char path[PATH_MAX];
        aegis_bpf__link_path(b, r->ifindex, r->dir, path, sizeof(path));
        int lfd = bpf_obj_get(path);
        if (lfd >= 0) {
            /* Detach explicitly: someone else holding the link fd would
             * otherwise keep it attached after the pin is gone. */
            int rv = bpf_link_detach(lfd);
            close(lfd);
            if (rv && rv != -ENOLINK && rv != -EINVAL)
                return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot detach %s: %s", path,
                                       strerror(-rv));
        }
        if (unlink(path) != 0 && errno != ENOENT)
            return aegis_bpf__fail(err, errlen, -errno, "cannot remove %s: %s", path,
                                   strerror(errno));
    } else if (r->kind == AEGIS_ATTACH_TC) {
        struct bpf_tc_hook h;
        tc_hook(&h, r->ifindex, r->dir);
        LIBBPF_OPTS(bpf_tc_opts, o, .handle = r->handle, .priority = r->priority);
        int rv = bpf_tc_detach(&h, &o);
        if (rv && rv != -ENOENT && rv != -ENODEV && rv != -EINVAL)
            return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF,
                                   "cannot remove our tc filter on ifindex %u: %s", r->ifindex,
                                   strerror(-rv));
    }
    struct aegis_attach_rec none;
    memset(&none, 0, sizeof(none));
    if (rec_put(b, slot, &none))
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot update aegis_attach");
    return 0;
}

int aegis_bpf_detach(struct aegis_bpf *bpf, const char *ifname, unsigned dirs, char *err,
                     size_t errlen)
{
    if (!bpf || !dirs || (dirs & ~(unsigned)AEGIS_BPF_BOTH))
        return -EINVAL;
    unsigned ifindex = 0;
    if (ifname) {
        ifindex = if_nametoindex(ifname);
        if (!ifindex)
            return aegis_bpf__fail(err, errlen, -ENODEV,
                                   "interface \"%s\" not found (`ip link` lists interfaces)",
                                   ifname);
    }
    int found = 0;
    for (__u32 i = 0; i < AEGIS_ATTACH_MAX; i++) {
        struct aegis_attach_rec r;
        if (rec_get(bpf, i, &r))
            return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot read aegis_attach");
        if (r.kind == AEGIS_ATTACH_FREE || (ifname && r.ifindex != ifindex))
            continue;
        unsigned d = r.dir == AEGIS_ABI_EGRESS ? AEGIS_BPF_EGRESS : AEGIS_BPF_INGRESS;
        if (!(dirs & d))
            continue;
        int rv = detach_rec(bpf, i, &r, err, errlen);
        if (rv)
            return rv;
        found = 1;
    }
    if (!found)
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_NOT_FOUND, "nothing of ours attached%s%s",
                               ifname ? " to " : "", ifname ? ifname : "");
    return 0;
}

int aegis_bpf_status(struct aegis_bpf *bpf, struct aegis_bpf_status *st)
{
    memset(st, 0, sizeof(*st));
    __u32 zero = 0, act = 0;
    struct aegis_ctl_rec ctl;
    if (bpf_map__lookup_elem(bpf->skel->maps.aegis_active, &zero, sizeof(zero), &act, sizeof(act),
                             0) ||
        bpf_map__lookup_elem(bpf->skel->maps.aegis_ctl, &zero, sizeof(zero), &ctl, sizeof(ctl), 0))
        return AEGIS_ERR_BPF;
    st->applies = ctl.applies;
    __u32 which[2] = {act, ctl.previous};
    struct aegis_bpf_version *out[2] = {&st->active, &st->previous};
    for (int i = 0; i < 2; i++) {
        if (which[i] == 0 || which[i] > AEGIS_NSLOTS)
            continue;
        __u32 s = which[i] - 1;
        struct aegis_slot_conf c;
        if (bpf_map__lookup_elem(bpf->skel->maps.aegis_slots, &s, sizeof(s), &c, sizeof(c), 0))
            return AEGIS_ERR_BPF;
        out[i]->present = 1;
        out[i]->version = c.version;
        out[i]->service_id = c.service_id;
        out[i]->expires_ns = c.expires_ns;
        out[i]->egress_mode = c.mode[AEGIS_ABI_EGRESS];
        out[i]->ingress_mode = c.mode[AEGIS_ABI_INGRESS];
        out[i]->expiry_action = c.expiry_action;
        out[i]->nrules = c.nrules;
    }
    for (__u32 i = 0; i < AEGIS_ATTACH_MAX && st->nattach < AEGIS_BPF_MAX_ATTACHMENTS; i++) {
        struct aegis_attach_rec r;
        if (rec_get(bpf, i, &r))
            return AEGIS_ERR_BPF;
        if (r.kind == AEGIS_ATTACH_FREE)
            continue;
        struct aegis_bpf_attachment *a = &st->attach[st->nattach++];
        a->ifindex = r.ifindex;
        a->dir = r.dir == AEGIS_ABI_EGRESS ? AEGIS_BPF_EGRESS : AEGIS_BPF_INGRESS;
        a->tcx = r.kind == AEGIS_ATTACH_TCX;
    }
    return 0;
}
