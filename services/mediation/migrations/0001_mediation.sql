-- People's mediation (人民调解): organisations, mediators, cases and the case file
-- (一案一卷). Resources are stored as encoded protobuf `body` plus indexed columns;
-- timestamps are unix microseconds from the database clock.
CREATE TABLE mediation_organizations (
    id          TEXT PRIMARY KEY,
    agency      TEXT NOT NULL,
    kind        BIGINT NOT NULL,
    region_code TEXT NOT NULL,
    version     BIGINT NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX mediation_organizations_agency ON mediation_organizations (agency, id);

CREATE TABLE mediation_mediators (
    organization TEXT NOT NULL,
    id           TEXT NOT NULL,
    agency       TEXT NOT NULL,
    version      BIGINT NOT NULL,
    body         BLOB NOT NULL,
    PRIMARY KEY (organization, id)
);
CREATE INDEX mediation_mediators_agency ON mediation_mediators (agency, organization, id);

CREATE TABLE mediation_cases (
    id              TEXT PRIMARY KEY,
    agency          TEXT NOT NULL,
    transfer        TEXT NOT NULL UNIQUE,
    case_id         TEXT NOT NULL,
    state           BIGINT NOT NULL,
    mediator        TEXT NOT NULL,
    reserved_number TEXT NOT NULL,
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    body            BLOB NOT NULL
);
CREATE INDEX mediation_cases_agency ON mediation_cases (agency, create_time, id);
CREATE INDEX mediation_cases_mediator ON mediation_cases (mediator, state);

-- Case-number counter per agency and year (调解案号).
CREATE TABLE mediation_case_numbers (
    agency TEXT NOT NULL,
    year   BIGINT NOT NULL,
    next   BIGINT NOT NULL,
    PRIMARY KEY (agency, year)
);

-- The case file's entries in filing order (卷内目录).
CREATE TABLE mediation_case_entries (
    case_ref    TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    record_time BIGINT NOT NULL,
    body        BLOB NOT NULL,
    PRIMARY KEY (case_ref, seq)
);
