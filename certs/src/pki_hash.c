/*
 * SHA-256 and key ids on wolfCrypt, for every program that hashes: artifact
 * digests, pins, token hashes, and the key id of FLEET_CONTRACT ("lower-case
 * hex of the first 8 bytes of SHA-256(SPKI DER)").
 */
#include "pki_wc.h"

#include <aegis/err.h>
#include <aegis/hex.h>

#include <wolfssl/wolfcrypt/sha256.h>

#include <errno.h>
#include <string.h>

/* wolfCrypt takes word32 lengths: longer inputs go in slices of this size. */
#define SHA256_SLICE (1u << 30)

struct aegis_sha256 {
    const struct aegis_mem *mem;
    wc_Sha256 wc;
};

static int update(wc_Sha256 *wc, const uint8_t *p, size_t len)
{
    while (len > 0) {
        word32 n = len > SHA256_SLICE ? SHA256_SLICE : (word32)len;
        int rv = aegis_pki_wc_err(wc_Sha256Update(wc, p, n));
        if (rv != 0)
            return rv;
        p += n;
        len -= n;
    }
    return 0;
}

int aegis_sha256_hash(const void *data, size_t len, uint8_t out[AEGIS_SHA256_LEN])
{
    if ((!data && len) || !out)
        return -EINVAL;
    wc_Sha256 wc;
    int rv = aegis_pki_wc_err(wc_InitSha256(&wc));
    if (rv != 0)
        return rv;
    rv = update(&wc, data, len);
    if (rv == 0)
        rv = aegis_pki_wc_err(wc_Sha256Final(&wc, out));
    wc_Sha256Free(&wc);
    return rv;
}

int aegis_sha256_new(const struct aegis_mem *mem, struct aegis_sha256 **pctx)
{
    if (!pctx)
        return -EINVAL;
    struct aegis_sha256 *c = aegis_malloc(mem, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->mem = mem;
    int rv = aegis_pki_wc_err(wc_InitSha256(&c->wc));
    if (rv != 0) {
        aegis_free(mem, c);
        return rv;
    }
    *pctx = c;
    return 0;
}

int aegis_sha256_update(struct aegis_sha256 *ctx, const void *data, size_t len)
{
    if (!ctx || (!data && len))
        return -EINVAL;
    return update(&ctx->wc, data, len);
}

int aegis_sha256_final(struct aegis_sha256 *ctx, uint8_t out[AEGIS_SHA256_LEN])
{
    if (!ctx || !out)
        return -EINVAL;
    /* wc_Sha256Final also starts the context over. */
    return aegis_pki_wc_err(wc_Sha256Final(&ctx->wc, out));
}

void aegis_sha256_del(struct aegis_sha256 *ctx)
{
    if (!ctx)
        return;
    wc_Sha256Free(&ctx->wc);
    aegis_free(ctx->mem, ctx);
}

int aegis_key_id_from_spki(const uint8_t *spki_der, size_t len, char out[AEGIS_KEY_ID_STRLEN])
{
    if (!spki_der || len == 0 || !out)
        return -EINVAL;
    uint8_t h[AEGIS_SHA256_LEN];
    int rv = aegis_sha256_hash(spki_der, len, h);
    if (rv == 0)
        aegis_hex_encode(h, (AEGIS_KEY_ID_STRLEN - 1) / 2, out, AEGIS_KEY_ID_STRLEN);
    return rv;
}
