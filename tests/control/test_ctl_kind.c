/*
 * The kind names (control/src/ctl_kind.c): artifact kinds against
 * artifact.proto's ArtifactKind enum, so a kind added to the proto without a
 * name here fails; command kinds against the names the database and aegisctl
 * have always used.
 */
#include "ctl_kind.h"

#include <aegis/v1/artifact.pb-c.h>

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void names_match_the_proto_enum(void **state)
{
    (void)state;
    const ProtobufCEnumDescriptor *d = &aegis__v1__artifact_kind__descriptor;
    int max = 0;
    for (unsigned i = 0; i < d->n_values; i++) {
        int v = d->values[i].value;
        const char *full = d->values[i].name; /* "ARTIFACT_KIND_POLICY_BUNDLE" */
        assert_int_equal(strncmp(full, "ARTIFACT_KIND_", 14), 0);
        char want[64];
        size_t n = 0;
        for (const char *p = full + 14; *p && n + 1 < sizeof(want); p++)
            want[n++] = (char)tolower((unsigned char)*p);
        want[n] = '\0';
        if (v == 0) {
            assert_string_equal(ctl_kind_name(0), ""); /* unspecified has no name */
            assert_int_equal(ctl_kind_from_name(want), 0);
            continue;
        }
        assert_string_equal(ctl_kind_name(v), want);
        assert_int_equal(ctl_kind_from_name(want), v);
        if (v > max)
            max = v;
    }
    assert_int_equal(max, CTL_KIND_MAX);
}

static void list_names_every_kind_in_order(void **state)
{
    (void)state;
    const char *p = CTL_KIND_LIST;
    for (int k = 1; k <= CTL_KIND_MAX; k++) {
        const char *at = strstr(p, ctl_kind_name(k));
        assert_non_null(at);
        p = at + strlen(ctl_kind_name(k));
    }
}

static void unknown_names_and_values(void **state)
{
    (void)state;
    assert_int_equal(ctl_kind_from_name("FILE"), 5); /* case-insensitive */
    assert_int_equal(ctl_kind_from_name("Bpf_Object"), 3);
    assert_int_equal(ctl_kind_from_name(""), 0);
    assert_int_equal(ctl_kind_from_name("unspecified"), 0);
    assert_int_equal(ctl_kind_from_name("files"), 0);
    assert_int_equal(ctl_kind_from_name("fil"), 0);
    assert_int_equal(ctl_kind_from_name(NULL), 0);
    assert_string_equal(ctl_kind_name(-1), "");
    assert_string_equal(ctl_kind_name(CTL_KIND_MAX + 1), "");
}

static void command_kinds(void **state)
{
    (void)state;
    static const struct {
        Aegis__V1__Command__PayloadCase c;
        const char *name;
    } want[] = {
        {AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY, "apply_policy"},
        {AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT, "load_artifact"},
        {AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION, "run_action"},
        {AEGIS__V1__COMMAND__PAYLOAD_RESTART_AGENT, "restart_agent"},
        {AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT, "update_agent"},
        {AEGIS__V1__COMMAND__PAYLOAD_COLLECT_INVENTORY, "collect_inventory"},
        {AEGIS__V1__COMMAND__PAYLOAD_UNLOAD_ARTIFACT, "unload_artifact"},
    };
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        c.payload_case = want[i].c;
        assert_non_null(ctl_command_kind(&c));
        assert_string_equal(ctl_command_kind(&c), want[i].name);
    }
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD__NOT_SET;
    assert_null(ctl_command_kind(&c));
    c.payload_case = (Aegis__V1__Command__PayloadCase)9999; /* no such field */
    assert_null(ctl_command_kind(&c));
    c.payload_case = (Aegis__V1__Command__PayloadCase)1; /* a field outside the oneof */
    assert_null(ctl_command_kind(&c));
    assert_null(ctl_command_kind(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_match_the_proto_enum),
        cmocka_unit_test(list_names_every_kind_in_order),
        cmocka_unit_test(unknown_names_and_values),
        cmocka_unit_test(command_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
