/*
 * Hexadecimal text (RFC 4648 §8 alphabet), the one implementation shared by
 * key ids, digests in logs and SQL, and the command-line tools. Encoding
 * writes lower case; decoding accepts either case.
 */
#ifndef AEGIS_HEX_H
#define AEGIS_HEX_H

#include <aegis/mem.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * aegis_hex_encode writes the lower-case hex of in[0..len) to out, at most
 * outcap bytes including the NUL, and always NUL-terminates when outcap > 0
 * (like snprintf). Returns 2 * len, the full length without the NUL: a value
 * >= outcap means the text was cut short. Needs no allocation; may be called
 * from anywhere.
 */
size_t aegis_hex_encode(const uint8_t *in, size_t len, char *out, size_t outcap);

/*
 * aegis_hex_decode decodes the hex text in[0..len) (either case, no spaces
 * or prefix) into out. Returns the number of bytes written (len / 2), or
 * AEGIS_ERR_MALFORMED for an odd length or a character that is not a hex
 * digit, or AEGIS_ERR_TOO_LARGE when len / 2 > outcap. To require an exact
 * size n, pass outcap n and compare the result with n. After a bad digit, out
 * may hold the bytes decoded before it.
 */
long aegis_hex_decode(const char *in, size_t len, uint8_t *out, size_t outcap);

/*
 * aegis_hex_decode_alloc decodes in[0..len) into a new buffer from mem
 * (NULL = default allocator) that the caller frees with aegis_free(mem, ...).
 * The buffer is one byte longer than the data, so empty text still gives a
 * buffer. *pout and *poutlen are written only on success. Errors: -EINVAL
 * (NULL argument), -ENOMEM, AEGIS_ERR_MALFORMED (as aegis_hex_decode).
 */
int aegis_hex_decode_alloc(const struct aegis_mem *mem, const char *in, size_t len, uint8_t **pout,
                           size_t *poutlen);

#ifdef __cplusplus
}
#endif
#endif
