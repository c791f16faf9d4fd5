#!/usr/bin/env bash
# soak.sh: N simulated agents (aegis-fleet-sim processes) against one aegis-control and a
# throwaway PostgreSQL for M minutes, with a steady command stream (aegisctl, one command to
# all agents every --cmd-interval seconds) and telemetry (one batch per agent every
# --telemetry-interval seconds). Every --sample-s seconds (60) it samples the control server:
#   SAMPLE t_min=M rss_kb=K fds=F cpu_s=C ready=R commands=X deliveries_open=Y
# (VmRSS from /proc/PID/status, open descriptors = entries of /proc/PID/fd, CPU = utime+stime)
# and at the end prints one line
#   RESULT mode=soak n=N minutes=M samples=S rss_first_kb= rss_last_kb= rss_max_kb=
#          rss_slope_kb_per_min= fds_first= fds_last= fds_max= fds_slope_per_min= ...
# Slopes are least-squares fits over the samples (flat is the goal); rss_slope_after_1st leaves
# out the sample taken right after the connect (warm-up). Not a test: nothing is
# asserted; bench/README.md "Soak" has the figures. Not run by CI.
#
# usage: bench/soak.sh [--build DIR] [--n 10000] [--minutes 60] [--procs 4]
#                      [--cmd-interval 60] [--telemetry-interval 60] [--sample-s 60]
#                      [--out DIR] [--control-arg ARG]...
# Every process it starts is stopped by its PID; the database directory is deleted.
set -euo pipefail
# stop PID [SIGNAL] (30 s before SIGKILL: a simulator writes its summary), wait_for SECS CMD...
STOP_GRACE_S=30
. "$(dirname "${BASH_SOURCE[0]}")/../tests/support/proc.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build N=10000 MINUTES=60 PROCS=4 CMD_INTERVAL=60 TEL_INTERVAL=60 SAMPLE_S=60 OUT=""
CTL_ARGS=()
die() { echo "soak.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case $1 in
    --build) BUILD=$2; shift 2 ;;
    --n) N=$2; shift 2 ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --procs) PROCS=$2; shift 2 ;;
    --cmd-interval) CMD_INTERVAL=$2; shift 2 ;;
    --telemetry-interval) TEL_INTERVAL=$2; shift 2 ;;
    --sample-s) SAMPLE_S=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --control-arg) CTL_ARGS+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done
for v in N MINUTES PROCS CMD_INTERVAL TEL_INTERVAL SAMPLE_S; do
    [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || die "--${v,,} must be a positive integer"
done
[ "$N" -le 200000 ] && [ "$PROCS" -le 64 ] && [ "$PROCS" -le "$N" ] || die "--n 1..200000, --procs 1..64 and <= N"
BIN=$BUILD/bin
for b in aegis-fleet-sim aegis-control aegisctl aegis-certs; do
    [ -x "$BIN/$b" ] || die "$BIN/$b not built (cmake --build $BUILD --target aegis-fleet-sim aegis-control aegisctl aegis-certs)"
done
PGTMP=$ROOT/tests/support/pgtmp.sh
command -v psql >/dev/null || die "psql not found (postgresql-client-15)"

W=$(mktemp -d "${TMPDIR:-/tmp}/aegis-soak.XXXXXX")
chmod 0755 "$W"
OUT=${OUT:-$W/out}
mkdir -p "$OUT"
# a reused --out directory must not mix an earlier run's samples or summaries into this one
rm -f "$OUT/samples" "$OUT"/sim-*.sum
: >"$OUT/samples"
CPID="" SENDPID=""
SIMPIDS=()
cleanup() {
    local rc=$? p
    touch "$W/send.stop"
    stop "$SENDPID"
    for p in "${SIMPIDS[@]}"; do stop "$p"; done
    stop "$CPID"
    bash "$PGTMP" destroy "$W/pg" >/dev/null 2>&1 || true
    cp -f "$W"/control.log "$W"/sim-*.log "$OUT"/ 2>/dev/null || true
    rm -rf "$W/pg" "$W/pki"
    case $OUT in "$W"/*) ;; *) rm -rf "$W" ;; esac # keep the work dir only if OUT is in it
    echo "soak.sh: logs and summaries in $OUT" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Descriptors: every simulated agent has its own socket.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$((N / PROCS + 256))
[ "$(ulimit -n)" -ge "$need" ] || die "ulimit -n is $(ulimit -n); $need needed per process (raise the hard limit or use more --procs)"

DSN=$(bash "$PGTMP" start "$W/pg" | tail -n 1)
[ -n "$DSN" ] || die "PostgreSQL did not start"
sql() { psql "$DSN" -X -q -At -c "$1"; }
PKI=$W/pki
"$BIN/aegis-certs" init --dir "$PKI" >/dev/null
PIN=$("$BIN/aegis-certs" server --name localhost --ip 127.0.0.1 --dir "$PKI" | grep -o 'sha256//[A-Za-z0-9+/=]*' | head -n 1)
"$BIN/aegis-certs" operator --name soak --dir "$PKI" >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export AEGIS_SERVER=127.0.0.1:$PORT AEGIS_PIN=$PIN HOME=$W
export AEGIS_CERT=$PKI/operator-soak.pem AEGIS_KEY=$PKI/operator-soak.key
"$BIN/aegis-control" --db "$DSN" --pki "$PKI" --listen "127.0.0.1:$PORT" --metrics-listen off \
    "${CTL_ARGS[@]}" >"$W/control.log" 2>&1 &
CPID=$!
wait_for 60 "$BIN/aegisctl" tokens list || die "aegis-control did not answer within 60 s"

# Simulated agents: PROCS processes, N/PROCS each, spread over loopback addresses.
per=$((N / PROCS))
for p in $(seq "$PROCS"); do
    n=$per
    [ "$p" = "$PROCS" ] && n=$((N - per * (PROCS - 1)))
    "$BIN/aegis-fleet-sim" --server "127.0.0.1:$PORT" --pki "$PKI" --db "$DSN" --n "$n" \
        --seed $((($$ << 8) + p)) --sources $((1 + n / 5000)) --parallel 250 \
        --telemetry-interval "$TEL_INTERVAL" --summary "$OUT/sim-$p.sum" \
        --status-file "$W/sim-$p.status" >"$W/sim-$p.log" 2>&1 &
    SIMPIDS+=($!)
done
ready() {
    local p r t=0
    for p in $(seq "$PROCS"); do
        r=$(sed -n 's/^ready=\([0-9]*\).*/\1/p' "$W/sim-$p.status" 2>/dev/null)
        t=$((t + ${r:-0}))
    done
    echo "$t"
}
t0=$SECONDS
all_up() { [ "$(ready)" -ge "$N" ]; }
wait_for $((60 + N / 50)) all_up ||
    echo "soak.sh: warning: only $(ready) of $N agents ready after $((SECONDS - t0)) s; soaking anyway" >&2
echo "soak.sh: $(ready)/$N agents ready after $((SECONDS - t0)) s; soaking for $MINUTES min" >&2

sender() {
    local k=0
    while [ ! -e "$W/send.stop" ]; do
        k=$((k + 1))
        "$BIN/aegisctl" --timeout 30s commands send --selector fleet=bench --action ping >/dev/null 2>&1 ||
            echo "soak.sh: command $k refused" >&2
        sleep "$CMD_INTERVAL"
    done
}
sender &
SENDPID=$!

sample() { # sample T_MIN
    local rss fds cpu
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$CPID/status")
    fds=$(ls "/proc/$CPID/fd" | wc -l)
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$CPID/stat")
    echo "SAMPLE t_min=$1 rss_kb=$rss fds=$fds cpu_s=$cpu ready=$(ready) commands=$(sql 'SELECT count(*) FROM commands') deliveries_open=$(sql "SELECT count(*) FROM deliveries WHERE status NOT IN ('succeeded','failed','expired')")" |
        tee -a "$OUT/samples"
}
start=$SECONDS
nsamples=$((MINUTES * 60 / SAMPLE_S))
sample 0
for k in $(seq "$nsamples"); do
    # Samples on a fixed schedule: wait until the next sample time (pacing, not a sync).
    while [ $((SECONDS - start)) -lt $((k * SAMPLE_S)) ]; do
        kill -0 "$CPID" 2>/dev/null || die "aegis-control exited; see $W/control.log"
        sleep 1
    done
    sample "$(awk -v s=$((SECONDS - start)) 'BEGIN { printf "%.2f", s / 60 }')"
done
touch "$W/send.stop"
stop "$SENDPID"; SENDPID=""
for p in "${SIMPIDS[@]}"; do stop "$p"; done
SIMPIDS=()
eff=$(awk '/^sim / { for (i = 1; i <= NF; i++) if ($i ~ /^effects=/) { split($i, e, "="); s += e[2] } } END { print s + 0 }' "$OUT"/sim-*.sum)
multi=$(awk '/^agent=/ { split($3, e, "="); if (e[2] > 1) n++ } END { print n + 0 }' "$OUT"/sim-*.sum)
succ=$(sql "SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
total=$(sql "SELECT count(*) FROM deliveries")
tel=$(sql "SELECT count(*) FROM telemetry")
awk -v n="$N" -v m="$MINUTES" -v eff="$eff" -v multi="$multi" -v succ="$succ" -v total="$total" -v tel="$tel" '
    /^SAMPLE/ {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        k++; t[k] = v["t_min"]; r[k] = v["rss_kb"]; f[k] = v["fds"]; c[k] = v["cpu_s"]
        if (v["rss_kb"] > rmax) rmax = v["rss_kb"]
        if (v["fds"] > fmax) fmax = v["fds"]
    }
    # least-squares slope of y over samples from..k
    function slope(y, from,   i, m, st, sy, stt, sty) {
        for (i = from; i <= k; i++) { m++; st += t[i]; sy += y[i]; stt += t[i] * t[i]; sty += t[i] * y[i] }
        return (m * stt - st * st) ? (m * sty - st * sy) / (m * stt - st * st) : 0
    }
    END {
        printf "RESULT mode=soak n=%d minutes=%d samples=%d rss_first_kb=%d rss_last_kb=%d rss_max_kb=%d rss_slope_kb_per_min=%.1f rss_slope_after_1st_kb_per_min=%.1f fds_first=%d fds_last=%d fds_max=%d fds_slope_per_min=%.2f server_cpu_s=%.1f deliveries=%d succeeded=%d effects=%d pairs_with_effects_gt1=%d telemetry_rows=%d\n",
            n, m, k, r[1], r[k], rmax, slope(r, 1), slope(r, 2), f[1], f[k], fmax, slope(f, 1), c[k] - c[1], total, succ, eff, multi, tel
    }' "$OUT/samples" | tee -a "$OUT/samples"
