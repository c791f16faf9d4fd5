/*
 * aegisctl option parsing: per-sub-command option tables plus the global
 * options, accepted anywhere on the line so that `aegisctl agents list --json`
 * and `aegisctl --json agents list` both work. Values of flags are checked
 * here (durations, k=v lists, digests) so that a bad value is a usage error
 * before anything connects.
 */
#include "ctl_cli.h"

#include <aegis/err.h>
#include <aegis/hex.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Options every sub-command accepts (see `aegisctl --help`). */
enum { G_JSON, G_SERVER, G_PIN, G_CERT, G_KEY, G_CONFIG, G_TIMEOUT, G_HELP, G_NO_PROGRESS };
static const struct {
    const char *name;
    int has_arg;
} global_opts[] = {
    [G_JSON] = {"json", 0},       [G_SERVER] = {"server", 1}, [G_PIN] = {"pin", 1},
    [G_CERT] = {"cert", 1},       [G_KEY] = {"key", 1},       [G_CONFIG] = {"config", 1},
    [G_TIMEOUT] = {"timeout", 1}, [G_HELP] = {"help", 0},     [G_NO_PROGRESS] = {"no-progress", 0},
};

/* A longest accepted duration: anything longer is a typo, and 10 years in ns
 * stays far below INT64_MAX. */
#define MAX_DURATION_NS (10ull * 366 * 24 * 3600 * 1000000000ull)

static int set_str(char **dst, const char *v)
{
    char *c = strdup(v);
    if (!c)
        return -ENOMEM;
    free(*dst);
    *dst = c;
    return 0;
}

static int apply_global(struct ctl_cli *cli, int g, const char *val, struct ctl_args *a)
{
    switch (g) {
    case G_JSON:
        cli->json = 1;
        return 0;
    case G_NO_PROGRESS:
        cli->progress_tty = 0;
        return 0;
    case G_HELP:
        a->help = 1;
        return 0;
    case G_SERVER:
        return set_str(&cli->flags.server, val);
    case G_PIN:
        return set_str(&cli->flags.pin, val);
    case G_CERT:
        return set_str(&cli->flags.cert, val);
    case G_KEY:
        return set_str(&cli->flags.key, val);
    case G_CONFIG:
        return set_str(&cli->config_file, val);
    case G_TIMEOUT: {
        uint64_t ns;
        if (ctl_parse_duration(val, &ns) != 0 || ns == 0)
            return -EINVAL;
        cli->timeout_ns = ns;
        cli->timeout_given = 1;
        return 0;
    }
    }
    return -EINVAL;
}

int ctl_args_parse(struct ctl_cli *cli, const struct ctl_family *fam, const struct ctl_subcmd *sub,
                   int argc, char **argv, struct ctl_args *a)
{
    memset(a, 0, sizeof(*a));
    int only_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (only_pos || arg[0] != '-' || arg[1] == '\0') {
            if (a->npos == CTL_MAX_POS)
                return ctl_usage(cli, fam, sub, "too many arguments");
            a->pos[a->npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (strcmp(arg, "-h") == 0) {
            a->help = 1;
            continue;
        }
        if (arg[1] != '-')
            return ctl_usage(cli, fam, sub, "unknown option %s (options are long: --name)", arg);
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const char *val = NULL;
        int id = -1, g = -1, has_arg = 0;
        for (size_t k = 0; sub && sub->opts && sub->opts[k].name; k++) {
            if (strlen(sub->opts[k].name) == nlen && strncmp(sub->opts[k].name, name, nlen) == 0) {
                id = (int)k;
                has_arg = sub->opts[k].has_arg;
                break;
            }
        }
        if (id < 0) {
            for (size_t k = 0; k < sizeof(global_opts) / sizeof(global_opts[0]); k++) {
                if (strlen(global_opts[k].name) == nlen &&
                    strncmp(global_opts[k].name, name, nlen) == 0) {
                    g = (int)k;
                    has_arg = global_opts[k].has_arg;
                    break;
                }
            }
        }
        if (id < 0 && g < 0)
            return ctl_usage(cli, fam, sub, "unknown option --%.*s", (int)nlen, name);
        if (has_arg) {
            if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                return ctl_usage(cli, fam, sub, "option --%.*s needs a value", (int)nlen, name);
            }
        } else if (eq) {
            return ctl_usage(cli, fam, sub, "option --%.*s takes no value", (int)nlen, name);
        }
        if (g >= 0) {
            int rv = apply_global(cli, g, val, a);
            if (rv == -ENOMEM) {
                fprintf(cli->err, "aegisctl: out of memory\n");
                return CTL_EXIT_INPUT;
            }
            if (rv != 0)
                return ctl_usage(cli, fam, sub,
                                 "bad value \"%s\" for --%s (a duration such as 30s, 5m, 1h)", val,
                                 global_opts[g].name);
            continue;
        }
        if (a->nopt == CTL_MAX_OPTS)
            return ctl_usage(cli, fam, sub, "too many options (at most %d)", CTL_MAX_OPTS);
        a->opt[a->nopt].id = id;
        a->opt[a->nopt].val = val;
        a->nopt++;
    }
    if (a->help || !sub)
        return 0;
    if (a->npos < sub->min_pos)
        return ctl_usage(cli, fam, sub, "missing argument");
    if (a->npos > sub->max_pos)
        return ctl_usage(cli, fam, sub, "unexpected argument \"%s\"", a->pos[sub->max_pos]);
    return 0;
}

const char *ctl_args_get(const struct ctl_args *a, int id)
{
    const char *v = NULL;
    for (size_t i = 0; i < a->nopt; i++) {
        if (a->opt[i].id == id)
            v = a->opt[i].val ? a->opt[i].val : "";
    }
    return v;
}

size_t ctl_args_count(const struct ctl_args *a, int id)
{
    size_t n = 0;
    for (size_t i = 0; i < a->nopt; i++)
        n += a->opt[i].id == id;
    return n;
}

const char *ctl_args_nth(const struct ctl_args *a, int id, size_t n)
{
    for (size_t i = 0; i < a->nopt; i++) {
        if (a->opt[i].id == id && n-- == 0)
            return a->opt[i].val ? a->opt[i].val : "";
    }
    return NULL;
}

int ctl_usage(struct ctl_cli *cli, const struct ctl_family *fam, const struct ctl_subcmd *sub,
              const char *fmt, ...)
{
    va_list ap;
    fprintf(cli->err, "aegisctl: ");
    va_start(ap, fmt);
    vfprintf(cli->err, fmt, ap);
    va_end(ap);
    if (fam && sub)
        fprintf(cli->err, "\nusage: aegisctl %s %s\n(see `aegisctl %s %s --help`)\n", fam->name,
                sub->synopsis, fam->name, sub->name);
    else if (fam)
        fprintf(cli->err, "\n(see `aegisctl %s --help`)\n", fam->name);
    else
        fprintf(cli->err, "\n(see `aegisctl --help`)\n");
    return CTL_EXIT_USAGE;
}

int ctl_parse_duration(const char *text, uint64_t *pns)
{
    if (!text || !*text)
        return -EINVAL;
    uint64_t total = 0;
    const char *p = text;
    int parts = 0;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        uint64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n > MAX_DURATION_NS / 10)
                return -EINVAL;
            n = n * 10 + (uint64_t)(*p - '0');
            p++;
        }
        uint64_t unit;
        if (strncmp(p, "ms", 2) == 0) {
            unit = 1000000ull;
            p += 2;
        } else if (*p == 's') {
            unit = 1000000000ull;
            p++;
        } else if (*p == 'm') {
            unit = 60ull * 1000000000ull;
            p++;
        } else if (*p == 'h') {
            unit = 3600ull * 1000000000ull;
            p++;
        } else if (*p == 'd') {
            unit = 86400ull * 1000000000ull;
            p++;
        } else if (*p == '\0' && parts == 0) {
            unit = 1000000000ull; /* bare number: seconds */
        } else {
            return -EINVAL;
        }
        if (n > MAX_DURATION_NS / unit || total > MAX_DURATION_NS - n * unit)
            return -EINVAL;
        total += n * unit;
        parts++;
    }
    *pns = total;
    return 0;
}

int ctl_parse_u64(const char *text, uint64_t *pv)
{
    if (!text || !isdigit((unsigned char)text[0]))
        return -EINVAL;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *pv = v;
    return 0;
}

int ctl_parse_u32(const char *text, uint32_t min, uint32_t max, uint32_t *pv)
{
    uint64_t v;
    if (ctl_parse_u64(text, &v) != 0 || v < min || v > max)
        return -EINVAL;
    *pv = (uint32_t)v;
    return 0;
}

int ctl_parse_sha256(const char *text, uint8_t out[32])
{
    if (!text || strlen(text) != 64)
        return -EINVAL;
    return aegis_hex_decode(text, 64, out, 32) == 32 ? 0 : -EINVAL;
}

static int key_char_ok(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-' || c == '/';
}

int ctl_parse_kvlist(const char *text, struct ctl_kvlist *l, char *err, size_t errlen)
{
    /* One block per call, chained through its first pointer-sized bytes, so
     * that a list may be built from several flags (--label a=1 --label b=2)
     * and the entries stay valid until ctl_kvlist_free. */
    size_t tlen = strlen(text ? text : "") + 1;
    char *blk = malloc(sizeof(char *) + tlen);
    if (!blk) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char *copy = blk + sizeof(char *);
    memcpy(copy, text ? text : "", tlen);
    char *save = NULL;
    size_t start_n = l->n;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) {
            snprintf(err, errlen, "\"%s\" is not key=value", tok);
            goto bad;
        }
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        if (strlen(k) > CTL_LABEL_KEY_MAX || strlen(v) > CTL_LABEL_VALUE_MAX) {
            snprintf(err, errlen, "label \"%.40s\" too long (keys <= %u, values <= %u bytes)", k,
                     CTL_LABEL_KEY_MAX, CTL_LABEL_VALUE_MAX);
            goto bad;
        }
        for (const char *c = k; *c; c++) {
            if (!key_char_ok(*c)) {
                snprintf(err, errlen, "label key \"%s\" has '%c' (use letters, digits, . _ - /)", k,
                         *c);
                goto bad;
            }
        }
        for (const char *c = v; *c; c++) {
            if ((unsigned char)*c < 0x20 || *c == '=') {
                snprintf(err, errlen, "label value for \"%s\" has a control character or '='", k);
                goto bad;
            }
        }
        for (size_t i = 0; i < l->n; i++) {
            if (strcmp(l->key[i], k) == 0) {
                snprintf(err, errlen, "label \"%s\" given twice", k);
                goto bad;
            }
        }
        if (l->n == CTL_MAX_LABELS) {
            snprintf(err, errlen, "too many labels (at most %u)", CTL_MAX_LABELS);
            goto bad;
        }
        l->key[l->n] = (char *)k;
        l->value[l->n] = (char *)v;
        l->n++;
    }
    if (l->n == start_n) {
        snprintf(err, errlen, "empty list (expected key=value[,key=value...])");
        goto bad;
    }
    memcpy(blk, &l->buf, sizeof(char *));
    l->buf = blk;
    return 0;
bad:
    l->n = start_n;
    free(blk);
    return -EINVAL;
}

void ctl_kvlist_free(struct ctl_kvlist *l)
{
    char *b = l->buf;
    while (b) {
        char *prev;
        memcpy(&prev, b, sizeof(char *));
        free(b);
        b = prev;
    }
    memset(l, 0, sizeof(*l));
}
