# proc.sh: process and polling helpers for the shell tests and benches (source it).
#
#   stop PID [SIGNAL]    send SIGNAL (default TERM) to PID, SIGKILL it if it is still there
#                        after $STOP_GRACE_S seconds (default 10), then reap it; an empty
#                        PID or one already gone is fine
#   wait_for SECS CMD... run CMD (output discarded) every 0.2 s until it succeeds (status 0)
#                        or SECS seconds of wall-clock time have passed (status 1); the
#                        deadline is real time, so slow CMD runs do not stretch it
stop() {
    local pid=$1 sig=${2:-TERM} i
    [ -n "$pid" ] || return 0
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for i in $(seq $((${STOP_GRACE_S:-10} * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

wait_for() {
    local end=$((SECONDS + $1))
    shift
    while :; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.2
    done
}
