-- Applications for judicial confirmation (司法确认申请). Each is stored as its encoded
-- protobuf (`body`) with its decision clocks as JSON (`clocks`, the clock engine's form);
-- the columns beside them are what lists, authorisation and look-ups need. The owning court
-- is `court` (`agencies/{agency}`).
CREATE TABLE jc_applications (
    id                  TEXT PRIMARY KEY,
    court               TEXT NOT NULL,
    case_id             TEXT NOT NULL,
    transfer            TEXT NOT NULL UNIQUE,
    state               BIGINT NOT NULL,
    confirmation_number TEXT,
    overdue             BIGINT NOT NULL,
    body                BLOB NOT NULL,
    clocks              TEXT NOT NULL,
    create_time         BIGINT NOT NULL,
    update_time         BIGINT NOT NULL,
    version             BIGINT NOT NULL,
    UNIQUE (court, confirmation_number)
);
CREATE INDEX jc_applications_court ON jc_applications (court, create_time);
