/*
 * Keys: generation, PKCS#8 PEM in and out, SPKI export, signing and
 * verification, on wolfCrypt's Ed25519 and ECC (P-256) code.
 *
 * PKCS#8 is parsed here rather than by wolfSSL so both algorithms go through
 * one strict reader (RFC 5208 §5, RFC 5958 §2, RFC 8410 §7, RFC 5915 §3).
 */
#include "pki_wc.h"

#include <aegis/err.h>

#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <errno.h>
#include <string.h>

/* Scratch size for a private key's DER: an Ed25519 PKCS#8 is 48 bytes, a
 * P-256 one with its public key about 140. */
#define KEY_DER_MAX 512
/* ECDSA P-256 DER signature: SEQUENCE of two INTEGERs of at most 33 bytes. */
#define P256_SIG_MAX 72
#define P256_PRIV_LEN 32
#define P256_PUB_LEN 65

int aegis_pki_wc_err(int wc_ret)
{
    switch (wc_ret) {
    case 0:
        return 0;
    case MEMORY_E:
        return -ENOMEM;
    case BAD_FUNC_ARG:
        return -EINVAL;
    case ASN_PARSE_E:
    case ASN_ECC_KEY_E:
    case ECC_BAD_ARG_E:
    case PUBLIC_KEY_E:
    case ECC_OUT_OF_RANGE_E:
    case ECC_INF_E:
    case ECC_PRIV_KEY_E:
    case MP_VAL:
        return AEGIS_ERR_MALFORMED;
    case SIG_VERIFY_E:
        return AEGIS_ERR_SIGNATURE;
    default:
        return AEGIS_ERR_CRYPTO;
    }
}

int aegis_pki_rng_init(WC_RNG *rng)
{
    return aegis_pki_wc_err(wc_InitRng(rng));
}

int aegis_pki_random(uint8_t *out, size_t len)
{
    WC_RNG rng;
    int rv;

    if (len > UINT32_MAX)
        return -EINVAL;
    if ((rv = aegis_pki_rng_init(&rng)) != 0)
        return rv;
    rv = aegis_pki_wc_err(wc_RNG_GenerateBlock(&rng, out, (word32)len));
    wc_FreeRng(&rng);
    return rv;
}

int aegis_pki_keyid(const struct pki_spki *spki, uint8_t out[AEGIS_PKI_KEYID_LEN])
{
    uint8_t h[32];
    int rv = aegis_sha256_hash(spki->pub, spki->pub_len, h);

    if (rv == 0)
        memcpy(out, h, AEGIS_PKI_KEYID_LEN);
    return rv;
}

int aegis_pki_pub_load(const struct pki_spki *spki, struct pki_pub *pub)
{
    int ret;

    memset(pub, 0, sizeof(*pub));
    pub->algo = spki->algo;
    if (spki->algo == AEGIS_KEY_ED25519) {
        if ((ret = wc_ed25519_init(&pub->u.ed)) != 0)
            return aegis_pki_wc_err(ret);
        ret = wc_ed25519_import_public(spki->pub, (word32)spki->pub_len, &pub->u.ed);
        if (ret != 0) {
            wc_ed25519_free(&pub->u.ed);
            return ret == MEMORY_E ? -ENOMEM : AEGIS_ERR_MALFORMED;
        }
        return 0;
    }
    if ((ret = wc_ecc_init(&pub->u.ec)) != 0)
        return aegis_pki_wc_err(ret);
    ret = wc_ecc_import_x963_ex(spki->pub, (word32)spki->pub_len, &pub->u.ec, ECC_SECP256R1);
    /* Refuse points that are not on the curve before they go into a
     * certificate or take part in a verification. */
    if (ret == 0)
        ret = wc_ecc_check_key(&pub->u.ec);
    if (ret != 0) {
        wc_ecc_free(&pub->u.ec);
        return ret == MEMORY_E ? -ENOMEM : AEGIS_ERR_MALFORMED;
    }
    return 0;
}

void aegis_pki_pub_free(struct pki_pub *pub)
{
    if (pub->algo == AEGIS_KEY_ED25519)
        wc_ed25519_free(&pub->u.ed);
    else
        wc_ecc_free(&pub->u.ec);
}

int aegis_pki_verify_raw(const struct pki_spki *spki, const uint8_t *sig_oid, size_t sig_oid_len,
                         const uint8_t *msg, size_t len, const uint8_t *sig, size_t siglen)
{
    struct pki_pub pub;
    int ret, res = 0, rv;

    if (len > UINT32_MAX || siglen > UINT32_MAX)
        return -EINVAL;
    if (sig_oid) {
        /* The signature algorithm must be the one of the key (RFC 8410 §6,
         * RFC 5758 §3.2): a mismatch is a bad signature, not a crash. */
        if (spki->algo == AEGIS_KEY_ED25519 &&
            !aegis_pki_bytes_eq(sig_oid, sig_oid_len, aegis_pki_oid_ed25519,
                                sizeof(aegis_pki_oid_ed25519)))
            return AEGIS_ERR_SIGNATURE;
        if (spki->algo == AEGIS_KEY_P256 &&
            !aegis_pki_bytes_eq(sig_oid, sig_oid_len, aegis_pki_oid_ecdsa_sha256,
                                sizeof(aegis_pki_oid_ecdsa_sha256)))
            return AEGIS_ERR_SIGNATURE;
    }
    if ((rv = aegis_pki_pub_load(spki, &pub)) != 0)
        return rv;
    if (spki->algo == AEGIS_KEY_ED25519) {
        if (siglen != ED25519_SIG_SIZE) {
            rv = AEGIS_ERR_SIGNATURE;
            goto out;
        }
        ret = wc_ed25519_verify_msg(sig, (word32)siglen, msg, (word32)len, &res, &pub.u.ed);
    } else {
        uint8_t h[32];
        if ((rv = aegis_sha256_hash(msg, len, h)) != 0)
            goto out;
        ret = wc_ecc_verify_hash(sig, (word32)siglen, h, sizeof(h), &res, &pub.u.ec);
    }
    if (ret == MEMORY_E)
        rv = -ENOMEM;
    else if (ret != 0 || res != 1)
        rv = AEGIS_ERR_SIGNATURE;
    else
        rv = 0;
out:
    aegis_pki_pub_free(&pub);
    return rv;
}

int aegis_spki_verify(const uint8_t *spki_der, size_t spki_len, const uint8_t *msg, size_t len,
                      const uint8_t *sig, size_t siglen)
{
    struct pki_spki spki;
    int rv;

    if (!spki_der || (!msg && len) || !sig)
        return -EINVAL;
    if ((rv = aegis_pki_spki_parse(spki_der, spki_len, &spki)) != 0)
        return rv;
    return aegis_pki_verify_raw(&spki, NULL, 0, msg, len, sig, siglen);
}

static struct aegis_key *key_alloc(const struct aegis_mem *mem, enum aegis_key_algo algo)
{
    struct aegis_key *k = aegis_calloc(mem, 1, sizeof(*k));

    if (k) {
        k->mem = mem;
        k->algo = algo;
    }
    return k;
}

/* Releases a key whose wolfCrypt object was initialised. */
static void key_release(struct aegis_key *k)
{
    const struct aegis_mem *mem = k->mem;

    if (k->algo == AEGIS_KEY_ED25519)
        wc_ed25519_free(&k->u.ed);
    else
        wc_ecc_free(&k->u.ec);
    /* wolfCrypt zeroes most of its state on free; wipe the whole object
     * anyway so no copy of the secret survives in freed memory. */
    explicit_bzero(k, sizeof(*k));
    aegis_free(mem, k);
}

int aegis_key_generate(const struct aegis_mem *mem, enum aegis_key_algo algo,
                       struct aegis_key **pkey)
{
    struct aegis_key *k;
    WC_RNG rng;
    int ret, rv;

    if (!pkey || (algo != AEGIS_KEY_ED25519 && algo != AEGIS_KEY_P256))
        return -EINVAL;
    if (!(k = key_alloc(mem, algo)))
        return -ENOMEM;
    if ((rv = aegis_pki_rng_init(&rng)) != 0) {
        aegis_free(mem, k);
        return rv;
    }
    if (algo == AEGIS_KEY_ED25519) {
        ret = wc_ed25519_init(&k->u.ed);
        if (ret == 0)
            ret = wc_ed25519_make_key(&rng, ED25519_KEY_SIZE, &k->u.ed);
    } else {
        ret = wc_ecc_init(&k->u.ec);
        if (ret == 0)
            ret = wc_ecc_make_key_ex(&rng, P256_PRIV_LEN, &k->u.ec, ECC_SECP256R1);
    }
    wc_FreeRng(&rng);
    if (ret != 0) {
        key_release(k);
        /* Nothing the caller passed can be wrong here: any failure but
         * memory is the crypto library's. */
        return ret == MEMORY_E ? -ENOMEM : AEGIS_ERR_CRYPTO;
    }
    *pkey = k;
    return 0;
}

enum aegis_key_algo aegis_key_algo(const struct aegis_key *key)
{
    return key->algo;
}

void aegis_key_del(struct aegis_key *key)
{
    if (key)
        key_release(key);
}

/* Loads an Ed25519 seed (RFC 8410 §7 CurvePrivateKey) into k. */
static int load_ed25519(struct aegis_key *k, const struct der_tlv *priv)
{
    struct der cur = {priv->val, priv->len};
    struct der_tlv seed;
    uint8_t pub[ED25519_PUB_KEY_SIZE];
    int ret;

    if (aegis_pki_der_expect(&cur, DER_OCTET_STRING, &seed) != 0 || cur.len != 0 ||
        seed.len != ED25519_KEY_SIZE)
        return AEGIS_ERR_MALFORMED;
    if ((ret = wc_ed25519_init(&k->u.ed)) != 0)
        return aegis_pki_wc_err(ret);
    /* The public half is always derived from the seed, so a file with a
     * mismatched public key cannot make us sign under the wrong identity. */
    ret = wc_ed25519_import_private_only(seed.val, ED25519_KEY_SIZE, &k->u.ed);
    if (ret == 0)
        ret = wc_ed25519_make_public(&k->u.ed, pub, sizeof(pub));
    if (ret == 0)
        ret = wc_ed25519_import_private_key(seed.val, ED25519_KEY_SIZE, pub, sizeof(pub), &k->u.ed);
    return ret == 0 ? 0 : (ret == MEMORY_E ? -ENOMEM : AEGIS_ERR_MALFORMED);
}

/* Loads a P-256 ECPrivateKey (RFC 5915 §3) into k. */
static int load_p256(struct aegis_key *k, const struct der_tlv *priv)
{
    struct der cur = {priv->val, priv->len}, in;
    struct der_tlv seq, ver, d;
    uint8_t scalar[P256_PRIV_LEN] = {0};
    WC_RNG rng;
    int ret, rv;

    if (aegis_pki_der_expect(&cur, DER_SEQUENCE, &seq) != 0 || cur.len != 0)
        return AEGIS_ERR_MALFORMED;
    in = (struct der){seq.val, seq.len};
    if (aegis_pki_der_expect(&in, DER_INTEGER, &ver) != 0 || ver.len != 1 || ver.val[0] != 1 ||
        aegis_pki_der_expect(&in, DER_OCTET_STRING, &d) != 0 || d.len == 0 || d.len > P256_PRIV_LEN)
        return AEGIS_ERR_MALFORMED;
    /* Optional [0] parameters must name P-256 if present. */
    if (in.len > 0 && in.p[0] == DER_CTX(0)) {
        struct der_tlv params, oid;
        struct der pc;
        if (aegis_pki_der_read(&in, &params) != 0)
            return AEGIS_ERR_MALFORMED;
        pc = (struct der){params.val, params.len};
        if (aegis_pki_der_expect(&pc, DER_OID, &oid) != 0 ||
            !aegis_pki_bytes_eq(oid.val, oid.len, aegis_pki_oid_prime256v1,
                                sizeof(aegis_pki_oid_prime256v1)))
            return AEGIS_ERR_UNSUPPORTED;
    }
    memcpy(scalar + P256_PRIV_LEN - d.len, d.val, d.len);
    if ((ret = wc_ecc_init(&k->u.ec)) != 0)
        return aegis_pki_wc_err(ret);
    if ((rv = aegis_pki_rng_init(&rng)) != 0) {
        explicit_bzero(scalar, sizeof(scalar));
        return rv;
    }
    /* As for Ed25519, the public point is recomputed from the scalar. */
    ret = wc_ecc_import_private_key_ex(scalar, sizeof(scalar), NULL, 0, &k->u.ec, ECC_SECP256R1);
    if (ret == 0)
        ret = wc_ecc_make_pub_ex(&k->u.ec, NULL, &rng);
    wc_FreeRng(&rng);
    explicit_bzero(scalar, sizeof(scalar));
    return ret == 0 ? 0 : (ret == MEMORY_E ? -ENOMEM : AEGIS_ERR_MALFORMED);
}

int aegis_key_from_pem(const struct aegis_mem *mem, const char *pem, size_t len,
                       struct aegis_key **pkey)
{
    struct der cur, pki, alg;
    struct der_tlv seq, ver, a, oid, priv;
    struct aegis_key *k = NULL;
    enum aegis_key_algo algo;
    uint8_t *der = NULL;
    size_t der_len = 0;
    int rv;

    if (!pem || !pkey)
        return -EINVAL;
    rv = aegis_pki_pem_decode(mem, pem, len, "PRIVATE KEY", NULL, &der, &der_len);
    if (rv == AEGIS_ERR_NOT_FOUND) {
        char label[32];
        uint8_t *other = NULL;
        size_t olen = 0;
        /* Some other PEM block (encrypted PKCS#8, "EC PRIVATE KEY", a
         * certificate): readable, but not a key we load. */
        rv = aegis_pki_pem_decode(mem, pem, len, NULL, label, &other, &olen);
        if (rv == 0) {
            explicit_bzero(other, olen);
            aegis_free(mem, other);
            return AEGIS_ERR_UNSUPPORTED;
        }
        return rv == -ENOMEM ? rv : AEGIS_ERR_MALFORMED;
    }
    if (rv != 0)
        return rv;

    /* PrivateKeyInfo / OneAsymmetricKey ::= SEQUENCE { version, algorithm,
     * privateKey OCTET STRING, [0] attributes, [1] publicKey } */
    rv = AEGIS_ERR_MALFORMED;
    cur = (struct der){der, der_len};
    if (aegis_pki_der_expect(&cur, DER_SEQUENCE, &seq) != 0 || cur.len != 0)
        goto out;
    pki = (struct der){seq.val, seq.len};
    if (aegis_pki_der_expect(&pki, DER_INTEGER, &ver) != 0 || ver.len != 1 || ver.val[0] > 1 ||
        aegis_pki_der_expect(&pki, DER_SEQUENCE, &a) != 0 ||
        aegis_pki_der_expect(&pki, DER_OCTET_STRING, &priv) != 0)
        goto out;
    alg = (struct der){a.val, a.len};
    if (aegis_pki_der_expect(&alg, DER_OID, &oid) != 0)
        goto out;
    if (aegis_pki_bytes_eq(oid.val, oid.len, aegis_pki_oid_ed25519,
                           sizeof(aegis_pki_oid_ed25519))) {
        algo = AEGIS_KEY_ED25519;
    } else if (aegis_pki_bytes_eq(oid.val, oid.len, aegis_pki_oid_ec_public_key,
                                  sizeof(aegis_pki_oid_ec_public_key))) {
        struct der_tlv curve;
        if (aegis_pki_der_expect(&alg, DER_OID, &curve) != 0 ||
            !aegis_pki_bytes_eq(curve.val, curve.len, aegis_pki_oid_prime256v1,
                                sizeof(aegis_pki_oid_prime256v1))) {
            rv = AEGIS_ERR_UNSUPPORTED;
            goto out;
        }
        algo = AEGIS_KEY_P256;
    } else {
        rv = AEGIS_ERR_UNSUPPORTED;
        goto out;
    }
    if (!(k = key_alloc(mem, algo))) {
        rv = -ENOMEM;
        goto out;
    }
    rv = algo == AEGIS_KEY_ED25519 ? load_ed25519(k, &priv) : load_p256(k, &priv);
    if (rv != 0) {
        key_release(k);
        goto out;
    }
    *pkey = k;
out:
    explicit_bzero(der, der_len);
    aegis_free(mem, der);
    return rv;
}

int aegis_key_to_pem(const struct aegis_key *key, char **ppem, size_t *plen)
{
    struct aegis_key *k = (struct aegis_key *)key; /* wolfCrypt's API is not const */
    uint8_t der[KEY_DER_MAX];
    word32 n = sizeof(der);
    int ret, rv;

    if (!key || !ppem || !plen)
        return -EINVAL;
    if (k->algo == AEGIS_KEY_ED25519)
        ret = wc_Ed25519PrivateKeyToDer(&k->u.ed, der, sizeof(der));
    else
        /* With the public key, as `openssl genpkey` writes it. */
        ret = wc_EccKeyToPKCS8(&k->u.ec, der, &n);
    if (ret <= 0) {
        explicit_bzero(der, sizeof(der));
        return aegis_pki_wc_err(ret);
    }
    rv = aegis_pki_pem_encode(k->mem, "PRIVATE KEY", der, (size_t)ret, ppem, plen);
    explicit_bzero(der, sizeof(der));
    return rv;
}

int aegis_key_spki_der(const struct aegis_key *key, uint8_t **pder, size_t *plen)
{
    struct aegis_key *k = (struct aegis_key *)key;
    uint8_t der[128];
    uint8_t *out;
    int ret;

    if (!key || !pder || !plen)
        return -EINVAL;
    if (k->algo == AEGIS_KEY_ED25519)
        ret = wc_Ed25519PublicKeyToDer(&k->u.ed, der, sizeof(der), 1);
    else
        ret = wc_EccPublicKeyToDer(&k->u.ec, der, sizeof(der), 1);
    if (ret <= 0)
        return aegis_pki_wc_err(ret);
    if (!(out = aegis_memdup(k->mem, der, (size_t)ret)))
        return -ENOMEM;
    *pder = out;
    *plen = (size_t)ret;
    return 0;
}

int aegis_key_sign(const struct aegis_key *key, const uint8_t *msg, size_t len, uint8_t **psig,
                   size_t *psiglen)
{
    struct aegis_key *k = (struct aegis_key *)key;
    uint8_t sig[P256_SIG_MAX > ED25519_SIG_SIZE ? P256_SIG_MAX + 8 : ED25519_SIG_SIZE];
    word32 siglen = sizeof(sig);
    uint8_t *out;
    int ret;

    if (!key || (!msg && len) || !psig || !psiglen || len > UINT32_MAX)
        return -EINVAL;
    if (k->algo == AEGIS_KEY_ED25519) {
        ret = wc_ed25519_sign_msg(msg, (word32)len, sig, &siglen, &k->u.ed);
    } else {
        uint8_t h[32];
        WC_RNG rng;
        int rv;
        if ((rv = aegis_sha256_hash(msg, len, h)) != 0)
            return rv;
        if ((rv = aegis_pki_rng_init(&rng)) != 0)
            return rv;
        ret = wc_ecc_sign_hash(h, sizeof(h), sig, &siglen, &rng, &k->u.ec);
        wc_FreeRng(&rng);
    }
    if (ret != 0)
        return aegis_pki_wc_err(ret) == -ENOMEM ? -ENOMEM : AEGIS_ERR_CRYPTO;
    if (!(out = aegis_memdup(k->mem, sig, siglen)))
        return -ENOMEM;
    *psig = out;
    *psiglen = siglen;
    return 0;
}
