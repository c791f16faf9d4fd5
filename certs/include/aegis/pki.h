/*
 * Fleet PKI: keys, certificates and SPKI pins, on wolfSSL's certificate
 * generation (certs/src/ is the only place here that includes wolfSSL).
 *
 * Used by aegis-certs (the CLI), by aegis-control (Enroll issues agent
 * certificates) and by aegis-agent (its key and bootstrap certificate).
 * Ed25519 by default, ECDSA P-256 where a peer needs it; never RSA.
 *
 * All PEM outputs are NUL-terminated heap strings from `mem` (NULL =
 * default allocator); the caller frees them with aegis_free(mem, ...).
 * Out-parameters are written only on success. Errors: -EINVAL (bad
 * argument), -ENOMEM, AEGIS_ERR_MALFORMED (unparsable PEM/DER),
 * AEGIS_ERR_UNSUPPORTED (key type not Ed25519/P-256), AEGIS_ERR_CRYPTO
 * (wolfSSL refused an operation), AEGIS_ERR_CERT (a certificate that does not
 * verify), plus the specific ones named per function.
 */
#ifndef AEGIS_PKI_H
#define AEGIS_PKI_H

#include <aegis/mem.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum aegis_key_algo {
    AEGIS_KEY_ED25519 = 0,
    AEGIS_KEY_P256 = 1,
};

/* What a certificate is for; sets basicConstraints, keyUsage, extKeyUsage
 * and the subject OU ("aegis-ca", "aegis-server", "aegis-agent",
 * "aegis-operator"), which is how the role travels with the certificate. */
enum aegis_cert_role {
    AEGIS_ROLE_CA = 0,       /* CA:TRUE, keyCertSign|cRLSign */
    AEGIS_ROLE_SERVER = 1,   /* digitalSignature, serverAuth, SANs required */
    AEGIS_ROLE_AGENT = 2,    /* digitalSignature, clientAuth */
    AEGIS_ROLE_OPERATOR = 3, /* digitalSignature, clientAuth */
    AEGIS_ROLE_SELF = 4, /* self-signed leaf, digitalSignature, clientAuth (enrollment bootstrap) */
};

/* "sha256//" + 44 base64 characters + NUL */
#define AEGIS_PIN_STRLEN 53
#define AEGIS_SPKI_SHA256_LEN 32

struct aegis_key; /* a private key (and its public half) */

/* aegis_key_generate makes a fresh key with the system RNG. */
int aegis_key_generate(const struct aegis_mem *mem, enum aegis_key_algo algo,
                       struct aegis_key **pkey);
/* aegis_key_from_pem parses a PKCS#8 "PRIVATE KEY" PEM (as written by
 * aegis_key_to_pem, or by `openssl genpkey`). */
int aegis_key_from_pem(const struct aegis_mem *mem, const char *pem, size_t len,
                       struct aegis_key **pkey);
/* aegis_key_to_pem writes PKCS#8 PEM. */
int aegis_key_to_pem(const struct aegis_key *key, char **ppem, size_t *plen);
/* aegis_key_spki_der returns the DER SubjectPublicKeyInfo of the public half. */
int aegis_key_spki_der(const struct aegis_key *key, uint8_t **pder, size_t *plen);
enum aegis_key_algo aegis_key_algo(const struct aegis_key *key);
/* aegis_key_sign signs msg (Ed25519: pure; P-256: ECDSA over SHA-256, DER
 * signature). *psig is allocated with the key's allocator. */
int aegis_key_sign(const struct aegis_key *key, const uint8_t *msg, size_t len, uint8_t **psig,
                   size_t *psiglen);
/* aegis_key_del frees the key and wipes its secret; NULL is fine. */
void aegis_key_del(struct aegis_key *key);

/* aegis_spki_verify checks sig over msg with the public key in spki_der.
 * Returns 0, AEGIS_ERR_SIGNATURE, or the usual errors. */
int aegis_spki_verify(const uint8_t *spki_der, size_t spki_len, const uint8_t *msg, size_t len,
                      const uint8_t *sig, size_t siglen);

struct aegis_cert_spec {
    enum aegis_cert_role role;
    const char *common_name;      /* required, <= 64 bytes */
    const char *const *dns_names; /* subjectAltName dNSName entries */
    size_t n_dns;
    const char *const *ips; /* subjectAltName iPAddress entries, "127.0.0.1" / "::1" */
    size_t n_ips;
    /* Validity in Unix seconds. 0 for not_before means "now - 5 minutes"
     * (clock skew); 0 for not_after means not_before + the role's default
     * (CA 10 years, others 1 year). Tests set past windows for expired certs. */
    int64_t not_before;
    int64_t not_after;
};

/*
 * aegis_cert_issue makes a certificate for the public key subject_spki_der.
 * The issuer is issuer_key with issuer_cert_pem; with issuer_cert_pem NULL
 * the certificate is self-signed and subject_spki_der must be issuer_key's
 * own public key (AEGIS_ROLE_CA or AEGIS_ROLE_SELF). Serial numbers are 16
 * random bytes. Extra errors: -EINVAL for a SERVER spec without SANs or a
 * role that does not fit the issuer (CA/SELF issued by another cert).
 */
int aegis_cert_issue(const struct aegis_mem *mem, const struct aegis_cert_spec *spec,
                     const uint8_t *subject_spki_der, size_t spki_len,
                     const struct aegis_key *issuer_key, const char *issuer_cert_pem, char **ppem,
                     size_t *plen);

/* Facts read from a certificate (first certificate of a PEM, or DER). */
struct aegis_cert_info {
    uint8_t spki_sha256[AEGIS_SPKI_SHA256_LEN];
    char pin[AEGIS_PIN_STRLEN]; /* sha256//base64 of the SPKI */
    char subject_cn[65];
    char subject_ou[65]; /* role marker, "" if none */
    char issuer_cn[65];
    int self_signed; /* subject == issuer and self-verifies */
    int is_ca;
    int64_t not_before, not_after; /* Unix seconds */
};

int aegis_cert_info_pem(const char *pem, size_t len, struct aegis_cert_info *info);
int aegis_cert_info_der(const uint8_t *der, size_t len, struct aegis_cert_info *info);

/* aegis_cert_spki_der extracts the DER SubjectPublicKeyInfo of a PEM cert. */
int aegis_cert_spki_der(const struct aegis_mem *mem, const char *pem, size_t len, uint8_t **pder,
                        size_t *plen);

/* aegis_pin_from_spki formats "sha256//<base64 of SHA-256(spki_der)>". */
int aegis_pin_from_spki(const uint8_t *spki_der, size_t len, char out[AEGIS_PIN_STRLEN]);
/* aegis_pin_parse validates "sha256//" + 44 base64 chars and decodes the
 * 32-byte hash. AEGIS_ERR_MALFORMED otherwise. */
int aegis_pin_parse(const char *pin, uint8_t out[AEGIS_SPKI_SHA256_LEN]);

/*
 * aegis_cert_verify checks that cert_pem was issued by ca_pem (signature,
 * validity at `now` Unix seconds, CA flag of the issuer). AEGIS_ERR_CERT
 * (wrong issuer / bad signature), AEGIS_ERR_EXPIRED (outside validity).
 */
int aegis_cert_verify(const char *cert_pem, size_t cert_len, const char *ca_pem, size_t ca_len,
                      int64_t now);

/* ---- Additions by the certs module (after the fixed contract above) ---- */

/* Notes on the contract above, as implemented:
 * - aegis_cert_issue returns AEGIS_ERR_CERT when issuer_cert_pem is not a CA
 *   certificate or does not hold issuer_key's public key, AEGIS_ERR_MALFORMED
 *   when it cannot be parsed, and -EINVAL for a bad common name (empty, over
 *   64 bytes, control characters), a bad DNS name or IP address, more than
 *   32 SANs, or a validity window with not_after <= not_before or outside
 *   1950..9999. SANs are allowed on every role and required on SERVER.
 * - aegis_cert_info_pem/aegis_cert_verify/aegis_cert_spki_der read the first
 *   "CERTIFICATE" block of the PEM; AEGIS_ERR_MALFORMED if there is none.
 * - aegis_key_from_pem returns AEGIS_ERR_UNSUPPORTED for a PEM holding some
 *   other block (encrypted PKCS#8, "EC PRIVATE KEY", a certificate).
 */

/* aegis_cert_role_ou returns the subject OU marker of role ("aegis-agent",
 * ...; "aegis-self" for AEGIS_ROLE_SELF), or NULL for an unknown role. */
const char *aegis_cert_role_ou(enum aegis_cert_role role);

/* aegis_cert_role_from_ou maps an OU marker (aegis_cert_info.subject_ou)
 * back to its role. AEGIS_ERR_NOT_FOUND for anything else. */
int aegis_cert_role_from_ou(const char *ou, enum aegis_cert_role *prole);

/* aegis_cert_sans_pem lists the subjectAltName entries of the first
 * certificate in pem as "DNS:a.example, IP:127.0.0.1" (empty string if none)
 * in a NUL-terminated string from mem that the caller frees. Errors:
 * -EINVAL, -ENOMEM, AEGIS_ERR_MALFORMED. */
int aegis_cert_sans_pem(const struct aegis_mem *mem, const char *pem, size_t len, char **pout);

/* aegis_pin_from_pem pins the first usable block of pem: a CERTIFICATE (its
 * SPKI), else a PUBLIC KEY (the SPKI itself), else a PKCS#8 PRIVATE KEY (its
 * public half). AEGIS_ERR_MALFORMED if there is none or it does not parse,
 * AEGIS_ERR_UNSUPPORTED for a private key that is not Ed25519/P-256. */
int aegis_pin_from_pem(const char *pem, size_t len, char out[AEGIS_PIN_STRLEN]);

/* ---- Hashing and key ids (pki_hash.c) ---- */

#define AEGIS_SHA256_LEN 32
/* A key id (FLEET_CONTRACT): 16 lower-case hex characters + NUL. */
#define AEGIS_KEY_ID_STRLEN 17

/* aegis_sha256_hash writes SHA-256(data[0..len)) to out. Any length (fed to
 * wolfCrypt in slices). Errors: -EINVAL (NULL), AEGIS_ERR_CRYPTO. */
int aegis_sha256_hash(const void *data, size_t len, uint8_t out[AEGIS_SHA256_LEN]);

/* An incremental SHA-256 (files, streamed uploads). aegis_sha256_new
 * allocates it from mem (NULL = default); aegis_sha256_update adds bytes;
 * aegis_sha256_final writes the digest and starts the context over, so it
 * can hash again; aegis_sha256_del frees it (NULL is fine). Errors: -EINVAL
 * (NULL), -ENOMEM (new), AEGIS_ERR_CRYPTO. */
struct aegis_sha256;
int aegis_sha256_new(const struct aegis_mem *mem, struct aegis_sha256 **pctx);
int aegis_sha256_update(struct aegis_sha256 *ctx, const void *data, size_t len);
int aegis_sha256_final(struct aegis_sha256 *ctx, uint8_t out[AEGIS_SHA256_LEN]);
void aegis_sha256_del(struct aegis_sha256 *ctx);

/* aegis_key_id_from_spki writes the key id of a public key (command key,
 * artifact keys): the lower-case hex of the first 8 bytes of
 * SHA-256(spki_der), NUL-terminated. It hashes the bytes as given and does
 * not parse them. Errors: -EINVAL (NULL or empty spki_der), AEGIS_ERR_CRYPTO. */
int aegis_key_id_from_spki(const uint8_t *spki_der, size_t len, char out[AEGIS_KEY_ID_STRLEN]);

#ifdef __cplusplus
}
#endif
#endif
