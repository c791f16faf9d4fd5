#!/usr/bin/env bash
# pgtmp.sh: a throwaway PostgreSQL 15 for tests, private to one run.
#
#   pgtmp.sh run [--] CMD [ARGS...]   start a server, run CMD with the variables below set,
#                                     stop the server (by PID) and delete everything; exits
#                                     with CMD's status (77 = skipped, if PostgreSQL is absent)
#   pgtmp.sh start DIR                start a server in the new directory DIR (prints the DSN)
#   pgtmp.sh stop DIR                 stop it (fast shutdown, then SIGKILL after the deadline)
#   pgtmp.sh restart DIR [MODE]       stop (MODE fast|immediate, default fast), start again
#   pgtmp.sh destroy DIR              stop immediately and delete DIR
#
# The server listens on no TCP address (listen_addresses=''), only on a Unix socket in a
# directory of its own, so the port number only names the socket and runs cannot collide.
# fsync is off (the data is thrown away, and only an OS crash would lose writes); commits stay
# synchronous so a test that kills the server (restart immediate) keeps every committed row.
# As root, the server runs as the `postgres` user (initdb refuses root), or as $PGTMP_USER.
#
# CMD sees:  AEGIS_TEST_PG_DSN   libpq connection string (superuser `postgres`, db `postgres`)
#            AEGIS_TEST_PGTMP    path of this script;  AEGIS_TEST_PGTMP_DIR  the DIR
# Tunables: PGTMP_BINDIR (default /usr/lib/postgresql/15/bin), PGTMP_TIMEOUT (seconds to
# wait for start or stop, default 30), PGTMP_TEST_TIMEOUT (seconds CMD may run, default 600),
# TMPDIR.
set -euo pipefail

BINDIR=${PGTMP_BINDIR:-/usr/lib/postgresql/15/bin}
TIMEOUT=${PGTMP_TIMEOUT:-30}
SELF=$(readlink -f "${BASH_SOURCE[0]}")

die() {
    printf 'pgtmp: error: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf 'pgtmp:   what to do: %s\n' "$2" >&2
    exit "${3:-1}"
}

# as_owner runs a command as the user that owns the cluster.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "${PGTMP_USER:-postgres}" -- "$@"
    else
        "$@"
    fi
}

have_pg() {
    [ -x "$BINDIR/initdb" ] && [ -x "$BINDIR/pg_ctl" ] && [ -x "$BINDIR/postgres" ]
}

# server_pid prints the postmaster PID of DIR, or nothing if it is not running.
server_pid() {
    local pidfile="$1/data/postmaster.pid" pid
    [ -f "$pidfile" ] || return 0
    pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
    case "$pid" in '' | *[!0-9]*) return 0 ;; esac
    if kill -0 "$pid" 2>/dev/null; then printf '%s\n' "$pid"; fi
}

dsn_of() {
    printf 'host=%s port=%s user=postgres dbname=postgres connect_timeout=10\n' \
        "$1/sock" "$(cat "$1/port")"
}

cmd_init() {
    local dir=$1 owner
    have_pg || die "PostgreSQL 15 server binaries not found in $BINDIR" \
        "install postgresql-15 (tools/bootstrap.sh does) or set PGTMP_BINDIR" 77
    mkdir -p "$dir/sock"
    if [ "$(id -u)" = 0 ]; then
        owner=${PGTMP_USER:-postgres}
        id "$owner" >/dev/null 2>&1 ||
            die "user $owner does not exist" "create it or set PGTMP_USER to an unprivileged user" 77
        chown -R "$owner" "$dir"
        # The owner must be able to reach DIR through its parents (mktemp makes 0700 dirs).
        chmod 0711 "$dir"
    fi
    chmod 0700 "$dir/sock"
    # A port per run only names the socket file; it never leaves the private directory.
    echo $((20000 + RANDOM % 20000)) >"$dir/port"
    as_owner "$BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync --no-instructions \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        die "initdb failed in $dir/data: $(tail -n 5 "$dir/initdb.log")" "read $dir/initdb.log"
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir/sock'
unix_socket_permissions = 0700
port = $(cat "$dir/port")
fsync = off
full_page_writes = off
max_connections = 100
shared_buffers = 32MB
log_min_messages = warning
log_line_prefix = '%m [%p] '
CONF
}

cmd_start() {
    local dir=$1
    as_owner "$BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$TIMEOUT" start \
        >"$dir/pg_ctl.log" 2>&1 ||
        die "PostgreSQL did not start within ${TIMEOUT}s: $(tail -n 5 "$dir/server.log" 2>/dev/null)" \
            "read $dir/server.log"
    [ -n "$(server_pid "$dir")" ] || die "PostgreSQL in $dir exited right after start" \
        "read $dir/server.log"
}

# cmd_stop DIR SIGNAL: INT = fast shutdown, QUIT = immediate; SIGKILL after the deadline.
cmd_stop() {
    local dir=$1 sig=${2:-INT} pid deadline
    pid=$(server_pid "$dir")
    [ -n "$pid" ] || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            printf 'pgtmp: PostgreSQL %s ignored SIG%s for %ss, sending SIGKILL\n' "$pid" "$sig" \
                "$TIMEOUT" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.02
    done
    # The postmaster's children exit when it does; wait for them too (bounded).
    deadline=$((SECONDS + TIMEOUT))
    while pgrep -P "$pid" >/dev/null 2>&1 && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.02; done
    rm -f "$dir/data/postmaster.pid"
}

cmd_destroy() {
    local dir=$1
    [ -d "$dir" ] || return 0
    cmd_stop "$dir" QUIT
    rm -rf "$dir"
}

case "${1:-}" in
run)
    shift
    [ "${1:-}" = "--" ] && shift
    [ $# -ge 1 ] || die "usage: pgtmp.sh run [--] CMD [ARGS...]" "name the test program to run"
    have_pg || {
        echo "pgtmp: SKIP: PostgreSQL 15 server binaries not found in $BINDIR (install postgresql-15)" >&2
        exit 77
    }
    dir=$(mktemp -d "${TMPDIR:-/tmp}/aegis-pgtmp.XXXXXX")
    trap 'cmd_destroy "$dir"' EXIT
    trap 'exit 130' INT TERM
    cmd_init "$dir"
    cmd_start "$dir"
    export AEGIS_TEST_PG_DSN
    AEGIS_TEST_PG_DSN=$(dsn_of "$dir")
    export AEGIS_TEST_PGTMP="$SELF" AEGIS_TEST_PGTMP_DIR="$dir"
    rc=0
    # Our own time limit, below ctest's: when it hits, this script still stops the server
    # (ctest's own timeout would kill this script before its trap could).
    timeout -k 5 "${PGTMP_TEST_TIMEOUT:-600}" "$@" || rc=$?
    [ "$rc" = 124 ] && echo "pgtmp: test timed out after ${PGTMP_TEST_TIMEOUT:-600}s" >&2
    if [ "$rc" != 0 ] && [ "$rc" != 77 ] && [ -f "$dir/server.log" ]; then
        echo "pgtmp: test failed (status $rc); last server log lines:" >&2
        tail -n 20 "$dir/server.log" >&2 || true
    fi
    exit "$rc"
    ;;
start)
    [ $# -eq 2 ] || die "usage: pgtmp.sh start DIR" "give a directory that does not exist yet"
    [ ! -e "$2" ] || die "$2 already exists" "give a new directory"
    mkdir -p "$2"
    cmd_init "$(readlink -f "$2")"
    cmd_start "$(readlink -f "$2")"
    dsn_of "$(readlink -f "$2")"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: pgtmp.sh stop DIR" "give the directory given to start"
    cmd_stop "$2" INT
    ;;
restart)
    [ $# -ge 2 ] || die "usage: pgtmp.sh restart DIR [fast|immediate]" "give the directory given to start"
    case "${3:-fast}" in
    fast) cmd_stop "$2" INT ;;
    immediate) cmd_stop "$2" QUIT ;;
    *) die "unknown restart mode '${3}'" "use fast or immediate" ;;
    esac
    cmd_start "$2"
    ;;
destroy)
    [ $# -eq 2 ] || die "usage: pgtmp.sh destroy DIR" "give the directory given to start"
    cmd_destroy "$2"
    ;;
*)
    die "usage: pgtmp.sh run|start|stop|restart|destroy ..." "see the comment at the top of $SELF"
    ;;
esac
