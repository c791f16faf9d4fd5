/*
 * aegisctl: the operator CLI (DESIGN §3 OperatorService).
 *
 * Layout:
 *   ctl_cli_main.c      main(): real stdout/stderr/env, then ctl_cli_run.
 *   ctl_cli_run.c       global options, the family/sub-command table, --help.
 *   ctl_cli_args.c      option parsing, durations, labels/selectors, hex digests.
 *   ctl_cli_config.c    server/pin/cert/key: flags > environment > config file.
 *   ctl_cli_out.c       tables, protobuf -> JSON (json-c), times, progress bar.
 *   ctl_cli_pb.c        pack/unpack and the typed call helpers over struct ctl_rpc_ops.
 *   ctl_cli_rpc.c       the real RPC transport (aegis_transport on a libev loop).
 *   ctl_cli_crypto.c    artifact keys and signed statements (aegis_pki).
 *   ctl_cli_zstd.c      artifact compression (zstd).
 *   ctl_cli_<family>.c  agents, tokens, commands, artifacts, policies, telemetry, audit.
 *
 * Every command returns an exit code (enum ctl_exit) and reports its own errors
 * on cli->err once, saying what to do. The RPC layer is a table of function
 * pointers (struct ctl_rpc_ops) so that unit tests drive every command against
 * an in-process fake and check the request bytes and the printed output.
 */
#ifndef CTL_CLI_H
#define CTL_CLI_H

#include <protobuf-c/protobuf-c.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes (documented in `aegisctl --help`). */
enum ctl_exit {
    CTL_EXIT_OK = 0,
    CTL_EXIT_SERVER = 1,  /* the server said no, or the RPC failed */
    CTL_EXIT_USAGE = 2,   /* bad command line */
    CTL_EXIT_CONNECT = 3, /* cannot connect, or the server key does not match the pin */
    CTL_EXIT_INPUT = 4,   /* a local input is invalid: file, JSON, key, config */
    CTL_EXIT_INTERRUPTED = 130,
};

/* Default port of aegis-control (FLEET_CONTRACT). */
#define CTL_DEFAULT_PORT "4433"
/* Unary calls get this deadline unless --timeout says otherwise: long enough
 * for a loaded server and a database round trip, short enough for a script. */
#define CTL_DEFAULT_TIMEOUT_NS (30ull * 1000000000ull)
/* Connecting gets this long unless --timeout is given: a dead or unreachable
 * server should be reported quickly, a slow handshake still fits easily. */
#define CTL_CONNECT_TIMEOUT_NS (10ull * 1000000000ull)
/* Page size for list calls; the server caps pages at 1000 (common.proto). */
#define CTL_PAGE_SIZE 500u
/* Rows a list command collects at most across pages unless --limit is given:
 * a bound on memory for fleets of any size. */
#define CTL_MAX_ROWS 100000u
/* Largest policy JSON / config file we read (the RPC message limit). */
#define CTL_MAX_FILE (4u << 20)

/* Connection settings; every string is owned (malloc) or NULL. */
struct ctl_config {
    char *server;      /* "host:port" */
    char *pin;         /* "sha256//..." (one, or two separated by ',') */
    char *cert;        /* operator certificate PEM path */
    char *key;         /* its private key PEM path */
    char *signing_key; /* artifact-signing key path */
};

void ctl_config_free(struct ctl_config *c);

typedef const char *(*ctl_getenv_fn)(const char *name);

/*
 * ctl_config_resolve fills *out field by field from flags, else the
 * environment (AEGIS_SERVER, AEGIS_PIN, AEGIS_CERT, AEGIS_KEY,
 * AEGIS_SIGNING_KEY), else the config file: `file` if given, else
 * $AEGISCTL_CONFIG, else $HOME/.config/aegis/aegisctl.conf (a missing default
 * file is fine; a missing named one is an error). Relative paths in the file
 * are relative to the file's directory; "~/" means $HOME. A server without a
 * port gets 4433. Returns 0 or CTL_EXIT_INPUT with a message in err naming the
 * file and line.
 */
int ctl_config_resolve(const struct ctl_config *flags, ctl_getenv_fn getenv_fn, const char *file,
                       struct ctl_config *out, char *err, size_t errlen);

/* Outcome of one RPC. */
struct ctl_status {
    int code;               /* gRPC status */
    int local;              /* decided locally (deadline, cancel, connection lost) */
    char message[512];      /* grpc-message, or what went wrong locally */
    int64_t retry_after_ms; /* from "aegis-retry-after-ms", -1 if absent */
};

/* Called per received message of a stream; non-zero stops the call. */
typedef int (*ctl_msg_fn)(const uint8_t *msg, size_t len, void *arg);
/* Produces the next upload message: 1 with *pmsg and *plen set (borrowed until
 * the next call), 0 at the end, or a CTL_EXIT_* > 0 to abort. */
typedef int (*ctl_next_fn)(void *arg, const uint8_t **pmsg, size_t *plen);

/*
 * The RPC layer. Each returns 0 when the call ran to a status (in *st, which
 * may be an error), or CTL_EXIT_CONNECT/CTL_EXIT_INPUT when no call could be
 * made (st->message says why). Unary/upload responses are malloc'd into
 * *presp (the caller frees) when st->code is OK.
 */
struct ctl_rpc_ops {
    int (*unary)(void *ud, const char *path, const uint8_t *req, size_t reqlen, uint64_t timeout_ns,
                 uint8_t **presp, size_t *presplen, struct ctl_status *st);
    int (*server_stream)(void *ud, const char *path, const uint8_t *req, size_t reqlen,
                         ctl_msg_fn on_msg, void *arg, struct ctl_status *st);
    int (*client_stream)(void *ud, const char *path, int compress, ctl_next_fn next, void *arg,
                         uint8_t **presp, size_t *presplen, struct ctl_status *st);
    void (*del)(void *ud);
};

struct ctl_cli {
    FILE *out; /* results */
    FILE *err; /* errors, progress */
    int json;
    int progress_tty; /* draw progress bars (stderr is a terminal) */
    uint64_t timeout_ns;
    int timeout_given;       /* --timeout was on the command line */
    struct ctl_config flags; /* from the command line (owned) */
    char *config_file;       /* --config (owned) */
    ctl_getenv_fn getenv_fn;
    uint64_t (*wallclock)(void); /* Unix ns; tests pin it */
    /* RPC layer: set by tests; NULL = the real transport, created on first use. */
    const struct ctl_rpc_ops *ops;
    void *ops_ud;
    int own_ops;           /* ops_ud is ours to delete */
    struct ctl_config cfg; /* resolved on first use */
    int cfg_resolved;
};

/* ctl_cli_init sets defaults (out/err/getenv/wallclock must then be set).
 * ctl_cli_free releases what ctl_cli_run allocated. */
void ctl_cli_init(struct ctl_cli *cli);
void ctl_cli_free(struct ctl_cli *cli);

/* ctl_cli_run runs one command line (argv[0] is the program name) and
 * returns its exit code. */
int ctl_cli_run(struct ctl_cli *cli, int argc, char **argv);

/* ctl_cli_config gets the resolved configuration (resolving on first use);
 * returns 0 or an exit code after printing why. */
int ctl_cli_config(struct ctl_cli *cli, const struct ctl_config **pcfg);

/* ---- option parsing (ctl_cli_args.c) --------------------------------- */

struct ctl_optspec {
    const char *name; /* "agent" for --agent */
    int has_arg;
    const char *arg_name; /* for help: "ID" */
    const char *help;
};

#define CTL_MAX_OPTS 256
#define CTL_MAX_POS 16

struct ctl_args {
    size_t nopt;
    struct {
        int id; /* index into the spec */
        const char *val;
    } opt[CTL_MAX_OPTS];
    size_t npos;
    const char *pos[CTL_MAX_POS];
    int help;
};

struct ctl_subcmd;
struct ctl_family;

/* ctl_args_parse parses argv (after the sub-command name) against spec (NULL-
 * terminated), handling the global options (--json, --server, ...) too.
 * Returns 0 or CTL_EXIT_USAGE after printing the problem. */
int ctl_args_parse(struct ctl_cli *cli, const struct ctl_family *fam, const struct ctl_subcmd *sub,
                   int argc, char **argv, struct ctl_args *a);
const char *ctl_args_get(const struct ctl_args *a, int id);
size_t ctl_args_count(const struct ctl_args *a, int id);
/* ctl_args_nth returns the n-th occurrence of option id (0-based) or NULL. */
const char *ctl_args_nth(const struct ctl_args *a, int id, size_t n);

/* ctl_usage prints "aegisctl: <msg>" and a pointer to --help; returns
 * CTL_EXIT_USAGE. */
int ctl_usage(struct ctl_cli *cli, const struct ctl_family *fam, const struct ctl_subcmd *sub,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ctl_parse_duration parses "90s", "15m", "24h", "7d", "1h30m", "500ms" or a
 * bare number of seconds into nanoseconds (at most 10 years). -EINVAL else. */
int ctl_parse_duration(const char *text, uint64_t *pns);
/* ctl_parse_u32 parses a decimal in [min, max]. -EINVAL else. */
int ctl_parse_u32(const char *text, uint32_t min, uint32_t max, uint32_t *pv);
int ctl_parse_u64(const char *text, uint64_t *pv);
/* ctl_parse_sha256 parses 64 hex digits. -EINVAL else. */
int ctl_parse_sha256(const char *text, uint8_t out[32]);

/* Label limits (common.proto: names <= 63, values <= 255 bytes). */
#define CTL_LABEL_KEY_MAX 63u
#define CTL_LABEL_VALUE_MAX 255u
#define CTL_MAX_LABELS 64u

/* A parsed k=v list; strings point into `buf` (owned). */
struct ctl_kvlist {
    size_t n;
    char *key[CTL_MAX_LABELS];
    char *value[CTL_MAX_LABELS];
    char *buf;
};

/* ctl_parse_kvlist parses "k=v,k2=v2" (keys [A-Za-z0-9._/-], non-empty,
 * unique; values without ','; limits above) appending to l. Returns 0 or
 * -EINVAL with a reason in err. ctl_kvlist_free frees the copies. */
int ctl_parse_kvlist(const char *text, struct ctl_kvlist *l, char *err, size_t errlen);
void ctl_kvlist_free(struct ctl_kvlist *l);

/* ---- commands (one file per family) ------------------------------------ */

struct ctl_subcmd {
    const char *name;
    const char *synopsis;           /* "list [--label K=V] [--status S]" */
    const char *summary;            /* one line */
    const char *details;            /* extra paragraph for --help, may be NULL */
    const struct ctl_optspec *opts; /* NULL-name terminated; may be NULL */
    size_t min_pos, max_pos;
    int (*run)(struct ctl_cli *cli, const struct ctl_args *a);
};

struct ctl_family {
    const char *name;
    const char *summary;
    const struct ctl_subcmd *subs;
    size_t nsubs;
};

extern const struct ctl_family ctl_family_agents;
extern const struct ctl_family ctl_family_tokens;
extern const struct ctl_family ctl_family_commands;
extern const struct ctl_family ctl_family_artifacts;
extern const struct ctl_family ctl_family_policies;
extern const struct ctl_family ctl_family_telemetry;
extern const struct ctl_family ctl_family_audit;

/* ---- protobuf and calls (ctl_cli_pb.c) ---------------------------------- */

/* OperatorService method paths. */
#define CTL_OPS_PATH(m) "/aegis.v1.OperatorService/" m

int ctl_pack(const ProtobufCMessage *msg, uint8_t **pbuf, size_t *plen);
int ctl_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
               ProtobufCMessage **pmsg);
void ctl_pb_free(ProtobufCMessage *msg);

/* The typed calls: pack req, run the call, print an error (gRPC status name
 * and message, plus a hint) and return CTL_EXIT_*; on success *presp is the
 * unpacked response (free with ctl_pb_free). */
int ctl_call(struct ctl_cli *cli, const char *path, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **presp);
/* Server stream: on_msg gets each unpacked message (freed after it returns);
 * a non-zero return stops the stream and becomes the exit code
 * (CTL_STREAM_STOP: stop, exit 0). */
#define CTL_STREAM_STOP (-1)
typedef int (*ctl_pbmsg_fn)(ProtobufCMessage *msg, void *arg);
int ctl_call_stream(struct ctl_cli *cli, const char *path, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, ctl_pbmsg_fn on_msg, void *arg);
int ctl_call_upload(struct ctl_cli *cli, const char *path, int compress, ctl_next_fn next,
                    void *arg, const ProtobufCMessageDescriptor *resp_desc,
                    ProtobufCMessage **presp);

/*
 * ctl_list runs a paged List/Query call: sets page->limit/page_token (page
 * must be req's PageRequest), follows next_page_token until the last page or
 * `limit` items, and prints either {"<items>": [...]} (--json) or the table t
 * after row() added each item to it. `items` names the response's repeated
 * field. Returns an exit code.
 */
struct ctl_table;
struct Aegis__V1__PageRequest;
typedef void (*ctl_row_fn)(struct ctl_table *t, const ProtobufCMessage *item, void *arg);
int ctl_list(struct ctl_cli *cli, const char *path, const ProtobufCMessage *req,
             struct Aegis__V1__PageRequest *page, const ProtobufCMessageDescriptor *resp_desc,
             const char *items, uint32_t limit, struct ctl_table *t, ctl_row_fn row, void *arg);

/* ctl_list_head is ctl_list for replies that also carry one message about
 * the whole list (`head`, e.g. GetArtifactStatus's "artifact"): head_fn prints
 * it before the table; --json gives {"<head>": {...}, "<items>": [...]}. */
typedef void (*ctl_head_fn)(struct ctl_cli *cli, const ProtobufCMessage *head, void *arg);
int ctl_list_head(struct ctl_cli *cli, const char *path, const ProtobufCMessage *req,
                  struct Aegis__V1__PageRequest *page, const ProtobufCMessageDescriptor *resp_desc,
                  const char *head, ctl_head_fn head_fn, const char *items, uint32_t limit,
                  struct ctl_table *t, ctl_row_fn row, void *arg);

/* ctl_report_status prints "aegisctl: <what>: <STATUS_NAME>: <message>" and
 * a hint for the status; returns CTL_EXIT_SERVER (or _INTERRUPTED). */
int ctl_report_status(struct ctl_cli *cli, const char *what, const struct ctl_status *st);

/* Helpers to build AgentTarget/Labels from parsed options (owned by the
 * caller's arena: strings borrowed from argv/kvlist). */
struct ctl_target {
    const char *ids[CTL_MAX_OPTS];
    size_t nids;
    const char *selector; /* validated */
};

/* ctl_target_from_args fills t from --agent (repeatable) and --selector;
 * require = 1 makes "neither given" a usage error. Returns 0 or an exit code. */
int ctl_target_from_args(struct ctl_cli *cli, const struct ctl_family *fam,
                         const struct ctl_subcmd *sub, const struct ctl_args *a, int agent_id,
                         int selector_id, int require, struct ctl_target *t);

/* ctl_policy_find (ctl_cli_policies.c) finds stored policy `version` of
 * `service` (0 = whichever service has it; several is a usage error asking
 * for --service). On success *presp holds the reply (ctl_pb_free it) and
 * *ppol points into it. Returns an exit code after printing why. */
struct Aegis__V1__ListPoliciesResponse;
struct Aegis__V1__Policy;
int ctl_policy_find(struct ctl_cli *cli, uint64_t service, uint64_t version,
                    struct Aegis__V1__ListPoliciesResponse **presp,
                    const struct Aegis__V1__Policy **ppol);

/* ---- output (ctl_cli_out.c) ---------------------------------------------- */

struct ctl_table;
struct json_object;

/* ctl_table_new makes a table with ncols named columns (headers copied). */
struct ctl_table *ctl_table_new(size_t ncols, const char *const *headers);
/* ctl_table_add appends a row of ncols cells (copied; NULL prints as "-"). */
int ctl_table_add(struct ctl_table *t, const char *const *cells);
size_t ctl_table_rows(const struct ctl_table *t);
/* ctl_table_print aligns every column to its widest cell (in characters,
 * UTF-8 aware), two spaces apart, the last column unpadded. */
void ctl_table_print(const struct ctl_table *t, FILE *f);
void ctl_table_del(struct ctl_table *t);

/*
 * ctl_pb_to_json converts any message to JSON with stable keys: the proto
 * field names in declaration order, every field present (defaults included),
 * enums as lower-case names without their type prefix ("online"), bytes as
 * lower-case hex, maps as objects, unset sub-messages as null, and of a oneof
 * only the member that is set. Returns NULL on ENOMEM.
 */
struct json_object *ctl_pb_to_json(const ProtobufCMessage *msg);
/* ctl_json_print writes obj pretty-printed plus a newline; compact = 1 writes
 * it on one line (JSON Lines for streams). Takes ownership of obj. */
void ctl_json_print(FILE *f, struct json_object *obj, int compact);

/* ctl_enum_name: the lower-case short name of value in desc ("online"), or
 * the number as text in buf for unknown values. */
const char *ctl_enum_name(const ProtobufCEnumDescriptor *desc, int value, char *buf, size_t len);
/* ctl_enum_parse maps a short name ("online", case-insensitive) back;
 * -EINVAL if unknown. */
int ctl_enum_parse(const ProtobufCEnumDescriptor *desc, const char *name, int *pvalue);

/* Formatting helpers writing into buf and returning it. */
const char *ctl_fmt_time(int64_t unix_ns, char *buf,
                         size_t len); /* "2026-11-23T07:45:29Z", "-" for 0 */
const char *ctl_fmt_hex(const uint8_t *p, size_t n, char *buf, size_t len);
const char *ctl_fmt_bytes(uint64_t n, char *buf, size_t len);                      /* "1.5 MiB" */
const char *ctl_fmt_labels(const ProtobufCMessage *labels, char *buf, size_t len); /* "a=b,c=d" */

/* A progress bar on stderr (TTY) or plain lines at 25 % steps (not a TTY). */
struct ctl_progress {
    struct ctl_cli *cli;
    const char *label;
    uint64_t total;
    uint64_t done;
    unsigned last_step; /* plain mode: last quarter printed */
    uint64_t last_draw_ns;
    int drawn;
};

void ctl_progress_start(struct ctl_progress *p, struct ctl_cli *cli, const char *label,
                        uint64_t total);
/* ctl_progress_update shows done of total; `suffix` (may be NULL) is extra
 * text such as "12 succeeded, 1 failed". */
void ctl_progress_update(struct ctl_progress *p, uint64_t done, const char *suffix);
void ctl_progress_finish(struct ctl_progress *p);

/* ---- crypto (ctl_cli_crypto.c) ------------------------------------------ */

/* SHA-256 and key ids are aegis_pki's (aegis_sha256_*, aegis_key_id_from_spki). */

/* ctl_base64 encodes n bytes into a malloc'd NUL-terminated string. */
char *ctl_base64(const uint8_t *p, size_t n);

/* ctl_spki_pem wraps SPKI DER as a "PUBLIC KEY" PEM (malloc'd). */
char *ctl_spki_pem(const uint8_t *der, size_t len);

/*
 * ctl_keygen writes a new Ed25519 key to path (PKCS#8 PEM, mode 0600) and its
 * public key to path.pub (SPKI PEM, 0644); refuses to overwrite either.
 * Writes the key id into key_id. Returns 0 or CTL_EXIT_INPUT with err set.
 */
int ctl_keygen(const char *path, char key_id[17], char *err, size_t errlen);

/* What goes into a signed artifact statement. */
struct ctl_statement {
    const char *name;
    int kind; /* Aegis__V1__ArtifactKind */
    uint64_t size;
    uint8_t sha256[32];
    int compression; /* Aegis__V1__Compression */
    uint64_t uncompressed_size;
    const char *version;
    int64_t signed_unix_ns;
};

/*
 * ctl_statement_sign serializes st as an ArtifactStatement and signs those
 * bytes with the Ed25519 key in key_pem; fills *pstmt and *psig (malloc'd) and
 * key_id. Returns 0 or CTL_EXIT_INPUT with err set (bad key).
 */
int ctl_statement_sign(const struct ctl_statement *st, const char *key_pem, size_t key_len,
                       uint8_t **pstmt, size_t *pstmtlen, uint8_t **psig, size_t *psiglen,
                       char key_id[17], char *err, size_t errlen);

/* ctl_read_file reads a whole file (at most max bytes) NUL-terminated into a
 * malloc'd buffer. Returns 0, -errno, or AEGIS_ERR_TOO_LARGE. */
int ctl_read_file(const char *path, size_t max, char **pbuf, size_t *plen);

/* ---- zstd (ctl_cli_zstd.c) --------------------------------------------- */

/* Uncompressed artifacts are capped at 1 GiB (DESIGN §8). */
#define CTL_ARTIFACT_MAX (1ull << 30)

/* ctl_zstd_file compresses all of in into out (both positioned at 0 after),
 * setting *pin_size. Returns 0, -errno, AEGIS_ERR_TOO_LARGE (over 1 GiB) or
 * AEGIS_ERR_INTERNAL (zstd failed). */
int ctl_zstd_file(FILE *in, FILE *out, uint64_t *pin_size);

/* ---- the real transport (ctl_cli_rpc.c) ----------------------------------- */

/*
 * ctl_rpc_connect connects to cfg->server with the operator certificate, key
 * and pin(s) and waits (at most timeout_ns) until the connection is
 * established. On success fills *pops and *pud. Returns CTL_EXIT_INPUT (files),
 * CTL_EXIT_CONNECT (network, pin, refused) with err naming the cause and what
 * to do.
 */
int ctl_rpc_connect(const struct ctl_config *cfg, uint64_t timeout_ns,
                    const struct ctl_rpc_ops **pops, void **pud, char *err, size_t errlen);

#endif
