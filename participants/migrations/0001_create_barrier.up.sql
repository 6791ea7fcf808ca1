-- The sub-transaction barrier. {{table}} is replaced by the configured,
-- quoted table name and {{created_index}} by the quoted name of its index.
-- One row per (saga, step, op) that reached the participant, written in the
-- same transaction as the business change it guards.
CREATE TABLE {{table}} (
    saga_id    text        NOT NULL,
    -- The step's name in the saga's plan (not the action's): the action
    -- and its compensation share it, so that they meet here.
    step       text        NOT NULL,
    op         text        NOT NULL CHECK (op IN ('do', 'undo')),
    -- op do:   succeeded | failed (business failure) | rejected (poison
    --          command) | voided (written by a compensation that found no
    --          action: the action is refused if it ever arrives);
    -- op undo: compensated.
    status     text        NOT NULL CHECK (
        (op = 'do' AND status IN ('succeeded', 'failed', 'rejected', 'voided'))
        OR (op = 'undo' AND status = 'compensated')),
    -- Why it failed, was rejected or was a null compensation.
    reason     text,
    -- The handler's result, re-sent with the outcome of a duplicate.
    result     jsonb,
    -- The coordinator's attempt of the command that wrote the row.
    attempt    integer     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, step, op)
);

-- The retention cleanup deletes the oldest rows first.
CREATE INDEX {{created_index}} ON {{table}} (created_at);
