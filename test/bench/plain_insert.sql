\set k random(1, 1000)
INSERT INTO plain_messages (topic, key, payload, headers)
VALUES ('orders.created', 'customer-' || :k, '{"order": 1234, "total": 99.5, "items": [1, 2, 3]}', '{}');
