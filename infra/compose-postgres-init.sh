#!/usr/bin/env bash
# initdb step of docker-compose.yml's `postgres` (mounted as /docker-entrypoint-initdb.d/10-tidegate.sh;
# the image runs it as the postgres user on the first start only, sourced or executed).
#
# Runs infra/postgres-init.sql, the script infra/infra.sh runs locally, with the operator's password (read from
# the file `secrets-init` made) twice on stdin for the script's \password: the role `tidegate` and its database,
# with no password written in any file of the repository nor on a command line. psql sends the server only the
# SCRAM verifier, so pg_stat_statements (which this server preloads) cannot keep the password. setsid: with no
# terminal to ask, \password reads stdin.
# No `set -u`: when sourced, it would outlive this file in the image's own entrypoint.
password_file=${OPERATOR_PASSWORD_FILE:-/var/lib/tidegate/postgres/operator/password}
if [ ! -s "$password_file" ]; then
  echo "no $password_file: the one-shot secrets-init (infra/compose-init.sh) makes it" >&2
  exit 1
fi
printf '%s\n%s\n' "$(<"$password_file")" "$(<"$password_file")" \
  | PGHOST= PGHOSTADDR= setsid -w psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
    --dbname postgres -f "${INIT_SQL:-/opt/tidegate/postgres-init.sql}"
