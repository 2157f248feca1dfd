#!/usr/bin/env bash
# Kafka relay benchmark: delivery to librdkafka's mock cluster (test/kafka)
# on this machine, against a bare librdkafka producer with the relay's
# producer configuration (test/kafka/bare_producer, src/kafka_conf.h)
# measured in the same run.
#   sudo test/bench/kafka.sh            (N=500000 KEYS=1000 ROUNDS=3 PARTITIONS=12)
#   sudo PERF_OUT=/tmp/relay.perf test/bench/kafka.sh   (also: perf record -g of
#        the relay during the first round's delivery; perf report -i FILE)
#   sudo QUICK=1 test/bench/kafka.sh    (throughput only: no latency, no memory)
#   sudo TPUT_OPTIONS='{"max_in_flight": 1024}' test/bench/kafka.sh
#        (the throughput endpoint's options; default: none)
#   sudo KEEP_LOG=/tmp/bench.log test/bench/kafka.sh   (keeps the server's log)
# Prints, as a README table: throughput of the relay (an endpoint with the
# default options, paused while N keyed messages of about 100 bytes are
# published, then timed from resume_endpoint until its saved cursor reaches
# the last message) and of the bare producer (the same N records, keys and
# value size), the median of each and of the per-round ratios (rounds
# alternate, so drift hits both alike); commit-to-acknowledgement latency
# at 100 msg/s; and the relay's private memory with 1,000,000 messages
# pending while every broker is down.
#
# The mock keeps about 5 MB per partition and drops the oldest records, so
# nothing here reads the records back (test/t/04x_kafka_* do).
source "$(dirname "$0")/../lib/common.sh"

N=${N:-500000}
KEYS=${KEYS:-1000}
ROUNDS=${ROUNDS:-3}
PARTITIONS=${PARTITIONS:-12}
QUICK=${QUICK:-}
TPUT_OPTIONS=${TPUT_OPTIONS:-'{}'}

ensure_packages bc
make_workdir
trap 'kill $mcpid $holder 2>/dev/null; stop_cluster "$WORKDIR/data"; [ -n "${KEEP_LOG:-}" ] && cp "$WORKDIR/data/server.log" "$KEEP_LOG"; rm -rf "$WORKDIR"' EXIT
build_and_install

port=$(free_port)
start_cluster "$WORKDIR/data" "$port" "shared_buffers = 512MB" "max_wal_size = 4GB"
bench=$WORKDIR/test/bench
q() { as_pg psql -X -qtA -h "$WORKDIR/data" -p "$port" -d postgres -c "$1"; }

# the mock cluster, driven through a FIFO that a sleeping writer keeps open
mkfifo "$WORKDIR/mc.in"
sleep 1000000 > "$WORKDIR/mc.in" &
holder=$!
"$WORKDIR/test/kafka/mockcluster" < "$WORKDIR/mc.in" > "$WORKDIR/mc.out" 2> "$WORKDIR/mc.err" &
mcpid=$!
for _ in $(seq 1 50); do [ -s "$WORKDIR/mc.out" ] && break; sleep 0.1; done
bootstrap=$(head -1 "$WORKDIR/mc.out")
mc() { # one command, and its answer
    local lines
    lines=$(wc -l < "$WORKDIR/mc.out")
    echo "$1" > "$WORKDIR/mc.in"
    for _ in $(seq 1 100); do [ "$(wc -l < "$WORKDIR/mc.out")" -gt "$lines" ] && break; sleep 0.05; done
    [ "$(tail -1 "$WORKDIR/mc.out")" = ok ] || { echo "mockcluster: $1: $(tail -1 "$WORKDIR/mc.out")" >&2; exit 1; }
}
mc "create bench.tput $PARTITIONS"
mc "create bench.bare $PARTITIONS"
mc "create bench.latency 4"
mc "create bench.memory 4"

q "CREATE EXTENSION outbox"
q "SELECT outbox.create_endpoint('tput', 'kafka://$bootstrap/bench.tput', '{bench.tput}', NULL, '{}',
     '$TPUT_OPTIONS')" >/dev/null
q "SELECT outbox.create_endpoint('latency', 'kafka://$bootstrap/bench.latency', '{bench.latency}')" >/dev/null
q "SELECT outbox.create_endpoint('memory', 'kafka://$bootstrap/bench.memory', '{bench.memory}', NULL, '{}',
     '{\"backoff_base_ms\": 100, \"backoff_max_ms\": 1000}')" >/dev/null
relay=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'")

now() { date +%s.%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$relay/stat"; }	# every thread of the relay
main_ticks() { awk '{ print $14 + $15 }' "/proc/$relay/task/$relay/stat"; }	# its main thread
idle_ticks() { awk '/^cpu / { print $5 + $6 }' /proc/stat; }	# the machine's, every CPU
# N messages like the bare producer's records: 1,000 keys, about 100 bytes of JSON
publish() { # topic n
    q "SELECT count(outbox.publish('$1', jsonb_build_object('seq', g, 'pad', repeat('x', 80)), 'key-' || (g % $KEYS)))
         FROM generate_series(1, $2) g" >/dev/null
}

# each endpoint's producer connects at its first message: not part of any figure
for t in bench.latency bench.memory; do q "SELECT outbox.publish('$t', '{}')" >/dev/null; done
q "DO \$\$ BEGIN
     WHILE (SELECT sum(delivered) FROM outbox.stat_endpoints WHERE name IN ('latency', 'memory')) < 2 LOOP
       PERFORM pg_sleep(0.1);
     END LOOP; END \$\$"

p50=-; p99=-; lat_n=0
if [ -z "$QUICK" ]; then
    log "latency at 100 msg/s for 20 s (pgbench --rate, one message per transaction), first, on a quiet cluster"
    # stat_endpoints keeps the latencies of the last 256 deliveries (2.6 s at 100
    # msg/s): sample it every 2 s; p50 is the median of the samples' p50, p99 the
    # largest of their p99 (conservative)
    as_pg pgbench -n -R 100 -T 20 -c 2 -j 2 -f "$bench/publish_timed.sql" -h "$WORKDIR/data" -p "$port" postgres \
        > /dev/null 2>&1 &
    pgb=$!
    : > "$WORKDIR/latency.txt"
    sleep 3
    while kill -0 "$pgb" 2>/dev/null; do
        q "SELECT latency_p50_ms, latency_p99_ms FROM outbox.stat_endpoints WHERE name = 'latency'" |
            tr '|' ' ' >> "$WORKDIR/latency.txt"
        sleep 2
    done
    lat_n=$(q "SELECT delivered FROM outbox.stat_endpoints WHERE name = 'latency'")
    p50=$(awk '{ printf "%.1f\n", $1 }' "$WORKDIR/latency.txt" | median)
    p99=$(awk '{ printf "%.1f\n", $2 }' "$WORKDIR/latency.txt" | sort -n | tail -1)
fi

log "throughput: $ROUNDS rounds of $N messages ($KEYS keys, $PARTITIONS partitions), relay then bare producer"
: > "$WORKDIR/rounds.txt"
for r in $(seq 1 "$ROUNDS"); do
    q "SELECT outbox.pause_endpoint('tput')" >/dev/null
    publish bench.tput "$N"
    last=$(q "SELECT max(id) FROM outbox.messages")
    q "CHECKPOINT"
    if [ "$r" = 1 ] && [ -n "${PERF_OUT:-}" ]; then
        perf record -F 999 -g -p "$relay" -o "$PERF_OUT" > /dev/null 2>&1 &
        perfpid=$!
        sleep 1
    fi
    c0=$(cpu_ticks)
    m0=$(main_ticks)
    i0=$(idle_ticks)
    t0=$(now)
    q "SELECT outbox.resume_endpoint('tput')" >/dev/null
    # polled inside one session (no transaction id: holds nothing back)
    q "DO \$\$ BEGIN
         WHILE (SELECT cursor_id FROM outbox._endpoints WHERE name = 'tput') < $last LOOP
           PERFORM pg_sleep(0.1);
         END LOOP; END \$\$"
    t1=$(now)
    c1=$(cpu_ticks)
    m1=$(main_ticks)
    i1=$(idle_ticks)
    [ -n "${perfpid:-}" ] && { kill -INT "$perfpid"; wait "$perfpid" || true; perfpid=; }
    relay_rate=$(echo "$N / ($t1 - $t0)" | bc)
    relay_us=$(echo "($c1 - $c0) * 1000000 / $(getconf CLK_TCK) / $N" | bc -l | xargs printf '%.1f')
    main_us=$(echo "($m1 - $m0) * 1000000 / $(getconf CLK_TCK) / $N" | bc -l | xargs printf '%.1f')
    idle=$(echo "($i1 - $i0) * 100 / $(getconf CLK_TCK) / $(nproc) / ($t1 - $t0)" | bc -l | xargs printf '%.0f')
    q "CHECKPOINT"
    bare_rate=$("$WORKDIR/test/kafka/bare_producer" -b "$bootstrap" -t bench.bare -n "$N" -k "$KEYS" -s 100 2>/dev/null |
        sed -n 's/.*msgs_per_sec=\([0-9]*\).*/\1/p')
    ratio=$(echo "scale=3; $relay_rate / $bare_rate" | bc)
    log "round $r: relay $relay_rate msg/s ($relay_us µs CPU per message, $main_us in its main thread, machine $idle % idle), bare $bare_rate msg/s, ratio $ratio"
    echo "$relay_rate $bare_rate $ratio $relay_us" >> "$WORKDIR/rounds.txt"
done
relay_med=$(awk '{ print $1 }' "$WORKDIR/rounds.txt" | median)
bare_med=$(awk '{ print $2 }' "$WORKDIR/rounds.txt" | median)
ratio_med=$(awk '{ print $3 }' "$WORKDIR/rounds.txt" | median)
cpu_med=$(awk '{ print $4 }' "$WORKDIR/rounds.txt" | median)
relay_all=$(awk '{ printf "%s%s", sep, $1; sep = ", " }' "$WORKDIR/rounds.txt")
bare_all=$(awk '{ printf "%s%s", sep, $2; sep = ", " }' "$WORKDIR/rounds.txt")

if [ -z "$QUICK" ]; then
    log "memory: 1,000,000 messages pending while every broker is down"
    # private memory: RssAnon (VmRSS also counts the shared buffers the relay touched)
    rss() { awk '/RssAnon/ { print $2 }' "/proc/$relay/status"; }
    # the peak, sampled every 100 ms: the window is held until timeout_ms (10 s),
    # then the breaker opens and lets one probe through at a time
    peak() { # seconds
        local p=0 kb
        for _ in $(seq 1 $(($1 * 10))); do kb=$(rss); [ "$kb" -gt "$p" ] && p=$kb; sleep 0.1; done
        echo "$p"
    }
    rss0=$(rss)
    for b in 1 2 3; do mc "down $b"; done
    publish bench.memory 1000000
    peak 20 > "$WORKDIR/peak" &
    sampler=$!
    sleep 3
    held=$(q "SELECT in_flight FROM outbox.stat_endpoints WHERE name = 'memory'")
    wait "$sampler"
    rss1=$(cat "$WORKDIR/peak")
    state=$(q "SELECT state || ', ' || in_flight || ' in flight' FROM outbox.stat_endpoints WHERE name = 'memory'")
    for b in 1 2 3; do mc "up $b"; done
    rss2=$(peak 10)
fi

yes_no() { [ "$1" = 1 ] && echo meets || echo BELOW; }
echo
echo "| measure | result | target |"
echo "|---|---|---|"
printf '| relay throughput (median of %s: %s) | %s msg/s (%s µs CPU per message) | >= 100000 %s |\n' \
    "$ROUNDS" "$relay_all" "$relay_med" "$cpu_med" "$(yes_no "$(echo "$relay_med >= 100000" | bc)")"
printf '| bare producer (median of %s: %s) | %s msg/s | |\n' "$ROUNDS" "$bare_all" "$bare_med"
printf '| relay / bare (median of the rounds) | %s | >= 0.5 %s |\n' "$ratio_med" "$(yes_no "$(echo "$ratio_med >= 0.5" | bc)")"
[ -n "$QUICK" ] && exit 0
printf '| commit-to-acknowledgement p50 at 100 msg/s | %s ms (%s messages) | |\n' "$p50" "$lat_n"
printf '| commit-to-acknowledgement p99 at 100 msg/s | %s ms | |\n' "$p99"
growth=$(( (rss1 - rss0) / 1024 ))
printf '| relay private memory (RssAnon) peak growth, 1,000,000 pending, brokers down | %s MB (%s -> %s kB; %s in flight, then %s; peak %s kB delivering after) | < 50 MB %s |\n' \
    "$growth" "$rss0" "$rss1" "$held" "$state" "$rss2" "$([ "$growth" -lt 50 ] && echo meets || echo BELOW)"
