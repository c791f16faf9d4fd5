#include <aegis/base64.h>
#include <aegis/err.h>

#include <limits.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int value_of(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

size_t aegis_base64_encoded_len(size_t len, unsigned flags)
{
    if (flags & AEGIS_BASE64_PAD)
        return (len + 2) / 3 * 4;
    return len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
}

size_t aegis_base64_encode(const uint8_t *in, size_t len, unsigned flags, char *out, size_t outcap)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t chars = 2;
        if (i + 1 < len) {
            v |= (uint32_t)in[i + 1] << 8;
            chars = 3;
        }
        if (i + 2 < len) {
            v |= in[i + 2];
            chars = 4;
        }
        for (size_t j = 0; j < 4; j++) {
            char ch;
            if (j < chars)
                ch = alphabet[(v >> (18 - 6 * j)) & 63];
            else if (flags & AEGIS_BASE64_PAD)
                ch = '=';
            else
                break;
            if (n < outcap)
                out[n] = ch;
            n++;
        }
    }
    if (n < outcap)
        out[n] = '\0';
    return n;
}

long aegis_base64_decode(const char *in, size_t len, unsigned flags, uint8_t *out, size_t outcap)
{
    uint32_t acc = 0;
    size_t n = 0;
    int bits = 0, pad = 0;

    if (!in && len)
        return AEGIS_ERR_MALFORMED;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if ((flags & AEGIS_BASE64_SKIP_SPACE) &&
            (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'))
            continue;
        if (ch == '=') {
            pad++;
            continue;
        }
        /* Only padding (and skipped space) may follow padding. */
        if (pad)
            return AEGIS_ERR_MALFORMED;
        int v = value_of(ch);
        if (v < 0)
            return AEGIS_ERR_MALFORMED;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= outcap)
                return AEGIS_ERR_TOO_LARGE;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    /* 6 leftover bits: a lone character in the last quantum. Padding, when
     * present, must be exactly what completes the quantum (2 for 4 leftover
     * bits, 1 for 2). */
    if (bits == 6 || pad > 2 || (pad && bits / 2 != pad))
        return AEGIS_ERR_MALFORMED;
    if ((flags & AEGIS_BASE64_STRICT) && (acc & ((1u << bits) - 1)) != 0)
        return AEGIS_ERR_MALFORMED;
    if (n > LONG_MAX)
        return AEGIS_ERR_TOO_LARGE;
    return (long)n;
}
