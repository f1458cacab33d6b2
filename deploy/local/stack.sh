#!/usr/bin/env bash
# The local stack: Apache Kafka (KRaft, one node or a cluster of three, from the official jars that
# Maven fetches) and ClickHouse (Debian's clickhouse-server), run as plain processes with all state
# under one directory.
#
#   stack.sh install   install what a fresh machine lacks (Debian packages, broker jars, Go modules)
#   stack.sh up        start what is not running yet and wait until each component answers
#   stack.sh down      stop what `up` (and `make demo`) started, by pid, and check that nothing is left
#   stack.sh status    show what runs where, with versions; exit 1 when something does not answer
#   stack.sh env       print the SLUICE_ addresses of the running stack as shell exports
#   stack.sh pg-dir    print where PostgreSQL keeps its data (under the state directory, or under
#                      /var/tmp when the postgres user cannot reach it)
#   stack.sh install-protoc   install protoc (Debian's protobuf-compiler), for `make proto`
#   stack.sh install-tools    install protoc, Prometheus and Chromium (Debian's packages), for `make test`:
#                             Chromium loads the planner's status page headless
#
# Environment (defaults in brackets):
#   SLUICE_STATE_DIR [<repo>/.sluice]        all data, logs, pids and fetched jars
#   SLUICE_KAFKA_NODES [1]                   1, or 3 for a cluster (topics at replication factor 3,
#                                            min.insync.replicas 2); `make up KAFKA_BROKERS=3`
#   SLUICE_KAFKA_PORT [9092]                 broker listener (node n: + 2(n-1))
#   SLUICE_KAFKA_CONTROLLER_PORT [9093]      KRaft controller listener (node n: + 2(n-1))
#   SLUICE_KAFKA_ADVERTISED_PORT [the listener]  one node: the port clients are told to use, such as a
#                                            test's TCP proxy in front of the broker
#   SLUICE_KAFKA_HEAP [1g]                   broker -Xmx
#   SLUICE_KAFKA_SECURE [no]                 yes: one node that takes clients only over SASL_SSL (SCRAM
#                                            or PLAIN) and authorizes every request; the stack makes a
#                                            CA and the broker's certificate (<state>/tls) and the users
#                                            admin (super user), sluice-planner, sluice-extractor and
#                                            sluice-loader, their passwords in <state>/kafka/users/;
#                                            `stack.sh env` then prints admin's settings
#   SLUICE_CLICKHOUSE_PORT [9000]            ClickHouse native protocol
#   SLUICE_CLICKHOUSE_HTTP_PORT [8123]       ClickHouse HTTP interface
#   SLUICE_CLICKHOUSE_SECURE_PORT []         also serve the native protocol over TLS there, with the
#                                            stack's CA and certificate (<state>/tls, as Kafka's)
#   SLUICE_STACK_CLICKHOUSE [single]         single, or cluster: also a ClickHouse cluster `sluice` of four
#                                            servers (2 shards x 2 replicas, replicated tables kept by
#                                            Apache ZooKeeper, Debian's zookeeper) beside the single server;
#                                            `make up CLICKHOUSE=cluster`
#   SLUICE_CLICKHOUSE_CLUSTER_PORT [9101]    the cluster's node n: native protocol at + (n-1), HTTP at
#                                            8201 + (n-1), replication (interserver HTTP) at 9301 + (n-1)
#   SLUICE_ZOOKEEPER_PORT [2181]             the cluster's ZooKeeper, on 127.0.0.1
#   SLUICE_STACK_POSTGRES [no]               yes: `up` also starts PostgreSQL (`make up POSTGRES=yes`;
#                                            `make test` asks for it), role sluice, password sluice
#   SLUICE_POSTGRES_PORT [5432]              PostgreSQL, on 127.0.0.1
#   SLUICE_STACK_WAIT [120]                  seconds to wait for a component to answer
#   SLUICE_KAFKA_LIBS [<state>/kafka/libs]   the broker jars (a test's private broker reuses the stack's)
#   SLUICE_KAFKA_BROKERS, SLUICE_CLICKHOUSE_ADDR, SLUICE_POSTGRES_DSN
#                                            when set, use that Kafka / ClickHouse / PostgreSQL instead
#                                            of starting one
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/deploy/local"
state=${SLUICE_STATE_DIR:-$root/.sluice}
kafka_port=${SLUICE_KAFKA_PORT:-9092}
controller_port=${SLUICE_KAFKA_CONTROLLER_PORT:-9093}
kafka_nodes=${SLUICE_KAFKA_NODES:-1}
case "$kafka_nodes" in 1 | 3) ;; *) echo "stack: SLUICE_KAFKA_NODES must be 1 or 3, got $kafka_nodes" >&2; exit 2 ;; esac
kafka_heap=${SLUICE_KAFKA_HEAP:-1g}
kafka_secure=${SLUICE_KAFKA_SECURE:-no}
case "$kafka_secure" in
  no) ;;
  yes) [ "$kafka_nodes" = 1 ] || { echo "stack: SLUICE_KAFKA_SECURE=yes runs one node, not $kafka_nodes" >&2; exit 2; } ;;
  *) echo "stack: SLUICE_KAFKA_SECURE must be yes or no, got $kafka_secure" >&2; exit 2 ;;
esac
ch_port=${SLUICE_CLICKHOUSE_PORT:-9000}
ch_http_port=${SLUICE_CLICKHOUSE_HTTP_PORT:-8123}
ch_secure_port=${SLUICE_CLICKHOUSE_SECURE_PORT:-}
wait_seconds=${SLUICE_STACK_WAIT:-120}
pg_port=${SLUICE_POSTGRES_PORT:-5432}
ch_mode=${SLUICE_STACK_CLICKHOUSE:-single}
case "$ch_mode" in single | cluster) ;; *) echo "stack: SLUICE_STACK_CLICKHOUSE must be single or cluster, got $ch_mode" >&2; exit 2 ;; esac
cluster_port=${SLUICE_CLICKHOUSE_CLUSTER_PORT:-9101}
zk_port=${SLUICE_ZOOKEEPER_PORT:-2181}
pg_wanted=${SLUICE_STACK_POSTGRES:-no}
pg_external=${SLUICE_POSTGRES_DSN:+yes}
pg_dsn=${SLUICE_POSTGRES_DSN:-postgres://sluice:sluice@127.0.0.1:$pg_port/postgres?sslmode=disable}

kafka_external=${SLUICE_KAFKA_BROKERS:+yes}
ch_external=${SLUICE_CLICKHOUSE_ADDR:+yes}
# node_port N / node_controller N: the listener ports of node N.
node_port() { echo $((kafka_port + 2 * ($1 - 1))); }
node_controller() { echo $((controller_port + 2 * ($1 - 1))); }
# node_dir N: node N's directory; a single node keeps the layout of a one-node stack.
node_dir() { if [ "$kafka_nodes" = 1 ]; then echo "$state/kafka"; else echo "$state/kafka/node$1"; fi; }
local_brokers=$(for n in $(seq 1 "$kafka_nodes"); do printf '127.0.0.1:%s,' "$(node_port "$n")"; done)
kafka_addr=${SLUICE_KAFKA_BROKERS:-${local_brokers%,}}
ch_addr=${SLUICE_CLICKHOUSE_ADDR:-127.0.0.1:$ch_port}

kafka_dir="$state/kafka"
kafka_libs=${SLUICE_KAFKA_LIBS:-$kafka_dir/libs}
ch_dir="$state/clickhouse"
cluster_dir="$state/clickhouse-cluster"
zk_dir="$state/zookeeper"
# The cluster's nodes: n = 1..4; nodes 1 and 2 hold shard 1, nodes 3 and 4 shard 2.
cluster_nodes="1 2 3 4"
cnode_port() { echo $((cluster_port + $1 - 1)); }
cnode_http() { echo $((8201 + $1 - 1)); }
cnode_interserver() { echo $((9301 + $1 - 1)); }
cnode_shard() { echo $(( ($1 + 1) / 2 )); }
cluster_addrs() { local n out=; for n in $cluster_nodes; do out+="127.0.0.1:$(cnode_port "$n"),"; done; echo "${out%,}"; }
pg_dir="$state/postgres"
# PostgreSQL runs as the postgres user when the stack runs as root: a state directory that user
# cannot reach (a checkout under /root) keeps PostgreSQL's data under /var/tmp instead, named after it.
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 &&
  ! setpriv --reuid=postgres --regid=postgres --init-groups -- test -x "$([ -d "$state" ] && echo "$state" || dirname "$state")" 2>/dev/null; then
  pg_dir="/var/tmp/sluice-postgres-$(printf '%s' "$state" | md5sum | cut -c1-12)"
fi
probe="$state/bin/stackprobe"
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }

# alive PIDFILE: the pid in the file belongs to a running process.
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=
# debs PACKAGE...: install the Debian packages that are missing (as root), or say what to install.
debs() {
  local missing=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! is_root || ! command -v apt-get >/dev/null; then
    die "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})"
  fi
  say "installing ${missing[*]}"
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null; apt_updated=yes; fi
  # A policy-rc.d keeps the packages' own services from starting: the stack runs its own servers.
  local policy=/usr/sbin/policy-rc.d ours=
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; ours=yes; fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$state/apt.log" 2>&1 || rc=$?
  [ -z "$ours" ] || rm -f "$policy"
  [ $rc -eq 0 ] || { tail -n 20 "$state/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
}

# fetch_kafka: the broker jars of the pom's version, fetched by Maven into the state directory.
fetch_kafka() {
  [ -f "$kafka_libs/kafka_2.13-$kafka_version.jar" ] && return 0
  command -v mvn >/dev/null || die "Maven is missing: install it (Debian: apt-get install maven) with JDK 17"
  command -v java >/dev/null || die "Java is missing: install JDK 17 (Debian: apt-get install openjdk-17-jre-headless)"
  say "fetching Apache Kafka $kafka_version with Maven"
  rm -rf "$kafka_libs"
  mvn -q -B -f "$here/pom.xml" package -Dlibs.dir="$kafka_libs" -Dstate.dir="$state" >"$state/maven.log" 2>&1 ||
    { tail -n 30 "$state/maven.log" >&2; die "Maven could not fetch the Kafka broker jars"; }
}

# build_probe: the small Go program that asks Kafka for metadata and ClickHouse for SELECT version().
build_probe() {
  command -v go >/dev/null || die "Go is missing: install Go 1.26 or later"
  (cd "$root" && go build -o "$probe" ./deploy/local/probe) || die "could not build the stack probe"
}

install() {
  mkdir -p "$state"
  debs clickhouse-server clickhouse-client protobuf-compiler libprotobuf-dev prometheus postgresql openssl zookeeper
  fetch_kafka
  local m
  for m in $(cd "$root" && go list -m -f '{{.Dir}}'); do (cd "$m" && go mod download); done
  build_probe
  say "installed: Kafka $kafka_version jars, ClickHouse, ZooKeeper, PostgreSQL, protoc, Prometheus, Go modules"
}

# render TEMPLATE OUT [NODE]: copy a template with the stack's paths and ports filled in, for Kafka
# node NODE (1 when not given).
render() {
  local n=${3:-1} voters= i replication=$kafka_nodes min_isr=1
  for i in $(seq 1 "$kafka_nodes"); do voters+="$i@127.0.0.1:$(node_controller "$i"),"; done
  [ "$kafka_nodes" -ge 3 ] && min_isr=2
  sed -e "s|@STATE@|$state|g" -e "s|@KAFKA_PORT@|$(node_port "$n")|g" -e "s|@CONTROLLER_PORT@|$(node_controller "$n")|g" \
    -e "s|@ADVERTISED_PORT@|${SLUICE_KAFKA_ADVERTISED_PORT:-$(node_port "$n")}|g" \
    -e "s|@NODE_ID@|$n|g" -e "s|@VOTERS@|${voters%,}|g" -e "s|@LOG_DIR@|$(node_dir "$n")/data|g" \
    -e "s|@REPLICATION@|$replication|g" -e "s|@MIN_ISR@|$min_isr|g" \
    -e "s|@TCP_PORT@|${render_tcp:-$ch_port}|g" -e "s|@HTTP_PORT@|${render_http:-$ch_http_port}|g" \
    -e "s|@CH_DIR@|${render_ch_dir:-$ch_dir}|g" \
    -e "s|@TLS_DIR@|$tls_dir|g" -e "s|@ADMIN_PASSWORD@|$(kafka_password admin 2>/dev/null || true)|g" \
    -e "s|@PLAIN_USERS@|$(plain_users 2>/dev/null || true)|g" "$1" >"$2"
}

# The secure broker's TLS material and users.
tls_dir="$state/tls"
users_dir="$state/kafka/users"
kafka_users="admin sluice-planner sluice-extractor sluice-loader"

# kafka_password NAME: the password of a SCRAM user of the secure broker, made on first use.
kafka_password() {
  local f="$users_dir/$1"
  if [ ! -s "$f" ]; then
    mkdir -p "$users_dir"
    (umask 077 && head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
  fi
  cat "$f"
}

# plain_users: the PLAIN login module's user_NAME="password" entries, admin's login first.
plain_users() {
  local u out
  out="username=\"admin\" password=\"$(kafka_password admin)\""
  for u in $kafka_users; do out+=" user_$u=\"$(kafka_password "$u")\""; done
  printf '%s' "$out"
}

# make_tls: a CA and the broker's certificate for 127.0.0.1 and localhost, made once.
make_tls() {
  [ -s "$tls_dir/broker-keystore.pem" ] && return 0
  command -v openssl >/dev/null || die "openssl is missing: install it (Debian: apt-get install openssl)"
  mkdir -p "$tls_dir"
  (
    cd "$tls_dir" && umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 825 -subj "/CN=sluice local CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=localhost"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 825 -extfile broker.ext
    cat broker.key broker.pem >broker-keystore.pem
    chmod 644 ca.pem
  ) >"$state/tls.log" 2>&1 || { tail -n 20 "$state/tls.log" >&2; die "openssl could not make the stack's certificates"; }
  say "made a CA and the broker's certificate in $tls_dir"
}

# secure_env: the settings of an admin client of the secure broker, as shell exports.
secure_env() {
  printf 'export SLUICE_KAFKA_TLS=true\n'
  printf 'export SLUICE_KAFKA_TLS_CA_FILE=%q\n' "$tls_dir/ca.pem"
  printf 'export SLUICE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512\n'
  printf 'export SLUICE_KAFKA_SASL_USERNAME=admin\n'
  printf 'export SLUICE_KAFKA_SASL_PASSWORD_FILE=%q\n' "$users_dir/admin"
}

# start NAME PIDFILE LOG CMD...: run CMD in its own session, detached, and record its pid.
start() {
  local name=$1 pidfile=$2 log=$3
  shift 3
  setsid nohup "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  say "started $name (pid $(cat "$pidfile")), log $log"
}

# await NAME KIND ADDR PIDFILE LOG: wait until the component answers; on failure show its log and stop it.
await() {
  local name=$1 kind=$2 addr=$3 pidfile=$4 log=$5
  if "$probe" -wait "${wait_seconds}s" -pid "$pidfile" "$kind" "$addr" >/dev/null; then return 0; fi
  printf 'stack: %s did not come up at %s; last lines of %s:\n' "$name" "$addr" "$log" >&2
  tail -n 40 "$log" >&2 || true
  stop "$name" "$pidfile"
  exit 1
}

kafka_up() {
  if [ -n "$kafka_external" ]; then
    "$probe" -wait "${wait_seconds}s" kafka "$kafka_addr" >/dev/null || die "Kafka at SLUICE_KAFKA_BROKERS=$kafka_addr does not answer"
    return 0
  fi
  local first=127.0.0.1:$kafka_port n started= other
  # The other layout (one node, or three) on the same ports goes first.
  if [ "$kafka_nodes" = 1 ]; then other=("$state"/kafka/node*/kafka.pid); else other=("$state/kafka/kafka.pid"); fi
  for pidfile in "${other[@]}"; do
    if alive "$pidfile"; then say "stopping the Kafka of the other layout ($pidfile) to start $kafka_nodes node(s)"; stop kafka "$pidfile"; fi
  done
  if alive "$(node_dir 1)/kafka.pid" && "$probe" -brokers "$kafka_nodes" kafka "$first" >/dev/null 2>&1; then
    for n in $(seq 2 "$kafka_nodes"); do alive "$(node_dir "$n")/kafka.pid" || started=missing; done
    [ -n "$started" ] || return 0
  fi
  if ! alive "$(node_dir 1)/kafka.pid" && "$probe" kafka "$first" >/dev/null 2>&1; then
    say "a Kafka not started by this stack answers at $first; using it"
    return 0
  fi
  fetch_kafka
  [ -s "$kafka_dir/cluster.id" ] || { mkdir -p "$kafka_dir"; java -cp "$kafka_libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$kafka_dir/cluster.id"; }
  for n in $(seq 1 "$kafka_nodes"); do kafka_node_up "$n"; done
  for n in $(seq 1 "$kafka_nodes"); do
    local dir
    dir=$(node_dir "$n")
    if ! "$probe" -wait "${wait_seconds}s" -pid "$dir/kafka.pid" -brokers "$kafka_nodes" kafka "127.0.0.1:$(node_port "$n")" >/dev/null; then
      printf 'stack: Kafka node %s did not come up at 127.0.0.1:%s; last lines of %s:\n' "$n" "$(node_port "$n")" "$dir/kafka.log" >&2
      tail -n 40 "$dir/kafka.log" >&2 || true
      kafka_down
      exit 1
    fi
  done
}

# kafka_node_up N: start node N unless it runs, formatting its storage on first start.
kafka_node_up() {
  local n=$1 dir
  dir=$(node_dir "$n")
  alive "$dir/kafka.pid" && return 0
  mkdir -p "$dir/data"
  local template="$here/kafka/server.properties.in" scram=() u
  if [ "$kafka_secure" = yes ]; then
    make_tls
    template="$here/kafka/server-secure.properties.in"
    for u in $kafka_users; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(kafka_password "$u")]" --add-scram "SCRAM-SHA-256=[name=$u,password=$(kafka_password "$u")]")
    done
  fi
  render "$template" "$dir/server.properties" "$n"
  local cp="$kafka_libs/*" log4j="-Dlog4j2.configurationFile=$here/kafka/log4j2.properties"
  if [ ! -f "$dir/data/meta.properties" ]; then
    java -cp "$cp" "$log4j" -Dlog4j2.level=WARN kafka.tools.StorageTool format \
      -t "$(cat "$kafka_dir/cluster.id")" -c "$dir/server.properties" "${scram[@]}" >"$dir/format.log" 2>&1 ||
      { tail -n 20 "$dir/format.log" >&2; die "formatting the log directory of Kafka node $n failed"; }
    say "formatted Kafka storage of node $n, cluster $(cat "$kafka_dir/cluster.id")"
  fi
  start "kafka node $n" "$dir/kafka.pid" "$dir/kafka.log" java -Xms256m "-Xmx$kafka_heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true "$log4j" -cp "$cp" kafka.Kafka "$dir/server.properties"
}

# kafka_down: stop every Kafka node of the state directory, of either layout, all at once: a node
# of a cluster whose peers are gone waits for a quorum that will not come.
kafka_down() {
  local pidfile pids=() i
  for pidfile in "$state/kafka/kafka.pid" "$state"/kafka/node*/kafka.pid; do
    [ -s "$pidfile" ] || continue
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      pids+=("$(cat "$pidfile")")
      kill -TERM -- "-$(cat "$pidfile")" 2>/dev/null || kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for i in $(seq 1 300); do
    local left=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      say "kafka (pid $pid) did not stop in 30 s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  say "stopped kafka (pid ${pids[*]})"
}

clickhouse_up() {
  local pidfile="$ch_dir/clickhouse.pid" log="$ch_dir/log/stdout.log"
  if [ -n "$ch_external" ]; then
    "$probe" -wait "${wait_seconds}s" clickhouse "$ch_addr" >/dev/null ||
      die "ClickHouse at SLUICE_CLICKHOUSE_ADDR=$ch_addr does not answer"
    return 0
  fi
  if alive "$pidfile" && "$probe" clickhouse "$ch_addr" >/dev/null 2>&1; then return 0; fi
  if ! alive "$pidfile" && "$probe" clickhouse "$ch_addr" >/dev/null 2>&1; then
    say "a ClickHouse not started by this stack answers at $ch_addr; using it"
    return 0
  fi
  alive "$pidfile" && stop clickhouse "$pidfile"
  if ! command -v clickhouse-server >/dev/null && ! [ -x /usr/sbin/clickhouse-server ]; then
    is_root || die "clickhouse-server is missing: install it (Debian: apt-get install clickhouse-server), or set SLUICE_CLICKHOUSE_ADDR=host:9000 to a ClickHouse server you run"
    debs clickhouse-server clickhouse-client
  fi
  local server
  server=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
  mkdir -p "$ch_dir/data" "$ch_dir/log"
  render "$here/clickhouse/config.xml.in" "$ch_dir/config.xml"
  if [ -n "$ch_secure_port" ]; then
    make_tls
    mkdir -p "$ch_dir/config.d"
    cat >"$ch_dir/config.d/secure.xml" <<EOF
<yandex>
    <tcp_port_secure>$ch_secure_port</tcp_port_secure>
    <openSSL>
        <server>
            <certificateFile>$tls_dir/broker.pem</certificateFile>
            <privateKeyFile>$tls_dir/broker.key</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>
</yandex>
EOF
  fi
  cp "$here/clickhouse/users.xml" "$ch_dir/users.xml"
  start clickhouse "$pidfile" "$log" "$server" --config-file="$ch_dir/config.xml"
  await ClickHouse clickhouse "$ch_addr" "$pidfile" "$ch_dir/log/clickhouse-server.err.log"
}

# zookeeper_up: Apache ZooKeeper (Debian's zookeeper), one node, for the cluster's replicated tables.
zookeeper_up() {
  local pidfile="$zk_dir/zookeeper.pid" log="$zk_dir/zookeeper.log"
  if alive "$pidfile" && "$probe" zookeeper "127.0.0.1:$zk_port" >/dev/null 2>&1; then return 0; fi
  alive "$pidfile" && stop zookeeper "$pidfile"
  [ -f /usr/share/java/zookeeper.jar ] || { is_root || die "ZooKeeper is missing: install it (Debian: apt-get install zookeeper)"; debs zookeeper; }
  command -v java >/dev/null || die "Java is missing: install JDK 17 (Debian: apt-get install openjdk-17-jre-headless)"
  mkdir -p "$zk_dir/data"
  cat >"$zk_dir/zoo.cfg" <<EOF
tickTime=1000
initLimit=10
syncLimit=5
dataDir=$zk_dir/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
maxSessionTimeout=60000
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok,mntr
autopurge.purgeInterval=1
EOF
  start zookeeper "$pidfile" "$log" java -Xmx256m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -cp "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$zk_dir/zoo.cfg"
  await zookeeper zookeeper "127.0.0.1:$zk_port" "$pidfile" "$log"
}

# cluster_node_up N: start node N of the ClickHouse cluster `sluice`: its own ports, data, macros,
# and the cluster's remote_servers; caches sized so that four of them fit a small machine.
cluster_node_up() {
  local n=$1 dir="$cluster_dir/node$1" server
  local pidfile="$dir/clickhouse.pid" log="$dir/log/stdout.log" addr="127.0.0.1:$(cnode_port "$1")"
  if alive "$pidfile" && "$probe" clickhouse "$addr" >/dev/null 2>&1; then return 0; fi
  alive "$pidfile" && stop "clickhouse-node$n" "$pidfile"
  server=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
  mkdir -p "$dir/data" "$dir/log" "$dir/config.d"
  render_ch_dir=$dir render_tcp=$(cnode_port "$n") render_http=$(cnode_http "$n") render "$here/clickhouse/config.xml.in" "$dir/config.xml"
  local shards= s m
  for s in 1 2; do
    shards+="            <shard><weight>1</weight><internal_replication>true</internal_replication>"
    for m in $cluster_nodes; do
      [ "$(cnode_shard "$m")" != "$s" ] || shards+="<replica><host>127.0.0.1</host><port>$(cnode_port "$m")</port></replica>"
    done
    shards+="</shard>"$'\n'
  done
  cat >"$dir/config.d/cluster.xml" <<EOF
<yandex>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mark_cache_size>134217728</mark_cache_size>
    <max_concurrent_queries>50</max_concurrent_queries>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>$(cnode_interserver "$n")</interserver_http_port>
    <zookeeper>
        <node><host>127.0.0.1</host><port>$zk_port</port></node>
        <session_timeout_ms>10000</session_timeout_ms>
    </zookeeper>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
    <macros><cluster>sluice</cluster><shard>0$(cnode_shard "$n")</shard><replica>node$n</replica></macros>
    <remote_servers>
        <sluice>
$shards        </sluice>
    </remote_servers>
</yandex>
EOF
  cp "$here/clickhouse/users.xml" "$dir/users.xml"
  start "clickhouse-node$n" "$pidfile" "$log" "$server" --config-file="$dir/config.xml"
}

# cluster_up: ZooKeeper and the cluster's four nodes; whatever part of them is down is started.
cluster_up() {
  [ "$ch_mode" = cluster ] || return 0
  zookeeper_up
  local n
  for n in $cluster_nodes; do cluster_node_up "$n"; done
  for n in $cluster_nodes; do
    await "clickhouse-node$n" clickhouse "127.0.0.1:$(cnode_port "$n")" "$cluster_dir/node$n/clickhouse.pid" \
      "$cluster_dir/node$n/log/clickhouse-server.err.log"
  done
}

cluster_down() {
  local n
  for n in $cluster_nodes; do stop "clickhouse-node$n" "$cluster_dir/node$n/clickhouse.pid"; done
  stop zookeeper "$zk_dir/zookeeper.pid"
}

# pg_bin: the directory of the newest PostgreSQL server installed.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# as_pg CMD...: run CMD as the postgres user when root (PostgreSQL refuses to run as root).
as_pg() {
  if is_root; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}

# pg_ready: PostgreSQL answers on the stack's port.
pg_ready() { pg_isready -q -h 127.0.0.1 -p "$pg_port" -t 2 2>/dev/null; }

postgres_up() {
  local pidfile="$pg_dir/postgres.pid" log="$pg_dir/postgres.log" bin i
  if [ -n "$pg_external" ] || [ "$pg_wanted" != yes ]; then return 0; fi
  if alive "$pidfile" && pg_ready; then return 0; fi
  if ! alive "$pidfile" && pg_ready; then
    say "a PostgreSQL not started by this stack answers at 127.0.0.1:$pg_port; using it"
    return 0
  fi
  bin=$(pg_bin)
  if [ -z "$bin" ]; then
    is_root || die "PostgreSQL is missing: install it (Debian: apt-get install postgresql), or set SLUICE_POSTGRES_DSN"
    debs postgresql
    bin=$(pg_bin)
  fi
  mkdir -p "$pg_dir"
  if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
    rm -rf "$pg_dir/data"
    mkdir -p "$pg_dir/data"
    printf 'sluice\n' >"$pg_dir/pwfile"
    if is_root; then chown -R postgres:postgres "$pg_dir"; fi
    as_pg "$bin/initdb" -D "$pg_dir/data" -U sluice --pwfile="$pg_dir/pwfile" --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$pg_dir/initdb.log" 2>&1 || { tail -n 20 "$pg_dir/initdb.log" >&2; die "initdb failed"; }
    say "initialized PostgreSQL in $pg_dir/data (role sluice)"
  fi
  if is_root; then chown -R postgres:postgres "$pg_dir"; fi
  local as=()
  is_root && as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  start postgres "$pidfile" "$log" "${as[@]}" "$bin/postgres" -D "$pg_dir/data" -p "$pg_port" -k "$pg_dir" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c shared_buffers=256MB
  for i in $(seq 1 "$wait_seconds"); do
    pg_ready && return 0
    alive "$pidfile" || break
    sleep 1
  done
  printf 'stack: PostgreSQL did not come up at 127.0.0.1:%s; last lines of %s:\n' "$pg_port" "$log" >&2
  tail -n 40 "$log" >&2 || true
  stop postgres "$pidfile"
  exit 1
}

# stop NAME PIDFILE: SIGTERM the process group, wait up to 30 s, then SIGKILL; remove the pid file.
stop() {
  local name=$1 pidfile=$2 pid i
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  local sig=${STOP_SIGNAL:-TERM}
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) did not stop in 30 s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

up() {
  mkdir -p "$state"
  build_probe
  kafka_up
  clickhouse_up
  cluster_up
  postgres_up
  status
}

down() {
  local pidfile
  for pidfile in "$state"/run/*.pid; do # services that `make demo` started
    [ -e "$pidfile" ] && stop "$(basename "$pidfile" .pid)" "$pidfile"
  done
  kafka_down
  stop clickhouse "$ch_dir/clickhouse.pid"
  cluster_down
  # SIGINT is PostgreSQL's fast shutdown: SIGTERM would wait for every client to leave.
  STOP_SIGNAL=INT stop postgres "$pg_dir/postgres.pid"
  local left
  left=$(pgrep -f -- "($state/(kafka|clickhouse|clickhouse-cluster|zookeeper|postgres|bin)|$pg_dir)/" || true)
  [ -z "$left" ] || die "processes still running from $state: $left"
}

# show NAME KIND ADDR PIDFILE EXTERNAL: one status line; returns 1 when the component does not answer.
show() {
  local name=$1 kind=$2 addr=$3 pidfile=$4 external=$5 who answer up=yes
  answer=$("$probe" "$kind" "$addr" 2>&1) || up=
  if [ -n "$external" ]; then who="external"
  elif alive "$pidfile"; then who="pid $(cat "$pidfile")"
  elif [ -n "$up" ]; then who="not started by this stack"
  else who="not running"; fi
  if [ -n "$up" ]; then
    printf '%-10s %-22s %-28s %s\n' "$name" "$addr" "$who" "$answer"
  else
    printf '%-10s %-22s %-28s DOWN: %s\n' "$name" "$addr" "$who" "$answer"
    return 1
  fi
}

status() {
  [ -x "$probe" ] || build_probe
  local rc=0
  [ -n "$kafka_external" ] || printf 'stack: Apache Kafka %s jars in %s\n' "$kafka_version" "$kafka_libs"
  if [ -n "$kafka_external" ]; then
    show kafka kafka "$kafka_addr" "" "$kafka_external" || rc=1
  else
    local n
    for n in $(seq 1 "$kafka_nodes"); do
      show "kafka-$n" kafka "127.0.0.1:$(node_port "$n")" "$(node_dir "$n")/kafka.pid" "" || rc=1
    done
  fi
  show clickhouse clickhouse "$ch_addr" "$ch_dir/clickhouse.pid" "$ch_external" || rc=1
  if [ "$ch_mode" = cluster ] || alive "$zk_dir/zookeeper.pid"; then
    show zookeeper zookeeper "127.0.0.1:$zk_port" "$zk_dir/zookeeper.pid" "" || rc=1
    local c
    for c in $cluster_nodes; do
      show "ch-node$c" clickhouse "127.0.0.1:$(cnode_port "$c")" "$cluster_dir/node$c/clickhouse.pid" "" || rc=1
    done
  fi
  if [ -n "$pg_external" ]; then
    printf '%-10s %-22s %s\n' postgres "SLUICE_POSTGRES_DSN" external
  elif alive "$pg_dir/postgres.pid" || [ "$pg_wanted" = yes ]; then
    local who="not running"
    alive "$pg_dir/postgres.pid" && who="pid $(cat "$pg_dir/postgres.pid")"
    if pg_ready; then
      printf '%-10s %-22s %-28s %s\n' postgres "127.0.0.1:$pg_port" "$who" "PostgreSQL $("$(pg_bin)/postgres" -V | awk '{print $3}')"
    else
      printf '%-10s %-22s %-28s DOWN\n' postgres "127.0.0.1:$pg_port" "$who"
      rc=1
    fi
  fi
  printf 'state      %s\n' "$state"
  return $rc
}

env_exports() {
  printf 'export SLUICE_KAFKA_BROKERS=%q\n' "$kafka_addr"
  if [ "$kafka_secure" = yes ]; then secure_env; fi
  printf 'export SLUICE_CLICKHOUSE_ADDR=%q\n' "$ch_addr"
  if [ -n "$pg_external" ] || alive "$pg_dir/postgres.pid"; then printf 'export SLUICE_POSTGRES_DSN=%q\n' "$pg_dsn"; fi
  # The cluster's nodes, for tests and benchmarks: a service points at it with SLUICE_CLICKHOUSE_ADDR
  # set to these and SLUICE_CLICKHOUSE_CLUSTER=sluice.
  if alive "$cluster_dir/node1/clickhouse.pid"; then printf 'export SLUICE_STACK_CLUSTER_ADDR=%q\n' "$(cluster_addrs)"; fi
}

# The probe asks the secure broker as admin.
if [ "$kafka_secure" = yes ]; then eval "$(secure_env)"; fi

case "${1:-}" in
  install) install ;;
  install-protoc) mkdir -p "$state"; debs protobuf-compiler libprotobuf-dev ;;
  install-tools) mkdir -p "$state"; debs protobuf-compiler libprotobuf-dev prometheus chromium ;;
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_exports ;;
  pg-dir) echo "$pg_dir" ;;
  *) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
