# Shared by the bench scripts (sourced): CPU time from /proc, medians.

# CPU ticks (user + system, all threads) of the given processes, summed; a
# process that has exited counts 0.
ticks() {
  local t=0 p v
  for p in "$@"; do
    v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

# Busy CPU ticks of the whole machine, all cores (/proc/stat: everything but
# idle and iowait).
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# An nginx master (from its pid file) and its workers.
nginx_pids() { local m; m=$(cat "$1"); echo "$m" $(pgrep -P "$m"); }

# The median of the numbers on standard input, one per line.
median_of() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
