/*
 * aegisctl configuration (FLEET_CONTRACT "aegisctl config"): each setting
 * comes from its flag, else its environment variable, else the config file
 * ("key = value" lines; '#' starts a comment).
 */
#include "ctl_cli.h"

#include <aegis/err.h>

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void ctl_config_free(struct ctl_config *c)
{
    if (!c)
        return;
    free(c->server);
    free(c->pin);
    free(c->cert);
    free(c->key);
    free(c->signing_key);
    memset(c, 0, sizeof(*c));
}

static const struct {
    const char *file_key;
    const char *env;
    int is_path;
    size_t off;
} fields[] = {
    {"server", "AEGIS_SERVER", 0, offsetof(struct ctl_config, server)},
    {"pin", "AEGIS_PIN", 0, offsetof(struct ctl_config, pin)},
    {"cert", "AEGIS_CERT", 1, offsetof(struct ctl_config, cert)},
    {"key", "AEGIS_KEY", 1, offsetof(struct ctl_config, key)},
    {"signing_key", "AEGIS_SIGNING_KEY", 1, offsetof(struct ctl_config, signing_key)},
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

static char **field(struct ctl_config *c, size_t i)
{
    return (char **)((char *)c + fields[i].off);
}

static char *const *cfield(const struct ctl_config *c, size_t i)
{
    return (char *const *)((const char *)c + fields[i].off);
}

/* Expands "~/" with $HOME and makes a relative path relative to base_dir
 * (the config file's directory; NULL = leave it as is). */
static char *expand_path(const char *v, const char *base_dir, ctl_getenv_fn getenv_fn)
{
    char *out = NULL;
    if (v[0] == '~' && v[1] == '/') {
        const char *home = getenv_fn("HOME");
        if (home && asprintf(&out, "%s/%s", home, v + 2) < 0)
            out = NULL;
        else if (!home)
            out = strdup(v);
    } else if (v[0] != '/' && base_dir) {
        if (asprintf(&out, "%s/%s", base_dir, v) < 0)
            out = NULL;
    } else {
        out = strdup(v);
    }
    return out;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int load_file(const char *path, int must_exist, struct ctl_config *fromfile,
                     ctl_getenv_fn getenv_fn, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rv = ctl_read_file(path, 1u << 20, &text, &len);
    if (rv == -ENOENT && !must_exist)
        return 0;
    if (rv != 0) {
        snprintf(err, errlen, "cannot read config file %s: %s", path, aegis_strerror(rv));
        return CTL_EXIT_INPUT;
    }
    char *dir = strdup(path);
    if (!dir) {
        free(text);
        snprintf(err, errlen, "out of memory");
        return CTL_EXIT_INPUT;
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        strcpy(dir, ".");
    int ret = 0;
    unsigned lineno = 0;
    char *line = text;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *l = trim(line);
        if (*l) {
            char *eq = strchr(l, '=');
            if (!eq) {
                snprintf(err, errlen, "%s:%u: expected \"key = value\"", path, lineno);
                ret = CTL_EXIT_INPUT;
                break;
            }
            *eq = '\0';
            char *k = trim(l), *v = trim(eq + 1);
            size_t i;
            for (i = 0; i < NFIELDS; i++) {
                if (strcmp(k, fields[i].file_key) == 0)
                    break;
            }
            if (i == NFIELDS) {
                snprintf(err, errlen,
                         "%s:%u: unknown key \"%s\" (known: server, pin, cert, key, signing_key)",
                         path, lineno, k);
                ret = CTL_EXIT_INPUT;
                break;
            }
            if (!*v) {
                snprintf(err, errlen, "%s:%u: empty value for \"%s\"", path, lineno, k);
                ret = CTL_EXIT_INPUT;
                break;
            }
            char *val = fields[i].is_path ? expand_path(v, dir, getenv_fn) : strdup(v);
            if (!val) {
                snprintf(err, errlen, "out of memory");
                ret = CTL_EXIT_INPUT;
                break;
            }
            free(*field(fromfile, i));
            *field(fromfile, i) = val;
        }
        line = nl ? nl + 1 : NULL;
    }
    free(dir);
    free(text);
    return ret;
}

int ctl_config_resolve(const struct ctl_config *flags, ctl_getenv_fn getenv_fn, const char *file,
                       struct ctl_config *out, char *err, size_t errlen)
{
    struct ctl_config fromfile = {0};
    char *deffile = NULL;
    int must_exist = 1;
    if (!file) {
        const char *e = getenv_fn("AEGISCTL_CONFIG");
        if (e && *e) {
            file = e;
        } else {
            const char *home = getenv_fn("HOME");
            if (home && asprintf(&deffile, "%s/.config/aegis/aegisctl.conf", home) >= 0) {
                file = deffile;
                must_exist = 0;
            }
        }
    }
    int rv = file ? load_file(file, must_exist, &fromfile, getenv_fn, err, errlen) : 0;
    free(deffile);
    if (rv != 0) {
        ctl_config_free(&fromfile);
        return rv;
    }
    struct ctl_config res = {0};
    for (size_t i = 0; i < NFIELDS; i++) {
        const char *v = *cfield(flags, i);
        char *val = NULL;
        if (v && *v) {
            val = fields[i].is_path ? expand_path(v, NULL, getenv_fn) : strdup(v);
        } else if ((v = getenv_fn(fields[i].env)) != NULL && *v) {
            val = fields[i].is_path ? expand_path(v, NULL, getenv_fn) : strdup(v);
        } else if (*field(&fromfile, i)) {
            val = *field(&fromfile, i);
            *field(&fromfile, i) = NULL;
        }
        *field(&res, i) = val;
    }
    ctl_config_free(&fromfile);
    /* "host" alone means the default port; "[v6]" likewise. */
    if (res.server) {
        const char *colon = strrchr(res.server, ':');
        const char *bracket = strrchr(res.server, ']');
        int has_port = colon && (!bracket || colon > bracket) &&
                       (res.server[0] == '[' || strchr(res.server, ':') == colon);
        if (!has_port) {
            char *s = NULL;
            if (asprintf(&s, "%s:%s", res.server, CTL_DEFAULT_PORT) < 0) {
                ctl_config_free(&res);
                snprintf(err, errlen, "out of memory");
                return CTL_EXIT_INPUT;
            }
            free(res.server);
            res.server = s;
        }
    }
    *out = res;
    return 0;
}
