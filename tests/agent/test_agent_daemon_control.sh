#!/usr/bin/env bash
# aegis-agent against the real aegis-control and PostgreSQL (run under
# tests/support/pgtmp.sh, which provides AEGIS_TEST_PG_DSN):
#   enroll with a token from aegisctl -> run -> a command through aegisctl
#   -> its ack in `aegisctl commands show`; the agent killed mid-command and
#   restarted acks it "interrupted" without running it again; the control
#   server restarted: the agent reconnects and the next command succeeds.
# Usage: test_agent_daemon_control.sh AGENT CONTROL AEGISCTL AEGIS-CERTS
# Every wait has a deadline; every process started is stopped by its PID.
set -euo pipefail
# stop PID [SIGNAL], wait_for SECS CMD...
. "$(dirname "${BASH_SOURCE[0]}")/../support/proc.sh"

AGENT=$1 CONTROL=$2 CTL=$3 CERTS=$4
[ -n "${AEGIS_TEST_PG_DSN:-}" ] || { echo "SKIP: no AEGIS_TEST_PG_DSN (run under pgtmp.sh)"; exit 77; }

T=$(mktemp -d "${TMPDIR:-/tmp}/aegis-agentd-ctl.XXXXXX")
CPID="" APID=""
cleanup() {
    local rc=$?
    stop "$APID"
    stop "$CPID"
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
        echo "--- control log"; tail -n 30 "$T/control.log" 2>/dev/null || true
        echo "--- agent log"; tail -n 30 "$T/agent.log" 2>/dev/null || true
    fi
    [ -n "${AEGIS_KEEP_TMP:-}" ] || rm -rf "$T"
    exit $rc
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

PKI=$T/pki
"$CERTS" init --dir "$PKI" >/dev/null
PIN=$("$CERTS" server --name localhost --ip 127.0.0.1 --dir "$PKI" | grep -o 'sha256//[A-Za-z0-9+/=]*' | head -n 1)
[ -n "$PIN" ] || fail "aegis-certs server printed no pin"
"$CERTS" operator --name tester --dir "$PKI" >/dev/null
# The operator's artifact-signing key; the control server trusts its public half.
mkdir -p "$T/sign" "$PKI/artifact-keys"
PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export AEGIS_SERVER=127.0.0.1:$PORT AEGIS_PIN=$PIN
export AEGIS_CERT=$PKI/operator-tester.pem AEGIS_KEY=$PKI/operator-tester.key
export HOME=$T # no stray ~/.config/aegis/aegisctl.conf

start_control() {
    "$CONTROL" --db "$AEGIS_TEST_PG_DSN" --pki "$PKI" --listen "127.0.0.1:$PORT" \
        --metrics-listen off >>"$T/control.log" 2>&1 &
    CPID=$!
    wait_for 30 "$CTL" tokens list || fail "aegis-control did not answer within 30 s"
}
start_agent() {
    "$AGENT" run --state-dir "$T/state" --machine-id-file "$T/machine-id" --log-level debug \
        >>"$T/agent.log" 2>&1 &
    APID=$!
}
# cmd_state ID: the delivery line of `aegisctl commands show ID`.
cmd_shows() { "$CTL" commands show "$1" | grep -qi "$2"; }
auths() { grep -c 'event=authenticated' "$T/agent.log" || true; }

"$CTL" artifacts keygen --out "$T/sign/ops" >/dev/null
cp "$T/sign/ops.pub" "$PKI/artifact-keys/ops.pub"
start_control
TOKEN=$("$CTL" tokens create --labels env=test | awk '/^secret:/ {print $2}')
[ -n "$TOKEN" ] || fail "aegisctl tokens create printed no secret"
echo "0123456789abcdef0123456789abcdef" >"$T/machine-id"
"$AGENT" enroll --server "127.0.0.1:$PORT" --pin "$PIN" --token "$TOKEN" \
    --state-dir "$T/state" --machine-id-file "$T/machine-id" >>"$T/agent.log" 2>&1 ||
    fail "enroll failed"
AID=$(cat "$T/state/agent.id")
if "$AGENT" enroll --server "127.0.0.1:$PORT" --pin "$PIN" --token "$TOKEN" \
    --state-dir "$T/state" --machine-id-file "$T/machine-id" >"$T/enroll2.log" 2>&1; then
    fail "a second enroll clobbered the identity"
fi
grep -q "already enrolled as $AID" "$T/enroll2.log" || fail "second enroll: wrong message"

start_agent
wait_for 30 grep -q 'event=authenticated' "$T/agent.log" || fail "agent did not authenticate"

# enroll -> run -> command -> ack
CID=$("$CTL" commands send --agent "$AID" --action ping | awk '/^command/ {print $2}')
[ -n "$CID" ] || fail "commands send printed no id"
wait_for 30 cmd_shows "$CID" succeeded || fail "ping did not succeed: $("$CTL" commands show "$CID")"

# a signed, compressed artifact: fetched, verified, loaded
head -c 300000 /dev/urandom >"$T/blob"
SHA=$("$CTL" artifacts upload "$T/blob" --name blob --kind file --signing-key "$T/sign/ops" \
    --compress | awk '/^sha256:/ {print $2}')
[ -n "$SHA" ] || fail "artifacts upload printed no sha256"
CIDA=$("$CTL" commands send --agent "$AID" --artifact "$SHA" | awk '/^command/ {print $2}')
wait_for 60 cmd_shows "$CIDA" succeeded || fail "artifact not loaded: $("$CTL" commands show "$CIDA")"
cmp "$T/blob" "$T/state/artifacts/$SHA.blob.data" || fail "loaded artifact differs from the upload"

# telemetry reaches the server (events are spooled at once, sent every interval)
wait_for 60 sh -c "'$CTL' telemetry query --agent '$AID' | grep -q command_succeeded" ||
    fail "no telemetry from the agent: $("$CTL" telemetry query --agent "$AID" | tail -n 3)"

# killed mid-command: acked "interrupted" after the restart, never run twice
CID2=$("$CTL" commands send --agent "$AID" --action sleep --arg seconds=60 | awk '/^command/ {print $2}')
wait_for 30 grep -q "event=command_received command=$CID2" "$T/agent.log" || fail "sleep not received"
kill -9 "$APID"; wait "$APID" 2>/dev/null || true; APID=""
start_agent
wait_for 60 cmd_shows "$CID2" failed || fail "interrupted command not acked: $("$CTL" commands show "$CID2")"
"$CTL" commands show "$CID2" | grep -qi interrupted || fail "no 'interrupted' detail"
if grep -q "event=command_done command=$CID2" "$T/agent.log"; then fail "command ran to completion"; fi

# control restarted: the agent reconnects, nothing lost
before=$(auths)
stop "$CPID"; CPID=""
start_control
wait_for 120 test "$(auths)" -gt "$before" || fail "agent did not re-authenticate"
CID3=$("$CTL" commands send --agent "$AID" --inventory | awk '/^command/ {print $2}')
wait_for 30 cmd_shows "$CID3" succeeded || fail "inventory after restart: $("$CTL" commands show "$CID3")"
"$AGENT" status --state-dir "$T/state" | grep -q "connected" || fail "status does not say connected"
echo "PASS"
