-- Referrals (110 警情) of the police-referral service. The referral is stored as its encoded
-- protobuf (`body`); the columns beside it are what lists, authorisation and look-ups need.
CREATE TABLE referrals (
    id               TEXT PRIMARY KEY,
    incident_number  TEXT NOT NULL UNIQUE,
    case_id          TEXT NOT NULL,
    creator_agency   TEXT NOT NULL,
    police_station   TEXT NOT NULL,
    state            BIGINT NOT NULL,
    screening_result BIGINT NOT NULL,
    category         BIGINT NOT NULL,
    transfer         TEXT,
    call_time        BIGINT NOT NULL,
    content_hash     TEXT NOT NULL,
    feedback_due     BIGINT,
    feedback_overdue BIGINT NOT NULL,
    body             BLOB NOT NULL,
    create_time      BIGINT NOT NULL,
    update_time      BIGINT NOT NULL,
    version          BIGINT NOT NULL
);
CREATE INDEX referrals_creator ON referrals (creator_agency, call_time);
CREATE INDEX referrals_station ON referrals (police_station, call_time);
CREATE INDEX referrals_case ON referrals (case_id);
CREATE INDEX referrals_transfer ON referrals (transfer);

-- Supplementary investigation tasks (补充调查取证任务) received through the router.
CREATE TABLE investigation_tasks (
    id             TEXT PRIMARY KEY,
    referral_id    TEXT NOT NULL,
    investigation  TEXT NOT NULL UNIQUE,
    state          BIGINT NOT NULL,
    request_time   BIGINT NOT NULL,
    body           BLOB NOT NULL,
    version        BIGINT NOT NULL
);
CREATE INDEX investigation_tasks_referral ON investigation_tasks (referral_id, request_time);

-- The referral's file (一警一档): documents in the order they were added.
CREATE TABLE referral_documents (
    referral_id TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    added_at    BIGINT NOT NULL,
    body        BLOB NOT NULL,
    PRIMARY KEY (referral_id, seq)
);

-- Router events received for the referral's case.
CREATE TABLE referral_events (
    referral_id TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    sequence    BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    body        BLOB NOT NULL,
    PRIMARY KEY (referral_id, event_id)
);
