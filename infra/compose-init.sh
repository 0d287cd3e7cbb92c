#!/usr/bin/env bash
# Entrypoint of docker-compose.yml's one-shot `secrets-init`, run (as root, in the Tidegate image) before
# anything else starts. It makes every secret of the stack, once, into the volume that will hold it, and
# hands each volume to the user of the image that reads it. Each volume is then mounted only by the
# containers that need it, so no container can read another's secret:
#
#   <root>/keys/                        public keys, operators/ and clients/    every service, read-only
#   <root>/keys/<service>/              that service's private key (the executor's also seals connector credentials)
#   <root>/db/<login>/                  empty: `migrate` writes <login>.json    migrate; the service (executor: + systems)
#   <root>/kafka/<principal>/           <principal>.properties                  kafka; admin: topics; a service: its own
#   <root>/kafka/controller.secret      the broker's own controller login       kafka only
#   <root>/postgres/superuser/password  the `postgres` superuser                postgres only
#   <root>/postgres/operator/password   the operator role `tidegate`            postgres (initdb), migrate
#
# Idempotent: what exists is kept (a password changed here would no longer match the broker's or the
# database's). Usage: compose-init.sh [root]   (default /var/lib/tidegate; tests run it against a temp dir,
# with TIDEGATE_CLI naming the `tidegate` command).
set -euo pipefail

ROOT=${1:-/var/lib/tidegate}
read -r -a TIDEGATE <<<"${TIDEGATE_CLI:-tidegate}"
SERVICES="planner policy approval executor audit"
# Must equal servicekit.bus_rights.principal_names(<the catalog's Kafka-served tools>); a unit test checks it.
PRINCIPALS="admin ops planner policy approval executor audit agent tool-update_inventory"
# Must equal the users of tidegate.database.SCHEMAS (the tools' `systems` is the executor's second login); a unit test checks it.
DB_LOGINS="planner policy approval executor audit systems"

umask 077
new_secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }  # 48 hex digits: safe in a DSN, SQL and a JAAS line
write_once() { [[ -s $1 ]] || { mkdir -p "$(dirname "$1")" && printf '%s\n' "$2" >"$1"; }; }  # file, content

# Keys: each service's pair, the executor's connector-credentials pair, the allow-list folders.
TIDEGATE_KEYS_DIR="$ROOT/keys" "${TIDEGATE[@]}" keys init --all

# Kafka: one client properties file per principal, each in its own folder (its own volume).
for p in $PRINCIPALS; do
  write_once "$ROOT/kafka/$p/$p.properties" "# Kafka client settings of principal '$p' inside the compose network (keep secret, never commit).
bootstrap.servers=kafka:9092
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$p\" password=\"$(new_secret)\";"
done
write_once "$ROOT/kafka/controller.secret" "$(new_secret)"

# PostgreSQL: the superuser's and the operator's passwords; the services' logins are made by `migrate`.
write_once "$ROOT/postgres/superuser/password" "$(new_secret)"
write_once "$ROOT/postgres/operator/password" "$(new_secret)"
for login in $DB_LOGINS; do mkdir -p "$ROOT/db/$login"; done

# Who reads what. Each image runs as its own user (Tidegate 10001, kafka's appuser, postgres): a file that
# another image's user must read is world-readable inside a volume that only the containers above mount.
chmod 0755 "$ROOT/keys" "$ROOT/keys/operators" "$ROOT/keys/clients" "$ROOT/kafka" "$ROOT/postgres"
chmod 0644 "$ROOT"/keys/*.pub "$ROOT"/kafka/controller.secret "$ROOT"/postgres/*/password "$ROOT"/kafka/*/*.properties
chmod 0755 "$ROOT"/kafka/*/ "$ROOT"/postgres/*/
chmod 0700 "$ROOT"/db/*/
for s in $SERVICES; do chmod 0700 "$ROOT/keys/$s"; done
# The keys belong to the image's user, so that key commands run later as it (`docker compose run --user tidegate
# --entrypoint tidegate secrets-init keys rotate policy`) write keys the services can read; services mount them read-only.
if [[ $(id -u) == 0 ]] && id -u tidegate >/dev/null 2>&1; then
  chown -R tidegate:tidegate "$ROOT/keys"
  chown tidegate:tidegate "$ROOT"/db/*/
fi
echo "[secrets-init] keys, Kafka logins ($PRINCIPALS) and PostgreSQL passwords under $ROOT"
