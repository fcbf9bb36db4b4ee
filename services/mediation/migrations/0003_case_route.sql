-- The route version the case's transfer pinned, as the router's offer carried it (encoded
-- fengqiao.router.v1.Route): the case reports with that route's feedback outcome codes and
-- escalates with its escalation reasons. NULL for cases offered before offers carried it.
ALTER TABLE mediation_cases ADD COLUMN route BLOB;
