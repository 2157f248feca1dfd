-- One transaction may append to any number of streams: stream locks are row
-- locks, not entries in the shared lock table.  (A design with one
-- heavyweight lock per stream failed here with "out of shared memory".)
SHOW max_locks_per_transaction;
BEGIN;
SELECT count(outbox.append('bulk-' || g, '{"type": "Imported"}')) AS appended
  FROM generate_series(1, 20000) g;
SELECT count(*) AS locks_held FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory';
COMMIT;
SELECT count(*) AS streams, min(version) AS min_version, max(version) AS max_version
  FROM outbox.events WHERE stream LIKE 'bulk-%';
