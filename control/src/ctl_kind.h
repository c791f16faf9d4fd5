/*
 * Artifact kind names, shared by aegisctl and aegis-control: aegisctl --kind
 * and the artifacts.kind column (0003_artifacts_policies.sql); the ArtifactKind
 * values of artifact.proto, lower case, without the ARTIFACT_KIND_ prefix.
 * Command kinds (commands.kind) are aegis_command_kind's (aegis/proto.h).
 */
#ifndef CTL_KIND_H
#define CTL_KIND_H

/* Highest ArtifactKind value with a name (ARTIFACT_KIND_FILE). */
#define CTL_KIND_MAX 5
/* The names for help texts and error messages, in enum order. */
#define CTL_KIND_LIST "policy_bundle, network_block, bpf_object, agent_binary or file"

/* ctl_kind_name returns the name of ArtifactKind `kind` ("policy_bundle"),
 * or "" for 0 (unspecified) and unknown values. */
const char *ctl_kind_name(int kind);

/* ctl_kind_from_name maps a name back (case-insensitive); 0 if it names no
 * kind. */
int ctl_kind_from_name(const char *name);

#endif
