# promtool: Prometheus's own parser and linter of the text exposition format; the metrics tests
# run `promtool check metrics` on every /metrics page (tests read $BERTH_PROMTOOL). It comes
# with Debian's prometheus package, which 41-prometheus.sh installs.
if ! command -v promtool >/dev/null 2>&1; then
  echo "error: promtool is missing; it comes with Debian's prometheus package (see scripts/deps/41-prometheus.sh)" >&2
  exit 1
fi
BERTH_PROMTOOL="$(command -v promtool)"
export BERTH_PROMTOOL
