#!/usr/bin/env bash
# Projection benchmark, on a throwaway cluster (synchronous_commit = off, so
# that the CPU cost shows, not fsync):
#  - an append with an inline projection (a one-row upsert) against the same
#    append without projections, pgbench, same run, median per-round ratio;
#  - an async projection catching up on 200,000 events;
#  - rebuild_projection of an inline projection over 1,000,000 events.
#   sudo test/bench/projections.sh     (BENCH_SECONDS=4 per run, BENCH_ROUNDS=5)
source "$(dirname "$0")/../lib/common.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-4}
ROUNDS=${BENCH_ROUNDS:-5}
ensure_packages bc
make_workdir
trap 'stop_cluster "$WORKDIR/data"; rm -rf "$WORKDIR"' EXIT
build_and_install

port=$(free_port)
bench=$WORKDIR/test/bench
start_cluster "$WORKDIR/data" "$port" "synchronous_commit = off" \
    "shared_buffers = 512MB" "max_wal_size = 8GB" "max_connections = 50"
q() { as_pg psql -X -qtA -h "$WORKDIR/data" -p "$port" -d "$1" -c "$2"; }
now() { date +%s.%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for db in plain inline async rebuild; do
    as_pg createdb -h "$WORKDIR/data" -p "$port" "$db"
    as_pg psql -q -h "$WORKDIR/data" -p "$port" -d "$db" -f "$bench/setup.sql" >/dev/null
    as_pg psql -q -h "$WORKDIR/data" -p "$port" -d "$db" -f "$bench/projection_setup.sql" >/dev/null
done
q inline "SELECT outbox.create_projection('balances', 'apply_balance(outbox.events)')"
before=$(q inline "SELECT count(*) FROM outbox.events")

run() {     # run DB CLIENTS -> tps of append.sql
    q "$1" 'CHECKPOINT' >/dev/null
    as_pg pgbench -n -M prepared -T "$SECONDS_PER_RUN" -c "$2" -j "$2" -D nclients="$2" \
        -f "$bench/append.sql" -h "$WORKDIR/data" -p "$port" "$1" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}

log "inline projection: append with a one-row upsert projection vs append alone, $ROUNDS rounds of $SECONDS_PER_RUN s"
echo "|  c | append alone | with inline projection | ratio | target |"
echo "|----|--------------|------------------------|-------|--------|"
for c in 1 4; do
    bs=() os=() rs=()
    for _ in $(seq 1 "$ROUNDS"); do
        b=$(run plain "$c"); o=$(run inline "$c")
        bs+=("$b"); os+=("$o")
        rs+=("$(awk -v o="$o" -v b="$b" 'BEGIN { printf "%.3f", o / b }')")
    done
    b=$(printf '%s\n' "${bs[@]}" | median); o=$(printf '%s\n' "${os[@]}" | median)
    r=$(printf '%s\n' "${rs[@]}" | median)
    printf '| %2d | %9.0f tps | %9.0f tps | %5.2f | >= 0.50 %s |\n' "$c" "$b" "$o" "$r" \
        "$(awk -v r="$r" 'BEGIN { print (r >= 0.5) ? "meets" : "BELOW" }')"
done
# every event appended since the projection exists is in the read model
q inline "SELECT (SELECT sum(events) FROM balances) = count(*) - $before FROM outbox.events" |
    grep -q t || { echo "inline read model inconsistent"; exit 1; }

# 100 events per append, 2,000 streams
load() {    # load DB STREAMS FIRST
    q "$1" "SELECT count(outbox.append('acct-' || s,
              (SELECT jsonb_agg(jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('amount', g)))
                 FROM generate_series(1, 100) g)))
              FROM generate_series($3, $3 + $2 - 1) s" >/dev/null
}

log "async projection: catching up on 200,000 events"
q async "SELECT outbox.create_projection('balances', 'apply_balance(outbox.events)', mode => 'async')"
q async "SELECT outbox.pause_projection('balances')"
load async 2000 1
etag=$(q async "SELECT outbox.stream_etag('acct-2000')")
t0=$(now)
q async "SELECT outbox.resume_projection('balances')"
ok=$(q async "SELECT outbox.wait_for_projection('balances', 'acct-2000', '$etag', '300 s')")
t1=$(now)
if [ "$ok" != t ]; then
    echo "async projection did not catch up in $(echo "$t1 - $t0" | bc) s"
    q async "SELECT * FROM outbox.stat_projections"
    q async "SELECT * FROM outbox.stat_workers"
    tail -20 "$WORKDIR/data/server.log"
    exit 1
fi
async_rate=$(echo "200000 / ($t1 - $t0)" | bc)
applied=$(q async "SELECT sum(events) FROM balances")

log "rebuild of an inline projection over 1,000,000 events"
for first in 1 2001 4001 6001 8001; do load rebuild 2000 "$first"; done
q rebuild "SELECT outbox.create_projection('balances', 'apply_balance(outbox.events)', reset => 'reset_balances()')"
t0=$(now)
replayed=$(q rebuild "SELECT outbox.rebuild_projection('balances')")
t1=$(now)
rebuild_s=$(echo "scale=1; ($t1 - $t0) / 1" | bc)

echo
echo "| measure | result | target |"
echo "|---|---|---|"
printf '| async catch-up, 200,000 events (%s applied) | %s events/s | >= 20000 %s |\n' "$applied" "$async_rate" \
    "$([ "$async_rate" -ge 20000 ] && echo meets || echo BELOW)"
printf '| rebuild, %s events | %s s | <= 60 s %s |\n' "$replayed" "$rebuild_s" \
    "$(echo "$rebuild_s <= 60" | bc | sed 's/1/meets/;s/0/BELOW/')"
