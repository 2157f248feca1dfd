-- Kafka endpoints: URLs, options.kafka (allowlist, write-only secrets),
-- batch_size, switching an endpoint between webhook and Kafka, what each
-- role sees (src/kafka.c, src/options.c).

-- like regress.try, with the error's detail
CREATE FUNCTION regress.try_detail(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM || coalesce(E'\n' || nullif(detail, ''), '');
END
$$;

-- URLs: brokers with ports (IPv6 in brackets), a topic or a {topic} template
SELECT outbox.create_endpoint('k1', 'kafka://127.0.0.1:9092/orders');
SELECT outbox.create_endpoint('k2', 'KAFKA://b1.example.com:9092,b2.example.com:9093,[::1]:9094/outbox.{topic}');
SELECT outbox.create_endpoint('k3', 'kafka://broker_1:1/{topic}-{topic}');
SELECT name, url, options FROM outbox.endpoints WHERE name LIKE 'k_' ORDER BY name;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092')$$) AS no_topic;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/')$$) AS empty_topic;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka:///t')$$) AS no_broker;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka:b:9092/t')$$) AS no_slashes;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b/t')$$) AS no_port;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:0/t')$$) AS port_zero;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:65536/t')$$) AS port_too_large;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9x/t')$$) AS port_not_number;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092,/t')$$) AS trailing_comma;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092,,c:9092/t')$$) AS empty_broker;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://user:pw@b:9092/t')$$) AS userinfo;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t?acks=1')$$) AS query;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t#x')$$) AS fragment;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b c:9092/t')$$) AS space_in_host;
SELECT regress.try_detail(format($$SELECT outbox.create_endpoint('e', 'kafka://%s/t')$$, (SELECT string_agg('b' || g || ':9092', ',') FROM generate_series(1, 33) g))) AS too_many_brokers;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://[zz::1]:9092/t')$$) AS bad_ipv6;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://::1:9092/t')$$) AS ipv6_without_brackets;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/a/b')$$) AS slash_in_topic;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/..')$$) AS dot_dot;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/{topics}')$$) AS bad_placeholder;
SELECT regress.try_detail(format($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/%s')$$, repeat('t', 250))) AS topic_too_long;
SELECT regress.try_detail(format($$SELECT outbox.create_endpoint('longest', 'kafka://b:9092/%s')$$, repeat('t', 249))) AS topic_longest;
SELECT regress.try_detail(format($$SELECT outbox.create_endpoint('e2', 'kafka://b:9092/%s{topic}')$$, repeat('t', 249))) AS template_too_long;
SELECT outbox.drop_endpoint('longest');

-- options.kafka: client properties from an allowlist, stored as strings
SELECT outbox.create_endpoint('kp', 'kafka://127.0.0.1:9092/t', options =>
       '{"max_in_flight": 2048, "kafka": {"linger.ms": 20, "compression.type": "zstd",
         "socket.keepalive.enable": true, "acks": "all", "enable.idempotence": true,
         "max.in.flight.requests.per.connection": 1, "ssl.ca.location": "probe",
         "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
         "sasl.username": "outbox"}}');
SELECT options FROM outbox.endpoints WHERE name = 'kp';
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"max_in_flight": 2049}')$$) AS max_in_flight_too_large;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"batch_size": 2}')$$) AS batch_size;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": []}')$$) AS kafka_not_object;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": null}')$$) AS kafka_null;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', options => '{"kafka": {}}')$$) AS kafka_on_webhook;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"colour": 1}')$$) AS unknown_option;
-- properties that would weaken the guarantees
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"acks": "1"}}')$$) AS acks_one;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"request.required.acks": 0}}')$$) AS acks_zero;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"enable.idempotence": false}}')$$) AS no_idempotence;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"retries": 0}}')$$) AS no_retries;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"message.send.max.retries": 3}}')$$) AS few_retries;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"max.in.flight": 5}}')$$) AS more_in_flight;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"partitioner": "random"}}')$$) AS partitioner;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"queuing.strategy": "lifo"}}')$$) AS lifo;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"enable.gapless.guarantee": true}}')$$) AS gapless;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"message.timeout.ms": 1000}}')$$) AS message_timeout;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"bootstrap.servers": "evil:9092"}}')$$) AS bootstrap;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"transactional.id": "x"}}')$$) AS transactions;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"topic.acks": "0"}}')$$) AS topic_prefixed_acks;
-- code, commands and files of the database server
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"plugin.library.paths": "/tmp/evil.so"}}')$$) AS plugin;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"sasl.oauthbearer.token.endpoint.url": "http://169.254.169.254/token"}}')$$) AS oidc_token_url;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"interceptors": "x"}}')$$) AS interceptors;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"sasl.kerberos.kinit.cmd": "touch /tmp/x"}}')$$) AS kinit_cmd;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"sasl.mechanism": "GSSAPI"}}')$$) AS gssapi;
-- OAUTHBEARER has no token here (OIDC is refused); librdkafka 2.0.2's unsecured JWT
-- builder crashes the relay, hence the server, when it refreshes a token (and
-- echoes the write-only sasl.oauthbearer.config into the log when it fails)
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"sasl.mechanism": "OAUTHBEARER"}}')$$) AS oauthbearer;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"enable.sasl.oauthbearer.unsecure.jwt": true}}')$$) AS unsecure_jwt;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"ssl.key.location": "/etc/ssl/private/k.pem"}}')$$) AS key_file;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"ssl.ca.location": "/etc/passwd"}}')$$) AS ca_file;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"ssl.engine.location": "/tmp/e.so"}}')$$) AS engine;
-- managed by outbox, not for producers, unknown, invalid
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"debug": "all"}}')$$) AS debug;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"dr_msg_cb": "x"}}')$$) AS callback;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"group.id": "g"}}')$$) AS consumer_property;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"linger.msec": 5}}')$$) AS unknown_property;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"linger.ms": -3}}')$$) AS out_of_range;
SELECT regress.try_detail($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"compression.type": "zip"}}')$$) AS bad_value;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', options => '{"kafka": {"linger.ms": {"ms": 5}}}')$$) AS object_value;
SELECT regress.try($$SELECT outbox.create_endpoint('nulls', 'kafka://b:9092/t', options => '{"kafka": {"linger.ms": null}}')$$) AS null_value;
SELECT options -> 'kafka' AS nothing_set FROM outbox.endpoints WHERE name = 'nulls';
SELECT outbox.drop_endpoint('nulls');
-- a webhook secret signs HTTP requests: not for a Kafka endpoint
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'kafka://b:9092/t', '{*}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')$$) AS webhook_secret;
SELECT count(*) AS endpoints_after_bad_input FROM outbox.endpoints WHERE name IN ('e', 'e2');

-- write-only properties: kept apart, in no view, readable by no role
SELECT outbox.create_endpoint('ks', 'kafka://127.0.0.1:9092/t', options =>
       '{"kafka": {"sasl.username": "u", "sasl.password": "hunter2-s3cr3t",
                   "ssl.key.pem": "-----BEGIN PRIVATE KEY-----s3cr3t", "ssl.key.password": "s3cr3t-too"}}');
SELECT options -> 'kafka' AS shown, kafka_secret_names FROM outbox.endpoints WHERE name = 'ks';
SELECT kafka_secrets FROM outbox._endpoints WHERE name = 'ks';
-- no view column shows a secret value
SELECT count(*) AS views_showing_secrets FROM (
    SELECT to_jsonb(e)::text AS t FROM outbox.endpoints e
    UNION ALL SELECT to_jsonb(s)::text FROM outbox.stat_endpoints s
    UNION ALL SELECT to_jsonb(d)::text FROM outbox.dead_letters d) v
 WHERE t LIKE '%s3cr3t%';
-- alter: options.kafka merges property by property; secrets stay unless replaced or removed (null)
SELECT outbox.alter_endpoint('ks', '{"options": {"kafka": {"linger.ms": 50}, "max_attempts": 3}}');
SELECT options -> 'kafka' AS shown, kafka_secret_names FROM outbox.endpoints WHERE name = 'ks';
SELECT kafka_secrets ->> 'sasl.password' AS kept FROM outbox._endpoints WHERE name = 'ks';
SELECT outbox.alter_endpoint('ks', '{"options": {"kafka": {"sasl.password": "n3w-s3cr3t", "ssl.key.pem": null, "ssl.key.password": null, "linger.ms": null}}}');
SELECT options -> 'kafka' AS shown, kafka_secret_names FROM outbox.endpoints WHERE name = 'ks';
SELECT kafka_secrets FROM outbox._endpoints WHERE name = 'ks';
SELECT outbox.alter_endpoint('ks', '{"options": {"kafka": {"sasl.password": null}}}');
SELECT kafka_secrets IS NULL AS no_secrets_left, kafka_secret_names FROM outbox._endpoints JOIN outbox.endpoints USING (name) WHERE name = 'ks';
SELECT regress.try($$SELECT outbox.alter_endpoint('ks', '{"options": {"kafka": {"acks": 1}}}')$$) AS alter_acks;
SELECT regress.try($$SELECT outbox.alter_endpoint('ks', '{"options": {"batch_size": 5}}')$$) AS alter_batch_size;
SELECT regress.try($$SELECT outbox.alter_endpoint('ks', '{"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}')$$) AS alter_webhook_secret;
SELECT options -> 'batch_size' AS batch_size, options -> 'kafka' AS kafka FROM outbox.endpoints WHERE name = 'ks';

-- switching a webhook endpoint to Kafka and back: options left at the old
-- kind's default take the new kind's; batch_size must be 1, in either order
SELECT outbox.create_endpoint('sw', 'https://x.example.com/hook', '{*}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
       options => '{"batch_size": 10, "max_attempts": 5}');
SELECT regress.try($$SELECT outbox.alter_endpoint('sw', '{"url": "kafka://127.0.0.1:9092/t", "secret": null}')$$) AS batched_to_kafka;
SELECT regress.try($$SELECT outbox.alter_endpoint('sw', '{"url": "kafka://127.0.0.1:9092/t", "options": {"batch_size": 1}}')$$) AS signed_to_kafka;
SELECT outbox.alter_endpoint('sw', '{"url": "kafka://127.0.0.1:9092/t", "secret": null,
       "options": {"batch_size": 1, "kafka": {"sasl.password": "sw-s3cr3t"}}}');
SELECT url, has_secret, options, kafka_secret_names FROM outbox.endpoints WHERE name = 'sw';
SELECT regress.try($$SELECT outbox.alter_endpoint('sw', '{"options": {"max_in_flight": 1500}}')$$) AS kafka_window;
SELECT regress.try($$SELECT outbox.alter_endpoint('sw', '{"url": "https://x.example.com/hook"}')$$) AS window_too_large_for_webhook;
SELECT outbox.alter_endpoint('sw', '{"url": "https://x.example.com/hook", "options": {"max_in_flight": 1000}}');
SELECT url, options, kafka_secret_names FROM outbox.endpoints WHERE name = 'sw';
SELECT kafka_secrets IS NULL AS secrets_dropped FROM outbox._endpoints WHERE name = 'sw';
SELECT regress.try($$SELECT outbox.alter_endpoint('sw', '{"options": {"kafka": {}}}')$$) AS kafka_on_webhook_again;

-- roles: readers see a Kafka URL whole (it carries no credentials); the
-- private table, and so the write-only properties, is no one's but the owner's
CREATE ROLE regress_k_reader IN ROLE outbox_reader;
CREATE ROLE regress_k_admin IN ROLE outbox_admin;
SET ROLE regress_k_reader;
SELECT name, url FROM outbox.stat_endpoints WHERE name IN ('k1', 'k2', 'sw') ORDER BY name;
SELECT regress.try($$SELECT kafka_secrets FROM outbox._endpoints$$) AS reader_secrets;
RESET ROLE;
SET ROLE regress_k_admin;
SELECT regress.try($$SELECT kafka_secrets FROM outbox._endpoints$$) AS admin_secrets;
SELECT regress.try($$SELECT outbox._endpoint_options('{}', NULL, 'kafka://b:1/t', NULL)$$) AS admin_private_function;
SELECT outbox.alter_endpoint('ks', '{"options": {"kafka": {"sasl.password": "by-admin-s3cr3t"}}}');
SELECT name, kafka_secret_names FROM outbox.endpoints WHERE name = 'ks';
-- ... but cannot send the ones it cannot read to brokers of its choosing
-- (with SASL PLAIN the password travels as it is): new brokers need them again
SELECT regress.try_detail($$SELECT outbox.alter_endpoint('ks', '{"url": "kafka://evil.example.com:9092/t",
       "options": {"kafka": {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}}}')$$) AS new_brokers;
SELECT regress.try_detail($$SELECT outbox.alter_endpoint('ks', '{"url": "kafka://127.0.0.1:9092,evil.example.com:9092/t"}')$$) AS one_more_broker;
SELECT outbox.alter_endpoint('ks', '{"url": "kafka://127.0.0.1:9092/other.topic"}');
SELECT outbox.alter_endpoint('ks', '{"url": "kafka://b2.example.com:9092/t", "options": {"kafka": {"sasl.password": "given-again"}}}');
SELECT url, kafka_secret_names FROM outbox.endpoints WHERE name = 'ks';
RESET ROLE;
SELECT kafka_secrets FROM outbox._endpoints WHERE name = 'ks';
DROP ROLE regress_k_reader, regress_k_admin;
DROP FUNCTION regress.try_detail(text);

SELECT outbox.drop_endpoint(n) FROM unnest('{k1, k2, k3, kp, ks, sw}'::text[]) n;
