// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Aegis segmentation enforcement: one TC program per direction.
 *
 * Per packet: read the active slot once (aegis_active), parse Ethernet /
 * IPv4 / IPv6 (extension headers, fragments) / TCP / UDP / ICMP, then
 *   - mode off: pass;
 *   - snapshot expired: fail-open passes; fail-closed keeps a deny-list
 *     enforced and drops everything in allow-list mode;
 *   - deny-list: drop on a rule match, pass otherwise;
 *   - allow-list: pass on a rule match or when the packet is a reply of a
 *     flow opened from the other direction (aegis_flows), drop otherwise.
 * ARP, IPv6 neighbour discovery and MLD always pass; other non-IP frames too.
 * On egress a rule's CIDR matches the destination, on ingress the source;
 * the port is always the packet's destination port.
 *
 * A passed packet opens/refreshes a flow entry when the other direction is in
 * allow-list mode, so its replies pass there. Entries age out after the
 * slot's flow_idle_ns without traffic, or earlier by LRU eviction when the
 * table is full.
 *
 * Pass returns TC_ACT_UNSPEC (tcx: "next"), so programs attached after ours
 * by someone else still run; drop returns TC_ACT_SHOT.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>

/* libbpf's BPF-side headers need the uapi types above. */
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf_abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct rules_inner {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(key_size, sizeof(struct aegis_lpm_key));
    __uint(value_size, sizeof(struct aegis_lpm_val));
    __uint(max_entries, AEGIS_LPM_MAX);
    __uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, AEGIS_NSLOTS);
    __uint(key_size, sizeof(__u32));
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __array(values, struct rules_inner);
} aegis_rules SEC(".maps");

/* Per-rule counters of all slots: index slot * AEGIS_RULES_HARD_MAX + rule.
 * One preallocated per-CPU array (an inner per-CPU array would be allocated
 * on every apply); the loader zeroes a slot's range before filling it. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, AEGIS_NSLOTS *AEGIS_RULES_HARD_MAX);
    __type(key, __u32);
    __type(value, struct aegis_rule_count);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_rcount SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, AEGIS_NSLOTS);
    __type(key, __u32);
    __type(value, struct aegis_slot_conf);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_slots SEC(".maps");

/* A single __u32 (slot + 1): the kernel copies 4 aligned bytes, so the
 * switch is one store and a reader never sees a torn value. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_active SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, AEGIS_FLOW_MAX);
    __type(key, struct aegis_flow_key);
    __type(value, struct aegis_flow_val);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, AEGIS_FRAG_MAX);
    __type(key, struct aegis_frag_key);
    __type(value, struct aegis_frag_val);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_frags SEC(".maps");

/* One per-CPU record of AEGIS_STAT_N counters per direction: a single
 * lookup per packet, plain increments. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, struct aegis_stat_rec);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_stats SEC(".maps");

/* Loader bookkeeping, pinned with the rest so a restarted loader finds it. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct aegis_ctl_rec);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_ctl SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, AEGIS_ATTACH_MAX);
    __type(key, __u32);
    __type(value, struct aegis_attach_rec);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_attach SEC(".maps");

#define PASS TC_ACT_UNSPEC
#define DROP TC_ACT_SHOT

/* IPv6 extension headers walked before giving up (RFC 8200 §4.1 order has at
 * most 6 before the upper layer; a longer chain is treated as malformed). */
#define MAX_EXT_HDRS 8

#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff

struct pkt {
    __u8 saddr[16];
    __u8 daddr[16];
    __u8 family;
    __u8 l4proto; /* IP protocol number */
    __u8 cls;     /* aegis_abi_proto */
    __u8 frag;    /* 0 none, 1 first fragment, 2 later fragment */
    __u32 frag_id;
    __u16 sport;
    __u16 dport;
    __u16 echo_id;
    __u8 control; /* ND / MLD: always pass */
    __u8 has_ports;
};

#define stat_inc(dir, which)                                                                       \
    do {                                                                                           \
        if (st)                                                                                    \
            st->c[which] += 1;                                                                     \
    } while (0)

/* Returns 0 ok, 1 not IP (pass), -1 malformed. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, struct pkt *p)
{
    if (p->frag == 2)
        return 0; /* no L4 header in later fragments */
    if (p->l4proto == IPPROTO_TCP || p->l4proto == IPPROTO_UDP) {
        __u16 ports[2];
        if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
            return -1;
        p->sport = bpf_ntohs(ports[0]);
        p->dport = bpf_ntohs(ports[1]);
        p->has_ports = 1;
        p->cls = p->l4proto == IPPROTO_TCP ? AEGIS_ABI_PROTO_TCP : AEGIS_ABI_PROTO_UDP;
    } else if (p->l4proto == IPPROTO_ICMP || p->l4proto == IPPROTO_ICMPV6) {
        __u8 h[6];
        if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
            return -1;
        p->cls = AEGIS_ABI_PROTO_ICMP;
        __u8 type = h[0];
        if (p->l4proto == IPPROTO_ICMPV6) {
            /* MLD 130-132, 143; ND 133-137 (RFC 4861, 3810). */
            if ((type >= 130 && type <= 137) || type == 143)
                p->control = 1;
            if (type == 128 || type == 129)
                p->echo_id = (__u16)((h[4] << 8) | h[5]);
        } else if (type == 8 || type == 0) {
            p->echo_id = (__u16)((h[4] << 8) | h[5]);
        }
    } else {
        p->cls = AEGIS_ABI_PROTO_OTHER;
    }
    return 0;
}

/* Fast path: direct packet access for the common shapes (IPv4 without
 * options, IPv6 without extension headers, not fragmented, headers in the
 * linear area). Returns 0 when it parsed the packet, -2 to use the general
 * parser below. */
#define SLOW (-2)
static __always_inline int parse_fast(struct __sk_buff *skb, struct pkt *p)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return SLOW;
    __u8 *l4;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end)
            return SLOW;
        if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFMASK)))
            return SLOW;
        p->family = 4;
        __builtin_memcpy(p->saddr, &ip->saddr, 4);
        __builtin_memcpy(p->daddr, &ip->daddr, 4);
        p->l4proto = ip->protocol;
        l4 = (void *)(ip + 1);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end)
            return SLOW;
        __u8 nh = ip6->nexthdr;
        if (ip6->version != 6 || (nh != IPPROTO_TCP && nh != IPPROTO_UDP && nh != IPPROTO_ICMPV6))
            return SLOW;
        p->family = 6;
        __builtin_memcpy(p->saddr, &ip6->saddr, 16);
        __builtin_memcpy(p->daddr, &ip6->daddr, 16);
        p->l4proto = nh;
        l4 = (void *)(ip6 + 1);
    } else {
        return SLOW;
    }
    if (p->l4proto == IPPROTO_TCP || p->l4proto == IPPROTO_UDP) {
        if (l4 + 4 > (__u8 *)end)
            return SLOW;
        p->sport = (__u16)((l4[0] << 8) | l4[1]);
        p->dport = (__u16)((l4[2] << 8) | l4[3]);
        p->has_ports = 1;
        p->cls = p->l4proto == IPPROTO_TCP ? AEGIS_ABI_PROTO_TCP : AEGIS_ABI_PROTO_UDP;
    } else if (p->l4proto == IPPROTO_ICMP || p->l4proto == IPPROTO_ICMPV6) {
        if (l4 + 6 > (__u8 *)end)
            return SLOW;
        __u8 type = l4[0];
        p->cls = AEGIS_ABI_PROTO_ICMP;
        if (p->l4proto == IPPROTO_ICMPV6) {
            if ((type >= 130 && type <= 137) || type == 143)
                p->control = 1;
            if (type == 128 || type == 129)
                p->echo_id = (__u16)((l4[4] << 8) | l4[5]);
        } else if (type == 8 || type == 0) {
            p->echo_id = (__u16)((l4[4] << 8) | l4[5]);
        }
    } else {
        p->cls = AEGIS_ABI_PROTO_OTHER;
    }
    return 0;
}

static __always_inline int parse_slow(struct __sk_buff *skb, struct pkt *p);

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
    int rc = parse_fast(skb, p);
    if (rc != SLOW)
        return rc;
    __builtin_memset(p, 0, sizeof(*p));
    return parse_slow(skb, p);
}

static __always_inline int parse_slow(struct __sk_buff *skb, struct pkt *p)
{
    __u16 proto;
    if (bpf_skb_load_bytes(skb, 12, &proto, sizeof(proto)) < 0)
        return 1; /* shorter than an Ethernet header: not ours to judge */
    __u32 off = ETH_HLEN;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
            return -1;
        if (ip.version != 4 || ip.ihl < 5)
            return -1;
        p->family = 4;
        __builtin_memcpy(p->saddr, &ip.saddr, 4);
        __builtin_memcpy(p->daddr, &ip.daddr, 4);
        p->l4proto = ip.protocol;
        __u16 fo = bpf_ntohs(ip.frag_off);
        if (fo & IP_OFFMASK)
            p->frag = 2;
        else if (fo & IP_MF)
            p->frag = 1;
        p->frag_id = bpf_ntohs(ip.id);
        off += (__u32)ip.ihl * 4;
        return parse_l4(skb, off, p);
    }
    if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
            return -1;
        if (ip6.version != 6)
            return -1;
        p->family = 6;
        __builtin_memcpy(p->saddr, &ip6.saddr, 16);
        __builtin_memcpy(p->daddr, &ip6.daddr, 16);
        __u8 nh = ip6.nexthdr;
        off += sizeof(ip6);
#pragma unroll
        for (int i = 0; i < MAX_EXT_HDRS; i++) {
            if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
                __u8 h[2];
                if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
                    return -1;
                nh = h[0];
                off += ((__u32)h[1] + 1) * 8;
            } else if (nh == IPPROTO_AH) {
                __u8 h[2];
                if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
                    return -1;
                nh = h[0];
                off += ((__u32)h[1] + 2) * 4; /* RFC 4302 §2.2 */
            } else if (nh == IPPROTO_FRAGMENT) {
                __u8 h[8];
                if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
                    return -1;
                nh = h[0];
                __u16 fo = (__u16)((h[2] << 8) | h[3]);
                if (fo & 0xfff8)
                    p->frag = 2;
                else if (fo & 1)
                    p->frag = 1;
                p->frag_id = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7];
                off += 8;
                if (p->frag == 2)
                    break;
            } else {
                p->l4proto = nh;
                return parse_l4(skb, off, p);
            }
        }
        if (p->frag == 2) {
            p->l4proto = nh;
            return parse_l4(skb, off, p);
        }
        return -1; /* extension chain too long */
    }
    if (proto == bpf_htons(ETH_P_ARP))
        p->control = 1;
    return 1;
}

static __always_inline void frag_key(struct aegis_frag_key *k, const struct pkt *p, __u32 dir)
{
    __builtin_memcpy(k->saddr, p->saddr, 16);
    __builtin_memcpy(k->daddr, p->daddr, 16);
    k->id = p->frag_id;
    k->proto = p->l4proto;
    k->dir = (__u8)dir;
    k->family = p->family;
    k->pad = 0;
}

/* Later fragments carry no ports: take them from the first fragment if it
 * was seen; otherwise the packet matches only port-any rules. */
static __always_inline void frag_ports(__u32 dir, struct pkt *p)
{
    struct aegis_frag_key k;
    frag_key(&k, p, dir);
    if (p->frag == 1) {
        struct aegis_frag_val v = {.sport = p->sport, .dport = p->dport};
        bpf_map_update_elem(&aegis_frags, &k, &v, BPF_ANY);
        return;
    }
    if (p->l4proto == IPPROTO_TCP)
        p->cls = AEGIS_ABI_PROTO_TCP;
    else if (p->l4proto == IPPROTO_UDP)
        p->cls = AEGIS_ABI_PROTO_UDP;
    struct aegis_frag_val *v = bpf_map_lookup_elem(&aegis_frags, &k);
    if (v) {
        p->sport = v->sport;
        p->dport = v->dport;
        p->has_ports = 1;
    }
}

static __always_inline struct aegis_lpm_val *lookup(void *trie, struct aegis_lpm_key *k, __u8 cls,
                                                    __u16 port)
{
    k->proto = cls;
    k->port = port;
    return bpf_map_lookup_elem(trie, k);
}

static __always_inline void flow_key(struct aegis_flow_key *k, const struct pkt *p, __u32 dir)
{
    const __u8 *l = dir == AEGIS_ABI_EGRESS ? p->saddr : p->daddr;
    const __u8 *r = dir == AEGIS_ABI_EGRESS ? p->daddr : p->saddr;
    __builtin_memcpy(k->laddr, l, 16);
    __builtin_memcpy(k->raddr, r, 16);
    if (p->cls == AEGIS_ABI_PROTO_ICMP) {
        k->lport = p->echo_id;
        k->rport = p->echo_id;
    } else {
        k->lport = dir == AEGIS_ABI_EGRESS ? p->sport : p->dport;
        k->rport = dir == AEGIS_ABI_EGRESS ? p->dport : p->sport;
    }
    k->proto = p->cls;
    k->family = p->family;
    k->pad[0] = 0;
    k->pad[1] = 0;
}

/* Refresh at most once per this interval: the write is the costly part. */
#define FLOW_REFRESH_NS 1000000000ull

static __always_inline int enforce(struct __sk_buff *skb, const __u32 dir)
{
    __u32 sk = dir;
    struct aegis_stat_rec *st = bpf_map_lookup_elem(&aegis_stats, &sk);
    stat_inc(dir, AEGIS_STAT_PACKETS);
    __u32 zero = 0;
    __u32 *act = bpf_map_lookup_elem(&aegis_active, &zero);
    if (!act || *act == 0 || *act > AEGIS_NSLOTS)
        goto pass;
    __u32 slot = *act - 1; /* read once: the whole packet uses this version */
    struct aegis_slot_conf *conf = bpf_map_lookup_elem(&aegis_slots, &slot);
    if (!conf)
        goto pass;
    __u32 mode = conf->mode[dir];
    __u32 other = conf->mode[dir ^ 1];
    if (mode == AEGIS_ABI_MODE_OFF && other != AEGIS_ABI_MODE_ALLOW)
        goto pass;

    struct pkt p;
    __builtin_memset(&p, 0, sizeof(p));
    int rc = parse(skb, &p);
    if (rc > 0 || p.control) {
        stat_inc(dir, AEGIS_STAT_PASS_CONTROL);
        goto pass;
    }
    if (rc < 0) {
        if (mode == AEGIS_ABI_MODE_OFF)
            goto pass;
        stat_inc(dir, AEGIS_STAT_DROP_MALFORMED);
        goto drop;
    }
    if (p.frag) {
        if (p.frag == 2)
            stat_inc(dir, AEGIS_STAT_FRAGMENTS);
        frag_ports(dir, &p);
    }

    __u64 now = bpf_ktime_get_ns();
    int by_flow = 0;
    if (mode != AEGIS_ABI_MODE_OFF) {
        if (conf->expires_ns && now >= conf->expires_ns) {
            /* Fail-closed keeps a deny-list enforced and makes an allow-list
             * drop everything; fail-open stops enforcing. */
            if (conf->expiry_action != AEGIS_ABI_FAIL_CLOSED) {
                stat_inc(dir, AEGIS_STAT_PASS_EXPIRED);
                goto pass;
            }
            if (mode == AEGIS_ABI_MODE_ALLOW) {
                stat_inc(dir, AEGIS_STAT_DROP_EXPIRED);
                goto drop;
            }
        }
        struct aegis_lpm_val *hit = NULL;
        void *trie = bpf_map_lookup_elem(&aegis_rules, &slot);
        if (trie) {
            struct aegis_lpm_key k;
            __builtin_memset(&k, 0, sizeof(k));
            k.dir = (__u8)dir;
            k.family = p.family;
            if (p.family == 4) {
                k.prefixlen = AEGIS_LPM_FIXED_BITS + 32;
                __builtin_memcpy(k.addr, dir == AEGIS_ABI_EGRESS ? p.daddr : p.saddr, 4);
            } else {
                k.prefixlen = AEGIS_LPM_FIXED_BITS + 128;
                __builtin_memcpy(k.addr, dir == AEGIS_ABI_EGRESS ? p.daddr : p.saddr, 16);
            }
            __u32 classes = conf->classes[dir];
            __u8 cls = p.cls;
            __u16 port = p.has_ports ? p.dport : 0;
            struct aegis_lpm_val *v;
            /* Most specific first; an expired per-rule TTL counts as no match. */
            if (cls != AEGIS_ABI_PROTO_OTHER && port && (classes & AEGIS_CLASS_BIT(cls, 1))) {
                v = lookup(trie, &k, cls, port);
                if (v && (!v->expires_ns || now < v->expires_ns))
                    hit = v;
            }
            if (!hit && cls != AEGIS_ABI_PROTO_OTHER && (classes & AEGIS_CLASS_BIT(cls, 0))) {
                v = lookup(trie, &k, cls, 0);
                if (v && (!v->expires_ns || now < v->expires_ns))
                    hit = v;
            }
            if (!hit && port && (classes & AEGIS_CLASS_BIT(AEGIS_ABI_PROTO_ANY, 1))) {
                v = lookup(trie, &k, AEGIS_ABI_PROTO_ANY, port);
                if (v && (!v->expires_ns || now < v->expires_ns))
                    hit = v;
            }
            if (!hit && (classes & AEGIS_CLASS_BIT(AEGIS_ABI_PROTO_ANY, 0))) {
                v = lookup(trie, &k, AEGIS_ABI_PROTO_ANY, 0);
                if (v && (!v->expires_ns || now < v->expires_ns))
                    hit = v;
            }
        }
        if (hit) {
            __u32 ri = slot * AEGIS_RULES_HARD_MAX + (hit->rule % AEGIS_RULES_HARD_MAX);
            struct aegis_rule_count *c = bpf_map_lookup_elem(&aegis_rcount, &ri);
            if (c) {
                c->packets += 1;
                c->bytes += skb->len;
            }
            if (mode == AEGIS_ABI_MODE_DENY) {
                stat_inc(dir, AEGIS_STAT_DROP_RULE);
                goto drop;
            }
            stat_inc(dir, AEGIS_STAT_PASS_RULE);
        } else if (mode == AEGIS_ABI_MODE_ALLOW) {
            struct aegis_flow_key fk;
            flow_key(&fk, &p, dir);
            struct aegis_flow_val *fv = bpf_map_lookup_elem(&aegis_flows, &fk);
            if (!fv || fv->origin == dir || now - fv->last_ns > conf->flow_idle_ns) {
                stat_inc(dir, AEGIS_STAT_DROP_DEFAULT);
                goto drop;
            }
            if (now - fv->last_ns > FLOW_REFRESH_NS)
                fv->last_ns = now;
            by_flow = 1;
            stat_inc(dir, AEGIS_STAT_PASS_FLOW);
        }
    }
    /* Open or refresh the flow so the other direction's allow-list lets the
     * replies through. */
    if (!by_flow && other == AEGIS_ABI_MODE_ALLOW && p.frag != 2) {
        struct aegis_flow_key fk;
        flow_key(&fk, &p, dir);
        struct aegis_flow_val *fv = bpf_map_lookup_elem(&aegis_flows, &fk);
        if (fv) {
            if (fv->origin == dir && now - fv->last_ns > FLOW_REFRESH_NS)
                fv->last_ns = now;
        } else {
            struct aegis_flow_val nv = {.last_ns = now, .origin = dir};
            if (bpf_map_update_elem(&aegis_flows, &fk, &nv, BPF_NOEXIST) == 0)
                stat_inc(dir, AEGIS_STAT_FLOW_NEW);
        }
    }
pass:
    stat_inc(dir, AEGIS_STAT_PASS);
    return PASS;
drop:
    stat_inc(dir, AEGIS_STAT_DROP);
    return DROP;
}

SEC("tc")
int aegis_egress(struct __sk_buff *skb)
{
    return enforce(skb, AEGIS_ABI_EGRESS);
}

SEC("tc")
int aegis_ingress(struct __sk_buff *skb)
{
    return enforce(skb, AEGIS_ABI_INGRESS);
}
