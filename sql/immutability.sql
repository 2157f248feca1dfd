-- outbox.events is append-only for every role, superusers included.
SELECT outbox.append('gdpr-user-42', '[{"type": "SignedUp", "data": {"email": "a@example.com"}}, {"type": "LoggedIn"}]') AS etag \gset
SELECT outbox.append('keep-me', '{"type": "Kept"}') IS NOT NULL AS other_stream;
SELECT current_setting('is_superuser') AS superuser;

SELECT regress.try($$UPDATE outbox.events SET type = 'Forged' WHERE stream = 'gdpr-user-42'$$);
SELECT regress.try($$UPDATE outbox._events SET data = '{}' WHERE stream = 'gdpr-user-42'$$);
SELECT regress.try($$DELETE FROM outbox.events WHERE stream = 'gdpr-user-42'$$);
SELECT regress.try($$DELETE FROM outbox._events$$);
SELECT regress.try($$TRUNCATE outbox._events$$);
-- session_replication_role = replica switches ordinary triggers off, not the guard.
SET session_replication_role = replica;
SELECT regress.try($$DELETE FROM outbox._events$$);
SELECT regress.try($$UPDATE outbox._events SET data = '{}'$$);
SELECT regress.try($$TRUNCATE outbox._events$$);
RESET session_replication_role;
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'outbox._events'::regclass AND NOT tgisinternal ORDER BY tgname;
SELECT type, data FROM outbox.read_stream('gdpr-user-42');

-- The explicit, audited way to remove a stream for a data-protection request.
SELECT outbox.delete_stream('gdpr-user-42', 'erasure request #123') AS deleted;
SELECT count(*) AS left_in_stream FROM outbox.events WHERE stream = 'gdpr-user-42';
-- The head stays as a tombstone one version up: no ETag of the stream before the
-- delete matches it, and appends continue above it.
SELECT outbox.stream_etag('gdpr-user-42') = outbox.stream_etag('gdpr-user-42') AND
       split_part(outbox.stream_etag('gdpr-user-42'), '-', 1) = '"3' AS tombstone;
SELECT regress.try(format($$SELECT outbox.append('gdpr-user-42', '{"type": "Again"}', %L)$$, :'etag'));
SELECT regress.try($$SELECT outbox.append('gdpr-user-42', '{"type": "Again"}', '*')$$);
SELECT outbox.append('gdpr-user-42', '{"type": "Again"}', outbox.stream_etag('gdpr-user-42')) AS after_delete;
SELECT version, type FROM outbox.read_stream('gdpr-user-42');
SELECT outbox.delete_stream('gdpr-user-42', 'erasure request #123, again') AS deleted_again;
SELECT count(*) AS other_stream_untouched FROM outbox.events WHERE stream = 'keep-me';
-- The audit trail keeps who, when, why and a hash of the name, not the name itself.
SELECT stream_sha256 = encode(sha256('gdpr-user-42'::bytea), 'hex') AS hashed_name,
       events_deleted, deleted_by = current_user AS by_me, reason,
       deleted_at <= now() AS has_time
  FROM outbox.stream_deletions ORDER BY deleted_at, events_deleted DESC;
-- The guard is back on after delete_stream.
SELECT regress.try($$DELETE FROM outbox._events WHERE stream = 'keep-me'$$);
-- Deleting a stream that does not exist removes nothing (and is still audited).
SELECT outbox.delete_stream('never-existed', 'erasure request #124') AS deleted;
SELECT count(*) AS audit_rows FROM outbox.stream_deletions;
