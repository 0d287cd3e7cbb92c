#!/usr/bin/env bash
# Entrypoint of docker-compose.yml's one-shot `migrate`: `tidegate db migrate` as the operator role.
#
# The operator's password is read from the file `secrets-init` made (the `postgres-operator` volume, which
# only postgres and this container mount), so it is in no compose file, environment of a service, or image.
# `db migrate` writes each service's login into its own folder, <TIDEGATE_DB_CREDENTIALS_DIR>/<login>/,
# each a volume mounted by that service alone.
set -euo pipefail

PASSWORD_FILE=${OPERATOR_PASSWORD_FILE:-/var/lib/tidegate/postgres/operator/password}
read -r -a TIDEGATE <<<"${TIDEGATE_CLI:-tidegate}"
[[ -s $PASSWORD_FILE ]] || { echo "no $PASSWORD_FILE: the one-shot secrets-init (infra/compose-init.sh) makes it" >&2; exit 1; }
password=$(<"$PASSWORD_FILE")  # hex: nothing to escape in a URL
export TIDEGATE_DATABASE_URL="postgresql://${OPERATOR:-tidegate}:${password}@${DATABASE_HOST:-postgres:5432}/tidegate"
exec "${TIDEGATE[@]}" db migrate
