-- read_all: the global log in position order, paged by the last position seen.
CREATE TEMP TABLE seen (position bigint, stream text, version bigint);

SELECT count(outbox.append('r-' || (g % 3), jsonb_build_object('type', 'T', 'data', g)))
  FROM generate_series(1, 10) g;

-- Page through the whole log 4 events at a time.
DO $$
DECLARE
    last bigint := 0;
    n int;
BEGIN
    LOOP
        INSERT INTO seen SELECT position, stream, version FROM outbox.read_all(last, 4);
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
        SELECT max(position) INTO last FROM seen;
    END LOOP;
END
$$;
-- Paging returned every event exactly once, in position order.
SELECT (SELECT count(*) FROM seen) = (SELECT count(*) FROM outbox.events) AS all_seen,
       (SELECT count(DISTINCT position) FROM seen) = (SELECT count(*) FROM seen) AS no_repeats;
SELECT count(*) AS out_of_order FROM (
    SELECT position < lag(position) OVER (ORDER BY ctid) AS bad FROM seen) s WHERE bad;
-- Per stream, the global order is the version order.
SELECT stream, array_agg(version ORDER BY position) FROM seen WHERE stream LIKE 'r-%' GROUP BY stream ORDER BY stream;

-- max_count and after_position bound the page.
SELECT count(*) FROM outbox.read_all(0, 3);
SELECT count(*) FROM outbox.read_all((SELECT max(position) FROM outbox.events));

-- read_stream pages by version.
SELECT version, data FROM outbox.read_stream('r-1', 1, 2);
SELECT count(*) FROM outbox.read_stream('r-1', 100);
SELECT count(*) FROM outbox.read_stream('no-such-stream');

-- Uncommitted events of the reader's own transaction are not in read_all (they may roll back)
-- but are in read_stream.
BEGIN;
SELECT outbox.append('r-own', '{"type": "Mine"}') IS NOT NULL AS appended;
SELECT count(*) AS in_read_all FROM outbox.read_all((SELECT max(position) FROM seen));
SELECT count(*) AS in_read_stream FROM outbox.read_stream('r-own');
COMMIT;
SELECT stream, type FROM outbox.read_all((SELECT max(position) FROM seen));

-- The readers return the outbox.events row type.
SELECT pg_typeof(r) FROM outbox.read_all(0, 1) r;
