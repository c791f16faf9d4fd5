#!/usr/bin/env bash
# aegisctl against a real aegis-control on a throwaway PostgreSQL (run under
# tests/support/pgtmp.sh, which sets AEGIS_TEST_PG_DSN):
#   tokens create/list/revoke, agents list (table and --json), artifact
#   upload/list/status, policy push/list, telemetry query, audit list, and
#   authorization negatives (a self-signed certificate, an unenrolled agent
#   certificate, a wrong pin).
#
# usage: test_ctl_cli_integration.sh AEGISCTL AEGIS_CONTROL AEGIS_CERTS POLICY.json [AEGIS_AGENT]
# With AEGIS_AGENT, an agent enrolls with a token made here: agents list/show
# then show a real row, its certificate gets PERMISSION_DENIED on
# OperatorService, and agents revoke is checked.
# Every wait is a poll on a condition with a deadline; the daemon is stopped by
# its PID on every exit path.
set -euo pipefail

AEGISCTL=$1
CONTROL=$2
CERTS=$3
POLICY=$4
AGENT=${5:-}
: "${AEGIS_TEST_PG_DSN:?run me under tests/support/pgtmp.sh run}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ctlcli-int.XXXXXX")
CTL_PID=
cleanup() {
    local rc=$?
    if [ -n "$CTL_PID" ] && kill -0 "$CTL_PID" 2>/dev/null; then
        kill -TERM "$CTL_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$CTL_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$CTL_PID" 2>/dev/null || true
        wait "$CTL_PID" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ] && [ -f "$WORK/control.log" ]; then
        echo "---- aegis-control log (last 40 lines) ----" >&2
        tail -n 40 "$WORK/control.log" >&2
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# expect CODE CMD... : run CMD, capture stdout/stderr in $OUT/$ERR, check the exit code.
OUT=$WORK/out
ERR=$WORK/err
expect() {
    local want=$1
    shift
    local rc=0
    "$@" >"$OUT" 2>"$ERR" || rc=$?
    if [ "$rc" != "$want" ]; then
        echo "stdout:" >&2
        cat "$OUT" >&2
        echo "stderr:" >&2
        cat "$ERR" >&2
        fail "exit $rc, expected $want: $*"
    fi
}
contains() { grep -q -- "$2" "$1" || fail "$(basename "$1") lacks \"$2\": $(cat "$1")"; }
lacks() { if grep -q -- "$2" "$1"; then fail "$(basename "$1") has \"$2\""; fi; }
# json_str KEY FILE: the first string value of KEY in aegisctl's JSON output.
json_str() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$2" | head -n 1; }

# ---- PKI ---------------------------------------------------------------------
PKI=$WORK/pki
"$CERTS" init --dir "$PKI" >/dev/null
"$CERTS" server --dir "$PKI" --name localhost --ip 127.0.0.1 >/dev/null
"$CERTS" operator --dir "$PKI" --name alice >/dev/null
"$CERTS" agent --dir "$PKI" --name 00000000-0000-4000-8000-000000000001 >/dev/null
"$CERTS" self-signed --dir "$PKI" --name newcomer --out selfie >/dev/null
PIN=$("$CERTS" pin "$PKI/server.pem")
mkdir -p "$PKI/artifact-keys"
"$AEGISCTL" artifacts keygen --out "$WORK/art.key" >/dev/null
cp "$WORK/art.key.pub" "$PKI/artifact-keys/ops.pub"

# Port 0: the daemon picks a free port and prints it ("aegis-control ready port=N").
"$CONTROL" --db "$AEGIS_TEST_PG_DSN" --pki "$PKI" --listen "127.0.0.1:0" \
    --metrics-listen off >"$WORK/control.log" 2>&1 &
CTL_PID=$!
PORT=
for _ in $(seq 1 300); do # 30 s
    kill -0 "$CTL_PID" 2>/dev/null || fail "aegis-control exited: $(tail -n 20 "$WORK/control.log")"
    PORT=$(sed -n 's/^aegis-control ready port=\([0-9][0-9]*\).*/\1/p' "$WORK/control.log" | head -n 1)
    [ -n "$PORT" ] && break
    sleep 0.1
done
[ -n "$PORT" ] || fail "aegis-control did not report ready"

# The operator's environment, as a config file plus variables (flags > env > file).
cat >"$WORK/aegisctl.conf" <<EOF
server = 127.0.0.1:$PORT
pin = $PIN
cert = pki/operator-alice.pem
key = pki/operator-alice.key
signing_key = art.key
EOF
export AEGISCTL_CONFIG=$WORK/aegisctl.conf
unset AEGIS_SERVER AEGIS_PIN AEGIS_CERT AEGIS_KEY AEGIS_SIGNING_KEY

# Ready when an operator call succeeds (bounded: 60 tries, ~30 s).
ready=0
for _ in $(seq 1 60); do
    kill -0 "$CTL_PID" 2>/dev/null || fail "aegis-control exited: $(tail -n 20 "$WORK/control.log")"
    if "$AEGISCTL" --timeout 2s tokens list >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.5
done
[ $ready = 1 ] || fail "aegis-control did not answer on 127.0.0.1:$PORT"

# ---- tokens ----------------------------------------------------------------------
expect 0 "$AEGISCTL" tokens create --ttl 2h --uses 3 --labels env=test,role=web \
    --description "integration" --json
TOKEN=$(json_str token_id "$OUT")
SECRET=$(json_str secret "$OUT")
[ -n "$TOKEN" ] && [ -n "$SECRET" ] || fail "no token id/secret in: $(cat "$OUT")"
expect 0 "$AEGISCTL" tokens list
contains "$OUT" "^ID  *DESCRIPTION  *USES  *EXPIRES  *STATE  *LABELS"
contains "$OUT" "^$TOKEN  *integration  *0/3  .*active  *env=test,role=web"
lacks "$OUT" "$SECRET" # secrets are shown once, never listed
expect 0 "$AEGISCTL" tokens revoke "$TOKEN"
contains "$OUT" "token $TOKEN revoked"
expect 0 "$AEGISCTL" tokens list --all --json
contains "$OUT" "\"revoked\": true"
expect 1 "$AEGISCTL" tokens revoke 00000000-0000-4000-8000-0000000000ff
contains "$ERR" "RevokeToken: NOT_FOUND"

# ---- agents ----------------------------------------------------------------------
expect 0 "$AEGISCTL" agents list
contains "$OUT" "^ID  *HOST  *STATUS  *VERSION  *LAST SEEN  *LABELS$"
expect 0 "$AEGISCTL" agents list --json
contains "$OUT" "\"agents\": \\["
expect 1 "$AEGISCTL" agents show 00000000-0000-4000-8000-00000000dead
contains "$ERR" "GetAgent: NOT_FOUND"

# ---- artifacts -------------------------------------------------------------------
head -c 300000 /dev/urandom >"$WORK/blob.bin"
WANT_SHA=$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)
expect 0 "$AEGISCTL" artifacts upload "$WORK/blob.bin" --name blob --kind file
contains "$OUT" "sha256: $WANT_SHA"
contains "$ERR" "upload: 300000/300000 (100%)"
expect 0 "$AEGISCTL" artifacts upload "$WORK/blob.bin" --name blob --kind file --json
contains "$OUT" "\"already_present\": true"
expect 0 "$AEGISCTL" artifacts list
contains "$OUT" "^$WANT_SHA  *blob  *file  *293.0 KiB"
expect 0 "$AEGISCTL" artifacts status "$WANT_SHA" --json
contains "$OUT" "\"name\": \"blob\""
contains "$OUT" "\"hosts\": \\["
# compressed upload: a different stored SHA-256
expect 0 "$AEGISCTL" artifacts upload "$WORK/blob.bin" --name blob-z --kind file --compress
contains "$OUT" "uploaded blob-z"
# an artifact signed by a key the server does not trust is refused
"$AEGISCTL" artifacts keygen --out "$WORK/rogue.key" >/dev/null
expect 1 "$AEGISCTL" artifacts upload "$WORK/blob.bin" --name rogue --kind file \
    --signing-key "$WORK/rogue.key"
contains "$ERR" "UploadArtifact: "

# ---- policies --------------------------------------------------------------------
expect 0 "$AEGISCTL" policies push "$POLICY" --selector role=web --comment "integration"
contains "$OUT" "stored service 101 version"
expect 0 "$AEGISCTL" policies list
contains "$OUT" "^SERVICE  *VERSION  *STATE  *RULES"
contains "$OUT" "^101  *[0-9][0-9]*  *draft  *3 "
PVER=$(sed -n 's/^101  *\([0-9][0-9]*\)  *draft .*/\1/p' "$OUT" | head -n 1)
printf '{"version":1,"service_id":1,"ttl_seconds":10}' >"$WORK/bad.json"
expect 4 "$AEGISCTL" policies push "$WORK/bad.json"
contains "$ERR" "nothing was pushed"

# ---- telemetry -------------------------------------------------------------------
expect 0 "$AEGISCTL" telemetry query --since 1h
contains "$OUT" "^TIME  *AGENT  *TYPE  *NAME  *VALUE$"
expect 0 "$AEGISCTL" telemetry query --kind flow_denied --json
contains "$OUT" "\"records\": \["

# ---- audit -----------------------------------------------------------------------
expect 0 "$AEGISCTL" audit list --since 1h
contains "$OUT" "^TIME  *ACTOR  *ACTION  *TARGET  *RESULT  *DETAIL"
contains "$OUT" "$TOKEN"
expect 0 "$AEGISCTL" audit list --json
contains "$OUT" "\"entries\": \\["

# ---- authorization negatives -----------------------------------------------------
# A self-signed certificate may call only Enroll: OperatorService is refused.
expect 1 "$AEGISCTL" --cert "$PKI/selfie.pem" --key "$PKI/selfie.key" tokens list
contains "$ERR" "ListTokens: UNAUTHENTICATED"
# An agent certificate the server never enrolled is refused at the handshake.
expect 3 "$AEGISCTL" --cert "$PKI/agent-00000000-0000-4000-8000-000000000001.pem" \
    --key "$PKI/agent-00000000-0000-4000-8000-000000000001.key" tokens list
contains "$ERR" "refused by the server"
# An enrolled agent's certificate: connects, but OperatorService says no.
if [ -n "$AGENT" ] && [ -x "$AGENT" ]; then
    expect 0 "$AEGISCTL" tokens create --uses 1 --labels role=web --json
    SECRET2=$(json_str secret "$OUT")
    printf 'ctlcli-integration-machine\n' >"$WORK/machine-id"
    "$AGENT" enroll --server "127.0.0.1:$PORT" --pin "$PIN" --token "$SECRET2" \
        --state-dir "$WORK/agent" --machine-id-file "$WORK/machine-id" >"$WORK/enroll.log" 2>&1 ||
        fail "aegis-agent enroll: $(cat "$WORK/enroll.log")"
    AGENT_ID=$(tr -d '[:space:]' <"$WORK/agent/agent.id")
    [ -n "$AGENT_ID" ] || fail "no agent id after enrollment"
    expect 0 "$AEGISCTL" agents list
    contains "$OUT" "^$AGENT_ID  .* offline  "
    expect 0 "$AEGISCTL" agents list --label role=web --json
    contains "$OUT" "\"agent_id\": \"$AGENT_ID\""
    expect 0 "$AEGISCTL" agents show "$AGENT_ID"
    contains "$OUT" "^id  *$AGENT_ID$"
    # a command for the (offline) agent waits queued
    expect 0 "$AEGISCTL" commands send --agent "$AGENT_ID" --inventory --json
    CMD=$(json_str command_id "$OUT")
    [ -n "$CMD" ] || fail "no command id: $(cat "$OUT")"
    expect 0 "$AEGISCTL" commands show "$CMD"
    contains "$OUT" "^payload:  collect_inventory$"
    contains "$OUT" "^$AGENT_ID  *[0-9][0-9]*  *queued  "
    expect 0 "$AEGISCTL" commands send --selector role=web --action flush_conntrack \
        --arg zone=1 --expires 1h
    contains "$OUT" "queued for 1 agent(s)"
    # the artifact and the policy can be assigned/promoted to it
    expect 0 "$AEGISCTL" artifacts assign "$WANT_SHA" --agent "$AGENT_ID"
    contains "$OUT" "assigned to 1 new host(s); command "
    expect 0 "$AEGISCTL" artifacts status "$WANT_SHA"
    contains "$OUT" "^$AGENT_ID  .* pending  "
    expect 0 "$AEGISCTL" policies promote "$PVER"
    contains "$OUT" "promoted service 101 version $PVER (promoted)"
    expect 1 "$AEGISCTL" --cert "$WORK/agent/agent.pem" --key "$WORK/agent/agent.key" tokens list
    contains "$ERR" "ListTokens: PERMISSION_DENIED"
    expect 0 "$AEGISCTL" agents revoke "$AGENT_ID" --reason "integration test"
    contains "$OUT" "agent $AGENT_ID revoked at "
    expect 0 "$AEGISCTL" agents list --status revoked
    contains "$OUT" "^$AGENT_ID  .* revoked  "
    expect 0 "$AEGISCTL" audit list --target "$AGENT_ID"
    contains "$OUT" "integration test"
    echo "ok: enrolled agent $AGENT_ID listed, shown, denied OperatorService, revoked"
else
    echo "note: no aegis-agent given; the enrolled-agent checks were not run"
fi
# A wrong pin: exit 3 and what to do.
expect 3 env AEGIS_PIN=sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= "$AEGISCTL" tokens list
contains "$ERR" "does not match pin"
contains "$ERR" "check --pin or AEGIS_PIN"

echo "ok: aegisctl integration"
