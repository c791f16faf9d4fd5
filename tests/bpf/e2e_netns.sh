#!/bin/bash
# End-to-end enforcement test in two network namespaces joined by a veth pair.
# usage: e2e_netns.sh AEGIS_BPF AEGIS_BPF_PROBE
#
# "A" is the protected host (programs on its veth "va"), "B" the peer. The test
# runs in a private mount namespace with its own bpffs, so nothing is pinned in
# the host's /sys/fs/bpf; namespaces, servers and files are removed on every
# exit path (trap). Every probe has a timeout. Exit 77 = skipped (not root).
set -u
BPF=${1:?aegis-bpf path}
PROBE=${2:?aegis-bpf-probe path}

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: needs root (creates network namespaces, loads BPF programs); CI runs it as root"
    exit 77
fi
for tool in ip nsenter unshare mount; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIP: $tool not installed (Debian: iproute2 / util-linux)"
        exit 77
    fi
done
if [ -z "${AEGIS_E2E_INNER:-}" ] && ! mountpoint -q /; then
    echo "SKIP: / is not a mount point (chroot?): a private mount namespace cannot keep netns/bpffs mounts off the host; run in a VM/container or bind-mount the chroot onto itself"
    exit 77
fi
if [ -z "${AEGIS_E2E_INNER:-}" ] && ! unshare --mount true 2>/dev/null; then
    echo "SKIP: root but cannot create a mount namespace (no CAP_SYS_ADMIN; container?)"
    exit 77
fi
if [ -z "${AEGIS_E2E_INNER:-}" ]; then
    exec env AEGIS_E2E_INNER=1 unshare --mount --propagation private "$0" "$@"
fi
mount -t bpf bpf /sys/fs/bpf || { echo "FAIL: cannot mount a private bpffs"; exit 1; }

RUN=aeg$$
NSA=${RUN}a
NSB=${RUN}b
PIN=/sys/fs/bpf/aegis-e2e
TMP=$(mktemp -d /tmp/aegis-e2e.XXXXXX)
PIDS=()
FAILS=0

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    ip netns del "$NSA" 2>/dev/null
    ip netns del "$NSB" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

A() { nsenter --net=/run/netns/"$NSA" "$@"; }
B() { nsenter --net=/run/netns/"$NSB" "$@"; }
ctl() { A "$BPF" --pin-dir "$PIN" "$@"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
step() { echo "== $*"; }

# ok DESC CMD...: the probe must succeed; blocked DESC CMD...: must not.
ok() { local d=$1; shift; if "$@" >/dev/null 2>&1; then echo "ok: $d"; else fail "$d (expected to pass)"; fi; }
blocked() { local d=$1; shift; if "$@" >/dev/null 2>&1; then fail "$d (expected to be blocked)"; else echo "ok: $d blocked"; fi; }
tcpAB() { A "$PROBE" tcp "$1" "$2" "${3:-2000}"; }
tcpBA() { B "$PROBE" tcp "$1" "$2" "${3:-2000}"; }
udpAB() { A "$PROBE" udp "$1" "$2" "${3:-2000}"; }
pingAB() { A "$PROBE" ping "$1" "${2:-2000}"; }
SHORT=700 # ms: enough on a veth for a probe that is going to be dropped anyway

apply() { # apply NAME JSON [--backdate S]
    local f=$TMP/$1.json
    printf '%s\n' "$2" >"$f"
    shift 2
    ctl apply "$f" "$@" >/dev/null || fail "apply $f"
}

stat_field() { # stat_field DIR FIELD -> number from `stats --json`
    ctl stats --json | sed -n "s/.*\"$1\":{[^}]*\"$2\":\([0-9]*\).*/\1/p"
}

wait_ready() { # wait_ready FILE: bounded wait for a server's "ready" line
    local i
    for ((i = 0; i < 100; i++)); do
        grep -q ready "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

step "setup: namespaces $NSA/$NSB, veth va/vb"
if ! ip netns add "$NSA"; then
    echo "SKIP: root but cannot create network namespaces (container without CAP_SYS_ADMIN?)"
    exit 77
fi
ip netns add "$NSB" || { echo "FAIL: ip netns add $NSB"; exit 1; }
ip -n "$NSA" link add va type veth peer name vb netns "$NSB" || { echo "FAIL: veth"; exit 1; }
ip -n "$NSA" addr add 10.77.0.1/24 dev va
ip -n "$NSB" addr add 10.77.0.2/24 dev vb
ip -n "$NSA" addr add fd77::1/64 dev va nodad
ip -n "$NSB" addr add fd77::2/64 dev vb nodad
ip -n "$NSA" link set va up && ip -n "$NSB" link set vb up && ip -n "$NSA" link set lo up &&
    ip -n "$NSB" link set lo up || { echo "FAIL: link up"; exit 1; }

# exec in the subshell: $! must be the probe itself (cleanup kills $!), not a
# subshell whose nsenter child would outlive it.
(exec nsenter --net=/run/netns/"$NSB" "$PROBE" serve 300 8080 8081 7777) >"$TMP/srvB" 2>&1 &
PIDS+=($!)
(exec nsenter --net=/run/netns/"$NSA" "$PROBE" serve 300 9090 9091) >"$TMP/srvA" 2>&1 &
PIDS+=($!)
wait_ready "$TMP/srvB" && wait_ready "$TMP/srvA" || { echo "FAIL: probe servers did not start"; exit 1; }

# Someone else's clsact qdisc on va: detach must leave it alone.
FOREIGN=0
if A tc qdisc add dev va clsact 2>/dev/null; then FOREIGN=1; fi

step "load + attach"
ctl load >/dev/null || { echo "FAIL: load"; exit 1; }
ctl attach --dev va --dir both || { echo "FAIL: attach"; exit 1; }
ctl status | grep -q "attached: dev=va ifindex=[0-9]* dir=egress" || fail "status lists the egress attachment"

step "baseline: no policy, everything passes"
ok "tcp A->B 8080" tcpAB 10.77.0.2 8080
ok "udp A->B 7777" udpAB 10.77.0.2 7777
ok "ping A->B" pingAB 10.77.0.2
ok "tcp6 A->B 8080" tcpAB fd77::2 8080
ok "ping6 A->B" pingAB fd77::2
ok "tcp B->A 9090" tcpBA 10.77.0.1 9090

step "deny-list on egress (seed 001 network_block)"
apply deny1 '{"version":1,"service_id":1,"ttl_seconds":3600,"egress_mode":"deny",
  "deny":[{"cidr":"10.77.0.2/32","proto":"tcp","port":8080,"id":1}]}'
blocked "tcp A->B 8080" tcpAB 10.77.0.2 8080 $SHORT
ok "tcp A->B 8081" tcpAB 10.77.0.2 8081
ok "ping A->B" pingAB 10.77.0.2
ok "tcp6 A->B 8080 (rule is v4)" tcpAB fd77::2 8080
d=$(stat_field egress drop_rule)
[ "${d:-0}" -ge 1 ] || fail "egress drop_rule counter is ${d:-?}, expected >= 1"

step "allow-list both directions, replies pass"
apply allow1 '{"version":2,"service_id":1,"ttl_seconds":3600,"egress_mode":"allow","ingress_mode":"allow",
  "edges":[{"dst_cidr":"10.77.0.2/32","proto":"tcp","port":8080},
           {"dst_cidr":"fd77::2/128","proto":"udp","port":7777},
           {"dst_cidr":"10.77.0.0/24","proto":"icmp","port":0}]}'
ok "tcp A->B 8080 (reply via flow table)" tcpAB 10.77.0.2 8080
blocked "tcp A->B 8081" tcpAB 10.77.0.2 8081 $SHORT
blocked "tcp B->A 9090" tcpBA 10.77.0.1 9090 $SHORT
ok "ping A->B" pingAB 10.77.0.2
ok "udp6 A->B 7777" udpAB fd77::2 7777
blocked "udp A->B 7777 (v4 not allowed)" udpAB 10.77.0.2 7777 $SHORT
blocked "ping6 A->B" pingAB fd77::2 $SHORT
f=$(stat_field ingress pass_flow)
[ "${f:-0}" -ge 1 ] || fail "ingress pass_flow counter is ${f:-?}, expected >= 1"

step "ingress rules"
apply in1 '{"version":3,"service_id":1,"ttl_seconds":3600,"egress_mode":"off","ingress_mode":"allow",
  "allow_cidrs":[{"cidr":"10.77.0.2/32","proto":"tcp","port":9090,"direction":"ingress"}]}'
ok "tcp B->A 9090" tcpBA 10.77.0.1 9090
blocked "tcp B->A 9091" tcpBA 10.77.0.1 9091 $SHORT
ok "tcp A->B 8080 (egress off opens flows for ingress replies)" tcpAB 10.77.0.2 8080
apply in2 '{"version":4,"service_id":1,"ttl_seconds":3600,"egress_mode":"off","ingress_mode":"deny",
  "deny":[{"cidr":"fd77::2/128","proto":"tcp","port":9090}]}'
blocked "tcp6 B->A 9090" tcpBA fd77::1 9090 $SHORT
ok "tcp B->A 9090 (v4)" tcpBA 10.77.0.1 9090
ok "tcp6 B->A 9091" tcpBA fd77::1 9091

step "TTL expiry, both actions"
OPEN='{"version":5,"service_id":1,"ttl_seconds":60,"expiry_action":"fail_open",
  "edges":[{"dst_cidr":"10.77.0.2/32","proto":"tcp","port":8080}]}'
CLOSED='{"version":6,"service_id":1,"ttl_seconds":60,"expiry_action":"fail_closed",
  "edges":[{"dst_cidr":"10.77.0.2/32","proto":"tcp","port":8080}]}'
apply ttl1 "$OPEN"
blocked "tcp A->B 8081 before expiry" tcpAB 10.77.0.2 8081 $SHORT
apply ttl2 "$OPEN" --backdate 61
ok "tcp A->B 8081 after expiry (fail_open)" tcpAB 10.77.0.2 8081
ctl status | grep -q "(expired)" || fail "status shows the version as expired"
apply ttl3 "$CLOSED"
ok "tcp A->B 8080 before expiry" tcpAB 10.77.0.2 8080
apply ttl4 "$CLOSED" --backdate 61
blocked "tcp A->B 8080 after expiry (fail_closed)" tcpAB 10.77.0.2 8080 $SHORT

step "200 versions swapped under live traffic"
apply base '{"version":7,"service_id":1,"ttl_seconds":3600,"egress_mode":"allow","ingress_mode":"allow",
  "edges":[{"dst_cidr":"10.77.0.2/32","proto":"udp","port":7777}]}'
d0=$(( $(stat_field egress drop) + $(stat_field ingress drop) ))
rm -f "$TMP/stop"
(exec nsenter --net=/run/netns/"$NSA" "$PROBE" udpstream 10.77.0.2 7777 "$TMP/stop" 120) >"$TMP/stream" 2>&1 &
STREAM=$!
PIDS+=($STREAM)
for ((v = 100; v < 300; v++)); do
    fill=""
    for ((k = 0; k < 20; k++)); do
        fill="$fill,{\"dst_cidr\":\"172.$((v % 200)).$k.0/24\",\"proto\":\"tcp\",\"port\":$((1000 + k))}"
    done
    if ((v % 2)); then cidr=10.77.0.2/32; else cidr=10.77.0.0/24; fi
    printf '{"version":%d,"service_id":1,"ttl_seconds":3600,"egress_mode":"allow","ingress_mode":"allow","edges":[{"dst_cidr":"%s","proto":"udp","port":7777}%s]}\n' \
        "$v" "$cidr" "$fill" >"$TMP/swap.json"
    ctl apply "$TMP/swap.json" >/dev/null || { fail "apply version $v"; break; }
done
touch "$TMP/stop"
wait "$STREAM"
rc=$?
cat "$TMP/stream"
[ $rc = 0 ] || fail "allowed UDP flow lost datagrams during the swaps: $(cat "$TMP/stream")"
d1=$(( $(stat_field egress drop) + $(stat_field ingress drop) ))
[ "$d1" = "$d0" ] || fail "BPF dropped $((d1 - d0)) packets during the swaps (expected 0)"
ctl status | grep -q "active: version=299" || fail "version 299 is active after the swaps"

step "rollback"
apply rb1 '{"version":400,"service_id":1,"ttl_seconds":3600,"egress_mode":"deny",
  "deny":[{"cidr":"10.77.0.2/32","proto":"tcp","port":8080}]}'
apply rb2 '{"version":401,"service_id":1,"ttl_seconds":3600,"egress_mode":"deny",
  "deny":[{"cidr":"10.77.0.2/32","proto":"tcp","port":8081}]}'
ok "tcp A->B 8080 under v401" tcpAB 10.77.0.2 8080
blocked "tcp A->B 8081 under v401" tcpAB 10.77.0.2 8081 $SHORT
ctl rollback || fail "rollback"
blocked "tcp A->B 8080 after rollback to v400" tcpAB 10.77.0.2 8080 $SHORT
ok "tcp A->B 8081 after rollback" tcpAB 10.77.0.2 8081
ctl rollback 2>"$TMP/rb.err" && fail "second rollback should fail"
grep -q "no previous version" "$TMP/rb.err" || fail "second rollback explains itself: $(cat "$TMP/rb.err")"

step "loader restart and program upgrade keep the policy"
ctl load --upgrade >/dev/null || fail "load --upgrade"
blocked "tcp A->B 8080 after upgrade" tcpAB 10.77.0.2 8080 $SHORT
ok "tcp A->B 8081 after upgrade" tcpAB 10.77.0.2 8081
ctl status | grep -q "active: version=400" || fail "version 400 still active after restart"

step "errors explain themselves"
ctl attach --dev nosuchif0 2>"$TMP/e1" && fail "attach to a missing interface succeeded"
grep -q 'interface "nosuchif0" not found' "$TMP/e1" || fail "missing interface message: $(cat "$TMP/e1")"
mkdir -p "$TMP/notbpffs"
A "$BPF" --pin-dir "$TMP/notbpffs/aegis" status 2>"$TMP/e2" && fail "status on a non-bpffs dir succeeded"
grep -q "mount -t bpf bpf" "$TMP/e2" || fail "bpffs message: $(cat "$TMP/e2")"

step "detach restores traffic and leaves foreign state alone"
ctl detach --dev va || fail "detach"
ok "tcp A->B 8080 after detach" tcpAB 10.77.0.2 8080
ctl status | grep -q "attached:" && fail "attachments left after detach"
if [ $FOREIGN = 1 ]; then
    A tc qdisc show dev va | grep -q clsact || fail "foreign clsact qdisc removed by detach"
fi
ctl detach --dev va 2>/dev/null && fail "second detach should report nothing attached"
step "clsact fallback (the path for kernels without tcx)"
ctl attach --dev va --dir both --tc || fail "attach --tc"
ctl status | grep -q "dir=egress via=clsact" || fail "status shows a clsact attachment"
A tc filter show dev va egress | grep -q "handle 0xae91" || fail "our tc filter is on va egress"
blocked "tcp A->B 8080 via clsact (version 400)" tcpAB 10.77.0.2 8080 $SHORT
ok "tcp A->B 8081 via clsact" tcpAB 10.77.0.2 8081
# A filter someone else added to the same qdisc must survive our detach.
OTHER=0
if A tc filter add dev va ingress prio 3 handle 3 bpf da pinned "$PIN/prog_ingress" 2>/dev/null; then
    OTHER=1
fi
ctl detach --dev va || fail "detach (clsact)"
A tc filter show dev va egress | grep -q "handle 0xae91" && fail "our tc filter left behind"
if [ $OTHER = 0 ]; then
    echo "note: could not add a foreign tc filter here; that check is skipped"
fi
if [ $OTHER = 1 ]; then
    A tc filter show dev va ingress | grep -q "handle 0x3" || fail "foreign tc filter removed"
    A tc filter del dev va ingress prio 3 handle 3 bpf
fi
A tc qdisc show dev va | grep -q clsact || fail "clsact qdisc removed (it may hold others' filters)"
ok "tcp A->B 8080 after clsact detach" tcpAB 10.77.0.2 8080

ctl purge || fail "purge"

if [ $FAILS -ne 0 ]; then
    echo "e2e: $FAILS failure(s)"
    exit 1
fi
echo "e2e: all passed"
exit 0
