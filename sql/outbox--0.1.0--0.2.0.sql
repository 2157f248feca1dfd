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
