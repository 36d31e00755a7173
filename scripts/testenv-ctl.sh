#!/usr/bin/env bash
# Stops, starts or restarts one of the servers scripts/testenv.sh started, on the same
# port and data folder, so fault-injection tests (tests/faults) can take a dependency away
# and bring it back:
#
#   scripts/testenv-ctl.sh postgres stop|start|restart
#   scripts/testenv-ctl.sh redis    stop|start|restart
#
# Reads what testenv.sh exports (OZ_TESTENV_DIR, OZ_TESTENV_PGDATA, OZ_TESTENV_PG_PORT,
# OZ_TESTENV_PG_BINDIR, OZ_TESTENV_REDIS_PORT); outside testenv.sh it refuses to run.
# `stop` returns once the server no longer accepts connections, `start` once it does.
# PostgreSQL stops with `-m fast` (open connections are cut, as in a crash or failover);
# Redis shuts down without saving (it keeps nothing: queued messages are lost, as in an
# outage of a non-persistent broker). testenv.sh tears down whatever runs at the end.
set -euo pipefail

log() { printf 'testenv-ctl: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 2 ] || { echo "usage: $0 postgres|redis stop|start|restart" >&2; exit 2; }
service="$1"
action="$2"
: "${OZ_TESTENV_DIR:?not under scripts/testenv.sh (OZ_TESTENV_DIR is unset)}"
timeout_s="${OZ_TESTENV_TIMEOUT:-30}"
workdir="$OZ_TESTENV_DIR"

# shellcheck source=scripts/as-pg.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/as-pg.sh"

# wait_for WHAT up|down COMMAND...: until COMMAND succeeds (up) or fails (down).
wait_for() {
    local what="$1" want="$2"
    shift 2
    local deadline=$((SECONDS + timeout_s))
    while :; do
        if "$@" >/dev/null 2>&1; then
            [ "$want" = up ] && return 0
        else
            [ "$want" = down ] && return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "$what is not $want after ${timeout_s}s"
        sleep 0.1
    done
}

pg_ready() {
    "$OZ_TESTENV_PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$OZ_TESTENV_PG_PORT" -d postgres
}

pg() {
    : "${OZ_TESTENV_PGDATA:?}" "${OZ_TESTENV_PG_PORT:?}" "${OZ_TESTENV_PG_BINDIR:?}"
    case "$1" in
        stop)
            as_pg "$OZ_TESTENV_PG_BINDIR/pg_ctl" -D "$OZ_TESTENV_PGDATA" -m fast -w -t "$timeout_s" -s stop \
                || die "pg_ctl stop failed"
            wait_for "PostgreSQL" down pg_ready
            ;;
        start)
            as_pg "$OZ_TESTENV_PG_BINDIR/pg_ctl" -D "$OZ_TESTENV_PGDATA" -l "$workdir/postgres.log" -w \
                -t "$timeout_s" -s start || { tail -n 20 "$workdir/postgres.log" >&2; die "pg_ctl start failed"; }
            wait_for "PostgreSQL" up pg_ready
            ;;
    esac
}

redis_pong() { [ "$(redis-cli -h 127.0.0.1 -p "$OZ_TESTENV_REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

redis() {
    : "${OZ_TESTENV_REDIS_PORT:?}"
    case "$1" in
        stop)
            local pid
            pid="$(cat "$workdir/redis.pid" 2>/dev/null || true)"
            redis-cli -h 127.0.0.1 -p "$OZ_TESTENV_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
            wait_for "Redis" down redis_pong
            if [ -n "$pid" ]; then
                local i
                for i in $(seq 100); do
                    kill -0 "$pid" 2>/dev/null || break
                    sleep 0.05
                done
            fi
            ;;
        start)
            redis-server --port "$OZ_TESTENV_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
                --daemonize yes --pidfile "$workdir/redis.pid" --logfile "$workdir/redis.log" \
                --dir "$workdir" || die "redis-server failed to start"
            wait_for "Redis" up redis_pong
            ;;
    esac
}

case "$service:$action" in
    postgres:stop | postgres:start) pg "$action" ;;
    postgres:restart) pg stop; pg start ;;
    redis:stop | redis:start) redis "$action" ;;
    redis:restart) redis stop; redis start ;;
    *) echo "usage: $0 postgres|redis stop|start|restart" >&2; exit 2 ;;
esac
log "$service: $action done"
