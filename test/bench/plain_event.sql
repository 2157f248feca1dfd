-- Clients use disjoint streams (pgbench cannot retry an ETag conflict), each
-- picking at random among its share of the 10,000.
\set s :client_id + :nclients * random(0, 10000 / :nclients - 1)
INSERT INTO plain_events (stream, version, type, data)
VALUES ('s-' || :s, nextval('plain_version'), 'Deposited', '{"amount": 10}');
