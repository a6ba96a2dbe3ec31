# The Python tools the tests run (openapi-spec-validator for the admin API's OpenAPI document,
# kubernetes-validate for rendered manifests), in one virtual environment under the user's
# cache, installed from scripts/python-tools.txt: every package pinned, every file checked
# against its sha256. A changed lock file makes a new environment.
berth_tools="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools"
py_lock="scripts/python-tools.txt"
py_env="$berth_tools/python-$(sha256sum "$py_lock" | cut -c1-12)"
if ! "$py_env/bin/kubernetes-validate" --version >/dev/null 2>&1 \
  || ! "$py_env/bin/openapi-spec-validator" --help >/dev/null 2>&1; then
  echo "==> installing the Python tools from $py_lock"
  rm -rf "$py_env"
  mkdir -p "$berth_tools"
  python3 -m venv "$py_env"
  "$py_env/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$py_lock"
fi
# The one the tests look for when these variables are unset.
ln -sfn "$py_env" "$berth_tools/python"
export BERTH_PYTHON_TOOLS="$py_env"
export BERTH_OPENAPI_VALIDATOR="$py_env/bin/openapi-spec-validator"
export BERTH_KUBERNETES_VALIDATE="$py_env/bin/kubernetes-validate"
