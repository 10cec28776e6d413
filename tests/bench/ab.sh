#!/usr/bin/env bash
# A/B of proxy builds on one stack, interleaved with the nginx proxy.
#
#   BENCH_HOLD=/tmp/hold.txt BENCH_HOLD_SECONDS=3600 tests/bench/run.sh &   # the stack
#   tests/bench/ab.sh /tmp/hold.txt 7 3 base=/tmp/px-base new=build/services/proxy/renlayer-proxy
#
# Each build runs as its own proxy (the held proxy's environment, 2 workers
# unless BENCH_WORKERS, a spool of its own) against the same upstream,
# PostgreSQL and NATS. Every round runs wrk on the nginx proxy and on each
# build back to back; medians of req/s and of CPU µs per request are
# printed. On this VM a build's cost moves by ±10 % between rounds: compare
# medians of 7 or more rounds, never two single runs. Beside the target's
# own CPU, each row shows nats-server's and the whole machine's busy CPU
# per request (/proc/stat): throughput is 2 cores divided by the latter.
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 <hold-file> <rounds> <seconds> name=binary ..." >&2; exit 2; }
hold=$1 rounds=$2 secs=$3
shift 3
root=$(cd "$(dirname "$0")/../.." && pwd)
eval "$(tr ' ' '\n' < "$hold" | grep -E '^(proxy|nginx|key|proxy_pid|nats_pid|nginx_pidfile)=')"
# shellcheck source=tests/bench/lib.sh
. "$root/tests/bench/lib.sh"
export BENCH_KEY=$key
work=$(mktemp -d /tmp/renlayer-ab-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

hz=$(getconf CLK_TCK)

names=(nginx) urls=("$nginx") procs=(ngx)
for spec in "$@"; do
  name=${spec%%=*} bin=${spec#*=}
  bin=$(realpath "$bin")
  port=$(bash "$root/tests/harness/freeport.sh")
  mkdir -p "$work/$name-spool"
  (tr '\0' '\n' < "/proc/$proxy_pid/environ" | grep '^RENLAYER_' | sed 's/^/export /;s/=/="/;s/$/"/'
   echo "export RENLAYER_LISTEN_ADDR=127.0.0.1:$port RENLAYER_SPOOL_DIR=$work/$name-spool"
   echo "export RENLAYER_PROXY_WORKERS=${BENCH_WORKERS:-2}"
   echo "exec $bin") > "$work/$name.sh"
  bash "$work/$name.sh" 2>"$work/$name.log" >/dev/null &
  pids+=($!)
  for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
    sleep 0.05
  done
  names+=("$name") urls+=("http://127.0.0.1:$port") procs+=("${pids[-1]}")
done

for _ in $(seq 1 "$rounds"); do
  for i in "${!names[@]}"; do
    p=${procs[$i]}; [ "$p" = ngx ] && p=$(nginx_pids "$nginx_pidfile")
    # shellcheck disable=SC2086
    before=$(ticks $p) nats_before=$(ticks "$nats_pid") busy_before=$(busy_ticks)
    out=$(wrk -t2 -c64 -d"${secs}s" -s "$root/tests/bench/post.lua" "${urls[$i]}/v1/chat/completions")
    # shellcheck disable=SC2086
    after=$(ticks $p) nats_after=$(ticks "$nats_pid") busy_after=$(busy_ticks)
    echo "$out" | awk -v t=$((after - before)) -v hz="$hz" -v nm="${names[$i]}" \
      -v nt=$((nats_after - nats_before)) -v bt=$((busy_after - busy_before)) '
      /requests in/ { n = $1 } /Requests\/sec/ { r = $2 }
      END { printf "%s %.0f %.1f %.1f %.1f\n", nm, r, t / hz * 1e6 / n, nt / hz * 1e6 / n, bt / hz * 1e6 / n }' >> "$work/runs"
  done
done

col() { awk -v nm="$1" -v c="$2" '$1 == nm { print $c }' "$work/runs" | median_of; }
printf '%-10s %10s %12s %10s %12s   %s\n' target "req/s" "CPU us/req" "nats us" "machine us" \
  "CPU us/req per round (sorted)"
for name in "${names[@]}"; do
  printf '%-10s %10s %12s %10s %12s   %s\n' "$name" "$(col "$name" 2)" "$(col "$name" 3)" \
    "$(col "$name" 4)" "$(col "$name" 5)" \
    "$(awk -v nm="$name" '$1 == nm { print $3 }' "$work/runs" | sort -g | tr '\n' ' ')"
done
