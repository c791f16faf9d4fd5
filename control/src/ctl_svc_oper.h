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
/* ctl_page_next_offset: offset paging. When the query returned more rows
 * (nrows) than the page shows, the next token is the offset of the next page,
 * written to next and linked from page. */
void ctl_page_next_offset(const Aegis__V1__PageRequest *p, int nrows, int shown, char next[32],
                          Aegis__V1__PageResponse *page);

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
/* ctl_cmd_spec_fail answers a ctl_cmd_create refusal (unless already answered). */
int ctl_cmd_spec_fail(struct ctl_rpc *r, int rv);

/* NOTIFY fan-out to WatchCommand / TailTelemetry streams (ctl_svc_oper.c). */
void ctl_oper_listen(struct ctl_server *srv);

#endif
