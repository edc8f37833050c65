#!/usr/bin/env bash
# Start a cache-only REAPI server (BuildGrid: CAS + ByteStream + ActionCache) on loopback.
#
#   tests/pants/start_buildgrid.sh DIR [PORT]
#
# Installs buildgrid into its own venv under ~/.cache (it needs Python >= 3.13), writes
# DIR/buildgrid.yml, starts the server in the background with DIR/buildgrid.pid and
# DIR/buildgrid.log, waits until the port accepts connections and prints
# `grpc://127.0.0.1:PORT`. Stop it with `kill "$(cat DIR/buildgrid.pid)"`.
#
#   BUILDENV_BUILDGRID_PYTHON  a CPython >= 3.13 (default: pyenv's 3.13.x, python3.13)
set -euo pipefail

readonly BUILDGRID_VERSION="0.9.1"
dir="$(mkdir -p "$1" && cd "$1" && pwd -P)"
port="${2:-}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/buildenv-buildgrid"
venv="$cache/venv-${BUILDGRID_VERSION}"

die() { echo "start_buildgrid: $*" >&2; exit 1; }

find_python() {
  local candidate
  for candidate in "${BUILDENV_BUILDGRID_PYTHON:-}" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python3 \
      "$(command -v python3.13 || true)"; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    "$candidate" -c 'import sys; assert sys.version_info >= (3, 13)' 2>/dev/null \
      && { echo "$candidate"; return; }
  done
  die "buildgrid ${BUILDGRID_VERSION} needs CPython >= 3.13; set BUILDENV_BUILDGRID_PYTHON"
}

if [[ ! -f "$venv/.complete" ]]; then
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [[ ! -f "$venv/.complete" ]]; then
    rm -rf "$venv"
    "$(find_python)" -m venv "$venv"
    # The machine's pip configuration (extra indexes, constraints) stays out.
    PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install --quiet "buildgrid==${BUILDGRID_VERSION}" >&2
    touch "$venv/.complete"
  fi
  exec 9>&-
fi

if [[ -z "$port" ]]; then
  port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

mkdir -p "$dir/cas"
cat > "$dir/buildgrid.yml" <<YAML
description: cache-only REAPI server for buildenv's Pants tests
server:
  - !channel
    address: "127.0.0.1:${port}"
    insecure-mode: true
storages:
  - !disk-storage &cas
    path: ${dir}/cas
caches:
  - !lru-action-cache &actions
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
instances:
  - name: ""
    services:
      - !action-cache
        cache: *actions
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
YAML

nohup "$venv/bin/bgd" server start "$dir/buildgrid.yml" >"$dir/buildgrid.log" 2>&1 &
echo $! >"$dir/buildgrid.pid"

for _ in $(seq 1 150); do
  if "$venv/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    echo "grpc://127.0.0.1:${port}"
    exit 0
  fi
  kill -0 "$(cat "$dir/buildgrid.pid")" 2>/dev/null || { cat "$dir/buildgrid.log" >&2; die "server exited"; }
  sleep 0.2
done
cat "$dir/buildgrid.log" >&2
die "server did not listen on 127.0.0.1:${port}"
