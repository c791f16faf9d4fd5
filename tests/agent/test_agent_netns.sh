#!/usr/bin/env bash
# aegis-agent in a network namespace of its own, against the real aegis-control,
# aegisctl and PostgreSQL (run under tests/support/pgtmp.sh, which provides
# AEGIS_TEST_PG_DSN). The agent's namespace is joined to the root namespace by a
# veth pair; aegis-control listens on the root end's address. Sub-cases, in order:
#   inbound  nftables in the agent's namespace drops every inbound NEW connection
#            (kept for the whole run): enroll, run, a command, a signed artifact
#            and telemetry all work, because the agent only dials out
#   policy   `aegisctl policies push/promote` of seed-004 allow-lists: enforced by
#            BPF (an allowed TCP port connects, a blocked one does not), per-rule
#            counters come back as telemetry, `policies rollback` reopens the port
#   loss     20 % packet loss both ways (tc netem, or an nftables random drop
#            where the kernel has no netem): 5 commands are all delivered
#   partition the link down for 20 s with commands sent before and during it,
#            then up: every one of them is acked succeeded
#   migrate  the agent's address changes mid-connection (new address and route,
#            old address removed): the connection survives without a new
#            Authenticate and the next command succeeds
# Usage: test_agent_netns.sh AGENT CONTROL AEGISCTL AEGIS-CERTS AEGIS-BPF-PROBE
# Needs root (namespaces, nftables, BPF): exits 77 with "SKIP: ..." otherwise.
# Runs in a private mount namespace with its own bpffs, so the agent's BPF pins
# vanish with it. Every wait has a deadline; every process started is stopped by
# its PID; namespaces are deleted on every exit path. AEGIS_KEEP_TMP=1 keeps logs.
set -euo pipefail
# stop PID [SIGNAL], wait_for SECS CMD...
. "$(dirname "${BASH_SOURCE[0]}")/../support/proc.sh"

AGENT=$1 CONTROL=$2 CTL=$3 CERTS=$4 PROBE=$5
skip() { echo "SKIP: $*"; exit 77; }
[ -n "${AEGIS_TEST_PG_DSN:-}" ] || skip "no AEGIS_TEST_PG_DSN (run under pgtmp.sh)"
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, nftables, BPF); CI runs it as root"
for tool in ip nsenter unshare mount nft tc python3; do
    command -v "$tool" >/dev/null || skip "$tool not installed (Debian: iproute2, util-linux, nftables, python3)"
done
if [ -z "${AEGIS_NETNS_INNER:-}" ]; then
    mountpoint -q / || skip "/ is not a mount point (chroot?): cannot keep netns/bpffs mounts private"
    unshare --mount true 2>/dev/null || skip "root but cannot create a mount namespace (no CAP_SYS_ADMIN?)"
    exec env AEGIS_NETNS_INNER=1 unshare --mount --propagation private "$0" "$@"
fi
mount -t bpf bpf /sys/fs/bpf 2>/dev/null || skip "cannot mount a private bpffs on /sys/fs/bpf"

T=$(mktemp -d "${TMPDIR:-/tmp}/aegis-agent-netns.XXXXXX")
chmod 0711 "$T"
NS=aegn$$         # the agent's namespace
VH=aeh$$ VA=aea$$ # veth ends: root namespace / agent namespace
CPID="" APID="" SPID="" LPID="" WPID=""
cleanup() {
    local rc=$?
    stop "$APID"
    stop "$CPID"
    stop "$SPID"
    stop "$LPID"
    stop "$WPID"
    ip link del "$VH" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
        echo "--- control log"; tail -n 40 "$T/control.log" 2>/dev/null || true
        echo "--- agent log"; tail -n 60 "$T/agent.log" 2>/dev/null || true
    fi
    [ -n "${AEGIS_KEEP_TMP:-}" ] || rm -rf "$T"
    exit $rc
}
trap cleanup EXIT
trap 'exit 143' INT TERM
exec 3>&2 # fail() reports here even from inside a wait_for condition
fail() { echo "FAIL: $*" >&3; exit 1; }
# Watchdog: a run that is stuck ends itself (with cleanup) before ctest's TIMEOUT
# (420 s) would kill it without any; a passing run takes 95-130 s.
(
    sleep "${AEGIS_NETNS_DEADLINE:-360}" &
    sp=$!
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    wait "$sp" && echo "FAIL: test deadline (${AEGIS_NETNS_DEADLINE:-360} s) reached" >&3 && kill -TERM $$
) &
WPID=$!
step() { echo "== $* (t=${SECONDS}s)"; }
# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds or SECONDS of wall
# time have passed (CMD itself may take a while: aegisctl waits for its server).
# in_ns CMD...: CMD in the agent's namespace. Not for background starts: $! must be
# the program's PID (nsenter execs it), so those call nsenter directly.
in_ns() { nsenter --net="/run/netns/$NS" "$@"; }

# ---- network: one /24 per run, two /30s in it (the second for the address change)
NET=""
for i in $(seq 0 20); do
    n=10.$((128 + ($$ + i) % 64)).$((($$ / 64 + i * 7) % 256))
    if ! ip -o -4 addr show | grep -q " inet $n\."; then NET=$n; break; fi
done
[ -n "$NET" ] || fail "no free 10.x.y.0/24 for the test network"
SRV=$NET.1 AIP=$NET.2 SRV2=$NET.5 AIP2=$NET.6
ip netns add "$NS" 2>"$T/net.log" || skip "root but cannot create network namespaces: $(cat "$T/net.log")"
{
    ip link add "$VH" type veth peer name "$VA" netns "$NS" &&
        ip addr add "$SRV/30" dev "$VH" && ip link set "$VH" up &&
        ip -n "$NS" link set lo up &&
        ip -n "$NS" addr add "$AIP/30" dev "$VA" && ip -n "$NS" link set "$VA" up
} >>"$T/net.log" 2>&1 || fail "cannot wire $NS: $(cat "$T/net.log")"
wait_for 10 in_ns "$PROBE" ping "$SRV" 500 || fail "$NS cannot reach $SRV over the veth"

# ---- inbound: every NEW inbound connection in the agent's namespace is dropped
step "inbound: nftables drops inbound NEW connections in $NS"
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])'; }
LPORT=$(free_port)
nsenter --net="/run/netns/$NS" "$PROBE" serve 600 "$LPORT" </dev/null >"$T/listen.log" 2>&1 &
LPID=$!
wait_for 10 grep -q ready "$T/listen.log" || fail "no listener in $NS"
"$PROBE" tcp "$AIP" "$LPORT" 2000 >/dev/null 2>&1 || fail "root -> $NS tcp/$LPORT fails even without the firewall"
in_ns nft -f - <<EOF || fail "cannot install the nftables rules"
table inet aegis_inbound {
    chain input {
        type filter hook input priority 0; policy accept;
        ct state established,related accept
        ct state new counter drop
    }
}
EOF
if "$PROBE" tcp "$AIP" "$LPORT" 1000 >/dev/null 2>&1; then
    fail "root -> $NS tcp/$LPORT still connects: the inbound drop is not in force"
fi
stop "$LPID"; LPID=""
dropped_new() { in_ns nft list chain inet aegis_inbound input | sed -n 's/.*counter packets \([0-9]*\).*drop.*/\1/p'; }
[ "$(dropped_new)" -ge 1 ] || fail "the nftables drop counter did not move"
echo "ok: a new inbound TCP connection into $NS is dropped"

# ---- control server, PKI, operator
PKI=$T/pki
PORT=$(free_port)
"$CERTS" init --dir "$PKI" >/dev/null
"$CERTS" server --name aegis-control.test --ip "$SRV" --dir "$PKI" >/dev/null
PIN=$("$CERTS" pin "$PKI/server.pem")
[ -n "$PIN" ] || fail "aegis-certs pin printed nothing"
"$CERTS" operator --name tester --dir "$PKI" >/dev/null
mkdir -p "$T/sign" "$PKI/artifact-keys"
export AEGIS_SERVER=$SRV:$PORT AEGIS_PIN=$PIN
export AEGIS_CERT=$PKI/operator-tester.pem AEGIS_KEY=$PKI/operator-tester.key
export HOME=$T # no stray ~/.config/aegis/aegisctl.conf
"$CTL" artifacts keygen --out "$T/sign/ops" >/dev/null
cp "$T/sign/ops.pub" "$PKI/artifact-keys/ops.pub"
"$CONTROL" --db "$AEGIS_TEST_PG_DSN" --pki "$PKI" --listen "$SRV:$PORT" \
    --metrics-listen off </dev/null >>"$T/control.log" 2>&1 &
CPID=$!
ctl_up() { kill -0 "$CPID" 2>/dev/null || fail "aegis-control exited"; "$CTL" --timeout 5s tokens list; }
wait_for 30 ctl_up || fail "aegis-control did not answer within 30 s"

# cmd_shows ID WORD: the delivery of command ID mentions WORD.
cmd_shows() { "$CTL" commands show "$1" | grep -qi "$2"; }
send() { "$CTL" commands send --agent "$AID" "$@" | awk '/^command/ {print $2}'; }
auths() { grep -c 'event=authenticated' "$T/agent.log" || true; }
agent_online() { "$CTL" agents list --status online | grep -q "$AID"; }
# wait_ok SECONDS ID...: every command ID is acked succeeded in time.
wait_ok() {
    local secs=$1 id
    shift
    for id in "$@"; do
        wait_for "$secs" cmd_shows "$id" succeeded || fail "command $id not succeeded: $("$CTL" commands show "$id")"
    done
}

# ---- enroll and run, from inside the namespace
step "inbound: enroll, run, command, artifact, telemetry"
TOKEN=$("$CTL" tokens create --labels env=netns 2>/dev/null | awk '/^secret:/ {print $2}')
[ -n "$TOKEN" ] || fail "aegisctl tokens create printed no secret"
echo "aegis-netns-test-$$" >"$T/machine-id"
in_ns "$AGENT" enroll --server "$SRV:$PORT" --pin "$PIN" --token "$TOKEN" \
    --state-dir "$T/state" --machine-id-file "$T/machine-id" >>"$T/agent.log" 2>&1 ||
    fail "enroll from $NS failed"
AID=$(cat "$T/state/agent.id")
nsenter --net="/run/netns/$NS" "$AGENT" run --state-dir "$T/state" --machine-id-file "$T/machine-id" --log-level debug \
    --iface "$VA" --bpf-pin-dir /sys/fs/bpf/aegis-netns-$$ </dev/null >>"$T/agent.log" 2>&1 &
APID=$!
wait_for 30 grep -q 'event=authenticated' "$T/agent.log" || fail "agent did not authenticate"
[ "$(readlink -f "/proc/$APID/exe")" = "$(readlink -f "$AGENT")" ] || fail "\$! is not the agent's PID"
CID=$(send --action ping)
[ -n "$CID" ] || fail "commands send printed no id"
wait_ok 30 "$CID"
head -c 200000 /dev/urandom >"$T/blob"
SHA=$("$CTL" --no-progress artifacts upload "$T/blob" --name blob --kind file \
    --signing-key "$T/sign/ops" --compress 2>>"$T/ctl.err" | awk '/^sha256:/ {print $2}')
[ -n "$SHA" ] || fail "artifacts upload printed no sha256"
CIDA=$(send --artifact "$SHA")
wait_ok 60 "$CIDA"
cmp "$T/blob" "$T/state/artifacts/$SHA.blob.data" || fail "loaded artifact differs from the upload"
wait_for 60 sh -c "'$CTL' telemetry query --agent '$AID' | grep -q command_succeeded" ||
    fail "no telemetry from the agent: $("$CTL" telemetry query --agent "$AID" | tail -n 3)"
[ "$(dropped_new)" -ge 1 ] || fail "nftables rules gone"
echo "ok: enroll, run, command, artifact and telemetry behind an inbound drop"

# ---- policy: push, promote, enforce, counters, rollback
step "policy: push and promote seed-004 allow-lists"
PA=$(free_port) PB=$(free_port)
[ "$PA" != "$PB" ] || PB=$(free_port)
"$PROBE" serve 600 "$PA" "$PB" </dev/null >"$T/serve.log" 2>&1 &
SPID=$!
wait_for 10 grep -q ready "$T/serve.log" || fail "no probe server in the root namespace"
reach() { in_ns "$PROBE" tcp "$SRV" "$1" "${2:-3000}" >/dev/null 2>&1; }
reach "$PA" && reach "$PB" || fail "$NS cannot reach tcp/$PA and tcp/$PB before any policy"
SVC=$((4000 + $$ % 1000))
# v1 allows the control port and both TCP ports; v2 only the control port and PA.
cat >"$T/policy1.json" <<EOF
{"version": 1, "service_id": $SVC,
 "edges": [{"id": 11, "dst_cidr": "$SRV/32", "proto": "udp", "port": $PORT},
           {"id": 12, "dst_cidr": "$SRV/32", "proto": "tcp", "port": $PA},
           {"id": 13, "dst_cidr": "$SRV/32", "proto": "tcp", "port": $PB}],
 "egress_mode": "allow", "ingress_mode": "off", "ttl_seconds": 3600,
 "expiry_action": "fail_open", "meta": {"note": "test_agent_netns v1"}}
EOF
cat >"$T/policy2.json" <<EOF
{"version": 2, "service_id": $SVC,
 "edges": [{"id": 21, "dst_cidr": "$SRV/32", "proto": "udp", "port": $PORT},
           {"id": 22, "dst_cidr": "$SRV/32", "proto": "tcp", "port": $PA}],
 "egress_mode": "allow", "ingress_mode": "off", "ttl_seconds": 3600,
 "expiry_action": "fail_open", "meta": {"note": "test_agent_netns v2"}}
EOF
# promote_file FILE: push FILE for this agent, promote it, wait for the agent's ack;
# sets VER to the version.
promote_file() {
    local out ver cid
    out=$("$CTL" policies push "$1" --agent "$AID" --comment "test_agent_netns" 2>&1) ||
        fail "policies push $1: $out"
    ver=$(printf '%s\n' "$out" | sed -n 's/.*stored service [0-9]* version \([0-9]*\).*/\1/p')
    [ -n "$ver" ] || fail "no version in: $out"
    out=$("$CTL" policies promote "$ver" --service "$SVC" 2>&1) || fail "policies promote $ver: $out"
    cid=$(printf '%s\n' "$out" | sed -n 's/.*; command \([0-9a-f-]*\).*/\1/p' | head -n 1)
    [ -n "$cid" ] || fail "no command id in: $out"
    wait_ok 60 "$cid"
    VER=$ver
}
promote_file "$T/policy1.json"
V1=$VER
promote_file "$T/policy2.json"
V2=$VER
reach "$PA" || fail "the allowed tcp/$PA is blocked under version $V2"
if reach "$PB" 1000; then fail "the blocked tcp/$PB still connects under version $V2"; fi
reach "$PA" || fail "tcp/$PA blocked after the blocked attempt"
echo "ok: version $V2 enforced: tcp/$PA connects, tcp/$PB does not"
# rule_count ID: the largest aegis_rule_packets_total sample of rule ID in telemetry
# (rows: TIME AGENT metric NAME VALUE {labels}).
rule_count() {
    "$CTL" telemetry query --agent "$AID" --metric aegis_rule_packets_total --limit 5000 |
        awk -v id="$1" '$0 ~ "rule_id=" id "[^0-9]" || $0 ~ "rule_id=" id "$" {
            for (i = 1; i < NF; i++) if ($i == "aegis_rule_packets_total" && $(i + 1) + 0 > best) best = $(i + 1) + 0
        } END { print best + 0 }'
}
rule_seen() { [ "$(rule_count "$1")" -gt 0 ]; }
wait_for 90 rule_seen 22 || fail "no non-zero counter for rule 22 (tcp/$PA) in telemetry: $("$CTL" telemetry query --agent "$AID" --metric aegis_rule_packets_total | tail -n 5)"
wait_for 30 rule_seen 21 || fail "no non-zero counter for rule 21 (the control port) in telemetry"
echo "ok: rule counters in telemetry: rule 21 = $(rule_count 21), rule 22 = $(rule_count 22)"
step "policy: rollback"
out=$("$CTL" policies rollback --service "$SVC" 2>&1) || fail "policies rollback: $out"
printf '%s\n' "$out" | grep -q "rolled back to service $SVC version $V1" || fail "rollback did not restore $V1: $out"
RCID=$(printf '%s\n' "$out" | sed -n 's/.*; command \([0-9a-f-]*\).*/\1/p' | head -n 1)
[ -n "$RCID" ] || fail "no command id in: $out"
wait_ok 60 "$RCID"
reach "$PB" || fail "tcp/$PB still blocked after the rollback to version $V1"
reach "$PA" || fail "tcp/$PA blocked after the rollback to version $V1"
echo "ok: rollback to version $V1 reopened tcp/$PB"
stop "$SPID"; SPID=""

# ---- loss: 20 % both ways
step "loss: 20 % packet loss on the agent's link"
LOSS=""
if in_ns tc qdisc add dev "$VA" root netem loss 20% 2>/dev/null; then
    tc qdisc add dev "$VH" root netem loss 20% || fail "netem on $VH"
    LOSS=netem
else
    echo "note: no tc netem in this kernel (sch_netem): 20 % loss by an nftables random drop"
    in_ns nft -f - <<EOF || fail "cannot install the nftables loss rules"
table inet aegis_loss {
    chain input {
        type filter hook input priority -10; policy accept;
        iifname "$VA" numgen random mod 100 < 20 counter drop
    }
    chain output {
        type filter hook output priority -10; policy accept;
        oifname "$VA" numgen random mod 100 < 20 counter drop
    }
}
EOF
    LOSS=nft
fi
ids=()
for i in 1 2 3 4 5; do
    id=$(send --action ping)
    [ -n "$id" ] || fail "commands send $i under loss printed no id"
    ids+=("$id")
done
wait_ok 90 "${ids[@]}"
if [ "$LOSS" = netem ]; then
    echo "note: netem: $(in_ns tc -s qdisc show dev "$VA" | grep -o 'dropped [0-9]*' | head -n 1) on $VA"
    in_ns tc qdisc del dev "$VA" root
    tc qdisc del dev "$VH" root
else
    lost=$(in_ns nft list table inet aegis_loss | awk '{ for (i = 1; i < NF; i++) if ($i == "packets") n += $(i + 1) } END { print n + 0 }')
    in_ns nft delete table inet aegis_loss
    [ "${lost:-0}" -ge 1 ] || fail "the loss rules dropped nothing"
    echo "note: the loss rules dropped $lost packets"
fi
echo "ok: 5 commands delivered and acked under 20 % loss ($LOSS)"

# ---- partition: link down 20 s
step "partition: link down for 20 s"
a0=$(auths)
C1=$(send --action ping)
ip -n "$NS" link set "$VA" down
PART_START=$SECONDS
C2=$(send --action ping)
C3=$(send --inventory)
[ -n "$C1" ] && [ -n "$C2" ] && [ -n "$C3" ] || fail "commands send during the partition printed no id"
while [ $((SECONDS - PART_START)) -lt 20 ]; do sleep 0.5; done # the partition itself
ip -n "$NS" link set "$VA" up
wait_ok 120 "$C1" "$C2" "$C3"
wait_for 30 agent_online || fail "agent not online after the partition"
echo "ok: after 20 s down, the 3 commands sent before/during the partition succeeded ($((SECONDS - PART_START)) s, $(($(auths) - a0)) new Authenticate)"

# ---- migrate: the agent's address changes mid-connection
step "migrate: $AIP -> $AIP2"
wait_for 30 agent_online || fail "agent not online before the address change"
before=$(auths)
discs=$(grep -c 'event=disconnected' "$T/agent.log" || true)
ip addr add "$SRV2/30" dev "$VH"
in_ns nft -f - <<EOF || fail "cannot install the address counter"
table inet aegis_addr {
    chain output {
        type filter hook output priority 0; policy accept;
        ip saddr $AIP2 ip daddr $SRV udp dport $PORT counter
    }
}
EOF
{
    ip -n "$NS" addr add "$AIP2/30" dev "$VA" &&
        ip -n "$NS" route add "$SRV/32" dev "$VA" src "$AIP2" &&
        ip -n "$NS" addr del "$AIP/30" dev "$VA"
} >>"$T/net.log" 2>&1 || fail "cannot change the agent's address: $(tail -n 3 "$T/net.log")"
in_ns ip -4 addr show dev "$VA" | grep -q "inet $AIP/" && fail "old address still there"
C4=$(send --action ping)
[ -n "$C4" ] || fail "commands send after the address change printed no id"
wait_ok 60 "$C4"
new_pkts() { in_ns nft list table inet aegis_addr | sed -n 's/.*counter packets \([0-9]*\).*/\1/p'; }
[ "$(new_pkts)" -ge 1 ] || fail "no QUIC packet left from the new address $AIP2"
[ "$(auths)" = "$before" ] || fail "the agent authenticated again after the address change ($before -> $(auths))"
[ "$(grep -c 'event=disconnected' "$T/agent.log" || true)" = "$discs" ] ||
    fail "the connection dropped on the address change"
agent_online || fail "the server does not show the agent online after the address change"
echo "ok: the connection moved to $AIP2 ($(new_pkts) packets) without a new Authenticate"
"$AGENT" status --state-dir "$T/state" | grep -q "connected" || fail "status does not say connected"
echo "PASS"
