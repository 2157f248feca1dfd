-- A caller's search_path cannot change what outbox's SQL means: plans are
-- prepared with pg_catalog only.  An "=" on text that is always true would
-- make every stream match if outbox resolved operators through this path.
CREATE SCHEMA evil;
CREATE FUNCTION evil.always_true(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.always_true);
SELECT outbox.append('sp-a', '{"type": "A"}') IS NOT NULL AS a, outbox.append('sp-b', '{"type": "B"}') IS NOT NULL AS b;
\c
SET search_path = evil, pg_catalog;
SELECT 'x'::text = 'y'::text AS evil_operator_active;
SELECT split_part(outbox.append('sp-a', '{"type": "A2"}'), '-', 1) AS a_version;
SELECT split_part(outbox.stream_etag('sp-b'), '-', 1) AS b_version_unchanged;
SELECT stream, version, type FROM outbox.read_stream('sp-b');
RESET search_path;
DROP SCHEMA evil CASCADE;
