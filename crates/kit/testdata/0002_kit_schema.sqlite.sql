-- Fixture of the kit's `schema!` test: the SQLite script of a pair.
CREATE TABLE kit_schema_b (id TEXT PRIMARY KEY, backend TEXT NOT NULL DEFAULT 'sqlite');
