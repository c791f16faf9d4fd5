/*
 * aegis-bench-bpf: per-packet cost of the TC program (bpf_prog_test_run on
 * crafted frames) for hit and miss with 1, 1,000 and 10,000 rules, time to
 * publish a 10,000-rule snapshot, and the version switch alone.
 * Prints "RESULT mode=bpf ..." lines; asserts nothing. Needs root.
 */
#include <aegis/bpf.h>
#include <aegis/policy.h>
#include <aegis/tstamp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpf_testenv.h"

/* Test-run repetitions per measurement: enough to average out the syscall
 * (~1 us) over ~100 ms of in-kernel runs. */
#define REPEAT 1000000u
/* Applies averaged for publish and swap times. */
#define APPLIES 10

static struct aegis_policy *make_policy(unsigned nrules, uint64_t version)
{
    struct aegis_policy *p;
    if (aegis_policy_new(NULL, &p))
        return NULL;
    p->version = version;
    p->ttl_seconds = 3600;
    p->egress_mode = AEGIS_POLICY_MODE_ALLOW;
    /* Host rules 10.a.b.c/32 tcp 443 spread over the space, plus (from 4
     * rules on) one rule of each other class so a miss walks all four
     * wildcard lookups. */
    unsigned extra = nrules >= 4 ? 3 : 0;
    for (unsigned i = 0; i < nrules - extra; i++) {
        struct aegis_policy_rule r;
        memset(&r, 0, sizeof(r));
        r.family = 4;
        r.prefixlen = 32;
        uint32_t h = i * 2654435761u;
        r.addr[0] = 10;
        r.addr[1] = (uint8_t)(h >> 24);
        r.addr[2] = (uint8_t)(h >> 16);
        r.addr[3] = (uint8_t)i;
        r.proto = AEGIS_POLICY_PROTO_TCP;
        r.port = 443;
        r.id = i + 1;
        if (aegis_policy_add_rule(p, AEGIS_POLICY_EDGES, &r))
            goto fail;
    }
    static const char *const more[3] = {"172.16.0.0/12", "172.16.0.0/12", "172.16.0.0/12"};
    static const uint32_t protos[3] = {AEGIS_POLICY_PROTO_TCP, AEGIS_POLICY_PROTO_ANY,
                                       AEGIS_POLICY_PROTO_ANY};
    static const uint32_t ports[3] = {0, 8080, 0};
    for (unsigned i = 0; i < extra; i++) {
        struct aegis_policy_rule r;
        memset(&r, 0, sizeof(r));
        aegis_policy_parse_cidr(more[i], &r, NULL, 0);
        r.proto = protos[i];
        r.port = ports[i];
        if (aegis_policy_add_rule(p, AEGIS_POLICY_ALLOW_CIDRS, &r))
            goto fail;
    }
    return p;
fail:
    aegis_policy_del(p);
    return NULL;
}

static int run(struct aegis_bpf *b, const char *dst, uint32_t *ns, int *verdict)
{
    struct frame_spec s = {
        .src = "192.168.1.1", .dst = dst, .proto = F_TCP, .sport = 40000, .dport = 443};
    uint8_t buf[256];
    size_t len = frame_build(&s, buf);
    *verdict = prog_run(aegis_bpf_prog_fd(b, AEGIS_BPF_EGRESS), buf, len, REPEAT, ns);
    return *verdict == -1000 ? -1 : 0;
}

int main(void)
{
    char pin[256], err[512] = "";
    if (tenv_setup(pin, sizeof(pin)))
        return 1;
    struct aegis_bpf_config cfg;
    aegis_bpf_config_default(&cfg);
    cfg.pin_dir = pin;
    cfg.limits.max_rules = AEGIS_POLICY_RULES_HARD_MAX;
    struct aegis_bpf *b;
    if (aegis_bpf_open(&cfg, &b, err, sizeof(err))) {
        fprintf(stderr, "aegis-bench-bpf: %s\n", err);
        return 1;
    }
    uint32_t ns;
    int v;
    if (run(b, "10.0.0.1", &ns, &v))
        return 1;
    printf("RESULT mode=bpf case=no_policy rules=0 ns_per_packet=%u\n", ns);

    static const unsigned sizes[] = {1, 1000, 10000};
    uint64_t version = 1;
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        unsigned n = sizes[k];
        uint64_t pub = 0, swap = 0, total = 0;
        for (int a = 0; a < APPLIES; a++) {
            struct aegis_policy *p = make_policy(n, version++);
            if (!p)
                return 1;
            uint64_t t0 = aegis_now();
            if (aegis_bpf_apply(b, p, aegis_now(), err, sizeof(err))) {
                fprintf(stderr, "apply: %s\n", err);
                return 1;
            }
            total += aegis_now() - t0;
            pub += aegis_bpf_last_publish_ns(b);
            swap += aegis_bpf_last_swap_ns(b);
            aegis_policy_del(p);
        }
        printf("RESULT mode=bpf case=publish rules=%u publish_us=%.1f apply_total_us=%.1f "
               "swap_us=%.2f\n",
               n, (double)pub / APPLIES / 1e3, (double)total / APPLIES / 1e3,
               (double)swap / APPLIES / 1e3);
        /* Hit: the first host rule (h = 0: 10.0.0.0). */
        if (run(b, "10.0.0.0", &ns, &v))
            return 1;
        printf("RESULT mode=bpf case=hit rules=%u ns_per_packet=%u verdict=%s\n", n, ns,
               v == TV_PASS ? "pass" : "drop");
        if (run(b, "192.168.77.1", &ns, &v))
            return 1;
        printf("RESULT mode=bpf case=miss rules=%u ns_per_packet=%u verdict=%s\n", n, ns,
               v == TV_PASS ? "pass" : "drop");
    }
    /* Rollback is the switch alone. */
    uint64_t t0 = aegis_now();
    if (aegis_bpf_rollback(b, err, sizeof(err))) {
        fprintf(stderr, "rollback: %s\n", err);
        return 1;
    }
    printf("RESULT mode=bpf case=rollback rules=10000 rollback_us=%.1f\n",
           (double)(aegis_now() - t0) / 1e3);
    aegis_bpf_close(b);
    return 0;
}
