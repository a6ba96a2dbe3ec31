# prometheus: one test reads traffic from a real Prometheus scraping the sidecars (tests read
# $BERTH_PROMETHEUS_BIN). Debian's package; its service is not started while installing (the
# test runs its own, on loopback), so a policy-rc.d refuses starts for the install's length.
if ! command -v prometheus >/dev/null 2>&1; then
  echo "==> installing prometheus (Debian package)"
  apt-get update -qq
  prom_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    prom_policy=/usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  [ -n "$prom_policy" ] && rm -f "$prom_policy"
fi
BERTH_PROMETHEUS_BIN="$(command -v prometheus)"
export BERTH_PROMETHEUS_BIN
