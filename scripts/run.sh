#!/usr/bin/env bash
# `make run`: starts the whole RenLayer stack on this machine, in the
# background, with its state under .renlayer/: a private PostgreSQL and
# nats-server (JetStream), the five services and the mock upstream; migrates,
# seeds a demo tenant (owner, operator token, agent, gate, agent key) once,
# writes .renlayer/demo.env and prints how to call the proxy.
# Safe to run again: what already runs is kept, the demo is seeded once.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="${RENLAYER_STATE_DIR:-$root/.renlayer}"
build="${BUILD_DIR:-build}"
mkdir -p "$state/logs" "$state/run"

: "${RENLAYER_PG_PORT:=54329}"
: "${RENLAYER_NATS_PORT:=42229}"
: "${RENLAYER_PROXY_PORT:=8080}"
: "${RENLAYER_API_PORT:=8081}"
: "${RENLAYER_TRACE_WRITER_PORT:=8082}"
: "${RENLAYER_SESSION_TRACKER_PORT:=8083}"
: "${RENLAYER_INSIGHTS_PORT:=8084}"
: "${RENLAYER_MOCK_PORT:=8090}"

db_url="postgresql://renlayer@127.0.0.1:$RENLAYER_PG_PORT/postgres"
nats_url="nats://127.0.0.1:$RENLAYER_NATS_PORT"

say() { printf '  %s\n' "$*"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_http() { # url seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# Secrets are made once per machine and kept in .renlayer/secrets.env (0600).
if [ ! -f "$state/secrets.env" ]; then
  umask 077
  {
    echo "RENLAYER_SECRET_KEY=$(openssl rand -hex 32)"
    echo "RENLAYER_JWT_SECRET=$(openssl rand -hex 32)"
  } > "$state/secrets.env"
  umask 022
fi
set -a
# shellcheck disable=SC1091
. "$state/secrets.env"
set +a

echo "RenLayer: starting the local stack (state in $state)"

# PostgreSQL
if ! bash tests/harness/pg.sh status "$state/pg" >/dev/null 2>&1; then
  bash tests/harness/pg.sh init "$state/pg"
  bash tests/harness/pg.sh start "$state/pg" "$RENLAYER_PG_PORT"
fi
say "postgresql   $db_url"

# nats-server with JetStream
if ! alive "$state/nats/nats.pid"; then
  bash tests/harness/nats.sh start "$state/nats" "$RENLAYER_NATS_PORT"
fi
say "nats-server  $nats_url"

export RENLAYER_DATABASE_URL="$db_url"
export RENLAYER_NATS_URL="$nats_url"
export RENLAYER_DEV_MODE=true
export RENLAYER_MIGRATIONS_DIR="$root/migrations"

"$build/services/api/renlayer-api" migrate >> "$state/logs/migrate.log" 2>&1 ||
  { echo "migration failed; see .renlayer/logs/migrate.log" >&2; tail -5 "$state/logs/migrate.log" >&2; exit 1; }

# Mock upstream (the demo gate's upstream unless told otherwise)
if ! alive "$state/run/mock-upstream.pid"; then
  nohup node tests/fixtures/mock-upstream/server.mjs --port "$RENLAYER_MOCK_PORT" \
    >> "$state/logs/mock-upstream.log" 2>&1 &
  echo $! > "$state/run/mock-upstream.pid"
fi
wait_http "http://127.0.0.1:$RENLAYER_MOCK_PORT/__mock/requests" 20 ||
  { echo "mock upstream did not start; see .renlayer/logs/mock-upstream.log" >&2; exit 1; }
say "mock         http://127.0.0.1:$RENLAYER_MOCK_PORT"

upstream="http://127.0.0.1:$RENLAYER_MOCK_PORT"
inject=()
if [ -n "${RENLAYER_DEMO_UPSTREAM:-}" ]; then
  upstream="$RENLAYER_DEMO_UPSTREAM"
elif [ -n "${OPENAI_API_KEY:-}" ]; then
  upstream="https://api.openai.com"
  inject=(--header "Authorization=Bearer $OPENAI_API_KEY")
fi

# Services
start_service() { # name port
  local name=$1 port=$2 pidfile="$state/run/$1.pid"
  if alive "$pidfile"; then return 0; fi
  RENLAYER_LISTEN_ADDR="127.0.0.1:$port" nohup "$build/services/$name/renlayer-$name" \
    >> "$state/logs/$name.log" 2>&1 &
  echo $! > "$pidfile"
}
start_service api "$RENLAYER_API_PORT"
start_service trace-writer "$RENLAYER_TRACE_WRITER_PORT"
start_service session-tracker "$RENLAYER_SESSION_TRACKER_PORT"
start_service insights "$RENLAYER_INSIGHTS_PORT"
RENLAYER_SPOOL_DIR="$state/spool" start_service proxy "$RENLAYER_PROXY_PORT"

for svc in "proxy $RENLAYER_PROXY_PORT" "api $RENLAYER_API_PORT" "trace-writer $RENLAYER_TRACE_WRITER_PORT" \
           "session-tracker $RENLAYER_SESSION_TRACKER_PORT" "insights $RENLAYER_INSIGHTS_PORT"; do
  set -- $svc
  if ! wait_http "http://127.0.0.1:$2/readyz" 60; then
    echo "renlayer-$1 is not ready on port $2; see .renlayer/logs/$1.log" >&2
    tail -5 "$state/logs/$1.log" >&2
    exit 1
  fi
  say "$(printf '%-12s' "$1") http://127.0.0.1:$2  (ready)"
done

# Demo tenant, seeded once through the API's own code (keys are shown once,
# so they are kept in demo.env).
if [ ! -f "$state/demo.env" ]; then
  "$build/services/api/renlayer-api" seed-demo --email demo@renlayer.local \
    --upstream "$upstream" "${inject[@]}" --out "$state/demo.env.tmp" >> "$state/logs/seed.log" 2>&1 ||
    { echo "seeding the demo failed; see .renlayer/logs/seed.log" >&2; tail -5 "$state/logs/seed.log" >&2; exit 1; }
  {
    echo "RENLAYER_PROXY_URL=http://127.0.0.1:$RENLAYER_PROXY_PORT"
    echo "RENLAYER_API_URL=http://127.0.0.1:$RENLAYER_API_PORT"
    echo "RENLAYER_TRACE_WRITER_URL=http://127.0.0.1:$RENLAYER_TRACE_WRITER_PORT"
    echo "RENLAYER_SESSION_TRACKER_URL=http://127.0.0.1:$RENLAYER_SESSION_TRACKER_PORT"
    echo "RENLAYER_INSIGHTS_URL=http://127.0.0.1:$RENLAYER_INSIGHTS_PORT"
    echo "RENLAYER_MOCK_URL=http://127.0.0.1:$RENLAYER_MOCK_PORT"
    echo "RENLAYER_DATABASE_URL=$db_url"
    echo "RENLAYER_NATS_URL=$nats_url"
    cat "$state/demo.env.tmp"
  } > "$state/demo.env"
  rm -f "$state/demo.env.tmp"
  chmod 600 "$state/demo.env"
fi
set -a
# shellcheck disable=SC1091
. "$state/demo.env"
set +a

cat <<EOF

RenLayer is running. Everything you need is in .renlayer/demo.env:
    set -a; . .renlayer/demo.env; set +a

Call the proxy with the demo agent's key (the demo gate forwards to $upstream):
    curl -s \$RENLAYER_PROXY_URL/v1/chat/completions \\
      -H "Authorization: Bearer \$RENLAYER_DEMO_AGENT_KEY" -H 'Content-Type: application/json' \\
      -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'

Or with the OpenAI SDK (npm install openai):
    import OpenAI from 'openai';
    const client = new OpenAI({ baseURL: process.env.RENLAYER_PROXY_URL + '/v1',
                                apiKey: process.env.RENLAYER_DEMO_AGENT_KEY });
    const r = await client.chat.completions.create({ model: 'gpt-4o-mini',
                                messages: [{ role: 'user', content: 'Hello' }] });

Operate it through the API with the demo operator token:
    curl -s \$RENLAYER_API_URL/v1/me -H "Authorization: Bearer \$RENLAYER_DEMO_OPERATOR_TOKEN"

Logs: .renlayer/logs/   Stop everything: make stop
EOF
