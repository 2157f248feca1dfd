-- The projections part of the demo: an account-balance read model kept by an
-- inline projection, an async one kept by the projector worker, a rebuild, and
-- read-your-writes with wait_for_projection.  Run by test/demo.sh.
\set ON_ERROR_STOP on
\pset footer off
\echo
\echo '== 9. CQRS projections: read models kept up to date from the event log'
CREATE TABLE account_balances (account text PRIMARY KEY, balance numeric NOT NULL);
CREATE FUNCTION apply_balance(e outbox.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.account_balances
    VALUES (e.stream, CASE e.type WHEN 'Deposited' THEN 1 ELSE -1 END * (e.data ->> 'amount')::numeric)
    ON CONFLICT (account) DO UPDATE SET balance = account_balances.balance + excluded.balance;
END
$$;
CREATE FUNCTION reset_balances() RETURNS void LANGUAGE sql AS $$ TRUNCATE public.account_balances $$;
\echo 'inline: the balance changes in the same transaction as the append'
SELECT 'balances' AS "projection created" FROM outbox.create_projection('balances', 'apply_balance(outbox.events)',
       event_types => '{Deposited, Withdrawn}', stream_prefix => 'account-', reset => 'reset_balances()');
SELECT outbox.append('account-ada', '[{"type": "Deposited", "data": {"amount": 100}},
                                       {"type": "Withdrawn", "data": {"amount": 30}}]') AS etag;
SELECT * FROM account_balances;

\echo 'async: the projector worker keeps a daily activity count, checkpointed with its effects'
CREATE TABLE daily_activity (day date PRIMARY KEY, events bigint NOT NULL);
CREATE FUNCTION count_activity(e outbox.events) RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.daily_activity VALUES (e.created_at::date, 1)
    ON CONFLICT (day) DO UPDATE SET events = daily_activity.events + 1
$$;
SELECT 'activity' AS "projection created"
  FROM outbox.create_projection('activity', 'count_activity(outbox.events)', stream_prefix => 'account-', mode => 'async');
SELECT outbox.append('account-bob', '{"type": "Deposited", "data": {"amount": 250}}') AS bob_etag \gset
\echo 'read-your-writes: wait until the async projection has applied that ETag'
SELECT outbox.wait_for_projection('activity', 'account-bob', :'bob_etag') AS applied;
SELECT events AS events_today FROM daily_activity;

\echo 'rebuild: reset the read model and replay every matching event'
SELECT outbox.rebuild_projection('balances') AS events_replayed;
SELECT * FROM account_balances ORDER BY account;
\x on
SELECT name, mode, state, position, lag_events, events_applied, last_error FROM outbox.stat_projections ORDER BY name;
\x off
