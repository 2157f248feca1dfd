/*
 * outbox 0.1.0 install script.
 *
 * Public objects live in schema outbox; private ones start with "_" and carry
 * a COMMENT.  Tables are written only by outbox's C functions, which run their
 * statements as the extension owner: the roles get EXECUTE on functions and
 * SELECT on views, never write access to a table.
 */
\echo Use "CREATE EXTENSION outbox" to load this file. \quit

/*
 * Roles are cluster-wide, so a second database (or a re-created extension)
 * finds them already there: create and link them only when missing.
 */
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['outbox_reader', 'outbox_writer', 'outbox_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
    FOREACH r IN ARRAY ARRAY['outbox_reader', 'outbox_writer'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members m
                       WHERE m.roleid = pg_catalog.to_regrole(r)
                         AND m.member = pg_catalog.to_regrole('outbox_admin')) THEN
            EXECUTE pg_catalog.format('GRANT %I TO outbox_admin', r);
        END IF;
    END LOOP;
END
$roles$;

GRANT USAGE ON SCHEMA outbox TO outbox_reader, outbox_writer, outbox_admin;

/* ------------------------------------------------------------------------
 * Event store
 * ------------------------------------------------------------------------ */

CREATE TABLE outbox._streams (
    stream  text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL
) WITH (fillfactor = 50);
COMMENT ON TABLE outbox._streams IS
    'private: one head row per stream; its version is the optimistic-concurrency token and its row lock serialises appends to that stream';

CREATE SEQUENCE outbox._events_position_seq AS bigint;
COMMENT ON SEQUENCE outbox._events_position_seq IS
    'private: global positions of events, taken while the stream is locked';

CREATE TABLE outbox._events (
    position   bigint PRIMARY KEY,
    stream     text COLLATE "C" NOT NULL,
    version    bigint NOT NULL,
    type       text NOT NULL,
    data       jsonb NOT NULL,
    metadata   jsonb NOT NULL,
    event_id   uuid NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    xmark      xid8 NOT NULL,
    UNIQUE (stream, version)
);
COMMENT ON TABLE outbox._events IS
    'private: the event log, append-only (a trigger rejects UPDATE, DELETE and TRUNCATE)';
COMMENT ON COLUMN outbox._events.stream IS
    'stream names are identifiers: compared byte by byte (COLLATE "C"), which also keeps index probes cheap';
COMMENT ON COLUMN outbox._events.xmark IS
    'private: next transaction id read just after the position was taken; any transaction with a larger xid took a larger position, which is what makes outbox.read_all gap-free';
ALTER SEQUENCE outbox._events_position_seq OWNED BY outbox._events.position;

CREATE VIEW outbox.events AS
    SELECT position, stream, version, type, data, metadata, event_id, created_at
      FROM outbox._events;
COMMENT ON VIEW outbox.events IS 'every event of every stream (append-only)';

CREATE TABLE outbox.stream_deletions (
    stream_sha256  text NOT NULL,
    events_deleted bigint NOT NULL,
    deleted_by     name NOT NULL,
    deleted_at     timestamptz NOT NULL,
    reason         text NOT NULL
);
COMMENT ON TABLE outbox.stream_deletions IS
    'audit trail of outbox.delete_stream: who removed which stream (by SHA-256 of its name, so the name itself is not kept) and why';

/* ------------------------------------------------------------------------
 * Transactional outbox and inbox
 * ------------------------------------------------------------------------ */

CREATE SEQUENCE outbox._messages_id_seq AS bigint;
COMMENT ON SEQUENCE outbox._messages_id_seq IS 'private: message ids';

CREATE TABLE outbox._messages (
    id         bigint PRIMARY KEY,
    topic      text COLLATE "C" NOT NULL,
    key        text COLLATE "C",
    payload    jsonb NOT NULL,
    headers    jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    xmark      xid8 NOT NULL
);
COMMENT ON TABLE outbox._messages IS 'private: published messages, a gap-free log like outbox._events';
COMMENT ON COLUMN outbox._messages.xmark IS 'private: see outbox._events.xmark';
ALTER SEQUENCE outbox._messages_id_seq OWNED BY outbox._messages.id;

CREATE VIEW outbox.messages AS
    SELECT id, topic, key, payload, headers, created_at
      FROM outbox._messages;
COMMENT ON VIEW outbox.messages IS 'messages published with outbox.publish';

CREATE TABLE outbox._inbox (
    consumer    text COLLATE "C" NOT NULL,
    message_id  text COLLATE "C" NOT NULL,
    consumed_at timestamptz NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
COMMENT ON TABLE outbox._inbox IS 'private: message ids each consumer has seen (outbox.consume_once)';

/* Keep the data in pg_dump: these tables are the product, not configuration. */
SELECT pg_catalog.pg_extension_config_dump('outbox._streams', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._events', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._events_position_seq', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.stream_deletions', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._messages', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._messages_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._inbox', '');

/* ------------------------------------------------------------------------
 * Functions
 * ------------------------------------------------------------------------ */

CREATE FUNCTION outbox.append(stream text, events jsonb, expected_etag text DEFAULT NULL)
    RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_append' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION outbox.append(text, jsonb, text) IS
    'append one event (object) or several (array) to a stream; returns the new ETag';

CREATE FUNCTION outbox.stream_etag(stream text)
    RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_stream_etag' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION outbox.stream_etag(text) IS
    'current ETag of a stream; a stream without events has a non-NULL empty-stream ETag';

CREATE FUNCTION outbox.lock_stream(stream text)
    RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_lock_stream' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION outbox.lock_stream(text) IS
    'lock a stream head until the transaction ends and return its ETag';

CREATE FUNCTION outbox.read_stream(stream text, after_version bigint DEFAULT 0, max_count int DEFAULT 1000)
    RETURNS SETOF outbox.events
    AS 'MODULE_PATHNAME', 'outbox_read_stream' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION outbox.read_stream(text, bigint, int) IS 'events of one stream in version order';

CREATE FUNCTION outbox.read_all(after_position bigint DEFAULT 0, max_count int DEFAULT 1000)
    RETURNS SETOF outbox.events
    AS 'MODULE_PATHNAME', 'outbox_read_all' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION outbox.read_all(bigint, int) IS
    'the global event log in position order, gap-free: a reader that passes the last position it saw never misses an event';

CREATE FUNCTION outbox.delete_stream(stream text, reason text)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'outbox_delete_stream' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION outbox.delete_stream(text, text) IS
    'remove a whole stream for a data-protection request (admin only, audited in outbox.stream_deletions)';

CREATE FUNCTION outbox.publish(topic text, payload jsonb, key text DEFAULT NULL, headers jsonb DEFAULT '{}')
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'outbox_publish' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION outbox.publish(text, jsonb, text, jsonb) IS
    'store a message in the caller''s transaction; returns its id';

CREATE FUNCTION outbox.read_messages(after_id bigint DEFAULT 0, max_count int DEFAULT 1000)
    RETURNS SETOF outbox.messages
    AS 'MODULE_PATHNAME', 'outbox_read_messages' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION outbox.read_messages(bigint, int) IS
    'published messages in id order, gap-free like outbox.read_all';

CREATE FUNCTION outbox.consume_once(consumer text, message_id text)
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'outbox_consume_once' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION outbox.consume_once(text, text) IS
    'idempotent-consumer check: true the first time a consumer sees a message id, false on every repeat';

CREATE FUNCTION outbox._forbid_change()
    RETURNS trigger
    AS 'MODULE_PATHNAME', 'outbox_forbid_change' LANGUAGE C;
COMMENT ON FUNCTION outbox._forbid_change() IS
    'private: trigger keeping outbox._events append-only';

CREATE TRIGGER forbid_update_delete BEFORE UPDATE OR DELETE ON outbox._events
    FOR EACH ROW EXECUTE FUNCTION outbox._forbid_change();
CREATE TRIGGER forbid_truncate BEFORE TRUNCATE ON outbox._events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox._forbid_change();

/* ------------------------------------------------------------------------
 * Privileges: PUBLIC gets nothing; each role gets exactly its functions.
 * ------------------------------------------------------------------------ */

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    outbox.append(text, jsonb, text),
    outbox.stream_etag(text),
    outbox.lock_stream(text),
    outbox.publish(text, jsonb, text, jsonb),
    outbox.consume_once(text, text)
TO outbox_writer;

GRANT EXECUTE ON FUNCTION
    outbox.stream_etag(text),
    outbox.read_stream(text, bigint, int),
    outbox.read_all(bigint, int),
    outbox.read_messages(bigint, int)
TO outbox_reader;
GRANT SELECT ON outbox.events, outbox.messages TO outbox_reader;

GRANT EXECUTE ON FUNCTION outbox.delete_stream(text, text) TO outbox_admin;
GRANT SELECT ON outbox.stream_deletions TO outbox_admin;
