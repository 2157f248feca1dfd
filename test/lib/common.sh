# Shared by test/check.sh, test/demo.sh and test/bench/run.sh.
# Installs what outbox needs, builds and installs it, and runs PostgreSQL as
# the postgres OS user (the server refuses to run as root).

set -euo pipefail

OUTBOX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
export PATH="$PG_BIN:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Debian packages: server headers + PGXS + test harness, libcurl, librdkafka,
# IPC::Run.
ensure_packages() {
    local need=()
    dpkg -s postgresql-server-dev-15 >/dev/null 2>&1 || need+=(postgresql-server-dev-15)
    dpkg -s postgresql-15 >/dev/null 2>&1 || need+=(postgresql-15)
    dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || need+=(libcurl4-openssl-dev)
    dpkg -s libipc-run-perl >/dev/null 2>&1 || need+=(libipc-run-perl)
    dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
    dpkg -s librdkafka-dev >/dev/null 2>&1 || need+=(librdkafka-dev)
    dpkg -s make >/dev/null 2>&1 || need+=(make)
    dpkg -s gcc >/dev/null 2>&1 || need+=(gcc)
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "run as root (or install: ${need[*]})" >&2
            exit 1
        fi
        # One line per step; apt's own output only if it fails.
        local aptlog
        aptlog=$(mktemp /tmp/outbox-apt.XXXXXX)
        export DEBIAN_FRONTEND=noninteractive
        if [ -z "${OUTBOX_APT_UPDATED:-}" ]; then
            log "updating the package lists"
            apt-get update -q > "$aptlog" 2>&1 || { cat "$aptlog" >&2; rm -f "$aptlog"; exit 1; }
            export OUTBOX_APT_UPDATED=1
        fi
        log "installing ${need[*]}"
        apt-get install -y -q "${need[@]}" > "$aptlog" 2>&1 || { cat "$aptlog" >&2; rm -f "$aptlog"; exit 1; }
        rm -f "$aptlog"
    fi
    id postgres >/dev/null 2>&1 || { echo "no postgres OS user after install" >&2; exit 1; }
}

# Run a command as the postgres OS user (or as ourselves when not root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        # from /: the caller's directory (say /root/outbox) may be closed to postgres
        (cd / && runuser -u postgres -- env PATH="$PATH" "$@")
    else
        "$@"
    fi
}

# A private copy of the tree owned by postgres, so builds and test output
# never touch the checkout and the tests can run as a non-root user.
make_workdir() {
    WORKDIR=$(mktemp -d /tmp/outbox.XXXXXX)
    chmod 755 "$WORKDIR"
    (cd "$OUTBOX_ROOT" && tar cf - --exclude=./.git --exclude='*.o' --exclude='*.so' .) | tar xf - -C "$WORKDIR"
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$WORKDIR"
    return 0
}

build_and_install() {
    log "building outbox"
    as_pg make -C "$WORKDIR" -s ${OUTBOX_WERROR:+OUTBOX_WERROR=-Werror} all test/receiver/receiver \
        test/kafka/mockcluster test/kafka/consume test/kafka/bare_producer
    log "installing outbox into $(pg_config --pkglibdir)"
    make -C "$WORKDIR" -s install
}

free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port" >&2
    return 1
}

# start_cluster DIR PORT [extra postgresql.conf lines...]
start_cluster() {
    local dir=$1 port=$2
    shift 2
    as_pg initdb -D "$dir" -A trust -U postgres --no-sync >/dev/null
    {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "shared_preload_libraries = 'outbox'"
        for line in "$@"; do echo "$line"; done
    } >> "$dir/postgresql.conf"
    as_pg pg_ctl -D "$dir" -l "$dir/server.log" -w start >/dev/null
}

stop_cluster() {
    local dir=$1
    [ -f "$dir/postmaster.pid" ] && as_pg pg_ctl -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
}
