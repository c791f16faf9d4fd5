#!/usr/bin/env bash
# Footprint of the shipped aegis-agent (issue 6: <= 4 MB stripped, third-party
# libraries linked statically). Strips a copy, prints one machine-readable line
#   aegis-agent-size stripped_bytes=N budget_bytes=4194304 text=N rodata=N data=N bss=N needed=LIBS
# and fails if the stripped size is over the budget or the binary needs a
# shared library other than the C library. Not a timing test.
# Usage: test_agent_size.sh AGENT STATIC(ON|OFF)
set -euo pipefail

AGENT=$1 STATIC=${2:-ON}
BUDGET=$((4 * 1024 * 1024))
case "$STATIC" in
ON | on | 1 | TRUE | true) ;;
*)
    echo "SKIP: aegis-agent is not linked statically in this build (AEGIS_AGENT_STATIC off, sanitizer or fuzz build)"
    exit 77
    ;;
esac
for tool in strip readelf size; do
    command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool not installed (binutils)"; exit 77; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/aegis-agent-size.XXXXXX")
trap 'rm -rf "$T"' EXIT
strip -o "$T/aegis-agent" "$AGENT"
bytes=$(stat -c %s "$T/aegis-agent")
# section sizes (hex) of the stripped file
sec() { size -A "$T/aegis-agent" | awk -v n="$1" '$1 == n {print $2}' | head -n 1; }
needed=$(readelf -dW "$T/aegis-agent" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ',' | sed 's/,$//')
echo "aegis-agent-size stripped_bytes=$bytes budget_bytes=$BUDGET text=$(sec .text) rodata=$(sec .rodata)" \
    "data=$(sec .data) bss=$(sec .bss) needed=$needed"

rc=0
if [ "$bytes" -gt "$BUDGET" ]; then
    echo "FAIL: the stripped aegis-agent is $bytes bytes, over the $BUDGET-byte budget" \
        "(see nm --size-sort -S on the unstripped binary for what grew)" >&2
    rc=1
fi
for lib in ${needed//,/ }; do
    case "$lib" in
    libc.so.* | ld-linux*.so.* | libm.so.*) ;;
    *)
        echo "FAIL: aegis-agent needs the shared library $lib; third-party libraries must be" \
            "linked statically (agent/daemon.cmake AEGIS_AGENT_STATIC)" >&2
        rc=1
        ;;
    esac
done
[ $rc -ne 0 ] || echo "PASS"
exit $rc
