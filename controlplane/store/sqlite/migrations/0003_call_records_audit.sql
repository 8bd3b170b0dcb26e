-- The call log becomes the audit trail: each record carries the id its data
-- plane gave it, so a batch sent twice is stored once, and the columns that
-- filters and summaries read. Records stored before have no id and empty
-- columns (their data still holds everything).
ALTER TABLE call_records ADD COLUMN record_id TEXT;
ALTER TABLE call_records ADD COLUMN method TEXT NOT NULL DEFAULT '';
ALTER TABLE call_records ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE call_records ADD COLUMN server TEXT NOT NULL DEFAULT '';
ALTER TABLE call_records ADD COLUMN outcome INTEGER NOT NULL DEFAULT 0;
ALTER TABLE call_records ADD COLUMN destructive INTEGER NOT NULL DEFAULT 0;
ALTER TABLE call_records ADD COLUMN duration_us INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX call_records_record_id_idx ON call_records (record_id);
CREATE INDEX call_records_target_time_idx ON call_records (target, time DESC);
