#!/bin/bash
# The loader, run without privileges, must fail with the explained error.
# usage: unprivileged.sh AEGIS_BPF
# As root the command runs as nobody (setpriv drops every capability); as
# any other user it runs as that user.
set -u
BPF=${1:?aegis-bpf path}
OUT=$(mktemp /tmp/aegis-unpriv.XXXXXX)
trap 'rm -f "$OUT"' EXIT
chmod 0666 "$OUT"
if [ "$(id -u)" = 0 ]; then
    command -v setpriv >/dev/null || { echo "SKIP: setpriv missing (Debian: util-linux)"; exit 77; }
    setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
        "$BPF" --pin-dir /sys/fs/bpf/aegis-unpriv-test load >/dev/null 2>"$OUT"
else
    "$BPF" --pin-dir /sys/fs/bpf/aegis-unpriv-test load >/dev/null 2>"$OUT"
fi
rc=$?
cat "$OUT"
if [ $rc -eq 0 ]; then
    echo "FAIL: load succeeded without privileges"
    exit 1
fi
if ! grep -q "needs root or CAP_BPF+CAP_NET_ADMIN" "$OUT"; then
    echo "FAIL: the error does not explain the missing privileges"
    exit 1
fi
echo "ok: refused with an explanation (exit $rc)"
