-- Tidegate's operator role and database. Idempotent, run by psql as the `postgres` superuser with
-- ON_ERROR_STOP and the operator's password twice on stdin (or typed at the prompt, from a terminal):
--   printf '%s\n%s\n' "$PASSWORD" "$PASSWORD" | setsid -w psql -v ON_ERROR_STOP=1 -U postgres -d postgres -f postgres-init.sql
-- (setsid: with no terminal to ask, psql's \password reads stdin.) infra/infra.sh runs it on every `up` (the password
-- from .infra/pg/credentials/tidegate.pgpass, which it generates), so the role's password is set anew each time: that
-- is how it is rotated. No password is written here, and none reaches the server: \password sends the SCRAM-SHA-256
-- verifier psql computes, so neither the server's log nor pg_stat_statements can keep the password.
-- The role can create roles (the per-service ones) and end non-superusers' sessions, but is not a superuser.
SELECT 'CREATE ROLE tidegate LOGIN CREATEROLE NOSUPERUSER'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tidegate')
\gexec

ALTER ROLE tidegate LOGIN CREATEROLE NOSUPERUSER;
-- `tidegate db rotate --leaked` ends the sessions of a service's role whose password may have leaked.
GRANT pg_signal_backend TO tidegate;
\password tidegate

SELECT 'CREATE DATABASE tidegate OWNER tidegate'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = 'tidegate')
\gexec

ALTER DATABASE tidegate OWNER TO tidegate;
