/*
 * A scripted stand-in for aegisctl's RPC layer (struct ctl_rpc_ops): records
 * every request and answers with replies the test queued, so a test can run
 * a whole command line in-process and check the request it sent, what it
 * printed and its exit code.
 */
#ifndef CTL_CLI_FAKE_H
#define CTL_CLI_FAKE_H

#include "ctl_cli.h"

#define FAKE_MAX_CALLS 16
#define FAKE_MAX_STREAM 16
#define FAKE_MAX_UPLOAD 256

struct fake_reply {
    int code;
    char message[128];
    uint8_t *resp; /* unary / upload reply (packed) */
    size_t resplen;
    uint8_t *stream[FAKE_MAX_STREAM]; /* server-stream messages */
    size_t streamlen[FAKE_MAX_STREAM];
    size_t nstream;
};

struct fake {
    /* requests as received */
    char path[FAKE_MAX_CALLS][96];
    uint8_t *req[FAKE_MAX_CALLS];
    size_t reqlen[FAKE_MAX_CALLS];
    size_t ncalls;
    /* uploaded messages of the (one) client stream */
    uint8_t *up[FAKE_MAX_UPLOAD];
    size_t uplen[FAKE_MAX_UPLOAD];
    size_t nup;
    /* replies, one per call in order */
    struct fake_reply replies[FAKE_MAX_CALLS];
    size_t nreplies;
    int connect_error; /* non-zero: every call fails to connect with this */
    int real;          /* run with the real transport (ops left NULL) */
    int tty;           /* pretend stderr is a terminal (progress bars) */
    /* results of fake_run */
    char *out;
    char *err;
    size_t outlen, errlen;
    const char *env[16][2]; /* environment for the run */
    size_t nenv;
};

/* The fixed clock of fake runs: 2026-11-23T07:00:00Z in Unix ns. */
#define FAKE_NOW_NS (1795417200ull * 1000000000ull)

/* fake_tmpdir makes a new directory /tmp/ctlcli-<tag>-XXXXXX, its name in dir
 * (64 bytes); fake_rmtree removes dir and everything below it. 0 or -1. */
int fake_tmpdir(char dir[64], const char *tag);
int fake_rmtree(const char *dir);

void fake_init(struct fake *f);
void fake_free(struct fake *f);
/* Queues the reply to the next call: status code/message and, for OK, a
 * message (packed here; may be NULL for errors). Returns the reply slot. */
struct fake_reply *fake_reply(struct fake *f, int code, const char *message,
                              const ProtobufCMessage *resp);
/* Appends a streamed message to reply r. */
void fake_stream(struct fake_reply *r, const ProtobufCMessage *m);
/* Runs aegisctl with the NULL-terminated arguments (after "aegisctl"). */
int fake_run(struct fake *f, ...);
/* Unpacks request i as desc (the test frees it with ctl_pb_free). */
ProtobufCMessage *fake_request(const struct fake *f, size_t i,
                               const ProtobufCMessageDescriptor *desc);

/* The aligned table aegisctl should print for nrows rows (headers first) of
 * ncols ASCII cells, built independently of ctl_cli_out.c. malloc'd. */
char *fake_expect_table(size_t ncols, const char *const *cells, size_t nrows);
/* Parses the run's stdout as one JSON document (NULL if it is not one). */
struct json_object;
struct json_object *fake_json(const struct fake *f);

#endif
