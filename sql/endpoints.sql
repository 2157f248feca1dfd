-- The endpoint admin API: validation, defaults, write-only secrets, roles.
SELECT outbox.create_endpoint('billing', 'https://billing.example.com/hooks/outbox');
SELECT outbox.create_endpoint('audit', 'http://127.0.0.1:9/audit', '{orders.*, payments.captured}',
       'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '{"Authorization": "Bearer t0ken"}',
       '{"max_attempts": 3, "batch_size": 50, "ordered": false}');
-- defaults are filled in; options given are kept
SELECT name, url, topics, has_secret, paused, options FROM outbox.endpoints ORDER BY name;

-- secrets are write-only: no view column (but whether there are, and which
-- Kafka client properties), and the table is private
SELECT count(*) AS secret_columns FROM information_schema.columns
 WHERE table_schema = 'outbox' AND table_name IN ('endpoints', 'dead_letters', 'messages') AND column_name LIKE '%secret%'
   AND column_name NOT IN ('has_secret', 'kafka_secret_names');

-- bad input: every case with its SQLSTATE
SELECT regress.try($$SELECT outbox.create_endpoint('billing', 'https://x.example.com')$$) AS duplicate;
SELECT regress.try($$SELECT outbox.create_endpoint(NULL, 'https://x.example.com')$$) AS null_name;
SELECT regress.try($$SELECT outbox.create_endpoint('', 'https://x.example.com')$$) AS empty_name;
SELECT regress.try($$SELECT outbox.create_endpoint('e', NULL)$$) AS null_url;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'ftp://x.example.com/')$$) AS ftp_url;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'file:///etc/passwd')$$) AS file_url;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'not a url')$$) AS garbage_url;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{}')$$) AS no_topics;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{NULL}')$$) AS null_topic;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{"or*ders"}')$$) AS star_inside;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*, ""}')$$) AS empty_topic;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', 'short')$$) AS short_secret;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', 'whsec_!!notbase64!!')$$) AS bad_base64;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', '')$$) AS empty_secret;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', NULL, '{"webhook-id": "x"}')$$) AS reserved_header;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', NULL, NULL)$$) AS null_headers;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', NULL, '{}', '{"retries": 3}')$$) AS unknown_option;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', NULL, '{}', '{"max_attempts": 0}')$$) AS zero_attempts;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', NULL, '{}', '{"batch_size": 1.5}')$$) AS fractional;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', NULL, '{}', '{"ordered": "yes"}')$$) AS ordered_string;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', NULL, '{}', '{"backoff_base_ms": 5000, "backoff_max_ms": 10}')$$) AS base_over_max;
SELECT regress.try($$SELECT outbox.create_endpoint('e', 'https://x.example.com', '{*}', NULL, '{}', '[]')$$) AS options_array;
SELECT count(*) AS endpoints_after_bad_input FROM outbox.endpoints;

-- alter_endpoint: any of url, topics, secret, headers, options (merged)
SELECT outbox.alter_endpoint('billing', '{"url": "https://billing.example.com/v2", "topics": ["billing.*"],
       "options": {"timeout_ms": 2000}}');
SELECT outbox.alter_endpoint('billing', '{"options": {"rate_limit_per_sec": 10}, "secret": "0123456789abcdef-raw"}');
SELECT name, url, topics, has_secret, options->>'timeout_ms' AS timeout_ms,
       options->>'rate_limit_per_sec' AS rate, options->>'max_attempts' AS attempts
  FROM outbox.endpoints WHERE name = 'billing';
SELECT outbox.alter_endpoint('billing', '{"secret": null}');
SELECT has_secret FROM outbox.endpoints WHERE name = 'billing';
SELECT regress.try($$SELECT outbox.alter_endpoint('nope', '{}')$$) AS missing_endpoint;
SELECT regress.try($$SELECT outbox.alter_endpoint('billing', '{"colour": "red"}')$$) AS unknown_setting;
SELECT regress.try($$SELECT outbox.alter_endpoint('billing', '{"url": 5}')$$) AS url_not_string;
SELECT regress.try($$SELECT outbox.alter_endpoint('billing', '{"topics": "x"}')$$) AS topics_not_array;
SELECT regress.try($$SELECT outbox.alter_endpoint('billing', '{"options": {"timeout_ms": 1}}')$$) AS timeout_too_small;
SELECT regress.try($$SELECT outbox.alter_endpoint('billing', NULL)$$) AS null_changes;

-- pause, resume, drop, redeliver
SELECT outbox.pause_endpoint('billing');
SELECT paused FROM outbox.endpoints WHERE name = 'billing';
SELECT outbox.resume_endpoint('billing');
SELECT paused FROM outbox.endpoints WHERE name = 'billing';
SELECT regress.try($$SELECT outbox.pause_endpoint('nope')$$) AS pause_missing;
SELECT outbox.redeliver(12345) AS nothing_to_redeliver;
SELECT regress.try($$SELECT outbox.redeliver(1, 'nope')$$) AS redeliver_missing;
SELECT regress.try($$SELECT outbox.redeliver(NULL)$$) AS redeliver_null;
SELECT outbox.drop_endpoint('audit');
SELECT regress.try($$SELECT outbox.drop_endpoint('audit')$$) AS drop_twice;
SELECT name FROM outbox.endpoints;

-- only outbox_admin configures endpoints; readers see dead letters, not endpoints
CREATE ROLE regress_ep_writer IN ROLE outbox_writer;
CREATE ROLE regress_ep_reader IN ROLE outbox_reader;
CREATE ROLE regress_ep_admin IN ROLE outbox_admin;
SET ROLE regress_ep_writer;
SELECT regress.try($$SELECT outbox.create_endpoint('w', 'https://x.example.com')$$) AS writer_create;
SELECT regress.try($$SELECT * FROM outbox.endpoints$$) AS writer_list;
RESET ROLE;
SET ROLE regress_ep_reader;
SELECT regress.try($$SELECT outbox.pause_endpoint('billing')$$) AS reader_pause;
SELECT regress.try($$SELECT count(*) FROM outbox.dead_letters$$) AS reader_dead_letters;
SELECT regress.try($$SELECT secret FROM outbox._endpoints$$) AS reader_secret;
RESET ROLE;
SET ROLE regress_ep_admin;
SELECT regress.try($$SELECT outbox.create_endpoint('by-admin', 'https://x.example.com', '{*}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')$$) AS admin_create;
SELECT regress.try($$SELECT secret FROM outbox._endpoints$$) AS admin_secret;
SELECT name, has_secret FROM outbox.endpoints ORDER BY name;
RESET ROLE;
DROP ROLE regress_ep_writer, regress_ep_reader, regress_ep_admin;
