/*
 * Test helpers for the daemon's unit tests: Ed25519 keys from aegis_pki as
 * raw public keys, and signing.
 */
#ifndef AGENTD_TEST_KEYS_H
#define AGENTD_TEST_KEYS_H

#include <aegis/pki.h>

#include <stddef.h>
#include <stdint.h>

struct tkey {
    struct aegis_key *key;
    uint8_t pub[32];
    char id[17];
};

/* tkey_make generates a key; aborts on failure. */
void tkey_make(struct tkey *k);
void tkey_free(struct tkey *k);
/* tkey_sign returns a 64-byte signature over msg into sig. */
void tkey_sign(const struct tkey *k, const uint8_t *msg, size_t len, uint8_t sig[64]);

#endif
