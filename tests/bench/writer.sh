#!/usr/bin/env bash
# Trace-writer throughput (part of `make bench`): BENCH_TRACES (default
# 200,000) realistic traces, each with a request and a response body of
# BENCH_BODY_BYTES (default 1024: 2 KB of bodies per trace, about 3.5 KB per
# message), plus one decision per 10 traces, are published into JetStream
# first; then renlayer-trace-writer starts and drains the backlog into
# PostgreSQL. Prints the consumer lag every second, the sustained traces/s
# (first row to last), the CPU per trace of the writer, PostgreSQL and
# nats-server, and, as the reference measured in the same run on the same
# server, a plain COPY of exactly the rows the writer wrote into the same
# (emptied) tables: traces/s of each and their ratio.
#
# Targets (issue trace-writer): >= 10,000 traces/s and >= 0.5 x plain COPY.
# Bounded: the writer gets BENCH_TIMEOUT_S (default 300) to drain.
# BENCH_WRITER_ENV adds environment to the writer (experiments);
# KEEP_WORK=1 keeps the work folder (logs) and BENCH_CORE=unlimited lets the
# writer dump core there. BENCH_LINES (default 16) traces per bus message, as
# the proxy frames them under load (docs/bus.md); 1 is the worst case.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build="${BUILD_DIR:-build}"
N="${BENCH_TRACES:-200000}"
BODY="${BENCH_BODY_BYTES:-1024}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-300}"
LINES="${BENCH_LINES:-16}" # traces per bus message: the proxy sends 13-17 under load, 1 when quiet
work=$(mktemp -d /tmp/renlayer-bench-writer-XXXXXX)
H=tests/harness
writer_pid=

cleanup() {
  [ -n "$writer_pid" ] && kill "$writer_pid" 2>/dev/null && wait "$writer_pid" 2>/dev/null || true
  bash $H/nats.sh stop "$work/nats" >/dev/null 2>&1 || true
  bash $H/pg.sh stop "$work/pg" >/dev/null 2>&1 || true
  [ -n "${KEEP_WORK:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
pg_port=$(bash $H/freeport.sh); nats_port=$(bash $H/freeport.sh); tw_port=$(bash $H/freeport.sh)
bash $H/pg.sh init "$work/pg" >/dev/null
RL_PG_FSYNC="${RL_PG_FSYNC:-off}" bash $H/pg.sh start "$work/pg" "$pg_port"
bash $H/nats.sh start "$work/nats" "$nats_port"
export RENLAYER_DATABASE_URL=$(bash $H/pg.sh url "$pg_port")
export RENLAYER_NATS_URL="nats://127.0.0.1:$nats_port"
export RENLAYER_MIGRATIONS_DIR="$root/migrations"
"$build/services/api/renlayer-api" migrate 2>/dev/null
psql_q() { psql "$RENLAYER_DATABASE_URL" -v ON_ERROR_STOP=1 -Atqc "$1"; }
tenant=$(psql_q "INSERT INTO renlayer.tenants (id, name) VALUES (gen_random_uuid(), 'bench') RETURNING id")

echo "publishing $N traces (bodies of $BODY bytes) into JetStream ..."
pub=$(cd tests && node bench/writer_publish.mjs "$RENLAYER_NATS_URL" "$tenant" "$N" "$BODY" 10 "$LINES")
decisions=$(echo "$pub" | sed -n 's/.*"decisions":\([0-9]*\).*/\1/p')
mb=$(echo "$pub" | awk -F'"bytes":' '{ split($2, a, "}"); printf "%.0f", a[1] / 1048576 }')
echo "published: $pub (${mb} MB of traces)"

metric() { # series -> value (0 if absent)
  { curl -s "http://127.0.0.1:$tw_port/metrics" || true; } |
    awk -v s="$1" 'index($0, s " ") == 1 { print $2; f = 1 } END { if (!f) print 0 }'
}

bin=$(cd "$build" && pwd)/services/trace-writer/renlayer-trace-writer
(cd "$work" && ulimit -c "${BENCH_CORE:-0}" && RENLAYER_LISTEN_ADDR="127.0.0.1:$tw_port" RENLAYER_LOG_LEVEL=warn \
  RENLAYER_HEALTH_INTERVAL_MS=200 exec env ${BENCH_WRITER_ENV:-} "$bin" 2>"$work/writer.log") &
writer_pid=$!
t_start=$(now_ms)
t_first=; t_done=
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
hz=$(getconf CLK_TCK)
# CPU of the servers too: every postgres process of this cluster, nats-server
# (the postmaster, its children alive, and those gone: the postmaster's cutime + cstime)
pg_ticks() {
  local pm; pm=$(head -1 "$work/pg/postmaster.pid")
  local t; t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
  echo $((t + $(ticks $(pgrep -P "$pm"))))
}
nats_pid=$(cat "$work/nats/nats.pid")
cpu0=$(ticks "$writer_pid"); pgcpu0=$(pg_ticks); natscpu0=$(ticks "$nats_pid")
printf '\n%8s %12s %12s %14s %14s\n' "t (s)" "traces" "decisions" "lag traces" "lag decisions"
last_print=0
while :; do
  t=$(now_ms)
  tr=$(metric 'renlayer_trace_writer_messages_written_total{stream="traces"}')
  de=$(metric 'renlayer_trace_writer_messages_written_total{stream="decisions"}')
  if [ -z "$t_first" ] && [ "${tr%.*}" -gt 0 ]; then t_first=$t; fi
  if [ $((t - last_print)) -ge 1000 ]; then
    lag_t=$(metric 'renlayer_trace_writer_consumer_pending{stream="traces"}')
    lag_d=$(metric 'renlayer_trace_writer_consumer_pending{stream="decisions"}')
    printf '%8.1f %12s %12s %14s %14s\n' "$(awk -v a="$t" -v b="$t_start" 'BEGIN { print (a - b) / 1000 }')" "$tr" "$de" "$lag_t" "$lag_d"
    last_print=$t
  fi
  if [ "${tr%.*}" -ge "$N" ] && [ "${de%.*}" -ge "$decisions" ]; then t_done=$t; break; fi
  if [ $((t - t_start)) -gt $((TIMEOUT_S * 1000)) ] || ! kill -0 "$writer_pid" 2>/dev/null; then
    echo "writer did not drain within ${TIMEOUT_S}s (or died)" >&2; tail -40 "$work/writer.log" >&2; exit 1
  fi
  sleep 0.2
done
cpu1=$(ticks "$writer_pid"); pgcpu1=$(pg_ticks); natscpu1=$(ticks "$nats_pid")
rows=$(psql_q "SELECT count(*) FROM renlayer.traces")
[ "$rows" = "$N" ] || { echo "expected $N rows, found $rows" >&2; exit 1; }
kill -TERM "$writer_pid"; wait "$writer_pid" || true; writer_pid=

# The reference: exactly these rows, COPYed plainly into the same tables, emptied.
cols_traces="trace_id, started_at, ended_at, tenant_id, agent_id, gate_id, api_key_id, end_user, session_key, action, method, path, model, upstream, status, http_status, policy_ids, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, total_tokens, cost_usd, latency_ms, upstream_ms, overhead_us, stream, error, attempts, request_body, response_body, truncated"
cols_decisions="trace_id, started_at, decided_at, tenant_id, agent_id, gate_id, api_key_id, end_user, session_key, action, status, http_status, policy_id, policy_ids, reason"
cols_dlp="trace_id, started_at, ordinal, tenant_id, agent_id, detector, severity, location, action"
cols_tools="trace_id, started_at, ordinal, tenant_id, agent_id, session_key, name, call_id, phase, args_sha256"
psql "$RENLAYER_DATABASE_URL" -v ON_ERROR_STOP=1 -q <<EOF
\copy (SELECT $cols_traces FROM renlayer.traces) TO '$work/traces.copy'
\copy (SELECT $cols_decisions FROM renlayer.decisions) TO '$work/decisions.copy'
\copy (SELECT $cols_dlp FROM renlayer.dlp_findings) TO '$work/dlp.copy'
\copy (SELECT $cols_tools FROM renlayer.tool_calls) TO '$work/tools.copy'
TRUNCATE renlayer.traces, renlayer.decisions, renlayer.dlp_findings, renlayer.tool_calls;
CHECKPOINT;
EOF
pgcpu2=$(pg_ticks)
c0=$(now_ms)
psql "$RENLAYER_DATABASE_URL" -v ON_ERROR_STOP=1 -q <<EOF
\copy renlayer.traces ($cols_traces) FROM '$work/traces.copy'
\copy renlayer.decisions ($cols_decisions) FROM '$work/decisions.copy'
\copy renlayer.dlp_findings ($cols_dlp) FROM '$work/dlp.copy'
\copy renlayer.tool_calls ($cols_tools) FROM '$work/tools.copy'
EOF
c1=$(now_ms)
pgcpu3=$(pg_ticks)

awk -v n="$N" -v s="$t_start" -v f="$t_first" -v d="$t_done" -v c0="$c0" -v c1="$c1" \
    -v cpu=$((cpu1 - cpu0)) -v pgcpu=$((pgcpu1 - pgcpu0)) -v natscpu=$((natscpu1 - natscpu0)) \
    -v copycpu=$((pgcpu3 - pgcpu2)) -v hz="$hz" 'BEGIN {
  sustained = n / ((d - f) / 1000); overall = n / ((d - s) / 1000); copy = n / ((c1 - c0) / 1000)
  printf "\ntrace-writer: %d traces in %.1f s from the first row (%.1f s from start)\n", n, (d - f) / 1000, (d - s) / 1000
  printf "  sustained   %8.0f traces/s (target >= 10000)\n", sustained
  printf "  from start  %8.0f traces/s\n", overall
  printf "  CPU per trace: writer %.1f us, PostgreSQL %.1f us, nats-server %.1f us\n", cpu / hz * 1e6 / n, pgcpu / hz * 1e6 / n, natscpu / hz * 1e6 / n
  printf "plain COPY of the same rows into the same tables: %.1f s, %.0f traces/s (PostgreSQL %.1f us per trace)\n", (c1 - c0) / 1000, copy, copycpu / hz * 1e6 / n
  printf "ratio trace-writer / plain COPY: %.2f (target >= 0.50)\n", sustained / copy
}'
