-- The config revision: one row, bumped by one in every committed write
-- transaction. Writers lock this row first (SELECT ... FOR UPDATE), which
-- serialises them, so revision order is commit order.
CREATE TABLE revision (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    value bigint  NOT NULL CHECK (value >= 0)
);
INSERT INTO revision (id, value) VALUES (true, 0);

-- Config resources as opaque records. COLLATE "C" makes name order byte
-- order, the same on every server and in SQLite, and lets the primary key
-- index serve List's ORDER BY.
CREATE TABLE resources (
    kind        text COLLATE "C" NOT NULL,
    name        text COLLATE "C" NOT NULL,
    data        bytea       NOT NULL,
    revision    bigint      NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    PRIMARY KEY (kind, name)
);

-- The data-plane registry; data is a metamcp.v1.DataPlane in proto wire form.
CREATE TABLE dataplanes (
    node_id   text COLLATE "C" PRIMARY KEY,
    data      bytea       NOT NULL,
    last_seen timestamptz NOT NULL
);

-- The call log; data is a metamcp.v1.CallRecord in proto wire form, the
-- other columns are copies worth filtering on.
CREATE TABLE call_records (
    id        bigserial   PRIMARY KEY,
    time      timestamptz NOT NULL,
    endpoint  text        NOT NULL,
    principal text        NOT NULL,
    data      bytea       NOT NULL
);
CREATE INDEX call_records_time_idx ON call_records (time DESC, id DESC);
CREATE INDEX call_records_endpoint_time_idx ON call_records (endpoint, time DESC);
CREATE INDEX call_records_principal_time_idx ON call_records (principal, time DESC);
