/*
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum that
 * guards every record the agent keeps on disk (journals, spool batches).
 * It detects torn writes and media bit flips; it is not a MAC.
 */
#ifndef AGENT_CRC32C_H
#define AGENT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * agent_crc32c_update continues a CRC over len bytes. Start with crc = 0;
 * the result of one call can be fed to the next to checksum several pieces.
 * agent_crc32c_update(0, "123456789", 9) == 0xE3069283. Never fails.
 */
uint32_t agent_crc32c_update(uint32_t crc, const void *data, size_t len);

#endif
