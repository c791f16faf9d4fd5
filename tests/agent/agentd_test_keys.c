#include "agentd_test_keys.h"
#include "agent_crypto.h"

#include <aegis/mem.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tkey_make(struct tkey *k)
{
    uint8_t *der = NULL;
    size_t len = 0;
    if (aegis_key_generate(NULL, AEGIS_KEY_ED25519, &k->key) != 0 ||
        aegis_key_spki_der(k->key, &der, &len) != 0 || agent_ed25519_from_spki(der, len, k->pub) ||
        agent_key_id(k->pub, k->id) != 0) {
        fprintf(stderr, "tkey_make failed\n");
        abort();
    }
    aegis_free(NULL, der);
}

void tkey_free(struct tkey *k)
{
    aegis_key_del(k->key);
    k->key = NULL;
}

void tkey_sign(const struct tkey *k, const uint8_t *msg, size_t len, uint8_t sig[64])
{
    uint8_t *s = NULL;
    size_t sl = 0;
    if (aegis_key_sign(k->key, msg, len, &s, &sl) != 0 || sl != 64) {
        fprintf(stderr, "tkey_sign failed\n");
        abort();
    }
    memcpy(sig, s, 64);
    aegis_free(NULL, s);
}
