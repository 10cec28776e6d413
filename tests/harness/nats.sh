#!/usr/bin/env bash
# Runs a private nats-server with JetStream, its store in a folder of its own.
#   nats.sh start DIR PORT   start on 127.0.0.1:PORT (pid in DIR/nats.pid), wait until it answers
#   nats.sh stop  DIR        stop it and wait until it is gone
set -euo pipefail
cmd=${1:-}; dir=${2:-}
case "$cmd" in
  start)
    port=${3:?port}
    mkdir -p "$dir/js"
    nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir/js" -P "$dir/nats.pid" -l "$dir/nats.log" </dev/null >/dev/null 2>&1 &
    for _ in $(seq 1 200); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && exit 0
      sleep 0.05
    done
    echo "nats.sh: nats-server did not start on port $port (see $dir/nats.log)" >&2; exit 1
    ;;
  stop)
    [ -f "$dir/nats.pid" ] || exit 0
    pid=$(cat "$dir/nats.pid")
    kill "$pid" 2>/dev/null || true
    # gone, or a zombie waiting to be reaped by its parent: stopped either way
    for _ in $(seq 1 200); do
      st=$(ps -o stat= -p "$pid" 2>/dev/null) || { rm -f "$dir/nats.pid"; exit 0; }
      [ "${st#Z}" != "$st" ] && { rm -f "$dir/nats.pid"; exit 0; }
      sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true; rm -f "$dir/nats.pid"
    ;;
  *)
    echo "usage: nats.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
