-- The store's identity: a random id made with the schema and never changed.
-- Snapshots carry it, so a data plane can tell a store that was reset or
-- replaced (whose revisions start again low) from the one its config came
-- from.
CREATE TABLE store_identity (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value TEXT    NOT NULL
) STRICT;
INSERT INTO store_identity (id, value) VALUES (1, lower(hex(randomblob(16))));
