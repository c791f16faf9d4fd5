/*
 * Fuzz target: operator-supplied label selectors ("env=prod,role=db") as parsed by
 * aegis-control (ctl_selector_json), and the label text codec next to it. Properties: no
 * crash or overflow for any input and any output size; an accepted selector yields a JSON
 * object text within the output bound.
 */
#include "ctl_server.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *sel = malloc(size + 1);
    if (!sel)
        return 0;
    memcpy(sel, data, size);
    sel[size] = '\0';
    size_t caps[3] = {3, 64, 8192};
    for (int i = 0; i < 3; i++) {
        char *out = malloc(caps[i]);
        if (!out)
            break;
        if (ctl_selector_json(sel, out, caps[i]) == 0) {
            size_t n = strlen(out);
            if (n >= caps[i] || (n && (out[0] != '{' || out[n - 1] != '}')))
                abort();
        }
        free(out);
    }
    struct ctl_labels l;
    if (ctl_labels_from_text(NULL, sel, &l) == 0)
        ctl_labels_free(NULL, &l);
    free(sel);
    return 0;
}
