-- The call log becomes the audit trail: each record carries the id its data
-- plane gave it, so a batch sent twice is stored once, and the columns that
-- filters and summaries read. Records stored before have no id and empty
-- columns (their data still holds everything).
ALTER TABLE call_records
    ADD COLUMN record_id   text,
    ADD COLUMN method      text    NOT NULL DEFAULT '',
    ADD COLUMN target      text    NOT NULL DEFAULT '',
    ADD COLUMN server      text    NOT NULL DEFAULT '',
    ADD COLUMN outcome     integer NOT NULL DEFAULT 0,
    ADD COLUMN destructive boolean NOT NULL DEFAULT false,
    ADD COLUMN duration_us bigint  NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX call_records_record_id_idx ON call_records (record_id);
CREATE INDEX call_records_target_time_idx ON call_records (target, time DESC);
