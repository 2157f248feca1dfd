#!/usr/bin/env bash
# Relay benchmark: webhook delivery to the C receiver (test/receiver) on this
# machine, against a plain HTTP load generator (wrk) measured in the same run.
#   sudo test/bench/delivery.sh
# Prints throughput with batch_size 1 and 100, commit-to-arrival latency at
# 100 msg/s, and the relay's memory with 1,000,000 messages pending.
source "$(dirname "$0")/../lib/common.sh"

ensure_packages wrk bc
make_workdir
trap 'kill $rpid 2>/dev/null; stop_cluster "$WORKDIR/data"; rm -rf "$WORKDIR"' EXIT
build_and_install

port=$(free_port)
start_cluster "$WORKDIR/data" "$port" "shared_buffers = 512MB" "max_wal_size = 4GB" "track_commit_timestamp = on"
bench=$WORKDIR/test/bench
q() { as_pg psql -X -qtA -h "$WORKDIR/data" -p "$port" -d postgres -c "$1"; }

"$WORKDIR/test/receiver/receiver" --port 0 --log "$WORKDIR/receiver.log" > "$WORKDIR/receiver.out" 2>&1 &
rpid=$!
for _ in $(seq 1 50); do grep -q 'listening on' "$WORKDIR/receiver.out" && break; sleep 0.1; done
rport=$(awk '/listening on/ { print $3 }' "$WORKDIR/receiver.out")
url="http://127.0.0.1:$rport/hook"

q "CREATE EXTENSION outbox"
q "SELECT outbox.create_endpoint('one', '$url', '{bench.one}', NULL, '{}', '{\"max_in_flight\": 64, \"ordered\": false}')"
q "SELECT outbox.create_endpoint('batch', '$url', '{bench.batch}', NULL, '{}', '{\"max_in_flight\": 8, \"batch_size\": 100, \"ordered\": false}')"
q "SELECT outbox.create_endpoint('latency', '$url', '{bench.latency}')"
q "SELECT outbox.create_endpoint('memory', '$url', '{bench.memory}', NULL, '{}', '{\"backoff_base_ms\": 100, \"backoff_max_ms\": 1000}')"

arrived() { awk -F'\t' -v t="$1" '$4 == t' "$WORKDIR/receiver.log" | wc -l; }
now() { date +%s.%N; }

# publish N messages of TOPIC in one transaction, then time their delivery
deliver_rate() { # topic n
    local before t0 t1
    before=$(arrived "$1")
    q "SELECT count(outbox.publish('$1', jsonb_build_object('seq', g, 'order', 1234, 'total', 99.5)))
         FROM generate_series(1, $2) g" >/dev/null
    t0=$(now)
    while [ "$(arrived "$1")" -lt $((before + $2)) ]; do sleep 0.05; done
    t1=$(now)
    echo "$2 / ($t1 - $t0)" | bc
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

log "latency at 100 msg/s for 20 s (pgbench --rate, one message per transaction), first, on a quiet cluster"
as_pg pgbench -n -R 100 -T 20 -c 2 -j 2 -f "$bench/publish_timed.sql" -h "$WORKDIR/data" -p "$port" postgres >/dev/null 2>&1
sleep 2
# commit-to-arrival: the commit time of each message's transaction (track_commit_timestamp)
q "SELECT id, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint
     FROM outbox._messages WHERE topic = 'bench.latency'" | tr '|' ' ' > "$WORKDIR/commits.txt"
latencies=$(awk -F'\t' '$4 == "bench.latency" { sub("msg_", "", $2); print $2, $1 }' "$WORKDIR/receiver.log" |
    awk 'NR == FNR { commit[$1] = $2; next } ($1 in commit) { printf "%.3f\n", ($2 - commit[$1]) / 1000 }' \
        "$WORKDIR/commits.txt" - | sort -n)
n=$(echo "$latencies" | wc -l)
p50=$(echo "$latencies" | awk -v n="$n" 'NR == int(n * 0.50) + 1')
p99=$(echo "$latencies" | awk -v n="$n" 'NR == int(n * 0.99) + 1')

log "throughput, batch_size 1 (max_in_flight 64), 3 runs of 50,000"
one=$(for _ in 1 2 3; do deliver_rate bench.one 50000; done | median)
log "the same receiver under wrk (2 threads, 64 connections, keep-alive, same body)"
wrk_rps=$(wrk -t2 -c64 -d5s -s "$bench/post.lua" "$url" | awk '/Requests\/sec/ { printf "%d", $2 }')
log "throughput, batch_size 100 (max_in_flight 8), 3 runs of 200,000"
batch=$(for _ in 1 2 3; do deliver_rate bench.batch 200000; done | median)

log "memory: 1,000,000 messages pending while the receiver is down"
relay=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'")
# private memory: RssAnon (VmRSS also counts the shared buffers the relay touched)
rss() { awk '/RssAnon/ { print $2 }' "/proc/$1/status"; }
rss0=$(rss "$relay")
kill -USR1 "$rpid"
q "SELECT count(outbox.publish('bench.memory', jsonb_build_object('seq', g))) FROM generate_series(1, 1000000) g" >/dev/null
sleep 10
rss1=$(rss "$relay")
kill -USR2 "$rpid"
sleep 5
rss2=$(rss "$relay")

echo
echo "| measure | result | target |"
echo "|---|---|---|"
printf '| throughput, batch_size 1 | %s msg/s | >= 10000 %s |\n' "$one" "$([ "$one" -ge 10000 ] && echo meets || echo BELOW)"
printf '| wrk on the same receiver | %s req/s | |\n' "$wrk_rps"
ratio=$(echo "scale=2; $one / $wrk_rps" | bc)
printf '| batch_size 1 / wrk | %s | >= 0.5 %s |\n' "$ratio" "$(echo "$ratio >= 0.5" | bc | sed 's/1/meets/;s/0/BELOW/')"
printf '| throughput, batch_size 100 | %s msg/s | >= 50000 %s |\n' "$batch" "$([ "$batch" -ge 50000 ] && echo meets || echo BELOW)"
printf '| commit-to-arrival p50 at 100 msg/s | %s ms (%s messages) | <= 5 ms %s |\n' "$p50" "$n" "$(echo "$p50 <= 5" | bc | sed 's/1/meets/;s/0/BELOW/')"
printf '| commit-to-arrival p99 at 100 msg/s | %s ms | <= 50 ms %s |\n' "$p99" "$(echo "$p99 <= 50" | bc | sed 's/1/meets/;s/0/BELOW/')"
growth=$(( (rss1 - rss0) / 1024 ))
printf '| relay private memory (RssAnon) growth, 1,000,000 pending | %s MB (%s -> %s kB; %s kB delivering) | < 50 MB %s |\n' \
    "$growth" "$rss0" "$rss1" "$rss2" "$([ "$growth" -lt 50 ] && echo meets || echo BELOW)"
