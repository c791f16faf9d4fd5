/*
 * Policy -> BPF map contents (private to bpf/). Pure computation: no libbpf,
 * no system calls, so aegisctl's validation and the unit tests share it.
 */
#ifndef AEGIS_POLICY_COMPILE_H
#define AEGIS_POLICY_COMPILE_H

#include <aegis/policy.h>

#include "bpf_abi.h"

struct aegis_policy_compiled {
    struct aegis_lpm_key *keys; /* n trie entries, ready for a batch update */
    struct aegis_lpm_val *vals;
    size_t n;
    struct aegis_slot_conf conf;
};

/*
 * aegis_policy_compile turns a validated policy into trie entries for the
 * directions whose mode is not off (allow-list: edges + allow_cidrs; deny-list:
 * deny) and the slot configuration. now_ns is CLOCK_MONOTONIC (bpf_ktime_get_ns
 * uses the same clock); flow_idle_ns goes into the slot. Rule values carry the
 * global rule index (aegis_policy_rule_at) for counters.
 * Errors: -ENOMEM. out is zeroed first; free with aegis_policy_compiled_free.
 */
int aegis_policy_compile(const struct aegis_policy *policy, uint64_t now_ns, uint64_t flow_idle_ns,
                         struct aegis_policy_compiled *out);
void aegis_policy_compiled_free(const struct aegis_mem *mem, struct aegis_policy_compiled *c);

/* aegis_policy_check_overlap reports two rules of the same kind (allow or deny)
 * with the same CIDR, protocol, port and direction: only one could be
 * enforced and counted. Returns 0, AEGIS_ERR_CONFIG (err set) or -ENOMEM. */
int aegis_policy_check_overlap(const struct aegis_policy *policy, char *err, size_t errlen);

/* Fills a trie key for rule in direction dir (aegis_abi_dir). */
void aegis_policy_rule_key(const struct aegis_policy_rule *rule, unsigned dir,
                           struct aegis_lpm_key *key);

#endif
