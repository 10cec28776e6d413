#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz (built by `make fuzz` into
# $FUZZ_DIR) for FUZZ_SECONDS each, from the seeds in tests/fuzz/seeds/<name>
# (and, for DLP, the texts of the labelled corpus) plus the corpus earlier
# runs grew in $FUZZ_DIR/fuzz-work. Fails on the first property that breaks,
# any sanitizer report, a leak or an input slower than 10 s, and says how to
# replay the input that did it.
#
# FUZZ_RUNS=ci (what .ci/run uses): a fixed number of inputs per target from
# a fixed seed instead of a time, about 10-20 s each on the 2-core reference
# machine, so that a CI run does not depend on the machine's speed (coverage
# feedback still varies a little from run to run); finding new bugs is what
# longer local runs (FUZZ_SECONDS=300) are for.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${FUZZ_DIR:-build-fuzz}
secs=${FUZZ_SECONDS:-20}
work=$dir/fuzz-work
mkdir -p "$work"
declare -A ci_runs=([dlp]=30000 [policy]=400000 [policy_glob]=1000000 [request]=500000
  [response]=250000 [stream_guard]=40000 [request_guard]=80000 [decode]=800000 [trace]=120000
  [trace_writer]=100000)

# The DLP fuzzer's input is [engine][chunk seed][text]: one seed per corpus text.
mkdir -p "$work/seeds-dlp"
node -e '
const fs = require("fs");
const lines = fs.readFileSync(process.argv[1], "utf8").trim().split("\n");
lines.forEach((l, i) => fs.writeFileSync(`${process.argv[2]}/${i}`,
  Buffer.concat([Buffer.from([i % 3, i % 251]), Buffer.from(JSON.parse(l).text)])));
' tests/fixtures/dlp/corpus.jsonl "$work/seeds-dlp"

failed=0
for bin in "$dir"/tests/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); name=${name#fuzz_}
  corpus=$work/corpus-$name
  mkdir -p "$corpus"
  seeds=()
  [ -d "tests/fuzz/seeds/$name" ] && seeds+=("tests/fuzz/seeds/$name")
  [ "$name" = dlp ] && seeds+=("$work/seeds-dlp")
  log=$work/$name.log
  limit=(-max_total_time="$secs")
  if [ "${FUZZ_RUNS:-}" = ci ]; then
    limit=(-runs="${ci_runs[$name]:-100000}" -seed=1)
    rm -rf "$corpus" && mkdir -p "$corpus" # the same start on every run
  fi
  start=$(date +%s)
  if "$bin" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$work/$name-" "$corpus" "${seeds[@]}" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz $name: ok, ${runs:-?} inputs in $(($(date +%s) - start)) s, corpus $(find "$corpus" -type f | wc -l)"
  else
    failed=1
    echo "fuzz $name: FAILED"
    grep -E 'property failed|runtime error|ERROR: |SUMMARY' "$log" | head -5 || true
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    [ -n "$artifact" ] && echo "  replay: $bin $artifact" && echo "  input (base64): $(base64 -w0 "$artifact" | head -c 2000)"
    echo "  log: $log"
  fi
done
exit "$failed"
