-- The outbox demo: run by test/demo.sh against a throwaway cluster.
\set ON_ERROR_STOP 1
\pset footer off
\pset null '(null)'

\echo
\echo '== 1. CREATE EXTENSION outbox'
CREATE EXTENSION outbox;
SELECT extversion AS "outbox version" FROM pg_extension WHERE extname = 'outbox';

\echo
\echo '== 2. Event store: append events to a stream, each append returns the new ETag'
SELECT outbox.stream_etag('account-42') AS empty_etag \gset
\echo 'ETag of the stream before it exists (use it to create only if new):' :empty_etag
SELECT outbox.append('account-42', '{"type": "AccountOpened", "data": {"owner": "Ada"}}', :'empty_etag') AS etag1 \gset
\echo 'after AccountOpened:' :etag1
SELECT outbox.append('account-42', '[{"type": "Deposited", "data": {"amount": 100}},
                                     {"type": "Withdrawn", "data": {"amount": 30}}]', :'etag1') AS etag2 \gset
\echo 'after Deposited + Withdrawn (one atomic append):' :etag2
SELECT position, version, type, data FROM outbox.read_stream('account-42');

\echo
\echo '== 3. A writer holding a stale ETag is refused: SQLSTATE OB001, nothing written'
CREATE FUNCTION pg_temp.append_or_conflict(stream text, events jsonb, etag text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    RETURN 'appended, new ETag ' || outbox.append(stream, events, etag);
EXCEPTION WHEN SQLSTATE 'OB001' THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN format('conflict caught (%s): %s. %s', SQLSTATE, SQLERRM, detail);
END
$$;
SELECT pg_temp.append_or_conflict('account-42', '{"type": "Withdrawn", "data": {"amount": 500}}', :'etag1')
       AS "a writer that read the stream at version 1";
SELECT count(*) AS "events in account-42 (still 3)" FROM outbox.events WHERE stream = 'account-42';
\echo 'The same append with the current ETag goes through:'
SELECT outbox.append('account-42', '{"type": "Withdrawn", "data": {"amount": 20}}', :'etag2') AS etag3;

\echo
\echo '== 4. Replay: rebuild the balance read model from the events'
SELECT outbox.append('account-7', '[{"type": "AccountOpened", "data": {"owner": "Grace"}},
                                    {"type": "Deposited", "data": {"amount": 250}}]') IS NOT NULL AS "account-7 opened";
CREATE TABLE balances (account text PRIMARY KEY, owner text, balance numeric NOT NULL DEFAULT 0, version bigint);
INSERT INTO balances (account, owner, balance, version)
SELECT stream,
       max(data->>'owner'),
       sum(CASE type WHEN 'Deposited' THEN (data->>'amount')::numeric
                     WHEN 'Withdrawn' THEN -(data->>'amount')::numeric ELSE 0 END),
       max(version)
  FROM outbox.read_all(0, 1000)
 GROUP BY stream;
SELECT * FROM balances ORDER BY account;

\echo
\echo '== 5. Transactional outbox: the message is stored in the same transaction as the business row'
CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL);
BEGIN;
INSERT INTO orders VALUES (1001, 'Ada', 59.90);
SELECT outbox.publish('orders.created', '{"order": 1001, "total": 59.90}', 'customer-ada',
                      '{"x-trace-id": "demo-1"}') AS "published message id";
COMMIT;
SELECT * FROM orders;
SELECT id, topic, key, payload, headers FROM outbox.messages;

\echo
\echo '== 6. A rollback leaves nothing behind: neither the order nor its message'
BEGIN;
INSERT INTO orders VALUES (1002, 'Grace', 12.00);
SELECT outbox.publish('orders.created', '{"order": 1002, "total": 12.00}', 'customer-grace') AS "message id (about to roll back)";
ROLLBACK;
SELECT (SELECT count(*) FROM orders WHERE id = 1002) AS "order 1002 rows",
       (SELECT count(*) FROM outbox.messages WHERE payload->>'order' = '1002') AS "its messages";

\echo
\echo '== 7. Idempotent consumer: the first delivery is processed, a repeat is recognised'
SELECT outbox.consume_once('billing', 'msg-1001') AS "first time", outbox.consume_once('billing', 'msg-1001') AS "repeat";

\echo
\echo '== 8. Gap-free global log: a subscriber pages through read_all by position'
SELECT position, stream, version, type FROM outbox.read_all(0, 3);
SELECT position, stream, version, type FROM outbox.read_all(3, 100);
