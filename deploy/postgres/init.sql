-- Fengqiao: PostgreSQL initialisation for the docker compose stack.
-- Runs once, as the superuser, when the postgres data volume is first created
-- (/docker-entrypoint-initdb.d). Each service owns its own database; no service
-- writes another's tables (DESIGN.md §1). Migrations are embedded in the binary
-- and run by each service at start-up, so only empty databases are created here.
--
-- DEV ONLY: the password below is for the local compose stack. In production the
-- connection URL (with credentials) comes from a Secret (see k8s/base/secrets.example.yaml).

CREATE ROLE fengqiao WITH LOGIN PASSWORD 'fengqiao';

CREATE DATABASE router          OWNER fengqiao ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE police_referral OWNER fengqiao ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE mediation       OWNER fengqiao ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE court_diversion OWNER fengqiao ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE judicial_confirmation OWNER fengqiao ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE admin_dispute   OWNER fengqiao ENCODING 'UTF8' TEMPLATE template0;

-- Nobody but the owner (and superusers) may connect.
REVOKE CONNECT ON DATABASE router          FROM PUBLIC;
REVOKE CONNECT ON DATABASE police_referral FROM PUBLIC;
REVOKE CONNECT ON DATABASE mediation       FROM PUBLIC;
REVOKE CONNECT ON DATABASE court_diversion FROM PUBLIC;
REVOKE CONNECT ON DATABASE judicial_confirmation FROM PUBLIC;
REVOKE CONNECT ON DATABASE admin_dispute   FROM PUBLIC;
GRANT  CONNECT ON DATABASE router          TO fengqiao;
GRANT  CONNECT ON DATABASE police_referral TO fengqiao;
GRANT  CONNECT ON DATABASE mediation       TO fengqiao;
GRANT  CONNECT ON DATABASE court_diversion TO fengqiao;
GRANT  CONNECT ON DATABASE judicial_confirmation TO fengqiao;
GRANT  CONNECT ON DATABASE admin_dispute   TO fengqiao;

-- PostgreSQL 15: the public schema of a new database is owned by pg_database_owner,
-- so the fengqiao role (database owner) can create its tables there without extra grants.
