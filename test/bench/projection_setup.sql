-- The read model of the projection benchmarks: one balance row per stream,
-- kept by a one-row upsert per event.
CREATE TABLE balances (stream text PRIMARY KEY, balance numeric NOT NULL, events bigint NOT NULL);
CREATE FUNCTION apply_balance(e outbox.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.balances VALUES (e.stream, coalesce((e.data ->> 'amount')::numeric, 0), 1)
    ON CONFLICT (stream) DO UPDATE
       SET balance = balances.balance + excluded.balance, events = balances.events + 1;
END
$$;
CREATE FUNCTION reset_balances() RETURNS void LANGUAGE sql AS $$ TRUNCATE public.balances $$;
