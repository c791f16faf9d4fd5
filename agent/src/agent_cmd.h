/*
 * agent_cmd: the agent's checks on a SignedCommand before it runs anything
 * (DESIGN §4, proto/README.md "What is signed"): the signature is verified
 * over the exact bytes received, only then are they parsed; then scope,
 * expiry and nonce are checked; then the seen-id journal decides between
 * run, re-ack (duplicate) and "interrupted" (started by a run that died).
 *
 * Pure logic on buffers: no clock reads (now is passed in), no network.
 */
#ifndef AGENT_CMD_H
#define AGENT_CMD_H

#include "agent_crypto.h"
#include "agent_msg.h"
#include "agent_seen.h"

#include <aegis/mem.h>
#include <aegis/tstamp.h>

#include <stddef.h>
#include <stdint.h>

/* Command.nonce is 16 random bytes (command.proto). */
#define AGENT_CMD_NONCE_LEN 16u
/* Command ids are UUID text; the seen journal caps them at 64 bytes. */
#define AGENT_CMD_ID_MAX AGENT_SEEN_ID_MAX
/* Label entries the agent matches selectors against. */
#define AGENT_CMD_MAX_LABELS 64u

struct agent_label {
    const char *key;
    const char *value;
};

/* What the agent trusts and who it is, borrowed for each call. */
struct agent_cmd_trust {
    uint8_t command_pub[AGENT_ED25519_PUB_LEN];
    const char *command_key_id; /* "" = do not check SignedCommand.key_id */
    const char *agent_id;
    const struct agent_label *labels; /* from enrollment, for selectors */
    size_t nlabels;
};

/*
 * agent_cmd_verify checks signed (a serialized SignedCommand) and on
 * success returns the parsed Command in *pcmd (free with agent_msg_free
 * and mem). On failure reason (may be NULL) gets a sentence and the error
 * says which check failed:
 *   AEGIS_ERR_MALFORMED  not a SignedCommand / Command, bad id or nonce
 *   AEGIS_ERR_SIGNATURE  unknown key id or the signature does not verify
 *   AEGIS_ERR_PERMISSION the command's scope does not include this agent
 *   AEGIS_ERR_EXPIRED    expires_unix_ns <= now (wall clock, ns)
 *   AEGIS_ERR_TOO_LARGE  over AGENT_MSG_MAX
 *   -ENOMEM
 * When the signature verified but a later check failed, *pcmd is still set
 * (so the caller can ack FAILED with the command's id and sequence) and
 * the error is returned; the caller frees it. Nothing of an unverified
 * command is ever returned.
 */
int agent_cmd_verify(const struct agent_cmd_trust *trust, const uint8_t *signed_bytes, size_t len,
                     aegis_tstamp now, const struct aegis_mem *mem, Aegis__V1__Command **pcmd,
                     char *reason, size_t reasonlen);

/* agent_selector_match: "k=v,k2=v2" (all terms must match labels); an
 * empty selector matches nothing. */
int agent_selector_match(const char *selector, const struct agent_label *labels, size_t nlabels);

enum agent_cmd_admission {
    AGENT_CMD_RUN = 0,         /* new: durably marked started, execute it now */
    AGENT_CMD_DUPLICATE = 1,   /* finished before: re-ack *poutcome, do not run */
    AGENT_CMD_INTERRUPTED = 2, /* started by a run that died: ack FAILED, do not run */
};

/*
 * agent_cmd_admit consults the seen-id journal for a verified command and,
 * for a new one, durably marks it started BEFORE returning AGENT_CMD_RUN
 * (exactly-once effect across crashes). *poutcome gets the recorded
 * outcome of a duplicate. Errors: those of agent_seen_mark_started
 * (AEGIS_ERR_LIMIT when the journal is full: refuse the command).
 */
int agent_cmd_admit(struct agent_seen *seen, const Aegis__V1__Command *cmd, aegis_tstamp now,
                    enum agent_cmd_admission *padm, uint32_t *poutcome);

/* agent_cmd_payload_name: aegis_command_kind ("apply_policy", "run_action", ...), or
 * "unknown" for logs. */
const char *agent_cmd_payload_name(const Aegis__V1__Command *cmd);

#endif
