/*
 * aegis-control: flags and config file, PKI and keys, migrations, signals, the loop.
 *
 *   aegis-control --db DSN --pki DIR [--listen ADDR:PORT] [--config FILE] [options]
 *
 * SIGTERM/SIGINT drain gracefully (streams end with UNAVAILABLE + retry hint, GOAWAY, calls
 * finish, database writes flush) and exit 0; SIGHUP reloads the artifact-signing keys and the
 * log level.
 */
#include "ctl_db.h"
#include "ctl_metrics.h"
#include "ctl_migrate.h"
#include "ctl_server.h"
#include "ctl_svc_oper.h"

#include <aegis/base64.h>
#include <aegis/err.h>
#include <aegis/transport_ev.h>

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest accepted PEM/key file. */
#define PEM_MAX (64u * 1024u)

static const char usage[] =
    "usage: aegis-control --db DSN --pki DIR [options]\n"
    "  --config FILE            key = value lines with the long option names below\n"
    "  --listen ADDR:PORT       QUIC listen address (default 0.0.0.0:4433)\n"
    "  --db DSN                 PostgreSQL connection string\n"
    "  --pki DIR                ca.pem ca.key server.pem server.key [command.key quic-secret]\n"
    "  --artifact-pubkey FILE   trusted artifact-signing public key (repeatable;\n"
    "                           also every DIR/artifact-keys/*.pub)\n"
    "  --extra-pin PIN          second server pin handed to agents (key rotation)\n"
    "  --instance-id UUID       this instance's id (default: random)\n"
    "  --metrics-listen A:P     Prometheus /metrics and /healthz (default 127.0.0.1:9464;\n"
    "                           \"off\" disables)\n"
    "  --log-level LEVEL        error|warn|info|debug|trace (default info)\n"
    "  --db-conns N --db-queue-max N --max-message BYTES --max-handshakes N --max-conns N\n"
    "  --challenge-ttl-ms MS --redeliver-base-ms MS --redeliver-max-ms MS\n"
    "  --sweep-interval-ms MS --command-lifetime-s S --drain-timeout-ms MS\n"
    "  --artifact-cache-mib MIB artifact chunks kept in memory (default 64; 0 = off)\n"
    "  --db-batch-items N       requests per batched statement (default 1000)\n"
    "  --db-batch-queue N       requests waiting per batch before shedding (default 20000)\n";

struct app {
    struct ctl_server srv;
    char config_path[512];
    char cli_pubkeys[CTL_MAX_ARTIFACT_KEYS][512];
    size_t n_cli_pubkeys;
    int cli_log_level; /* -1 = not given on the command line */
    ev_signal sigterm, sigint, sighup;
    ev_timer drain_check;
};

static int parse_u64(const char *name, const char *v, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || x > max || v[0] == '-') {
        fprintf(stderr, "aegis-control: bad value \"%s\" for --%s: expected a number 0..%llu\n", v,
                name, (unsigned long long)max);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

/* apply_option sets one option by its long name; from_file marks config-file lines (the
 * command line wins over them). */
static int apply_option(struct app *app, const char *name, const char *v, int from_file)
{
    struct ctl_config *c = &app->srv.cfg;
    uint64_t x;
#define STR(field)                                                                                 \
    do {                                                                                           \
        if (strlen(v) >= sizeof(c->field)) {                                                       \
            fprintf(stderr, "aegis-control: --%s value too long\n", name);                         \
            return -EINVAL;                                                                        \
        }                                                                                          \
        snprintf(c->field, sizeof(c->field), "%s", v);                                             \
    } while (0)
    if (strcmp(name, "listen") == 0)
        STR(listen);
    else if (strcmp(name, "db") == 0)
        STR(dsn);
    else if (strcmp(name, "pki") == 0)
        STR(pki_dir);
    else if (strcmp(name, "instance-id") == 0) {
        if (!ctl_uuid_valid(v)) {
            fprintf(stderr, "aegis-control: --instance-id \"%s\" is not a UUID\n", v);
            return -EINVAL;
        }
        STR(instance_id);
    } else if (strcmp(name, "metrics-listen") == 0)
        snprintf(c->metrics_listen, sizeof(c->metrics_listen), "%s",
                 strcmp(v, "off") == 0 ? "" : v);
    else if (strcmp(name, "extra-pin") == 0)
        STR(extra_pin);
    else if (strcmp(name, "artifact-pubkey") == 0) {
        if (c->n_artifact_pubkeys >= CTL_MAX_ARTIFACT_KEYS) {
            fprintf(stderr, "aegis-control: at most %d artifact keys\n", CTL_MAX_ARTIFACT_KEYS);
            return -EINVAL;
        }
        snprintf(c->artifact_pubkeys[c->n_artifact_pubkeys++], 512, "%s", v);
        if (!from_file && app->n_cli_pubkeys < CTL_MAX_ARTIFACT_KEYS)
            snprintf(app->cli_pubkeys[app->n_cli_pubkeys++], 512, "%s", v);
    } else if (strcmp(name, "log-level") == 0) {
        enum aegis_log_level l;
        if (aegis_log_level_parse(v, &l) != 0) {
            fprintf(stderr, "aegis-control: bad --log-level \"%s\" (error|warn|info|debug|trace)\n",
                    v);
            return -EINVAL;
        }
        if (!from_file)
            app->cli_log_level = (int)l;
        if (!from_file || app->cli_log_level < 0)
            c->log_level = l;
    }
#define NUM(opt, field, max, scale)                                                                \
    else if (strcmp(name, opt) == 0)                                                               \
    {                                                                                              \
        if (parse_u64(name, v, max, &x) != 0)                                                      \
            return -EINVAL;                                                                        \
        c->field = (__typeof__(c->field))(x * (scale));                                            \
    }
    NUM("db-conns", db_conns, CTL_DB_MAX_CONNS, 1)
    NUM("db-queue-max", db_queue_max, 1000000, 1)
    NUM("max-message", max_message, 64u << 20, 1)
    NUM("max-handshakes", max_handshakes, 1000000, 1)
    NUM("max-conns", max_conns, 10000000, 1)
    NUM("challenge-ttl-ms", challenge_ttl, 3600000, AEGIS_NS_PER_MS)
    NUM("redeliver-base-ms", redeliver_base, 86400000, AEGIS_NS_PER_MS)
    NUM("redeliver-max-ms", redeliver_max, 86400000, AEGIS_NS_PER_MS)
    NUM("sweep-interval-ms", sweep_interval, 3600000, AEGIS_NS_PER_MS)
    NUM("drain-timeout-ms", drain_timeout, 3600000, AEGIS_NS_PER_MS)
    NUM("command-lifetime-s", command_lifetime_s, CTL_DEFAULT_COMMAND_LIFETIME_S, 1)
    NUM("artifact-cache-mib", artifact_cache_bytes, 65536, 1024u * 1024u)
    NUM("db-batch-items", db_batch_items, 100000, 1)
    NUM("db-batch-queue", db_batch_queue, 10000000, 1)
    else
    {
        fprintf(stderr, "aegis-control: unknown option \"%s\"%s\n%s", name,
                from_file ? " in the config file" : "", usage);
        return -EINVAL;
    }
    return 0;
#undef STR
#undef NUM
}

static int read_config(struct app *app, const char *path, int reload)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "aegis-control: cannot read config %s: %s\n", path, strerror(errno));
        return -errno;
    }
    char line[1536];
    int lineno = 0, rv = 0;
    while (fgets(line, sizeof(line), f) && lineno < 10000) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\n' || !*p)
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            fprintf(stderr, "aegis-control: %s:%d: expected \"name = value\"\n", path, lineno);
            rv = -EINVAL;
            break;
        }
        char *ke = eq;
        while (ke > p && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        *ke = '\0';
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl && (v[vl - 1] == '\n' || v[vl - 1] == ' ' || v[vl - 1] == '\r'))
            v[--vl] = '\0';
        /* On SIGHUP only what can change at run time is applied. */
        if (reload && strcmp(p, "log-level") != 0 && strcmp(p, "artifact-pubkey") != 0)
            continue;
        if (apply_option(app, p, v, 1) != 0) {
            fprintf(stderr, "aegis-control: %s:%d: option %s rejected\n", path, lineno, p);
            rv = -EINVAL;
            break;
        }
    }
    fclose(f);
    return rv;
}

/* ---- PKI --------------------------------------------------------------------------------------
 */

/* pem_public_key decodes the first "PUBLIC KEY" block (SPKI DER). */
static int pem_public_key(const char *pem, uint8_t *out, size_t cap, size_t *plen)
{
    const char *b = strstr(pem, "-----BEGIN PUBLIC KEY-----");
    const char *e = b ? strstr(b, "-----END PUBLIC KEY-----") : NULL;
    if (!b || !e)
        return AEGIS_ERR_MALFORMED;
    b += strlen("-----BEGIN PUBLIC KEY-----");
    long n = aegis_base64_decode(b, (size_t)(e - b), AEGIS_BASE64_SKIP_SPACE, out, cap);
    if (n < 0)
        return (int)n;
    *plen = (size_t)n;
    return 0;
}

static int add_artifact_key(struct ctl_server *srv, const char *path, struct ctl_artifact_key *keys,
                            size_t *pn)
{
    char *pem;
    size_t len;
    int rv = ctl_read_file(NULL, path, PEM_MAX, &pem, &len);
    if (rv != 0) {
        AEGIS_LOG(&srv->log, AEGIS_LOG_ERROR, "event=artifact_key_unreadable path=%s err=\"%s\"",
                  path, aegis_strerror(rv));
        return rv;
    }
    struct ctl_artifact_key *k = &keys[*pn];
    rv = pem_public_key(pem, k->spki, sizeof(k->spki), &k->spki_len);
    aegis_free(NULL, pem);
    if (rv == 0)
        rv = ctl_ed25519_raw(k->spki, k->spki_len, k->raw);
    if (rv == 0)
        rv = aegis_key_id_from_spki(k->spki, k->spki_len, k->key_id);
    if (rv != 0) {
        AEGIS_LOG(&srv->log, AEGIS_LOG_ERROR,
                  "event=artifact_key_bad path=%s err=\"%s\" hint=\"need an Ed25519 PUBLIC KEY "
                  "PEM (aegisctl artifacts keygen writes one)\"",
                  path, aegis_strerror(rv));
        return rv;
    }
    for (size_t i = 0; i < *pn; i++)
        if (strcmp(keys[i].key_id, k->key_id) == 0)
            return 0; /* the same key twice */
    (*pn)++;
    AEGIS_LOG(&srv->log, AEGIS_LOG_INFO, "event=artifact_key key_id=%s path=%s", k->key_id, path);
    return 0;
}

static int load_artifact_keys(struct ctl_server *srv)
{
    struct ctl_artifact_key keys[CTL_MAX_ARTIFACT_KEYS];
    size_t n = 0;
    int rv;
    for (size_t i = 0; i < srv->cfg.n_artifact_pubkeys; i++)
        if ((rv = add_artifact_key(srv, srv->cfg.artifact_pubkeys[i], keys, &n)) != 0)
            return rv;
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/artifact-keys", srv->cfg.pki_dir);
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        int count = 0;
        while ((de = readdir(d)) != NULL && count++ < 1000) {
            size_t l = strlen(de->d_name);
            if (l < 5 || strcmp(de->d_name + l - 4, ".pub") != 0)
                continue;
            if (n >= CTL_MAX_ARTIFACT_KEYS) {
                AEGIS_LOG(&srv->log, AEGIS_LOG_ERROR, "event=too_many_artifact_keys max=%d",
                          CTL_MAX_ARTIFACT_KEYS);
                closedir(d);
                return AEGIS_ERR_LIMIT;
            }
            char path[1200];
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            if ((rv = add_artifact_key(srv, path, keys, &n)) != 0) {
                closedir(d);
                return rv;
            }
        }
        closedir(d);
    }
    memcpy(srv->artifact_keys, keys, sizeof(keys));
    srv->n_artifact_keys = n;
    return 0;
}

static int load_key(struct ctl_server *srv, const char *name, struct aegis_key **pkey)
{
    char path[600], *pem;
    size_t len;
    snprintf(path, sizeof(path), "%s/%s", srv->cfg.pki_dir, name);
    int rv = ctl_read_file(NULL, path, PEM_MAX, &pem, &len);
    if (rv == 0) {
        rv = aegis_key_from_pem(srv->mem, pem, len, pkey);
        memset(pem, 0, len);
        aegis_free(NULL, pem);
    }
    if (rv != 0)
        fprintf(stderr, "aegis-control: cannot load key %s: %s (create it with aegis-certs)\n",
                path, aegis_strerror(rv));
    return rv;
}

static int load_command_key(struct ctl_server *srv)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/command.key", srv->cfg.pki_dir);
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        /* First start: the command-signing key is made here and never leaves this file. */
        struct aegis_key *k;
        char *pem;
        size_t len;
        int rv = aegis_key_generate(srv->mem, AEGIS_KEY_ED25519, &k);
        if (rv == 0) {
            rv = aegis_key_to_pem(k, &pem, &len);
            aegis_key_del(k);
        }
        if (rv != 0) {
            fprintf(stderr, "aegis-control: cannot create the command key: %s\n",
                    aegis_strerror(rv));
            return rv;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        ssize_t w = fd >= 0 ? write(fd, pem, len) : -1;
        int e = errno;
        if (fd >= 0 && (fsync(fd) != 0 || close(fd) != 0))
            w = -1;
        memset(pem, 0, len);
        aegis_free(NULL, pem);
        if (w != (ssize_t)len && !(fd < 0 && e == EEXIST)) {
            fprintf(stderr, "aegis-control: cannot write %s: %s\n", path, strerror(e));
            return -e;
        }
    }
    int rv = load_key(srv, "command.key", &srv->command_key);
    if (rv != 0)
        return rv;
    uint8_t *spki;
    size_t sl;
    if ((rv = aegis_key_spki_der(srv->command_key, &spki, &sl)) != 0)
        return rv;
    rv = ctl_ed25519_raw(spki, sl, srv->command_pub);
    if (rv == 0)
        rv = aegis_key_id_from_spki(spki, sl, srv->command_key_id);
    aegis_free(srv->mem, spki);
    if (rv != 0)
        fprintf(stderr, "aegis-control: %s must be an Ed25519 key\n", path);
    return rv;
}

/* load_quic_secret reads pki/quic-secret (32 bytes), making it at first
 * start: the QUIC stateless-reset and Retry secret must survive restarts. */
static int load_quic_secret(struct ctl_server *srv)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/quic-secret", srv->cfg.pki_dir);
    uint8_t fresh[sizeof(srv->quic_secret)];
    if (getrandom(fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh)) {
        fprintf(stderr, "aegis-control: cannot get random bytes: %s\n", strerror(errno));
        return -EIO;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = write(fd, fresh, sizeof(fresh));
        int ok = w == (ssize_t)sizeof(fresh) && fsync(fd) == 0;
        int e = errno;
        close(fd);
        if (!ok) {
            unlink(path);
            fprintf(stderr, "aegis-control: cannot write %s: %s\n", path, strerror(e));
            return -e;
        }
    } else if (errno != EEXIST) {
        fprintf(stderr, "aegis-control: cannot create %s: %s\n", path, strerror(errno));
        return -errno;
    }
    explicit_bzero(fresh, sizeof(fresh));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, srv->quic_secret, sizeof(srv->quic_secret)) : -1;
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (n != (ssize_t)sizeof(srv->quic_secret)) {
        fprintf(stderr,
                "aegis-control: cannot read %s: %s (it must hold %zu bytes; delete it to make a "
                "new one)\n",
                path, n < 0 ? strerror(e) : "wrong size", sizeof(srv->quic_secret));
        return n < 0 ? -e : AEGIS_ERR_MALFORMED;
    }
    return 0;
}

static int load_pki(struct ctl_server *srv)
{
    char path[600];
    size_t len;
    int rv;
    snprintf(path, sizeof(path), "%s/ca.pem", srv->cfg.pki_dir);
    if ((rv = ctl_read_file(srv->mem, path, PEM_MAX, &srv->ca_pem, &srv->ca_len)) != 0) {
        fprintf(stderr, "aegis-control: cannot read %s: %s (run aegis-certs init --dir %s)\n", path,
                aegis_strerror(rv), srv->cfg.pki_dir);
        return rv;
    }
    snprintf(path, sizeof(path), "%s/server.pem", srv->cfg.pki_dir);
    if ((rv = ctl_read_file(srv->mem, path, PEM_MAX, &srv->server_pem, &srv->server_len)) != 0) {
        fprintf(stderr, "aegis-control: cannot read %s: %s (run aegis-certs server --dir %s)\n",
                path, aegis_strerror(rv), srv->cfg.pki_dir);
        return rv;
    }
    (void)len;
    if ((rv = load_key(srv, "ca.key", &srv->ca_key)) != 0 ||
        (rv = load_key(srv, "server.key", &srv->server_key)) != 0 ||
        (rv = load_command_key(srv)) != 0 || (rv = load_quic_secret(srv)) != 0)
        return rv;
    if ((rv = aegis_pin_from_pem(srv->server_pem, srv->server_len, srv->server_pin)) != 0) {
        fprintf(stderr, "aegis-control: cannot pin %s/server.pem: %s\n", srv->cfg.pki_dir,
                aegis_strerror(rv));
        return rv;
    }
    if (srv->cfg.extra_pin[0]) {
        uint8_t h[32];
        if (aegis_pin_parse(srv->cfg.extra_pin, h) != 0) {
            fprintf(stderr, "aegis-control: --extra-pin must be sha256//<44 base64>\n");
            return -EINVAL;
        }
    }
    return load_artifact_keys(srv);
}

/* ---- signals and the loop -------------------------------------------------------------------- */

static void on_drain_check(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct app *app = w->data;
    (void)revents;
    if (ctl_server_drained(&app->srv))
        ev_break(loop, EVBREAK_ALL);
}

static void on_term(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct app *app = w->data;
    (void)revents;
    if (app->srv.draining)
        return;
    ctl_server_drain(&app->srv);
    ev_timer_init(&app->drain_check, on_drain_check, 0.02, 0.02);
    app->drain_check.data = app;
    ev_timer_start(loop, &app->drain_check);
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct app *app = w->data;
    struct ctl_server *srv = &app->srv;
    (void)loop;
    (void)revents;
    struct ctl_config saved = srv->cfg;
    /* Start again from the command line, then the file. */
    srv->cfg.n_artifact_pubkeys = 0;
    for (size_t i = 0; i < app->n_cli_pubkeys; i++)
        snprintf(srv->cfg.artifact_pubkeys[srv->cfg.n_artifact_pubkeys++], 512, "%s",
                 app->cli_pubkeys[i]);
    if (app->config_path[0] && read_config(app, app->config_path, 1) != 0) {
        srv->cfg = saved;
        AEGIS_LOG(&srv->log, AEGIS_LOG_ERROR, "event=reload_failed what=config kept=old");
        return;
    }
    if (load_artifact_keys(srv) != 0) {
        srv->cfg = saved;
        AEGIS_LOG(&srv->log, AEGIS_LOG_ERROR, "event=reload_failed what=artifact_keys kept=old");
        return;
    }
    srv->log.level = srv->cfg.log_level;
    AEGIS_LOG(&srv->log, AEGIS_LOG_INFO, "event=reloaded artifact_keys=%zu log_level=%s",
              srv->n_artifact_keys, aegis_log_level_name(srv->log.level));
}

static void defaults(struct app *app)
{
    struct ctl_config *c = &app->srv.cfg;
    snprintf(c->listen, sizeof(c->listen), "0.0.0.0:4433");
    snprintf(c->metrics_listen, sizeof(c->metrics_listen), "127.0.0.1:9464");
    c->log_level = AEGIS_LOG_INFO;
    c->challenge_ttl = CTL_DEFAULT_CHALLENGE_TTL;
    c->redeliver_base = CTL_DEFAULT_REDELIVER_BASE;
    c->redeliver_max = CTL_DEFAULT_REDELIVER_MAX;
    c->sweep_interval = CTL_DEFAULT_SWEEP_INTERVAL;
    c->heartbeat = CTL_DEFAULT_HEARTBEAT;
    c->drain_timeout = CTL_DEFAULT_DRAIN_TIMEOUT;
    c->command_lifetime_s = CTL_DEFAULT_COMMAND_LIFETIME_S;
    c->max_message = AEGIS_TRANSPORT_MAX_MESSAGE;
    c->max_handshakes = AEGIS_TRANSPORT_MAX_HANDSHAKES;
    c->max_conns = AEGIS_TRANSPORT_MAX_CONNS;
    c->artifact_cache_bytes = CTL_ARTCACHE_DEFAULT_BYTES;
    app->cli_log_level = -1;
}

static void free_pki(struct ctl_server *srv)
{
    aegis_free(srv->mem, srv->ca_pem);
    aegis_free(srv->mem, srv->server_pem);
    aegis_key_del(srv->ca_key);
    aegis_key_del(srv->server_key);
    aegis_key_del(srv->command_key);
}

int main(int argc, char **argv)
{
    static struct app app; /* large (key tables); static keeps it off the stack */
    struct ctl_server *srv = &app.srv;
    defaults(&app);

    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 0},
        {"db", required_argument, NULL, 0},
        {"pki", required_argument, NULL, 0},
        {"artifact-pubkey", required_argument, NULL, 0},
        {"extra-pin", required_argument, NULL, 0},
        {"instance-id", required_argument, NULL, 0},
        {"metrics-listen", required_argument, NULL, 0},
        {"log-level", required_argument, NULL, 0},
        {"db-conns", required_argument, NULL, 0},
        {"db-queue-max", required_argument, NULL, 0},
        {"max-message", required_argument, NULL, 0},
        {"max-handshakes", required_argument, NULL, 0},
        {"max-conns", required_argument, NULL, 0},
        {"challenge-ttl-ms", required_argument, NULL, 0},
        {"redeliver-base-ms", required_argument, NULL, 0},
        {"redeliver-max-ms", required_argument, NULL, 0},
        {"sweep-interval-ms", required_argument, NULL, 0},
        {"command-lifetime-s", required_argument, NULL, 0},
        {"drain-timeout-ms", required_argument, NULL, 0},
        {"artifact-cache-mib", required_argument, NULL, 0},
        {"db-batch-items", required_argument, NULL, 0},
        {"db-batch-queue", required_argument, NULL, 0},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    /* The config file first, so the command line overrides it. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0 && i + 1 < argc)
            snprintf(app.config_path, sizeof(app.config_path), "%s", argv[i + 1]);
        else if (strncmp(a, "--config=", 9) == 0)
            snprintf(app.config_path, sizeof(app.config_path), "%s", a + 9);
    }
    if (app.config_path[0] && read_config(&app, app.config_path, 0) != 0)
        return 2;
    int idx, c;
    while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return 0;
        }
        if (c == 'c')
            continue;
        if (c != 0) {
            fputs(usage, stderr);
            return 2;
        }
        if (apply_option(&app, opts[idx].name, optarg, 0) != 0)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "aegis-control: unexpected argument \"%s\"\n%s", argv[optind], usage);
        return 2;
    }
    if (!srv->cfg.dsn[0] || !srv->cfg.pki_dir[0]) {
        fprintf(stderr, "aegis-control: --db and --pki are required\n%s", usage);
        return 2;
    }
    if (!srv->cfg.instance_id[0])
        ctl_uuid(srv->cfg.instance_id);
    srv->log.level = srv->cfg.log_level;
    srv->log.write = aegis_log_stderr_write;

    if (load_pki(srv) != 0) {
        free_pki(srv);
        return 1;
    }
    char err[512] = "";
    unsigned applied = 0;
    int rv = ctl_db_migrate(srv->cfg.dsn, ctl_migrations_embedded, ctl_migrations_embedded_count, 0,
                            &applied, err, sizeof(err));
    if (rv != 0) {
        fprintf(stderr, "aegis-control: schema migration failed: %s (%s)\n", err,
                aegis_strerror(rv));
        free_pki(srv);
        return 1;
    }
    AEGIS_LOG(&srv->log, AEGIS_LOG_INFO, "event=migrated applied=%u", applied);

    struct ev_loop *loop = EV_DEFAULT;
    srv->ev_loop = loop;
    if ((rv = ctl_loop_new(loop, NULL, &srv->loop)) != 0) {
        free_pki(srv);
        return 1;
    }
    rv = ctl_server_start(srv);
    if (rv != 0) {
        fprintf(stderr, "aegis-control: cannot start: %s (listen %s, database %s)\n",
                aegis_strerror(rv), srv->cfg.listen,
                ctl_db_is_up(srv->db) ? "up" : "unreachable: check --db");
        ctl_server_stop(srv);
        ctl_loop_del(srv->loop);
        free_pki(srv);
        return 1;
    }
    ctl_oper_listen(srv);
    if ((rv = ctl_metrics_start(srv)) != 0) {
        fprintf(stderr,
                "aegis-control: cannot serve metrics on %s: %s (--metrics-listen off "
                "disables them)\n",
                srv->cfg.metrics_listen, aegis_strerror(rv));
        ctl_server_stop(srv);
        ctl_loop_del(srv->loop);
        free_pki(srv);
        return 1;
    }
    /* Tests and supervisors read this line to learn the ports (ephemeral with :0). */
    printf("aegis-control ready port=%u metrics_port=%u instance=%s\n", aegis_ev_port(srv->tev),
           ctl_metrics_port(srv), srv->cfg.instance_id);
    fflush(stdout);

    ev_signal_init(&app.sigterm, on_term, SIGTERM);
    ev_signal_init(&app.sigint, on_term, SIGINT);
    ev_signal_init(&app.sighup, on_hup, SIGHUP);
    app.sigterm.data = app.sigint.data = app.sighup.data = &app;
    ev_signal_start(loop, &app.sigterm);
    ev_signal_start(loop, &app.sigint);
    ev_signal_start(loop, &app.sighup);
    ev_run(loop, 0);

    AEGIS_LOG(&srv->log, AEGIS_LOG_INFO, "event=stopped");
    ev_signal_stop(loop, &app.sigterm);
    ev_signal_stop(loop, &app.sigint);
    ev_signal_stop(loop, &app.sighup);
    ev_timer_stop(loop, &app.drain_check);
    ctl_metrics_stop(srv);
    ctl_server_stop(srv);
    ctl_loop_del(srv->loop);
    free_pki(srv);
    return 0;
}
