/*
 * The generated method table (from the .proto text) against protoc-c's own
 * service descriptors, and aegis_method_find.
 */
#include <aegis/bench/v1/bench.pb-c.h>
#include <aegis/proto.h>
#include <aegis/v1/agent.pb-c.h>
#include <aegis/v1/operator.pb-c.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const ProtobufCServiceDescriptor *const services[] = {
    &aegis__v1__agent_service__descriptor,
    &aegis__v1__operator_service__descriptor,
    &aegis__bench__v1__bench__descriptor,
};
#define NSERVICES (sizeof(services) / sizeof(services[0]))

/* Every method of every protoc-c service descriptor is in the table with the
 * same request and response types, and the table has nothing else. */
static void test_table_matches_protoc_c(void **state)
{
    (void)state;
    size_t count;
    const struct aegis_method *t = aegis_method_table(&count);
    size_t total = 0;
    for (size_t s = 0; s < NSERVICES; s++) {
        const ProtobufCServiceDescriptor *sd = services[s];
        for (unsigned k = 0; k < sd->n_methods; k++) {
            char path[256];
            int n = snprintf(path, sizeof(path), "/%s/%s", sd->name, sd->methods[k].name);
            assert_true(n > 0 && (size_t)n < sizeof(path));
            const struct aegis_method *m = aegis_method_find(path, (size_t)n);
            if (!m)
                fail_msg("%s is missing from the method table", path);
            assert_string_equal(m->path, path);
            assert_string_equal(m->service, sd->name);
            assert_string_equal(m->name, sd->methods[k].name);
            assert_ptr_equal(m->input, sd->methods[k].input);
            assert_ptr_equal(m->output, sd->methods[k].output);
            total++;
        }
    }
    assert_int_equal(count, total);
    /* Sorted, unique, and path == "/" service "/" name. */
    for (size_t i = 0; i < count; i++) {
        char path[256];
        snprintf(path, sizeof(path), "/%s/%s", t[i].service, t[i].name);
        assert_string_equal(t[i].path, path);
        if (i > 0)
            assert_true(strcmp(t[i - 1].path, t[i].path) < 0);
    }
}

static enum aegis_rpc_shape shape_of(const char *path)
{
    const struct aegis_method *m = aegis_method_find(path, strlen(path));
    assert_non_null(m);
    return m->shape;
}

/* Shapes as declared in the .proto files (protoc-c does not record them). */
static void test_shapes(void **state)
{
    (void)state;
    assert_int_equal(shape_of("/aegis.v1.AgentService/Enroll"), AEGIS_RPC_UNARY);
    assert_int_equal(shape_of("/aegis.v1.AgentService/Authenticate"), AEGIS_RPC_BIDI);
    assert_int_equal(shape_of("/aegis.v1.AgentService/Subscribe"), AEGIS_RPC_SERVER_STREAMING);
    assert_int_equal(shape_of("/aegis.v1.AgentService/Ack"), AEGIS_RPC_UNARY);
    assert_int_equal(shape_of("/aegis.v1.AgentService/FetchArtifact"), AEGIS_RPC_SERVER_STREAMING);
    assert_int_equal(shape_of("/aegis.v1.AgentService/ReportTelemetry"),
                     AEGIS_RPC_CLIENT_STREAMING);
    assert_int_equal(shape_of("/aegis.v1.OperatorService/WatchCommand"),
                     AEGIS_RPC_SERVER_STREAMING);
    assert_int_equal(shape_of("/aegis.v1.OperatorService/UploadArtifact"),
                     AEGIS_RPC_CLIENT_STREAMING);
    assert_int_equal(shape_of("/aegis.v1.OperatorService/TailTelemetry"),
                     AEGIS_RPC_SERVER_STREAMING);
    assert_int_equal(shape_of("/aegis.v1.OperatorService/ListAgents"), AEGIS_RPC_UNARY);
    assert_int_equal(shape_of("/aegis.bench.v1.Bench/Echo"), AEGIS_RPC_UNARY);
    assert_int_equal(shape_of("/aegis.bench.v1.Bench/Download"), AEGIS_RPC_SERVER_STREAMING);
    assert_int_equal(shape_of("/aegis.bench.v1.Bench/Upload"), AEGIS_RPC_CLIENT_STREAMING);
    assert_int_equal(shape_of("/aegis.bench.v1.Bench/Subscribe"), AEGIS_RPC_SERVER_STREAMING);
    assert_int_equal(shape_of("/aegis.bench.v1.Bench/Trigger"), AEGIS_RPC_UNARY);
}

static void test_find_edges(void **state)
{
    (void)state;
    /* :path from an HTTP/3 header is not NUL-terminated. */
    const char buf[] = "/aegis.v1.AgentService/AckXYZ";
    const struct aegis_method *m = aegis_method_find(buf, strlen("/aegis.v1.AgentService/Ack"));
    assert_non_null(m);
    assert_string_equal(m->name, "Ack");
    assert_null(aegis_method_find(buf, strlen(buf)));
    assert_null(aegis_method_find("/aegis.v1.AgentService/Ac", 25));
    assert_null(aegis_method_find("/aegis.v1.AgentService/", 23));
    assert_null(aegis_method_find("", 0));
    assert_null(aegis_method_find(NULL, 5));
    assert_null(aegis_method_find("/aegis.v1.AgentService/enroll", 29)); /* case matters */
    /* every entry finds itself, first and last included */
    size_t count;
    const struct aegis_method *t = aegis_method_table(&count);
    for (size_t i = 0; i < count; i++)
        assert_ptr_equal(aegis_method_find(t[i].path, strlen(t[i].path)), &t[i]);
}

/* Every request/response type is in aegis_proto_all_messages. */
static void test_messages_cover_methods(void **state)
{
    (void)state;
    size_t count, n;
    const struct aegis_method *t = aegis_method_table(&count);
    const ProtobufCMessageDescriptor *const *all = aegis_proto_all_messages(&n);
    for (size_t i = 0; i < count; i++) {
        int in = 0, out = 0;
        for (size_t j = 0; j < n; j++) {
            in |= all[j] == t[i].input;
            out |= all[j] == t[i].output;
        }
        assert_true(in && out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_matches_protoc_c),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_find_edges),
        cmocka_unit_test(test_messages_cover_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
