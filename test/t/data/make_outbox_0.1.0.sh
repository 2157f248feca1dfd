#!/usr/bin/env bash
# Makes test/t/data/outbox-0.1.0.sql, the 0.1.0 database that
# test/t/006_upgrade.pl loads and updates: a plain pg_dump of a database that
# the 0.1.0 library itself filled (its relay delivered, retried and
# dead-lettered; its projector applied events), so the test updates real
# 0.1.0 data rather than rows written by hand.  Run it only to change the
# data set, against a PostgreSQL 15 with the 0.1.0 build installed (the
# dump loads where CREATE EXTENSION outbox VERSION '0.1.0' made the schema;
# the URLs' ports become OK_PORT and BAD_PORT, for the test to replace):
#   test/lib/release_tree.sh 0.1.0 /tmp/old && make -C /tmp/old install
#   test/t/data/make_outbox_0.1.0.sh /usr/lib/postgresql/15/bin /tmp/old/test/receiver/receiver
# (as a non-root user; it starts a temporary cluster on port 54399).
set -euo pipefail
bin=$1; receiver=$2; out=${3:-$(cd "$(dirname "$0")" && pwd)/outbox-0.1.0.sql}
tmp=$(mktemp -d)
port=54399
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; "$bin"/pg_ctl -D "$tmp/data" -m immediate stop >/dev/null 2>&1; rm -rf "$tmp"' EXIT INT TERM

"$bin"/initdb -D "$tmp/data" -U postgres >/dev/null
cat >> "$tmp/data/postgresql.conf" <<CONF
shared_preload_libraries = 'outbox'
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$tmp'
CONF
"$bin"/pg_ctl -D "$tmp/data" -l "$tmp/log" -w start >/dev/null

# two receivers: one healthy, one answering 500 to everything
for rx in ok bad; do
	"$receiver" --port 0 --log /dev/null --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
		--secret a-raw-secret-of-the-flaky-one > "$tmp/rx.$rx" &
	pids+=($!)
	until grep -q 'listening on' "$tmp/rx.$rx"; do sleep 0.05; done
done
ok_port=$(sed -n 's/listening on //p' "$tmp/rx.ok")
bad_port=$(sed -n 's/listening on //p' "$tmp/rx.bad")
curl -s "http://127.0.0.1:$bad_port/_control?fail_rate=1" >/dev/null

psql="$bin/psql -X -q -v ON_ERROR_STOP=1 -h $tmp -p $port -U postgres"
$psql -d postgres -c 'CREATE DATABASE fixture'
$psql -d fixture <<SQL
CREATE EXTENSION outbox;
-- read models and handlers (the user's side)
CREATE TABLE public.inline_seen (stream text, version bigint, type text NOT NULL, PRIMARY KEY (stream, version));
CREATE TABLE public.async_seen (position bigint PRIMARY KEY, stream text NOT NULL, type text NOT NULL);
CREATE TABLE public.gate (id int PRIMARY KEY);
INSERT INTO public.gate VALUES (1);
CREATE FUNCTION public.inline_h(e outbox.events) RETURNS void LANGUAGE sql
    AS \$\$ INSERT INTO public.inline_seen VALUES (e.stream, e.version, e.type) \$\$;
CREATE FUNCTION public.async_h(e outbox.events) RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM FROM public.gate FOR SHARE;  -- lets this script hold the projection back
    INSERT INTO public.async_seen VALUES (e.position, e.stream, e.type);
END \$\$;
CREATE FUNCTION public.async_reset() RETURNS void LANGUAGE sql AS \$\$ DELETE FROM public.async_seen \$\$;
SELECT outbox.create_projection('inline_orders', 'public.inline_h(outbox.events)', NULL, 'order-');
SELECT outbox.create_projection('async_typed', 'public.async_h(outbox.events)', '{created,paid}', NULL,
                                'async', 'public.async_reset()', '{"batch_size": 3}');

-- endpoints: a healthy one (whsec secret), a failing one that retries (raw
-- secret), one that dead-letters, one paused with messages waiting
SELECT outbox.create_endpoint('main', 'http://127.0.0.1:$ok_port/main', '{orders.*}',
       'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '{"x-env": "fixture"}');
SELECT outbox.create_endpoint('flaky', 'http://127.0.0.1:$bad_port/flaky', '{billing.*}',
       'a-raw-secret-of-the-flaky-one', '{}',
       '{"backoff_base_ms": 100, "backoff_max_ms": 1000, "max_attempts": 1000}');
SELECT outbox.create_endpoint('doomed', 'http://127.0.0.1:$bad_port/doomed', '{audit.*}',
       'a-raw-secret-of-the-flaky-one', '{}',
       '{"backoff_base_ms": 10, "backoff_max_ms": 10, "max_attempts": 2}');
SELECT outbox.create_endpoint('later', 'http://127.0.0.1:$ok_port/later', '{orders.*, billing.*}',
       'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
SELECT outbox.pause_endpoint('later');

-- events in several streams, one deleted
SELECT outbox.append('order-' || s, jsonb_build_array(
           jsonb_build_object('type', 'created', 'data', jsonb_build_object('n', s)),
           jsonb_build_object('type', 'paid', 'data', jsonb_build_object('n', s), 'metadata', '{"by": "card"}'::jsonb)))
  FROM generate_series(1, 5) s;
SELECT outbox.append('cust-1', '{"type": "registered", "data": {"name": "Ada"}}');
SELECT outbox.append('gdpr-1', '{"type": "created", "data": {"pii": "to be erased"}}');
SELECT outbox.delete_stream('gdpr-1', 'ticket-1');

-- messages, with keys
SELECT count(outbox.publish('orders.created', jsonb_build_object('seq', g), 'k' || (g % 4),
                            jsonb_build_object('trace', g::text)))
  FROM generate_series(1, 20) g;
SELECT count(outbox.publish('billing.charged', jsonb_build_object('seq', g), 'b' || (g % 3)))
  FROM generate_series(1, 9) g;
SELECT count(outbox.publish('audit.logged', jsonb_build_object('seq', g))) FROM generate_series(1, 3) g;

-- the inbox
SELECT count(outbox.consume_once('billing-svc', 'msg_' || g)) FROM generate_series(1, 5) g;
SELECT outbox.consume_once('audit-svc', 'msg_1');
SQL

# wait for 0.1.0's relay: main delivered, flaky retrying, doomed dead
q() { $psql -d fixture -Atc "$1"; }
for _ in $(seq 300); do
	[ "$(q "SELECT (SELECT count(*) FROM outbox.dead_letters) = 3
	              AND (SELECT max(attempts) FROM outbox._deliveries d JOIN outbox._endpoints e ON e.id = d.endpoint_id
	                    WHERE e.name = 'flaky') >= 3
	              AND (SELECT cursor_id FROM outbox._endpoints WHERE name = 'main') >= 20
	              AND (SELECT position FROM outbox._projections WHERE name = 'async_typed')
	                  >= (SELECT max(position) FROM outbox._events WHERE type IN ('created', 'paid'))")" = t ] && break
	sleep 0.1
done
q "SELECT * FROM outbox._deliveries ORDER BY 1, 2; SELECT name, cursor_id FROM outbox._endpoints;
   SELECT name, state, position FROM outbox._projections"

# hold the async projection back, then append what it has to catch up on
$psql -d fixture <<'SQL' &
BEGIN;
-- the projector's batch waits for this lock: the dump sees a checkpoint behind the log
SELECT FROM public.gate FOR UPDATE;
SELECT pg_sleep(8);
COMMIT;
SQL
holder=$!
sleep 1
q "SELECT outbox.append('order-6', '[{\"type\": \"created\"}, {\"type\": \"paid\"}]')" >/dev/null
q "SELECT outbox.append('order-' || s, '{\"type\": \"created\"}') FROM generate_series(7, 9) s" >/dev/null
sleep 1
"$bin"/pg_dump -h "$tmp" -p $port -U postgres --no-owner -d fixture |
	sed -e "s,127\.0\.0\.1:$ok_port,127.0.0.1:OK_PORT,g" -e "s,127\.0\.0\.1:$bad_port,127.0.0.1:BAD_PORT,g" \
	    -e '/^CREATE SCHEMA outbox;$/d' \
	    -e "s/^CREATE EXTENSION IF NOT EXISTS outbox WITH SCHEMA outbox;$/CREATE EXTENSION IF NOT EXISTS outbox WITH SCHEMA outbox VERSION '0.1.0';/" \
	> "$out"
q "SELECT 'xid ' || pg_current_xact_id()"
wait $holder
