# Part two of the demo (sourced by test/demo.sh): webhook delivery to a local
# receiver, signed, with a forced failure that is retried.
# Expects: WORKDIR, port, as_pg, log from test/lib/common.sh.

SECRET='whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
demo_sql() { as_pg psql -X -q -h "$WORKDIR/data" -p "$port" -d postgres "$@"; }

# GET a path of the receiver's control API (no curl needed)
receiver_get() {
    exec 3<>"/dev/tcp/127.0.0.1/$rport"
    printf 'GET %s HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n' "$1" >&3
    cat <&3 >/dev/null
    exec 3<&-
}

# print the receiver's log lines for a topic, readably
show_arrivals() {
    awk -F'\t' -v t="$1" '$4 == t { printf "   received %-8s topic=%s key=%s signature=%s\n", $2, $4, $3, $5 }' "$WORKDIR/receiver.log"
}

wait_for_arrivals() { # topic count
    for _ in $(seq 1 100); do
        [ "$(awk -F'\t' -v t="$1" '$4 == t' "$WORKDIR/receiver.log" | wc -l)" -ge "$2" ] && return 0
        sleep 0.1
    done
    echo "   (timed out waiting for $2 deliveries of $1)"
}

echo
echo "== 10. Webhook delivery: a local receiver and an endpoint with a secret"
"$WORKDIR/test/receiver/receiver" --port 0 --secret "$SECRET" --log "$WORKDIR/receiver.log" \
    > "$WORKDIR/receiver.out" 2>&1 &
receiver_pid=$!
trap 'kill $receiver_pid 2>/dev/null; stop_cluster "$WORKDIR/data"; rm -rf "$WORKDIR"' EXIT
for _ in $(seq 1 50); do grep -q 'listening on' "$WORKDIR/receiver.out" && break; sleep 0.1; done
rport=$(awk '/listening on/ { print $3 }' "$WORKDIR/receiver.out")
echo "   receiver (test/receiver, verifies Standard Webhooks signatures) on port $rport"
demo_sql -c "SELECT outbox.create_endpoint('shop-backend', 'http://127.0.0.1:$rport/webhooks', '{orders.*}',
                 '$SECRET', '{\"x-source\": \"outbox-demo\"}', '{\"backoff_base_ms\": 300, \"backoff_max_ms\": 1000}');" >/dev/null
demo_sql -c "SELECT name, url, topics, has_secret FROM outbox.endpoints;"
echo "   Publishing three orders in one transaction with their business rows:"
demo_sql <<'SQL'
BEGIN;
INSERT INTO orders VALUES (2001, 'Ada', 10), (2002, 'Grace', 20), (2003, 'Ada', 30);
SELECT count(outbox.publish('orders.created', jsonb_build_object('order', id, 'total', total), 'customer-' || lower(customer)))
       AS "messages published" FROM orders WHERE id >= 2001;
COMMIT;
SQL
wait_for_arrivals orders.created 3
show_arrivals orders.created

echo
echo "== 11. A failure is retried: the receiver answers 500 until told otherwise"
receiver_get '/_control?status=500'
demo_sql -c "SELECT outbox.publish('orders.cancelled', '{\"order\": 2002}', 'customer-grace') AS \"message id\";"
for _ in $(seq 1 50); do
    [ "$(demo_sql -Atc "SELECT count(*) FROM outbox._deliveries WHERE state = 'retry'")" -ge 1 ] && break
    sleep 0.1
done
demo_sql -c "SELECT message_id, attempts, last_status, next_attempt_at > now() AS backing_off FROM outbox._deliveries;"
echo "   The receiver recovers; the next attempt goes through:"
receiver_get '/_control?status=0'
wait_for_arrivals orders.cancelled 1
show_arrivals orders.cancelled

echo
echo "== 12. outbox.stat_endpoints"
sleep 0.3
demo_sql -x -c "SELECT name, state, pending, in_flight, delivered, failed_attempts, dead_lettered,
                       last_http_status, last_error, round(latency_p50_ms::numeric, 1) AS latency_p50_ms,
                       round(latency_p99_ms::numeric, 1) AS latency_p99_ms
                  FROM outbox.stat_endpoints;"
