#!/usr/bin/env bash
# Write-path benchmark: outbox.publish and outbox.append against plain INSERTs
# into equivalent tables, measured with pgbench in the same run, on a
# throwaway cluster.  Prints tps and ratios; the targets are in README.md.
#   sudo test/bench/run.sh     (BENCH_SECONDS=4 per run, BENCH_ROUNDS=5 rounds)
source "$(dirname "$0")/../lib/common.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-4}
ROUNDS=${BENCH_ROUNDS:-5}
ensure_packages
make_workdir
trap 'stop_cluster "$WORKDIR/data"; rm -rf "$WORKDIR"' EXIT
build_and_install

port=$(free_port)
bench=$WORKDIR/test/bench

run() {     # run SCRIPT CLIENTS -> tps
    as_pg psql -q -h "$WORKDIR/data" -p "$port" -d bench -c 'CHECKPOINT' >/dev/null
    as_pg pgbench -n -M prepared -T "$SECONDS_PER_RUN" -c "$2" -j "$2" -D nclients="$2" \
        -f "$bench/$1" -h "$WORKDIR/data" -p "$port" bench 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Baseline and outbox run back to back ROUNDS times; the reported ratio is
# the median of the per-round ratios, so that drift (fsync latency here
# varies threefold within a minute) hits both sides of each ratio alike.
compare() { # compare LABEL BASELINE OURS TARGET CLIENTS...
    local label=$1 base=$2 ours=$3 target=$4
    shift 4
    for c in "$@"; do
        local bs=() os=() rs=() b o ratio verdict
        for _ in $(seq 1 "$ROUNDS"); do
            b=$(run "$base" "$c")
            o=$(run "$ours" "$c")
            bs+=("$b")
            os+=("$o")
            rs+=("$(awk -v o="$o" -v b="$b" 'BEGIN { printf "%.3f", o / b }')")
        done
        b=$(printf '%s\n' "${bs[@]}" | median)
        o=$(printf '%s\n' "${os[@]}" | median)
        ratio=$(printf '%s\n' "${rs[@]}" | median)
        verdict=$(awk -v r="$ratio" -v t="$target" 'BEGIN { print (r >= t) ? "meets" : "BELOW" }')
        printf '| %-22s | %2d | %9.0f | %9.0f | %5.2f | >= %-4s %-5s |\n' "$label" "$c" "$b" "$o" "$ratio" "$target" "$verdict"
    done
}

for mode in on off; do
    rm -rf "$WORKDIR/data"
    start_cluster "$WORKDIR/data" "$port" "synchronous_commit = $mode" \
        "shared_buffers = 512MB" "max_wal_size = 4GB" "max_connections = 50"
    as_pg createdb -h "$WORKDIR/data" -p "$port" bench
    as_pg psql -q -h "$WORKDIR/data" -p "$port" -d bench -f "$bench/setup.sql" >/dev/null
    log "synchronous_commit = $mode: $ROUNDS rounds of $SECONDS_PER_RUN s per side, median tps and median per-round ratio, $(nproc) cores"
    echo "| workload               |  c | baseline  |  outbox   | ratio | target           |"
    echo "|------------------------|----|-----------|-----------|-------|------------------|"
    compare "publish vs INSERT" plain_insert.sql publish.sql 0.9 1 4
    compare "append+ETag vs INSERT" plain_event.sql append.sql 0.75 1 4 8
    stop_cluster "$WORKDIR/data"
done
