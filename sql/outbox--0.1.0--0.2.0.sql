/*
 * outbox 0.1.0 -> 0.2.0 upgrade script.
 *
 * Every change of 0.2.0 to sql/outbox.sql is made here too, so that an
 * updated 0.1.0 install equals a fresh 0.2.0 one (test/t/006_upgrade.pl
 * compares the two catalogs, with data in every table).
 */
\echo Use "ALTER EXTENSION outbox UPDATE TO '0.2.0'" to load this file. \quit

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
