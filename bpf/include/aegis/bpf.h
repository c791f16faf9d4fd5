/*
 * libaegis_bpf: loads the Aegis TC programs, attaches them, and enforces
 * policies (aegis/policy.h) by filling BPF maps. The agent's enforcement arm
 * (DESIGN §7); the only Aegis code that talks to libbpf.
 *
 * State lives in a bpffs directory (default /sys/fs/bpf/aegis): maps,
 * programs and tcx links are pinned there, so the enforced policy survives an
 * agent restart or a program upgrade, and a second process (aegis-bpf) sees the
 * same state. Closing a handle never changes enforcement.
 *
 * Versions: a policy is compiled into a fresh LPM trie in a free slot, its
 * counters are zeroed, then one 4-byte map write switches the active slot. A
 * packet reads the active slot once, so it sees the old or the new version,
 * never a mix. The version replaced is kept for aegis_bpf_rollback.
 *
 * All functions need root or CAP_BPF + CAP_NET_ADMIN. None is safe to call
 * concurrently on one handle; two processes applying at once race (last one
 * wins, both versions are complete). Errors carry a message in err (may be
 * NULL) that says what failed and what to do.
 */
#ifndef AEGIS_BPF_H
#define AEGIS_BPF_H

#include <stddef.h>
#include <stdint.h>

#include <aegis/mem.h>
#include <aegis/policy.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AEGIS_BPF_DEFAULT_PIN_DIR "/sys/fs/bpf/aegis"
/* A reply passes in allow-list mode if its flow saw traffic this recently.
 * Two minutes covers TCP keep-alive-less idle periods of typical RPCs and
 * the UDP request/response pattern; longer idle flows must be re-opened. */
#define AEGIS_BPF_DEFAULT_FLOW_IDLE_S 120u

enum aegis_bpf_dir {
    AEGIS_BPF_EGRESS = 1,
    AEGIS_BPF_INGRESS = 2,
    AEGIS_BPF_BOTH = 3,
};

struct aegis_bpf_config {
    const char *pin_dir; /* NULL = AEGIS_BPF_DEFAULT_PIN_DIR; must be on bpffs */
    struct aegis_policy_limits limits;
    uint64_t flow_idle_ns;
    /* 1: load fresh programs and switch every existing attachment to them
     * (upgrade). 0: keep programs already pinned, load only if none are. */
    int upgrade;
    /* 1: attach with clsact filters even where tcx exists (tests of the
     * fallback path, or to coexist with tools that only know tc). */
    int force_tc;
    const struct aegis_mem *mem;
};

/* aegis_bpf_config_default fills defaults (pin dir, policy limits, flow idle). */
void aegis_bpf_config_default(struct aegis_bpf_config *config);

struct aegis_bpf;

/*
 * aegis_bpf_open loads the programs (reusing maps pinned in the pin directory,
 * creating and pinning them the first time) and returns a handle. It checks
 * privileges first (-EPERM: "needs root or CAP_BPF+CAP_NET_ADMIN") and that
 * the pin directory's parent is a mounted bpffs (-ENOENT with the mount
 * command). Other errors: -ENOMEM, AEGIS_ERR_BPF (load failed or pinned maps
 * from an incompatible build: the message says to purge them).
 */
int aegis_bpf_open(const struct aegis_bpf_config *config, struct aegis_bpf **pbpf, char *err,
                   size_t errlen);

/* aegis_bpf_close releases the handle; pinned state and attachments stay. */
void aegis_bpf_close(struct aegis_bpf *bpf);

/*
 * aegis_bpf_attach attaches to interface ifname in dirs (enum aegis_bpf_dir):
 * a tcx link (pinned) where the kernel has tcx, else a clsact filter.
 * Idempotent per interface and direction. Errors: -ENODEV (no such
 * interface), AEGIS_ERR_LIMIT (attachment table full), AEGIS_ERR_BPF.
 */
int aegis_bpf_attach(struct aegis_bpf *bpf, const char *ifname, unsigned dirs, char *err,
                     size_t errlen);

/*
 * aegis_bpf_detach removes exactly what aegis_bpf_attach made on ifname (NULL
 * = every interface) in dirs. A clsact qdisc the loader created is left in
 * place (empty, it does nothing) because other filters may have joined it.
 * Errors: AEGIS_ERR_NOT_FOUND (nothing of ours attached there), AEGIS_ERR_BPF.
 */
int aegis_bpf_detach(struct aegis_bpf *bpf, const char *ifname, unsigned dirs, char *err,
                     size_t errlen);

/*
 * aegis_bpf_apply validates policy with the configured limits, compiles it
 * into a free slot and switches to it; now_ns (CLOCK_MONOTONIC) starts the
 * snapshot and per-rule TTLs. Nothing changes on error. The policy is only
 * read. Errors: those of aegis_policy_validate, -ENOMEM, AEGIS_ERR_BPF.
 */
int aegis_bpf_apply(struct aegis_bpf *bpf, const struct aegis_policy *policy, uint64_t now_ns,
                    char *err, size_t errlen);

/* aegis_bpf_rollback switches back to the version the last apply replaced.
 * Errors: AEGIS_ERR_STATE (nothing to roll back to), AEGIS_ERR_BPF. */
int aegis_bpf_rollback(struct aegis_bpf *bpf, char *err, size_t errlen);

/* aegis_bpf_clear stops enforcing (no active version; everything passes);
 * the current version becomes the rollback target. */
int aegis_bpf_clear(struct aegis_bpf *bpf, char *err, size_t errlen);

struct aegis_bpf_version {
    int present;
    uint64_t version;
    uint64_t service_id;
    uint64_t expires_ns; /* CLOCK_MONOTONIC */
    uint32_t egress_mode;
    uint32_t ingress_mode;
    uint32_t expiry_action;
    uint32_t nrules;
};

struct aegis_bpf_attachment {
    uint32_t ifindex;
    unsigned dir; /* AEGIS_BPF_EGRESS or AEGIS_BPF_INGRESS */
    int tcx;      /* 1 tcx link, 0 clsact filter */
};

#define AEGIS_BPF_MAX_ATTACHMENTS 32

struct aegis_bpf_status {
    struct aegis_bpf_version active;
    struct aegis_bpf_version previous;
    uint64_t applies;
    size_t nattach;
    struct aegis_bpf_attachment attach[AEGIS_BPF_MAX_ATTACHMENTS];
};

/* aegis_bpf_status reads the pinned state. Errors: AEGIS_ERR_BPF. */
int aegis_bpf_status(struct aegis_bpf *bpf, struct aegis_bpf_status *st);

/* Global counters, summed over CPUs; index [0] egress, [1] ingress. */
struct aegis_bpf_stats {
    uint64_t packets[2];
    uint64_t pass[2];
    uint64_t drop[2];
    uint64_t drop_rule[2];
    uint64_t drop_default[2];
    uint64_t drop_expired[2];
    uint64_t drop_malformed[2];
    uint64_t pass_rule[2];
    uint64_t pass_flow[2];
    uint64_t pass_expired[2];
    uint64_t pass_control[2];
    uint64_t fragments[2];
    uint64_t flows_new[2];
};

/* aegis_bpf_stats reads global counters. Errors: -ENOMEM, AEGIS_ERR_BPF. */
int aegis_bpf_stats(struct aegis_bpf *bpf, struct aegis_bpf_stats *st);

/* aegis_bpf_rule_counters reads per-rule counters of the active version, by
 * global rule index (aegis_policy_rule_at), into packets/bytes (n entries
 * each; indexes past the version's rule count read 0). Errors: -ENOMEM,
 * AEGIS_ERR_STATE (no active version), AEGIS_ERR_BPF. */
int aegis_bpf_rule_counters(struct aegis_bpf *bpf, uint64_t *packets, uint64_t *bytes, size_t n);

/* aegis_bpf_prog_fd returns the program fd for one direction (for
 * bpf_prog_test_run in tests and benchmarks), or -EINVAL. Borrowed. */
int aegis_bpf_prog_fd(const struct aegis_bpf *bpf, unsigned dir);

/* aegis_bpf_flush_flows empties the reply flow table (tests, operators). */
int aegis_bpf_flush_flows(struct aegis_bpf *bpf);

/* aegis_bpf_purge detaches everything and removes the pin directory.
 * Errors: as aegis_bpf_open and aegis_bpf_detach. */
int aegis_bpf_purge(const struct aegis_bpf_config *config, char *err, size_t errlen);

/* aegis_bpf_last_publish_ns / aegis_bpf_last_swap_ns: how long the last
 * apply took to build the new version, and the switch alone (bench). */
uint64_t aegis_bpf_last_publish_ns(const struct aegis_bpf *bpf);
uint64_t aegis_bpf_last_swap_ns(const struct aegis_bpf *bpf);

#ifdef __cplusplus
}
#endif
#endif
