/*
 * aegis-certs: the fleet PKI tool (DESIGN §4). Makes the fleet CA and the
 * server, operator, agent and bootstrap certificates, and prints SPKI pins.
 *
 * Private keys are created here and written 0600 through a temporary file,
 * fsync and link/rename, so a crash never leaves a half-written key and an
 * existing key is never replaced without --force. Exit codes: 0 ok,
 * 1 runtime failure, 2 usage error.
 */
#include <aegis/err.h>
#include <aegis/mem.h>
#include <aegis/pki.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROG "aegis-certs"
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

/* Default output directory when neither --dir nor $AEGIS_PKI_DIR is given. */
#define DEFAULT_DIR "pki"
#define DEFAULT_CA_NAME "Aegis Fleet CA"
/* Largest input file read: PEM files here are a few KiB; the library
 * refuses more than 256 KiB anyway. */
#define MAX_INPUT_FILE (256 * 1024)
/* --days upper bound: 100 years is beyond any sane certificate lifetime. */
#define MAX_DAYS 36500
/* Names accepted in file names (operator-NAME, agent-ID) and --out. */
#define MAX_BASENAME 64
/* SAN entries on the command line; matches the library's limit. */
#define MAX_SANS 32
/* Backdating of not_before for clock skew, as the library's default. */
#define SKEW_SECONDS (5 * 60)

enum cmd { CMD_INIT, CMD_SERVER, CMD_OPERATOR, CMD_AGENT, CMD_CLIENT, CMD_SELF, CMD_PIN, CMD_SHOW };

/* Option bits: which flags each command takes. */
enum {
    O_DIR = 1 << 0,
    O_ALGO = 1 << 1,
    O_NAME = 1 << 2,
    O_IP = 1 << 3,
    O_OUT = 1 << 4,
    O_FORCE = 1 << 5,
    O_DAYS = 1 << 6,
    O_NB = 1 << 7,
    O_NA = 1 << 8,
};
#define O_VALIDITY (O_DAYS | O_NB | O_NA)

struct cmd_info {
    const char *name;
    enum cmd cmd;
    unsigned opts;
    const char *usage;
};

static const struct cmd_info cmds[] = {
    {"init", CMD_INIT, O_DIR | O_ALGO | O_NAME | O_FORCE | O_VALIDITY,
     "usage: " PROG " init [--dir D] [--algo ed25519|p256] [--name CN] [--force]\n"
     "                   [--days N | --not-before T --not-after T]\n"
     "Create the fleet CA: D/ca.key (private, 0600) and D/ca.pem.\n"
     "  --name CN   CA common name (default \"" DEFAULT_CA_NAME "\")\n"},
    {"server", CMD_SERVER, O_DIR | O_ALGO | O_NAME | O_IP | O_OUT | O_FORCE | O_VALIDITY,
     "usage: " PROG " server --name DNS [--name DNS2 ...] [--ip ADDR ...] [--dir D]\n"
     "                     [--out BASENAME] [--algo ed25519|p256] [--force] [validity]\n"
     "Issue the control server's certificate from the fleet CA in D: D/server.key\n"
     "and D/server.pem (or D/BASENAME.*), with every --name and --ip as a\n"
     "subjectAltName, and print its SPKI pin for agents and aegisctl.\n"},
    {"operator", CMD_OPERATOR, O_DIR | O_ALGO | O_NAME | O_OUT | O_FORCE | O_VALIDITY,
     "usage: " PROG " operator --name NAME [--dir D] [--algo ed25519|p256] [--force] [validity]\n"
     "Issue an operator (aegisctl) client certificate: D/operator-NAME.key/.pem.\n"},
    {"agent", CMD_AGENT, O_DIR | O_ALGO | O_NAME | O_OUT | O_FORCE | O_VALIDITY,
     "usage: " PROG " agent --name ID [--dir D] [--algo ed25519|p256] [--force] [validity]\n"
     "Issue an agent client certificate for tests and benchmarks: D/agent-ID.key/.pem.\n"
     "(Real agents get theirs from the control server at enrollment.)\n"},
    {"client", CMD_CLIENT, O_DIR | O_ALGO | O_NAME | O_OUT | O_FORCE | O_VALIDITY,
     "usage: " PROG " client --name NAME [--dir D] [--algo ed25519|p256] [--force] [validity]\n"
     "Issue an agent-role client certificate as D/client.key/.pem (the benchmark's client).\n"},
    {"self-signed", CMD_SELF, O_DIR | O_ALGO | O_NAME | O_OUT | O_FORCE | O_VALIDITY,
     "usage: " PROG " self-signed --name CN --out BASENAME [--dir D] [--algo ed25519|p256]\n"
     "                          [--force] [validity]\n"
     "Make a self-signed client certificate, as an agent uses to call Enroll.\n"},
    {"pin", CMD_PIN, 0,
     "usage: " PROG " pin FILE.pem\n"
     "Print sha256//BASE64 of the SubjectPublicKeyInfo of a certificate, a public\n"
     "key or a private key.\n"},
    {"show", CMD_SHOW, 0,
     "usage: " PROG " show FILE.pem\n"
     "Print a certificate's subject, role, issuer, validity, SANs and pin.\n"},
};

static const char validity_help[] =
    "Validity: --days N (default: CA 3650, others 365), or --not-before T and/or\n"
    "--not-after T with T in Unix seconds or YYYY-MM-DD (UTC).\n"
    "Common: --dir D (default $AEGIS_PKI_DIR or ./" DEFAULT_DIR "), --force replaces\n"
    "existing files, --algo defaults to ed25519 for init/self-signed and to the CA's\n"
    "algorithm for certificates the CA issues, --help shows this text.\n";

static void print_usage(FILE *f)
{
    fprintf(f, "usage: " PROG " COMMAND [options]   (" PROG " COMMAND --help for details)\n"
               "commands:\n"
               "  init         create the fleet CA\n"
               "  server       issue the control server certificate (prints its pin)\n"
               "  operator     issue an operator certificate\n"
               "  agent        issue an agent certificate (tests, benchmarks)\n"
               "  client       issue the benchmark client certificate\n"
               "  self-signed  make a self-signed enrollment certificate\n"
               "  pin          print the SPKI pin of a PEM file\n"
               "  show         describe a certificate\n");
}

static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errorf(const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Everything parsed from the command line. */
struct opts {
    const struct cmd_info *ci;
    const char *dir;
    enum aegis_key_algo algo;
    int algo_set;
    const char *names[MAX_SANS];
    size_t n_names;
    const char *ips[MAX_SANS];
    size_t n_ips;
    const char *out;
    int force;
    long days;
    int64_t not_before, not_after;
    const char *file; /* pin, show */
};

static int parse_algo(const char *s, enum aegis_key_algo *out)
{
    if (strcmp(s, "ed25519") == 0)
        *out = AEGIS_KEY_ED25519;
    else if (strcmp(s, "p256") == 0 || strcmp(s, "P-256") == 0 || strcmp(s, "prime256v1") == 0)
        *out = AEGIS_KEY_P256;
    else
        return -1;
    return 0;
}

static const char *algo_name(enum aegis_key_algo a)
{
    return a == AEGIS_KEY_P256 ? "p256" : "ed25519";
}

/* Unix seconds, or YYYY-MM-DD (midnight UTC). */
static int parse_time(const char *s, int64_t *out)
{
    char *end;
    int y, m, d, n = 0;

    if (s[0] == '\0')
        return -1;
    if (strchr(s, '-') == NULL || (s[0] == '-' && strchr(s + 1, '-') == NULL)) {
        long long v;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || *end != '\0')
            return -1;
        *out = v;
        return 0;
    }
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || s[n] != '\0' || n != 10)
        return -1;
    if (y < 1950 || y > 9999 || m < 1 || m > 12 || d < 1 || d > 31) /* RFC 5280 §4.1.2.5 */
        return -1;
    {
        struct tm tm = {0};
        time_t t;
        tm.tm_year = y - 1900;
        tm.tm_mon = m - 1;
        tm.tm_mday = d;
        t = timegm(&tm);
        /* timegm normalises Feb 30 into March: refuse instead. */
        if (tm.tm_mday != d || tm.tm_mon != m - 1)
            return -1;
        *out = (int64_t)t;
    }
    return 0;
}

/* Names that become part of a file name: no slashes, no leading dot. */
static int basename_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > MAX_BASENAME || s[0] == '.' || s[0] == '-')
        return 0;
    for (i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static int usage_error(const struct cmd_info *ci, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const struct cmd_info *ci, const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (ci)
        fprintf(stderr, "\n(run `" PROG " %s --help` for usage)\n", ci->name);
    else
        fputs("\n(run `" PROG " --help` for usage)\n", stderr);
    return EXIT_USAGE;
}

/* Returns -1 to continue, or an exit code. */
static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"algo", required_argument, NULL, 'a'},
        {"name", required_argument, NULL, 'n'},
        {"ip", required_argument, NULL, 'i'},
        {"out", required_argument, NULL, 'o'},
        {"force", no_argument, NULL, 'f'},
        {"days", required_argument, NULL, 'D'},
        {"not-before", required_argument, NULL, 'B'},
        {"not-after", required_argument, NULL, 'A'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const struct cmd_info *ci = NULL;
    char **av;
    size_t i;
    int c;

    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return EXIT_SUCCESS;
    }
    for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            ci = &cmds[i];
    if (!ci)
        return usage_error(NULL, "unknown command '%s'", argv[1]);
    o->ci = ci;

    optind = 1;
    opterr = 0;
    av = argv + 1;
    while ((c = getopt_long(argc - 1, av, ":h", longopts, NULL)) != -1) {
        unsigned need = 0;
        switch (c) {
        case 'd':
            need = O_DIR;
            break;
        case 'a':
            need = O_ALGO;
            break;
        case 'n':
            need = O_NAME;
            break;
        case 'i':
            need = O_IP;
            break;
        case 'o':
            need = O_OUT;
            break;
        case 'f':
            need = O_FORCE;
            break;
        case 'D':
            need = O_DAYS;
            break;
        case 'B':
            need = O_NB;
            break;
        case 'A':
            need = O_NA;
            break;
        case 'h':
            fputs(ci->usage, stdout);
            if (ci->opts & O_VALIDITY)
                fputs(validity_help, stdout);
            return EXIT_SUCCESS;
        case ':':
            return usage_error(ci, "option '%s' needs a value", av[optind - 1]);
        default:
            return usage_error(ci, "unknown option '%s'", av[optind - 1]);
        }
        if (!(ci->opts & need)) {
            const struct option *lo = longopts;
            while (lo->name && lo->val != c)
                lo++;
            return usage_error(ci, "'%s' does not take --%s", ci->name, lo->name);
        }
        switch (c) {
        case 'd':
            o->dir = optarg;
            break;
        case 'a':
            if (parse_algo(optarg, &o->algo) != 0)
                return usage_error(ci, "unknown algorithm '%s' (use ed25519 or p256)", optarg);
            o->algo_set = 1;
            break;
        case 'n':
            if (o->n_names >= MAX_SANS)
                return usage_error(ci, "too many --name values (at most %d)", MAX_SANS);
            o->names[o->n_names++] = optarg;
            break;
        case 'i':
            if (o->n_ips >= MAX_SANS)
                return usage_error(ci, "too many --ip values (at most %d)", MAX_SANS);
            o->ips[o->n_ips++] = optarg;
            break;
        case 'o':
            if (!basename_ok(optarg))
                return usage_error(ci,
                                   "bad --out '%s' (a file name without directory: letters, "
                                   "digits, '.', '_', '-')",
                                   optarg);
            o->out = optarg;
            break;
        case 'f':
            o->force = 1;
            break;
        case 'D': {
            char *end;
            errno = 0;
            o->days = strtol(optarg, &end, 10);
            if (errno || *end || o->days < 1 || o->days > MAX_DAYS)
                return usage_error(ci, "bad --days '%s' (a whole number from 1 to %d)", optarg,
                                   MAX_DAYS);
            break;
        }
        case 'B':
            if (parse_time(optarg, &o->not_before) != 0)
                return usage_error(ci, "bad --not-before '%s' (Unix seconds or YYYY-MM-DD)",
                                   optarg);
            break;
        case 'A':
            if (parse_time(optarg, &o->not_after) != 0)
                return usage_error(ci, "bad --not-after '%s' (Unix seconds or YYYY-MM-DD)", optarg);
            break;
        }
    }
    argc -= 1 + optind;
    argv = av + optind;
    if (ci->cmd == CMD_PIN || ci->cmd == CMD_SHOW) {
        if (argc != 1)
            return usage_error(ci, "'%s' takes exactly one FILE.pem", ci->name);
        o->file = argv[0];
        return -1;
    }
    if (argc != 0)
        return usage_error(ci, "unexpected argument '%s'", argv[0]);
    if (o->days && o->not_after)
        return usage_error(ci, "--days and --not-after are exclusive");
    if (o->not_before && o->not_after && o->not_after <= o->not_before)
        return usage_error(ci, "--not-after must be later than --not-before");
    switch (ci->cmd) {
    case CMD_SERVER:
        if (o->n_names == 0 && o->n_ips == 0)
            return usage_error(ci, "'server' needs at least one --name DNS or --ip ADDR");
        break;
    case CMD_OPERATOR:
    case CMD_AGENT:
    case CMD_CLIENT:
    case CMD_SELF:
        if (o->n_names != 1)
            return usage_error(ci, "'%s' needs exactly one --name", ci->name);
        if (ci->cmd != CMD_SELF && ci->cmd != CMD_CLIENT && !basename_ok(o->names[0]))
            return usage_error(ci,
                               "bad --name '%s' (it becomes part of a file name: letters, "
                               "digits, '.', '_', '-', at most %d)",
                               o->names[0], MAX_BASENAME);
        if (ci->cmd == CMD_SELF && !o->out)
            return usage_error(ci, "'self-signed' needs --out BASENAME");
        break;
    case CMD_INIT:
        if (o->n_names > 1)
            return usage_error(ci, "'init' takes one --name");
        break;
    default:
        break;
    }
    return -1;
}

/* Reads a whole (small) file, NUL-terminated. -errno or AEGIS_ERR_TOO_LARGE. */
static int read_file(const char *path, char **pbuf, size_t *plen)
{
    struct stat st;
    char *buf;
    size_t n = 0;
    int fd, rv = 0;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        rv = -errno;
        close(fd);
        return rv;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -EISDIR;
    }
    if (st.st_size > MAX_INPUT_FILE) {
        close(fd);
        return AEGIS_ERR_TOO_LARGE;
    }
    if (!(buf = malloc((size_t)st.st_size + 1))) {
        close(fd);
        return -ENOMEM;
    }
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rv = -errno;
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (rv != 0) {
        free(buf);
        return rv;
    }
    buf[n] = '\0';
    *pbuf = buf;
    *plen = n;
    return 0;
}

static void free_secret(char *s, size_t len)
{
    if (s) {
        explicit_bzero(s, len);
        free(s);
    }
}

static char *path_join(const char *dir, const char *base, const char *ext)
{
    char *p;

    if (asprintf(&p, "%s/%s%s", dir, base, ext) < 0)
        return NULL;
    return p;
}

/* mkdir -p with 0700 for the directories we create. */
static int make_dir(const char *dir)
{
    char buf[PATH_MAX];
    size_t n = strlen(dir), i;

    if (n == 0 || n >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, dir, n + 1);
    for (i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char save = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return -errno;
            buf[i] = save;
        }
    }
    return 0;
}

static const char *dir_of(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        return ".";
    if ((size_t)(slash - path) + 1 > cap)
        return ".";
    if (slash == path)
        return "/";
    memcpy(buf, path, (size_t)(slash - path));
    buf[slash - path] = '\0';
    return buf;
}

/* Writes data to path atomically with `mode`: temp file in the same
 * directory, fsync, then link() (fails with EEXIST if path exists: no
 * check-then-write race) or, with force, rename(). Syncs the directory. */
static int write_atomic(const char *path, const char *data, size_t len, mode_t mode, int force)
{
    char tmp[PATH_MAX], dbuf[PATH_MAX];
    const char *dir;
    size_t off = 0;
    int fd, dfd, rv = 0;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= sizeof(tmp))
        return -ENAMETOOLONG;
    if ((fd = mkstemp(tmp)) < 0)
        return -errno;
    if (fchmod(fd, mode) != 0)
        rv = -errno;
    while (rv == 0 && off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            rv = -errno;
        else
            off += (size_t)w;
    }
    if (rv == 0 && fsync(fd) != 0)
        rv = -errno;
    if (close(fd) != 0 && rv == 0)
        rv = -errno;
    if (rv == 0) {
        if (force) {
            if (rename(tmp, path) != 0)
                rv = -errno;
        } else {
            if (link(tmp, path) != 0)
                rv = -errno;
        }
    }
    unlink(tmp); /* after rename it is gone already; harmless */
    if (rv != 0)
        return rv;
    dir = dir_of(path, dbuf, sizeof(dbuf));
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        if (fsync(dfd) != 0)
            rv = -errno;
        close(dfd);
    }
    return rv;
}

static const char *errstr(int rv)
{
    return aegis_strerror(rv);
}

/* Loads a private key PEM file with a message naming it on failure. */
static int load_key(const char *path, const char *what, const char *hint, struct aegis_key **pkey)
{
    struct stat st;
    char *pem = NULL;
    size_t len = 0;
    int rv;

    if ((rv = read_file(path, &pem, &len)) != 0) {
        errorf("cannot read %s %s: %s%s", what, path, errstr(rv), hint);
        return rv;
    }
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr, PROG ": warning: %s %s is readable by group or others (chmod 600 it)\n",
                what, path);
    rv = aegis_key_from_pem(NULL, pem, len, pkey);
    free_secret(pem, len);
    if (rv == AEGIS_ERR_UNSUPPORTED)
        errorf("cannot load %s %s: not an Ed25519 or P-256 key in unencrypted PKCS#8 PEM form",
               what, path);
    else if (rv != 0)
        errorf("cannot load %s %s: %s (expected an unencrypted PKCS#8 PEM private key)", what, path,
               errstr(rv));
    return rv;
}

static int load_cert(const char *path, const char *what, const char *hint, char **ppem,
                     size_t *plen, struct aegis_cert_info *info)
{
    int rv;

    if ((rv = read_file(path, ppem, plen)) != 0) {
        errorf("cannot read %s %s: %s%s", what, path, errstr(rv), hint);
        return rv;
    }
    if ((rv = aegis_cert_info_pem(*ppem, *plen, info)) != 0) {
        errorf("cannot load %s %s: %s (expected a \"BEGIN CERTIFICATE\" PEM)", what, path,
               errstr(rv));
        free(*ppem);
        *ppem = NULL;
    }
    return rv;
}

static void fmt_time(int64_t t, char *buf, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm))
        strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        snprintf(buf, cap, "%lld", (long long)t);
}

/* Refuses early (before generating anything) when outputs exist. */
static int check_free(const char *path, int force, const char *what)
{
    struct stat st;

    if (force || lstat(path, &st) != 0)
        return 0;
    errorf("refusing to overwrite existing %s %s (use --force to replace it)", what, path);
    return -EEXIST;
}

static int cmd_issue(const struct opts *o, const char *dir)
{
    const struct cmd_info *ci = o->ci;
    struct aegis_key *ca_key = NULL, *key = NULL;
    struct aegis_cert_spec spec;
    struct aegis_cert_info ca_info, info;
    char *ca_pem = NULL, *ca_key_path = NULL, *ca_cert_path = NULL;
    char *key_path = NULL, *cert_path = NULL, *key_pem = NULL, *cert_pem = NULL;
    char hint[PATH_MAX + 64], nb[32], na[32], base[MAX_BASENAME + 16];
    size_t ca_len = 0, key_len = 0, cert_len = 0;
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    enum aegis_key_algo algo = o->algo;
    int rv, ex = EXIT_RUNTIME, self = ci->cmd == CMD_INIT || ci->cmd == CMD_SELF;

    memset(&spec, 0, sizeof(spec));
    switch (ci->cmd) {
    case CMD_INIT:
        snprintf(base, sizeof(base), "ca");
        spec.role = AEGIS_ROLE_CA;
        spec.common_name = o->n_names ? o->names[0] : DEFAULT_CA_NAME;
        break;
    case CMD_SERVER:
        snprintf(base, sizeof(base), "%s", o->out ? o->out : "server");
        spec.role = AEGIS_ROLE_SERVER;
        spec.common_name = o->n_names ? o->names[0] : o->ips[0];
        spec.dns_names = o->names;
        spec.n_dns = o->n_names;
        spec.ips = o->ips;
        spec.n_ips = o->n_ips;
        break;
    case CMD_OPERATOR:
        snprintf(base, sizeof(base), "%s%s", o->out ? "" : "operator-",
                 o->out ? o->out : o->names[0]);
        spec.role = AEGIS_ROLE_OPERATOR;
        spec.common_name = o->names[0];
        break;
    case CMD_AGENT:
        snprintf(base, sizeof(base), "%s%s", o->out ? "" : "agent-", o->out ? o->out : o->names[0]);
        spec.role = AEGIS_ROLE_AGENT;
        spec.common_name = o->names[0];
        break;
    case CMD_CLIENT:
        snprintf(base, sizeof(base), "%s", o->out ? o->out : "client");
        spec.role = AEGIS_ROLE_AGENT;
        spec.common_name = o->names[0];
        break;
    case CMD_SELF:
        snprintf(base, sizeof(base), "%s", o->out);
        spec.role = AEGIS_ROLE_SELF;
        spec.common_name = o->names[0];
        break;
    default:
        return EXIT_USAGE;
    }
    spec.not_before = o->not_before;
    spec.not_after = o->not_after;
    if (o->days) {
        int64_t start = spec.not_before ? spec.not_before : (int64_t)time(NULL) - SKEW_SECONDS;
        spec.not_before = start;
        spec.not_after = start + (int64_t)o->days * 86400;
    }

    key_path = path_join(dir, base, ".key");
    cert_path = path_join(dir, base, ".pem");
    ca_key_path = path_join(dir, "ca", ".key");
    ca_cert_path = path_join(dir, "ca", ".pem");
    if (!key_path || !cert_path || !ca_key_path || !ca_cert_path) {
        errorf("out of memory");
        goto out;
    }
    if (check_free(key_path, o->force, "key") != 0 ||
        check_free(cert_path, o->force, "certificate") != 0)
        goto out;

    if (!self) {
        snprintf(hint, sizeof(hint), " (run `" PROG " init --dir %s` first)", dir);
        if (load_key(ca_key_path, "CA key", hint, &ca_key) != 0)
            goto out;
        if (load_cert(ca_cert_path, "CA certificate", hint, &ca_pem, &ca_len, &ca_info) != 0)
            goto out;
        if (!ca_info.is_ca) {
            errorf("%s is not a CA certificate (CA:TRUE missing)", ca_cert_path);
            goto out;
        }
        /* Leaves default to the CA's algorithm: a P-256 fleet stays P-256. */
        if (!o->algo_set)
            algo = aegis_key_algo(ca_key);
    } else if ((rv = make_dir(dir)) != 0) {
        errorf("cannot create directory %s: %s", dir, errstr(rv));
        goto out;
    }

    if ((rv = aegis_key_generate(NULL, algo, &key)) != 0) {
        errorf("cannot generate %s key: %s", algo_name(algo), errstr(rv));
        goto out;
    }
    if ((rv = aegis_key_spki_der(key, &spki, &spki_len)) != 0) {
        errorf("cannot export public key: %s", errstr(rv));
        goto out;
    }
    rv = aegis_cert_issue(NULL, &spec, spki, spki_len, self ? key : ca_key, self ? NULL : ca_pem,
                          &cert_pem, &cert_len);
    if (rv == AEGIS_ERR_CERT) {
        errorf("CA certificate %s does not belong to CA key %s", ca_cert_path, ca_key_path);
        goto out;
    } else if (rv == -EINVAL) {
        errorf("cannot issue certificate for '%s': invalid name, address or validity "
               "(DNS names: letters, digits, '-', '.'; IPs: IPv4/IPv6 literals; "
               "CN at most 64 bytes; dates between 1950 and 9999, not-after after not-before)",
               spec.common_name);
        ex = EXIT_USAGE;
        goto out;
    } else if (rv != 0) {
        errorf("cannot issue certificate: %s", errstr(rv));
        goto out;
    }
    if ((rv = aegis_key_to_pem(key, &key_pem, &key_len)) != 0) {
        errorf("cannot encode key: %s", errstr(rv));
        goto out;
    }
    if ((rv = write_atomic(key_path, key_pem, key_len, 0600, o->force)) != 0) {
        if (rv == -EEXIST)
            errorf("refusing to overwrite existing key %s (use --force to replace it)", key_path);
        else
            errorf("cannot write key %s: %s", key_path, errstr(rv));
        goto out;
    }
    if ((rv = write_atomic(cert_path, cert_pem, cert_len, 0644, o->force)) != 0) {
        errorf("cannot write certificate %s: %s", cert_path, errstr(rv));
        /* Don't leave a key without its certificate behind. */
        unlink(key_path);
        goto out;
    }
    if ((rv = aegis_cert_info_pem(cert_pem, cert_len, &info)) != 0) {
        errorf("cannot read back %s: %s", cert_path, errstr(rv));
        goto out;
    }
    fmt_time(info.not_before, nb, sizeof(nb));
    fmt_time(info.not_after, na, sizeof(na));
    printf("created %s (%s private key, mode 0600)\n", key_path, algo_name(algo));
    printf("created %s (%s, CN=%s, valid %s .. %s)\n", cert_path, info.subject_ou, info.subject_cn,
           nb, na);
    printf("pin %s\n", info.pin);
    ex = EXIT_SUCCESS;
out:
    aegis_key_del(key);
    aegis_key_del(ca_key);
    aegis_free(NULL, spki);
    free_secret(key_pem, key_len);
    aegis_free(NULL, cert_pem);
    free(ca_pem);
    free(key_path);
    free(cert_path);
    free(ca_key_path);
    free(ca_cert_path);
    return ex;
}

static int cmd_pin(const struct opts *o)
{
    char pin[AEGIS_PIN_STRLEN];
    char *pem;
    size_t len;
    int rv;

    if ((rv = read_file(o->file, &pem, &len)) != 0) {
        errorf("cannot read %s: %s", o->file, errstr(rv));
        return EXIT_RUNTIME;
    }
    rv = aegis_pin_from_pem(pem, len, pin);
    free_secret(pem, len);
    if (rv != 0) {
        errorf("cannot pin %s: %s (expected a PEM certificate, public key or private key)", o->file,
               errstr(rv));
        return EXIT_RUNTIME;
    }
    printf("%s\n", pin);
    return EXIT_SUCCESS;
}

static int cmd_show(const struct opts *o)
{
    struct aegis_cert_info info;
    enum aegis_cert_role role;
    char *pem = NULL, *sans = NULL, nb[32], na[32];
    const char *status;
    size_t len;
    int64_t now = (int64_t)time(NULL);
    int rv;

    if (load_cert(o->file, "certificate", "", &pem, &len, &info) != 0)
        return EXIT_RUNTIME;
    if ((rv = aegis_cert_sans_pem(NULL, pem, len, &sans)) != 0) {
        errorf("cannot read subjectAltName of %s: %s", o->file, errstr(rv));
        free(pem);
        return EXIT_RUNTIME;
    }
    fmt_time(info.not_before, nb, sizeof(nb));
    fmt_time(info.not_after, na, sizeof(na));
    status = now < info.not_before ? "not yet valid" : now > info.not_after ? "EXPIRED" : "valid";
    printf("subject:     CN=%s%s%s\n", info.subject_cn, info.subject_ou[0] ? ", OU=" : "",
           info.subject_ou);
    if (aegis_cert_role_from_ou(info.subject_ou, &role) == 0)
        printf("role:        %s\n", info.subject_ou + strlen("aegis-"));
    else
        printf("role:        (none: not an Aegis certificate)\n");
    printf("issuer:      CN=%s%s\n", info.issuer_cn, info.self_signed ? " (self-signed)" : "");
    printf("ca:          %s\n", info.is_ca ? "yes" : "no");
    printf("not before:  %s\n", nb);
    printf("not after:   %s\n", na);
    printf("status:      %s\n", status);
    printf("sans:        %s\n", sans[0] ? sans : "(none)");
    printf("pin:         %s\n", info.pin);
    aegis_free(NULL, sans);
    free(pem);
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    struct opts o;
    const char *dir;
    int rv;

    memset(&o, 0, sizeof(o));
    if ((rv = parse_args(argc, argv, &o)) >= 0)
        return rv;
    dir = o.dir ? o.dir : getenv("AEGIS_PKI_DIR");
    if (!dir || !dir[0])
        dir = DEFAULT_DIR;
    switch (o.ci->cmd) {
    case CMD_PIN:
        return cmd_pin(&o);
    case CMD_SHOW:
        return cmd_show(&o);
    default:
        return cmd_issue(&o, dir);
    }
}
