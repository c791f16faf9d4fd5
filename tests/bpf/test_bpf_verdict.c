/*
 * Verdict table of the TC programs, run in the kernel with
 * bpf_prog_test_run_opts on crafted frames: every mode, wildcard
 * combinations, IPv6 extension headers, fragments, replies, TTL both ways,
 * rollback, counters. Needs root (exit 77 otherwise); label "privileged".
 */
#include <aegis/bpf.h>
#include <aegis/err.h>
#include <aegis/policy.h>
#include <aegis/tstamp.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bpf_testenv.h"

static char pin_dir[256];
static struct aegis_bpf *B;

static int eg(const struct frame_spec *s)
{
    uint8_t buf[256];
    size_t len = frame_build(s, buf);
    return prog_run(aegis_bpf_prog_fd(B, AEGIS_BPF_EGRESS), buf, len, 1, NULL);
}

static int in(const struct frame_spec *s)
{
    uint8_t buf[256];
    size_t len = frame_build(s, buf);
    return prog_run(aegis_bpf_prog_fd(B, AEGIS_BPF_INGRESS), buf, len, 1, NULL);
}

/* Applies a JSON policy as if applied `age_s` seconds ago. */
static void apply_aged(const char *json, uint64_t age_s)
{
    struct aegis_policy *p = NULL;
    char err[256] = "";
    int rv = aegis_policy_from_json(json, strlen(json), NULL, NULL, &p, err, sizeof(err));
    if (rv)
        fprintf(stderr, "policy: %s\n", err);
    assert_int_equal(rv, 0);
    uint64_t now = aegis_now();
    assert_true(now > age_s * AEGIS_NS_PER_S);
    rv = aegis_bpf_apply(B, p, now - age_s * AEGIS_NS_PER_S, err, sizeof(err));
    if (rv)
        fprintf(stderr, "apply: %s\n", err);
    assert_int_equal(rv, 0);
    assert_int_equal(aegis_bpf_flush_flows(B), 0);
    aegis_policy_del(p);
}

static void apply(const char *json)
{
    apply_aged(json, 0);
}

#define V4(pr, s, sp, d, dp)                                                                       \
    {                                                                                              \
        .src = (s), .dst = (d), .proto = (pr), .sport = (sp), .dport = (dp)                        \
    }
#define V6(pr, s, sp, d, dp)                                                                       \
    {                                                                                              \
        .v6 = 1, .src = (s), .dst = (d), .proto = (pr), .sport = (sp), .dport = (dp)               \
    }

static void test_no_policy_passes(void **state)
{
    (void)state;
    assert_int_equal(aegis_bpf_clear(B, NULL, 0), 0);
    struct frame_spec t = V4(F_TCP, "192.168.1.1", 40000, "10.9.9.9", 80);
    assert_int_equal(eg(&t), TV_PASS);
    assert_int_equal(in(&t), TV_PASS);
}

static const char *ALLOW =
    "{\"version\":1,\"service_id\":101,\"ttl_seconds\":3600,"
    "\"edges\":[{\"dst_cidr\":\"10.10.20.0/24\",\"proto\":\"tcp\",\"port\":5432,\"id\":1},"
    "{\"dst_cidr\":\"2001:db8::/32\",\"proto\":\"udp\",\"port\":53,\"id\":2},"
    "{\"dst_cidr\":\"10.10.30.15/32\",\"proto\":\"icmp\",\"port\":0,\"id\":3}],"
    "\"allow_cidrs\":[{\"cidr\":\"0.0.0.0/0\",\"proto\":\"tcp\",\"port\":22,\"id\":4}]}";

static void test_allow_list_egress(void **state)
{
    (void)state;
    apply(ALLOW);
    struct aegis_bpf_stats s0, s1;
    assert_int_equal(aegis_bpf_stats(B, &s0), 0);
    struct frame_spec ok = V4(F_TCP, "192.168.1.1", 40000, "10.10.20.5", 5432);
    assert_int_equal(eg(&ok), TV_PASS);
    struct frame_spec badport = V4(F_TCP, "192.168.1.1", 40000, "10.10.20.5", 5433);
    assert_int_equal(eg(&badport), TV_DROP);
    struct frame_spec badproto = V4(F_UDP, "192.168.1.1", 40000, "10.10.20.5", 5432);
    assert_int_equal(eg(&badproto), TV_DROP);
    struct frame_spec outside = V4(F_TCP, "192.168.1.1", 40000, "10.10.21.5", 5432);
    assert_int_equal(eg(&outside), TV_DROP);
    struct frame_spec ssh = V4(F_TCP, "192.168.1.1", 40000, "8.8.8.8", 22);
    assert_int_equal(eg(&ssh), TV_PASS);
    struct frame_spec ping = V4(F_ICMP, "192.168.1.1", 7, "10.10.30.15", 0);
    ping.icmp_type = 8;
    assert_int_equal(eg(&ping), TV_PASS);
    struct frame_spec ping2 = V4(F_ICMP, "192.168.1.1", 7, "10.10.30.16", 0);
    ping2.icmp_type = 8;
    assert_int_equal(eg(&ping2), TV_DROP);
    struct frame_spec gre = V4(F_GRE, "192.168.1.1", 0, "10.10.20.5", 0);
    assert_int_equal(eg(&gre), TV_DROP);
    /* IPv6, plain and behind extension headers. */
    struct frame_spec dns6 = V6(F_UDP, "2001:db9::1", 5353, "2001:db8::53", 53);
    assert_int_equal(eg(&dns6), TV_PASS);
    dns6.v6_ext = 3;
    assert_int_equal(eg(&dns6), TV_PASS);
    dns6.dport = 54;
    assert_int_equal(eg(&dns6), TV_DROP);
    struct frame_spec other6 = V6(F_UDP, "2001:db9::1", 5353, "2001:db9::53", 53);
    assert_int_equal(eg(&other6), TV_DROP);
    /* A v6 rule never matches v4 and vice versa. */
    struct frame_spec v4dns = V4(F_UDP, "192.168.1.1", 5353, "32.1.13.184", 53);
    assert_int_equal(eg(&v4dns), TV_DROP);
    /* ARP and neighbour discovery always pass. */
    uint8_t arp[64];
    size_t alen = frame_arp(arp);
    assert_int_equal(prog_run(aegis_bpf_prog_fd(B, AEGIS_BPF_EGRESS), arp, alen, 1, NULL), TV_PASS);
    struct frame_spec ns = V6(F_ICMP6, "fe80::1", 0, "ff02::1:ff00:1", 0);
    ns.icmp_type = 135;
    assert_int_equal(eg(&ns), TV_PASS);
    /* Ingress is off in this policy. */
    assert_int_equal(in(&outside), TV_PASS);

    assert_int_equal(aegis_bpf_stats(B, &s1), 0);
    assert_int_equal(s1.pass_rule[0] - s0.pass_rule[0], 5);
    assert_int_equal(s1.drop_default[0] - s0.drop_default[0], 8);
    assert_int_equal(s1.pass_control[0] - s0.pass_control[0], 2);
    uint64_t pk[4], by[4];
    assert_int_equal(aegis_bpf_rule_counters(B, pk, by, 4), 0);
    assert_int_equal(pk[0], 1); /* edges[0] */
    assert_int_equal(pk[1], 2); /* edges[1]: plain and with extension headers */
    assert_int_equal(pk[2], 1); /* edges[2] icmp */
    assert_int_equal(pk[3], 1); /* allow_cidrs[0] */
    assert_true(by[0] >= 54);
}

static void test_wildcards(void **state)
{
    (void)state;
    apply("{\"version\":2,\"service_id\":1,\"ttl_seconds\":3600,"
          "\"edges\":[{\"dst_cidr\":\"10.1.0.0/16\",\"proto\":\"any\",\"port\":443},"
          "{\"dst_cidr\":\"10.2.0.0/16\",\"proto\":\"tcp\",\"port\":0},"
          "{\"dst_cidr\":\"10.3.0.0/16\",\"proto\":\"any\",\"port\":0},"
          "{\"dst_cidr\":\"10.4.0.0/16\",\"proto\":\"udp\",\"port\":53},"
          "{\"dst_cidr\":\"10.4.4.0/24\",\"proto\":\"tcp\",\"port\":80}]}");
    struct frame_spec f = V4(F_TCP, "192.168.1.1", 1000, "10.1.2.3", 443);
    assert_int_equal(eg(&f), TV_PASS);
    f.proto = F_UDP;
    assert_int_equal(eg(&f), TV_PASS);
    f.dport = 444;
    assert_int_equal(eg(&f), TV_DROP);
    f.proto = F_ICMP;
    f.icmp_type = 8;
    assert_int_equal(eg(&f), TV_DROP);
    struct frame_spec t = V4(F_TCP, "192.168.1.1", 1000, "10.2.9.9", 12345);
    assert_int_equal(eg(&t), TV_PASS);
    t.proto = F_UDP;
    assert_int_equal(eg(&t), TV_DROP);
    struct frame_spec a = V4(F_GRE, "192.168.1.1", 0, "10.3.1.1", 0);
    assert_int_equal(eg(&a), TV_PASS);
    a.proto = F_UDP;
    a.dport = 9;
    assert_int_equal(eg(&a), TV_PASS);
    /* Nested prefixes of different classes: the /24 tcp-80 rule must not
     * hide the /16 udp-53 rule, and vice versa. */
    struct frame_spec n = V4(F_UDP, "192.168.1.1", 1000, "10.4.4.4", 53);
    assert_int_equal(eg(&n), TV_PASS);
    n.proto = F_TCP;
    n.dport = 80;
    assert_int_equal(eg(&n), TV_PASS);
    n.dport = 53;
    assert_int_equal(eg(&n), TV_DROP);
    struct frame_spec m = V4(F_TCP, "192.168.1.1", 1000, "10.4.5.4", 80);
    assert_int_equal(eg(&m), TV_DROP);
}

static void test_deny_list_both_directions(void **state)
{
    (void)state;
    apply(
        "{\"version\":3,\"service_id\":1,\"ttl_seconds\":3600,\"egress_mode\":\"deny\","
        "\"ingress_mode\":\"deny\","
        "\"deny\":[{\"cidr\":\"1.2.3.4/32\",\"proto\":\"icmp\",\"id\":10},"
        "{\"cidr\":\"5.6.0.0/16\",\"proto\":\"tcp\",\"port\":80,\"id\":11},"
        "{\"cidr\":\"2001:db8:bad::/48\",\"proto\":\"any\",\"direction\":\"ingress\",\"id\":12}]}");
    struct frame_spec p = V4(F_ICMP, "192.168.1.1", 1, "1.2.3.4", 0);
    p.icmp_type = 8;
    assert_int_equal(eg(&p), TV_DROP);
    struct frame_spec t = V4(F_TCP, "192.168.1.1", 1000, "1.2.3.4", 80);
    assert_int_equal(eg(&t), TV_PASS);
    /* Ingress: CIDR matches the source, port is the destination port. */
    struct frame_spec i1 = V4(F_TCP, "5.6.7.8", 40000, "192.168.1.1", 80);
    assert_int_equal(in(&i1), TV_DROP);
    struct frame_spec i2 = V4(F_TCP, "5.6.7.8", 80, "192.168.1.1", 40000);
    assert_int_equal(in(&i2), TV_PASS);
    struct frame_spec e1 = V4(F_TCP, "192.168.1.1", 40000, "5.6.7.8", 80);
    assert_int_equal(eg(&e1), TV_DROP);
    struct frame_spec i6 = V6(F_UDP, "2001:db8:bad::1", 1, "2001:db8::2", 2);
    assert_int_equal(in(&i6), TV_DROP);
    struct frame_spec e6 = V6(F_UDP, "2001:db8::2", 2, "2001:db8:bad::1", 1);
    assert_int_equal(eg(&e6), TV_PASS); /* ingress-only rule */
    uint64_t pk[3], by[3];
    assert_int_equal(aegis_bpf_rule_counters(B, pk, by, 3), 0);
    assert_int_equal(pk[0], 1);
    assert_int_equal(pk[1], 2);
    assert_int_equal(pk[2], 1);
}

static void test_replies_pass_allow_list(void **state)
{
    (void)state;
    apply("{\"version\":4,\"service_id\":1,\"ttl_seconds\":3600,\"egress_mode\":\"allow\","
          "\"ingress_mode\":\"allow\","
          "\"edges\":[{\"dst_cidr\":\"10.10.20.0/24\",\"proto\":\"tcp\",\"port\":5432},"
          "{\"dst_cidr\":\"10.10.30.0/24\",\"proto\":\"icmp\"}],"
          "\"allow_cidrs\":[{\"cidr\":\"0.0.0.0/0\",\"proto\":\"tcp\",\"port\":22,"
          "\"direction\":\"ingress\"}]}");
    struct aegis_bpf_stats s0, s1;
    assert_int_equal(aegis_bpf_stats(B, &s0), 0);
    struct frame_spec reply = V4(F_TCP, "10.10.20.5", 5432, "192.168.1.1", 40000);
    assert_int_equal(in(&reply), TV_DROP); /* nothing opened yet */
    struct frame_spec out = V4(F_TCP, "192.168.1.1", 40000, "10.10.20.5", 5432);
    assert_int_equal(eg(&out), TV_PASS);
    assert_int_equal(in(&reply), TV_PASS);
    reply.dport = 40001;
    assert_int_equal(in(&reply), TV_DROP);
    /* An ingress packet never opens a flow for more ingress packets. */
    struct frame_spec rev = V4(F_TCP, "10.10.20.5", 40000, "192.168.1.1", 5432);
    assert_int_equal(in(&rev), TV_DROP);
    /* ICMP echo: the reply with the same identifier passes. */
    struct frame_spec req = V4(F_ICMP, "192.168.1.1", 77, "10.10.30.1", 0);
    req.icmp_type = 8;
    assert_int_equal(eg(&req), TV_PASS);
    struct frame_spec rep = V4(F_ICMP, "10.10.30.1", 77, "192.168.1.1", 0);
    rep.icmp_type = 0;
    assert_int_equal(in(&rep), TV_PASS);
    rep.sport = 78;
    assert_int_equal(in(&rep), TV_DROP);
    /* Flow opened by an allowed ingress packet: the egress reply passes. */
    struct frame_spec sshin = V4(F_TCP, "203.0.113.9", 50000, "192.168.1.1", 22);
    assert_int_equal(in(&sshin), TV_PASS);
    struct frame_spec sshout = V4(F_TCP, "192.168.1.1", 22, "203.0.113.9", 50000);
    assert_int_equal(eg(&sshout), TV_PASS);
    sshout.dport = 50001;
    assert_int_equal(eg(&sshout), TV_DROP);
    assert_int_equal(aegis_bpf_stats(B, &s1), 0);
    assert_int_equal(s1.pass_flow[1] - s0.pass_flow[1], 2);
    assert_int_equal(s1.pass_flow[0] - s0.pass_flow[0], 1);
    assert_true(s1.flows_new[0] - s0.flows_new[0] >= 2);
}

static void test_fragments(void **state)
{
    (void)state;
    apply(ALLOW);
    struct frame_spec first = V4(F_TCP, "192.168.1.1", 40000, "10.10.20.5", 5432);
    first.frag = 1;
    first.frag_id = 0x1234;
    assert_int_equal(eg(&first), TV_PASS);
    struct frame_spec later = first;
    later.frag = 2;
    assert_int_equal(eg(&later), TV_PASS); /* ports remembered from the first */
    later.frag_id = 0x1235;
    assert_int_equal(eg(&later), TV_DROP); /* unknown datagram: no ports, no rule */
    struct frame_spec f6 = V6(F_UDP, "2001:db9::1", 5353, "2001:db8::53", 53);
    f6.frag = 1;
    f6.frag_id = 0xabcdef01;
    f6.v6_ext = 1;
    assert_int_equal(eg(&f6), TV_PASS);
    f6.frag = 2;
    assert_int_equal(eg(&f6), TV_PASS);
    f6.frag_id = 0xabcdef02;
    assert_int_equal(eg(&f6), TV_DROP);

    /* Deny-list: later fragments of a denied datagram are dropped too. */
    apply("{\"version\":5,\"service_id\":1,\"ttl_seconds\":3600,\"egress_mode\":\"deny\","
          "\"deny\":[{\"cidr\":\"5.6.0.0/16\",\"proto\":\"udp\",\"port\":9999}]}");
    struct frame_spec d = V4(F_UDP, "192.168.1.1", 1000, "5.6.7.8", 9999);
    d.frag = 1;
    d.frag_id = 0x4321;
    assert_int_equal(eg(&d), TV_DROP);
    d.frag = 2;
    assert_int_equal(eg(&d), TV_DROP);
    d.frag_id = 0x4322; /* never saw its first fragment: cannot match a port rule */
    assert_int_equal(eg(&d), TV_PASS);
}

static void test_malformed(void **state)
{
    (void)state;
    apply(ALLOW);
    /* bpf_prog_test_run itself refuses a cut IP header, so cut the TCP one. */
    struct frame_spec t = V4(F_TCP, "192.168.1.1", 40000, "10.10.20.5", 5432);
    t.truncate = 14 + 20 + 2;
    assert_int_equal(eg(&t), TV_DROP);
    /* IHL below 5. */
    uint8_t buf[256];
    t.truncate = 0;
    size_t len = frame_build(&t, buf);
    buf[14] = 0x44;
    assert_int_equal(prog_run(aegis_bpf_prog_fd(B, AEGIS_BPF_EGRESS), buf, len, 1, NULL), TV_DROP);
    struct frame_spec l = V6(F_UDP, "2001:db9::1", 5353, "2001:db8::53", 53);
    l.v6_ext = 9; /* longer chain than the parser walks */
    assert_int_equal(eg(&l), TV_DROP);
}

static void test_ttl_fail_open(void **state)
{
    (void)state;
    /* Applied 61 s ago with a 60 s TTL: expired. */
    const char *allow_open =
        "{\"version\":5,\"service_id\":1,\"ttl_seconds\":60,\"expiry_action\":\"fail_open\","
        "\"edges\":[{\"dst_cidr\":\"10.10.20.0/24\",\"proto\":\"tcp\",\"port\":5432}]}";
    apply(allow_open);
    struct frame_spec bad0 = V4(F_TCP, "192.168.1.1", 40000, "10.10.21.5", 5432);
    assert_int_equal(eg(&bad0), TV_DROP);
    apply_aged(allow_open, 61);
    struct frame_spec bad = V4(F_TCP, "192.168.1.1", 40000, "10.10.21.5", 5432);
    assert_int_equal(eg(&bad), TV_PASS);
    struct aegis_bpf_status st;
    assert_int_equal(aegis_bpf_status(B, &st), 0);
    assert_true(st.active.expires_ns < aegis_now());
}

static void test_ttl_fail_closed(void **state)
{
    (void)state;
    const char *allow_closed =
        "{\"version\":6,\"service_id\":1,\"ttl_seconds\":60,\"expiry_action\":\"fail_closed\","
        "\"edges\":[{\"dst_cidr\":\"10.10.20.0/24\",\"proto\":\"tcp\",\"port\":5432}]}";
    struct frame_spec ok = V4(F_TCP, "192.168.1.1", 40000, "10.10.20.5", 5432);
    apply(allow_closed);
    assert_int_equal(eg(&ok), TV_PASS);
    apply_aged(allow_closed, 61);
    assert_int_equal(eg(&ok), TV_DROP);
    /* A deny-list stays enforced after expiry with fail_closed. */
    const char *deny_closed =
        "{\"version\":7,\"service_id\":1,\"ttl_seconds\":60,\"expiry_action\":\"fail_closed\","
        "\"egress_mode\":\"deny\",\"deny\":[{\"cidr\":\"5.6.0.0/16\"}]}";
    apply_aged(deny_closed, 61);
    struct frame_spec d = V4(F_TCP, "192.168.1.1", 1, "5.6.7.8", 2);
    assert_int_equal(eg(&d), TV_DROP);
    assert_int_equal(eg(&ok), TV_PASS);
}

static void test_rule_ttl(void **state)
{
    (void)state;
    /* Snapshot good for an hour; edge 0 lives 60 s and was applied 61 s ago. */
    apply_aged("{\"version\":8,\"service_id\":1,\"ttl_seconds\":3600,"
               "\"edges\":[{\"dst_cidr\":\"10.10.20.0/24\",\"proto\":\"tcp\",\"port\":5432,"
               "\"ttl_seconds\":60},"
               "{\"dst_cidr\":\"10.10.30.0/24\",\"proto\":\"tcp\",\"port\":5432}]}",
               61);
    struct frame_spec a = V4(F_TCP, "192.168.1.1", 40000, "10.10.20.5", 5432);
    assert_int_equal(eg(&a), TV_DROP);
    struct frame_spec b = V4(F_TCP, "192.168.1.1", 40000, "10.10.30.5", 5432);
    assert_int_equal(eg(&b), TV_PASS);
}

static void test_rollback(void **state)
{
    (void)state;
    apply(ALLOW); /* v1: allow-list */
    apply("{\"version\":9,\"service_id\":1,\"ttl_seconds\":3600,\"egress_mode\":\"deny\","
          "\"deny\":[{\"cidr\":\"10.10.20.0/24\"}]}");
    struct frame_spec t = V4(F_TCP, "192.168.1.1", 40000, "10.10.20.5", 5432);
    struct frame_spec u = V4(F_TCP, "192.168.1.1", 40000, "10.99.0.1", 80);
    assert_int_equal(eg(&t), TV_DROP);
    assert_int_equal(eg(&u), TV_PASS);
    struct aegis_bpf_status st;
    assert_int_equal(aegis_bpf_status(B, &st), 0);
    assert_int_equal(st.active.version, 9);
    assert_int_equal(st.previous.version, 1);
    assert_int_equal(aegis_bpf_rollback(B, NULL, 0), 0);
    assert_int_equal(eg(&t), TV_PASS);
    assert_int_equal(eg(&u), TV_DROP);
    assert_int_equal(aegis_bpf_status(B, &st), 0);
    assert_int_equal(st.active.version, 1);
    assert_false(st.previous.present);
    char err[128] = "";
    assert_int_equal(aegis_bpf_rollback(B, err, sizeof(err)), AEGIS_ERR_STATE);
    assert_non_null(strstr(err, "no previous version"));
}

static void test_invalid_policy_changes_nothing(void **state)
{
    (void)state;
    apply(ALLOW);
    struct aegis_policy *p;
    assert_int_equal(aegis_policy_new(NULL, &p), 0);
    p->version = 10;
    p->ttl_seconds = 30; /* below the minimum */
    char err[200] = "";
    assert_int_equal(aegis_bpf_apply(B, p, aegis_now(), err, sizeof(err)), AEGIS_ERR_CONFIG);
    assert_non_null(strstr(err, "ttl_seconds"));
    aegis_policy_del(p);
    struct aegis_bpf_status st;
    assert_int_equal(aegis_bpf_status(B, &st), 0);
    assert_int_equal(st.active.version, 1);
}

int main(void)
{
    if (tenv_setup(pin_dir, sizeof(pin_dir)) != 0)
        return 1;
    struct aegis_bpf_config cfg;
    aegis_bpf_config_default(&cfg);
    cfg.pin_dir = pin_dir;
    char err[512] = "";
    int rv = aegis_bpf_open(&cfg, &B, err, sizeof(err));
    if (rv == -EPERM) {
        printf("SKIP: root without CAP_BPF/CAP_NET_ADMIN (container?): %s\n", err);
        return 77;
    }
    if (rv) {
        fprintf(stderr, "aegis_bpf_open: %s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_policy_passes),
        cmocka_unit_test(test_allow_list_egress),
        cmocka_unit_test(test_wildcards),
        cmocka_unit_test(test_deny_list_both_directions),
        cmocka_unit_test(test_replies_pass_allow_list),
        cmocka_unit_test(test_fragments),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_ttl_fail_open),
        cmocka_unit_test(test_ttl_fail_closed),
        cmocka_unit_test(test_rule_ttl),
        cmocka_unit_test(test_rollback),
        cmocka_unit_test(test_invalid_policy_changes_nothing),
    };
    rv = cmocka_run_group_tests(tests, NULL, NULL);
    aegis_bpf_close(B);
    return rv;
}
