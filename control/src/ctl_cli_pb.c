/*
 * aegisctl: typed calls. Packs requests, runs them over the RPC layer
 * (struct ctl_rpc_ops: the real transport or a test fake), unpacks replies
 * with aegis_proto's bounded unpacker, and turns failures into one message
 * and an exit code.
 */
#include "ctl_cli.h"

#include <aegis/err.h>
#include <aegis/grpc_status.h>
#include <aegis/mem.h>
#include <aegis/proto.h>
#include <aegis/v1/common.pb-c.h>

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

/* Replies are bounded by the RPC message limit (DESIGN §8). */
#define MAX_REPLY (4u << 20)

int ctl_pack(const ProtobufCMessage *msg, uint8_t **pbuf, size_t *plen)
{
    return aegis_proto_pack(msg, NULL, pbuf, plen);
}

int ctl_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
               ProtobufCMessage **pmsg)
{
    return aegis_proto_unpack(desc, buf, len, MAX_REPLY, NULL, pmsg);
}

void ctl_pb_free(ProtobufCMessage *msg)
{
    aegis_proto_free(msg, NULL);
}

static const char *hint(int code)
{
    switch (code) {
    case AEGIS_GRPC_UNAUTHENTICATED:
    case AEGIS_GRPC_PERMISSION_DENIED:
        return "is --cert an operator certificate of this fleet (aegis-certs operator)?";
    case AEGIS_GRPC_UNAVAILABLE:
        return "the server or its database is unavailable; retry later";
    case AEGIS_GRPC_DEADLINE_EXCEEDED:
        return "the server did not answer in time; retry, or raise --timeout";
    case AEGIS_GRPC_UNIMPLEMENTED:
        return "the server does not support this call; is it an older aegis-control?";
    case AEGIS_GRPC_NOT_FOUND:
        return "check the id (list them with the `list` sub-command)";
    default:
        return NULL;
    }
}

int ctl_report_status(struct ctl_cli *cli, const char *what, const struct ctl_status *st)
{
    if (st->code == AEGIS_GRPC_CANCELLED && st->local)
        return CTL_EXIT_INTERRUPTED;
    fprintf(cli->err, "aegisctl: %s: %s", what, aegis_grpc_status_name(st->code));
    if (st->message[0])
        fprintf(cli->err, ": %s", st->message);
    if (st->retry_after_ms >= 0)
        fprintf(cli->err, " (retry after %lld ms)", (long long)st->retry_after_ms);
    const char *h = hint(st->code);
    if (h)
        fprintf(cli->err, " (%s)", h);
    fputc('\n', cli->err);
    return CTL_EXIT_SERVER;
}

static int get_ops(struct ctl_cli *cli)
{
    if (cli->ops)
        return 0;
    const struct ctl_config *cfg;
    int rv = ctl_cli_config(cli, &cfg);
    if (rv != 0)
        return rv;
    char err[512];
    uint64_t connect_ns = cli->timeout_given ? cli->timeout_ns : CTL_CONNECT_TIMEOUT_NS;
    rv = ctl_rpc_connect(cfg, connect_ns, &cli->ops, &cli->ops_ud, err, sizeof(err));
    if (rv != 0) {
        fprintf(cli->err, "aegisctl: %s\n", err);
        return rv;
    }
    cli->own_ops = 1;
    return 0;
}

static const char *method_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int connect_failed(struct ctl_cli *cli, int rv, const struct ctl_status *st)
{
    fprintf(cli->err, "aegisctl: %s\n", st->message[0] ? st->message : "cannot connect");
    return rv;
}

/* take_reply finishes a call with one reply message: a status other than OK is reported,
 * else the reply (malloc'd bytes, freed here) is unpacked into *presp. */
static int take_reply(struct ctl_cli *cli, const char *path, const struct ctl_status *st,
                      uint8_t *resp, size_t resplen, const ProtobufCMessageDescriptor *resp_desc,
                      ProtobufCMessage **presp)
{
    if (st->code != AEGIS_GRPC_OK) {
        free(resp);
        return ctl_report_status(cli, method_name(path), st);
    }
    ProtobufCMessage *m = NULL;
    int rv = ctl_unpack(resp_desc, resp, resplen, &m);
    free(resp);
    if (rv != 0) {
        fprintf(cli->err, "aegisctl: %s: the server's reply does not decode: %s\n",
                method_name(path), aegis_strerror(rv));
        return CTL_EXIT_SERVER;
    }
    *presp = m;
    return CTL_EXIT_OK;
}

int ctl_call(struct ctl_cli *cli, const char *path, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **presp)
{
    int rv = get_ops(cli);
    if (rv != 0)
        return rv;
    uint8_t *buf = NULL, *resp = NULL;
    size_t len = 0, resplen = 0;
    rv = ctl_pack(req, &buf, &len);
    if (rv != 0) {
        fprintf(cli->err, "aegisctl: %s: cannot encode the request: %s\n", method_name(path),
                aegis_strerror(rv));
        return CTL_EXIT_INPUT;
    }
    struct ctl_status st = {.retry_after_ms = -1};
    rv = cli->ops->unary(cli->ops_ud, path, buf, len, cli->timeout_ns, &resp, &resplen, &st);
    aegis_free(NULL, buf);
    if (rv != 0)
        return connect_failed(cli, rv, &st);
    return take_reply(cli, path, &st, resp, resplen, resp_desc, presp);
}

struct stream_ctx {
    const ProtobufCMessageDescriptor *desc;
    ctl_pbmsg_fn fn;
    void *arg;
    int result; /* exit code that stopped the stream, 0 if none */
    int bad;
};

static int on_stream_msg(const uint8_t *msg, size_t len, void *arg)
{
    struct stream_ctx *c = arg;
    ProtobufCMessage *m = NULL;
    int rv = ctl_unpack(c->desc, msg, len, &m);
    if (rv != 0) {
        c->bad = rv;
        c->result = CTL_EXIT_SERVER;
        return 1;
    }
    rv = c->fn(m, c->arg);
    ctl_pb_free(m);
    if (rv != 0) {
        c->result = rv;
        return 1;
    }
    return 0;
}

int ctl_call_stream(struct ctl_cli *cli, const char *path, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, ctl_pbmsg_fn on_msg, void *arg)
{
    int rv = get_ops(cli);
    if (rv != 0)
        return rv;
    uint8_t *buf = NULL;
    size_t len = 0;
    rv = ctl_pack(req, &buf, &len);
    if (rv != 0) {
        fprintf(cli->err, "aegisctl: %s: cannot encode the request: %s\n", method_name(path),
                aegis_strerror(rv));
        return CTL_EXIT_INPUT;
    }
    struct stream_ctx c = {resp_desc, on_msg, arg, 0, 0};
    struct ctl_status st = {.retry_after_ms = -1};
    rv = cli->ops->server_stream(cli->ops_ud, path, buf, len, on_stream_msg, &c, &st);
    aegis_free(NULL, buf);
    if (rv != 0)
        return connect_failed(cli, rv, &st);
    if (c.bad) {
        fprintf(cli->err, "aegisctl: %s: a streamed message does not decode: %s\n",
                method_name(path), aegis_strerror(c.bad));
        return CTL_EXIT_SERVER;
    }
    if (c.result != 0) /* the callback stopped the stream */
        return c.result == CTL_STREAM_STOP ? CTL_EXIT_OK : c.result;
    if (st.code != AEGIS_GRPC_OK)
        return ctl_report_status(cli, method_name(path), &st);
    return CTL_EXIT_OK;
}

int ctl_call_upload(struct ctl_cli *cli, const char *path, int compress, ctl_next_fn next,
                    void *arg, const ProtobufCMessageDescriptor *resp_desc,
                    ProtobufCMessage **presp)
{
    int rv = get_ops(cli);
    if (rv != 0)
        return rv;
    uint8_t *resp = NULL;
    size_t resplen = 0;
    struct ctl_status st = {.retry_after_ms = -1};
    rv = cli->ops->client_stream(cli->ops_ud, path, compress, next, arg, &resp, &resplen, &st);
    if (rv == CTL_EXIT_CONNECT)
        return connect_failed(cli, rv, &st);
    if (rv != 0) { /* the producer aborted (and printed why), or sending failed */
        if (st.message[0])
            fprintf(cli->err, "aegisctl: %s: %s\n", method_name(path), st.message);
        return rv;
    }
    return take_reply(cli, path, &st, resp, resplen, resp_desc, presp);
}

int ctl_target_from_args(struct ctl_cli *cli, const struct ctl_family *fam,
                         const struct ctl_subcmd *sub, const struct ctl_args *a, int agent_id,
                         int selector_id, int require, struct ctl_target *t)
{
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < a->nopt; i++) {
        if (a->opt[i].id != agent_id)
            continue;
        const char *v = a->opt[i].val;
        if (!*v || strlen(v) > 64)
            return ctl_usage(cli, fam, sub, "bad agent id \"%s\"", v);
        t->ids[t->nids++] = v;
    }
    if (selector_id >= 0) {
        const char *sel = ctl_args_get(a, selector_id);
        if (sel) {
            struct ctl_kvlist l = {0};
            char err[256];
            int rv = ctl_parse_kvlist(sel, &l, err, sizeof(err));
            ctl_kvlist_free(&l);
            if (rv != 0)
                return ctl_usage(cli, fam, sub, "bad --selector \"%s\": %s", sel, err);
            t->selector = sel;
        }
    }
    if (require && t->nids == 0 && !t->selector)
        return ctl_usage(cli, fam, sub,
                         "say which agents: --agent ID (repeatable) or "
                         "--selector k=v,...");
    return 0;
}

static const ProtobufCFieldDescriptor *field_named(const ProtobufCMessageDescriptor *d,
                                                   const char *name)
{
    return protobuf_c_message_descriptor_get_field_by_name(d, name);
}

int ctl_list(struct ctl_cli *cli, const char *path, const ProtobufCMessage *req,
             Aegis__V1__PageRequest *page, const ProtobufCMessageDescriptor *resp_desc,
             const char *items, uint32_t limit, struct ctl_table *t, ctl_row_fn row, void *arg)
{
    return ctl_list_head(cli, path, req, page, resp_desc, NULL, NULL, items, limit, t, row, arg);
}

int ctl_list_head(struct ctl_cli *cli, const char *path, const ProtobufCMessage *req,
                  Aegis__V1__PageRequest *page, const ProtobufCMessageDescriptor *resp_desc,
                  const char *head, ctl_head_fn head_fn, const char *items, uint32_t limit,
                  struct ctl_table *t, ctl_row_fn row, void *arg)
{
    const ProtobufCFieldDescriptor *fi = field_named(resp_desc, items);
    const ProtobufCFieldDescriptor *fp = field_named(resp_desc, "page");
    const ProtobufCFieldDescriptor *fh = head ? field_named(resp_desc, head) : NULL;
    if (!fi || fi->label != PROTOBUF_C_LABEL_REPEATED || fi->type != PROTOBUF_C_TYPE_MESSAGE ||
        !fp || (head && (!fh || fh->type != PROTOBUF_C_TYPE_MESSAGE)))
        return CTL_EXIT_INPUT; /* programming error: wrong field name */
    struct json_object *headj = NULL;
    struct json_object *arr = cli->json ? json_object_new_array() : NULL;
    if (cli->json && !arr)
        return CTL_EXIT_INPUT;
    int rv = CTL_EXIT_OK;
    size_t rows = 0;
    char *token = NULL;
    /* Follow pages until the server says it was the last one, or `limit`;
     * a server that keeps returning empty pages with a token is cut off. */
    for (unsigned pages = 0; pages < CTL_MAX_ROWS; pages++) {
        page->limit = limit - rows < CTL_PAGE_SIZE ? (uint32_t)(limit - rows) : CTL_PAGE_SIZE;
        page->page_token = token ? token : (char *)"";
        ProtobufCMessage *resp = NULL;
        rv = ctl_call(cli, path, req, resp_desc, &resp);
        if (rv != 0)
            break;
        const char *base = (const char *)resp;
        if (fh && pages == 0) { /* the head (e.g. the artifact) comes with the first page */
            const ProtobufCMessage *h = *(ProtobufCMessage *const *)(base + fh->offset);
            if (cli->json)
                headj = h ? ctl_pb_to_json(h) : NULL;
            else if (head_fn)
                head_fn(cli, h, arg);
        }
        size_t n = *(const size_t *)(base + fi->quantifier_offset);
        ProtobufCMessage *const *it = *(ProtobufCMessage *const *const *)(base + fi->offset);
        for (size_t i = 0; i < n && rows < limit; i++, rows++) {
            if (arr)
                json_object_array_add(arr, ctl_pb_to_json(it[i]));
            else if (row)
                row(t, it[i], arg);
        }
        const Aegis__V1__PageResponse *pr = *(Aegis__V1__PageResponse *const *)(base + fp->offset);
        free(token);
        token = NULL;
        if (pr && pr->next_page_token[0] && rows < limit && n > 0)
            token = strdup(pr->next_page_token);
        ctl_pb_free(resp);
        if (!token)
            break;
    }
    free(token);
    if (rv == 0) {
        if (arr) {
            struct json_object *o = json_object_new_object();
            if (fh)
                json_object_object_add(o, head, headj);
            json_object_object_add(o, items, arr);
            arr = headj = NULL;
            ctl_json_print(cli->out, o, 0);
        } else if (t) {
            ctl_table_print(t, cli->out);
        }
    }
    json_object_put(arr);
    json_object_put(headj);
    return rv;
}
