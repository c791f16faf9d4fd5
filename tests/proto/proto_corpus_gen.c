/*
 * Writes the seed corpus of fuzz_proto_unpack (tests/fuzz/corpus/proto_unpack)
 * into the directory given as argv[1]: for every message type a fully filled
 * message, and a few malformed inputs. Each file is one selector byte (index
 * into aegis_proto_all_messages) followed by the bytes to unpack. Run by hand
 * when the schema changes; the files are committed, this program's output is
 * not generated at build time.
 */
#include <aegis/mem.h>
#include <aegis/proto.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto_fill.h"

static int write_seed(const char *dir, const char *name, size_t index, const uint8_t *buf,
                      size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return -1;
    }
    uint8_t sel = (uint8_t)index;
    int ok = fwrite(&sel, 1, 1, f) == 1 && (len == 0 || fwrite(buf, 1, len, f) == len);
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "cannot write %s\n", path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
        return 2;
    }
    size_t n;
    const ProtobufCMessageDescriptor *const *all = aegis_proto_all_messages(&n);
    if (n > 256) {
        fprintf(stderr, "more than 256 message types: widen the selector\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        struct fill_arena a = {0};
        ProtobufCMessage *m = fill_message(&a, all[i], (unsigned)i);
        uint8_t *buf;
        size_t len;
        if (!m || aegis_proto_pack(m, NULL, &buf, &len) != 0) {
            fprintf(stderr, "cannot build %s\n", all[i]->name);
            return 1;
        }
        char name[256];
        snprintf(name, sizeof(name), "valid-%s", all[i]->name);
        if (write_seed(argv[1], name, i, buf, len) != 0)
            return 1;
        /* A truncated copy of every fifth type. */
        if (i % 5 == 0 && len > 2) {
            snprintf(name, sizeof(name), "truncated-%s", all[i]->name);
            if (write_seed(argv[1], name, i, buf, len / 2 + 1) != 0)
                return 1;
        }
        aegis_free(NULL, buf);
        fill_arena_free(&a);
    }
    static const struct {
        const char *name;
        uint8_t bytes[12];
        size_t len;
    } bad[] = {
        {"bad-wiretype-7", {0x0f, 0x01}, 2},
        {"bad-unterminated-varint", {0x08, 0xff, 0xff, 0xff}, 4},
        {"bad-length-past-end", {0x12, 0x7f, 'a', 'b'}, 4},
        {"bad-huge-length", {0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'}, 7},
        {"bad-tag-zero", {0x00, 0x01}, 2},
        {"bad-10byte-varint-overflow",
         {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         12},
        {"bad-fixed64-short", {0x19, 0x01, 0x02}, 3},
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
        if (write_seed(argv[1], bad[k].name, k * 13, bad[k].bytes, bad[k].len) != 0)
            return 1;
    printf("wrote %zu seeds to %s\n", n + n / 5 + sizeof(bad) / sizeof(bad[0]), argv[1]);
    return 0;
}
