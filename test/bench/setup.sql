-- Tables for the baselines, equivalent to outbox's own (same columns, same
-- keys), and 10,000 streams that already exist in both.
CREATE EXTENSION IF NOT EXISTS outbox;

CREATE TABLE plain_messages (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text,
    payload    jsonb NOT NULL,
    headers    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE plain_version;
CREATE TABLE plain_events (
    position   bigserial PRIMARY KEY,
    stream     text NOT NULL,
    version    bigint NOT NULL,
    type       text NOT NULL,
    data       jsonb NOT NULL,
    metadata   jsonb NOT NULL DEFAULT '{}',
    event_id   uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, version)
);

INSERT INTO plain_events (stream, version, type, data)
SELECT 's-' || g, nextval('plain_version'), 'Opened', '{}' FROM generate_series(0, 9999) g;
SELECT count(outbox.append('s-' || g, '{"type": "Opened"}')) AS streams FROM generate_series(0, 9999) g;
VACUUM ANALYZE;
