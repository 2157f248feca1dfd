/*
 * outbox 0.1.0 -> 0.2.0 upgrade script.
 *
 * Every change of 0.2.0 to sql/outbox.sql is made here too, so that an
 * updated 0.1.0 install equals a fresh 0.2.0 one (test/t/006_upgrade.pl
 * compares the two catalogs, with data in every table).
 */
\echo Use "ALTER EXTENSION outbox UPDATE TO '0.2.0'" to load this file. \quit

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

CREATE OR REPLACE FUNCTION outbox._create_projection(name text, handler regprocedure, event_types text[],
                                          stream_prefix text, mode text, reset regprocedure,
                                          options jsonb, run_as name)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'projection name must not be null' USING ERRCODE = '22004';
    ELSIF name = '' OR octet_length(name) > 255 THEN
        RAISE EXCEPTION 'projection name must be 1 to 255 bytes long' USING ERRCODE = '22023';
    ELSIF handler IS NULL THEN
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
            outbox._check_projection_function(handler, run_as, 'handler', 'outbox.events'::regtype),
            outbox._check_projection_function(reset, run_as, 'reset function', NULL),
            event_types, stream_prefix, mode, run_as,
            outbox._projection_options(options));
    PERFORM outbox._projections_changed();
END
$$;

DROP FUNCTION outbox._check_options(jsonb, jsonb, jsonb, text);

DO $normalise$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id FROM outbox._endpoints LOOP
        BEGIN
            UPDATE outbox._endpoints SET options = outbox._endpoint_options('{}', options) WHERE id = r.id;
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
