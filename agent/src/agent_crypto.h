/*
 * agent_crypto: the agent's only use of wolfSSL directly (STYLE.md "one file
 * per third-party dependency"): SHA-256, Ed25519 verification with a raw
 * public key, and the raw <-> SPKI forms of Ed25519 public keys the state
 * directory stores (DESIGN §4). Key generation, signing and certificates go
 * through aegis_pki.
 */
#ifndef AGENT_CRYPTO_H
#define AGENT_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define AGENT_SHA256_LEN 32u
#define AGENT_ED25519_PUB_LEN 32u
#define AGENT_ED25519_SIG_LEN 64u
/* DER SubjectPublicKeyInfo of an Ed25519 key: 12-byte prefix + key. */
#define AGENT_ED25519_SPKI_LEN 44u
/* Key ids (FLEET_CONTRACT): hex of the first 8 bytes of SHA-256(SPKI). */
#define AGENT_KEY_ID_LEN 16u

/* Incremental SHA-256; storage sized for wolfSSL's context (checked in
 * agent_crypto.c at compile time). */
struct agent_sha256 {
    _Alignas(16) uint8_t opaque[512];
};

/* agent_sha256_init/update/final: an incremental SHA-256 on the caller's stack (no allocation,
 * unlike aegis_sha256_new), for artifacts hashed as they arrive. 0 or AEGIS_ERR_CRYPTO. final also
 * frees the context (call init again to reuse it). */
int agent_sha256_init(struct agent_sha256 *ctx);
int agent_sha256_update(struct agent_sha256 *ctx, const void *data, size_t len);
int agent_sha256_final(struct agent_sha256 *ctx, uint8_t out[AGENT_SHA256_LEN]);
/* One buffer at once: aegis_sha256_hash (aegis/pki.h). Key ids: aegis_key_id_from_spki, below
 * through agent_key_id. Hex text: aegis_hex_encode (aegis/hex.h). */

/*
 * agent_ed25519_verify checks an Ed25519 signature over msg with the raw
 * 32-byte public key pub. Returns 0, AEGIS_ERR_SIGNATURE (wrong length or
 * does not verify), AEGIS_ERR_CRYPTO (the key is not a valid point).
 */
int agent_ed25519_verify(const uint8_t pub[AGENT_ED25519_PUB_LEN], const uint8_t *msg, size_t len,
                         const uint8_t *sig, size_t siglen);

/* agent_ed25519_spki writes the DER SPKI of a raw key. */
void agent_ed25519_spki(const uint8_t pub[AGENT_ED25519_PUB_LEN],
                        uint8_t spki[AGENT_ED25519_SPKI_LEN]);

/* agent_ed25519_from_spki extracts the raw key from a DER SPKI. 0 or
 * AEGIS_ERR_UNSUPPORTED (not an Ed25519 SPKI). */
int agent_ed25519_from_spki(const uint8_t *spki, size_t len, uint8_t pub[AGENT_ED25519_PUB_LEN]);

/* agent_key_id formats the key id (16 hex chars + NUL) of a raw key. */
int agent_key_id(const uint8_t pub[AGENT_ED25519_PUB_LEN], char out[AGENT_KEY_ID_LEN + 1]);

/* agent_random fills buf from getrandom(2). 0 or -errno. */
int agent_random(void *buf, size_t len);

#endif
