#!/usr/bin/env bash
# Tidegate local infrastructure: Apache Kafka in KRaft mode (one node by default, or a cluster of
# three, every node a combined broker+controller) assembled from Maven Central jars and run with
# Java 17, and a project-owned PostgreSQL cluster from Debian's binaries. No Docker needed
# (docker-compose.yml is the Docker variant).
#
#   bash infra/infra.sh up       start both (idempotent; a second `up` only re-checks readiness and
#                                starts any Kafka node that is not running)
#   bash infra/infra.sh up --brokers 3
#                                a three-node Kafka cluster (replication factor 3, min.insync.replicas 2);
#                                the node count is fixed when the storage is formatted (`reset` to change it)
#   bash infra/infra.sh down     stop what `up` started (idempotent)
#   bash infra/infra.sh status   exit 0 if both run, 3 otherwise
#   bash infra/infra.sh reset    down, then delete Kafka and PostgreSQL data (jars are kept)
#
# All state lives under <repo>/.infra/ (git-ignored); the repo is found from this file's path.
#
# Environment (defaults):
#   TIDEGATE_INFRA_DIR=<repo>/.infra      where data, logs, pid files and credentials live (a second,
#                                         independent stack: another directory and other ports)
#   TIDEGATE_KAFKA_LIBS=<repo>/.infra/kafka/libs  the Kafka jars (shared by every stack of this checkout)
#   TIDEGATE_KAFKA_BROKERS=1              Kafka nodes when the storage is first formatted (as --brokers)
#   TIDEGATE_KAFKA_PORT=19092             client listener on 127.0.0.1: SASL_PLAINTEXT, SCRAM-SHA-512;
#                                         node i of a cluster listens on PORT + 2(i-1)
#   TIDEGATE_KAFKA_CONTROLLER_PORT=19093  KRaft CONTROLLER listener on 127.0.0.1: SASL_PLAINTEXT, PLAIN;
#                                         node i on CONTROLLER_PORT + 2(i-1)
#   TIDEGATE_KAFKA_HEAP_OPTS="-Xms256m -Xmx1g"
#   TIDEGATE_KAFKA_READY_TIMEOUT=90       seconds
#   TIDEGATE_KAFKA_SESSION_MAX_S=300      the longest a Kafka login lasts (connections.max.reauth.ms): the broker
#                                         closes a connection at its first request past that many seconds after
#                                         its login, so the client logs in again with the password it has now (a
#                                         password rotated after a leak ends the thief's open sessions within it);
#                                         0: sessions never end (a connection logged in once lasts until it closes)
#   TIDEGATE_PG_PORT=55432                PostgreSQL on 127.0.0.1
#   TIDEGATE_PG_READY_TIMEOUT=60          seconds
#   TIDEGATE_PORT_FREE_TIMEOUT=20         seconds `up` waits for a taken port to be let go (a process
#                                         killed a moment ago may still hold its listener) before refusing
#   JAVA_HOME                             java is $JAVA_HOME/bin/java if set, else java on PATH
#
# Connection details once up:
#   Kafka       127.0.0.1:19092 (a cluster: 127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096),
#               SASL_PLAINTEXT + SCRAM-SHA-512; one principal per service and kind of
#               client, with ACLs (docs/security/bus.md). Passwords are generated on first start into
#               .infra/kafka/credentials/<principal>.properties (0600, a Java client properties file).
#   PostgreSQL  postgresql://tidegate@127.0.0.1:55432/tidegate, the operator role `tidegate` (scram-sha-256,
#               127.0.0.1 only). Its password is generated on first start into
#               .infra/pg/credentials/tidegate.pgpass (0600, libpq's passfile format, which Tidegate, asyncpg
#               and psql read: TIDEGATE_DATABASE_PASSFILE, `passfile=`, PGPASSFILE) and set in the cluster on
#               every `up`: delete the file and run `up` again to rotate it. The superuser `postgres` has no
#               password and never logs in over TCP: only the cluster's owner (the `postgres` system user, or
#               the user running this script, and root) over the socket in .infra/pg/run (peer authentication):
#                 psql -h .infra/pg/run -p 55432 -U postgres
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
INFRA=${TIDEGATE_INFRA_DIR:-$REPO/.infra}

KAFKA_PORT=${TIDEGATE_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${TIDEGATE_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP_OPTS=${TIDEGATE_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}
KAFKA_READY_TIMEOUT=${TIDEGATE_KAFKA_READY_TIMEOUT:-90}
KAFKA_SESSION_MAX_S=${TIDEGATE_KAFKA_SESSION_MAX_S:-300}
[[ $KAFKA_SESSION_MAX_S =~ ^[0-9]{1,9}$ ]] || { echo "TIDEGATE_KAFKA_SESSION_MAX_S must be a whole number of seconds (0: sessions never end), not '$KAFKA_SESSION_MAX_S'" >&2; exit 2; }
KAFKA_SESSION_MAX_S=$((10#$KAFKA_SESSION_MAX_S))  # decimal: bash reads a leading zero as octal (0300 was 192 s, 08 an error)
PG_PORT=${TIDEGATE_PG_PORT:-55432}
PG_READY_TIMEOUT=${TIDEGATE_PG_READY_TIMEOUT:-60}
PORT_FREE_TIMEOUT=${TIDEGATE_PORT_FREE_TIMEOUT:-20}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

K="$INFRA/kafka"
K_POM="$SCRIPT_DIR/kafka/pom.xml"
K_LOG4J="$SCRIPT_DIR/kafka/log4j2.properties"
K_LIBS=${TIDEGATE_KAFKA_LIBS:-$REPO/.infra/kafka/libs}
K_LOGS="$K/logs"
K_CID="$K/cluster-id"
K_NODES_FILE="$K/nodes" # how many nodes the storage was formatted for (absent: one)
K_CREDS="$K/credentials"
AUTH_SCHEME="scram-sha-512 v1"
K_NODES=${TIDEGATE_KAFKA_BROKERS:-}

# The files and ports of Kafka node $1. Node 1 keeps the single node's historical paths; node i of a
# cluster lives in .infra/kafka/node-<i>/. Sets K_DATA K_PROPS K_PID K_NODE_LOGS K_NODE_PORT K_NODE_CPORT K_AUTH_MARK.
node_vars() {
  local i=$1
  if ((i == 1)); then
    K_DATA="$K/data" K_PROPS="$K/server.properties" K_PID="$K/kafka.pid" K_NODE_LOGS="$K_LOGS"
  else
    K_DATA="$K/node-$i/data" K_PROPS="$K/node-$i/server.properties" K_PID="$K/node-$i/kafka.pid" K_NODE_LOGS="$K/node-$i/logs"
  fi
  K_NODE_PORT=$((KAFKA_PORT + 2 * (i - 1)))
  K_NODE_CPORT=$((KAFKA_CONTROLLER_PORT + 2 * (i - 1)))
  K_AUTH_MARK="$K_DATA/.tidegate-auth"
  NODE_ID=$i
}
node_vars 1

# How many nodes: what the storage was formatted for, else --brokers / TIDEGATE_KAFKA_BROKERS, else 1.
# Asking for another count than the formatted one is an error (KRaft's voter set is fixed at format).
kafka_nodes() {
  local formatted=""
  [[ -s $K_NODES_FILE ]] && formatted=$(<"$K_NODES_FILE")
  [[ -z $formatted && -f $K/data/meta.properties ]] && formatted=1
  if [[ -n $formatted && -n $K_NODES && $K_NODES != "$formatted" ]]; then
    die "kafka storage in $(rel "$K") is formatted for $formatted node(s), not $K_NODES; \`tidegate infra reset --yes\` first"
  fi
  K_NODES=${K_NODES:-${formatted:-1}}
  [[ $K_NODES =~ ^[1-9]$ ]] || die "--brokers must be a number from 1 to 9, not '$K_NODES'"
}

# Every node's client address, comma-separated: what clients bootstrap from.
kafka_bootstrap() {
  local i out=""
  for ((i = 1; i <= K_NODES; i++)); do out+="${out:+,}127.0.0.1:$((KAFKA_PORT + 2 * (i - 1)))"; done
  printf '%s' "$out"
}

P="$INFRA/pg"
P_DATA="$P/data"
P_RUN="$P/run"
P_LOGS="$P/logs"
P_LOG="$P_LOGS/postgres.log"
P_CREDS="$P/credentials"
P_PASSFILE="$P_CREDS/tidegate.pgpass"
P_INIT_SQL="$SCRIPT_DIR/postgres-init.sql"

export LC_NUMERIC=C

log() { printf '[infra] %s\n' "$*"; }
warn() { printf '[infra] WARNING: %s\n' "$*" >&2; }
die() { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }
now() { printf '%s' "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }
rel() { printf '%s' "${1#"$REPO"/}"; }

# A pid is alive if it exists and is not a zombie.
alive() {
  local state
  [[ -r /proc/$1/stat ]] || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z ]]
}

# Does /proc/PID/cmdline contain every given string?
cmdline_has() {
  local pid=$1 cmd; shift
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  local s
  for s in "$@"; do [[ $cmd == *"$s"* ]] || return 1; done
}

# Is something listening on 127.0.0.1:PORT?
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Returns once nothing listens on 127.0.0.1:PORT, waiting up to PORT_FREE_TIMEOUT seconds; dies with
# HINT if the port is still taken then. The wait is for a process killed a moment ago: a SIGKILLed
# broker's JVM threads can hold its listener for seconds after the kill, and `kill -9` then `up` is
# what an operator (and the chaos and recovery tests) does.
await_port_free() {
  local port=$1 hint=$2 t deadline low high
  # A port in the kernel's ephemeral range can be taken by any outgoing connection: a service reconnecting to a
  # stopped broker on it may connect to itself (TCP simultaneous open) and hold it, so the broker cannot listen again.
  if read -r low high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && ((port >= low && port <= high)); then
    log "warning: 127.0.0.1:$port is in this machine's ephemeral port range ($low-$high): an outgoing connection can take it" \
      "while nothing listens (a service reconnecting to it connects to itself); choose a port below $low (${hint})"
    hint="${hint}; it is in the ephemeral range $low-$high: a client's own connection may hold it, see \`ss -tanp | grep :$port\`"
  fi
  port_busy "$port" || return 0
  [[ $PORT_FREE_TIMEOUT =~ ^[0-9]+$ ]] \
    || die "TIDEGATE_PORT_FREE_TIMEOUT must be a whole number of seconds (got '$PORT_FREE_TIMEOUT')"
  t=$(now)
  log "127.0.0.1:$port is taken; waiting up to ${PORT_FREE_TIMEOUT}s for it to be let go"
  deadline=$((SECONDS + PORT_FREE_TIMEOUT))
  while port_busy "$port"; do
    ((SECONDS < deadline)) || die "127.0.0.1:$port is taken by another process (${hint})"
    sleep 0.2
  done
  log "127.0.0.1:$port let go after $(since "$t")"
}

# Serialise concurrent invocations (several engineers share this tree). fd 9 holds the lock and
# must not leak into the daemons started below (every launch closes it with 9>&-).
take_lock() {
  mkdir -p "$INFRA"
  exec 9>"$INFRA/.lock"
  if ! flock -w 300 9; then die "another infra.sh has held $INFRA/.lock for 300 s"; fi
}

# ------------------------------------------------------------------------------------------------
# Kafka
# ------------------------------------------------------------------------------------------------

kafka_is_ours() { alive "$1" && cmdline_has "$1" kafka.Kafka "$K_PROPS"; }

# Prints the pid of our running broker (the node node_vars chose), or returns 1. Adopts a broker whose pid file was lost.
kafka_pid() {
  local pid
  if [[ -s $K_PID ]]; then
    pid=$(<"$K_PID")
    if [[ $pid =~ ^[0-9]+$ ]] && kafka_is_ours "$pid"; then printf '%s' "$pid"; return 0; fi
  fi
  for f in $(grep -lsaF -- "$K_PROPS" /proc/[0-9]*/cmdline 2>/dev/null || true); do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    if kafka_is_ours "$pid"; then printf '%s' "$pid" >"$K_PID"; printf '%s' "$pid"; return 0; fi
  done
  return 1
}

# host:port the node's running broker was configured with (falls back to the environment).
kafka_address() {
  local l
  l=$(sed -n 's/^advertised\.listeners=BROKER:\/\///p' "$K_PROPS" 2>/dev/null || true)
  printf '%s' "${l:-127.0.0.1:$K_NODE_PORT}"
}

kafka_jars() {
  local want have="" t
  want=$(sha256sum "$K_POM" | cut -d' ' -f1)
  [[ -f $K_LIBS/.complete ]] && have=$(<"$K_LIBS/.complete")
  if [[ $have == "$want" ]]; then log "kafka jars: present ($(rel "$K_LIBS"))"; return 0; fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install -y maven)"
  t=$(now)
  log "kafka jars: resolving $(rel "$K_POM") from Maven Central into $(rel "$K_LIBS") ..."
  rm -rf "$K_LIBS.tmp"
  mvn -B -q -Dstyle.color=never -f "$K_POM" dependency:copy-dependencies -DoutputDirectory="$K_LIBS.tmp" \
    >"$K_LOGS/maven.log" 2>&1 9>&- \
    || { tail -n 30 "$K_LOGS/maven.log" >&2; die "maven could not assemble the Kafka jars (see $(rel "$K_LOGS/maven.log"))"; }
  printf '%s\n' "$want" >"$K_LIBS.tmp/.complete"
  rm -rf "$K_LIBS"
  mv "$K_LIBS.tmp" "$K_LIBS"
  log "kafka jars: $(find "$K_LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$K_LIBS" | cut -f1) in $(since "$t")"
}

# A random password (url-safe, 32 characters) for a principal created on first start.
new_secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

# Reads the password out of a client properties file.
secret_of() { sed -n 's/.*password="\([^"]*\)".*/\1/p' "$1"; }

# The Java client properties file of one principal: what any Kafka client needs to log in as it.
write_client_properties() {
  local principal=$1 password=$2 file="$K_CREDS/$1.properties"
  (
    umask 077
    cat >"$file.tmp" <<EOF
# Kafka client settings of principal '$principal' (generated by infra/infra.sh; keep secret, never commit).
bootstrap.servers=$(kafka_bootstrap)
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$principal" password="$password";
EOF
  )
  mv "$file.tmp" "$file"
}

# The admin principal (super user) and the controller's own PLAIN login are made here; every other
# principal is made by infra/kafka_principals.py once the broker answers (Admin API, no JVM per user).
kafka_credentials() {
  mkdir -p "$K_CREDS"
  chmod 0700 "$K_CREDS"
  [[ -s $K_CREDS/admin.properties ]] || write_client_properties admin "$(new_secret)"
  if [[ ! -s $K/controller.secret ]]; then (umask 077; new_secret >"$K/controller.secret"); fi
}

# The SCRAM mechanism admin logs in with (admin.properties' sasl.mechanism; SCRAM-SHA-512 unless a rotation moved it).
admin_mechanism() {
  local mech
  mech=$(sed -n 's/^sasl\.mechanism=//p' "$K_CREDS/admin.properties")
  printf '%s' "${mech:-SCRAM-SHA-512}"
}

# server.properties of the node node_vars chose. Every node of a cluster is a combined broker+controller
# and a voter of the KRaft quorum; a cluster keeps 3 replicas (or as many as it has nodes) of every
# partition and refuses an acks=all write that fewer than 2 of them have.
kafka_write_config() {
  local admin controller voters="" i rf isr admin_mech jaas512 jaas256 scram="org.apache.kafka.common.security.scram.ScramLoginModule required"
  admin=$(secret_of "$K_CREDS/admin.properties")
  controller=$(<"$K/controller.secret")
  # The broker logs in to the other brokers as admin, with the mechanism and password of admin.properties: after
  # `tidegate infra rotate-login admin` that is the new one (SCRAM-SHA-256 or -512), which a restart takes.
  admin_mech=$(admin_mechanism)
  jaas512="$scram;" jaas256="$scram;"
  if [[ $admin_mech == SCRAM-SHA-256 ]]; then
    jaas256="$scram username=\"admin\" password=\"${admin}\";"
  else
    jaas512="$scram username=\"admin\" password=\"${admin}\";"
  fi
  for ((i = 1; i <= K_NODES; i++)); do voters+="${voters:+,}$i@127.0.0.1:$((KAFKA_CONTROLLER_PORT + 2 * (i - 1)))"; done
  rf=$((K_NODES < 3 ? K_NODES : 3))
  isr=$((rf > 1 ? 2 : 1))
  mkdir -p "$(dirname "$K_PROPS")" "$K_NODE_LOGS"
  (
    umask 077 # the file holds the controller's and the admin's passwords
    cat >"$K_PROPS.tmp" <<EOF
# Generated by infra/infra.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=${NODE_ID}
controller.quorum.voters=${voters}
listeners=BROKER://127.0.0.1:${K_NODE_PORT},CONTROLLER://127.0.0.1:${K_NODE_CPORT}
advertised.listeners=BROKER://127.0.0.1:${K_NODE_PORT}
listener.security.protocol.map=BROKER:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=BROKER
controller.listener.names=CONTROLLER
# Clients log in with SCRAM-SHA-512 (credentials live in the cluster metadata), or SCRAM-SHA-256 once a rotation moved
# their login there (tidegate infra rotate-login: the new password on the other mechanism, so both work meanwhile). KRaft cannot check
# SCRAM on the controller listener (the credentials are in the log it serves), so the broker logs in
# to its controller with PLAIN as 'controller', a user known only to this file.
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=${admin_mech}
listener.name.broker.scram-sha-512.sasl.jaas.config=${jaas512}
listener.name.broker.scram-sha-256.sasl.jaas.config=${jaas256}
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="${controller}" user_controller="${controller}";
# A login lasts TIDEGATE_KAFKA_SESSION_MAX_S: past it the broker closes the connection at its next request (a Java client
# logs in again on the same connection before; aiokafka reconnects and logs in with the password it has now), so a
# session opened with a password rotated since ends within it (docs/security/bus.md, "Rotating a login").
connections.max.reauth.ms=$((KAFKA_SESSION_MAX_S * 1000))
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller
log.dirs=${K_DATA}
num.partitions=6
default.replication.factor=${rf}
min.insync.replicas=${isr}
offsets.topic.replication.factor=${rf}
transaction.state.log.replication.factor=${rf}
transaction.state.log.min.isr=${isr}
share.coordinator.state.topic.replication.factor=${rf}
share.coordinator.state.topic.min.isr=${isr}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
  )
  mv "$K_PROPS.tmp" "$K_PROPS"
}

# A running node keeps the connections.max.reauth.ms it started with (the broker reads it at start only): say so when that
# is not TIDEGATE_KAFKA_SESSION_MAX_S (a node started before the setting existed: sessions never end).
kafka_session_max_check() {
  local running
  running=$(sed -n 's/^connections\.max\.reauth\.ms=//p' "$K_PROPS" 2>/dev/null || true)
  [[ ${running:-0} == $((KAFKA_SESSION_MAX_S * 1000)) ]] && return 0
  warn "kafka node $1: running with sessions that end after ${running:-0} ms (0: never), not TIDEGATE_KAFKA_SESSION_MAX_S=${KAFKA_SESSION_MAX_S} s; restart it to apply (\`tidegate infra down && tidegate infra up\`; a cluster: one node at a time)"
}

# The java command line shared by the storage tool and the broker.
kafka_jvm() {
  # shellcheck disable=SC2206  # KAFKA_HEAP_OPTS is a list of options
  KAFKA_JVM=("$JAVA" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent
    -Djava.awt.headless=true -Dkafka.logs.dir="$K_NODE_LOGS" -Dlog4j2.configurationFile="$K_LOG4J"
    -cp "$K_LIBS/*")
}

kafka_format() {
  local cid t
  if [[ -f $K_DATA/meta.properties && $(cat "$K_AUTH_MARK" 2>/dev/null) != "$AUTH_SCHEME" ]]; then
    # Formatted before the bus had logins: local dev data is disposable, so start over rather than
    # run a broker whose admin user does not exist.
    warn "kafka storage: $(rel "$K_DATA") predates SASL/SCRAM and ACLs; deleting it (local dev events are lost) and formatting again"
    rm -rf "$K_DATA"
  fi
  if [[ -f $K_DATA/meta.properties ]]; then
    cid=$(sed -n 's/^cluster\.id=//p' "$K_DATA/meta.properties")
    [[ -n $cid ]] && [[ ! -s $K_CID || $(<"$K_CID") != "$cid" ]] && printf '%s\n' "$cid" >"$K_CID"
    log "kafka storage: formatted (cluster id $cid)"
    return 0
  fi
  if [[ ! -s $K_CID ]]; then
    # Same form as kafka-storage random-uuid: 16 random bytes, url-safe base64, no padding, and (as Kafka's
    # Uuid.randomUuid does) never starting with "-", which a command line would read as an option.
    python3 -c 'import base64,uuid
while True:
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not cid.startswith("-"):
        break
print(cid)' >"$K_CID"
  fi
  cid=$(<"$K_CID")
  t=$(now)
  mkdir -p "$K_DATA"
  kafka_jvm
  "${KAFKA_JVM[@]}" kafka.tools.StorageTool format --cluster-id="$cid" --config="$K_PROPS" \
    --add-scram "$(admin_mechanism)=[name=admin,password=$(secret_of "$K_CREDS/admin.properties")]" >>"$K_NODE_LOGS/format.out" 2>&1 9>&- \
    || { tail -n 20 "$K_NODE_LOGS/format.out" >&2; die "kafka storage format failed (see $(rel "$K_NODE_LOGS/format.out"))"; }
  printf '%s\n' "$AUTH_SCHEME" >"$K_AUTH_MARK"
  printf '%s\n' "$K_NODES" >"$K_NODES_FILE"
  log "kafka storage: formatted $(rel "$K_DATA") with cluster id $cid in $(since "$t")"
}

# Starts the broker in the background (own session, detached from this terminal); prints its pid.
kafka_launch() {
  local pid deadline
  printf '==== %s infra.sh up: starting kafka.Kafka\n' "$(date -Is)" >>"$K_NODE_LOGS/kafka.out"
  (
    cd "$K"
    exec 9>&-
    # Every partition holds open segment and index files: lift the descriptor limit as far as allowed.
    ulimit -Hn 1048576 2>/dev/null || true
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    kafka_jvm
    exec setsid nohup "${KAFKA_JVM[@]}" kafka.Kafka "$K_PROPS" >>"$K_NODE_LOGS/kafka.out" 2>&1 </dev/null
  ) &
  pid=$!
  # The subshell execs setsid, which execs nohup, which execs java: same pid. Confirm it.
  deadline=$((SECONDS + 5))
  until kafka_is_ours "$pid"; do
    alive "$pid" || break
    ((SECONDS < deadline)) || break
    sleep 0.05
  done
  kafka_is_ours "$pid" || pid=$(kafka_pid) || {
    tail -n 30 "$K_NODE_LOGS/kafka.out" >&2
    die "kafka did not start (see $(rel "$K_NODE_LOGS/kafka.out"))"
  }
  printf '%s\n' "$pid" >"$K_PID"
  printf '%s' "$pid"
}

kafka_wait_ready() {
  local pid=$1 addr rc=0
  addr=$(kafka_address)
  python3 "$SCRIPT_DIR/kafka_ready.py" --bootstrap "$addr" --cluster-id="$(<"$K_CID")" \
    --properties "$K_CREDS/admin.properties" --wait "$KAFKA_READY_TIMEOUT" --pid "$pid" -q || rc=$?
  if ((rc != 0)); then
    warn "kafka not ready at $addr within ${KAFKA_READY_TIMEOUT}s (exit $rc); last lines of the logs:"
    tail -n 15 "$K_NODE_LOGS/kafka.out" >&2 || true
    tail -n 25 "$K_NODE_LOGS/server.log" >&2 || true
    # The cause, in one line, where a stack trace would hide it: the port taken (a client that kept reconnecting while
    # the broker was down may hold it, connected to itself when the port is in the ephemeral range).
    if grep -q "failed to bind to .*Address already in use" "$K_NODE_LOGS/server.log" 2>/dev/null; then
      warn "kafka could not listen on $addr: the address is in use. A client reconnecting while the broker was down may hold it" \
        "(\`ss -tanp | grep ':${addr##*:}'\` shows who): stop the services (\`tidegate down\`) and every outside client of the" \
        "broker, then run \`tidegate infra up\` again; a port below the ephemeral range (\`TIDEGATE_KAFKA_PORT\`) avoids it"
    fi
    return 1
  fi
}

# Every principal of servicekit.bus_rights gets a password file and a SCRAM user (idempotent: existing
# files are kept, users are upserted with the password of their file). Needs the project's Python.
kafka_principals() {
  local py="$REPO/.venv/bin/python" t
  [[ -x $py ]] || py=python3
  if ! (cd "$REPO" && PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$py" -c 'import servicekit.bus_admin' 9>&-) >/dev/null 2>&1; then
    warn "kafka: no Python with the project's packages ($py); only 'admin' can log in until: make install && bash infra/infra.sh up"
    return 0
  fi
  t=$(now)
  (cd "$REPO" && PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$py" "$SCRIPT_DIR/kafka_principals.py" \
    --bootstrap "$(kafka_bootstrap)" --credentials-dir "$K_CREDS" 9>&-) \
    || die "could not create the Kafka principals (infra/kafka_principals.py)"
  log "kafka: principals ready in $(since "$t"); client settings in $(rel "$K_CREDS")/<principal>.properties"
}

# Stops every node: SIGTERM to all at once (stopped one by one, the last ones would wait for a
# controller quorum that is gone), SIGKILL to what still runs after 30 s.
kafka_stop() {
  local i pid pids=() deadline t
  t=$(now)
  for ((i = 1; i <= K_NODES; i++)); do
    node_vars "$i"
    if pid=$(kafka_pid); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    elif [[ -e $K_PID ]]; then
      log "kafka node $i: stale pid file removed"
      rm -f "$K_PID"
    fi
  done
  node_vars 1
  if ((${#pids[@]} == 0)); then log "kafka: not running"; return 0; fi
  deadline=$((SECONDS + 30))
  for pid in "${pids[@]}"; do
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  done
  for pid in "${pids[@]}"; do
    if alive "$pid"; then
      warn "kafka pid $pid still alive after 30 s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    fi
  done
  for ((i = 1; i <= K_NODES; i++)); do node_vars "$i"; rm -f "$K_PID"; done
  node_vars 1
  log "kafka: stopped pid(s) ${pids[*]} in $(since "$t")"
}

# ------------------------------------------------------------------------------------------------
# PostgreSQL
# ------------------------------------------------------------------------------------------------

PG_BIN=""

pg_find_bin() {
  local v="" d
  [[ -f $P_DATA/PG_VERSION ]] && v=$(<"$P_DATA/PG_VERSION")
  if [[ -n $v && -x /usr/lib/postgresql/$v/bin/postgres ]]; then
    PG_BIN=/usr/lib/postgresql/$v/bin; return 0
  fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n $d && -x $d/postgres ]]; then
    [[ -n $v ]] && die "$(rel "$P_DATA") is PostgreSQL $v but only $d is installed (reset, or install postgresql-$v)"
    PG_BIN=$d; return 0
  fi
  return 1
}

pg_install() {
  pg_find_bin && return 0
  [[ $EUID -eq 0 ]] || die "PostgreSQL binaries not found under /usr/lib/postgresql; run: sudo apt-get install -y postgresql"
  local t; t=$(now)
  log "postgres: installing Debian's postgresql package ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends postgresql >/dev/null
  pg_find_bin || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres"
  log "postgres: installed $PG_BIN in $(since "$t")"
}

# Run a command as the cluster owner: the `postgres` system user when we are root, else ourselves.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd "$P" && runuser -u postgres -- "$@" 9>&-)
  else
    (cd "$P" && "$@" 9>&-)
  fi
}

# When root, make sure the `postgres` user can reach .infra/pg (o+x on each ancestor lacking it).
pg_fix_traverse() {
  [[ $EUID -eq 0 ]] || return 0
  runuser -u postgres -- test -x "$P" 2>/dev/null && return 0
  local d="" part
  IFS=/ read -ra parts <<<"${P#/}"
  for part in "${parts[@]}"; do
    d="$d/$part"
    if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
      chmod o+x "$d"
      log "postgres: chmod o+x $d (so the postgres user can reach its data directory)"
    fi
  done
}

pg_prepare() {
  mkdir -p "$P" "$P_RUN" "$P_LOGS"
  if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' system user (is Debian's postgresql installed?)"
    chown postgres:postgres "$P" "$P_RUN" "$P_LOGS"
    [[ -e $P_LOG ]] && chown postgres:postgres "$P_LOG"
    pg_fix_traverse
  fi
  chmod 0755 "$P_RUN"
  if [[ ! -f $P_DATA/PG_VERSION ]]; then
    local t; t=$(now)
    [[ -e $P_DATA ]] && rm -rf "$P_DATA" # a half-made directory from an interrupted initdb
    # No superuser password: `postgres` logs in over the socket only, as the cluster's owner (pg_hba below).
    as_pg "$PG_BIN/initdb" -D "$P_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=reject >"$P_LOGS/initdb.log" 2>&1 \
      || { tail -n 20 "$P_LOGS/initdb.log" >&2; die "initdb failed (see $(rel "$P_LOGS/initdb.log"))"; }
    printf "\n# Tidegate settings, rewritten by infra/infra.sh on every start.\ninclude 'tidegate.conf'\n" \
      >>"$P_DATA/postgresql.conf"
    log "postgres: initdb $(rel "$P_DATA") in $(since "$t")"
  fi
  # Rewritten on each start so that a changed TIDEGATE_PG_PORT takes effect.
  cat >"$P_DATA/tidegate.conf" <<EOF
listen_addresses = '127.0.0.1'
port = ${PG_PORT}
unix_socket_directories = '${P_RUN}'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = on
password_encryption = scram-sha-256
# What each statement costs (calls, planning and execution time, WAL): read by bench.e2e_bench, docs/operations.md.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track_planning = on
EOF
  pg_write_auth
}

# pg_hba.conf and pg_ident.conf, rewritten on every `up` (a running cluster reloads them): the superuser
# `postgres` only over the socket and only for the cluster's owner (peer), every other role with its
# password (scram-sha-256) from 127.0.0.1 or the socket.
pg_write_auth() {
  local owner
  owner=$(id -un)
  cat >"$P_DATA/pg_hba.conf" <<'EOF'
# Written by infra/infra.sh. The superuser only over the socket, as the cluster's owner (pg_ident.conf);
# everyone else with a password (scram-sha-256) from 127.0.0.1 or the socket.
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             postgres                                peer map=tidegate_owner
host    all             postgres        all                     reject
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
EOF
  {
    printf '# Written by infra/infra.sh: the system users that may log in as the superuser `postgres` (over the socket).\n'
    printf '# MAPNAME       SYSTEM-USERNAME PG-USERNAME\n'
    printf 'tidegate_owner  %s  postgres\n' "$owner"
    if [[ $EUID -eq 0 ]]; then printf 'tidegate_owner  postgres  postgres\n'; fi
  } >"$P_DATA/pg_ident.conf"
  [[ $EUID -eq 0 ]] && chown postgres:postgres "$P_DATA/pg_hba.conf" "$P_DATA/pg_ident.conf"
  chmod 0600 "$P_DATA/pg_hba.conf" "$P_DATA/pg_ident.conf"
}

# Prints the postmaster pid if our cluster runs, else returns 1.
pg_pid() {
  local pid
  [[ -f $P_DATA/postmaster.pid ]] || return 1
  pid=$(head -n 1 "$P_DATA/postmaster.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && cmdline_has "$pid" "$P_DATA" || return 1
  printf '%s' "$pid"
}

# The port the running postmaster uses (line 4 of postmaster.pid), else the configured one.
pg_port() {
  local p=""
  [[ -f $P_DATA/postmaster.pid ]] && p=$(sed -n 4p "$P_DATA/postmaster.pid" 2>/dev/null || true)
  printf '%s' "${p:-$PG_PORT}"
}

pg_wait_ready() {
  local port=$1 deadline=$((SECONDS + PG_READY_TIMEOUT))
  until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2; do
    if ((SECONDS >= deadline)); then
      tail -n 20 "$P_LOG" >&2 || true
      die "postgres not ready on 127.0.0.1:$port within ${PG_READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
}

# The operator's password: the one in its passfile, else a new one. The passfile is (re)written for the
# cluster's current port, in libpq's format (host:port:database:user:password), for 127.0.0.1 and localhost.
pg_operator_passfile() {
  local port=$1 password=""
  mkdir -p "$P_CREDS"
  chmod 0700 "$P_CREDS"
  [[ -s $P_PASSFILE ]] && password=$(sed -n '/^[^#]/{s/^\([^:]*:\)\{4\}//p;q}' "$P_PASSFILE")
  [[ -n $password ]] || password=$(new_secret)
  (
    umask 077
    cat >"$P_PASSFILE.tmp" <<EOF
# The operator role of the PostgreSQL at 127.0.0.1:${port} (generated by infra/infra.sh; keep secret, never commit).
# Rotate it with \`tidegate db rotate --operator\` (\`--leaked\` also ends the sessions opened with the former one).
127.0.0.1:${port}:*:tidegate:${password}
localhost:${port}:*:tidegate:${password}
EOF
  )
  mv "$P_PASSFILE.tmp" "$P_PASSFILE"
  PG_OPERATOR_PASSWORD=$password
}

# psql as the superuser, over the cluster's socket (peer authentication, see pg_write_auth). In a session of
# its own (setsid), with no terminal: psql's \password then reads the new password from stdin.
pg_superuser_psql() {
  PGCONNECT_TIMEOUT=5 setsid -w "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$P_RUN" -p "$1" -U postgres -d postgres "${@:2}"
}

# The operator role and database (postgres-init.sql), the operator's password from its passfile (so an
# older cluster is rotated on its next `up`), and no password at all for the superuser. The password
# goes through stdin, not the command line (which every local user can read in /proc), to psql's
# \password, which sends the server only its SCRAM verifier. Its prompts are shown only when it fails.
pg_bootstrap_db() {
  local port=$1 deadline=$((SECONDS + 15)) out
  pg_operator_passfile "$port"
  # A running cluster may still be reloading the pg_hba.conf written just before.
  until pg_superuser_psql "$port" -c 'SELECT 1' >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "cannot log in as the superuser postgres over $(rel "$P_RUN") (peer, as $(id -un)); see $(rel "$P_LOG")"
    sleep 0.2
  done
  out=$(printf '%s\n%s\n' "$PG_OPERATOR_PASSWORD" "$PG_OPERATOR_PASSWORD" \
    | pg_superuser_psql "$port" -f "$P_INIT_SQL" -c 'ALTER ROLE postgres PASSWORD NULL' 2>&1 >/dev/null) \
    || die "could not create role/database tidegate (infra/postgres-init.sql, as the superuser over $(rel "$P_RUN")): $out"
  log "postgres: operator role tidegate, password in $(rel "$P_PASSFILE") (0600)"
}

pg_up() {
  local t pid port; t=$(now)
  pg_install
  if pid=$(pg_pid); then
    port=$(pg_port)
    pg_wait_ready "$port"
    pg_write_auth
    as_pg "$PG_BIN/pg_ctl" -D "$P_DATA" reload >/dev/null || die "pg_ctl reload failed (see $(rel "$P_LOG"))"
    pg_bootstrap_db "$port"
    log "postgres: already running (pid $pid, 127.0.0.1:$port); checked in $(since "$t")"
    return 0
  fi
  pg_prepare
  await_port_free "$PG_PORT" "set TIDEGATE_PG_PORT"
  [[ $EUID -eq 0 && -e $P_LOG ]] && chown postgres:postgres "$P_LOG"
  as_pg "$PG_BIN/pg_ctl" -D "$P_DATA" -l "$P_LOG" -w -t "$PG_READY_TIMEOUT" start >/dev/null \
    || { tail -n 20 "$P_LOG" >&2; die "pg_ctl start failed (see $(rel "$P_LOG"))"; }
  pg_wait_ready "$PG_PORT"
  pg_bootstrap_db "$PG_PORT"
  log "postgres: running (pid $(pg_pid || echo '?'), 127.0.0.1:$PG_PORT, db tidegate) in $(since "$t")"
}

pg_stop() {
  local pid t
  if ! pid=$(pg_pid); then log "postgres: not running"; return 0; fi
  pg_find_bin || die "PostgreSQL binaries not found"
  t=$(now)
  as_pg "$PG_BIN/pg_ctl" -D "$P_DATA" -m fast -w -t 60 stop >/dev/null \
    || die "pg_ctl stop failed (see $(rel "$P_LOG"))"
  log "postgres: stopped pid $pid in $(since "$t")"
}

# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------

cmd_up() {
  local t0 t i pid launched=() pids=()
  t0=$(now)
  take_lock
  mkdir -p "$K" "$K_LOGS"
  kafka_nodes

  # Kafka first, because its JVMs take the longest: launch every node that is not running, set up
  # PostgreSQL meanwhile, then wait for the brokers.
  for ((i = 1; i <= K_NODES; i++)); do
    node_vars "$i"
    if pid=$(kafka_pid); then
      log "kafka node $i: already running (pid $pid)"
      kafka_session_max_check "$i"
    else
      rm -f "$K_PID"
      command -v "$JAVA" >/dev/null || die "java not found (apt-get install -y openjdk-17-jre-headless)"
      kafka_jars
      kafka_credentials
      kafka_write_config
      await_port_free "$K_NODE_PORT" "set TIDEGATE_KAFKA_PORT"
      await_port_free "$K_NODE_CPORT" "set TIDEGATE_KAFKA_CONTROLLER_PORT"
      kafka_format
      pid=$(kafka_launch)
      launched+=("$i")
      log "kafka node $i: launched pid $pid"
    fi
    pids+=("$pid")
  done
  t=$(now)

  pg_up

  for ((i = 1; i <= K_NODES; i++)); do
    node_vars "$i"
    kafka_wait_ready "${pids[i - 1]}" || die "kafka node $i failed to become ready"
  done
  node_vars 1
  if ((${#launched[@]})); then
    log "kafka: ready at $(kafka_bootstrap) (node(s) ${launched[*]} launched) $(since "$t") after launch"
  else
    log "kafka: ready at $(kafka_bootstrap); checked in $(since "$t")"
  fi
  kafka_principals
  log "up: done in $(since "$t0")  (kafka $(kafka_bootstrap), postgres 127.0.0.1:$(pg_port))"
}

cmd_down() {
  local t0; t0=$(now)
  take_lock
  kafka_nodes
  kafka_stop
  pg_stop
  log "down: done in $(since "$t0")"
}

cmd_status() {
  local rc=0 i pid addr state
  kafka_nodes
  for ((i = 1; i <= K_NODES; i++)); do
    node_vars "$i"
    if pid=$(kafka_pid); then
      addr=$(kafka_address)
      if python3 "$SCRIPT_DIR/kafka_ready.py" --bootstrap "$addr" --cluster-id="$(cat "$K_CID" 2>/dev/null)" \
        --properties "$K_CREDS/admin.properties" -q --timeout 2 2>/dev/null; then
        state="answering"
      else
        state="NOT answering yet"
      fi
      log "kafka:    running  pid $pid  $addr  ($state)  log $(rel "$K_NODE_LOGS/server.log")"
    else
      log "kafka:    stopped  $(kafka_address)  log $(rel "$K_NODE_LOGS/server.log")"
      rc=3
    fi
  done
  node_vars 1
  if pid=$(pg_pid); then
    addr="127.0.0.1:$(pg_port)"
    state="accepting connections"
    if pg_find_bin && ! "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$(pg_port)" -t 2; then
      state="NOT accepting connections"
    fi
    log "postgres: running  pid $pid  $addr  ($state)  log $(rel "$P_LOG")"
  else
    log "postgres: stopped  log $(rel "$P_LOG")"
    rc=3
  fi
  return $rc
}

cmd_reset() {
  cmd_down
  local i
  for ((i = 2; i <= K_NODES; i++)); do rm -rf "$K/node-$i"; done
  node_vars 1
  rm -rf "$K_DATA" "$K_CID" "$K_PROPS" "$K_NODES_FILE" "$K_CREDS" "$K/controller.secret" "$P_DATA" "$P_CREDS"
  log "reset: deleted Kafka and PostgreSQL data (jars kept in $(rel "$K_LIBS"))"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

COMMAND=${1:-}
shift || true
while (($#)); do
  case $1 in
    --brokers) K_NODES=${2:-}; shift 2 || die "--brokers needs a number" ;;
    --brokers=*) K_NODES=${1#--brokers=}; shift ;;
    *) usage >&2; exit 2 ;;
  esac
done

case "$COMMAND" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
