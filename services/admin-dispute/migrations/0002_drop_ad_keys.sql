-- The facts digest (行政复议法 Art 74) is now keyed with the key file's lookup key
-- (`seal::keyed_hash`), not with a secret kept in the database beside the digests: a copy of
-- the database no longer holds what it takes to test guessed facts against them. Digests
-- recorded under the old key no longer match; the suite had no deployment holding any.
DROP TABLE ad_keys;
