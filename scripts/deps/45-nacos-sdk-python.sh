# nacos-sdk-python: the official Python Nacos client, the consumer without a sidecar in the
# mixed-fleet tests (tests read $BERTH_NACOS_PYTHON). In its own virtual environment under the
# user's cache (its dependencies are not the other Python tools'), installed from
# scripts/nacos-sdk-python.txt: every package pinned, every file checked against its sha256.
# A changed lock file makes a new environment.
berth_tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
nacos_lock="scripts/nacos-sdk-python.txt"
nacos_env="$berth_tools/nacos-sdk-python-$(sha256sum "$nacos_lock" | cut -c1-12)"
if ! "$nacos_env/bin/python" -c 'from v2.nacos import NacosNamingService' >/dev/null 2>&1; then
  echo "==> installing nacos-sdk-python from $nacos_lock"
  rm -rf "$nacos_env"
  mkdir -p "$berth_tools"
  python3 -m venv "$nacos_env"
  "$nacos_env/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$nacos_lock"
fi
# The one the tests look for when the variable is unset.
ln -sfn "$nacos_env" "$berth_tools/nacos-sdk-python"
export BERTH_NACOS_PYTHON="$nacos_env/bin/python"
