/*
 * outbox install script (the current version: the Makefile copies it to
 * outbox--$(EXTVERSION).sql).  Every change to it also goes into the upgrade
 * script from the previous version; test/t/006_upgrade.pl proves the two agree.
 *
 * Public objects live in schema outbox; private ones start with "_" and carry
 * a COMMENT.  Tables are written only by outbox's C functions, which run their
 * statements as the extension owner: the roles get EXECUTE on functions and
 * SELECT on views, never write access to a table.
 */
\echo Use "CREATE EXTENSION outbox" to load this file. \quit

/*
 * Schema squatting.  CREATE EXTENSION uses a schema outbox that already
 * exists as it is, whoever made it.  Its owner (or anyone it lets CREATE
 * there) could plant functions that outbox's own calls resolve to -- an
 * overload matching an argument better, run by the superuser installing or
 * updating the extension, by the relay, and by every SECURITY DEFINER
 * function.  So the schema must belong to the extension owner (the role
 * running this script), no one else may create objects in it, and it must
 * hold nothing yet.  This check is the fix: with the schema owned by the
 * extension owner, nobody else can add a function to it.
 * The casts on every call of an outbox function (no untyped literal, no
 * default filled in) only make the calls say what they mean.
 */
DO $schema$
DECLARE
    nsp oid;
    owner oid;
    ext_owner oid;
BEGIN
    SELECT n.oid, n.nspowner INTO nsp, owner
      FROM pg_catalog.pg_namespace n WHERE n.nspname = 'outbox'::pg_catalog.name;
    SELECT e.extowner INTO ext_owner
      FROM pg_catalog.pg_extension e WHERE e.extname = 'outbox'::pg_catalog.name;
    IF owner <> ext_owner THEN
        RAISE EXCEPTION 'schema "outbox" is owned by role "%", not by the extension owner "%"',
                pg_catalog.pg_get_userbyid(owner), pg_catalog.pg_get_userbyid(ext_owner)
            USING ERRCODE = '42501',
                  DETAIL = 'Its owner could plant functions that outbox would call with the extension owner''s rights.',
                  HINT = 'Drop schema outbox, or let CREATE EXTENSION outbox create it.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
                WHERE n.oid = nsp AND a.privilege_type = 'CREATE' AND a.grantee <> owner) THEN
        RAISE EXCEPTION 'roles other than the owner of schema "outbox" may create objects in it'
            USING ERRCODE = '42501',
                  DETAIL = 'They could plant functions that outbox would call with the extension owner''s rights.',
                  HINT = 'Revoke CREATE on schema outbox from every role but its owner.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_depend d
                WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                  AND d.refobjid = nsp
                  AND d.classid <> 'pg_catalog.pg_extension'::pg_catalog.regclass) THEN
        RAISE EXCEPTION 'schema "outbox" already contains objects'
            USING ERRCODE = '42501',
                  DETAIL = 'The extension''s own calls could resolve to functions planted there.',
                  HINT = 'Drop schema outbox, or let CREATE EXTENSION outbox create it.';
    END IF;
END
$schema$;

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
-- The relay deletes delivered messages after outbox.retention; vacuum often
-- so that the space is reused and the table stops growing.
ALTER TABLE outbox._messages SET (autovacuum_vacuum_scale_factor = 0.02,
                                  autovacuum_vacuum_insert_scale_factor = 0.05);
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
CREATE INDEX _inbox_consumed_at ON outbox._inbox (consumed_at);
COMMENT ON INDEX outbox._inbox_consumed_at IS
    'private: finds the rows older than outbox.inbox_retention, which the relay deletes';

CREATE TABLE outbox._consumers (
    consumer text COLLATE "C" PRIMARY KEY,
    owner    name NOT NULL
);
COMMENT ON TABLE outbox._consumers IS
    'private: the role each outbox.consume_once consumer name belongs to (the first to use it), so that no other writer can mark its messages as seen';

/* Keep the data in pg_dump: these tables are the product, not configuration. */
SELECT pg_catalog.pg_extension_config_dump('outbox._streams', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._events', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._events_position_seq', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.stream_deletions', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._messages', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._messages_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._inbox', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._consumers', '');

/* ------------------------------------------------------------------------
 * Webhook endpoints and delivery state
 *
 * An endpoint's progress is a cursor over the gap-free message log: every
 * message with id <= cursor_id is delivered, waiting to be retried, or dead
 * (done_ahead lists ids beyond the cursor already delivered).  Only messages
 * that left the main flow (retries, dead letters) have a row of their own in
 * outbox._deliveries: a successful delivery writes nothing per message.
 * ------------------------------------------------------------------------ */

CREATE TABLE outbox._endpoints (
    id         int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text COLLATE "C" NOT NULL UNIQUE,
    url        text NOT NULL,
    topics     text[] NOT NULL,
    secret     text,
    headers    jsonb NOT NULL,
    options    jsonb NOT NULL,
    paused     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    cursor_id  bigint NOT NULL,
    done_ahead bigint[] NOT NULL DEFAULT '{}',
    kafka_secrets jsonb
);
COMMENT ON TABLE outbox._endpoints IS
    'private: webhook and Kafka endpoints; secret and kafka_secrets (a Kafka endpoint''s write-only client properties, kept out of options) are write-only (no view shows them); cursor_id and done_ahead are the relay''s progress';

CREATE TABLE outbox._deliveries (
    endpoint_id     int NOT NULL REFERENCES outbox._endpoints ON DELETE CASCADE,
    message_id      bigint NOT NULL,
    state           text NOT NULL CHECK (state IN ('retry', 'dead')),
    attempts        int NOT NULL,
    next_attempt_at timestamptz,
    last_status     int,
    last_error      text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, message_id)
);
COMMENT ON TABLE outbox._deliveries IS
    'private: deliveries that left the main flow: waiting for a retry (or for an earlier message with the same key), or dead-lettered';

SELECT pg_catalog.pg_extension_config_dump('outbox._endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._endpoints_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._deliveries', '');

CREATE VIEW outbox.endpoints AS
    SELECT name, url, topics, headers, options, paused, created_at,
           secret IS NOT NULL AS has_secret,
           ARRAY(SELECT k FROM jsonb_object_keys(kafka_secrets) k ORDER BY k) AS kafka_secret_names
      FROM outbox._endpoints;
COMMENT ON VIEW outbox.endpoints IS
    'configured webhook and Kafka endpoints (secrets are never shown: has_secret, and the names of the write-only Kafka client properties set)';

CREATE FUNCTION outbox._shown_url(url text) RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_shown_url' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION outbox._shown_url(text) IS
    'private: the URL for outbox_admin, its origin (scheme://host:port/, no userinfo, path or query) for anyone else';

CREATE FUNCTION outbox._shown_error(error text) RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_shown_error' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION outbox._shown_error(text) IS
    'private: a delivery error for outbox_admin, without the response body for anyone else';

CREATE VIEW outbox.dead_letters AS
    SELECT d.message_id, e.name AS endpoint, d.attempts, d.last_status,
           outbox._shown_error(d.last_error) AS last_error,
           d.updated_at AS dead_at, m.topic, m.key, m.payload
      FROM outbox._deliveries d
      JOIN outbox._endpoints e ON e.id = d.endpoint_id
      LEFT JOIN outbox._messages m ON m.id = d.message_id
     WHERE d.state = 'dead';
COMMENT ON VIEW outbox.dead_letters IS
    'deliveries that gave up; outbox.redeliver() re-queues them; last_error keeps the response body for outbox_admin only';

CREATE FUNCTION outbox._check_url(url text) RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_check_url' LANGUAGE C STRICT IMMUTABLE;
COMMENT ON FUNCTION outbox._check_url(text) IS
    'private: an absolute http(s) URL as libcurl parses it, or 22023';

CREATE FUNCTION outbox._check_kafka_url(url text) RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_check_kafka_url' LANGUAGE C STRICT IMMUTABLE;
COMMENT ON FUNCTION outbox._check_kafka_url(text) IS
    'private: a kafka://host:port[,host:port...]/topic URL as stored (the topic may hold {topic}), or 22023 (src/kafkaurl.c)';

CREATE FUNCTION outbox._check_endpoint_url(url text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp
    AS $$ SELECT CASE WHEN url ~* '^kafka:' THEN outbox._check_kafka_url(url) ELSE outbox._check_url(url) END $$;
COMMENT ON FUNCTION outbox._check_endpoint_url(text) IS
    'private: an endpoint''s URL as stored, checked by its transport (kafka: or http(s)), or 22023';

CREATE FUNCTION outbox._notify_relay() RETURNS void
    AS 'MODULE_PATHNAME', 'outbox_notify_relay' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION outbox._notify_relay() IS
    'private: wake this database''s relay when the transaction commits (endpoint changes, CREATE EXTENSION)';

CREATE FUNCTION outbox._check_topics(topics text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p text;
BEGIN
    IF topics IS NULL THEN
        RAISE EXCEPTION 'topics must not be null' USING ERRCODE = '22004';
    END IF;
    IF cardinality(topics) = 0 THEN
        RAISE EXCEPTION 'topics must not be empty' USING ERRCODE = '22023',
            HINT = 'Use ''{*}'' for every topic.';
    ELSIF array_ndims(topics) > 1 THEN
        RAISE EXCEPTION 'topics must be a one-dimensional array' USING ERRCODE = '22023';
    END IF;
    FOREACH p IN ARRAY topics LOOP
        IF p IS NULL THEN
            RAISE EXCEPTION 'topic patterns must not be null' USING ERRCODE = '22004';
        ELSIF p = '' THEN
            RAISE EXCEPTION 'topic patterns must not be empty' USING ERRCODE = '22023';
        ELSIF octet_length(p) > 255 THEN
            RAISE EXCEPTION 'topic pattern is too long' USING ERRCODE = '22001',
                DETAIL = format('It is %s bytes long; the limit is 255 bytes.', octet_length(p));
        ELSIF p ~ '[\x01-\x1f\x7f]' THEN
            RAISE EXCEPTION 'topic patterns must not contain control characters' USING ERRCODE = '22023';
        ELSIF strpos(rtrim(p, '*'), '*') > 0 OR p LIKE '%**' THEN
            RAISE EXCEPTION 'invalid topic pattern "%"', p USING ERRCODE = '22023',
                DETAIL = 'A pattern is an exact topic, "*", or a prefix ending in "*" such as "orders.*".';
        END IF;
    END LOOP;
    RETURN topics;
END
$$;
COMMENT ON FUNCTION outbox._check_topics(text[]) IS 'private: validates topic patterns (22004, 22023, 22001)';

CREATE FUNCTION outbox._check_name(kind text, name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION '% name must not be null', kind USING ERRCODE = '22004';
    ELSIF name = '' OR octet_length(name) > 255 THEN
        RAISE EXCEPTION '% name must be 1 to 255 bytes long', kind USING ERRCODE = '22023';
    ELSIF name ~ '[\x01-\x1f\x7f]' THEN
        -- names end up in log lines, errors and metrics labels
        RAISE EXCEPTION '% name must not contain control characters', kind USING ERRCODE = '22023';
    END IF;
    RETURN name;
END
$$;
COMMENT ON FUNCTION outbox._check_name(text, text) IS
    'private: validates an endpoint''s, projection''s or subscription''s name (22004, 22023)';

CREATE FUNCTION outbox._check_secret(secret text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s text;
    n int := 0;
BEGIN
    IF secret IS NULL THEN
        RETURN NULL;
    ELSIF btrim(secret) = '' THEN
        RAISE EXCEPTION 'endpoint secret must not be empty' USING ERRCODE = '22023',
            HINT = 'Pass NULL for an endpoint without signatures.';
    END IF;
    FOREACH s IN ARRAY regexp_split_to_array(btrim(secret), '\s+') LOOP
        n := n + 1;
        IF s LIKE 'whsec\_%' THEN
            BEGIN
                IF length(decode(substr(s, 7), 'base64')) < 16 THEN
                    RAISE EXCEPTION 'endpoint secret is too short' USING ERRCODE = '22023',
                        HINT = 'Use at least 16 random bytes.';
                END IF;
            EXCEPTION WHEN invalid_parameter_value THEN
                RAISE EXCEPTION 'endpoint secret "whsec_..." is not valid base64' USING ERRCODE = '22023';
            END;
        ELSIF octet_length(s) < 16 THEN
            RAISE EXCEPTION 'endpoint secret is too short' USING ERRCODE = '22023',
                HINT = 'Use at least 16 random bytes, e.g. ''whsec_'' || encode(gen_random_bytes(24), ''base64'').';
        END IF;
    END LOOP;
    IF n > 3 THEN
        RAISE EXCEPTION 'at most 3 secrets may be active at once' USING ERRCODE = '22023',
            HINT = 'Give the new secret and the one being rotated out, separated by a space.';
    END IF;
    RETURN btrim(secret);
END
$$;
COMMENT ON FUNCTION outbox._check_secret(text) IS
    'private: one to three space-separated secrets, each "whsec_<base64>" or raw, of at least 16 bytes';

CREATE FUNCTION outbox._check_endpoint_secret(url text, secret text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF secret IS NOT NULL AND url ~* '^kafka:' THEN
        RAISE EXCEPTION 'a Kafka endpoint takes no secret' USING ERRCODE = '22023',
            DETAIL = 'The secret signs webhook requests; Kafka records are not signed.',
            HINT = 'Give the cluster''s credentials in options.kafka (sasl.username, sasl.password). To turn a webhook endpoint into a Kafka one, give "secret": null in the same call.';
    END IF;
    RETURN outbox._check_secret(secret);
END
$$;
COMMENT ON FUNCTION outbox._check_endpoint_secret(text, text) IS
    'private: an endpoint''s webhook secret checked (22023), none for a Kafka endpoint';

CREATE FUNCTION outbox._require_object(value jsonb, what text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what USING ERRCODE = '22004';
    ELSIF jsonb_typeof(value) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', what USING ERRCODE = '22023';
    END IF;
    RETURN value;
END
$$;
COMMENT ON FUNCTION outbox._require_object(jsonb, text) IS
    'private: the argument, if it is a JSON object (22004 for NULL, 22023 otherwise)';

CREATE FUNCTION outbox._endpoint_options(given jsonb, base jsonb, url text, base_kafka_secrets jsonb,
                                         OUT options jsonb, OUT kafka_secrets jsonb)
    AS 'MODULE_PATHNAME', 'outbox_endpoint_options' LANGUAGE C IMMUTABLE;
COMMENT ON FUNCTION outbox._endpoint_options(jsonb, jsonb, text, jsonb) IS
    'private: endpoint options given merged over base (the current ones, or the defaults) for an endpoint at url, checked (22004, 22023) and normalised as the relay reads them; a Kafka endpoint''s write-only client properties (merged over base_kafka_secrets) apart';

CREATE FUNCTION outbox._projection_options(given jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'outbox_projection_options' LANGUAGE C IMMUTABLE;
COMMENT ON FUNCTION outbox._projection_options(jsonb) IS
    'private: projection options checked (22004, 22023) and normalised as the relay reads them, defaults filled in';

CREATE FUNCTION outbox._endpoint_id(endpoint text) RETURNS int
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result int;
BEGIN
    IF endpoint IS NULL THEN
        RAISE EXCEPTION 'endpoint name must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT id INTO result FROM outbox._endpoints WHERE name = endpoint;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" does not exist', endpoint USING ERRCODE = '42704';
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION outbox._endpoint_id(text) IS 'private: an endpoint''s id, or 42704';

CREATE FUNCTION outbox.create_endpoint(name text, url text, topics text[] DEFAULT '{*}',
                                       secret text DEFAULT NULL, headers jsonb DEFAULT '{}',
                                       options jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u text;
    o record;
BEGIN
    PERFORM outbox._check_name('endpoint'::text, name);
    IF url IS NULL THEN
        RAISE EXCEPTION 'url must not be null' USING ERRCODE = '22004';
    ELSIF headers IS NULL THEN
        RAISE EXCEPTION 'headers must not be null' USING ERRCODE = '22004';
    ELSIF EXISTS (SELECT FROM outbox._endpoints e WHERE e.name = create_endpoint.name) THEN
        RAISE EXCEPTION 'endpoint "%" already exists', name USING ERRCODE = '42710',
            HINT = 'Use outbox.alter_endpoint() to change it.';
    END IF;
    PERFORM outbox._check_headers(headers);
    u := outbox._check_endpoint_url(url);
    SELECT * INTO o FROM outbox._endpoint_options(options, NULL::jsonb, u, NULL::jsonb);
    -- messages whose id is above the sequence's current value are the ones
    -- published after the endpoint was created
    INSERT INTO outbox._endpoints (name, url, topics, secret, headers, options, kafka_secrets, cursor_id)
    SELECT create_endpoint.name, u, outbox._check_topics(topics),
           outbox._check_endpoint_secret(u, secret), headers, o.options, o.kafka_secrets,
           CASE WHEN s.is_called THEN s.last_value ELSE 0 END
      FROM outbox._messages_id_seq s;
    PERFORM outbox._notify_relay();
END
$$;
COMMENT ON FUNCTION outbox.create_endpoint(text, text, text[], text, jsonb, jsonb) IS
    'configure a webhook (http(s)://) or Kafka (kafka://) endpoint: it receives every message published from now on whose topic matches';

CREATE FUNCTION outbox.alter_endpoint(name text, changes jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    eid int := outbox._endpoint_id(alter_endpoint.name);
    k text;
    brokers text;
    kept text[];
BEGIN
    FOR k IN SELECT jsonb_object_keys(outbox._require_object(changes, 'changes'::text)) LOOP
        IF k NOT IN ('url', 'topics', 'secret', 'headers', 'options') THEN
            RAISE EXCEPTION 'unknown endpoint setting "%"', k USING ERRCODE = '22023',
                HINT = 'Settings: url, topics, secret, headers, options.';
        END IF;
    END LOOP;
    SELECT split_part(e.url, '/', 3) INTO brokers FROM outbox._endpoints e WHERE e.id = eid;
    IF changes ? 'url' THEN
        IF jsonb_typeof(changes -> 'url') <> 'string' THEN
            RAISE EXCEPTION '"url" must be a string' USING ERRCODE = '22023';
        END IF;
        UPDATE outbox._endpoints SET url = outbox._check_endpoint_url(changes ->> 'url') WHERE id = eid;
    END IF;
    IF changes ? 'topics' THEN
        IF jsonb_typeof(changes -> 'topics') <> 'array' THEN
            RAISE EXCEPTION '"topics" must be an array of strings' USING ERRCODE = '22023';
        END IF;
        UPDATE outbox._endpoints
           SET topics = outbox._check_topics(ARRAY(SELECT jsonb_array_elements_text(changes -> 'topics')))
         WHERE id = eid;
    END IF;
    IF changes ? 'secret' THEN
        IF jsonb_typeof(changes -> 'secret') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION '"secret" must be a string or null' USING ERRCODE = '22023';
        END IF;
        UPDATE outbox._endpoints SET secret = outbox._check_secret(changes ->> 'secret') WHERE id = eid;
    END IF;
    IF changes ? 'headers' THEN
        PERFORM outbox._check_headers(changes -> 'headers');
        UPDATE outbox._endpoints SET headers = changes -> 'headers' WHERE id = eid;
    END IF;
    -- a new URL may change the kind of endpoint, and with it the options
    IF changes ?| ARRAY['url', 'options'] THEN
        UPDATE outbox._endpoints e
           SET (options, kafka_secrets) =
               (SELECT o.options, o.kafka_secrets
                  FROM outbox._endpoint_options(coalesce(changes -> 'options', '{}'::jsonb), e.options, e.url,
                                                e.kafka_secrets) o)
         WHERE e.id = eid;
    END IF;
    -- write-only properties go only to the brokers they were given for: the
    -- caller, who cannot read them, may not send them to brokers of its own
    SELECT ARRAY(SELECT p FROM jsonb_object_keys(e.kafka_secrets) p
                  WHERE NOT coalesce(changes -> 'options' -> 'kafka' ? p, false) ORDER BY p)
      INTO kept FROM outbox._endpoints e WHERE e.id = eid AND split_part(e.url, '/', 3) <> brokers;
    IF cardinality(kept) > 0 THEN
        RAISE EXCEPTION 'new brokers for endpoint "%" need its write-only Kafka client properties again',
            alter_endpoint.name USING ERRCODE = '22023',
            DETAIL = format('Stored: %s. They are sent only to the brokers they were given for.',
                            array_to_string(kept, ', ')),
            HINT = 'Give them again in options.kafka in the same call, or remove them with null.';
    END IF;
    PERFORM outbox._check_endpoint_secret(e.url, e.secret) FROM outbox._endpoints e WHERE e.id = eid;
    PERFORM outbox._notify_relay();
END
$$;
COMMENT ON FUNCTION outbox.alter_endpoint(text, jsonb) IS
    'change any of an endpoint''s url, topics, secret, headers, options (options are merged, options.kafka property by property: null removes one)';

CREATE FUNCTION outbox.drop_endpoint(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM outbox._endpoints WHERE id = outbox._endpoint_id(drop_endpoint.name);
    PERFORM outbox._notify_relay();
END
$$;
COMMENT ON FUNCTION outbox.drop_endpoint(text) IS 'remove an endpoint, its retries and its dead letters';

CREATE FUNCTION outbox._set_paused(name text, paused boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE outbox._endpoints SET paused = _set_paused.paused
     WHERE id = outbox._endpoint_id(_set_paused.name);
    PERFORM outbox._notify_relay();
END
$$;
COMMENT ON FUNCTION outbox._set_paused(text, boolean) IS 'private: pause_endpoint and resume_endpoint';

CREATE FUNCTION outbox.pause_endpoint(name text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT outbox._set_paused(name, true) $$;
COMMENT ON FUNCTION outbox.pause_endpoint(text) IS 'stop sending to an endpoint; messages wait';

CREATE FUNCTION outbox.resume_endpoint(name text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT outbox._set_paused(name, false) $$;
COMMENT ON FUNCTION outbox.resume_endpoint(text) IS 'resume sending to a paused endpoint';

CREATE FUNCTION outbox.redeliver(message_id bigint, endpoint text DEFAULT NULL) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    eid int := CASE WHEN endpoint IS NULL THEN NULL ELSE outbox._endpoint_id(endpoint) END;
    n int;
BEGIN
    IF message_id IS NULL THEN
        RAISE EXCEPTION 'message_id must not be null' USING ERRCODE = '22004';
    END IF;
    UPDATE outbox._deliveries d
       SET state = 'retry', attempts = 0, next_attempt_at = now(), updated_at = now()
     WHERE d.message_id = redeliver.message_id AND d.state = 'dead'
       AND (eid IS NULL OR d.endpoint_id = eid);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM outbox._notify_relay();
    RETURN n;
END
$$;
COMMENT ON FUNCTION outbox.redeliver(bigint, text) IS
    're-queue the dead-lettered deliveries of a message (to one endpoint or all); returns how many';

CREATE FUNCTION outbox._check_headers(headers jsonb) RETURNS void
    AS 'MODULE_PATHNAME', 'outbox_check_headers_sql' LANGUAGE C IMMUTABLE;
COMMENT ON FUNCTION outbox._check_headers(jsonb) IS
    'private: an endpoint''s headers (22023 otherwise): HTTP token names, each once, non-empty string values without control characters but tab, none that outbox sets or that governs the connection (src/validate.c)';

/* ------------------------------------------------------------------------
 * Monitoring
 * ------------------------------------------------------------------------ */

CREATE FUNCTION outbox._stat_endpoints(
    OUT endpoint_id int, OUT state text, OUT queued int, OUT in_flight int, OUT fetched bigint,
    OUT delivered bigint, OUT failed_attempts bigint, OUT dead_lettered bigint,
    OUT oldest_pending timestamptz, OUT last_success_at timestamptz, OUT last_failure_at timestamptz,
    OUT last_http_status int, OUT last_error text, OUT p50_ms float8, OUT p99_ms float8)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'outbox_stat_endpoints' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION outbox._stat_endpoints() IS
    'private: the relay''s figures for this database''s endpoints, from shared memory';

CREATE FUNCTION outbox._stat_workers(
    OUT dboid oid, OUT pid int, OUT state text, OUT started_at timestamptz,
    OUT last_activity_at timestamptz, OUT loops bigint, OUT requests bigint,
    OUT horizon_blocked_since timestamptz, OUT horizon_blocking_pid int,
    OUT horizon_blocking_since timestamptz, OUT worker text)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'outbox_stat_workers' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION outbox._stat_workers() IS 'private: every relay slot of the cluster and its projector, from shared memory';

CREATE VIEW outbox.stat_endpoints AS
    SELECT e.name, outbox._shown_url(e.url) AS url,
           CASE WHEN e.paused THEN 'paused' ELSE coalesce(s.state, 'active') END AS state,
           coalesce(s.queued - s.in_flight, 0)
             + greatest(0, (SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END
                              FROM outbox._messages_id_seq q) - coalesce(s.fetched, e.cursor_id)) AS pending,
           coalesce(s.in_flight, 0) AS in_flight,
           coalesce(s.delivered, 0) AS delivered,
           coalesce(s.failed_attempts, 0) AS failed_attempts,
           (SELECT count(*) FROM outbox._deliveries d WHERE d.endpoint_id = e.id AND d.state = 'dead') AS dead_lettered,
           now() - s.oldest_pending AS oldest_pending_age,
           s.last_success_at, s.last_failure_at, s.last_http_status, s.last_error,
           s.p50_ms AS latency_p50_ms, s.p99_ms AS latency_p99_ms
      FROM outbox._endpoints e
      LEFT JOIN outbox._stat_endpoints() s ON s.endpoint_id = e.id;
COMMENT ON VIEW outbox.stat_endpoints IS
    'per endpoint: state, backlog, counters since the relay started, last outcome, commit-to-delivery latency over the last 256 deliveries; the full url and response bodies in last_error for outbox_admin only';

CREATE VIEW outbox.stat_workers AS
    SELECT d.datname AS database, w.worker, w.pid, w.state, w.started_at, w.last_activity_at,
           w.loops, w.requests,
           now() - w.horizon_blocking_since AS horizon_age,
           w.horizon_blocking_pid, w.horizon_blocked_since
      FROM outbox._stat_workers() w
      JOIN pg_catalog.pg_database d ON d.oid = w.dboid;
COMMENT ON VIEW outbox.stat_workers IS
    'per relay, and per projector of async projections: database, pid, state, activity, counters; while a running transaction holds its reading back, its age and pid';

CREATE FUNCTION outbox.metrics() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH e AS (
        SELECT '{endpoint="' || replace(replace(replace(name, '\', '\\'), '"', '\"'), E'\n', '\n') || '"}' AS l, *
          FROM outbox.stat_endpoints
    ), lines(metric, kind, help, value) AS (
        SELECT 'outbox_delivered_total', 'counter', 'Messages delivered with a 2xx since the relay started.', string_agg('outbox_delivered_total' || l || ' ' || delivered, E'\n') FROM e
        UNION ALL SELECT 'outbox_failed_attempts_total', 'counter', 'Failed delivery attempts since the relay started.', string_agg('outbox_failed_attempts_total' || l || ' ' || failed_attempts, E'\n') FROM e
        UNION ALL SELECT 'outbox_dead_letters', 'gauge', 'Dead-lettered deliveries.', string_agg('outbox_dead_letters' || l || ' ' || dead_lettered, E'\n') FROM e
        UNION ALL SELECT 'outbox_pending', 'gauge', 'Messages waiting for delivery.', string_agg('outbox_pending' || l || ' ' || pending, E'\n') FROM e
        UNION ALL SELECT 'outbox_in_flight', 'gauge', 'Messages in requests under way.', string_agg('outbox_in_flight' || l || ' ' || in_flight, E'\n') FROM e
        UNION ALL SELECT 'outbox_oldest_pending_seconds', 'gauge', 'Age of the oldest waiting message.', string_agg('outbox_oldest_pending_seconds' || l || ' ' || coalesce(extract(epoch FROM oldest_pending_age), 0), E'\n') FROM e
        UNION ALL SELECT 'outbox_endpoint_up', 'gauge', '1 if the endpoint is active (not paused, circuit not open).', string_agg('outbox_endpoint_up' || l || ' ' || (state = 'active')::int, E'\n') FROM e
        UNION ALL SELECT 'outbox_delivery_latency_p50_seconds', 'gauge', 'Median commit-to-delivery latency, last 256 deliveries.', string_agg('outbox_delivery_latency_p50_seconds' || l || ' ' || coalesce(latency_p50_ms / 1000, 0), E'\n') FROM e
        UNION ALL SELECT 'outbox_delivery_latency_p99_seconds', 'gauge', '99th percentile commit-to-delivery latency, last 256 deliveries.', string_agg('outbox_delivery_latency_p99_seconds' || l || ' ' || coalesce(latency_p99_ms / 1000, 0), E'\n') FROM e
        UNION ALL SELECT 'outbox_horizon_age_seconds', 'gauge', 'Age of the running transaction holding delivery back (0 if none).', 'outbox_horizon_age_seconds ' || coalesce(max(extract(epoch FROM horizon_age)), 0) FROM outbox.stat_workers WHERE database = current_database()
    )
    SELECT string_agg(format(E'# HELP %s %s\n# TYPE %s %s\n%s', metric, help, metric, kind, value), E'\n') || E'\n'
      FROM lines WHERE value IS NOT NULL
$$;
COMMENT ON FUNCTION outbox.metrics() IS 'the monitoring figures in Prometheus text exposition format';

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
    'idempotent-consumer check: true the first time a consumer sees a message id, false on every repeat; a consumer name belongs to the role that first used it';

/* ------------------------------------------------------------------------
 * Subscriptions: named pull consumers whose progress retention honours
 * ------------------------------------------------------------------------ */

CREATE TABLE outbox._subscriptions (
    name       text COLLATE "C" PRIMARY KEY,
    topics     text[] NOT NULL,
    acked_id   bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    acked_at   timestamptz,
    consumer   name
);
COMMENT ON TABLE outbox._subscriptions IS
    'private: pull consumers (outbox.poll, outbox.ack); every matching message with id > acked_id is kept by retention';
COMMENT ON COLUMN outbox._subscriptions.consumer IS
    'private: the role whose privileges poll and ack require (by name, so that dumps restore it; a dropped role leaves it to superusers), or NULL: shared by every outbox_reader';
SELECT pg_catalog.pg_extension_config_dump('outbox._subscriptions', '');

CREATE FUNCTION outbox._topic_matches(topic text, patterns text[]) RETURNS boolean
    AS 'MODULE_PATHNAME', 'outbox_topic_matches_sql' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION outbox._topic_matches(text, text[]) IS
    'private: does the topic match one of the patterns (an exact topic, "*", or a prefix ending in "*"), as for endpoints';

CREATE FUNCTION outbox._create_subscription(name text, topics text[], consumer name)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM outbox._check_name('subscription'::text, name);
    -- like an endpoint: the messages above the sequence's current value are
    -- the ones published after the subscription was created
    INSERT INTO outbox._subscriptions (name, topics, acked_id, consumer)
    SELECT _create_subscription.name, outbox._check_topics(topics),
           CASE WHEN s.is_called THEN s.last_value ELSE 0 END, consumer
      FROM outbox._messages_id_seq s
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" already exists', name USING ERRCODE = '42710';
    END IF;
END
$$;
COMMENT ON FUNCTION outbox._create_subscription(text, text[], name) IS
    'private: both outbox.create_subscription functions (granted to no one)';

CREATE FUNCTION outbox.create_subscription(name text, topics text[] DEFAULT '{*}')
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT outbox._create_subscription(name, topics, NULL::name) $$;
COMMENT ON FUNCTION outbox.create_subscription(text, text[]) IS
    'create a pull consumer shared by every outbox_reader: outbox.poll() returns every message published from now on whose topic matches, until outbox.ack() acknowledges it';

CREATE FUNCTION outbox.create_subscription(name text, topics text[], consumer name)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF consumer IS NULL THEN
        RAISE EXCEPTION 'consumer must not be null' USING ERRCODE = '22004',
            HINT = 'Leave out consumer for a subscription every outbox_reader may use.';
    ELSIF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = consumer) THEN
        RAISE EXCEPTION 'role "%" does not exist', consumer USING ERRCODE = '42704';
    END IF;
    PERFORM outbox._create_subscription(name, topics, consumer);
END
$$;
COMMENT ON FUNCTION outbox.create_subscription(text, text[], name) IS
    'create a pull consumer of one role: only roles with its privileges may outbox.poll() and outbox.ack() it';

CREATE FUNCTION outbox.drop_subscription(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'subscription name must not be null' USING ERRCODE = '22004';
    END IF;
    DELETE FROM outbox._subscriptions s WHERE s.name = drop_subscription.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', name USING ERRCODE = '42704';
    END IF;
END
$$;
COMMENT ON FUNCTION outbox.drop_subscription(text) IS
    'remove a pull consumer; retention no longer keeps messages for it';

CREATE FUNCTION outbox.poll(subscription text, max_count int DEFAULT 100)
    RETURNS SETOF outbox.messages
    AS 'MODULE_PATHNAME', 'outbox_poll' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION outbox.poll(text, int) IS
    'the next matching messages after the subscription''s acknowledged position, in id order, gap-free; the same ones again until acknowledged (42501 without the privileges of its consumer role, if it has one)';

CREATE FUNCTION outbox.ack(subscription text, message_id bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'outbox_ack' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION outbox.ack(text, bigint) IS
    'acknowledge every message up to and including message_id (22023 if beyond what poll could have returned; backwards changes nothing; 42501 without the privileges of the subscription''s consumer role, if it has one)';

CREATE VIEW outbox.stat_subscriptions AS
    SELECT s.name, s.topics, s.acked_id, u.lag_messages,
           now() - u.oldest_unacked AS oldest_unacked_age,
           s.created_at, s.acked_at, s.consumer
      FROM outbox._subscriptions s
      CROSS JOIN LATERAL (SELECT count(*) AS lag_messages, min(m.created_at) AS oldest_unacked
                            FROM outbox._messages m
                           WHERE m.id > s.acked_id
                             AND outbox._topic_matches(m.topic, s.topics)) u;
COMMENT ON VIEW outbox.stat_subscriptions IS
    'one row per subscription: its position, the matching messages not acknowledged yet, the age of the oldest, and its consumer role (NULL: shared)';

CREATE FUNCTION outbox._forbid_change()
    RETURNS trigger
    AS 'MODULE_PATHNAME', 'outbox_forbid_change' LANGUAGE C;
COMMENT ON FUNCTION outbox._forbid_change() IS
    'private: trigger keeping outbox._events append-only';

CREATE TRIGGER forbid_update_delete BEFORE UPDATE OR DELETE ON outbox._events
    FOR EACH ROW EXECUTE FUNCTION outbox._forbid_change();
CREATE TRIGGER forbid_truncate BEFORE TRUNCATE ON outbox._events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox._forbid_change();
-- ALWAYS: session_replication_role = replica must not switch the guard off
ALTER TABLE outbox._events ENABLE ALWAYS TRIGGER forbid_update_delete;
ALTER TABLE outbox._events ENABLE ALWAYS TRIGGER forbid_truncate;

/* ------------------------------------------------------------------------
 * CQRS projections (src/projection.c applies events, src/projector.c is the
 * async side, the projector worker)
 * ------------------------------------------------------------------------ */

CREATE TABLE outbox._projections (
    id              int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text COLLATE "C" NOT NULL UNIQUE,
    handler         text NOT NULL,
    reset           text,
    event_types     text[],
    stream_prefix   text COLLATE "C",
    mode            text NOT NULL CHECK (mode IN ('inline', 'async')),
    run_as          name NOT NULL,
    options         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'paused', 'failed', 'rebuilding')),
    position        bigint NOT NULL DEFAULT 0,
    events_applied  bigint NOT NULL DEFAULT 0,
    attempts        int NOT NULL DEFAULT 0,
    retry_at        timestamptz,
    last_error      text,
    last_applied_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE outbox._projections IS 'private: projections, their checkpoints and their state';
COMMENT ON COLUMN outbox._projections.handler IS
    'the handler as regprocedure text, schema-qualified: kept as text so that pg_dump and pg_upgrade carry it (reg* columns block pg_upgrade)';
COMMENT ON COLUMN outbox._projections.position IS
    'async: the checkpoint, the last position applied, committed with the handler''s effects; inline: where a pause stopped applying';
COMMENT ON COLUMN outbox._projections.run_as IS 'the role the handler and reset function run as: the creator';
SELECT pg_catalog.pg_extension_config_dump('outbox._projections', '');
SELECT pg_catalog.pg_extension_config_dump('outbox._projections_id_seq', '');

CREATE FUNCTION outbox._projections_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'outbox_projections_changed' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION outbox._projections_changed() IS
    'private: at commit, every session reloads its inline projections and the projector looks at the async ones';

CREATE FUNCTION outbox._replay_projection(id int, after_position bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'outbox_replay_projection' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION outbox._replay_projection(int, bigint) IS
    'private: apply every matching event after a position to an inline projection, in position order; returns how many';

CREATE FUNCTION outbox._reset_projection(id int) RETURNS void
    AS 'MODULE_PATHNAME', 'outbox_reset_projection' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION outbox._reset_projection(int) IS 'private: call a projection''s reset function, if it has one';

CREATE FUNCTION outbox._projection_live_applied(id int) RETURNS bigint
    AS 'MODULE_PATHNAME', 'outbox_projection_live_applied' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION outbox._projection_live_applied(int) IS
    'private: handler calls of an inline projection since the server started (shared memory)';

CREATE FUNCTION outbox._check_projection_function(fn regprocedure, run_as name, what text, arg_type regtype)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p pg_proc;
BEGIN
    IF fn IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO p FROM pg_proc WHERE oid = fn;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% % does not exist', what, fn::oid USING ERRCODE = '42883';
    END IF;
    IF p.prokind <> 'f' OR p.prorettype <> 'void'::regtype OR p.proretset
       OR p.pronargs <> (arg_type IS NOT NULL)::int
       OR (arg_type IS NOT NULL AND p.proargtypes[0] <> arg_type) THEN
        RAISE EXCEPTION '% % must be a function taking %, returning void', what, fn,
            coalesce('one argument of type ' || arg_type::text, 'no arguments') USING ERRCODE = '22023';
    END IF;
    IF NOT has_function_privilege(run_as, fn, 'EXECUTE') THEN
        RAISE EXCEPTION 'role "%" may not execute % %', run_as, what, fn USING ERRCODE = '42501';
    END IF;
    -- search_path is pinned here, so the text names the schemas
    RETURN fn::text;
END
$$;
COMMENT ON FUNCTION outbox._check_projection_function(regprocedure, name, text, regtype) IS
    'private: a handler or reset function''s signature and privilege check; returns its qualified name';

CREATE FUNCTION outbox._create_projection(name text, handler regprocedure, event_types text[],
                                          stream_prefix text, mode text, reset regprocedure,
                                          options jsonb, run_as name)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM outbox._check_name('projection'::text, name);
    IF handler IS NULL THEN
        RAISE EXCEPTION 'handler must not be null' USING ERRCODE = '22004';
    ELSIF mode IS NULL THEN
        RAISE EXCEPTION 'mode must not be null' USING ERRCODE = '22004';
    ELSIF mode NOT IN ('inline', 'async') THEN
        RAISE EXCEPTION 'mode must be ''inline'' or ''async'', not "%"', mode USING ERRCODE = '22023';
    ELSIF cardinality(event_types) = 0 THEN
        RAISE EXCEPTION 'event_types must not be empty' USING ERRCODE = '22023',
            HINT = 'Pass NULL for every event type.';
    ELSIF array_position(event_types, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'event_types must not contain nulls' USING ERRCODE = '22004';
    ELSIF stream_prefix = '' OR octet_length(stream_prefix) > 255 THEN
        RAISE EXCEPTION 'stream_prefix must be 1 to 255 bytes long' USING ERRCODE = '22023',
            HINT = 'Pass NULL for every stream.';
    ELSIF EXISTS (SELECT FROM outbox._projections p WHERE p.name = _create_projection.name) THEN
        RAISE EXCEPTION 'projection "%" already exists', name USING ERRCODE = '42710';
    END IF;
    -- inline: appends see it; async: no append in flight misses waking the relay
    PERFORM outbox._lock_events();
    INSERT INTO outbox._projections (name, handler, reset, event_types, stream_prefix, mode, run_as, options)
    VALUES (name,
            outbox._check_projection_function(handler, run_as, 'handler'::text, 'outbox.events'::regtype),
            outbox._check_projection_function(reset, run_as, 'reset function'::text, NULL::regtype),
            event_types, stream_prefix, mode, run_as,
            outbox._projection_options(options));
    PERFORM outbox._projections_changed();
END
$$;
COMMENT ON FUNCTION outbox._create_projection(text, regprocedure, text[], text, text, regprocedure, jsonb, name) IS
    'private: outbox.create_projection, which passes the calling role (granted to no one: a caller could name any role)';

CREATE FUNCTION outbox.create_projection(name text, handler regprocedure, event_types text[] DEFAULT NULL,
                                         stream_prefix text DEFAULT NULL, mode text DEFAULT 'inline',
                                         reset regprocedure DEFAULT NULL, options jsonb DEFAULT '{}')
    RETURNS void
    -- C: it takes the calling role (GetUserId) itself, then runs
    -- _create_projection as the extension owner; no SQL caller can pick the role
    AS 'MODULE_PATHNAME', 'outbox_create_projection' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION outbox.create_projection(text, regprocedure, text[], text, text, regprocedure, jsonb) IS
    'keep a read model up to date: handler(outbox.events) is called for every matching event, inline (in the appending transaction) or async (by the database''s projector worker)';

CREATE FUNCTION outbox._lock_events() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- a transaction snapshot taken before the lock could miss events the
    -- lock waited for: positions read after it would be wrong
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'projections can only be changed in a READ COMMITTED transaction'
            USING ERRCODE = '25000',
                  DETAIL = 'A snapshot taken before the event log was locked could miss events appended meanwhile.',
                  HINT = 'Run it in its own transaction, or SET TRANSACTION ISOLATION LEVEL READ COMMITTED.';
    END IF;
    -- appends in flight finish first; later ones wait, then see the change
    LOCK TABLE outbox._events IN SHARE MODE;
END
$$;
COMMENT ON FUNCTION outbox._lock_events() IS
    'private: hold appends back while a projection changes (see src/projection.c), READ COMMITTED only';

CREATE FUNCTION outbox._projection(name text) RETURNS outbox._projections
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result outbox._projections;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'projection name must not be null' USING ERRCODE = '22004';
    END IF;
    -- waits for an async batch of this projection to commit
    SELECT * INTO result FROM outbox._projections p WHERE p.name = _projection.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'projection "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION outbox._projection(text) IS 'private: a projection''s row, locked, or 42704';

CREATE FUNCTION outbox.drop_projection(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p outbox._projections := outbox._projection(name);
BEGIN
    IF p.mode = 'inline' THEN
        PERFORM outbox._lock_events();
    END IF;
    DELETE FROM outbox._projections WHERE id = p.id;
    PERFORM outbox._projections_changed();
END
$$;
COMMENT ON FUNCTION outbox.drop_projection(text) IS 'remove a projection (its read model is the user''s and stays)';

CREATE FUNCTION outbox.pause_projection(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p outbox._projections := outbox._projection(name);
BEGIN
    IF p.state = 'paused' THEN
        RETURN;
    END IF;
    IF p.mode = 'inline' THEN
        -- no append in flight: the last position now is exactly where applying stops
        PERFORM outbox._lock_events();
        UPDATE outbox._projections
           SET state = 'paused', position = coalesce((SELECT max(e.position) FROM outbox._events e), 0)
         WHERE id = p.id;
    ELSE
        UPDATE outbox._projections SET state = 'paused' WHERE id = p.id;
    END IF;
    PERFORM outbox._projections_changed();
END
$$;
COMMENT ON FUNCTION outbox.pause_projection(text) IS
    'stop applying events; resume_projection catches up without skipping any';

CREATE FUNCTION outbox.resume_projection(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p outbox._projections := outbox._projection(name);
    n bigint;
BEGIN
    IF p.state IN ('running', 'rebuilding') THEN
        RETURN;
    END IF;
    PERFORM outbox._lock_events();
    IF p.mode = 'inline' THEN
        -- apply what was appended while paused, then let appends apply again
        n := outbox._replay_projection(p.id, p.position);
        UPDATE outbox._projections
           SET state = 'running', events_applied = events_applied + n,
               last_applied_at = CASE WHEN n > 0 THEN now() ELSE last_applied_at END
         WHERE id = p.id;
    ELSE
        -- failed: the worker retries the event that failed, with fresh attempts
        UPDATE outbox._projections SET state = 'running', attempts = 0, retry_at = NULL WHERE id = p.id;
    END IF;
    PERFORM outbox._projections_changed();
END
$$;
COMMENT ON FUNCTION outbox.resume_projection(text) IS
    'resume a paused or failed projection where it stopped';

CREATE FUNCTION outbox.rebuild_projection(name text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p outbox._projections := outbox._projection(name);
    n bigint;
BEGIN
    PERFORM outbox._lock_events();
    IF p.mode = 'inline' THEN
        PERFORM outbox._reset_projection(p.id);
        n := outbox._replay_projection(p.id, 0::bigint);
        UPDATE outbox._projections
           SET state = 'running', position = 0, events_applied = n, attempts = 0, retry_at = NULL,
               last_error = NULL, last_applied_at = now()
         WHERE id = p.id;
    ELSE
        PERFORM outbox._reset_projection(p.id);
        SELECT count(*) INTO n FROM outbox._events e
         WHERE (p.event_types IS NULL OR e.type = ANY (p.event_types))
           AND (p.stream_prefix IS NULL OR starts_with(e.stream, p.stream_prefix));
        UPDATE outbox._projections
           SET state = 'rebuilding', position = 0, events_applied = 0, attempts = 0, retry_at = NULL,
               last_error = NULL
         WHERE id = p.id;
    END IF;
    PERFORM outbox._projections_changed();
    RETURN n;
END
$$;
COMMENT ON FUNCTION outbox.rebuild_projection(text) IS
    'call the reset function, then replay every matching event: inline at once (returns the count), async in the worker (returns the count to replay)';

CREATE FUNCTION outbox.wait_for_projection(name text, stream text, etag text, timeout interval DEFAULT '5 s')
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'outbox_wait_for_projection' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION outbox.wait_for_projection(text, text, text, interval) IS
    'read-your-writes: true once the projection has applied the stream up to the version of etag, false after timeout';

CREATE VIEW outbox.stat_projections AS
    SELECT p.name, p.mode,
           p.state,
           CASE WHEN p.mode = 'inline' AND p.state = 'running'
                THEN coalesce(head.position, 0) ELSE p.position END AS position,
           CASE WHEN p.mode = 'inline' AND p.state = 'running' THEN 0
                ELSE (SELECT count(*) FROM outbox._events e WHERE e.position > p.position) END AS lag_events,
           CASE WHEN p.mode = 'inline' AND p.state = 'running' THEN 0
                ELSE coalesce(extract(epoch FROM now() - (SELECT e.created_at FROM outbox._events e
                     WHERE e.position > p.position ORDER BY e.position LIMIT 1)), 0) END AS lag_seconds,
           p.events_applied + CASE WHEN p.mode = 'inline' THEN outbox._projection_live_applied(p.id) ELSE 0 END
               AS events_applied,
           p.last_error, p.last_applied_at,
           p.attempts, p.retry_at, p.event_types, p.stream_prefix, p.handler, p.options
      FROM outbox._projections p
      LEFT JOIN LATERAL (SELECT max(e.position) AS position FROM outbox._events e) head ON true;
COMMENT ON VIEW outbox.stat_projections IS
    'one row per projection: state, checkpoint, lag behind the event log, events applied, last error';

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

GRANT EXECUTE ON FUNCTION
    outbox.delete_stream(text, text),
    outbox.create_endpoint(text, text, text[], text, jsonb, jsonb),
    outbox.alter_endpoint(text, jsonb),
    outbox.drop_endpoint(text),
    outbox.pause_endpoint(text),
    outbox.resume_endpoint(text),
    outbox.redeliver(bigint, text)
TO outbox_admin;
GRANT SELECT ON outbox.stream_deletions, outbox.endpoints TO outbox_admin;
GRANT EXECUTE ON FUNCTION
    outbox.create_projection(text, regprocedure, text[], text, text, regprocedure, jsonb),
    outbox.drop_projection(text),
    outbox.pause_projection(text),
    outbox.resume_projection(text),
    outbox.rebuild_projection(text)
TO outbox_admin;
GRANT EXECUTE ON FUNCTION outbox.wait_for_projection(text, text, text, interval) TO outbox_reader, outbox_writer;
GRANT SELECT ON outbox.dead_letters, outbox.stat_endpoints, outbox.stat_workers,
    outbox.stat_projections TO outbox_reader;
GRANT EXECUTE ON FUNCTION outbox._projection_live_applied(int) TO outbox_reader;
GRANT EXECUTE ON FUNCTION outbox.metrics(), outbox._stat_endpoints(), outbox._stat_workers() TO outbox_reader;
GRANT EXECUTE ON FUNCTION outbox._shown_url(text), outbox._shown_error(text) TO outbox_reader;

GRANT EXECUTE ON FUNCTION
    outbox.create_subscription(text, text[]),
    outbox.create_subscription(text, text[], name),
    outbox.drop_subscription(text)
TO outbox_admin;
GRANT EXECUTE ON FUNCTION
    outbox.poll(text, int),
    outbox.ack(text, bigint),
    outbox._topic_matches(text, text[])
TO outbox_reader;
GRANT SELECT ON outbox.stat_subscriptions TO outbox_reader;

/* A relay starts for this database as soon as the extension exists. */
SELECT outbox._notify_relay();
