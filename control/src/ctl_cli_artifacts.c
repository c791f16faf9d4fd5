/*
 * aegisctl artifacts keygen|upload|list|assign|unassign|status.
 *
 * The operator's artifact key signs every upload here, on the operator's
 * machine; the control server never holds it (DESIGN §4). Upload streams the
 * stored bytes in 64 KiB chunks with the transport's backpressure: a full
 * send queue pauses the producer until the call is writable again.
 */
#include "ctl_cli.h"
#include "ctl_kind.h"

#include <aegis/err.h>
#include <aegis/mem.h>
#include <aegis/pki.h>
#include <aegis/v1/operator.pb-c.h>

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { SUB_KEYGEN, SUB_UPLOAD, SUB_LIST, SUB_ASSIGN, SUB_UNASSIGN, SUB_STATUS };
enum { K_OUT };
enum { U_NAME, U_KIND, U_SIGNING_KEY, U_COMPRESS, U_VERSION };
enum { L_KIND, L_PREFIX, L_LIMIT };
enum { A_AGENT, A_SELECTOR, A_FETCH_ONLY };
enum { ST_STATE, ST_LIMIT };

/* DESIGN §8: artifact chunk. */
#define CHUNK (64u * 1024u)
#define MAX_NAME 128u

static const struct ctl_optspec keygen_opts[] = {
    [K_OUT] = {"out", 1, "FILE", "private key file to create (and FILE.pub)"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec upload_opts[] = {
    [U_NAME] = {"name", 1, "NAME", "artifact name, e.g. web-segmentation"},
    [U_KIND] = {"kind", 1, "KIND", CTL_KIND_LIST},
    [U_SIGNING_KEY] = {"signing-key", 1, "FILE",
                       "artifact-signing key (else AEGIS_SIGNING_KEY or signing_key = ...)"},
    [U_COMPRESS] = {"compress", 0, NULL, "store zstd-compressed"},
    [U_VERSION] = {"version", 1, "V", "version of the content (agent binaries: required)"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec list_opts[] = {
    [L_KIND] = {"kind", 1, "KIND", "only this kind"},
    [L_PREFIX] = {"prefix", 1, "TEXT", "only names starting with TEXT"},
    [L_LIMIT] = {"limit", 1, "N", "show at most N artifacts"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec assign_opts[] = {
    [A_AGENT] = {"agent", 1, "ID", "this agent (repeatable)"},
    [A_SELECTOR] = {"selector", 1, "K=V,...", "agents whose labels all match"},
    [A_FETCH_ONLY] = {"fetch-only", 0, NULL, "download and verify, do not load"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec unassign_opts[] = {
    [A_AGENT] = {"agent", 1, "ID", "this agent (repeatable)"},
    [A_SELECTOR] = {"selector", 1, "K=V,...", "agents whose labels all match"},
    {NULL, 0, NULL, NULL},
};
static const struct ctl_optspec status_opts[] = {
    [ST_STATE] = {"state", 1, "S", "only hosts in pending, downloaded, loaded or failed"},
    [ST_LIMIT] = {"limit", 1, "N", "show at most N hosts"},
    {NULL, 0, NULL, NULL},
};

static int run_keygen(struct ctl_cli *cli, const struct ctl_args *a);
static int run_upload(struct ctl_cli *cli, const struct ctl_args *a);
static int run_list(struct ctl_cli *cli, const struct ctl_args *a);
static int run_assign(struct ctl_cli *cli, const struct ctl_args *a);
static int run_unassign(struct ctl_cli *cli, const struct ctl_args *a);
static int run_status(struct ctl_cli *cli, const struct ctl_args *a);

static const struct ctl_subcmd subs[] = {
    [SUB_KEYGEN] = {"keygen", "keygen --out FILE",
                    "Create an Ed25519 artifact-signing key (FILE, 0600) and FILE.pub.",
                    "Install FILE.pub on the control server (--artifact-pubkey or "
                    "PKI_DIR/artifact-keys/); agents get it at enrollment. Keep FILE offline.",
                    keygen_opts, 0, 0, run_keygen},
    [SUB_UPLOAD] = {"upload",
                    "upload FILE --name N --kind K --signing-key F [--compress] [--version V]",
                    "Sign and upload an artifact.",
                    "Prints its SHA-256, the id used by assign/unassign/status.", upload_opts, 1, 1,
                    run_upload},
    [SUB_LIST] = {"list", "list [--kind K] [--prefix P] [--limit N]", "List stored artifacts.",
                  "Columns: SHA256, NAME, KIND, SIZE, UPLOADED, BY, HOSTS.", list_opts, 0, 0,
                  run_list},
    [SUB_ASSIGN] = {"assign", "assign SHA256 (--agent ID... | --selector K=V,...) [--fetch-only]",
                    "Assign an artifact to hosts (they fetch, verify and load it).", NULL,
                    assign_opts, 1, 1, run_assign},
    [SUB_UNASSIGN] = {"unassign", "unassign SHA256 (--agent ID... | --selector K=V,...)",
                      "Unassign an artifact from hosts (they unload it).", NULL, unassign_opts, 1,
                      1, run_unassign},
    [SUB_STATUS] = {"status", "status SHA256 [--state S] [--limit N]",
                    "Per-host state of an artifact.",
                    "Columns: AGENT, HOST, STATE, FETCHED, UPDATED, DETAIL.", status_opts, 1, 1,
                    run_status},
};

const struct ctl_family ctl_family_artifacts = {
    "artifacts", "Sign, upload and assign artifacts (policy bundles, BPF objects, binaries).", subs,
    sizeof(subs) / sizeof(subs[0])};

#define USAGE(s, ...) ctl_usage(cli, &ctl_family_artifacts, &subs[s], __VA_ARGS__)

static int parse_kind(const char *v, int *pkind)
{
    *pkind = ctl_kind_from_name(v);
    return *pkind != 0 ? 0 : -EINVAL;
}

/* ---- keygen ----------------------------------------------------------------- */

static int run_keygen(struct ctl_cli *cli, const struct ctl_args *a)
{
    const char *out = ctl_args_get(a, K_OUT);
    if (!out || !*out)
        return USAGE(SUB_KEYGEN, "--out FILE is required");
    char id[17], err[512];
    int rv = ctl_keygen(out, id, err, sizeof(err));
    if (rv != 0) {
        fprintf(cli->err, "aegisctl: %s\n", err);
        return rv;
    }
    if (cli->json) {
        struct json_object *o = json_object_new_object();
        char *pub = NULL;
        if (asprintf(&pub, "%s.pub", out) < 0)
            pub = NULL;
        json_object_object_add(o, "key_id", json_object_new_string(id));
        json_object_object_add(o, "private_key", json_object_new_string(out));
        json_object_object_add(o, "public_key", json_object_new_string(pub ? pub : ""));
        free(pub);
        ctl_json_print(cli->out, o, 0);
    } else {
        fprintf(cli->out,
                "key id:      %s\nprivate key: %s (0600; keep it off the server)\n"
                "public key:  %s.pub (install on aegis-control)\n",
                id, out, out);
    }
    return CTL_EXIT_OK;
}

/* ---- upload ----------------------------------------------------------------- */

struct upload {
    struct ctl_cli *cli;
    FILE *f; /* the stored bytes (compressed copy or the file itself) */
    uint64_t size, sent;
    uint8_t sha[32];
    struct aegis_sha256 *check; /* re-hash while sending: the file must not change */
    uint8_t *header;            /* packed first message */
    size_t headerlen;
    int header_sent;
    uint8_t chunk[CHUNK];
    uint8_t *msg; /* packed current message */
    struct ctl_progress bar;
    int show_bar;
};

/* Streams the file once to learn its SHA-256 and size. */
static int hash_file(FILE *f, uint8_t sha[32], uint64_t *psize)
{
    struct aegis_sha256 *s = NULL;
    uint8_t *buf = malloc(CHUNK);
    int rv = buf ? aegis_sha256_new(NULL, &s) : -ENOMEM;
    uint64_t total = 0;
    while (rv == 0) {
        size_t n = fread(buf, 1, CHUNK, f);
        if (n == 0) {
            if (ferror(f))
                rv = -EIO;
            break;
        }
        total += n;
        if (total > CTL_ARTIFACT_MAX)
            rv = AEGIS_ERR_TOO_LARGE;
        else
            rv = aegis_sha256_update(s, buf, n);
    }
    if (rv == 0)
        rv = aegis_sha256_final(s, sha);
    if (rv == 0 && fseeko(f, 0, SEEK_SET) != 0)
        rv = -errno;
    aegis_sha256_del(s);
    free(buf);
    if (rv == 0)
        *psize = total;
    return rv;
}

static int next_part(void *arg, const uint8_t **pmsg, size_t *plen)
{
    struct upload *u = arg;
    if (!u->header_sent) {
        u->header_sent = 1;
        *pmsg = u->header;
        *plen = u->headerlen;
        return 1;
    }
    aegis_free(NULL, u->msg);
    u->msg = NULL;
    size_t n = fread(u->chunk, 1, CHUNK, u->f);
    if (n == 0) {
        uint8_t sha[32];
        if (ferror(u->f) || aegis_sha256_final(u->check, sha) != 0 || u->sent != u->size ||
            memcmp(sha, u->sha, 32) != 0) {
            fprintf(u->cli->err, "\naegisctl: the file changed or could not be read while "
                                 "uploading; upload again\n");
            return CTL_EXIT_INPUT;
        }
        if (u->show_bar)
            ctl_progress_update(&u->bar, u->sent, NULL);
        return 0;
    }
    if (u->sent + n > u->size || aegis_sha256_update(u->check, u->chunk, n) != 0) {
        fprintf(u->cli->err, "\naegisctl: the file grew while uploading; upload again\n");
        return CTL_EXIT_INPUT;
    }
    u->sent += n;
    Aegis__V1__UploadArtifactRequest r = AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__INIT;
    r.part_case = AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__PART_CHUNK;
    r.chunk.data = u->chunk;
    r.chunk.len = n;
    if (ctl_pack(&r.base, &u->msg, plen) != 0) {
        fprintf(u->cli->err, "\naegisctl: out of memory\n");
        return CTL_EXIT_INPUT;
    }
    *pmsg = u->msg;
    if (u->show_bar)
        ctl_progress_update(&u->bar, u->sent, NULL);
    return 1;
}

static int run_upload(struct ctl_cli *cli, const struct ctl_args *a)
{
    const char *path = a->pos[0];
    const char *name = ctl_args_get(a, U_NAME);
    const char *kindtext = ctl_args_get(a, U_KIND);
    const char *version = ctl_args_get(a, U_VERSION);
    const char *keyflag = ctl_args_get(a, U_SIGNING_KEY);
    int compress = ctl_args_count(a, U_COMPRESS) > 0;
    int kind = 0;
    if (!name || !*name || strlen(name) > MAX_NAME)
        return USAGE(SUB_UPLOAD, "--name NAME is required (1..%u characters)", MAX_NAME);
    if (!kindtext)
        return USAGE(SUB_UPLOAD, "--kind KIND is required");
    if (parse_kind(kindtext, &kind) != 0)
        return USAGE(SUB_UPLOAD, "bad --kind \"%s\" (" CTL_KIND_LIST ")", kindtext);
    if (kind == AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY && (!version || !*version))
        return USAGE(SUB_UPLOAD, "an agent_binary needs --version (agents refuse downgrades)");
    if (keyflag) {
        free(cli->flags.signing_key);
        cli->flags.signing_key = strdup(keyflag);
        if (!cli->flags.signing_key)
            return CTL_EXIT_INPUT;
    }
    const struct ctl_config *cfg;
    int rv = ctl_cli_config(cli, &cfg);
    if (rv != 0)
        return rv;
    if (!cfg->signing_key)
        return USAGE(SUB_UPLOAD, "no signing key: give --signing-key FILE, AEGIS_SIGNING_KEY or "
                                 "signing_key = ... (make one with `aegisctl artifacts keygen`)");

    struct upload u = {.cli = cli};
    FILE *in = NULL, *tmp = NULL;
    char *keypem = NULL;
    size_t keylen = 0;
    uint8_t *stmt = NULL, *sig = NULL;
    size_t stmtlen = 0, siglen = 0;
    char keyid[17], err[512];
    uint64_t usize = 0;
    struct stat sb;
    rv = CTL_EXIT_INPUT;

    in = fopen(path, "rb");
    if (!in || fstat(fileno(in), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fprintf(cli->err, "aegisctl: cannot read %s: %s\n", path,
                !in ? strerror(errno) : "not a regular file");
        goto out;
    }
    if ((uint64_t)sb.st_size > CTL_ARTIFACT_MAX) {
        fprintf(cli->err, "aegisctl: %s is larger than the 1 GiB artifact limit\n", path);
        goto out;
    }
    int krv = ctl_read_file(cfg->signing_key, 64u * 1024u, &keypem, &keylen);
    if (krv != 0) {
        fprintf(cli->err, "aegisctl: cannot read signing key %s: %s (check --signing-key)\n",
                cfg->signing_key, aegis_strerror(krv));
        goto out;
    }
    u.f = in;
    usize = (uint64_t)sb.st_size;
    if (compress) {
        tmp = tmpfile();
        int zr = tmp ? ctl_zstd_file(in, tmp, &usize) : -errno;
        if (zr != 0) {
            fprintf(cli->err, "aegisctl: cannot compress %s: %s\n", path, aegis_strerror(zr));
            goto out;
        }
        u.f = tmp;
    }
    int hr = hash_file(u.f, u.sha, &u.size);
    if (hr != 0) {
        fprintf(cli->err, "aegisctl: cannot read %s: %s\n", path, aegis_strerror(hr));
        goto out;
    }
    if (!compress && u.size != usize) {
        fprintf(cli->err, "aegisctl: %s changed while reading it; try again\n", path);
        goto out;
    }
    struct ctl_statement st = {
        .name = name,
        .kind = kind,
        .size = u.size,
        .compression = compress ? AEGIS__V1__COMPRESSION__COMPRESSION_ZSTD
                                : AEGIS__V1__COMPRESSION__COMPRESSION_NONE,
        .uncompressed_size = usize,
        .version = version,
        .signed_unix_ns = (int64_t)cli->wallclock(),
    };
    memcpy(st.sha256, u.sha, 32);
    if (ctl_statement_sign(&st, keypem, keylen, &stmt, &stmtlen, &sig, &siglen, keyid, err,
                           sizeof(err)) != 0) {
        fprintf(cli->err, "aegisctl: %s: %s\n", cfg->signing_key, err);
        goto out;
    }
    Aegis__V1__ArtifactHeader hdr = AEGIS__V1__ARTIFACT_HEADER__INIT;
    hdr.statement.data = stmt;
    hdr.statement.len = stmtlen;
    hdr.signature.data = sig;
    hdr.signature.len = siglen;
    hdr.signing_key_id = keyid;
    Aegis__V1__UploadArtifactRequest first = AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__INIT;
    first.part_case = AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__PART_HEADER;
    first.header = &hdr;
    if (ctl_pack(&first.base, &u.header, &u.headerlen) != 0 ||
        aegis_sha256_new(NULL, &u.check) != 0) {
        fprintf(cli->err, "aegisctl: out of memory\n");
        goto out;
    }
    u.show_bar = !cli->json;
    if (u.show_bar) {
        ctl_progress_start(&u.bar, cli, "upload", u.size);
        ctl_progress_update(&u.bar, 0, NULL);
    }
    Aegis__V1__UploadArtifactResponse *resp = NULL;
    rv = ctl_call_upload(cli, CTL_OPS_PATH("UploadArtifact"), 0, next_part, &u,
                         &aegis__v1__upload_artifact_response__descriptor,
                         (ProtobufCMessage **)&resp);
    if (u.show_bar)
        ctl_progress_finish(&u.bar);
    if (rv != 0)
        goto out;
    char hex[65], sz[32];
    if (cli->json) {
        ctl_json_print(cli->out, ctl_pb_to_json(&resp->base), 0);
    } else {
        fprintf(cli->out, "%s %s (%s, %s, signed by key %s)\nsha256: %s\n",
                resp->already_present ? "already stored:" : "uploaded", name,
                ctl_fmt_bytes(u.size, sz, sizeof(sz)), kindtext, keyid,
                ctl_fmt_hex(u.sha, 32, hex, sizeof(hex)));
    }
    ctl_pb_free(&resp->base);
out:
    if (keypem) {
        explicit_bzero(keypem, keylen);
        free(keypem);
    }
    aegis_free(NULL, stmt);
    aegis_free(NULL, sig);
    aegis_free(NULL, u.header);
    aegis_free(NULL, u.msg);
    aegis_sha256_del(u.check);
    if (tmp)
        fclose(tmp);
    if (in)
        fclose(in);
    return rv;
}

/* ---- list / assign / unassign / status ----------------------------------------- */

static void artifact_row(struct ctl_table *t, const ProtobufCMessage *item, void *arg)
{
    (void)arg;
    const Aegis__V1__ArtifactInfo *ai = (const Aegis__V1__ArtifactInfo *)item;
    char hex[65], kind[32], size[32], up[32], hosts[16];
    snprintf(hosts, sizeof(hosts), "%u", ai->assigned_hosts);
    const char *row[] = {
        ctl_fmt_hex(ai->sha256.data, ai->sha256.len, hex, sizeof(hex)),
        ai->name,
        ctl_enum_name(&aegis__v1__artifact_kind__descriptor, (int)ai->kind, kind, sizeof(kind)),
        ctl_fmt_bytes(ai->size, size, sizeof(size)),
        ctl_fmt_time(ai->uploaded_unix_ns, up, sizeof(up)),
        ai->uploaded_by,
        hosts,
    };
    ctl_table_add(t, row);
}

static int run_list(struct ctl_cli *cli, const struct ctl_args *a)
{
    Aegis__V1__ListArtifactsRequest req = AEGIS__V1__LIST_ARTIFACTS_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    const char *v;
    uint32_t limit = CTL_MAX_ROWS;
    if ((v = ctl_args_get(a, L_LIMIT)) && ctl_parse_u32(v, 1, CTL_MAX_ROWS, &limit) != 0)
        return USAGE(SUB_LIST, "bad --limit \"%s\" (1..%u)", v, CTL_MAX_ROWS);
    if ((v = ctl_args_get(a, L_KIND))) {
        int k;
        if (parse_kind(v, &k) != 0)
            return USAGE(SUB_LIST, "bad --kind \"%s\"", v);
        req.kind = (Aegis__V1__ArtifactKind)k;
    }
    v = ctl_args_get(a, L_PREFIX);
    req.name_prefix = (char *)(v ? v : "");
    static const char *const hdr[] = {"SHA256", "NAME", "KIND", "SIZE", "UPLOADED", "BY", "HOSTS"};
    struct ctl_table *t = cli->json ? NULL : ctl_table_new(7, hdr);
    int rv = ctl_list(cli, CTL_OPS_PATH("ListArtifacts"), &req.base, &page,
                      &aegis__v1__list_artifacts_response__descriptor, "artifacts", limit, t,
                      artifact_row, NULL);
    ctl_table_del(t);
    return rv;
}

static int assign(struct ctl_cli *cli, const struct ctl_args *a, int sub)
{
    uint8_t sha[32];
    if (ctl_parse_sha256(a->pos[0], sha) != 0)
        return USAGE(sub, "bad SHA-256 \"%s\" (64 hex digits, see `aegisctl artifacts list`)",
                     a->pos[0]);
    struct ctl_target t;
    int rv =
        ctl_target_from_args(cli, &ctl_family_artifacts, &subs[sub], a, A_AGENT, A_SELECTOR, 1, &t);
    if (rv != 0)
        return rv;
    Aegis__V1__AgentTarget target = AEGIS__V1__AGENT_TARGET__INIT;
    target.n_agent_ids = t.nids;
    target.agent_ids = (char **)t.ids;
    target.selector = (char *)(t.selector ? t.selector : "");
    ProtobufCMessage *resp = NULL;
    if (sub == SUB_ASSIGN) {
        Aegis__V1__AssignArtifactRequest req = AEGIS__V1__ASSIGN_ARTIFACT_REQUEST__INIT;
        req.sha256.data = sha;
        req.sha256.len = 32;
        req.target = &target;
        req.fetch_only = ctl_args_count(a, A_FETCH_ONLY) > 0;
        rv = ctl_call(cli, CTL_OPS_PATH("AssignArtifact"), &req.base,
                      &aegis__v1__assign_artifact_response__descriptor, &resp);
    } else {
        Aegis__V1__UnassignArtifactRequest req = AEGIS__V1__UNASSIGN_ARTIFACT_REQUEST__INIT;
        req.sha256.data = sha;
        req.sha256.len = 32;
        req.target = &target;
        rv = ctl_call(cli, CTL_OPS_PATH("UnassignArtifact"), &req.base,
                      &aegis__v1__unassign_artifact_response__descriptor, &resp);
    }
    if (rv != 0)
        return rv;
    if (cli->json) {
        ctl_json_print(cli->out, ctl_pb_to_json(resp), 0);
    } else if (sub == SUB_ASSIGN) {
        const Aegis__V1__AssignArtifactResponse *r = (const void *)resp;
        fprintf(cli->out, "assigned to %u new host(s); command %s\n", r->assigned,
                r->command_id[0] ? r->command_id : "-");
    } else {
        const Aegis__V1__UnassignArtifactResponse *r = (const void *)resp;
        fprintf(cli->out, "unassigned from %u host(s); command %s\n", r->unassigned,
                r->command_id[0] ? r->command_id : "-");
    }
    ctl_pb_free(resp);
    return CTL_EXIT_OK;
}

static int run_assign(struct ctl_cli *cli, const struct ctl_args *a)
{
    return assign(cli, a, SUB_ASSIGN);
}

static int run_unassign(struct ctl_cli *cli, const struct ctl_args *a)
{
    return assign(cli, a, SUB_UNASSIGN);
}

static void status_head(struct ctl_cli *cli, const ProtobufCMessage *head, void *arg)
{
    (void)arg;
    const Aegis__V1__ArtifactInfo *ai = (const Aegis__V1__ArtifactInfo *)head;
    if (!ai)
        return;
    char hex[65], kind[32], size[32], up[32];
    fprintf(cli->out, "artifact: %s (%s, %s)\nsha256:   %s\nuploaded: %s by %s\n\n", ai->name,
            ctl_enum_name(&aegis__v1__artifact_kind__descriptor, (int)ai->kind, kind, sizeof(kind)),
            ctl_fmt_bytes(ai->size, size, sizeof(size)),
            ctl_fmt_hex(ai->sha256.data, ai->sha256.len, hex, sizeof(hex)),
            ctl_fmt_time(ai->uploaded_unix_ns, up, sizeof(up)), ai->uploaded_by);
}

static void host_row(struct ctl_table *t, const ProtobufCMessage *item, void *arg)
{
    (void)arg;
    const Aegis__V1__ArtifactHostStatus *h = (const Aegis__V1__ArtifactHostStatus *)item;
    char st[32], fetched[32], up[32];
    const char *row[] = {
        h->agent_id,
        h->host_id,
        ctl_enum_name(&aegis__v1__artifact_state__descriptor, (int)h->state, st, sizeof(st)),
        ctl_fmt_bytes(h->bytes_fetched, fetched, sizeof(fetched)),
        ctl_fmt_time(h->updated_unix_ns, up, sizeof(up)),
        h->detail,
    };
    ctl_table_add(t, row);
}

static int run_status(struct ctl_cli *cli, const struct ctl_args *a)
{
    uint8_t sha[32];
    if (ctl_parse_sha256(a->pos[0], sha) != 0)
        return USAGE(SUB_STATUS, "bad SHA-256 \"%s\" (64 hex digits)", a->pos[0]);
    Aegis__V1__GetArtifactStatusRequest req = AEGIS__V1__GET_ARTIFACT_STATUS_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    req.page = &page;
    req.sha256.data = sha;
    req.sha256.len = 32;
    const char *v;
    uint32_t limit = CTL_MAX_ROWS;
    if ((v = ctl_args_get(a, ST_LIMIT)) && ctl_parse_u32(v, 1, CTL_MAX_ROWS, &limit) != 0)
        return USAGE(SUB_STATUS, "bad --limit \"%s\" (1..%u)", v, CTL_MAX_ROWS);
    if ((v = ctl_args_get(a, ST_STATE))) {
        int s;
        if (ctl_enum_parse(&aegis__v1__artifact_state__descriptor, v, &s) != 0 || s == 0)
            return USAGE(SUB_STATUS, "bad --state \"%s\" (pending, downloaded, loaded, failed)", v);
        req.state = (Aegis__V1__ArtifactState)s;
    }
    static const char *const hdr[] = {"AGENT", "HOST", "STATE", "FETCHED", "UPDATED", "DETAIL"};
    struct ctl_table *t = cli->json ? NULL : ctl_table_new(6, hdr);
    int rv = ctl_list_head(cli, CTL_OPS_PATH("GetArtifactStatus"), &req.base, &page,
                           &aegis__v1__get_artifact_status_response__descriptor, "artifact",
                           status_head, "hosts", limit, t, host_row, NULL);
    ctl_table_del(t);
    return rv;
}
