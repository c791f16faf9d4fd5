/* Host facts parsing (inventory, HostFacts, telemetry) and the state-dir
 * key formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include "agent_facts.h"
#include "agent_ident.h"
#include "agent_test_util.h"
#include "agentd_test_keys.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

static void test_meminfo(void **state)
{
    (void)state;
    uint64_t t = 0, a = 0;
    assert_int_equal(agent_facts_parse_meminfo("MemTotal:       16318480 kB\nMemFree:  1000 kB\n"
                                               "MemAvailable:   12000000 kB\n",
                                               &t, &a),
                     0);
    assert_int_equal(t, UINT64_C(16318480) * 1024);
    assert_int_equal(a, UINT64_C(12000000) * 1024);
    /* old kernels: no MemAvailable, fall back to MemFree */
    assert_int_equal(agent_facts_parse_meminfo("MemTotal: 2048 kB\nMemFree: 1024 kB\n", &t, &a), 0);
    assert_int_equal(a, 1024 * 1024);
    assert_int_equal(agent_facts_parse_meminfo("MemFree: 1024 kB\n", &t, &a), AEGIS_ERR_MALFORMED);
    assert_int_equal(agent_facts_parse_meminfo("MemTotal: x kB\n", &t, &a), AEGIS_ERR_MALFORMED);
}

static void test_os_release(void **state)
{
    (void)state;
    char out[128];
    agent_facts_parse_os_release("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian\"\n"
                                 "VERSION_ID=\"12\"\nID=debian\n",
                                 out, sizeof(out));
    assert_string_equal(out, "debian 12");
    agent_facts_parse_os_release("ID=arch\n", out, sizeof(out));
    assert_string_equal(out, "arch");
    agent_facts_parse_os_release("PRETTY_NAME='Some OS'\n", out, sizeof(out));
    assert_string_equal(out, "Some OS");
    agent_facts_parse_os_release("", out, sizeof(out));
    assert_string_equal(out, "linux");
    /* a key that merely starts with ID is not ID */
    agent_facts_parse_os_release("IDLE=1\nID_LIKE=debian\n", out, sizeof(out));
    assert_string_equal(out, "linux");
}

static void test_load_uptime(void **state)
{
    (void)state;
    double l[3], up;
    assert_int_equal(agent_facts_parse_loadavg("0.52 0.58 0.59 2/1234 5678\n", l), 0);
    assert_true(l[0] > 0.51 && l[0] < 0.53 && l[2] > 0.58);
    assert_int_equal(agent_facts_parse_loadavg("garbage", l), AEGIS_ERR_MALFORMED);
    assert_int_equal(agent_facts_parse_uptime("350735.47 234388.90\n", &up), 0);
    assert_true(up > 350735 && up < 350736);
    assert_int_equal(agent_facts_parse_uptime("-1 0", &up), AEGIS_ERR_MALFORMED);
}

static void test_collect_root(void **state)
{
    (void)state;
    char dir[256], p[400];
    agent_test_mkdtemp(dir, sizeof(dir));
    snprintf(p, sizeof(p), "%s/proc", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/etc", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/proc/meminfo", dir);
    agent_test_write(p, "MemTotal: 1000 kB\nMemAvailable: 500 kB\n", 39);
    snprintf(p, sizeof(p), "%s/proc/uptime", dir);
    agent_test_write(p, "100.00 50.00\n", 13);
    snprintf(p, sizeof(p), "%s/etc/os-release", dir);
    agent_test_write(p, "ID=debian\nVERSION_ID=12\n", 24);
    struct agent_facts f;
    agent_facts_collect(&f, dir, (int64_t)1000 * 1000000000);
    assert_int_equal(f.mem_total, 1000 * 1024);
    assert_int_equal(f.mem_available, 500 * 1024);
    assert_string_equal(f.os_version, "debian 12");
    assert_int_equal(f.boot_time_unix_ns, (int64_t)900 * 1000000000);
    assert_true(f.cpu_count >= 1);
    assert_true(f.hostname[0] != '\0');
    char *addrs[AGENT_FACTS_MAX_ADDRS];
    Aegis__V1__HostFacts hf;
    agent_facts_to_pb(&f, "host-1", addrs, &hf);
    assert_string_equal(hf.host_id, "host-1");
    assert_int_equal(hf.memory_bytes, 1000 * 1024);
    agent_test_rmtree(dir);
}

static void test_json(void **state)
{
    (void)state;
    char buf[64];
    size_t pos = 0;
    agent_json_str(buf, sizeof(buf), &pos, "a\"b\\c\n\x01");
    assert_string_equal(buf, "\"a\\\"b\\\\c\\u000a\\u0001\"");
    /* output is cut at the capacity, never overrun */
    char small[8];
    pos = 0;
    agent_json_str(small, sizeof(small), &pos, "0123456789");
    assert_true(pos < sizeof(small));
    assert_int_equal(strlen(small), pos);
}

static void test_keys(void **state)
{
    (void)state;
    struct tkey k;
    tkey_make(&k);
    char pem[128];
    agent_pubkey_pem(k.pub, pem);
    assert_non_null(strstr(pem, "BEGIN PUBLIC KEY"));
    /* our PEM is the same SPKI aegis_pki pins */
    char pin1[AEGIS_PIN_STRLEN], pin2[AEGIS_PIN_STRLEN];
    uint8_t spki[44];
    agent_ed25519_spki(k.pub, spki);
    assert_int_equal(aegis_pin_from_spki(spki, sizeof(spki), pin1), 0);
    assert_int_equal(aegis_pin_from_pem(pem, strlen(pem), pin2), 0);
    assert_string_equal(pin1, pin2);
    uint8_t back[32];
    assert_int_equal(agent_pubkey_from_pem(pem, strlen(pem), back), 0);
    assert_memory_equal(back, k.pub, 32);
    assert_int_equal(agent_pubkey_from_pem("nothing", 7, back), AEGIS_ERR_MALFORMED);
    assert_int_equal(strlen(k.id), 16);
    tkey_free(&k);
}

static void test_machine_hash(void **state)
{
    (void)state;
    char dir[256], p[400], err[256];
    agent_test_mkdtemp(dir, sizeof(dir));
    snprintf(p, sizeof(p), "%s/mid", dir);
    uint8_t h1[32], h2[32];
    agent_test_write(p, "0123456789abcdef\n", 17);
    assert_int_equal(agent_machine_hash(p, h1, err, sizeof(err)), 0);
    agent_test_write(p, "0123456789abcdef", 16); /* trailing newline ignored */
    assert_int_equal(agent_machine_hash(p, h2, err, sizeof(err)), 0);
    assert_memory_equal(h1, h2, 32);
    agent_test_write(p, "0123456789abcdee", 16);
    assert_int_equal(agent_machine_hash(p, h2, err, sizeof(err)), 0);
    assert_memory_not_equal(h1, h2, 32);
    agent_test_write(p, "\n", 1);
    assert_int_equal(agent_machine_hash(p, h2, err, sizeof(err)), AEGIS_ERR_MALFORMED);
    snprintf(p, sizeof(p), "%s/missing", dir);
    assert_int_equal(agent_machine_hash(p, h2, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "--machine-id-file"));
    agent_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_meminfo),      cmocka_unit_test(test_os_release),
        cmocka_unit_test(test_load_uptime),  cmocka_unit_test(test_collect_root),
        cmocka_unit_test(test_json),         cmocka_unit_test(test_keys),
        cmocka_unit_test(test_machine_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
