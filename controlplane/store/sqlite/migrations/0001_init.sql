-- Times are INTEGER microseconds since the Unix epoch (UTC): they sort, and
-- they round-trip at exactly the precision the store promises.

-- The config revision: one row, bumped by one in every committed write
-- transaction (writers are serialised, so revision order is commit order).
CREATE TABLE revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL CHECK (value >= 0)
) STRICT;
INSERT INTO revision (id, value) VALUES (1, 0);

-- Config resources as opaque records. The default BINARY collation orders
-- names by byte order, as the Postgres store does.
CREATE TABLE resources (
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    revision    INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) STRICT, WITHOUT ROWID;

-- The data-plane registry; data is a metamcp.v1.DataPlane in proto wire form.
CREATE TABLE dataplanes (
    node_id   TEXT    PRIMARY KEY,
    data      BLOB    NOT NULL,
    last_seen INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The call log; data is a metamcp.v1.CallRecord in proto wire form, the
-- other columns are copies worth filtering on.
CREATE TABLE call_records (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    time      INTEGER NOT NULL,
    endpoint  TEXT    NOT NULL,
    principal TEXT    NOT NULL,
    data      BLOB    NOT NULL
) STRICT;
CREATE INDEX call_records_time_idx ON call_records (time DESC, id DESC);
CREATE INDEX call_records_endpoint_time_idx ON call_records (endpoint, time DESC);
CREATE INDEX call_records_principal_time_idx ON call_records (principal, time DESC);
