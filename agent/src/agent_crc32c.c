#include "agent_crc32c.h"

/*
 * Four bits at a time with a 16-entry table: small enough to check by eye,
 * and fast enough for journals of a few MiB and telemetry batches (the spool
 * checksums at most a few MB/s). The entries are crc(i) for i = 0..15 under
 * the reflected Castagnoli polynomial.
 */
static const uint32_t nibble[16] = {
    0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3, 0x61c69362, 0x7198540d,
    0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9, 0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

uint32_t agent_crc32c_update(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ nibble[crc & 0x0f];
        crc = (crc >> 4) ^ nibble[crc & 0x0f];
    }
    return ~crc;
}
