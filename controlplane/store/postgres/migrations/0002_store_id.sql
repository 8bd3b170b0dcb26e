-- The store's identity: a random id made with the schema and never changed.
-- Snapshots carry it, so a data plane can tell a store that was reset or
-- replaced (whose revisions start again low) from the one its config came
-- from.
CREATE TABLE store_identity (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    value text    NOT NULL
);
INSERT INTO store_identity (id, value) VALUES (true, replace(gen_random_uuid()::text, '-', ''));
