# locked_venv NAME LOCK PROBE: a Python virtual environment under the user's cache
# (berth/tools/NAME-<first 12 hex of LOCK's sha256>), installed from the lock file LOCK — every
# package pinned, every file checked against its sha256 — unless the shell command PROBE (run
# with $venv set to the environment) says it is already complete. A changed lock file makes a
# new environment; berth/tools/NAME links to the current one (tests look there when their
# variable is unset). Sets $venv.
locked_venv() {
  local name=$1 lock=$2 probe=$3
  local tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
  venv="$tools/$name-$(sha256sum "$lock" | cut -c1-12)"
  if ! eval "$probe" >/dev/null 2>&1; then
    echo "==> installing $name from $lock"
    rm -rf "$venv"
    mkdir -p "$tools"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$lock"
  fi
  ln -sfn "$venv" "$tools/$name"
}
