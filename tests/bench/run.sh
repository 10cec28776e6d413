#!/usr/bin/env bash
# `make bench`: renlayer-proxy against a plain nginx reverse proxy, in the same
# run, on this machine. nginx serves a fixed OpenAI chat response as the
# upstream; wrk loads (a) the upstream directly, (b) an nginx reverse proxy
# with keep-alive, (c) renlayer-proxy with trace publishing to JetStream and
# DLP (every built-in detector) on, (d) the same with 20 policies.
# Prints requests/s, p50/p99 latency, the ratio (c)/(b), CPU per request of
# each server (from /proc), the proxy's own p99 overhead at a fixed 1,000
# requests/s, and its RSS with 1,000 open client connections.
# Bounded: every load runs for BENCH_SECONDS (default 10) and stops by itself.
# BENCH_HOLD=<file>: set up, write the ports and key to <file>, wait
# BENCH_HOLD_SECONDS (600) for profiling by hand, stop.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build="${BUILD_DIR:-build}"
secs="${BENCH_SECONDS:-10}"
conns="${BENCH_CONNECTIONS:-64}"
work=$(mktemp -d /tmp/renlayer-bench-XXXXXX)
H=tests/harness
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx-up/nginx.pid" ] && kill "$(cat "$work/nginx-up/nginx.pid")" 2>/dev/null || true
  [ -f "$work/nginx-px/nginx.pid" ] && kill "$(cat "$work/nginx-px/nginx.pid")" 2>/dev/null || true
  bash $H/nats.sh stop "$work/nats" >/dev/null 2>&1 || true
  bash $H/pg.sh stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { bash $H/freeport.sh; }
up_port=$(port); ngx_port=$(port); px_port=$(port); pg_port=$(port); nats_port=$(port)

response='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"- Decisions were recorded.\\n- Owners were assigned.\\n- The next review is on Friday."},"finish_reason":"stop"}],"usage":{"prompt_tokens":48,"completion_tokens":22,"total_tokens":70,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}'

start_nginx() { # name conf-body
  local dir="$work/$1"
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<EOF
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir;
  proxy_temp_path $dir;
  $2
}
EOF
  nginx -c "$dir/nginx.conf"
}

start_nginx nginx-up "server { listen 127.0.0.1:$up_port; location / { default_type application/json; return 200 '$response'; } }"
start_nginx nginx-px "upstream up { server 127.0.0.1:$up_port; keepalive 128; }
  server { listen 127.0.0.1:$ngx_port; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

bash $H/pg.sh init "$work/pg" >/dev/null
RL_PG_FSYNC=off bash $H/pg.sh start "$work/pg" "$pg_port"
bash $H/nats.sh start "$work/nats" "$nats_port"
export RENLAYER_DATABASE_URL=$(bash $H/pg.sh url "$pg_port")
export RENLAYER_NATS_URL="nats://127.0.0.1:$nats_port"
export RENLAYER_SECRET_KEY=$(openssl rand -hex 32)
export RENLAYER_MIGRATIONS_DIR="$root/migrations"
"$build/services/api/renlayer-api" migrate 2>/dev/null
seed=$("$build/services/api/renlayer-api" seed-demo --email bench@renlayer.test \
        --upstream "http://127.0.0.1:$up_port" --header "Authorization=Bearer sk-bench" 2>/dev/null)
key=$(echo "$seed" | sed -n 's/^RENLAYER_DEMO_AGENT_KEY=//p')
tenant=$(echo "$seed" | sed -n 's/^RENLAYER_DEMO_TENANT_ID=//p')

RENLAYER_LISTEN_ADDR="127.0.0.1:$px_port" RENLAYER_LOG_LEVEL=warn RENLAYER_SPOOL_DIR="$work/spool" \
  RENLAYER_PROXY_WORKERS=${BENCH_WORKERS:-2} "$build/services/proxy/renlayer-proxy" 2>"$work/proxy.log" &
px_pid=$!
pids+=("$px_pid")
for _ in $(seq 1 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$px_port/readyz")" = 200 ] && break
  sleep 0.05
done

if [ -n "${BENCH_HOLD:-}" ]; then # leave the stack up for profiling; Ctrl-C ends it
  printf 'proxy=http://127.0.0.1:%s nginx=http://127.0.0.1:%s key=%s proxy_pid=%s nats_pid=%s\n' \
    "$px_port" "$ngx_port" "$key" "$px_pid" "$(cat "$work/nats/nats.pid")" | tee "${BENCH_HOLD}"
  sleep "${BENCH_HOLD_SECONDS:-600}"
  exit 0
fi

# CPU ticks (user + system) of a process and its children threads.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
nginx_ticks() { # master pid file -> sum over master and workers
  local m; m=$(cat "$1"); local t=0
  for p in $m $(pgrep -P "$m"); do t=$(( t + $(ticks "$p") )); done
  echo "$t"
}
hz=$(getconf CLK_TCK)

# run name url pidspec -> prints rps p50 p99 cpu_us_per_req
run_wrk() {
  local name=$1 url=$2 cpu_fn=$3 cpu_arg=$4
  BENCH_KEY=${5:-} wrk -t2 -c"$conns" -d1s -s tests/bench/post.lua "$url" >/dev/null 2>&1 # warm-up
  local before after out
  before=$($cpu_fn "$cpu_arg")
  out=$(BENCH_KEY=${5:-} wrk -t2 -c"$conns" -d"${secs}s" --latency -s tests/bench/post.lua "$url")
  after=$($cpu_fn "$cpu_arg")
  local reqs rps p50 p99
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  local cpu_us; cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  printf '%-28s %10s %10s %10s %14s %s\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" "${non2xx:+non-2xx: $non2xx}"
  eval "${name%% *}_rps=$rps"
}

proxy_ticks() { ticks "$px_pid"; }
nats_pid=$(cat "$work/nats/nats.pid")
printf '\nwrk: 2 threads, %s connections, %ss per run, POST /v1/chat/completions (302-byte body)\n\n' "$conns" "$secs"
printf '%-28s %10s %10s %10s %14s\n' "target" "req/s" "p50" "p99" "CPU us/req"
run_wrk "upstream (nginx direct)" "http://127.0.0.1:$up_port/v1/chat/completions" nginx_ticks "$work/nginx-up/nginx.pid"
run_wrk "nginx reverse proxy" "http://127.0.0.1:$ngx_port/v1/chat/completions" nginx_ticks "$work/nginx-px/nginx.pid"
nats_before=$(ticks "$nats_pid")
run_wrk "renlayer reverse proxy" "http://127.0.0.1:$px_port/v1/chat/completions" ticks "$px_pid" "$key"
nats_after=$(ticks "$nats_pid")

traces=$(curl -s "http://127.0.0.1:$px_port/metrics" | awk '/^renlayer_proxy_messages_published_total\{kind="trace"\}/ {print $2}')
spooled=$(curl -s "http://127.0.0.1:$px_port/metrics" | awk '/^renlayer_proxy_messages_spooled_total/ {print $2}')
awk -v a="$renlayer_rps" -v b="$nginx_rps" 'BEGIN { printf "\nratio renlayer / nginx proxy: %.2f (target >= 0.40)\n", a / b }'
lines=$(curl -s "http://127.0.0.1:$px_port/metrics" | awk '/^renlayer_proxy_bus_message_lines_sum/ {s=$2} /^renlayer_proxy_bus_message_lines_count/ {c=$2} END { if (c > 0) printf "%.1f", s / c; else print "-" }')
echo "traces published to JetStream: ${traces:-0} (spooled: ${spooled:-0}), ${lines} per bus message; nats-server CPU: $(( (nats_after - nats_before) * 1000000 / hz / ${traces:-1} )) us per trace"

# (d) the same with 20 policies in the tenant's default set (DLP, all
# built-ins, is on in both): every policy is evaluated on every request.
psql -q -v ON_ERROR_STOP=1 -v tenant="$tenant" "$RENLAYER_DATABASE_URL" -f tests/bench/policies.sql
for _ in $(seq 1 200); do # loaded once policy 19 denies a DELETE
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $key" \
        "http://127.0.0.1:$px_port/v1/chat/completions")" = 403 ] && break
  sleep 0.05
done
run_wrk "renlayer_full with 20 policies" "http://127.0.0.1:$px_port/v1/chat/completions" ticks "$px_pid" "$key"
awk -v a="$renlayer_full_rps" -v b="$nginx_rps" 'BEGIN { printf "ratio renlayer with 20 policies and DLP / nginx proxy: %.2f (target >= 0.50)\n", a / b }'

# Overhead at a fixed 1,000 requests/s, from the proxy's own histogram.
hist() { curl -s "http://127.0.0.1:$px_port/metrics" | grep '^renlayer_proxy_overhead_microseconds_bucket'; }
hist > "$work/h0"
node tests/bench/fixed_rate.mjs "http://127.0.0.1:$px_port/v1/chat/completions" 1000 "$secs" "$key" > "$work/rate.json"
hist > "$work/h1"
p99_overhead=$(paste -d' ' "$work/h0" "$work/h1" | awk '
  { split($1, a, "le=\""); split(a[2], b, "\""); le[NR] = b[1]; d[NR] = $4 - $2 }
  END { total = d[NR]; for (i = 1; i <= NR; i++) if (d[i] >= 0.99 * total) { print le[i]; exit } }')
echo "fixed rate: $(cat "$work/rate.json"); proxy overhead p99 (own histogram) <= ${p99_overhead} us (target < 1000)"

# RSS with 1,000 open client connections.
node tests/bench/open_connections.mjs 127.0.0.1 "$px_port" 1000 > "$work/conns.out" &
conn_pid=$!
pids+=("$conn_pid")
for _ in $(seq 1 200); do grep -q ready "$work/conns.out" 2>/dev/null && break; sleep 0.05; done
rss=$(awk '/VmRSS/ {print $2}' "/proc/$px_pid/status")
echo "proxy RSS with 1000 open connections: $((rss / 1024)) MB (target < 64)"
kill "$conn_pid" 2>/dev/null || true

# DLP engine throughput: one core, all built-in detectors, 4 KB chat bodies.
gcc -std=c11 -D_GNU_SOURCE -O2 -Ilibs/common tests/bench/dlp_bench.c libs/common/rl_dlp*.c \
  libs/common/rl_status.c libs/common/rl_buf.c libs/common/rl_crypto.c \
  $(pkg-config --cflags --libs libpcre2-8 jansson openssl) -lm -lpthread -o "$work/dlp_bench"
echo "DLP scan, one core, all built-ins, 4 KB prompts: $("$work/dlp_bench" 3 | awk '/^dlp_scan_mb_s/ {print $2}') MB/s"
