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
#   - the smoke run before the swap refuses a mislabelled build (the 0.1.0
#     binary signed as 100.0.1), one that cannot even start (a truncated copy
#     of 100.0.0 signed as 101.0.0), a file this machine cannot execute (a PE
#     header, 101.0.1) and one that hangs (a script running sleep, 101.0.2,
#     killed after the 10 s timeout): each acked failed with "smoke run", the
#     installed binary byte-identical, the same process still answering;
#   - a build that starts but cannot authenticate (100.0.0 while the control
#     records 100.0.5, so it refuses it as a downgrade) is rolled back after
#     the deadline: 99.0.0 is back in place, runs, and acks the update failed
#     with "rolled back".
# The agent runs from a copy in the test's temporary directory, so the swap
# never touches the build tree.
# Usage: test_agent_update_control.sh AGENT AGENT-99.0.0 AGENT-100.0.0 CONTROL AEGISCTL AEGIS-CERTS
# Every wait has a deadline; every process started is stopped by its PID.
set -euo pipefail
# stop PID [SIGNAL], wait_for SECS CMD...
. "$(dirname "${BASH_SOURCE[0]}")/../support/proc.sh"

AGENT_SRC=$1 NEXT=$2 NEXT2=$3 CONTROL=$4 CTL=$5 CERTS=$6
[ -n "${AEGIS_TEST_PG_DSN:-}" ] || { echo "SKIP: no AEGIS_TEST_PG_DSN (run under pgtmp.sh)"; exit 77; }
command -v psql >/dev/null 2>&1 || { echo "SKIP: psql not installed (needed to tamper with stored artifacts)"; exit 77; }

T=$(mktemp -d "${TMPDIR:-/tmp}/aegis-agent-upd.XXXXXX")
CPID="" APID=""
cleanup() {
    local rc=$?
    stop "$APID"
    stop "$CPID"
    # the agent kills and reaps the hanging smoke run (6c); if it did not, stop it here
    [ ! -s "$T/hang.pid" ] || kill -9 "$(cat "$T/hang.pid")" 2>/dev/null || true
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
        echo "--- control log"; tail -n 30 "$T/control.log" 2>/dev/null || true
        echo "--- agent log"; tail -n 60 "$T/agent.log" 2>/dev/null || true
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

# 5. a mislabelled build (the old binary signed as 100.0.1): the smoke run
# before the swap sees it print $V0, not 100.0.1, and refuses it.
# (--compress: the plain bytes are already stored, signed as the old version)
SHABAD=$(upload "$AGENT_SRC" 100.0.1 "$T/sign/ops" --compress)
[ -n "$SHABAD" ] && [ "$SHABAD" != "$SHAOLD" ] || fail "upload of the mislabelled build printed no new sha256"
CID=$(send_update "$SHABAD")
wait_for 60 cmd_done "$CID" || fail "mislabelled update not acked: $(show "$CID")"
cmd_shows "$CID" failed || fail "a mislabelled build was accepted: $(show "$CID")"
cmd_shows "$CID" "smoke run: version mismatch" || fail "mislabelled build: unclear reason: $(show "$CID")"
cmd_shows "$CID" "aegis-agent $V0" || fail "mislabelled build: the reason lacks what it printed: $(show "$CID")"
cmp -s "$NEXT" "$BIN" || fail "a mislabelled build touched the binary"
[ ! -e "$BIN.new" ] && [ ! -e "$BIN.prev" ] || fail "leftover $BIN.new or .prev after a refused smoke run"

# 6. a build that cannot even start (the first 64 KiB of the 100.0.0 build,
# signed as 101.0.0): without the smoke run it would be swapped in and never
# reach the trial deadline. It is refused before the swap; 99.0.0 keeps
# running in the same process and still answers.
head -c 65536 "$NEXT2" >"$T/truncated"
SHATRUNC=$(upload "$T/truncated" 101.0.0 "$T/sign/ops")
[ -n "$SHATRUNC" ] || fail "upload of the truncated build printed no sha256"
restarts=$(grep -c 'event=restarting' "$T/agent.log" || true)
CID=$(send_update "$SHATRUNC")
wait_for 60 cmd_done "$CID" || fail "truncated update not acked: $(show "$CID")"
cmd_shows "$CID" failed || fail "a truncated build was accepted: $(show "$CID")"
cmd_shows "$CID" "new binary failed its smoke run" || fail "truncated build: unclear reason: $(show "$CID")"
grep -q "event=update_smoke_failed to=101.0.0" "$T/agent.log" || fail "no update_smoke_failed event"
cmp -s "$NEXT" "$BIN" || fail "a truncated build touched the binary"
[ ! -e "$BIN.new" ] && [ ! -e "$BIN.prev" ] || fail "leftover $BIN.new or .prev after a refused smoke run"
! grep -q "event=update_installed from=99.0.0 to=101.0.0" "$T/agent.log" || fail "the truncated build was installed"
[ "$(grep -c 'event=restarting' "$T/agent.log" || true)" -eq "$restarts" ] ||
    fail "the agent restarted after a refused smoke run"
kill -0 "$APID" 2>/dev/null || fail "the agent process is gone after a refused smoke run"
[ "$(readlink "/proc/$APID/exe")" = "$BIN" ] || fail "the agent does not run $BIN: $(readlink "/proc/$APID/exe")"
agent_version_is 99.0.0 || fail "control does not record 99.0.0 after the refused smoke run"
CID=$("$CTL" commands send --agent "$AID" --action ping | awk '/^command/ {print $2}')
wait_for 30 cmd_shows "$CID" succeeded || fail "ping after the refused smoke run: $(show "$CID")"

# 6b. a file that is no executable for this machine (a PE header and zeros,
# signed as 101.0.1): exec itself fails, and the reason says so.
{ printf 'MZ\220\000'; head -c 4096 /dev/zero; } >"$T/not-elf"
SHANOTELF=$(upload "$T/not-elf" 101.0.1 "$T/sign/ops")
[ -n "$SHANOTELF" ] || fail "upload of the non-ELF build printed no sha256"
CID=$(send_update "$SHANOTELF")
wait_for 60 cmd_done "$CID" || fail "non-ELF update not acked: $(show "$CID")"
cmd_shows "$CID" failed || fail "a non-ELF build was accepted: $(show "$CID")"
cmd_shows "$CID" "smoke run: cannot execute it: exec format error" ||
    fail "non-ELF build: unclear reason: $(show "$CID")"
cmp -s "$NEXT" "$BIN" || fail "a non-ELF build touched the binary"
[ ! -e "$BIN.new" ] || fail "leftover $BIN.new after a refused smoke run"
[ "$(grep -c 'event=restarting' "$T/agent.log" || true)" -eq "$restarts" ] ||
    fail "the agent restarted after a refused smoke run"

# 6c. a "build" that hangs instead of answering (a script that records its PID
# and execs sleep, signed as 101.0.2): the smoke run kills it after its 10 s
# timeout and reaps it; the agent keeps running 99.0.0 and answers a ping.
printf '#!/bin/sh\necho $$ >"%s"\nexec sleep 60\n' "$T/hang.pid" >"$T/hang"
SHAHANG=$(upload "$T/hang" 101.0.2 "$T/sign/ops")
[ -n "$SHAHANG" ] || fail "upload of the hanging build printed no sha256"
CID=$(send_update "$SHAHANG")
wait_for 60 cmd_done "$CID" || fail "hanging update not acked: $(show "$CID")"
HPID=$(cat "$T/hang.pid" 2>/dev/null || true)
[ -n "$HPID" ] || fail "the hanging build never ran"
cmd_shows "$CID" "smoke run: no answer within 10 s (killed)" ||
    fail "hanging build: unclear reason: $(show "$CID")"
! kill -0 "$HPID" 2>/dev/null || fail "the hanging smoke run (PID $HPID) was not killed and reaped"
cmp -s "$NEXT" "$BIN" || fail "a hanging build touched the binary"
[ ! -e "$BIN.new" ] || fail "leftover $BIN.new after a refused smoke run"
[ "$(grep -c 'event=restarting' "$T/agent.log" || true)" -eq "$restarts" ] ||
    fail "the agent restarted after a refused smoke run"
kill -0 "$APID" 2>/dev/null || fail "the agent process is gone after the hanging smoke run"
CID=$("$CTL" commands send --agent "$AID" --action ping | awk '/^command/ {print $2}')
wait_for 30 cmd_shows "$CID" succeeded || fail "ping after the hanging smoke run: $(show "$CID")"

# 7. a build that starts but cannot authenticate: the 100.0.0 build (with a
# few trailing bytes, so its SHA-256 differs from the tampered copies in 4a/4b)
# passes the smoke run and is swapped in, but the control was made to record
# 100.0.5, so it refuses 100.0.0 as a downgrade. After the 8 s deadline the
# agent puts 99.0.0 back; once the agent has rolled back, the recorded version
# is set back to 99.0.0 so the old binary can authenticate and report.
cat "$NEXT2" >"$T/next2-padded"
printf 'aegis-test-padding' >>"$T/next2-padded"
SHAPAD=$(upload "$T/next2-padded" 100.0.0 "$T/sign/ops")
[ -n "$SHAPAD" ] || fail "upload of the padded 100.0.0 build printed no sha256"
psql_do "UPDATE agents SET version = '100.0.5' WHERE id::text = '$AID'"
agent_version_is 100.0.5 || fail "could not set the recorded version: $("$CTL" agents show "$AID")"
CID=$(send_update "$SHAPAD")
wait_for 120 grep -q "event=update_rollback from=100.0.0 to=99.0.0" "$T/agent.log" ||
    fail "no update_rollback event: $(show "$CID")"
psql_do "UPDATE agents SET version = '99.0.0' WHERE id::text = '$AID'"
wait_for 120 cmd_done "$CID" || fail "rollback not reported: $(show "$CID")"
cmd_shows "$CID" failed || fail "a build that cannot authenticate was kept: $(show "$CID")"
cmd_shows "$CID" "rolled back to 99.0.0" || fail "rollback detail: $(show "$CID")"
grep -q "event=update_installed from=99.0.0 to=100.0.0" "$T/agent.log" || fail "100.0.0 was not installed"
grep -q 'event=auth_refused detail="downgrade refused' "$T/agent.log" ||
    fail "the control did not refuse 100.0.0 as a downgrade"
cmp -s "$NEXT" "$BIN" || fail "the 99.0.0 binary is not back in place after the rollback"
[ ! -e "$BIN.prev" ] || fail "$BIN.prev left after the rollback"
kill -0 "$APID" 2>/dev/null || fail "the agent process is gone after the rollback"
agent_version_is 99.0.0 || fail "control does not record 99.0.0 after the rollback"
# and the rolled-back agent still works
CID=$("$CTL" commands send --agent "$AID" --action ping | awk '/^command/ {print $2}')
wait_for 30 cmd_shows "$CID" succeeded || fail "ping after the rollback: $(show "$CID")"
"$BIN" status --state-dir "$T/state" | grep -q "connected" || fail "status does not say connected"
echo "PASS"
