#include "agent_cmd.h"
#include "agent_io.h"

#include <aegis/err.h>
#include <aegis/proto.h>

#include <errno.h>
#include <string.h>

/* Ids are UUID text; anything else (control characters, '/', very long)
 * is refused before it reaches logs, file names or the journal. */
static int id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > AGENT_CMD_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

static int label_has(const struct agent_label *labels, size_t n, const char *k, size_t klen,
                     const char *v, size_t vlen)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(labels[i].key) == klen && memcmp(labels[i].key, k, klen) == 0 &&
            strlen(labels[i].value) == vlen && memcmp(labels[i].value, v, vlen) == 0)
            return 1;
    }
    return 0;
}

int agent_selector_match(const char *selector, const struct agent_label *labels, size_t nlabels)
{
    if (selector == NULL || *selector == '\0')
        return 0;
    const char *p = selector;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t tlen = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', tlen);
        if (eq == NULL || eq == p)
            return 0;
        size_t klen = (size_t)(eq - p);
        if (!label_has(labels, nlabels, p, klen, eq + 1, tlen - klen - 1))
            return 0;
        p += tlen;
        if (*p == ',')
            p++;
    }
    return 1;
}

static int in_scope(const struct agent_cmd_trust *t, const Aegis__V1__Command *c)
{
    for (size_t i = 0; i < c->n_agent_ids; i++)
        if (c->agent_ids[i] && strcmp(c->agent_ids[i], t->agent_id) == 0)
            return 1;
    return agent_selector_match(c->selector, t->labels, t->nlabels);
}

int agent_cmd_verify(const struct agent_cmd_trust *trust, const uint8_t *signed_bytes, size_t len,
                     aegis_tstamp now, const struct aegis_mem *mem, Aegis__V1__Command **pcmd,
                     char *reason, size_t reasonlen)
{
    if (trust == NULL || trust->agent_id == NULL || pcmd == NULL ||
        (signed_bytes == NULL && len > 0))
        return -EINVAL;
    Aegis__V1__SignedCommand *sc = NULL;
    int rv = agent_msg_unpack(&aegis__v1__signed_command__descriptor, signed_bytes, len, mem,
                              (void **)&sc);
    if (rv != 0)
        return agent_errmsg(reason, reasonlen, rv, "command refused: not a SignedCommand (%s)",
                            aegis_strerror(rv));
    if (trust->command_key_id && trust->command_key_id[0] && sc->key_id[0] &&
        strcmp(sc->key_id, trust->command_key_id) != 0) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_SIGNATURE,
                          "command refused: signed with unknown key id \"%.32s\" (trusted: %s)",
                          sc->key_id, trust->command_key_id);
        goto out;
    }
    rv = agent_ed25519_verify(trust->command_pub, sc->command.data, sc->command.len,
                              sc->signature.data, sc->signature.len);
    if (rv != 0) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_SIGNATURE,
                          "command refused: bad signature (%zu-byte signature over %zu bytes "
                          "does not verify with the command key)",
                          sc->signature.len, sc->command.len);
        goto out;
    }
    /* Only now are the signed bytes parsed (proto/README.md). */
    Aegis__V1__Command *c = NULL;
    rv = agent_msg_unpack(&aegis__v1__command__descriptor, sc->command.data, sc->command.len, mem,
                          (void **)&c);
    if (rv != 0) {
        rv = agent_errmsg(reason, reasonlen, rv,
                          "command refused: signed bytes are not a Command (%s)",
                          aegis_strerror(rv));
        goto out;
    }
    if (!id_ok(c->id)) {
        agent_msg_free(c, mem);
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_MALFORMED,
                          "command refused: bad id (empty, over %u bytes or not UUID text)",
                          AGENT_CMD_ID_MAX);
        goto out;
    }
    if (c->nonce.len != AGENT_CMD_NONCE_LEN) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_MALFORMED,
                          "command %s refused: nonce is %zu bytes, want %u", c->id, c->nonce.len,
                          AGENT_CMD_NONCE_LEN);
    } else if (!in_scope(trust, c)) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_PERMISSION,
                          "command %s refused: not addressed to this agent (%s)", c->id,
                          trust->agent_id);
    } else if (c->expires_unix_ns <= 0 || (aegis_tstamp)c->expires_unix_ns <= now) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_EXPIRED,
                          "command %s refused: expired (expires_unix_ns=%lld, now=%llu)", c->id,
                          (long long)c->expires_unix_ns, (unsigned long long)now);
    } else if (c->payload_case == AEGIS__V1__COMMAND__PAYLOAD__NOT_SET) {
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_MALFORMED,
                          "command %s refused: no payload (a newer server?)", c->id);
    }
    *pcmd = c;
out:
    agent_msg_free(sc, mem);
    return rv;
}

int agent_cmd_admit(struct agent_seen *seen, const Aegis__V1__Command *cmd, aegis_tstamp now,
                    enum agent_cmd_admission *padm, uint32_t *poutcome)
{
    if (seen == NULL || cmd == NULL || padm == NULL)
        return -EINVAL;
    uint32_t outcome = 0;
    switch (agent_seen_check(seen, cmd->id, &outcome)) {
    case AGENT_SEEN_FINISHED:
        *padm = AGENT_CMD_DUPLICATE;
        if (poutcome)
            *poutcome = outcome;
        return 0;
    case AGENT_SEEN_STARTED:
        *padm = AGENT_CMD_INTERRUPTED;
        return 0;
    case AGENT_SEEN_NEW:
        break;
    }
    int rv = agent_seen_mark_started(seen, cmd->id, (aegis_tstamp)cmd->expires_unix_ns, now);
    if (rv != 0)
        return rv;
    *padm = AGENT_CMD_RUN;
    return 0;
}

const char *agent_cmd_payload_name(const Aegis__V1__Command *cmd)
{
    const char *k = aegis_command_kind(cmd);
    return k ? k : "unknown";
}
