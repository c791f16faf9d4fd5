/*
 * aegisctl crypto: the operator's artifact-signing key files and the signed
 * ArtifactStatement (proto/README.md "What is signed"), on aegis_pki (which
 * also does the hashing: the CLI never touches wolfSSL itself).
 */
#include "ctl_cli.h"

#include <aegis/base64.h>
#include <aegis/err.h>
#include <aegis/pki.h>
#include <aegis/v1/artifact.pb-c.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *ctl_base64(const uint8_t *p, size_t n)
{
    size_t cap = aegis_base64_encoded_len(n, AEGIS_BASE64_PAD) + 1;
    char *out = malloc(cap);
    if (out)
        aegis_base64_encode(p, n, AEGIS_BASE64_PAD, out, cap);
    return out;
}

char *ctl_spki_pem(const uint8_t *der, size_t len)
{
    char *b64 = ctl_base64(der, len);
    if (!b64)
        return NULL;
    size_t bl = strlen(b64);
    /* RFC 7468: 64 characters a line */
    size_t cap = bl + bl / 64 + 64;
    char *pem = malloc(cap);
    if (!pem) {
        free(b64);
        return NULL;
    }
    size_t o = (size_t)snprintf(pem, cap, "-----BEGIN PUBLIC KEY-----\n");
    for (size_t i = 0; i < bl; i += 64) {
        size_t k = bl - i < 64 ? bl - i : 64;
        memcpy(pem + o, b64 + i, k);
        o += k;
        pem[o++] = '\n';
    }
    snprintf(pem + o, cap - o, "-----END PUBLIC KEY-----\n");
    free(b64);
    return pem;
}

int ctl_read_file(const char *path, size_t max, char **pbuf, size_t *plen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int rv = buf ? 0 : -ENOMEM;
    while (rv == 0) {
        if (len + 1 >= cap) {
            if (cap > max + 1) {
                rv = AEGIS_ERR_TOO_LARGE;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rv = -ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - 1 - len, f);
        len += n;
        if (len > max) {
            rv = AEGIS_ERR_TOO_LARGE;
            break;
        }
        if (n == 0) {
            if (ferror(f))
                rv = -EIO;
            break;
        }
    }
    fclose(f);
    if (rv != 0) {
        free(buf);
        return rv;
    }
    buf[len] = '\0';
    *pbuf = buf;
    *plen = len;
    return 0;
}

/* Writes data to a new file with `mode`; never replaces an existing one. */
static int write_new(const char *path, const char *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    int rv = 0;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rv = -errno;
            break;
        }
        off += (size_t)w;
    }
    if (rv == 0 && fsync(fd) != 0)
        rv = -errno;
    if (close(fd) != 0 && rv == 0)
        rv = -errno;
    if (rv != 0)
        unlink(path);
    return rv;
}

int ctl_keygen(const char *path, char key_id[17], char *err, size_t errlen)
{
    char *pubpath = NULL;
    if (asprintf(&pubpath, "%s.pub", path) < 0) {
        snprintf(err, errlen, "out of memory");
        return CTL_EXIT_INPUT;
    }
    struct stat sb;
    const char *exists = stat(path, &sb) == 0 ? path : stat(pubpath, &sb) == 0 ? pubpath : NULL;
    if (exists) {
        snprintf(err, errlen,
                 "%s already exists; refusing to overwrite a key (choose another "
                 "--out or remove the old files first)",
                 exists);
        free(pubpath);
        return CTL_EXIT_INPUT;
    }
    struct aegis_key *key = NULL;
    char *pem = NULL, *pubpem = NULL;
    uint8_t *spki = NULL;
    size_t pemlen = 0, spkilen = 0;
    int rv = aegis_key_generate(NULL, AEGIS_KEY_ED25519, &key);
    if (rv == 0)
        rv = aegis_key_to_pem(key, &pem, &pemlen);
    if (rv == 0)
        rv = aegis_key_spki_der(key, &spki, &spkilen);
    if (rv == 0 && !(pubpem = ctl_spki_pem(spki, spkilen)))
        rv = -ENOMEM;
    if (rv == 0)
        rv = aegis_key_id_from_spki(spki, spkilen, key_id);
    int ret = 0;
    if (rv != 0) {
        snprintf(err, errlen, "cannot generate an Ed25519 key: %s", aegis_strerror(rv));
        ret = CTL_EXIT_INPUT;
    } else if ((rv = write_new(path, pem, pemlen, 0600)) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, aegis_strerror(rv));
        ret = CTL_EXIT_INPUT;
    } else if ((rv = write_new(pubpath, pubpem, strlen(pubpem), 0644)) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", pubpath, aegis_strerror(rv));
        unlink(path);
        ret = CTL_EXIT_INPUT;
    }
    if (pem) {
        explicit_bzero(pem, pemlen);
        aegis_free(NULL, pem);
    }
    aegis_free(NULL, spki);
    free(pubpem);
    aegis_key_del(key);
    free(pubpath);
    return ret;
}

int ctl_statement_sign(const struct ctl_statement *st, const char *key_pem, size_t key_len,
                       uint8_t **pstmt, size_t *pstmtlen, uint8_t **psig, size_t *psiglen,
                       char key_id[17], char *err, size_t errlen)
{
    struct aegis_key *key = NULL;
    int rv = aegis_key_from_pem(NULL, key_pem, key_len, &key);
    if (rv != 0) {
        snprintf(err, errlen, "the signing key is not a usable private key: %s",
                 aegis_strerror(rv));
        return CTL_EXIT_INPUT;
    }
    if (aegis_key_algo(key) != AEGIS_KEY_ED25519) {
        aegis_key_del(key);
        snprintf(err, errlen,
                 "the signing key is not Ed25519 (make one with `aegisctl artifacts "
                 "keygen`)");
        return CTL_EXIT_INPUT;
    }
    Aegis__V1__ArtifactStatement s = AEGIS__V1__ARTIFACT_STATEMENT__INIT;
    s.name = (char *)st->name;
    s.kind = (Aegis__V1__ArtifactKind)st->kind;
    s.size = st->size;
    s.sha256.data = (uint8_t *)st->sha256;
    s.sha256.len = 32;
    s.compression = (Aegis__V1__Compression)st->compression;
    s.uncompressed_size = st->uncompressed_size;
    s.version = (char *)(st->version ? st->version : "");
    s.signed_unix_ns = st->signed_unix_ns;
    uint8_t *stmt = NULL, *spki = NULL, *sig = NULL;
    size_t stmtlen = 0, spkilen = 0, siglen = 0;
    rv = ctl_pack(&s.base, &stmt, &stmtlen);
    if (rv == 0)
        rv = aegis_key_sign(key, stmt, stmtlen, &sig, &siglen);
    if (rv == 0)
        rv = aegis_key_spki_der(key, &spki, &spkilen);
    if (rv == 0)
        rv = aegis_key_id_from_spki(spki, spkilen, key_id);
    aegis_free(NULL, spki);
    aegis_key_del(key);
    if (rv != 0) {
        aegis_free(NULL, stmt);
        aegis_free(NULL, sig);
        snprintf(err, errlen, "cannot sign the artifact statement: %s", aegis_strerror(rv));
        return CTL_EXIT_INPUT;
    }
    *pstmt = stmt;
    *pstmtlen = stmtlen;
    *psig = sig;
    *psiglen = siglen;
    return 0;
}
