-- Options and headers: the value checked is the value stored and used
-- (src/options.c), and message headers never override the endpoint's.

-- integers: JSON numbers with an integral value; stored as plain integers
SELECT outbox.create_endpoint('opt', 'https://x.example.com', options => '{"timeout_ms": 5000.0, "max_attempts": 5e1}');
SELECT options FROM outbox.endpoints WHERE name = 'opt';
SELECT outbox.alter_endpoint('opt', '{"options": {"batch_size": 20.00}}');
SELECT options->'batch_size' AS batch_size, options->'timeout_ms' AS timeout_ms FROM outbox.endpoints WHERE name = 'opt';
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', options => '{"timeout_ms": 5000.5}')$$) AS fraction;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', options => '{"timeout_ms": "5000"}')$$) AS string;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', options => '{"timeout_ms": null}')$$) AS json_null;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', options => '{"timeout_ms": 1e400}')$$) AS huge;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', options => '{"max_in_flight": -1}')$$) AS negative;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', options => '{"ordered": 1}')$$) AS ordered_number;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', options => NULL)$$) AS null_options;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', options => '5')$$) AS scalar_options;
SELECT regress.try($$SELECT outbox.alter_endpoint('opt', '{"options": {"backoff_base_ms": 2.5}}')$$) AS alter_fraction;
SELECT regress.try($$SELECT outbox.alter_endpoint('opt', '{"options": {"backoff_max_ms": 100}}')$$) AS alter_base_over_max;
SELECT regress.try($$SELECT outbox.alter_endpoint('opt', '{"options": null}')$$) AS alter_null;
SELECT options->'batch_size' AS unchanged FROM outbox.endpoints WHERE name = 'opt';

-- a stored value outbox cannot use (a row changed by hand): alter_endpoint
-- names it, and replacing it repairs the row
UPDATE outbox._endpoints SET options = options || '{"timeout_ms": "soon", "colour": 1}' WHERE name = 'opt';
SELECT regress.try($$SELECT outbox.alter_endpoint('opt', '{"options": {"batch_size": 2}}')$$) AS stored_bad_value;
SELECT outbox.alter_endpoint('opt', '{"options": {"timeout_ms": 3000}}');
SELECT options FROM outbox.endpoints WHERE name = 'opt';

-- projections: the same parser
CREATE TABLE opt_log (n int);
CREATE FUNCTION opt_apply(e outbox.events) RETURNS void LANGUAGE sql AS $$ INSERT INTO opt_log VALUES (1) $$;
SELECT outbox.create_projection('opt_p', 'opt_apply(outbox.events)', mode => 'async', options => '{"batch_size": 10.0}');
SELECT options FROM outbox.stat_projections WHERE name = 'opt_p';
SELECT regress.try($$SELECT outbox.create_projection('p2', 'opt_apply(outbox.events)', options => '{"batch_size": 10.5}')$$) AS projection_fraction;
SELECT regress.try($$SELECT outbox.create_projection('p2', 'opt_apply(outbox.events)', options => '{"max_attempts": "3"}')$$) AS projection_string;
SELECT regress.try($$SELECT outbox.create_projection('p2', 'opt_apply(outbox.events)', options => '{"timeout_ms": 100}')$$) AS projection_unknown;
-- a projection's stored options that cannot be used never stop appends
UPDATE outbox._projections SET options = '{"batch_size": "ten"}' WHERE name = 'opt_p';
CREATE FUNCTION opt_inline(e outbox.events) RETURNS void LANGUAGE sql AS $$ INSERT INTO opt_log VALUES (2) $$;
SELECT outbox.create_projection('opt_i', 'opt_inline(outbox.events)');
UPDATE outbox._projections SET options = '{"batch_size": 10.5}' WHERE name = 'opt_i';
SELECT outbox.append('opt-1', '{"type": "t", "data": {}}') IS NOT NULL AS appended;
SELECT count(*) AS inline_applied FROM opt_log WHERE n = 2;
SELECT outbox.drop_projection('opt_p');
SELECT outbox.drop_projection('opt_i');

-- message headers: never an endpoint's credentials, the client's identity,
-- or a header outbox sets; never empty; each name once
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"Authorization": "Bearer x"}')$$) AS authorization;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"cookie": "a=b"}')$$) AS cookie;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"X-Forwarded-For": "10.0.0.1"}')$$) AS forwarded_for;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"User-Agent": ""}')$$) AS empty_user_agent;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"user-agent": "evil"}')$$) AS user_agent;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"Proxy-Authorization": "Basic x"}')$$) AS proxy_authorization;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"Content-Encoding": "gzip"}')$$) AS content_encoding;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"Trailer": "x"}')$$) AS hop_by_hop;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"x-trace": "  "}')$$) AS blank_value;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"X-Trace": "a", "x-trace": "b"}')$$) AS twice;
SELECT regress.try($$SELECT outbox.publish('t', '{}', NULL, '{"X-Trace": "a", "X-Tenant": "b"}')$$) AS fine;
-- an endpoint's own headers may carry credentials, not what outbox sets
SELECT regress.try($$SELECT outbox.alter_endpoint('opt', '{"headers": {"Authorization": "Bearer t", "Cookie": "s=1", "User-Agent": "acme"}}')$$) AS endpoint_credentials;
SELECT regress.try($$SELECT outbox.alter_endpoint('opt', '{"headers": {"Keep-Alive": "5"}}')$$) AS endpoint_hop_by_hop;
SELECT regress.try($$SELECT outbox.alter_endpoint('opt', '{"headers": {"Accept": ""}}')$$) AS endpoint_empty;
SELECT regress.try($$SELECT outbox.alter_endpoint('opt', '{"headers": {"X-A": "1", "x-a": "2"}}')$$) AS endpoint_twice;
SELECT outbox.drop_endpoint('opt');
