//! Migrations for the tables this crate owns: `idempotency_keys`, `outbox`, `inbox`,
//! `inbox_case_sequences`, `deadlines`, `access_log`.

use crate::migrate::Migration;

/// Service name under which [`SHARED_MIGRATIONS`] are recorded.
pub const SHARED_SERVICE: &str = "fengqiao_store";

/// The store's own tables. Every service runs
/// `store.migrate(SHARED_SERVICE, SHARED_MIGRATIONS)` before its own migrations.
pub const SHARED_MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "idempotency_keys",
        "CREATE TABLE idempotency_keys (
    caller TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (caller, method, request_id)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
",
    ),
    // SQLite's AUTOINCREMENT key is PostgreSQL's BIGSERIAL: not a mechanical translation.
    Migration::pair(
        2,
        "outbox",
        "CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    destination TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    lease_owner TEXT,
    last_error TEXT,
    delivered_at BIGINT
);
CREATE INDEX outbox_claimable ON outbox (status, next_attempt_at);
CREATE INDEX outbox_ordering ON outbox (ordering_key, seq);
",
        "CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    destination TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    lease_owner TEXT,
    last_error TEXT,
    delivered_at BIGINT
);
CREATE INDEX outbox_claimable ON outbox (status, next_attempt_at);
CREATE INDEX outbox_ordering ON outbox (ordering_key, seq);
",
    ),
    Migration::portable(
        3,
        "inbox",
        "CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
",
    ),
    Migration::portable(
        4,
        "inbox_case_sequences",
        // Receiver side of per-case order: the highest envelope `sequence` a consumer has applied
        // for a case (see the router's `delivery::receive_in_order`).
        "CREATE TABLE inbox_case_sequences (
    consumer TEXT NOT NULL,
    case_id TEXT NOT NULL,
    last_sequence BIGINT NOT NULL,
    PRIMARY KEY (consumer, case_id)
);
",
    ),
    Migration::portable(
        5,
        "deadlines",
        // One row per scheduled deadline of a service (see `crate::deadline`); times are unix
        // microseconds from the database clock.
        "CREATE TABLE deadlines (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    payload BLOB,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    fired_at BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, key)
);
CREATE INDEX deadlines_pending ON deadlines (owner, due_at) WHERE fired_at IS NULL;
",
    ),
    Migration::portable(
        6,
        "access_log",
        // Who read personal information in full, and who was refused (see `crate::access`).
        // Never holds the values read: only which fields.
        "CREATE TABLE access_log (
    id TEXT PRIMARY KEY,
    recorded_at BIGINT NOT NULL,
    service TEXT NOT NULL,
    agency TEXT NOT NULL,
    actor TEXT NOT NULL,
    person TEXT NOT NULL,
    method TEXT NOT NULL,
    resource TEXT NOT NULL,
    case_id TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN ('full_read', 'denied')),
    fields TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX access_log_time ON access_log (recorded_at);
CREATE INDEX access_log_case ON access_log (case_id, recorded_at);
",
    ),
];
