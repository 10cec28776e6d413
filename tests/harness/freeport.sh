#!/usr/bin/env bash
# Prints a TCP port on 127.0.0.1 that nothing listens on now, below the
# kernel's ephemeral range (32768-60999), so that no outgoing connection takes
# it as its source port before the server binds it.
set -euo pipefail
for _ in $(seq 1 100); do
  p=$(( (RANDOM % 12768) + 20000 ))
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; exit 0; }
done
echo "freeport.sh: no free port found" >&2; exit 1
