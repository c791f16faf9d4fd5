#!/usr/bin/env bash
# fleet_run.sh: the fleet benchmark end to end on this machine.
#
#   bench/fleet_run.sh [--build DIR] [--n N] [--scenario LIST] [--artifact-mib M] [--out DIR]
#                      [--bench BIN --control BIN --certs BIN --aegisctl BIN --flood BIN]
#                      [-- BENCH ARGS...]
#
# Starts a throwaway PostgreSQL (tests/support/pgtmp.sh start/stop; or uses AEGIS_TEST_PG_DSN
# when run under `pgtmp.sh run`, as ctest does), makes a fleet PKI with aegis-certs (CA,
# server, operator "bench", an artifact-signing key), uploads a random artifact with aegisctl
# when the artifact scenario is asked for (a short-lived aegis-control for the upload), then
# runs aegis-bench-fleet, which starts aegis-control itself (two instances for `scaleout`; it
# also starts and stops aegis-bench-flood for `flood`), runs the scenarios and prints one
# "RESULT mode=fleet scenario=..." line each. Everything started here is stopped by its PID.
# Exit status: the bench's (with --check after "--": 1 unless every agent authenticated and
# every ack is durable).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=$ROOT/build
N=1000
SCENARIO=connect,idle,fanout
ART_MIB=10
OUT=
BENCH= CONTROL= CERTS= AEGISCTL= FLOOD=
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --n) N=$2; shift 2 ;;
    --scenario) SCENARIO=$2; shift 2 ;;
    --artifact-mib) ART_MIB=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --bench) BENCH=$2; shift 2 ;;
    --control) CONTROL=$2; shift 2 ;;
    --certs) CERTS=$2; shift 2 ;;
    --aegisctl) AEGISCTL=$2; shift 2 ;;
    --flood) FLOOD=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "fleet_run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
BENCH=${BENCH:-$BUILD/bin/aegis-bench-fleet}
CONTROL=${CONTROL:-$BUILD/bin/aegis-control}
CERTS=${CERTS:-$BUILD/bin/aegis-certs}
AEGISCTL=${AEGISCTL:-$BUILD/bin/aegisctl}
FLOOD=${FLOOD:-$BUILD/bin/aegis-bench-flood}
for b in "$BENCH" "$CONTROL" "$CERTS" "$AEGISCTL"; do
    [ -x "$b" ] || { echo "fleet_run.sh: $b is not built (cmake --build $BUILD)" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/aegis-fleet.XXXXXX")
PGDIR=
UP_PID=
cleanup() {
    local rc=$?
    if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
        kill -KILL "$UP_PID" 2>/dev/null || true
        wait "$UP_PID" 2>/dev/null || true
    fi
    if [ -n "$PGDIR" ]; then
        bash "$ROOT/tests/support/pgtmp.sh" stop "$PGDIR" >/dev/null 2>&1 || true
    fi
    if [ $rc -ne 0 ] && [ -f "$WORK/aegis-control.log" ]; then
        echo "---- aegis-control log (last 30 lines) ----" >&2
        tail -n 30 "$WORK/aegis-control.log" >&2
        if [ -f "$WORK/aegis-control-2.log" ]; then
            echo "---- aegis-control instance 2 log (last 30 lines) ----" >&2
            tail -n 30 "$WORK/aegis-control-2.log" >&2
        fi
    fi
    if [ -n "$OUT" ]; then
        mkdir -p "$OUT"
        cp "$WORK"/*.log "$WORK"/*.flood "$OUT"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT

# ---- PostgreSQL ---------------------------------------------------------------------------
if [ -n "${AEGIS_TEST_PG_DSN:-}" ]; then
    DSN=$AEGIS_TEST_PG_DSN
else
    PGDIR=$WORK/pg
    chmod 0711 "$WORK" # as root the server runs as postgres, which must reach $PGDIR
    DSN=$(bash "$ROOT/tests/support/pgtmp.sh" start "$PGDIR" | tail -n 1)
fi

# ---- PKI -----------------------------------------------------------------------------------
PKI=$WORK/pki
"$CERTS" init --dir "$PKI" >/dev/null
"$CERTS" server --dir "$PKI" --name localhost --ip 127.0.0.1 >/dev/null
"$CERTS" operator --dir "$PKI" --name bench >/dev/null
mkdir -p "$PKI/artifact-keys"
"$AEGISCTL" artifacts keygen --out "$WORK/art.key" >/dev/null
cp "$WORK/art.key.pub" "$PKI/artifact-keys/bench.pub"
PIN=$("$CERTS" pin "$PKI/server.pem")

# ---- the handshake flood tool (the bench starts and stops it by PID) ------------------------
EXTRA=()
case ",$SCENARIO," in
*,flood,*)
    [ -x "$FLOOD" ] || { echo "fleet_run.sh: $FLOOD is not built (aegis-bench-flood)" >&2; exit 2; }
    EXTRA+=(--flood "$FLOOD")
    ;;
esac

# ---- artifact (uploaded through a short-lived control, as an operator would) ---------------
case ",$SCENARIO," in
*,artifact,*)
    head -c $((ART_MIB * 1024 * 1024)) /dev/urandom >"$WORK/artifact.bin"
    "$CONTROL" --db "$DSN" --pki "$PKI" --listen 127.0.0.1:0 --metrics-listen off \
        --log-level warn >"$WORK/upload-control.log" 2>&1 &
    UP_PID=$!
    PORT=
    for _ in $(seq 1 300); do # 30 s
        kill -0 "$UP_PID" 2>/dev/null || { cat "$WORK/upload-control.log" >&2; exit 1; }
        PORT=$(sed -n 's/^aegis-control ready port=\([0-9][0-9]*\).*/\1/p' \
            "$WORK/upload-control.log" | head -n 1)
        [ -n "$PORT" ] && break
        sleep 0.1
    done
    [ -n "$PORT" ] || { echo "fleet_run.sh: upload control did not start" >&2; exit 1; }
    "$AEGISCTL" --server "127.0.0.1:$PORT" --pin "$PIN" --cert "$PKI/operator-bench.pem" \
        --key "$PKI/operator-bench.key" artifacts upload "$WORK/artifact.bin" --name bench-blob \
        --kind file --signing-key "$WORK/art.key" --json >"$WORK/upload.json" 2>"$WORK/upload.err"
    SHA=$(sed -n 's/.*"sha256": *"\([0-9a-f]\{64\}\)".*/\1/p' "$WORK/upload.json" | head -n 1)
    [ -n "$SHA" ] || { echo "fleet_run.sh: no sha256 in: $(cat "$WORK/upload.json")" >&2; exit 1; }
    kill -TERM "$UP_PID"
    for _ in $(seq 1 200); do
        kill -0 "$UP_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=
    EXTRA+=(--artifact-sha "$SHA")
    # The loopback-limited ideal: one transport connection's download rate on this machine
    # (aegis-bench download), measured now so it shares the machine's current state.
    if [ -x "$BUILD/bin/aegis-bench" ]; then
        LB=$WORK/lbk
        "$CERTS" init --dir "$LB" >/dev/null
        "$CERTS" server --dir "$LB" --name localhost --ip 127.0.0.1 >/dev/null
        "$CERTS" agent --dir "$LB" --name bench >/dev/null
        "$BUILD/bin/aegis-bench" serve --listen 127.0.0.1:0 --certs "$LB" \
            >"$WORK/lbk-serve.log" 2>&1 &
        UP_PID=$!
        LPORT=
        for _ in $(seq 1 100); do
            LPORT=$(ss -Hulpn 2>/dev/null | sed -n "s/.*127.0.0.1:\([0-9]*\) .*pid=$UP_PID,.*/\1/p" |
                head -n 1)
            [ -n "$LPORT" ] && break
            sleep 0.1
        done
        if [ -n "$LPORT" ]; then
            GBPS=$("$BUILD/bin/aegis-bench" download --target "127.0.0.1:$LPORT" --certs "$LB" \
                --size 2000000000 --chunk 65536 | sed -n 's/.*gbytes_per_s=\([0-9.]*\).*/\1/p')
            [ -n "$GBPS" ] && EXTRA+=(--loopback-gbps "$GBPS")
            echo "fleet_run.sh: loopback download rate ${GBPS:-?} GB/s (aegis-bench download)" >&2
        fi
        kill -TERM "$UP_PID" 2>/dev/null || true
        wait "$UP_PID" 2>/dev/null || true
        UP_PID=
    fi
    ;;
esac

# ---- the benchmark -------------------------------------------------------------------------
echo "fleet_run.sh: n=$N scenarios=$SCENARIO (aegis-control log: $WORK/aegis-control.log)" >&2
"$BENCH" --control "$CONTROL" --pki "$PKI" --db "$DSN" --n "$N" --scenario "$SCENARIO" \
    --log "$WORK/aegis-control.log" "${EXTRA[@]}" "$@"
