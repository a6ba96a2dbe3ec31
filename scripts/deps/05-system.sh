# What the tests need from the system: python3 able to make a virtual environment with pip
# (Debian keeps ensurepip in python3-venv, and `python3 -m venv --help` works without it), and
# `ip` (iproute2) for the tests that build a network namespace. Installed with apt when root.
berth_system_missing=()
if ! command -v python3 >/dev/null; then
  berth_system_missing+=(python3 python3-venv)
elif ! "${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools/python/bin/python" -c '' 2>/dev/null; then
  # No tools environment yet: make sure one can be made.
  venv_probe="$(mktemp -d)"
  if ! { python3 -m venv "$venv_probe/v" && "$venv_probe/v/bin/python" -m pip --version; } >/dev/null 2>&1; then
    berth_system_missing+=(python3-venv)
  fi
  rm -rf "$venv_probe"
fi
command -v ip >/dev/null || berth_system_missing+=(iproute2)
# The blackholed-provider test drops a namespace's packets with iptables where the kernel has
# no netem.
command -v iptables >/dev/null || berth_system_missing+=(iptables)
if [ "${#berth_system_missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing ${berth_system_missing[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${berth_system_missing[@]}" >/dev/null
  else
    echo "error: the tests need ${berth_system_missing[*]} (Debian package names); install them as root and run this again" >&2
    exit 1
  fi
fi
unset berth_system_missing
