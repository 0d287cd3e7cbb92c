#!/usr/bin/env bash
# Entrypoint of docker-compose.yml's `kafka` service (apache/kafka image): the same listeners, logins
# and authorizer as infra/infra.sh, for the compose network.
#
# The passwords are made before, by the one-shot `secrets-init` (infra/compose-init.sh): one folder per
# principal under $CREDS, each its own volume, mounted here read-only (the broker needs every login to
# format its storage) and into the one container that logs in as that principal. On first start this
# formats the storage with every principal's SCRAM-SHA-512 login (--add-scram), then runs the broker.
# ACLs are made by the one-shot `topics` container (`tidegate topics ensure`, servicekit.bus_rights), as
# on a local machine.
set -euo pipefail

CREDS=${TIDEGATE_KAFKA_CREDENTIALS_DIR:-/var/lib/tidegate/kafka}
KAFKA=${KAFKA_DIST:-/opt/kafka}                       # the image's; tests run this script with stand-ins
DATA=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
CONF=${KAFKA_CONF_FILE:-/var/lib/kafka/server.properties}
CLUSTER_ID=${CLUSTER_ID:?set CLUSTER_ID}

secret_of() { sed -n 's/.*password="\([^"]*\)".*/\1/p' "$1"; }

for f in "$CREDS/admin/admin.properties" "$CREDS/controller.secret"; do
  [[ -s $f ]] || { echo "no $f: the one-shot secrets-init (infra/compose-init.sh) makes it" >&2; exit 1; }
done

# The longest a login lasts, whole seconds read as decimal (a leading zero is not octal: 0300 is 300 s, not 192 s).
SESSION_MAX_S=${TIDEGATE_KAFKA_SESSION_MAX_S:-300}
[[ $SESSION_MAX_S =~ ^[0-9]{1,9}$ ]] || { echo "TIDEGATE_KAFKA_SESSION_MAX_S must be a whole number of seconds (0: sessions never end), not '$SESSION_MAX_S'" >&2; exit 2; }
SESSION_MAX_S=$((10#$SESSION_MAX_S))

admin=$(secret_of "$CREDS/admin/admin.properties")
# admin's mechanism and password as admin.properties has them (`tidegate infra rotate-login admin` may move it to -256)
admin_mech=$(sed -n 's/^sasl\.mechanism=//p' "$CREDS/admin/admin.properties")
admin_mech=${admin_mech:-SCRAM-SHA-512}
scram="org.apache.kafka.common.security.scram.ScramLoginModule required"
jaas512="$scram;" jaas256="$scram;"
if [[ $admin_mech == SCRAM-SHA-256 ]]; then
  jaas256="$scram username=\"admin\" password=\"${admin}\";"
else
  jaas512="$scram username=\"admin\" password=\"${admin}\";"
fi
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
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=${admin_mech}
listener.name.broker.scram-sha-512.sasl.jaas.config=${jaas512}
listener.name.broker.scram-sha-256.sasl.jaas.config=${jaas256}
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="${controller}" user_controller="${controller}";
# A login lasts TIDEGATE_KAFKA_SESSION_MAX_S (300): the broker closes a connection at its first request past it, and the
# client logs in again with the password it has now (docs/security/bus.md, "Rotating a login").
connections.max.reauth.ms=$((SESSION_MAX_S * 1000))
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
  for f in "$CREDS"/*/*.properties; do
    p=$(basename "$f" .properties)
    scram+=(--add-scram "SCRAM-SHA-512=[name=$p,password=$(secret_of "$f")]")
  done
  "$KAFKA/bin/kafka-storage.sh" format --cluster-id "$CLUSTER_ID" --config "$CONF" "${scram[@]}"
fi
exec "$KAFKA/bin/kafka-server-start.sh" "$CONF"
