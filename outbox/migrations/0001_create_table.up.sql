-- The outbox table. {{table}} is replaced by the configured, quoted table
-- name. A row lives from the business transaction that writes it until the
-- relay has published it and JetStream has acknowledged it.
CREATE TABLE {{table}} (
    -- Publication order: the relay claims rows ORDER BY id.
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Published as the Nats-Msg-Id header (JetStream deduplication).
    msg_id     text        NOT NULL UNIQUE CHECK (msg_id <> ''),
    subject    text        NOT NULL CHECK (subject <> ''),
    -- NATS headers as a JSON object of string arrays; NULL when none.
    headers    jsonb,
    payload    bytea       NOT NULL,
    -- Start of the writing transaction; the relay reports the lag from it.
    created_at timestamptz NOT NULL DEFAULT now()
);
