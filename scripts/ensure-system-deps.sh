#!/usr/bin/env bash
# Installs the Debian packages Oz's dev/test/CI tooling needs, only when missing.
# The one place that knows the package names: scripts/testenv.sh and .ci/run both call it.
#
#   scripts/ensure-system-deps.sh [redis] [postgres] [chromium] [make] [venv] [wrk]
#   (no arguments = redis postgres)
set -euo pipefail

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(redis postgres)

have_postgres() {
    [ -x "${PG_BINDIR:-/usr/lib/postgresql/15/bin}/initdb" ] \
        || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

have_venv() {
    # Debian splits venv/ensurepip into python3-venv: `python3 -m venv` fails without it.
    command -v python3 >/dev/null || return 1
    python3 -c 'import ensurepip, venv' 2>/dev/null || return 1
    if command -v dpkg-query >/dev/null; then
        dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'ok installed'
    fi
}

missing=()
for dep in "${want[@]}"; do
    case "$dep" in
        redis)    command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
                      || missing+=(redis-server redis-tools) ;;
        postgres) have_postgres || missing+=(postgresql-15 postgresql-client-15) ;;
        chromium) command -v chromium >/dev/null || missing+=(chromium) ;;
        make)     command -v make >/dev/null || missing+=(make) ;;
        venv)     have_venv || missing+=(python3 python3-venv python3-pip) ;;
        wrk)      command -v wrk >/dev/null || missing+=(wrk) ;;
        *) echo "ensure-system-deps: unknown dependency '$dep'" >&2; exit 2 ;;
    esac
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "ensure-system-deps: installing ${missing[*]}" >&2
if ! command -v apt-get >/dev/null; then
    echo "ensure-system-deps: apt-get not found; install ${missing[*]} by hand" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        sudo=(sudo)
    else
        echo "ensure-system-deps: not root and no sudo; install ${missing[*]} by hand" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q "${missing[@]}"
