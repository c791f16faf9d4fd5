/*
 * Layout shared by the TC programs (aegis_tc.bpf.c) and the loader
 * (bpf_*.c). Everything here is part of the pinned state: changing a struct
 * or a map size makes old pins incompatible (the loader then refuses to reuse
 * them and says how to reset the pin directory).
 *
 * Versions live in slots. Each slot owns one LPM trie of rules and one
 * per-CPU array of rule counters (inner maps of aegis_rules / aegis_rcount),
 * plus its configuration in aegis_slots. aegis_active holds slot+1 of the
 * enforced version (0 = no policy, everything passes). The program reads it
 * once per packet, so a packet sees either the old or the new slot, never a
 * mix. Three slots: active, previous (rollback target) and staging.
 */
#ifndef AEGIS_BPF_ABI_H
#define AEGIS_BPF_ABI_H

#include <linux/types.h>

#define AEGIS_NSLOTS 3
/* Hard cap of rules per snapshot: each rule yields at most two trie entries
 * (egress and ingress), so the trie holds 2x this. */
#define AEGIS_RULES_HARD_MAX 16384
#define AEGIS_LPM_MAX (2 * AEGIS_RULES_HARD_MAX)
/* Flow table for replies in allow-list mode: LRU, so the oldest idle flows
 * are evicted first when it is full. 65536 flows x 56 bytes ~ 4 MiB. */
#define AEGIS_FLOW_MAX 65536
/* First-fragment port memory for non-first fragments (LRU). */
#define AEGIS_FRAG_MAX 8192
/* Interfaces x directions the loader can track. */
#define AEGIS_ATTACH_MAX 32

enum aegis_abi_dir { AEGIS_ABI_EGRESS = 0, AEGIS_ABI_INGRESS = 1 };
enum aegis_abi_mode { AEGIS_ABI_MODE_OFF = 0, AEGIS_ABI_MODE_DENY = 1, AEGIS_ABI_MODE_ALLOW = 2 };
enum aegis_abi_expiry { AEGIS_ABI_FAIL_OPEN = 0, AEGIS_ABI_FAIL_CLOSED = 1 };
/* Protocol classes in trie keys (same numbers as RuleProto). */
enum aegis_abi_proto {
    AEGIS_ABI_PROTO_ANY = 0,
    AEGIS_ABI_PROTO_TCP = 1,
    AEGIS_ABI_PROTO_UDP = 2,
    AEGIS_ABI_PROTO_ICMP = 3,
    AEGIS_ABI_PROTO_OTHER = 4, /* packets only: GRE, ESP, ... match proto-any rules */
};

/*
 * Trie key. The fixed part (dir, proto, port, family: 40 bits) is always
 * fully inside the prefix, so one trie answers "longest prefix among rules of
 * exactly this direction/proto/port". The program looks up the four wildcard
 * combinations (proto,port), (proto,any), (any,port), (any,any).
 */
#define AEGIS_LPM_FIXED_BITS 40
struct aegis_lpm_key {
    __u32 prefixlen;
    __u8 dir;
    __u8 proto;
    __u16 port;  /* host order, 0 = any */
    __u8 family; /* 4 or 6 */
    __u8 addr[16];
    __u8 pad[3];
};

struct aegis_lpm_val {
    __u32 rule;       /* index into the slot's counter array */
    __u32 flags;      /* reserved, 0 */
    __u64 expires_ns; /* CLOCK_MONOTONIC; 0 = lives as long as the snapshot */
};

struct aegis_rule_count {
    __u64 packets;
    __u64 bytes;
};

/* Bit (proto * 2 + has_port) set when the slot has rules of that class in a
 * direction: lookups of absent classes are skipped. */
#define AEGIS_CLASS_BIT(proto, has_port) (1u << ((proto)*2u + ((has_port) ? 1u : 0u)))

struct aegis_slot_conf {
    __u64 version;
    __u64 service_id;
    __u64 expires_ns;   /* CLOCK_MONOTONIC; 0 = never */
    __u64 flow_idle_ns; /* a reply passes if its flow was seen this recently */
    __u32 mode[2];      /* per aegis_abi_dir */
    __u32 classes[2];   /* AEGIS_CLASS_BIT set per direction */
    __u32 expiry_action;
    __u32 nrules;
};

struct aegis_flow_key {
    __u8 laddr[16]; /* local address (source on egress, destination on ingress) */
    __u8 raddr[16];
    __u16 lport;
    __u16 rport;
    __u8 proto; /* aegis_abi_proto */
    __u8 family;
    __u8 pad[2];
};

struct aegis_flow_val {
    __u64 last_ns;
    __u32 origin; /* direction of the packet that opened the flow */
    __u32 pad;
};

struct aegis_frag_key {
    __u8 saddr[16];
    __u8 daddr[16];
    __u32 id;
    __u8 proto;
    __u8 dir;
    __u8 family;
    __u8 pad;
};

struct aegis_frag_val {
    __u16 sport;
    __u16 dport;
    __u32 pad;
};

/* Global per-CPU counters: one aegis_stat_rec per direction (key 0 egress). */
enum aegis_abi_stat {
    AEGIS_STAT_PACKETS = 0,    /* every packet the program saw */
    AEGIS_STAT_PASS,           /* passed for any reason */
    AEGIS_STAT_DROP,           /* dropped for any reason */
    AEGIS_STAT_DROP_RULE,      /* deny-list rule matched */
    AEGIS_STAT_DROP_DEFAULT,   /* allow-list: no rule, no flow */
    AEGIS_STAT_DROP_EXPIRED,   /* snapshot expired, fail-closed */
    AEGIS_STAT_DROP_MALFORMED, /* truncated or inconsistent headers */
    AEGIS_STAT_PASS_RULE,      /* allow-list rule matched */
    AEGIS_STAT_PASS_FLOW,      /* allow-list: reply of a tracked flow */
    AEGIS_STAT_PASS_EXPIRED,   /* snapshot expired, fail-open */
    AEGIS_STAT_PASS_CONTROL,   /* ARP, neighbour discovery, MLD, non-IP */
    AEGIS_STAT_FRAGMENTS,      /* non-first fragments seen */
    AEGIS_STAT_FLOW_NEW,       /* flow entries created */
    AEGIS_STAT_N
};

struct aegis_stat_rec {
    __u64 c[AEGIS_STAT_N];
};

/* Loader bookkeeping (aegis_ctl, key 0). The program never reads it. */
struct aegis_ctl_rec {
    __u32 previous; /* slot+1 of the rollback target, 0 = none */
    __u32 pad;
    __u64 applies; /* successful applies so far */
};

/* One attachment made by the loader (aegis_attach). kind 0 = free. */
enum aegis_abi_attach_kind { AEGIS_ATTACH_FREE = 0, AEGIS_ATTACH_TCX = 1, AEGIS_ATTACH_TC = 2 };
struct aegis_attach_rec {
    __u32 kind;
    __u32 ifindex;
    __u32 dir;
    __u32 handle;     /* tc filter handle */
    __u32 priority;   /* tc filter priority */
    __u32 made_qdisc; /* 1 if the loader created the clsact qdisc */
};

#endif
