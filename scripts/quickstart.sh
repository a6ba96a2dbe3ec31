#!/usr/bin/env bash
# berth in one minute: a sample app behind its sidecar on a directory registry (nothing else
# to install), a few requests through it, then a drain with a request in flight.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
berth=target/release/berth
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_for() { # FILE PATTERN: waits up to 10 s for a line and prints it
  for _ in $(seq 1 100); do
    grep -m1 "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

echo "==> starting the sample app"
"$berth" sample-app --listen 127.0.0.1:0 --name hello >"$work/app.log" 2>&1 &
pids+=($!)
app=$(wait_for "$work/app.log" "listening on" | awk '{print $3}')

echo "==> starting its sidecar (registry: dir://$work/registry)"
BERTH_LOG=info "$berth" proxy --service hello --app-port "${app##*:}" --app-health http:/healthz \
  --inbound 127.0.0.1:0 --admin 127.0.0.1:0 --registry "dir://$work/registry" \
  --drain-min 2s --drain-quiet 500ms >"$work/sidecar.log" 2>&1 &
sidecar_pid=$!
pids+=($sidecar_pid)
line=$(wait_for "$work/sidecar.log" "berth proxy listening")
inbound=$(sed -E 's/.* inbound=([^ ]+).*/\1/' <<<"$line")
admin=$(sed -E 's/.* admin=([^ ]+).*/\1/' <<<"$line")
until curl -sf "http://$admin/ready" >/dev/null; do sleep 0.1; done

echo "==> ready: registered as $(curl -s "http://$admin/state" | sed -E 's/.*"addr":"([^"]+)".*/\1/')"
echo "    GET http://$inbound/  ->  $(curl -s "http://$inbound/")"
echo "==> a slow request, then a drain while it is in flight"
curl -s -o "$work/slow.out" -D "$work/slow.headers" "http://$inbound/slow?ms=1500" &
slow=$!
sleep 0.3
curl -s -X POST "http://$admin/drain" >/dev/null
echo "    straggler during drain-min: $(curl -s -D - -o /dev/null "http://$inbound/" | grep -iE 'x-berth-lifecycle|^connection' | tr -d '\r' | paste -sd' ')"
wait "$slow"
echo "    the slow request: $(head -1 "$work/slow.headers" | tr -d '\r'), body: $(cat "$work/slow.out")"
wait "$sidecar_pid" && echo "==> sidecar exited 0 after the drain:" || echo "==> sidecar exited $?"
grep -E "drain started|deregistered|stopped" "$work/sidecar.log" | sed 's/^/    /'
