/*
 * Base64 (RFC 4648 §4, standard alphabet), the one implementation shared by
 * PEM (certs/), SPKI pins, gRPC -bin metadata (transport/) and the programs.
 */
#ifndef AEGIS_BASE64_H
#define AEGIS_BASE64_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Encoding: append '=' padding to a multiple of 4 (PEM, pins). Without it
 * the output is unpadded, as gRPC emits -bin values. */
#define AEGIS_BASE64_PAD 0x1u
/* Decoding: skip spaces, tabs and line breaks anywhere (PEM bodies). */
#define AEGIS_BASE64_SKIP_SPACE 0x2u
/* Decoding: refuse non-zero bits in the last character (canonical input
 * only; RFC 4648 §3.5). Without it they are ignored, as grpc-go does. */
#define AEGIS_BASE64_STRICT 0x4u

/* aegis_base64_encoded_len is the length aegis_base64_encode produces
 * (without the NUL). */
size_t aegis_base64_encoded_len(size_t len, unsigned flags);

/*
 * aegis_base64_encode writes the encoding of in[0..len) to out, at most
 * outcap bytes, NUL-terminated when there is room. Returns the full length
 * (like snprintf, without the NUL): compare it with outcap to detect
 * truncation.
 */
size_t aegis_base64_encode(const uint8_t *in, size_t len, unsigned flags, char *out, size_t outcap);

/*
 * aegis_base64_decode decodes in[0..len), padded or unpadded (padding, if
 * present, must complete the last quantum and end the input). Returns the
 * number of bytes written to out, AEGIS_ERR_MALFORMED for anything that is
 * not base64, or AEGIS_ERR_TOO_LARGE when the output does not fit in outcap.
 */
long aegis_base64_decode(const char *in, size_t len, unsigned flags, uint8_t *out, size_t outcap);

#ifdef __cplusplus
}
#endif
#endif
