#!/usr/bin/env bash
# Self-update (seed 002) through the real aegis-control, aegisctl and PostgreSQL
# (run under tests/support/pgtmp.sh, which provides AEGIS_TEST_PG_DSN):
#   - an upload signed by a key the control does not trust is refused;
#   - a newer signed build (99.0.0) is fetched, verified, swapped in with an
#     atomic rename and re-executed (same PID); it authenticates as 99.0.0
#     (`aegisctl agents show`) and the command is acked succeeded;
#   - an older build is refused as a downgrade, with the reason in
#     `aegisctl commands show`;
#   - a build whose stored signature or content was tampered with in the
#     database is refused by the agent (it trusts the operator's key, not the
#     control's storage), and the running binary is untouched;
#   - a build that cannot authenticate (the 0.1.0 binary signed as 100.0.1:
#     the control refuses it as older than the recorded 99.0.0) is rolled back
#     after the deadline: 99.0.0 is back in place, runs, and acks the update
#     failed with "rolled back".
# The agent runs from a copy in the test's temporary directory, so the swap
# never touches the build tree.
# Usage: test_agent_update_control.sh AGENT AGENT-99.0.0 AGENT-100.0.0 CONTROL AEGISCTL AEGIS-CERTS
# Every wait has a deadline; every process started is stopped by its PID.
set -euo pipefail

AGENT_SRC=$1 NEXT=$2 NEXT2=$3 CONTROL=$4 CTL=$5 CERTS=$6
[ -n "${AEGIS_TEST_PG_DSN:-}" ] || { echo "SKIP: no AEGIS_TEST_PG_DSN (run under pgtmp.sh)"; exit 77; }
command -v psql >/dev/null 2>&1 || { echo "SKIP: psql not installed (needed to tamper with stored artifacts)"; exit 77; }

T=$(mktemp -d "${TMPDIR:-/tmp}/aegis-agent-upd.XXXXXX")
CPID="" APID=""
stop() { # stop PID: SIGTERM, then SIGKILL after 10 s
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop "$APID"
    stop "$CPID"
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
        echo "--- control log"; tail -n 30 "$T/control.log" 2>/dev/null || true
        echo "--- agent log"; tail -n 60 "$T/agent.log" 2>/dev/null || true
    fi
    [ -n "${AEGIS_KEEP_TMP:-}" ] || rm -rf "$T"
    exit $rc
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds or time runs out.
wait_for() {
    local secs=$1 i
    shift
    for i in $(seq $((secs * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

PKI=$T/pki
"$CERTS" init --dir "$PKI" >/dev/null
PIN=$("$CERTS" server --name localhost --ip 127.0.0.1 --dir "$PKI" | grep -o 'sha256//[A-Za-z0-9+/=]*' | head -n 1)
[ -n "$PIN" ] || fail "aegis-certs server printed no pin"
"$CERTS" operator --name tester --dir "$PKI" >/dev/null
mkdir -p "$T/sign" "$PKI/artifact-keys" "$T/bin"
PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export AEGIS_SERVER=127.0.0.1:$PORT AEGIS_PIN=$PIN
export AEGIS_CERT=$PKI/operator-tester.pem AEGIS_KEY=$PKI/operator-tester.key
export HOME=$T # no stray ~/.config/aegis/aegisctl.conf

# The operator's artifact-signing key (trusted by the control, handed to the
# agent at Enroll) and a rogue one nobody trusts.
"$CTL" artifacts keygen --out "$T/sign/ops" >/dev/null
cp "$T/sign/ops.pub" "$PKI/artifact-keys/ops.pub"
"$CTL" artifacts keygen --out "$T/sign/rogue" >/dev/null

# The agent runs from here; the self-update replaces this file.
BIN=$T/bin/aegis-agent
cp "$AGENT_SRC" "$BIN"
chmod 0755 "$BIN"

"$CONTROL" --db "$AEGIS_TEST_PG_DSN" --pki "$PKI" --listen "127.0.0.1:$PORT" \
    --metrics-listen off >>"$T/control.log" 2>&1 &
CPID=$!
wait_for 30 "$CTL" tokens list || fail "aegis-control did not answer within 30 s"
TOKEN=$("$CTL" tokens create --labels env=test | awk '/^secret:/ {print $2}')
[ -n "$TOKEN" ] || fail "aegisctl tokens create printed no secret"
echo "0123456789abcdef0123456789abcdef" >"$T/machine-id"
"$BIN" enroll --server "127.0.0.1:$PORT" --pin "$PIN" --token "$TOKEN" \
    --state-dir "$T/state" --machine-id-file "$T/machine-id" >>"$T/agent.log" 2>&1 ||
    fail "enroll failed"
AID=$(cat "$T/state/agent.id")
V0=$("$BIN" version | awk '{print $2}')
[ -n "$V0" ] || fail "aegis-agent version printed nothing"

"$BIN" run --state-dir "$T/state" --machine-id-file "$T/machine-id" --log-level debug \
    --update-deadline 8 >>"$T/agent.log" 2>&1 &
APID=$!
wait_for 30 grep -q 'event=authenticated' "$T/agent.log" || fail "agent did not authenticate"

show() { "$CTL" commands show "$1"; }
cmd_shows() { show "$1" | grep -qi "$2"; }
# cmd_done ID: acked with a final state (succeeded or failed).
cmd_done() { show "$1" | grep -Eqi 'succeeded|failed'; }
agent_version_is() { "$CTL" agents show "$AID" | grep -Eq "(^|[^0-9.])$1([^0-9.]|$)"; }
upload() { # FILE VERSION KEY [--compress]: prints the SHA-256
    "$CTL" artifacts upload "$1" --name aegis-agent --kind agent_binary --version "$2" \
        --signing-key "$3" ${4:-} --no-progress | awk '/^sha256:/ {print $2}'
}
send_update() { "$CTL" commands send --agent "$AID" --update "$1" | awk '/^command/ {print $2}'; }
psql_do() { psql "$AEGIS_TEST_PG_DSN" -v ON_ERROR_STOP=1 -qAt -c "$1"; }

agent_version_is "$V0" || fail "control does not record $V0: $("$CTL" agents show "$AID")"

# 1. an upload signed by an untrusted key never reaches the store
if "$CTL" artifacts upload "$NEXT" --name aegis-agent --kind agent_binary --version 99.0.0 \
    --signing-key "$T/sign/rogue" --no-progress >"$T/rogue.out" 2>&1; then
    fail "the control accepted an upload signed by an untrusted key"
fi
grep -qi "not trusted" "$T/rogue.out" || fail "untrusted-key upload: unclear reason: $(cat "$T/rogue.out")"

# 2. newer signed build: verified, swapped, re-executed, authenticates as 99.0.0
SHA99=$(upload "$NEXT" 99.0.0 "$T/sign/ops")
[ -n "$SHA99" ] || fail "artifacts upload printed no sha256"
auths=$(grep -c 'event=authenticated' "$T/agent.log" || true)
CID=$(send_update "$SHA99")
[ -n "$CID" ] || fail "commands send --update printed no id"
wait_for 90 cmd_done "$CID" || fail "update not acked: $(show "$CID")"
cmd_shows "$CID" succeeded || fail "update to 99.0.0 failed: $(show "$CID")"
cmd_shows "$CID" "updated from $V0 to 99.0.0" || fail "update detail: $(show "$CID")"
agent_version_is 99.0.0 || fail "control does not record 99.0.0: $("$CTL" agents show "$AID")"
"$CTL" agents list | grep "$AID" | grep -q 99.0.0 || fail "agents list does not show 99.0.0"
cmp -s "$NEXT" "$BIN" || fail "the installed binary is not the uploaded 99.0.0 build"
[ ! -e "$BIN.new" ] && [ ! -e "$BIN.prev" ] || fail "leftover $BIN.new or .prev after a successful update"
kill -0 "$APID" 2>/dev/null || fail "the agent process is gone (re-exec keeps the PID)"
[ "$(readlink "/proc/$APID/exe")" = "$BIN" ] || fail "the agent does not run $BIN: $(readlink "/proc/$APID/exe")"
"$BIN" version | grep -q "99.0.0" || fail "installed binary: $("$BIN" version)"
grep -q "event=update_installed from=$V0 to=99.0.0" "$T/agent.log" || fail "no update_installed event"
grep -q "event=update_succeeded from=$V0 to=99.0.0" "$T/agent.log" || fail "no update_succeeded event"
[ "$(grep -c 'event=authenticated' "$T/agent.log")" -gt "$auths" ] || fail "no new Authenticate after the update"

# 3. older build: refused before anything is swapped
SHAOLD=$(upload "$AGENT_SRC" "$V0" "$T/sign/ops")
[ -n "$SHAOLD" ] || fail "upload of the old build printed no sha256"
CID=$(send_update "$SHAOLD")
wait_for 30 cmd_done "$CID" || fail "downgrade not acked: $(show "$CID")"
cmd_shows "$CID" failed || fail "downgrade not refused: $(show "$CID")"
cmd_shows "$CID" "downgrade refused" || fail "downgrade: unclear reason: $(show "$CID")"
cmp -s "$NEXT" "$BIN" || fail "a refused downgrade touched the binary"

# 4a. stored signature tampered with (a compromised control database): refused
SHA100=$(upload "$NEXT2" 100.0.0 "$T/sign/ops")
[ -n "$SHA100" ] || fail "upload of 100.0.0 printed no sha256"
psql_do "UPDATE artifacts SET signature = set_byte(signature, 5, get_byte(signature, 5) # 1)
         WHERE sha256 = decode('$SHA100', 'hex')"
CID=$(send_update "$SHA100")
wait_for 60 cmd_done "$CID" || fail "tampered-signature update not acked: $(show "$CID")"
cmd_shows "$CID" failed || fail "a bad signature was accepted: $(show "$CID")"
cmd_shows "$CID" "bad signature" || fail "bad signature: unclear reason: $(show "$CID")"
cmp -s "$NEXT" "$BIN" || fail "a badly signed build touched the binary"

# 4b. stored content tampered with (signature intact): the hash check refuses it
SHA100Z=$(upload "$NEXT2" 100.0.0 "$T/sign/ops" --compress)
[ -n "$SHA100Z" ] && [ "$SHA100Z" != "$SHA100" ] || fail "compressed upload printed no new sha256"
psql_do "UPDATE artifact_chunks SET data = set_byte(data, 1000, get_byte(data, 1000) # 255)
         WHERE sha256 = decode('$SHA100Z', 'hex') AND idx = 0"
CID=$(send_update "$SHA100Z")
wait_for 60 cmd_done "$CID" || fail "tampered-content update not acked: $(show "$CID")"
cmd_shows "$CID" failed || fail "tampered content was accepted: $(show "$CID")"
cmd_shows "$CID" "sha-\?256" || fail "tampered content: unclear reason: $(show "$CID")"
cmp -s "$NEXT" "$BIN" || fail "a tampered build touched the binary"
agent_version_is 99.0.0 || fail "version changed after refused updates"

# 5. a build that cannot authenticate: the old binary signed as 100.0.1.
# The agent accepts the signed label (newer), swaps it in and re-executes; the
# control refuses 0.1.0 as older than the recorded 99.0.0; after the 8 s
# deadline the agent puts 99.0.0 back and reports the rollback.
# (--compress: the plain bytes are already stored, signed as the old version)
SHABAD=$(upload "$AGENT_SRC" 100.0.1 "$T/sign/ops" --compress)
[ -n "$SHABAD" ] && [ "$SHABAD" != "$SHAOLD" ] || fail "upload of the mislabelled build printed no new sha256"
CID=$(send_update "$SHABAD")
wait_for 120 cmd_done "$CID" || fail "rollback not reported: $(show "$CID")"
cmd_shows "$CID" failed || fail "a build that cannot authenticate was kept: $(show "$CID")"
cmd_shows "$CID" "rolled back to 99.0.0" || fail "rollback detail: $(show "$CID")"
grep -q "event=update_version_mismatch signed=100.0.1 running=$V0" "$T/agent.log" ||
    fail "no update_version_mismatch event"
grep -q 'event=auth_refused detail="downgrade refused' "$T/agent.log" ||
    fail "the control did not refuse the mislabelled build as a downgrade"
grep -q "event=update_rollback from=100.0.1 to=99.0.0" "$T/agent.log" || fail "no update_rollback event"
cmp -s "$NEXT" "$BIN" || fail "the 99.0.0 binary is not back in place after the rollback"
[ ! -e "$BIN.prev" ] || fail "$BIN.prev left after the rollback"
kill -0 "$APID" 2>/dev/null || fail "the agent process is gone after the rollback"
agent_version_is 99.0.0 || fail "control does not record 99.0.0 after the rollback"
# and the rolled-back agent still works
CID=$("$CTL" commands send --agent "$AID" --action ping | awk '/^command/ {print $2}')
wait_for 30 cmd_shows "$CID" succeeded || fail "ping after the rollback: $(show "$CID")"
"$BIN" status --state-dir "$T/state" | grep -q "connected" || fail "status does not say connected"
echo "PASS"
