-- Schema squatting: a database owner (not a superuser) makes schema outbox
-- before CREATE EXTENSION and plants functions in it.  Neither the install
-- nor the update from 0.1.0 runs in such a schema, and the C code runs its
-- statements as the extension owner, never as the schema's owner.
CREATE ROLE squatter LOGIN;
CREATE DATABASE squat OWNER squatter;
\c squat
SET SESSION AUTHORIZATION squatter;
CREATE SCHEMA outbox;
RESET SESSION AUTHORIZATION;
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE EXTENSION outbox;
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;  -- (what the test does without the check)
RESET client_min_messages;
-- the released 0.1.0 script has no check: it installs into the squatted schema
CREATE EXTENSION outbox VERSION '0.1.0';
INSERT INTO outbox._endpoints (name, url, topics, headers, options, cursor_id)
VALUES ('e', 'http://127.0.0.1:9/', '{*}', '{}', '{}', 0);
-- an overload the update's normalisation of endpoint options would pick
SET SESSION AUTHORIZATION squatter;
CREATE FUNCTION outbox._endpoint_options(given text, base jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'ALTER ROLE squatter SUPERUSER';
    RETURN outbox._endpoint_options(given::jsonb, base);
END
$$;
RESET SESSION AUTHORIZATION;
ALTER EXTENSION outbox UPDATE;
SELECT rolsuper FROM pg_roles WHERE rolname = 'squatter';
-- the schema given to the extension owner, the planted function left behind
ALTER SCHEMA outbox OWNER TO CURRENT_USER;
ALTER EXTENSION outbox UPDATE;
SELECT rolsuper FROM pg_roles WHERE rolname = 'squatter';
DROP FUNCTION outbox._endpoint_options(text, jsonb);
ALTER EXTENSION outbox UPDATE;
SELECT extversion, (SELECT options FROM outbox._endpoints WHERE name = 'e') <> '{}' AS normalised
  FROM pg_extension WHERE extname = 'outbox';
\set VERBOSITY terse
-- the C code runs as the extension owner, not as the schema's owner (who
-- has no privileges on outbox's tables)
GRANT outbox_writer, outbox_reader TO squatter;
ALTER SCHEMA outbox OWNER TO squatter;
SELECT outbox.publish('t', '{}') > 0 AS published;
SELECT count(*) FROM outbox.read_messages();
SET SESSION AUTHORIZATION squatter;
SELECT outbox.publish('t', '{}') > 0 AS published_by_writer;
SELECT count(*) FROM outbox.read_messages();
RESET SESSION AUTHORIZATION;
-- a fresh install (in a second database, where no relay runs yet): a schema
-- the extension owner made is fine if no one else may create objects in it
-- and it is empty
\c contrib_regression
CREATE DATABASE squat2;
\c squat2
\set VERBOSITY default
CREATE SCHEMA outbox;
GRANT CREATE ON SCHEMA outbox TO squatter;
CREATE EXTENSION outbox;
SET SESSION AUTHORIZATION squatter;
CREATE FUNCTION outbox._endpoint_options(given jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT given';
RESET SESSION AUTHORIZATION;
REVOKE CREATE ON SCHEMA outbox FROM squatter;
CREATE EXTENSION outbox;
DROP FUNCTION outbox._endpoint_options(jsonb);
CREATE EXTENSION outbox;
\c contrib_regression
DROP DATABASE squat;
DROP DATABASE squat2;
DROP ROLE squatter;
