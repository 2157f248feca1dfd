-- Event store: appends, ETags, optimistic concurrency, idempotent retries.

-- A stream with no events has a non-NULL, quoted "empty stream" ETag.
SELECT outbox.stream_etag('account-1') AS empty_etag \gset
SELECT :'empty_etag' ~ '^"0-[0-9a-f]{24}"$' AS is_quoted_etag;

-- Create only if new: append with the ETag read before the stream existed.
SELECT outbox.append('account-1', '{"type": "Opened", "data": {"owner": "ann"}}', :'empty_etag') AS etag1 \gset
SELECT :'etag1' <> :'empty_etag' AS etag_changed, :'etag1' = outbox.stream_etag('account-1') AS etag_is_current;
-- The same "create only if new" a second time conflicts.
SELECT outbox.append('account-1', '{"type": "Opened"}', :'empty_etag');

-- Several events in one append get consecutive versions; each append changes the ETag.
SELECT outbox.append('account-1', '[{"type": "Deposited", "data": {"amount": 100}},
                                    {"type": "Withdrawn", "data": {"amount": 30}, "metadata": {"by": "atm"}}]',
                     :'etag1') AS etag2 \gset
SELECT :'etag2' NOT IN (:'etag1', :'empty_etag') AS etag_changed_again;
SELECT stream, version, type, data, metadata FROM outbox.read_stream('account-1');

-- A stale ETag is rejected with OB001 and writes nothing.
\set VERBOSITY default
SELECT outbox.append('account-1', '{"type": "Deposited", "data": {"amount": 1}}', :'etag1');
SELECT regress.try($$SELECT outbox.append('account-1', '{"type": "Deposited"}', '$$ || :'etag1' || $$')$$);
SELECT count(*) AS events_in_account_1 FROM outbox.events WHERE stream = 'account-1';

-- An ETag never matches another stream, even at the same version.
SELECT outbox.append('account-2', '{"type": "Opened"}') AS other1 \gset
SELECT split_part(:'other1', '-', 1) = split_part(:'etag1', '-', 1) AS same_version,
       :'other1' <> :'etag1' AS different_etag;
SELECT regress.try($$SELECT outbox.append('account-2', '{"type": "Deposited"}', '$$ || :'etag1' || $$')$$);

-- NULL: no check.  '*': the stream must exist.
SELECT outbox.append('account-1', '{"type": "Deposited", "data": {"amount": 5}}') AS unchecked \gset
SELECT :'unchecked' = outbox.stream_etag('account-1') AS unchecked_append_is_current;
SELECT outbox.append('account-1', '{"type": "Deposited", "data": {"amount": 6}}', '*') AS star \gset
SELECT :'star' = outbox.stream_etag('account-1') AS star_on_existing_is_current;
SELECT outbox.append('account-3', '{"type": "Opened"}', '*');
SELECT count(*) AS star_did_not_create FROM outbox.read_stream('account-3');

-- Idempotent retry: same ids, same expected ETag -> nothing written, same ETag returned.
SELECT outbox.stream_etag('orders-9') AS o_empty \gset
SELECT outbox.append('orders-9', '[{"type": "Placed", "id": "00000000-0000-4000-8000-000000000001"},
                                   {"type": "Paid",   "id": "00000000-0000-4000-8000-000000000002"}]', :'o_empty') AS o_first \gset
SELECT outbox.append('orders-9', '[{"type": "Placed", "id": "00000000-0000-4000-8000-000000000001"},
                                   {"type": "Paid",   "id": "00000000-0000-4000-8000-000000000002"}]', :'o_empty') = :'o_first' AS retry_same_etag;
SELECT count(*) AS orders_9_events FROM outbox.events WHERE stream = 'orders-9';
-- ... also with no ETag at all, and after the stream moved on.
SELECT outbox.append('orders-9', '{"type": "Shipped", "id": "00000000-0000-4000-8000-000000000003"}') AS o_third \gset
SELECT outbox.append('orders-9', '[{"type": "Placed", "id": "00000000-0000-4000-8000-000000000001"},
                                   {"type": "Paid",   "id": "00000000-0000-4000-8000-000000000002"}]') = :'o_first' AS retry_without_etag;
SELECT outbox.append('orders-9', '{"type": "Shipped", "id": "00000000-0000-4000-8000-000000000003"}', :'o_first') = :'o_third' AS retry_of_third;
SELECT count(*) AS orders_9_events FROM outbox.events WHERE stream = 'orders-9';
-- A retry that is not the same append (ids in another order, or one new id) is not a replay.
SELECT regress.try($$SELECT outbox.append('orders-9', '[{"type": "Paid", "id": "00000000-0000-4000-8000-000000000002"},
                                   {"type": "Placed", "id": "00000000-0000-4000-8000-000000000001"}]', '$$ || :'o_empty' || $$')$$);
SELECT regress.try($$SELECT outbox.append('orders-9', '[{"type": "Placed", "id": "00000000-0000-4000-8000-000000000001"},
                                   {"type": "Paid",   "id": "00000000-0000-4000-8000-000000000099"}]')$$);
-- Reusing an id of another stream is refused.
SELECT regress.try($$SELECT outbox.append('orders-10', '{"type": "Placed", "id": "00000000-0000-4000-8000-000000000001"}')$$);
SELECT count(*) AS orders_10_events FROM outbox.events WHERE stream = 'orders-10';

-- Generated event ids are time-ordered version-7 UUIDs (their first 48 bits are the
-- creation time in Unix milliseconds); given ids are kept.
SELECT count(*) FILTER (WHERE event_id::text ~ '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$') = count(*) AS all_v7,
       bool_and(abs(extract(epoch FROM created_at) * 1000
                    - ('x' || replace(left(event_id::text, 13), '-', ''))::bit(48)::bigint) < 1000) AS time_prefix
  FROM outbox.events WHERE stream = 'account-1';
SELECT event_id FROM outbox.events WHERE stream = 'orders-9' ORDER BY version;

-- Versions are 1..n per stream; positions grow with versions.
SELECT stream, array_agg(version ORDER BY position) AS versions
  FROM outbox.events GROUP BY stream ORDER BY stream;

-- lock_stream: returns the current ETag and holds the head; an append with it cannot conflict.
BEGIN;
SELECT outbox.lock_stream('account-1') = outbox.stream_etag('account-1') AS lock_returns_current;
SELECT outbox.append('account-1', '{"type": "Closed"}', outbox.lock_stream('account-1')) AS closed \gset
SELECT :'closed' = outbox.stream_etag('account-1') AS append_under_lock_is_current;
COMMIT;
-- lock_stream of a new stream gives the empty ETag and "create only if new" still works.
BEGIN;
SELECT outbox.lock_stream('account-4') = outbox.stream_etag('account-4') AS new_stream_lock,
       split_part(outbox.lock_stream('account-4'), '-', 1) AS version_part;
SELECT outbox.append('account-4', '{"type": "Opened"}', outbox.lock_stream('account-4')) IS NOT NULL AS created;
COMMIT;
SELECT version, type FROM outbox.read_stream('account-4');

-- A rolled-back append leaves nothing, and the next append reuses the version.
BEGIN;
SELECT outbox.append('account-5', '{"type": "Opened"}');
ROLLBACK;
SELECT outbox.stream_etag('account-5') AS still_empty;
SELECT outbox.append('account-5', '{"type": "Reopened"}') AS first_real_version;
SELECT version, type FROM outbox.read_stream('account-5');

-- Appends in a failed subtransaction vanish; the stream carries on from the last committed version.
BEGIN;
SAVEPOINT s;
SELECT outbox.append('account-5', '{"type": "Lost"}') IS NOT NULL AS appended_in_savepoint;
ROLLBACK TO SAVEPOINT s;
SELECT outbox.append('account-5', '{"type": "Kept"}') IS NOT NULL AS appended_after;
COMMIT;
SELECT version, type FROM outbox.read_stream('account-5');
