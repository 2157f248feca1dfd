-- Finding 7: outbox.blocked_networks (superuser only, validated) and what
-- outbox_reader sees of endpoint URLs and delivery errors.
SHOW outbox.blocked_networks;
SELECT context FROM pg_settings WHERE name = 'outbox.blocked_networks';

-- valid lists: IPv4, IPv6, bare addresses, spaces, empty
ALTER SYSTEM SET outbox.blocked_networks = '10.0.0.0/8, ::1, fe80::/10,192.168.1.7,  ::ffff:169.254.0.0/112';
ALTER SYSTEM SET outbox.blocked_networks = '';
-- bad ones: a clear error (22023) naming the item
ALTER SYSTEM SET outbox.blocked_networks = '169.254.0.0/16, nonsense';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET outbox.blocked_networks = '10.0.0.0/33';
ALTER SYSTEM SET outbox.blocked_networks = '::1/129';
ALTER SYSTEM SET outbox.blocked_networks = '10.0.0.0/';
ALTER SYSTEM SET outbox.blocked_networks = '300.1.1.1';
-- a prefix length is digits only (strtol took " 8", "+8" and "-0", which blocked everything)
ALTER SYSTEM SET outbox.blocked_networks = '127.0.0.1/-0';
ALTER SYSTEM SET outbox.blocked_networks = '127.0.0.1/+8';
ALTER SYSTEM SET outbox.blocked_networks = '127.0.0.1/ 8';
ALTER SYSTEM RESET outbox.blocked_networks;
-- not a session setting
SELECT regress.try($$SET outbox.blocked_networks = ''$$) AS session_set;

CREATE ROLE regress_ssrf_reader LOGIN IN ROLE outbox_reader;
CREATE ROLE regress_ssrf_admin LOGIN IN ROLE outbox_admin;
-- only a superuser may change it
SET ROLE regress_ssrf_admin;
ALTER SYSTEM SET outbox.blocked_networks = '';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- An endpoint whose URL carries secrets (userinfo, path, query), paused so
-- that nothing is sent, and dead letters with a response body in last_error.
BEGIN;
SELECT outbox.create_endpoint('ssrf', 'http://svc:S3cr3tPassw0rd@127.0.0.1:9/hooks/T0KEN-PATH?token=abc#frag');
SELECT outbox.pause_endpoint('ssrf');
COMMIT;
SELECT outbox.publish('ssrf.a', '{}') AS m1 \gset
SELECT outbox.publish('ssrf.b', '{}') AS m2 \gset
SELECT outbox.publish('ssrf.c', '{}') AS m3 \gset
INSERT INTO outbox._deliveries (endpoint_id, message_id, state, attempts, last_status, last_error)
SELECT id, m, 'dead', 1, s, e
  FROM outbox._endpoints,
       (VALUES (:m1, 500, 'HTTP 500: INTERNAL-ADMIN-API: db_password=hunter2'),
               (:m2, 0, 'Couldn''t connect to server'),
               (:m3, 0, 'address 169.254.169.254 is blocked by outbox.blocked_networks')) v(m, s, e)
 WHERE name = 'ssrf';

-- a reader: the URL's origin only, errors without the body
SET ROLE regress_ssrf_reader;
SELECT name, url FROM outbox.stat_endpoints WHERE name = 'ssrf';
SELECT message_id - :m1 AS n, last_status, last_error FROM outbox.dead_letters WHERE endpoint = 'ssrf' ORDER BY 1;
SELECT outbox._shown_url('http://u:p@h.example:8080/secret/path?q=1') AS direct_url,
       outbox._shown_error('HTTP 503: body') AS direct_error,
       outbox._shown_url('https://[::1]/x') AS ipv6_url;
-- nothing a reader can read carries the secrets
SELECT count(*) AS leaks FROM (
    SELECT url || coalesce(last_error, '') AS t FROM outbox.stat_endpoints
    UNION ALL SELECT coalesce(last_error, '') FROM outbox.dead_letters
    UNION ALL SELECT coalesce(last_error, '') FROM outbox._stat_endpoints()
    UNION ALL SELECT outbox.metrics()) s
 WHERE t ~ '(S3cr3t|T0KEN|token=|db_password|INTERNAL)';
SELECT regress.try($$SELECT url FROM outbox.endpoints$$) AS reader_endpoints;
RESET ROLE;

-- an admin sees them in full
SET ROLE regress_ssrf_admin;
SELECT name, url FROM outbox.stat_endpoints WHERE name = 'ssrf';
SELECT message_id - :m1 AS n, last_error FROM outbox.dead_letters WHERE endpoint = 'ssrf' ORDER BY 1;
SELECT url FROM outbox.endpoints WHERE name = 'ssrf';
RESET ROLE;

SELECT outbox.drop_endpoint('ssrf');
DROP ROLE regress_ssrf_reader, regress_ssrf_admin;
