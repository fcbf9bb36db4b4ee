-- The W3C `traceparent` of the change that enqueued each outbox message (NULL: none, e.g.
-- tracing off or a message older than this column), so that its delivery push continues
-- that change's trace (issue #15). The outbox table is the store's; the router adds the column.
ALTER TABLE outbox ADD COLUMN trace_context TEXT;
