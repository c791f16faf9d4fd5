#include "agent_crypto.h"

#include <aegis/err.h>
#include <aegis/pki.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include <errno.h>
#include <string.h>
#include <sys/random.h>

_Static_assert(sizeof(wc_Sha256) <= sizeof(((struct agent_sha256 *)0)->opaque),
               "struct agent_sha256 too small for wc_Sha256");

/* RFC 8410 §4: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused) }. */
static const uint8_t ed25519_spki_prefix[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                                0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};

int agent_sha256_init(struct agent_sha256 *ctx)
{
    return wc_InitSha256((wc_Sha256 *)(void *)ctx->opaque) == 0 ? 0 : AEGIS_ERR_CRYPTO;
}

int agent_sha256_update(struct agent_sha256 *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        /* wolfSSL takes word32 lengths */
        word32 n = len > 0x40000000u ? 0x40000000u : (word32)len;
        if (wc_Sha256Update((wc_Sha256 *)(void *)ctx->opaque, p, n) != 0)
            return AEGIS_ERR_CRYPTO;
        p += n;
        len -= n;
    }
    return 0;
}

int agent_sha256_final(struct agent_sha256 *ctx, uint8_t out[AGENT_SHA256_LEN])
{
    int rc = wc_Sha256Final((wc_Sha256 *)(void *)ctx->opaque, out);
    wc_Sha256Free((wc_Sha256 *)(void *)ctx->opaque);
    return rc == 0 ? 0 : AEGIS_ERR_CRYPTO;
}

int agent_ed25519_verify(const uint8_t pub[AGENT_ED25519_PUB_LEN], const uint8_t *msg, size_t len,
                         const uint8_t *sig, size_t siglen)
{
    if (sig == NULL || siglen != AGENT_ED25519_SIG_LEN || len > 0xffffffffu)
        return AEGIS_ERR_SIGNATURE;
    /* The verification itself is aegis_pki's, as everywhere else. */
    uint8_t spki[AGENT_ED25519_SPKI_LEN];
    agent_ed25519_spki(pub, spki);
    return aegis_spki_verify(spki, sizeof(spki), msg, len, sig, siglen);
}

void agent_ed25519_spki(const uint8_t pub[AGENT_ED25519_PUB_LEN],
                        uint8_t spki[AGENT_ED25519_SPKI_LEN])
{
    memcpy(spki, ed25519_spki_prefix, sizeof(ed25519_spki_prefix));
    memcpy(spki + sizeof(ed25519_spki_prefix), pub, AGENT_ED25519_PUB_LEN);
}

int agent_ed25519_from_spki(const uint8_t *spki, size_t len, uint8_t pub[AGENT_ED25519_PUB_LEN])
{
    if (spki == NULL || len != AGENT_ED25519_SPKI_LEN ||
        memcmp(spki, ed25519_spki_prefix, sizeof(ed25519_spki_prefix)) != 0)
        return AEGIS_ERR_UNSUPPORTED;
    memcpy(pub, spki + sizeof(ed25519_spki_prefix), AGENT_ED25519_PUB_LEN);
    return 0;
}

int agent_key_id(const uint8_t pub[AGENT_ED25519_PUB_LEN], char out[AGENT_KEY_ID_LEN + 1])
{
    uint8_t spki[AGENT_ED25519_SPKI_LEN];
    agent_ed25519_spki(pub, spki);
    return aegis_key_id_from_spki(spki, sizeof(spki), out);
}

int agent_random(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
