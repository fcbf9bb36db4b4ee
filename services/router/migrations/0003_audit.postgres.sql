-- Append-only, hash-chained audit trail (审计日志); see src/audit.rs for the hash encoding.
-- `seq` is assigned by the appender (previous maximum + 1, no gaps) under a
-- transaction-scoped advisory lock, inside the write transaction that makes the change; it
-- is not a sequence/identity column. `recorded_at` is unix microseconds from the database
-- clock. `detail` never holds personal information. `personal_info_fields` lists the
-- PersonalInfoField numbers read or written ("1,3"), or ''.
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

-- Append-only: refuse changes, deletions and truncation. The hash chain still detects
-- anyone who drops these triggers.
CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_records is append-only';
END;
$$;
CREATE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();
