-- The outcome of every attempt that ended RELEASED or FAILED, kept once the next attempt under
-- the same key reuses the execution row (SPEC §5.1). A request that found an attempt in flight
-- waits for that attempt and answers with its outcome, failure included; the next attempt may
-- already have overwritten the execution row by the time the waiter looks, so admission copies
-- the ended attempt here, in the transaction that starts the next one (under the agent's row
-- lock). The body is the answer the attempt's own caller got (e.g. the 502, 504 or provider 4xx),
-- when one was recorded; it is pruned with the other cached results.
CREATE TABLE attempt_outcomes (
    execution_id        UUID NOT NULL REFERENCES executions (id),
    attempt             INTEGER NOT NULL,
    state               TEXT NOT NULL
                        CONSTRAINT attempt_outcomes_state_ended CHECK (state IN ('RELEASED', 'FAILED')),
    reason              TEXT,
    response_status     INTEGER,
    response_body       BYTEA,
    response_is_stream  BOOLEAN NOT NULL DEFAULT false,
    completed_at        TIMESTAMPTZ,
    archived_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT attempt_outcomes_pkey PRIMARY KEY (execution_id, attempt)
);

CREATE INDEX attempt_outcomes_archived_idx ON attempt_outcomes (archived_at);
