/*
 * Loader: privileges, bpffs, skeleton load with pinned maps, program pins.
 */
#include <aegis/err.h>
#include <aegis/tstamp.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bpf_internal.h"

#ifndef BPF_FS_MAGIC
#    define BPF_FS_MAGIC 0xcafe4a11
#endif
#ifndef CAP_BPF
#    define CAP_BPF 39
#endif

/* libbpf reports details through a global print callback. A library must
 * not write to stderr, so the last warning is kept (per thread) and appended
 * to the error message of the call that failed. */
static __thread char last_libbpf_msg[256];

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    if (level == LIBBPF_DEBUG)
        return 0;
    vsnprintf(last_libbpf_msg, sizeof(last_libbpf_msg), fmt, ap);
    size_t n = strlen(last_libbpf_msg);
    while (n && (last_libbpf_msg[n - 1] == '\n' || last_libbpf_msg[n - 1] == ' '))
        last_libbpf_msg[--n] = '\0';
    return 0;
}

int aegis_bpf__fail(char *err, size_t errlen, int rv, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        if (last_libbpf_msg[0]) {
            size_t n = strlen(err);
            if (n < errlen)
                snprintf(err + n, errlen - n, " [libbpf: %s]", last_libbpf_msg);
        }
    }
    last_libbpf_msg[0] = '\0';
    return rv;
}

void aegis_bpf_config_default(struct aegis_bpf_config *config)
{
    memset(config, 0, sizeof(*config));
    config->pin_dir = AEGIS_BPF_DEFAULT_PIN_DIR;
    aegis_policy_limits_default(&config->limits);
    config->flow_idle_ns = AEGIS_BPF_DEFAULT_FLOW_IDLE_S * AEGIS_NS_PER_S;
}

static int cap_effective(unsigned cap, const struct __user_cap_data_struct *d)
{
    return (d[cap / 32].effective >> (cap % 32)) & 1u;
}

static int check_privileges(char *err, size_t errlen)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capget, &h, d) != 0)
        return 0; /* cannot tell: let the kernel decide */
    int bpf = cap_effective(CAP_BPF, d) || cap_effective(CAP_SYS_ADMIN, d);
    int net = cap_effective(CAP_NET_ADMIN, d);
    if (bpf && net)
        return 0;
    return aegis_bpf__fail(err, errlen, -EPERM,
                           "loading BPF programs needs root or CAP_BPF+CAP_NET_ADMIN (uid %u lacks "
                           "%s): run as root, e.g. with sudo",
                           (unsigned)geteuid(),
                           !bpf && !net ? "both"
                           : !bpf       ? "CAP_BPF"
                                        : "CAP_NET_ADMIN");
}

static int check_bpffs(const char *dir, char *err, size_t errlen)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", dir);
    struct statfs fs;
    if (statfs(parent, &fs) == 0 && (unsigned long)fs.f_type == BPF_FS_MAGIC)
        return 0;
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent)
        *slash = '\0';
    else if (slash)
        slash[1] = '\0';
    if (statfs(parent, &fs) == 0 && (unsigned long)fs.f_type == BPF_FS_MAGIC)
        return 0;
    return aegis_bpf__fail(err, errlen, -ENOENT,
                           "%s is not on a mounted bpffs: mount it with `mount -t bpf bpf %s` "
                           "(or pick a pin directory on bpffs)",
                           dir, parent);
}

static int pin_progs(struct aegis_bpf *b, int upgrade, char *err, size_t errlen)
{
    struct bpf_program *progs[2] = {b->skel->progs.aegis_egress, b->skel->progs.aegis_ingress};
    static const char *const names[2] = {"prog_egress", "prog_ingress"};
    for (unsigned d = 0; d < 2; d++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", b->pin_dir, names[d]);
        if (!upgrade) {
            int fd = bpf_obj_get(path);
            if (fd >= 0) {
                b->prog_fd[d] = fd;
                continue;
            }
        }
        int fd = fcntl(bpf_program__fd(progs[d]), F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
            return aegis_bpf__fail(err, errlen, -errno, "cannot duplicate program fd: %s",
                                   strerror(errno));
        int rv = aegis_bpf__retarget(b, d, fd, err, errlen);
        if (rv) {
            close(fd);
            return rv;
        }
        if (unlink(path) != 0 && errno != ENOENT) {
            rv = -errno;
            close(fd);
            return aegis_bpf__fail(err, errlen, rv, "cannot replace %s: %s", path, strerror(-rv));
        }
        if (bpf_obj_pin(fd, path) != 0) {
            rv = -errno;
            close(fd);
            return aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot pin %s: %s", path,
                                   strerror(-rv));
        }
        b->prog_fd[d] = fd;
    }
    return 0;
}

int aegis_bpf_open(const struct aegis_bpf_config *config, struct aegis_bpf **pbpf, char *err,
                   size_t errlen)
{
    struct aegis_bpf_config defc;
    if (!config) {
        aegis_bpf_config_default(&defc);
        config = &defc;
    }
    if (!pbpf)
        return -EINVAL;
    const char *dir = config->pin_dir ? config->pin_dir : AEGIS_BPF_DEFAULT_PIN_DIR;
    libbpf_set_print(libbpf_print);
    last_libbpf_msg[0] = '\0';
    int rv = check_privileges(err, errlen);
    if (rv)
        return rv;
    if ((rv = check_bpffs(dir, err, errlen)))
        return rv;
    struct aegis_bpf *b = aegis_calloc(config->mem, 1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->mem = config->mem;
    b->prog_fd[0] = b->prog_fd[1] = -1;
    b->limits = config->limits;
    b->flow_idle_ns = config->flow_idle_ns;
    b->force_tc = config->force_tc;
    if (strlen(dir) >= sizeof(b->pin_dir)) {
        rv = aegis_bpf__fail(err, errlen, -ENAMETOOLONG, "pin directory path too long: %s", dir);
        goto fail;
    }
    snprintf(b->pin_dir, sizeof(b->pin_dir), "%s", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rv = aegis_bpf__fail(err, errlen, -errno, "cannot create pin directory %s: %s", dir,
                             strerror(errno));
        goto fail;
    }
    b->ncpus = libbpf_num_possible_cpus();
    if (b->ncpus <= 0) {
        rv = aegis_bpf__fail(err, errlen, AEGIS_ERR_BPF, "cannot count possible CPUs");
        goto fail;
    }
    LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = b->pin_dir);
    b->skel = aegis_tc__open_opts(&oo);
    if (!b->skel) {
        rv = aegis_bpf__fail(err, errlen, errno == ENOMEM ? -ENOMEM : AEGIS_ERR_BPF,
                             "cannot open the embedded BPF object");
        goto fail;
    }
    rv = aegis_tc__load(b->skel);
    if (rv) {
        int e = rv;
        rv = aegis_bpf__fail(err, errlen, e == -EPERM ? -EPERM : AEGIS_ERR_BPF,
                             "cannot load the BPF programs with maps pinned in %s: %s (if the "
                             "pins come from another build, run `aegis-bpf purge --pin-dir %s`)",
                             b->pin_dir, strerror(-e), b->pin_dir);
        goto fail;
    }
    if ((rv = pin_progs(b, config->upgrade, err, errlen)))
        goto fail;
    *pbpf = b;
    return 0;
fail:
    aegis_bpf_close(b);
    return rv;
}

void aegis_bpf_close(struct aegis_bpf *bpf)
{
    if (!bpf)
        return;
    for (int d = 0; d < 2; d++)
        if (bpf->prog_fd[d] >= 0)
            close(bpf->prog_fd[d]);
    aegis_tc__destroy(bpf->skel);
    aegis_free(bpf->mem, bpf);
}

int aegis_bpf_prog_fd(const struct aegis_bpf *bpf, unsigned dir)
{
    if (!bpf)
        return -EINVAL;
    if (dir == AEGIS_BPF_EGRESS)
        return bpf->prog_fd[AEGIS_ABI_EGRESS];
    if (dir == AEGIS_BPF_INGRESS)
        return bpf->prog_fd[AEGIS_ABI_INGRESS];
    return -EINVAL;
}

uint64_t aegis_bpf_last_publish_ns(const struct aegis_bpf *bpf)
{
    return bpf->last_publish_ns;
}

uint64_t aegis_bpf_last_swap_ns(const struct aegis_bpf *bpf)
{
    return bpf->last_swap_ns;
}

int aegis_bpf_purge(const struct aegis_bpf_config *config, char *err, size_t errlen)
{
    struct aegis_bpf *b;
    int rv = aegis_bpf_open(config, &b, err, errlen);
    if (rv)
        return rv;
    rv = aegis_bpf_detach(b, NULL, AEGIS_BPF_BOTH, err, errlen);
    if (rv == AEGIS_ERR_NOT_FOUND)
        rv = 0;
    static const char *const names[] = {
        "prog_egress", "prog_ingress", "aegis_rules", "aegis_rcount", "aegis_slots", "aegis_active",
        "aegis_flows", "aegis_frags",  "aegis_stats", "aegis_ctl",    "aegis_attach"};
    for (size_t i = 0; !rv && i < sizeof(names) / sizeof(names[0]); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", b->pin_dir, names[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            rv =
                aegis_bpf__fail(err, errlen, -errno, "cannot remove %s: %s", path, strerror(errno));
    }
    if (!rv && rmdir(b->pin_dir) != 0 && errno != ENOENT)
        rv = aegis_bpf__fail(err, errlen, -errno, "cannot remove %s: %s (foreign pins inside?)",
                             b->pin_dir, strerror(errno));
    aegis_bpf_close(b);
    return rv;
}
