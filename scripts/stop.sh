#!/usr/bin/env bash
# `make stop`: stops exactly what `make run` started (the pids it recorded under
# .renlayer/run, its nats-server and its PostgreSQL cluster), and waits for
# each to be gone. The data stays in .renlayer/ for the next `make run`.
set -uo pipefail
cd "$(dirname "$0")/.."
state=.renlayer
[ -d "$state" ] || { echo "nothing to stop"; exit 0; }

stop_pid() { # name pidfile
  local pid
  [ -f "$2" ] || return 0
  pid=$(cat "$2")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "  $1 did not stop on SIGTERM within 15 s; killing it"
      kill -KILL "$pid" 2>/dev/null
    fi
    echo "  stopped $1"
  fi
  rm -f "$2"
}

# proxy first so nothing new comes in, then the consumers, the mock, the servers
for name in proxy api session-tracker insights trace-writer mock-upstream; do
  stop_pid "$name" "$state/run/$name.pid"
done
if [ -f "$state/nats/nats.pid" ]; then
  bash tests/harness/nats.sh stop "$state/nats" && echo "  stopped nats-server"
fi
if bash tests/harness/pg.sh status "$state/pg" >/dev/null 2>&1; then
  bash tests/harness/pg.sh stop "$state/pg" && echo "  stopped postgresql"
fi
