/*
 * wolfSSL-facing internals of aegis_pki: the key object and public-key
 * loading. Included only by pki_key.c, pki_issue.c and pki_inspect.c.
 */
#ifndef AEGIS_PKI_WC_H
#define AEGIS_PKI_WC_H

#include "pki_int.h"

#include <wolfssl/options.h>

#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/ed25519.h>
#include <wolfssl/wolfcrypt/random.h>

struct aegis_key {
    const struct aegis_mem *mem;
    enum aegis_key_algo algo;
    union {
        ed25519_key ed;
        ecc_key ec;
    } u;
};

/* A public key loaded into wolfCrypt from a parsed SPKI. */
struct pki_pub {
    enum aegis_key_algo algo;
    union {
        ed25519_key ed;
        ecc_key ec;
    } u;
};

/* aegis_pki_pub_load imports spki's key; on success the caller must call
 * aegis_pki_pub_free. AEGIS_ERR_MALFORMED (not a point on the curve), -ENOMEM. */
int aegis_pki_pub_load(const struct pki_spki *spki, struct pki_pub *pub);
void aegis_pki_pub_free(struct pki_pub *pub);

/* aegis_pki_rng_init seeds a DRBG from the system RNG. */
int aegis_pki_rng_init(WC_RNG *rng);

#endif
