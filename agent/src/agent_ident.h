/*
 * agent_ident: the enrolled identity in the state directory
 * (FLEET_CONTRACT "Agent state dir"): agent.key (0600), agent.pem, ca.pem,
 * server.pins, command.pub, artifact-keys/<keyid>.pub, agent.id, plus
 * host.id, server.addr and labels. agent.id is written last at enrollment:
 * its presence means the enrollment completed.
 */
#ifndef AGENT_IDENT_H
#define AGENT_IDENT_H

#include "agent_artifact.h"
#include "agent_cmd.h"
#include "agent_crypto.h"

#include <stddef.h>
#include <stdint.h>

#define AGENT_IDENT_ID_MAX 64u
#define AGENT_IDENT_SERVER_MAX 256u
#define AGENT_IDENT_MAX_PINS 2u
#define AGENT_IDENT_PIN_LEN 53u
/* Labels assigned by the enrollment token, kept for selector matching. */
#define AGENT_IDENT_MAX_LABELS 64u
#define AGENT_IDENT_LABEL_MAX 256u

#define AGENT_FILE_KEY "agent.key"
#define AGENT_FILE_CERT "agent.pem"
#define AGENT_FILE_CA "ca.pem"
#define AGENT_FILE_PINS "server.pins"
#define AGENT_FILE_CMDKEY "command.pub"
#define AGENT_DIR_ARTKEYS "artifact-keys"
#define AGENT_FILE_ID "agent.id"
#define AGENT_FILE_HOSTID "host.id"
#define AGENT_FILE_SERVER "server.addr"
#define AGENT_FILE_LABELS "labels"

struct agent_ident {
    char agent_id[AGENT_IDENT_ID_MAX + 1];
    char host_id[AGENT_IDENT_ID_MAX + 1];
    char server[AGENT_IDENT_SERVER_MAX];
    char *key_pem; /* heap, NUL-terminated */
    size_t key_len;
    char *cert_pem;
    size_t cert_len;
    char pins[AGENT_IDENT_MAX_PINS][AGENT_IDENT_PIN_LEN];
    size_t npins;
    uint8_t command_pub[AGENT_ED25519_PUB_LEN];
    char command_key_id[AGENT_KEY_ID_LEN + 1];
    struct agent_artifact_key artifact_keys[AGENT_ARTIFACT_MAX_KEYS];
    size_t nartifact_keys;
    struct agent_label labels[AGENT_IDENT_MAX_LABELS];
    size_t nlabels;
    char label_store[AGENT_IDENT_MAX_LABELS][2][AGENT_IDENT_LABEL_MAX];
    uint8_t machine_hash[AGENT_SHA256_LEN];
};

/*
 * agent_ident_load reads the identity from dir; machine_id_file (NULL =
 * /etc/machine-id) gives the machine-id hash. Errors with a sentence in
 * err: -ENOENT (not enrolled: "run `aegis-agent enroll` first"),
 * AEGIS_ERR_MALFORMED (a damaged file, named), -errno.
 */
int agent_ident_load(struct agent_ident *id, const char *dir, const char *machine_id_file,
                     char *err, size_t errlen);
/* agent_ident_free frees the PEM buffers. */
void agent_ident_free(struct agent_ident *id);

/* agent_machine_hash: SHA-256("aegis-machine-id:" + trimmed contents of
 * file, default /etc/machine-id). -errno / AEGIS_ERR_MALFORMED (empty). */
int agent_machine_hash(const char *file, uint8_t out[AGENT_SHA256_LEN], char *err, size_t errlen);

/* agent_pubkey_pem formats a raw Ed25519 key as SPKI "PUBLIC KEY" PEM
 * (NUL-terminated, at most 128 bytes). */
void agent_pubkey_pem(const uint8_t pub[AGENT_ED25519_PUB_LEN], char out[128]);
/* agent_pubkey_from_pem parses such a PEM. AEGIS_ERR_MALFORMED,
 * AEGIS_ERR_UNSUPPORTED (not Ed25519). */
int agent_pubkey_from_pem(const char *pem, size_t len, uint8_t pub[AGENT_ED25519_PUB_LEN]);

/* agent_read_small reads dir/name (<= cap-1 bytes) NUL-terminated, with
 * trailing whitespace trimmed. 0, -ENOENT, AEGIS_ERR_TOO_LARGE, -errno. */
int agent_read_small(const char *dir, const char *name, char *buf, size_t cap);

#endif
