-- Named clocks of a transfer (其他期限, `Route.clocks`, e.g. 委派调解 contact_parties:
-- 在线调解规则 Art 15), as a JSON array of clocks in the route's order. NULL: none started.
-- The earliest running one is part of `transfers.next_due`, so the timer fires it.
ALTER TABLE transfers ADD COLUMN named_clocks TEXT;
