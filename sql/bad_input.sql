-- Every bad input gets a clear error with a fitting SQLSTATE (never XX000 or P0001).

-- stream names
SELECT regress.try($$SELECT outbox.append(NULL, '{"type": "A"}')$$);
SELECT regress.try($$SELECT outbox.append('', '{"type": "A"}')$$);
SELECT regress.try($$SELECT outbox.append(repeat('s', 256), '{"type": "A"}')$$);
SELECT regress.try($$SELECT outbox.append(repeat('s', 255), '{"type": "A"}')$$) AS longest_stream_ok;
SELECT regress.try($$SELECT outbox.stream_etag(NULL)$$);
SELECT regress.try($$SELECT outbox.lock_stream('')$$);
SELECT regress.try($$SELECT * FROM outbox.read_stream(NULL)$$);

-- the events argument
SELECT regress.try($$SELECT outbox.append('bad', NULL)$$);
SELECT regress.try($$SELECT outbox.append('bad', '42')$$);
SELECT regress.try($$SELECT outbox.append('bad', '"Opened"')$$);
SELECT regress.try($$SELECT outbox.append('bad', '[]')$$);
SELECT regress.try($$SELECT outbox.append('bad', '[{"type": "A"}, 7]')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"data": {}}')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"type": ""}')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"type": 3}')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"type": "A", "meta": {}}')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"type": "A", "metadata": [1]}')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"type": "A", "id": "not-a-uuid"}')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"type": "A", "id": 12}')$$);
SELECT regress.try($$SELECT outbox.append('bad', (SELECT jsonb_agg(jsonb_build_object('type', 'A')) FROM generate_series(1, 10001)))$$);

-- the error names the failing event
\set VERBOSITY default
SELECT outbox.append('bad', '[{"type": "A"}, {"type": "B"}, {"type": "C", "id": "nope"}]');

-- an append that fails on its third event writes none of them
SELECT regress.try($$SELECT outbox.append('bad', '[{"type": "A"}, {"type": "B"}, {"type": ""}]')$$);
SELECT count(*) AS bad_events FROM outbox.events WHERE stream = 'bad';
SELECT split_part(outbox.stream_etag('bad'), '-', 1) AS bad_still_at_version;

-- ETags
SELECT regress.try($$SELECT outbox.append('bad', '{"type": "A"}', 'abc')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"type": "A"}', '')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"type": "A"}', 'W/"0-00000000000000000000000"')$$);
SELECT regress.try($$SELECT outbox.append('bad', '{"type": "A"}', '"0-ZZZZZZZZZZZZZZZZZZZZZZZZ"')$$);

-- size limits: outbox.max_payload_bytes (sessions may lower it, not raise it)
SHOW outbox.max_payload_bytes;
SELECT regress.try($$SET outbox.max_payload_bytes = '2MB'$$);
SELECT regress.try($$SET outbox.max_payload_bytes = 0$$);
SET outbox.max_payload_bytes = 100;
SELECT regress.try($$SELECT outbox.append('big', jsonb_build_object('type', 'A', 'data', repeat('x', 200)))$$);
SELECT regress.try($$SELECT outbox.append('big', jsonb_build_object('type', 'A', 'metadata', jsonb_build_object('m', repeat('x', 200))))$$);
SELECT regress.try($$SELECT outbox.append('big', jsonb_build_object('type', 'A', 'data', repeat('x', 50)))$$) AS small_data_ok;
SELECT regress.try($$SELECT outbox.publish('t', jsonb_build_object('p', repeat('x', 200)))$$);
RESET outbox.max_payload_bytes;
SELECT regress.try($$SELECT outbox.publish('t', jsonb_build_object('p', repeat('x', 200)))$$) AS after_reset_ok;

-- publish
SELECT regress.try($$SELECT outbox.publish(NULL, '{}')$$);
SELECT regress.try($$SELECT outbox.publish('', '{}')$$);
SELECT regress.try($$SELECT outbox.publish(repeat('t', 256), '{}')$$);
SELECT regress.try($$SELECT outbox.publish('orders.*', '{}')$$);
SELECT regress.try($$SELECT outbox.publish('t', NULL)$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', '')$$);
-- topic and key become HTTP header values: no header smuggling through them
SELECT regress.try($$SELECT outbox.publish('t', '{}', E'k\r\nwebhook-signature: v1,forged')$$);
SELECT regress.try($$SELECT outbox.publish(E't\n', '{}')$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', repeat('k', 256))$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, NULL)$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '[]')$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"x-a": 1}')$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"x a": "1"}')$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"x-a": "1\r\nx-evil: 1"}')$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"Webhook-Signature": "v1,forged"}')$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"content-type": "text/plain"}')$$);
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"x-trace-id": "abc"}')$$) AS good_headers_ok;

-- readers
SELECT regress.try($$SELECT * FROM outbox.read_all(-1)$$);
SELECT regress.try($$SELECT * FROM outbox.read_all(0, 0)$$);
SELECT regress.try($$SELECT * FROM outbox.read_all(0, 100001)$$);
SELECT regress.try($$SELECT * FROM outbox.read_all(NULL)$$);
SELECT regress.try($$SELECT * FROM outbox.read_stream('s', -1)$$);
SELECT regress.try($$SELECT * FROM outbox.read_stream('s', 0, NULL)$$);
SELECT regress.try($$SELECT * FROM outbox.read_messages(0, -5)$$);

-- consume_once
SELECT regress.try($$SELECT outbox.consume_once(NULL, 'm')$$);
SELECT regress.try($$SELECT outbox.consume_once('c', NULL)$$);
SELECT regress.try($$SELECT outbox.consume_once('c', '')$$);

-- delete_stream needs a reason
SELECT regress.try($$SELECT outbox.delete_stream('bad', NULL)$$);
SELECT regress.try($$SELECT outbox.delete_stream('bad', '')$$);

-- writers refuse read-only transactions with 25006, before touching anything
BEGIN READ ONLY;
SELECT regress.try($$SELECT outbox.publish('t', '{}')$$) AS publish_read_only;
SELECT regress.try($$SELECT outbox.append('ro', '{"type": "A"}')$$) AS append_read_only;
SELECT regress.try($$SELECT outbox.lock_stream('ro')$$) AS lock_read_only;
SELECT regress.try($$SELECT outbox.consume_once('c', 'ro')$$) AS consume_read_only;
SELECT regress.try($$SELECT outbox.stream_etag('ro')$$) AS stream_etag_is_a_read;
COMMIT;
