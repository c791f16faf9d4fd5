#include "agent_ident.h"
#include "agent_io.h"

#include <aegis/err.h>
#include <aegis/mem.h>

#include <aegis/base64.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>

#include <stdlib.h>
#include <string.h>

void agent_pubkey_pem(const uint8_t pub[AGENT_ED25519_PUB_LEN], char out[128])
{
    uint8_t spki[AGENT_ED25519_SPKI_LEN];
    char b64[64];
    agent_ed25519_spki(pub, spki);
    aegis_base64_encode(spki, sizeof(spki), AEGIS_BASE64_PAD, b64, sizeof(b64));
    snprintf(out, 128, "-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n", b64);
}

int agent_pubkey_from_pem(const char *pem, size_t len, uint8_t pub[AGENT_ED25519_PUB_LEN])
{
    static const char begin[] = "-----BEGIN PUBLIC KEY-----";
    static const char end[] = "-----END PUBLIC KEY-----";
    const char *b = memmem(pem, len, begin, sizeof(begin) - 1);
    if (b == NULL)
        return AEGIS_ERR_MALFORMED;
    b += sizeof(begin) - 1;
    const char *e = memmem(b, len - (size_t)(b - pem), end, sizeof(end) - 1);
    if (e == NULL)
        return AEGIS_ERR_MALFORMED;
    uint8_t der[128];
    long n = aegis_base64_decode(b, (size_t)(e - b), AEGIS_BASE64_SKIP_SPACE, der, sizeof(der));
    if (n < 0)
        return AEGIS_ERR_MALFORMED;
    return agent_ed25519_from_spki(der, (size_t)n, pub);
}

int agent_read_small(const char *dir, const char *name, char *buf, size_t cap)
{
    char path[4096];
    int rv = agent_io_path(path, sizeof(path), dir, name);
    size_t n = 0;
    if (rv == 0)
        rv = agent_io_read_file(NULL, path, buf, cap - 1, &n);
    if (rv != 0)
        return rv;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    return 0;
}

static int read_alloc(const char *dir, const char *name, char **pbuf, size_t *plen)
{
    char path[4096];
    int rv = agent_io_path(path, sizeof(path), dir, name);
    if (rv != 0)
        return rv;
    char *buf = malloc(65536);
    if (buf == NULL)
        return -ENOMEM;
    size_t n = 0;
    rv = agent_io_read_file(NULL, path, buf, 65535, &n);
    if (rv != 0) {
        free(buf);
        return rv;
    }
    buf[n] = '\0';
    *pbuf = buf;
    *plen = n;
    return 0;
}

int agent_machine_hash(const char *file, uint8_t out[AGENT_SHA256_LEN], char *err, size_t errlen)
{
    if (file == NULL)
        file = "/etc/machine-id";
    char buf[4096];
    size_t n = 0;
    int rv = agent_io_read_file(NULL, file, buf, sizeof(buf) - 1, &n);
    if (rv != 0)
        return agent_errmsg(err, errlen, rv,
                            "cannot read machine id %s: %s (systemd-machine-id-setup creates "
                            "it; tests pass --machine-id-file)",
                            file, aegis_strerror(rv));
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\r'))
        n--;
    if (n == 0)
        return agent_errmsg(err, errlen, AEGIS_ERR_MALFORMED, "machine id file %s is empty", file);
    static const char salt[] = "aegis-machine-id:";
    struct agent_sha256 ctx;
    if ((rv = agent_sha256_init(&ctx)) != 0)
        return rv;
    agent_sha256_update(&ctx, salt, sizeof(salt) - 1);
    agent_sha256_update(&ctx, buf, n);
    return agent_sha256_final(&ctx, out);
}

static int load_labels(struct agent_ident *id, const char *dir)
{
    char *buf = NULL;
    size_t len = 0;
    int rv = read_alloc(dir, AGENT_FILE_LABELS, &buf, &len);
    if (rv == -ENOENT)
        return 0;
    if (rv != 0)
        return rv;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line && id->nlabels < AGENT_IDENT_MAX_LABELS;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        size_t i = id->nlabels++;
        snprintf(id->label_store[i][0], AGENT_IDENT_LABEL_MAX, "%s", line);
        snprintf(id->label_store[i][1], AGENT_IDENT_LABEL_MAX, "%s", eq + 1);
        id->labels[i].key = id->label_store[i][0];
        id->labels[i].value = id->label_store[i][1];
    }
    free(buf);
    return 0;
}

static int load_artifact_keys(struct agent_ident *id, const char *dir, char *err, size_t errlen)
{
    char kdir[4096];
    int rv = agent_io_path(kdir, sizeof(kdir), dir, AGENT_DIR_ARTKEYS);
    if (rv != 0)
        return rv;
    DIR *d = opendir(kdir);
    if (d == NULL)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && id->nartifact_keys < AGENT_ARTIFACT_MAX_KEYS) {
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcmp(e->d_name + nl - 4, ".pub") != 0)
            continue;
        char pem[1024];
        rv = agent_read_small(kdir, e->d_name, pem, sizeof(pem));
        struct agent_artifact_key *k = &id->artifact_keys[id->nartifact_keys];
        if (rv == 0)
            rv = agent_pubkey_from_pem(pem, strlen(pem), k->pub);
        if (rv != 0) {
            closedir(d);
            return agent_errmsg(err, errlen, rv, "artifact key %s/%s is damaged (%s)", kdir,
                                e->d_name, aegis_strerror(rv));
        }
        agent_key_id(k->pub, k->id);
        id->nartifact_keys++;
    }
    closedir(d);
    return 0;
}

int agent_ident_load(struct agent_ident *id, const char *dir, const char *machine_id_file,
                     char *err, size_t errlen)
{
    memset(id, 0, sizeof(*id));
    int rv = agent_read_small(dir, AGENT_FILE_ID, id->agent_id, sizeof(id->agent_id));
    if (rv == -ENOENT)
        return agent_errmsg(err, errlen, rv,
                            "%s is not enrolled (no %s): run `aegis-agent enroll` first", dir,
                            AGENT_FILE_ID);
    if (rv != 0)
        return agent_errmsg(err, errlen, rv, "cannot read %s/%s: %s", dir, AGENT_FILE_ID,
                            aegis_strerror(rv));
    const char *what = AGENT_FILE_HOSTID;
    if ((rv = agent_read_small(dir, AGENT_FILE_HOSTID, id->host_id, sizeof(id->host_id))) != 0)
        goto fail;
    what = AGENT_FILE_SERVER;
    if ((rv = agent_read_small(dir, AGENT_FILE_SERVER, id->server, sizeof(id->server))) != 0)
        goto fail;
    what = AGENT_FILE_KEY;
    if ((rv = read_alloc(dir, AGENT_FILE_KEY, &id->key_pem, &id->key_len)) != 0)
        goto fail;
    what = AGENT_FILE_CERT;
    if ((rv = read_alloc(dir, AGENT_FILE_CERT, &id->cert_pem, &id->cert_len)) != 0)
        goto fail;
    what = AGENT_FILE_PINS;
    char pins[512];
    if ((rv = agent_read_small(dir, AGENT_FILE_PINS, pins, sizeof(pins))) != 0)
        goto fail;
    char *save = NULL;
    for (char *l = strtok_r(pins, "\n", &save); l && id->npins < AGENT_IDENT_MAX_PINS;
         l = strtok_r(NULL, "\n", &save)) {
        if (strlen(l) != AGENT_IDENT_PIN_LEN - 1 || strncmp(l, "sha256//", 8) != 0) {
            rv = AEGIS_ERR_MALFORMED;
            goto fail;
        }
        memcpy(id->pins[id->npins++], l, AGENT_IDENT_PIN_LEN);
    }
    if (id->npins == 0) {
        rv = AEGIS_ERR_MALFORMED;
        goto fail;
    }
    what = AGENT_FILE_CMDKEY;
    char pem[1024];
    if ((rv = agent_read_small(dir, AGENT_FILE_CMDKEY, pem, sizeof(pem))) != 0 ||
        (rv = agent_pubkey_from_pem(pem, strlen(pem), id->command_pub)) != 0)
        goto fail;
    agent_key_id(id->command_pub, id->command_key_id);
    what = AGENT_FILE_LABELS;
    if ((rv = load_labels(id, dir)) != 0)
        goto fail;
    if ((rv = load_artifact_keys(id, dir, err, errlen)) != 0) {
        agent_ident_free(id);
        return rv;
    }
    if ((rv = agent_machine_hash(machine_id_file, id->machine_hash, err, errlen)) != 0) {
        agent_ident_free(id);
        return rv;
    }
    return 0;
fail:
    agent_ident_free(id);
    return agent_errmsg(err, errlen, rv,
                        "enrollment state %s/%s is missing or damaged (%s): re-enroll with "
                        "`aegis-agent enroll --force`",
                        dir, what, aegis_strerror(rv));
}

void agent_ident_free(struct agent_ident *id)
{
    if (id->key_pem) {
        explicit_bzero(id->key_pem, id->key_len);
        free(id->key_pem);
    }
    free(id->cert_pem);
    id->key_pem = id->cert_pem = NULL;
}
