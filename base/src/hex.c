#include <aegis/err.h>
#include <aegis/hex.h>

#include <errno.h>
#include <limits.h>

static const char digits[] = "0123456789abcdef";

static int value_of(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

size_t aegis_hex_encode(const uint8_t *in, size_t len, char *out, size_t outcap)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < outcap; i++) {
        out[n++] = digits[in[i] >> 4];
        if (n + 1 < outcap)
            out[n++] = digits[in[i] & 15];
    }
    if (outcap > 0)
        out[n] = '\0';
    return 2 * len;
}

long aegis_hex_decode(const char *in, size_t len, uint8_t *out, size_t outcap)
{
    if ((!in && len) || len % 2 != 0)
        return AEGIS_ERR_MALFORMED;
    /* The count must fit the return type; no caller comes near. */
    if (len / 2 > outcap || len / 2 > LONG_MAX)
        return AEGIS_ERR_TOO_LARGE;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = value_of(in[2 * i]), lo = value_of(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return AEGIS_ERR_MALFORMED;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return (long)(len / 2);
}

int aegis_hex_decode_alloc(const struct aegis_mem *mem, const char *in, size_t len, uint8_t **pout,
                           size_t *poutlen)
{
    if ((!in && len) || !pout || !poutlen)
        return -EINVAL;
    if (len % 2 != 0)
        return AEGIS_ERR_MALFORMED;
    uint8_t *b = aegis_malloc(mem, len / 2 + 1);
    if (!b)
        return -ENOMEM;
    long n = aegis_hex_decode(in, len, b, len / 2);
    if (n < 0) {
        aegis_free(mem, b);
        return (int)n;
    }
    *pout = b;
    *poutlen = (size_t)n;
    return 0;
}
