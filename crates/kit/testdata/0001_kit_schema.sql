-- Fixture of the kit's `schema!` test: a portable script.
CREATE TABLE kit_schema_a (id TEXT PRIMARY KEY, body BLOB NOT NULL);
