# nacos-sdk-python: the official Python Nacos client, the consumer without a sidecar in the
# mixed-fleet tests (tests read $BERTH_NACOS_PYTHON). Installed into its own virtualenv from a
# pinned list with every dependency, no resolver.
NACOS_SDK_PYTHON_VERSION=3.2.0
berth_tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
nacos_env="$berth_tools/nacos-sdk-python-$NACOS_SDK_PYTHON_VERSION"
nacos_python="$nacos_env/bin/python"
if ! "$nacos_python" -c 'from v2.nacos import NacosNamingService' >/dev/null 2>&1; then
  echo "==> installing nacos-sdk-python $NACOS_SDK_PYTHON_VERSION"
  rm -rf "$nacos_env"
  python3 -m venv "$nacos_env"
  "$nacos_env/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    -r scripts/deps/nacos-sdk-python-requirements.txt
fi
export BERTH_NACOS_PYTHON="$nacos_python"
