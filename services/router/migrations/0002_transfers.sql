-- Transfers (移送) and their events. The transfer itself is stored as its encoded protobuf
-- (`body`); the columns beside it are what lists, authorisation and the timer need.
CREATE TABLE transfers (
    id              TEXT PRIMARY KEY,
    route_id        TEXT NOT NULL,
    route_version   BIGINT NOT NULL,
    from_agency     TEXT NOT NULL,
    to_agency       TEXT NOT NULL,
    approver_agency TEXT,
    case_id         TEXT NOT NULL,
    state           BIGINT NOT NULL,
    body            BLOB NOT NULL,
    acceptance_clock TEXT,
    feedback_clock  TEXT,
    next_due        BIGINT,
    overdue         BIGINT NOT NULL,
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL,
    version         BIGINT NOT NULL
);
CREATE INDEX transfers_from ON transfers (from_agency, create_time);
CREATE INDEX transfers_to ON transfers (to_agency, create_time);
CREATE INDEX transfers_approver ON transfers (approver_agency, create_time);
CREATE INDEX transfers_case ON transfers (case_id);
CREATE INDEX transfers_due ON transfers (next_due);

-- One row per state change, gap-free `seq` assigned under a lock so that readers following
-- `seq` (watch streams, timelines) never skip a late commit.
CREATE TABLE transfer_events (
    seq             BIGINT PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    transfer_id     TEXT NOT NULL,
    case_id         TEXT NOT NULL,
    from_agency     TEXT NOT NULL,
    to_agency       TEXT NOT NULL,
    approver_agency TEXT,
    event_type      BIGINT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    body            BLOB NOT NULL
);
CREATE INDEX transfer_events_transfer ON transfer_events (transfer_id, seq);
CREATE INDEX transfer_events_case ON transfer_events (case_id, seq);
