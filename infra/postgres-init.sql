-- Tidegate's role and database. Idempotent: run by infra/infra.sh on every `up` (as the
-- `postgres` superuser, psql -v ON_ERROR_STOP=1) and by the postgres:15 image's
-- /docker-entrypoint-initdb.d on first start (docker-compose.yml).
-- The role can create roles (per-service roles, if wanted) but is not a superuser.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tidegate') THEN
    CREATE ROLE tidegate LOGIN PASSWORD 'tidegate' CREATEROLE NOSUPERUSER;
  ELSE
    ALTER ROLE tidegate LOGIN PASSWORD 'tidegate' CREATEROLE NOSUPERUSER;
  END IF;
END
$$;

SELECT 'CREATE DATABASE tidegate OWNER tidegate'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = 'tidegate')
\gexec

ALTER DATABASE tidegate OWNER TO tidegate;
