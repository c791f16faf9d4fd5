#include "agent_crc32c.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void check_values(void **state)
{
    (void)state;
    /* The CRC-32C check value and two vectors from RFC 3720 appendix B.4. */
    assert_int_equal(agent_crc32c_update(0, "123456789", 9), 0xE3069283u);
    uint8_t zeros[32], ones[32];
    memset(zeros, 0, sizeof(zeros));
    memset(ones, 0xff, sizeof(ones));
    assert_int_equal(agent_crc32c_update(0, zeros, sizeof(zeros)), 0x8A9136AAu);
    assert_int_equal(agent_crc32c_update(0, ones, sizeof(ones)), 0x62A8AB43u);
    assert_int_equal(agent_crc32c_update(0, NULL, 0), 0);
}

static void incremental_equals_one_shot(void **state)
{
    (void)state;
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    uint32_t whole = agent_crc32c_update(0, buf, sizeof(buf));
    for (size_t cut = 0; cut <= sizeof(buf); cut += 37) {
        uint32_t c = agent_crc32c_update(0, buf, cut);
        assert_int_equal(agent_crc32c_update(c, buf + cut, sizeof(buf) - cut), whole);
    }
    /* Every single-bit flip changes it. */
    for (size_t bit = 0; bit < 64 * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_not_equal(agent_crc32c_update(0, buf, sizeof(buf)), whole);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(check_values),
        cmocka_unit_test(incremental_equals_one_shot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
