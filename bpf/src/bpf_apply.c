/*
 * Versions: compile a policy into a free slot, switch, roll back; counters.
 */
#include <aegis/err.h>
#include <aegis/tstamp.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "bpf_internal.h"
#include "policy_compile.h"

static int read_u32(struct bpf_map *m, __u32 key, void *val, size_t len)
{
    return bpf_map__lookup_elem(m, &key, sizeof(key), val, len, 0);
}

static int ctl_get(struct aegis_bpf *b, __u32 *active, struct aegis_ctl_rec *ctl)
{
    if (read_u32(b->skel->maps.aegis_active, 0, active, sizeof(*active)) ||
        read_u32(b->skel->maps.aegis_ctl, 0, ctl, sizeof(*ctl)))
        return AEGIS_ERR_BPF;
    return 0;
}

static int ctl_put(struct aegis_bpf *b, const struct aegis_ctl_rec *ctl)
{
    __u32 zero = 0;
    return bpf_map__update_elem(b->skel->maps.aegis_ctl, &zero, sizeof(zero), ctl, sizeof(*ctl), 0)
               ? AEGIS_ERR_BPF
               : 0;
}

/* The one write that switches versions (see aegis_active in the program). */
static int set_active(struct aegis_bpf *b, __u32 slot_plus_one)
{
    __u32 zero = 0;
    return bpf_map__update_elem(b->skel->maps.aegis_active, &zero, sizeof(zero), &slot_plus_one,
                                sizeof(slot_plus_one), 0)
               ? AEGIS_ERR_BPF
               : 0;
}

/* Fill the trie: batched (one syscall per chunk) where the kernel supports
 * it for LPM tries, element by element otherwise. */
static int fill_trie(int fd, const struct aegis_policy_compiled *c)
{
    size_t done = 0;
    while (done < c->n) {
        __u32 count = (__u32)(c->n - done);
        LIBBPF_OPTS(bpf_map_batch_opts, bo);
        int rv = bpf_map_update_batch(fd, &c->keys[done], &c->vals[done], &count, &bo);
        if (rv == 0) {
            done = c->n;
            break;
        }
        /* Unsupported (ENOTSUPP = 524 in the kernel) or partial: redo the
         * rest one by one; updates are idempotent, count is not trusted. */
        (void)count;
        for (; done < c->n; done++) {
            if (bpf_map_update_elem(fd, &c->keys[done], &c->vals[done], BPF_ANY) != 0)
                return -errno;
        }
    }
    return 0;
}

static int zero_counters(struct aegis_bpf *b, __u32 slot, size_t nrules)
{
    if (nrules == 0)
        return 0;
    size_t per = sizeof(struct aegis_rule_count) * (size_t)b->ncpus;
    /* Chunks bound the temporary buffer: 1024 rules x CPUs x 16 bytes. */
    enum { CHUNK = 1024 };
    __u32 *keys = aegis_malloc(b->mem, CHUNK * sizeof(*keys));
    void *zeros = aegis_calloc(b->mem, CHUNK, per);
    int rv = 0;
    if (!keys || !zeros) {
        rv = -ENOMEM;
        goto out;
    }
    int fd = bpf_map__fd(b->skel->maps.aegis_rcount);
    for (size_t base = 0; base < nrules && !rv; base += CHUNK) {
        size_t n = nrules - base < CHUNK ? nrules - base : CHUNK;
        for (size_t i = 0; i < n; i++)
            keys[i] = slot * AEGIS_RULES_HARD_MAX + (__u32)(base + i);
        __u32 count = (__u32)n;
        LIBBPF_OPTS(bpf_map_batch_opts, bo);
        rv = bpf_map_update_batch(fd, keys, zeros, &count, &bo);
    }
out:
    aegis_free(b->mem, keys);
    aegis_free(b->mem, zeros);
    return rv;
}

int aegis_bpf_apply(struct aegis_bpf *bpf, const struct aegis_policy *policy, uint64_t now_ns,
                    char *err, size_t errlen)
{
    if (!bpf || !policy)
        return -EINVAL;
    int rv = aegis_policy_validate(policy, &bpf->limits, err, errlen);
    if (rv)
        return rv;
    uint64_t t0 = aegis_now();
    __u32 active;
    struct aegis_ctl_rec ctl;
    if (ctl_get(bpf, &active, &ctl))
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot read the pinned state");
    __u32 slot = 0;
    while (slot < AEGIS_NSLOTS && (slot + 1 == active || slot + 1 == ctl.previous))
        slot++;
    if (slot == AEGIS_NSLOTS)
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_INTERNAL, "no free slot");
    struct aegis_policy_compiled c;
    rv = aegis_policy_compile(policy, now_ns, bpf->flow_idle_ns, &c);
    if (rv)
        return aegis_bpf__fail(err, errlen, rv, "cannot compile the policy: %s",
                               aegis_strerror(rv));
    /* A fresh trie: the staging slot's old one is released by the kernel
     * once the outer map lets go of it, with no deletes to do. */
    LIBBPF_OPTS(bpf_map_create_opts, mo, .map_flags = BPF_F_NO_PREALLOC);
    int fd = bpf_map_create(BPF_MAP_TYPE_LPM_TRIE, "aegis_rules_v", sizeof(struct aegis_lpm_key),
                            sizeof(struct aegis_lpm_val), AEGIS_LPM_MAX, &mo);
    if (fd < 0) {
        rv = aegis_bpf__fail(err, errlen, fd == -EPERM ? -EPERM : AEGIS_ERR_BPF,
                             "cannot create a rule trie: %s", strerror(-fd));
        goto out;
    }
    if ((rv = fill_trie(fd, &c))) {
        rv = aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot fill the rule trie: %s",
                             strerror(-rv));
        goto out;
    }
    if ((rv = zero_counters(bpf, slot, c.conf.nrules))) {
        rv = aegis_bpf__fail(err, errlen, rv == -ENOMEM ? -ENOMEM : AEGIS_ERR_BPF,
                             "cannot reset rule counters: %s", strerror(-rv));
        goto out;
    }
    if (bpf_map__update_elem(bpf->skel->maps.aegis_rules, &slot, sizeof(slot), &fd, sizeof(fd),
                             0) ||
        bpf_map__update_elem(bpf->skel->maps.aegis_slots, &slot, sizeof(slot), &c.conf,
                             sizeof(c.conf), 0)) {
        rv = aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot install slot %u: %s", slot,
                             strerror(errno));
        goto out;
    }
    uint64_t t1 = aegis_now();
    if ((rv = set_active(bpf, slot + 1))) {
        rv = aegis_bpf__fail(err, errlen, rv, "cannot switch to the new version");
        goto out;
    }
    uint64_t t2 = aegis_now();
    ctl.previous = active;
    ctl.applies++;
    if (ctl_put(bpf, &ctl)) {
        /* Enforced already; only the rollback target is unknown. */
        rv = aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF,
                             "version %llu is enforced but the rollback record was not saved",
                             (unsigned long long)policy->version);
        goto out;
    }
    bpf->last_publish_ns = t1 - t0;
    bpf->last_swap_ns = t2 - t1;
out:
    if (fd >= 0)
        close(fd);
    aegis_policy_compiled_free(policy->mem, &c);
    return rv;
}

int aegis_bpf_rollback(struct aegis_bpf *bpf, char *err, size_t errlen)
{
    __u32 active;
    struct aegis_ctl_rec ctl;
    if (!bpf)
        return -EINVAL;
    if (ctl_get(bpf, &active, &ctl))
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot read the pinned state");
    if (ctl.previous == 0 || ctl.previous > AEGIS_NSLOTS)
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_STATE,
                               "no previous version to roll back to (one rollback per apply)");
    if (set_active(bpf, ctl.previous))
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot switch versions");
    ctl.previous = 0;
    if (ctl_put(bpf, &ctl))
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot save the rollback record");
    return 0;
}

int aegis_bpf_clear(struct aegis_bpf *bpf, char *err, size_t errlen)
{
    __u32 active;
    struct aegis_ctl_rec ctl;
    if (!bpf)
        return -EINVAL;
    if (ctl_get(bpf, &active, &ctl))
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot read the pinned state");
    if (set_active(bpf, 0))
        return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot switch versions");
    if (active) {
        ctl.previous = active;
        if (ctl_put(bpf, &ctl))
            return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot save the rollback record");
    }
    return 0;
}

int aegis_bpf_stats(struct aegis_bpf *bpf, struct aegis_bpf_stats *st)
{
    memset(st, 0, sizeof(*st));
    struct aegis_stat_rec *vals =
        aegis_calloc(bpf->mem, (size_t)bpf->ncpus, sizeof(struct aegis_stat_rec));
    if (!vals)
        return -ENOMEM;
    uint64_t *fields[AEGIS_STAT_N] = {
        [AEGIS_STAT_PACKETS] = st->packets,
        [AEGIS_STAT_PASS] = st->pass,
        [AEGIS_STAT_DROP] = st->drop,
        [AEGIS_STAT_DROP_RULE] = st->drop_rule,
        [AEGIS_STAT_DROP_DEFAULT] = st->drop_default,
        [AEGIS_STAT_DROP_EXPIRED] = st->drop_expired,
        [AEGIS_STAT_DROP_MALFORMED] = st->drop_malformed,
        [AEGIS_STAT_PASS_RULE] = st->pass_rule,
        [AEGIS_STAT_PASS_FLOW] = st->pass_flow,
        [AEGIS_STAT_PASS_EXPIRED] = st->pass_expired,
        [AEGIS_STAT_PASS_CONTROL] = st->pass_control,
        [AEGIS_STAT_FRAGMENTS] = st->fragments,
        [AEGIS_STAT_FLOW_NEW] = st->flows_new,
    };
    int rv = 0;
    for (__u32 d = 0; d < 2; d++) {
        if (bpf_map__lookup_elem(bpf->skel->maps.aegis_stats, &d, sizeof(d), vals,
                                 (size_t)bpf->ncpus * sizeof(*vals), 0)) {
            rv = AEGIS_ERR_BPF;
            break;
        }
        for (__u32 s = 0; s < AEGIS_STAT_N; s++) {
            uint64_t sum = 0;
            for (int c = 0; c < bpf->ncpus; c++)
                sum += vals[c].c[s];
            fields[s][d] = sum;
        }
    }
    aegis_free(bpf->mem, vals);
    return rv;
}

int aegis_bpf_rule_counters(struct aegis_bpf *bpf, uint64_t *packets, uint64_t *bytes, size_t n)
{
    __u32 active;
    struct aegis_ctl_rec ctl;
    if (ctl_get(bpf, &active, &ctl))
        return AEGIS_ERR_BPF;
    if (active == 0 || active > AEGIS_NSLOTS)
        return AEGIS_ERR_STATE;
    __u32 slot = active - 1;
    struct aegis_slot_conf conf;
    if (read_u32(bpf->skel->maps.aegis_slots, slot, &conf, sizeof(conf)))
        return AEGIS_ERR_BPF;
    struct aegis_rule_count *vals =
        aegis_calloc(bpf->mem, (size_t)bpf->ncpus, sizeof(struct aegis_rule_count));
    if (!vals)
        return -ENOMEM;
    int rv = 0;
    for (size_t i = 0; i < n; i++) {
        packets[i] = bytes[i] = 0;
        if (i >= conf.nrules || i >= AEGIS_RULES_HARD_MAX)
            continue;
        __u32 k = slot * AEGIS_RULES_HARD_MAX + (__u32)i;
        if (bpf_map__lookup_elem(bpf->skel->maps.aegis_rcount, &k, sizeof(k), vals,
                                 (size_t)bpf->ncpus * sizeof(*vals), 0)) {
            rv = AEGIS_ERR_BPF;
            break;
        }
        for (int c = 0; c < bpf->ncpus; c++) {
            packets[i] += vals[c].packets;
            bytes[i] += vals[c].bytes;
        }
    }
    aegis_free(bpf->mem, vals);
    return rv;
}

int aegis_bpf_flush_flows(struct aegis_bpf *bpf)
{
    int fd = bpf_map__fd(bpf->skel->maps.aegis_flows);
    struct aegis_flow_key k;
    /* Bounded: the map holds at most AEGIS_FLOW_MAX entries. */
    for (unsigned i = 0; i <= AEGIS_FLOW_MAX; i++) {
        if (bpf_map_get_next_key(fd, NULL, &k) != 0)
            return 0;
        if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT)
            return AEGIS_ERR_BPF;
    }
    return 0;
}
