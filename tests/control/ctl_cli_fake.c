/* A scripted fake of aegisctl's RPC layer; see ctl_cli_fake.h. */
#include "ctl_cli_fake.h"

#include <aegis/grpc_status.h>
#include <aegis/mem.h>

#include <json-c/json.h>

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct fake *current;

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    if (c && n)
        memcpy(c, p, n);
    return c;
}

static int record(struct fake *f, const char *path, const uint8_t *req, size_t len,
                  struct ctl_status *st, struct fake_reply **pr)
{
    if (f->connect_error) {
        snprintf(st->message, sizeof(st->message), "cannot connect to fake:4433: test");
        return f->connect_error;
    }
    if (f->ncalls == FAKE_MAX_CALLS)
        return CTL_EXIT_CONNECT;
    size_t i = f->ncalls++;
    snprintf(f->path[i], sizeof(f->path[i]), "%s", path);
    f->req[i] = req ? dup_bytes(req, len) : NULL;
    f->reqlen[i] = len;
    struct fake_reply *r = i < f->nreplies ? &f->replies[i] : NULL;
    st->retry_after_ms = -1;
    if (!r) {
        st->code = AEGIS_GRPC_UNIMPLEMENTED;
        snprintf(st->message, sizeof(st->message), "no reply scripted for call %zu", i);
    } else {
        st->code = r->code;
        snprintf(st->message, sizeof(st->message), "%s", r->message);
    }
    *pr = r;
    return 0;
}

static int f_unary(void *ud, const char *path, const uint8_t *req, size_t reqlen,
                   uint64_t timeout_ns, uint8_t **presp, size_t *presplen, struct ctl_status *st)
{
    (void)timeout_ns;
    struct fake_reply *r = NULL;
    int rv = record(ud, path, req, reqlen, st, &r);
    if (rv == 0 && r && r->code == 0) {
        *presp = dup_bytes(r->resp, r->resplen);
        *presplen = r->resplen;
    }
    return rv;
}

static int f_stream(void *ud, const char *path, const uint8_t *req, size_t reqlen,
                    ctl_msg_fn on_msg, void *arg, struct ctl_status *st)
{
    struct fake_reply *r = NULL;
    int rv = record(ud, path, req, reqlen, st, &r);
    for (size_t i = 0; rv == 0 && r && i < r->nstream; i++) {
        if (on_msg(r->stream[i], r->streamlen[i], arg) != 0) {
            st->code = AEGIS_GRPC_CANCELLED;
            st->local = 1;
            break;
        }
    }
    return rv;
}

static int f_upload(void *ud, const char *path, int compress, ctl_next_fn next, void *arg,
                    uint8_t **presp, size_t *presplen, struct ctl_status *st)
{
    (void)compress;
    struct fake *f = ud;
    for (size_t n = 0; n < 100000; n++) {
        const uint8_t *m;
        size_t len;
        int rc = next(arg, &m, &len);
        if (rc == 0)
            break;
        if (rc != 1)
            return rc;
        if (f->nup < FAKE_MAX_UPLOAD) {
            f->up[f->nup] = dup_bytes(m, len);
            f->uplen[f->nup++] = len;
        }
    }
    struct fake_reply *r = NULL;
    int rv = record(f, path, NULL, 0, st, &r);
    if (rv == 0 && r && r->code == 0) {
        *presp = dup_bytes(r->resp, r->resplen);
        *presplen = r->resplen;
    }
    return rv;
}

static const struct ctl_rpc_ops fake_ops = {f_unary, f_stream, f_upload, NULL};

void fake_init(struct fake *f)
{
    memset(f, 0, sizeof(*f));
}

void fake_free(struct fake *f)
{
    for (size_t i = 0; i < f->ncalls; i++)
        free(f->req[i]);
    for (size_t i = 0; i < f->nup; i++)
        free(f->up[i]);
    for (size_t i = 0; i < f->nreplies; i++) {
        aegis_free(NULL, f->replies[i].resp);
        for (size_t k = 0; k < f->replies[i].nstream; k++)
            aegis_free(NULL, f->replies[i].stream[k]);
    }
    free(f->out);
    free(f->err);
    memset(f, 0, sizeof(*f));
}

struct fake_reply *fake_reply(struct fake *f, int code, const char *message,
                              const ProtobufCMessage *resp)
{
    struct fake_reply *r = &f->replies[f->nreplies++];
    r->code = code;
    snprintf(r->message, sizeof(r->message), "%s", message ? message : "");
    if (resp && ctl_pack(resp, &r->resp, &r->resplen) != 0)
        abort();
    return r;
}

void fake_stream(struct fake_reply *r, const ProtobufCMessage *m)
{
    if (r->nstream == FAKE_MAX_STREAM ||
        ctl_pack(m, &r->stream[r->nstream], &r->streamlen[r->nstream]) != 0)
        abort();
    r->nstream++;
}

static const char *fake_getenv(const char *name)
{
    for (size_t i = 0; current && i < current->nenv; i++) {
        if (strcmp(current->env[i][0], name) == 0)
            return current->env[i][1];
    }
    return NULL;
}

static uint64_t fake_clock(void)
{
    return FAKE_NOW_NS;
}

int fake_run(struct fake *f, ...)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)"aegisctl";
    va_list ap;
    va_start(ap, f);
    for (const char *a; argc < 63 && (a = va_arg(ap, const char *)) != NULL;)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    free(f->out);
    free(f->err);
    f->out = f->err = NULL;
    struct ctl_cli cli;
    ctl_cli_init(&cli);
    cli.out = open_memstream(&f->out, &f->outlen);
    cli.err = open_memstream(&f->err, &f->errlen);
    if (!cli.out || !cli.err)
        abort();
    current = f;
    cli.getenv_fn = fake_getenv;
    cli.wallclock = fake_clock;
    cli.progress_tty = f->tty;
    if (!f->real) {
        cli.ops = &fake_ops;
        cli.ops_ud = f;
    }
    int rv = ctl_cli_run(&cli, argc, argv);
    ctl_cli_free(&cli);
    fclose(cli.out);
    fclose(cli.err);
    current = NULL;
    return rv;
}

ProtobufCMessage *fake_request(const struct fake *f, size_t i,
                               const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = NULL;
    if (i >= f->ncalls || ctl_unpack(desc, f->req[i], f->reqlen[i], &m) != 0)
        return NULL;
    return m;
}

char *fake_expect_table(size_t ncols, const char *const *cells, size_t nrows)
{
    size_t w[16] = {0};
    for (size_t r = 0; r < nrows; r++)
        for (size_t c = 0; c < ncols; c++)
            if (strlen(cells[r * ncols + c]) > w[c])
                w[c] = strlen(cells[r * ncols + c]);
    size_t cap = 64;
    for (size_t c = 0; c < ncols; c++)
        cap += (w[c] + 2) * nrows;
    cap += nrows;
    char *out = malloc(cap);
    size_t off = 0;
    for (size_t r = 0; r < nrows; r++) {
        for (size_t c = 0; c < ncols; c++) {
            const char *s = cells[r * ncols + c];
            if (c + 1 < ncols)
                off += (size_t)sprintf(out + off, "%-*s", (int)(w[c] + 2), s);
            else
                off += (size_t)sprintf(out + off, "%s", s);
        }
        out[off++] = '\n';
    }
    out[off] = '\0';
    return out;
}

struct json_object *fake_json(const struct fake *f)
{
    return json_tokener_parse(f->out ? f->out : "");
}

int fake_tmpdir(char dir[64], const char *tag)
{
    int n = snprintf(dir, 64, "/tmp/ctlcli-%s-XXXXXX", tag);
    return n > 0 && n < 64 && mkdtemp(dir) ? 0 : -1;
}

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int fake_rmtree(const char *dir)
{
    /* Depth first (children before their directory), never following links. */
    return nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}
