-- Subscriptions: named pull consumers (create_subscription, poll, ack,
-- drop_subscription, stat_subscriptions).  Ids are shown relative to :base.

-- Published before the subscription exists: never polled.
SELECT outbox.publish('sub.a.old', '{"n": 0}') > 0 AS published;

-- Bad arguments.
SELECT regress.try($$SELECT outbox.create_subscription(NULL)$$) AS null_name;
SELECT regress.try($$SELECT outbox.create_subscription('')$$) AS empty_name;
SELECT regress.try($$SELECT outbox.create_subscription(repeat('x', 256))$$) AS long_name;
SELECT regress.try($$SELECT outbox.create_subscription('s', NULL)$$) AS null_topics;
SELECT regress.try($$SELECT outbox.create_subscription('s', '{}')$$) AS no_topics;
SELECT regress.try($$SELECT outbox.create_subscription('s', '{NULL}')$$) AS null_pattern;
SELECT regress.try($$SELECT outbox.create_subscription('s', '{"a*b"}')$$) AS bad_pattern;

SELECT outbox.create_subscription('sub-a', '{"sub.a.*"}');
SELECT outbox.create_subscription('sub-all');
SELECT regress.try($$SELECT outbox.create_subscription('sub-a')$$) AS taken;
SELECT regress.try($$SELECT outbox.create_subscription('sub-a', '{"other"}')$$) AS taken_other_topics;

SELECT coalesce(max(id), 0) AS base FROM outbox.messages \gset
SELECT outbox.publish('sub.a.1', '{"n": 1}') - :base AS a1,
       outbox.publish('sub.b.1', '{"n": 2}') - :base AS b1,
       outbox.publish('sub.a.2', '{"n": 3}') - :base AS a2,
       outbox.publish('sub.a.3', '{"n": 4}') - :base AS a3;

-- Only matching messages published after creation, in id order; the same
-- ones again until acknowledged.
SELECT id - :base AS id, topic, payload FROM outbox.poll('sub-a');
SELECT id - :base AS id, topic FROM outbox.poll('sub-a');
SELECT id - :base AS id, topic FROM outbox.poll('sub-all');
SELECT id - :base AS id, topic FROM outbox.poll('sub-a', 2);

-- ack moves the position; backwards or repeated changes nothing.
SELECT outbox.ack('sub-a', :base + 1);
SELECT id - :base AS id, topic FROM outbox.poll('sub-a');
SELECT outbox.ack('sub-a', :base + 3);
SELECT id - :base AS id, topic FROM outbox.poll('sub-a');
SELECT outbox.ack('sub-a', :base + 1);
SELECT outbox.ack('sub-a', :base + 3);
SELECT acked_id - :base AS acked FROM outbox.stat_subscriptions WHERE name = 'sub-a';
-- a message the subscription does not match, below one it could poll: fine
SELECT outbox.ack('sub-all', :base + 2);
SELECT id - :base AS id, topic FROM outbox.poll('sub-all');

-- Beyond what poll could have returned: 22023.
SELECT left(regress.try(format('SELECT outbox.ack(%L, %s)', 'sub-a', :base + 5)), 5) AS beyond_log;
SELECT left(regress.try(format('SELECT outbox.ack(%L, %s)', 'sub-a', :base + 1000)), 5) AS far_beyond;
SELECT acked_id - :base AS still FROM outbox.stat_subscriptions WHERE name = 'sub-a';

-- Other bad arguments and unknown names (42704).
SELECT regress.try($$SELECT outbox.ack('sub-a', NULL)$$) AS ack_null_id;
SELECT regress.try($$SELECT outbox.ack(NULL, 1)$$) AS ack_null_name;
SELECT regress.try($$SELECT outbox.ack('sub-a', -1)$$) AS ack_negative;
SELECT regress.try($$SELECT outbox.ack('nope', 1)$$) AS ack_unknown;
SELECT regress.try($$SELECT count(*) FROM outbox.poll('nope')$$) AS poll_unknown;
SELECT regress.try($$SELECT count(*) FROM outbox.poll(NULL)$$) AS poll_null;
SELECT regress.try($$SELECT count(*) FROM outbox.poll('sub-a', 0)$$) AS poll_zero;
SELECT regress.try($$SELECT count(*) FROM outbox.poll('sub-a', NULL)$$) AS poll_null_count;
SELECT regress.try($$SELECT outbox.drop_subscription('nope')$$) AS drop_unknown;
SELECT regress.try($$SELECT outbox.drop_subscription(NULL)$$) AS drop_null;

-- ack writes: not in a read-only transaction (poll is fine there).
BEGIN READ ONLY;
SELECT count(*) AS polled_read_only FROM outbox.poll('sub-all');
SELECT regress.try(format('SELECT outbox.ack(%L, %s)', 'sub-all', :base + 4)) AS ack_read_only;
ROLLBACK;

-- A rolled-back ack changes nothing.
BEGIN;
SELECT outbox.ack('sub-all', :base + 4);
ROLLBACK;
SELECT name, topics, acked_id - :base AS acked, lag_messages,
       oldest_unacked_age IS NOT NULL AS has_unacked, acked_at IS NOT NULL AS acked_once
  FROM outbox.stat_subscriptions ORDER BY name;
SELECT outbox.ack('sub-all', :base + 4);
SELECT name, lag_messages, oldest_unacked_age IS NULL AS none_unacked FROM outbox.stat_subscriptions ORDER BY name;

-- Roles: admins create and drop, readers poll and ack, writers and others neither.
CREATE ROLE regress_sub_reader LOGIN IN ROLE outbox_reader;
CREATE ROLE regress_sub_writer LOGIN IN ROLE outbox_writer;
CREATE ROLE regress_sub_admin LOGIN IN ROLE outbox_admin;
CREATE ROLE regress_sub_nobody LOGIN;
SELECT outbox.publish('sub.a.4', '{"n": 5}') - :base AS a4;

SET ROLE regress_sub_reader;
SELECT regress.try($$SELECT count(*) FROM outbox.poll('sub-a')$$) AS reader_poll;
SELECT regress.try(format('SELECT outbox.ack(%L, %s)', 'sub-a', :base + 5)) AS reader_ack;
SELECT regress.try($$SELECT count(*) FROM outbox.stat_subscriptions$$) AS reader_stat;
SELECT regress.try($$SELECT outbox.create_subscription('r')$$) AS reader_create;
SELECT regress.try($$SELECT outbox.drop_subscription('sub-a')$$) AS reader_drop;
SELECT regress.try($$UPDATE outbox._subscriptions SET acked_id = 0$$) AS reader_update_table;
RESET ROLE;

SET ROLE regress_sub_writer;
SELECT regress.try($$SELECT count(*) FROM outbox.poll('sub-a')$$) AS writer_poll;
SELECT regress.try($$SELECT outbox.ack('sub-a', 1)$$) AS writer_ack;
SELECT regress.try($$SELECT outbox.create_subscription('w')$$) AS writer_create;
RESET ROLE;

SET ROLE regress_sub_nobody;
SELECT regress.try($$SELECT count(*) FROM outbox.poll('sub-a')$$) AS nobody_poll;
SELECT regress.try($$SELECT count(*) FROM outbox.stat_subscriptions$$) AS nobody_stat;
RESET ROLE;

SET ROLE regress_sub_admin;
SELECT regress.try($$SELECT outbox.create_subscription('by-admin', '{"x", "y.*"}')$$) AS admin_create;
SELECT regress.try($$SELECT count(*) FROM outbox.poll('by-admin')$$) AS admin_poll;
SELECT regress.try($$SELECT outbox.drop_subscription('by-admin')$$) AS admin_drop;
RESET ROLE;

SELECT outbox.drop_subscription('sub-a');
SELECT outbox.drop_subscription('sub-all');
SELECT count(*) AS left FROM outbox.stat_subscriptions;
DROP ROLE regress_sub_reader, regress_sub_writer, regress_sub_admin, regress_sub_nobody;
