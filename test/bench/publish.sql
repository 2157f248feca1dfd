\set k random(1, 1000)
SELECT outbox.publish('orders.created', '{"order": 1234, "total": 99.5, "items": [1, 2, 3]}', 'customer-' || :k);
