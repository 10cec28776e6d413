#!/usr/bin/env bash
# Installs what building, testing and running RenLayer needs on Debian 12:
# the apt packages that are missing (apt-get update once, only if something is
# missing) and the test suite's npm packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config git ca-certificates curl
  libmicrohttpd-dev libnats-dev libpq-dev libjansson-dev libpcre2-dev libssl-dev
  libcurl4-openssl-dev zlib1g-dev libcmocka-dev postgresql nats-server nodejs npm)
[ "${RL_WITH_BENCH:-0}" = 1 ] && packages+=(nginx-light wrk)
[ "${RL_WITH_FUZZ:-0}" = 1 ] && packages+=(clang libclang-rt-14-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# node may come from elsewhere (e.g. NodeSource): only ask apt for it when there is none
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's postgresql package starts a cluster under systemd where there is one;
# RenLayer runs its own private clusters and never needs that one.

if [ "${RL_SKIP_NPM:-0}" != 1 ]; then
  if [ ! -d tests/node_modules ] || [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; then
    echo "install-deps: npm ci in tests/"
    (cd tests && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
