-- Pre-filing cases (诉前调解案件) of the court-diversion service. Each case is stored as its
-- encoded protobuf (`body`); the columns beside it are what lists, authorisation, look-ups
-- and the router's messages need. The owning court is `court` (`agencies/{agency}`).
CREATE TABLE court_cases (
    id                TEXT PRIMARY KEY,
    court             TEXT NOT NULL,
    pre_filing_number TEXT NOT NULL,
    case_id           TEXT NOT NULL UNIQUE,
    state             BIGINT NOT NULL,
    category          BIGINT NOT NULL,
    organization      TEXT,
    mediator          TEXT,
    next_due          BIGINT,
    content_hash      TEXT NOT NULL,
    event_seq         BIGINT NOT NULL,
    body              BLOB NOT NULL,
    create_time       BIGINT NOT NULL,
    update_time       BIGINT NOT NULL,
    version           BIGINT NOT NULL,
    UNIQUE (court, pre_filing_number)
);
CREATE INDEX court_cases_court ON court_cases (court, create_time);

-- The court's roster of invited organisations (特邀调解组织名册, 特邀调解规定 Art 5–8).
CREATE TABLE court_organizations (
    court       TEXT NOT NULL,
    id          TEXT NOT NULL,
    agency      TEXT NOT NULL,
    active      BIGINT NOT NULL,
    body        BLOB NOT NULL,
    create_time BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (court, id)
);

-- Invited mediators (特邀调解员名册) of the organisations on the roster.
CREATE TABLE court_mediators (
    court        TEXT NOT NULL,
    organization TEXT NOT NULL,
    id           TEXT NOT NULL,
    actor_id     TEXT NOT NULL,
    active       BIGINT NOT NULL,
    body         BLOB NOT NULL,
    create_time  BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    PRIMARY KEY (court, organization, id)
);

-- The event log (WatchCases, the case's timeline): gap-free `seq`, appended under an
-- advisory lock on PostgreSQL and SQLite's write lock, so commit order is `seq` order.
CREATE TABLE court_case_events (
    seq         BIGINT PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    court       TEXT NOT NULL,
    case_name   TEXT NOT NULL,
    event_type  BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX court_case_events_court ON court_case_events (court, seq);
CREATE INDEX court_case_events_case ON court_case_events (case_name, seq);
