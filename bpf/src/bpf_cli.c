/*
 * aegis-bpf: operator/debug CLI on libaegis_bpf.
 *
 *   aegis-bpf [--pin-dir DIR] COMMAND [ARGS]
 *     load [--upgrade]                  load programs, pin state
 *     attach --dev IF [--dir D] [--tc]  D = egress | ingress | both (default both)
 *     detach [--dev IF] [--dir D]       remove only our attachments
 *     apply FILE.json [--backdate S]    validate, compile, switch ("-" = stdin)
 *     check FILE.json                   validate only (no privileges needed)
 *     rollback | clear | flush-flows
 *     status | stats [--json]
 *     purge                             detach everything, remove the pins
 * Exit status: 0 ok, 1 failure, 2 usage.
 */
#include <aegis/bpf.h>
#include <aegis/err.h>
#include <aegis/policy.h>
#include <aegis/tstamp.h>

#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRLEN 512

static void usage(FILE *f)
{
    fprintf(f, "usage: aegis-bpf [--pin-dir DIR] COMMAND [ARGS]\n"
               "  load [--upgrade]              load programs and pin state in DIR\n"
               "                                (default " AEGIS_BPF_DEFAULT_PIN_DIR ")\n"
               "  attach --dev IF [--dir D] [--tc]\n"
               "                                D: egress|ingress|both (default both);\n"
               "                                --tc: clsact filter even if tcx exists\n"
               "  detach [--dev IF] [--dir D]   remove our attachments (all if no --dev)\n"
               "  apply FILE.json [--backdate S] validate, compile and switch (- = stdin);\n"
               "                                --backdate starts the TTLs S seconds ago\n"
               "                                (to test expiry without waiting)\n"
               "  check FILE.json               validate only\n"
               "  rollback                      back to the version the last apply replaced\n"
               "  clear                         stop enforcing (rollback restores)\n"
               "  flush-flows                   forget tracked reply flows\n"
               "  status                        versions and attachments\n"
               "  stats [--json]                counters (global and per rule)\n"
               "  purge                         detach everything and remove the pins\n");
}

static int die(const char *what, int rv, const char *msg)
{
    fprintf(stderr, "aegis-bpf: %s failed: %s\n", what, msg && *msg ? msg : aegis_strerror(rv));
    return 1;
}

static int read_file(const char *path, size_t max, char **pbuf, size_t *plen)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return -errno;
    char *buf = malloc(max + 1);
    if (!buf) {
        if (f != stdin)
            fclose(f);
        return -ENOMEM;
    }
    size_t n = fread(buf, 1, max + 1, f);
    int bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (bad) {
        free(buf);
        return -EIO;
    }
    if (n > max) {
        free(buf);
        return AEGIS_ERR_TOO_LARGE;
    }
    buf[n] = '\0';
    *pbuf = buf;
    *plen = n;
    return 0;
}

static int load_policy(const char *path, const struct aegis_policy_limits *lim,
                       struct aegis_policy **pp)
{
    char *buf = NULL;
    size_t len = 0;
    int rv = read_file(path, lim->max_json_bytes, &buf, &len);
    if (rv) {
        fprintf(stderr, "aegis-bpf: cannot read policy %s: %s\n", path,
                rv == AEGIS_ERR_TOO_LARGE ? "larger than the policy size limit"
                                          : aegis_strerror(rv));
        return 1;
    }
    char err[ERRLEN] = "";
    rv = aegis_policy_from_json(buf, len, lim, NULL, pp, err, sizeof(err));
    free(buf);
    if (rv) {
        fprintf(stderr, "aegis-bpf: policy %s rejected: %s\n", path, err);
        return 1;
    }
    return 0;
}

static unsigned parse_dir(const char *s)
{
    if (strcmp(s, "egress") == 0)
        return AEGIS_BPF_EGRESS;
    if (strcmp(s, "ingress") == 0)
        return AEGIS_BPF_INGRESS;
    if (strcmp(s, "both") == 0)
        return AEGIS_BPF_BOTH;
    return 0;
}

static void print_version(const char *name, const struct aegis_bpf_version *v, uint64_t now)
{
    if (!v->present) {
        printf("%s: none\n", name);
        return;
    }
    long long left = v->expires_ns > now ? (long long)((v->expires_ns - now) / AEGIS_NS_PER_S)
                                         : -(long long)((now - v->expires_ns) / AEGIS_NS_PER_S);
    printf("%s: version=%" PRIu64 " service_id=%" PRIu64 " egress=%s ingress=%s rules=%u "
           "expiry_action=%s expires_in_s=%lld%s\n",
           name, v->version, v->service_id, aegis_policy_mode_name(v->egress_mode),
           aegis_policy_mode_name(v->ingress_mode), v->nrules,
           aegis_policy_expiry_name(v->expiry_action), left, left <= 0 ? " (expired)" : "");
}

static int cmd_stats(struct aegis_bpf *b, int json)
{
    struct aegis_bpf_stats st;
    int rv = aegis_bpf_stats(b, &st);
    if (rv)
        return die("stats", rv, NULL);
    struct aegis_bpf_status s;
    if ((rv = aegis_bpf_status(b, &s)))
        return die("status", rv, NULL);
    size_t n = s.active.present ? s.active.nrules : 0;
    uint64_t *pk = calloc(n ? n : 1, sizeof(*pk)), *by = calloc(n ? n : 1, sizeof(*by));
    if (!pk || !by) {
        free(pk);
        free(by);
        return die("stats", -ENOMEM, NULL);
    }
    if (n && (rv = aegis_bpf_rule_counters(b, pk, by, n))) {
        free(pk);
        free(by);
        return die("rule counters", rv, NULL);
    }
    static const char *const dn[2] = {"egress", "ingress"};
    const struct {
        const char *name;
        const uint64_t *v;
    } f[] = {
        {"packets", st.packets},
        {"pass", st.pass},
        {"drop", st.drop},
        {"drop_rule", st.drop_rule},
        {"drop_default", st.drop_default},
        {"drop_expired", st.drop_expired},
        {"drop_malformed", st.drop_malformed},
        {"pass_rule", st.pass_rule},
        {"pass_flow", st.pass_flow},
        {"pass_expired", st.pass_expired},
        {"pass_control", st.pass_control},
        {"fragments", st.fragments},
        {"flows_new", st.flows_new},
    };
    size_t nf = sizeof(f) / sizeof(f[0]);
    if (json) {
        printf("{");
        for (int d = 0; d < 2; d++) {
            printf("%s\"%s\":{", d ? "," : "", dn[d]);
            for (size_t k = 0; k < nf; k++)
                printf("%s\"%s\":%" PRIu64, k ? "," : "", f[k].name, f[k].v[d]);
            printf("}");
        }
        printf(",\"version\":%" PRIu64 ",\"rules\":[", s.active.present ? s.active.version : 0);
        for (size_t i = 0; i < n; i++)
            printf("%s{\"index\":%zu,\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64 "}", i ? "," : "",
                   i, pk[i], by[i]);
        printf("]}\n");
    } else {
        for (int d = 0; d < 2; d++) {
            printf("%s:", dn[d]);
            for (size_t k = 0; k < nf; k++)
                printf(" %s=%" PRIu64, f[k].name, f[k].v[d]);
            printf("\n");
        }
        for (size_t i = 0; i < n; i++)
            if (pk[i])
                printf("rule index=%zu packets=%" PRIu64 " bytes=%" PRIu64 "\n", i, pk[i], by[i]);
    }
    free(pk);
    free(by);
    return 0;
}

int main(int argc, char **argv)
{
    struct aegis_bpf_config cfg;
    aegis_bpf_config_default(&cfg);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--pin-dir") == 0 && i + 1 < argc) {
            cfg.pin_dir = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[i++];
    const char *dev = NULL, *file = NULL;
    unsigned dirs = AEGIS_BPF_BOTH;
    int json = 0;
    unsigned long backdate_s = 0;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--dev") == 0 && i + 1 < argc) {
            dev = argv[++i];
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dirs = parse_dir(argv[++i]);
            if (!dirs) {
                fprintf(stderr, "aegis-bpf: --dir must be egress, ingress or both\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--backdate") == 0 && i + 1 < argc) {
            char *end;
            backdate_s = strtoul(argv[++i], &end, 10);
            if (*end || backdate_s > 10UL * 365 * 86400) {
                fprintf(stderr, "aegis-bpf: --backdate takes seconds\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--tc") == 0) {
            cfg.force_tc = 1;
        } else if (strcmp(argv[i], "--upgrade") == 0) {
            cfg.upgrade = 1;
        } else if (!file && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0)) {
            file = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (strcmp(cmd, "check") == 0) {
        struct aegis_policy *p;
        if (!file) {
            usage(stderr);
            return 2;
        }
        if (load_policy(file, &cfg.limits, &p))
            return 1;
        printf("ok: version=%" PRIu64 " rules=%zu\n", p->version, aegis_policy_rule_count(p));
        aegis_policy_del(p);
        return 0;
    }
    static const char *const known[] = {"load",  "attach", "detach", "apply",       "rollback",
                                        "clear", "status", "stats",  "flush-flows", "purge"};
    int ok = 0;
    for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
        ok |= strcmp(cmd, known[k]) == 0;
    if (!ok || ((strcmp(cmd, "attach") == 0) && !dev) || (strcmp(cmd, "apply") == 0 && !file)) {
        usage(stderr);
        return 2;
    }
    char err[ERRLEN] = "";
    if (strcmp(cmd, "purge") == 0) {
        int rv = aegis_bpf_purge(&cfg, err, sizeof(err));
        return rv ? die("purge", rv, err) : 0;
    }
    struct aegis_policy *policy = NULL;
    if (strcmp(cmd, "apply") == 0 && load_policy(file, &cfg.limits, &policy))
        return 1;
    struct aegis_bpf *b;
    int rv = aegis_bpf_open(&cfg, &b, err, sizeof(err));
    if (rv) {
        aegis_policy_del(policy);
        return die("load", rv, err);
    }
    int status = 0;
    if (strcmp(cmd, "load") == 0) {
        printf("loaded: pins in %s\n", cfg.pin_dir);
    } else if (strcmp(cmd, "attach") == 0) {
        rv = aegis_bpf_attach(b, dev, dirs, err, sizeof(err));
        status = rv ? die("attach", rv, err) : 0;
    } else if (strcmp(cmd, "detach") == 0) {
        rv = aegis_bpf_detach(b, dev, dirs, err, sizeof(err));
        status = rv ? die("detach", rv, err) : 0;
    } else if (strcmp(cmd, "apply") == 0) {
        uint64_t now = aegis_now();
        uint64_t back = (uint64_t)backdate_s * AEGIS_NS_PER_S;
        rv = aegis_bpf_apply(b, policy, now > back ? now - back : 0, err, sizeof(err));
        if (rv) {
            status = die("apply", rv, err);
        } else {
            printf("applied: version=%" PRIu64 " rules=%zu publish_us=%" PRIu64 " swap_ns=%" PRIu64
                   "\n",
                   policy->version, aegis_policy_rule_count(policy),
                   aegis_bpf_last_publish_ns(b) / 1000, aegis_bpf_last_swap_ns(b));
        }
    } else if (strcmp(cmd, "rollback") == 0) {
        rv = aegis_bpf_rollback(b, err, sizeof(err));
        status = rv ? die("rollback", rv, err) : 0;
    } else if (strcmp(cmd, "clear") == 0) {
        rv = aegis_bpf_clear(b, err, sizeof(err));
        status = rv ? die("clear", rv, err) : 0;
    } else if (strcmp(cmd, "flush-flows") == 0) {
        rv = aegis_bpf_flush_flows(b);
        status = rv ? die("flush-flows", rv, NULL) : 0;
    } else if (strcmp(cmd, "status") == 0) {
        struct aegis_bpf_status s;
        rv = aegis_bpf_status(b, &s);
        if (rv) {
            status = die("status", rv, NULL);
        } else {
            uint64_t now = aegis_now();
            print_version("active", &s.active, now);
            print_version("previous", &s.previous, now);
            printf("applies: %" PRIu64 "\n", s.applies);
            for (size_t k = 0; k < s.nattach; k++) {
                char name[IF_NAMESIZE] = "?";
                if_indextoname(s.attach[k].ifindex, name);
                printf("attached: dev=%s ifindex=%u dir=%s via=%s\n", name, s.attach[k].ifindex,
                       s.attach[k].dir == AEGIS_BPF_EGRESS ? "egress" : "ingress",
                       s.attach[k].tcx ? "tcx" : "clsact");
            }
        }
    } else if (strcmp(cmd, "stats") == 0) {
        status = cmd_stats(b, json);
    }
    aegis_bpf_close(b);
    aegis_policy_del(policy);
    return status;
}
