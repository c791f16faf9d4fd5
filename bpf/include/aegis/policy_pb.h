/*
 * MapSnapshot protobuf <-> struct aegis_policy (library aegis_policy_pb,
 * built when proto/ provides aegis_proto).
 */
#ifndef AEGIS_POLICY_PB_H
#define AEGIS_POLICY_PB_H

#include <stddef.h>

#include <aegis/policy.h>
#include <aegis/v1/policy.pb-c.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * aegis_policy_from_pb converts and validates a decoded MapSnapshot (borrowed).
 * CIDR text is parsed here: errors name the entry ("edges[3]: bad CIDR
 * \"10.0.0.300/24\": not an IPv4 address"). *ppolicy is set only on success.
 * Errors: AEGIS_ERR_CONFIG, AEGIS_ERR_LIMIT (see aegis_policy_validate), -ENOMEM.
 */
int aegis_policy_from_pb(const Aegis__V1__MapSnapshot *snap,
                         const struct aegis_policy_limits *limits, const struct aegis_mem *mem,
                         struct aegis_policy **ppolicy, char *err, size_t errlen);

/*
 * aegis_policy_to_pb builds a MapSnapshot from policy. The result and
 * everything it points to are allocated with the policy's allocator; free it
 * with aegis_policy_pb_free (not protobuf-c's free_unpacked). Errors: -ENOMEM.
 */
int aegis_policy_to_pb(const struct aegis_policy *policy, Aegis__V1__MapSnapshot **psnap);
void aegis_policy_pb_free(const struct aegis_policy *policy, Aegis__V1__MapSnapshot *snap);

#ifdef __cplusplus
}
#endif
#endif
