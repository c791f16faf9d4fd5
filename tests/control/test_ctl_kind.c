/*
 * The kind names (control/src/ctl_kind.c): artifact kinds against
 * artifact.proto's ArtifactKind enum, so a kind added to the proto without a
 * name here fails. Command kinds are aegis_command_kind's (tests/proto/test_proto.c).
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_match_the_proto_enum),
        cmocka_unit_test(list_names_every_kind_in_order),
        cmocka_unit_test(unknown_names_and_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
