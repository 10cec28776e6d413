#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz (built by `make fuzz` into
# $FUZZ_DIR) for FUZZ_SECONDS each, from the seeds in tests/fuzz/seeds/<name>
# (and, for DLP, the texts of the labelled corpus) plus the corpus earlier
# runs grew in $FUZZ_DIR/fuzz-work. Fails on the first property that breaks,
# any sanitizer report, a leak or an input slower than 10 s, and says how to
# replay the input that did it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${FUZZ_DIR:-build-fuzz}
secs=${FUZZ_SECONDS:-20}
work=$dir/fuzz-work
mkdir -p "$work"

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
  if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$work/$name-" "$corpus" "${seeds[@]}" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz $name: ok, ${runs:-?} inputs in ${secs} s, corpus $(find "$corpus" -type f | wc -l)"
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
