#!/usr/bin/env bash
# Entrypoint of docker-compose.yml's `kafka` service (apache/kafka image): the same listeners, logins
# and authorizer as infra/infra.sh, for the compose network.
#
# On first start it generates a password per principal into $CREDS (a volume shared with the
# Tidegate containers), one Java client properties file each, formats the storage with every
# principal's SCRAM-SHA-512 login (--add-scram), then runs the broker. ACLs are made by the one-shot
# `topics` container (`tidegate topics ensure`, servicekit.bus_rights), as on a local machine.
set -euo pipefail

CREDS=${TIDEGATE_KAFKA_CREDENTIALS_DIR:-/var/lib/tidegate/kafka-credentials}
DATA=/var/lib/kafka/data
CONF=/var/lib/kafka/server.properties
CLUSTER_ID=${CLUSTER_ID:?set CLUSTER_ID}
# Must equal servicekit.bus_rights.principal_names(<the catalog's Kafka-served tools>); a unit test checks it.
PRINCIPALS="admin ops planner policy approval executor audit agent tool-update_inventory"

new_secret() { tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32; }
secret_of() { sed -n 's/.*password="\([^"]*\)".*/\1/p' "$1"; }

umask 077
mkdir -p "$CREDS"
for p in $PRINCIPALS; do
  f="$CREDS/$p.properties"
  [[ -s $f ]] && continue
  cat >"$f" <<EOF
# Kafka client settings of principal '$p' inside the compose network (keep secret, never commit).
bootstrap.servers=kafka:9092
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$p" password="$(new_secret)";
EOF
done
[[ -s $CREDS/controller.secret ]] || new_secret >"$CREDS/controller.secret"
# The Tidegate containers (another uid) read their file from this volume, which only this compose
# project mounts. A production deployment gives each service only its own secret instead
# (TIDEGATE_KAFKA_PASSWORD from a secret store); see docs/security/bus.md.
chmod 0755 "$CREDS" && chmod 0644 "$CREDS"/*.properties

admin=$(secret_of "$CREDS/admin.properties")
controller=$(<"$CREDS/controller.secret")
cat >"$CONF" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@kafka:9093
listeners=BROKER://:9092,HOST://:19092,CONTROLLER://:9093
advertised.listeners=BROKER://kafka:9092,HOST://127.0.0.1:19092
listener.security.protocol.map=BROKER:SASL_PLAINTEXT,HOST:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=BROKER
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.broker.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${admin}";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="${controller}" user_controller="${controller}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller
log.dirs=${DATA}
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF

if [[ ! -f $DATA/meta.properties ]]; then
  scram=()
  for p in $PRINCIPALS; do scram+=(--add-scram "SCRAM-SHA-512=[name=$p,password=$(secret_of "$CREDS/$p.properties")]"); done
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$CLUSTER_ID" --config "$CONF" "${scram[@]}"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$CONF"
