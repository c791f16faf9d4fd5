/*
 * OperatorService handlers shared between ctl_svc_oper.c (agents, tokens, commands,
 * telemetry, audit) and ctl_svc_oper_art.c (artifacts, policies).
 */
#ifndef CTL_SVC_OPER_H
#define CTL_SVC_OPER_H

#include "ctl_server.h"

#include <aegis/v1/operator.pb-c.h>

/* ctl_page_limit returns the page size to use (default 100, cap 1000). */
unsigned ctl_page_limit(const Aegis__V1__PageRequest *p);
/* ctl_page_token returns the request's page token or "". */
const char *ctl_page_token(const Aegis__V1__PageRequest *p);
/* ctl_page_params writes a list query's parameters as text: lim, the LIMIT (one row more than
 * the page shows, which tells whether another page follows), and off (may be NULL), the page
 * token as a number (the OFFSET of offset paging, or a numeric key). */
void ctl_page_params(const Aegis__V1__PageRequest *p, char lim[16], char off[24]);

/* How the next page token of a list is made. */
enum ctl_paging {
    CTL_PAGE_BY_OFFSET = 0, /* the offset of the next page */
    CTL_PAGE_BY_KEY = 1,    /* key_col of the last row shown (the query continues after it) */
};

/* One kind of paged list reply: how to turn result rows into the response's items. */
struct ctl_page_spec {
    const char *items; /* the response's repeated message field, e.g. "agents" */
    size_t row_size;   /* what fill builds one item in */
    /* fill builds item i of res in row (zeroed, row_size bytes) and returns it, or NULL when
     * the row cannot be read. Whatever it points to must live until free_row. */
    ProtobufCMessage *(*fill)(struct ctl_server *srv, const struct ctl_db_result *res, int i,
                              void *row);
    /* free_row (may be NULL) frees what fill allocated; it must accept a zeroed row. */
    void (*free_row)(struct ctl_server *srv, void *row);
    enum ctl_paging paging;
    int key_col;            /* CTL_PAGE_BY_KEY: the key column */
    const char *fill_error; /* the INTERNAL status message when fill fails */
};

/*
 * ctl_page_reply answers a list call with the first nrows rows of res (the query asked for
 * ctl_page_params' lim): it shows at most the page's limit, sets resp's `items` field and its
 * "page" field (with the next page token when more rows came back), replies OK and frees the
 * rows; resp's other fields (set by the caller) go out as they are. On ENOMEM the call fails
 * RESOURCE_EXHAUSTED, on a row fill cannot read INTERNAL. The items are gone when it
 * returns: resp's items and page fields are reset.
 */
void ctl_page_reply(struct ctl_rpc *r, const struct ctl_db_result *res, int nrows,
                    const Aegis__V1__PageRequest *page, const struct ctl_page_spec *spec,
                    ProtobufCMessage *resp);
/* ctl_page_rows is the database callback body of a plain list: a failed query fails the call,
 * else every row goes to ctl_page_reply. */
void ctl_page_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res,
                   const Aegis__V1__PageRequest *page, const struct ctl_page_spec *spec,
                   ProtobufCMessage *resp);

/* ctl_rpc_rows checks a finished query: a database error fails the call (ctl_rpc_fail_db), and
 * so does a result without rows when `none` is given (NOT_FOUND with that message). Returns
 * the number of rows, or -1 when the call has been failed. */
int ctl_rpc_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res, const char *none);

/* ctl_rpc_state_new allocates r->state (zeroed); on ENOMEM it fails the call
 * RESOURCE_EXHAUSTED and returns NULL. The handler's free_state frees it. */
void *ctl_rpc_state_new(struct ctl_rpc *r, size_t size);

void ctl_list_artifacts(struct ctl_rpc *r);
void ctl_assign_artifact(struct ctl_rpc *r);
void ctl_unassign_artifact(struct ctl_rpc *r);
void ctl_artifact_status(struct ctl_rpc *r);
void ctl_push_policy(struct ctl_rpc *r);
void ctl_list_policies(struct ctl_rpc *r);
void ctl_promote_policy(struct ctl_rpc *r);
void ctl_rollback_policy(struct ctl_rpc *r);
void ctl_policy_free(struct ctl_rpc *r);
void ctl_assign_free(struct ctl_rpc *r);
/* ctl_cmd_kind is what commands.kind records for c: the payload's name (aegis_command_kind),
 * except that a download without loading is "fetch_artifact"; NULL without a payload. */
const char *ctl_cmd_kind(const Aegis__V1__Command *c);
/* ctl_cmd_spec_fail answers a ctl_cmd_create refusal (unless already answered). */
int ctl_cmd_spec_fail(struct ctl_rpc *r, int rv);

/* NOTIFY fan-out to WatchCommand / TailTelemetry streams (ctl_svc_oper.c). */
void ctl_oper_listen(struct ctl_server *srv);

#endif
