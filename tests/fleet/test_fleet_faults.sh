#!/usr/bin/env bash
# Fault suite (issue 7, ctest label `faults`): ~200 agents against the real aegis-control and
# PostgreSQL (run under tests/support/pgtmp.sh) while a stream of commands flows, and ONE AT A
# TIME: the control server is killed (-9) and restarted, a real agent is killed (-9) and
# restarted, PostgreSQL is restarted (immediate), a partition cuts half the agents for 20 s,
# and 15 % packet loss is applied for 20 s. At the end every command must have taken effect
# exactly once on every target agent and every delivery must be recorded SUCCEEDED.
#
# Topology (root, network namespaces; all deleted at the end):
#   hub   bridge br0 10.214.0.1/24, aegis-control listens on 10.214.0.1:4433, aegisctl runs here
#   sa,sb two aegis-fleet-sim processes (half the simulated agents each), 10.214.0.11 / .12
#   r1..  real aegis-agent processes (their own journals), 10.214.0.21..
# The partition takes sb's link down; the loss is nftables `numgen random` drops on br0 in
# both directions (netem is not needed, so it works where sch_netem is not available).
#
# Counts: a simulated agent records every command id it sees in memory; the first sight
# takes effect, a redelivery is acknowledged as a duplicate (aegis-fleet-sim summary lines
# `agent=ID command=ID effects=K`). A real agent logs `event=command_done command=ID` once per
# execution. The expected set is the deliveries table: one row per (agent, command).
#
# Usage: test_fleet_faults.sh SIM CONTROL AEGISCTL AEGIS-CERTS AEGIS-AGENT
# Tunables: FAULTS_N (total agents, default 200), FAULTS_REAL (real agents, default 4),
# FAULTS_INTERVAL (seconds between commands, default 1), AEGIS_KEEP_TMP=1 keeps the work dir.
# Every wait polls a condition with a deadline; the only fixed waits hold a fault for its
# duration (and pace the command stream). Every process is stopped by its PID.
set -euo pipefail
# stop PID [SIGNAL], wait_for SECS CMD...
. "$(dirname "${BASH_SOURCE[0]}")/../support/proc.sh"

SIM=$1 CONTROL=$2 CTL=$3 CERTS=$4 AGENT=$5
N=${FAULTS_N:-200} NREAL=${FAULTS_REAL:-4} INTERVAL=${FAULTS_INTERVAL:-1}
MAX_COMMANDS=400 # bound of the command stream
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, nftables); run ctest as root"
[ -n "${AEGIS_TEST_PG_DSN:-}" ] || skip "no AEGIS_TEST_PG_DSN (run under tests/support/pgtmp.sh)"
for t in ip nsenter nft psql awk; do
    command -v "$t" >/dev/null || skip "$t not found (iproute2, util-linux, nftables, postgresql-client)"
done
[ "$NREAL" -ge 1 ] && [ "$NREAL" -le 9 ] || { echo "FAULTS_REAL must be 1..9" >&2; exit 2; }
NSIM=$((N - NREAL))
[ "$NSIM" -ge 2 ] || { echo "FAULTS_N must exceed FAULTS_REAL by 2 or more" >&2; exit 2; }
NA=$((NSIM / 2)) NB=$((NSIM - NSIM / 2))

T=$(mktemp -d "${TMPDIR:-/tmp}/aegis-faults.XXXXXX")
chmod 0755 "$T"
P="af$$" # namespace and interface prefix, unique per run
HUB=${P}h
NSS=() CPID="" SAPID="" SBPID="" SENDPID=""
declare -A APID=()
T0=$SECONDS
say() { printf '[%4ds] %s\n' $((SECONDS - T0)) "$*"; }
fail() { say "FAIL: $*" >&2; exit 1; }

cleanup() {
    local rc=$? i ns
    if [ -n "$SENDPID" ]; then # let the sender finish its aegisctl call, then stop it
        touch "$T/send.stop"
        for i in $(seq 40); do kill -0 "$SENDPID" 2>/dev/null || break; sleep 0.25; done
        stop "$SENDPID"
    fi
    stop "$SAPID"; stop "$SBPID"
    for i in "${!APID[@]}"; do stop "${APID[$i]}"; done
    stop "$CPID"
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || echo "could not delete netns $ns" >&2; done
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
        echo "--- control log (tail)"; tail -n 40 "$T/control.log" 2>/dev/null || true
        for f in "$T"/sim-*.log "$T"/agent-*.log; do
            [ -f "$f" ] && { echo "--- $f (tail)"; tail -n 15 "$f"; }
        done
        echo "--- commands sent"; tail -n 5 "$T/send.log" 2>/dev/null || true
    fi
    if [ -n "${AEGIS_KEEP_TMP:-}" ]; then echo "work dir kept: $T"; else rm -rf "$T"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# in_ns NS CMD...: run CMD in a namespace. Background processes are started with nsenter
# directly (not through this function) so that $! is the process itself, which nsenter
# becomes (it execs without forking when only --net is given).
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
ctl() { in_ns "$HUB" "$CTL" --timeout 5s "$@"; }
sql() { psql "$AEGIS_TEST_PG_DSN" -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }

# ---- network -----------------------------------------------------------------------------
ip netns add "$HUB"; NSS+=("$HUB")
ip -n "$HUB" link set lo up
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" addr add 10.214.0.1/24 dev br0
ip -n "$HUB" link set br0 up
spoke() { # spoke NS HUBIF IP
    ip netns add "$1"; NSS+=("$1")
    ip -n "$1" link set lo up
    ip -n "$1" link add eth0 type veth peer name "$2" netns "$HUB"
    ip -n "$1" addr add "$3/24" dev eth0
    ip -n "$1" link set eth0 up
    ip -n "$HUB" link set "$2" master br0
    ip -n "$HUB" link set "$2" up
}
spoke "${P}a" "${P}va" 10.214.0.11
spoke "${P}b" "${P}vb" 10.214.0.12
for i in $(seq "$NREAL"); do spoke "${P}r$i" "${P}vr$i" "10.214.0.$((20 + i))"; done
say "namespaces: hub $HUB, sims ${P}a ${P}b, real agents ${P}r1..${P}r$NREAL"

# ---- PKI and control ---------------------------------------------------------------------
PKI=$T/pki
"$CERTS" init --dir "$PKI" >/dev/null
PIN=$("$CERTS" server --name localhost --ip 10.214.0.1 --dir "$PKI" | grep -o 'sha256//[A-Za-z0-9+/=]*' | head -n 1)
[ -n "$PIN" ] || fail "aegis-certs server printed no pin"
"$CERTS" operator --name faults --dir "$PKI" >/dev/null
SERVER=10.214.0.1:4433
export AEGIS_SERVER=$SERVER AEGIS_PIN=$PIN HOME=$T
export AEGIS_CERT=$PKI/operator-faults.pem AEGIS_KEY=$PKI/operator-faults.key
INSTANCE=6c1f3a52-0b7e-4d0e-9a51-3f1f6a1d2e01

start_control() {
    nsenter --net="/run/netns/$HUB" "$CONTROL" --db "$AEGIS_TEST_PG_DSN" --pki "$PKI" --listen "$SERVER" \
        --metrics-listen off --instance-id "$INSTANCE" >>"$T/control.log" 2>&1 &
    CPID=$!
    wait_for 30 ctl tokens list || fail "aegis-control did not answer within 30 s"
}
start_control
say "aegis-control up (pid $CPID)"

# ---- agents ------------------------------------------------------------------------------
TOKEN=$(ctl tokens create --uses "$NREAL" --labels fleet=bench | awk '/^secret:/ {print $2}')
[ -n "$TOKEN" ] || fail "aegisctl tokens create printed no secret"
declare -A AID=()
start_agent() { # start_agent I
    nsenter --net="/run/netns/${P}r$1" "$AGENT" run --state-dir "$T/agent$1" --machine-id-file "$T/agent$1.mid" \
        --log-level info >>"$T/agent-$1.log" 2>&1 &
    APID[$1]=$!
}
for i in $(seq "$NREAL"); do
    printf 'aegis-faults-%s-%d\n' "$$" "$i" >"$T/agent$i.mid"
    in_ns "${P}r$i" "$AGENT" enroll --server "$SERVER" --pin "$PIN" --token "$TOKEN" \
        --state-dir "$T/agent$i" --machine-id-file "$T/agent$i.mid" >>"$T/agent-$i.log" 2>&1 ||
        fail "aegis-agent enroll (agent $i) failed: $(tail -n 3 "$T/agent-$i.log")"
    AID[$i]=$(cat "$T/agent$i/agent.id")
    start_agent "$i"
done
start_sim() { # start_sim NAME NS IP N SEED
    nsenter --net="/run/netns/$2" "$SIM" --server "$SERVER" --pki "$PKI" --db "$AEGIS_TEST_PG_DSN" --n "$4" \
        --seed "$5" --bind "$3" --summary "$T/sim-$1.sum" --status-file "$T/sim-$1.status" \
        --backoff-cap-s 8 --telemetry-interval 5 --parallel 100 >>"$T/sim-$1.log" 2>&1 &
}
start_sim a "${P}a" 10.214.0.11 "$NA" $((($$ << 8) + 1)); SAPID=$!
start_sim b "${P}b" 10.214.0.12 "$NB" $((($$ << 8) + 2)); SBPID=$!

# sim_field NAME KEY: a value from the sim's status file (rewritten every second).
sim_field() { sed -n "s/.*\b$2=\([0-9.]*\).*/\1/p" "$T/sim-$1.status" 2>/dev/null; }
auths() { grep -c 'event=authenticated' "$T/agent-$1.log" 2>/dev/null || true; }
sims_ready() {
    [ "$(sim_field a ready)" = "$NA" ] && [ "$(sim_field b ready)" = "$NB" ]
}
all_ready() {
    local i
    sims_ready || return 1
    for i in $(seq "$NREAL"); do [ "$(auths "$i")" -ge 1 ] || return 1; done
}
wait_for 90 all_ready || fail "not every agent authenticated within 90 s (sims: a=$(sim_field a ready)/$NA b=$(sim_field b ready)/$NB)"
[ "$(sql "SELECT count(*) FROM agents WHERE labels->>'fleet' = 'bench'")" = "$N" ] ||
    fail "expected $N agents labelled fleet=bench in PostgreSQL"
say "all $N agents authenticated ($NA + $NB simulated, $NREAL real)"

# ---- the command stream ------------------------------------------------------------------
# One command to every agent each INTERVAL seconds, at most MAX_COMMANDS, until send.stop
# exists. A send refused during an outage is only logged: what counts is what the database
# holds (a command whose reply was lost is still delivered and checked).
sender() {
    local k
    for k in $(seq "$MAX_COMMANDS"); do
        [ -e "$T/send.stop" ] && return 0
        if ctl commands send --selector fleet=bench --action ping >>"$T/send.log" 2>&1; then
            echo "ok $k" >>"$T/send.log"
        else
            echo "refused $k" >>"$T/send.log"
        fi
        sleep "$INTERVAL"
    done
}
sender &
SENDPID=$!
say "command stream started (one ping to fleet=bench every ${INTERVAL}s)"

# settle WHAT SECONDS: the fleet is back: every agent connected and every delivery of a
# command issued before now is final (succeeded/failed/expired).
settle() {
    local what=$1 secs=$2 t0=$SECONDS cut
    cut=$(sql "SELECT now()")
    drained() {
        [ "$(sql "SELECT count(*) FROM deliveries d JOIN commands c ON c.id = d.command_id
                  WHERE c.issued_at < '$cut' AND d.status NOT IN ('succeeded','failed','expired')")" = 0 ]
    }
    wait_for "$secs" sims_ready || fail "after $what: simulated agents not all back within ${secs}s (a=$(sim_field a ready)/$NA b=$(sim_field b ready)/$NB)"
    wait_for "$secs" drained || fail "after $what: deliveries still pending after ${secs}s: $(sql "SELECT status, count(*) FROM deliveries d JOIN commands c ON c.id = d.command_id WHERE c.issued_at < '$cut' AND d.status NOT IN ('succeeded','failed','expired') GROUP BY 1" | tr '\n' ' ')"
    say "after $what: recovered in $((SECONDS - t0)) s"
}
# Let a few commands through before the first fault.
has_commands() { [ "$(sql "SELECT count(*) FROM commands")" -ge "$1" ]; }
wait_for 30 has_commands 3 || fail "no commands reach the database"
settle "warm-up" 60

# 1. the control server killed and restarted
before=$(auths 1)
say "fault 1: kill -9 aegis-control (pid $CPID), down 3 s, restart"
kill -9 "$CPID"; wait "$CPID" 2>/dev/null || true; CPID=""
sleep 3 # hold the outage
start_control
reauthed() { [ "$(auths "$1")" -gt "$2" ]; }
wait_for 90 reauthed 1 "$before" || fail "real agent 1 did not re-authenticate after the control restart"
settle "control restart" 90

# 2. a real agent killed and restarted
say "fault 2: kill -9 real agent 1 (pid ${APID[1]}), restart"
before=$(auths 1)
kill -9 "${APID[1]}"; wait "${APID[1]}" 2>/dev/null || true; APID[1]=""
start_agent 1
wait_for 60 reauthed 1 "$before" || fail "real agent 1 did not come back"
settle "agent restart" 60

# 3. PostgreSQL restarted (immediate: in-flight transactions are cut)
say "fault 3: PostgreSQL restart (immediate)"
"$AEGIS_TEST_PGTMP" restart "$AEGIS_TEST_PGTMP_DIR" immediate >/dev/null
settle "PostgreSQL restart" 90

# 4. a partition cuts sim b (half the simulated agents) for 20 s
say "fault 4: partition: ${P}b (${NB} agents) cut off for 20 s"
ip -n "$HUB" link set "${P}vb" down
sleep 20 # hold the partition
ip -n "$HUB" link set "${P}vb" up
settle "partition" 90

# 5. 15 % loss each way on the bridge for 20 s
say "fault 5: 15 % packet loss both ways for 20 s"
in_ns "$HUB" nft -f - <<'NFT'
table inet aegis_faults {
  chain in { type filter hook input priority 0; iifname "br0" numgen random mod 100 < 15 drop; }
  chain out { type filter hook output priority 0; oifname "br0" numgen random mod 100 < 15 drop; }
}
NFT
sleep 20 # hold the loss
in_ns "$HUB" nft delete table inet aegis_faults
settle "packet loss" 90

# ---- drain and count -----------------------------------------------------------------------
touch "$T/send.stop"
wait_for 20 sh -c "! kill -0 $SENDPID" || fail "the command sender did not stop"
wait "$SENDPID" 2>/dev/null || true; SENDPID=""
settle "the last command" 90

stop "$SAPID"; SAPID=""
stop "$SBPID"; SBPID=""
for i in $(seq "$NREAL"); do stop "${APID[$i]}"; APID[$i]=""; done
for s in a b; do [ -s "$T/sim-$s.sum" ] || fail "sim $s wrote no summary"; done

# expected: one line "AGENT COMMAND STATUS" per delivery
sql "SELECT agent_id, command_id, status, coalesce(detail, '') FROM deliveries" | tr '|' ' ' >"$T/expected"
# effects: "AGENT COMMAND K" from the sims and from the real agents' logs
awk '/^agent=/ { split($1, a, "="); split($2, c, "="); split($3, e, "="); print a[2], c[2], e[2] }' \
    "$T/sim-a.sum" "$T/sim-b.sum" >"$T/effects"
for i in $(seq "$NREAL"); do
    grep -o 'event=command_done command=[0-9a-f-]*' "$T/agent-$i.log" | sed 's/.*command=//' |
        sort | uniq -c | awk -v a="${AID[$i]}" '{ print a, $2, $1 }' >>"$T/effects"
done
NCMD=$(sql "SELECT count(*) FROM commands")
NDEL=$(wc -l <"$T/expected")
SENT_OK=$(grep -c '^ok ' "$T/send.log" || true)
REFUSED=$(grep -c '^refused ' "$T/send.log" || true)
REDELIVERED=$(awk '/^agent=/ { split($4, r, "="); if (r[2] > 1) n++ } END { print n + 0 }' "$T/sim-a.sum" "$T/sim-b.sum")
say "commands in PostgreSQL: $NCMD (aegisctl: $SENT_OK ok, $REFUSED refused); deliveries: $NDEL; simulated (agent, command) pairs received more than once: $REDELIVERED"
head -n 1 "$T/sim-a.sum"; head -n 1 "$T/sim-b.sum"

[ "$NCMD" -ge 20 ] || fail "only $NCMD commands were issued"
[ "$NDEL" = $((NCMD * N)) ] || fail "$NDEL deliveries for $NCMD commands x $N agents"
# One pass: every delivery succeeded and took effect exactly once; no effect without delivery.
# The one allowed exception is the real agent's documented crash rule: a command it was
# running when killed (-9) is acked FAILED "interrupted" and never re-run (effects 0); only
# agent 1 is killed, once, so at most one such delivery.
awk -v out="$T/violations" -v killed="${AID[1]}" '
    FNR == NR {
        want[$1 " " $2] = $3
        if ($1 == killed && $3 == "failed" && $0 ~ /interrupted/) intr[$1 " " $2] = 1
        next
    }
    { eff[$1 " " $2] += $3 }
    END {
        bad = 0
        for (k in want) {
            if (k in intr && eff[k] + 0 == 0) { ni++; print "interrupted by the kill (not re-run):", k; continue }
            if (want[k] != "succeeded") { print "not succeeded:", k, want[k] > out; bad++ }
            if (eff[k] != 1) { print "effects", eff[k] + 0, "(want 1):", k > out; bad++ }
        }
        for (k in eff) if (!(k in want)) { print "effect without a delivery:", k > out; bad++ }
        if (ni > 1) { print ni, "deliveries interrupted; at most 1 possible" > out; bad++ }
        exit bad > 0
    }' "$T/expected" "$T/effects" || {
    head -n 20 "$T/violations" >&2
    fail "$(wc -l <"$T/violations") violations of exactly-once (first 20 above)"
}
say "PASS: $NCMD commands x $N agents: every delivery succeeded in PostgreSQL and took effect exactly once (runtime $((SECONDS - T0)) s)"
