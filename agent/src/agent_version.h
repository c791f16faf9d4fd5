/*
 * agent_version: the running agent's version and the comparison rule of
 * seed 002 / FLEET_CONTRACT ("versions compare as dotted numbers").
 */
#ifndef AGENT_VERSION_H
#define AGENT_VERSION_H

/* Longest version string accepted anywhere ("65535.65535.65535" is 17). */
#define AGENT_VERSION_MAX 64u
/* Components compared ("1.2.3.4"); more is refused as malformed. */
#define AGENT_VERSION_MAX_PARTS 8

/* agent_version_string returns the version this binary was built as (set
 * per executable at build time, see agent_build_version.c). */
const char *agent_version_string(void);

/*
 * agent_version_cmp compares two dotted-number versions ("0.1.0", "1.10");
 * missing trailing components count as 0 ("1.2" == "1.2.0"). *pcmp gets <0,
 * 0 or >0. Errors: -EINVAL if either is not 1..8 dot-separated decimal
 * numbers of at most 9 digits each (no signs, no suffixes, no empty parts).
 */
int agent_version_cmp(const char *a, const char *b, int *pcmp);

#endif
