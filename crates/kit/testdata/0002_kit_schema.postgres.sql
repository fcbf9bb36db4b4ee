-- Fixture of the kit's `schema!` test: the PostgreSQL script of a pair.
CREATE TABLE kit_schema_b (id TEXT PRIMARY KEY, backend TEXT NOT NULL DEFAULT 'postgres');
