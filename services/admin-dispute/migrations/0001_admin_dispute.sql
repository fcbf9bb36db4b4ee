-- Administrative disputes (行政争议). Each is stored as its encoded protobuf (`body`) with
-- its clocks as JSON (`clocks`, the clock engine's form); the columns beside it are what
-- lists, authorisation and look-ups need. `facts_digest` is a keyed HMAC of the facts and
-- reasons (行政复议法 Art 74), never the facts themselves.
CREATE TABLE ad_disputes (
    id                      TEXT PRIMARY KEY,
    centre                  TEXT NOT NULL,
    case_id                 TEXT NOT NULL,
    state                   BIGINT NOT NULL,
    overdue                 BIGINT NOT NULL,
    facts_digest            TEXT NOT NULL,
    procuratorate_transfer  TEXT UNIQUE,
    body                    BLOB NOT NULL,
    clocks                  TEXT NOT NULL,
    create_time             BIGINT NOT NULL,
    update_time             BIGINT NOT NULL,
    version                 BIGINT NOT NULL
);
CREATE INDEX ad_disputes_create ON ad_disputes (create_time);

-- Every router transfer of a dispute (the procuratorate asked, or referring), current and
-- earlier, so a late message of an earlier one finds its dispute.
CREATE TABLE ad_transfers (
    transfer    TEXT PRIMARY KEY,
    dispute_id  TEXT NOT NULL
);

-- Who takes part in a dispute and so sees it (行诉解释 Art 86: mediation is not public).
CREATE TABLE ad_participants (
    dispute_id  TEXT NOT NULL,
    agency      TEXT NOT NULL,
    PRIMARY KEY (dispute_id, agency)
);
CREATE INDEX ad_participants_agency ON ad_participants (agency, dispute_id);

-- Facts and reasons withdrawn after a settlement (行政复议法 Art 74), by keyed digest only.
CREATE TABLE ad_withdrawn_facts (
    digest      TEXT PRIMARY KEY,
    dispute_id  TEXT NOT NULL
);

-- The service's key for the facts digest, created on first use.
CREATE TABLE ad_keys (
    id      BIGINT PRIMARY KEY,
    secret  BLOB NOT NULL
);
