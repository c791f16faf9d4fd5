/*
 * Fuzz target for the fleet PKI readers (certs/): X.509 DER, PEM blocks
 * (certificate, public key, PKCS#8 private key), SPKI and pin strings. These
 * see bytes from peers (certificates presented at Enroll) and from files an
 * operator points aegis-certs at. Every call must return cleanly.
 */
#include <aegis/mem.h>
#include <aegis/pki.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs beyond this are not interesting: the readers cap PEM at 256 KiB. */
#define FUZZ_MAX_INPUT (300 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct aegis_cert_info info;
    struct aegis_key *key = NULL;
    char pin[AEGIS_PIN_STRLEN], *text, *sans = NULL;
    uint8_t *spki = NULL, h[AEGIS_SPKI_SHA256_LEN];
    size_t spki_len = 0;
    static const uint8_t msg[] = "m";

    if (size > FUZZ_MAX_INPUT)
        return 0;
    (void)aegis_cert_info_der(data, size, &info);
    /* Raw bytes as an SPKI with the tail as a signature. */
    (void)aegis_spki_verify(data, size / 2, msg, sizeof(msg), data + size / 2, size - size / 2);

    text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    (void)aegis_cert_info_pem(text, size, &info);
    (void)aegis_pin_from_pem(text, size, pin);
    (void)aegis_pin_parse(text, h);
    if (aegis_cert_sans_pem(NULL, text, size, &sans) == 0)
        aegis_free(NULL, sans);
    if (aegis_cert_spki_der(NULL, text, size, &spki, &spki_len) == 0)
        aegis_free(NULL, spki);
    if (aegis_key_from_pem(NULL, text, size, &key) == 0)
        aegis_key_del(key);
    free(text);
    return 0;
}
