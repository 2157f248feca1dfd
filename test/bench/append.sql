-- One event with an ETag check: read the stream's ETag, append with it.
\set s :client_id + :nclients * random(0, 10000 / :nclients - 1)
SELECT outbox.append('s-' || :s, '{"type": "Deposited", "data": {"amount": 10}}', outbox.stream_etag('s-' || :s));
