/*
 * Segmentation policy model (DESIGN §7): a MapSnapshot in plain C.
 *
 * A policy has three rule lists: `edges` and `allow_cidrs` (permitted in
 * allow-list mode) and `deny` (dropped in deny-list mode), one enforcement
 * mode per direction, a TTL and an expiry action. This library parses the
 * JSON form (seed 004's schema plus the mode fields), validates, and knows
 * nothing about BPF: aegisctl links it to check a policy before pushing it.
 *
 * Rule semantics (what the TC programs enforce):
 *  - direction DEFAULT means egress for `edges` and both directions for
 *    `allow_cidrs` and `deny`;
 *  - on egress the CIDR matches the destination address, on ingress the
 *    source address; `port` is always the packet's destination port in the
 *    direction it travels (ingress: the local service port; egress: the
 *    remote service port); 0 means any port;
 *  - in allow-list mode, replies of flows opened from the other direction pass
 *    through the flow table, not through rules: an egress connection to
 *    10.0.0.5:443 allowed by an edge gets its ingress replies (source port 443)
 *    without any ingress rule.
 */
#ifndef AEGIS_POLICY_H
#define AEGIS_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <aegis/mem.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Same numbers as aegis.v1.RuleProto / EnforceMode / ExpiryAction / RuleDirection. */
enum aegis_policy_proto {
    AEGIS_POLICY_PROTO_ANY = 0,
    AEGIS_POLICY_PROTO_TCP = 1,
    AEGIS_POLICY_PROTO_UDP = 2,
    AEGIS_POLICY_PROTO_ICMP = 3,
};

enum aegis_policy_mode {
    AEGIS_POLICY_MODE_OFF = 0,
    AEGIS_POLICY_MODE_DENY = 1,
    AEGIS_POLICY_MODE_ALLOW = 2,
};

enum aegis_policy_expiry {
    AEGIS_POLICY_FAIL_OPEN = 0,   /* expired: stop enforcing, everything passes */
    AEGIS_POLICY_FAIL_CLOSED = 1, /* expired: deny-lists stay, allow-lists drop all IP */
};

enum aegis_policy_dir {
    AEGIS_POLICY_DIR_DEFAULT = 0,
    AEGIS_POLICY_DIR_EGRESS = 1,
    AEGIS_POLICY_DIR_INGRESS = 2,
    AEGIS_POLICY_DIR_BOTH = 3,
};

enum aegis_policy_list {
    AEGIS_POLICY_EDGES = 0,
    AEGIS_POLICY_ALLOW_CIDRS = 1,
    AEGIS_POLICY_DENY = 2,
};
#define AEGIS_POLICY_NLISTS 3

/* Seed 004: "ttl_seconds": {"minimum": 60}. */
#define AEGIS_POLICY_MIN_TTL_SECONDS 60u
/* Default rule cap per snapshot (all lists together). 10,000 is the size the
 * bench is held to; the BPF maps are sized for AEGIS_POLICY_RULES_HARD_MAX. */
#define AEGIS_POLICY_DEFAULT_MAX_RULES 10000u
#define AEGIS_POLICY_RULES_HARD_MAX 16384u
/* JSON input cap: the RPC message limit (DESIGN §8), ~60 bytes per rule. */
#define AEGIS_POLICY_DEFAULT_MAX_JSON (4u << 20)
/* meta is free-form operator notes: a few entries of modest size. */
#define AEGIS_POLICY_DEFAULT_MAX_META 64u
#define AEGIS_POLICY_DEFAULT_MAX_META_BYTES 1024u

struct aegis_policy_limits {
    size_t max_rules;         /* total over the three lists, <= RULES_HARD_MAX */
    uint32_t min_ttl_seconds; /* snapshot and per-rule TTL floor */
    size_t max_json_bytes;
    size_t max_meta;       /* entries */
    size_t max_meta_bytes; /* per key and per value */
};

/* aegis_policy_limits_default fills the defaults above. */
void aegis_policy_limits_default(struct aegis_policy_limits *limits);

struct aegis_policy_rule {
    uint32_t id;    /* 0 = none; non-zero ids are unique in a policy */
    uint8_t family; /* 4 or 6 */
    uint8_t prefixlen;
    uint8_t addr[16];     /* network order, IPv4 in the first 4 bytes */
    uint32_t proto;       /* enum aegis_policy_proto */
    uint32_t port;        /* 0 = any, else 1..65535 */
    uint32_t ttl_seconds; /* 0 = the snapshot's */
    uint32_t direction;   /* enum aegis_policy_dir */
};

struct aegis_policy_meta {
    char *key;
    char *value;
};

struct aegis_policy {
    uint64_t version;
    uint64_t service_id;
    uint32_t ttl_seconds;
    uint32_t egress_mode;   /* enum aegis_policy_mode */
    uint32_t ingress_mode;  /* enum aegis_policy_mode */
    uint32_t expiry_action; /* enum aegis_policy_expiry */
    struct aegis_policy_rule *rules[AEGIS_POLICY_NLISTS];
    size_t nrules[AEGIS_POLICY_NLISTS];
    size_t caprules[AEGIS_POLICY_NLISTS];
    struct aegis_policy_meta *meta;
    size_t nmeta;
    size_t capmeta;
    const struct aegis_mem *mem;
};

/* aegis_policy_new allocates an empty policy (version 0, all modes off).
 * mem NULL = default. Errors: -ENOMEM. */
int aegis_policy_new(const struct aegis_mem *mem, struct aegis_policy **ppolicy);

/* aegis_policy_del frees the policy and everything it owns; NULL is fine. */
void aegis_policy_del(struct aegis_policy *policy);

/* aegis_policy_add_rule appends a copy of *rule to list. No validation here.
 * Errors: -EINVAL (bad list), -ENOMEM, AEGIS_ERR_LIMIT (hard cap reached). */
int aegis_policy_add_rule(struct aegis_policy *policy, enum aegis_policy_list list,
                          const struct aegis_policy_rule *rule);

/* aegis_policy_add_meta appends a copy of key/value. Errors: -EINVAL, -ENOMEM. */
int aegis_policy_add_meta(struct aegis_policy *policy, const char *key, const char *value);

/*
 * aegis_policy_parse_cidr parses "10.0.0.0/8", "2001:db8::/32" or a bare
 * address (a host prefix) into rule->family/prefixlen/addr. Host bits below
 * the prefix must be zero. Returns 0 or -EINVAL with a reason in err.
 */
int aegis_policy_parse_cidr(const char *text, struct aegis_policy_rule *rule, char *err,
                            size_t errlen);

/* aegis_policy_format_cidr writes "addr/len" into buf (>= 64 bytes). */
void aegis_policy_format_cidr(const struct aegis_policy_rule *rule, char *buf, size_t buflen);

/*
 * aegis_policy_validate checks everything the enforcer relies on: version >=
 * 1, TTL >= limits->min_ttl_seconds, known modes and expiry action, per rule
 * a valid family/prefix, known protocol, port <= 65535 (and no port with
 * ICMP), known direction, TTL 0 or >= the minimum; unique non-zero ids; no
 * two rules enforced with the same CIDR, protocol, port and direction; at
 * most limits->max_rules rules and limits->max_meta meta entries.
 * limits NULL = defaults. On failure writes a message naming the offending
 * entry ("edges[3]: port 70000 out of range 0..65535") into err (may be NULL)
 * and returns AEGIS_ERR_CONFIG, AEGIS_ERR_LIMIT (too many rules/meta) or
 * -ENOMEM.
 */
int aegis_policy_validate(const struct aegis_policy *policy,
                          const struct aegis_policy_limits *limits, char *err, size_t errlen);

/*
 * aegis_policy_from_json parses a MapSnapshot in JSON (seed 004's schema
 * plus egress_mode/ingress_mode "off"|"deny"|"allow", expiry_action
 * "fail_open"|"fail_closed", deny [...], and per entry optional id,
 * ttl_seconds, direction "default"|"egress"|"ingress"|"both"; edges take
 * dst_cidr or cidr) and validates it. Absent modes: egress "allow" (seed
 * 004 is an allow-list), ingress "off"; expiry_action "fail_open". Unknown
 * keys are errors (a typo must not silently weaken a policy). The input is
 * borrowed; *ppolicy is set only on success.
 * Errors: AEGIS_ERR_TOO_LARGE (input over max_json_bytes), AEGIS_ERR_MALFORMED
 * (not JSON, wrong types, unknown keys), the errors of aegis_policy_validate,
 * -ENOMEM. err names the entry and the problem.
 */
int aegis_policy_from_json(const char *json, size_t len, const struct aegis_policy_limits *limits,
                           const struct aegis_mem *mem, struct aegis_policy **ppolicy, char *err,
                           size_t errlen);

/* Total rule count over the three lists. */
size_t aegis_policy_rule_count(const struct aegis_policy *policy);

/* aegis_policy_rule_at maps a global rule index (edges, then allow_cidrs,
 * then deny: the counter index used by the enforcer) to its list and index.
 * Returns 0 or -ENOENT. */
int aegis_policy_rule_at(const struct aegis_policy *policy, size_t global,
                         enum aegis_policy_list *plist, size_t *pindex);

/* Names for messages and JSON: "edges", "tcp", "allow", "fail_closed", "egress". */
const char *aegis_policy_list_name(enum aegis_policy_list list);
const char *aegis_policy_proto_name(uint32_t proto);
const char *aegis_policy_mode_name(uint32_t mode);
const char *aegis_policy_expiry_name(uint32_t action);
const char *aegis_policy_dir_name(uint32_t dir);

/* Whether rule of list applies to egress / ingress (DEFAULT resolved). */
int aegis_policy_rule_egress(enum aegis_policy_list list, const struct aegis_policy_rule *rule);
int aegis_policy_rule_ingress(enum aegis_policy_list list, const struct aegis_policy_rule *rule);

#ifdef __cplusplus
}
#endif
#endif
