#!/usr/bin/env bash
# make demo: the whole pipeline on this machine. Starts the stack, the demo source, the planner, an
# extractor and a loader as local processes, submits a job of RECORDS records (100,000 by default),
# shows its progress, and prints a summary whose last line is one JSON object:
#   {"job": …, "table": …, "expected": N, "loaded": N, "dead_lettered": M, "seconds": S}
# It exits 0 only if every expected record is in ClickHouse. The services keep running afterwards
# (logs in .sluice/logs/); `make down` stops them with the stack.
#
# Environment: RECORDS [100000], RECORD_SIZE [300], TASKS [16], PAGE_SIZE [1000], and the stack's
# variables (see deploy/local/stack.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${SLUICE_STATE_DIR:-$root/.sluice}
records=${RECORDS:-100000}
record_size=${RECORD_SIZE:-300}
tasks=${TASKS:-16}
page_size=${PAGE_SIZE:-1000}
table=demo
bin="$state/bin"
run="$state/run"
logs="$state/logs"

say() { printf 'demo: %s\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[[ "$records" =~ ^[0-9]+$ ]] || die "RECORDS=$records is not a number"

"$root/deploy/local/stack.sh" up >&2
eval "$("$root/deploy/local/stack.sh" env)"
export SLUICE_KAFKA_BROKERS SLUICE_CLICKHOUSE_ADDR

say "building the services"
mkdir -p "$bin" "$run" "$logs"
(cd "$root" && go build -trimpath -o "$bin/" ./services/planner ./services/extractor ./services/loader \
  ./services/sluicectl ./services/demosource)

# stop_service NAME: SIGTERM a service this script started, and wait for it.
stop_service() {
  local pidfile="$run/$1.pid" pid i
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# start_service NAME ADDR VAR=VALUE...: run a service in the background and wait until /readyz answers.
start_service() {
  local name=$1 addr=$2 i
  shift 2
  stop_service "$name"
  env "$@" SLUICE_HTTP_ADDR="$addr" setsid nohup "$bin/$name" >"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
  for i in $(seq 1 600); do
    if curl -fsS -o /dev/null "http://$addr/readyz" 2>/dev/null; then
      say "$name ready on $addr (pid $(cat "$run/$name.pid"), log $logs/$name.log)"
      return 0
    fi
    kill -0 "$(cat "$run/$name.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 30 "$logs/$name.log" >&2
  die "$name did not become ready on $addr"
}

# The jobs API wants a bearer token: the demo makes one (role admin) on its first run and keeps it.
token_file="$run/planner-token"
if [ ! -s "$token_file" ]; then
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file")
fi
(umask 077 && printf 'demo admin %s\n' "$(cat "$token_file")" >"$run/planner-tokens")
export SLUICE_PLANNER_TOKEN_FILE="$token_file"
# Sources on loopback, link-local and private addresses are refused unless allowed: the demo source
# runs on this machine.
export SLUICE_SOURCE_ALLOW=127.0.0.1

start_service demosource 127.0.0.1:8081 SLUICE_DEMO_RECORDS="$records" SLUICE_DEMO_RECORD_SIZE="$record_size"
start_service planner 127.0.0.1:8080 SLUICE_PLANNER_TOKENS_FILE="$run/planner-tokens"
start_service extractor 127.0.0.1:8082
# Everything runs on this machine: compression auto leaves ClickHouse's blocks uncompressed.
start_service loader 127.0.0.1:8083

spec="$state/demo-job.yaml"
cat >"$spec" <<EOF
name: demo
source:
  type: http
  url: http://127.0.0.1:8081/api/users
  records_path: data
  key: id
  pagination:
    type: offset
    offset_param: offset
    limit_param: limit
    page_size: $page_size
    total_path: total
  timeout: 30s
  max_retries: 5
tasks: $tasks
sink:
  table: $table
EOF

say "status page: http://127.0.0.1:8080/ (paste the token in $token_file, or open the address echo \"http://127.0.0.1:8080/#token=\$(cat $token_file)\" prints)"
say "submitting $spec: $records records of about $record_size bytes in $tasks tasks"
started=$(date +%s.%N)
result="$state/demo-result.json"
set +e
SLUICE_PLANNER_URL=http://127.0.0.1:8080 "$bin/sluicectl" submit "$spec" --wait -o json >"$result"
submit_rc=$?
set -e
finished=$(date +%s.%N)
[ -s "$result" ] || die "the job was not submitted (sluicectl exit $submit_rc)"

job=$(sed -n 's/^  "id": "\(.*\)",$/\1/p' "$result")
dead=$(sed -n '/"records"/,/}/s/^    "dead_lettered": \([0-9]*\).*/\1/p' "$result")
state_word=$(sed -n 's/^  "state": "\(.*\)",$/\1/p' "$result")
host=${SLUICE_CLICKHOUSE_ADDR%:*}
port=${SLUICE_CLICKHOUSE_ADDR##*:}
database=${SLUICE_CLICKHOUSE_DATABASE:-default}
loaded=$(clickhouse-client --host "$host" --port "$port" --database "$database" \
  --query "SELECT uniqExact(key) FROM $table WHERE job_id = '$job'")
seconds=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.2f", b - a }')
rate=$(awk -v n="$loaded" -v s="$seconds" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print 0 }')

cat <<EOF
job            $job ($state_word)
table          $database.$table
expected       $records
loaded         $loaded distinct keys in ClickHouse
dead-lettered  ${dead:-0}
seconds        $seconds ($rate records/s end to end, submit to done)
services       planner :8080 (status page at http://127.0.0.1:8080/), extractor :8082, loader :8083, demo source :8081 (make down stops them)
API token      $token_file (export SLUICE_PLANNER_TOKEN_FILE=$token_file for sluicectl)
EOF
printf '{"job": "%s", "table": "%s", "expected": %d, "loaded": %d, "dead_lettered": %d, "seconds": %s}\n' \
  "$job" "$table" "$records" "$loaded" "${dead:-0}" "$seconds"
[ "$loaded" = "$records" ]
