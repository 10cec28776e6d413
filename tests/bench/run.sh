#!/usr/bin/env bash
# `make bench`: renlayer-proxy against a plain nginx reverse proxy, in the same
# run, on this machine. nginx serves a fixed OpenAI chat response as the
# upstream; wrk loads (a) the upstream directly, (b) an nginx reverse proxy
# with keep-alive, (c) renlayer-proxy with trace publishing to JetStream and
# DLP (every built-in detector) on, (d) the same with 20 policies (a second
# tenant, so that (c) and (d) are measured in the same rounds).
# Prints requests/s, p50/p99 latency, the ratio (c)/(b), CPU per request of
# each server (from /proc), the proxy's own p99 overhead at a fixed 1,000
# requests/s, and its RSS with 1,000 open client connections.
# Bounded: every load runs for BENCH_SECONDS (default 5) and stops by itself;
# A round runs the nginx proxy, (c), the nginx proxy, (d): every renlayer run
# follows an nginx run ((d) right after (c) measured ~5 % slower than (c),
# though the two cost the same when alternated; docs/performance.md).
# BENCH_ROUNDS (9) rounds, medians reported (the VM drifts by ±10 % between
# rounds; fewer rounds give medians that move as much between runs).
# BENCH_HOLD=<file>: set up, write the ports and key to <file>, wait
# BENCH_HOLD_SECONDS (600) for profiling by hand, stop.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build="${BUILD_DIR:-build}"
secs="${BENCH_SECONDS:-5}"
rounds="${BENCH_ROUNDS:-9}"
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
# A tenant with an agent, a gate to the upstream and a key: its seed-demo output.
seed_tenant() {
  "$build/services/api/renlayer-api" seed-demo --email "$1" \
    --upstream "http://127.0.0.1:$up_port" --header "Authorization=Bearer sk-bench" 2>/dev/null
}
field() { echo "$1" | sed -n "s/^RENLAYER_DEMO_$2=//p"; }
seed=$(seed_tenant bench@renlayer.test)
seed_full=$(seed_tenant bench-policies@renlayer.test)
key=$(field "$seed" AGENT_KEY)
key_full=$(field "$seed_full" AGENT_KEY)
tenant_full=$(field "$seed_full" TENANT_ID)
# (d)'s tenant: 20 policies in its default set (DLP, all built-ins, is on for
# both tenants), every one evaluated on every request.
psql -q -v ON_ERROR_STOP=1 -v tenant="$tenant_full" "$RENLAYER_DATABASE_URL" -f tests/bench/policies.sql

RENLAYER_LISTEN_ADDR="127.0.0.1:$px_port" RENLAYER_LOG_LEVEL=warn RENLAYER_SPOOL_DIR="$work/spool" \
  RENLAYER_PROXY_WORKERS=${BENCH_WORKERS:-2} "$build/services/proxy/renlayer-proxy" 2>"$work/proxy.log" &
px_pid=$!
pids+=("$px_pid")
for _ in $(seq 1 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$px_port/readyz")" = 200 ] && break
  sleep 0.05
done
for _ in $(seq 1 200); do # (d)'s policies are loaded once policy 19 denies a DELETE
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $key_full" \
        "http://127.0.0.1:$px_port/v1/chat/completions")" = 403 ] && break
  sleep 0.05
done

if [ -n "${BENCH_HOLD:-}" ]; then # leave the stack up for profiling; Ctrl-C ends it
  printf 'proxy=http://127.0.0.1:%s nginx=http://127.0.0.1:%s key=%s key_full=%s proxy_pid=%s nats_pid=%s nginx_pidfile=%s\n' \
    "$px_port" "$ngx_port" "$key" "$key_full" "$px_pid" "$(cat "$work/nats/nats.pid")" "$work/nginx-px/nginx.pid" | tee "${BENCH_HOLD}"
  sleep "${BENCH_HOLD_SECONDS:-600}"
  exit 0
fi

# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
# shellcheck disable=SC2046
nginx_ticks() { ticks $(nginx_pids "$1"); } # master pid file -> master and workers
hz=$(getconf CLK_TCK)

# One measured wrk run: appends "rps p50_us p99_us cpu_us_per_req non2xx
# machine_us_per_req" to $work/<name>.runs (machine: every core's busy time,
# whatever process spent it; 2 cores / that is the req/s). cpu_fn/cpu_arg:
# how to read the server's CPU ticks.
run_wrk() {
  local name=$1 url=$2 cpu_fn=$3 cpu_arg=$4
  local before after busy_before busy_after out
  before=$($cpu_fn "$cpu_arg") busy_before=$(busy_ticks)
  out=$(BENCH_KEY=${5:-} wrk -t2 -c"$conns" -d"${secs}s" --latency -s tests/bench/post.lua "$url")
  after=$($cpu_fn "$cpu_arg") busy_after=$(busy_ticks)
  echo "$out" | awk -v t=$((after - before)) -v bt=$((busy_after - busy_before)) -v hz="$hz" '
    function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6; return v }
    /requests in/ { n = $1 } /Requests\/sec/ { rps = $2 } $1 == "50%" { p50 = us($2) } $1 == "99%" { p99 = us($2) }
    /Non-2xx/ { bad = $5 }
    END { printf "%s %.1f %.1f %.1f %d %.1f\n", rps, p50, p99, t / hz * 1e6 / n, bad + 0, bt / hz * 1e6 / n }' >> "$work/$name.runs"
}

# An unmeasured run as long as a measured one: the first seconds of load
# grow pools and JetStream's files and were consistently slower.
warm() { BENCH_KEY=${2:-} wrk -t2 -c"$conns" -d"${secs}s" -s tests/bench/post.lua "$1" >/dev/null 2>&1; }

# The median of column c of a target's runs.
median() { awk -v c="$2" '{ print $c }' "$work/$1.runs" | median_of; }

report() { # name label
  local bad note=""; bad=$(awk '{ s += $5 } END { print s + 0 }' "$work/$1.runs")
  [ "$bad" != 0 ] && note="  non-2xx: $bad"
  printf '%-34s %9.0f %9.0f %9.0f %12.1f %12.1f   %-22s %s%s\n' "$2" "$(median "$1" 1)" "$(median "$1" 2)" "$(median "$1" 3)" \
    "$(median "$1" 4)" "$(median "$1" 6)" "$(awk '{ printf "%.0f ", $1 }' "$work/$1.runs")" "$(awk '{ printf "%.0f ", $4 }' "$work/$1.runs")" "$note"
}

# The median over rounds of a's req/s divided by b's in the same round.
ratio() { printf '%.2f' "$(paste -d' ' "$work/$1.runs" "$work/$2.runs" | awk '{ print $1 / $(NF / 2 + 1) }' | median_of)"; }

nats_pid=$(cat "$work/nats/nats.pid")
up_url="http://127.0.0.1:$up_port/v1/chat/completions"
ngx_url="http://127.0.0.1:$ngx_port/v1/chat/completions"
px_url="http://127.0.0.1:$px_port/v1/chat/completions"
printf '\nwrk: 2 threads, %s connections, POST /v1/chat/completions (302-byte body); %s rounds of %ss,\n' "$conns" "$rounds" "$secs"
printf 'each round: nginx proxy, (c), nginx proxy, (d); each ratio against the nginx run just before (this VM drifts by tens of %% between minutes)\n\n'
printf '%-34s %9s %9s %9s %12s %12s   %-22s %s\n' "target (medians)" "req/s" "p50 us" "p99 us" "CPU us/req" "machine us" "req/s per round" "CPU us/req per round"
warm "$up_url"; warm "$ngx_url"; warm "$px_url" "$key"; warm "$px_url" "$key_full"
run_wrk upstream "$up_url" nginx_ticks "$work/nginx-up/nginx.pid"
nats_before=$(ticks "$nats_pid")
traces_before=$(curl -s "http://127.0.0.1:$px_port/metrics" | awk '/^renlayer_proxy_messages_published_total\{kind="trace"\}/ {print $2}')
for _ in $(seq 1 "$rounds"); do
  run_wrk nginx "$ngx_url" nginx_ticks "$work/nginx-px/nginx.pid"
  run_wrk renlayer "$px_url" ticks "$px_pid" "$key"
  run_wrk nginx_d "$ngx_url" nginx_ticks "$work/nginx-px/nginx.pid"
  run_wrk renlayer_full "$px_url" ticks "$px_pid" "$key_full"
done
nats_after=$(ticks "$nats_pid")
report upstream "upstream (nginx direct)"
report nginx "nginx reverse proxy"
report renlayer "(c) renlayer reverse proxy"
report nginx_d "nginx reverse proxy (before d)"
report renlayer_full "(d) renlayer, 20 policies"

traces=$(curl -s "http://127.0.0.1:$px_port/metrics" | awk '/^renlayer_proxy_messages_published_total\{kind="trace"\}/ {print $2}')
spooled=$(curl -s "http://127.0.0.1:$px_port/metrics" | awk '/^renlayer_proxy_messages_spooled_total/ {print $2}')
printf '\nratio (c) renlayer / nginx proxy: %s (median of the rounds; target >= 0.40)\n' "$(ratio renlayer nginx)"
awk -v a="$(median renlayer 4)" -v b="$(median nginx 4)" 'BEGIN { printf "CPU per request (c) renlayer / nginx proxy: %.1fx (target <= 3)\n", a / b }'
printf 'ratio (d) renlayer with 20 policies and DLP / nginx proxy: %s (median of the rounds; target >= 0.50)\n' "$(ratio renlayer_full nginx_d)"
awk -v a="$(median renlayer_full 4)" -v b="$(median nginx_d 4)" 'BEGIN { printf "CPU per request (d) / nginx proxy: %.1fx\n", a / b }'
printf 'machine CPU per request (all processes, both cores): nginx proxy %s us, (c) %s us, (d) %s us\n' \
  "$(median nginx 6)" "$(median renlayer 6)" "$(median renlayer_full 6)"
lines=$(curl -s "http://127.0.0.1:$px_port/metrics" | awk '/^renlayer_proxy_bus_message_lines_sum/ {s=$2} /^renlayer_proxy_bus_message_lines_count/ {c=$2} END { if (c > 0) printf "%.1f", s / c; else print "-" }')
new_traces=$(( ${traces:-0} - ${traces_before:-0} ))
echo "traces published to JetStream: ${traces:-0} (spooled: ${spooled:-0}), ${lines} per bus message; nats-server CPU: $(( (nats_after - nats_before) * 1000000 / hz / (new_traces > 0 ? new_traces : 1) )) us per trace"

# Overhead at a fixed 1,000 requests/s (everything on: (d)'s tenant), from the
# proxy's own histogram.
hist() { curl -s "http://127.0.0.1:$px_port/metrics" | grep '^renlayer_proxy_overhead_microseconds_bucket'; }
hist > "$work/h0"
node tests/bench/fixed_rate.mjs "http://127.0.0.1:$px_port/v1/chat/completions" 1000 "$secs" "$key_full" > "$work/rate.json"
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
