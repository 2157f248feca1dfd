/*
 * outbox 0.1.0 -> 0.2.0 upgrade script.
 *
 * Every change of 0.2.0 to sql/outbox.sql is made here too, so that an
 * updated 0.1.0 install equals a fresh 0.2.0 one (test/t/006_upgrade.pl
 * compares the two catalogs, with data in every table).
 */
\echo Use "ALTER EXTENSION outbox UPDATE TO '0.2.0'" to load this file. \quit

/*
 * Security review, schema squatting: 0.1.0 installed into a schema outbox
 * that existed before it, whoever owned it.  Its owner could plant functions
 * that the calls below (run by the superuser updating) and outbox's own
 * calls resolve to.  So refuse to update unless the schema belongs to the
 * extension owner, a superuser, no one else may create objects in it, and it
 * holds no function outside the extension that a role other than a
 * superuser owns.  This check is the fix (with the
 * schema owned by the extension owner, nobody else can add a function to
 * it); the casts on every call of an outbox function only make the calls say
 * what they mean.  The install script makes the same check.
 */
DO $schema$
DECLARE
    nsp oid;
    owner oid;
    ext_oid oid;
    ext_owner oid;
    planted text;
BEGIN
    SELECT n.oid, n.nspowner INTO nsp, owner
      FROM pg_catalog.pg_namespace n WHERE n.nspname = 'outbox'::pg_catalog.name;
    SELECT e.oid, e.extowner INTO ext_oid, ext_owner
      FROM pg_catalog.pg_extension e WHERE e.extname = 'outbox'::pg_catalog.name;
    IF owner <> ext_owner THEN
        RAISE EXCEPTION 'schema "outbox" is owned by role "%", not by the extension owner "%"',
                pg_catalog.pg_get_userbyid(owner), pg_catalog.pg_get_userbyid(ext_owner)
            USING ERRCODE = '42501',
                  DETAIL = 'Its owner could plant functions that the update would run as a superuser.',
                  HINT = 'Drop the functions in schema outbox that are not part of the extension, run ALTER SCHEMA outbox OWNER TO the extension owner, then update again.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
                WHERE n.oid = nsp AND a.privilege_type = 'CREATE' AND a.grantee <> owner) THEN
        RAISE EXCEPTION 'roles other than the owner of schema "outbox" may create objects in it'
            USING ERRCODE = '42501',
                  DETAIL = 'They could plant functions that outbox would call with the extension owner''s rights.',
                  HINT = 'Revoke CREATE on schema outbox from every role but its owner.';
    END IF;
    IF NOT (SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.oid = ext_owner) THEN
        RAISE EXCEPTION 'the owner "%" of extension "outbox" is not a superuser', pg_catalog.pg_get_userbyid(ext_owner)
            USING ERRCODE = '42501',
                  DETAIL = 'It owns the functions the update calls, and could have changed them.',
                  HINT = 'Check the functions in schema outbox, then give the role back its superuser status for the update.';
    END IF;
    SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::pg_catalog.text, ', ') INTO planted
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles a ON a.oid = p.proowner
     WHERE p.pronamespace = nsp AND NOT a.rolsuper
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                        WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
                          AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                          AND d.refobjid = ext_oid AND d.deptype = 'e');
    IF planted IS NOT NULL THEN
        RAISE EXCEPTION 'schema "outbox" holds functions that are not part of the extension: %', planted
            USING ERRCODE = '42501',
                  DETAIL = 'The update''s calls could resolve to them.',
                  HINT = 'Drop them, then update again.';
    END IF;
END
$schema$;

/*
 * Finding 12: the append-only guard of outbox._events fires whatever
 * session_replication_role is (a superuser could set it to replica and
 * DELETE or TRUNCATE events).
 */
ALTER TABLE outbox._events ENABLE ALWAYS TRIGGER forbid_update_delete;
ALTER TABLE outbox._events ENABLE ALWAYS TRIGGER forbid_truncate;

/*
 * Issue 8, "a writer marking another consumer's message as seen through
 * consume_once": a consumer name belongs to the role that first uses it
 * (names already in outbox._inbox are claimed by their next user).
 */
CREATE TABLE outbox._consumers (
    consumer text COLLATE "C" PRIMARY KEY,
    owner    name NOT NULL
);
COMMENT ON TABLE outbox._consumers IS
    'private: the role each outbox.consume_once consumer name belongs to (the first to use it), so that no other writer can mark its messages as seen';
SELECT pg_catalog.pg_extension_config_dump('outbox._consumers', '');
-- as the install script's REVOKE ALL ON ALL TABLES leaves it (caught by 006_upgrade)
REVOKE ALL ON outbox._consumers FROM PUBLIC;
COMMENT ON FUNCTION outbox.consume_once(text, text) IS
    'idempotent-consumer check: true the first time a consumer sees a message id, false on every repeat; a consumer name belongs to the role that first used it';

/* ------------------------------------------------------------------------
 * Finding 4: option values.  One parser (src/options.c) checks and
 * normalises options at create/alter time and reads them in the relay and
 * in appends; _check_options (PL/pgSQL, which let 5000.0 through to a
 * failing ::int cast) is gone.  Stored options are normalised (5000.0 ->
 * 5000); a row the parser refuses (changed by hand) is left as it is and
 * reported by the relay.
 * ------------------------------------------------------------------------ */

CREATE OR REPLACE FUNCTION outbox._endpoint_options(given jsonb, base jsonb DEFAULT NULL) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'outbox_endpoint_options' LANGUAGE C IMMUTABLE;
COMMENT ON FUNCTION outbox._endpoint_options(jsonb, jsonb) IS
    'private: endpoint options given merged over base (the current ones, or the defaults), checked (22004, 22023) and normalised as the relay reads them';

CREATE FUNCTION outbox._projection_options(given jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'outbox_projection_options' LANGUAGE C IMMUTABLE;
COMMENT ON FUNCTION outbox._projection_options(jsonb) IS
    'private: projection options checked (22004, 22023) and normalised as the relay reads them, defaults filled in';

REVOKE ALL ON FUNCTION outbox._projection_options(jsonb) FROM PUBLIC;

/* _create_projection's new body, which calls _projection_options, is below (input review). */

DROP FUNCTION outbox._check_options(jsonb, jsonb, jsonb, text);

DO $normalise$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id FROM outbox._endpoints LOOP
        BEGIN
            UPDATE outbox._endpoints SET options = outbox._endpoint_options('{}'::jsonb, options) WHERE id = r.id;
        EXCEPTION WHEN invalid_parameter_value THEN
            NULL;
        END;
    END LOOP;
    FOR r IN SELECT id FROM outbox._projections LOOP
        BEGIN
            UPDATE outbox._projections SET options = outbox._projection_options(options) WHERE id = r.id;
        EXCEPTION WHEN invalid_parameter_value THEN
            NULL;
        END;
    END LOOP;
END
$normalise$;

/* ------------------------------------------------------------------------
 * Finding 11: headers.  The rules are in C (src/validate.c): messages may no
 * longer set Authorization, Cookie, X-Forwarded-*, User-Agent and the like,
 * no header value may be empty, no name may appear twice; the relay applies
 * the same rules to rows stored before them.
 * ------------------------------------------------------------------------ */

COMMENT ON FUNCTION outbox._check_headers(jsonb) IS
    'private: an endpoint''s headers (22023 otherwise): HTTP token names, each once, non-empty string values without line breaks, none that outbox sets or that governs the connection (src/validate.c)';

/* ------------------------------------------------------------------------
 * Finding 8: subscriptions (pull consumers whose progress retention honours)
 * ------------------------------------------------------------------------ */


CREATE TABLE outbox._subscriptions (
    name       text COLLATE "C" PRIMARY KEY,
    topics     text[] NOT NULL,
    acked_id   bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    acked_at   timestamptz
);
COMMENT ON TABLE outbox._subscriptions IS
    'private: pull consumers (outbox.poll, outbox.ack); every matching message with id > acked_id is kept by retention';
SELECT pg_catalog.pg_extension_config_dump('outbox._subscriptions', '');

CREATE FUNCTION outbox._topic_matches(topic text, patterns text[]) RETURNS boolean
    AS 'MODULE_PATHNAME', 'outbox_topic_matches_sql' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION outbox._topic_matches(text, text[]) IS
    'private: does the topic match one of the patterns (an exact topic, "*", or a prefix ending in "*"), as for endpoints';

CREATE FUNCTION outbox.create_subscription(name text, topics text[] DEFAULT '{*}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'subscription name must not be null' USING ERRCODE = '22004';
    ELSIF name = '' OR octet_length(name) > 255 THEN
        RAISE EXCEPTION 'subscription name must be 1 to 255 bytes long' USING ERRCODE = '22023';
    END IF;
    -- like an endpoint: the messages above the sequence's current value are
    -- the ones published after the subscription was created
    INSERT INTO outbox._subscriptions (name, topics, acked_id)
    SELECT create_subscription.name, outbox._check_topics(topics),
           CASE WHEN s.is_called THEN s.last_value ELSE 0 END
      FROM outbox._messages_id_seq s
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" already exists', name USING ERRCODE = '42710';
    END IF;
END
$$;
COMMENT ON FUNCTION outbox.create_subscription(text, text[]) IS
    'create a pull consumer: outbox.poll() returns every message published from now on whose topic matches, until outbox.ack() acknowledges it';

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
    'the next matching messages after the subscription''s acknowledged position, in id order, gap-free; the same ones again until acknowledged';

CREATE FUNCTION outbox.ack(subscription text, message_id bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'outbox_ack' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION outbox.ack(text, bigint) IS
    'acknowledge every message up to and including message_id (22023 if beyond what poll could have returned; backwards changes nothing)';

CREATE VIEW outbox.stat_subscriptions AS
    SELECT s.name, s.topics, s.acked_id, u.lag_messages,
           now() - u.oldest_unacked AS oldest_unacked_age,
           s.created_at, s.acked_at
      FROM outbox._subscriptions s
      CROSS JOIN LATERAL (SELECT count(*) AS lag_messages, min(m.created_at) AS oldest_unacked
                            FROM outbox._messages m
                           WHERE m.id > s.acked_id
                             AND outbox._topic_matches(m.topic, s.topics)) u;
COMMENT ON VIEW outbox.stat_subscriptions IS
    'one row per subscription: its position, the matching messages not acknowledged yet and the age of the oldest';

REVOKE ALL ON outbox._subscriptions, outbox.stat_subscriptions FROM PUBLIC;
REVOKE ALL ON FUNCTION
    outbox._topic_matches(text, text[]),
    outbox.create_subscription(text, text[]),
    outbox.drop_subscription(text),
    outbox.poll(text, int),
    outbox.ack(text, bigint)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    outbox.create_subscription(text, text[]),
    outbox.drop_subscription(text)
TO outbox_admin;
GRANT EXECUTE ON FUNCTION
    outbox.poll(text, int),
    outbox.ack(text, bigint),
    outbox._topic_matches(text, text[])
TO outbox_reader;
GRANT SELECT ON outbox.stat_subscriptions TO outbox_reader;

/* Finding 8: inbox retention (the relay deletes rows older than outbox.inbox_retention) */
CREATE INDEX _inbox_consumed_at ON outbox._inbox (consumed_at);
COMMENT ON INDEX outbox._inbox_consumed_at IS
    'private: finds the rows older than outbox.inbox_retention, which the relay deletes';

/*
 * Finding 7 (SSRF, internal responses shown to readers): outbox_reader sees
 * an endpoint URL's origin only and errors without the response body;
 * outbox_admin sees them in full (src/redact.c).
 */
CREATE FUNCTION outbox._shown_url(url text) RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_shown_url' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION outbox._shown_url(text) IS
    'private: the URL for outbox_admin, its origin (scheme://host:port/, no userinfo, path or query) for anyone else';

CREATE FUNCTION outbox._shown_error(error text) RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_shown_error' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION outbox._shown_error(text) IS
    'private: a delivery error for outbox_admin, without the response body for anyone else';

REVOKE ALL ON FUNCTION outbox._shown_url(text), outbox._shown_error(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox._shown_url(text), outbox._shown_error(text) TO outbox_reader;

CREATE OR REPLACE VIEW outbox.dead_letters AS
    SELECT d.message_id, e.name AS endpoint, d.attempts, d.last_status,
           outbox._shown_error(d.last_error) AS last_error,
           d.updated_at AS dead_at, m.topic, m.key, m.payload
      FROM outbox._deliveries d
      JOIN outbox._endpoints e ON e.id = d.endpoint_id
      LEFT JOIN outbox._messages m ON m.id = d.message_id
     WHERE d.state = 'dead';
COMMENT ON VIEW outbox.dead_letters IS
    'deliveries that gave up; outbox.redeliver() re-queues them; last_error keeps the response body for outbox_admin only';

CREATE OR REPLACE VIEW outbox.stat_endpoints AS
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

/*
 * Issue 8 review (input checks and subscription isolation): a subscription
 * may belong to a consumer role, whose privileges poll and ack require
 * (src/subscription.c); names of endpoints, projections and subscriptions
 * and topic patterns without control characters; topics one-dimensional;
 * header values without control characters but tab (src/validate.c).
 */
CREATE OR REPLACE FUNCTION outbox._check_topics(topics text[]) RETURNS text[]
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


CREATE OR REPLACE FUNCTION outbox._create_projection(name text, handler regprocedure, event_types text[],
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

ALTER TABLE outbox._subscriptions ADD COLUMN consumer name;
COMMENT ON COLUMN outbox._subscriptions.consumer IS
    'private: the role whose privileges poll and ack require (by name, so that dumps restore it; a dropped role leaves it to superusers), or NULL: shared by every outbox_reader';

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

CREATE OR REPLACE FUNCTION outbox.create_subscription(name text, topics text[] DEFAULT '{*}')
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

CREATE OR REPLACE VIEW outbox.stat_subscriptions AS
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

COMMENT ON FUNCTION outbox._check_headers(jsonb) IS
    'private: an endpoint''s headers (22023 otherwise): HTTP token names, each once, non-empty string values without control characters but tab, none that outbox sets or that governs the connection (src/validate.c)';
COMMENT ON FUNCTION outbox.poll(text, int) IS
    'the next matching messages after the subscription''s acknowledged position, in id order, gap-free; the same ones again until acknowledged (42501 without the privileges of its consumer role, if it has one)';
COMMENT ON FUNCTION outbox.ack(text, bigint) IS
    'acknowledge every message up to and including message_id (22023 if beyond what poll could have returned; backwards changes nothing; 42501 without the privileges of the subscription''s consumer role, if it has one)';

REVOKE ALL ON FUNCTION
    outbox._check_name(text, text),
    outbox._create_subscription(text, text[], name),
    outbox.create_subscription(text, text[], name)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.create_subscription(text, text[], name) TO outbox_admin;

/*
 * Finding 1 (lost wake-ups): async projections run in a worker of their own,
 * the "outbox projector"; outbox.stat_workers shows it (column worker).
 */
DROP VIEW outbox.stat_workers;
DROP FUNCTION outbox._stat_workers();
CREATE FUNCTION outbox._stat_workers(
    OUT dboid oid, OUT pid int, OUT state text, OUT started_at timestamptz,
    OUT last_activity_at timestamptz, OUT loops bigint, OUT requests bigint,
    OUT horizon_blocked_since timestamptz, OUT horizon_blocking_pid int,
    OUT horizon_blocking_since timestamptz, OUT worker text)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'outbox_stat_workers' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION outbox._stat_workers() IS 'private: every relay slot of the cluster and its projector, from shared memory';

CREATE VIEW outbox.stat_workers AS
    SELECT d.datname AS database, w.worker, w.pid, w.state, w.started_at, w.last_activity_at,
           w.loops, w.requests,
           now() - w.horizon_blocking_since AS horizon_age,
           w.horizon_blocking_pid, w.horizon_blocked_since
      FROM outbox._stat_workers() w
      JOIN pg_catalog.pg_database d ON d.oid = w.dboid;
COMMENT ON VIEW outbox.stat_workers IS
    'per relay, and per projector of async projections: database, pid, state, activity, counters; while a running transaction holds its reading back, its age and pid';
REVOKE ALL ON FUNCTION outbox._stat_workers() FROM PUBLIC;
GRANT SELECT ON outbox.stat_workers TO outbox_reader;
GRANT EXECUTE ON FUNCTION outbox._stat_workers() TO outbox_reader;
COMMENT ON FUNCTION outbox._projections_changed() IS
    'private: at commit, every session reloads its inline projections and the projector looks at the async ones';
COMMENT ON FUNCTION outbox.create_projection(text, regprocedure, text[], text, text, regprocedure, jsonb) IS
    'keep a read model up to date: handler(outbox.events) is called for every matching event, inline (in the appending transaction) or async (by the database''s projector worker)';

/*
 * Security review, schema squatting: every call of an outbox function with
 * typed arguments only (no untyped literal, no default filled in).
 */

CREATE OR REPLACE FUNCTION outbox.rebuild_projection(name text) RETURNS bigint
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

/* ------------------------------------------------------------------------
 * Issue 10: Kafka endpoints.  An endpoint's URL may be kafka://host:port
 * [,host:port...]/topic (src/kafka.c checks it); its options may hold
 * "kafka": librdkafka client properties from an allowlist, of which the
 * write-only ones (sasl.password, ssl.key.pem, ...) live apart in
 * outbox._endpoints.kafka_secrets, which no view shows and no role may
 * read; batch_size must be 1; a Kafka endpoint takes no webhook secret.
 * _endpoint_options takes the URL and the current write-only properties,
 * and returns both parts.
 * ------------------------------------------------------------------------ */

ALTER TABLE outbox._endpoints ADD COLUMN kafka_secrets jsonb;
COMMENT ON TABLE outbox._endpoints IS
    'private: webhook and Kafka endpoints; secret and kafka_secrets (a Kafka endpoint''s write-only client properties, kept out of options) are write-only (no view shows them); cursor_id and done_ahead are the relay''s progress';

CREATE OR REPLACE VIEW outbox.endpoints AS
    SELECT name, url, topics, headers, options, paused, created_at,
           secret IS NOT NULL AS has_secret,
           ARRAY(SELECT k FROM jsonb_object_keys(kafka_secrets) k ORDER BY k) AS kafka_secret_names
      FROM outbox._endpoints;
COMMENT ON VIEW outbox.endpoints IS
    'configured webhook and Kafka endpoints (secrets are never shown: has_secret, and the names of the write-only Kafka client properties set)';

CREATE FUNCTION outbox._check_kafka_url(url text) RETURNS text
    AS 'MODULE_PATHNAME', 'outbox_check_kafka_url' LANGUAGE C STRICT IMMUTABLE;
COMMENT ON FUNCTION outbox._check_kafka_url(text) IS
    'private: a kafka://host:port[,host:port...]/topic URL as stored (the topic may hold {topic}), or 22023 (src/kafkaurl.c)';

CREATE FUNCTION outbox._check_endpoint_url(url text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp
    AS $$ SELECT CASE WHEN url ~* '^kafka:' THEN outbox._check_kafka_url(url) ELSE outbox._check_url(url) END $$;
COMMENT ON FUNCTION outbox._check_endpoint_url(text) IS
    'private: an endpoint''s URL as stored, checked by its transport (kafka: or http(s)), or 22023';

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

DROP FUNCTION outbox._endpoint_options(jsonb, jsonb);
CREATE FUNCTION outbox._endpoint_options(given jsonb, base jsonb, url text, base_kafka_secrets jsonb,
                                         OUT options jsonb, OUT kafka_secrets jsonb)
    AS 'MODULE_PATHNAME', 'outbox_endpoint_options' LANGUAGE C IMMUTABLE;
COMMENT ON FUNCTION outbox._endpoint_options(jsonb, jsonb, text, jsonb) IS
    'private: endpoint options given merged over base (the current ones, or the defaults) for an endpoint at url, checked (22004, 22023) and normalised as the relay reads them; a Kafka endpoint''s write-only client properties (merged over base_kafka_secrets) apart';

REVOKE ALL ON FUNCTION outbox._check_kafka_url(text), outbox._check_endpoint_url(text),
    outbox._check_endpoint_secret(text, text), outbox._endpoint_options(jsonb, jsonb, text, jsonb)
    FROM PUBLIC;

CREATE OR REPLACE FUNCTION outbox.create_endpoint(name text, url text, topics text[] DEFAULT '{*}',
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


/*
 * Kafka review, write-only properties sent elsewhere: an outbox_admin, who
 * cannot read an endpoint's write-only Kafka client properties, could point
 * the endpoint at brokers of its own (with SASL PLAIN) and receive them.
 * alter_endpoint now refuses new brokers unless the call gives them again.
 */
CREATE OR REPLACE FUNCTION outbox.alter_endpoint(name text, changes jsonb) RETURNS void
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
