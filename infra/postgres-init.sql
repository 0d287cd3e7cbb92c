-- Tidegate's operator role and database. Idempotent, run by psql as the `postgres` superuser with
-- ON_ERROR_STOP and the operator's password in the psql variable `tidegate_password`:
--   psql -v ON_ERROR_STOP=1 -v tidegate_password="$PASSWORD" -U postgres -d postgres -f postgres-init.sql
-- infra/infra.sh runs it on every `up` (the password from .infra/pg/credentials/tidegate.pgpass, which
-- it generates), so the role's password is set anew each time: that is how it is rotated. No password
-- is ever written here. The role can create roles (the per-service ones) but is not a superuser.
\if :{?tidegate_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'postgres-init.sql needs the operator''s password: psql -v tidegate_password=...'; END $$;
\endif

SELECT format('CREATE ROLE tidegate LOGIN CREATEROLE NOSUPERUSER PASSWORD %L', :'tidegate_password')
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tidegate')
\gexec

ALTER ROLE tidegate LOGIN CREATEROLE NOSUPERUSER PASSWORD :'tidegate_password';

SELECT 'CREATE DATABASE tidegate OWNER tidegate'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = 'tidegate')
\gexec

ALTER DATABASE tidegate OWNER TO tidegate;
