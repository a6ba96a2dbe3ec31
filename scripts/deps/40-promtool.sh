# promtool: Prometheus's own checker of the text exposition format; the metrics tests run
# `promtool check metrics` on every /metrics page (tests read $BERTH_PROMTOOL). It comes from
# Debian's `prometheus` package, unpacked into the cache — never installed, so no Prometheus
# server is set up or started.
berth_tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
promtool_bin="$berth_tools/promtool/promtool"
if ! "$promtool_bin" --version >/dev/null 2>&1; then
  echo "==> fetching promtool (from Debian's prometheus package)"
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "error: promtool is fetched from Debian's prometheus package, and this machine has no apt-get/dpkg-deb;" >&2
    echo "       put a promtool binary at $promtool_bin or set BERTH_PROMTOOL" >&2
    exit 1
  fi
  prom_tmp="$(mktemp -d)"
  chmod 0755 "$prom_tmp" # apt's download user must be able to write here
  if ! (cd "$prom_tmp" && apt-get download -qq prometheus 2>/dev/null); then
    if [ "$(id -u)" -ne 0 ]; then
      echo "error: apt-get download prometheus failed and only root can refresh apt's lists: run 'apt-get update' as root, then this again" >&2
      exit 1
    fi
    apt-get update -qq
    (cd "$prom_tmp" && apt-get download -qq prometheus)
  fi
  dpkg-deb -x "$prom_tmp"/prometheus_*.deb "$prom_tmp/x"
  mkdir -p "$berth_tools/promtool"
  install -m 0755 "$prom_tmp/x/usr/bin/promtool" "$promtool_bin"
  rm -rf "$prom_tmp"
fi
export BERTH_PROMTOOL="${BERTH_PROMTOOL:-$promtool_bin}"
