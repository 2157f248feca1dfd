-- A message's payload and headers count together against
-- outbox.max_payload_bytes (a 50 MB header used to pass with the limit at
-- 1000 bytes), and a message must fit in one webhook request body (16 MB)
-- once printed as JSON text.
BEGIN;
SET LOCAL outbox.max_payload_bytes = 1000;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, jsonb_build_object('x-big', repeat('h', 2000)))$$) AS big_headers;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, jsonb_build_object('x-big', repeat('h', 50000000)))$$) AS huge_headers;
SELECT regress.try($$SELECT outbox.publish('t', to_jsonb(repeat('p', 600)), NULL, jsonb_build_object('x-h', repeat('h', 600)))$$) AS together_over;
SELECT regress.try($$SELECT outbox.publish('t', to_jsonb(repeat('p', 400)), NULL, jsonb_build_object('x-h', repeat('h', 400)))$$) AS together_within;
SELECT outbox.publish('t', to_jsonb(repeat('p', 600)), NULL, jsonb_build_object('x-h', repeat('h', 600)));
ROLLBACK;

-- 2 kB of jsonb that prints as 26 MB of digits: refused
BEGIN;
SELECT regress.try($$SELECT outbox.publish('t', (SELECT jsonb_agg('1e131000'::numeric) FROM generate_series(1, 200)))$$) AS prints_too_large;
SELECT outbox.publish('t', (SELECT jsonb_agg('1e131000'::numeric) FROM generate_series(1, 200)));
ROLLBACK;
-- the largest payload, escaped six times over (6 MB as text), fits
BEGIN;
SELECT regress.try($$SELECT outbox.publish('t', to_jsonb(repeat(chr(1), 1040000)))$$) AS escaped_fits;
ROLLBACK;

-- The same for events, which can never be deleted: an event that prints past
-- 1 GB (8,300 such numbers) used to be accepted, and then no reader and no
-- pg_dump could get past it.  Refused once it prints past 16 MB.
BEGIN;
SELECT regress.try($$SELECT outbox.append('poison', jsonb_build_object('type', 'x', 'data', (SELECT jsonb_agg('1e131000'::numeric) FROM generate_series(1, 200))))$$) AS event_data_prints_too_large;
SELECT regress.try($$SELECT outbox.append('poison', jsonb_build_object('type', 'x', 'metadata', jsonb_build_object('m', (SELECT jsonb_agg('1e131000'::numeric) FROM generate_series(1, 200)))))$$) AS event_metadata_prints_too_large;
SELECT regress.try($$SELECT outbox.append('fine', jsonb_build_object('type', 'x', 'data', (SELECT jsonb_agg('1e1000'::numeric) FROM generate_series(1, 100))))$$) AS event_prints_within;
ROLLBACK;
SELECT outbox.append('poison', jsonb_build_object('type', 'x', 'data', (SELECT jsonb_agg('1e131000'::numeric) FROM generate_series(1, 200))));
