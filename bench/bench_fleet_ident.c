/*
 * Identities for the simulated fleet, issued up front with aegis_pki against the fleet CA
 * (DESIGN §4): one Ed25519 key and one agent certificate (OU aegis-agent, CN = agent id) per
 * agent, so the benchmark measures the server, not enrollment. The enroll scenario uses
 * self-signed bootstrap certificates instead (fleet_ident_self).
 */
#include "bench_fleet.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest PEM file read from the PKI directory. */
#define PEM_MAX (64u * 1024u)

char *fleet_slurp(const char *dir, const char *name, size_t *plen)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *buf = malloc(PEM_MAX + 1);
    if (!buf) {
        fclose(f);
        return NULL;
    }
    size_t n = fread(buf, 1, PEM_MAX, f);
    fclose(f);
    buf[n] = 0;
    if (plen)
        *plen = n;
    return buf;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Names and the machine-id hash of agent idx: distinct per run (seed) and per agent. */
static void names(struct fleet_ident *id, size_t idx, uint64_t seed)
{
    uint64_t s = seed ^ ((uint64_t)idx * 0x100000001b3ull);
    uint8_t u[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = splitmix(&s);
        memcpy(u + i, &r, 8);
    }
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40); /* RFC 4122 version 4 */
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    snprintf(id->agent_id, sizeof(id->agent_id),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
    snprintf(id->host_id, sizeof(id->host_id), "bench-%016llx-%zu",
             (unsigned long long)(seed & 0xffffffffffffull), idx);
    for (int i = 0; i < 32; i += 8) {
        uint64_t r = splitmix(&s);
        memcpy(id->machine_id_hash + i, &r, 8);
    }
}

static int finish(struct fleet_ident *id)
{
    struct aegis_cert_info info;
    int rv = aegis_cert_info_pem(id->cert_pem, id->cert_len, &info);
    if (rv == 0)
        memcpy(id->spki_sha256, info.spki_sha256, 32);
    if (rv == 0)
        rv = aegis_key_to_pem(id->key, &id->key_pem, &id->key_len);
    return rv;
}

int fleet_ident_issue(struct fleet_ident *ids, size_t n, const char *pki_dir, uint64_t seed)
{
    size_t cal, kl;
    char *ca_pem = fleet_slurp(pki_dir, "ca.pem", &cal);
    char *ca_key_pem = fleet_slurp(pki_dir, "ca.key", &kl);
    struct aegis_key *ca_key = NULL;
    int rv = (!ca_pem || !ca_key_pem) ? -ENOENT : 0;
    if (rv == 0)
        rv = aegis_key_from_pem(NULL, ca_key_pem, kl, &ca_key);
    for (size_t i = 0; i < n && rv == 0; i++) {
        struct fleet_ident *id = &ids[i];
        names(id, i, seed);
        uint8_t *spki = NULL;
        size_t sl = 0;
        rv = aegis_key_generate(NULL, AEGIS_KEY_ED25519, &id->key);
        if (rv == 0)
            rv = aegis_key_spki_der(id->key, &spki, &sl);
        struct aegis_cert_spec spec = {.role = AEGIS_ROLE_AGENT, .common_name = id->agent_id};
        if (rv == 0)
            rv = aegis_cert_issue(NULL, &spec, spki, sl, ca_key, ca_pem, &id->cert_pem,
                                  &id->cert_len);
        aegis_free(NULL, spki);
        if (rv == 0)
            rv = finish(id);
    }
    aegis_key_del(ca_key);
    if (ca_key_pem)
        memset(ca_key_pem, 0, kl);
    free(ca_key_pem);
    free(ca_pem);
    return rv;
}

int fleet_ident_self(struct fleet_ident *id, size_t idx, uint64_t seed)
{
    names(id, idx, seed);
    uint8_t *spki = NULL;
    size_t sl = 0;
    int rv = aegis_key_generate(NULL, AEGIS_KEY_ED25519, &id->key);
    if (rv == 0)
        rv = aegis_key_spki_der(id->key, &spki, &sl);
    struct aegis_cert_spec spec = {.role = AEGIS_ROLE_SELF, .common_name = id->host_id};
    if (rv == 0)
        rv = aegis_cert_issue(NULL, &spec, spki, sl, id->key, NULL, &id->cert_pem, &id->cert_len);
    aegis_free(NULL, spki);
    if (rv == 0)
        rv = finish(id);
    return rv;
}

void fleet_ident_free(struct fleet_ident *ids, size_t n)
{
    if (!ids)
        return;
    for (size_t i = 0; i < n; i++) {
        aegis_key_del(ids[i].key);
        aegis_free(NULL, ids[i].cert_pem);
        if (ids[i].key_pem)
            memset(ids[i].key_pem, 0, ids[i].key_len);
        aegis_free(NULL, ids[i].key_pem);
    }
    free(ids);
}
