#!/usr/bin/env bash
# Runs a private PostgreSQL cluster in a data folder of its own, as root or not
# (as root the server runs as the `postgres` user, since PostgreSQL refuses root).
#   pg.sh init  DIR          create the cluster (trust auth on loopback, user `renlayer`)
#   pg.sh start DIR PORT     start it on 127.0.0.1:PORT and wait until it answers
#   pg.sh stop  DIR          fast shutdown, waits until stopped
#   pg.sh status DIR         exit 0 when the cluster runs
#   pg.sh url   PORT         print the connection URL
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] || { echo "pg.sh: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd=${1:-}; dir=${2:-}
case "$cmd" in
  init)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
      chown postgres:postgres "$dir"
      # the postgres user must be able to reach the folder: grant traverse (not read)
      # on parents that lack it, e.g. a mktemp folder or a clone under /root
      p=$(cd "$dir/.." && pwd)
      while [ "$p" != / ]; do
        [ -n "$(find "$p" -maxdepth 0 -perm -o+x)" ] || chmod o+x "$p"
        p=$(dirname "$p")
      done
    fi
    chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_owner "$bindir/initdb" -D "$dir" -U renlayer --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    ;;
  start)
    port=${3:?port}
    sockdir="$dir/sock"; as_owner mkdir -p "$sockdir"
    as_owner "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $sockdir -c fsync=${RL_PG_FSYNC:-on} -c max_connections=200" start >/dev/null
    ;;
  stop)
    pid=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null || true)
    as_owner "$bindir/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null || true
    # pg_ctl returns once the pid file is gone; the postmaster exits just
    # after: wait for it (a zombie waiting to be reaped has exited)
    if [ -n "$pid" ]; then
      for _ in $(seq 1 200); do
        st=$(ps -o stat= -p "$pid" 2>/dev/null) || break
        [ "${st#Z}" != "$st" ] && break
        sleep 0.05
      done
    fi
    ;;
  status)
    [ -f "$dir/PG_VERSION" ] && as_owner "$bindir/pg_ctl" -D "$dir" status >/dev/null
    ;;
  url)
    echo "postgresql://renlayer@127.0.0.1:${2:?port}/postgres"
    ;;
  *)
    echo "usage: pg.sh init DIR | start DIR PORT | stop DIR | url PORT" >&2; exit 2 ;;
esac
