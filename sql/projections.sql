-- CQRS projections: inline consistency and abort on error, filters, rebuild
-- equals live, pause and resume, async apply, retry -> failed -> resume,
-- wait_for_projection, stat_projections, roles and bad input.
CREATE TABLE balances (account text PRIMARY KEY, balance numeric NOT NULL, events int NOT NULL);
CREATE FUNCTION apply_balance(e outbox.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.data ? 'reject' THEN
        RAISE EXCEPTION 'amount % rejected by the read model', e.data ->> 'amount'
            USING ERRCODE = '23514';
    END IF;
    INSERT INTO balances VALUES (e.stream, (e.data ->> 'amount')::numeric, 1)
    ON CONFLICT (account) DO UPDATE
       SET balance = balances.balance + excluded.balance, events = balances.events + 1;
END
$$;
CREATE FUNCTION reset_balances() RETURNS void LANGUAGE sql AS $$ DELETE FROM balances $$;

SELECT outbox.create_projection('balances', 'apply_balance(outbox.events)', '{deposited, withdrawn}',
                                'acct-', 'inline', 'reset_balances()');

-- inline: the read model changes in the appending transaction, and rolls back with it
BEGIN;
SELECT outbox.append('acct-1', '{"type": "deposited", "data": {"amount": 100}}') IS NOT NULL AS appended;
SELECT * FROM balances;
ROLLBACK;
SELECT count(*) AS after_rollback FROM balances;
SELECT outbox.append('acct-1', '[{"type": "deposited", "data": {"amount": 100}},
                                    {"type": "withdrawn", "data": {"amount": -30}},
                                    {"type": "noted", "data": {"amount": 1000}}]') IS NOT NULL AS appended;
-- filters: the type "noted" and the stream "order-1" are not the projection's
SELECT outbox.append('order-1', '{"type": "deposited", "data": {"amount": 5}}') IS NOT NULL AS appended;
SELECT outbox.append('acct-2', '{"type": "deposited", "data": {"amount": 7}}') IS NOT NULL AS appended;
SELECT * FROM balances ORDER BY account;

-- a handler error aborts the append: no event, no version, no read-model change
SELECT regress.try($$SELECT outbox.append('acct-1', '{"type": "deposited", "data": {"amount": 1, "reject": true}}')$$) AS rejected;
SELECT split_part(outbox.stream_etag('acct-1'), '-', 1) AS still_version_3;
SELECT * FROM balances ORDER BY account;

-- rebuild equals live: keep the live model, rebuild, compare
CREATE TABLE balances_live AS SELECT * FROM balances;
SELECT outbox.rebuild_projection('balances') AS replayed;
SELECT count(*) AS differences FROM ((TABLE balances EXCEPT TABLE balances_live)
                                     UNION ALL (TABLE balances_live EXCEPT TABLE balances)) d;

-- pause: appends stop applying; resume applies exactly what was missed
SELECT outbox.pause_projection('balances');
SELECT outbox.append('acct-2', '{"type": "deposited", "data": {"amount": 3}}') IS NOT NULL AS appended;
SELECT balance AS paused_balance FROM balances WHERE account = 'acct-2';
SELECT name, mode, state, lag_events FROM outbox.stat_projections;
SELECT outbox.resume_projection('balances');
SELECT balance AS resumed_balance, events FROM balances WHERE account = 'acct-2';
SELECT outbox.append('acct-2', '{"type": "deposited", "data": {"amount": 1}}') IS NOT NULL AS appended;
SELECT balance AS live_again, events FROM balances WHERE account = 'acct-2';
SELECT name, mode, state, lag_events, lag_seconds, events_applied, last_error FROM outbox.stat_projections;
-- an inline projection is consistent at commit: nothing to wait for
SELECT outbox.wait_for_projection('balances', 'acct-2', outbox.stream_etag('acct-2'), '0 s') AS inline_waited;

-- changing a projection needs READ COMMITTED (a snapshot older than its lock could miss events)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT regress.try($$SELECT outbox.rebuild_projection('balances')$$) AS repeatable_read;
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT regress.try($$SELECT outbox.pause_projection('balances')$$) AS repeatable_read_pause;
ROLLBACK;

-- handlers run with a fixed search_path (pg_catalog, their schema, pg_temp), not
-- the appender's: an operator planted there does not run with the projection's rights
CREATE SCHEMA regress_evil;
CREATE FUNCTION regress_evil.plus(numeric, numeric) RETURNS numeric LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'hijacked'; END $$;
CREATE OPERATOR regress_evil.+ (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = regress_evil.plus);
SET search_path = regress_evil, pg_catalog, public;
SELECT outbox.append('acct-2', '{"type": "deposited", "data": {"amount": 2}}') IS NOT NULL AS not_hijacked;
RESET search_path;
SELECT balance FROM balances WHERE account = 'acct-2';
DROP SCHEMA regress_evil CASCADE;
-- and what a handler changes in the session is undone after it
CREATE TABLE settings_seen (work_mem text);
CREATE FUNCTION apply_settings(e outbox.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('work_mem', '64kB', false);
    INSERT INTO settings_seen VALUES (current_setting('work_mem'));
END
$$;
SELECT outbox.create_projection('settings', 'apply_settings(outbox.events)', stream_prefix => 'settings-');
SET work_mem = '4MB';
SELECT outbox.append('settings-1', '{"type": "x"}') IS NOT NULL AS appended;
SELECT work_mem AS inside_handler FROM settings_seen;
SHOW work_mem;
RESET work_mem;
SELECT outbox.drop_projection('settings');
DROP TABLE settings_seen;
DROP FUNCTION apply_settings;

-- async: the relay applies events in position order, exactly once
CREATE TABLE applied (position bigint PRIMARY KEY, stream text NOT NULL, times int NOT NULL);
CREATE TABLE poison (stream text, version bigint);
CREATE FUNCTION apply_log(e outbox.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM poison p WHERE p.stream = e.stream AND p.version = e.version) THEN
        RAISE EXCEPTION 'poisoned event %', e.version;
    END IF;
    INSERT INTO applied VALUES (e.position, e.stream, 1)
    ON CONFLICT (position) DO UPDATE SET times = applied.times + 1;
END
$$;
-- (earlier tests appended thousands of events: the projection reads them all, applies its own)
SELECT outbox.create_projection('log', 'apply_log(outbox.events)', NULL, 'log-', mode => 'async',
                                options => '{"batch_size": 500, "max_attempts": 3, "backoff_base_ms": 10, "backoff_max_ms": 20}');
SELECT outbox.append('log-1', '[{"type": "a"}, {"type": "b"}]') AS log1 \gset
SELECT outbox.wait_for_projection('log', 'log-1', :'log1') AS caught_up;
SELECT count(*) AS applied, count(*) FILTER (WHERE times <> 1) AS repeated,
       (SELECT count(*) FROM outbox.events WHERE stream LIKE 'log-%') AS events FROM applied;

-- a failing handler: retried with backoff, then the projection stops at that
-- event; the events before it in the batch are applied, none after it
INSERT INTO poison VALUES ('log-2', 2);
SELECT outbox.append('log-2', '[{"type": "a"}, {"type": "b"}, {"type": "c"}]') IS NOT NULL AS appended;
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        EXIT WHEN (SELECT state = 'failed' FROM outbox.stat_projections WHERE name = 'log');
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT state, attempts, last_error ~ '^event at position \d+: poisoned event 2$' AS error_shown,
       lag_events FROM outbox.stat_projections WHERE name = 'log';
-- waiting for a failed projection is an error at once, not a wait for the timeout
SELECT clock_timestamp() AS t0 \gset
SELECT regress.try($$SELECT outbox.wait_for_projection('log', 'log-2', outbox.stream_etag('log-2'), '20 s')$$) AS failed_wait;
SELECT clock_timestamp() - :'t0' < interval '10 s' AS at_once;
SELECT e.version FROM applied a JOIN outbox.events e USING (position) WHERE a.stream = 'log-2';
-- fixed: resume continues with the failed event
DELETE FROM poison;
SELECT outbox.resume_projection('log');
SELECT outbox.wait_for_projection('log', 'log-2', outbox.stream_etag('log-2')) AS resumed;
SELECT count(*) AS applied, count(*) FILTER (WHERE times <> 1) AS repeated,
       (SELECT count(*) FROM outbox.events WHERE stream LIKE 'log-%') AS events FROM applied;
SELECT state, attempts, last_error FROM outbox.stat_projections WHERE name = 'log';

-- async rebuild: from position 0, in the worker
TRUNCATE applied;
SELECT outbox.rebuild_projection('log') = (SELECT count(*) FROM outbox.events WHERE stream LIKE 'log-%') AS replays_all;
SELECT outbox.wait_for_projection('log', 'log-2', outbox.stream_etag('log-2')) AS rebuilt;
SELECT count(*) = (SELECT count(*) FROM outbox.events WHERE stream LIKE 'log-%') AS complete, count(*) FILTER (WHERE times <> 1) AS repeated FROM applied;
SELECT state FROM outbox.stat_projections WHERE name = 'log';

-- waiting needs READ COMMITTED, and a transaction that holds the relay back cannot wait
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT regress.try($$SELECT outbox.wait_for_projection('log', 'log-2', outbox.stream_etag('log-2'))$$) AS wait_repeatable_read;
ROLLBACK;
BEGIN;
SELECT outbox.append('log-4', '{"type": "f"}') AS log4 \gset
SELECT regress.try($$SELECT outbox.wait_for_projection('log', 'log-4', '$$ || :'log4' || $$')$$) AS wait_own_append;
ROLLBACK;

-- paused async: a wait for an event it has not applied is an error at once;
-- one it applied before the pause is true
SELECT outbox.pause_projection('log');
SELECT outbox.append('log-3', '{"type": "e"}') AS log3 \gset
SELECT clock_timestamp() AS t0 \gset
SELECT regress.try($$SELECT outbox.wait_for_projection('log', 'log-3', '$$ || :'log3' || $$', '20 s')$$) AS paused_wait;
SELECT clock_timestamp() - :'t0' < interval '10 s' AS at_once;
SELECT outbox.wait_for_projection('log', 'log-2', outbox.stream_etag('log-2'), '20 s') AS applied_before_pause;
SELECT outbox.resume_projection('log');
-- a huge timeout is a long wait, not an overflow
SELECT outbox.wait_for_projection('log', 'log-3', :'log3', '1000000 years') AS after_resume;
SELECT outbox.wait_for_projection('log', 'log-3', :'log3', '178000000 years 11 months 30 days 23:59:59') AS max_interval;

-- bad input, each with its SQLSTATE
SELECT regress.try($$SELECT outbox.create_projection('balances', 'apply_balance(outbox.events)')$$) AS duplicate;
SELECT regress.try($$SELECT outbox.create_projection(NULL, 'apply_balance(outbox.events)')$$) AS null_name;
SELECT regress.try($$SELECT outbox.create_projection('', 'apply_balance(outbox.events)')$$) AS empty_name;
SELECT regress.try($$SELECT outbox.create_projection('p', NULL)$$) AS null_handler;
SELECT regress.try($$SELECT outbox.create_projection('p', 'no_such_function(outbox.events)')$$) AS missing_handler;
SELECT regress.try($$SELECT outbox.create_projection('p', 4294967295::oid::regprocedure)$$) AS missing_oid;
SELECT regress.try($$SELECT outbox.create_projection('p', 'reset_balances()')$$) AS wrong_signature;
SELECT regress.try($$SELECT outbox.create_projection('p', 'apply_balance(outbox.events)', mode => 'sync')$$) AS bad_mode;
SELECT regress.try($$SELECT outbox.create_projection('p', 'apply_balance(outbox.events)', '{}')$$) AS no_types;
SELECT regress.try($$SELECT outbox.create_projection('p', 'apply_balance(outbox.events)', '{a, NULL}')$$) AS null_type;
SELECT regress.try($$SELECT outbox.create_projection('p', 'apply_balance(outbox.events)', NULL, '')$$) AS empty_prefix;
SELECT regress.try($$SELECT outbox.create_projection('p', 'apply_balance(outbox.events)', reset => 'apply_balance(outbox.events)')$$) AS bad_reset;
SELECT regress.try($$SELECT outbox.create_projection('p', 'apply_balance(outbox.events)', options => '{"batch": 1}')$$) AS unknown_option;
SELECT regress.try($$SELECT outbox.create_projection('p', 'apply_balance(outbox.events)', options => '{"batch_size": 0}')$$) AS zero_batch;
SELECT regress.try($$SELECT outbox.drop_projection('nope')$$) AS drop_missing;
SELECT regress.try($$SELECT outbox.pause_projection(NULL)$$) AS pause_null;
SELECT regress.try($$SELECT outbox.rebuild_projection('nope')$$) AS rebuild_missing;
SELECT regress.try($$SELECT outbox.wait_for_projection('nope', 'log-3', outbox.stream_etag('log-3'))$$) AS wait_missing;
SELECT regress.try($$SELECT outbox.wait_for_projection('log', 'log-3', 'garbage')$$) AS wait_bad_etag;
SELECT regress.try($$SELECT outbox.wait_for_projection('log', 'log-2', outbox.stream_etag('log-3'))$$) AS wait_other_stream;
SELECT regress.try($$SELECT outbox.wait_for_projection('log', 'log-3', '"9-' || split_part(outbox.stream_etag('log-3'), '-', 2))$$) AS wait_future_version;
SELECT regress.try($$SELECT outbox.wait_for_projection('log', 'log-3', outbox.stream_etag('log-3'), '-1 s')$$) AS wait_negative;
SELECT regress.try($$SELECT outbox.wait_for_projection('log', 'log-3', NULL)$$) AS wait_null_etag;
SELECT count(*) AS projections FROM outbox.stat_projections;

-- roles: only outbox_admin manages projections; the handler runs as its creator
CREATE ROLE regress_proj_admin LOGIN IN ROLE outbox_admin;
CREATE ROLE regress_proj_writer LOGIN IN ROLE outbox_writer, outbox_reader;
CREATE TABLE admin_model (position bigint, run_as name);
GRANT INSERT ON admin_model TO regress_proj_admin;
CREATE FUNCTION record_run_as(e outbox.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.admin_model VALUES (e.position, current_user) $$;
SET SESSION AUTHORIZATION regress_proj_writer;
SELECT regress.try($$SELECT outbox.create_projection('w', 'record_run_as(outbox.events)')$$) AS writer_creates;
SELECT regress.try($$SELECT outbox.drop_projection('balances')$$) AS writer_drops;
SELECT count(*) AS writer_sees FROM outbox.stat_projections;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_proj_admin;
SELECT outbox.create_projection('who', 'record_run_as(outbox.events)', stream_prefix => 'who-');
-- the private function that takes the role is granted to no one
SELECT regress.try($$SELECT outbox._create_projection('evil', 'record_run_as(outbox.events)', NULL, NULL, 'inline', NULL, '{}', 'postgres')$$) AS escalate;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_proj_writer;
-- the writer has no right on admin_model: the handler runs as regress_proj_admin
SELECT outbox.append('who-1', '{"type": "x"}') IS NOT NULL AS appended;
RESET SESSION AUTHORIZATION;
SELECT run_as FROM admin_model;
REVOKE INSERT ON admin_model FROM regress_proj_admin;
SELECT regress.try($$SELECT outbox.append('who-1', '{"type": "x"}')$$) AS revoked;

-- a dropped handler fails only the appends that should call it
GRANT INSERT ON admin_model TO regress_proj_admin;
DROP FUNCTION record_run_as;
SELECT outbox.append('unrelated-1', '{"type": "x"}') IS NOT NULL AS unrelated_append;
SELECT regress.try($$SELECT outbox.append('who-1', '{"type": "x"}')$$) AS matching_append;
-- and so does a dropped projection role
CREATE ROLE regress_proj_gone IN ROLE outbox_admin;
SET ROLE regress_proj_gone;
SELECT outbox.create_projection('gone', 'apply_balance(outbox.events)', stream_prefix => 'gone-');
RESET ROLE;
DROP ROLE regress_proj_gone;
SELECT outbox.append('unrelated-2', '{"type": "x"}') IS NOT NULL AS unrelated_append_role_gone;
SELECT regress.try($$SELECT outbox.append('gone-1', '{"type": "x"}')$$) AS matching_append_role_gone;
SELECT outbox.drop_projection('gone');
-- a handler re-created by another role does not run with the projection role's rights
GRANT CREATE ON SCHEMA public TO regress_proj_writer;
SET SESSION AUTHORIZATION regress_proj_writer;
CREATE FUNCTION public.record_run_as(e outbox.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.admin_model VALUES (e.position, 'hijacked') $$;
SELECT regress.try($$SELECT outbox.append('who-2', '{"type": "x"}')$$) AS hijack;
RESET SESSION AUTHORIZATION;
SELECT count(*) AS hijacked FROM admin_model WHERE run_as = 'hijacked';
DROP FUNCTION record_run_as;
REVOKE CREATE ON SCHEMA public FROM regress_proj_writer;
-- re-created by a role it trusts (a superuser here): it runs again
CREATE FUNCTION record_run_as(e outbox.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.admin_model VALUES (e.position, current_user) $$;
SELECT outbox.append('who-3', '{"type": "x"}') IS NOT NULL AS trusted_again;
SELECT run_as, count(*) FROM admin_model GROUP BY run_as ORDER BY run_as;
-- temporary functions are refused: their schema's name is reused by other sessions
CREATE FUNCTION pg_temp.tmp_handler(e outbox.events) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION pg_temp.tmp_reset() RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT regexp_replace(regress.try($$SELECT outbox.create_projection('tmpp', 'pg_temp.tmp_handler(outbox.events)')$$),
                      'pg_temp_\d+', 'pg_temp_N') AS temp_handler;
SELECT regexp_replace(regress.try($$SELECT outbox.create_projection('tmpp', 'apply_balance(outbox.events)', reset => 'pg_temp.tmp_reset()')$$),
                      'pg_temp_\d+', 'pg_temp_N') AS temp_reset;
SELECT count(*) AS tmpp FROM outbox.stat_projections WHERE name = 'tmpp';

-- drop: appends no longer call the handler
SELECT outbox.drop_projection('who');
SELECT outbox.append('who-1', '{"type": "x"}') IS NOT NULL AS appended_after_drop;
SELECT count(*) AS rows_after_drop FROM admin_model;
SELECT outbox.drop_projection('balances');
SELECT outbox.drop_projection('log');
SELECT count(*) AS projections_left FROM outbox.stat_projections;
DROP TABLE balances, balances_live, applied, poison, admin_model;
DROP FUNCTION apply_balance, reset_balances, apply_log, record_run_as;
DROP ROLE regress_proj_admin, regress_proj_writer;
