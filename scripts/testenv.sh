#!/usr/bin/env bash
# Runs one command against a throwaway PostgreSQL 15 cluster and Redis server, then stops
# both and deletes every file they wrote. Used by `make test`; handy by hand too:
#
#   scripts/testenv.sh .venv/bin/pytest -x tests/gateway
#   scripts/testenv.sh bash      # a shell with the servers up; `exit` tears them down
#
# The command sees (exported):
#   DATABASE_URL=postgres://oz:oz@127.0.0.1:<port>/oz   role oz is a superuser, so
#                                                      pytest-django can create test DBs
#   REDIS_URL=redis://127.0.0.1:<port>/0, CELERY_BROKER_URL=$REDIS_URL
#   DJANGO_SETTINGS_MODULE=config.settings.test
#   OZ_MEDIA_ROOT=<temp>/media (artifacts written by tests vanish with the rest)
#   OZ_TESTENV_DIR=<temp> (server logs: postgres.log, redis.log)
#   OZ_TESTENV_PGDATA, OZ_TESTENV_PG_PORT, OZ_TESTENV_PG_BINDIR, OZ_TESTENV_REDIS_PORT
#   OZ_TESTENV_CTL=scripts/testenv-ctl.sh: stops, starts or restarts either server
#     (`$OZ_TESTENV_CTL redis stop`, `$OZ_TESTENV_CTL postgres restart`), for the
#     fault-injection tests (tests/faults); this script still tears down whatever runs.
# Both servers listen on 127.0.0.1 only, on free ports chosen at start.
# Exit status: the command's; 1 when a server cannot start; 130 on Ctrl-C.
#
# Knobs: OZ_TESTENV_TIMEOUT (seconds to wait for each server, default 30),
#        PG_BINDIR (default /usr/lib/postgresql/15/bin), TMPDIR (parent of the temp folder).
set -euo pipefail

log() { printf 'testenv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
timeout_s="${OZ_TESTENV_TIMEOUT:-30}"

"$scripts_dir/ensure-system-deps.sh" redis postgres chromium wrk

if [ -z "${PG_BINDIR:-}" ]; then
    if [ -x /usr/lib/postgresql/15/bin/initdb ]; then
        PG_BINDIR=/usr/lib/postgresql/15/bin
    else
        # Another major version is better than none; 15 is what production runs.
        PG_BINDIR="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    fi
fi
[ -x "$PG_BINDIR/initdb" ] || die "no PostgreSQL server binaries (looked in '${PG_BINDIR}')"

# initdb and postgres refuse to run as root: as root, they run as the `postgres` user.
if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
    log "creating system user postgres"
    useradd --system --user-group --no-create-home \
        --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
fi
# shellcheck source=scripts/as-pg.sh
. "$scripts_dir/as-pg.sh"

workdir=""
pg_started=0
redis_started=0
redis_pid=""
pg_port=""
redis_port=""

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    if [ "$pg_started" = 1 ]; then
        if ! as_pg "$PG_BINDIR/pg_ctl" -D "$workdir/pgdata" -m fast -w -t 30 -s stop \
            >/dev/null 2>&1; then
            local pg_pid
            pg_pid="$(head -n 1 "$workdir/pgdata/postmaster.pid" 2>/dev/null)"
            [ -n "$pg_pid" ] && kill -9 "$pg_pid" 2>/dev/null
        fi
    fi
    if [ "$redis_started" = 1 ]; then
        # The pid file names the server running now (a test may have restarted it); none
        # when it is stopped, and then there is nothing to wait for.
        if [ -f "$workdir/redis.pid" ]; then
            redis_pid="$(cat "$workdir/redis.pid" 2>/dev/null)"
        elif [ -n "$redis_pid" ] && ! kill -0 "$redis_pid" 2>/dev/null; then
            redis_pid=""
        fi
        redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1
        if [ -n "$redis_pid" ]; then
            local i
            for i in $(seq 50); do
                kill -0 "$redis_pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$redis_pid" 2>/dev/null
        fi
    fi
    case "$workdir" in
        */oz-testenv.*) rm -rf "$workdir" ;;
    esac
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# wait_until DESCRIPTION LOGFILE COMMAND...: retry COMMAND until it succeeds or time runs out.
wait_until() {
    local what="$1" logfile="$2"
    shift 2
    local deadline=$((SECONDS + timeout_s))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "error: $what did not accept connections within ${timeout_s}s; end of $logfile:"
            tail -n 40 "$logfile" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.2
    done
}

redis_pong() { [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]; }

workdir="$(mktemp -d "${TMPDIR:-/tmp}/oz-testenv.XXXXXX")"
chmod 755 "$workdir"
mkdir "$workdir/sock" "$workdir/media"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$workdir" "$workdir/sock"
    as_pg test -w "$workdir" \
        || die "user postgres cannot write to $workdir; set TMPDIR to a folder it can reach"
fi

# Two distinct free ports, chosen while both sockets are held.
read -r pg_port redis_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

# PostgreSQL: a fresh cluster, durability off (it is thrown away anyway).
as_pg "$PG_BINDIR/initdb" -D "$workdir/pgdata" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$workdir/initdb.log" 2>&1 \
    || { cat "$workdir/initdb.log" >&2; die "initdb failed"; }
cat >>"$workdir/pgdata/postgresql.conf" <<EOF

# scripts/testenv.sh
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$workdir/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
pg_started=1
as_pg "$PG_BINDIR/pg_ctl" -D "$workdir/pgdata" -l "$workdir/postgres.log" -s -W start \
    || { tail -n 40 "$workdir/postgres.log" >&2 2>/dev/null; die "pg_ctl start failed"; }

# Redis: no persistence.
redis_started=1
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$workdir/redis.pid" --logfile "$workdir/redis.log" \
    --dir "$workdir" \
    || { tail -n 40 "$workdir/redis.log" >&2 2>/dev/null; die "redis-server failed to start"; }

wait_until "PostgreSQL on 127.0.0.1:$pg_port" "$workdir/postgres.log" \
    "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -d postgres
wait_until "Redis on 127.0.0.1:$redis_port" "$workdir/redis.log" redis_pong
redis_pid="$(cat "$workdir/redis.pid" 2>/dev/null || true)"

"$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$workdir/sock" -p "$pg_port" -U postgres \
    -d postgres \
    -c "CREATE ROLE oz LOGIN SUPERUSER PASSWORD 'oz'" \
    -c "CREATE DATABASE oz OWNER oz" >/dev/null \
    || die "could not create role and database oz"

export DATABASE_URL="postgres://oz:oz@127.0.0.1:${pg_port}/oz"
export REDIS_URL="redis://127.0.0.1:${redis_port}/0"
export CELERY_BROKER_URL="$REDIS_URL"
export DJANGO_SETTINGS_MODULE=config.settings.test
export OZ_MEDIA_ROOT="$workdir/media"
export OZ_TESTENV_DIR="$workdir"
# For tests that stop and restart the servers (tests/faults) through testenv-ctl.sh.
export OZ_TESTENV_PGDATA="$workdir/pgdata"
export OZ_TESTENV_PG_PORT="$pg_port"
export OZ_TESTENV_PG_BINDIR="$PG_BINDIR"
export OZ_TESTENV_REDIS_PORT="$redis_port"
export OZ_TESTENV_CTL="$scripts_dir/testenv-ctl.sh"

log "PostgreSQL $("$PG_BINDIR/postgres" -V | awk '{print $3}') on 127.0.0.1:$pg_port," \
    "Redis $(redis-server -v | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$redis_port," \
    "files in $workdir"

set +e
"$@"
status=$?
set -e
exit "$status"
