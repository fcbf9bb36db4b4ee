-- Agency registry (机构注册). Timestamps are unix microseconds from the database clock.
CREATE TABLE agencies (
    id                TEXT PRIMARY KEY,
    kind              BIGINT NOT NULL,
    display_name      TEXT NOT NULL,
    region_code       TEXT NOT NULL,
    parent            TEXT,
    delivery_mode     BIGINT NOT NULL,
    endpoint          TEXT NOT NULL,
    active            BIGINT NOT NULL,
    deactivate_reason TEXT NOT NULL,
    create_time       BIGINT NOT NULL,
    update_time       BIGINT NOT NULL,
    deactivate_time   BIGINT,
    version           BIGINT NOT NULL
);
CREATE INDEX agencies_kind ON agencies (kind, id);
CREATE INDEX agencies_region ON agencies (region_code, id);
