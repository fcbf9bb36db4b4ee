-- Store-and-forward delivery (消息投递). Timestamps are unix microseconds from the database clock.
-- The messages themselves live in the shared `outbox` table (fengqiao_store).

-- Per-case envelope counter: `Envelope.sequence` is gap-free and strictly increasing per case.
CREATE TABLE case_sequences (
    case_id       TEXT PRIMARY KEY,
    last_sequence BIGINT NOT NULL
);

-- Push deliveries that failed at least once (state 'failing', not listed), and delivery
-- incidents (投递异常): 'open' (dead after max attempts), 'retry_scheduled', 'resolved'.
-- Never holds payloads; last_error_message is the receiver's status message, truncated.
CREATE TABLE delivery_incidents (
    id                 TEXT PRIMARY KEY,
    message_id         TEXT NOT NULL UNIQUE,
    case_id            TEXT NOT NULL,
    transfer           TEXT NOT NULL,
    kind               BIGINT NOT NULL,
    to_agency          TEXT NOT NULL,
    endpoint           TEXT NOT NULL,
    state              TEXT NOT NULL,
    attempt_count      BIGINT NOT NULL,
    last_error_code    TEXT NOT NULL,
    last_error_message TEXT NOT NULL,
    first_failure_time BIGINT NOT NULL,
    last_failure_time  BIGINT NOT NULL,
    next_attempt_time  BIGINT,
    resolve_time       BIGINT,
    version            BIGINT NOT NULL
);
CREATE INDEX delivery_incidents_listing ON delivery_incidents (state, last_failure_time, id);
