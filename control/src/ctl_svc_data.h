/*
 * Bulk data RPCs: FetchArtifact and ReportTelemetry (AgentService), UploadArtifact
 * (OperatorService).
 */
#ifndef CTL_SVC_DATA_H
#define CTL_SVC_DATA_H

#include "ctl_server.h"

void ctl_fetch_start(struct ctl_rpc *r);
void ctl_fetch_writable(struct ctl_rpc *r);
void ctl_fetch_free(struct ctl_rpc *r);

int ctl_telemetry_msg(struct ctl_rpc *r, const uint8_t *msg, size_t len);
void ctl_telemetry_half_close(struct ctl_rpc *r);
void ctl_telemetry_free(struct ctl_rpc *r);

int ctl_upload_msg(struct ctl_rpc *r, const uint8_t *msg, size_t len);
void ctl_upload_half_close(struct ctl_rpc *r);
void ctl_upload_free(struct ctl_rpc *r);

#endif
