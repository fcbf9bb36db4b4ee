-- One truth (issue #9): the router is the source of truth of a referral's transfer. Each
-- referral remembers the router event sequence (`TransferEvent.sequence`) it last reflected,
-- so that an older router message never reverts a newer referral.
ALTER TABLE referrals ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
