# Sourced by scripts/testenv.sh and scripts/testenv-ctl.sh.
# as_pg COMMAND...: initdb and postgres refuse to run as root, so as root COMMAND runs as the
# `postgres` system user (which must exist); otherwise as the caller.
if [ "$(id -u)" -eq 0 ]; then
    as_pg() {
        # cd /: root's working directory may be unreadable for postgres.
        if command -v runuser >/dev/null; then
            (cd / && runuser -u postgres -- "$@")
        else
            (cd / && su -s /bin/sh postgres -c "$(printf '%q ' "$@")")
        fi
    }
else
    as_pg() { "$@"; }
fi
