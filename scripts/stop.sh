#!/usr/bin/env bash
# `make stop`: stops exactly what `make run` started (the pids it recorded under
# .renlayer/run, its nats-server and its PostgreSQL cluster), and waits for
# each to be gone. The data stays in .renlayer/ for the next `make run`.
set -uo pipefail
cd "$(dirname "$0")/.."
state="${RENLAYER_STATE_DIR:-.renlayer}"
[ -d "$state" ] || { echo "nothing to stop"; exit 0; }

# A process counts as running until it has exited: a zombie waiting for its
# parent to reap it (make run's processes are reparented to PID 1) has stopped.
running() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st#Z}" = "$st" ]
}

stop_pid() { # name pidfile
  local pid
  [ -f "$2" ] || return 0
  pid=$(cat "$2")
  if running "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 300); do running "$pid" || break; sleep 0.05; done
    if running "$pid"; then
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
