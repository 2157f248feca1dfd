-- The transactional outbox: messages exist exactly when the business write commits.
CREATE TABLE orders (id int PRIMARY KEY, total numeric);
SELECT coalesce(max(id), 0) AS before FROM outbox.messages \gset

BEGIN;
INSERT INTO orders VALUES (1, 10);
SELECT outbox.publish('orders.created', '{"order": 1}', 'customer-7', '{"x-trace-id": "t1"}') AS id1 \gset
COMMIT;
SELECT topic, key, payload, headers FROM outbox.messages WHERE id = :id1;

-- A rollback leaves neither the order nor the message behind.
BEGIN;
INSERT INTO orders VALUES (2, 20);
SELECT outbox.publish('orders.created', '{"order": 2}', 'customer-7') > :id1 AS id_increases;
ROLLBACK;
SELECT (SELECT count(*) FROM orders) AS orders, (SELECT count(*) FROM outbox.messages WHERE id > :before) AS messages;

-- Ids increase; NULL keys and default headers are fine.
SELECT outbox.publish('orders.shipped', '{"order": 1}') AS id2 \gset
SELECT outbox.publish('orders.shipped', '[1, 2, 3]', NULL, '{}') AS id3 \gset
SELECT :id1 < :id2 AND :id2 < :id3 AS ids_increase;
SELECT topic, key, payload, headers, created_at <= now() + interval '1 minute' AS has_time
  FROM outbox.messages WHERE id > :before ORDER BY id;

-- read_messages: the gap-free reader of the message log, in id order, paged.
SELECT topic, payload FROM outbox.read_messages(:before, 2);
SELECT topic, payload FROM outbox.read_messages(:id2);
-- A transaction does not read its own uncommitted messages (they may still roll back).
BEGIN;
SELECT outbox.publish('orders.pending', '{}') IS NOT NULL AS published;
SELECT count(*) AS own_uncommitted_visible FROM outbox.read_messages(:id3);
COMMIT;
SELECT topic FROM outbox.read_messages(:id3);

-- consume_once: true the first time, false on every repeat; per consumer; transactional.
SELECT outbox.consume_once('billing', 'msg-1') AS first, outbox.consume_once('billing', 'msg-1') AS repeat;
SELECT outbox.consume_once('shipping', 'msg-1') AS other_consumer;
BEGIN;
SELECT outbox.consume_once('billing', 'msg-2') AS in_rolled_back_tx;
ROLLBACK;
SELECT outbox.consume_once('billing', 'msg-2') AS after_rollback;
SELECT outbox.consume_once('billing', 'msg-2') AS repeat_after_commit;
-- A consumer name belongs to the role that first used it (and the roles with its
-- privileges): another writer cannot mark that consumer's messages as seen.
CREATE ROLE regress_billing_app IN ROLE outbox_writer;
CREATE ROLE regress_other_app IN ROLE outbox_writer;
CREATE ROLE regress_billing_worker IN ROLE regress_billing_app;
SET ROLE regress_billing_app;
SELECT outbox.consume_once('billing-svc', 'm-1') AS billing_first;
RESET ROLE;
SET ROLE regress_other_app;
SELECT regress.try($$SELECT outbox.consume_once('billing-svc', 'm-2')$$) AS other_app_marks;
SELECT outbox.consume_once('other-svc', 'm-2') AS own_consumer;
RESET ROLE;
SET ROLE regress_billing_worker;
SELECT outbox.consume_once('billing-svc', 'm-2') AS member_sees_m2;
RESET ROLE;
SET ROLE regress_billing_app;
SELECT outbox.consume_once('billing-svc', 'm-2') AS billing_repeat;
RESET ROLE;
SELECT consumer, CASE WHEN owner = current_user THEN '(me)' ELSE owner END AS owner
  FROM outbox._consumers ORDER BY consumer;
DROP ROLE regress_billing_worker, regress_billing_app, regress_other_app;
