-- One truth (issue #9): the router is the source of truth of a case's transfer. Each case
-- remembers the router event sequence (`TransferEvent.sequence`) it last reflected, so that
-- an older router message never reverts a newer record.
ALTER TABLE mediation_cases ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
