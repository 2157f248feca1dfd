#!/usr/bin/env bash
# Relay memory benchmark: the relay's private memory (RssAnon, sampled every
# 10 ms) while it delivers the largest payloads with batch settings at their
# maximum, to one endpoint and then to four at once.
#   sudo test/bench/memory.sh
# README "Memory" states the bound these figures are checked against.
source "$(dirname "$0")/../lib/common.sh"

ensure_packages
make_workdir
trap 'kill $rpid $spid 2>/dev/null; stop_cluster "$WORKDIR/data"; rm -rf "$WORKDIR"' EXIT
build_and_install

port=$(free_port)
# 16 MB payloads: the largest request body (16 MB) with one message
start_cluster "$WORKDIR/data" "$port" "outbox.max_payload_bytes = '16MB'"
q() { as_pg psql -X -qtA -h "$WORKDIR/data" -p "$port" -d postgres -c "$1"; }

"$WORKDIR/test/receiver/receiver" --port 0 --log "$WORKDIR/receiver.log" --max-body 33554432 \
    > "$WORKDIR/receiver.out" 2>&1 &
rpid=$!
for _ in $(seq 1 50); do grep -q 'listening on' "$WORKDIR/receiver.out" && break; sleep 0.1; done
rport=$(awk '/listening on/ { print $3 }' "$WORKDIR/receiver.out")
url="http://127.0.0.1:$rport/hook"

q "CREATE EXTENSION outbox"
max='{"batch_size": 1000, "max_in_flight": 1000, "ordered": false, "timeout_ms": 300000}'
for e in 1 2 3 4; do
    q "SELECT outbox.create_endpoint('e$e', '$url', '{all,e$e}', NULL, '{}', '$max')" >/dev/null
done
q "SELECT outbox.create_endpoint('many', '$url', '{many}', NULL, '{}',
     '{\"batch_size\": 1, \"max_in_flight\": 1000, \"ordered\": false, \"timeout_ms\": 300000}')" >/dev/null
relay=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'")
rss() { awk '/RssAnon/ { print $2 }' "/proc/$relay/status"; }

# the peak since the last reset, in kB, kept in $WORKDIR/peak
( peak=0
  while :; do
      [ -f "$WORKDIR/reset" ] && { peak=0; rm -f "$WORKDIR/reset"; }
      kb=$(rss); [ "${kb:-0}" -gt "$peak" ] && { peak=$kb; echo "$peak" > "$WORKDIR/peak"; }
      sleep 0.01
  done ) &
spid=$!

arrived() { wc -l < "$WORKDIR/receiver.log"; }
# phase NAME SQL EXPECTED_LINES: publish, wait for the receiver, print the peak
phase() {
    local before t0 t1
    touch "$WORKDIR/reset"; sleep 0.1
    before=$(arrived)
    t0=$(date +%s.%N)
    q "$2" >/dev/null
    while [ "$(arrived)" -lt $((before + $3)) ]; do sleep 0.05; done
    t1=$(date +%s.%N)
    sleep 0.2
    printf '| %s | %s MB | %.1f s |\n' "$1" "$(echo "scale=1; $(cat "$WORKDIR/peak") / 1024" | bc)" "$(echo "$t1 - $t0" | bc)"
}

log "the relay at rest: $(rss) kB"
echo
echo "| phase (batch_size 1000, max_in_flight 1000 unless said) | relay RssAnon peak | time |"
echo "|---|---|---|"
phase "one endpoint, 50 payloads of 1 MB jsonb (6.2 MB as text)" \
    "SELECT count(outbox.publish('e1', to_jsonb(repeat(chr(1), 1040000)))) FROM generate_series(1, 50)" 50
phase "one endpoint, 20 payloads of 16 MB as text (the largest body)" \
    "SELECT count(outbox.publish('e1', to_jsonb(repeat('a', 16000000)))) FROM generate_series(1, 20)" 20
phase "one endpoint, 2,000 payloads of 96 kB as text (1 MB batches)" \
    "SELECT count(outbox.publish('e1', to_jsonb(repeat(chr(1), 16000)))) FROM generate_series(1, 2000)" 2000
phase "no endpoint matches: 5 messages with 15 MB headers, then one small" \
    "SELECT count(outbox.publish('nobody', '{}', NULL, jsonb_build_object('x-h', repeat('h', 15000000)))) FROM generate_series(1, 5);
     SELECT outbox.publish('e1', '{}')" 1
curl -s "http://127.0.0.1:$rport/_control?delay_ms=2000" >/dev/null
phase "1,000 requests in flight (batch_size 1, answers 2 s late), 5,000 small messages" \
    "SELECT count(outbox.publish('many', jsonb_build_object('seq', g))) FROM generate_series(1, 5000) g" 5000
curl -s "http://127.0.0.1:$rport/_control?delay_ms=0" >/dev/null
phase "four endpoints at once, 50 payloads of 1 MB jsonb each" \
    "SELECT count(outbox.publish('all', to_jsonb(repeat(chr(1), 1040000)))) FROM generate_series(1, 50)" 200
phase "four endpoints at once, 20 payloads of 16 MB as text each" \
    "SELECT count(outbox.publish('all', to_jsonb(repeat('a', 16000000)))) FROM generate_series(1, 20)" 80
echo
log "the relay at rest afterwards: $(rss) kB; loops: $(q "SELECT loops FROM outbox.stat_workers WHERE database = 'postgres'")"
