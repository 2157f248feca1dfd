-- one message per transaction, stamped with its publish time (µs) as seq
SELECT outbox.publish('bench.latency', jsonb_build_object('seq', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint));
