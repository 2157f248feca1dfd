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
