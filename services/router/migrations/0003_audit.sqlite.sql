-- Append-only, hash-chained audit trail (审计日志); see src/audit.rs for the hash encoding.
-- `seq` is assigned by the appender (previous maximum + 1, no gaps) inside the write
-- transaction that makes the change; it is not an autoincrement. `recorded_at` is unix
-- microseconds from the database clock. `detail` never holds personal information.
-- `personal_info_fields` lists the PersonalInfoField numbers read or written ("1,3"), or ''.
CREATE TABLE audit_records (
    seq                  BIGINT PRIMARY KEY,
    recorded_at          BIGINT NOT NULL,
    agency               TEXT NOT NULL,
    actor                TEXT NOT NULL,
    action               TEXT NOT NULL,
    resource             TEXT NOT NULL,
    case_id              TEXT,
    outcome              TEXT NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    detail               TEXT NOT NULL,
    personal_info_fields TEXT NOT NULL,
    prev_hash            TEXT NOT NULL,
    hash                 TEXT NOT NULL
);
CREATE INDEX audit_records_case ON audit_records (case_id, seq);
CREATE INDEX audit_records_agency ON audit_records (agency, seq);
CREATE INDEX audit_records_resource ON audit_records (resource, seq);

-- Append-only: refuse changes and deletions. The hash chain still detects anyone who drops
-- these triggers or edits the file directly.
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit_records is append-only');
END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit_records is append-only');
END;
